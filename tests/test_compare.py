"""Comparing two runs: per-object IoU and occupancy changes paired by row
identity (outputs of one catalog, repeated ids included) or by object_id
across catalogs (refused, naming them, where ids repeat); the paired sheet and
the before/after summary; and two real runs of the job with different weights."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from test_results import build_demo, grids_of, random_object, shard_rows

from jobs import preview as preview_job
from model import voxels
from pipeline import preview
from pipeline.results import Output
from pipeline.sink import write_shard


def two_runs(tmp_path) -> tuple[str, str, dict]:
    """Two outputs of one catalog (same row keys), the second with other grids
    and a higher threshold; one id repeated, one row failed only in the first."""
    rng = np.random.default_rng(4)
    ids = ["a", "b", "c", "d", "a"]
    keys = pa.array([f"catalog-0:{k}" for k in range(len(ids))])
    truths, grids = zip(*(random_object(rng, 0.1) for _ in ids), strict=True)
    better = [voxels.quantize(t * 0.9 + 0.05) for t in truths]  # near the truth
    urls, ious = [], {}
    for name, stored, threshold, status in (
        ("a", list(grids), 0.4, ["ok", "ok", "failed", "ok", "ok"]),
        ("b", better, 0.5, ["ok"] * 5),
    ):
        iou = [
            float(voxels.iou(voxels.occupied(g, threshold), t)) if s == "ok" else None
            for g, t, s in zip(stored, truths, status, strict=True)
        ]
        ious[name] = iou
        rows = shard_rows(ids, stored, status, iou, threshold, category=["x", "y", "x", "y", "x"])
        url = str(tmp_path / name)
        write_shard(rows.set_column(0, "row_key", keys), url)
        urls.append(url)
    return urls[0], urls[1], ious


def test_pairs_by_row_identity_with_deltas_largest_first(tmp_path):
    a, b, ious = two_runs(tmp_path)
    pairs = Output(a).compare(Output(b))
    assert pairs.num_rows == 5  # "a" twice: two rows, each paired with its own
    rows = pairs.to_pylist()
    assert sorted(r["row_key"] for r in rows) == [f"catalog-0:{k}" for k in range(5)]
    assert all(r["row_key"] == r["row_key_b"] for r in rows)
    for r in rows:
        k = int(r["row_key"].split(":")[1])
        assert r["iou_b"] == pytest.approx(ious["b"][k])
        if ious["a"][k] is None:
            assert r["status_a"] == "failed" and r["iou_delta"] is None
        else:
            assert r["iou_delta"] == pytest.approx(ious["b"][k] - ious["a"][k], abs=1e-6)
        assert (r["threshold_a"], r["threshold_b"]) == (0.4, 0.5)
    changes = [abs(r["iou_delta"]) for r in rows if r["iou_delta"] is not None]
    assert changes == sorted(changes, reverse=True) and rows[-1]["iou_delta"] is None


def test_pairs_by_object_id_across_catalogs_only_when_ids_are_unique(tmp_path):
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    write_shard(shard_rows(["p", "q", "r"], grids_of(1, 3), iou=[0.5, 0.6, 0.7]), first)
    write_shard(shard_rows(["q", "r", "s"], grids_of(2, 3), iou=[0.9, 0.1, 0.3]), second)
    pairs = Output(first).compare(Output(second))  # no shared row key: by object_id
    assert pairs.column("object_id").to_pylist() == ["r", "q"]  # |-0.6| before |+0.3|
    assert pairs.column("iou_delta").to_pylist() == pytest.approx([-0.6, 0.3])
    # repeated ids cannot be paired across catalogs: refused, naming them
    demo = str(tmp_path / "demo")
    build_demo(demo, str(tmp_path / "catalog"))
    with pytest.raises(ValueError, match="'proc-0-0000040' has 2 rows"):
        Output(demo).compare(Output(first))
    with pytest.raises(ValueError, match="no object in common"):
        Output(second).compare(Output(str(tmp_path / "empty")))


def picture(path) -> np.ndarray:
    return np.asarray(Image.open(BytesIO(path.read_bytes())).convert("RGB"))


def test_command_line_sheet_and_summary(tmp_path, capsys):
    a, b, _ = two_runs(tmp_path)
    sheet, summary = tmp_path / "changed.png", tmp_path / "summary.png"
    common = ["--output", a, "--compare", b, "--cell", "64"]
    assert preview_job.main([*common, "--out", str(sheet)]) == 0
    assert picture(sheet).shape == (2 * preview.HEADER + 5 * 64, preview.LABEL_WIDTH + 2 * 64, 3)
    assert preview_job.main([*common, "--limit", "2", "--out", str(sheet)]) == 0
    assert picture(sheet).shape[0] == 2 * preview.HEADER + 2 * 64
    assert preview_job.main([*common, "--category", "y", "--summary", "--out", str(summary)]) == 0
    assert picture(summary).shape == (520, 1700, 3)
    printed = capsys.readouterr().out
    assert "the 2 of 5 objects that changed most" in printed
    assert "summary of 2 objects in both" in printed
    demo = str(tmp_path / "demo")
    build_demo(demo, str(tmp_path / "catalog"))
    assert preview_job.main(["--output", demo, "--compare", a, "--out", str(sheet)]) == 2
    assert "cannot pair" in capsys.readouterr().err


@pytest.mark.slow
def test_two_real_runs_with_other_weights(ray_local, tmp_path, model_files, capsys):
    """The job on one catalog with two sets of weights: every row pairs with its
    own, the grids differ, failed rows carry their kinds in both; the command
    draws the paired sheet and the summary."""
    from test_job import make_catalog, run_job

    catalog = str(tmp_path / "catalog")
    expected = make_catalog(catalog, good=4)
    outputs = [str(tmp_path / "a"), str(tmp_path / "b")]
    for output, weights in zip(outputs, model_files, strict=True):
        code, _, err = run_job(["--input", catalog, "--output", output, "--model", weights], capsys)
        assert code == 0, err
    a, b = Output(outputs[0]), Output(outputs[1])
    pairs = a.compare(b)
    assert pairs.num_rows == len(expected)
    assert pairs.column("row_key").to_pylist() == pairs.column("row_key_b").to_pylist()
    ok = pairs.filter(pa.compute.equal(pairs["status_a"], "ok"))
    assert ok.num_rows == sum(reason is None for reason in expected.values())
    assert any(d != 0 for d in ok.column("occupied_delta").to_pylist())  # other weights
    kinds = a.manifests(["object_id", "error_kind"]).to_pylist()
    assert {r["object_id"]: r["error_kind"] for r in kinds}["bad-truncated"] == "truncated_image"
    assert {r["error_kind"] for r in kinds} >= {None, "empty_views", "too_large", "bad_voxels"}
    sheet, summary = tmp_path / "changed.png", tmp_path / "summary.png"
    common = ["--output", outputs[0], "--compare", outputs[1]]
    assert preview_job.main([*common, "--limit", "3", "--out", str(sheet)]) == 0
    assert preview_job.main([*common, "--summary", "--out", str(summary)]) == 0
    assert picture(sheet).shape[0] == 2 * preview.HEADER + 3 * 128
