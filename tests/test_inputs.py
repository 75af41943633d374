"""The input scan and reader (pipeline.inputs): every footer read, unreadable
files named while the others are scanned, each accepted type normalized to the
canonical one and each refused type named with its file and column, Hive-style
folders never overriding a file's own columns; on local disk and on S3 (moto
server on loopback).

Run as a script, it measures the scan's cost instead (files of 4 rows in a temp
folder, or in a moto server's bucket; the listing and the scan in a fresh process):
``PYTHONPATH=. python tests/test_inputs.py local 10000`` or
``PYTHONPATH=. python tests/test_inputs.py s3 1000 [--details] [--threads 32]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import inputs, io

VIEW = b"\x89PNG\r\n\x1a\n" + bytes(range(40))  # bytes only: the scan never decodes


def table(n: int = 4, start: int = 0, **extra: pa.Array) -> pa.Table:
    """``n`` canonical rows (ids ``o<start>``...) plus ``extra`` columns."""
    columns = {
        "object_id": pa.array([f"o{start + i}" for i in range(n)], pa.string()),
        "views": pa.array([[VIEW, VIEW + bytes([i])] for i in range(n)], pa.list_(pa.binary())),
        **extra,
    }
    return pa.table(columns)


def write(path: Path, data: pa.Table, **kwargs) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, path, **kwargs)
    return str(path)


def test_scan_reads_every_footer(tmp_path):
    a = write(tmp_path / "a.parquet", table(10), row_group_size=4)
    b = write(tmp_path / "sub" / "b.parquet", table(3, start=10, sku=pa.array([1, 2, 3])))
    found = inputs.scan([a, b], {}, threads=2)
    assert found.ok and not found.unreadable and not found.problems
    assert [f.url for f in found.files] == [a, b]
    first, second = found.files
    assert (first.num_rows, first.row_groups) == (10, (4, 4, 2))
    assert (second.num_rows, second.row_groups) == (3, (3,))
    assert first.size == os.path.getsize(a)
    assert first.version == f"mtime:{os.stat(a).st_mtime}"
    assert found.total_rows == 13
    assert found.columns == ["object_id", "views", "sku"]
    assert found.schema.field("sku").type == pa.int64()
    assert list(found.row_groups()) == [(a, 0, 4), (a, 1, 4), (a, 2, 2), (b, 0, 3)]
    report = found.report()
    assert "2 usable (13 rows, 4 row groups), 0 unreadable" in report
    assert "sku (int64)" in report


def test_unreadable_files_are_named_and_the_rest_scanned(tmp_path):
    good = [write(tmp_path / f"good{i}.parquet", table(4, start=4 * i)) for i in range(3)]
    data = Path(good[0]).read_bytes()
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.parquet"
    text.write_text("object_id,views\nx,y\n")
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    # A corrupt footer: the metadata's bytes scrambled, its length and magic kept.
    footer_len = int.from_bytes(data[-8:-4], "little")
    corrupt = tmp_path / "corrupt_footer.parquet"
    corrupt.write_bytes(data[: -8 - footer_len] + b"\xff" * footer_len + data[-8:])
    files = [good[0], str(truncated), good[1], str(text), str(corrupt), str(empty), good[2]]

    found = inputs.scan(files, {}, threads=4)
    assert [f.url for f in found.files] == good
    assert [u.url for u in found.unreadable] == [
        str(truncated),
        str(text),
        str(corrupt),
        str(empty),
    ]
    for bad in found.unreadable:
        assert "\n" not in bad.reason and len(bad.reason) <= inputs.REASON_CHARS
        assert bad.reason.split(":")[0] in ("ArrowInvalid", "OSError"), bad.reason
    assert found.total_rows == 12 and not found.ok and not found.problems
    report = found.report()
    assert "4 unreadable" in report and f"{corrupt}: " in report and f"{text}: " in report


def test_a_corrupt_data_page_is_named_when_its_row_group_is_read(tmp_path):
    url = write(tmp_path / "pages.parquet", table(4), compression="none")
    data = bytearray(Path(url).read_bytes())
    data[4:24] = b"\xff" * 20  # the first column chunk's page header; the footer is intact
    Path(url).write_bytes(bytes(data))
    found = inputs.scan([url], {})
    assert found.ok  # only the footer is read
    with pytest.raises(inputs.InputReadError) as caught:
        inputs.read_row_group(url, 0, found.schema, {})
    assert caught.value.url == url and caught.value.row_group == 0
    assert url in str(caught.value) and "row group 0" in str(caught.value)
    with pytest.raises(inputs.InputReadError, match="row group 0"):
        list(inputs.iter_batches(url, 0, 2, found.schema, {}))


@pytest.mark.parametrize("kind", [pa.int64(), pa.int8(), pa.uint64(), pa.int32()])
def test_integer_ids_become_decimal_strings(tmp_path, kind):
    ids = pa.array([0, 42, None, 127], kind)
    url = write(tmp_path / "ints.parquet", table(4).set_column(0, "object_id", ids))
    found = inputs.scan([url], {})
    assert found.ok, found.problems
    read = inputs.read_row_group(url, 0, found.schema, {})
    assert read.schema == found.schema
    assert read.column("object_id").to_pylist() == ["0", "42", None, "127"]
    big = pa.table({"object_id": pa.array([2**64 - 1], pa.uint64())})
    assert inputs.normalize(big).column("object_id").to_pylist() == ["18446744073709551615"]


def test_single_binary_views_become_one_view_lists(tmp_path):
    views = pa.array([VIEW, None, VIEW + b"x"], pa.binary())
    url = write(tmp_path / "one.parquet", table(3).set_column(1, "views", views))
    found = inputs.scan([url], {})
    assert found.ok, found.problems
    read = inputs.read_row_group(url, 0, found.columns, {})
    assert read.schema.field("views").type == pa.list_(pa.binary())
    assert read.column("views").to_pylist() == [[VIEW], None, [VIEW + b"x"]]
    large = pa.table({"views": pa.array([VIEW], pa.large_binary())})
    assert inputs.normalize(large).column("views").to_pylist() == [[VIEW]]


@pytest.mark.parametrize(
    "views",
    [
        pa.array([["aGVsbG8="]] * 2, pa.list_(pa.string())),
        pa.array(["/images/a.png"] * 2, pa.string()),
        pa.array([["a"]] * 2, pa.large_list(pa.large_string())),
    ],
)
def test_text_views_are_refused_naming_file_column_and_types(tmp_path, views):
    url = write(tmp_path / "text.parquet", table(2).set_column(1, "views", views))
    found = inputs.scan([url], {})
    (problem,) = found.schema_problems
    assert (problem.file, problem.column) == (url, "views")
    stored = str(pq.read_schema(url).field("views").type)  # list<element: string>
    assert problem.found == stored
    message = found.problems[0]
    assert url in message and "'views'" in message and stored in message
    assert "list<binary>" in message and "ambiguous" in message
    assert found.usable == [] and found.files[0].url == url and not found.ok
    with pytest.raises(inputs.InputTypeError, match="views"):
        inputs.normalize(table(2).set_column(1, "views", views))
    with pytest.raises(inputs.InputReadError, match="InputTypeError: column 'views'") as caught:
        inputs.read_row_group(url, 0, ["object_id", "views"], {})
    assert caught.value.url == url


def test_a_file_without_views_is_a_problem_naming_it(tmp_path):
    good = write(tmp_path / "a.parquet", table(4))
    bad = write(tmp_path / "b.parquet", table(4).drop_columns(["views"]))
    found = inputs.scan([good, bad], {})
    assert [str(p) for p in found.schema_problems] == found.problems
    (problem,) = found.schema_problems
    assert (problem.file, problem.column, problem.found) == (bad, "views", "missing")
    assert [f.url for f in found.usable] == [good]
    assert (found.total_rows, found.usable_rows) == (8, 4)
    assert [url for url, _, _ in found.row_groups()] == [good]
    assert "1 with schema problems" in found.report() and bad in found.report()


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("object_id", pa.array(["o0", "o1"], pa.large_string())),
        ("object_id", pa.array(["o0", "o1"], pa.string()).dictionary_encode()),
        ("object_id", pa.array([7, 8], pa.int64()).dictionary_encode()),
        ("views", pa.array([[VIEW], [VIEW, VIEW]], pa.large_list(pa.binary()))),
        ("views", pa.array([[VIEW], [VIEW, VIEW]], pa.list_(pa.large_binary()))),
        ("views", pa.array([[VIEW], [VIEW, VIEW]], pa.large_list(pa.large_binary()))),
        ("views", pa.array([[VIEW, VIEW]] * 2, pa.list_(pa.binary(), 2))),
        ("voxels", pa.array([bytes(4096), None], pa.binary(4096))),
        ("voxels", pa.array([bytes(4096), None], pa.large_binary())),
        ("voxels", pa.nulls(2)),
    ],
)
def test_large_dictionary_and_fixed_types_are_accepted(tmp_path, column, values):
    data = with_column(table(2), column, values)
    url = write(tmp_path / "t.parquet", data)
    found = inputs.scan([url], {})
    assert found.ok, found.problems
    for read in (
        inputs.read_row_group(url, 0, found.schema, {}),
        inputs.normalize(pq.read_table(url), found.schema),
        inputs.normalize(data, found.schema),
    ):
        assert read.schema == found.schema
        assert read.column(column).type == inputs.CANONICAL.field(column).type
        expected = values.to_pylist()
        if column == "object_id":
            expected = [None if v is None else str(v) for v in expected]
        assert read.column(column).to_pylist() == expected


def with_column(data: pa.Table, column: str, values: pa.Array) -> pa.Table:
    """``data`` with ``column`` set to ``values`` (replaced, or added at the end)."""
    if column in data.column_names:
        return data.set_column(data.column_names.index(column), column, values)
    return data.append_column(column, values)


@pytest.mark.parametrize(
    ("column", "values", "words"),
    [
        ("voxels", pa.array([bytes(100)] * 2, pa.binary(100)), "size check"),
        ("voxels", pa.array([[1, 0]] * 2, pa.list_(pa.uint8())), "packed bits"),
        ("object_id", pa.array([1.0, 2.0]), "fractional"),
        ("object_id", pa.array([b"a", b"b"]), "binary ids"),
        ("object_id", pa.nulls(2), "null type"),
        ("views", pa.nulls(2), "null type"),
    ],
)
def test_other_types_are_refused(tmp_path, column, values, words):
    data = with_column(table(2), column, values)
    url = write(tmp_path / "t.parquet", data)
    (problem,) = inputs.scan([url], {}).schema_problems
    stored = str(pq.read_schema(url).field(column).type)
    assert (problem.file, problem.column, problem.found) == (url, column, stored)
    assert problem.expected == inputs.EXPECTED[column] and words in problem.note


def test_hive_folders_never_override_a_files_own_column(tmp_path):
    url = write(
        tmp_path / "category=chairs" / "part-0.parquet",
        table(3, category=pa.array(["sofa"] * 3), shop=pa.array(["x", "y", "z"])),
    )
    found = inputs.scan(io.find_files(str(tmp_path), ".parquet"), {})
    assert found.ok and found.columns == ["object_id", "views", "category", "shop"]
    read = inputs.read_row_group(url, 0, found.schema, {})
    assert read.column("category").to_pylist() == ["sofa"] * 3
    (batch,) = inputs.iter_batches(url, 0, 10, found.schema, {})
    assert batch.column("category").to_pylist() == ["sofa"] * 3
    # A file without the column gets nulls, not the folder's value.
    other = write(tmp_path / "category=tables" / "part-1.parquet", table(2))
    assert inputs.read_row_group(other, 0, found.schema, {}).column("category").to_pylist() == [
        None,
        None,
    ]


def test_normalize_leaves_canonical_input_alone():
    data = table(3, voxels=pa.array([bytes(4096)] * 3, pa.binary()), sku=pa.array([1, 2, 3]))
    assert inputs.normalize(data) is data
    assert inputs.normalize(data, data.schema) is data
    read = pq.read_table(pa.BufferReader(parquet_bytes(data)))  # list<element: binary>
    assert inputs.normalize(read) is read
    assert inputs.normalize(read).equals(data)


def parquet_bytes(data: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(data, sink)
    return sink.getvalue().to_pybytes()


def test_carried_columns_are_a_union_widened_without_changing_values(tmp_path):
    a = write(tmp_path / "a.parquet", table(2, sku=pa.array([1, 2], pa.int32())))
    b = write(
        tmp_path / "b.parquet",
        table(2, sku=pa.array([2**40, 3], pa.int64()), color=pa.array(["red", None])),
    )
    c = write(
        tmp_path / "c.parquet",
        table(
            2,
            cameras=pa.array([[1.0], [2.0]]),
            color=pa.array(["blue", "green"]).cast(pa.large_string()),
        ),
    )
    d = write(tmp_path / "d.parquet", table(2, voxels=pa.array([bytes(4096)] * 2)))
    found = inputs.scan([a, b, c, d], {})
    assert found.ok, found.problems
    assert found.schema == pa.schema(
        [
            ("object_id", pa.string()),
            ("views", pa.list_(pa.binary())),
            ("voxels", pa.binary()),
            ("sku", pa.int64()),
            ("color", pa.large_string()),
        ]
    )
    reads = [inputs.read_row_group(u, 0, found.schema, {}) for u in (a, b, c, d)]
    assert all(r.schema == found.schema for r in reads)
    whole = pa.concat_tables(reads)  # one schema: the batches concatenate
    assert whole.column("sku").to_pylist() == [1, 2, 2**40, 3, None, None, None, None]
    assert whole.column("color").to_pylist() == [
        None,
        None,
        "red",
        None,
        "blue",
        "green",
        None,
        None,
    ]


def test_a_carried_column_whose_type_differs_names_both_files(tmp_path):
    a = write(tmp_path / "a.parquet", table(2, sku=pa.array([1, 2])))
    b = write(tmp_path / "b.parquet", table(2, sku=pa.array(["x1", "x2"])))
    c = write(tmp_path / "c.parquet", table(2, sku=pa.array([[1], [2]])))
    found = inputs.scan([a, b, c], {})
    assert [(p.file, p.column, p.found) for p in found.schema_problems] == [
        (b, "sku", "string"),
        (c, "sku", "list<element: int64>"),
    ]
    assert a in found.problems[0] and "int64" in found.problems[0]
    assert [f.url for f in found.usable] == [a]
    assert found.schema.field("sku").type == pa.int64()


@pytest.mark.parametrize(
    ("a", "b", "widened"),
    [
        (pa.int32(), pa.int64(), pa.int64()),
        (pa.uint8(), pa.int16(), pa.int16()),
        (pa.uint64(), pa.int64(), None),
        (pa.int64(), pa.float64(), None),
        (pa.float32(), pa.float64(), pa.float64()),
        (pa.null(), pa.string(), pa.string()),
        (pa.string(), pa.large_string(), pa.large_string()),
        (pa.binary(), pa.large_binary(), pa.large_binary()),
        (pa.string(), pa.binary(), None),
        (pa.int64(), pa.string(), None),
        (pa.timestamp("ms"), pa.timestamp("us"), None),
    ],
)
def test_widening_rules(a, b, widened):
    assert inputs.widen(a, b) == widened
    assert inputs.widen(b, a) == widened


def test_casts_to_32_bit_offsets_go_in_slices(monkeypatch):
    """A large_list<large_binary> batch over 2 GiB is cast slice by slice
    (checked here with a tiny limit instead of 2 GiB of views)."""
    monkeypatch.setattr(inputs, "MAX_CAST_BYTES", 200)
    views = [[VIEW * 3] * (i % 3 + 1) for i in range(20)]
    data = pa.table(
        {
            "object_id": pa.array([str(i) for i in range(20)], pa.large_string()),
            "views": pa.array(views, pa.large_list(pa.large_binary())),
        }
    )
    out = inputs.normalize(data)
    assert out.column("views").num_chunks > 1
    assert out.column("views").type == pa.list_(pa.binary())
    assert out.column("views").to_pylist() == views
    single = pa.table({"views": pa.array([VIEW * 3] * 20, pa.large_binary())})
    assert inputs.normalize(single).column("views").to_pylist() == [[VIEW * 3]] * 20


def test_iter_batches_streams_one_row_group(tmp_path):
    url = write(tmp_path / "a.parquet", table(10, sku=pa.array(range(10))), row_group_size=6)
    found = inputs.scan([url], {})
    batches = list(inputs.iter_batches(url, 0, 4, found.schema, {}))
    assert [b.num_rows for b in batches] == [4, 2]
    assert all(b.schema == found.schema for b in batches)
    (rest,) = inputs.iter_batches(url, 1, 100, ["object_id", "voxels"], {})
    assert rest.column_names == ["object_id", "voxels"]
    assert rest.column("object_id").to_pylist() == ["o6", "o7", "o8", "o9"]
    assert rest.column("voxels").type == pa.binary() and rest.column("voxels").null_count == 4
    by_name = inputs.read_row_group(url, 1, ["sku", "object_id", "color"], {})
    assert by_name.schema == pa.schema(
        [("sku", pa.int64()), ("object_id", pa.string()), ("color", pa.null())]
    )
    assert by_name.column("sku").to_pylist() == [6, 7, 8, 9]


def test_many_files_share_one_schema_and_keep_their_order(tmp_path):
    urls = [write(tmp_path / f"{i:04d}.parquet", table(2, start=2 * i)) for i in range(150)]
    found = inputs.scan(urls[::-1], {}, threads=8)
    assert [f.url for f in found.files] == urls[::-1]
    assert len({id(f.schema) for f in found.files}) == 1
    assert found.total_rows == 300


def test_scan_and_read_on_s3(s3_bucket, tmp_path):
    fs, _ = io.filesystem(f"s3://{s3_bucket}/x")
    good = table(5, category=pa.array(["sofa"] * 5))
    fs.pipe_file(f"{s3_bucket}/in/category=chairs/a.parquet", parquet_bytes(good))
    fs.pipe_file(f"{s3_bucket}/in/b.parquet", parquet_bytes(table(2, start=5)))
    fs.pipe_file(f"{s3_bucket}/in/broken.parquet", parquet_bytes(good)[:100])
    files = io.find_files(f"s3://{s3_bucket}/in", ".parquet")
    gone = f"s3://{s3_bucket}/in/gone.parquet"
    found = inputs.scan([*files, gone], {}, threads=4)
    a, b = (f"s3://{s3_bucket}/in/{n}" for n in ("category=chairs/a.parquet", "b.parquet"))
    assert [f.url for f in found.files] == [b, a]  # find_files sorts
    assert [u.url for u in found.unreadable] == [f"s3://{s3_bucket}/in/broken.parquet", gone]
    assert found.unreadable[1].reason.startswith("FileNotFoundError")
    assert not found.problems and found.total_rows == 7
    info = found.files[1]
    assert info.size == len(parquet_bytes(good))
    assert info.version.startswith("etag:") and '"' not in info.version
    read = inputs.read_row_group(a, 0, found.schema, {})
    assert read.column("category").to_pylist() == ["sofa"] * 5
    assert read.column("object_id").to_pylist() == [f"o{i}" for i in range(5)]
    with pytest.raises(inputs.InputReadError, match="broken.parquet"):
        inputs.read_row_group(f"s3://{s3_bucket}/in/broken.parquet", 0, found.schema, {})


def test_listing_details_spare_the_head_request(s3_bucket, monkeypatch):
    import s3fs

    fs, _ = io.filesystem(f"s3://{s3_bucket}/x")
    for i in range(3):
        fs.pipe_file(f"{s3_bucket}/in/{i}.parquet", parquet_bytes(table(2, start=2 * i)))
    listing = fs.find(f"{s3_bucket}/in", detail=True)
    details = {f"s3://{key}": entry for key, entry in listing.items()}
    calls = []
    call_s3 = s3fs.S3FileSystem._call_s3

    async def spy(self, method, *args, **kwargs):
        calls.append(getattr(method, "__name__", method))
        return await call_s3(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", spy)
    found = inputs.scan(sorted(details), {}, details=details)
    assert calls == ["get_object"] * 3
    assert found.ok and found.total_rows == 6
    assert [f.version for f in found.files] == [
        "etag:" + details[f.url]["ETag"].strip('"') for f in found.files
    ]
    calls.clear()
    again = inputs.scan(sorted(details), {})
    assert sorted(calls) == ["get_object"] * 3 + ["head_object"] * 3
    assert again.files == found.files


def test_footers_read_in_parts_summarize_to_the_same_scan(tmp_path):
    import pickle

    urls = [write(tmp_path / f"{i}.parquet", table(2, start=2 * i)) for i in range(6)]
    (tmp_path / "bad.parquet").write_bytes(b"nope")
    urls.insert(3, str(tmp_path / "bad.parquet"))
    whole = inputs.scan(urls, {})
    parts = [pickle.loads(pickle.dumps(inputs.read_footers(urls[i : i + 3]))) for i in (0, 3, 6)]
    merged = inputs.summarize([footer for part in parts for footer in part])
    assert merged.files == whole.files and merged.unreadable == whole.unreadable
    assert merged.schema == whole.schema and len({id(f.schema) for f in merged.files}) == 1


def test_an_unreachable_endpoint_is_a_storage_error_not_a_bad_file():
    from conftest import free_port

    options = {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{free_port()}"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    urls = [f"s3://nowhere/{i}.parquet" for i in range(3)]
    with pytest.raises(io.StorageError, match="unreachable"):
        inputs.scan(urls, options, threads=2, retry_seconds=0)
    # Readers keep the storage's own (transient) error, so a caller can ride it out.
    for read in (
        lambda: inputs.read_row_group(urls[0], 0, ["object_id"], options, retry_seconds=0),
        lambda: list(inputs.iter_batches(urls[0], 0, 8, ["object_id"], options, retry_seconds=0)),
    ):
        with pytest.raises(Exception) as caught:
            read()
        assert io.is_transient(caught.value)
        assert f"while reading input {urls[0]} (row group 0)" in caught.value.__notes__
