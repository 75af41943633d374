"""Training 3D-R2N2: the run's configuration, the optimisation step, the batch
stream and self-describing checkpoints, tied together by `train`. A checkpoint
is one file that says what it is (the network's full config, the step and the
configuration the run was started with, beside the weights and the optimizer
state, all keyed by variable path), so a run resumes from that file alone and
sees exactly the samples the uninterrupted run would have (`model.data`). This
module must never import `pipeline`, `jobs` or Ray, nor resolve storage
options itself: the caller passes a resolver for every URL it opens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from model.data import Augment, Catalog, SampleStream, training_sample
from model.evaluate import evaluate
from model.network import DecoderStage, EncoderBlock, NetworkConfig, build_from_config
from model.reconstructor import pack_views, with_precision
from model.saving import load_model, save_model
from model.train_config import ADJUSTABLE, FIXED, TrainConfig  # noqa: F401 (their home before)
from model.transfer import transfer_weights
from model.voxels import GRID, THRESHOLD, iou


def network_from_dict(d: dict) -> NetworkConfig:
    """The `NetworkConfig` that `dataclasses.asdict` (through JSON) described."""
    return NetworkConfig(
        **{
            **d,
            "encoder": tuple(EncoderBlock(**b) for b in d["encoder"]),
            "decoder": tuple(DecoderStage(**s) for s in d["decoder"]),
        }
    )


def learning_rate(config: TrainConfig) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """`config.lr`, divided by 10 at each decay step before `config.steps`."""
    boundaries = [s for s in config.decay_steps if s < config.steps]
    if not boundaries:
        return config.lr
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries, [config.lr * 0.1**i for i in range(len(boundaries) + 1)]
    )


# ---------------------------------------------------------------- the step


def make_train_step(net: keras.Model, optimizer: keras.optimizers.Optimizer):
    """One optimisation step of `net` as a traced function:
    (views uint8 [n, S, S, 3], view_index int32 [batch, time], voxels int32
    [batch, 32, 32, 32]) -> (mean voxel cross-entropy, p(occupied) float32).
    `net` may compute in bf16 (mixed precision); loss and output are float32."""
    s = net.input["views"].shape[1]
    logits_model = keras.Model(net.inputs, net.get_layer("logits").output)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, s, s, 3], tf.uint8),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, *GRID], tf.int32),
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


# ---------------------------------------------------------------- data


def batch_stream(
    catalog: Catalog, config: TrainConfig, image_size: int, start_step: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Yields (step, packed views, view index, voxels int32) from `start_step`
    on, forever, decoded by a thread pool one batch ahead of the model. Close
    it (`contextlib.closing`) to stop and join the decoding thread."""
    aug = Augment(max_views=config.max_views, flip_prob=config.flip_prob)
    stream = SampleStream(catalog, config.batch, config.seed)
    out: queue.Queue = queue.Queue(maxsize=3)
    stop = threading.Event()

    def one(item):
        i, row = item
        return training_sample(row, image_size, np.random.default_rng([config.seed, 1, i]), aug)

    def produce():
        with ThreadPoolExecutor(config.workers) as pool:
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

# One .npz per checkpoint, OUT/ckpt-<step:07d>.npz:
#   meta                          uint8, UTF-8 JSON: {"format", "version", "step",
#                                 "network": NetworkConfig as a dict, "config": TrainConfig}
#   model/<variable path>         every weight of the network, float32
#   optimizer/iteration           the optimizer's step counter
#   optimizer/<variable path>/<slot>   the optimizer's state of one trainable
#                                 variable (Adam: momentum, velocity)
# The learning rate is not state: it follows from the config.
FORMAT, VERSION = "voxray-checkpoint", 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with what to do instead."""


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file says it is; its arrays stay in the file."""

    path: Path
    step: int
    network: NetworkConfig
    config: TrainConfig


def checkpoints(out: Path) -> list[Path]:
    """The complete checkpoints in run folder `out`, oldest first."""
    return sorted(Path(out).glob("ckpt-*.npz"))


def latest_checkpoint(out: Path) -> Path | None:
    found = checkpoints(out)
    return found[-1] if found else None


def read_checkpoint(path: Path) -> Checkpoint:
    """The metadata of the checkpoint at `path` (reads no weights)."""
    with np.load(path) as data:
        if "meta" not in data.files:
            if "w0" in data.files or "step" in data.files:
                raise CheckpointError(
                    f"{path} predates self-describing checkpoints (weights stored by "
                    "position, no network or run config), so it cannot be resumed; start "
                    "a new run from its weights with --init-from <its run folder>/model.keras"
                )
            raise CheckpointError(f"{path} is not a voxray checkpoint (no metadata)")
        meta = json.loads(data["meta"].tobytes())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(
            f"{path} is {meta.get('format')} version {meta.get('version')}; this voxray "
            f"reads {FORMAT} version {VERSION}"
        )
    return Checkpoint(
        path=Path(path),
        step=int(meta["step"]),
        network=network_from_dict(meta["network"]),
        config=TrainConfig.from_dict(meta["config"]),
    )


def _model_keys(net: keras.Model) -> dict[str, keras.Variable]:
    keys = {f"model/{v.path}": v for v in net.weights}
    if len(keys) != len(net.weights):
        raise ValueError(f"{net.name} has variables that share a path")
    return keys


def _optimizer_keys(
    net: keras.Model, optimizer: keras.optimizers.Optimizer
) -> dict[str, keras.Variable]:
    """The optimizer's state by the path of the model variable it belongs to.

    Keras names a slot `<variable path, '/' -> '_'>_<slot>` (e.g.
    `conv1a_kernel_momentum`); its own path also holds the optimizer's name,
    which changes with the number of optimizers a process has made.
    """
    owners = {v.path.replace("/", "_"): v.path for v in net.trainable_variables}
    if len(owners) != len(net.trainable_variables):
        raise ValueError(f"{net.name} has variables whose paths differ only in '/' and '_'")
    keys = {}
    for v in optimizer.variables:
        if v is optimizer.iterations:
            key = "optimizer/iteration"
        elif v.name == "learning_rate":
            continue
        else:
            owner = max((o for o in owners if v.name.startswith(f"{o}_")), key=len, default=None)
            if owner is None:
                raise ValueError(
                    f"optimizer variable {v.path} belongs to no variable of {net.name}"
                )
            key = f"optimizer/{owners[owner]}/{v.name[len(owner) + 1 :]}"
        if key in keys:
            raise ValueError(f"two optimizer variables map to {key}")
        keys[key] = v
    return keys


def save_checkpoint(
    out: Path,
    step: int,
    network: NetworkConfig,
    config: TrainConfig,
    net: keras.Model,
    optimizer: keras.optimizers.Optimizer,
) -> Path:
    """Writes OUT/ckpt-<step>.npz whole, then renames it into place; keeps the
    newest two checkpoints. `net` is the network `network` describes."""
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(step),
        "network": dataclasses.asdict(network),
        "config": dataclasses.asdict(config),
    }
    arrays = {"meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)}
    for key, v in {**_model_keys(net), **_optimizer_keys(net, optimizer)}.items():
        arrays[key] = keras.ops.convert_to_numpy(v)
    path = Path(out) / f"ckpt-{step:07d}.npz"
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    for old in checkpoints(out)[:-2]:
        old.unlink()
    return path


def restore_checkpoint(path: Path, net: keras.Model, optimizer: keras.optimizers.Optimizer) -> int:
    """Loads the weights and optimizer state of the checkpoint at `path` into
    `net` and `optimizer` (built here), matching variables by path; returns
    the checkpoint's step."""
    step = read_checkpoint(path).step
    optimizer.build(net.trainable_variables)
    targets = {**_model_keys(net), **_optimizer_keys(net, optimizer)}
    with np.load(path) as data:
        stored = set(data.files) - {"meta"}
        if stored != set(targets):
            missing, extra = sorted(set(targets) - stored), sorted(stored - set(targets))
            raise CheckpointError(
                f"{path} does not fit the network: missing {missing[:5]}, unexpected {extra[:5]}"
            )
        for key, v in targets.items():
            v.assign(data[key])
    return step


# ---------------------------------------------------------------- the run


def _no_options(url: str) -> dict:
    return {}


def train(
    config: TrainConfig,
    network: NetworkConfig,
    out: Path,
    *,
    resume: Path | None = None,
    storage_options: Callable[[str], dict] = _no_options,
) -> Path:
    """Trains `network` as `config` says, in the local run folder `out`, up to
    step `config.steps`; returns the path of the final `model.keras`.

    With `resume` (a checkpoint of this run, whose network and `FIXED` settings
    these must be) the run continues from it; otherwise it starts fresh, from
    `config.init_from`'s weights when given. `storage_options(url)` gives the
    fsspec options for each URL opened (data, validation, init_from). Writes a
    checkpoint every `config.checkpoint_every` steps and at the end, with the
    newest weights as OUT/model.keras; OUT/log.jsonl and TensorBoard scalars
    under OUT/tb as it goes.
    """
    out = Path(out)
    if resume is not None:
        recorded = read_checkpoint(resume)
        differ = [f for f in FIXED if getattr(recorded.config, f) != getattr(config, f)]
        if differ or recorded.network != network:
            raise CheckpointError(
                f"{resume} was written by another run (differs in {differ or 'network'})"
            )
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    catalog = Catalog(config.data, storage_options(config.data))
    # `model` holds the float32 weights that are saved; `net` is what trains
    # (the same model, or its mixed-precision clone for bf16).
    model = build_from_config(network)
    if resume is None and config.init_from:
        source = load_model(config.init_from, storage_options(config.init_from))
        report = transfer_weights(source, model)
        changed = {
            how: [name for name, h in report.items() if h == how]
            for how in ("resampled", "widened")
        }
        print(
            f"initialised from {config.init_from}: {len(report)} layers"
            + "".join(f", {how} {', '.join(names)}" for how, names in changed.items() if names),
            flush=True,
        )
    net = with_precision(model, config.precision)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate(config))
    start = restore_checkpoint(resume, net, optimizer) if resume is not None else 0
    s = network.image_size
    print(
        f"training {network.name} ({model.count_params():,} parameters, {s} px, "
        f"{config.precision}) on {catalog.num_rows:,} objects from {config.data}; "
        f"steps {start}..{config.steps}, batch {config.batch}",
        flush=True,
    )
    train_step = make_train_step(net, optimizer)

    writer = tf.summary.create_file_writer(str(out / "tb"))
    log = open(out / "log.jsonl", "a")  # noqa: SIM115  (closed at the end)
    t0, window_loss, window_iou, window_n = time.perf_counter(), 0.0, 0.0, 0
    # Closing the stream stops and joins its decoding thread, however the loop ends.
    with contextlib.closing(batch_stream(catalog, config, s, start)) as batches, log:
        for step, views, index, voxels in batches:
            if step >= config.steps:
                break
            loss, p = train_step(views, index, voxels)
            window_loss += float(loss)
            window_iou += float(np.mean(iou(p.numpy() >= THRESHOLD, voxels.astype(bool))))
            window_n += 1
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                rate = (done - start) / (time.perf_counter() - t0)
                record = {
                    "step": done,
                    "loss": round(window_loss / window_n, 5),
                    "iou": round(window_iou / window_n, 4),
                    "lr": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
                    "steps_per_s": round(rate, 3),
                }
                eta = (config.steps - done) / max(rate, 1e-9)
                print(
                    f"step {done}/{config.steps}  loss {record['loss']:.4f}  "
                    f"iou {record['iou']:.3f}  {rate:.2f} steps/s  eta {eta / 60:.0f} min",
                    flush=True,
                )
                with writer.as_default(step=done):
                    for k in ("loss", "iou", "lr"):
                        tf.summary.scalar(f"train/{k}", record[k])
                log.write(json.dumps(record) + "\n")
                log.flush()
                window_loss, window_iou, window_n = 0.0, 0.0, 0
            if done % config.checkpoint_every == 0 or done == config.steps:
                save_checkpoint(out, done, network, config, net, optimizer)
                if net is not model:
                    model.set_weights(net.get_weights())
                # The newest weights as a model file too, usable while training goes on.
                save_model(model, str(out / "model.keras"))
                if config.val:
                    val = evaluate(
                        model,
                        config.val,
                        views=(1, 5),
                        limit=config.val_objects,
                        storage_options=storage_options(config.val),
                    )
                    print(f"  val iou by views {val['iou_by_views']}", flush=True)
                    with writer.as_default(step=done):
                        for v, x in val["iou_by_views"].items():
                            tf.summary.scalar(f"val/iou_{v}_views", x)
                    log.write(json.dumps({"step": done, "val": val["iou_by_views"]}) + "\n")
                    log.flush()
    # The stream is endless: leaving the loop means step config.steps was
    # reached, and its checkpoint wrote the final model.keras.
    return out / "model.keras"
