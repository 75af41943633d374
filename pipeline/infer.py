"""The model stage: a callable class that Ray Data runs as a pool of actors, one
``model.Reconstructor`` per actor (or the benchmark's stand-in device),
loaded and warmed up in ``__init__`` so that ``__call__`` only predicts.
TensorFlow is imported here and only here, lazily, inside the actor's process,
after the process has been restricted to its own GPUs (or to none) and GPU
memory growth is on.

The host's work per object is kept small, because on a GPU it, not the model,
bounds an actor: decoded pixels go from the Arrow column to the device call
without Python lists or copies where the rows lie in order (one copy when they
must be regrouped), objects are grouped by view count so that no object runs a
recurrence step it does not need, quantisation and the occupancy count run on
the device (uint8 comes back, a quarter of float32), and two calls run at once
(Ray Data's ``max_concurrent_calls_per_actor``) with the device behind a lock,
so one call's host work overlaps the other's device time.

A row fails only for what is wrong with the row. An error of the device or the
runtime (a CUDA error, out of memory, anything raised by the device call) never
fails rows: out of memory halves the call and retries; anything else ends the
actor's process, so that Ray restarts it and retries the block, and a block
that failed this way ``MAX_DEVICE_ATTEMPTS`` times stops the job (exit 1)
naming the error. This module must never import TensorFlow at import time.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from model import devices
from model.defaults import BATCH_SIZE
from model.voxels import GRID_BYTES, THRESHOLD, VOXEL_BYTES, threshold_level
from pipeline import progress
from pipeline.layout import FAILED, OK

# Device failures of one block before the job stops (exit 1): a transient fault
# (an ECC error, a lost context) passes on a fresh process; one that follows the
# block is not transient.
MAX_DEVICE_ATTEMPTS = 3
XLA = {"auto": None, "on": True, "off": False}


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
        xla: "auto" (the Reconstructor's per-device choice), "on" or "off".
        stand_in: a ``--stand-in`` spec (``model.standin``): the benchmark's
            device in place of the model; empty for the model.
        stall_timeout: the job's stall timeout (the actor's keep-alive period
            while a batch runs is a third of it).
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
    xla: str = "auto"
    stand_in: str = ""
    stall_timeout: float = 300.0


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
    """Restrict devices, configure TensorFlow and build the Reconstructor (or
    the stand-in device, which needs neither)."""
    if config.stand_in:
        from model.standin import StandIn

        return StandIn(
            config.stand_in,
            config.batch_size,
            reconstructed=_restarted(),
            precision=config.precision,
        )
    configure_devices(config.gpus, config.cpus)
    from model import Reconstructor

    # "auto": XLA on or off per device is the Reconstructor's choice
    # (jit_compile=None follows the model benchmark's table).
    return Reconstructor(
        model=config.model or None,
        batch_size=config.batch_size,
        precision=config.precision,
        device="auto",
        jit_compile=XLA[config.xla],
        storage_options=config.storage_options or None,
    )


def _restarted() -> bool:
    """Whether this process is a Ray actor that Ray restarted after a crash."""
    import ray

    if not ray.is_initialized():  # asking the runtime context would start a Ray
        return False
    try:
        with warnings.catch_warnings():  # Ray's own property warns about its internals
            warnings.simplefilter("ignore")
            return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not in an actor
        return False


def probe_model(
    model: str,
    storage_options: dict[str, Any],
    stand_in: str = "",
    precision: str = "auto",
    gpus: float = 0.0,
) -> dict[str, Any]:
    """``{"model_id", "image_size", "precision"}`` of a model on the device an
    actor with ``gpus`` GPUs gets (``precision`` resolved there: "auto" is
    per device); runs as a one-shot Ray task holding those GPUs, so that the
    driver never imports TensorFlow (a stand-in is answered at once)."""
    if stand_in:
        from model import standin

        spec = standin.StandInSpec.parse(stand_in)
        device = standin.StandIn(spec, 1, precision=precision)
        return {
            "model_id": device.model_id,
            "image_size": spec.image_size,
            "precision": device.precision,
        }
    config = InferConfig(
        model=model, image_size=0, storage_options=storage_options, precision=precision, gpus=gpus
    )
    reconstructor = load_reconstructor(config)
    return {
        "model_id": str(reconstructor.model_id),
        "image_size": int(reconstructor.image_size),
        "precision": str(reconstructor.precision),
    }


def is_out_of_memory(exc: BaseException) -> bool:
    """A device out-of-memory error (TensorFlow's ResourceExhaustedError, or a
    message that says so), which a smaller call may avoid."""
    text = str(exc).lower()
    return (
        type(exc).__name__ == "ResourceExhaustedError"
        or "out of memory" in text
        or ("oom when allocating" in text)
    )


class DeviceFailed(RuntimeError):
    """The device failed on the same block MAX_DEVICE_ATTEMPTS times: the job stops."""


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
    ``occupied_voxels``, ``iou`` (when ground truth was given), ``threshold``,
    ``model`` and ``precision`` (the resolved one, for the rows the model
    computed; null for the others).
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
        self.level = threshold_level(config.threshold)
        # Objects per device call; out of memory halves it for the actor's life.
        self.chunk = int(self.reconstructor.batch_size)
        self.device = threading.Lock()  # one device call at a time
        self.device_s = 0.0  # wall time inside device calls
        # The first call traces the graph; pay for it here, not on the first batch.
        self.reconstructor.warm_up()
        self.actor = _register(config.stats, self.reconstructor.precision)
        self.beat = progress.Beat(
            config.stats, self.actor, self._busy, keepalive=max(1.0, config.stall_timeout / 3)
        )

    def _busy(self) -> float:
        """Seconds the device was busy: the stand-in's own wait, else device calls."""
        return float(getattr(self.reconstructor, "busy_s", self.device_s))

    def __call__(self, batch: pa.Table) -> pa.Table:
        call = self.beat.begin()
        try:
            return self._reconstruct(batch)
        finally:
            self.beat.end(call, batch.num_rows)

    def _reconstruct(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        size = self.config.image_size
        ok = np.asarray(pc.fill_null(pc.equal(batch.column("status"), OK), False), dtype=bool)
        views, first, counts, whole = packed_views(batch.column("pixels"), size)
        # pixels that are not whole views (or none): this row is wrong, not the device
        bad = ok & (~whole | (counts == 0))
        todo = np.flatnonzero(ok & whole & (counts > 0))

        grids = np.empty((len(todo), GRID_BYTES), np.uint8)  # in row order
        occupied = np.zeros(n, np.int32)
        rank = np.full(n, -1, np.int64)
        rank[todo] = np.arange(len(todo))
        work = collections.deque(self._groups(todo, counts))
        while work:
            members = work.popleft()
            try:
                out, count = self._device_call(views, first, counts, members)
            except Exception as exc:
                if is_out_of_memory(exc) and len(members) > 1:
                    self.chunk = max(1, len(members) // 2)
                    print(
                        f"warning: the model ran out of device memory on {len(members)} objects; "
                        f"retrying {self.chunk} at a time",
                        file=sys.stderr,
                        flush=True,
                    )
                    work.extendleft(reversed(np.array_split(members, 2)))
                    continue
                self._device_failed(batch, exc)
            grids[rank[members]] = out.reshape(len(members), GRID_BYTES)
            occupied[members] = count

        done = np.zeros(n, bool)
        done[todo] = True
        columns = {
            "probabilities": _binary(grids, done, GRID_BYTES),
            "occupied_voxels": pa.array(occupied, pa.int32(), mask=~done),
            "iou": _ious(batch.column("voxels"), grids, rank, done, self.level),
            "threshold": pa.array(np.full(n, self.config.threshold), pa.float64()),
            "model": pa.repeat(pa.scalar(self.model_id, pa.string()), n),
            "precision": _constant(self.reconstructor.precision, done),
        }
        status, error = batch.column("status"), batch.column("error")
        if bad.any():
            status, error = _fail_rows(status, error, bad, counts, size)
        out = batch.drop_columns(["pixels", "voxels", "status", "error"])
        out = out.append_column("status", status).append_column("error", error)
        for name, column in columns.items():
            out = out.append_column(name, column)
        return out

    def _groups(self, todo: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
        """Rows grouped by view count (no object runs a recurrence step it has no
        view for), each group in calls of at most ``self.chunk`` rows, rows in
        their order within a group (so that uniform rows stay one slice)."""
        order = todo[np.argsort(counts[todo], kind="stable")]
        runs = np.split(order, np.flatnonzero(np.diff(counts[order])) + 1)
        return [
            run[i : i + self.chunk]
            for run in runs
            if len(run)
            for i in range(0, len(run), self.chunk)
        ]

    def _device_call(
        self, views: list[np.ndarray], first: np.ndarray, counts: np.ndarray, members: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        packed = gather(views, first, counts, members)
        with self.device:
            started = time.perf_counter()
            try:
                return self.reconstructor.run_packed(packed, counts[members], self.level)
            finally:
                self.device_s += time.perf_counter() - started

    def _device_failed(self, batch: pa.Table, exc: BaseException) -> None:
        """A device or runtime error: never the rows' fault. Count it against the
        block; end this process so that Ray restarts the actor and retries the
        block, or, at the last attempt, raise :class:`DeviceFailed` (the job
        stops with exit 1 and this message)."""
        text = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:400]
        keys = batch.column("row_key") if "row_key" in batch.column_names else None
        n = batch.num_rows
        block = f"{keys[0].as_py()} .. {keys[n - 1].as_py()} ({n} rows)" if keys else f"{n} rows"
        stats = self.config.stats
        if stats is None:  # not in a job: nothing restarts this process
            raise exc
        import ray

        try:
            attempts = ray.get(stats.device_failed.remote(block, text), timeout=60)
        except Exception:
            attempts = 1  # the count is lost, the retry is not
        if attempts >= MAX_DEVICE_ATTEMPTS:
            # (more than MAX_DEVICE_ATTEMPTS when a call beside the last attempt, on
            # the same actor, was retried once more after its process ended)
            raise DeviceFailed(
                f"the model's device failed {attempts} times on the same block of {n} rows "
                f"({block}): {text}"
            ) from None
        print(
            f"warning: device error in model actor {self.actor[:12]} (pid {os.getpid()}) on a "
            f"block of {n} rows, attempt {attempts} of {MAX_DEVICE_ATTEMPTS}: {text}; the actor "
            "exits, Ray restarts it and retries the block (no row is failed for this)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)


def packed_views(
    column: pa.ChunkedArray, image_size: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """The ``pixels`` column as views, without copying the pixels.

    Returns:
        (``views``: one ``uint8 [v, S, S, 3]`` array per Arrow chunk, viewing
        its data buffer; ``first``: ``int64 [n, 2]``, each row's chunk and first
        view in it; ``counts``: each row's views (0 for null); ``whole``: rows
        whose bytes are a whole number of views).
    """
    view_bytes = image_size * image_size * 3
    views, firsts, counts, wholes = [], [], [], []
    for c, chunk in enumerate(column.chunks):
        large = pa.types.is_large_binary(chunk.type)
        _, offsets_buf, data_buf = chunk.buffers()
        offsets = np.frombuffer(offsets_buf, np.int64 if large else np.int32)
        offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1].astype(np.int64)
        data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.empty(0, np.uint8)
        sizes = np.diff(offsets)
        whole = sizes % view_bytes == 0
        if whole.all():
            # Rows lie one after another: the chunk's bytes are all its views, in order.
            part = data[offsets[0] : offsets[-1]]
            start = (offsets[:-1] - offsets[0]) // view_bytes
        else:  # a row of partial views: copy the whole ones together (never in a real run)
            keep = [data[offsets[i] : offsets[i + 1]] for i in np.flatnonzero(whole)]
            part = np.concatenate(keep) if keep else np.empty(0, np.uint8)
            start = np.zeros(len(sizes), np.int64)
            start[whole] = np.cumsum(sizes[whole]) // view_bytes - sizes[whole] // view_bytes
        views.append(part.reshape(-1, image_size, image_size, 3))
        firsts.append(np.stack([np.full(len(sizes), c), start], axis=1))
        counts.append(np.where(whole, sizes // view_bytes, 0))
        wholes.append(whole)
    if not views:
        empty = np.empty(0, np.int64)
        return [], np.empty((0, 2), np.int64), empty, empty.astype(bool)
    return views, np.concatenate(firsts), np.concatenate(counts), np.concatenate(wholes)


def gather(
    views: list[np.ndarray], first: np.ndarray, counts: np.ndarray, members: np.ndarray
) -> np.ndarray:
    """The views of ``members`` packed in their order: a slice of the Arrow
    buffer when they lie there in that order, else one copy."""
    chunks, starts = first[members, 0], first[members, 1]
    ends = starts + counts[members]
    if (chunks == chunks[0]).all() and (starts[1:] == ends[:-1]).all():
        return views[chunks[0]][starts[0] : ends[-1]]
    return np.concatenate([views[c][s:e] for c, s, e in zip(chunks, starts, ends, strict=True)])


def _binary(rows: np.ndarray, present: np.ndarray, width: int) -> pa.Array:
    """A binary column whose present rows are ``rows`` (in order, ``width``
    bytes each) and the others null, built on the array's own buffer."""
    n = len(present)
    large = len(rows) * width >= 2**31
    offsets = np.zeros(n + 1, np.int64 if large else np.int32)
    np.cumsum(np.where(present, width, 0), out=offsets[1:])
    validity = pa.py_buffer(np.packbits(present, bitorder="little"))
    array = pa.Array.from_buffers(
        pa.large_binary() if large else pa.binary(),
        n,
        [validity, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(rows))],
        null_count=int(n - present.sum()),
    )
    return array.cast(pa.binary()) if large else array


def _constant(value: str, present: np.ndarray) -> pa.Array:
    """A string column of ``value`` where ``present``, null elsewhere."""
    return pa.array(np.full(len(present), value, dtype=object), pa.string(), mask=~present)


def _ious(
    voxels: pa.ChunkedArray, grids: np.ndarray, rank: np.ndarray, done: np.ndarray, level: int
) -> pa.Array:
    """IoU at the threshold against ground truth, for done rows that have it
    (``model.voxels.iou`` over the stored grid, vectorised)."""
    n = len(done)
    truth = np.asarray(voxels.is_valid(), dtype=bool) & done
    out = np.zeros(n, np.float64)
    rows = np.flatnonzero(truth)
    if len(rows):
        packed = voxels.take(pa.array(rows)).combine_chunks()
        offsets = np.frombuffer(packed.buffers()[1], np.int32)[packed.offset :][: len(rows)]
        data = np.frombuffer(packed.buffers()[2], np.uint8)
        raw = data[offsets[:, None] + np.arange(VOXEL_BYTES)]
        bits = np.unpackbits(raw, axis=1, count=GRID_BYTES).astype(bool)
        predicted = grids[rank[rows]] >= level
        inter = np.logical_and(predicted, bits).sum(axis=1)
        union = np.logical_or(predicted, bits).sum(axis=1)
        out[rows] = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return pa.array(out.astype(np.float32), pa.float32(), mask=~truth)


def _fail_rows(
    status: pa.ChunkedArray, error: pa.ChunkedArray, bad: np.ndarray, counts: np.ndarray, size: int
) -> tuple[pa.Array, pa.Array]:
    """Fail the rows whose pixels are not whole ``size`` x ``size`` views."""
    statuses, errors = status.to_pylist(), error.to_pylist()
    for i in np.flatnonzero(bad):
        statuses[i] = FAILED
        errors[i] = f"inference: pixels are not whole {size}x{size}x3 views"
    return pa.array(statuses, pa.string()), pa.array(errors, pa.string())
