"""Resume from what an output already holds. The committed manifests are the
only record of progress; their footers (folded into the output index, see
``pipeline.index``) say which input rows they commit, by fragment and row
range, so a rerun of the same command plans around them (``pipeline.plan``)
without reading a committed row. Only the manifests that count are planned
around (``pipeline.index.state``: named for their keys, outranking any
overlap): rows that only a rejected or overruled manifest holds are redone.
The same read refuses an output written by another model. This module must
never delete or rewrite a committed manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline import index, plan


class OutputConflict(RuntimeError):
    """The output URL already holds results that this run must not mix with."""


@dataclass(frozen=True)
class Committed:
    """What earlier runs committed under an output URL.

    Args:
        coverage: the input rows committed, by fragment (row ranges).
        rows_ok: committed ok rows.
        rows_failed: committed failed rows.
        models: model ids found in the manifests.
        problems: manifests that do not count, and why (one line each).
        types: the carried columns' types in the output, each with a file
            holding it (``pipeline.index.column_types``).
    """

    coverage: plan.Coverage
    rows_ok: int
    rows_failed: int
    models: frozenset[str]
    problems: tuple[str, ...] = ()
    types: Mapping[str, Mapping[pa.DataType, str]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.rows_ok + self.rows_failed


def load_committed(output: str, storage_options: Mapping[str, Any] | None = None) -> Committed:
    """What the output's index and its not yet folded manifests say; memory
    grows with the input fragments touched, not with the committed rows."""
    current = index.state(output, storage_options)
    counts = current.counts()
    return Committed(
        coverage=current.coverage(),
        rows_ok=counts["rows_ok"],
        rows_failed=counts["rows_failed"],
        models=frozenset(counts["models"]),
        problems=tuple(current.problems()),
        types=index.column_types(current, storage_options),
    )


def check_model(
    output: str, committed: Committed, model_id: str, success_model: str | None
) -> None:
    """Refuse to add this model's grids to an output that holds another model's.

    Raises:
        OutputConflict: with what to do about it.
    """
    others = set(committed.models)
    if success_model:
        others.add(success_model)
    others.discard(model_id)
    if others:
        raise OutputConflict(
            f"output {output} already holds grids from model {sorted(others)[0]}, and this run "
            f"uses {model_id}. Write to a new --output URL, pass the --model that wrote it, "
            "or delete the old output first."
        )
