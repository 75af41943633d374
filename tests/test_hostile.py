"""The catalogs people really have: a fixture of hostile inputs and flags, and
the documented outcome of each (docs/job.md, "Hostile input"). Problems that a
rerun cannot fix end before Ray starts, with exit 2 (flags) or 3 (input,
output), naming the file, column or flag; with --skip-bad-files no good row is
lost behind a bad file; odd but unambiguous input is read as what it is."""

from __future__ import annotations

import io as bytes_io
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from test_job import cli, run_job

import shapes
from pipeline.results import Output, load_grid, read_manifests

SEED = 23


def good_rows(n: int, start: int = 0) -> list[dict]:
    rows = [shapes.generate_object(SEED, start + i, views=2) for i in range(n)]
    return [{"object_id": r["object_id"], "views": r["views"], "category": r["category"]}
            for r in rows]  # fmt: skip


def write(path, table: pa.Table) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = bytes_io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    """A catalog folder of many kinds of file, and the outcome each must have."""
    root = tmp_path_factory.mktemp("hostile") / "catalog"
    good = good_rows(4)
    write(root / "a-good.parquet", pa.Table.from_pylist(good))
    # integer ids: read as their decimal string
    ints = good_rows(2, start=10)
    write(root / "b-int-ids.parquet", pa.table({
        "object_id": pa.array([7, 8], pa.int64()),
        "views": [r["views"] for r in ints],
    }))  # fmt: skip
    # one binary view per row instead of a list
    one = good_rows(1, start=20)[0]
    write(root / "c-one-view.parquet", pa.table({
        "object_id": ["one-view"], "views": pa.array([one["views"][0]], pa.binary()),
    }))  # fmt: skip
    # a Hive-style folder whose name must not replace the file's own column
    sofa = dict(good_rows(1, start=30)[0], object_id="hive-row", category="sofa")
    write(root / "category=chairs" / "d.parquet", pa.Table.from_pylist([sofa]))
    # odd ids: trailing NUL, empty, 10,000 characters; and one too long to keep
    odd_ids = ["ends-in-nul\x00", "", "x" * 10_000, "y" * 20_000]
    odd = good_rows(4, start=40)
    write(root / "e-odd-ids.parquet", pa.table({
        "object_id": odd_ids, "views": [r["views"] for r in odd],
    }))  # fmt: skip
    # a 16-bit gray PNG and an extreme aspect ratio
    gray16 = (np.linspace(0, 65535, 137 * 137).reshape(137, 137)).astype(np.uint16)
    write(root / "f-odd-images.parquet", pa.table({
        "object_id": ["gray16", "sliver"],
        "views": [[png(gray16)], [png(np.full((10, 20000, 3), 200, np.uint8))]],
    }))  # fmt: skip
    # a corrupt page header that the footer does not show: its rows fail, named
    corrupt = root / "i-corrupt-page.parquet"
    write(corrupt, pa.Table.from_pylist(good_rows(3, start=50)))
    data = bytearray(corrupt.read_bytes())
    data[4:36] = b"\xff" * 32  # the first page header, just after the magic
    corrupt.write_bytes(bytes(data))
    # a truncated file and a file that is not Parquet at all
    data = (root / "a-good.parquet").read_bytes()
    (root / "g-truncated.parquet").write_bytes(data[: len(data) // 2])
    (root / "h-not-parquet.parquet").write_bytes(b"id,views\n1,2\n")
    return {
        "url": str(root),
        "ok": [r["object_id"] for r in good]
        + ["7", "8", "one-view", "hive-row", "gray16", *odd_ids[:3]],  # fmt: skip
        # the sliver decodes (within memory), but at the model's scale it is a
        # line a fraction of a pixel high: no object to see
        "failed": {
            odd_ids[3]: "object_id has 20000 characters",
            "sliver": "view 0: empty view: no object",
        },
        "bad_files": ["g-truncated.parquet", "h-not-parquet.parquet"],
        "unreadable_rows": ("i-corrupt-page.parquet", 3),
    }


def test_unreadable_files_stop_the_job_before_any_work_and_are_named(hostile, tmp_path):
    started = time.monotonic()
    result = cli(["--input", hostile["url"], "--output", str(tmp_path / "out")])
    assert result.returncode == 3, result.stderr[-2000:]
    for name in hostile["bad_files"]:
        assert name in result.stderr
    assert "--skip-bad-files" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 60  # before Ray and the model
    assert not (tmp_path / "out" / "manifests").exists()


@pytest.mark.slow
def test_skipping_bad_files_keeps_every_good_row(hostile, tmp_path, ray_local, model_files, capsys):
    output = str(tmp_path / "out")
    args = ["--input", hostile["url"], "--output", output, "--model", model_files[0],
            "--skip-bad-files", "--actors", "2", "--batch-size", "4"]  # fmt: skip
    code, out, err = run_job(args, capsys)
    assert code == 0, err
    for name in hostile["bad_files"]:
        assert name in out  # in the report and the run's record
    assert "running at most 1 actor" in err  # --actors 2 on 2 CPUs: sized down, no hang
    table = read_manifests(output)
    name, count = hostile["unreadable_rows"]
    # the corrupt page is the object_id column's: its rows are named by their row key
    unreadable = [r for r in table.to_pylist() if r["object_id"].startswith("unread:")]
    assert len(unreadable) == count
    assert all(r["status"] == "failed" and name in r["error"] for r in unreadable)
    assert all(r["object_id"] == f"unread:{r['row_key']}" for r in unreadable)
    rows = [r for r in table.to_pylist() if not r["object_id"].startswith("unread:")]
    assert sorted(r["object_id"] for r in rows) == sorted(hostile["ok"] + list(hostile["failed"]))
    for r in rows:
        if r["object_id"] in hostile["failed"]:
            assert r["status"] == "failed"
            assert r["error"].startswith(hostile["failed"][r["object_id"]])
        else:
            assert r["status"] == "ok", r
    by_id = {r["object_id"]: r for r in rows}
    assert by_id["hive-row"]["category"] == "sofa"
    reader = Output(output)
    for object_id in ("ends-in-nul\x00", "", "x" * 10_000, "7"):
        assert reader.grid(object_id).shape == (32, 32, 32)
        assert load_grid(output, object_id).shape == (32, 32, 32)
    summary = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert len(summary["skipped_files"]) == 2


@pytest.mark.parametrize(
    "output, message",
    [
        ("{input}", "is the input"),
        ("{input}/grids", "is inside the input"),
        ("{parent}", "contains the input"),
        ("/", "root of a filesystem"),
    ],
)
def test_outputs_that_would_eat_their_input_are_refused(hostile, output, message):
    parent = os.path.dirname(hostile["url"])
    result = cli(["--input", hostile["url"],
                  "--output", output.format(input=hostile["url"], parent=parent)])  # fmt: skip
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]


def test_bad_columns_and_flags_are_named(tmp_path):
    text_views = tmp_path / "text"
    write(text_views / "p.parquet", pa.table({"object_id": ["a"], "views": [["aGVsbG8="]]}))
    result = cli(["--input", str(text_views), "--output", str(tmp_path / "o")])
    assert result.returncode == 3
    assert "p.parquet" in result.stderr and "'views'" in result.stderr
    assert "column 'views' is list<element: string>, expected list<binary>" in result.stderr
    result = cli(["--input", str(text_views), "--output", str(tmp_path / "o"),
                  "--gpus-per-actor", "-1"])  # fmt: skip
    assert result.returncode == 2 and "--gpus-per-actor must be >= 0" in result.stderr


def test_an_output_holding_another_tools_results_is_refused(tmp_path):
    catalog = tmp_path / "catalog"
    write(catalog / "p.parquet", pa.Table.from_pylist(good_rows(1)))
    spark = tmp_path / "spark-out"
    spark.mkdir()
    (spark / "_SUCCESS").write_bytes(b"")
    (spark / "part-00000-abc.snappy.parquet").write_bytes(b"PAR1")
    result = cli(["--input", str(catalog), "--output", str(spark)])
    assert result.returncode == 3, result.stderr[-2000:]
    assert "not voxray's" in result.stderr and "part-00000-abc.snappy.parquet" in result.stderr


def test_a_missing_bucket_is_found_before_the_model_loads(s3_bucket, tmp_path):
    catalog = tmp_path / "catalog"
    write(catalog / "p.parquet", pa.Table.from_pylist(good_rows(1)))
    started = time.monotonic()
    result = cli(["--input", str(catalog), "--output", "s3://no-such-bucket-voxray/out"])
    assert result.returncode == 3, result.stderr[-2000:]
    assert "no-such-bucket-voxray" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 60
