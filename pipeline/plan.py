"""What a run reads: the input cut into fragments (one Parquet row group of one
file each), less what the output already holds.

A row's identity is its position: ``row_key = "<fragment>:<row>"``, where the
fragment's key digests the file's URL, its size and version (ETag on S3, mtime
on local disk) and the row group. Each manifest records, in its Parquet
metadata, which row ranges of which fragments it commits; the output index
folds those records together. Planning a rerun therefore costs one footer per
input file and one record per fragment, never a lookup per committed row: a
fragment committed in full is not read at all, and only a fragment that was in
flight at a crash is read and filtered by row position, inside its own read
task. Duplicate ``object_id`` values are separate rows, each committed once.

This module must never read a row to plan, and never import TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline import io
from pipeline.columns import carry

Ranges = list[list[int]]  # sorted, disjoint [start, stop) row ranges of one fragment
Coverage = dict[str, Ranges]  # fragment key -> committed row ranges

COVERAGE_KEY = b"voxray.rows"  # a manifest's (and index part's) Parquet metadata
READ_ERROR = "read_error"  # the reader's column: why a row's data could not be read


class InputChanged(RuntimeError):
    """A file the output has rows of was changed since they were committed."""


def fragment_key(url: str, size: int, version: str, row_group: int) -> str:
    """``<file>-<version>-<row group>``: the first part names the file, the
    second its content (size and ETag/mtime), so a changed file is recognised."""
    name = hashlib.sha256(url.encode()).hexdigest()[:12]
    content = hashlib.sha256(f"{size}:{version}".encode()).hexdigest()[:8]
    return f"{name}-{content}-{row_group}"


def merge_ranges(ranges: Iterable[Iterable[int]]) -> Ranges:
    """Sorted, disjoint ranges covering the same rows; touching ranges join."""
    out: Ranges = []
    for start, stop in sorted((int(a), int(b)) for a, b in ranges):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], stop)
        else:
            out.append([start, stop])
    return out


def coverage_of(row_keys: Iterable[str]) -> Coverage:
    """The fragments' row ranges that ``row_keys`` (``"<fragment>:<row>"``) cover;
    keys of another form (rows not read by the job's reader) cover nothing."""
    rows: dict[str, list[int]] = {}
    for key in row_keys:
        fragment, _, row = key.rpartition(":")
        if fragment and row.isdigit():
            rows.setdefault(fragment, []).append(int(row))
    out: Coverage = {}
    for fragment, positions in rows.items():
        positions.sort()
        ranges: Ranges = []
        for p in positions:
            if ranges and p == ranges[-1][1]:
                ranges[-1][1] = p + 1
            else:
                ranges.append([p, p + 1])
        out[fragment] = ranges
    return out


def merge_coverage(parts: Iterable[Mapping[str, Ranges]]) -> Coverage:
    gathered: dict[str, list] = {}
    for part in parts:
        for fragment, ranges in part.items():
            gathered.setdefault(fragment, []).extend(ranges)
    return {fragment: merge_ranges(r) for fragment, r in gathered.items()}


def encode_coverage(coverage: Mapping[str, Ranges]) -> bytes:
    return json.dumps(coverage, separators=(",", ":"), sort_keys=True).encode()


def decode_coverage(metadata: Mapping[bytes, bytes] | None) -> Coverage:
    """The coverage recorded in a Parquet file's key-value metadata ({} if none)."""
    raw = (metadata or {}).get(COVERAGE_KEY)
    return json.loads(raw) if raw else {}


def covered(ranges: Ranges) -> int:
    return sum(stop - start for start, stop in ranges)


@dataclass(frozen=True)
class Fragment:
    """One row group of one input file, and what of it is committed.

    Args:
        file: the file's URL.
        row_group: the row group's number in the file.
        rows: rows to consider (the row group's, or fewer under a --limit).
        key: the fragment key (see :func:`fragment_key`).
        done: committed row ranges; a read task skips these rows.
        content: the file's ``inputs.footer_digest`` when it was planned.
    """

    file: str
    row_group: int
    rows: int
    key: str
    done: tuple[tuple[int, int], ...] = ()
    content: str = ""

    @property
    def todo(self) -> int:
        return self.rows - sum(min(b, self.rows) - min(a, self.rows) for a, b in self.done)


@dataclass(frozen=True)
class InputFile:
    """What planning needs of one input file (from its footer)."""

    url: str
    size: int
    version: str
    row_groups: tuple[int, ...]  # rows per row group
    content: str = ""  # inputs.footer_digest: the file's content, whatever its name


@dataclass(frozen=True)
class ReadPlan:
    """The fragments a run reads, and the counts it reports."""

    fragments: list[Fragment] = field(default_factory=list)  # with rows left to do
    rows_total: int = 0  # input rows this run covers (all of them, or --limit)
    rows_committed: int = 0  # of those, committed by earlier runs

    @property
    def rows_todo(self) -> int:
        return self.rows_total - self.rows_committed


def plan(files: Iterable[InputFile], coverage: Mapping[str, Ranges], limit: int | None = None):
    """The read plan: every fragment of ``files`` in order (file, row group), up
    to ``limit`` rows, minus the rows ``coverage`` commits.

    Raises:
        InputChanged: the output holds rows of a file whose size or version
            has changed since (its rows cannot be matched to the new content).
    """
    files = list(files)
    by_name = {}
    for fragment in coverage:
        name, content, _ = fragment.split("-")
        by_name.setdefault(name, set()).add(content)
    fragments: list[Fragment] = []
    total = committed = 0
    for f in files:
        keys = [fragment_key(f.url, f.size, f.version, g) for g in range(len(f.row_groups))]
        if keys:
            name, content, _ = keys[0].split("-")
            if by_name.get(name, {content}) - {content}:
                raise InputChanged(
                    f"input file {f.url} changed (size or version) since the output committed "
                    "rows from it; its rows cannot be matched to the new content. Write to a new "
                    "--output, or restore the file."
                )
        for g, (key, n) in enumerate(zip(keys, f.row_groups, strict=True)):
            if limit is not None:
                n = min(n, limit - total)
                if n <= 0:
                    break
            done = tuple((a, min(b, n)) for a, b in coverage.get(key, ()) if a < n)
            fragment = Fragment(f.url, g, n, key, done, f.content)
            total += n
            committed += n - fragment.todo
            if fragment.todo:
                fragments.append(fragment)
        if limit is not None and total >= limit:
            break
    return ReadPlan(fragments, total, committed)


def read_fragment(
    fragment: Fragment,
    columns: pa.Schema,
    batch_rows: int,
    storage_options: Mapping[str, Any],
    retry_seconds: float = io.RETRY_SECONDS,
) -> Iterator[pa.Table]:
    """The fragment's rows that are not committed, as tables of at most
    ``batch_rows`` rows with a ``row_key`` and a ``read_error`` column, and
    the input's other columns under their manifest names
    (``pipeline.columns.carried_name``). A
    transient storage error (an outage, throttling) re-opens the file and
    carries on after the rows already given, for at most ``retry_seconds``. A
    row group that cannot be read (a corrupt page the footer did not show)
    gives its remaining rows as rows without data whose ``read_error`` says
    why: they become failed manifest rows, and the other fragments go on."""
    from pipeline import inputs

    given = 0  # rows of the fragment already looked at
    deadline = time.monotonic() + retry_seconds
    while True:
        try:
            position = 0
            for batch in inputs.iter_batches(
                fragment.file, fragment.row_group, batch_rows, columns, storage_options
            ):
                start, position = position, position + batch.num_rows
                stop = min(position, fragment.rows)
                if stop > given:
                    table = _rows(fragment, batch, start, max(start, given), stop)
                    given = stop
                    if table is not None:
                        yield table
                if position >= fragment.rows:
                    return
            return
        except inputs.InputReadError as exc:
            if io.is_transient(exc) and time.monotonic() <= deadline:
                time.sleep(1.0)
                continue
            if io.is_transient(exc):
                raise
            for first in range(given, fragment.rows, batch_rows):
                stop = min(first + batch_rows, fragment.rows)
                nulls = pa.table([pa.nulls(stop - first, f.type) for f in columns], schema=columns)
                table = _rows(fragment, nulls, first, first, stop, str(exc))
                if table is not None:
                    yield table
            return
        except Exception as exc:
            if not io.is_transient(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _rows(
    fragment: Fragment,
    batch: pa.Table,
    start: int,
    first: int,
    stop: int,
    error: str | None = None,
):
    """Rows ``first..stop`` of the fragment (``batch`` starts at row ``start``)
    that are not committed, with their row keys and ``error`` as their
    ``read_error``; None when there are none."""
    if not fragment.done:
        rows = list(range(first, stop))
        table = batch.slice(first - start, stop - first)
    else:
        rows = [r for r in range(first, stop) if not any(a <= r < b for a, b in fragment.done)]
        if not rows:
            return None
        table = batch.take(pa.array([r - start for r in rows], pa.int64()))
    # Carried columns under their manifest names from here on: no column the
    # job adds (row_key, read_error, status, ...) meets an input one.
    table = carry(table)
    keys = pa.array([f"{fragment.key}:{r}" for r in rows], pa.string())
    errors = pa.array([error] * len(rows), pa.string())
    return table.append_column("row_key", keys).append_column(READ_ERROR, errors)


def groups(fragments: list[Fragment], parallelism: int, min_rows: int = 1) -> list[list[Fragment]]:
    """``fragments`` in at most about ``parallelism`` groups of consecutive
    ones, of about equal rows to do and at least ``min_rows`` each (small
    files share a read task, whose blocks then hold whole ``min_rows``)."""
    if not fragments:
        return []
    target = max(min_rows, -(-sum(f.todo for f in fragments) // max(1, parallelism)))
    out: list[list[Fragment]] = [[]]
    rows = 0
    for f in fragments:
        if rows >= target:
            out.append([])
            rows = 0
        out[-1].append(f)
        rows += f.todo
    return out
