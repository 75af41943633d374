"""The model's input contract (model.images): every kind of image it accepts,
every bad image it refuses, and the preprocessing (compositing, crop, pad, resize)."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.images import (
    CROP_FRACTION,
    TEST_BACKGROUND,
    DecodeError,
    read_model_input,
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


# --- Images decoded by what they are -------------------------------------------------------
# Each kind of image is checked against the same picture as 8-bit RGB(A): the model input
# must match within 1 level for lossless files (lossy ones against Pillow's own RGB decode).


def png_raw(
    array: np.ndarray, color_type: int, depth: int = 16, trns: bytes | None = None
) -> bytes:
    """A PNG written by hand: 16-bit samples (big-endian), which Pillow cannot write."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    height, width = array.shape[:2]
    rows = array.astype(">u2" if depth == 16 else "u1").reshape(height, -1)
    body = b"".join(b"\0" + row.tobytes() for row in rows)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + (chunk(b"tRNS", trns) if trns is not None else b"")
        + chunk(b"IDAT", zlib.compress(body))
        + chunk(b"IEND", b"")
    )


def save(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def model_input(data: bytes) -> np.ndarray:
    # 40x30 pictures: the non-square path (padding, crop) runs too
    return to_model_input(read_rgba(data), 32, background=(225, 251, 238))


RNG = np.random.default_rng(15)
RGBA8 = RNG.integers(0, 256, (30, 40, 4), dtype=np.uint8)
RGBA8[:5, :, 3] = 0  # some fully transparent pixels too
GRAY8 = RGBA8[..., 0]
LOW8 = RNG.integers(0, 256, (30, 40, 4), dtype=np.uint16)  # bits below the top 8
WIDE16 = (RGBA8.astype(np.uint16) << 8) | LOW8
PALETTE = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
INDEX = RNG.integers(0, 256, (30, 40), dtype=np.uint8)


def gray_png(gray: np.ndarray, alpha: np.ndarray | None = None) -> bytes:
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255) if alpha is None else alpha])
    return save(Image.fromarray(rgba))


def palette_image() -> Image.Image:
    image = Image.fromarray(INDEX, "P")
    image.putpalette(PALETTE.tobytes())
    return image


def palette_reference(alpha_of_index: np.ndarray) -> bytes:
    return save(Image.fromarray(np.dstack([PALETTE[INDEX], alpha_of_index[INDEX]])))


def keyed(gray16: np.ndarray, key: int) -> np.ndarray:
    out = gray16.copy()
    out[10:14, 20:30] = key
    out[20:22, 0:10] = key ^ 0x0001  # the key's top byte, not the key: stays opaque
    return out


def lossless_cases() -> dict[str, tuple[bytes, bytes]]:
    """name -> (the image as that kind of file, the same picture as 8-bit RGB(A))."""
    rgb, rgba, alpha = RGBA8[..., :3], RGBA8, RGBA8[..., 3]
    rgb_png, rgba_png, gray_ref = (
        save(Image.fromarray(rgb)),
        save(Image.fromarray(rgba)),
        gray_png(GRAY8),
    )
    bits = GRAY8 >= 128
    index_alpha = RNG.integers(0, 256, 256, dtype=np.uint8)
    opaque = np.full(256, 255, np.uint8)
    hidden = opaque.copy()
    hidden[int(INDEX[0, 0])] = 0
    gray_key = keyed(WIDE16[..., 0], 0x1234)
    gray_key_alpha = np.where(gray_key == 0x1234, 0, 255).astype(np.uint8)
    rgb_key = WIDE16[..., :3].copy()  # a 16-bit RGB key matches on the top bytes: keep clear
    clash = (rgb_key[..., 0] >> 8 == 0x12) & (rgb_key[..., 1] >> 8 == 0x43)
    rgb_key[clash, 0] ^= 0x8000
    rgb_key[10:14, 20:30] = (0x1234, 0x4321, 0x0999)
    rgb_key_alpha = np.where((rgb_key == (0x1234, 0x4321, 0x0999)).all(-1), 0, 255).astype(np.uint8)
    rgb8_key = rgb.copy()
    rgb8_key[(rgb8_key == (1, 2, 3)).all(-1)] = (0, 2, 3)
    rgb8_key[10:14, 20:30] = (1, 2, 3)
    rgb8_key_alpha = np.where((rgb8_key == (1, 2, 3)).all(-1), 0, 255).astype(np.uint8)
    ycbcr = Image.fromarray(rgb).convert("YCbCr")
    lab = Image.fromarray(rgb).convert("LAB")
    frames = [Image.fromarray(RNG.integers(0, 256, (30, 40, 4), dtype=np.uint8)) for _ in range(2)]
    pgm16 = b"P5 40 30 65535\n" + WIDE16[..., 0].astype(">u2").tobytes()
    # (Pillow's own convert("I;16B") clips to 255 as well)
    big_endian = Image.frombytes("I;16B", (40, 30), WIDE16[..., 0].astype(">u2").tobytes())
    return {
        "1": (save(Image.fromarray(bits)), gray_png(bits.astype(np.uint8) * 255)),
        "L": (save(Image.fromarray(GRAY8)), gray_ref),
        "LA": (save(Image.fromarray(np.dstack([GRAY8, alpha]), "LA")), gray_png(GRAY8, alpha)),
        "P": (save(palette_image()), palette_reference(opaque)),
        "P tRNS index": (
            save(palette_image(), transparency=int(INDEX[0, 0])),
            palette_reference(hidden),
        ),
        "P tRNS alphas": (
            save(palette_image(), transparency=index_alpha.tobytes()),
            palette_reference(index_alpha),
        ),
        "P GIF transparency": (
            save(palette_image(), "GIF", transparency=int(INDEX[0, 0])),
            palette_reference(hidden),
        ),
        "RGB": (rgb_png, save(Image.fromarray(rgb), "TIFF")),
        "RGB tRNS": (
            save(Image.fromarray(rgb8_key), transparency=(1, 2, 3)),
            save(Image.fromarray(np.dstack([rgb8_key, rgb8_key_alpha]))),
        ),
        "RGBA": (rgba_png, save(Image.fromarray(rgba), "TIFF")),
        "RGBA WebP lossless": (save(Image.fromarray(rgba), "WEBP", lossless=True), rgba_png),
        "CMYK TIFF": (save(Image.fromarray(rgb).convert("CMYK"), "TIFF"), rgb_png),
        "YCbCr TIFF": (save(ycbcr, "TIFF"), save(ycbcr.convert("RGB"))),
        "LAB TIFF": (save(lab, "TIFF"), save(lab.convert("RGB"))),
        "I;16 PNG": (save(Image.fromarray(WIDE16[..., 0])), gray_ref),
        "I;16 PNG tRNS": (
            png_raw(gray_key, 0, trns=struct.pack(">H", 0x1234)),
            gray_png((gray_key >> 8).astype(np.uint8), gray_key_alpha),
        ),
        "I;16 TIFF": (save(Image.fromarray(WIDE16[..., 0]), "TIFF"), gray_ref),
        "I;16B TIFF": (save(big_endian, "TIFF"), gray_ref),
        "I 32-bit TIFF": (
            save(
                Image.fromarray(
                    (GRAY8.astype(np.int32) << 23) | (LOW8[..., 0].astype(np.int32) << 15)
                ),
                "TIFF",
            ),
            gray_ref,
        ),
        "I 16-bit PGM": (pgm16, gray_ref),
        "F TIFF": (
            save(
                Image.fromarray(GRAY8 + RNG.uniform(-0.45, 0.45, GRAY8.shape).astype(np.float32)),
                "TIFF",
            ),
            gray_ref,
        ),
        "LA 16-bit PNG": (png_raw(WIDE16[..., [0, 3]], 4), gray_png(GRAY8, alpha)),
        "RGB 16-bit PNG": (png_raw(WIDE16[..., :3], 2), rgb_png),
        "RGB 16-bit PNG tRNS": (
            png_raw(rgb_key, 2, trns=struct.pack(">HHH", 0x1234, 0x4321, 0x0999)),
            save(Image.fromarray(np.dstack([(rgb_key >> 8).astype(np.uint8), rgb_key_alpha]))),
        ),
        "RGBA 16-bit PNG": (png_raw(WIDE16, 6), rgba_png),
        "GIF animation": (
            save(
                palette_image(),
                "GIF",
                save_all=True,
                append_images=[f.convert("P") for f in frames],
            ),
            palette_reference(opaque),
        ),
        "WebP animation": (
            save(Image.fromarray(rgba), "WEBP", save_all=True, append_images=frames, lossless=True),
            rgba_png,
        ),
        "APNG": (save(Image.fromarray(rgba), save_all=True, append_images=frames), rgba_png),
    }


LOSSLESS = lossless_cases()


@pytest.mark.parametrize("kind", list(LOSSLESS))
def test_every_kind_of_image_gives_the_model_the_same_picture(kind):
    data, reference = LOSSLESS[kind]
    out = read_rgba(data)
    assert out.shape == (30, 40, 4) and out.dtype == np.uint8
    got, expected = model_input(data), model_input(reference)
    assert np.abs(got.astype(int) - expected).max() <= 1, kind


def test_sixteen_bit_gray_is_scaled_not_clipped():
    """The reported bug: a 16-bit gray PNG came out pure white."""
    out = read_rgba(save(Image.fromarray(WIDE16[..., 0])))
    np.testing.assert_array_equal(out[..., 0], GRAY8)
    assert (out[..., 3] == 255).all()


@pytest.mark.parametrize("colour", ["CMYK", "L", "RGB"])
def test_jpeg_matches_pillows_own_rgb_decode(colour):
    data = save(Image.fromarray(RGBA8[..., :3]).convert(colour), "JPEG", quality=90)
    reference = save(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(model_input(data), model_input(reference))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation):
    from PIL import ImageOps

    stored = Image.fromarray(RGBA8)
    exif = stored.getexif()
    exif[0x0112] = orientation
    for fmt in ("PNG", "JPEG"):
        image = stored if fmt == "PNG" else stored.convert("RGB")
        data = save(image, fmt, exif=exif)
        upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGBA")
        out = read_rgba(data)
        assert out.shape[:2] == ((40, 30) if orientation >= 5 else (30, 40))
        np.testing.assert_array_equal(out, np.asarray(upright))


# --- Memory bounded by what the image holds ------------------------------------------------


def padded_reference(rgba, size, background, crop_fraction, offset, flip):
    """The pad-to-square-then-crop-then-resize implementation this module had
    before (it allocates the padded square): the geometry the model was trained on."""
    image = Image.fromarray(rgba)
    backdrop = Image.new("RGBA", image.size, (*background, 255))
    rgb = np.asarray(Image.alpha_composite(backdrop, image).convert("RGB"))
    height, width = rgb.shape[:2]
    side = max(height, width)
    square = np.empty((side, side, 3), dtype=np.uint8)
    square[...] = np.asarray(background, dtype=np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = rgb
    crop = max(1, min(side, int(round(side * crop_fraction))))
    x0 = int(round((side - crop) * offset[0]))
    y0 = int(round((side - crop) * offset[1]))
    rgb = square[y0 : y0 + crop, x0 : x0 + crop]
    if flip:
        rgb = rgb[:, ::-1]
    if rgb.shape[0] != size:
        rgb = np.asarray(
            Image.fromarray(np.ascontiguousarray(rgb)).resize(
                (size, size), Image.Resampling.LANCZOS, reducing_gap=None
            )
        )
    return rgb


@pytest.mark.parametrize(
    "shape",
    [
        (137, 100),
        (100, 137),
        (137, 137),
        (50, 100),
        (100, 50),
        (300, 41),
        (41, 300),
        (30, 40),
        (1000, 7),
        (7, 1000),
        (900, 1),
        (1, 900),
    ],
)
def test_padding_without_the_padded_square_gives_the_same_pixels(shape):
    rng = np.random.default_rng(sum(shape))
    rgba = rng.integers(0, 256, (*shape, 4), dtype=np.uint8)
    rgba[::3, :, 3] = 255
    settings = [
        (64, (240, 240, 240), CROP_FRACTION, (0.5, 0.5), False),
        (127, (240, 240, 240), CROP_FRACTION, (0.5, 0.5), False),
        (32, (225, 251, 238), CROP_FRACTION, (0.0, 1.0), True),
        (200, (0, 0, 255), 1.0, (0.5, 0.5), False),
        (137, (255, 255, 255), 0.6, (0.8, 0.3), True),
        (100, (10, 20, 30), 0.9, (1.0, 0.0), False),
        (48, (240, 240, 240), 0.05, (0.0, 0.0), False),  # often a crop of padding only
    ]
    # The same pixels. A sliver's padded pass is computed from Pillow's weights
    # (exact here, but libm's last bit may differ elsewhere) and one a pixel or
    # two wide is resized in the other order: 1 level apart at most.
    tolerance = 0 if 4 * min(shape) >= max(shape) else 1
    for setting in settings:
        expected = padded_reference(rgba, *setting)
        got = to_model_input(rgba, *setting)
        assert got.shape == expected.shape
        assert np.abs(got.astype(int) - expected).max() <= tolerance, setting


@pytest.mark.parametrize(
    "call", ["to_model_input(read_rgba(data), 127)", "read_model_input(data, 127)"]
)
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("width, height", [(20000, 10), (10, 20000)])
def test_a_long_thin_image_costs_what_it_holds(width, height, fmt, call):
    """A 695-byte 20000x10 PNG used to cost 3.5 GiB (its padded square)."""
    code = f"""
import io, resource
from PIL import Image
from model.images import read_model_input, read_rgba, to_model_input
buffer = io.BytesIO()
Image.new("RGB", ({width}, {height}), (10, 200, 30)).save(buffer, "{fmt}")
data = buffer.getvalue()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {call}
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert out.shape == (127, 127, 3)
print((after - before) // 1024)
"""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) < 200  # MiB above what the interpreter had used


def test_offset_outside_the_image_is_refused():
    with pytest.raises(ValueError, match="offset"):
        to_model_input(rgba_image(), 64, offset=(1.5, 0.5))


# --- The job's decode: the same centre crop at the cost of what the model sees -------------


@pytest.mark.parametrize("kind", list(LOSSLESS))
def test_read_model_input_is_the_full_path_on_small_images(kind):
    """Nothing to reduce (40x30 to 32): the very pixels of read_rgba + to_model_input."""
    data, _ = LOSSLESS[kind]
    expected = to_model_input(read_rgba(data), 32, background=(225, 251, 238))
    np.testing.assert_array_equal(read_model_input(data, 32, background=(225, 251, 238)), expected)


def test_read_model_input_is_the_full_path_on_the_training_renders():
    """The shipped model's inputs do not move: renders at 127 and 64, bit for bit."""
    import shapes

    for index in (0, 5):
        for data in shapes.generate_object(7, index, views=2)["views"]:
            for size in (127, 64):
                expected = to_model_input(read_rgba(data), size)
                np.testing.assert_array_equal(read_model_input(data, size), expected)


def photo(width: int, height: int) -> Image.Image:
    """A photo-like picture with sharp coloured blocks off centre: a crop in the
    wrong place or a wrong turn moves them and shows."""
    x = np.arange(width)[None, :, None]
    pixels = np.broadcast_to(200 + 40 * x // width, (height, width, 3)).astype(np.uint8).copy()
    pixels[height // 5 : height // 2, width // 3 : width // 2] = (20, 40, 200)
    pixels[height // 2 : height * 4 // 5, width // 2 : width * 3 // 4] = (220, 30, 30)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("width, height", [(1001, 757), (757, 1001), (1024, 1024)])
@pytest.mark.parametrize("orientation", [1, 3, 6, 7])
def test_read_model_input_of_a_large_jpeg_is_the_same_picture(width, height, orientation):
    """Decoded at a reduced DCT scale (sides not multiples of 8, turned by EXIF,
    padded when not square): within the filters' rounding of the full path."""
    image = photo(width, height)
    exif = image.getexif()
    exif[0x0112] = orientation
    data = save(image, "JPEG", quality=90, exif=exif)
    for size in (64, 127):
        expected = to_model_input(read_rgba(data), size)
        got = read_model_input(data, size)
        diff = np.abs(got.astype(int) - expected)
        assert diff.mean() < 0.6 and diff.max() <= 24, (size, diff.mean(), diff.max())


def test_read_model_input_of_a_large_png_with_alpha_is_the_same_picture():
    """Reduced by an integer factor (premultiplied), then composited: the same picture."""
    rgba = np.asarray(photo(1024, 1024).convert("RGBA")).copy()
    rgba[:300, :, 3] = 0
    rgba[300:320, :, 3] = 128
    data = save(Image.fromarray(rgba))
    for size in (64, 127):
        for background in ((240, 240, 240), (0, 0, 255)):
            expected = to_model_input(read_rgba(data), size, background=background)
            diff = np.abs(read_model_input(data, size, background).astype(int) - expected)
            assert diff.mean() < 0.6 and diff.max() <= 24, (size, background)


@pytest.mark.parametrize(
    "side, size, scale",
    [(1024, 127, 4), (1024, 64, 8), (2048, 127, 8), (2048, 64, 8), (300, 64, 4), (137, 127, 1),
     (552, 64, 8), (551, 64, 4)],
)  # fmt: skip
def test_a_jpeg_is_decoded_at_the_smallest_scale_that_holds_the_crop(
    monkeypatch, side, size, scale
):
    """The decoder is asked for the smallest DCT scale at which the centre crop
    still spans ``size`` pixels (of 552 px, 1/8 spans 64.0; of 551, 63.9)."""
    from PIL import JpegImagePlugin

    sizes = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def recording(self, mode, requested):
        result = draft(self, mode, requested)
        sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recording)
    out = read_model_input(save(photo(side, side), "JPEG"), size)
    assert out.shape == (size, size, 3)
    decoded = -(-side // scale)
    assert sizes == [(decoded, decoded)]
    crop = round(side * CROP_FRACTION)  # of the full image
    assert crop / scale >= size and (scale == 8 or crop / (2 * scale) < size)
