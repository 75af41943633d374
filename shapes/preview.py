"""Contact sheets: a row per object with some of its views and a render of its voxels.

For people, not programs: the sheet shows whether renders and voxels tell the
same story and how much a category varies. It reads rows in the dataset schema
and must never change them; transparent pixels are shown over a light grey,
the background the model is tested with.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from shapes.primitives import GRID
from shapes.render import Camera, raycast_voxels, shade_normals

BACKGROUND = (240, 240, 240)
LABEL_WIDTH = 110
VOXEL_COLOUR = (0.55, 0.65, 0.85)


def decode_voxels(data: bytes) -> np.ndarray:
    """bool grid[x, y, z] from np.packbits bytes (4096 for 32^3)."""
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=GRID**3)
    return bits.astype(bool).reshape(GRID, GRID, GRID)


def voxel_image(voxels: np.ndarray, size: int, camera: Camera | None = None) -> Image.Image:
    """An RGB picture of a voxel grid, Lambert-shaded cubes over the background."""
    camera = camera or Camera(35.0, 28.0, 0.0, 3.1, 25.0)
    hit, normal = raycast_voxels(voxels, camera, size)
    rgba = shade_normals(hit, normal, camera, VOXEL_COLOUR)
    return _over_background(rgba)


def _over_background(rgba: np.ndarray) -> Image.Image:
    alpha = rgba[..., 3:4].astype(np.float32) / 255
    rgb = rgba[..., :3] * alpha + np.array(BACKGROUND) * (1 - alpha)
    return Image.fromarray(np.rint(rgb).astype(np.uint8), "RGB")


def contact_sheet(rows: list[dict[str, Any]], views: int = 5, cell: int = 137) -> bytes:
    """PNG bytes: one row per dataset row, `views` renders then the voxels."""
    width = LABEL_WIDTH + (views + 1) * cell
    sheet = Image.new("RGB", (width, cell * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        y = r * cell
        draw.text((6, y + cell // 2 - 14), str(row.get("category", "")), fill=(0, 0, 0))
        draw.text((6, y + cell // 2 + 2), str(row["object_id"])[-14:], fill=(90, 90, 90))
        for k, png in enumerate(row["views"][:views]):
            img = Image.open(io.BytesIO(png)).convert("RGBA").resize((cell, cell))
            sheet.paste(_over_background(np.asarray(img)), (LABEL_WIDTH + k * cell, y))
        if row.get("voxels") is not None:
            vox = voxel_image(decode_voxels(row["voxels"]), cell)
            sheet.paste(vox, (LABEL_WIDTH + views * cell, y))
        draw.line([(0, y + cell - 1), (width, y + cell - 1)], fill=(200, 200, 200))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
