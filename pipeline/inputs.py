"""The job's input, file by file: ``scan`` reads every Parquet file's footer (in
parallel threads) and checks each file's schema against the input contract
before any row is read, naming the files that cannot be read and the columns
that do not fit; ``normalize`` converts every batch read to the canonical types
(``object_id`` string, ``views`` list<binary>, ``voxels`` binary);
``open_input`` opens one file for its row groups, its footer parsed once
(``read_row_group`` and ``iter_batches`` read one row group with it), with
``pq.ParquetFile``, which never mistakes a Hive-style folder
(``category=chairs/``) for a column. It must never import TensorFlow or Ray,
never keep a scanned file's full footer (a catalog has 10^5 files), and never let one
unreadable file hide which file it was.

Accepted input types (anything accepted is converted by ``normalize``, cheaply
and without a Python loop over rows; canonical input passes through untouched):

- ``object_id``: ``string``, ``large_string``, ``string_view``; any integer
  (``int8``..``uint64``, read as its decimal string, so ``42`` becomes ``"42"``);
  a dictionary of any of these. Refused: floats (``1.0`` vs ``"1"``), binary
  (raw bytes or text?), the null type, anything else.
- ``views``: ``list``, ``large_list`` or ``fixed_size_list`` of ``binary``,
  ``large_binary`` or ``binary_view``; or a single ``binary``/``large_binary``/
  ``binary_view`` per row, read as a one-view list (a null stays a null row).
  Refused: text (``string``, ``list<string>``, ...: base64, paths or URLs
  cannot be told apart; store the encoded bytes as binary), the null type,
  anything else.
- ``voxels`` (optional): ``binary``, ``large_binary``, ``binary_view``,
  ``fixed_size_binary(4096)``; the null type (no ground truth). Refused: other
  fixed sizes (every row would fail), lists, text.
- every other column: carried into the manifest when it is a scalar (lists,
  structs and maps stay behind); a dictionary column is carried as its values.
  Files may carry different columns: the read schema is their union, and a file
  without a column gives nulls. A column whose type differs between files is
  widened when no value can change: null to anything, signed integers to the
  widest, unsigned integers to the widest (or to a wider signed one), floats to
  the widest, ``string``/``large_string``/``string_view`` to ``large_string``
  when any is large (else ``string``), the same for binary. Any other difference
  (``int64`` in one file, ``string`` in another; ``int64`` and ``double``) is a
  problem that names both files and both types: casting would change the values
  the manifest promises to carry unchanged. Two carried columns whose names
  differ only in case (``SKU`` and ``sku``) are a problem too: DuckDB and most
  readers cannot tell them apart (``pipeline.columns``).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model.voxels import VOXEL_BYTES
from pipeline import io

OBJECT_ID, VIEWS, VOXELS = "object_id", "views", "voxels"
REQUIRED = (OBJECT_ID, VIEWS)
# The canonical types every batch leaves normalize() with.
CANONICAL = pa.schema(
    [
        pa.field(OBJECT_ID, pa.string()),
        pa.field(VIEWS, pa.list_(pa.binary())),
        pa.field(VOXELS, pa.binary()),
    ]
)
EXPECTED = {
    OBJECT_ID: "string (or an integer, read as its decimal string)",
    VIEWS: "list<binary> of encoded images (PNG/JPEG bytes)",
    VOXELS: f"binary of {VOXEL_BYTES} bytes (np.packbits of a [32,32,32] bool grid)",
}

# Arrays whose 32-bit offsets could overflow are cast in slices of at most this
# many bytes: a large_list<large_binary> row group can hold more than 2 GiB.
MAX_CAST_BYTES = 2**31 - 2**20
# How many footer reads are queued beyond the running ones: enough to keep the
# threads busy, few enough that 10^5 files do not become 10^5 futures at once.
QUEUED_PER_THREAD = 4
# Characters of an exception's message kept in a reason.
REASON_CHARS = 300


class InputTypeError(TypeError):
    """A column whose type the input contract does not accept."""


class InputReadError(RuntimeError):
    """A file (or one of its row groups) that cannot be read, with its name.

    Attributes:
        url: the file.
        row_group: the row group, or None for the file's footer.
        reason: ``ExceptionType: message`` on one line.
    """

    def __init__(self, url: str, row_group: int | None, reason: str):
        self.url, self.row_group, self.reason = url, row_group, reason
        where = url if row_group is None else f"{url} (row group {row_group})"
        super().__init__(f"cannot read input {where}: {reason}")


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What the scan keeps of one readable file (not its footer).

    Args:
        url: the file.
        size: bytes.
        version: ``etag:<ETag>`` on S3, ``mtime:<seconds>`` on local disk (what
            the filesystem offers), or None: what the store says, which changes
            when the file is touched, copied or re-uploaded with the same bytes.
        num_rows: rows in the file.
        row_groups: rows in each row group, in order.
        schema: the file's Arrow schema, without its metadata (shared between
            files with the same schema).
        content: ``footer_digest`` of the file: what it holds, whatever its name,
            mtime or ETag.
    """

    url: str
    size: int
    version: str | None
    num_rows: int
    row_groups: tuple[int, ...]
    schema: pa.Schema
    content: str = ""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A file whose footer could not be read, and why (one line)."""

    url: str
    reason: str

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Problem:
    """A column of a file that does not fit the input contract."""

    file: str
    column: str
    found: str  # the type found, or "missing"
    expected: str
    note: str = ""

    def __str__(self) -> str:
        text = f"{self.file}: column {self.column!r} is {self.found}, expected {self.expected}"
        return f"{text}; {self.note}" if self.note else text


@dataclass
class Scan:
    """The input as its footers describe it.

    Attributes:
        files: readable files, in the order given.
        unreadable: files whose footer could not be read, with the reason.
        schema_problems: columns that do not fit the contract, one per file and
            column (a file with a problem is readable but not ``usable``).
        schema: the read schema: ``object_id``, ``views``, ``voxels`` (when any
            file has it) in their canonical types, then the carried columns
            (union over readable files, in order of first appearance) in their
            widened types. Pass it to ``read_row_group``/``iter_batches`` so every
            batch has the same schema.
        seconds: wall time of the scan.
        skipped: ``(url, why)`` of the files and folders under the input that
            are not read at all (``io.list_input``: names starting with ``_``
            or ``.``, files that are not Parquet).
    """

    files: list[FileInfo]
    unreadable: list[Unreadable]
    schema_problems: list[Problem]
    schema: pa.Schema
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    _bad: frozenset[str] = field(default_factory=frozenset, repr=False)

    @property
    def problems(self) -> list[str]:
        """The schema problems as sentences naming file, column, found and expected."""
        return [str(p) for p in self.schema_problems]

    @property
    def columns(self) -> list[str]:
        """The columns to read: object_id, views, voxels if any file has it, carried."""
        return self.schema.names

    @property
    def total_rows(self) -> int:
        """Rows in the readable files (usable or not)."""
        return sum(f.num_rows for f in self.files)

    @property
    def usable_rows(self) -> int:
        """Rows in the usable files: what a run would read."""
        return sum(f.num_rows for f in self.usable)

    @property
    def usable(self) -> list[FileInfo]:
        """Readable files without a schema problem."""
        return [f for f in self.files if f.url not in self._bad]

    @property
    def ok(self) -> bool:
        """Every file readable and every schema fits."""
        return not self.unreadable and not self.schema_problems

    def row_groups(self) -> Iterator[tuple[str, int, int]]:
        """``(url, row_group, num_rows)`` of every usable file's row groups."""
        for info in self.usable:
            for group, rows in enumerate(info.row_groups):
                yield info.url, group, rows

    def report(self, limit: int = 20) -> str:
        """A report for people: totals, then up to ``limit`` unreadable files and
        up to ``limit`` schema problems."""
        usable = self.usable
        lines = [
            f"input: {len(self.files) + len(self.unreadable)} files scanned in "
            f"{self.seconds:.1f}s: {len(usable)} usable "
            f"({self.usable_rows} rows, "
            f"{sum(len(f.row_groups) for f in usable)} row groups), "
            f"{len(self.unreadable)} unreadable, "
            f"{len(self.files) - len(usable)} with schema problems",
            f"columns: {', '.join(f'{f.name} ({f.type})' for f in self.schema)}",
        ]
        for title, items in (
            ("unreadable files", self.unreadable),
            ("schema problems", self.schema_problems),
        ):
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines += [f"  {item}" for item in items[:limit]]
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more")
        return "\n".join(lines)


def scan(
    files: Sequence[str],
    storage_options: Mapping[str, Any] | None = None,
    threads: int = 32,
    retry_seconds: float = io.RETRY_SECONDS,
    details: Mapping[str, Mapping[str, Any]] | None = None,
) -> Scan:
    """Read every file's footer in parallel and check it against the contract.

    A file that cannot be read (not Parquet, truncated, a corrupt footer, gone,
    forbidden) is listed in ``unreadable`` with its reason, and the others are
    still scanned. Only the footer is read: a corrupt data page is found when
    its row group is read (``InputReadError``). ``scan`` is ``summarize`` of
    ``read_footers``; a caller with many more files than one process reads
    quickly can run ``read_footers`` on parts of the list elsewhere (its results
    pickle) and ``summarize`` them together.

    Args:
        files: Parquet file URLs.
        storage_options: fsspec options (``--storage-options``).
        threads: footer reads in flight.
        retry_seconds: how long a footer read retries a transient storage error.
        details: optional fsspec entries of the files by URL (``fs.find(path,
            detail=True)``: ``size`` and ``ETag`` or ``mtime``), taken by this
            run's listing. With them, a footer read on S3 is one GET instead of a
            HEAD and a GET.

    Raises:
        io.StorageError: the storage itself failed (unreachable endpoint,
            throttling) past ``retry_seconds``: no file is to blame.
    """
    started = time.monotonic()
    footers = read_footers(files, storage_options, threads, retry_seconds, details)
    return summarize(footers, seconds=time.monotonic() - started)


def read_footers(
    files: Sequence[str],
    storage_options: Mapping[str, Any] | None = None,
    threads: int = 32,
    retry_seconds: float = io.RETRY_SECONDS,
    details: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[FileInfo | Unreadable]:
    """Each file's ``FileInfo``, or ``Unreadable`` with the reason, in the order
    given; the footer reads of ``scan`` (see it for the arguments and errors)."""
    options = dict(storage_options or {})
    resolve = _Resolver(options)
    results: list[FileInfo | Unreadable | None] = [None] * len(files)
    schemas: dict[pa.Schema, pa.Schema] = {}  # one object per distinct schema

    def one(url: str) -> FileInfo | Unreadable:
        known = details.get(url) if details else None
        try:
            info = io.retrying(lambda: _read_footer(url, resolve, known), retry_seconds)
        except Exception as exc:
            if io.is_transient(exc):
                raise _Outage(url, exc) from exc
            return Unreadable(url, reason(exc))
        return _replace_schema(info, schemas.setdefault(info.schema, info.schema))

    workers = max(1, min(threads, len(files)))
    pool = ThreadPoolExecutor(workers, thread_name_prefix="voxray-scan")
    todo = iter(enumerate(files))
    running: dict[Future, int] = {}
    try:
        while True:
            for i, url in itertools.islice(todo, workers * QUEUED_PER_THREAD - len(running)):
                running[pool.submit(one, url)] = i
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                results[running.pop(future)] = future.result()
    except _Outage as outage:
        # Reads in flight may go on retrying; the run does not wait for them.
        pool.shutdown(wait=False, cancel_futures=True)
        raise io.explain(outage.cause, outage.url, "input", options) from None
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results  # every slot is filled


def summarize(footers: Iterable[FileInfo | Unreadable], seconds: float = 0.0) -> Scan:
    """The ``Scan`` of footers read by ``read_footers`` (from one call or many)."""
    schemas: dict[pa.Schema, pa.Schema] = {}
    readable, unreadable = [], []
    for footer in footers:
        if isinstance(footer, Unreadable):
            unreadable.append(footer)
        else:
            readable.append(
                _replace_schema(footer, schemas.setdefault(footer.schema, footer.schema))
            )
    problems, schema = check(readable)
    return Scan(
        files=readable,
        unreadable=unreadable,
        schema_problems=problems,
        schema=schema,
        seconds=seconds,
        _bad=frozenset(p.file for p in problems),
    )


def check(files: Sequence[FileInfo]) -> tuple[list[Problem], pa.Schema]:
    """The schema problems of ``files`` and their read schema (see ``Scan``).

    Each distinct schema is checked once, however many files share it.
    """
    per_schema: dict[pa.Schema, list[tuple[str, str, str, str]]] = {}
    first_file: dict[pa.Schema, str] = {}
    for info in files:
        if info.schema not in per_schema:
            per_schema[info.schema] = check_schema(info.schema)
            first_file[info.schema] = info.url
    has_voxels = any(VOXELS in s.names for s in per_schema)

    # Carried columns: the widened type of each, and the schemas in conflict.
    carried: dict[str, tuple[pa.DataType, str]] = {}  # name -> (type, first file with it)
    conflicts: dict[pa.Schema, list[tuple[str, str, str, str]]] = {}
    spelled: dict[str, str] = {}  # a carried name in lower case -> its first spelling
    for schema in per_schema:
        for name, kind in _carried(schema).items():
            twin = spelled.setdefault(name.lower(), name)
            if twin != name and not any(map(pa.types.is_nested, (kind, carried[twin][0]))):
                conflicts.setdefault(schema, []).append(
                    (
                        name,
                        f"a second spelling of {twin!r} (in {carried[twin][1]})",
                        "a name no other column has in any case",
                        "DuckDB, Spark and pandas do not tell names apart by case: rename one",
                    )
                )
                continue
            if name not in carried:
                carried[name] = (kind, first_file[schema])
                continue
            current, where = carried[name]
            if pa.types.is_nested(current) and pa.types.is_nested(kind):
                continue  # not carried in either file
            widened = widen(current, kind)
            if widened is None:
                conflicts.setdefault(schema, []).append(
                    (
                        name,
                        str(kind),
                        f"{current} as in {where}",
                        "a carried column must have one type in every file (or types that "
                        "widen without changing a value); cast it in one of them",
                    )
                )
            else:
                carried[name] = (widened, where)

    problems = [
        Problem(info.url, *args)
        for info in files
        for args in (*per_schema[info.schema], *conflicts.get(info.schema, ()))
    ]
    fields = [CANONICAL.field(OBJECT_ID), CANONICAL.field(VIEWS)]
    if has_voxels:
        fields.append(CANONICAL.field(VOXELS))
    fields += [
        pa.field(name, kind) for name, (kind, _) in carried.items() if not pa.types.is_nested(kind)
    ]
    return problems, pa.schema(fields)


def check_schema(schema: pa.Schema) -> list[tuple[str, str, str, str]]:
    """``(column, found, expected, note)`` for each column of one file's schema
    that does not fit the contract (nothing when it fits)."""
    found = []
    for name in (OBJECT_ID, VIEWS, VOXELS):
        indices = schema.get_all_field_indices(name)
        if not indices:
            if name in REQUIRED:
                found.append((name, "missing", EXPECTED[name], "the input contract requires it"))
            continue
        if len(indices) > 1:
            found.append((name, f"{len(indices)} columns", EXPECTED[name], "names must be unique"))
            continue
        kind = schema.field(indices[0]).type
        refusal = _refusal(name, kind)
        if refusal is not None:
            found.append((name, str(kind), EXPECTED[name], refusal))
    return found


def widen(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type both ``a`` and ``b`` convert to without changing a value, or None."""
    if a == b:
        return a
    if pa.types.is_null(a) or pa.types.is_null(b):
        return b if pa.types.is_null(a) else a
    t = pa.types
    if t.is_integer(a) and t.is_integer(b):
        if t.is_signed_integer(a) == t.is_signed_integer(b):
            return a if a.bit_width >= b.bit_width else b
        signed, unsigned = (a, b) if t.is_signed_integer(a) else (b, a)
        return signed if signed.bit_width > unsigned.bit_width else None
    if t.is_floating(a) and t.is_floating(b):
        return a if a.bit_width >= b.bit_width else b
    for family, large in (
        ((pa.string(), pa.large_string(), pa.string_view()), pa.large_string()),
        ((pa.binary(), pa.large_binary(), pa.binary_view()), pa.large_binary()),
    ):
        if a in family and b in family:
            return large if large in (a, b) else family[0]
    return None


def normalize(table: pa.Table, schema: pa.Schema | None = None) -> pa.Table:
    """One read batch in the canonical types: ``object_id`` string, ``views``
    list<binary>, ``voxels`` binary; dictionary columns decoded.

    Conversions are Arrow casts (zero-copy where the layout allows); a table
    already canonical is returned as it is (the same object).

    Args:
        table: a batch read from one input file.
        schema: the read schema (``Scan.schema``): when given, the result has
            exactly its columns, in its order and types; a column the batch lacks
            is all nulls.

    Raises:
        InputTypeError: a column whose type the contract does not accept.
    """
    names = table.column_names
    out = table
    for i, name in enumerate(names):
        column = out.column(i)
        if name in CANONICAL.names:
            target = CANONICAL.field(name)
            if column.type != target.type:
                out = out.set_column(i, target, _to_canonical(name, column))
        elif pa.types.is_dictionary(column.type):
            out = out.set_column(i, name, column.cast(column.type.value_type))
    if schema is None or out.schema.equals(schema):
        return out
    n = out.num_rows
    columns = []
    for target in schema:
        if target.name in names:
            column = out.column(target.name)
            columns.append(column if column.type == target.type else column.cast(target.type))
        else:
            columns.append(pa.nulls(n, target.type))
    return pa.Table.from_arrays(columns, schema=schema)


def read_row_group(
    url: str,
    row_group: int,
    columns: Sequence[str] | pa.Schema,
    storage_options: Mapping[str, Any] | None = None,
    retry_seconds: float = io.RETRY_SECONDS,
) -> pa.Table:
    """One row group of one file, normalized, with the file's own columns only.

    The file is opened by itself with ``pq.ParquetFile``: a Hive-style folder in
    its path (``category=chairs/``) is not a column, so a file's own
    ``category`` stays what the file says.

    Args:
        url: the file.
        row_group: the row group's index.
        columns: the columns wanted: ``Scan.schema`` (the result has exactly that
            schema), or names (those present, in the canonical types; an absent
            one as nulls, typed canonically for object_id/views/voxels and as the
            null type otherwise).
        storage_options: fsspec options.
        retry_seconds: how long the read retries a transient storage error.

    Raises:
        InputReadError: the file or row group cannot be read, or holds a column
            the contract does not accept (names both, and the reason).
        Exception: the storage's own error when it is transient (an outage,
            throttling) and outlasted ``retry_seconds``, noting the file;
            ``io.is_transient`` tells it from a bad file.
    """

    def read() -> pa.Table:
        with _open(url, storage_options, 0, row_group) as source:
            return source.read(row_group, columns)

    try:
        return io.retrying(read, retry_seconds)
    except InputReadError:
        raise
    except Exception as exc:
        raise _read_error(exc, url, row_group) from None


def iter_batches(
    url: str,
    row_group: int,
    batch_rows: int,
    columns: Sequence[str] | pa.Schema,
    storage_options: Mapping[str, Any] | None = None,
    retry_seconds: float = io.RETRY_SECONDS,
) -> Iterator[pa.Table]:
    """One row group of one file as normalized tables of at most ``batch_rows``
    rows; what ``read_row_group`` returns, streamed (see it for the arguments).

    Opening the file is retried on a transient storage error; a failure after
    the first batch raises ``InputReadError`` (batches already yielded stand).
    """
    with _open(url, storage_options, retry_seconds, row_group) as source:
        yield from source.iter_batches([row_group], batch_rows, columns)


class InputGone(InputReadError):
    """A file that is not there (any more): deleted, renamed or not yet written."""


class InputChangedDuringRun(RuntimeError):
    """An input file that is not what the run planned to read: rewritten or gone
    since its footer was scanned. The run stops (exit 1) without committing a
    row of the file's new content under the keys planned for the old one."""


def open_input(
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    retry_seconds: float = io.RETRY_SECONDS,
) -> OpenInput:
    """``url`` opened for reading its row groups, its footer parsed once.

    Raises:
        InputGone: the file is not there.
        InputReadError: the file or its footer cannot be read.
        Exception: a transient storage error that outlasted ``retry_seconds``.
    """
    return _open(url, storage_options, retry_seconds)


def _open(
    url: str,
    storage_options: Mapping[str, Any] | None,
    retry_seconds: float,
    row_group: int | None = None,
) -> OpenInput:
    """``open_input``, its errors naming ``row_group`` (the one about to be read)."""

    def attempt() -> OpenInput:
        fs, path = io.filesystem(url, storage_options)
        handle = fs.open(path, "rb", cache_type="none")
        try:
            size = getattr(handle, "size", None)  # what the open saw, not a second look
            return OpenInput(url, handle, int(fs.size(path) if size is None else size))
        except BaseException:
            handle.close()
            raise

    try:
        return io.retrying(attempt, retry_seconds)
    except FileNotFoundError as exc:
        raise InputGone(url, row_group, reason(exc)) from None
    except Exception as exc:
        raise _read_error(exc, url, row_group) from None


class OpenInput:
    """One input file, open: its footer parsed once for every row group read
    from it (a footer of 5,000 row groups takes ~50 ms to parse; parsed per row
    group, a file of small row groups cost time quadratic in its size).

    Reads are pre-buffered: the column chunks of the row groups asked for in one
    ``iter_batches`` call are fetched in few coalesced reads (on S3, a few
    ranged GETs instead of one per column chunk). Use it as a context manager,
    or ``close`` it.

    Attributes:
        url: the file.
        size: its bytes, as the open saw them.
        metadata: its parsed footer.
    """

    def __init__(self, url: str, handle: Any, size: int):
        self.url, self.size, self._handle = url, size, handle
        self._parquet = pq.ParquetFile(handle, pre_buffer=True)
        self.metadata = self._parquet.metadata
        self._names = set(self._parquet.schema_arrow.names)
        self._content: str | None = None

    @property
    def content(self) -> str:
        """``footer_digest`` of the file, computed once."""
        if self._content is None:
            self._content = footer_digest(self.metadata, self.size)
        return self._content

    def group_rows(self, row_group: int) -> int:
        return self.metadata.row_group(row_group).num_rows

    def group_bytes(self, row_group: int) -> int:
        """The row group's bytes as stored (compressed), what a read of it fetches."""
        group = self.metadata.row_group(row_group)
        return sum(group.column(c).total_compressed_size for c in range(group.num_columns))

    def iter_batches(
        self,
        row_groups: Sequence[int],
        batch_rows: int | None,
        columns: Sequence[str] | pa.Schema,
    ) -> Iterator[pa.Table]:
        """The rows of ``row_groups``, in that order, as normalized tables of at
        most ``batch_rows`` rows (None: Arrow's default); a batch may span row
        groups. ``columns`` as in ``read_row_group``.

        Raises:
            InputReadError: a row group cannot be read (naming it when only one
                was asked for); a transient storage error stays itself.
        """
        names = columns.names if isinstance(columns, pa.Schema) else list(columns)
        where = row_groups[0] if len(row_groups) == 1 else None
        options = {} if batch_rows is None else {"batch_size": batch_rows}
        try:
            batches = self._parquet.iter_batches(
                row_groups=list(row_groups),
                columns=[c for c in names if c in self._names],
                **options,
            )
        except Exception as exc:
            raise _read_error(exc, self.url, where) from None
        while True:
            try:
                batch = next(batches, None)
                table = None if batch is None else _shape(pa.Table.from_batches([batch]), columns)
            except Exception as exc:
                raise _read_error(exc, self.url, where) from None
            if table is None:
                return
            yield table

    def read(self, row_group: int, columns: Sequence[str] | pa.Schema) -> pa.Table:
        """One row group whole, normalized (``columns`` as in ``read_row_group``)."""
        names = columns.names if isinstance(columns, pa.Schema) else list(columns)
        try:
            table = self._parquet.read_row_group(
                row_group, columns=[c for c in names if c in self._names]
            )
            return _shape(table, columns)
        except Exception as exc:
            raise _read_error(exc, self.url, row_group) from None

    def read_ids(self, row_group: int) -> list[str | None]:
        """The ``object_id`` column of one row group alone, as strings: what
        names the rows of a row group whose other columns cannot be read."""
        if OBJECT_ID not in self._names:
            return [None] * self.group_rows(row_group)
        table = self._parquet.read_row_group(row_group, columns=[OBJECT_ID])
        return normalize(table).column(OBJECT_ID).to_pylist()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> OpenInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reason(exc: BaseException) -> str:
    """``ExceptionType: first line of the message``, at most REASON_CHARS long."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    # Thrift and codec errors quote raw bytes: keep the reason one printable line.
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + "..."


# --- type rules --------------------------------------------------------------


def _is_text(t: pa.DataType) -> bool:
    return t in (pa.string(), pa.large_string(), pa.string_view())


def _is_bytes(t: pa.DataType) -> bool:
    return t in (pa.binary(), pa.large_binary(), pa.binary_view())


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _refusal(name: str, t: pa.DataType) -> str | None:
    """Why column ``name`` may not have type ``t``, or None when it may."""
    if name == OBJECT_ID:
        value = t.value_type if pa.types.is_dictionary(t) else t
        if _is_text(value) or pa.types.is_integer(value):
            return None
        if pa.types.is_floating(value) or pa.types.is_decimal(value):
            return (
                "a fractional id is ambiguous (is 1.0 the id '1'?): write it as string or integer"
            )
        if _is_bytes(value):
            return "binary ids are ambiguous (raw bytes or text?): write them as string"
        if pa.types.is_null(value):
            return "the column holds no typed value (null type): every row would fail"
        return "write it as string"
    if name == VIEWS:
        if _is_bytes(t) or (_is_list(t) and _is_bytes(t.value_type)):
            return None
        if _is_text(t) or (_is_list(t) and _is_text(t.value_type)):
            return (
                "text views are ambiguous (base64? file paths? URLs?): store the encoded "
                "image bytes as binary"
            )
        if pa.types.is_null(t):
            return "the column holds no typed value (null type): every row would fail"
        return "each row needs a list of encoded images"
    if name == VOXELS:
        if _is_bytes(t) or pa.types.is_null(t):
            return None
        if pa.types.is_fixed_size_binary(t):
            return None if t.byte_width == VOXEL_BYTES else "every row would fail its size check"
        return "ground truth is packed bits as binary"
    return None


def _carried(schema: pa.Schema) -> dict[str, pa.DataType]:
    """The other columns of one file and their types (dictionaries as their
    values); nested ones are listed too (they are not carried, but a column
    nested in one file and scalar in another is a conflict). A name that appears
    twice is left out."""
    counts: dict[str, int] = {}
    for f in schema:
        counts[f.name] = counts.get(f.name, 0) + 1
    return {
        f.name: f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        for f in schema
        if f.name not in CANONICAL.names and counts[f.name] == 1
    }


def _to_canonical(name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    """``column`` (of input column ``name``) cast to its canonical type."""
    if pa.types.is_null(column.type):
        return pa.chunked_array(
            [pa.nulls(len(c), CANONICAL.field(name).type) for c in column.chunks]
        )
    refusal = _refusal(name, column.type)
    if refusal is not None:
        raise InputTypeError(
            f"column {name!r} is {column.type}, expected {EXPECTED[name]}; {refusal}"
        )
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    target = CANONICAL.field(name).type
    convert = _one_view_lists if name == VIEWS and _is_bytes(column.type) else None
    chunks = []
    for chunk in column.chunks:
        for piece in _slices(chunk, MAX_CAST_BYTES):
            chunks.append(convert(piece) if convert else piece.cast(target))
    return pa.chunked_array(chunks, target)


def _one_view_lists(values: pa.Array) -> pa.Array:
    """A binary array as list<binary> with one view per row (null rows stay null)."""
    offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32))
    mask = values.is_null() if values.null_count else None
    return pa.ListArray.from_arrays(offsets, values.cast(pa.binary()), mask=mask)


def _slices(array: pa.Array, max_bytes: int) -> list[pa.Array]:
    """``array`` in zero-copy slices of at most ``max_bytes`` each (a single
    row over the limit stays whole), so that casts to 32-bit offsets fit."""
    if array.nbytes <= max_bytes or len(array) < 2:
        return [array]
    half = len(array) // 2
    return _slices(array.slice(0, half), max_bytes) + _slices(array.slice(half), max_bytes)


def _shape(table: pa.Table, columns: Sequence[str] | pa.Schema) -> pa.Table:
    """``table`` normalized to ``columns``: a schema (see ``normalize``), or names
    (in that order, each in its normalized type; an absent one as nulls)."""
    if isinstance(columns, pa.Schema):
        return normalize(table, columns)
    out = normalize(table)
    if out.column_names == list(columns):
        return out
    fields = [
        out.schema.field(c)
        if c in out.column_names
        else (CANONICAL.field(c) if c in CANONICAL.names else pa.field(c, pa.null()))
        for c in columns
    ]
    arrays = [
        out.column(f.name) if f.name in out.column_names else pa.nulls(out.num_rows, f.type)
        for f in fields
    ]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


# --- footers -----------------------------------------------------------------


class _Outage(Exception):
    """A transient storage error that outlasted its retries (no file to blame)."""

    def __init__(self, url: str, cause: BaseException):
        super().__init__(url)
        self.url, self.cause = url, cause


class _Resolver:
    """URL -> (filesystem, path), resolving each scheme's filesystem once:
    ``io.filesystem`` costs ~0.3 ms for S3, 30 s of driver time at 10^5 files."""

    def __init__(self, options: dict[str, Any]):
        self.options = options
        self.by_scheme: dict[str, Any] = {}

    def __call__(self, url: str) -> tuple[Any, str]:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if "::" in url:  # chained URLs: let fsspec parse each one
            return io.filesystem(url, self.options)
        fs = self.by_scheme.get(scheme)
        if fs is None:
            fs, path = io.filesystem(url, self.options)
            self.by_scheme[scheme] = fs
            return fs, path
        return fs, fs._strip_protocol(url)


def _read_footer(url: str, resolve: _Resolver, known: Mapping[str, Any] | None) -> FileInfo:
    fs, path = resolve(url)
    size = int(known["size"]) if known and known.get("size") is not None else None
    # No read-ahead cache: the footer read is one ranged GET of the file's tail.
    # Known details spare s3fs the HEAD it would make to learn the size.
    with fs.open(path, "rb", cache_type="none", size=size) as f:
        if size is not None:
            f.details = dict(known)  # s3fs HEADs on first read for what it lacks
        parquet = pq.ParquetFile(f)
        metadata = parquet.metadata
        schema = parquet.schema_arrow.remove_metadata()
        row_groups = tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
        num_rows = metadata.num_rows
        if size is None:
            known = getattr(f, "details", None)  # s3fs: the HEAD it made to open
    if not isinstance(known, Mapping) or known.get("size") is None:
        known = fs.info(path)
    size = int(known["size"])
    content = footer_digest(metadata, size)
    return FileInfo(url, size, _version(known), num_rows, row_groups, schema, content)


def footer_digest(metadata: pq.FileMetaData, size: int) -> str:
    """The file's content as its footer shows it: a digest of the file's size
    and its footer's bytes (schema, and the row count, byte range, sizes and
    statistics of every column chunk of every row group). A copy, a touch, a
    restore or a re-upload keeps it; rewriting the rows changes it. Costs
    re-serializing the footer (~7 ms for 5,000 row groups, 1 MB)."""
    # Written into a Python buffer, not Arrow's: Arrow's pool (mimalloc) keeps an
    # arena per scan thread, which added 17 MB to the driver's peak at 153 files.
    buffer = BytesIO()
    # PAR1 + the footer's thrift bytes + length + PAR1
    metadata.write_metadata_file(pa.PythonFile(buffer, mode="w"))
    digest = hashlib.sha256(size.to_bytes(8, "little"))
    digest.update(buffer.getbuffer())
    return digest.hexdigest()[:32]


def _version(details: Mapping[str, Any]) -> str | None:
    for key, tag in (("ETag", "etag"), ("etag", "etag"), ("generation", "generation")):
        if details.get(key):
            return f"{tag}:{str(details[key]).strip(chr(34))}"
    for key in ("mtime", "LastModified", "last_modified", "updated"):
        value = details.get(key)
        if value is not None:
            return f"mtime:{value.isoformat() if hasattr(value, 'isoformat') else value}"
    return None


def _replace_schema(info: FileInfo, schema: pa.Schema) -> FileInfo:
    if info.schema is schema:
        return info
    return FileInfo(
        info.url, info.size, info.version, info.num_rows, info.row_groups, schema, info.content
    )


def _read_error(exc: Exception, url: str, row_group: int | None) -> Exception:
    """An ``InputReadError`` naming the file and row group (None: the file as a
    whole, or several row groups); a transient storage error stays itself
    (noting the file), so that a caller can still tell it with
    ``io.is_transient`` and ride the outage out."""
    if isinstance(exc, InputReadError):
        return exc
    if io.is_transient(exc):
        where = url if row_group is None else f"{url} (row group {row_group})"
        exc.add_note(f"while reading input {where}")
        return exc
    return InputReadError(url, row_group, reason(exc))
