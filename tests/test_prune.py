"""Repeated work made visible and stale rows dropped (issue 19, item 4): the
job counts object ids with several rows (and those from different input
files) and rows of input files that are gone; ``jobs/prune.py`` lists and
drops the latter, holding the lease, setting files aside, safe to stop.

Job runs are real (the ``ray_local`` Ray, the stand-in device); the catalog's
files are written, deleted and the prune killed by pid for real, on local
disk and on the moto S3 server.
"""

from __future__ import annotations

import io as bytes_io
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from test_job import run_job

from conftest import REPO
from pipeline import io, repeats, report, verify
from pipeline.layout import MANIFESTS, REJECTED, RUNS
from pipeline.results import Output, read_manifests

SEED = 19
STAND_IN = ["--stand-in", "latency_ms=0"]


def objects(first: int, n: int) -> list[dict]:
    import shapes

    return [
        {"object_id": o["object_id"], "views": o["views"]}
        for o in (shapes.generate_object(SEED, first + i, views=2) for i in range(n))
    ]


def write_file(url: str, rows: list[dict]) -> None:
    buffer = bytes_io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    io.write_bytes(url, buffer.getvalue(), io.storage_options(url))


def job(catalog: str, output: str, capsys, *extra: str) -> tuple[int, str, str]:
    return run_job(["--input", catalog, "--output", output, *STAND_IN, *extra], capsys)


def prune_cli(catalog: str, output: str, capsys, *extra: str) -> tuple[int, str, str]:
    from jobs.prune import main

    code = main(["--input", catalog, "--output", output, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def success(output: str) -> dict:
    return json.loads(io.read_bytes(io.join(output, "_SUCCESS"), io.storage_options(output)))


def newest_record(output: str) -> dict:
    urls = io.list_files(io.join(output, RUNS), ".json", io.storage_options(output))
    return json.loads(io.read_bytes(urls[-1], io.storage_options(output)))


def manifest_names(output: str) -> list[str]:
    urls = io.list_files(io.join(output, MANIFESTS), ".parquet", io.storage_options(output))
    return [u.rsplit("/", 1)[-1] for u in urls]


# --- the rule ----------------------------------------------------------------------------


def test_a_fragment_is_stale_when_neither_its_name_nor_its_content_is_current(tmp_path):
    here, gone = str(tmp_path / "a.parquet"), str(tmp_path / "gone.parquet")
    content = "0123456789abcdef" * 2
    current = repeats.CurrentInput.of([here], [content])
    name, other = repeats.name_part(here), repeats.name_part(gone)
    # another spelling of the same file is the same name part
    assert repeats.name_part(str(tmp_path / "." / "x" / ".." / "a.parquet")) == name
    assert current.holds(f"{name}-{'f' * 16}-0")  # by name (its content changed: refused elsewhere)
    assert current.holds(f"{other}-{content[:16]}-3")  # by content: renamed or moved
    assert not current.holds(f"{other}-{'f' * 16}-0")  # neither: stale
    # a legacy key's content part (8 hex of size and mtime) is matched by name only
    assert current.holds(f"{name}-89abcdef-0")
    assert not current.holds(f"{other}-{content[:8]}-0")
    found = repeats.stale_rows(
        {f"{name}-{'f' * 16}-0": [[0, 5]], f"{other}-12345678-1": [[0, 2], [4, 7]]}, current
    )
    assert found.rows == 5 and found.files == {other: [f"{other}-12345678-1"]}


def test_repeated_ids_are_counted_from_the_index_by_file():
    keys = {"a": "aaaaaaaaaaaa-0123456789abcdef-0", "b": "bbbbbbbbbbbb-0123456789abcdef-0"}
    table = pa.table(
        {
            "object_id": ["x", "x", "y", "z", "z", "z", None, None, "w"],
            "row_key": [
                f"{keys['a']}:0",
                f"{keys['a']}:1",  # x twice in one file
                f"{keys['a']}:2",
                f"{keys['a']}:3",
                f"{keys['b']}:0",  # z in two files
                f"{keys['b']}:1",
                f"{keys['a']}:4",  # null ids (unreadable rows) repeat nothing
                f"{keys['a']}:5",
                f"{keys['b']}:2",
            ],
        }
    )
    counted = repeats.repeated_ids_in(table)
    assert (counted.ids, counted.across_files, counted.rows) == (2, 1, 5)


def test_id_hashes_agree_whatever_the_lengths_around_them():
    """Ids of one length are hashed column by column, mixed lengths byte by
    byte: the same id gets the same hash either way, in any chunk."""
    fixed = pa.chunked_array([pa.array(["ab", "ba", "cd"])])
    mixed = pa.chunked_array([pa.array(["x", None, "ab"]), pa.array(["", "ba", "q" * 5000])])
    a, b = repeats._hash_strings(fixed), repeats._hash_strings(mixed)
    assert a[0] == b[2] and a[1] == b[4] and len(set(a.tolist())) == 3
    assert len(set(b.tolist())) == 6


def test_of_records_that_started_in_the_same_second_the_newer_generation_counts(tmp_path):
    from pipeline import summary

    runs = tmp_path / "out" / RUNS
    runs.mkdir(parents=True)
    for name, generation, stale in (("00000000", 3, 0), ("ffffffff", 2, 4), ("aaaaaaaa", 1, 9)):
        record = {"generation": generation, "rows_stale": stale}
        stamp = "2026-12-02T130000Z" if generation > 1 else "2026-12-02T125959Z"
        (runs / f"{stamp}-{name}.json").write_text(json.dumps(record))
    assert summary.last_record(str(tmp_path / "out"), None, "rows_stale")["rows_stale"] == 0


# --- the job's figures -------------------------------------------------------------------


def test_the_job_reports_repeated_ids_and_warns_when_they_grow(ray_local, tmp_path, capsys):
    rows = objects(0, 4)
    catalog = tmp_path / "catalog"
    write_file(str(catalog / "a.parquet"), [*rows[:3], rows[0]])  # rows[0] twice in a
    write_file(str(catalog / "b.parquet"), [rows[1], rows[3]])  # rows[1] in a and b
    output = str(tmp_path / "out")
    code, out, err = job(str(catalog), output, capsys)
    assert code == 0, err
    figures = {k: success(output)[k] for k in ("duplicate_ids", "duplicate_ids_across_files")}
    assert figures == {"duplicate_ids": 2, "duplicate_ids_across_files": 1}
    assert newest_record(output)["duplicate_ids"] == 2  # the run record says it too
    assert "repeated  2 object_id(s) have more than one row (4 rows); 1 of them" in out
    assert success(output)["duplicate_ids_grew_by"] == 2  # from an empty output
    assert success(output)["rows_stale"] == 0

    write_file(str(catalog / "c.parquet"), [rows[2]])  # appended again, in a new file
    code, out, err = job(str(catalog), output, capsys)
    assert code == 0, err
    said = success(output)
    assert (said["rows_ok"], said["rows_skipped"], said["output_rows_ok"]) == (1, 6, 7)  # only c
    assert (said["duplicate_ids"], said["duplicate_ids_across_files"]) == (3, 2)
    assert said["duplicate_ids_grew_by"] == 1
    assert "warning: 1 more object_id(s) have more than one row than before this run" in out
    status = Output(output).status()
    assert (status["duplicate_ids"], status["duplicate_ids_across_files"]) == (3, 2)

    code, out, err = job(str(catalog), output, capsys)  # nothing to do: no growth, no warning
    assert code == 0, err
    assert "nothing to do" in out and "warning" not in out
    assert success(output)["duplicate_ids"] == 3


# --- stale rows and prune ----------------------------------------------------------------


def test_a_deleted_file_is_counted_stale_listed_and_pruned_on_s3(ray_local, s3_bucket, capsys):
    catalog, output = f"s3://{s3_bucket}/catalog", f"s3://{s3_bucket}/out"
    files = {"a": objects(0, 3), "b": objects(3, 4), "c": objects(7, 3)}
    for name, rows in files.items():
        write_file(f"{catalog}/{name}.parquet", rows)
    code, _, err = job(catalog, output, capsys, "--rows-per-shard", "4")
    assert code == 0, err
    assert success(output)["rows_stale"] == 0
    kept_ids = sorted(r["object_id"] for r in files["a"] + files["c"])
    reader = Output(output)
    before = {i: reader.grid(i) for i in kept_ids}

    io.remove(f"{catalog}/b.parquet", io.storage_options(catalog))
    code, out, err = job(catalog, output, capsys, "--rows-per-shard", "4")
    assert code == 0, err  # the others are all committed: nothing to do
    assert "nothing to do" in out
    assert "stale     4 rows of 1 input file(s) that no longer exist" in out
    assert (success(output)["rows_stale"], success(output)["stale_files"]) == (4, 1)
    assert newest_record(output)["rows_stale"] == 4
    status = Output(output).status()
    assert status["rows_stale"] == 4 and status["as_of"].startswith("run ended ")
    line = report._repeats_line(status)  # the HTML report's
    assert "4 rows of input files that no longer exist (as of the run ended" in line

    listed = manifest_names(output)
    code, out, err = prune_cli(catalog, output, capsys, "--dry-run")
    assert code == 0, err
    gone = repeats.name_part(f"{catalog}/b.parquet")
    assert f"file {gone}: 4 rows in 1 fragment(s)" in out
    assert all(repr(r["object_id"]) in out for r in files["b"])
    assert manifest_names(output) == listed  # a dry run changes nothing
    assert Output(output).status()["rows_ok"] == 10

    code, out, err = prune_cli(catalog, output, capsys)
    assert code == 0, err
    assert "pruned 4 rows" in out
    table = read_manifests(output)
    assert sorted(table.column("object_id").to_pylist()) == kept_ids  # each once
    for object_id, grid in before.items():  # the kept rows' grids, where they were
        np.testing.assert_array_equal(Output(output).grid(object_id), grid)
    status = Output(output).status()
    assert status["rows_ok"] + status["rows_failed"] == len(kept_ids)
    assert status["rows_stale"] == 0 and status["as_of"].startswith("prune ended ")
    checked = verify.check(output, grids=None, keys=True)
    assert checked.ok, checked.format()
    assert success(output)["output_rows_ok"] == status["rows_ok"]
    fs, root = io.filesystem(output)
    assert fs.find(f"{root}/{REJECTED}")  # set aside, not deleted

    listed = manifest_names(output)
    code, out, err = job(catalog, output, capsys, "--rows-per-shard", "4")
    assert code == 0, err
    assert "nothing to do" in out and "stale" not in out
    code, out, err = prune_cli(catalog, output, capsys)
    assert code == 0, err
    assert "nothing to prune" in out
    assert manifest_names(output) == listed  # neither redid anything


PRUNE_UNTIL = """
import sys, time
from pipeline import io, prune
from pipeline.lease import Lease
catalog, output, point = sys.argv[1:4]
current = prune.current_input(catalog, {})
lease = Lease(output)
lease.acquire()
found = prune.find(output, current)
def say(line):
    print(line, flush=True)
    if line.startswith(point):
        print("STOPPED HERE", flush=True)
        time.sleep(600)
prune.prune(found, {}, lease.check, lease.generation, say=say)
print("FINISHED", flush=True)
"""


def prune_until(catalog: str, output: str, point: str) -> None:
    """Run a prune in a process of its own and kill it (SIGKILL, by its pid)
    once it has said a line starting with ``point``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PRUNE_UNTIL, catalog, output, point],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        said = []
        for line in proc.stdout:
            said.append(line)
            if line.startswith(("STOPPED HERE", "FINISHED")):
                break
        assert said and said[-1].startswith("STOPPED HERE"), said
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()


def test_a_prune_killed_part_way_leaves_every_row_counted_once_and_a_rerun_finishes(
    ray_local, tmp_path, capsys
):
    catalog = tmp_path / "catalog"
    files = {"a": objects(0, 3), "b": objects(3, 3), "c": objects(6, 3)}
    for name, rows in files.items():
        write_file(str(catalog / f"{name}.parquet"), rows)
    made = str(tmp_path / "made")
    code, _, err = job(str(catalog), made, capsys, "--rows-per-shard", "4")
    assert code == 0, err
    os.remove(catalog / "b.parquet")
    kept_ids = sorted(r["object_id"] for r in files["a"] + files["c"])

    other = tmp_path / "other"  # the wrong --input: refused, nothing changed
    write_file(str(other / "z.parquet"), objects(20, 2))
    listed = manifest_names(made)
    code, out, err = prune_cli(str(other), made, capsys)
    assert code == 3
    assert "none of the 9 rows" in err and "Nothing was changed" in err
    assert manifest_names(made) == listed

    for point in ("wrote", "set aside"):  # after a replacement; after a manifest moved
        output = str(tmp_path / point.replace(" ", "-"))
        shutil.copytree(made, output)
        prune_until(str(catalog), output, point)
        # stopped part-way: every kept row is still counted, and once
        ids = read_manifests(output).column("object_id").to_pylist()
        assert set(kept_ids) <= set(ids) and len(ids) == len(set(ids)), point
        code, out, err = prune_cli(str(catalog), output, capsys)  # its lease's holder is dead
        assert code == 0, err + out
        assert sorted(read_manifests(output).column("object_id").to_pylist()) == kept_ids
        checked = verify.check(output, grids=None, keys=True)
        assert checked.ok, checked.format()
        assert Output(output).status()["rows_stale"] == 0
        code, out, err = job(str(catalog), output, capsys, "--rows-per-shard", "4")
        assert code == 0, err
        assert "nothing to do" in out


def test_prune_is_refused_while_a_job_holds_the_output(tmp_path, capsys):
    from pipeline.lease import Lease

    catalog = tmp_path / "catalog"
    write_file(str(catalog / "a.parquet"), objects(0, 1))
    output = str(tmp_path / "out")
    os.makedirs(output)
    holder = Lease(output, say=lambda s: None)
    holder.acquire()
    try:
        code, out, err = prune_cli(str(catalog), output, capsys)
    finally:
        holder.release()
    assert code == 3 and "in use by another run" in err
    shutil.rmtree(output)
