"""Readers beside a running job: a writer process commits shards and folds the
output's index every half second with the job's own functions (the sink's
``write_shard``, ``pipeline.index.fold``, which merges small parts and removes
them), while this process loops over ``Output.status``, manifest reads and grid
loads. No read may fail, no row may appear twice, and no count may go down."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.compute as pc
import pytest

from conftest import REPO, stop_process
from pipeline import index as output_index
from pipeline.results import Output

WRITER = """
import sys, time
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
import pyarrow as pa
from pipeline import index
from pipeline.sink import write_shard
from test_sink import model_rows

output, seconds = sys.argv[1], float(sys.argv[2])
end, k, last_fold = time.monotonic() + seconds, 0, 0.0
while time.monotonic() < end:
    rows = model_rows([f"obj-{{k}}-{{j}}" for j in range(4)], ["ok", "ok", "failed", "ok"], k)
    keys = pa.array([f"w:{{k}}:{{j}}" for j in range(4)])
    write_shard(rows.set_column(0, "row_key", keys), output)
    k += 1
    if time.monotonic() - last_fold > 0.5:
        index.fold(output)
        last_fold = time.monotonic()
    time.sleep(0.05)
index.fold(output)
print(k)
"""


def counting_missing(monkeypatch, module, name: str, seen: list) -> None:
    """Instrument (not replace) ``module.name``: note each FileNotFoundError it raises."""
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        try:
            return real(*args, **kwargs)
        except FileNotFoundError:
            seen.append(name)
            raise

    monkeypatch.setattr(module, name, wrapper)


@pytest.mark.slow
def test_reads_beside_a_folding_job_never_fail_repeat_or_go_back(tmp_path, monkeypatch):
    output = str(tmp_path / "out")
    script = WRITER.format(repo=str(REPO), tests=str(REPO / "tests"))
    writer = subprocess.Popen(
        [sys.executable, "-c", script, output, "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    gone: list[str] = []  # how often a listed file was gone when opened
    counting_missing(monkeypatch, output_index, "read_table", gone)
    counting_missing(monkeypatch, output_index, "_read_part", gone)
    try:
        reader = Output(output)
        last_ok = last_rows = loops = 0
        while writer.poll() is None:
            counts = reader.status()
            table = reader.manifests(["object_id", "row_key", "status", "error_kind"])
            keys = table.column("row_key").to_pylist()
            assert len(keys) == len(set(keys)), "a row was read twice"
            assert counts["rows_ok"] >= last_ok and len(keys) >= last_rows, "a count went down"
            last_ok, last_rows = counts["rows_ok"], len(keys)
            failed = table.filter(pc.equal(table["status"], "failed"))
            assert set(failed.column("error_kind").to_pylist()) <= {"empty_views"}
            ok_rows = table.filter(pc.equal(table["status"], "ok"))
            if ok_rows.num_rows:
                ids = ok_rows.column("object_id").to_pylist()[-8:]
                assert reader.grids(ids).shape == (len(ids), 32, 32, 32)
            loops += 1
    finally:
        stop_process(writer)
    out, err = writer.communicate()
    assert writer.returncode == 0, err[-2000:]
    shards_written = int(out.split()[-1])
    final = Output(output).status()
    assert final["rows_ok"] == 3 * shards_written and final["rows_failed"] == shards_written
    assert loops > 20
    print(
        f"{loops} reader loops beside {shards_written} shards; a listed file gone {len(gone)} times"
    )
