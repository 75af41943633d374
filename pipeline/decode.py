"""Image decoding, validation and the model's preprocessing, for the CPU decode
tasks of the job and for training. A row goes in with encoded views; it comes
out either with ``uint8`` pixels ready for the model (``[n_views, S, S, 3]``,
carried as bytes) or as a failed row with a readable reason. Headers are checked
against a pixel limit before any pixel is decoded, so a decompression bomb
costs nothing. This module must never import TensorFlow (training imports it
too, and the decode tasks must stay light) and never let one bad row fail the
batch it is in.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

TEST_BACKGROUND: tuple[int, int, int] = (240, 240, 240)
CROP_FRACTION: float = 127 / 137
# 64 megapixels: far above any catalog photo, far below what would exhaust a worker.
MAX_PIXELS: int = 64_000_000
# 64 MiB of encoded images in one row: ~6000 catalog photos of ~10 kB. A row is
# decoded by one task; a bigger one is refused before any view is decoded.
MAX_ROW_BYTES: int = 64 * 1024**2
VOXEL_BYTES: int = 32 * 32 * 32 // 8

# Columns the job reads from the input; everything else scalar is carried.
INPUT_COLUMNS = ("object_id", "views", "voxels")
# Columns the job itself adds to each row on its way to the sink; an input column
# with one of these names is carried as ``input_<name>``.
RESERVED_COLUMNS = (
    "row_key",
    "object_id",
    "status",
    "error",
    "shard",
    "index",
    "n_views",
    "n_views_given",
    "occupied_voxels",
    "threshold",
    "model",
    "iou",
    "pixels",
    "probabilities",
    "voxels",
    "views",
)

# Row states between stages: "ok" (pixels present), "failed" (error set) and
# "skipped" (committed by an earlier run; only counted by the sink).
OK, FAILED, SKIPPED = "ok", "failed", "skipped"


class DecodeError(ValueError):
    """An image or row the job cannot use; the message is the manifest's reason."""


@dataclass(frozen=True)
class DecodeConfig:
    """What the decode tasks need to know about the model and the limits.

    Args:
        image_size: the model's square input size.
        max_views: views beyond this many are ignored (the first ones are used).
        max_pixels: images whose header claims more pixels are refused undecoded.
        max_row_bytes: rows whose views hold more encoded bytes are refused undecoded.
        background: RGB that transparent pixels are composited over.
        crop_fraction: side of the centre crop relative to the (squared) image.
    """

    image_size: int
    max_views: int = 24
    max_pixels: int = MAX_PIXELS
    max_row_bytes: int = MAX_ROW_BYTES
    background: tuple[int, int, int] = TEST_BACKGROUND
    crop_fraction: float = CROP_FRACTION


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


def decode_views(views: list[bytes] | None, config: DecodeConfig) -> tuple[np.ndarray, int]:
    """Decode one row's views: ``(uint8 [n, S, S, 3], number of views given)``.

    Raises:
        DecodeError: no views, a null view, or any view that cannot be decoded;
            the reason names the view.
    """
    if views is None:
        raise DecodeError("views is null")
    given = len(views)
    if given == 0:
        raise DecodeError("views is empty")
    encoded = sum(len(v) for v in views if v is not None)
    if encoded > config.max_row_bytes:
        raise DecodeError(
            f"views hold {encoded} encoded bytes, over the limit of {config.max_row_bytes}; "
            "refused without decoding"
        )
    used = views[: config.max_views]
    out = np.empty((len(used), config.image_size, config.image_size, 3), dtype=np.uint8)
    for i, data in enumerate(used):
        if data is None:
            raise DecodeError(f"view {i} is null")
        try:
            rgba = read_rgba(data, config.max_pixels)
        except DecodeError as exc:
            raise DecodeError(f"view {i}: {exc}") from None
        out[i] = to_model_input(rgba, config.image_size, config.background, config.crop_fraction)
    return out, given


def check_voxels(voxels: bytes | None) -> None:
    """Ground truth must be absent or exactly ``np.packbits`` of 32^3 bools."""
    if voxels is not None and len(voxels) != VOXEL_BYTES:
        raise DecodeError(f"voxels has {len(voxels)} bytes, expected {VOXEL_BYTES}")


def row_key(object_id: str | None, views: list[bytes] | None, voxels: bytes | None) -> str:
    """The identity resume uses: the object_id, or for a row without one a
    digest of its content, so that a rerun recognises it too."""
    if object_id is not None:
        return object_id
    digest = hashlib.sha256()
    for data in views or []:
        digest.update(len(data or b"").to_bytes(8, "little"))
        digest.update(data or b"")
    digest.update(b"voxels")
    digest.update(voxels or b"")
    return "null-object-id:" + digest.hexdigest()[:32]


def carried_columns(schema: pa.Schema) -> list[str]:
    """Input columns carried into the manifest: every scalar one the job does
    not read itself (nested columns such as camera lists are left behind)."""
    return [
        f.name for f in schema if f.name not in INPUT_COLUMNS and not pa.types.is_nested(f.type)
    ]


def carried_name(name: str) -> str:
    return f"input_{name}" if name in RESERVED_COLUMNS else name


def decode_batch(
    batch: pa.Table, config: DecodeConfig, committed: pa.Array | None = None
) -> pa.Table:
    """The decode stage over one batch of input rows.

    Every input row yields one output row with ``row_key``, ``object_id``,
    ``status`` (ok | failed | skipped), ``error``, ``n_views``,
    ``n_views_given``, ``pixels`` (``uint8 [n, S, S, 3]`` as bytes, ok rows
    only), ``voxels`` (validated ground truth or null) and the carried columns.

    Args:
        batch: input rows (``object_id``, ``views``, optional ``voxels``, ...).
        config: model input size and limits.
        committed: row keys already in the output's manifests; such rows come
            out as ``skipped`` without being decoded.
    """
    n = batch.num_rows
    ids = batch.column("object_id").to_pylist() if "object_id" in batch.column_names else [None] * n
    views_col = batch.column("views") if "views" in batch.column_names else pa.nulls(n)
    has_voxels = "voxels" in batch.column_names
    voxels_in = batch.column("voxels").to_pylist() if has_voxels else [None] * n

    keys = [
        ids[i] if ids[i] is not None else row_key(None, views_col[i].as_py(), voxels_in[i])
        for i in range(n)
    ]
    skip = (
        pc.is_in(pa.array(keys, pa.string()), value_set=committed).to_pylist()
        if committed is not None and len(committed) > 0
        else [False] * n
    )
    statuses, errors, pixels, used, given, voxels = [], [], [], [], [], []
    for i in range(n):
        status, error, px, n_used, n_given, vox = OK, None, None, None, None, None
        if skip[i]:
            status = SKIPPED
        else:
            try:
                views = views_col[i].as_py()
                n_given = len(views) if views is not None else 0
                if ids[i] is None:
                    raise DecodeError("object_id is null")
                check_voxels(voxels_in[i])
                array, n_given = decode_views(views, config)
                px, n_used, vox = array.tobytes(), int(array.shape[0]), voxels_in[i]
            except Exception as exc:  # one bad row must never fail the batch
                status = FAILED
                error = str(exc) if isinstance(exc, DecodeError) else f"decode: {exc!r}"
        statuses.append(status)
        errors.append(error)
        pixels.append(px)
        used.append(n_used)
        given.append(n_given)
        voxels.append(vox)

    columns = {
        "row_key": pa.array(keys, pa.string()),
        "object_id": pa.array(ids, pa.string()),
        "status": pa.array(statuses, pa.string()),
        "error": pa.array(errors, pa.string()),
        "n_views": pa.array(used, pa.int32()),
        "n_views_given": pa.array(given, pa.int32()),
        "pixels": pa.array(pixels, pa.large_binary()),
        "voxels": pa.array(voxels, pa.binary()),
    }
    for name in carried_columns(batch.schema):
        columns[carried_name(name)] = batch.column(name)
    return pa.table(columns)


def pixels_to_views(pixels: bytes, image_size: int) -> np.ndarray:
    """Inverse of the ``pixels`` column: ``uint8 [n, S, S, 3]``."""
    return np.frombuffer(pixels, dtype=np.uint8).reshape(-1, image_size, image_size, 3)
