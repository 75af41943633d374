"""The model's output contract: the 32^3 occupancy grid, how it is stored and
how it is scored. Grids leave the model as float probabilities, are stored as
``uint8 round(p * 255)``, count as occupied at ``p >= THRESHOLD`` (the paper's
0.4), and ground truth arrives as ``np.packbits`` of a C-order bool grid. Every
reader and writer of grids (the job's actors and sink, training, evaluation,
the output reader) uses these definitions, so a number computed from a stored
grid equals the one the job recorded. This module must never import TensorFlow.
"""

from __future__ import annotations

import numpy as np

SIDE: int = 32
GRID: tuple[int, int, int] = (SIDE, SIDE, SIDE)
GRID_BYTES: int = SIDE**3  # one uint8 probability per voxel
VOXEL_BYTES: int = SIDE**3 // 8  # packed ground truth
THRESHOLD: float = 0.4  # p(occupied) at or above which a voxel is occupied (the paper's IoU@0.4)


def quantize(probabilities: np.ndarray) -> np.ndarray:
    """float p in [0, 1] -> uint8 round(p * 255), the stored form."""
    return np.clip(np.rint(probabilities * 255.0), 0, 255).astype(np.uint8)


def occupied(grid: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Occupancy of a stored uint8 grid: ``grid / 255 >= threshold``.

    Computed from the stored grid, not the float probabilities, so that anyone
    reading a shard gets exactly the manifest's ``occupied_voxels``.
    """
    return grid.astype(np.float64) >= threshold * 255.0


def threshold_level(threshold: float = THRESHOLD) -> int:
    """The smallest stored value that counts as occupied at ``threshold``: the
    integer form of :func:`occupied` (``grid >= level`` is the same test), for
    code that counts on the device or over many grids at once."""
    return next(k for k in range(256) if k >= threshold * 255.0) if threshold <= 1.0 else 256


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
