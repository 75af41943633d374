"""Import ShapeNetRendering + ShapeNetVox32 into voxray's input schema.

Reads `RENDERINGS/<synset>/<model>/rendering/{00..23}.png` with their
`rendering_metadata.txt` (one line per view: azimuth, elevation, in-plane
rotation, distance, fov) and `VOXELS/<synset>/<model>/model.binvox`, maps the
13 synsets to voxray's category names and writes the same Parquet layout as
`make_dataset`. PNG bytes are copied as they are. Voxels go from binvox order to
`grid[x, y, z]` with no other change of axes. Every model found in either tree
becomes a row or a skip with its reason; nothing may be dropped silently, and
nothing is written into an output that already holds something.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
from PIL import Image

from shapes.binvox import BinvoxError, read_binvox
from shapes.categories import CATEGORIES, SYNSETS
from shapes.dataset import SCHEMA, DatasetError, check_output, table_bytes, write_whole
from shapes.primitives import GRID

CATEGORY_OF_SYNSET = {s: c for c, s in SYNSETS.items()}
METADATA = "rendering_metadata.txt"


class Skip(Exception):
    """A model that cannot become a row; the message is the reason."""


@dataclass
class ImportReport:
    rows: int = 0
    files: int = 0
    seconds: float = 0.0
    not_selected: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (model id, reason)

    def reasons(self) -> Counter:
        """Skips counted by the kind of reason (the text before the first colon)."""
        return Counter(reason.split(":")[0] for _, reason in self.skipped)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "files": self.files,
            "seconds": round(self.seconds, 3),
            "not_selected": self.not_selected,
            "skipped": len(self.skipped),
            "skip_reasons": dict(self.reasons()),
        }


def _listdirs(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    return sorted(
        e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory"
    )


def _read_views(fs: fsspec.AbstractFileSystem, model_dir: str) -> tuple[list[bytes], list[dict]]:
    rdir = f"{model_dir}/rendering"
    if not fs.isdir(rdir):
        raise Skip("no rendering directory")
    names = sorted(
        n.rsplit("/", 1)[-1] for n in fs.ls(rdir, detail=False) if n.lower().endswith(".png")
    )
    if not names:
        raise Skip("no views: rendering/ holds no .png")
    meta_path = next(
        (p for p in (f"{rdir}/{METADATA}", f"{model_dir}/{METADATA}") if fs.isfile(p)), None
    )
    if meta_path is None:
        raise Skip(f"no {METADATA}")
    try:
        lines = [ln.split() for ln in fs.cat(meta_path).decode("ascii").splitlines() if ln.strip()]
        cams = [
            dict(
                zip(
                    ("azimuth", "elevation", "in_plane_rotation", "distance", "fov"),
                    map(float, ln[:5]),
                    strict=True,
                )
            )
            for ln in lines
        ]
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise Skip(f"broken {METADATA}: {e}") from e
    if len(cams) != len(names):
        raise Skip(f"broken {METADATA}: {len(cams)} lines for {len(names)} views")
    views = []
    for n in names:
        data = fs.cat(f"{rdir}/{n}")
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.format != "PNG":
                    raise ValueError(f"format {im.format}")
                im.load()
        except Exception as e:  # Pillow raises many types for a bad file
            raise Skip(f"broken view: {n}: {e}") from e
        views.append(data)
    return views, cams


def _read_voxels(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    if not fs.isfile(path):
        raise Skip("no model.binvox")
    try:
        grid = read_binvox(fs.cat(path)).grid
    except BinvoxError as e:
        raise Skip(f"broken model.binvox: {e}") from e
    if grid.shape != (GRID,) * 3:
        raise Skip(f"broken model.binvox: dim {grid.shape[0]}, expected {GRID}")
    return np.packbits(grid).tobytes()


def import_shapenet(
    renderings: str,
    voxels: str,
    output: str,
    categories: list[str] | None = None,
    storage_options: dict | None = None,
    rows_per_file: int = 256,
) -> ImportReport:
    """Import both trees into OUTPUT/part-NNNNN.parquet; return what was written and skipped.

    Raises DatasetError before writing on unknown categories, missing input
    trees or a non-empty output.
    """
    unknown = [c for c in categories or [] if c not in CATEGORIES]
    if unknown:
        raise DatasetError(f"unknown category {', '.join(unknown)}; known: {', '.join(CATEGORIES)}")
    if rows_per_file <= 0:
        raise DatasetError(f"rows per file must be positive, got {rows_per_file}")
    rfs, rroot = fsspec.core.url_to_fs(renderings)
    vfs, vroot = fsspec.core.url_to_fs(voxels)
    for fs, root, flag in ((rfs, rroot, "--renderings"), (vfs, vroot, "--voxels")):
        if not fs.isdir(root):
            raise DatasetError(f"{flag} {root} is not a directory")
    ofs, oroot = fsspec.core.url_to_fs(output, **(storage_options or {}))
    oroot = oroot.rstrip("/")
    check_output(ofs, oroot, output)

    t0 = time.perf_counter()
    report = ImportReport()
    wanted = set(categories or CATEGORIES)
    models: set[tuple[str, str]] = set()
    for fs, root in ((rfs, rroot), (vfs, vroot)):
        for synset in _listdirs(fs, root):
            models |= {(synset, m) for m in _listdirs(fs, f"{root}/{synset}")}
    rows: list[dict] = []

    def flush() -> None:
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        write_whole(ofs, f"{oroot}/part-{report.files:05d}.parquet", table_bytes(table))
        report.files += 1
        rows.clear()

    for synset, model in sorted(models):
        mid = f"{synset}/{model}"
        category = CATEGORY_OF_SYNSET.get(synset)
        if category is None:
            report.skipped.append((mid, f"unknown synset: {synset} is not one of the 13"))
            continue
        if category not in wanted:
            report.not_selected += 1
            continue
        try:
            views, cams = _read_views(rfs, f"{rroot}/{mid}")
            vox = _read_voxels(vfs, f"{vroot}/{mid}/model.binvox")
        except Skip as e:
            report.skipped.append((mid, str(e)))
            continue
        rows.append(
            {
                "object_id": f"shapenet-{synset}-{model}",
                "category": category,
                "views": views,
                "voxels": vox,
                "cameras": cams,
            }
        )
        report.rows += 1
        if len(rows) == rows_per_file:
            flush()
    if rows:
        flush()
    report.seconds = time.perf_counter() - t0
    return report
