"""The one place that sets up TensorFlow's devices: which GPUs a process may
see (before TensorFlow is imported), memory growth on each of them (before the
first op; TensorFlow otherwise takes all of a GPU's memory) and the CPU thread
count. Everything that runs the model (the job's actors, training, evaluation,
benchmarks) goes through here. This module imports TensorFlow only inside
``configure``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence


def restrict_gpus(gpu_ids: Sequence[str | int]) -> None:
    """Show TensorFlow only ``gpu_ids`` (none for an empty list); must run
    before TensorFlow is imported in this process."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids)


def configure(cpu_threads: int | None = None) -> list[str]:
    """Import TensorFlow with memory growth on every visible GPU and, on a
    machine without GPUs, at most ``cpu_threads`` threads per op (None: TF's
    default). Returns the visible GPUs' names. Safe to call again: once
    TensorFlow has initialised, what it decided then stays."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    if not gpus and cpu_threads is not None:
        threads = max(1, int(cpu_threads))
        with contextlib.suppress(RuntimeError):
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    return [g.name for g in gpus]
