"""The output index: the manifests folded into a few Parquet files under
``OUTPUT/index/``, so that resume, the output reader and DuckDB read a handful
of files instead of one per shard.

Each index part holds the rows of the manifests it covers, and its Parquet
metadata names those manifests and carries what planning needs without reading
a row: the input rows they commit (``pipeline.plan`` coverage) and their counts
by status and model. Manifests stay the commit record: a manifest that no part
covers yet (written since the last fold, or the index is missing) is read
directly and folded next time, so an index that is behind is completed, never
trusted blindly. Small parts are merged into parts of up to ``PART_ROWS`` rows,
the merged part written before the parts it replaces are removed; a reader that
sees both takes the larger. A part that names a manifest no longer there is
set aside and its manifests read again. This module must never change or
remove a manifest.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import background, io, plan
from pipeline.layout import FAILED, INDEX, MANIFEST_SCHEMA, MANIFESTS, OK

MANIFESTS_KEY = b"voxray.manifests"  # an index part's metadata: the manifests it covers
COUNTS_KEY = b"voxray.counts"  # a manifest's or part's metadata: rows by status, models
# Parts grow to this many rows: one is sorted in memory when written (~100 MB
# of Arrow for 2^19 manifest rows), and 10^8 rows make ~200 parts.
PART_ROWS = 1 << 19
# Row groups of a part: sorted by object_id, a lookup by id reads about one
# row group per part (its statistics rule out the others).
ROW_GROUP_ROWS = 1 << 14
MAX_SMALL_PARTS = 4  # more parts under PART_ROWS / 4 than this are merged
FOLD_SECONDS = 60.0  # how often a running job folds what it committed
THREADS = 16


def counts_metadata(table: pa.Table) -> bytes:
    """The status counts and model ids of manifest rows, for file metadata."""
    status = table.column("status").to_pylist()
    models = sorted({m for m in table.column("model").to_pylist() if m is not None})
    return json.dumps(
        {OK: status.count(OK), FAILED: status.count(FAILED), "models": models}
    ).encode()


@dataclass
class FileInfo:
    """What a manifest's or index part's footer says."""

    url: str
    rows: int
    coverage: plan.Coverage
    counts: dict[str, Any]
    manifests: list[str] = field(default_factory=list)  # index parts only: names covered


def read_info(url: str, options: Mapping[str, Any] | None) -> FileInfo:
    fs, path = io.filesystem(url, options)
    with fs.open(path, "rb") as f:
        meta = pq.read_metadata(f)
    kv = meta.metadata or {}
    if COUNTS_KEY in kv:
        counts = json.loads(kv[COUNTS_KEY])
    else:  # a manifest of an older voxray: count its rows
        with fs.open(path, "rb") as f:
            counts = json.loads(counts_metadata(pq.read_table(f, columns=["status", "model"])))
    return FileInfo(
        url=url,
        rows=meta.num_rows,
        coverage=plan.decode_coverage(kv),
        counts=counts,
        manifests=json.loads(kv.get(MANIFESTS_KEY, b"[]")),
    )


def _name(url: str) -> str:
    return posixpath.basename(url)


@dataclass
class State:
    """An output's index as it stands: the parts to read (no two covering the
    same manifest) and the committed manifests that no part covers."""

    output: str
    parts: list[FileInfo]
    pending: list[FileInfo]
    stale: list[FileInfo] = field(default_factory=list)  # parts naming a manifest now gone

    @property
    def files(self) -> list[FileInfo]:
        return self.parts + self.pending

    def coverage(self) -> plan.Coverage:
        return plan.merge_coverage(f.coverage for f in self.files)

    def counts(self) -> dict[str, Any]:
        ok = failed = 0
        models: set[str] = set()
        for f in self.files:
            c = f.counts or {}
            ok, failed = ok + c.get(OK, 0), failed + c.get(FAILED, 0)
            models.update(c.get("models", []))
        return {"rows_ok": ok, "rows_failed": failed, "models": sorted(models)}


def _map(fn, items: list, threads: int = THREADS) -> list:
    if len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(fn, items))


def state(output: str, options: Mapping[str, Any] | None = None) -> State:
    """Read the index parts' footers and list the manifests (no rows are read)."""
    part_urls = io.list_files(io.join(output, INDEX), ".parquet", options)
    manifest_urls = io.list_files(io.join(output, MANIFESTS), ".parquet", options)
    infos = _map(lambda u: read_info(u, options), part_urls)
    listed = {_name(u) for u in manifest_urls}
    chosen: list[FileInfo] = []
    stale: list[FileInfo] = []
    seen: set[str] = set()
    for info in sorted(infos, key=lambda i: (-len(i.manifests), i.url)):
        names = set(info.manifests)
        if not names <= listed:
            stale.append(info)  # the manifests are the record: rebuilt from those left
        elif not names & seen:  # else a merge in progress: a larger part covers these
            chosen.append(info)
            seen |= names
    pending_urls = [u for u in manifest_urls if _name(u) not in seen]
    pending = _map(lambda u: read_info(u, options), pending_urls)
    return State(output, chosen, pending, stale)


def read_table(
    current: State,
    columns: list[str] | None = None,
    options: Mapping[str, Any] | None = None,
    filters: Any = None,
    threads: int = THREADS,
) -> pa.Table:
    """The rows of every committed manifest, from the parts and the pending
    manifests. Files with other carried columns are combined (missing ones
    null); asked-for ``columns`` that no file has are left out. ``filters`` (a
    ``pyarrow.compute`` expression) is pushed into each file's reader; a file
    that lacks a column it names sees that column as null."""
    urls = [f.url for f in current.files]
    if not urls:
        schema = MANIFEST_SCHEMA
        if columns is not None:
            schema = pa.schema([f for f in MANIFEST_SCHEMA if f.name in columns])
        return schema.empty_table()

    def read(url: str) -> pa.Table | None:
        fs, path = io.filesystem(url, options)
        with fs.open(path, "rb") as f:
            names = pq.read_schema(f).names
            f.seek(0)
            wanted = None if columns is None else [c for c in columns if c in names]
            try:
                table = pq.read_table(f, columns=wanted, filters=filters)
            except pa.ArrowInvalid as exc:
                if filters is None or "FieldRef" not in str(exc):
                    raise
                return None  # the filter names a column this file lacks: below
        return table.replace_schema_metadata()

    tables = _map(read, urls, threads)
    lacking = [u for u, t in zip(urls, tables, strict=True) if t is None]
    if lacking:  # rare: reruns that carried other columns
        schema = pa.unify_schemas(
            _map(lambda u: _schema(u, options), urls), promote_options="permissive"
        )
        for position, url in enumerate(urls):
            if tables[position] is None:
                try:
                    table = _conform(_read(url, options), schema).filter(filters)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise ValueError(
                        f"cannot filter the manifests with {filters}: {exc}. "
                        f"Their columns: {schema.names}"
                    ) from None
                keep = [c for c in (columns or schema.names) if c in table.column_names]
                tables[position] = table.select(keep)
    table = pa.concat_tables(tables, promote_options="permissive")
    if columns is not None:
        table = table.select([c for c in columns if c in table.column_names])
    return table


def fold(output: str, options: Mapping[str, Any] | None = None) -> State:
    """Fold the pending manifests into new parts, then merge small parts; parts
    hold at most ``PART_ROWS`` rows, sorted by ``object_id``."""
    current = state(output, options)
    parts = list(current.parts)
    for group in _groups(current.pending):
        parts.append(_write_part(output, group, options))
    for p in current.stale:
        io.remove(p.url, options)
    small = [p for p in parts if p.rows < PART_ROWS // 4]
    if len(small) > MAX_SMALL_PARTS:
        for group in _groups(small):
            if len(group) > 1:
                merged = _write_part(output, group, options)
                for p in group:
                    io.remove(p.url, options)
                parts = [p for p in parts if p not in group] + [merged]
    return State(output, parts, [])


def folding(output: str, options: Mapping[str, Any] | None = None, every: float = FOLD_SECONDS):
    """A context: fold the output's new manifests every ``every`` seconds while
    the block runs (the job's writes); a failed fold is tried again next time
    (the manifests are the record)."""
    return background.every(every, lambda: fold(output, options), "index fold")


def _groups(files: list[FileInfo]) -> list[list[FileInfo]]:
    """``files`` in consecutive groups of at most ``PART_ROWS`` rows (a file
    bigger than that is a group of its own)."""
    out: list[list[FileInfo]] = []
    rows = PART_ROWS
    for f in files:
        if rows + f.rows > PART_ROWS:
            out.append([])
            rows = 0
        out[-1].append(f)
        rows += f.rows
    return out


def _write_part(output: str, sources: list[FileInfo], options) -> FileInfo:
    """One part holding the rows of ``sources`` (manifests or parts), sorted by
    ``object_id`` so that a lookup by id reads few row groups; written whole,
    then it exists."""
    names = sorted({n for s in sources for n in (s.manifests or [_name(s.url)])})
    tables = _map(lambda s: _read(s.url, options), sources)
    schema = pa.unify_schemas(
        [MANIFEST_SCHEMA, *(t.schema for t in tables)], promote_options="permissive"
    )
    table = pa.concat_tables([_conform(t, schema) for t in tables])
    del tables
    table = table.sort_by([("object_id", "ascending")])
    counts = {OK: 0, FAILED: 0, "models": set()}
    for s in sources:
        counts[OK] += (s.counts or {}).get(OK, 0)
        counts[FAILED] += (s.counts or {}).get(FAILED, 0)
        counts["models"].update((s.counts or {}).get("models", []))
    counts["models"] = sorted(counts["models"])
    coverage = plan.merge_coverage(s.coverage for s in sources)
    metadata = {
        MANIFESTS_KEY: json.dumps(names).encode(),
        plan.COVERAGE_KEY: plan.encode_coverage(coverage),
        COUNTS_KEY: json.dumps(counts).encode(),
    }
    buffer = BytesIO()
    pq.write_table(
        table.replace_schema_metadata(metadata),
        buffer,
        compression="zstd",
        row_group_size=ROW_GROUP_ROWS,
    )
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:32]
    url = io.join(output, INDEX, f"part-{digest}.parquet")
    io.write_bytes(url, buffer.getvalue(), options)
    return FileInfo(url, table.num_rows, coverage, counts, names)


def _schema(url: str, options) -> pa.Schema:
    fs, path = io.filesystem(url, options)
    with fs.open(path, "rb") as f:
        return pq.read_schema(f).remove_metadata()


def _read(url: str, options) -> pa.Table:
    fs, path = io.filesystem(url, options)
    with fs.open(path, "rb") as f:
        return pq.read_table(f)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.table(columns, schema=schema.remove_metadata())
