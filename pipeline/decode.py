"""The decode stage: the job's CPU tasks that turn input rows into model input.
A row goes in with encoded views; it comes out either with ``uint8`` pixels
ready for the model (``[n_views, S, S, 3]``, carried as bytes) or as a failed
row with a readable reason. The per-image work is the model's input contract
(``model.images``); this module adds the row's limits, validation, identity and
carried columns. A view that decodes but carries no picture (the decoder's
fill, no object, noise: ``model.images``) is dropped from the model's input
and named in the row's ``warning``; a row left with no view fails. It must
never import TensorFlow (the decode tasks must stay light) and never let one
bad row fail the batch it is in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from model.images import (
    CROP_FRACTION,
    MAX_PIXELS,
    TEST_BACKGROUND,
    DecodeError,
    NoPicture,
    read_model_input,
    view_problem,
)
from model.voxels import VOXEL_BYTES

# The carried columns' naming rule lives with their type check (pipeline.columns);
# its names are importable from here as before.
from pipeline.columns import INPUT_COLUMNS, carry
from pipeline.columns import RESERVED_COLUMNS as RESERVED_COLUMNS
from pipeline.columns import carried_name as carried_name
from pipeline.layout import FAILED, OK
from pipeline.plan import READ_ERROR

# 64 MiB of encoded images in one row: ~6000 catalog photos of ~10 kB. A row is
# decoded by one task; a bigger one is refused before any view is decoded.
MAX_ROW_BYTES: int = 64 * 1024**2

# The longest object_id kept: a shard stores its ids as one fixed-width numpy
# string array, so one long id widens every id of its shard (1024 ids of this
# length take 64 MiB in the write task). Longer ids are failed rows.
MAX_ID_CHARS = 16384


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


def decode_views(
    views: list[bytes] | None, config: DecodeConfig
) -> tuple[np.ndarray, int, str | None]:
    """Decode one row's views: ``(uint8 [n, S, S, 3], number of views given,
    warning)``, each at the cost of what the model sees
    (``model.images.read_model_input``: a JPEG decoded at a reduced DCT scale,
    no compositing of opaque images).

    Views that carry no picture (``model.images.NoPicture``,
    ``model.images.view_problem``) are left out of the array and named in the
    warning (``"view 2: empty view: no object (...)"``, ``"; "`` between
    views); the warning is None when every view is good.

    Raises:
        DecodeError: no views, a null view, any view that cannot be decoded,
            or no view that carries a picture; the reason names the views.
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
    good, problems = 0, []
    for i, data in enumerate(used):
        if data is None:
            raise DecodeError(f"view {i} is null")
        try:
            out[good] = read_model_input(
                data, config.image_size, config.background, config.crop_fraction, config.max_pixels
            )
        except NoPicture as exc:
            problems.append(f"view {i}: {exc}")
            continue
        except DecodeError as exc:
            raise DecodeError(f"view {i}: {exc}") from None
        problem = view_problem(out[good])
        if problem is None:
            good += 1
        else:
            problems.append(f"view {i}: {problem}")
    warning = "; ".join(problems) or None
    if good == 0:
        # One view's reason as it is (its kind is read from its start); several
        # behind a count, the first one's kind leading.
        raise DecodeError(
            warning if len(problems) == 1 else f"{warning} (none of {len(used)} views is usable)"
        )
    return out[:good], given, warning


def check_voxels(voxels: bytes | None) -> None:
    """Ground truth must be absent or exactly ``np.packbits`` of 32^3 bools."""
    if voxels is not None and len(voxels) != VOXEL_BYTES:
        raise DecodeError(f"voxels has {len(voxels)} bytes, expected {VOXEL_BYTES}")


def row_key(object_id: str | None, views: list[bytes] | None, voxels: bytes | None) -> str:
    """A key for a row that comes without the reader's positional one: the
    object_id, or for a row without one a digest of its content."""
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


def decode_batch(batch: pa.Table, config: DecodeConfig) -> pa.Table:
    """The decode stage over one batch of input rows.

    Every input row yields one output row with ``row_key``, ``object_id``,
    ``status`` (ok | failed), ``error``, ``warning`` (the views an ok row
    left out, see :func:`decode_views`), ``n_views``, ``n_views_given``,
    ``pixels`` (``uint8 [n, S, S, 3]`` as bytes, ok rows only), ``voxels``
    (validated ground truth or null) and the carried columns.

    Args:
        batch: input rows (``object_id``, ``views``, optional ``voxels``, ...),
            with the ``row_key`` and ``read_error`` the job's reader gives
            each row and their other columns already under their carried
            names (``pipeline.plan.read_fragment``). Rows with neither are
            input rows as written: keyed by ``object_id`` (see :func:`row_key`),
            their columns named here (``pipeline.columns.carried_name``).
        config: model input size and limits.
    """
    if not {"row_key", READ_ERROR} & set(batch.column_names):
        batch = carry(batch)
    n = batch.num_rows
    ids = batch.column("object_id").to_pylist() if "object_id" in batch.column_names else [None] * n
    views_col = batch.column("views") if "views" in batch.column_names else pa.nulls(n)
    has_voxels = "voxels" in batch.column_names
    voxels_in = batch.column("voxels").to_pylist() if has_voxels else [None] * n

    if "row_key" in batch.column_names:
        keys = batch.column("row_key").to_pylist()
    else:
        keys = [
            ids[i] if ids[i] is not None else row_key(None, views_col[i].as_py(), voxels_in[i])
            for i in range(n)
        ]
    read_errors = (
        batch.column(READ_ERROR).to_pylist() if READ_ERROR in batch.column_names else [None] * n
    )
    statuses, errors, warnings, pixels, used, given, voxels = [], [], [], [], [], [], []
    for i in range(n):
        status, error, warning, px, n_used, n_given, vox = OK, None, None, None, None, None, None
        try:
            if read_errors[i] is not None:
                raise DecodeError(read_errors[i])
            views = views_col[i].as_py()
            n_given = len(views) if views is not None else 0
            if ids[i] is None:
                raise DecodeError("object_id is null")
            if len(ids[i]) > MAX_ID_CHARS:
                raise DecodeError(
                    f"object_id has {len(ids[i])} characters, over the limit of {MAX_ID_CHARS}"
                )
            check_voxels(voxels_in[i])
            array, n_given, warning = decode_views(views, config)
            px, n_used, vox = array.tobytes(), int(array.shape[0]), voxels_in[i]
        except Exception as exc:  # one bad row must never fail the batch
            status = FAILED
            error = str(exc) if isinstance(exc, DecodeError) else f"decode: {exc!r}"
        statuses.append(status)
        errors.append(error)
        warnings.append(warning)
        pixels.append(px)
        used.append(n_used)
        given.append(n_given)
        voxels.append(vox)

    columns = {
        "row_key": pa.array(keys, pa.string()),
        "object_id": pa.array(ids, pa.string()),
        "status": pa.array(statuses, pa.string()),
        "error": pa.array(errors, pa.string()),
        "warning": pa.array(warnings, pa.string()),
        "n_views": pa.array(used, pa.int32()),
        "n_views_given": pa.array(given, pa.int32()),
        "pixels": pa.array(pixels, pa.large_binary()),
        "voxels": pa.array(voxels, pa.binary()),
    }
    for name in carried_columns(batch.schema):
        if name not in ("row_key", READ_ERROR):  # the reader's (an input's own is input_*)
            columns[name] = batch.column(name)
    return pa.table(columns)


def pixels_to_views(pixels: bytes, image_size: int) -> np.ndarray:
    """Inverse of the ``pixels`` column: ``uint8 [n, S, S, 3]``."""
    return np.frombuffer(pixels, dtype=np.uint8).reshape(-1, image_size, image_size, 3)
