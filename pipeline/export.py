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
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
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


def exposed_faces(occupied: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exposed faces of a bool grid: ``(corners int [F, 4, 3], solid int [F, 3],
    empty int [F, 3])``: corners on the voxel lattice (0..32), counter-clockwise
    seen from outside; the occupied voxel each face bounds and the empty one
    (possibly just outside the grid) it looks into."""
    padded = np.pad(np.asarray(occupied, bool), 1)
    corners, solid, empty = [], [], []
    for axis in range(3):
        b, c = np.eye(3, dtype=np.int64)[[(axis + 1) % 3, (axis + 2) % 3]]
        for step in (1, -1):
            exposed = padded & ~np.roll(padded, -step, axis=axis)
            owner = np.argwhere(exposed) - 1  # voxel indices
            base = owner.copy()
            if step == 1:
                base[:, axis] += 1
            quad = np.stack([base, base + b, base + b + c, base + c], axis=1)
            corners.append(quad if step == 1 else quad[:, ::-1])
            solid.append(owner)
            facing = owner.copy()
            facing[:, axis] += step
            empty.append(facing)
    return np.concatenate(corners), np.concatenate(solid), np.concatenate(empty)


def voxel_faces(occupied: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exposed faces of a bool grid: ``(corners int [F, 4, 3], normals int [F, 3])``,
    corners on the voxel lattice (0..32), counter-clockwise seen from outside."""
    corners, solid, empty = exposed_faces(occupied)
    return corners, empty - solid


def cube_mesh(grid: np.ndarray, threshold: float = voxels.THRESHOLD) -> trimesh.Trimesh:
    """The occupied voxels at ``threshold`` as exact cubes: each exposed face two
    triangles; watertight, consistently wound, its volume exactly the voxels'.

    Where two voxels touch only along an edge, four faces meet there; the
    surface is kept a manifold by pairing those faces two by two and giving
    each pair its own copies of the edge's corners: faces of one voxel pair up
    unless the two voxels are joined (through faces) around both ends of the
    edge, then faces around one empty voxel do, which always parts them at
    some end. Around every lattice point, each fan of faces linked through
    paired edges gets its own vertex.

    Raises:
        ValueError: no voxel is occupied at ``threshold``.
    """
    occupied = voxels.occupied(grid, threshold)
    if not occupied.any():
        raise ValueError(f"no voxel is occupied at threshold {threshold}")
    quads, solid, empty = exposed_faces(occupied)
    side = voxels.SIDE + 1
    keys = (quads[..., 0] * side + quads[..., 1]) * side + quads[..., 2]  # [F, 4]
    # edge instances: face f's side from corner k to corner k + 1, at f * 4 + k
    start, end = keys.ravel(), np.roll(keys, -1, axis=1).ravel()
    edge = np.minimum(start, end) * side**3 + np.maximum(start, end)
    order = np.argsort(edge, kind="stable")
    firsts = np.flatnonzero(np.r_[True, np.diff(edge[order]) != 0])
    sizes = np.diff(np.r_[firsts, len(edge)])
    partner = np.empty(len(edge), np.int64)
    pairs = firsts[sizes == 2]
    partner[order[pairs]], partner[order[pairs + 1]] = order[pairs + 1], order[pairs]
    for first in firsts[sizes == 4]:  # voxels that touch along an edge only
        four = order[first : first + 4]
        owners = [tuple(v) for v in solid[four // 4]]
        a, b = sorted(set(owners))
        ends = [start[four[0]], end[four[0]]]
        joined = all(_joined_around(occupied, _point(p, side), a, b) for p in ends)
        group = [tuple(v) for v in empty[four // 4]] if joined else owners
        for i, j in itertools.permutations(range(4), 2):
            if group[i] == group[j]:
                partner[four[i]] = four[j]
    # corners (f, k) and (f, k + 1) are one vertex with the partner's corners there
    f, k, g = np.arange(len(edge)) // 4, np.arange(len(edge)) % 4, partner // 4
    rows, cols = [], []
    for corner, point in ((k, start), ((k + 1) % 4, end)):
        rows.append(f * 4 + corner)
        cols.append(g * 4 + np.argmax(keys[g] == point[:, None], axis=1))
    n = keys.size
    links = coo_matrix(
        (np.ones(2 * len(edge)), (np.concatenate(rows), np.concatenate(cols))), (n, n)
    )
    _, vertex = connected_components(links, directed=False)
    lattice = np.zeros((vertex.max() + 1, 3))
    lattice[vertex] = quads.reshape(-1, 3)
    ids = vertex.reshape(-1, 4)
    faces = np.concatenate([ids[:, [0, 1, 2]], ids[:, [0, 2, 3]]])
    return trimesh.Trimesh(lattice / voxels.SIDE - 0.5, faces, process=False)


def _point(key: int, side: int) -> np.ndarray:
    return np.array([key // side // side, key // side % side, key % side])


def _joined_around(occupied: np.ndarray, point: np.ndarray, a: tuple, b: tuple) -> bool:
    """Whether voxels ``a`` and ``b`` are joined through faces of occupied
    voxels among the eight around the lattice ``point``."""
    block = {
        tuple(point + d)
        for d in itertools.product((-1, 0), repeat=3)
        if all(0 <= x < occupied.shape[0] for x in point + d) and occupied[tuple(point + d)]
    }
    seen, todo = {a}, [a]
    while todo:
        v = todo.pop()
        for axis, step in itertools.product(range(3), (-1, 1)):
            w = tuple(x + step * (i == axis) for i, x in enumerate(v))
            if w in block and w not in seen:
                seen.add(w)
                todo.append(w)
    return b in seen


def binvox(occupied: np.ndarray) -> bytes:
    """binvox bytes of a bool ``grid[x, y, z]``, placed in the unit cube.

    The header is the five lines every binvox reader expects (no comment line);
    the runs are trimesh's run-length encoding, in binvox's x, z, y order.
    ``translate -0.5 -0.5 -0.5`` and ``scale 1`` follow binvox's own definition
    (voxel ``i``'s centre at ``translate + (i + 0.5) / dim * scale``, as binvox,
    viewvox and binvox-rw read it), which puts the voxels exactly at the
    meshes' bounds. trimesh reads the header otherwise (centres at ``translate
    + i * scale / (dim - 1)``, 1/31 apart): ``trimesh.load(path).apply_scale(31 / 32)``
    places its voxels there too (no header satisfies both readings).
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
    levels: set[float] = set()  # the thresholds used
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
            levels.add(level)
            try:
                data, facts = encode(grid, fmt, level, cubes)
            except ValueError as exc:
                results.append(Exported(object_id, row_key, None, str(exc)))
                continue
            facts["threshold"] = level
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
        # the one p(occupied) every file used (the run's, unless given), or each
        # row's own in its facts when rows of several runs differ
        "threshold": threshold if threshold is not None else _single(levels),
        "threshold_source": "given" if threshold is not None else "the rows' run",
        "units": "unit cube [-0.5, 0.5]^3, y up, voxel 1/32"
        + (
            "; trimesh: load(path).apply_scale(31 / 32), see pipeline.export.binvox"
            if fmt == "binvox"
            else ""
        ),
        "rows": [asdict(r) for r in results],
    }
    io.write_bytes(io.join(out, INDEX), json.dumps(index, indent=1).encode(), storage_options)
    return results


def _single(values: set[float]) -> float | None:
    return next(iter(values)) if len(values) == 1 else None
