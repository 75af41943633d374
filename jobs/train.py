r"""Train a 3D-R2N2 network on a Parquet dataset in the job's input schema.

    python jobs/train.py --data data/train --preset compact --steps 20000 \
        --batch 24 --out runs/compact [--val data/val]
    python jobs/train.py --out runs/compact --resume [--steps 30000]

The original recipe: per sample 1..5 views of the object's renders, each on a
random background in [225, 255] per channel, randomly cropped (127/137 of the
side) and flipped; voxel-wise two-class cross-entropy; Adam at 1e-4 with step
decay. Every --checkpoint-every steps OUT/ckpt-<step>.npz records the weights,
the optimizer, the step, the network's full config and the run's settings
(`model.training`); OUT/model.keras always holds the newest checkpoint's
weights; OUT/log.jsonl and TensorBoard scalars under OUT/tb grow as it goes.

Resuming (--resume continues from OUT's newest checkpoint; with none it starts
a new run). The run is rebuilt from its checkpoint, not from the command line:
a flag left out takes the checkpoint's value, so `--out OUT --resume` alone
continues the run as it was, and sees exactly the samples the uninterrupted
run would have.
  may change:   --steps, --lr, --decay-steps (extend or re-schedule the run),
                --checkpoint-every, --log-every, --val, --val-objects, --workers
                (a note says what changed)
  may not:      --preset, --image-size (the network), --data, --seed, --batch,
                --max-views, --flip-prob, --precision; a resume that gives one
                of these another value stops (exit 2) naming each difference
  ignored:      --init-from (a resumed run continues from its own weights)
Checkpoints from before self-describing checkpoints cannot be resumed; start a
new run with --init-from OLD_OUT/model.keras instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import TYPE_CHECKING  # noqa: E402

# TensorFlow is imported only once the command line is parsed: --help and a
# bad flag answer at once.
from model.train_config import ADJUSTABLE, FIXED, TrainConfig  # noqa: E402
from pipeline import cli, io  # noqa: E402

if TYPE_CHECKING:
    from model.network import NetworkConfig
    from model.training import Checkpoint

DEFAULT_PRESET = "compact"
DEFAULTS = {
    f.name: f.default
    for f in dataclasses.fields(TrainConfig)
    if f.default is not dataclasses.MISSING
}


class RunError(Exception):
    """A command line that cannot start or continue the run (exit 2)."""


def _url(text: str) -> str:
    # Local paths are recorded absolute, so a resume from another folder
    # finds the same data.
    return text if "://" in text else os.path.abspath(text)


def _step_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected steps like 20000,60000, got {text!r}") from None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "''"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = DEFAULTS
    # Settings default to None here: "not given" is what lets a resume take
    # the checkpoint's value; a new run takes DEFAULTS (TrainConfig's).
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, model.keras)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's newest checkpoint")
    p.add_argument("--data", type=_url, help="training Parquet (local path or s3:// URL)")
    p.add_argument("--steps", type=int, help="total optimisation steps (required for a new run)")
    p.add_argument("--preset", help=f"network preset (default: {DEFAULT_PRESET})")
    p.add_argument("--image-size", type=int, help="input side in pixels (default: the preset's)")
    p.add_argument(
        "--init-from",
        type=_url,
        help="start from this .keras model's weights (matched by layer name; see "
        "model.transfer); used only when the run has no checkpoint yet",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        help="compute precision of training; bf16 keeps float32 weights and optimizer "
        f"(mixed precision). Default {d['precision']}",
    )
    p.add_argument("--batch", type=int, help=f"objects per step (default: {d['batch']})")
    p.add_argument("--val", type=_url, help="validation Parquet; evaluated at every checkpoint")
    p.add_argument(
        "--val-objects", type=int, help=f"validation objects (default {d['val_objects']})"
    )
    p.add_argument(
        "--seed", type=int, help=f"initialisation and data-order seed (default {d['seed']})"
    )
    p.add_argument("--lr", type=float, help=f"initial Adam learning rate (default {d['lr']:g})")
    p.add_argument(
        "--decay-steps",
        type=_step_list,
        help="steps at which the learning rate drops 10x (default: the paper's "
        f"{_show(d['decay_steps'])})",
    )
    p.add_argument(
        "--max-views", type=int, help=f"views per sample, 1..N (default {d['max_views']})"
    )
    p.add_argument(
        "--flip-prob", type=float, help=f"horizontal flip probability (default {d['flip_prob']})"
    )
    p.add_argument("--checkpoint-every", type=int, help=f"default {d['checkpoint_every']}")
    p.add_argument("--log-every", type=int, help=f"default {d['log_every']}")
    p.add_argument("--workers", type=int, help=f"image decoding threads (default {d['workers']})")
    p.add_argument(
        "--storage-options",
        type=cli.storage_options,
        default=None,
        help="fsspec options JSON, added to those from the AWS variables; never recorded",
    )
    args = p.parse_args(argv)
    for name in ("steps", "batch", "checkpoint_every", "log_every", "workers", "max_views"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"{_flag(name)} must be positive")
    if args.val_objects is not None and args.val_objects < 1:
        p.error("--val-objects must be positive")
    if args.flip_prob is not None and not 0 <= args.flip_prob <= 1:
        p.error("--flip-prob must be in [0, 1]")
    if args.image_size is not None and args.image_size < 32:
        p.error("--image-size must be at least 32")
    return args


def _given(args: argparse.Namespace) -> dict:
    """The run settings the command line states."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name) is not None
    }


def new_run(args: argparse.Namespace) -> tuple[TrainConfig, NetworkConfig]:
    if args.data is None or args.steps is None:
        raise RunError("a new run needs --data and --steps")
    from model.network import PRESETS

    preset = args.preset or DEFAULT_PRESET
    if preset not in PRESETS:
        raise RunError(f"unknown --preset {preset}; choose one of {', '.join(PRESETS)}")
    network = PRESETS[preset]
    if args.image_size is not None:
        network = dataclasses.replace(network, image_size=args.image_size)
    return TrainConfig(**_given(args)), network


def continued_run(args: argparse.Namespace, ckpt: Checkpoint) -> tuple[TrainConfig, NetworkConfig]:
    """The checkpoint's run, with the changes the command line may make."""
    was = ckpt.config
    given = _given(args)
    differences = [
        f"{flag} {_show(value)} vs the checkpoint's {_show(recorded)}"
        for flag, value, recorded in [
            ("--preset", args.preset, ckpt.network.name),
            ("--image-size", args.image_size, ckpt.network.image_size),
            *((_flag(f), given.get(f), getattr(was, f)) for f in FIXED),
        ]
        if value is not None and value != recorded
    ]
    if differences:
        raise RunError(
            f"--resume contradicts {ckpt.path}:\n  "
            + "\n  ".join(differences)
            + "\nthe network, data and sampling are fixed for a run: leave these flags out "
            "to continue it, or start a new run in another --out (with --init-from "
            f"{ckpt.path.parent / 'model.keras'} to start from its weights)"
        )
    changes = {f: given[f] for f in ADJUSTABLE if f in given and given[f] != getattr(was, f)}
    print(
        f"resuming {ckpt.network.name} ({ckpt.network.image_size} px) at step {ckpt.step} from "
        f"{ckpt.path}: network, data and sampling as recorded there",
        flush=True,
    )
    if changes:
        print(
            "changed on resume: "
            + ", ".join(
                f"{_flag(f)} {_show(getattr(was, f))} -> {_show(v)}" for f, v in changes.items()
            ),
            flush=True,
        )
    if args.init_from is not None:
        print("--init-from ignored: a resumed run continues from its checkpoint", flush=True)
    return dataclasses.replace(was, **changes), ckpt.network


def main(argv: list[str] | None = None) -> int:
    """The exit code; an expected failure is one line on stderr (``cli.run``)."""
    return cli.run(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    from model import devices
    from model.training import CheckpointError, latest_checkpoint, read_checkpoint, train

    out = Path(args.out)
    latest = latest_checkpoint(out)
    if latest is not None and not args.resume:
        print(f"error: {out} already holds checkpoints; pass --resume or a new --out")
        return 2
    try:
        if latest is None:
            config, network = new_run(args)
        else:
            config, network = continued_run(args, read_checkpoint(latest))
    except (RunError, CheckpointError) as exc:
        print(f"error: {exc}")
        return 2
    devices.configure()
    model_file = train(
        config,
        network,
        out,
        resume=latest,
        storage_options=lambda url: io.storage_options(url, args.storage_options),
    )
    print(f"done: {model_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
