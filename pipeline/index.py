"""The output index: the manifests folded into a few Parquet files under
``OUTPUT/index/``, so that resume, the output reader and DuckDB read a handful
of files instead of one per shard; and the rule that decides which manifests
count at all.

A manifest counts (is *accepted*) when its footer is readable, its name is the
digest its footer records (``part-<digest of its row keys>``; a copy under
another name, a foreign file or a truncated one is *rejected*), and its input
rows overlap no manifest that ranks above it. Rank: the newer lease generation
first (a writer taken over loses to the one that took over), then a manifest
already in the index, then the lower name. So no row is counted twice, and an
overlap is reported with its files and rows. Every reader goes through
``state``: resume, ``pipeline.results`` and the job's summary see the same rows.

Each index part holds the rows of the manifests it covers, and its Parquet
metadata records each one's *entry*: name, identity (size and ETag or mtime,
from the listing), generation, the input rows it commits (``pipeline.plan``
coverage), counts by status and model, and its shard's path and size. A part
is trusted only while every manifest it names is listed with the same
identity: a manifest removed or rewritten under the same name (a retry of
failed rows) sets its part aside, and the part's other manifests are read
directly until the next fold. Manifests no part covers are read directly too,
so an index that is behind or missing is completed, never trusted blindly.

Folding (only by the lease holder) first removes the parts no longer trusted,
then writes new parts, and merges small parts by removing them before the
merged part is written: an interrupted fold leaves the index behind (its rows
read from the manifests and folded again next time), never a row in two parts
that a glob over ``index/*.parquet`` would count twice. This module must never
change or remove a manifest.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import posixpath
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import background, io, plan
from pipeline.layout import FAILED, INDEX, MANIFEST_SCHEMA, MANIFESTS, OK

MANIFESTS_KEY = b"voxray.manifests"  # an index part's metadata: the manifests it covers
ENTRIES_KEY = b"voxray.entries"  # an index part's metadata: each manifest's entry
COUNTS_KEY = b"voxray.counts"  # a manifest's or part's metadata: rows by status, models
NAME_KEY = b"voxray.name"  # a manifest's metadata: its name (the digest of its row keys)
GENERATION_KEY = b"voxray.generation"  # a manifest's or part's: its writer's lease generation
SHARD_KEY = b"voxray.shard"  # a manifest's metadata: {"path", "bytes"} of its shard, or null
# Parts grow to this many rows: one is sorted in memory when written (~100 MB
# of Arrow for 2^19 manifest rows), and 10^8 rows make ~200 parts.
PART_ROWS = 1 << 19
# Row groups of a part: sorted by object_id, a lookup by id reads about one
# row group per part (its statistics rule out the others).
ROW_GROUP_ROWS = 1 << 14
MAX_SMALL_PARTS = 4  # more parts under PART_ROWS / 4 than this are merged
FOLD_SECONDS = 60.0  # how often a running job folds what it committed
THREADS = 16
ATTEMPTS = 3  # a part listed and then folded away before it was read: list again


def counts_metadata(table: pa.Table) -> bytes:
    """The status counts and model ids of manifest rows, for file metadata;
    and what the rows mean beyond the model (``pipeline.resume`` checks a
    rerun against it without reading a row): their distinct ``thresholds``
    and their rows by ``precisions``. A table without such a column (an older
    voxray's manifest) records no such key: unknown, not none."""
    status = table.column("status").to_pylist()
    models = sorted({m for m in table.column("model").to_pylist() if m is not None})
    counts: dict[str, Any] = {OK: status.count(OK), FAILED: status.count(FAILED), "models": models}
    # Python over one manifest's rows, not pyarrow.compute: importing it costs
    # the driver's pre-flight ~9 MiB (measured), and a manifest is one shard.
    if "threshold" in table.column_names:
        thresholds = set(table.column("threshold").to_pylist()) - {None}
        counts["thresholds"] = sorted(thresholds)
    if "precision" in table.column_names:
        tally = Counter(table.column("precision").to_pylist())
        tally.pop(None, None)  # rows that never reached the model
        counts["precisions"] = dict(sorted(tally.items()))
    return json.dumps(counts).encode()


def manifest_metadata(
    table: pa.Table,
    name: str,
    coverage: plan.Coverage,
    generation: int,
    shard: str | None,
    shard_bytes: int,
) -> dict[bytes, bytes]:
    """A manifest's footer: what it commits and who wrote it (see the module)."""
    return {
        plan.COVERAGE_KEY: plan.encode_coverage(coverage),
        COUNTS_KEY: counts_metadata(table),
        NAME_KEY: name.encode(),
        GENERATION_KEY: str(int(generation)).encode(),
        SHARD_KEY: json.dumps({"path": shard, "bytes": shard_bytes} if shard else None).encode(),
    }


@dataclass
class Entry:
    """One accepted-or-candidate manifest as the index knows it."""

    name: str  # file name, e.g. part-<digest>.parquet
    url: str
    identity: str  # size and version (ETag or mtime) when it was read
    rows: int
    coverage: plan.Coverage
    counts: dict[str, Any]
    generation: int = 0
    shard: dict[str, Any] | None = None  # {"path", "bytes"} when it has ok rows
    types: dict[str, pa.DataType] | None = None  # carried columns, when its footer was read

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "identity": self.identity,
            "rows": self.rows,
            "coverage": self.coverage,
            "counts": self.counts,
            "generation": self.generation,
            "shard": self.shard,
        }

    @classmethod
    def from_json(cls, output: str, d: Mapping[str, Any]) -> Entry:
        return cls(
            name=d["name"],
            url=io.join(output, MANIFESTS, d["name"]),
            identity=d["identity"],
            rows=int(d["rows"]),
            coverage=d["coverage"],
            counts=d["counts"],
            generation=int(d.get("generation", 0)),
            shard=d.get("shard"),
        )

    def keys(self) -> int:
        """Distinct input rows it commits."""
        return sum(plan.covered(r) for r in self.coverage.values())


@dataclass
class Part:
    """An index part: its file and the manifests it holds."""

    url: str
    rows: int
    entries: list[Entry]
    generation: int = 0
    problem: str | None = None  # why it cannot be trusted as it stands (read as such)
    types: dict[str, pa.DataType] | None = None  # its carried columns (from its footer)

    @property
    def names(self) -> set[str]:
        return {e.name for e in self.entries}


@dataclass
class Rejected:
    """A manifest that does not count, and why."""

    url: str
    reason: str


@dataclass
class Overlap:
    """A manifest that lost to another committing some of the same rows."""

    loser: str  # URL
    winner: str  # URL
    rows: str  # which rows, "<fragment>:<first>-<last>"
    generations: tuple[int, int]  # (loser's, winner's)

    def describe(self) -> str:
        return (
            f"{posixpath.basename(self.loser)} (generation {self.generations[0]}) commits rows "
            f"{self.rows} that {posixpath.basename(self.winner)} (generation "
            f"{self.generations[1]}) also commits; the latter counts"
        )


@dataclass
class State:
    """An output's index as it stands: the parts to read (every manifest they
    hold accepted and unchanged), the accepted manifests no trusted part holds
    (read directly), and what is set aside and why."""

    output: str
    parts: list[Part]
    pending: list[Entry]
    stale: list[Part] = field(default_factory=list)  # a manifest gone, changed or overruled
    leftovers: list[Part] = field(default_factory=list)  # merged into another part already
    rejected: list[Rejected] = field(default_factory=list)
    overlaps: list[Overlap] = field(default_factory=list)

    @property
    def files(self) -> list[Part | Entry]:
        return [*self.parts, *self.pending]

    @property
    def entries(self) -> list[Entry]:
        return [e for p in self.parts for e in p.entries] + self.pending

    def coverage(self) -> plan.Coverage:
        return plan.merge_coverage(e.coverage for e in self.entries)

    def counts(self) -> dict[str, Any]:
        ok = failed = 0
        models: set[str] = set()
        for e in self.entries:
            c = e.counts or {}
            ok, failed = ok + c.get(OK, 0), failed + c.get(FAILED, 0)
            models.update(c.get("models", []))
        return {"rows_ok": ok, "rows_failed": failed, "models": sorted(models)}

    def keys(self) -> int:
        """Distinct input rows the accepted manifests commit."""
        return sum(e.keys() for e in self.entries)

    def generation(self) -> int:
        """The newest generation among the accepted manifests (0 if none)."""
        return max((e.generation for e in self.entries), default=0)

    @property
    def current(self) -> bool:
        """Whether a glob over ``index/*.parquet`` sees exactly the accepted rows."""
        return not (self.pending or self.stale or self.leftovers)

    def problems(self) -> list[str]:
        """The manifests that do not count and why, one line each."""
        lines = [f"{r.url}: {r.reason}" for r in self.rejected]
        return lines + [f"{o.loser}: {o.describe()}" for o in self.overlaps]


def _map(fn, items: list, threads: int = THREADS) -> list:
    if len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(fn, items))


def listing(url: str, options: Mapping[str, Any] | None) -> dict[str, tuple[str, str]]:
    """``{name: (url, identity)}`` of the ``.parquet`` files directly under
    ``url``; identity is size and version (ETag on S3, mtime on local disk)."""
    fs, path = io.filesystem(url, options)
    try:
        found = fs.ls(path, detail=True, refresh=True) if io.is_remote(url) else fs.ls(path, True)
    except FileNotFoundError:
        return {}
    out = {}
    for e in found:
        name = posixpath.basename(e["name"].rstrip("/"))
        if e.get("type") != "file" or not name.endswith(".parquet") or name.startswith("."):
            continue
        version = e.get("ETag") or e.get("etag") or e.get("mtime") or e.get("LastModified")
        out[name] = (io.join(url, name), f"{e.get('size')}:{version}")
    return out


def _metadata(url: str, options) -> pq.FileMetaData:
    fs, path = io.filesystem(url, options)
    with fs.open(path, "rb") as f:
        return pq.read_metadata(f)


def read_entry(url: str, identity: str, options: Mapping[str, Any] | None) -> Entry | Rejected:
    """A manifest's entry from its footer, or why it does not count."""
    name = posixpath.basename(url)
    try:
        meta = _metadata(url, options)
    except FileNotFoundError:
        raise
    except Exception as exc:
        return Rejected(url, f"unreadable ({type(exc).__name__}: {str(exc)[:200]})")
    kv = meta.metadata or {}
    columns = set(meta.schema.names)
    if not {"object_id", "status", "row_key"} <= columns:
        return Rejected(url, "not a voxray manifest (no object_id, status and row_key columns)")
    recorded = kv.get(NAME_KEY)
    if recorded is not None and f"{recorded.decode()}.parquet" != name:
        return Rejected(
            url,
            f"named {name} but written as {recorded.decode()}.parquet: a copy or a renamed "
            "manifest, its rows are already counted or not this output's",
        )
    try:
        if COUNTS_KEY in kv:
            counts = json.loads(kv[COUNTS_KEY])
        else:  # a manifest of an older voxray: count its rows
            wanted = [c for c in ("status", "model", "threshold", "precision") if c in columns]
            counts = json.loads(counts_metadata(_read(url, options, wanted)))
        generation = int(kv.get(GENERATION_KEY, b"0"))
        shard = json.loads(kv[SHARD_KEY]) if SHARD_KEY in kv else None
        coverage = plan.decode_coverage(kv)
    except FileNotFoundError:
        raise
    except Exception as exc:
        return Rejected(url, f"unreadable metadata ({type(exc).__name__}: {str(exc)[:200]})")
    return Entry(
        name, url, identity, meta.num_rows, coverage, counts, generation, shard,
        types=_carried_types(meta),
    )  # fmt: skip


def _carried_types(meta: pq.FileMetaData) -> dict[str, pa.DataType]:
    """The types of a manifest's or part's carried columns (all but the manifest's own)."""
    raw = (meta.metadata or {}).get(b"ARROW:schema")
    # The Arrow schema pyarrow wrote, read alone: ``to_arrow_schema`` copies the
    # file's key-value metadata (a part's entries, ~0.2 MB) into each schema,
    # which raised the pre-flight's peak by ~22 MiB at 10^7 rows (measured).
    if raw is None:
        schema = meta.schema.to_arrow_schema()
    else:
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(raw)))
    return {f.name: f.type for f in schema if f.name not in MANIFEST_SCHEMA.names}


def _read_part(url: str, output: str, options) -> Part:
    try:
        meta = _metadata(url, options)
    except FileNotFoundError:
        raise
    except Exception as exc:
        return Part(url, 0, [], problem=f"unreadable ({type(exc).__name__})")
    kv = meta.metadata or {}
    if ENTRIES_KEY not in kv:  # an older voxray's part: rebuilt from the manifests
        return Part(url, meta.num_rows, [], problem="written by an older voxray")
    entries = [Entry.from_json(output, d) for d in json.loads(kv[ENTRIES_KEY])]
    generation = int(kv.get(GENERATION_KEY, b"0"))
    return Part(url, meta.num_rows, entries, generation, types=_carried_types(meta))


def state(output: str, options: Mapping[str, Any] | None = None) -> State:
    """Read the index parts' footers, list the manifests and decide which count
    (no rows are read). A part folded away between the listing and its read
    means a fold ran meanwhile: the listing is taken again."""
    for attempt in range(ATTEMPTS):
        try:
            return _state(output, options)
        except FileNotFoundError:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _state(output: str, options: Mapping[str, Any] | None) -> State:
    manifests = listing(io.join(output, MANIFESTS), options)
    parts_listed = listing(io.join(output, INDEX), options)
    parts = _map(lambda u: _read_part(u, output, options), [u for u, _ in parts_listed.values()])
    chosen: list[Part] = []
    stale: list[Part] = []
    leftovers: list[Part] = []
    seen: set[str] = set()
    for part in sorted(parts, key=lambda p: (-p.generation, -len(p.entries), p.url)):
        names = part.names
        if part.problem or not names:
            stale.append(part)
        elif any(manifests.get(e.name, (None, None))[1] != e.identity for e in part.entries):
            part.problem = "names a manifest that is gone or was rewritten"
            stale.append(part)
        elif names & seen:  # an interrupted merge, or a fold by a writer taken over
            leftovers.append(part)
        else:
            chosen.append(part)
            seen |= names
    # Manifests of a part set aside that are unchanged keep their entry (no read).
    known = {
        e.name: e
        for p in stale
        for e in p.entries
        if manifests.get(e.name, ("", ""))[1] == e.identity
    }
    unread = [(u, identity) for n, (u, identity) in manifests.items() if n not in seen | set(known)]
    found = list(known.values()) + _map(lambda x: read_entry(x[0], x[1], options), unread)
    rejected = [f for f in found if isinstance(f, Rejected)]
    candidates = [f for f in found if isinstance(f, Entry)]
    accepted, overlaps = _accept(chosen, candidates)
    # A part holding a manifest that lost is set aside; its other manifests
    # are read directly until the next fold rewrites it.
    losers = {o.loser for o in overlaps}
    trusted: list[Part] = []
    for part in chosen:
        if any(e.url in losers for e in part.entries):
            part.problem = "holds a manifest that lost an overlap"
            stale.append(part)
        else:
            trusted.append(part)
    in_trusted = {e.name for p in trusted for e in p.entries}
    pending = sorted((e for e in accepted if e.name not in in_trusted), key=lambda e: e.name)
    return State(output, trusted, pending, stale, leftovers, rejected, overlaps)


def _accept(parts: list[Part], candidates: list[Entry]) -> tuple[list[Entry], list[Overlap]]:
    """Every manifest in rank order, each accepted unless its rows overlap one
    accepted before it (see the module for the rank)."""
    ranked = [(-e.generation, 0, e.name, e) for p in parts for e in p.entries]
    ranked += [(-e.generation, 1, e.name, e) for e in candidates]
    ranked.sort(key=lambda r: r[:3])
    # per fragment: disjoint accepted ranges sorted by start, and their owners
    starts: dict[str, list[int]] = {}
    spans: dict[str, list[tuple[int, int, Entry]]] = {}
    accepted: list[Entry] = []
    overlaps: list[Overlap] = []
    for *_, entry in ranked:
        clash = None
        for fragment, ranges in entry.coverage.items():
            s, sp = starts.get(fragment, []), spans.get(fragment, [])
            for a, b in ranges:
                i = bisect.bisect_right(s, a) - 1
                for j in range(max(i, 0), len(sp)):
                    a2, b2, owner = sp[j]
                    if a2 >= b:
                        break
                    if b2 > a:
                        clash = (owner, f"{fragment}:{max(a, a2)}-{min(b, b2) - 1}")
                        break
                if clash:
                    break
            if clash:
                break
        if clash:
            owner, rows = clash
            overlaps.append(
                Overlap(entry.url, owner.url, rows, (entry.generation, owner.generation))
            )
            continue
        accepted.append(entry)
        for fragment, ranges in entry.coverage.items():
            s, sp = starts.setdefault(fragment, []), spans.setdefault(fragment, [])
            for a, b in ranges:
                i = bisect.bisect_left(s, a)
                s.insert(i, a)
                sp.insert(i, (a, b, entry))
    return accepted, overlaps


def read_table(
    current: State,
    columns: list[str] | None = None,
    options: Mapping[str, Any] | None = None,
    filters: Any = None,
    threads: int = THREADS,
) -> pa.Table:
    """The rows of every accepted manifest, from the trusted parts and the
    manifests read directly. Files with other carried columns are combined
    (missing ones null); asked-for ``columns`` that no file has are left out.
    ``filters`` (a ``pyarrow.compute`` expression) is pushed into each file's
    reader; a file that lacks a column it names sees that column as null. A
    part folded away meanwhile makes the state be taken again."""
    for attempt in range(ATTEMPTS):
        try:
            return _read_table(current, columns, options, filters, threads)
        except FileNotFoundError:
            if attempt == ATTEMPTS - 1:
                raise
            current = state(current.output, options)
    raise AssertionError("unreachable")


def _read_table(current: State, columns, options, filters, threads) -> pa.Table:
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
        schemas = _map(lambda u: _schema(u, options), urls)
        try:
            schema = pa.unify_schemas(schemas, promote_options="permissive")
        except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
            raise _mixed(exc, schemas, urls) from None
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
    table = _concat(tables, urls)
    if columns is not None:
        table = table.select([c for c in columns if c in table.column_names])
    return table


def fold(
    output: str,
    options: Mapping[str, Any] | None = None,
    fence: Callable[[], None] | None = None,
    generation: int = 0,
) -> State:
    """Bring the index up to date: remove the parts no longer trusted, fold the
    pending manifests into new parts, merge small parts (removed before the
    merged part is written); parts hold at most ``PART_ROWS`` rows, sorted by
    ``object_id``. ``fence`` is called before every write or removal and raises
    when this writer no longer holds the output; ``generation`` is recorded."""
    check = fence or (lambda: None)
    current = state(output, options)
    parts = list(current.parts)
    for p in current.stale + current.leftovers:
        check()
        io.remove(p.url, options)
    for group in _groups(current.pending):
        check()
        table = _gather(output, [(e, None) for e in group], options)
        parts.append(_write_part(output, table, group, generation, options))
    small = [p for p in parts if p.rows < PART_ROWS // 4]
    if len(small) > MAX_SMALL_PARTS:
        for group in _groups(small):
            if len(group) > 1:
                check()
                entries = [e for p in group for e in p.entries]
                table = _gather(output, [(e, p.url) for p in group for e in p.entries], options)
                for p in group:
                    io.remove(p.url, options)
                merged = _write_part(output, table, entries, generation, options)
                parts = [p for p in parts if p not in group] + [merged]
    return State(output, parts, [], [], [], current.rejected, current.overlaps)


def folding(
    output: str,
    options: Mapping[str, Any] | None = None,
    every: float = FOLD_SECONDS,
    fence: Callable[[], None] | None = None,
    generation: int = 0,
):
    """A context: fold the output's new manifests every ``every`` seconds while
    the block runs (the job's writes); a failed fold is tried again next time
    (the manifests are the record)."""
    return background.every(every, lambda: fold(output, options, fence, generation), "index fold")


def _groups(files: list) -> list[list]:
    """``files`` (entries or parts) in consecutive groups of at most
    ``PART_ROWS`` rows (a file bigger than that is a group of its own)."""
    out: list[list] = []
    rows = PART_ROWS
    for f in files:
        if rows + f.rows > PART_ROWS:
            out.append([])
            rows = 0
        out[-1].append(f)
        rows += f.rows
    return out


def _gather(output: str, sources: list[tuple[Entry, str | None]], options) -> pa.Table:
    """The rows of ``sources``: each an entry and the part that holds it (read
    once for all its entries), or None to read the entry's manifest."""
    by_part: dict[str | None, list[Entry]] = {}
    for entry, part in sources:
        by_part.setdefault(part, []).append(entry)
    urls = [u for u in by_part if u is not None]
    urls += [e.url for e in by_part.get(None, [])]
    tables = _map(lambda u: _read(u, options), urls)
    if not tables:
        return MANIFEST_SCHEMA.empty_table()
    try:
        schema = pa.unify_schemas(
            [MANIFEST_SCHEMA, *(t.schema.remove_metadata() for t in tables)],
            promote_options="permissive",
        )
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise _mixed(exc, [t.schema for t in tables], urls) from None
    return pa.concat_tables([_conform(t, schema) for t in tables])


class MixedTypes(ValueError):
    """Files of an output that hold a column in types no reader can combine."""


def column_types(
    current: State, options: Mapping[str, Any] | None = None
) -> dict[str, dict[pa.DataType, str]]:
    """The carried columns of an output (every column but the manifest's own),
    each type found and the first file holding it: from the footers of its
    index parts and pending manifests as ``state`` read them (a manifest kept
    from a part set aside, whose footer ``state`` did not read, is read now)."""
    files = current.files
    unread = [f.url for f in files if f.types is None]
    types = _map(lambda u: _carried_types(_metadata(u, options)), unread)
    read = dict(zip(unread, types, strict=True))
    found: dict[str, dict[pa.DataType, str]] = {}
    for f in files:
        for name, kind in (read[f.url] if f.types is None else f.types).items():
            found.setdefault(name, {}).setdefault(kind, f.url)
    return found


def _concat(tables: list[pa.Table], urls: list[str]) -> pa.Table:
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise _mixed(exc, [t.schema for t in tables], urls) from None


def _mixed(exc: Exception, schemas: list[pa.Schema], urls: list[str]) -> Exception:
    """A ``MixedTypes`` naming the first column whose types cannot be combined,
    both types and a file of each (an output written before voxray refused a
    carried column's change of type); ``exc`` itself when none is found."""
    seen: dict[str, tuple[pa.DataType, str]] = {}
    for schema, url in zip(schemas, urls, strict=True):
        for f in schema:
            if pa.types.is_null(f.type):
                continue
            kind, where = seen.setdefault(f.name, (f.type, url))
            try:
                pa.unify_schemas(
                    [pa.schema([(f.name, kind)]), pa.schema([f])], promote_options="permissive"
                )
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                return MixedTypes(
                    f"the output's column {f.name!r} is {kind} in {where} and {f.type} in {url}: "
                    "its manifests were written by runs whose input held the column in different "
                    "types. Read the other columns (Output.manifests(columns=[...]) without it), "
                    "or rewrite one side's files with the column cast to the other's type."
                )
    return exc


def _write_part(
    output: str, table: pa.Table, entries: list[Entry], generation: int, options
) -> Part:
    """One part holding ``table`` (the rows of ``entries``), sorted by
    ``object_id`` so that a lookup by id reads few row groups; written whole,
    then it exists."""
    table = table.sort_by([("object_id", "ascending")])
    entries = sorted(entries, key=lambda e: e.name)
    names = [e.name for e in entries]
    counts: dict[str, Any] = {OK: 0, FAILED: 0, "models": set()}
    for e in entries:
        counts[OK] += (e.counts or {}).get(OK, 0)
        counts[FAILED] += (e.counts or {}).get(FAILED, 0)
        counts["models"].update((e.counts or {}).get("models", []))
    counts["models"] = sorted(counts["models"])
    metadata = {
        MANIFESTS_KEY: json.dumps(names).encode(),
        ENTRIES_KEY: json.dumps([e.to_json() for e in entries]).encode(),
        plan.COVERAGE_KEY: plan.encode_coverage(plan.merge_coverage(e.coverage for e in entries)),
        COUNTS_KEY: json.dumps(counts).encode(),
        GENERATION_KEY: str(int(generation)).encode(),
    }
    buffer = BytesIO()
    pq.write_table(
        table.replace_schema_metadata(metadata),
        buffer,
        compression="zstd",
        row_group_size=ROW_GROUP_ROWS,
    )
    digest = hashlib.sha256(
        "\n".join(f"{e.name} {e.identity}" for e in entries).encode()
    ).hexdigest()[:32]
    url = io.join(output, INDEX, f"part-{digest}.parquet")
    io.write_bytes(url, buffer.getvalue(), options)
    return Part(url, table.num_rows, entries, generation)


def _schema(url: str, options) -> pa.Schema:
    fs, path = io.filesystem(url, options)
    with fs.open(path, "rb") as f:
        return pq.read_schema(f).remove_metadata()


def _read(url: str, options, columns: list[str] | None = None) -> pa.Table:
    fs, path = io.filesystem(url, options)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.table(columns, schema=schema.remove_metadata())
