"""The decode stage (pipeline.decode): every bad row it must refuse, one bad
row never failing another, resume's skipped rows and the carried columns."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
from test_images import encode, png_claiming
from test_views import cutout, photo

from pipeline.decode import DecodeConfig, decode_batch, pixels_to_views


def test_decode_is_tensorflow_free():
    assert "tensorflow" not in sys.modules or "pipeline.decode" in sys.modules


def batch_with_bad_rows() -> pa.Table:
    good = encode(cutout(), "RGBA")
    rows = [
        {"object_id": "good-a", "views": [good, good], "voxels": bytes(4096), "sku": 1},
        {"object_id": None, "views": [good], "voxels": None, "sku": 2},
        {"object_id": "null-views", "views": None, "voxels": None, "sku": 3},
        {"object_id": "empty-views", "views": [], "voxels": None, "sku": 4},
        {"object_id": "zero-byte", "views": [good, b""], "voxels": None, "sku": 5},
        {"object_id": "truncated", "views": [good[:100]], "voxels": None, "sku": 6},
        {"object_id": "bomb", "views": [png_claiming(9000, 9000)], "voxels": None, "sku": 7},
        {"object_id": "short-voxels", "views": [good], "voxels": b"\x00" * 17, "sku": 8},
        {"object_id": "null-view", "views": [good, None], "voxels": None, "sku": 9},
        {"object_id": "many-views", "views": [good] * 7, "voxels": None, "sku": 10},
        {"object_id": "good-b", "views": [good], "voxels": None, "sku": 11},
    ]
    schema = pa.schema(
        [
            ("object_id", pa.string()),
            ("views", pa.list_(pa.binary())),
            ("voxels", pa.binary()),
            ("sku", pa.int64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def test_decode_batch_bad_rows_fail_alone():
    batch = batch_with_bad_rows()
    out = decode_batch(batch, DecodeConfig(image_size=32, max_views=4))
    assert out.num_rows == batch.num_rows
    rows = {r["sku"]: r for r in out.to_pylist()}
    expected_errors = {
        2: "object_id is null",
        3: "views is null",
        4: "views is empty",
        5: "view 1: empty image",
        6: "view 0: truncated",
        7: "view 0: image header claims",
        8: "voxels has 17 bytes",
        9: "view 1 is null",
    }
    for sku, reason in expected_errors.items():
        assert rows[sku]["status"] == "failed", sku
        assert rows[sku]["error"].startswith(reason), rows[sku]["error"]
        assert rows[sku]["pixels"] is None
    for sku in (1, 10, 11):
        assert rows[sku]["status"] == "ok" and rows[sku]["error"] is None
    assert rows[1]["n_views"] == 2 and len(rows[1]["voxels"]) == 4096
    views = pixels_to_views(rows[1]["pixels"], 32)
    assert views.shape == (2, 32, 32, 3) and views.dtype == np.uint8
    assert rows[10]["n_views"] == 4 and rows[10]["n_views_given"] == 7
    # a null object_id still gets a stable key, so a rerun recognises the row
    assert rows[2]["row_key"].startswith("null-object-id:")
    again = decode_batch(batch, DecodeConfig(image_size=32, max_views=4))
    assert again.column("row_key").to_pylist() == out.column("row_key").to_pylist()


def test_carried_columns_and_reserved_names():
    good = encode(photo(137), "RGB")
    batch = pa.table(
        {
            "object_id": ["a"],
            "views": pa.array([[good]], pa.list_(pa.binary())),
            "status": ["from the input"],  # collides with a manifest column
            "cameras": pa.array([[1.0, 2.0]]),  # nested: not carried
            "category": ["chair"],
        }
    )
    out = decode_batch(batch, DecodeConfig(image_size=16))
    assert out.column("input_status").to_pylist() == ["from the input"]
    assert out.column("category").to_pylist() == ["chair"]
    assert "cameras" not in out.column_names
    assert out.column("status").to_pylist() == ["ok"]
