"""Decoding, validation and preprocessing: every kind of image the contract
accepts, every bad row it must refuse, and one bad row never failing another."""

from __future__ import annotations

import io
import struct
import sys
import time
import zlib

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipeline.decode import (
    CROP_FRACTION,
    TEST_BACKGROUND,
    DecodeConfig,
    DecodeError,
    decode_batch,
    pixels_to_views,
    read_rgba,
    to_model_input,
)


def encode(array: np.ndarray, mode: str, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


def rgba_image(h: int = 137, w: int = 137, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA"])
def test_read_rgba_png_modes(mode):
    source = rgba_image(20, 30)
    if mode == "P":  # an opaque palette image (RGBA -> P would keep the alpha)
        source[..., 3] = 255
    out = read_rgba(encode(source, mode))
    assert out.shape == (20, 30, 4) and out.dtype == np.uint8
    if mode in ("L", "RGB", "P"):
        assert (out[..., 3] == 255).all()
    if mode == "RGBA":
        np.testing.assert_array_equal(out, source)


def test_read_rgba_jpeg():
    source = np.zeros((40, 50, 3), np.uint8)
    source[:, :25] = (200, 30, 30)
    out = read_rgba(encode(source, "RGB", "JPEG"))
    assert out.shape == (40, 50, 4) and (out[..., 3] == 255).all()
    assert abs(int(out[20, 5, 0]) - 200) < 10


def test_refuses_empty_truncated_and_garbage():
    with pytest.raises(DecodeError, match="0 bytes"):
        read_rgba(b"")
    data = encode(rgba_image(), "RGBA")
    with pytest.raises(DecodeError, match="truncated"):
        read_rgba(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="not a readable image"):
        read_rgba(b"this is not an image")
    assert issubclass(DecodeError, ValueError)


@pytest.mark.parametrize("side", [9000, 60000])  # above our limit; above Pillow's own guard too
def test_decompression_bomb_refused_before_decoding(side):
    bomb = png_claiming(side, side)
    assert len(bomb) < 200
    started = time.monotonic()
    with pytest.raises(DecodeError, match="refused without decoding"):
        read_rgba(bomb)
    assert time.monotonic() - started < 1.0


def test_pixel_limit_is_a_parameter():
    data = encode(rgba_image(100, 100), "RGB")
    assert read_rgba(data, max_pixels=10_000).shape == (100, 100, 4)
    with pytest.raises(DecodeError, match="over the limit of 9999"):
        read_rgba(data, max_pixels=9_999)


def test_to_model_input_composites_over_background():
    rgba = np.zeros((137, 137, 4), np.uint8)  # fully transparent
    rgba[60:77, 60:77] = (10, 20, 30, 255)  # an opaque square in the middle
    out = to_model_input(rgba, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], TEST_BACKGROUND)
    np.testing.assert_array_equal(out[32, 32], (10, 20, 30))
    out = to_model_input(rgba, 64, background=(0, 0, 255))
    np.testing.assert_array_equal(out[0, 0], (0, 0, 255))


def test_to_model_input_half_alpha():
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = 0
    rgba[..., 3] = 128
    out = to_model_input(rgba, 10, background=(200, 200, 200), crop_fraction=1.0)
    assert abs(int(out[5, 5, 0]) - round(200 * (1 - 128 / 255))) <= 1


@pytest.mark.parametrize(
    "background", [(240, 240, 240), (225, 251, 238), (0, 0, 0), (255, 255, 255)]
)
def test_compositing_is_exactly_rounded_alpha_blending(background):
    """Every (colour, alpha) pair, against round(rgb * a + bg * (1 - a)) in
    float64: the composite the model was trained on, bit for bit."""
    colour, alpha = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    rgba = np.stack([colour, colour[::-1], colour, alpha], axis=-1).astype(np.uint8)
    out = to_model_input(rgba, 256, background=background, crop_fraction=1.0)
    a = alpha[..., None] / 255.0
    rgb = np.stack([colour, colour[::-1], colour], axis=-1)
    expected = np.rint(rgb * a + np.asarray(background) * (1.0 - a)).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_centre_crop_is_127_of_137():
    rgba = np.zeros((137, 137, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:5, :, :3] = 255  # a white band the centre crop cuts off entirely
    out = to_model_input(rgba, 127, crop_fraction=CROP_FRACTION)
    assert out.shape == (127, 127, 3)
    assert out.max() == 0
    # an offset of (0, 0) keeps the top-left corner, band included
    out = to_model_input(rgba, 127, offset=(0.0, 0.0))
    assert out[0].min() == 255


def test_non_square_is_padded_with_background_and_flip_mirrors():
    rgba = np.zeros((50, 100, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:, :50, :3] = 255  # left half white
    out = to_model_input(rgba, 100, crop_fraction=1.0)
    np.testing.assert_array_equal(out[0, 75], TEST_BACKGROUND)  # padding above
    np.testing.assert_array_equal(out[50, 10], (255, 255, 255))
    np.testing.assert_array_equal(out[50, 90], (0, 0, 0))
    flipped = to_model_input(rgba, 100, crop_fraction=1.0, flip=True)
    np.testing.assert_array_equal(flipped, out[:, ::-1])


def test_decode_is_tensorflow_free():
    assert "tensorflow" not in sys.modules or "pipeline.decode" in sys.modules


def batch_with_bad_rows() -> pa.Table:
    good = encode(rgba_image(seed=1), "RGBA")
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


def test_decode_batch_marks_committed_rows_skipped():
    batch = batch_with_bad_rows()
    committed = pa.array(["good-a", "bomb"], pa.string())
    out = decode_batch(batch, DecodeConfig(image_size=32), committed=committed)
    status = dict(
        zip(out.column("object_id").to_pylist(), out.column("status").to_pylist(), strict=True)
    )
    assert status["good-a"] == "skipped" and status["bomb"] == "skipped"
    assert status["good-b"] == "ok"
    assert out.filter(pa.compute.equal(out["status"], "skipped"))["pixels"].null_count == 2


def test_carried_columns_and_reserved_names():
    good = encode(rgba_image(), "RGB")
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
