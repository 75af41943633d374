"""Identity by content (issue 19 items 1 and 2): an input file is known by its
canonical URL and its footer, not by the path as typed, its mtime or its ETag.
Each case is a real run of the job (real Ray, the stand-in device) on real
files, then a rerun after what an operator does to a catalog that lives for
years: other spellings of the path, touch, copies, renames, moves (found by
content, and stated with --moved-from), copies inside the catalog, changed
content, an output of an older voxray, an S3 re-upload. Every case checks that
every input row is accounted for exactly once."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_job import SEED, check_every_row_once, make_catalog, run_job

from pipeline import io, plan
from pipeline.results import read_manifests
from pipeline.sink import write_shard

STAND_IN = ["--stand-in", "latency_ms=0"]
EXIT_SETUP = 3


def job(input_url: str, output: str, *extra: str) -> list[str]:
    return ["--input", input_url, "--output", output, *STAND_IN, *extra]


def names_in(output: str) -> set[str]:
    """The name parts of the output's row keys."""
    return {k.split("-")[0] for k in read_manifests(output).column("row_key").to_pylist()}


def rewrite(path: str, rows: slice) -> None:
    """Another content at the same path: some of its rows, rewritten."""
    table = pq.read_table(path)
    pq.write_table(table.slice(rows.start, rows.stop - rows.start), path)


def last_record(output: str) -> dict:
    """The newest run record of a local output (names order runs by the second)."""
    runs = os.path.join(output, "runs")
    newest = max(os.listdir(runs), key=lambda n: os.stat(os.path.join(runs, n)).st_mtime_ns)
    with open(os.path.join(runs, newest)) as f:
        return json.load(f)


def nothing_to_do(input_url: str, output: str, expected: dict, capsys, *extra: str) -> str:
    code, out, err = run_job(job(input_url, output, *extra), capsys)
    assert code == 0, err
    assert "nothing to do" in out, out
    check_every_row_once(output, expected)
    return out


def test_spellings_touch_copies_renames_and_changes(ray_local, tmp_path, monkeypatch, capsys):
    """One output, then reruns that must redo nothing: the input's path spelled
    six other ways, a single file as file://, every file touched, the catalog
    copied without -p, a file renamed in it, a copy of a file added to it. Then
    two files rewritten: refused, both named, with what was and what is."""
    data = tmp_path / "data"
    catalog = data / "catalog"
    expected = make_catalog(str(catalog), files=2)
    output = str(tmp_path / "out")
    code, _, err = run_job(job(str(catalog), output), capsys)
    assert code == 0, err
    check_every_row_once(output, expected)
    names = names_in(output)

    (data / "x").mkdir()
    (tmp_path / "link").symlink_to(data)
    (tmp_path / "elsewhere").mkdir()
    for spelling in (
        f"{tmp_path}//data//catalog",
        f"{tmp_path}/./data/./catalog",
        f"{data}/x/../catalog",
        f"{catalog}/",
        str(tmp_path / "link" / "catalog"),
        f"file://{catalog}",
    ):
        nothing_to_do(spelling, output, expected, capsys)
    monkeypatch.chdir(tmp_path / "elsewhere")
    nothing_to_do("../data/catalog", output, expected, capsys)
    # one file of the catalog, as file://: its rows are among the committed ones
    code, out, err = run_job(job(f"file://{catalog}/part-00000.parquet", output), capsys)
    assert code == 0 and "nothing to do" in out, err

    for f in catalog.iterdir():  # touch: same bytes, new mtime
        os.utime(f, (1_000_000_000, 1_000_000_000))
    nothing_to_do(str(catalog), output, expected, capsys)

    copy = tmp_path / "copy"
    copy.mkdir()
    for f in catalog.iterdir():  # cp without -p: new mtimes, same content, new URLs
        shutil.copy(f, copy / f.name)
    out = nothing_to_do(str(copy), output, expected, capsys)
    assert "adopted   2 input file(s)" in out
    assert last_record(output)["adopted_files"] == 2

    os.rename(copy / "part-00001.parquet", copy / "renamed.parquet")
    nothing_to_do(str(copy), output, expected, capsys)
    shutil.copy(copy / "part-00000.parquet", copy / "zz-again.parquet")
    out = nothing_to_do(str(copy), output, expected, capsys)
    assert "copies    1 input file(s)" in out
    assert last_record(output)["duplicate_files"] == {
        str(copy / "zz-again.parquet"): str(copy / "part-00000.parquet")
    }
    assert names_in(output) == names  # every row kept its key

    rewrite(str(catalog / "part-00000.parquet"), slice(0, 3))
    rewrite(str(catalog / "part-00001.parquet"), slice(1, 5))
    code, out, err = run_job(job(str(catalog), output), capsys)
    assert code == EXIT_SETUP, err
    assert "2 input file(s) changed" in err
    for name, rows, groups in (("part-00000", 3, 1), ("part-00001", 4, 1)):
        line = next(line for line in err.splitlines() if f"{name}.parquet:" in line)
        assert "committed: 8 rows of 1 row group(s), digest " in line, line
        assert f"there now: {rows} rows in {groups} row group(s)" in line, line
    assert "jobs/prune.py" in err and "restore" in err.lower()
    check_every_row_once(output, expected)  # nothing lost, nothing added


def test_moved_catalog_resumes_by_range_and_moved_from_checks_it(ray_local, tmp_path, capsys):
    """A catalog moved part-way through: the half-done file resumes by row range
    under its committed keys (found by content); a second move stated with
    --moved-from is refused while a file differs or is missing, then adopted."""
    first, second, third = (str(tmp_path / n) for n in ("a", "b", "c"))
    expected = make_catalog(first, files=2)  # 16 rows, 8 per file
    output = str(tmp_path / "out")
    code, _, err = run_job(job(first, output, "--limit", "10", "--rows-per-shard", "4"), capsys)
    assert code == 0, err
    names = names_in(output)
    assert len(names) == 2 and read_manifests(output).num_rows == 10

    os.rename(first, second)  # moved, nothing said: found by content
    code, out, err = run_job(job(second, output, "--limit", "13"), capsys)
    assert code == 0, err
    assert "skipped (already committed) 10" in out and "adopted   2" in out
    assert read_manifests(output).num_rows == 13 and names_in(output) == names

    os.rename(second, third)
    moved = job(third, output, "--moved-from", second)
    with open(f"{third}/part-00001.parquet", "rb") as f:
        kept = f.read()
    rewrite(f"{third}/part-00001.parquet", slice(0, 5))
    code, out, err = run_job(moved, capsys)
    assert code == EXIT_SETUP, err
    assert f"{second}/part-00001.parquet -> {third}/part-00001.parquet: differs" in err
    os.remove(f"{third}/part-00001.parquet")
    code, out, err = run_job(moved, capsys)
    assert code == EXIT_SETUP, err
    assert f"{second}/part-00001.parquet: missing" in err
    code, out, err = run_job(job(third, output, "--moved-from", str(tmp_path / "typo")), capsys)
    assert code == EXIT_SETUP and "no file under" in err, err

    with open(f"{third}/part-00001.parquet", "wb") as f:
        f.write(kept)
    code, out, err = run_job(moved, capsys)
    assert code == 0, err
    assert "skipped (already committed) 13" in out and "adopted   2" in out
    record = last_record(output)
    assert record["adopted_files"] == 2 and record["arguments"]["moved_from"] == second
    check_every_row_once(output, expected)
    assert names_in(output) == names  # the half-done file's new rows took its old keys


def legacy_output(catalog: str, output: str, rows_done: dict[str, int]) -> None:
    """An output as an older voxray wrote it: row keys whose content part is
    ``sha256(f"{size}:{version}")[:8]``, committing the first rows of each file."""
    from pipeline.inputs import scan

    for info in scan(io.find_files(catalog, ".parquet"), {}).files:
        n = rows_done[os.path.basename(info.url)]
        if not n:
            continue
        ids = pq.read_table(info.url).column("object_id").to_pylist()[:n]
        old = hashlib.sha256(f"{info.size}:{info.version}".encode()).hexdigest()[:8]
        key = f"{plan.file_name(io.canonical_url(info.url))}-{old}-0"
        rows = stand_in_rows(ids)
        keys = pa.array([f"{key}:{r}" for r in range(n)])
        rows = rows.set_column(rows.schema.get_field_index("row_key"), "row_key", keys)
        write_shard(rows, output)


def stand_in_rows(ids: list[str]) -> pa.Table:
    """Ok rows as the stand-in device's model stage emits them."""
    from test_sink import model_rows

    rows = model_rows(ids, ["ok"] * len(ids))
    return rows.set_column(
        rows.schema.get_field_index("model"), "model", pa.array(["stand-in-64px"] * len(ids))
    )


def test_an_older_voxrays_output_resumes_with_nothing_redone(ray_local, tmp_path, capsys):
    """Keys of an older voxray (size and mtime) still count for the same file
    and version: its committed rows stay done, its half-done file resumes
    under its old keys. The same file touched since cannot be matched: refused,
    saying the output is an older voxray's."""
    import shapes

    catalog = tmp_path / "catalog"
    catalog.mkdir()
    objects = [shapes.generate_object(SEED, 400 + i, views=2) for i in range(10)]
    rows = [{"object_id": o["object_id"], "views": o["views"]} for o in objects]
    pq.write_table(pa.Table.from_pylist(rows[:6]), catalog / "a.parquet")
    pq.write_table(pa.Table.from_pylist(rows[6:]), catalog / "b.parquet")
    expected = {r["object_id"]: None for r in rows}
    output = str(tmp_path / "out")
    legacy_output(str(catalog), output, {"a.parquet": 6, "b.parquet": 2})
    code, out, err = run_job(job(str(catalog), output), capsys)
    assert code == 0, err
    assert "skipped (already committed) 8" in out and "ok 2" in out
    table = read_manifests(output)
    keys = table.column("row_key").to_pylist()
    assert len(keys) == 10 and all(len(k.split("-")[1]) == 8 for k in keys)
    assert len(set(keys)) == 10 and set(table.column("object_id").to_pylist()) == set(expected)
    assert last_record(output)["legacy_files"] == 2  # both files kept their keys

    os.utime(catalog / "b.parquet", (1_000_000_000, 1_000_000_000))
    code, out, err = run_job(job(str(catalog), output), capsys)
    assert code == EXIT_SETUP, err
    assert "b.parquet: committed: 4 rows of 1 row group(s), version key" in err
    assert "older voxray" in err


def put(bucket: str, key: str, data: bytes, part_size: int | None = None) -> str:
    """Upload ``data`` (in parts of ``part_size`` bytes when given); its ETag."""
    client = boto3.client("s3")
    if part_size is None:
        return client.put_object(Bucket=bucket, Key=key, Body=data)["ETag"]
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for number, start in enumerate(range(0, len(data), part_size), start=1):
        chunk = data[start : start + part_size]
        etag = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=chunk
        )["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    done = client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )
    return done["ETag"]


def test_s3_reupload_with_another_etag_redoes_nothing(ray_local, s3_bucket, capsys):
    """The same bytes uploaded again, once whole and once in parts (a new ETag):
    nothing redone; the input spelled s3a:// and with // is the same input."""
    catalog, output = f"s3://{s3_bucket}/catalog", f"s3://{s3_bucket}/grids"
    expected = make_catalog(catalog, files=2)
    code, _, err = run_job(job(catalog, output), capsys)
    assert code == 0, err
    check_every_row_once(output, expected)
    key = "catalog/part-00000.parquet"
    data = boto3.client("s3").get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    whole = put(s3_bucket, key, data)
    nothing_to_do(catalog, output, expected, capsys)
    parts = put(s3_bucket, key, data + b"", part_size=5 * 1024 * 1024)
    if len(data) <= 5 * 1024 * 1024:  # one part: still a multipart ETag ("...-1")
        assert parts != whole and parts.strip('"').endswith("-1")
    nothing_to_do(catalog, output, expected, capsys)
    nothing_to_do(f"s3a://{s3_bucket}//catalog/", output, expected, capsys)


def test_fragment_keys_are_pinned():
    """The key format helpers agree on: name (12 hex of the canonical URL),
    content (16 hex of the footer digest), row group."""
    digest = "0123456789abcdef" * 2
    key = plan.fragment_key("/data/catalog/a.parquet", digest, 3)
    name = hashlib.sha256(b"/data/catalog/a.parquet").hexdigest()[:12]
    assert key == f"{name}-0123456789abcdef-3"
    with pytest.raises(ValueError, match="footer digest"):
        plan.fragment_key("/x.parquet", "", 0)
    assert plan.legacy_content(10, "mtime:1") == hashlib.sha256(b"10:mtime:1").hexdigest()[:8]
