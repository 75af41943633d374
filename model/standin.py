"""A stand-in for the model's device: what the job's pipeline can feed an
accelerator, measured on any machine. It takes exactly what the compiled
Reconstructor's device call takes (packed uint8 views and each object's view
count), waits a set time per call the way a host thread waits on a GPU (the
wait releases the GIL, so the actor's other call prepares its batch meanwhile),
and returns well-formed uint8 grids and their occupancy counts. It can raise
the errors a real device raises (CUDA errors, out of memory) on chosen calls,
for the fault tests.

It is selected only by the job's ``--stand-in SPEC`` flag (documented as a
benchmark and test tool), and its model id starts with ``stand-in``, so an
output it wrote can never be resumed or mixed with a real model's. This module
must never import TensorFlow: the stand-in actor starts in a second.

SPEC is comma-separated ``key=value`` pairs (all optional)::

    latency_ms=0.2          fixed time per device call
    per_object_us=320       plus this per object in the call
    image_size=64           the model input size it claims (default: the shipped model's)
    fail=cuda@3             raise on the 3rd device call of each fresh actor process
    fail=oom@2+5            out of memory on calls 2 and 5
    fail=cuda@every         every call, in every process (a device that never recovers)

Errors are injected only in an actor's first life unless ``@every``: a process
that Ray restarted after an injected error runs clean, which is what a
transient device fault looks like from the job.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from model.voxels import GRID, SIDE

# The input size the shipped weights take (compact-wide), so a stand-in run
# decodes what a real run decodes.
DEFAULT_IMAGE_SIZE = 64
STAND_IN_PREFIX = "stand-in"


class ResourceExhaustedError(RuntimeError):
    """What the stand-in raises for out of memory (TensorFlow's class name and
    message shape, so the actor's classification sees what a GPU gives it)."""


class InternalError(RuntimeError):
    """What the stand-in raises for a device fault (TensorFlow's class name)."""


FAILURES = {
    "oom": lambda: ResourceExhaustedError(
        "OOM when allocating tensor with shape[16,128,32,32,32] and type float on "
        "/job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc (stand-in)"
    ),
    "cuda": lambda: InternalError(
        "CUDA error: an illegal memory access was encountered (CUDA_ERROR_ILLEGAL_ADDRESS) "
        "(stand-in)"
    ),
}


@dataclass(frozen=True)
class StandInSpec:
    """A parsed ``--stand-in`` value (see the module docstring)."""

    latency_ms: float = 0.0
    per_object_us: float = 0.0
    image_size: int = DEFAULT_IMAGE_SIZE
    fail: str = ""  # "" or the failure's kind
    fail_calls: tuple[int, ...] = ()  # 1-based device calls; empty with fail set: every call
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> StandInSpec:
        """Raises ValueError with what to write instead."""
        values: dict = {"text": text}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            try:
                if not sep:
                    raise ValueError
                if key in ("latency_ms", "per_object_us"):
                    values[key] = float(value)
                    if values[key] < 0:
                        raise ValueError
                elif key == "image_size":
                    values[key] = int(value)
                    if values[key] < 8:
                        raise ValueError
                elif key == "fail":
                    kind, _, calls = value.partition("@")
                    if kind not in FAILURES or not calls:
                        raise ValueError
                    values["fail"] = kind
                    if calls != "every":
                        values["fail_calls"] = tuple(int(c) for c in calls.split("+"))
                        if min(values["fail_calls"]) < 1:
                            raise ValueError
                else:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"--stand-in: cannot use {item!r}; write comma-separated key=value pairs: "
                    "latency_ms=MS, per_object_us=US, image_size=PX, "
                    f"fail=KIND@N[+N...] or fail=KIND@every (KIND: {', '.join(FAILURES)})"
                ) from None
        return cls(**values)


def model_id(spec: StandInSpec) -> str:
    """The id a stand-in's output rows carry: never a real model's."""
    return f"{STAND_IN_PREFIX}-{spec.image_size}px"


class StandIn:
    """The device call of :class:`model.Reconstructor` without a network.

    Args:
        spec: a ``--stand-in`` value or a parsed :class:`StandInSpec`.
        batch_size: objects per device call (as the Reconstructor's).
        reconstructed: this process is a restart of an actor (no injected
            errors unless the spec says ``@every``).
        precision: the job's ``--precision``. A stand-in computes nothing, so
            it only records it, as the Reconstructor would resolve it on a
            device without bf16 ("auto" is "fp32"): the rows of a stand-in run
            carry a precision like a real run's, and a rerun with another one
            is refused alike.

    Attributes, as the Reconstructor's: ``model_id``, ``image_size``,
    ``batch_size``, ``precision``, ``device``, ``jit_compile``; and
    ``busy_s``, the time spent waiting as a device would.
    """

    device = "stand-in"
    jit_compile = False

    def __init__(
        self,
        spec: str | StandInSpec,
        batch_size: int,
        reconstructed: bool = False,
        precision: str = "auto",
    ):
        self.spec = StandInSpec.parse(spec) if isinstance(spec, str) else spec
        self.precision = "bf16" if precision == "bf16" else "fp32"
        self.image_size = self.spec.image_size
        self.batch_size = int(batch_size)
        self.model_id = model_id(self.spec)
        self.reconstructed = reconstructed
        self.calls = 0
        self.busy_s = 0.0
        self._lock = threading.Lock()
        self._shapes = _grids()
        self._occupied: dict[int, np.ndarray] = {}  # per level: each shape's count

    def warm_up(self, views_per_object: int = 5) -> None:
        """Nothing to trace; here for the Reconstructor's interface."""

    def run_packed(
        self, views: np.ndarray, counts: np.ndarray, level: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Grids ``uint8 [N, 32, 32, 32]`` and occupied counts ``int32 [N]`` (voxels
        ``>= level``) of N objects whose views are packed in ``views`` (the first
        ``counts[0]`` views are object 0's, and so on).

        Each grid is one of a few fixed shapes, chosen by the object's first
        view, so grids differ between objects and repeat for the same input.
        """
        with self._lock:
            self.calls += 1
            call = self.calls
        self._maybe_fail(call)
        n = len(counts)
        wait = self.spec.latency_ms / 1e3 + n * self.spec.per_object_us / 1e6
        if wait > 0:
            started = time.perf_counter()
            time.sleep(wait)
            with self._lock:
                self.busy_s += time.perf_counter() - started
        first = np.concatenate([[0], np.cumsum(counts[:-1])]).astype(np.int64)
        # one pixel of each object's first view picks its shape: cheap, input-dependent
        pick = views[first, views.shape[1] // 2, views.shape[2] // 2, 0].astype(np.int64)
        choice = pick % len(self._shapes)
        if level not in self._occupied:
            flat = self._shapes.reshape(len(self._shapes), -1)
            self._occupied[level] = (flat >= level).sum(axis=1, dtype=np.int32)
        # a fresh array, as a device's result lands in host memory
        return self._shapes[choice], self._occupied[level][choice]

    def _maybe_fail(self, call: int) -> None:
        spec = self.spec
        if not spec.fail:
            return
        every = not spec.fail_calls
        if every or (not self.reconstructed and call in spec.fail_calls):
            raise FAILURES[spec.fail]()


def _grids() -> np.ndarray:
    """Eight soft balls of different sizes and places, ``uint8 [8, 32, 32, 32]``."""
    axis = (np.arange(SIDE) + 0.5) / SIDE - 0.5
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    out = np.empty((8, *GRID), np.uint8)
    for i in range(8):
        seed = hashlib.sha256(f"stand-in {i}".encode()).digest()
        cx, cy, cz = ((b / 255.0 - 0.5) * 0.3 for b in seed[:3])
        radius = 0.15 + 0.25 * seed[3] / 255.0
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2)
        p = 1.0 / (1.0 + np.exp((d - radius) * 40.0))
        out[i] = np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8)
    return out
