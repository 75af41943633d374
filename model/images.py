"""The model's input contract: how an encoded photograph becomes the model's
``uint8 [S, S, 3]`` input. Decode (PNG, JPEG, any format and mode Pillow reads)
to 8-bit RGBA with the header checked against a pixel limit before any pixel is
decoded, composite over the background the model was trained with (240 at test
time, random in [225, 255] in training), pad to a square, take 3D-R2N2's 127/137
crop, resize. Training and evaluation call `read_rgba` and `to_model_input`;
the reconstruction job's decode tasks call `read_model_input`, which gives the
same centre crop at the cost of what the model sees (a JPEG decoded at a reduced
DCT scale, one resample from an integer-reduced image, nothing composited that
has no transparency; the 137 px renders come out pixel for pixel as through the
other two). This module must never import TensorFlow, never read files or URLs,
and never allocate more than a small multiple of the image's own pixels (or of
the output's): the full-size padded square is never built.

Images are decoded by what they are: 16- and 32-bit gray (``I;16``, ``I``) is
scaled by its bit depth (the top 8 bits, as Pillow reduces 16-bit RGB), float
gray (``F``) is read on Pillow's 0-255 scale and rounded, palette and colour-key
transparency (``tRNS``) become alpha, CMYK, YCbCr and LAB go through Pillow's
conversions, and an animation gives its first frame. The EXIF orientation is
applied: cameras store sensor-order pixels and tag the rotation, every viewer
shows such a photo upright, and the model was trained on upright renders; an
image without the tag (every render) is unaffected.

Views that decode but carry no picture are told apart here too, as part of
the contract (docs/job.md, "Views that carry no picture"): a JPEG whose last
rows are libjpeg's fill (its data ends early, or its header claims more rows
than the data holds: libjpeg leaves the missing blocks' coefficients at zero,
which is exactly level 128 in every channel, and Pillow reports no error)
raises :class:`NoPicture` where it is decoded; :func:`view_problem` names a
model input that holds no object (uniform, fully transparent, only
background after compositing) or pure noise.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageChops

TEST_BACKGROUND: tuple[int, int, int] = (240, 240, 240)
CROP_FRACTION: float = 127 / 137
# 64 megapixels: far above any catalog photo, far below what would exhaust a worker.
MAX_PIXELS: int = 64_000_000

# A JPEG whose last quarter of rows or more is libjpeg's fill (exactly 128 in
# every channel, across the whole width) was cut short: what the model would
# see there is invented. A photo's backdrop is never exactly flat (sensor
# noise); only a synthetic image on a flat 128 grey could match, and then only
# with nothing in its bottom quarter.
FILL_LEVEL: int = 128
MAX_FILL_FRACTION: float = 0.25
# A model input holds an object when at least this fraction of its pixels
# differs from the border's colour (median of the border pixels, per channel)
# by more than OBJECT_LEVELS in some channel. A studio backdrop's gradient,
# vignette and sensor noise stay within ~10 levels of its median; the smallest
# object of the held-out renders covers 3.4% of the frame (docs/job.md has the
# figures and the command).
OBJECT_LEVELS: int = 24
MIN_OBJECT_FRACTION: float = 0.01
# Pure noise: neighbouring pixels differ about as much as any two pixels do.
# The mean absolute difference of neighbours over the mean absolute deviation
# from the mean, on the luma: about 1.3-1.4 for
# independent noise, at most 0.22 on the held-out renders and photos (docs/job.md).
MAX_NOISE_RATIO: float = 0.9

# An image whose crop is this many times the output or more is first reduced by
# an integer factor (box average), then resized once with LANCZOS: Pillow's
# ``reducing_gap``; at 2 the LANCZOS still sees at least twice the output's
# samples (docs/benchmarks.md measures the IoU with it).
REDUCING_GAP: float = 2.0
# libjpeg's reduced DCT scales that Pillow's JPEG draft offers, smallest output first.
_DCT_SCALES = (8, 4, 2)

# Pillow's fixed point for 8-bit resampling (libImaging/Resample.c).
_PRECISION_BITS = 22
# Pixels per working buffer when resizing padded lines (4 MiB of Pillow RGB).
_BATCH_PIXELS = 1 << 20
# EXIF orientation -> how to turn the stored pixels upright (ImageOps.exif_transpose's table).
_ORIENTATION = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}

# EXIF orientation -> where an upright box (x0, y0, x1, y1) lies in the stored image (w, h).
_STORED_BOX = {
    1: lambda x0, y0, x1, y1, w, h: (x0, y0, x1, y1),
    2: lambda x0, y0, x1, y1, w, h: (w - x1, y0, w - x0, y1),
    3: lambda x0, y0, x1, y1, w, h: (w - x1, h - y1, w - x0, h - y0),
    4: lambda x0, y0, x1, y1, w, h: (x0, h - y1, x1, h - y0),
    5: lambda x0, y0, x1, y1, w, h: (y0, x0, y1, x1),
    6: lambda x0, y0, x1, y1, w, h: (y0, h - x1, y1, h - x0),
    7: lambda x0, y0, x1, y1, w, h: (w - y1, h - x1, w - y0, h - x0),
    8: lambda x0, y0, x1, y1, w, h: (w - y1, x0, w - y0, x1),
}


class DecodeError(ValueError):
    """An image or row the job cannot use; the message is the manifest's reason."""


class NoPicture(DecodeError):
    """A view that decodes but whose pixels are mostly the decoder's invention
    (a JPEG cut short); a row may do without it when its other views are good."""


def read_rgba(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image (PNG, JPEG, or any format Pillow reads) to ``uint8 [H, W, 4]``.

    Every mode becomes 8-bit RGBA (see the module docstring); images without
    alpha get alpha 255; the EXIF orientation is applied. The header's size is
    checked before the pixels are decoded.

    Raises:
        NoPicture: a JPEG whose last rows are the decoder's fill (see
            ``MAX_FILL_FRACTION``).
        DecodeError: empty data, an unknown format, a header over ``max_pixels``,
            a truncated or corrupt image, a PNG text chunk that decompresses
            past Pillow's limit, or a mode with no conversion to RGB.
    """
    image, rawmode = _open(data, max_pixels)
    _load(image)
    _check_fill(image)
    try:
        rgba = _to_rgba(image, rawmode)
    except (ValueError, OSError) as exc:  # Pillow: "conversion from X to RGBA not supported"
        raise DecodeError(f"unsupported image mode {image.mode} ({exc})") from None
    return _turn(rgba, _orientation(image))


def read_model_input(
    data: bytes,
    size: int,
    background: tuple[int, int, int] = TEST_BACKGROUND,
    crop_fraction: float = CROP_FRACTION,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """The model's input for one encoded view, ``uint8 [size, size, 3]``: the
    centre crop of :func:`to_model_input` of :func:`read_rgba`, at the cost of
    what the model sees.

    - A JPEG is decoded at the smallest of libjpeg's DCT scales (1/8, 1/4,
      1/2) at which the crop still spans at least ``size`` pixels (Pillow's
      ``draft``): libjpeg computes the smaller image from each block's low
      frequencies, a cheap and proper low-pass.
    - What is then still ``REDUCING_GAP`` times ``size`` or more is reduced by
      an integer factor (a box average, premultiplied for alpha, as Pillow's
      ``reducing_gap`` does), so LANCZOS runs once, from at least twice the
      output's samples.
    - An image with no transparency stays RGB: no RGBA conversion and no
      compositing (an opaque pixel composites to itself, exactly).
    - The crop window is the one of the full-size image, carried into the
      reduced image's coordinates with its fractions (Pillow's resize
      ``box``): rounding it to whole reduced pixels would shift the picture
      by up to half of one. The padded square is built only around the crop
      of the reduced image (a few times ``size``), and the EXIF orientation
      is applied to the output.

    An image that needs no reduction (the 137 px training renders at 127 or
    64) gives the pixels of ``to_model_input(read_rgba(data), size,
    background, crop_fraction)``; a reduced one differs from them by the
    filters (about a level on average, docs/benchmarks.md).

    Raises:
        NoPicture, DecodeError: as :func:`read_rgba`.
    """
    image, rawmode = _open(data, max_pixels)
    width, height = image.size  # as stored: EXIF may turn them
    crop = _crop_side(max(width, height), crop_fraction)
    scale = next((s for s in _DCT_SCALES if crop >= size * s), 1)
    # draft is a no-op (None) for every format but JPEG and its kin.
    drafted = image.draft("RGB", (max(1, width // scale), max(1, height // scale)))
    scale = width / drafted[1][2] if drafted and scale > 1 else 1
    _load(image)
    _check_fill(image)
    orientation = _orientation(image)
    try:
        image = _rgb_or_rgba(image, rawmode)
    except (ValueError, OSError) as exc:
        raise DecodeError(f"unsupported image mode {image.mode} ({exc})") from None
    factor = int(crop / scale / size / REDUCING_GAP)
    if factor > 1:
        image = image.reduce(factor)
        scale *= factor

    # The crop in the upright image (as to_model_input centres it), then as stored, reduced.
    up_w, up_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    side = max(width, height)
    top = int(round((side - crop) * 0.5)) - (side - up_h) // 2
    left = int(round((side - crop) * 0.5)) - (side - up_w) // 2
    box = _STORED_BOX.get(orientation, _STORED_BOX[1])(
        left, top, left + crop, top + crop, width, height
    )
    x0, y0, x1, y1 = (v / scale for v in box)
    window = (math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))
    inside = (
        max(window[0], 0),
        max(window[1], 0),
        min(window[2], image.width),
        min(window[3], image.height),
    )
    bg = tuple(int(c) for c in background)
    if inside[0] >= inside[2] or inside[1] >= inside[3]:  # the crop holds only padding
        return _filled((size, size, 3), bg)
    part = image.crop(inside)
    if part.mode == "RGBA":
        part = _composite(part, bg)
    if inside != window:
        canvas = Image.new("RGB", (window[2] - window[0], window[3] - window[1]), bg)
        canvas.paste(part, (inside[0] - window[0], inside[1] - window[1]))
        part = canvas
    out = part.resize(
        (size, size),
        Image.Resampling.LANCZOS,
        box=(x0 - window[0], y0 - window[1], x1 - window[0], y1 - window[1]),
        reducing_gap=None,
    )
    return _turn(np.asarray(out), orientation)


def _open(data: bytes, max_pixels: int) -> tuple[Image.Image, object]:
    """The image with its header read and checked, not decoded; and the
    decoder's raw mode (what the file held before Pillow widened or reduced it)."""
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
        _refuse_text_bomb(exc)
        raise DecodeError(f"not a readable image ({type(exc).__name__})") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise DecodeError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise DecodeError(
            f"image header claims {width}x{height} = {width * height} pixels, "
            f"over the limit of {max_pixels}; refused without decoding"
        )
    return image, (image.tile[0][3] if image.tile else None)


def _load(image: Image.Image) -> None:
    # With Pillow's default (ImageFile.LOAD_TRUNCATED_IMAGES False) a truncated
    # file raises here instead of coming back zero-filled: a partial photo is a bad row.
    try:
        image.load()
    except Exception as exc:
        _refuse_text_bomb(exc)
        raise DecodeError(f"truncated or corrupt {image.format or ''} image: {exc}") from exc


def _refuse_text_bomb(exc: Exception) -> None:
    # Pillow stops decompressing a PNG text chunk (zTXt, iTXt) at MAX_TEXT_CHUNK
    # and raises a plain ValueError: say what it was, not "not readable".
    if isinstance(exc, ValueError) and (
        "MAX_TEXT_CHUNK" in str(exc) or "MAX_TEXT_MEMORY" in str(exc)
    ):
        raise DecodeError(
            "PNG text chunk decompresses past Pillow's limit (a decompression bomb); "
            "refused without decoding"
        ) from None


def _check_fill(image: Image.Image) -> None:
    """Raise :class:`NoPicture` when the last ``MAX_FILL_FRACTION`` of a loaded
    JPEG's rows or more, but not all of them, are libjpeg's fill (see the
    module docstring). The last row alone is looked at unless it is fill: a
    few microseconds per view."""
    if image.format not in ("JPEG", "MPO"):
        return
    width, height = image.size

    def filled(top: int) -> bool:  # rows [top, height) are all exactly FILL_LEVEL
        extrema = image.crop((0, top, width, height)).getextrema()
        bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
        return all(lo == hi == FILL_LEVEL for lo, hi in bands)

    if not filled(height - 1):
        return
    low, high = 0, height - 1  # the first filled row lies in [low, high]
    while low < high:
        mid = (low + high) // 2
        if filled(mid):
            high = mid
        else:
            low = mid + 1
    fraction = (height - low) / height
    # Flat 128 from the first row on is a uniform image as far as anyone can
    # tell: view_problem names it so.
    if MAX_FILL_FRACTION <= fraction < 1.0:
        raise NoPicture(
            f"no picture: the last {fraction:.0%} of the JPEG's rows are the decoder's "
            f"flat {FILL_LEVEL} fill (its data ends before its pixels do)"
        )


def view_measures(view: np.ndarray) -> tuple[float, float]:
    """``(object fraction, noise ratio)`` of a model input ``uint8 [S, S, 3]``:
    the fraction of its pixels that differ from the border's median colour by
    more than ``OBJECT_LEVELS`` in some channel, and the mean absolute
    difference of neighbouring pixels over the pixels' mean absolute deviation
    from their mean, on the luma (0 for a uniform view). Measured at about 64
    px (a larger view is first reduced by an integer factor, a box average),
    mostly in Pillow's C code: the decode stage runs this on every view."""
    image = Image.fromarray(np.ascontiguousarray(view, dtype=np.uint8), "RGB")
    factor = max(1, round(max(image.size) / _MEASURE_SIDE))
    if factor > 1:  # a box average keeps objects and noise what they are, for less work
        image = image.reduce(factor)
        view = np.asarray(image)
    width, height = image.size
    border = np.concatenate([view[0], view[-1], view[1:-1, 0], view[1:-1, -1]])
    colour = tuple(int(c) for c in np.sort(border, axis=0)[len(border) // 2])
    far = ImageChops.difference(image, Image.new("RGB", image.size, colour)).split()
    spread = ImageChops.lighter(ImageChops.lighter(far[0], far[1]), far[2])
    fraction = sum(spread.histogram()[OBJECT_LEVELS + 1 :]) / (width * height)
    luma = np.asarray(image.convert("L"))
    counts = np.bincount(luma.ravel(), minlength=256).astype(np.float64)
    mean = counts @ _LEVELS / luma.size
    deviation = counts @ np.abs(_LEVELS - mean) / luma.size
    if deviation == 0.0 or width < 2 or height < 2:
        return fraction, 0.0
    # |a - b| of uint8 without a wider copy: max - min
    across = np.maximum(luma[:, 1:], luma[:, :-1]) - np.minimum(luma[:, 1:], luma[:, :-1])
    down = np.maximum(luma[1:], luma[:-1]) - np.minimum(luma[1:], luma[:-1])
    neighbours = (
        across.sum(dtype=np.int64) / across.size + down.sum(dtype=np.int64) / down.size
    ) / 2
    return fraction, float(neighbours / deviation)


_LEVELS = np.arange(256, dtype=np.float64)
_MEASURE_SIDE = 64


def view_problem(view: np.ndarray) -> str | None:
    """Why a model input (``uint8 [S, S, 3]``, after compositing) holds no
    picture of an object, or None when it does (:func:`view_measures`).

    - no object: under ``MIN_OBJECT_FRACTION`` of its pixels differ from the
      border's colour (uniform, fully transparent, all black or white,
      background only, a 1x1 image);
    - noise: a noise ratio over ``MAX_NOISE_RATIO`` (independent noise gives
      about 1.4; a picture far less: its neighbours are alike).
    """
    fraction, ratio = view_measures(view)
    if fraction < MIN_OBJECT_FRACTION:
        return (
            f"empty view: no object ({fraction:.1%} of its pixels differ from the border's "
            f"colour by more than {OBJECT_LEVELS} levels, "
            f"under the {MIN_OBJECT_FRACTION:.0%} needed)"
        )
    if ratio > MAX_NOISE_RATIO:
        return (
            f"empty view: noise (neighbouring pixels differ {ratio:.2f} times as much as "
            f"pixels from their mean; over {MAX_NOISE_RATIO} is taken as noise)"
        )
    return None


def _to_rgba(image: Image.Image, rawmode: object) -> np.ndarray:
    """8-bit RGBA of a loaded image, whatever its mode."""
    mode = image.mode
    if _wide_gray(mode):
        # Pillow's own conversions clip these at 255 instead of scaling them.
        values = np.asarray(image)
        if mode == "F":  # rounded (Pillow's convert truncates)
            gray = np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8)
        elif mode != "I":
            gray = (values >> 8).astype(np.uint8)
        elif (bits := _gray_bits(image)) == 32:  # unsigned: Pillow holds it as int32
            gray = (values.view(np.uint32) >> 24).astype(np.uint8)
        else:
            gray = (np.clip(values, 0, (1 << bits) - 1) >> (bits - 8)).astype(np.uint8)
        rgba = np.empty((*gray.shape, 4), dtype=np.uint8)
        rgba[..., :3] = gray[..., None]
        key = image.info.get("transparency")  # a 16-bit PNG's gray colour key
        rgba[..., 3] = np.where(values == key, 0, 255) if isinstance(key, int) else 255
        return rgba
    _narrow_colour_key(image, rawmode)
    if mode == "RGBA":
        return np.asarray(image)
    return np.asarray(image.convert("RGBA"))


def _wide_gray(mode: str) -> bool:
    return mode == "F" or mode == "I" or mode.startswith("I;16")


def _narrow_colour_key(image: Image.Image, rawmode: object) -> None:
    key = image.info.get("transparency")
    if image.mode == "RGB" and isinstance(key, tuple) and str(rawmode).endswith(";16B"):
        # A 16-bit PNG reaches us reduced to its top bytes but with its 16-bit
        # colour key: compare like with like (exact in the top 8 bits).
        image.info["transparency"] = tuple(int(v) >> 8 for v in key)


def _rgb_or_rgba(image: Image.Image, rawmode: object) -> Image.Image:
    """The loaded image as Pillow RGB when it holds no transparency, else as
    RGBA with the colours and alpha of :func:`_to_rgba`; converted once at most."""
    if _wide_gray(image.mode):
        return Image.fromarray(_to_rgba(image, rawmode))
    _narrow_colour_key(image, rawmode)
    if image.has_transparency_data:
        return image if image.mode == "RGBA" else image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def _gray_bits(image: Image.Image) -> int:
    """Significant bits of a mode ``I`` image: 16 unless a TIFF says otherwise
    (PGM, and PNG in older Pillows, widen 16-bit samples to Pillow's int32)."""
    bits = 16
    if image.format == "TIFF":
        tags = image.tag_v2
        depth = tags.get(258, 16)  # BitsPerSample
        bits = int(depth[0] if isinstance(depth, tuple) else depth)
        fmt = tags.get(339, 1)  # SampleFormat; 2 is signed: the top bit is the sign
        if (fmt[0] if isinstance(fmt, tuple) else fmt) == 2:
            bits -= 1
    return min(max(bits, 8), 32)


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # unreadable EXIF: the pixels are still good, show them as stored
        return 1


def _turn(pixels: np.ndarray, orientation: int) -> np.ndarray:
    turn = _ORIENTATION.get(orientation)
    return pixels if turn is None else np.ascontiguousarray(turn(pixels))


def _crop_side(side: int, crop_fraction: float) -> int:
    """Side of the crop taken from a padded square of ``side``."""
    return max(1, min(side, int(round(side * crop_fraction))))


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
    antialiasing filter (LANCZOS).

    The padded square is never built. Only the part of the image inside the
    crop is composited; each of Pillow's two resampling passes then runs over
    padded lines a bounded batch at a time or, for a sliver of image in a long
    line of padding, with Pillow's own fixed-point weights and the padding's
    share summed once. The pixels are those of resizing the padded crop (a
    sliver a few pixels wide and very tall may round 1 level differently), and
    no buffer exceeds a small multiple of the image's pixels or of ``size**2``.

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
    if not all(0.0 <= float(o) <= 1.0 for o in offset):
        raise ValueError(f"offset must lie in [0, 1], got {offset}")
    bg = tuple(int(c) for c in background)
    height, width = rgba.shape[:2]
    side = max(height, width)
    crop = _crop_side(side, crop_fraction)
    # The crop window in the padded square, then in the image's own coordinates.
    top = int(round((side - crop) * float(offset[1]))) - (side - height) // 2
    left = int(round((side - crop) * float(offset[0]))) - (side - width) // 2
    y0, y1 = max(top, 0), min(top + crop, height)
    x0, x1 = max(left, 0), min(left + crop, width)
    if y0 >= y1 or x0 >= x1:  # the crop holds only padding
        return _filled((size, size, 3), bg)

    part = _composite(rgba[y0:y1, x0:x1], bg)
    at = [y0 - top, x0 - left]  # where the part sits in the crop
    if flip:
        part = part.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        at[1] = crop - at[1] - part.width
    if part.size == (crop, crop):  # a square image: no padding in the crop
        if crop != size:
            part = part.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=None)
        return np.asarray(part)
    canvas = _filled((size, size, 3), bg)
    if crop == size:
        canvas[at[0] : at[0] + part.height, at[1] : at[1] + part.width] = np.asarray(part)
        return canvas

    # Pillow resizes in two passes, horizontal then vertical, rounding to 8 bits
    # in between; doing the same pass by pass gives the same pixels. Outside the
    # span each pass returns, the padded crop resizes to the background itself.
    rows, cols = part.height, part.width
    spans = [_span(at[0], rows, crop, size), _span(at[1], cols, crop, size)]
    pixels: Image.Image | np.ndarray = part
    order = (1, 0)
    if rows * (spans[1][1] - spans[1][0]) > 2 * max(rows * cols, size * size):
        # A sliver a few pixels wide and very tall: horizontal first would widen
        # every row to the filter's reach; the other order keeps buffers small
        # (and may round 1 level differently).
        order = (0, 1)
    for axis in order:
        first, last = spans[axis]
        pixels = _resize_axis(pixels, axis, at[axis], crop, size, first, last, bg)
        at[axis] = first
    canvas[at[0] : at[0] + pixels.shape[0], at[1] : at[1] + pixels.shape[1]] = pixels
    return canvas


def _composite(rgba: np.ndarray | Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """RGB of ``rgba`` over the background: round(rgb * a + bg * (1 - a)) per
    channel, in Pillow's C code, bit for bit what the float formula gives (a
    test holds it to that), 4x faster. Opaque pixels come out as they are, so
    an image with no transparency is not composited at all."""
    image = rgba
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.ascontiguousarray(rgba, dtype=np.uint8))
    # A cut-out is transparent in its corner: then the scan for alpha < 255 is skipped.
    if image.getpixel((0, 0))[3] == 255 and image.getchannel("A").getextrema()[0] == 255:
        return image.convert("RGB")
    backdrop = Image.new("RGBA", image.size, (*background, 255))
    return Image.alpha_composite(backdrop, image).convert("RGB")


def _span(start: int, count: int, length: int, out_size: int) -> tuple[int, int]:
    """Outputs ``[first, last)`` of a LANCZOS resize of ``length`` samples to
    ``out_size`` whose support reaches samples ``[start, start + count)``."""
    if start == 0 and count == length:
        return 0, out_size
    first_in, ends = _windows(length, out_size, np.arange(out_size))
    reach = (first_in < start + count) & (ends > start)
    hits = np.flatnonzero(reach)
    return int(hits[0]), int(hits[-1]) + 1


def _windows(length: int, out_size: int, outputs: np.ndarray):
    """Pillow's input window ``[xmin, xmax)`` for each output (precompute_coeffs)."""
    scale, support, _ = _geometry(length, out_size)
    center = (outputs + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((center + support + 0.5).astype(np.int64), length)
    return xmin, xmax


def _geometry(length: int, out_size: int) -> tuple[float, float, float]:
    # Pillow passes the box as C floats, so the input length is a float32 first.
    scale = float(np.float32(length)) / out_size
    filterscale = max(scale, 1.0)
    return scale, 3.0 * filterscale, filterscale


def _lanczos(x: np.ndarray) -> np.ndarray:
    """Pillow's LANCZOS kernel: sinc(x) * sinc(x / 3) on [-3, 3)."""

    def sinc(t: np.ndarray) -> np.ndarray:
        y = np.where(t == 0.0, 1.0, t * math.pi)
        return np.where(t == 0.0, 1.0, np.sin(y) / y)

    return np.where((x >= -3.0) & (x < 3.0), sinc(x) * sinc(x / 3), 0.0)


def _weights(length: int, out_size: int, outputs: np.ndarray):
    """Pillow's fixed-point LANCZOS weights for ``outputs``: (first input of each
    window, weights ``int64 [len(outputs), ksize]``, zero past each window)."""
    scale, support, filterscale = _geometry(length, out_size)
    ksize = int(math.ceil(support)) * 2 + 1
    center = (outputs + 0.5) * scale
    xmin, xmax = _windows(length, out_size, outputs)
    index = xmin[:, None] + np.arange(ksize)
    inside = index < xmax[:, None]
    w = np.where(inside, _lanczos((index - center[:, None] + 0.5) * (1.0 / filterscale)), 0.0)
    total = np.cumsum(w, axis=1)[:, -1:]  # summed in order, as the C loop does
    w = np.divide(w, total, out=w, where=total != 0.0) * float(1 << _PRECISION_BITS)
    return xmin, np.trunc(np.where(w < 0.0, w - 0.5, w + 0.5)).astype(np.int64)


def _resize_axis(
    pixels: Image.Image | np.ndarray,
    axis: int,
    start: int,
    length: int,
    out_size: int,
    first: int,
    last: int,
    background: tuple[int, int, int],
) -> np.ndarray:
    """One of Pillow's LANCZOS passes along ``axis``, over lines of ``length``
    samples that hold ``pixels`` at ``[start, start + n)`` and the background
    elsewhere: outputs ``[first, last)`` of each line, ``uint8``."""
    if isinstance(pixels, Image.Image):
        if start == 0 and pixels.size[1 - axis] == length:  # no padding on this axis
            return _pillow_pass(pixels, axis, out_size)
        pixels = np.asarray(pixels)
    count = pixels.shape[axis]
    if start == 0 and count == length:
        return _pillow_pass(pixels, axis, out_size)
    if 4 * count >= length:
        # Mostly image: let Pillow resize the padded lines, a bounded batch at a time.
        batch = max(1, _BATCH_PIXELS // length)
        other = pixels.shape[1 - axis]
        parts = []
        for i in range(0, other, batch):
            if axis == 1:  # rows of the crop, padded left and right
                chunk = pixels[i : i + batch]
                padded = _filled((len(chunk), length, 3), background)
                padded[:, start : start + count] = chunk
            else:  # columns, padded above and below
                chunk = pixels[:, i : i + batch]
                padded = _filled((length, chunk.shape[1], 3), background)
                padded[start : start + count] = chunk
            parts.append(_pillow_pass(padded, axis, out_size))
        resized = np.concatenate(parts, axis=1 - axis)
        return resized[first:last] if axis == 0 else resized[:, first:last]

    # A sliver: Pillow's weights for the image's samples go into a matrix, the
    # padding's share of each output is background * (the sum of the rest).
    outputs = np.arange(first, last)
    kernel = np.zeros((len(outputs), count), dtype=np.int64)
    padding = np.zeros(len(outputs), dtype=np.int64)
    support = _geometry(length, out_size)[1]
    step = max(1, _BATCH_PIXELS // (int(math.ceil(support)) * 2 + 1))
    for i in range(0, len(outputs), step):
        xmin, w = _weights(length, out_size, outputs[i : i + step])
        j = xmin[:, None] + np.arange(w.shape[1]) - start
        ours = (j >= 0) & (j < count)
        padding[i : i + step] = np.where(ours, 0, w).sum(axis=1)
        r, c = np.nonzero(ours)
        kernel[i + r, j[r, c]] = w[r, c]
    lines = np.moveaxis(pixels, axis, 0)
    other = lines.shape[1]
    lines = lines.reshape(count, other * 3)  # [sample, (position on the other axis, channel)]
    reach = [np.flatnonzero(kernel[:, j]) for j in range(count)]
    out = np.empty((len(outputs), other * 3), dtype=np.uint8)
    batch = min(other, max(1, _BATCH_PIXELS // len(outputs))) * 3
    colour = np.tile(np.asarray(background, dtype=np.int64), batch // 3)
    for o in range(0, other * 3, batch):
        span = lines[:, o : o + batch]
        acc = np.outer(padding, colour[: span.shape[1]])
        acc += 1 << (_PRECISION_BITS - 1)
        for j, ks in enumerate(reach):  # each sample reaches a few consecutive outputs
            if len(ks):
                k0, k1 = ks[0], ks[-1] + 1
                acc[k0:k1] += kernel[k0:k1, j, None] * span[j]
        out[:, o : o + batch] = np.clip(acc >> _PRECISION_BITS, 0, 255)
    return np.moveaxis(out.reshape(len(outputs), other, 3), 0, axis)


def _filled(shape: tuple[int, int, int], background: tuple[int, int, int]) -> np.ndarray:
    """``uint8 [h, w, 3]`` of the background colour (row by row: numpy fills a
    3-byte pattern pixel by pixel, 20x slower)."""
    out = np.empty(shape, dtype=np.uint8)
    out[0] = np.asarray(background, dtype=np.uint8)
    out[1:] = out[0]
    return out


def _pillow_pass(pixels: Image.Image | np.ndarray, axis: int, out_size: int) -> np.ndarray:
    """Pillow's LANCZOS resize of an RGB image along one axis only."""
    if not isinstance(pixels, Image.Image):
        pixels = Image.fromarray(np.ascontiguousarray(pixels))
    cols, rows = pixels.size
    shape = (out_size, rows) if axis == 1 else (cols, out_size)
    return np.asarray(pixels.resize(shape, Image.Resampling.LANCZOS, reducing_gap=None))
