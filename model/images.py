"""The model's input contract: how an encoded photograph becomes the model's
``uint8 [S, S, 3]`` input. Decode (PNG, JPEG, any mode Pillow reads) to RGBA with
the header checked against a pixel limit before any pixel is decoded, composite
over the background the model was trained with (240 at test time, random in
[225, 255] in training), pad to a square, take 3D-R2N2's 127/137 crop, resize.
The reconstruction job's decode tasks, training and evaluation all call these
functions, so what the model saw in training is what it sees in the job. This
module must never import TensorFlow and never read files or URLs.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

TEST_BACKGROUND: tuple[int, int, int] = (240, 240, 240)
CROP_FRACTION: float = 127 / 137
# 64 megapixels: far above any catalog photo, far below what would exhaust a worker.
MAX_PIXELS: int = 64_000_000


class DecodeError(ValueError):
    """An image or row the job cannot use; the message is the manifest's reason."""


def read_rgba(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a PNG or JPEG (gray, RGB, RGBA, palette) to ``uint8 [H, W, 4]``.

    Images without alpha get alpha 255. The header's size is checked before the
    pixels are decoded.

    Raises:
        DecodeError: empty data, an unknown format, a header over ``max_pixels``,
            or a truncated or corrupt image.
    """
    if data is None or len(data) == 0:
        raise DecodeError("empty image (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fired while reading the header (sizes far above ours).
        raise DecodeError(
            f"image header claims too many pixels; refused without decoding ({exc})"
        ) from None
    except Exception as exc:
        raise DecodeError(f"not a readable image ({type(exc).__name__})") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise DecodeError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise DecodeError(
            f"image header claims {width}x{height} = {width * height} pixels, "
            f"over the limit of {max_pixels}; refused without decoding"
        )
    # With Pillow's default (ImageFile.LOAD_TRUNCATED_IMAGES False) a truncated
    # file raises here instead of coming back zero-filled: a partial photo is a bad row.
    try:
        image.load()
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)
    except Exception as exc:
        raise DecodeError(f"truncated or corrupt {image.format or ''} image: {exc}") from exc
    return rgba


def to_model_input(
    rgba: np.ndarray,
    size: int,
    background: tuple[int, int, int] = TEST_BACKGROUND,
    crop_fraction: float = CROP_FRACTION,
    offset: tuple[float, float] = (0.5, 0.5),
    flip: bool = False,
) -> np.ndarray:
    """The model's input for one view: ``uint8 [size, size, 3]``.

    Composites over ``background``, pads a non-square image to a square with the
    background, takes a square crop of side ``crop_fraction * side`` at relative
    ``offset`` ((0.5, 0.5) is the centre: 3D-R2N2's test-time crop of 127 from
    137), optionally flips it horizontally, and resizes it with Pillow's
    antialiasing filter.

    Args:
        rgba: ``uint8 [H, W, 4]`` (from :func:`read_rgba`).
        size: output side in pixels.
        background: RGB of the background (training draws it at random).
        crop_fraction: crop side relative to the square side, in (0, 1].
        offset: (x, y) of the crop in [0, 1]; 0 is left/top, 1 right/bottom.
        flip: mirror left-right.
    """
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"expected uint8 [H, W, 4], got {rgba.shape}")
    # round(rgb * a + bg * (1 - a)) per channel, in Pillow's C code: bit for bit
    # what the float formula gives (a test holds it to that), 4x faster.
    image = Image.fromarray(np.ascontiguousarray(rgba, dtype=np.uint8), mode="RGBA")
    backdrop = Image.new("RGBA", image.size, (*(int(c) for c in background), 255))
    rgb = np.asarray(Image.alpha_composite(backdrop, image).convert("RGB"))

    height, width = rgb.shape[:2]
    side = max(height, width)
    if height != width:
        square = np.empty((side, side, 3), dtype=np.uint8)
        square[...] = np.asarray(background, dtype=np.uint8)
        top, left = (side - height) // 2, (side - width) // 2
        square[top : top + height, left : left + width] = rgb
        rgb = square

    crop = max(1, min(side, int(round(side * crop_fraction))))
    x0 = int(round((side - crop) * float(offset[0])))
    y0 = int(round((side - crop) * float(offset[1])))
    rgb = rgb[y0 : y0 + crop, x0 : x0 + crop]
    if flip:
        rgb = rgb[:, ::-1]
    if rgb.shape[0] != size:
        rgb = np.asarray(
            Image.fromarray(np.ascontiguousarray(rgb)).resize(
                (size, size), Image.Resampling.LANCZOS, reducing_gap=None
            )
        )
    return np.ascontiguousarray(rgb, dtype=np.uint8)
