"""Photo-like catalogs (shapes.photos): the same procedural objects as the
renders, written as the kinds of image real catalogs hold, in the job's input
schema; and what the model is given from them is the same picture."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, JpegImagePlugin

import shapes
from model.images import read_model_input
from shapes.photos import KINDS, write_catalog


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory) -> dict:
    """Every kind, 3 objects of 1-3 views, 2 rows per file."""
    root = tmp_path_factory.mktemp("photos")
    out = {}
    for kind in KINDS:
        write_catalog(root / kind, kind, 3, views=(1, 3), seed=11, rows_per_file=2)
        out[kind] = root / kind
    return out


def rows(folder) -> list[dict]:
    return pq.read_table(folder).to_pylist()


def test_every_kind_holds_the_same_objects_in_the_input_schema(catalogs):
    truth = [shapes.generate_object(11, i, views=3) for i in range(3)]
    counts = None
    for kind, folder in catalogs.items():
        assert sorted(p.name for p in folder.iterdir()) == [
            "part-00000.parquet",
            "part-00001.parquet",
        ]
        table = pq.read_table(folder)
        assert table.schema.names == ["object_id", "category", "views", "voxels"]
        got = table.to_pylist()
        assert [r["object_id"] for r in got] == [t["object_id"] for t in truth], kind
        assert [r["category"] for r in got] == [t["category"] for t in truth], kind
        assert [r["voxels"] for r in got] == [t["voxels"] for t in truth], kind
        n = [len(r["views"]) for r in got]
        assert all(1 <= c <= 3 for c in n) and (counts is None or n == counts), kind
        counts = n
    # png137 is today's renders, byte for byte: the first views of generate_object's
    for row, t in zip(rows(catalogs["png137"]), truth, strict=True):
        assert row["views"] == t["views"][: len(row["views"])]


def test_a_count_range_is_drawn_per_object(tmp_path):
    write_catalog(tmp_path, "png137", 6, views=(1, 24), seed=3)
    counts = [len(r["views"]) for r in rows(tmp_path)]
    assert all(1 <= c <= 24 for c in counts) and len(set(counts)) > 2, counts


@pytest.mark.parametrize("kind, side", [("jpeg300", 300), ("jpeg1024", 1024), ("jpeg2048", 2048)])
def test_jpeg_kinds_are_opaque_camera_like_photos(catalogs, kind, side):
    for row in rows(catalogs[kind]):
        for data in row["views"]:
            image = Image.open(io.BytesIO(data))
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (side, side)
            assert JpegImagePlugin.get_sampling(image) == 2  # 4:2:0
            pixels = np.asarray(image).astype(float)
            corner = pixels[: side // 10, : side // 10]
            # a studio backdrop near the model's background (240), with grain
            assert 230 < corner.mean() < 250 and 0.3 < corner.std() < 6


def test_png1024_is_a_cutout_with_transparency(catalogs):
    for row in rows(catalogs["png1024"]):
        image = Image.open(io.BytesIO(row["views"][0]))
        assert image.format == "PNG" and image.mode == "RGBA" and image.size == (1024, 1024)
        alpha = np.asarray(image)[..., 3]
        assert alpha[0, 0] == 0 and alpha.max() == 255
        assert ((alpha > 0) & (alpha < 255)).any()  # soft edges, as a resized cut-out has


@pytest.mark.parametrize("kind", ["jpeg300", "jpeg1024", "jpeg2048", "png1024"])
def test_the_model_is_given_the_same_picture_from_every_kind(catalogs, kind):
    """The photos' model input against the renders': the same object in the same
    place (only the backdrop's gradient and grain differ)."""
    for ref, row in zip(rows(catalogs["png137"]), rows(catalogs[kind]), strict=True):
        for a, b in zip(ref["views"], row["views"], strict=True):
            x = read_model_input(a, 64).astype(int)
            y = read_model_input(b, 64).astype(int)
            far = np.abs(x - y).max(-1) > 40
            assert far.mean() < 0.01 and np.abs(x - y).mean() < 8, kind


def test_bad_arguments_and_used_folders_are_refused(tmp_path, catalogs):
    with pytest.raises(shapes.DatasetError, match="unknown kind"):
        write_catalog(tmp_path / "a", "gif64", 1)
    with pytest.raises(shapes.DatasetError, match="views"):
        write_catalog(tmp_path / "b", "png137", 1, views=(3, 2))
    with pytest.raises(shapes.DatasetError, match="objects"):
        write_catalog(tmp_path / "c", "png137", 0)
    with pytest.raises(shapes.DatasetError, match="already holds"):
        write_catalog(catalogs["png137"], "png137", 1)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
