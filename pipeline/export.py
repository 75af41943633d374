"""Grids as files that 3D tools open: PLY, OBJ and glTF binary (GLB) meshes
through trimesh, and binvox voxel files. A mesh is either the smooth surface
that marching cubes (scikit-image) finds in the probabilities at the run's
threshold, or, with ``cubes``, the exact faces of the occupied voxels.

Coordinates: every file spans the unit cube ``[-0.5, 0.5]^3`` centred on the
origin, ``grid[x, y, z]`` with y up (glTF's convention, and ShapeNet's), one
voxel 1/32 wide; voxel ``i`` covers ``[-0.5 + i/32, -0.5 + (i+1)/32]``, so a
binvox file's header says ``translate -0.5 -0.5 -0.5``, ``scale 1``.

File names come from object ids through :func:`file_name` (only safe
characters plus a digest of the id); no id is written into a mesh or voxel
file (``index.json`` maps files to rows, ids JSON-escaped). This module must
never write outside the folder it is given.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import trimesh
from skimage import measure
from trimesh.voxel import runlength

from model import voxels
from pipeline import io
from pipeline.layout import OK
from pipeline.results import Output

FORMATS = ("ply", "obj", "glb", "binvox")
INDEX = "index.json"  # the export's own record: which row went to which file
BATCH = 256  # grids read at once


def lowest_occupied(threshold: float) -> int:
    """The smallest stored value (uint8) that counts as occupied at ``threshold``,
    by ``model.voxels.occupied`` itself, so meshes agree with ``occupied_voxels``."""
    values = np.arange(256, dtype=np.uint8)
    hits = np.flatnonzero(voxels.occupied(values, threshold))
    return int(hits[0]) if len(hits) else 256


def smooth_mesh(grid: np.ndarray, threshold: float = voxels.THRESHOLD) -> trimesh.Trimesh:
    """The smooth surface of a stored grid at ``threshold``: marching cubes on the
    probabilities, padded with zeros so that every surface closes.

    The level lies halfway between the highest unoccupied and the lowest
    occupied stored value, so the surface separates exactly the voxels that
    ``model.voxels.occupied`` counts and never passes through a sample (no
    degenerate triangles). Vertices lie between voxel centres, in the unit cube
    (where a surface would cross the grid's face, on that face).

    Raises:
        ValueError: no voxel is occupied at ``threshold``.
    """
    level = lowest_occupied(threshold) - 0.5
    if not (grid >= level).any():
        raise ValueError(f"no voxel is occupied at threshold {threshold}")
    padded = np.pad(np.asarray(grid, np.float32), 1)
    vertices, faces, _, _ = measure.marching_cubes(padded, level, allow_degenerate=False)
    # padded index j is voxel j - 1, whose centre is at (j - 1 + 0.5) / 32 - 0.5; a
    # surface crossing into the padding is held at the grid's face, where its voxels end
    vertices = np.clip((vertices - 0.5) / voxels.SIDE - 0.5, -0.5, 0.5)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def voxel_faces(occupied: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exposed faces of a bool grid: ``(corners int [F, 4, 3], normals int [F, 3])``,
    corners on the voxel lattice (0..32), counter-clockwise seen from outside."""
    padded = np.pad(np.asarray(occupied, bool), 1)
    corners, normals = [], []
    for axis in range(3):
        b, c = np.eye(3, dtype=np.int64)[[(axis + 1) % 3, (axis + 2) % 3]]
        for step in (1, -1):
            exposed = padded & ~np.roll(padded, -step, axis=axis)
            base = np.argwhere(exposed) - 1  # voxel indices
            if step == 1:
                base[:, axis] += 1
            quad = np.stack([base, base + b, base + b + c, base + c], axis=1)
            corners.append(quad if step == 1 else quad[:, ::-1])
            normal = np.zeros((len(base), 3), np.int64)
            normal[:, axis] = step
            normals.append(normal)
    return np.concatenate(corners), np.concatenate(normals)


def cube_mesh(grid: np.ndarray, threshold: float = voxels.THRESHOLD) -> trimesh.Trimesh:
    """The occupied voxels at ``threshold`` as exact cubes: each exposed face two
    triangles, corners shared, so its volume is exactly the voxels' volume.
    (Closed everywhere; manifold except where voxels touch only along an edge.)

    Raises:
        ValueError: no voxel is occupied at ``threshold``.
    """
    occupied = voxels.occupied(grid, threshold)
    if not occupied.any():
        raise ValueError(f"no voxel is occupied at threshold {threshold}")
    quads, _ = voxel_faces(occupied)
    side = voxels.SIDE + 1
    keys = (quads[..., 0] * side + quads[..., 1]) * side + quads[..., 2]
    unique, inverse = np.unique(keys.ravel(), return_inverse=True)
    quad_ids = inverse.reshape(-1, 4)
    faces = np.concatenate([quad_ids[:, [0, 1, 2]], quad_ids[:, [0, 2, 3]]])
    lattice = np.stack([unique // side // side, unique // side % side, unique % side], axis=1)
    return trimesh.Trimesh(lattice / voxels.SIDE - 0.5, faces, process=False)


def binvox(occupied: np.ndarray) -> bytes:
    """binvox bytes of a bool ``grid[x, y, z]``, placed in the unit cube.

    The header is the five lines every binvox reader expects (no comment line);
    the runs are trimesh's run-length encoding, in binvox's x, z, y order.
    """
    grid = np.asarray(occupied, bool)
    side = grid.shape[0]
    runs = runlength.dense_to_rle(grid.transpose(0, 2, 1).ravel().astype(np.uint8), np.uint8)
    header = f"#binvox 1\ndim {side} {side} {side}\ntranslate -0.5 -0.5 -0.5\nscale 1.0\ndata\n"
    return header.encode("ascii") + np.asarray(runs, np.uint8).tobytes()


def encode(
    grid: np.ndarray, fmt: str, threshold: float = voxels.THRESHOLD, cubes: bool = False
) -> tuple[bytes, dict[str, Any]]:
    """One grid as the bytes of a ``fmt`` file, and facts about it (``vertices``,
    ``faces``, ``watertight`` for meshes; ``occupied`` voxels for binvox).

    Raises:
        ValueError: an unknown format, or no voxel occupied at ``threshold``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "binvox":
        occupied = voxels.occupied(grid, threshold)
        if not occupied.any():
            raise ValueError(f"no voxel is occupied at threshold {threshold}")
        return binvox(occupied), {"occupied": int(occupied.sum())}
    mesh = cube_mesh(grid, threshold) if cubes else smooth_mesh(grid, threshold)
    data = mesh.export(file_type=fmt)
    facts = {
        "vertices": len(mesh.vertices),
        "faces": len(mesh.faces),
        "watertight": bool(mesh.is_watertight),
    }
    return data.encode() if isinstance(data, str) else data, facts


def file_name(object_id: str, fmt: str) -> str:
    """A safe file name for ``object_id``: its safe characters (letters, digits,
    ``.``, ``_``, ``-``; at most 48, never leading dots) then 10 hex digits of
    its SHA-256, so distinct ids never share a name; e.g. ``chair_7-<digest>.ply``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", object_id).lstrip(".")[:48] or "object"
    digest = hashlib.sha256(object_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{slug}-{digest}.{fmt}"


@dataclass
class Exported:
    """What became of one selected manifest row."""

    object_id: str | None
    row_key: str | None
    file: str | None  # relative to the export folder; None when skipped
    reason: str | None = None  # why it was skipped
    facts: dict[str, Any] | None = None


def export(
    output: Output,
    rows: pa.Table,
    out: str,
    fmt: str,
    cubes: bool = False,
    threshold: float | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> list[Exported]:
    """Write one ``fmt`` file per ok row of ``rows`` (from ``output.select(...)``)
    into the folder ``out`` (local or a URL), plus ``index.json``, which lists
    every row with its file or the reason it has none (failed, or nothing
    occupied). Rows of one object id after the first get ``-2``, ``-3``... in
    their file names, in the order of ``rows``.

    Args:
        output: the output the rows come from.
        rows: manifest rows.
        out: the folder to write into.
        fmt: ``ply``, ``obj``, ``glb`` or ``binvox``.
        cubes: exact voxel cubes instead of the smooth surface (meshes only).
        threshold: p(occupied) for the surface; default each row's own threshold.
        storage_options: fsspec options for ``out``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    records = rows.to_pylist()
    results: list[Exported] = []
    seen: dict[str, int] = {}
    for start in range(0, len(records), BATCH):
        batch = records[start : start + BATCH]
        ok = [r for r in batch if r.get("status") == OK and r.get("shard") is not None]
        grids = iter(output.grids(ok))
        for row in batch:
            object_id, row_key = row.get("object_id"), row.get("row_key")
            if not (row.get("status") == OK and row.get("shard") is not None):
                reason = f"{row.get('status')}: {row.get('error')}"
                results.append(Exported(object_id, row_key, None, reason))
                continue
            grid = next(grids)
            level = row["threshold"] if threshold is None else threshold
            try:
                data, facts = encode(grid, fmt, level, cubes)
            except ValueError as exc:
                results.append(Exported(object_id, row_key, None, str(exc)))
                continue
            name = file_name(object_id, fmt)
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name = f"{name[: -len(fmt) - 1]}-{seen[name]}.{fmt}"
            io.write_bytes(io.join(out, name), data, storage_options)
            results.append(Exported(object_id, row_key, name, None, facts))
    index = {
        "output": output.url,
        "format": fmt,
        "cubes": cubes,
        "threshold": threshold,
        "units": "unit cube [-0.5, 0.5]^3, y up, voxel 1/32",
        "rows": [asdict(r) for r in results],
    }
    io.write_bytes(io.join(out, INDEX), json.dumps(index, indent=1).encode(), storage_options)
    return results
