"""The compiled Reconstructor: uint8 views in, 32^3 probabilities out.

One instance holds one model, traced once per process into a TensorFlow graph
(XLA only on devices where it was measured faster), in fp32 or bf16. It packs
each batch's views so the encoder runs on real views only, and checks its
input before any of it reaches the graph. It must never read images or files
other than the model itself; decoding belongs to the pipeline.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from model import devices
from model.defaults import BATCH_SIZE
from model.saving import load_default, load_model, model_id
from model.voxels import GRID

PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16"}

# XLA per device kind, from `jobs/benchmark.py model --xla on|off`: on this
# project's CPUs XLA ran these convolutions 2x-14x slower than the plain graph
# (oneDNN). On GPU it has not been measured yet, so it stays off there too
# until a benchmark says otherwise.
XLA_BY_DEVICE = {"CPU": False, "GPU": False}

# View counts are padded up to one of these, bounding the number of distinct
# (time) shapes the recurrence sees; past the last, to a multiple of 8.
VIEW_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 12, 16, 24)


def view_bucket(n: int) -> int:
    """The padded sequence length for an object with `n` views."""
    for b in VIEW_BUCKETS:
        if n <= b:
            return b
    return -(-n // 8) * 8


def bf16_supported(device: str) -> bool:
    """Whether `device` ("cpu" | "gpu") computes bf16 natively: AVX-512 BF16 or
    AMX on the CPU, compute capability 8.0 or newer on the GPU."""
    if device == "gpu":
        gpus = tf.config.list_physical_devices("GPU")
        details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
        return tuple(details.get("compute_capability", (0, 0))) >= (8, 0)
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def view_index(
    counts: np.ndarray, rows: int | None = None, length: int | None = None
) -> np.ndarray:
    """The model's ``view_index`` ``int32 [rows, length]`` for objects whose views
    lie packed one object after another, ``counts[i]`` views each: row i holds
    the packed positions of object i's views, then -1 (no view). ``rows`` and
    ``length`` pad it (at least the number of objects and the most views)."""
    counts = np.asarray(counts, dtype=np.int64)
    length = length or int(counts.max())
    index = np.full((rows or len(counts), length), -1, np.int32)
    starts = np.cumsum(counts) - counts
    steps = np.arange(length)
    index[: len(counts)] = np.where(steps < counts[:, None], starts[:, None] + steps, -1)
    return index


def pack_views(
    views: Sequence[np.ndarray], rows: int | None = None, length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The model's inputs for a list of objects' views: the views packed
    `[sum n_i, S, S, 3]` and the index `[rows, length]` of each object's views
    in the packed array (-1: no view). `rows` and `length` pad the index (at
    least the number of objects and the most views)."""
    counts = np.array([v.shape[0] for v in views])
    return np.concatenate(views, axis=0), view_index(counts, rows, length)


def with_precision(model: keras.Model, precision: str) -> keras.Model:
    """A copy of `model` computing in `precision` ("fp32" or "bf16"), same
    weights. Inputs, logits and the output stay float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return model
    config = copy.deepcopy(model.get_config())
    policy = PRECISIONS[precision]
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer" or layer["name"] in ("logits", "occupancy"):
            continue
        layer["config"]["dtype"] = policy
        if "cell" in layer["config"]:
            layer["config"]["cell"]["config"]["dtype"] = policy
    clone = model.__class__.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


class Reconstructor:
    """Reconstructs objects from their views with one compiled model.

    Args:
        model: a `keras.Model` built by `model.build`, a path or fsspec URL of
            a `.keras` file, or None for voxray's shipped weights.
        batch_size: objects per forward pass.
        precision: "fp32", "bf16" (Keras mixed precision; on CPUs with
            AVX-512 BF16 about twice as fast), or "auto": bf16 where the device
            computes it natively, else fp32 (the default: on the evaluation set
            bf16 moved the shipped model's 5-view IoU by +0.0001).
        device: "auto" (a GPU when TF sees one, else the CPU), "cpu" or "gpu".
        jit_compile: force XLA on or off; None follows `XLA_BY_DEVICE`.
        storage_options: fsspec options for a remote model URL.

    Example:
        >>> r = Reconstructor("model.keras", batch_size=8)
        >>> probs = r.predict([np.zeros((3, r.image_size, r.image_size, 3), np.uint8)])
        >>> probs.shape
        (1, 32, 32, 32)
    """

    def __init__(
        self,
        model: keras.Model | str | os.PathLike | None = None,
        batch_size: int = BATCH_SIZE,
        precision: str = "auto",
        device: str = "auto",
        jit_compile: bool | None = None,
        storage_options: dict | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        gpus = devices.configure()
        if device == "auto":
            device = "gpu" if gpus else "cpu"
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
        if device == "gpu" and not gpus:
            raise ValueError("device='gpu' but TensorFlow sees no GPU")
        if model is None:
            model = load_default()
        elif not isinstance(model, keras.Model):
            model = load_model(model, storage_options)
        self.model_id = model_id(model)
        self.preset = model.name
        self.image_size = int(model.input["views"].shape[1])
        self.batch_size = int(batch_size)
        if precision == "auto":
            precision = "bf16" if bf16_supported(device) else "fp32"
        self.precision = precision
        self.device = device
        self.jit_compile = XLA_BY_DEVICE[device.upper()] if jit_compile is None else jit_compile
        self.model = with_precision(model, precision)
        s = self.image_size
        views = tf.TensorSpec([None, s, s, 3], tf.uint8, name="views")
        index = tf.TensorSpec([None, None], tf.int32, name="view_index")
        level = tf.TensorSpec([], tf.int32, name="level")
        # The plain graph is traced once for any shape. XLA compiles per concrete
        # shape, so with XLA each shape is its own trace: one trace, one compile,
        # and ``traces`` counts both (a test holds it to one per view bucket).
        fixed = self.jit_compile
        self.traces = 0
        self._grids = tf.function(
            self._grids_graph,
            input_signature=None if fixed else [views, index, level],
            jit_compile=self.jit_compile,
            autograph=False,  # plain graph code: no Python control flow on tensors
        )
        self._forward = tf.function(
            self._forward_graph,
            input_signature=None if fixed else [views, index],
            jit_compile=self.jit_compile,
            autograph=False,
        )

    def _forward_graph(self, views: tf.Tensor, view_index: tf.Tensor) -> tf.Tensor:
        self.traces += 1  # Python here runs only while a graph (either one) is traced
        with tf.device(f"/{self.device.upper()}:0"):
            # Pixels cross into the graph as uint8 (4x less to copy than float).
            x = tf.cast(views, tf.float32) * (1.0 / 255.0)
            return self.model({"views": x, "view_index": view_index}, training=False)

    def _grids_graph(
        self, views: tf.Tensor, view_index: tf.Tensor, level: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The stored form on the device: uint8 grids (``model.voxels.quantize``,
        bit for bit: round half to even, as numpy's rint) and their occupied
        counts, so a quarter of the float grid's bytes come back to the host."""
        probabilities = self._forward_graph(views, view_index)
        with tf.device(f"/{self.device.upper()}:0"):
            scaled = tf.clip_by_value(tf.round(probabilities * 255.0), 0.0, 255.0)
            grids = tf.cast(scaled, tf.uint8)
            counts = tf.reduce_sum(
                tf.cast(tf.cast(grids, tf.int32) >= level, tf.int32), axis=[1, 2, 3]
            )
            return grids, counts

    def run_packed(
        self, views: np.ndarray, counts: np.ndarray, level: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """One device call: grids ``uint8 [N, 32, 32, 32]`` and occupied counts
        ``int32 [N]`` (voxels ``>= level``, see ``model.voxels.threshold_level``)
        of N <= batch_size objects whose views are packed in ``views``
        (``uint8 [sum counts, S, S, 3]``, object 0's first).

        With XLA the call's shapes are fixed per view bucket: the index is
        padded to ``[batch_size, view_bucket(max counts)]`` and the views to
        ``batch_size * bucket`` (zeros, never indexed), so a run compiles at most
        once per bucket (``VIEW_BUCKETS``); without it the shapes are the call's own."""
        n = len(counts)
        if not 0 < n <= self.batch_size:
            raise ValueError(f"run_packed takes 1..{self.batch_size} objects, got {n}")
        views, index = self._call_shapes(views, counts)
        grids, occupied = self._grids(
            tf.constant(views), tf.constant(index), tf.constant(level, tf.int32)
        )
        return grids.numpy()[:n], occupied.numpy()[:n]

    def _call_shapes(self, views: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The packed views and index of one call, padded as ``run_packed`` says."""
        most = int(np.max(counts))
        # The plain graph takes any length (no retrace): no masked step is run
        # that no object needs. XLA compiles per shape: lengths are bucketed.
        length = view_bucket(most) if self.jit_compile else most
        rows = self.batch_size if self.jit_compile else len(counts)
        index = view_index(counts, rows, length)
        if self.jit_compile and views.shape[0] < rows * length:
            padded = np.zeros((rows * length, *views.shape[1:]), np.uint8)
            padded[: views.shape[0]] = views
            views = padded
        return views, index

    def validate(self, views: Sequence[np.ndarray]) -> None:
        """Raise ValueError naming the first bad object and what is wrong."""
        s = self.image_size
        if isinstance(views, np.ndarray) and views.dtype != object:
            raise ValueError("views must be a list with one uint8 array [n, S, S, 3] per object")
        for i, v in enumerate(views):
            if not isinstance(v, np.ndarray):
                raise ValueError(f"object {i}: views must be a numpy array, got {type(v).__name__}")
            if v.dtype != np.uint8:
                raise ValueError(f"object {i}: views must be uint8 pixels, got {v.dtype}")
            if v.ndim != 4 or v.shape[1:] != (s, s, 3):
                raise ValueError(
                    f"object {i}: views must have shape [n, {s}, {s}, 3], got {list(v.shape)}"
                )
            if v.shape[0] == 0:
                raise ValueError(f"object {i}: has no views")

    def predict(self, views: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities `float32 [N, 32, 32, 32]` for N objects, given each
        object's views as uint8 `[n_i, S, S, 3]` (n_i >= 1, S = image_size)."""
        self.validate(views)
        out = np.empty((len(views), *GRID), np.float32)
        # Batch objects of similar view counts together: the recurrence runs
        # (masked) over the longest member's views, so mixing 1 and 24 views in
        # one batch would pay for 24 steps on every object.
        order = np.argsort([v.shape[0] for v in views], kind="stable")
        for start in range(0, len(views), self.batch_size):
            members = order[start : start + self.batch_size]
            chunk = [views[i] for i in members]
            counts = np.array([v.shape[0] for v in chunk])
            packed, index = self._call_shapes(np.concatenate(chunk, axis=0), counts)
            probs = self._forward(tf.constant(packed), tf.constant(index))
            out[members] = probs.numpy()[: len(chunk)]
        return out

    def warm_up(self, views_per_object: int = 5) -> None:
        """Trace and run the job's device call once (``run_packed``), so the first
        real batch pays no compile cost (``predict`` traces on its first use)."""
        s, n = self.image_size, self.batch_size
        counts = np.full(n, views_per_object)
        self.run_packed(np.zeros((n * views_per_object, s, s, 3), np.uint8), counts, 1)
