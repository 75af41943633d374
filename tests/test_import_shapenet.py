"""ShapeNet importer on a tiny tree the test writes: rows, axis order, and a reason
for every model that is skipped."""

import io
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from shapes.binvox import write_binvox
from shapes.dataset import DatasetError
from shapes.shapenet import import_shapenet

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "jobs" / "import_shapenet.py"
CHAIR, TABLE = "03001627", "04379243"


def png(colour: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (16, 16), (colour, 0, 0, 255)).save(buf, format="PNG")
    return buf.getvalue()


def grid_for(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((32, 32, 32)) < 0.2


def add_model(
    root: Path,
    synset: str,
    model: str,
    views: int = 3,
    *,
    voxels=True,
    metadata=True,
    broken_view=False,
    broken_binvox=False,
    renderings=True,
) -> None:
    rdir = root / "renderings" / synset / model / "rendering"
    if renderings:
        rdir.mkdir(parents=True)
        for k in range(views):
            data = png(10 * k) if not (broken_view and k == 1) else b"\x89PNG truncated"
            (rdir / f"{k:02d}.png").write_bytes(data)
        if metadata:
            lines = [f"{30.0 * k} 25.5 0 0.8 25" for k in range(views)]
            (rdir / "rendering_metadata.txt").write_text("\n".join(lines) + "\n")
    if voxels:
        vdir = root / "voxels" / synset / model
        vdir.mkdir(parents=True)
        data = write_binvox(grid_for(len(model)))
        (vdir / "model.binvox").write_bytes(data[:-3] if broken_binvox else data)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    add_model(tmp_path, CHAIR, "good")
    add_model(tmp_path, TABLE, "goodtable", views=2)
    add_model(tmp_path, CHAIR, "novox", voxels=False)
    add_model(tmp_path, CHAIR, "badvox", broken_binvox=True)
    add_model(tmp_path, CHAIR, "badview", broken_view=True)
    add_model(tmp_path, CHAIR, "nometa", metadata=False)
    add_model(tmp_path, CHAIR, "onlyvox", renderings=False)
    add_model(tmp_path, "99999999", "alien")
    return tmp_path


def run(tree: Path, output: str, *extra: str) -> subprocess.CompletedProcess:
    args = ["--renderings", str(tree / "renderings"), "--voxels", str(tree / "voxels")]
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--output", output, *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_import_rows_and_skips(tree):
    report = import_shapenet(str(tree / "renderings"), str(tree / "voxels"), str(tree / "out"))
    assert report.rows == 2 and report.files == 1
    reasons = dict(report.skipped)
    assert reasons[f"{CHAIR}/novox"] == "no model.binvox"
    assert reasons[f"{CHAIR}/badvox"].startswith("broken model.binvox")
    assert reasons[f"{CHAIR}/badview"].startswith("broken view: 01.png")
    assert reasons[f"{CHAIR}/nometa"] == "no rendering_metadata.txt"
    assert reasons[f"{CHAIR}/onlyvox"] == "no rendering directory"
    assert reasons["99999999/alien"].startswith("unknown synset")
    assert len(report.skipped) == 6

    table = pq.read_table(tree / "out")
    rows = {r["object_id"]: r for r in table.to_pylist()}
    chair = rows[f"shapenet-{CHAIR}-good"]
    assert (
        chair["category"] == "chair" and rows[f"shapenet-{TABLE}-goodtable"]["category"] == "table"
    )
    assert chair["views"] == [png(0), png(10), png(20)]  # bytes copied as they are
    assert chair["cameras"][1] == pytest.approx(
        {"azimuth": 30.0, "elevation": 25.5, "in_plane_rotation": 0.0, "distance": 0.8, "fov": 25.0}
    )
    grid = np.unpackbits(np.frombuffer(chair["voxels"], np.uint8)).reshape(32, 32, 32)
    np.testing.assert_array_equal(grid.astype(bool), grid_for(len("good")))


def test_categories_filter(tree):
    report = import_shapenet(
        str(tree / "renderings"), str(tree / "voxels"), str(tree / "out"), ["table"]
    )
    assert report.rows == 1 and report.not_selected == 6
    assert [m for m, _ in report.skipped] == ["99999999/alien"]


def test_s3_output(tree, s3_bucket):
    report = import_shapenet(
        str(tree / "renderings"), str(tree / "voxels"), f"s3://{s3_bucket}/sn", rows_per_file=1
    )
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    assert report.files == 2 and len(fs.ls(f"{s3_bucket}/sn")) == 2


def test_cli_reports_every_skip(tree):
    res = run(tree, str(tree / "out"))
    assert res.returncode == 0, res.stderr
    assert (
        res.stderr.count("skipped ") == 6 and "03001627/badvox: broken model.binvox" in res.stderr
    )
    assert "imported 2 objects" in res.stdout and "skipped 6" in res.stdout


def test_cli_bad_input_exits_2(tree):
    (tree / "full").mkdir()
    (tree / "full" / "keep.txt").write_text("keep")
    assert run(tree, str(tree / "full")).returncode == 2
    assert (tree / "full" / "keep.txt").read_text() == "keep"
    res = run(tree, str(tree / "o2"), "--categories", "chairs")
    assert res.returncode == 2 and "unknown category chairs" in res.stderr
    with pytest.raises(DatasetError, match="not a directory"):
        import_shapenet(str(tree / "nope"), str(tree / "voxels"), str(tree / "o3"))
    assert not (tree / "o2").exists() and not (tree / "o3").exists()
