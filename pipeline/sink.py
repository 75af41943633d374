"""The job's output: per write task, ``shards/<name>.npz`` (the ok rows' grids,
one zip member each, see ``pipeline.shards``) and then
``manifests/<name>.parquet`` with one row per input row of that shard, ok or
failed (one pair per ``rows_per_shard`` rows of the task). The manifest is the
commit record: it is written only after its shard is durable, so a manifest
never points at a missing grid, and its Parquet metadata records which input
rows it commits (``pipeline.plan``), which is what a rerun plans from.
``<name>`` is a digest of the rows' keys, so a retried task overwrites its own
manifest and a rerun that regroups rows never duplicates one; the shard's name
adds a digest of its bytes, so no writer (a retry, a zombie) ever replaces the
grids a committed manifest points at. Every manifest records, in its footer,
its name's digest, the writer's lease generation and its shard's path and size
(``pipeline.index.manifest_metadata``); a writer whose generation is no longer
the newest refuses to commit (``pipeline.lease.check_fence``).
This module must never put an ``object_id`` into a path, and never write a
manifest before its shard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from io import BytesIO
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Datasink
from ray.data.block import BlockAccessor
from ray.data.datasource.datasink import WriteResult

from model.voxels import GRID_BYTES
from pipeline import io, lease, plan, progress, shards
from pipeline.index import manifest_metadata
from pipeline.layout import FAILED, MANIFEST_SCHEMA, MANIFESTS, OK, SHARDS, error_kind

# Columns that travel to the sink but are not manifest columns.
PAYLOAD_COLUMNS = ("probabilities",)


def shard_name(row_keys: Iterable[str]) -> str:
    """A name derived from the rows a shard holds, independent of their order."""
    digest = hashlib.sha256()
    for key in sorted(row_keys):
        digest.update(key.encode("utf-8"))
        digest.update(b"\0")
    return "part-" + digest.hexdigest()[:32]


def grid_values(grids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``uint8 [N * 32768]``: the grids of a binary column, viewed in Arrow's
    own buffers (copied once only when the column has several chunks)."""
    chunks = grids.chunks if isinstance(grids, pa.ChunkedArray) else [grids]
    parts = []
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        if chunk.null_count:
            raise ValueError("every object in a shard needs its grid")
        width = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], dtype=width)[
            chunk.offset : chunk.offset + len(chunk) + 1
        ]
        if np.any(np.diff(offsets) != GRID_BYTES):
            raise ValueError(f"a grid is not {GRID_BYTES} bytes")
        parts.append(np.frombuffer(chunk.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]])
    if not parts:
        return np.empty(0, dtype=np.uint8)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def write_shard(
    table: pa.Table,
    output: str,
    storage_options: Mapping[str, Any] | None = None,
    retry_seconds: float = io.RETRY_SECONDS,
    generation: int | None = None,
) -> dict[str, Any]:
    """Write one shard and its manifest for the rows of ``table``; return counts.

    ``table`` holds the model stage's rows (see ``pipeline.infer.Reconstruct``).
    Returns ``{"name", "rows_ok", "rows_failed"}``; ``name`` is None when
    nothing was written. Each write is retried through transient storage
    errors for up to ``retry_seconds`` (see ``pipeline.io.retrying``).
    ``generation`` is the writer's lease generation, recorded in the manifest.

    Raises:
        lease.StaleGeneration: a newer generation holds the output (nothing
            is committed).
    """
    rows = table
    counts = {"name": None, "rows_ok": 0, "rows_failed": 0}
    if rows.num_rows == 0:
        return counts

    def fence() -> None:  # a listing: transient errors are retried like the writes
        io.retrying(lambda: lease.check_fence(output, storage_options, generation), retry_seconds)

    name = shard_name(rows.column("row_key").to_pylist())
    status = rows.column("status").to_pylist()
    grids = rows.column("probabilities")
    has_grid = pc.is_valid(grids).to_pylist()
    ids = rows.column("object_id").to_pylist()
    ok = [i for i, s in enumerate(status) if s == OK and has_grid[i]]
    shard_path = None
    data = b""

    index: list[int | None] = [None] * rows.num_rows
    shard: list[str | None] = [None] * rows.num_rows
    offset: list[int | None] = [None] * rows.num_rows
    length: list[int | None] = [None] * rows.num_rows
    if ok:
        # All rows ok (the usual case): the grids are encoded from the column as
        # it is; otherwise the ok ones are taken out (a copy).
        ok_grids = grids if len(ok) == len(ids) else grids.take(pa.array(ok, pa.int64()))
        data, offsets, lengths = shards.encode([ids[i] for i in ok], grid_values(ok_grids))
        shard_path = f"{SHARDS}/{name}-{hashlib.sha256(data).hexdigest()[:12]}.npz"
        for position, i in enumerate(ok):
            index[i], shard[i] = position, shard_path
            offset[i], length[i] = int(offsets[position]), int(lengths[position])
        url = io.join(output, shard_path)
        fence()
        io.retrying(lambda: io.write_bytes(url, data, storage_options), retry_seconds)

    columns: dict[str, pa.Array] = {}
    for field in MANIFEST_SCHEMA:
        if field.name == "shard":
            columns["shard"] = pa.array(shard, pa.string())
        elif field.name == "index":
            columns["index"] = pa.array(index, pa.int32())
        elif field.name == "grid_offset":
            columns["grid_offset"] = pa.array(offset, pa.int64())
        elif field.name == "grid_bytes":
            columns["grid_bytes"] = pa.array(length, pa.int32())
        elif field.name == "status":
            columns["status"] = pa.array([OK if s else FAILED for s in shard], pa.string())
        elif field.name == "error_kind":
            continue  # from the final errors, below
        elif field.name in ("warning", "precision") and field.name not in rows.column_names:
            # rows from a stage that warns of nothing, or that ran no model
            columns[field.name] = pa.nulls(rows.num_rows, field.type)
        else:
            columns[field.name] = rows.column(field.name).cast(field.type)
    # A row marked ok whose grid is missing cannot be committed as ok.
    errors = columns["error"].to_pylist()
    for i, s in enumerate(status):
        if s == OK and shard[i] is None:
            errors[i] = errors[i] or "internal: no grid for an ok row"
    columns["error"] = pa.array(errors, pa.string())
    # A stage may name its rows' kinds; the others' come from their reasons, in
    # one place (pipeline.layout), so that every stage's failures group alike.
    given = rows.column("error_kind").to_pylist() if "error_kind" in rows.column_names else None
    kinds = pa.array(
        [
            None if e is None else (given and given[i]) or error_kind(e)
            for i, e in enumerate(errors)
        ],
        pa.string(),
    )
    columns = {n: kinds if n == "error_kind" else columns[n] for n in MANIFEST_SCHEMA.names}
    for name_ in rows.column_names:
        if name_ not in columns and name_ not in PAYLOAD_COLUMNS:
            columns[name_] = rows.column(name_)
    # What the manifest commits, for planning reruns (pipeline.plan).
    coverage = plan.coverage_of(columns["row_key"].to_pylist())
    manifest = pa.table(columns)
    manifest = manifest.replace_schema_metadata(
        manifest_metadata(manifest, name, coverage, generation or 0, shard_path, len(data))
    )

    buffer = BytesIO()
    pq.write_table(manifest, buffer, compression="zstd")
    # The commit: only now, with the shard durable, do these rows exist; and
    # only while this writer's generation is the newest.
    manifest_url = io.join(output, MANIFESTS, f"{name}.parquet")
    fence()
    io.retrying(
        lambda: io.write_bytes(manifest_url, buffer.getvalue(), storage_options), retry_seconds
    )
    counts.update(name=name, rows_ok=len(ok), rows_failed=rows.num_rows - len(ok))
    return counts


class ShardSink(Datasink[dict]):
    """``ray.data.Datasink`` over :func:`write_shard`; totals land in ``self.totals``.

    Each write task gets at least ``rows_per_shard`` rows (Ray Data gathers them)
    and writes them as shards of at most ``rows_per_shard`` rows, each shard
    followed by its manifest, so that shard sizes do not depend on how Ray
    sized its blocks. A retried task sees the same rows in the same order and
    rewrites the same files.

    Args:
        output: the output URL.
        storage_options: fsspec options for it.
        rows_per_shard: the most rows in one shard.
        retry_seconds: how long each write retries transient storage errors.
        stats: the job's progress actor (``pipeline.progress``), told each commit.
        generation: the driver's lease generation, carried by every commit.
    """

    def __init__(
        self,
        output: str,
        storage_options: Mapping[str, Any] | None = None,
        rows_per_shard: int = 1024,
        retry_seconds: float = io.RETRY_SECONDS,
        stats: Any = None,
        generation: int | None = None,
    ):
        self.stats = stats
        self.generation = generation
        self.output = output
        self.storage_options = dict(storage_options or {})
        self.rows_per_shard = rows_per_shard
        self.retry_seconds = retry_seconds
        self.totals = {"rows_ok": 0, "rows_failed": 0, "shards": 0}

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_shard

    def get_name(self) -> str:
        return "WriteShards"

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        result = {"names": [], "rows_ok": 0, "rows_failed": 0}
        if not tables:
            return result
        table = pa.concat_tables(tables)
        for start in range(0, table.num_rows, self.rows_per_shard):
            counts = write_shard(
                table.slice(start, self.rows_per_shard),
                self.output,
                self.storage_options,
                self.retry_seconds,
                self.generation,
            )
            result["names"].append(counts["name"])
            result["rows_ok"] += counts["rows_ok"]
            result["rows_failed"] += counts["rows_failed"]
            progress.tell(self.stats, "committed", counts["rows_ok"], counts["rows_failed"])
        return result

    def on_write_complete(self, write_result: WriteResult[dict]) -> None:
        for result in write_result.write_returns:
            for key in ("rows_ok", "rows_failed"):
                self.totals[key] += result[key]
            self.totals["shards"] += len(result["names"])
