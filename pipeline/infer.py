"""The model stage: a callable class that Ray Data runs as a pool of actors, one
``model.Reconstructor`` per actor, loaded and warmed up in ``__init__`` so that
``__call__`` only predicts. TensorFlow is imported here and only here, lazily,
inside the actor's process, after the process has been restricted to its own
GPUs (or to none) and GPU memory growth is on. Rows that are not ``ok`` pass
through untouched; a row the model cannot take fails alone, never its batch.
This module must never import TensorFlow at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.decode import FAILED, OK, VOXEL_BYTES, pixels_to_views

GRID = (32, 32, 32)


@dataclass(frozen=True)
class InferConfig:
    """Everything an actor needs, passed through ``fn_constructor_kwargs``.

    Args:
        model: URL or path of a ``.keras`` file; empty for the shipped weights.
        image_size: the model's input size (views arrive already resized).
        batch_size: objects per ``Reconstructor.predict`` call.
        threshold: p(occupied) at or above which a voxel counts as occupied.
        gpus: GPUs reserved per actor; 0 hides every GPU from TensorFlow.
        cpus: CPUs reserved per actor; bounds TensorFlow's CPU threads.
        precision: passed to the Reconstructor ("auto", "fp32" or "bf16").
        storage_options: fsspec options for a remote model URL.
    """

    model: str
    image_size: int
    batch_size: int = 16
    threshold: float = 0.4
    gpus: float = 0.0
    cpus: float = 1.0
    precision: str = "auto"
    storage_options: dict[str, Any] = field(default_factory=dict)


def quantize(probabilities: np.ndarray) -> np.ndarray:
    """float p in [0, 1] -> uint8 round(p * 255), the stored form."""
    return np.clip(np.rint(probabilities * 255.0), 0, 255).astype(np.uint8)


def occupied(grid: np.ndarray, threshold: float) -> np.ndarray:
    """Occupancy of a stored uint8 grid: ``grid / 255 >= threshold``.

    Computed from the stored grid, not the float probabilities, so that anyone
    reading a shard gets exactly the manifest's ``occupied_voxels``.
    """
    return grid.astype(np.float64) >= threshold * 255.0


def unpack_voxels(voxels: bytes) -> np.ndarray:
    """Ground truth bytes (``np.packbits`` of a C-order bool grid) -> bool [32,32,32]."""
    bits = np.unpackbits(np.frombuffer(voxels, dtype=np.uint8), count=VOXEL_BYTES * 8)
    return bits.astype(bool).reshape(GRID)


def iou(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Intersection over union of bool grids ``[..., 32, 32, 32]``, one value per
    grid; 1.0 where both are empty."""
    axes = (-3, -2, -1)
    inter = np.logical_and(predicted, truth).sum(axes)
    union = np.logical_or(predicted, truth).sum(axes)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def restrict_devices(gpus: float) -> None:
    """Show TensorFlow only this actor's GPUs, before TensorFlow is imported.

    Ray sets ``CUDA_VISIBLE_DEVICES`` for actors that reserve GPUs, but a process
    that reserves none may see every GPU on the node; an actor without GPUs
    must not take memory on devices that other actors own.
    """
    if gpus <= 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return
    import ray

    ids = [str(i) for i in ray.get_gpu_ids()]
    if ids:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)


def configure_tensorflow(cpus: float) -> Any:
    """Import TensorFlow with memory growth on every visible GPU and CPU threads
    bounded by the actor's reservation; returns the module."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    if not tf.config.list_physical_devices("GPU"):
        threads = max(1, int(cpus))
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    return tf


def load_reconstructor(config: InferConfig) -> Any:
    """Restrict devices, configure TensorFlow and build the Reconstructor."""
    restrict_devices(config.gpus)
    configure_tensorflow(config.cpus)
    from model import Reconstructor

    # XLA on or off per device is the Reconstructor's choice (jit_compile=None
    # follows the model benchmark's table).
    return Reconstructor(
        model=config.model or None,
        batch_size=config.batch_size,
        precision=config.precision,
        device="auto",
        storage_options=config.storage_options or None,
    )


def probe_model(model: str, storage_options: dict[str, Any]) -> dict[str, Any]:
    """``{"model_id", "image_size"}`` of a model; runs as a one-shot Ray task so
    that the driver never imports TensorFlow."""
    config = InferConfig(model=model, image_size=0, storage_options=storage_options)
    reconstructor = load_reconstructor(config)
    return {"model_id": str(reconstructor.model_id), "image_size": int(reconstructor.image_size)}


class Reconstruct:
    """The actor: predicts grids for the ``ok`` rows of a batch.

    Output columns: the input's, minus ``pixels`` and ``voxels``, plus
    ``probabilities`` (``uint8 [32,32,32]`` as 32768 bytes, ok rows only),
    ``occupied_voxels``, ``iou`` (when ground truth was given), ``threshold``
    and ``model``.
    """

    def __init__(self, config: InferConfig):
        self.config = config
        self.reconstructor = load_reconstructor(config)
        if int(self.reconstructor.image_size) != config.image_size:
            raise ValueError(
                f"model input size {self.reconstructor.image_size} != decoded size "
                f"{config.image_size}"
            )
        self.model_id = str(self.reconstructor.model_id)
        # The first call traces the graph; pay for it here, not on the first batch.
        self.reconstructor.warm_up()

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        status = batch.column("status").to_pylist()
        errors = batch.column("error").to_pylist()
        pixels = batch.column("pixels").to_pylist()
        voxels = batch.column("voxels").to_pylist()
        todo = [i for i in range(n) if status[i] == OK]

        grids: list[bytes | None] = [None] * n
        occupied_count: list[int | None] = [None] * n
        ious: list[float | None] = [None] * n
        if todo:
            views = [pixels_to_views(pixels[i], self.config.image_size) for i in todo]
            results = self._predict(views)
            for i, result in zip(todo, results, strict=True):
                if isinstance(result, Exception):
                    status[i], errors[i] = FAILED, f"inference: {result!r}"[:500]
                    continue
                grid = quantize(result)
                mask = occupied(grid, self.config.threshold)
                grids[i] = grid.tobytes()
                occupied_count[i] = int(mask.sum())
                if voxels[i] is not None:
                    ious[i] = float(iou(mask, unpack_voxels(voxels[i])))

        out = batch.drop_columns(["pixels", "voxels", "status", "error"])
        return (
            out.append_column("status", pa.array(status, pa.string()))
            .append_column("error", pa.array(errors, pa.string()))
            .append_column("probabilities", pa.array(grids, pa.binary()))
            .append_column("occupied_voxels", pa.array(occupied_count, pa.int32()))
            .append_column("iou", pa.array(ious, pa.float32()))
            .append_column("threshold", pa.array([self.config.threshold] * n, pa.float64()))
            .append_column("model", pa.array([self.model_id] * n, pa.string()))
        )

    def _predict(self, views: list[np.ndarray]) -> list[np.ndarray | Exception]:
        """Predict a batch; if it fails, predict row by row so that only the row
        the model cannot take fails."""
        try:
            probabilities = self.reconstructor.predict(views)
            return [np.asarray(p, dtype=np.float32).reshape(GRID) for p in probabilities]
        except Exception as exc:
            if len(views) == 1:
                return [exc]
        return [self._predict([v])[0] for v in views]
