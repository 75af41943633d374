"""Train a 3D-R2N2 network on a Parquet dataset in the job's input schema.

    python jobs/train.py --data data/train --preset compact --steps 20000 \
        --batch 24 --out runs/compact [--resume] [--val data/val]

The original recipe: per sample 1..5 views of the object's renders, each on a
random background in [225, 255] per channel, randomly cropped (127/137 of the
side) and flipped; voxel-wise two-class cross-entropy; Adam at 1e-4 with step
decay. Checkpoints every --checkpoint-every steps hold the weights, the
optimizer and the step; with --resume the run continues from the last one and
sees exactly the samples the uninterrupted run would have (see
`model.data.SampleStream`). Writes OUT/model.keras at the end, OUT/log.jsonl
and TensorBoard scalars under OUT/tb as it goes; OUT/model.keras always holds
the newest checkpoint's weights.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from model.data import Augment, Catalog, SampleStream, training_sample  # noqa: E402
from pipeline.infer import iou  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", required=True, help="training Parquet (local path or s3:// URL)")
    p.add_argument("--preset", default="compact", help="network preset (default: compact)")
    p.add_argument("--image-size", type=int, help="input side in pixels (default: the preset's)")
    p.add_argument(
        "--init-from",
        help="start from this .keras model's weights (matched by layer name; see "
        "model.transfer); used only when the run has no checkpoint yet",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="compute precision of training; bf16 keeps float32 weights and optimizer "
        "(mixed precision). Default fp32",
    )
    p.add_argument("--steps", type=int, required=True, help="total optimisation steps")
    p.add_argument("--batch", type=int, default=24, help="objects per step (default: 24)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, model.keras)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's last checkpoint")
    p.add_argument("--val", help="validation Parquet; evaluated at every checkpoint")
    p.add_argument("--val-objects", type=int, default=130, help="validation objects (default 130)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed")
    p.add_argument("--lr", type=float, default=1e-4, help="initial Adam learning rate")
    p.add_argument(
        "--decay-steps",
        default="20000,60000",
        help="steps at which the learning rate drops 10x (default: the paper's 20000,60000)",
    )
    p.add_argument("--max-views", type=int, default=5, help="views per sample, 1..N (default 5)")
    p.add_argument("--flip-prob", type=float, default=0.5, help="horizontal flip probability")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--workers", type=int, default=2, help="image decoding threads")
    p.add_argument("--storage-options", type=json.loads, default=None, help="fsspec options JSON")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        p.error("--steps and --batch must be positive")
    if args.checkpoint_every < 1:
        p.error("--checkpoint-every must be positive")
    if args.image_size is not None and args.image_size < 32:
        p.error("--image-size must be at least 32")
    args.decay_steps = [int(s) for s in args.decay_steps.split(",") if s.strip()]
    return args


# ---------------------------------------------------------------- data


def batch_stream(args, catalog: Catalog, image_size: int, start_step: int):
    """Yields (step, packed views, view index, voxels) from `start_step` on,
    decoded by a thread pool one batch ahead of the model."""
    from model.reconstructor import pack_views

    aug = Augment(max_views=args.max_views, flip_prob=args.flip_prob)
    stream = SampleStream(catalog, args.batch, args.seed)
    out: queue.Queue = queue.Queue(maxsize=3)
    stop = threading.Event()

    def one(item):
        i, row = item
        return training_sample(row, image_size, np.random.default_rng([args.seed, 1, i]), aug)

    def produce():
        with ThreadPoolExecutor(args.workers) as pool:
            for step, items in enumerate(stream.batches(start_step), start=start_step):
                if stop.is_set():
                    return
                samples = list(pool.map(one, items))
                views, index = pack_views([s[0] for s in samples])
                voxels = np.stack([s[1] for s in samples]).astype(np.int32)
                while not stop.is_set():
                    try:
                        out.put((step, views, index, voxels), timeout=0.1)
                        break
                    except queue.Full:
                        continue

    # Stopped and joined when the consumer is done: a producer still decoding
    # when the interpreter exits can abort it ("terminate called without an
    # active exception", exit code 134 after a finished run).
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        while True:
            yield out.get()
    finally:
        stop.set()
        producer.join()


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(out: Path, step: int, model, optimizer) -> None:
    """Weights + optimizer state + step, written whole then renamed."""
    arrays = {f"w{i}": np.asarray(v) for i, v in enumerate(model.weights)}
    arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)})
    tmp = out / f"ckpt-{step:07d}.tmp.npz"
    np.savez(tmp, step=step, **arrays)
    os.replace(tmp, out / f"ckpt-{step:07d}.npz")
    for old in sorted(out.glob("ckpt-*.npz"))[:-2]:
        old.unlink()


def load_checkpoint(out: Path, model, optimizer) -> int:
    """Restores the newest checkpoint; returns its step (0 when none)."""
    ckpts = sorted(p for p in out.glob("ckpt-*.npz") if ".tmp" not in p.name)
    if not ckpts:
        return 0
    data = np.load(ckpts[-1])
    optimizer.build(model.trainable_variables)
    for i, v in enumerate(model.weights):
        v.assign(data[f"w{i}"])
    for i, v in enumerate(optimizer.variables):
        v.assign(data[f"o{i}"])
    return int(data["step"])


# ---------------------------------------------------------------- the step


def make_train_step(net, optimizer):
    """One optimisation step of `net` as a traced function:
    (views uint8 [n, S, S, 3], view_index int32 [batch, time], voxels int32
    [batch, 32, 32, 32]) -> (mean voxel cross-entropy, p(occupied) float32).
    `net` may compute in bf16 (mixed precision); loss and output are float32."""
    import keras
    import tensorflow as tf

    s = net.input["views"].shape[1]
    logits_model = keras.Model(net.inputs, net.get_layer("logits").output)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, s, s, 3], tf.uint8),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, 32, 32, 32], tf.int32),
        ],
        autograph=False,
    )
    def train_step(views, index, voxels):
        x = tf.cast(views, tf.float32) / 255.0
        with tf.GradientTape() as tape:
            logits = tf.cast(
                logits_model({"views": x, "view_index": index}, training=True), tf.float32
            )
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=voxels, logits=logits)
            )
        grads = tape.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        return loss, tf.nn.softmax(logits)[..., 1]

    return train_step


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.glob("ckpt-*.npz")) and not args.resume:
        print(f"error: {out} already holds checkpoints; pass --resume or a new --out")
        return 2
    out.mkdir(parents=True, exist_ok=True)

    import keras
    import tensorflow as tf

    from model import build, load_model, save_model, with_precision
    from model.evaluate import evaluate
    from model.transfer import transfer_weights

    keras.utils.set_random_seed(args.seed)
    catalog = Catalog(args.data, args.storage_options)
    overrides = {"image_size": args.image_size} if args.image_size else {}
    # `model` holds the float32 weights that are saved; `net` is what trains
    # (the same model, or its mixed-precision clone for --precision bf16).
    model = build(args.preset, **overrides)
    fresh = not (args.resume and any(out.glob("ckpt-*.npz")))
    if args.init_from and fresh:
        report = transfer_weights(load_model(args.init_from, args.storage_options), model)
        changed = {
            how: [name for name, h in report.items() if h == how]
            for how in ("resampled", "widened")
        }
        print(
            f"initialised from {args.init_from}: {len(report)} layers"
            + "".join(f", {how} {', '.join(names)}" for how, names in changed.items() if names),
            flush=True,
        )
    net = with_precision(model, args.precision)
    boundaries = [s for s in args.decay_steps if s < args.steps]
    lr = (
        keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, [args.lr * 0.1**i for i in range(len(boundaries) + 1)]
        )
        if boundaries
        else args.lr
    )
    optimizer = keras.optimizers.Adam(learning_rate=lr)
    start = load_checkpoint(out, net, optimizer) if args.resume else 0
    s = model.input["views"].shape[1]
    print(
        f"training {args.preset} ({model.count_params():,} parameters, {s} px, "
        f"{args.precision}) on {catalog.num_rows:,} objects from {args.data}; "
        f"steps {start}..{args.steps}, batch {args.batch}",
        flush=True,
    )

    train_step = make_train_step(net, optimizer)

    writer = tf.summary.create_file_writer(str(out / "tb"))
    log = open(out / "log.jsonl", "a")  # noqa: SIM115  (closed at the end of main)
    t0, window_loss, window_iou, window_n = time.perf_counter(), 0.0, 0.0, 0
    # Closing the stream stops and joins its decoding thread, however the loop ends.
    with contextlib.closing(batch_stream(args, catalog, s, start)) as batches:
        for step, views, index, voxels in batches:
            if step >= args.steps:
                break
            loss, p = train_step(views, index, voxels)
            window_loss += float(loss)
            window_iou += float(np.mean(iou(p.numpy() >= 0.4, voxels.astype(bool))))
            window_n += 1
            done = step + 1
            if done % args.log_every == 0 or done == args.steps:
                rate = (done - start) / (time.perf_counter() - t0)
                record = {
                    "step": done,
                    "loss": round(window_loss / window_n, 5),
                    "iou": round(window_iou / window_n, 4),
                    "lr": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
                    "steps_per_s": round(rate, 3),
                }
                eta = (args.steps - done) / max(rate, 1e-9)
                print(
                    f"step {done}/{args.steps}  loss {record['loss']:.4f}  "
                    f"iou {record['iou']:.3f}  {rate:.2f} steps/s  eta {eta / 60:.0f} min",
                    flush=True,
                )
                with writer.as_default(step=done):
                    for k in ("loss", "iou", "lr"):
                        tf.summary.scalar(f"train/{k}", record[k])
                log.write(json.dumps(record) + "\n")
                log.flush()
                window_loss, window_iou, window_n = 0.0, 0.0, 0
            if done % args.checkpoint_every == 0 or done == args.steps:
                save_checkpoint(out, done, net, optimizer)
                if net is not model:
                    model.set_weights(net.get_weights())
                # The newest weights as a model file too, usable while training goes on.
                save_model(model, str(out / "model.keras"))
                if args.val:
                    val = evaluate(
                        model,
                        args.val,
                        views=(1, 5),
                        limit=args.val_objects,
                        storage_options=args.storage_options,
                    )
                    print(f"  val iou by views {val['iou_by_views']}", flush=True)
                    with writer.as_default(step=done):
                        for v, x in val["iou_by_views"].items():
                            tf.summary.scalar(f"val/iou_{v}_views", x)
                    log.write(json.dumps({"step": done, "val": val["iou_by_views"]}) + "\n")
                    log.flush()
    # The stream is endless: leaving the loop means step args.steps was reached,
    # and its checkpoint wrote the final model.keras.
    log.close()
    print(f"done: {out / 'model.keras'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
