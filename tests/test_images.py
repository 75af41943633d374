"""The model's input contract (model.images): every kind of image it accepts,
every bad image it refuses, and the preprocessing (compositing, crop, pad, resize)."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from model.images import (
    CROP_FRACTION,
    TEST_BACKGROUND,
    DecodeError,
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
