"""Resume from what an output already holds. The committed manifests are the
only record of progress: a row is done exactly when a manifest row with its key
exists, so a rerun of the same command skips those rows (the decode stage marks
them ``skipped``, the sink counts them) and processes the rest. The same read
refuses an output written by another model. This module must never delete or
rewrite a committed manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import results


class OutputConflict(RuntimeError):
    """The output URL already holds results that this run must not mix with."""


@dataclass(frozen=True)
class Committed:
    """What earlier runs committed under an output URL.

    Args:
        keys: row keys of every committed manifest row (unique).
        rows_ok: committed ok rows.
        rows_failed: committed failed rows.
        models: model ids found in the manifests.
    """

    keys: pa.Array
    rows_ok: int
    rows_failed: int
    models: frozenset[str]

    @property
    def rows(self) -> int:
        return self.rows_ok + self.rows_failed


def load_committed(output: str, storage_options: Mapping[str, Any] | None = None) -> Committed:
    """Read the key, status and model columns of every manifest under ``output``.

    Memory grows with the number of committed rows (a string per row), on the
    driver only.
    """
    table = results.read_manifests(
        output, columns=["row_key", "status", "model"], storage_options=storage_options
    )
    status = table.column("status")
    models = {m for m in pc.unique(table.column("model")).to_pylist() if m is not None}
    return Committed(
        keys=pc.unique(table.column("row_key")) if table.num_rows else pa.array([], pa.string()),
        rows_ok=int(pc.sum(pc.equal(status, "ok")).as_py() or 0),
        rows_failed=int(pc.sum(pc.equal(status, "failed")).as_py() or 0),
        models=frozenset(models),
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
