"""Resume from what an output already holds. The committed manifests are the
only record of progress; their footers (folded into the output index, see
``pipeline.index``) say which input rows they commit, by fragment and row
range, so a rerun of the same command plans around them (``pipeline.plan``)
without reading a committed row. Only the manifests that count are planned
around (``pipeline.index.state``: named for their keys, outranking any
overlap): rows that only a rejected or overruled manifest holds are redone.
The same read says what the counted rows mean (model, image size, threshold,
max views, precision: ``held_settings``), and a run with other settings is
refused unless it asks to mix them (``check_settings``). This module must
never delete or rewrite a committed manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline import index, plan, summary


class OutputConflict(RuntimeError):
    """The output URL already holds results that this run must not mix with."""


class MixedSettings(OutputConflict):
    """This run's settings differ from those the output's rows were made with."""


# The settings that change what a row means, in the order a refusal names them;
# each is the job's flag, or where the value comes from.
SETTINGS = {
    "model": "--model",
    "image_size": "the model's image size",
    "threshold": "--threshold",
    "max_views": "--max-views",
    "precision": "--precision (as resolved on the device)",
}
# Precisions a run record may name that say nothing of the rows: the flag's own
# "auto" (a run that started no actor) and an older stand-in's "stand-in".
_UNRESOLVED = {"auto", "stand-in", ""}


@dataclass(frozen=True)
class Settings:
    """What a run's rows mean beyond their input: the values of ``SETTINGS``;
    None for one not known (yet)."""

    model: str | None = None
    image_size: int | None = None
    threshold: float | None = None
    max_views: int | None = None
    precision: str | None = None


@dataclass(frozen=True)
class Held:
    """The settings an output's counted rows were made with.

    Args:
        values: per setting, its distinct values (sorted); a setting no record
            tells (an older voxray's output) is absent.
        precision_rows: rows by precision: from the manifests' own column, or
            for manifests written before it from their run's record (ok rows;
            "unrecorded" where the record does not say one).
    """

    values: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    precision_rows: dict[str, int] = field(default_factory=dict)

    def mixed(self) -> dict[str, list[Any]]:
        """The settings that hold more than one value, with their values."""
        return {k: list(v) for k, v in self.values.items() if len(v) > 1}


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
        held: the settings the committed rows were made with.
    """

    coverage: plan.Coverage
    rows_ok: int
    rows_failed: int
    models: frozenset[str]
    problems: tuple[str, ...] = ()
    types: Mapping[str, Mapping[pa.DataType, str]] = field(default_factory=dict)
    held: Held = field(default_factory=Held)

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
        held=held_settings(current, summary.read_runs(output, storage_options)),
    )


def held_settings(current: index.State, runs: list[Mapping[str, Any]]) -> Held:
    """The settings of the rows ``current`` counts, without reading a row: the
    manifests' footers give model, thresholds and rows by precision; the run
    records of the lease generations that wrote them give the run-level ones
    (max views, image size) and, for manifests written before their footers
    recorded them, threshold and precision. A run whose manifests do not
    count (it committed nothing, or was overruled) holds nothing."""
    by_generation: dict[int, list[Mapping[str, Any]]] = {}
    for record in runs:
        by_generation.setdefault(int(record.get("generation") or 0), []).append(record)
    values: dict[str, set[Any]] = {name: set() for name in SETTINGS}
    precision_rows: dict[str, int] = {}
    generations: set[int] = set()
    for entry in current.entries:
        counts = entry.counts or {}
        records = by_generation.get(entry.generation, [])
        generations.add(entry.generation)
        values["model"].update(counts.get("models", []))
        if "thresholds" in counts:
            values["threshold"].update(counts["thresholds"])
        else:
            values["threshold"].update(_argument(records, "threshold"))
        if "precisions" in counts:
            for name, rows in counts["precisions"].items():
                values["precision"].add(name)
                precision_rows[name] = precision_rows.get(name, 0) + rows
        else:
            named = _recorded_precisions(records)
            values["precision"].update(named)
            label = named[0] if len(named) == 1 else "unrecorded"
            precision_rows[label] = precision_rows.get(label, 0) + counts.get("ok", 0)
    for generation in generations:
        records = by_generation.get(generation, [])
        values["max_views"].update(_argument(records, "max_views"))
        values["image_size"].update(r["image_size"] for r in records if r.get("image_size"))
    return Held(
        values={name: tuple(sorted(v)) for name, v in values.items() if v},  # none: unknown
        precision_rows=dict(sorted(precision_rows.items())),
    )


def _argument(records: list[Mapping[str, Any]], name: str) -> list[Any]:
    found = ((r.get("arguments") or {}).get(name) for r in records)
    return [v for v in found if v is not None]


def _recorded_precisions(records: list[Mapping[str, Any]]) -> list[str]:
    """The resolved precisions a generation's run records name ("bf16,fp32"
    for a run whose actors differed)."""
    named = {p for r in records for p in str(r.get("precision") or "").split(",")}
    return sorted(named - _UNRESOLVED)


def check_settings(
    output: str,
    held: Held,
    wanted: Settings,
    allow_mixed: bool = False,
    success_model: str | None = None,
) -> None:
    """Refuse a run whose settings differ from those the output's rows were
    made with, naming each (a setting ``wanted`` does not know yet is left for
    a later call); ``allow_mixed`` lets them mix. ``success_model`` is the
    model ``_SUCCESS`` names (an output whose manifests were set aside still
    names its model there).

    Raises:
        MixedSettings: with each setting, the values held, this run's, and
            what to do.
    """
    values = dict(held.values)
    if success_model:
        values["model"] = tuple(sorted({*values.get("model", ()), success_model}))
    lines = []
    for name, flag in SETTINGS.items():
        new = getattr(wanted, name)
        if new is None:
            continue
        old = [v for v in values.get(name, ()) if not _same(v, new)]
        if not old:
            continue
        if name == "model":  # the words an operator may know from older voxrays
            lines.append(
                f"  {flag}: the output already holds grids from model {', '.join(old)}; "
                f"this run uses {new}"
            )
        else:
            held_text = ", ".join(_show(v) for v in values[name])
            lines.append(
                f"  {flag}: the output holds rows made with {held_text}; this run uses {_show(new)}"
            )
    if lines and not allow_mixed:
        raise MixedSettings(
            f"output {output} holds rows made with other settings than this run's:\n"
            + "\n".join(lines)
            + "\nRows of both would mean different things in one output. Rerun with the "
            "value the output holds, write to a new --output URL, or pass --allow-mixed to "
            "mix them on purpose (each row records its model, threshold and precision; "
            "_SUCCESS lists the mix)."
        )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        # a threshold stored as float32 by an older writer is still the same one
        return abs(float(a) - float(b)) < 1e-6
    return a == b


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
