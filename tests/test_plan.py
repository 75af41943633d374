"""Planning a run from what the output holds (pipeline.plan), the output index
(pipeline.index) and the lease (pipeline.lease): costs that follow fragments,
not committed rows; an index that is behind is completed; one driver per output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_sink import model_rows

from conftest import REPO
from pipeline import index, plan
from pipeline.inputs import scan
from pipeline.lease import Lease, LeaseHeld
from pipeline.sink import write_shard


def test_ranges_and_coverage():
    assert plan.merge_ranges([[5, 7], [0, 2], [2, 3], [6, 9]]) == [[0, 3], [5, 9]]
    keys = ["f1:0", "f1:1", "f1:2", "f1:7", "f2:3", "not-a-position"]
    assert plan.coverage_of(keys) == {"f1": [[0, 3], [7, 8]], "f2": [[3, 4]]}
    merged = plan.merge_coverage([{"f1": [[0, 3]]}, {"f1": [[3, 5]], "f2": [[0, 1]]}])
    assert merged == {"f1": [[0, 5]], "f2": [[0, 1]]}
    encoded = {plan.COVERAGE_KEY: plan.encode_coverage(merged)}
    assert plan.decode_coverage(encoded) == merged


def files_of(rows_per_group: list[list[int]]) -> list[plan.InputFile]:
    return [
        plan.InputFile(f"/in/part-{i}.parquet", 1000 + i, "mtime:1", tuple(groups), f"{i:016x}" * 2)
        for i, groups in enumerate(rows_per_group)
    ]


def test_plan_skips_committed_fragments_and_filters_partial_ones():
    files = files_of([[4, 4], [3]])
    keys = [plan.fragment_key(f.url, f.content, g) for f in files for g in range(2)][:3]
    fresh = plan.plan(files, {})
    assert [f.todo for f in fresh.fragments] == [4, 4, 3]
    assert (fresh.rows_total, fresh.rows_committed) == (11, 0)
    # first fragment done, second half done (a crash mid-way), third untouched
    coverage = {keys[0]: [[0, 4]], keys[1]: [[0, 1], [3, 4]]}
    resumed = plan.plan(files, coverage)
    assert [(f.key, f.todo) for f in resumed.fragments] == [(keys[1], 2), (keys[2], 3)]
    assert (resumed.rows_total, resumed.rows_committed, resumed.rows_todo) == (11, 6, 5)
    limited = plan.plan(files, coverage, limit=6)
    assert [(f.key, f.rows, f.todo) for f in limited.fragments] == [(keys[1], 2, 1)]
    assert (limited.rows_total, limited.rows_committed) == (6, 5)


def test_a_changed_input_file_is_refused():
    files = files_of([[4]])
    key = plan.fragment_key(files[0].url, files[0].content, 0)
    changed = [plan.InputFile(files[0].url, 999, "mtime:2", (4,), "f" * 32)]
    with pytest.raises(plan.InputChanged, match="part-0.parquet: committed: 2 rows of 1 row"):
        plan.plan(changed, {key: [[0, 2]]})
    # the same content under another mtime, name or size spelling: the same rows
    touched = [plan.InputFile(files[0].url, 1000, "mtime:9", (4,), files[0].content)]
    assert plan.plan(touched, {key: [[0, 2]]}).rows_committed == 2
    renamed = [plan.InputFile("/in/other.parquet", 1000, "mtime:9", (4,), files[0].content)]
    again = plan.plan(renamed, {key: [[0, 2]]})
    assert again.rows_committed == 2 and again.fragments[0].key == key
    assert again.adopted and again.adopted[0][0] == "/in/other.parquet"


def test_copies_moves_and_changes_are_matched_by_content():
    """Planning alone (no rows read): a copy is read once; a moved catalog keeps
    its keys, and --moved-from names a file that differs and one that is
    missing; every changed file is named; an older voxray's keys count only
    for the same file and version."""
    a, b = files_of([[4, 4], [3]])
    keys = {f.url: [plan.fragment_key(f.url, f.content, g) for g in range(2)] for f in (a, b)}
    coverage = {keys[a.url][0]: [[0, 4]], keys[b.url][0]: [[0, 3]]}
    copy = plan.InputFile("/in/copy.parquet", a.size, "mtime:7", a.row_groups, a.content)
    both = plan.plan([a, b, copy], coverage)
    assert both.duplicates == [("/in/copy.parquet", a.url)] and both.rows_total == 11
    assert [(f.file, f.key) for f in both.fragments] == [(a.url, keys[a.url][1])]

    moved = [
        plan.InputFile(f.url.replace("/in/", "/new/"), f.size, "mtime:9", f.row_groups, f.content)
        for f in (a, b)
    ]
    adopted = plan.plan(moved, coverage)
    assert [f.key for f in adopted.fragments] == [keys[a.url][1]]  # a's half, under a's key
    assert len(adopted.adopted) == 2 and adopted.rows_committed == 7
    stated = plan.Moved("/in", "/new", {plan.file_name(a.url): a.url, "0" * 12: "/in/gone.parquet"})
    gone = {f"{'0' * 12}-{'d' * 16}-0": [[0, 1]]}  # a file a run read under /in, gone since
    rewritten = plan.InputFile(moved[1].url, 9, "", (2,), "e" * 32)
    with pytest.raises(plan.InputChanged) as refused:
        plan.plan([moved[0], rewritten], {**coverage, **gone}, moved=stated)
    text = str(refused.value)
    assert "/in/part-1.parquet -> /new/part-1.parquet: differs" in text
    assert "/in/gone.parquet: missing" in text
    assert "there now: 2 rows in 1 row group(s), 9 bytes, digest eeee" in text

    changed = [plan.InputFile(f.url, 5, "mtime:3", (1,), f"{i + 7:016x}" * 2) for i, f in
               enumerate((a, b))]  # fmt: skip
    with pytest.raises(plan.InputChanged, match="2 input file") as refused:
        plan.plan(changed, coverage)
    assert "part-0.parquet: committed: 4 rows" in str(refused.value)
    assert "part-1.parquet: committed: 3 rows" in str(refused.value)

    old = {f"{plan.file_name(a.url)}-{plan.legacy_content(a.size, a.version)}-0": [[0, 4]]}
    kept = plan.plan([a], old)
    assert kept.legacy_files == 1 and kept.rows_committed == 4
    legacy_key = f"{plan.file_name(a.url)}-{plan.legacy_content(a.size, a.version)}"
    assert kept.fragments[0].key == f"{legacy_key}-1"
    assert kept.unmatched_legacy == 0 and plan.plan([b], old).unmatched_legacy == 1
    touched = plan.InputFile(a.url, a.size, "mtime:2", a.row_groups, a.content)
    with pytest.raises(plan.InputChanged, match="older voxray"):
        plan.plan([touched], old)


def test_fragments_read_only_their_rows_with_keys(tmp_path):
    """Rows of a row group minus the committed ones, duplicated ids included,
    each with its position as its key."""
    table = pa.table(
        {
            "object_id": ["a", "b", "a", "c", "d", "a"],  # "a" three times: three rows
            "views": pa.array([[b"x"]] * 6, pa.list_(pa.binary())),
            "row_key": ["mine"] * 6,  # an input column of that name is carried as input_row_key
        }
    )
    path = tmp_path / "part-0.parquet"
    pq.write_table(table, path, row_group_size=6)
    found = scan([str(path)], {})
    info = found.files[0]
    key = plan.fragment_key(info.url, info.content, 0)
    fragment = plan.plan([plan.InputFile(info.url, info.size, info.version or "", info.row_groups,
                                         info.content)], {key: [[1, 3]]}).fragments[0]  # fmt: skip
    blocks = list(plan.read_fragment(fragment, found.schema, 2, {}))
    rows = pa.concat_tables(blocks).to_pylist()
    assert [r["object_id"] for r in rows] == ["a", "c", "d", "a"]
    assert [r["row_key"] for r in rows] == [f"{key}:{i}" for i in (0, 3, 4, 5)]
    assert {r["input_row_key"] for r in rows} == {"mine"}
    assert all(b.num_rows <= 2 for b in blocks)


def positional(rows: pa.Table, fragment: str, start: int = 0) -> pa.Table:
    keys = [f"{fragment}:{start + i}" for i in range(rows.num_rows)]
    return rows.set_column(rows.schema.get_field_index("row_key"), "row_key", pa.array(keys))


def test_index_folds_completes_and_merges(tmp_path):
    out = str(tmp_path / "out")
    for s in range(3):
        write_shard(positional(model_rows([f"o{s}-{i}" for i in range(4)], ["ok"] * 3 + ["failed"]),
                               f"frag{s}"), out)  # fmt: skip
    behind = index.state(out)
    assert (len(behind.parts), len(behind.pending)) == (0, 3)  # no index yet: manifests read
    assert behind.counts() == {"rows_ok": 9, "rows_failed": 3, "models": ["compact-test"]}
    assert behind.coverage() == {f"frag{s}": [[0, 4]] for s in range(3)}
    folded = index.fold(out)
    assert (len(folded.parts), len(folded.pending)) == (1, 0)
    assert index.read_table(index.state(out)).num_rows == 12
    # a shard committed after the fold: the index is behind, and completed from the manifest
    write_shard(positional(model_rows(["late"], ["ok"]), "frag9"), out)
    current = index.state(out)
    assert (len(current.parts), len(current.pending)) == (1, 1)
    assert index.read_table(current, columns=["object_id"]).num_rows == 13
    assert current.coverage()["frag9"] == [[0, 1]]
    # many small parts merge into one; the merged part is written before the others go
    for s in range(10, 10 + index.MAX_SMALL_PARTS + 1):
        write_shard(positional(model_rows([f"m{s}"], ["ok"]), f"frag{s}"), out)
        index.fold(out)
    parts = os.listdir(os.path.join(out, "index"))
    assert len(parts) <= 2
    table = index.read_table(index.state(out))
    assert table.num_rows == 13 + index.MAX_SMALL_PARTS + 1
    assert sorted(table.column("object_id").to_pylist()) == sorted(
        set(table["object_id"].to_pylist())
    )


def test_a_part_left_over_by_an_interrupted_merge_is_skipped_and_removed(tmp_path):
    """Two parts holding the same manifest (a merge by a writer taken over, or an
    older voxray's interrupted merge): the reader takes one, the next fold
    removes the other, and a glob over index/*.parquet then counts each row once."""
    out = str(tmp_path / "out")
    write_shard(positional(model_rows(["a", "b"], ["ok", "ok"]), "f1"), out)
    small = index.fold(out).parts[0]
    write_shard(positional(model_rows(["c"], ["ok"]), "f2"), out)
    state = index.state(out)
    entries = small.entries + state.pending
    table = index._gather(out, [(e, small.url) for e in small.entries] +
                          [(e, None) for e in state.pending], None)  # fmt: skip
    merged = index._write_part(out, table, entries, 0, None)
    assert len(os.listdir(os.path.join(out, "index"))) == 2
    again = index.state(out)
    assert [p.url for p in again.parts] == [merged.url] and not again.pending
    assert [p.url for p in again.leftovers] == [small.url]
    assert index.read_table(again).num_rows == 3
    index.fold(out)
    assert os.listdir(os.path.join(out, "index")) == [os.path.basename(merged.url)]
    assert pq.ParquetDataset(os.path.join(out, "index")).read().num_rows == 3


def test_lease_refuses_a_live_holder_and_takes_over_from_a_dead_one(tmp_path):
    out = str(tmp_path / "out")
    said: list[str] = []
    holder = subprocess.Popen(
        [sys.executable, "-c", f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
from pipeline.lease import Lease
lease = Lease({out!r}); lease.acquire(); print("held", flush=True); time.sleep(120)
"""],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LeaseHeld, match="in use by another run"):
            Lease(out, say=said.append).acquire()
    finally:
        holder.kill()
        holder.wait()
    lease = Lease(out, say=said.append)
    lease.acquire()
    assert any("is gone; taking over" in s for s in said)
    with open(os.path.join(out, "_LEASE")) as f:
        body = json.load(f)
    assert body["pid"] == os.getpid()
    lease.release()
    assert not os.path.exists(os.path.join(out, "_LEASE"))


def test_lease_of_another_host_is_waited_out_when_it_stops_changing(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    os.makedirs(out)
    # its clock says it renewed two minutes from now: never compared with ours
    stale = {"holder": "x", "host": "elsewhere", "pid": 1, "renewed": time.time() + 120, "ttl": 2}
    with open(os.path.join(out, "_LEASE"), "w") as f:
        json.dump(stale, f)
    monkeypatch.setattr("pipeline.lease.RENEW_SECONDS", 0.5)
    said: list[str] = []
    started = time.monotonic()
    with Lease(out, say=said.append) as lease:
        assert 2 <= time.monotonic() - started < 10
        assert lease.generation == 1
    assert any("watching it for 2 s" in s for s in said) and any("taking over" in s for s in said)


def test_grids_read_by_offset_match_the_shard(tmp_path):
    from pipeline import shards

    out = str(tmp_path / "out")
    table = model_rows(["a", "b", "c"], ["ok", "ok", "ok"])
    name = write_shard(table, out)["name"]
    manifest = pq.read_table(os.path.join(out, "manifests", f"{name}.parquet")).to_pylist()
    whole = shards.read_shard(os.path.join(out, manifest[0]["shard"]))["probabilities"]
    for row in manifest:
        one = shards.read_grid(os.path.join(out, row["shard"]), row["grid_offset"],
                               row["grid_bytes"])  # fmt: skip
        assert np.array_equal(one, whole[row["index"]])


def test_an_index_part_naming_a_lost_manifest_is_set_aside(tmp_path):
    """The manifests are the record: a part that covers a manifest that is gone
    is not trusted, and the index is rebuilt from the manifests left."""
    out = str(tmp_path / "out")
    for s in range(2):
        write_shard(positional(model_rows([f"o{s}"], ["ok"]), f"frag{s}"), out)
    index.fold(out)
    manifests = sorted(os.listdir(os.path.join(out, "manifests")))
    os.remove(os.path.join(out, "manifests", manifests[0]))
    current = index.state(out)
    assert not current.parts and len(current.pending) == 1 and len(current.stale) == 1
    assert index.read_table(current).num_rows == 1
    index.fold(out)
    assert len(os.listdir(os.path.join(out, "index"))) == 1
    assert index.read_table(index.state(out)).num_rows == 1


def test_small_files_share_read_tasks_and_blocks(tmp_path):
    """Fragments smaller than a block are read by one task into whole blocks:
    every block costs Ray a task per stage and an actor call."""
    from pipeline.source import CatalogSource

    for f in range(5):
        rows = [{"object_id": f"f{f}-{i}", "views": [b"x"]} for i in range(3)]
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / f"part-{f}.parquet")
    found = scan(sorted(str(p) for p in tmp_path.glob("*.parquet")), {})
    files = [
        plan.InputFile(f.url, f.size, f.version or "", f.row_groups, f.content) for f in found.files
    ]
    source = CatalogSource(plan.plan(files, {}), found.schema, rows_per_block=4, storage_options={})
    tasks = source.get_read_tasks(parallelism=200)  # what Ray asks is not what it gets
    assert len(tasks) == len(source.groups) == 3  # 15 rows, at least 4 per task
    blocks = [block for task in tasks for block in task()]
    assert [b.num_rows for b in blocks] == [4, 2, 4, 2, 3]  # tasks of 6, 6 and 3 rows
    keys = pa.concat_tables(blocks).column("row_key").to_pylist()
    assert len(set(keys)) == 15
