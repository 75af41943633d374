"""Views that carry no picture (issue 21, item 6): every fabricated case, as a
real encoded image, is refused where it is decoded (``model.images``) and by
the row policy of the decode stage (``pipeline.decode``): a row with no good
view fails with a reason and its ``error_kind``, a row with some good views
is ok without the bad ones and names them in ``warning``, which the sink
writes into the manifest. Good pictures pass (the false-flag rate on the
held-out set and the photo catalogs is measured by
``jobs/benchmark.py flags``, docs/job.md)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from model.images import NoPicture, read_model_input, read_rgba, view_problem
from pipeline.decode import DecodeConfig, decode_batch
from pipeline.layout import error_kind
from pipeline.sink import write_shard


def encode(array: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def backdrop(side: int, seed: int) -> np.ndarray:
    """A studio backdrop as a camera sees it: light grey, darker at the
    bottom, with sensor noise (float, RGB)."""
    rng = np.random.default_rng(seed)
    level = np.linspace(246, 234, side)[:, None, None] * np.ones((1, side, 3))
    return level + rng.normal(0, 2, (side, side, 3))


def photo(side: int = 300, seed: int = 0, with_object: bool = True) -> np.ndarray:
    """``uint8 [side, side, 3]``: a shaded ellipse on the backdrop (or the backdrop alone)."""
    image = backdrop(side, seed)
    if with_object:
        y, x = np.mgrid[0:side, 0:side] / side
        inside = ((x - 0.5) / 0.3) ** 2 + ((y - 0.55) / 0.22) ** 2 < 1
        shade = 60 + 120 * x  # lit from the right
        colour = np.stack([shade, shade * 0.8, shade * 0.5], axis=-1)
        image[inside] = colour[inside]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def cutout(side: int = 137) -> np.ndarray:
    """``uint8 [side, side, 4]``: a shaded square on transparent pixels (a render)."""
    rgba = np.zeros((side, side, 4), np.uint8)
    ramp = np.linspace(40, 200, side // 2).astype(np.uint8)
    rgba[side // 4 : side // 4 + side // 2, side // 4 : side // 4 + side // 2, :3] = ramp[
        None, :, None
    ]
    rgba[side // 4 : side // 4 + side // 2, side // 4 : side // 4 + side // 2, 3] = 255
    return rgba


GOOD_JPEG = encode(photo(), "JPEG", quality=90)
GOOD_PNG = encode(cutout(), "PNG")


def cut_short(jpeg: bytes, keep: float = 0.5) -> bytes:
    """The JPEG's first ``keep`` of its bytes, with an EOI marker appended."""
    return jpeg[: int(len(jpeg) * keep)] + b"\xff\xd9"


def taller_header(jpeg: bytes, factor: int = 2) -> bytes:
    """The JPEG with its frame header (SOF0) claiming ``factor`` times its rows."""
    at = jpeg.index(b"\xff\xc0")
    height = struct.unpack(">H", jpeg[at + 5 : at + 7])[0]
    return jpeg[: at + 5] + struct.pack(">H", height * factor) + jpeg[at + 7 :]


def text_bomb(after_pixels: bool = False) -> bytes:
    """A small PNG with a zTXt chunk whose text decompresses to 200 MB of zeros."""
    png = encode(cutout(16))
    packer = zlib.compressobj(9)
    zeros = bytes(1 << 20)
    compressed = b"".join(packer.compress(zeros) for _ in range(200)) + packer.flush()
    body = b"Comment\x00\x00" + compressed
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body
    chunk += struct.pack(">I", zlib.crc32(b"zTXt" + body) & 0xFFFFFFFF)
    at = png.index(b"IEND") - 4 if after_pixels else 33  # after IHDR, or before IEND
    return png[:at] + chunk + png[at:]


NO_PICTURE = {
    "cut short": cut_short(GOOD_JPEG),
    "cut short early": cut_short(GOOD_JPEG, 0.2),
    "header taller than data": taller_header(GOOD_JPEG),
}
EMPTY = {
    "black": encode(np.zeros((137, 137, 3), np.uint8)),
    "white": encode(np.full((137, 137, 3), 255, np.uint8)),
    "uniform grey JPEG": encode(np.full((300, 300, 3), 128, np.uint8), "JPEG"),
    "fully transparent": encode(
        np.dstack(
            [np.random.default_rng(1).integers(0, 256, (137, 137, 3), np.uint8)]
            + [np.zeros((137, 137, 1), np.uint8)]
        )
    ),
    "background only after compositing": encode(
        np.dstack([np.full((137, 137, 3), 240, np.uint8), cutout()[..., 3:]])
    ),
    "empty backdrop photo": encode(photo(with_object=False), "JPEG", quality=90),
    "1x1": encode(np.array([[[20, 90, 200]]], np.uint8)),
}
NOISE = {
    "noise PNG": encode(np.random.default_rng(2).integers(0, 256, (300, 300, 3), np.uint8)),
    "noise JPEG": encode(
        np.random.default_rng(3).integers(0, 256, (300, 300, 3), np.uint8), "JPEG", quality=95
    ),
}


@pytest.mark.parametrize("name", sorted(NO_PICTURE))
def test_a_jpeg_cut_short_is_no_picture_where_it_is_decoded(name):
    data = NO_PICTURE[name]
    with pytest.raises(NoPicture, match="no picture: the last \\d+% of the JPEG's rows"):
        read_rgba(data)  # training and evaluation
    for size in (64, 127):  # the job, at a reduced DCT scale or not
        with pytest.raises(NoPicture, match="decoder's flat 128 fill"):
            read_model_input(data, size)


def test_a_jpeg_cut_near_its_end_keeps_its_picture():
    # a tenth of the rows filled: the object is whole, the view is used
    view = read_model_input(cut_short(GOOD_JPEG, 0.95), 64)
    assert view_problem(view) is None


def test_good_views_pass():
    for data in (GOOD_JPEG, GOOD_PNG, encode(photo(1024, 4), "JPEG", quality=85)):
        for size in (64, 127):
            assert view_problem(read_model_input(data, size)) is None


def rows_table(rows: list[dict]) -> pa.Table:
    schema = pa.schema([("object_id", pa.string()), ("views", pa.list_(pa.binary()))])
    return pa.Table.from_pylist(rows, schema=schema)


@pytest.mark.parametrize(
    "name, data, kind, reason",
    [(n, d, "no_picture", "view 0: no picture: ") for n, d in NO_PICTURE.items()]
    + [(n, d, "empty_view", "view 0: empty view: no object") for n, d in EMPTY.items()]
    + [(n, d, "empty_view", "view 0: empty view: noise") for n, d in NOISE.items()],
    ids=[*NO_PICTURE, *EMPTY, *NOISE],
)
def test_a_row_of_one_such_view_fails_with_its_reason(name, data, kind, reason):
    (row,) = decode_batch(rows_table([{"object_id": name, "views": [data]}]), CONFIG).to_pylist()
    assert row["status"] == "failed" and row["pixels"] is None, name
    assert row["error"].startswith(reason), row["error"]
    assert error_kind(row["error"]) == kind
    assert row["warning"] is None


CONFIG = DecodeConfig(image_size=64)


def test_bad_views_are_dropped_and_named_and_the_manifest_says_so(tmp_path):
    table = rows_table(
        [
            {"object_id": "mixed", "views": [GOOD_JPEG, NO_PICTURE["cut short"], EMPTY["black"]]},
            {"object_id": "all bad", "views": [EMPTY["white"], NOISE["noise PNG"]]},
            {"object_id": "good", "views": [GOOD_PNG, GOOD_JPEG]},
        ]
    )
    mixed, bad, good = decode_batch(table, CONFIG).to_pylist()
    assert mixed["status"] == "ok" and mixed["error"] is None
    assert (mixed["n_views"], mixed["n_views_given"]) == (1, 3)
    assert np.array_equal(
        np.frombuffer(mixed["pixels"], np.uint8).reshape(64, 64, 3),
        read_model_input(GOOD_JPEG, 64),
    )
    first, second = mixed["warning"].split("; ")
    assert first.startswith("view 1: no picture: ") and second.startswith("view 2: empty view: ")
    assert bad["status"] == "failed" and bad["warning"] is None
    assert bad["error"].startswith("view 0: empty view: no object")
    assert (
        "view 1: empty view: noise" in bad["error"]
        and "(none of 2 views is usable)" in bad["error"]
    )
    assert error_kind(bad["error"]) == "empty_view"
    assert good["status"] == "ok" and good["warning"] is None and good["n_views"] == 2

    # the model stage passes the column through; the sink writes it
    decoded = decode_batch(table, CONFIG)
    ok = [s == "ok" for s in decoded.column("status").to_pylist()]
    grids = [bytes(32768) if o else None for o in ok]
    rows = decoded.drop_columns(["pixels", "voxels"]).append_column(
        "probabilities", pa.array(grids, pa.binary())
    )
    for name, value in (
        ("occupied_voxels", pa.array([0 if o else None for o in ok], pa.int32())),
        ("threshold", pa.array([0.4] * 3)),
        ("model", pa.array(["test"] * 3)),
        ("iou", pa.array([None] * 3, pa.float32())),
    ):
        rows = rows.append_column(name, value)
    counts = write_shard(rows, str(tmp_path))
    manifest = pq.read_table(tmp_path / "manifests" / f"{counts['name']}.parquet")
    assert manifest.schema.field("warning").type == pa.string()
    by_id = {r["object_id"]: r for r in manifest.to_pylist()}
    assert by_id["mixed"]["warning"] == mixed["warning"] and by_id["mixed"]["status"] == "ok"
    assert by_id["good"]["warning"] is None
    assert by_id["all bad"]["error_kind"] == "empty_view"


@pytest.mark.parametrize("after_pixels", [False, True])
def test_a_png_text_bomb_is_named(after_pixels):
    data = text_bomb(after_pixels)
    assert len(data) < 1_000_000
    (row,) = decode_batch(rows_table([{"object_id": "bomb", "views": [data]}]), CONFIG).to_pylist()
    assert row["status"] == "failed"
    assert "decompression bomb" in row["error"], row["error"]
    assert error_kind(row["error"]) == "too_large"
