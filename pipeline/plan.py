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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline import io

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
    ``batch_rows`` rows with a ``row_key`` and a ``read_error`` column: the
    job's reader (``pipeline.source.read_file``) on one fragment."""
    from pipeline.source import read_file

    return read_file([fragment], columns, batch_rows, storage_options, retry_seconds)


def with_row_keys(table: pa.Table, keys: list[str], error: str | None = None) -> pa.Table:
    """Input rows with the reader's columns added: their ``row_key`` and
    ``error`` as their ``read_error``."""
    if "row_key" in table.column_names:  # the input's own column of that name is carried
        table = table.rename_columns(
            ["input_row_key" if c == "row_key" else c for c in table.column_names]
        )
    errors = pa.array([error] * len(keys), pa.string())
    return table.append_column("row_key", pa.array(keys, pa.string())).append_column(
        READ_ERROR, errors
    )


def groups(fragments: list[Fragment], parallelism: int, min_rows: int = 1) -> list[list[Fragment]]:
    """``fragments`` in at most about ``parallelism`` groups of consecutive
    ones, of about equal rows to do and at least ``min_rows`` each (small
    files share a read task, whose blocks then hold whole ``min_rows``).

    A file is split between groups only in pieces of at least as many rows as
    it has fragments planned: each read task parses the footer of every file
    it reads, which grows with the file's row groups, so a file of 5,000
    one-row groups cut into 20 tasks would parse its footer 20 times."""
    if not fragments:
        return []
    target = max(min_rows, -(-sum(f.todo for f in fragments) // max(1, parallelism)))
    per_file: dict[str, int] = {}
    for f in fragments:
        per_file[f.file] = per_file.get(f.file, 0) + 1
    out: list[list[Fragment]] = [[]]
    rows = piece = 0  # rows of the group, and of its last file
    for f in fragments:
        if out[-1] and out[-1][-1].file != f.file:
            piece = 0
        if rows >= target and (piece == 0 or piece >= per_file[f.file]):
            out.append([])
            rows = piece = 0
        out[-1].append(f)
        rows += f.todo
        piece += f.todo
    return out
