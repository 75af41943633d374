"""Carried columns cannot collide and cannot drift: every input column name is
carried under a name no output or internal column takes, in any case
(``pipeline.columns.carried_name``), so no input crashes a read task, loses a
column or is shadowed in DuckDB; names equal up to case are refused, named; a
carried column whose type differs from what the output holds is refused before
any work (exit 3), unless it widens into the held type without changing a value;
and an output that already mixes types (written before this check) gets a clear
error from its readers, never an ArrowTypeError."""

from __future__ import annotations

import itertools
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_listing import parquet, rows, run_job
from test_plan import positional
from test_sink import model_rows

from pipeline import index, io, plan, resume
from pipeline.columns import (
    INPUT_COLUMNS,
    PREFIX,
    RESERVED_COLUMNS,
    TypeDrift,
    agree_with_output,
    carried_name,
)
from pipeline.decode import DecodeConfig, decode_batch
from pipeline.job import scan_input
from pipeline.layout import MANIFEST_SCHEMA
from pipeline.results import Output
from pipeline.sink import PAYLOAD_COLUMNS, write_shard

STAND_IN = ["--stand-in", "latency_ms=0"]


def names_to_try() -> list[str]:
    """Every reserved name in three cases, with one and two prefixes, and
    ordinary names: the names a rule could confuse."""
    stems = [*RESERVED_COLUMNS, "sku", "category", "Price", "input", "input_", "inputs", "x"]
    out = set()
    for stem in stems:
        for name in (stem, stem.upper(), stem.title()):
            out |= {name, PREFIX + name, "INPUT_" + name, "Input_" + PREFIX + name}
    return sorted(out)


def test_the_carried_name_rule_is_injective_and_collides_with_nothing():
    assert not any(r.lower().startswith(PREFIX) for r in RESERVED_COLUMNS)  # the proof's premise
    names = names_to_try()
    carried = [carried_name(n) for n in names]
    assert len(set(carried)) == len(names)  # injective
    for a, b in itertools.combinations(names, 2):  # and apart in any case when the inputs are
        if a.lower() != b.lower():
            assert carried_name(a).lower() != carried_name(b).lower(), (a, b)
    reserved = {r.lower() for r in RESERVED_COLUMNS}
    assert not any(c.lower() in reserved for c in carried)
    # ordinary names are carried unchanged (DESIGN: "carried into the manifest unchanged")
    for name in ("sku", "category", "Price", "inputs", "color_input", "x"):
        assert carried_name(name) == name
    # every column a stage adds is reserved: the reader's, decode's, the model's, the sink's
    assert {plan.READ_ERROR, *MANIFEST_SCHEMA.names, *PAYLOAD_COLUMNS, "pixels"} <= set(
        RESERVED_COLUMNS
    )
    raw = pa.table({"object_id": ["a"], "views": pa.array([[b"x"]], pa.list_(pa.binary()))})
    added = decode_batch(raw, DecodeConfig(image_size=16)).column_names
    assert set(added) - set(INPUT_COLUMNS) <= set(RESERVED_COLUMNS)


COLLIDING = {  # input column -> its manifest name
    "read_error": "input_read_error",  # crashed every read task ("exists 2 times")
    "row_key": "input_row_key",
    "input_row_key": "input_input_row_key",  # with row_key: crashed the same way
    "status": "input_status",
    "input_status": "input_input_status",  # with status: status was dropped silently
    "OBJECT_ID": "input_OBJECT_ID",  # shadowed in DuckDB
    "Shard": "input_Shard",
    "sku": "sku",
}


def test_colliding_input_columns_are_all_carried_and_readable_in_duckdb(
    ray_local, tmp_path, capsys
):
    catalog, output = tmp_path / "catalog", str(tmp_path / "grids")
    catalog.mkdir()
    table = rows(0, 4)
    for name in COLLIDING:
        if name != "sku":
            table = table.append_column(name, pa.array([f"{name}-{i}" for i in range(4)]))
    (catalog / "part-0.parquet").write_bytes(parquet(table))

    code, out, err = run_job(["--input", str(catalog), "--output", output, *STAND_IN], capsys)
    assert code == 0, err
    manifests = Output(output).manifests()
    assert sorted(manifests.column("object_id").to_pylist()) == [f"obj-{i:02d}" for i in range(4)]
    assert set(manifests.column("status").to_pylist()) == {"ok"}
    for row in manifests.to_pylist():
        i = int(row["object_id"][-2:])
        for name, carried in COLLIDING.items():
            assert row[carried] == (i if name == "sku" else f"{name}-{i}"), (name, row)
        assert row["row_key"].endswith(f":{i}")  # the job's own key, not the input's
    # DuckDB ignores case: the manifest's columns and the carried ones stay apart
    sql = (
        Output(output)
        .sql(
            "select object_id, OBJECT_ID as same, input_object_id, STATUS, input_status, "
            "input_input_status from manifests order by 1"
        )
        .fetchall()
    )
    assert sql == [
        (f"obj-{i:02d}", f"obj-{i:02d}", f"OBJECT_ID-{i}", "ok", f"status-{i}",
         f"input_status-{i}")
        for i in range(4)
    ]  # fmt: skip


def test_names_equal_up_to_case_are_refused_naming_both(tmp_path, capsys):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    table = rows(0, 1).append_column("SKU", pa.array(["a"]))
    (catalog / "part-0.parquet").write_bytes(parquet(table))
    with pytest.raises(io.StorageError, match=r"'SKU' is a second spelling of 'sku'"):
        scan_input(str(catalog), {})
    # across files too; the job stops before any work (exit 3)
    (catalog / "part-0.parquet").write_bytes(parquet(rows(0, 1)))
    (catalog / "part-1.parquet").write_bytes(parquet(rows(1, 1).rename_columns(
        ["object_id", "views", "SKU"])))  # fmt: skip
    output = str(tmp_path / "grids")
    code, out, err = run_job(["--input", str(catalog), "--output", output, *STAND_IN], capsys)
    assert code == 3 and "part-1.parquet" in err and "second spelling of 'sku'" in err, err
    assert not io.list_files(io.join(output, "manifests"), ".parquet")


def catalog_with(folder, first: int, sku: pa.Array) -> str:
    os.makedirs(folder)
    table = rows(first, len(sku)).set_column(2, "sku", sku)
    table = table.append_column("Status", pa.array(["carried"] * len(sku)))
    (folder / "part-0.parquet").write_bytes(parquet(table))
    return str(folder)


def test_a_carried_type_that_drifts_is_refused_and_one_that_widens_is_held(
    ray_local, tmp_path, capsys
):
    output = str(tmp_path / "grids")
    first = catalog_with(tmp_path / "a", 0, pa.array([1, 2], pa.int64()))
    code, out, err = run_job(["--input", first, "--output", output, *STAND_IN], capsys)
    assert code == 0, err
    manifests = io.list_files(io.join(output, "manifests"), ".parquet")

    # sku as text in a later catalog: refused before any work, naming file, column, both types
    text = catalog_with(tmp_path / "b", 2, pa.array(["3", "4"]))
    code, out, err = run_job(["--input", text, "--output", output, *STAND_IN], capsys)
    assert code == 3, err
    assert (
        f"{os.path.realpath(text)}/part-0.parquet" in err
        and "'sku' is string" in err
        and "int64" in err
    ), err
    assert io.list_files(io.join(output, "manifests"), ".parquet") == manifests

    # int32 fits the held int64 without a change: read as int64, every manifest agrees
    narrow = catalog_with(tmp_path / "c", 4, pa.array([5, 6], pa.int32()))
    code, out, err = run_job(["--input", narrow, "--output", output, *STAND_IN], capsys)
    assert code == 0, err
    for url in io.list_files(io.join(output, "manifests"), ".parquet"):
        assert pq.read_schema(url).field("sku").type == pa.int64()
    table = Output(output).manifests(["object_id", "sku", "input_Status"])
    assert sorted(table.column("sku").to_pylist()) == [1, 2, 5, 6]
    assert Output(output).sql("select input_status from manifests").fetchall() == [("carried",)] * 4


def test_an_output_that_already_mixes_types_is_named_by_its_readers(tmp_path):
    """Written before the check existed: sku int64 in one manifest, string in
    another. Readers and the fold say which column and types; a run is refused."""
    out = str(tmp_path / "out")
    write_shard(positional(model_rows(["a", "b"], ["ok", "ok"]), "fa"), out)
    later = model_rows(["c", "d"], ["ok", "ok"])
    later = later.set_column(later.schema.get_field_index("sku"), "sku", pa.array(["x", "y"]))
    write_shard(positional(later, "fb"), out)

    for read in (
        lambda: Output(out).manifests(),
        lambda: Output(out).sql("select * from manifests"),
        lambda: index.fold(out),
    ):
        with pytest.raises(
            index.MixedTypes, match=r"'sku' is (int64|string) in .* and (string|int64)"
        ):
            read()
    assert Output(out).manifests(["object_id", "status"]).num_rows == 4  # the rest reads

    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "part-0.parquet").write_bytes(parquet(rows(0, 1)))
    with pytest.raises(TypeDrift, match=r"(int64|string) \(as in .*\) and (int64|string)"):
        agree_with_output(scan_input(str(catalog), {}), resume.load_committed(out).types)


@pytest.mark.parametrize(
    "held, new, read_as",
    [
        (pa.int64(), pa.int32(), pa.int64()),  # fits: read as held
        (pa.float64(), pa.float32(), pa.float64()),
        (pa.string(), pa.large_string(), pa.string()),  # Polars' strings into pandas'
        (pa.null(), pa.string(), pa.string()),  # nothing held yet
        (pa.int64(), pa.null(), pa.int64()),
        (pa.int32(), pa.int64(), None),  # would not fit: refused
        (pa.int64(), pa.float64(), None),
        (pa.int64(), pa.string(), None),
    ],
)
def test_the_type_rule_against_what_the_output_holds(tmp_path, held, new, read_as):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    table = rows(0, 1).set_column(2, "sku", pa.array([None], new))
    (catalog / "part-0.parquet").write_bytes(parquet(table))
    scan = scan_input(str(catalog), {})
    holding = {"sku": {held: "out/manifests/m.parquet"}}
    if read_as is None:
        with pytest.raises(TypeDrift, match=rf"'sku' is {new}, .* hold 'sku' as {held} \(as in"):
            agree_with_output(scan, holding)
    else:
        assert agree_with_output(scan, holding).schema.field("sku").type == read_as


def test_held_types_that_readers_combine_are_one_type(tmp_path):
    """Manifests holding int32 and int64 (readers combine them to int64): a new
    int32 column is read as int64; a column only ever null holds nothing."""
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    table = rows(0, 1).set_column(2, "sku", pa.array([1], pa.int32()))
    table = table.append_column("note", pa.array(["x"]))
    (catalog / "part-0.parquet").write_bytes(parquet(table))
    held = {"sku": {pa.int32(): "m1", pa.int64(): "m2"}, "note": {pa.null(): "m1"}}
    schema = agree_with_output(scan_input(str(catalog), {}), held).schema
    assert (schema.field("sku").type, schema.field("note").type) == (pa.int64(), pa.string())
