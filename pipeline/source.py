"""The job's reader: a Ray Data datasource over a read plan (``pipeline.plan``).
Each read task gets a group of fragments and yields blocks of at most
``rows_per_block`` rows, each with its ``row_key``; fragments the output holds
in full are not in the plan, so they cost no task and no read. Files are opened
one by one (``pipeline.inputs``), so a Hive-style folder name never replaces a
file's own column.

A read task opens each of its files once and parses its footer once for all of
that file's fragments, and reads runs of consecutive row groups in one pass.
What it opens must be what was planned: the footer's digest is checked against
the plan's before a row of the file is given, and a file rewritten or gone
since the scan stops the run (``inputs.InputChangedDuringRun``) instead of
having its new rows committed under the old content's row keys. A row group
that cannot be read gives its rows as failed rows that still carry their
``object_id`` (read alone), or ``unread:<row_key>`` when even that fails.
This module must never import TensorFlow, and never give a row under a key
that the content it was read from does not own.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from pipeline import inputs, io
from pipeline.inputs import InputChangedDuringRun
from pipeline.plan import Fragment, InputFile, ReadPlan, groups, with_row_keys

# Read tasks of a job at most: each streams its fragments' blocks, so a big
# catalog needs no more (10^8 rows: ~100,000 rows a task).
MAX_READ_TASKS = 1000
# The most stored bytes of row groups read in one pass: a pass's column chunks
# are fetched at once (pre-buffered), so this bounds a read task's memory.
PASS_BYTES = 64 * 1024**2
# The id a failed row gets when not even its row group's object_id column can
# be read: the prefix, then the row's key (stable across reruns).
UNREAD = "unread:"


def read_group(
    fragments: list[Fragment],
    columns: pa.Schema,
    rows_per_block: int,
    storage_options: Mapping[str, Any],
    retry_seconds: float,
    planned: Mapping[str, InputFile] | None = None,
) -> Iterator[pa.Table]:
    """The rows left to do in ``fragments``, in blocks of ``rows_per_block``
    rows (the last one shorter): rows of small fragments are gathered, since
    every block costs Ray a task per stage and an actor call. ``planned``: what
    the scan saw of each file, for the message when one has changed."""
    pending: list[pa.Table] = []
    rows = 0
    for url, run in itertools.groupby(fragments, key=lambda f: f.file):
        for table in read_file(
            list(run),
            columns,
            rows_per_block,
            storage_options,
            retry_seconds,
            (planned or {}).get(url),
        ):
            pending.append(table)
            rows += table.num_rows
            while rows >= rows_per_block:
                gathered = pa.concat_tables(pending)
                yield gathered.slice(0, rows_per_block)
                rest = gathered.slice(rows_per_block)
                pending, rows = ([rest] if rest.num_rows else []), rest.num_rows
    if rows:
        yield pa.concat_tables(pending)


def read_file(
    fragments: Sequence[Fragment],
    columns: pa.Schema,
    batch_rows: int,
    storage_options: Mapping[str, Any],
    retry_seconds: float = io.RETRY_SECONDS,
    planned: InputFile | None = None,
) -> Iterator[pa.Table]:
    """The rows of ``fragments`` (all of one file, in row group order) that are
    not committed, as tables of at most ``batch_rows`` rows with a ``row_key``
    and a ``read_error`` column.

    The file is opened once (its footer parsed once) and checked against the
    plan. A transient storage error (an outage, throttling) re-opens it and
    carries on after the rows already given, for at most ``retry_seconds`` of
    outage. A row group that cannot be read (a corrupt page the footer did not
    show) gives its remaining rows as rows without data whose ``read_error``
    says why, and the other fragments go on.

    Raises:
        inputs.InputChangedDuringRun: the file's footer is not the one planned
            (rewritten, truncated) or the file is gone; raised before any row of
            what is there now is given.
    """
    return _FileRead(
        list(fragments), columns, batch_rows, dict(storage_options), retry_seconds, planned
    ).tables()


class _FileRead:
    """The state of reading one file's fragments: which fragment is being read
    (``position``) and how many of its rows were looked at (``given``), so a
    re-open after an outage or a read error carries on from there."""

    def __init__(
        self,
        fragments: list[Fragment],
        columns: pa.Schema,
        batch_rows: int,
        storage_options: dict[str, Any],
        retry_seconds: float,
        planned: InputFile | None,
    ):
        self.fragments, self.columns, self.batch_rows = fragments, columns, batch_rows
        self.storage_options, self.retry_seconds = storage_options, retry_seconds
        self.planned = planned
        self.url = fragments[0].file if fragments else ""
        self.position = 0
        self.given = 0

    def tables(self) -> Iterator[pa.Table]:
        outage: float | None = None  # when the storage outage being ridden out began
        alone = False  # read the fragment at ``position`` by itself (after a read error)
        failed: inputs.InputReadError | None = None  # its row group cannot be read
        while self.position < len(self.fragments):
            single = True
            try:
                with self._open() as source:
                    while self.position < len(self.fragments):
                        if failed is not None:
                            yield from self._failed(source, str(failed))
                            failed, alone = None, False
                            continue
                        end = self.position + 1 if alone else self._pass_end(source)
                        single = end == self.position + 1
                        for table in self._read(source, end):
                            outage = None
                            if table is not None:
                                yield table
                        alone = False
                return
            except inputs.InputReadError as exc:
                # Which of a pass's row groups failed is not known: read the
                # fragment alone first, and only then take its rows as failed.
                if single:
                    failed = exc
                alone = True
            except InputChangedDuringRun:
                raise
            except Exception as exc:
                if not io.is_transient(exc):
                    raise
                outage = time.monotonic() if outage is None else outage
                if time.monotonic() - outage > self.retry_seconds:
                    raise
                time.sleep(1.0)

    @contextmanager
    def _open(self) -> Iterator[inputs.OpenInput]:
        """The file, open, checked to be what was planned (every re-open too: a
        file rewritten during an outage is not read on from where it was)."""
        try:
            source = inputs.open_input(self.url, self.storage_options, retry_seconds=0)
        except inputs.InputGone as exc:
            raise InputChangedDuringRun(
                f"input {self.url} is gone since this run planned to read it "
                f"({self._planned()}): {exc.reason}. No row of it was committed from this "
                "read; restore it and rerun the same command to resume."
            ) from None
        except inputs.InputReadError as exc:
            if io.permanent_cause(exc) is not None:  # access denied: exit 3, not "changed"
                raise PermissionError(str(exc)) from None
            raise self._changed(f"a file whose footer cannot be read ({exc.reason})") from None
        with source:
            expected = self.fragments[0].content
            if expected and source.content != expected:
                meta = source.metadata
                raise self._changed(
                    f"{_shape(meta.num_rows, meta.num_row_groups, source.size)} "
                    f"(content {source.content[:16]})"
                )
            yield source

    def _planned(self) -> str:
        content = f"content {self.fragments[0].content[:16]}"
        if self.planned is None:
            return content
        groups = self.planned.row_groups
        return f"{_shape(sum(groups), len(groups), self.planned.size)} ({content})"

    def _changed(self, found: str) -> InputChangedDuringRun:
        return InputChangedDuringRun(
            f"input {self.url} changed since this run planned to read it: planned "
            f"{self._planned()}, found {found}. None of what is there now was committed "
            "under the keys planned for what was there; rerun the same command: it plans "
            "the file as it is now (or refuses it, naming it, if rows of its old content "
            "are committed)."
        )

    def _pass_end(self, source: inputs.OpenInput) -> int:
        """The end of the next pass: the fragments from ``position`` whose row
        groups hold at most ``PASS_BYTES`` (at least one fragment)."""
        end, stored = self.position, 0
        while end < len(self.fragments):
            stored += source.group_bytes(self.fragments[end].row_group)
            if stored > PASS_BYTES and end > self.position:
                break
            end += 1
        return end

    def _read(self, source: inputs.OpenInput, end: int) -> Iterator[pa.Table | None]:
        """One pass over fragments ``position..end``: a table per batch read
        (None when none of its rows is wanted). Progress is recorded before
        each table is given, so a re-open resumes after it."""
        start, skip = self.position, self.given  # skip: rows of the first fragment given
        run = self.fragments[start:end]
        sizes = [source.group_rows(f.row_group) for f in run]
        i, offset = 0, 0  # the fragment of the run at the batch's end, and its row there
        for batch in source.iter_batches([f.row_group for f in run], self.batch_rows, self.columns):
            indices: list[int] = []
            keys: list[str] = []
            at = 0  # position in the batch
            while at < batch.num_rows and i < len(run):
                fragment = run[i]
                take = min(batch.num_rows - at, sizes[i] - offset)
                first = max(offset, skip if i == 0 else 0)
                for row in _wanted(fragment, first, min(offset + take, fragment.rows)):
                    indices.append(at + row - offset)
                    keys.append(f"{fragment.key}:{row}")
                at, offset = at + take, offset + take
                if offset >= sizes[i]:
                    i, offset = i + 1, 0
            # The rest of the last row group beyond a --limit is not read.
            finished = i == len(run) or (i == len(run) - 1 and offset >= run[-1].rows)
            if finished:
                self.position, self.given = end, 0
            else:
                self.position, self.given = start + i, max(offset, skip) if i == 0 else offset
            yield _take(batch, indices, keys)
            if finished:
                return
        self.position, self.given = end, 0

    def _failed(self, source: inputs.OpenInput, error: str) -> Iterator[pa.Table]:
        """The rest of the fragment at ``position`` as rows without data whose
        ``read_error`` is ``error``, named by their ``object_id`` read alone."""
        fragment = self.fragments[self.position]
        try:
            ids: list[str | None] | None = source.read_ids(fragment.row_group)
        except Exception as exc:
            if io.is_transient(exc):
                raise
            ids = None
        rows = list(_wanted(fragment, self.given, fragment.rows))
        for first in range(0, len(rows), self.batch_rows):
            chunk = rows[first : first + self.batch_rows]
            keys = [f"{fragment.key}:{r}" for r in chunk]
            table = pa.table(
                [pa.nulls(len(chunk), f.type) for f in self.columns], schema=self.columns
            )
            named = [
                ids[r] if ids is not None and ids[r] is not None else UNREAD + key
                for r, key in zip(chunk, keys, strict=True)
            ]
            table = table.set_column(
                table.schema.get_field_index(inputs.OBJECT_ID),
                inputs.OBJECT_ID,
                pa.array(named, pa.string()),
            )
            yield with_row_keys(table, keys, error)
        self.position, self.given = self.position + 1, 0


def _shape(rows: int, groups: int, size: int) -> str:
    return f"{rows:,} rows in {groups:,} row group{'' if groups == 1 else 's'}, {size:,} bytes"


def _wanted(fragment: Fragment, first: int, stop: int) -> range | list[int]:
    """Rows ``first..stop`` of the fragment that are not committed."""
    if not fragment.done:
        return range(first, stop)
    return [r for r in range(first, stop) if not any(a <= r < b for a, b in fragment.done)]


def _take(batch: pa.Table, indices: list[int], keys: list[str]) -> pa.Table | None:
    """Rows ``indices`` of ``batch`` with their keys; None when there are none."""
    if not indices:
        return None
    if indices[0] == 0 and indices[-1] == len(indices) - 1:  # rising by one: a prefix
        table = batch.slice(0, len(indices))
    elif indices[-1] - indices[0] == len(indices) - 1:
        table = batch.slice(indices[0], len(indices))
    else:
        table = batch.take(pa.array(indices, pa.int64()))
    return with_row_keys(table, keys)


class CatalogSource(Datasource):
    """Reads the fragments of a :class:`pipeline.plan.ReadPlan`.

    Args:
        read_plan: the fragments to read (with the rows to skip in each).
        columns: the input columns to read, in the types every block gets
            (``pipeline.inputs.Scan.schema``).
        rows_per_block: the most rows in one block.
        storage_options: fsspec options for the input.
        retry_seconds: how long a read task rides out a storage outage.
        files: what the scan saw of the input files (sizes, row groups), for
            the message naming what changed when a file is not what was planned.
    """

    def __init__(
        self,
        read_plan: ReadPlan,
        columns: pa.Schema,
        rows_per_block: int,
        storage_options: Mapping[str, Any],
        retry_seconds: float = io.RETRY_SECONDS,
        files: Sequence[InputFile] = (),
    ):
        self.read_plan = read_plan
        self.columns = columns
        self.rows_per_block = rows_per_block
        self.storage_options = dict(storage_options)
        self.retry_seconds = retry_seconds
        self.files = {f.url: f for f in files}
        # Groups of fragments, one read task each, fixed here: the job passes
        # their number to Ray Data (override_num_blocks), which otherwise splits
        # the blocks of a read with fewer tasks than its minimum (200) into
        # smaller ones, and every block costs a task per stage and an actor call.
        todo = read_plan.rows_todo
        tasks = min(MAX_READ_TASKS, max(1, -(-todo // rows_per_block)))
        self.groups = groups(read_plan.fragments, tasks, rows_per_block)

    def get_name(self) -> str:
        return "ReadCatalog"

    def estimate_inmemory_data_size(self) -> None:
        return None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        tasks = []
        for group in self.groups:  # fixed in __init__, whatever ``parallelism`` asks
            urls = tuple(sorted({f.file for f in group}))
            planned = {u: self.files[u] for u in urls if u in self.files}
            args = (group, self.columns, self.rows_per_block, self.storage_options)
            metadata = BlockMetadata(
                num_rows=sum(f.todo for f in group),
                size_bytes=None,
                exec_stats=None,
                input_files=urls,
            )
            retry = self.retry_seconds
            tasks.append(
                ReadTask(lambda a=args, r=retry, p=planned: read_group(*a, r, p), metadata)
            )
        return tasks
