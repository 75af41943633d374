"""Catalogs that look like real product photographs, made from the procedural objects.

Real catalogs hold camera photos of 300-2000 px, not 137 px renders: what
decoding them costs, and whether the model still sees the same objects in
them, can only be measured on images of that kind. `write_catalog` writes the
same procedural objects (same shapes, same cameras, same ground-truth voxels
as `shapes.generate_object` for the same seed and index) as one of `KINDS`:

- ``png137``: today's renders, RGBA PNG with transparency, byte for byte what
  `generate_object` makes.
- ``png1024``: RGBA PNG with transparency at 1024 px (a cut-out product shot).
- ``jpeg300``, ``jpeg1024``, ``jpeg2048``: opaque JPEG photos on a studio
  backdrop: near-white grey (mean about 240, the background the model
  composites transparent pixels over at test time, so comparisons with the
  PNG path are fair), lighter at the top, a slight vignette, a per-view
  exposure jitter of a few levels, Gaussian sensor noise (sigma 2 levels per
  channel, added at full resolution), camera-like JPEG quality drawn in
  [85, 92] per view with 4:2:0 chroma subsampling.

How the large images are made (measured on a 2-core machine: one 137 px render
takes ~7 ms, 512 px ~75 ms, 1024 px ~260 ms, 2048 px ~1.3 s): every kind but
``png137`` is rendered once at 512 px, composited over the backdrop there,
and resized to its side with Pillow (LANCZOS down to 300 px, which also
anti-aliases the renderer's hard edges; BICUBIC up to 1024 and 2048 px); the
sensor noise is added after the resize, at full resolution. The renderer's
surfaces are flat-shaded primitives, so a native 2048 px render would hold no
more detail than the upscaled one; what sets a JPEG's decode cost (its size in
pixels and the entropy of its coefficients) comes from the full-resolution
noise and backdrop, so decode timings on these files are those of a photo of
that size. No contact shadow is drawn: the model was trained on plain
backgrounds.

This module must never import the model, the pipeline or the jobs (shapes
stands alone), and never write anything but the catalog's Parquet files.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageChops

from shapes.categories import build
from shapes.dataset import (
    DatasetError,
    category_of,
    object_rngs,
    sample_cameras,
    view_count,
    view_range,
    write_whole,
)
from shapes.primitives import voxelize
from shapes.render import encode_png, render

KINDS: tuple[str, ...] = ("png137", "png1024", "jpeg300", "jpeg1024", "jpeg2048")

# kind -> (side of the written image, format)
_SIDE = {"png137": 137, "png1024": 1024, "jpeg300": 300, "jpeg1024": 1024, "jpeg2048": 2048}
RENDER_SIZE = 512  # every kind but png137 is rendered at this side, then resized
NOISE_SIGMA = 2.0  # levels of 8-bit, per channel, at full resolution
JPEG_QUALITY = (85, 92)  # drawn per view, inclusive
BACKDROP_TOP, BACKDROP_BOTTOM = 246.0, 234.0  # mean ~240 before the vignette
VIGNETTE = 4.0  # levels darker in the corners than in the centre
EXPOSURE_JITTER = 3.0  # levels, uniform +-, per view

SCHEMA = pa.schema(
    [
        pa.field("object_id", pa.string(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("views", pa.list_(pa.binary())),
        pa.field("voxels", pa.binary()),
    ]
)


def write_catalog(
    folder: str | Path,
    kind: str,
    objects: int,
    views: int | tuple[int, int] = 5,
    seed: int = 5,
    rows_per_file: int = 64,
) -> None:
    """Write ``objects`` procedural objects as photos of ``kind`` into
    ``folder/part-NNNNN.parquet`` (``rows_per_file`` rows each), columns
    ``object_id``, ``category``, ``views`` (encoded images) and ``voxels``
    (``np.packbits`` ground truth).

    Object ``i`` is ``shapes.generate_object(seed, i)``'s object (same id,
    shape, voxels and cameras) in every kind. ``views`` is a count, or
    ``(low, high)``: a count drawn uniformly per object (seeded by
    ``(seed, i)``); the cameras are the first ones of the ``high`` that
    ``generate_object(seed, i, views=high)`` draws, so every kind and every
    count shows the same views. Each file is written whole (temp name, then
    rename).

    Raises:
        DatasetError: an unknown kind, bad counts, or a folder that already
            holds Parquet files; nothing is written then.
    """
    if kind not in KINDS:
        raise DatasetError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    low, high = view_range(views)
    if not isinstance(objects, int) or objects <= 0:
        raise DatasetError(f"objects must be a positive integer, got {objects!r}")
    if low < 1 or high < low:
        raise DatasetError(f"views must be >= 1 (a count or low <= high), got {views!r}")
    if rows_per_file <= 0:
        raise DatasetError(f"rows_per_file must be positive, got {rows_per_file}")
    root = Path(folder)
    if root.is_file() or (root.is_dir() and any(root.glob("*.parquet"))):
        raise DatasetError(f"{root} already holds a catalog (or is a file); give a new folder")
    root.mkdir(parents=True, exist_ok=True)

    photo = _Photographer(_SIDE[kind], seed) if kind.startswith("jpeg") else None
    for f, start in enumerate(range(0, objects, rows_per_file)):
        rows = []
        for index in range(start, min(start + rows_per_file, objects)):
            category = category_of(index)
            shape_rng, camera_rng = object_rngs(seed, index)
            scene = build(category, shape_rng)
            cameras = sample_cameras(camera_rng, high)[: view_count(seed, index, views)]
            if kind == "png137":
                encoded = [encode_png(render(scene, cam, 137)) for cam in cameras]
            elif kind == "png1024":
                encoded = [_cutout_png(render(scene, cam, RENDER_SIZE), 1024) for cam in cameras]
            else:
                view_rng = np.random.default_rng([seed, index, 2])
                encoded = [photo.take(render(scene, cam, RENDER_SIZE), view_rng) for cam in cameras]
            rows.append(
                {
                    "object_id": f"proc-{seed}-{index:07d}",
                    "category": category,
                    "views": encoded,
                    "voxels": np.packbits(voxelize(scene)).tobytes(),
                }
            )
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), buffer)
        write_whole(_local_fs(), str(root / f"part-{f:05d}.parquet"), buffer.getvalue())


def _local_fs():
    import fsspec

    return fsspec.filesystem("file")


def _cutout_png(rgba: np.ndarray, side: int) -> bytes:
    """An RGBA render resized to ``side`` (Pillow premultiplies alpha when
    resizing, so edges blend into transparency, not into black)."""
    image = Image.fromarray(rgba, "RGBA").resize((side, side), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


class _Photographer:
    """Turns renders into opaque studio JPEGs of one side; the backdrop and
    a noise tile are made once per catalog (the noise of a view is a window
    of the tile at a random offset: drawing fresh noise per 2048 px view
    would cost more than the render)."""

    def __init__(self, side: int, seed: int):
        self.side = side
        y, x = np.mgrid[0:RENDER_SIZE, 0:RENDER_SIZE].astype(np.float32) / (RENDER_SIZE - 1)
        level = BACKDROP_TOP + (BACKDROP_BOTTOM - BACKDROP_TOP) * y
        level -= VIGNETTE * ((x - 0.5) ** 2 + (y - 0.5) ** 2) * 2.0
        self.backdrop = level
        rng = np.random.default_rng([seed, 0x70686F74])  # "phot"
        pad = 64
        noise = rng.normal(128.0, NOISE_SIGMA, (side + pad, side + pad, 3))
        self.noise = Image.fromarray(np.clip(np.rint(noise), 0, 255).astype(np.uint8), "RGB")
        self.pad = pad

    def take(self, rgba: np.ndarray, rng: np.random.Generator) -> bytes:
        exposure = rng.uniform(-EXPOSURE_JITTER, EXPOSURE_JITTER)
        tint = rng.uniform(-1.0, 1.0, 3)  # white balance off by a level or so
        backdrop = np.clip(np.rint(self.backdrop[..., None] + exposure + tint), 0, 255)
        scene = Image.fromarray(backdrop.astype(np.uint8), "RGB").convert("RGBA")
        scene = Image.alpha_composite(scene, Image.fromarray(rgba, "RGBA")).convert("RGB")
        if self.side < RENDER_SIZE:
            scene = scene.resize((self.side, self.side), Image.Resampling.LANCZOS)
        elif self.side > RENDER_SIZE:
            scene = scene.resize((self.side, self.side), Image.Resampling.BICUBIC)
        dy, dx = (int(v) for v in rng.integers(0, self.pad, 2))
        grain = self.noise.crop((dx, dy, dx + self.side, dy + self.side))
        scene = ImageChops.add(scene, grain, scale=1.0, offset=-128)
        quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
        buffer = io.BytesIO()
        scene.save(buffer, "JPEG", quality=quality, subsampling="4:2:0")
        return buffer.getvalue()
