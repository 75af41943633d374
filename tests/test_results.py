"""Reading an output as a downstream user does: all manifests as one Arrow
table, one grid per manifest row, locally and on S3."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_sink import model_rows

from pipeline import io
from pipeline.layout import MANIFEST_SCHEMA
from pipeline.results import load_grid, read_manifests
from pipeline.sink import write_shard


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/grids"


def test_empty_output_reads_as_empty_table(output):
    table = read_manifests(output)
    assert table.num_rows == 0 and table.schema == MANIFEST_SCHEMA


def test_read_manifests_and_load_grid(output):
    first = model_rows(["a", "b", "c"], ["ok", "failed", "ok"], seed=1)
    second = model_rows(["d", "e"], ["ok", "ok"], seed=2).drop_columns(["sku"])
    write_shard(first, output)
    write_shard(second, output)

    table = read_manifests(output)
    assert sorted(table.column("object_id").to_pylist()) == ["a", "b", "c", "d", "e"]
    assert table.column("sku").null_count == 2  # absent in the second shard's manifest
    ok = table.filter(pc.equal(table["status"], "ok"))
    assert ok.num_rows == 4

    grids = {
        **dict(zip(["a", "b", "c"], first["probabilities"].to_pylist(), strict=True)),
        **dict(zip(["d", "e"], second["probabilities"].to_pylist(), strict=True)),
    }
    for row in ok.to_pylist():
        grid = load_grid(output, row)
        assert grid.shape == (32, 32, 32) and grid.dtype == np.uint8
        assert grid.tobytes() == grids[row["object_id"]]
    one = ok.filter(pc.equal(ok["object_id"], "d"))
    assert load_grid(output, one).tobytes() == grids["d"]  # a one-row table works too

    failed = table.filter(pc.equal(table["status"], "failed")).to_pylist()[0]
    with pytest.raises(ValueError, match="has no grid"):
        load_grid(output, failed)
    wrong = dict(ok.to_pylist()[0], object_id="someone-else")
    with pytest.raises(ValueError, match="the manifest says"):
        load_grid(output, wrong)


def test_column_selection(output):
    write_shard(model_rows(["a"], ["ok"]), output)
    table = read_manifests(output, columns=["object_id", "status"])
    assert table.column_names == ["object_id", "status"]
    assert io.list_files(io.join(output, "manifests"), ".parquet")
    assert isinstance(table, pa.Table)
