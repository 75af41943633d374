"""The model stage: a callable class that Ray Data runs as a pool of actors, one
``model.Reconstructor`` per actor, loaded and warmed up in ``__init__`` so that
``__call__`` only predicts. TensorFlow is imported here and only here, lazily,
inside the actor's process, after the process has been restricted to its own
GPUs (or to none) and GPU memory growth is on. Rows that are not ``ok`` pass
through untouched; a row the model cannot take fails alone, never its batch.
This module must never import TensorFlow at import time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from model import devices
from model.defaults import BATCH_SIZE
from model.voxels import GRID, THRESHOLD, iou, occupied, quantize, unpack_voxels
from pipeline import progress
from pipeline.decode import pixels_to_views
from pipeline.layout import FAILED, OK


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
        stats: the job's progress actor; told the precision the model runs at.
    """

    model: str
    image_size: int
    batch_size: int = BATCH_SIZE
    threshold: float = THRESHOLD
    gpus: float = 0.0
    cpus: float = 1.0
    precision: str = "auto"
    storage_options: dict[str, Any] = field(default_factory=dict)
    stats: Any = None  # the job's progress actor (pipeline.progress), if any


def configure_devices(gpus: float, cpus: float) -> None:
    """This actor's devices, before TensorFlow is imported: its own GPUs (Ray
    sets ``CUDA_VISIBLE_DEVICES`` for actors that reserve GPUs, but a process that
    reserves none may see every GPU on the node and must not take memory on
    devices other actors own), then TensorFlow's threads bounded by its CPUs."""
    if gpus <= 0:
        devices.restrict_gpus([])
    else:
        import ray

        ids = ray.get_gpu_ids()
        if ids:
            devices.restrict_gpus(ids)
    devices.configure(cpu_threads=int(cpus))


def load_reconstructor(config: InferConfig) -> Any:
    """Restrict devices, configure TensorFlow and build the Reconstructor."""
    configure_devices(config.gpus, config.cpus)
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


def _register(stats: Any, precision: str) -> str:
    """Tell the job's stats actor this actor's precision and handle (for the
    stall check); returns the actor's id ("" outside a Ray actor)."""
    if stats is None:
        return ""
    import os
    import socket

    import ray

    context = ray.get_runtime_context()
    actor = context.get_actor_id() or ""
    where = f"pid {os.getpid()} on {socket.gethostname()}"
    progress.tell(stats, "precision", precision)
    if actor:
        progress.tell(stats, "register", actor, context.current_actor, where)
    return actor


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
        self.actor = _register(config.stats, self.reconstructor.precision)

    def __call__(self, batch: pa.Table) -> pa.Table:
        call = uuid.uuid4().hex
        progress.tell(self.config.stats, "started", self.actor, call)
        try:
            return self._reconstruct(batch)
        finally:
            progress.tell(self.config.stats, "finished", self.actor, call)

    def _reconstruct(self, batch: pa.Table) -> pa.Table:
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
