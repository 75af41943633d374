"""Failed rows group by a stable ``error_kind`` beside their free-text
``error``: every reason the decode stage, the reader and the model stage give
maps to its kind (the messages come from the real stages, not copies of them),
the sink writes the kind into the manifest, and an older manifest without the
column reads with its kinds filled in."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from test_sink import model_rows
from test_views import EMPTY, cut_short, encode, photo, text_bomb

from pipeline import io
from pipeline.decode import DecodeConfig, decode_batch
from pipeline.inputs import InputReadError
from pipeline.layout import ERROR_KINDS, error_kind
from pipeline.plan import READ_ERROR
from pipeline.results import Output
from pipeline.sink import write_shard


def png(width: int = 8, height: int = 8) -> bytes:
    """A PNG of noise (so that half of it is half of its pixels)."""
    pixels = np.random.default_rng(width).integers(0, 256, (height, width, 3), np.uint8)
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def reasons(rows: list[dict], **config) -> list[str]:
    """The ``error`` of each row as the decode stage gives it."""
    table = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [("object_id", pa.string()), ("views", pa.list_(pa.binary())), ("voxels", pa.binary())]
        ),
    )
    decoded = decode_batch(table, DecodeConfig(image_size=16, **config))
    return decoded.column("error").to_pylist()


def test_every_stage_reason_has_its_kind():
    good = png()
    rows = [
        ({"object_id": "a", "views": None}, "empty_views"),
        ({"object_id": "a", "views": []}, "empty_views"),
        ({"object_id": "a", "views": [good, None]}, "empty_views"),
        ({"object_id": "a", "views": [b""]}, "empty_views"),
        ({"object_id": None, "views": [good]}, "bad_id"),
        ({"object_id": "x" * 20000, "views": [good]}, "bad_id"),
        ({"object_id": "a", "views": [good], "voxels": b"\x00" * 10}, "bad_voxels"),
        ({"object_id": "a", "views": [good, b"not an image"]}, "undecodable_image"),
        ({"object_id": "a", "views": [png(64, 64)[:6000]]}, "truncated_image"),
        ({"object_id": "a", "views": [png(300, 300)]}, "too_large"),
        ({"object_id": "a", "views": [text_bomb()]}, "too_large"),
        ({"object_id": "a", "views": [cut_short(encode(photo(180), "JPEG"))]}, "no_picture"),
        ({"object_id": "a", "views": [EMPTY["black"], EMPTY["white"]]}, "empty_view"),
        ({"object_id": "a", "views": [good]}, None),
    ]
    found = reasons([r for r, _ in rows], max_pixels=200 * 200)
    assert [error_kind(e) for e in found] == [k for _, k in rows], found
    # a row over the row byte limit
    (over,) = reasons([{"object_id": "a", "views": [good, good]}], max_row_bytes=len(good))
    assert error_kind(over) == "too_large"
    # a row the reader could not read (the reader's own reason) keeps it
    unreadable = str(InputReadError("s3://b/in.parquet", 3, "OSError: corrupt page"))
    table = pa.table(
        {
            "object_id": ["a"],
            "views": pa.array([None], pa.list_(pa.binary())),
            READ_ERROR: [unreadable],
        }
    )
    (read_reason,) = decode_batch(table, DecodeConfig(image_size=16)).column("error").to_pylist()
    assert error_kind(read_reason) == "read_error"
    # the model stage's and the sink's own
    assert error_kind("inference: ValueError('bad batch')") == "inference"
    assert error_kind("internal: no grid for an ok row") == "internal"
    assert error_kind("something new") == "other"
    assert set(ERROR_KINDS) >= {
        "read_error",
        "empty_views",
        "too_large",
        "no_picture",
        "empty_view",
    }
    assert "other" in ERROR_KINDS


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_manifest_carries_the_kind_and_old_manifests_read_with_it(tmp_path, where, request):
    if where == "s3":
        output = f"s3://{request.getfixturevalue('s3_bucket')}/grids"
    else:
        output = str(tmp_path / "out")
    write_shard(model_rows(["a", "b", "c"], ["ok", "failed", "ok"]), output)
    reader = Output(output)
    table = reader.manifests()
    assert table.column("error_kind").to_pylist() == [None, "empty_views", None]
    # an older manifest has no error_kind: read with the kinds of its reasons
    old = table.drop_columns(["error_kind"])
    old = old.set_column(0, "object_id", pa.array(["d", "e", "f"]))
    buffer = BytesIO()
    pq.write_table(old, buffer)
    io.write_bytes(io.join(output, "manifests", "older.parquet"), buffer.getvalue())
    rows = reader.manifests(["object_id", "error_kind"]).to_pylist()
    assert {r["object_id"]: r["error_kind"] for r in rows} == {
        "a": None,
        "b": "empty_views",
        "c": None,
        "d": None,
        "e": "empty_views",
        "f": None,
    }
    frame = reader.to_pandas(["object_id", "error_kind"])
    assert frame.groupby("error_kind").size().to_dict() == {"empty_views": 2}
