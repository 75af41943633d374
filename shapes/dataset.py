"""The procedural multi-view dataset: rows in the job's input schema, written on Ray.

`generate_object(seed, index)` is a pure function: it draws one object of its
category from a generator seeded by `SeedSequence([seed, index])`, renders its
views and voxelises it. `make_dataset` fans objects out to Ray tasks in small
chunks and writes `OUTPUT/part-NNNNN.parquet` files in object-index order, each
written whole (temp name then rename locally, one PUT on object stores), so the
bytes never depend on how many workers ran. It must never write into an output
that already holds something, and never leave a half-written Parquet file under
a name a reader would pick up.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shapes.categories import CATEGORIES, build
from shapes.primitives import voxelize
from shapes.render import Camera, encode_png, render

FOV = 25.0
ELEVATION = (25.0, 30.0)
# At these distances an object fills about 60% of the frame, as in
# ShapeNetRendering, and long objects seen from the side rarely touch the edge.
DISTANCE = (3.2, 3.6)
ROW_GROUP = 64
CHUNK = 8  # objects per Ray task: enough to amortise task overhead, small enough to balance

CAMERA_TYPE = pa.struct(
    [
        ("azimuth", pa.float32()),
        ("elevation", pa.float32()),
        ("in_plane_rotation", pa.float32()),
        ("distance", pa.float32()),
        ("fov", pa.float32()),
    ]
)
SCHEMA = pa.schema(
    [
        pa.field("object_id", pa.string(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("views", pa.list_(pa.binary())),
        pa.field("voxels", pa.binary()),
        pa.field("cameras", pa.list_(CAMERA_TYPE)),
    ]
)


class DatasetError(ValueError):
    """Bad arguments or an output that must not be written to; nothing was written."""


def object_rngs(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the shape and for the cameras of one object, so the
    shape does not change with the number of views."""
    shape_ss, camera_ss = np.random.SeedSequence([seed, index]).spawn(2)
    return np.random.default_rng(shape_ss), np.random.default_rng(camera_ss)


def sample_cameras(rng: np.random.Generator, views: int) -> list[Camera]:
    """ShapeNetRendering's distribution: azimuth uniform, elevation 25-30, fov 25."""
    az = rng.uniform(0.0, 360.0, views)
    el = rng.uniform(*ELEVATION, views)
    dist = rng.uniform(*DISTANCE, views)
    # Stored as float32 in Parquet: render with exactly the stored numbers.
    f32 = [np.float32(v) for v in (az, el, dist)]
    return [
        Camera(float(f32[0][i]), float(f32[1][i]), 0.0, float(f32[2][i]), FOV) for i in range(views)
    ]


def view_range(views: int | tuple[int, int]) -> tuple[int, int]:
    """(low, high) of a views argument: a count, or a (low, high) range."""
    return (views, views) if isinstance(views, int) else (int(views[0]), int(views[1]))


def view_count(seed: int, index: int, views: int | tuple[int, int]) -> int:
    """How many views object ``index`` gets: the count, or one drawn uniformly
    from ``[low, high]`` by a generator of the object's own (seeded by ``(seed,
    index)``), so a dataset's counts never depend on its workers or files."""
    low, high = view_range(views)
    if low == high:
        return high
    return int(np.random.default_rng([seed, index, 1]).integers(low, high + 1))


def category_of(index: int, categories: tuple[str, ...] | list[str] = CATEGORIES) -> str:
    """Categories cycle with the index, so any len(categories) consecutive objects hold all."""
    return categories[index % len(categories)]


def generate_object(
    seed: int,
    index: int,
    category: str | None = None,
    views: int | tuple[int, int] = 24,
    image_size: int = 137,
) -> dict[str, Any]:
    """One dataset row: object_id, category, views (PNG bytes), voxels (packbits), cameras.

    ``views`` is a count, or ``(low, high)``: a count drawn per object
    (``view_count``), whose cameras are the first ones of the ``high`` that the
    object gets, so an object shows the same views whatever its count."""
    category = category_of(index) if category is None else category
    if category not in CATEGORIES:
        raise DatasetError(f"unknown category {category!r}; known: {', '.join(CATEGORIES)}")
    shape_rng, camera_rng = object_rngs(seed, index)
    scene = build(category, shape_rng)
    cameras = sample_cameras(camera_rng, view_range(views)[1])[: view_count(seed, index, views)]
    return {
        "object_id": f"proc-{seed}-{index:07d}",
        "category": category,
        "views": [encode_png(render(scene, cam, image_size)) for cam in cameras],
        "voxels": np.packbits(voxelize(scene)).tobytes(),
        "cameras": [cam.to_dict() for cam in cameras],
    }


def generate_rows(
    seed: int,
    indices: list[int],
    categories: list[str],
    views: int | tuple[int, int],
    image_size: int,
) -> pa.Table:
    """A chunk of rows as an Arrow table (what a Ray task returns)."""
    rows = [
        generate_object(seed, i, category_of(i, categories), views, image_size) for i in indices
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return "file" in protocols or "local" in protocols


def check_output(fs: fsspec.AbstractFileSystem, root: str, url: str) -> None:
    """Refuse an output location that already holds anything."""
    try:
        if fs.isfile(root):
            raise DatasetError(f"output {url} exists and is a file; give a new directory")
        if fs.exists(root) and fs.ls(root, detail=False):
            raise DatasetError(
                f"output {url} exists and is not empty; refusing to overwrite a dataset "
                "(choose a new location or delete it first)"
            )
    except FileNotFoundError:
        return


def write_whole(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write a file so no reader ever sees part of it."""
    if _is_local(fs):
        parent, name = path.rsplit("/", 1) if "/" in path else (".", path)
        tmp = f"{parent}/.{name}.tmp-{os.getpid()}"
        fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(tmp, data)
        os.replace(tmp, path)  # atomic rename on one filesystem
    else:
        fs.pipe_file(path, data)  # a single PUT: visible whole or not at all


def table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=ROW_GROUP)
    return buf.getvalue()


def validate(
    objects: int,
    seed: int,
    views: int | tuple[int, int],
    image_size: int,
    categories: list[str] | None,
    rpf: int,
) -> list[str]:
    """Check arguments; return the category list to cycle through."""
    if not isinstance(objects, int) or objects <= 0:
        raise DatasetError(f"--objects must be a positive integer, got {objects!r}")
    if not isinstance(seed, int) or seed < 0:
        raise DatasetError(f"--seed must be a non-negative integer, got {seed!r}")
    low, high = view_range(views)
    if low <= 0 or high < low:
        shown = views if isinstance(views, int) else f"{low},{high}"
        raise DatasetError(
            f"--views must be a positive count or LOW,HIGH with LOW <= HIGH, got {shown}"
        )
    if image_size < 16:
        raise DatasetError(f"--image-size must be at least 16, got {image_size}")
    if rpf <= 0:
        raise DatasetError(f"rows per file must be positive, got {rpf}")
    if categories is None:
        return list(CATEGORIES)
    if not categories:
        raise DatasetError("--categories is empty")
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise DatasetError(
            f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
            f"known: {', '.join(CATEGORIES)}"
        )
    if len(set(categories)) != len(categories):
        raise DatasetError(f"--categories repeats a name: {','.join(categories)}")
    # Keep ShapeNet order whatever order the user typed.
    return [c for c in CATEGORIES if c in categories]


def make_dataset(
    output: str,
    objects: int,
    seed: int,
    views: int | tuple[int, int] = 24,
    image_size: int = 137,
    categories: list[str] | None = None,
    storage_options: dict | None = None,
    rows_per_file: int = 256,
    num_cpus: int | None = None,
    preview: str | None = None,
) -> dict[str, Any]:
    """Generate `objects` rows into OUTPUT/part-NNNNN.parquet on Ray; `views` is
    a count, or (low, high): a count drawn per object (`view_count`).

    Uses the running Ray if there is one; otherwise starts a local one (with
    `num_cpus`) and shuts it down again. Raises DatasetError, before writing
    anything, on bad arguments or a non-empty output. Returns
    {"rows", "files", "seconds", "objects_per_second", "output"}.
    """
    cats = validate(objects, seed, views, image_size, categories, rows_per_file)
    fs, root = fsspec.core.url_to_fs(output, **(storage_options or {}))
    root = root.rstrip("/")
    check_output(fs, root, output)

    import ray

    started = not ray.is_initialized()
    if started:
        repo = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
    try:
        t0 = time.perf_counter()
        task = ray.remote(num_cpus=1)(generate_rows)
        n_files = math.ceil(objects / rows_per_file)
        chunks = []  # (file, indices) in index order; a chunk never spans two files
        for f in range(n_files):
            idx = list(range(f * rows_per_file, min((f + 1) * rows_per_file, objects)))
            chunks += [(f, idx[i : i + CHUNK]) for i in range(0, len(idx), CHUNK)]
        window = 4 * max(1, int(ray.available_resources().get("CPU", 1)))
        pending: deque = deque()
        current: list[pa.Table] = []
        preview_rows: list[dict] = []
        next_chunk = 0
        for f in range(n_files):
            while True:
                while next_chunk < len(chunks) and len(pending) < window:
                    cf, idx = chunks[next_chunk]
                    pending.append((cf, task.remote(seed, idx, cats, views, image_size)))
                    next_chunk += 1
                if not pending or pending[0][0] != f:
                    break
                current.append(ray.get(pending.popleft()[1]))
            table = pa.concat_tables(current)
            current = []
            if preview and len(preview_rows) < len(cats):
                preview_rows += table.slice(0, len(cats) - len(preview_rows)).to_pylist()
            write_whole(fs, f"{root}/part-{f:05d}.parquet", table_bytes(table))
        seconds = time.perf_counter() - t0
    finally:
        if started:
            ray.shutdown()
    if preview:
        from shapes.preview import contact_sheet

        remote = "://" in preview and not preview.startswith("file://")
        with fsspec.open(preview, "wb", **((storage_options or {}) if remote else {})) as fh:
            fh.write(contact_sheet(preview_rows))
    return {
        "rows": objects,
        "files": n_files,
        "seconds": round(seconds, 3),
        "objects_per_second": round(objects / seconds, 3),
        "output": output,
    }
