"""The shard sink without Ray: one shard and then one manifest per write,
content-derived names (a retry overwrites itself, a regrouped rerun never
duplicates), no object_id in any path, and no manifest without its shard."""

from __future__ import annotations

import io as bytes_io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import io, shards
from pipeline.layout import MANIFEST_SCHEMA
from pipeline.sink import ShardSink, grid_values, shard_name, write_shard


def model_rows(ids: list, status: list[str], seed: int = 0) -> pa.Table:
    """Rows shaped as the model stage emits them, with known grids."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    grids = [
        rng.integers(0, 256, (32, 32, 32), dtype=np.uint8).tobytes() if s == "ok" else None
        for s in status
    ]
    keys = [i if i is not None else f"null-object-id:{k}" for k, i in enumerate(ids)]
    return pa.table(
        {
            "row_key": pa.array(keys, pa.string()),
            "object_id": pa.array(ids, pa.string()),
            "n_views": pa.array([3 if s == "ok" else None for s in status], pa.int32()),
            "n_views_given": pa.array([3] * n, pa.int32()),
            "sku": pa.array(range(n), pa.int64()),
            "status": pa.array(status, pa.string()),
            "error": pa.array([None if s != "failed" else "views is empty" for s in status]),
            "probabilities": pa.array(grids, pa.binary()),
            "occupied_voxels": pa.array([7 if s == "ok" else None for s in status], pa.int32()),
            "iou": pa.array([None] * n, pa.float32()),
            "threshold": pa.array([0.4] * n, pa.float64()),
            "model": pa.array(["compact-test"] * n, pa.string()),
        }
    )


def files_under(root: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


def test_shard_and_manifest(tmp_path):
    out = str(tmp_path / "out")
    ids = ["a", "../../escape/b", "c", None, "d/e"]
    status = ["ok", "ok", "failed", "failed", "ok"]
    table = model_rows(ids, status)
    counts = write_shard(table, out)
    name = shard_name(table.column("row_key").to_pylist())
    assert counts == {"name": name, "rows_ok": 3, "rows_failed": 2}
    # object ids never become paths; the shard's name adds a digest of its bytes
    manifest = pq.read_table(os.path.join(out, "manifests", f"{name}.parquet"))
    shard_path = manifest.column("shard")[0].as_py()
    assert shard_path.startswith(f"shards/{name}-") and shard_path.endswith(".npz")
    assert files_under(out) == [f"manifests/{name}.parquet", shard_path]
    # the footer records the name, the writer's generation and the shard
    footer = manifest.schema.metadata
    assert footer[b"voxray.name"] == name.encode() and footer[b"voxray.generation"] == b"0"
    assert json.loads(footer[b"voxray.shard"]) == {
        "path": shard_path,
        "bytes": os.path.getsize(os.path.join(out, shard_path)),
    }

    assert manifest.schema.names[: len(MANIFEST_SCHEMA)] == MANIFEST_SCHEMA.names
    assert manifest.schema.field("index").type == pa.int32()
    assert "sku" in manifest.column_names and "probabilities" not in manifest.column_names
    rows = manifest.to_pylist()
    assert [r["status"] for r in rows] == status
    assert [r["index"] for r in rows] == [0, 1, None, None, 2]
    assert [r["shard"] for r in rows] == [shard_path] * 2 + [None] * 2 + [shard_path]
    assert rows[2]["error"] == "views is empty" and rows[0]["error"] is None

    path = os.path.join(out, shard_path)
    arrays = shards.read_shard(path)
    assert list(arrays["object_id"]) == ["a", "../../escape/b", "d/e"]
    assert arrays["probabilities"].shape == (3, 32, 32, 32)
    assert arrays["probabilities"].dtype == np.uint8
    expected = table.column("probabilities")[4].as_py()
    assert arrays["probabilities"][2].tobytes() == expected
    # plain numpy opens it, one grid per member
    with np.load(path) as npz:
        assert npz["g000002"].tobytes() == expected and list(npz["object_id"])[2] == "d/e"
    # the manifest says where each grid's record is: one range read gets it
    for r, i in ((rows[0], 0), (rows[4], 4)):
        grid = shards.read_grid(path, r["grid_offset"], r["grid_bytes"])
        assert grid.tobytes() == table.column("probabilities")[i].as_py()
    assert rows[2]["grid_offset"] is None and rows[2]["grid_bytes"] is None


def test_retry_overwrites_and_order_does_not_matter(tmp_path):
    out = str(tmp_path / "out")
    table = model_rows(["a", "b", "c"], ["ok", "ok", "ok"])
    first = write_shard(table, out)
    again = write_shard(table.take([2, 0, 1]), out)  # a retried task, rows in another order
    assert first["name"] == again["name"]
    # one manifest; the retry's shard bytes differ (rows in another order), so
    # they went to a shard of their own: no retry or zombie ever rewrites the
    # bytes a committed manifest points at (the first shard is left unreferenced)
    assert len(files_under(os.path.join(out, "manifests"))) == 1
    assert len(files_under(os.path.join(out, "shards"))) == 2
    manifest = pq.read_table(os.path.join(out, "manifests", f"{first['name']}.parquet"))
    for row in manifest.to_pylist():
        grid = shards.read_grid(os.path.join(out, row["shard"]), row["grid_offset"],
                                row["grid_bytes"])  # fmt: skip
        position = table.column("object_id").to_pylist().index(row["object_id"])
        assert grid.tobytes() == table.column("probabilities")[position].as_py()
    write_shard(table, out)  # the same bytes again: the same shard
    assert len(files_under(os.path.join(out, "shards"))) == 2
    other = write_shard(model_rows(["d"], ["ok"]), out)
    assert other["name"] != first["name"]
    assert len(files_under(out)) == 5


def test_a_writer_of_an_older_generation_commits_nothing(tmp_path):
    from pipeline.lease import StaleGeneration, claim_url, create_exclusive

    out = str(tmp_path / "out")
    assert create_exclusive(claim_url(out, 1), b"{}")
    assert not create_exclusive(claim_url(out, 1), b"{}")  # a generation is claimed once
    write_shard(model_rows(["a"], ["ok"]), out, generation=1)
    assert create_exclusive(claim_url(out, 2), b"{}")  # taken over
    with pytest.raises(StaleGeneration, match="generation 2"):
        write_shard(model_rows(["b"], ["ok"]), out, generation=1)
    assert len(os.listdir(os.path.join(out, "manifests"))) == 1


def test_only_failed_rows_write_a_manifest_without_shard(tmp_path):
    out = str(tmp_path / "out")
    counts = write_shard(model_rows(["x", "y"], ["failed", "failed"]), out)
    assert files_under(out) == [f"manifests/{counts['name']}.parquet"]


def test_no_manifest_when_the_shard_cannot_be_written(tmp_path):
    out = str(tmp_path / "out")
    table = model_rows(["a", "b"], ["ok", "ok"])
    # a file where the shards folder must go makes the shard's write fail
    os.makedirs(out)
    open(os.path.join(out, "shards"), "w").close()
    with pytest.raises(OSError):
        write_shard(table, out)
    assert not os.path.exists(os.path.join(out, "manifests"))


def test_s3_shard_and_manifest(s3_bucket):
    out = f"s3://{s3_bucket}/grids"
    counts = write_shard(model_rows(["a", "b"], ["ok", "failed"]), out)
    name = counts["name"]
    manifest = pq.read_table(
        bytes_io.BytesIO(io.read_bytes(io.join(out, "manifests", f"{name}.parquet")))
    )
    assert manifest.column("status").to_pylist() == ["ok", "failed"]
    data = io.read_bytes(io.join(out, manifest.column("shard")[0].as_py()))
    with np.load(bytes_io.BytesIO(data)) as npz:
        assert list(npz["object_id"]) == ["a"]


def test_datasink_splits_shards_and_totals(tmp_path):
    from ray.data.datasource.datasink import WriteResult

    out = str(tmp_path / "out")
    sink = ShardSink(out, rows_per_shard=2)
    assert sink.min_rows_per_write == 2
    ids = ["a", "b", "c", "d"]
    table = model_rows(ids, ["ok", "failed", "ok", "ok"])
    result = sink.write([table.slice(0, 2), table.slice(2)], ctx=None)
    assert (result["rows_ok"], result["rows_failed"]) == (3, 1)
    assert len(result["names"]) == 2  # 4 rows to write, at most 2 per shard
    again = sink.write([table.slice(0, 2), table.slice(2)], ctx=None)  # a retried task
    assert again == result
    assert len(files_under(out)) == 4
    sink.on_write_complete(WriteResult(num_rows=4, size_bytes=0, write_returns=[result]))
    assert sink.totals == {"rows_ok": 3, "rows_failed": 1, "shards": 2}


def test_grids_come_from_arrow_buffers_and_wrong_sizes_are_refused():
    grids = [np.full(32768, i, np.uint8).tobytes() for i in range(3)]
    column = pa.chunked_array([pa.array(grids[:1], pa.binary()), pa.array(grids[1:], pa.binary())])
    data, offsets, lengths = shards.encode(["b", "c"], grid_values(column.slice(1)))
    shard = shards.parse_shard(data)
    assert list(shard["object_id"]) == ["b", "c"]
    assert shard["probabilities"].shape == (2, 32, 32, 32)
    assert (shard["probabilities"][1] == 2).all()
    record = data[offsets[1] : offsets[1] + lengths[1]]
    assert (shards.decode_record(record) == 2).all()
    with pytest.raises(ValueError, match="32768 bytes"):
        grid_values(pa.array([b"short"], pa.binary()))
    with pytest.raises(ValueError, match="needs its grid"):
        grid_values(pa.array([None], pa.binary()))


def test_shards_of_the_earlier_layout_still_read():
    """Outputs written before one member per grid: one ``probabilities`` array."""
    grids = np.arange(2 * 32768, dtype=np.uint64).astype(np.uint8).reshape(2, 32, 32, 32)
    buffer = bytes_io.BytesIO()
    np.savez_compressed(buffer, object_id=np.array(["a", "b"]), probabilities=grids)
    shard = shards.parse_shard(buffer.getvalue())
    assert list(shard["object_id"]) == ["a", "b"] and (shard["probabilities"] == grids).all()


def test_compression_and_one_grid_cost():
    """Smooth grids (like the model's) compress about as well member by member
    as in one array, and one grid's record is a small part of the shard."""
    z, y, x = np.mgrid[:32, :32, :32]
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(64):  # one object each: a soft ellipsoid of its own size and place
        c, r = rng.uniform(10, 22, 3), rng.uniform(4, 12, 3)
        d = np.sqrt(((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2)
        blobs.append(np.clip(255 * (1.5 - d), 0, 255))
    grids = np.stack(blobs).astype(np.uint8)
    data, offsets, lengths = shards.encode([f"id-{i}" for i in range(64)], grids)
    whole = bytes_io.BytesIO()
    np.savez_compressed(whole, probabilities=grids)
    assert len(data) < 1.2 * len(whole.getvalue())
    assert lengths.max() < 4 * len(data) / 64
