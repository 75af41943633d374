"""The input listing follows the Parquet world's folder conventions: names
starting with ``_`` or ``.`` are never input (Spark's ``_SUCCESS`` and
``_temporary`` attempts, ``_staging``, ``.crc`` files, hidden folders), a file
is Parquet by its suffix (any case) or, without one, by its content (Hive's
``000000_0``), symbolic links to folders are followed with loops found, and
whatever is left out is named in the report and the run's record. On local disk
and on S3 (moto), in the listing itself and in a whole run of the job."""

from __future__ import annotations

import functools
import io as bytes_io
import json
import os

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import io, summary
from pipeline.job import scan_input
from pipeline.results import Output, read_manifests

SEED = 11
UUID = "4f1c2a9e-0d7b-4c55-9a3e-1b2c3d4e5f60"
ATTEMPT = "attempt_202612021200_0001_m_000000_0"


@functools.cache
def view(i: int) -> bytes:
    import shapes

    return shapes.generate_object(SEED, i, views=1, image_size=64)["views"][0]


def rows(first: int, n: int) -> pa.Table:
    """``n`` catalog rows, ids ``obj-<first>`` on, one small view each."""
    return pa.table(
        {
            "object_id": [f"obj-{first + i:02d}" for i in range(n)],
            "views": pa.array([[view(i % 4)] for i in range(n)], pa.list_(pa.binary())),
            "sku": pa.array(range(first, first + n), pa.int64()),
        }
    )


def parquet(table: pa.Table) -> bytes:
    buffer = bytes_io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def spark_like(url: str) -> set[str]:
    """A folder as Spark, Hive and other tools leave them: the ids its input
    rows have (each once); everything else must be left out."""
    fs, root = fsspec.core.url_to_fs(url, **io.storage_options(url))
    files = {
        f"part-00000-{UUID}-c000.snappy.parquet": parquet(rows(0, 2)),
        f"part-00001-{UUID}-c000.snappy.parquet": parquet(rows(2, 2)),
        "category=chairs/000000_0": parquet(rows(4, 2)),  # Hive: no suffix
        "category=chairs/000001_0_copy_1": parquet(rows(6, 1)),
        "part.PARQUET": parquet(rows(7, 1)),
        "x.parq": parquet(rows(8, 1)),
        "_year=2020/y.pq": parquet(rows(9, 1)),  # a partition folder starting with _
        # never input: each would repeat rows or is not Parquet
        f".part-00000-{UUID}-c000.snappy.parquet.crc": b"crc\0\1",
        "_SUCCESS": b"",
        f"_temporary/0/_temporary/{ATTEMPT}/part-00000-{UUID}-c000.snappy.parquet": parquet(
            rows(0, 2)
        ),
        "_staging/part-0.parquet": parquet(rows(2, 2)),
        ".hidden/part-0.parquet": parquet(rows(4, 2)),
        "_common_metadata": parquet(rows(0, 0)),
        "_metadata": parquet(rows(0, 0)),
        "README": b"written by the nightly export\n",  # no suffix, not Parquet
        "notes.json": b"{}",
        "category=chairs/data.csv": b"a,b\n",
    }
    for name, data in files.items():
        fs.makedirs(f"{root}/{os.path.dirname(name)}".rstrip("/"), exist_ok=True)
        fs.pipe_file(f"{root}/{name}", data)
    return {f"obj-{i:02d}" for i in range(10)}


LEFT_OUT = {  # what the listing leaves out, by path under the input, and why
    f".part-00000-{UUID}-c000.snappy.parquet.crc": "starts with '.'",
    "_SUCCESS": "starts with '_'",
    "_temporary": "a folder whose name starts with '_'",
    "_staging": "a folder whose name starts with '_'",
    ".hidden": "a folder whose name starts with '.'",
    "_common_metadata": "starts with '_'",
    "_metadata": "starts with '_'",
    "notes.json": "not a Parquet file name",
    "category=chairs/data.csv": "not a Parquet file name",
}
BARE = {"category=chairs/000000_0", "category=chairs/000001_0_copy_1", "README"}


def relative(url: str, root: str) -> str:
    return url[len(root) :].lstrip("/")


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_listing_leaves_out_what_spark_and_hive_leave_out(storage, tmp_path, request):
    if storage == "s3":
        root = f"s3://{request.getfixturevalue('s3_bucket')}/catalog"
    else:
        root = os.path.realpath(tmp_path / "catalog")
    spark_like(root)

    listing = io.list_input(root)
    names = {relative(f, root) for f in listing.files}
    assert names == {
        f"part-00000-{UUID}-c000.snappy.parquet",
        f"part-00001-{UUID}-c000.snappy.parquet",
        "part.PARQUET",
        "x.parq",
        "_year=2020/y.pq",
        *BARE,
    }
    assert {relative(f, root) for f in listing.bare} == BARE
    skipped = {relative(url, root): why for url, why in listing.skipped}
    assert set(skipped) == set(LEFT_OUT)  # a hidden folder once, not each file in it
    for name, why in LEFT_OUT.items():
        assert why in skipped[name], (name, skipped[name])
    assert "_temporary/0" not in listing.report(limit=100)
    if storage == "s3":  # the listing's entries spare each footer read a HEAD
        assert set(listing.details) == set(listing.files)
        assert all(d["size"] > 0 and d["ETag"] for d in listing.details.values())
    assert listing.files == sorted(listing.files) and all(
        f == io.canonical_url(f) for f in listing.files
    )

    # a single file is that file, whatever its name
    single = io.join(root, "category=chairs/000000_0")
    assert io.list_input(single).files == [io.canonical_url(single)]


def test_symlinked_folders_are_followed_once_and_loops_named(tmp_path):
    root, elsewhere = tmp_path / "catalog", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "a.parquet").write_bytes(parquet(rows(0, 1)))
    (elsewhere / "b.parquet").write_bytes(parquet(rows(1, 1)))
    os.symlink("../elsewhere", root / "linked")
    os.symlink("../elsewhere", root / "linked-again")  # the same folder by a second link
    os.symlink("../catalog", elsewhere / "up")  # a loop, once walked through `linked`
    os.symlink("missing", root / "gone.parquet")

    listing = io.list_input(str(root))
    assert listing.files == sorted(
        [str((root / "a.parquet").resolve()), str((elsewhere / "b.parquet").resolve())]
    )
    skipped = dict(listing.skipped)
    assert "a broken symbolic link" in skipped[str(root / "gone.parquet")]
    twice = [why for url, why in listing.skipped if url.endswith(("/linked", "/linked-again"))]
    assert len(twice) == 1 and "the same folder as" in twice[0]
    loops = [why for url, why in listing.skipped if url.endswith("/up")]
    assert len(loops) == 1 and "loop" in loops[0]
    # another spelling of the input lists the same files
    spelled = io.list_input(f"file://{tmp_path}/./catalog//")
    assert spelled.files == listing.files


def test_a_bare_file_is_parquet_by_content(tmp_path):
    """No suffix: not Parquet at all is left out and named; a damaged Parquet
    file (PAR1 at its start, its footer cut off) stays an unreadable file."""
    root = tmp_path / "catalog"
    root.mkdir()
    (root / "LICENSE").write_bytes(b"MIT\n")
    (root / "_SUCCESS").write_bytes(b"")
    with pytest.raises(
        io.StorageError, match=r"holds no Parquet files.\n(.|\n)*LICENSE: not Parquet"
    ):
        scan_input(str(root), {})

    (root / "category=chairs").mkdir()
    (root / "category=chairs" / "000000_0").write_bytes(parquet(rows(0, 2)))
    scan = scan_input(str(root), {})
    assert [f.url for f in scan.files] == [str(root / "category=chairs" / "000000_0")]
    assert dict(scan.skipped)[str(root / "LICENSE")] == "not Parquet (no PAR1 at its start)"
    assert len(scan.skipped) == 2  # and _SUCCESS

    (root / "000001_0").write_bytes(parquet(rows(2, 2))[:-100])
    with pytest.raises(io.StorageError, match="000001_0"):
        scan_input(str(root), {})
    # a file with a Parquet suffix that is not Parquet stays unreadable, as before
    (root / "000001_0").unlink()
    (root / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(io.StorageError, match="broken.parquet"):
        scan_input(str(root), {})


def run_job(args: list[str], capsys) -> tuple[int, str, str]:
    from jobs.reconstruct import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_a_run_over_a_spark_folder_reads_every_row_once(
    storage, ray_local, tmp_path, request, capsys
):
    if storage == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        root, output = f"s3://{bucket}/catalog", f"s3://{bucket}/grids"
    else:
        root, output = str(tmp_path / "catalog"), str(tmp_path / "grids")
    ids = spark_like(root)
    ignored = len(LEFT_OUT) + 1  # and README, found not Parquet by its content
    if storage == "local":  # a folder linked twice, and a loop back into the input
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "part-0.parquet").write_bytes(parquet(rows(10, 2)))
        os.symlink(elsewhere, tmp_path / "catalog" / "linked")
        os.symlink(elsewhere, tmp_path / "catalog" / "linked-again")
        os.symlink(tmp_path / "catalog", elsewhere / "up")
        ids |= {"obj-10", "obj-11"}
        ignored += 2
    args = ["--input", root, "--output", output, "--stand-in", "latency_ms=0"]
    code, out, err = run_job(args, capsys)
    assert code == 0, err
    table = read_manifests(output, ["object_id", "status", "sku"])
    assert sorted(table.column("object_id").to_pylist()) == sorted(ids)  # each once
    assert set(table.column("status").to_pylist()) == {"ok"}

    assert f"{ignored} file(s) or folder(s) under the input are not read" in out
    assert f"ignored   {ignored} file(s) or folder(s)" in out
    record = summary.read_runs(output)[-1]
    assert record["ignored_files"]["count"] == ignored
    assert any("README: not Parquet" in line for line in record["ignored_files"]["first"])
    assert (
        json.loads(io.read_bytes(io.join(output, "_SUCCESS")))["ignored_files"]
        == record["ignored_files"]
    )
    # the reader's catalog is the same files
    assert Output(output).catalog_dataset().count_rows() == len(ids)
