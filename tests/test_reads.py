"""The job's reader (pipeline/source.py) as the read tasks run it: a file's
footer parsed once for all of its row groups, the file checked against what was
planned (rewritten or gone since the scan: the run stops with exit 1 and
commits none of it; restored, the next run reads it), and the rows of a row
group that cannot be read named by their object_id, never by a null."""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_faults import CuttingProxy
from test_job import check_every_row_once, run_job

import shapes
from pipeline import inputs, io, job, plan, source
from pipeline.decode import DecodeConfig, decode_batch
from pipeline.results import read_manifests

SEED = 31
JOB_ARGS = ["--stand-in", "latency_ms=0", "--batch-size", "4", "--rows-per-block", "8"]


def rows(n: int, start: int = 0, views: int = 1) -> pa.Table:
    """``n`` catalog rows with real (procedural) views, ids ``r<start>..``."""
    made = [shapes.generate_object(SEED, i % 8, views=views) for i in range(start, start + n)]
    return pa.table(
        {
            "object_id": [f"r{i}" for i in range(start, start + n)],
            "views": pa.array([m["views"] for m in made], pa.list_(pa.binary())),
            "sku": pa.array(range(start, start + n), pa.int64()),
        }
    )


def light(n: int, start: int = 0) -> pa.Table:
    """``n`` rows whose views are placeholder bytes (read, never decoded)."""
    return pa.table(
        {
            "object_id": [f"r{i}" for i in range(start, start + n)],
            "views": pa.array([[b"view-%d" % i] for i in range(start, start + n)]),
            "sku": pa.array(range(start, start + n), pa.int64()),
        }
    )


def put(url: str, table: pa.Table, **write_options) -> None:
    fs, path = io.filesystem(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as f:
        pq.write_table(table, f, **write_options)


def planned(urls: list[str], coverage: dict | None = None, limit: int | None = None):
    """The scan, the input files and the read plan, as the job's pre-flight makes them."""
    found = inputs.scan(urls, io.storage_options(urls[0]))
    files = job._input_files(found)
    return found, files, plan.plan(files, coverage or {}, limit)


def read_all(found, files, read_plan, rows_per_block: int = 8) -> pa.Table:
    """Every read task of the job's datasource, run here as Ray would run it."""
    catalog = source.CatalogSource(
        read_plan, found.schema, rows_per_block, io.storage_options(files[0].url), 5.0, files
    )
    blocks = [b for task in catalog.get_read_tasks(1) for b in task()]
    return pa.concat_tables(blocks) if blocks else pa.table({})


# --- one footer per file -----------------------------------------------------------------


def test_a_file_of_many_row_groups_parses_its_footer_once(tmp_path, monkeypatch):
    url = str(tmp_path / "many.parquet")
    put(url, light(300), row_group_size=1)
    put(str(tmp_path / "other.parquet"), light(5, start=300), row_group_size=2)
    urls = [url, str(tmp_path / "other.parquet")]
    _, _, whole = planned(urls)
    first, seventh = whole.fragments[0].key, whole.fragments[7].key
    # rows 0 and 7 committed already, and a --limit inside the second file
    found, files, read_plan = planned(urls, {first: [[0, 1]], seventh: [[0, 1]]}, limit=303)
    assert read_plan.rows_todo == 301

    made = []

    class Counting(pq.ParquetFile):  # the real reader, counted
        def __init__(self, *args, **kwargs):
            made.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", Counting)
    table = read_all(found, files, read_plan)
    assert len(made) == 2  # one footer parse per file, not per row group (300 + 2)
    ids = table.column("object_id").to_pylist()
    assert ids == [f"r{i}" for i in range(303) if i not in (0, 7)]
    keys = table.column("row_key").to_pylist()
    assert keys[:3] == [f"{f.key}:0" for f in whole.fragments[1:4]]
    assert len(set(keys)) == len(keys) == 301
    assert table.column("read_error").null_count == 301


def test_a_file_of_many_row_groups_is_not_cut_into_many_read_tasks(tmp_path):
    many, big = str(tmp_path / "a-many.parquet"), str(tmp_path / "b-big.parquet")
    put(many, light(400), row_group_size=1)
    put(big, light(400, start=400), row_group_size=100)
    _, _, read_plan = planned([many, big])
    groups = plan.groups(read_plan.fragments, parallelism=8, min_rows=8)
    holding = [g for g in groups if any(f.file == many for f in g)]
    assert len(holding) == 1  # its footer (400 row groups) parsed by one task
    assert sum(1 for g in groups if any(f.file == big for f in g)) >= 2  # big groups still spread


# --- the plan checked at read time ---------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "catalog")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/catalog"


def test_a_file_rewritten_after_planning_gives_no_row(where):
    url = f"{where}/part-0.parquet"
    put(url, light(20))
    put(f"{where}/part-1.parquet", light(3, start=50))
    found, files, read_plan = planned([url, f"{where}/part-1.parquet"])
    put(url, light(12, start=100))  # 20 rows -> 12 other rows
    tasks = source.CatalogSource(
        read_plan, found.schema, 8, io.storage_options(url), 5.0, files
    ).get_read_tasks(1)
    given = []
    with pytest.raises(inputs.InputChangedDuringRun) as caught:
        for task in tasks:
            given.extend(task())
    message = str(caught.value)
    assert url in message and "planned 20 rows in 1 row group," in message
    assert "found 12 rows in 1 row group," in message
    assert not any(f"{files[0].content[:16]}" in k for b in given for k in b["row_key"].to_pylist())
    assert not any(i.startswith("r1") for b in given for i in b["object_id"].to_pylist())


def test_a_file_gone_after_planning_gives_no_row(where):
    url = f"{where}/part-0.parquet"
    put(url, light(6))
    found, files, read_plan = planned([url])
    fs, path = io.filesystem(url)
    fs.rm(path)
    with pytest.raises(inputs.InputChangedDuringRun, match="is gone since this run planned"):
        read_all(found, files, read_plan)


def test_a_rewritten_file_stops_the_job_with_exit_1_and_commits_none_of_it(
    ray_local, tmp_path, capsys, monkeypatch
):
    catalog, output = tmp_path / "catalog", str(tmp_path / "out")
    changed = str(catalog / "a.parquet")
    put(changed, rows(20), row_group_size=5)
    put(str(catalog / "b.parquet"), rows(4, start=20))
    preflight = job.preflight

    def rewritten_after_planning(config):
        found = preflight(config)  # the plan is made from the 20-row file ...
        put(changed, rows(12, start=100))  # ... which is then rewritten with 12 other rows
        return found

    monkeypatch.setattr(job, "preflight", rewritten_after_planning)
    args = ["--input", str(catalog), "--output", output, *JOB_ARGS]
    code, _, err = run_job(args, capsys)
    assert code == 1, err
    assert f"input {changed} changed since this run planned to read it" in err
    assert "planned 20 rows in 4 row groups" in err and "found 12 rows in 1 row group," in err
    if io.exists(io.join(output, "manifests")):
        committed = read_manifests(output).column("object_id").to_pylist()
        assert not [i for i in committed if int(i[1:]) < 20 or int(i[1:]) >= 100]

    monkeypatch.undo()  # the next run plans the file as it is now
    code, _, err = run_job(args, capsys)
    assert code == 0, err
    ids = [f"r{i}" for i in (*range(100, 112), *range(20, 24))]
    check_every_row_once(output, dict.fromkeys(ids))


def test_a_vanished_s3_object_stops_the_job_and_is_read_once_restored(
    ray_local, s3_bucket, capsys, monkeypatch
):
    catalog, output = f"s3://{s3_bucket}/catalog", f"s3://{s3_bucket}/out"
    gone = f"{catalog}/a.parquet"
    put(gone, rows(6))
    put(f"{catalog}/b.parquet", rows(3, start=6))
    fs, path = io.filesystem(gone)
    data = fs.cat_file(path)
    preflight = job.preflight

    def deleted_after_planning(config):
        found = preflight(config)
        fs.rm(path)
        return found

    monkeypatch.setattr(job, "preflight", deleted_after_planning)
    args = ["--input", catalog, "--output", output, *JOB_ARGS]
    code, _, err = run_job(args, capsys)
    assert code == 1, err
    assert f"input {gone} is gone since this run planned to read it" in err
    assert "restore it and rerun" in err
    if io.exists(io.join(output, "manifests")):
        table = read_manifests(output)
        assert table.column("object_id").null_count == 0
        assert not set(table.column("object_id").to_pylist()) & {f"r{i}" for i in range(6)}

    monkeypatch.undo()
    fs.pipe_file(path, data)  # restored: the same bytes
    code, _, err = run_job(args, capsys)
    assert code == 0, err
    check_every_row_once(output, dict.fromkeys(f"r{i}" for i in range(9)))


# --- rows that cannot be read --------------------------------------------------------------


def corrupt_chunk(url: str, row_group: int, column: int) -> None:
    """Overwrite the first page header of one column chunk; the footer stays intact."""
    meta = pq.ParquetFile(url).metadata.row_group(row_group).column(column)
    start = meta.dictionary_page_offset or meta.data_page_offset
    with open(url, "r+b") as f:
        f.seek(start)
        f.write(b"\xff" * 16)


@pytest.mark.parametrize("column, named", [(1, "ids"), (0, "placeholders")])
def test_rows_of_an_unreadable_row_group_fail_with_their_ids(tmp_path, column, named):
    url = str(tmp_path / "part-0.parquet")
    put(url, light(12), row_group_size=3, compression="none", use_dictionary=False)
    corrupt_chunk(url, 2, column)  # rows 6..8: views (1) or object_id (0) unreadable
    found, files, read_plan = planned([url])
    table = read_all(found, files, read_plan, rows_per_block=4)
    assert table.num_rows == 12
    keys = table.column("row_key").to_pylist()
    errors = table.column("read_error").to_pylist()
    ids = table.column("object_id").to_pylist()
    assert [e is None for e in errors] == [i not in (6, 7, 8) for i in range(12)]
    assert all(url in e and "row group 2" in e for e in errors[6:9])
    if named == "ids":
        assert ids == [f"r{i}" for i in range(12)]
    else:
        assert ids[:6] + ids[9:] == [f"r{i}" for i in (*range(6), *range(9, 12))]
        assert ids[6:9] == [source.UNREAD + k for k in keys[6:9]]
    decoded = decode_batch(table.slice(4, 8), DecodeConfig(image_size=32))
    failed = decoded.filter(pc.equal(decoded["status"], "failed"))
    assert failed.num_rows >= 3 and failed.column("object_id").null_count == 0


# --- an outage mid-read ------------------------------------------------------------------


def test_an_outage_mid_file_carries_on_after_the_rows_given(s3_server, s3_bucket, monkeypatch):
    url = f"s3://{s3_bucket}/catalog/part-0.parquet"
    put(url, light(40), row_group_size=4)
    found, files, read_plan = planned([url])
    monkeypatch.setattr(source, "PASS_BYTES", 1)  # a pass per row group: reads after the cut
    proxy = CuttingProxy(s3_server.port)
    options = io.storage_options(url, {"client_kwargs": {"endpoint_url": proxy.endpoint}})
    try:
        reader = source.read_file(read_plan.fragments, found.schema, 3, options, 60.0, files[0])
        first = next(reader)
        proxy.cut()
        threading.Timer(2.0, proxy.restore).start()
        rest = list(reader)
    finally:
        proxy.close()
    assert proxy.refused > 0  # the read did meet the outage
    table = pa.concat_tables([first, *rest])
    assert table.column("object_id").to_pylist() == [f"r{i}" for i in range(40)]
    assert len(set(table.column("row_key").to_pylist())) == 40
