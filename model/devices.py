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
import sys
from collections.abc import Iterator, Sequence

QUIET = "VOXRAY_QUIET_TF"  # "1": TensorFlow's start-up lines are not printed


def restrict_gpus(gpu_ids: Sequence[str | int]) -> None:
    """Show TensorFlow only ``gpu_ids`` (none for an empty list); must run
    before TensorFlow is imported in this process."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send what native code writes to stderr to /dev/null while TensorFlow
    loads and finds its devices, when the environment asks for quiet
    (``VOXRAY_QUIET_TF=1``: the job's workers unless --verbose)."""
    if os.environ.get(QUIET) != "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def configure(cpu_threads: int | None = None) -> list[str]:
    """Import TensorFlow with memory growth on every visible GPU and, on a
    machine without GPUs, at most ``cpu_threads`` threads per op (None: TF's
    default). Returns the visible GPUs' names. Safe to call again: once
    TensorFlow has initialised, what it decided then stays."""
    with _quiet_stderr():
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
