"""The benchmark's command line and arithmetic. Its speed figures are not
asserted anywhere (the machines are shared); these tests hold its output
contract and the steady-state rate it derives from the job's runs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from jobs import benchmark


def test_decode_benchmark_cli_reports_views_per_second():
    out = subprocess.run(
        [sys.executable, "jobs/benchmark.py", "decode", "--objects", "3", "--runs", "1",
         "--sizes", "64,127", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["objects"] == 3 and result["views"] == 15
    assert result["views_per_s_64px"] > 0 and result["views_per_s_127px"] > 0


def test_model_benchmark_cli_at_another_image_size():
    out = subprocess.run(
        [sys.executable, "jobs/benchmark.py", "model", "--preset", "compact", "--image-size",
         "48", "--views", "2", "--batch", "2", "--warmup", "1", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["preset"] == "compact" and result["image_size"] == 48
    assert result["objects_per_s"] > 0 and result["gflops_per_object"] > 0


def test_train_benchmark_cli_reports_steps_per_second():
    out = subprocess.run(
        [sys.executable, "jobs/benchmark.py", "train", "--preset", "compact", "--image-size",
         "32", "--batch", "3", "--precision", "bf16", "--runs", "5", "--warmup", "1", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["image_size"] == 32 and result["batch"] == 3 and result["precision"] == "bf16"
    assert 3 <= result["views_in_batch"] <= 15
    assert result["steps_per_s"] > 0 and result["device"] == "CPU"


def test_marginal_rate_cancels_fixed_costs(monkeypatch, tmp_path):
    """Runs that cost 20 s fixed + 0.01 s per row give 100 rows/s, whatever the
    fixed cost; the peaks and walls of every run are kept."""
    walls = iter([20.5, 29.0, 21.5, 31.0, 19.0, 30.0])  # scale 1, 10, 1, 10, ...

    def fake_run_job(catalog: Path, output: Path, batch: int, extra: list[str]) -> dict:
        rows = 50 if catalog.name.endswith("x1") else 500
        return {"rows": rows, "wall_s": next(walls), "peak_mib": float(rows),
                "peak_processes": 3, "peak_by_role_mib": {}}  # fmt: skip

    monkeypatch.setattr(benchmark, "run_job", fake_run_job)
    args = argparse.Namespace(
        repeats=3, batch=4, cpus_per_actor=1.0, rows_per_block=8, rows_per_shard=8, model=""
    )
    catalogs = {1: tmp_path / "c-x1", 10: tmp_path / "c-x10"}
    result = benchmark.marginal_rate(catalogs, tmp_path, args)
    # medians: 20.5 and 30.0 s -> 450 extra rows in 9.5 s
    assert result["objects_per_s"] == pytest.approx(450 / 9.5, abs=1e-3)
    assert result["rows"] == [50, 500]
    assert result["wall_s"] == [[20.5, 21.5, 19.0], [29.0, 31.0, 30.0]]
    assert result["peak_mib"] == [50.0, 500.0]


def test_scale_and_scan_benchmark_clis(tmp_path):
    """The catalog-scale benchmark's keys, at a size a test affords."""
    out = subprocess.run(
        [sys.executable, "jobs/benchmark.py", "scale", "--committed", "3000", "--fresh", "20",
         "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("committed", "plan_s", "driver_peak_rss_mib", "decode_ratio", "status_count_s",
                "grid_cold_ms", "grid_cold_bytes", "grids20_s"):  # fmt: skip
        assert key in result, key
    assert result["committed"] == 3000 and result["rows_todo"] == 20
    assert result["status"]["rows_ok"] == 3000 and result["lookup_found"]
    assert 0 < result["grid_cold_bytes"] < 64 * 1024
    out = subprocess.run(
        [sys.executable, "jobs/benchmark.py", "scan", "--files", "30", "--groups", "50",
         "--repeats", "1", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["usable"] == 30 and result["row_groups"] == 50
    assert result["new_many_read_tasks"] == result["new_one_read_tasks"] == 1
    for key in ("new_many_read_s", "new_one_read_s", "new_many_over_one", "arrow_many_over_one"):
        assert result[key] > 0, key


def test_flags_benchmark_counts_good_views_flagged(tmp_path):
    """The false-flag count of the view checks, on a held-out set a test affords."""
    out = subprocess.run(
        [sys.executable, "jobs/benchmark.py", "flags", "--held-out", "2", "--kinds", "",
         "--sizes", "64", "--cache", str(tmp_path), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["held-out@64"]["views"] == 48 and result["held-out@64"]["flagged"] == 0
    assert (
        result["held-out@64"]["min_object_fraction"] > result["thresholds"]["min_object_fraction"]
    )


def test_bad_benchmark_flags_are_refused():
    out = subprocess.run(
        [sys.executable, "jobs/benchmark.py", "pipeline", "--repeats", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "--repeats" in out.stderr


def test_decode_benchmark_times_old_and_new_decode_on_photo_catalogs(tmp_path):
    out = subprocess.run(
        [sys.executable, "jobs/benchmark.py", "decode", "--kinds", "png137,jpeg300",
         "--objects", "2", "--views", "2", "--limit", "3", "--runs", "1", "--sizes", "64",
         "--cache", str(tmp_path), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for kind in ("png137", "jpeg300"):
        timed = result["ms_per_view"][kind]
        assert timed["views_timed"] == 4  # whole rows: 2 views each, at least 3
        assert timed["64"]["old_ms"] > 0 and timed["64"]["new_ms"] > 0
        assert result["decode_ms_per_view"][kind]["64"] == timed["64"]["new_ms"]
    # the catalogs stay cached; the feed benchmark's entry point reads them
    folder = tmp_path / "png137-n2-v2-2-s5"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jpeg300-n2-v2-2-s5", folder.name]
    assert benchmark.decode_ms_per_view(folder, 64, runs=1, limit=2) > 0
    assert benchmark.photo_catalog(tmp_path, "png137", 2, 2) == folder


def test_the_legacy_decode_measured_against_gives_the_renders_pixels():
    """The old path kept in the benchmark is the old path: on the renders it
    agrees bit for bit with the job's (which tests/test_images.py holds to
    read_rgba + to_model_input)."""
    import numpy as np

    import shapes
    from model.images import read_model_input

    for data in shapes.generate_object(5, 1, views=2)["views"]:
        for size in (64, 127):
            np.testing.assert_array_equal(
                benchmark.legacy_model_input(data, size), read_model_input(data, size)
            )
