"""A training run's settings (``TrainConfig``) and which of them a resumed run
may change, apart from the training code so that reading them (``jobs/train.py``
building its flags and their help) never imports TensorFlow. This module must
never import TensorFlow or Keras.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """A training run's settings, recorded in each of its checkpoints.

    Settings in `FIXED` define what the run computes and stay as the run
    started; those in `ADJUSTABLE` extend, re-schedule or operate it and may
    change when it resumes. `init_from` says how a new run started; a resumed
    run continues from its checkpoint's weights instead.
    """

    data: str  # training Parquet URL
    steps: int  # total optimisation steps
    batch: int = 24
    seed: int = 0  # initialisation and data order
    max_views: int = 5
    flip_prob: float = 0.5
    precision: str = "fp32"  # "fp32" | "bf16" (mixed; float32 weights and optimizer)
    lr: float = 1e-4
    decay_steps: tuple[int, ...] = (20_000, 60_000)  # the learning rate drops 10x at each
    checkpoint_every: int = 500
    log_every: int = 20
    val: str | None = None  # validation Parquet URL, evaluated at every checkpoint
    val_objects: int = 130
    workers: int = 2  # image decoding threads
    init_from: str | None = None  # a .keras model whose weights a new run starts from

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return cls(**{**d, "decay_steps": tuple(d["decay_steps"])})


FIXED = ("data", "seed", "batch", "max_views", "flip_prob", "precision")
ADJUSTABLE = (
    "steps",
    "lr",
    "decay_steps",
    "checkpoint_every",
    "log_every",
    "val",
    "val_objects",
    "workers",
)
