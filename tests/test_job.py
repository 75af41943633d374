"""The job on a real local Ray with a real S3 endpoint (moto server on loopback):
every input row accounted once, bad rows failing alone, resume after a crash,
the failed-fraction gate, and errors that say what to do without a secret."""

from __future__ import annotations

import io as bytes_io
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import REPO, TEST_KEY_ID, TEST_SECRET, free_port
from pipeline import io
from pipeline.results import load_grid, read_manifests
from pipeline.sink import write_shard

JOB = str(REPO / "jobs" / "reconstruct.py")
SEED = 7


# --- test data -------------------------------------------------------------------------


def _encode(array: np.ndarray, mode: str, fmt: str) -> bytes:
    buffer = bytes_io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


def _bomb() -> bytes:
    """A PNG whose header claims 9000x9000 pixels, with almost no data."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", 9000, 9000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# object_id -> the start of its manifest error (None: ok)
BAD_ROWS = {
    "bad-empty-views": "views is empty",
    "bad-null-views": "views is null",
    "bad-zero-byte": "view 1: empty image",
    "bad-truncated": "view 0: truncated",
    "bad-bomb": "view 0: image header claims",
    "bad-voxels": "voxels has 100 bytes",
    None: "object_id is null",
}


def make_catalog(url: str, good: int = 6, views: int = 3, files: int = 2) -> dict:
    """Write a catalog with good rows (procedural objects, ground truth included),
    gray/RGB/JPEG variants, a row with more views than --max-views, and every bad
    row of the contract. Returns {object_id: expected error prefix or None}."""
    import shapes

    rows, expected = [], {}
    for i in range(good):
        row = shapes.generate_object(SEED, i, views=views)
        row["sku"] = i
        rows.append(row)
        expected[row["object_id"]] = None
    base = shapes.generate_object(SEED, 100, views=7)
    rgba = [np.asarray(Image.open(bytes_io.BytesIO(v)).convert("RGBA")) for v in base["views"]]
    variants = {
        "gray-jpeg": [_encode(a, "L", "JPEG") for a in rgba[:2]],
        "rgb-png": [_encode(a, "RGB", "PNG") for a in rgba[:2]],
        "seven-views": base["views"],
    }
    for k, (object_id, encoded) in enumerate(variants.items()):
        rows.append(dict(base, object_id=object_id, views=encoded, sku=100 + k))
        expected[object_id] = None
    good_view = base["views"][0]
    bad_views = {
        "bad-empty-views": [],
        "bad-null-views": None,
        "bad-zero-byte": [good_view, b""],
        "bad-truncated": [good_view[: len(good_view) // 3]],
        "bad-bomb": [_bomb()],
        "bad-voxels": [good_view],
        None: [good_view],
    }
    for k, (object_id, encoded) in enumerate(bad_views.items()):
        voxels = b"\x01" * 100 if object_id == "bad-voxels" else None
        rows.append(dict(base, object_id=object_id, views=encoded, voxels=voxels, sku=200 + k))
        expected[object_id] = BAD_ROWS[object_id]
    table = pa.Table.from_pylist(rows)
    # good and bad rows are interleaved so that bad rows share batches with good ones
    order = np.random.default_rng(SEED).permutation(table.num_rows)
    table = table.take(order)
    write_catalog(url, table, files)
    return expected


def write_catalog(url: str, table: pa.Table, files: int = 4) -> None:
    """`table` as `files` whole Parquet files under `url`."""
    fs, root = fsspec.core.url_to_fs(url, **io.storage_options(url))
    fs.makedirs(root, exist_ok=True)
    per_file = -(-table.num_rows // files)
    for f in range(files):
        buffer = bytes_io.BytesIO()
        pq.write_table(table.slice(f * per_file, per_file), buffer)
        fs.pipe_file(f"{root}/part-{f:05d}.parquet", buffer.getvalue())


def run_job(args: list[str], capsys) -> tuple[int, str, str]:
    from jobs.reconstruct import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_every_row_once(output: str, expected: dict) -> pa.Table:
    """Each input row has exactly one manifest row with the expected outcome."""
    table = read_manifests(output)
    ids = table.column("object_id").to_pylist()
    assert sorted(ids, key=str) == sorted(expected, key=str)  # once each, null included
    for row in table.to_pylist():
        reason = expected[row["object_id"]]
        if reason is None:
            assert row["status"] == "ok", row
            assert row["error"] is None and row["shard"].startswith("shards/")
            assert row["index"] >= 0 and 0 <= row["occupied_voxels"] <= 32768
        else:
            assert row["status"] == "failed" and row["error"].startswith(reason), row
            assert row["shard"] is None and row["index"] is None
    return table


# --- tests -----------------------------------------------------------------------------


def test_s3_run_failed_fraction_then_resume(ray_local, s3_bucket, model_files, capsys):
    tf_before = "tensorflow" in sys.modules
    catalog, output = f"s3://{s3_bucket}/catalog", f"s3://{s3_bucket}/grids"
    expected = make_catalog(catalog)
    args = [
        "--input", catalog, "--output", output, "--model", model_files[0],
        "--batch-size", "4", "--rows-per-shard", "4", "--max-views", "5",
    ]  # fmt: skip

    # 7 of 16 rows are bad: over a 10% limit the job exits 4 and vouches for nothing
    code, out, err = run_job([*args, "--max-failed-fraction", "0.1"], capsys)
    assert code == 4, err
    assert "--max-failed-fraction" in err
    assert not io.exists(io.join(output, "_SUCCESS"))
    table = check_every_row_once(output, expected)
    assert len(set(table.column("model").to_pylist())) == 1

    rows = {r["object_id"]: r for r in table.to_pylist()}
    assert rows["seven-views"]["n_views"] == 5 and rows["seven-views"]["n_views_given"] == 7
    assert rows["gray-jpeg"]["n_views"] == 2
    for object_id, row in rows.items():
        if expected[object_id] is None:  # every ok row has ground truth here
            assert row["iou"] is not None and 0.0 <= row["iou"] <= 1.0
            grid = load_grid(output, row)
            assert grid.shape == (32, 32, 32) and grid.dtype == np.uint8
            assert int((grid >= row["threshold"] * 255).sum()) == row["occupied_voxels"]
            assert row["category"] and row["sku"] is not None  # carried columns
    assert "cameras" not in table.column_names  # nested columns are not carried
    assert pc.min(table["threshold"]).as_py() == pytest.approx(0.4)

    # a crash: two committed manifests lost, their shards left behind
    manifests = io.list_files(io.join(output, "manifests"), ".parquet")
    assert len(manifests) >= 3
    lost = read_manifests(output).filter(
        pc.is_in(
            read_manifests(output)["row_key"],
            value_set=pa.concat_arrays(
                [
                    pq.read_table(bytes_io.BytesIO(io.read_bytes(m)))["row_key"].combine_chunks()
                    for m in manifests[:2]
                ]
            ),
        )
    )
    for m in manifests[:2]:
        io.remove(m)
    before = {r["object_id"]: load_grid(output, r) for r in rows.values() if r["status"] == "ok"}

    # rerunning the same command (secrets passed explicitly this time) resumes
    options = json.dumps({"key": TEST_KEY_ID, "secret": TEST_SECRET})
    code, out, err = run_job([*args, "--storage-options", options], capsys)
    assert code == 0, err
    summary = json.loads(io.read_bytes(io.join(output, "_SUCCESS")))
    assert summary["rows_skipped"] == len(expected) - lost.num_rows
    assert summary["rows_ok"] + summary["rows_failed"] == lost.num_rows
    assert summary["rows_total"] == len(expected)
    assert summary["output_rows_failed"] == len(BAD_ROWS)
    assert summary["model"] == table["model"][0].as_py()
    for key in ("objects_per_s", "wall_s", "arguments", "versions"):
        assert key in summary
    assert summary["versions"]["ray"] and summary["versions"]["voxray"]
    assert summary["arguments"]["storage_options"]["secret"] == "***"
    for text in (out, err, json.dumps(summary)):
        assert TEST_SECRET not in text and TEST_KEY_ID not in text
    assert f"skipped (already committed) {summary['rows_skipped']}" in out
    assert output in out

    final = check_every_row_once(output, expected)
    for row in final.to_pylist():
        if row["status"] == "ok":  # same weights, same grid (to rounding)
            diff = np.abs(load_grid(output, row).astype(int) - before[row["object_id"]])
            assert diff.max() <= 1
    if not tf_before:
        assert "tensorflow" not in sys.modules  # the driver never imports TensorFlow


def test_local_limit_and_autoscaling_pool(ray_local, tmp_path, model_files, capsys):
    catalog, output = str(tmp_path / "catalog"), str(tmp_path / "grids")
    make_catalog(catalog, good=6, files=1)
    args = ["--input", catalog, "--output", output, "--model", model_files[0]]
    code, out, err = run_job(
        [*args, "--limit", "5", "--actors", "1,2", "--batch-size", "2"], capsys
    )
    assert code == 0, err
    assert read_manifests(output).num_rows == 5
    summary = json.loads(Path(output, "_SUCCESS").read_text())
    assert summary["rows_total"] == 5 and summary["arguments"]["actors"] == [1, 2]


def test_output_of_another_model_is_refused(ray_local, tmp_path, model_files, capsys):
    output = str(tmp_path / "grids")
    catalog = str(tmp_path / "catalog")
    make_catalog(catalog, good=1, files=1)
    # an output committed by some other weights
    other = pa.table(
        {
            "row_key": ["x"],
            "object_id": ["x"],
            "n_views": pa.array([None], pa.int32()),
            "n_views_given": pa.array([0], pa.int32()),
            "status": ["failed"],
            "error": ["views is empty"],
            "probabilities": pa.array([None], pa.binary()),
            "occupied_voxels": pa.array([None], pa.int32()),
            "iou": pa.array([None], pa.float32()),
            "threshold": pa.array([0.4], pa.float32()),
            "model": ["compact-someoneelse"],
        }
    )
    write_shard(other, output)
    code, out, err = run_job(
        ["--input", catalog, "--output", output, "--model", model_files[1]], capsys
    )
    assert code == 3
    assert "already holds grids from model compact-someoneelse" in err
    assert "new --output" in err
    assert read_manifests(output).num_rows == 1  # nothing added


def cli(
    args: list[str], env_update: dict | None = None, drop: tuple = ()
) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_update or {})
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, JOB, *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_help_reads_well():
    result = cli(["--help"])
    assert result.returncode == 0
    for option in (
        "--input", "--output", "--model", "--batch-size", "--actors", "--gpus-per-actor",
        "--cpus-per-actor", "--max-views", "--threshold", "--max-failed-fraction",
        "--storage-options", "--limit", "AWS_ENDPOINT_URL", "Exit codes",
    ):  # fmt: skip
        assert option in result.stdout, option
    bad = cli(["--input", "x"])
    assert bad.returncode == 2 and "--output" in bad.stderr
    bad = cli(["--input", "x", "--output", "y", "--actors", "3,1"])
    assert bad.returncode == 2 and "MIN,MAX" in bad.stderr


def test_setup_errors_say_what_to_do(s3_bucket, tmp_path):
    # a missing input
    result = cli(["--input", f"s3://{s3_bucket}/nothing", "--output", f"s3://{s3_bucket}/o"])
    assert result.returncode == 3
    assert "does not exist" in result.stderr and f"s3://{s3_bucket}/nothing" in result.stderr

    # missing credentials
    result = cli(
        ["--input", f"s3://{s3_bucket}/in", "--output", f"s3://{s3_bucket}/o"],
        env_update={
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true",
        },
        drop=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"),
    )
    assert result.returncode == 3
    assert "no S3 credentials" in result.stderr and "AWS_ACCESS_KEY_ID" in result.stderr

    # an unreachable endpoint; the secret given on the command line never shows
    endpoint = f"http://127.0.0.1:{free_port()}"
    options = {
        "key": TEST_KEY_ID,
        "secret": TEST_SECRET,
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    result = cli(
        ["--input", f"s3://{s3_bucket}/in", "--output", f"s3://{s3_bucket}/o",
         "--storage-options", json.dumps(options)],
        env_update={"AWS_ENDPOINT_URL": endpoint},
    )  # fmt: skip
    assert result.returncode == 3
    assert "unreachable" in result.stderr and endpoint in result.stderr
    assert TEST_SECRET not in result.stderr + result.stdout
    assert TEST_KEY_ID not in result.stderr + result.stdout

    # a missing model file
    catalog = str(tmp_path / "catalog")
    make_catalog(catalog, good=1, files=1)
    result = cli(
        ["--input", catalog, "--output", str(tmp_path / "o"), "--model", "/no/model.keras"]
    )
    assert result.returncode == 3 and "does not exist" in result.stderr


@pytest.mark.slow
def test_demo_runs_with_no_arguments(demo_run):
    """The README's first command (run once per session by the ``demo_run``
    fixture, over a _SUCCESS of other weights). Needs the shipped weights."""
    # An earlier demo run with other weights (an older voxray) must not block it.
    demo = REPO / "outputs" / "demo"
    result = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "holds grids of other weights; starting it afresh" in result.stdout
    assert "outputs/demo" in result.stdout
    done = json.loads((demo / "_SUCCESS").read_text())
    assert done["model"].startswith("compact-") and done["model"] != "compact-000000000000"
    assert done["rows_ok"] == 48 and done["rows_skipped"] == 0

    # the README's "Reading the output" example runs on what the demo wrote
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Reading the output") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n", 10)]
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        namespace: dict = {}
        exec(compile(code, "README.md, Reading the output", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert namespace["grid"].shape == (32, 32, 32) and namespace["table"].num_rows == 48
    assert 0 < namespace["worst"].num_rows <= 20


def test_row_byte_limit_refuses_before_decoding():
    from pipeline.decode import DecodeConfig, DecodeError, decode_views

    pixels = np.full((40, 40, 3), 200, np.uint8)
    pixels[10:30, 10:30] = 60  # an object: a uniform view would be refused as empty
    view = _encode(pixels, "RGB", "PNG")
    config = DecodeConfig(image_size=16, max_row_bytes=2 * len(view))
    assert decode_views([view, view], config)[0].shape == (2, 16, 16, 3)
    # a row over the limit fails whole, naming the limit, without decoding a view
    with pytest.raises(DecodeError, match="encoded bytes, over the limit"):
        decode_views([view, view, b"not an image"], config)


def test_workers_get_the_memory_settings_and_the_users_own_win():
    """cluster.connect hands WORKER_ENV and the quiet settings to every worker of
    a local Ray; a variable the user already set (TF_CPP_MIN_LOG_LEVEL too) is
    left as the user set it, and TensorFlow's start-up lines stay hidden."""
    script = f"""
import os, sys, json
sys.path.insert(0, {str(REPO)!r})
import ray
from pipeline import cluster
cluster.connect()
names = sorted({{**cluster.WORKER_ENV, **cluster.QUIET_ENV}})
seen = ray.get(ray.remote(num_cpus=0)(lambda: {{k: os.environ.get(k) for k in names}}).remote())
print(json.dumps(seen))
cluster.leave(0)
"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(MALLOC_ARENA_MAX="4", TF_CPP_MIN_LOG_LEVEL="1")
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    from pipeline.cluster import WORKER_ENV

    assert seen == dict(
        WORKER_ENV, MALLOC_ARENA_MAX="4", TF_CPP_MIN_LOG_LEVEL="1", VOXRAY_QUIET_TF="1"
    )


def test_repeated_ids_are_separate_rows_through_a_resume(ray_local, tmp_path, model_files, capsys):
    """Two rows with one object_id (in one file and across files) are two rows:
    each gets its manifest row and grid, and a run stopped part-way (here by
    --limit) and then resumed neither drops nor repeats either."""
    import shapes

    objects = [shapes.generate_object(SEED, 300 + i, views=2) for i in range(4)]
    rows = [{"object_id": o["object_id"], "views": o["views"]} for o in objects]
    first = rows + [dict(rows[0], views=rows[1]["views"])]  # rows[0]'s id twice in one file
    second = [rows[0], rows[2]]  # and again in another file
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    pq.write_table(pa.Table.from_pylist(first), catalog / "a.parquet")
    pq.write_table(pa.Table.from_pylist(second), catalog / "b.parquet")
    expected = sorted(r["object_id"] for r in first + second)
    output = str(tmp_path / "out")
    args = ["--input", str(catalog), "--output", output, "--model", model_files[0]]
    code, _, err = run_job([*args, "--limit", "3", "--rows-per-shard", "2"], capsys)
    assert code == 0, err
    assert read_manifests(output).num_rows == 3
    code, out, err = run_job(args, capsys)
    assert code == 0, err
    table = read_manifests(output)
    assert sorted(table.column("object_id").to_pylist()) == expected  # 3 rows of rows[0]'s id
    assert len(set(table.column("row_key").to_pylist())) == len(expected)
    assert "skipped (already committed) 3" in out
