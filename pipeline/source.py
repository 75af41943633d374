"""The job's reader: a Ray Data datasource over a read plan (``pipeline.plan``).
Each read task gets a group of fragments and yields blocks of at most
``rows_per_block`` rows, each with its ``row_key``; fragments the output holds
in full are not in the plan, so they cost no task and no read. Files are opened
one by one (``pipeline.inputs``), so a Hive-style folder name never replaces a
file's own column. This module must never import TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from pipeline import io
from pipeline.plan import Fragment, ReadPlan, groups, read_fragment

# Read tasks of a job at most: each streams its fragments' blocks, so a big
# catalog needs no more (10^8 rows: ~100,000 rows a task).
MAX_READ_TASKS = 1000


def read_group(
    fragments: list[Fragment],
    columns: pa.Schema,
    rows_per_block: int,
    storage_options: Mapping[str, Any],
    retry_seconds: float,
) -> Iterator[pa.Table]:
    """The rows left to do in ``fragments``, in blocks of ``rows_per_block``
    rows (the last one shorter): rows of small fragments are gathered, since
    every block costs Ray a task per stage and an actor call."""
    pending: list[pa.Table] = []
    rows = 0
    for fragment in fragments:
        for table in read_fragment(
            fragment, columns, rows_per_block, storage_options, retry_seconds
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


class CatalogSource(Datasource):
    """Reads the fragments of a :class:`pipeline.plan.ReadPlan`.

    Args:
        read_plan: the fragments to read (with the rows to skip in each).
        columns: the input columns to read, in the types every block gets
            (``pipeline.inputs.Scan.schema``).
        rows_per_block: the most rows in one block.
        storage_options: fsspec options for the input.
        retry_seconds: how long a read task rides out a storage outage.
    """

    def __init__(
        self,
        read_plan: ReadPlan,
        columns: pa.Schema,
        rows_per_block: int,
        storage_options: Mapping[str, Any],
        retry_seconds: float = io.RETRY_SECONDS,
    ):
        self.read_plan = read_plan
        self.columns = columns
        self.rows_per_block = rows_per_block
        self.storage_options = dict(storage_options)
        self.retry_seconds = retry_seconds
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
            args = (group, self.columns, self.rows_per_block, self.storage_options)
            metadata = BlockMetadata(
                num_rows=sum(f.todo for f in group),
                size_bytes=None,
                exec_stats=None,
                input_files=tuple(sorted({f.file for f in group})),
            )
            retry = self.retry_seconds
            tasks.append(ReadTask(lambda a=args, r=retry: read_group(*a, r), metadata))
        return tasks
