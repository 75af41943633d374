"""Dropping the output rows of input files that no longer exist (``jobs/prune.py``).

Which rows are stale is ``pipeline.repeats``' rule: a committed fragment of no
current input file, by name or by content. A prune takes the output's lease
as a job does (one writer), finds the accepted manifests that hold stale
rows, and for each writes a *replacement*: a manifest of its other rows,
named for their keys, pointing at the same shard (the grids stay where they
are), carrying the prune's lease generation. The newer generation outranks
the manifest it replaces (``pipeline.index``), so from that write on every
reader counts the kept rows once, through the replacement, and the stale rows
not at all; then the replaced manifest moves to
``OUTPUT/rejected/<time>-prune/`` as ``verify --repair`` moves what it sets
aside. An interrupted prune therefore leaves an output that reads right; its
rerun sets aside what the first left overruled (a manifest whose every row
is counted elsewhere or stale) and carries on. At the end the index is
folded, ``_SUCCESS`` (if any) gets the output's new totals, and a record of
kind ``prune`` is written under ``OUTPUT/runs/``.

This module must never delete a manifest, a shard or an index part that
counts, never write without holding the lease, and never touch a row that is
not stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import index, io, plan, repeats, summary, verify
from pipeline.layout import MANIFESTS

IDS_SHOWN = 10  # object ids listed per gone file


class NothingOfTheInput(RuntimeError):
    """No committed row is of the input given: most likely the wrong ``--input``."""


@dataclass
class Found:
    """What a prune would do to an output.

    Args:
        output: the output URL.
        stale: the stale fragments and their committed rows.
        manifests: the accepted manifests holding stale rows.
        overruled: manifests that count no more, whose every row is counted
            elsewhere or stale (what an interrupted prune leaves): set aside too.
        ids: per gone file (its name part), some of its rows' object ids.
    """

    output: str
    stale: repeats.Stale
    manifests: list[index.Entry] = field(default_factory=list)
    overruled: list[str] = field(default_factory=list)
    ids: dict[str, list[str]] = field(default_factory=dict)

    @property
    def nothing(self) -> bool:
        return not (self.manifests or self.overruled)

    def format(self) -> str:
        """One paragraph per gone file: its fragments, rows and some ids."""
        files = self.stale.files
        lines = [
            f"prune {self.output}: {self.stale.rows} stale rows of {len(files)} input file(s) "
            f"that no longer exist, in {len(self.manifests)} manifest(s)"
        ]
        for name, fragments in files.items():
            rows = sum(plan.covered(self.stale.coverage[f]) for f in fragments)
            ids = self.ids.get(name, [])
            lines.append(f"  file {name}: {rows} rows in {len(fragments)} fragment(s)")
            for fragment in fragments:
                ranges = ", ".join(f"{a}-{b - 1}" for a, b in self.stale.coverage[fragment])
                lines.append(f"    {fragment}: rows {ranges}")
            if ids:
                more = ", ..." if rows > len(ids) else ""
                lines.append(f"    object_id {', '.join(map(repr, ids))}{more}")
        if self.overruled:
            lines.append(
                f"  {len(self.overruled)} manifest(s) that count no more (every row counted "
                "elsewhere or stale; an interrupted prune's): set aside too"
            )
        return "\n".join(lines)


def current_input(input_url: str, options: Mapping[str, Any] | None) -> repeats.CurrentInput:
    """The input files as the job would list them now (its own listing, so
    that no file the job reads can look gone).

    Raises:
        io.StorageError: the input is missing or holds no Parquet files.
    """
    from pipeline import job

    scan = job.scan_input(input_url, dict(options or {}), skip_bad_files=True)
    return repeats.CurrentInput.from_scan(scan)


def find(
    output: str,
    current: repeats.CurrentInput,
    options: Mapping[str, Any] | None = None,
    ids: bool = True,
) -> Found:
    """What a prune of ``output`` against the input ``current`` would drop;
    ``ids`` reads the affected manifests' ``object_id`` column to name some.

    Raises:
        NothingOfTheInput: the output has committed rows and none is of the
            current input (a wrong ``--input`` would otherwise drop them all).
    """
    state = index.state(output, options)
    coverage = state.coverage()
    gone = repeats.stale_rows(coverage, current)
    if coverage and len(gone.coverage) == len(coverage):
        raise NothingOfTheInput(
            f"none of the {state.keys()} rows of {output} is of a file of this input: "
            "is --input the catalog this output was made from (or where it moved)? If its "
            "files are all new, run the job on it first. Nothing was changed."
        )
    found = Found(output, gone)
    found.manifests = [e for e in state.entries if any(f in gone.coverage for f in e.coverage)]
    found.overruled = _overruled(state, coverage, current, options)
    if ids:
        for entry in found.manifests:
            table = index._read(entry.url, options, ["object_id", "row_key"])
            for object_id, key in zip(
                table.column("object_id").to_pylist(),
                table.column("row_key").to_pylist(),
                strict=True,
            ):
                fragment = key.rpartition(":")[0]
                if fragment in gone.coverage:
                    shown = found.ids.setdefault(fragment.partition("-")[0], [])
                    if len(shown) < IDS_SHOWN:
                        shown.append(object_id)
    return found


def _overruled(
    state: index.State,
    coverage: plan.Coverage,
    current: repeats.CurrentInput,
    options: Mapping[str, Any] | None,
) -> list[str]:
    """The manifests that lost an overlap and whose every row is stale or
    counted by an accepted manifest: setting them aside loses nothing."""
    listed = index.listing(io.join(state.output, MANIFESTS), options)
    out = []
    for url in sorted({o.loser for o in state.overlaps}):
        name = url.rsplit("/", 1)[-1]
        if name not in listed:
            continue
        entry = index.read_entry(url, listed[name][1], options)
        if not isinstance(entry, index.Entry) or not entry.coverage:
            continue
        if all(
            not current.holds(fragment) or _within(ranges, coverage.get(fragment, []))
            for fragment, ranges in entry.coverage.items()
        ):
            out.append(url)
    return out


def _within(ranges: plan.Ranges, cover: plan.Ranges) -> bool:
    """Whether every row of ``ranges`` is in ``cover`` (sorted, disjoint,
    touching ranges joined: a range is inside one of them or not covered)."""
    return all(any(a2 <= a and b <= b2 for a2, b2 in cover) for a, b in ranges)


def prune(
    found: Found,
    options: Mapping[str, Any] | None,
    fence: Callable[[], None],
    generation: int,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Drop the stale rows ``found`` names (the caller holds the output's
    lease; ``fence`` raises once it does not). Returns what was done."""
    output = found.output
    folder = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-prune"
    done = {"manifests_written": 0, "manifests_set_aside": 0, "rows_pruned": 0}
    stale = set(found.stale.coverage)
    for entry in found.manifests:
        table = index._read(entry.url, options)
        keep = pa.array(
            [k.rpartition(":")[0] not in stale for k in table.column("row_key").to_pylist()]
        )
        kept = table.filter(keep)
        if kept.num_rows:
            url = _write_replacement(output, entry, kept, generation, options, fence)
            done["manifests_written"] += 1
            say(f"wrote {url}: {kept.num_rows} of its {table.num_rows} rows (the others stale)")
        fence()
        target = verify.set_aside(output, entry.url, folder, options)
        done["manifests_set_aside"] += 1
        done["rows_pruned"] += table.num_rows - kept.num_rows
        say(f"set aside {entry.url} -> {target}")
    for url in found.overruled:
        fence()
        target = verify.set_aside(output, url, folder, options)
        done["manifests_set_aside"] += 1
        say(f"set aside {url} -> {target} (overruled; its rows are counted elsewhere or stale)")
    index.fold(output, options, fence, generation)
    return done


def _write_replacement(
    output: str,
    entry: index.Entry,
    kept: pa.Table,
    generation: int,
    options: Mapping[str, Any] | None,
    fence: Callable[[], None],
) -> str:
    """A manifest of ``kept`` (rows of ``entry``), named for their keys as the
    sink names one, pointing at ``entry``'s shard when it keeps ok rows."""
    from pipeline.sink import shard_name

    keys = kept.column("row_key").to_pylist()
    name = shard_name(keys)
    has_grids = pc.sum(pc.is_valid(kept.column("shard"))).as_py() or 0
    shard = entry.shard if has_grids else None
    metadata = index.manifest_metadata(
        kept,
        name,
        plan.coverage_of(keys),
        generation,
        shard["path"] if shard else None,
        int(shard["bytes"]) if shard else 0,
    )
    buffer = BytesIO()
    pq.write_table(kept.replace_schema_metadata(metadata), buffer, compression="zstd")
    url = io.join(output, MANIFESTS, f"{name}.parquet")
    fence()
    io.write_bytes(url, buffer.getvalue(), options)
    return url


def recorded(found: Found, options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``_SUCCESS`` (if any) agrees with the output's index and the
    newest record's ``rows_stale`` with what is stale now: false after a
    prune stopped between its last manifest and its record."""
    said = summary.last_record(found.output, options, "rows_stale").get("rows_stale")
    if said not in (None, found.stale.rows):
        return False
    success = summary.read_success(found.output, options)
    if success is None:
        return True
    counts = index.state(found.output, options).counts()
    return (success.get("output_rows_ok"), success.get("output_rows_failed")) == (
        counts["rows_ok"],
        counts["rows_failed"],
    )


def record(
    output: str,
    input_url: str,
    current: repeats.CurrentInput,
    done: Mapping[str, Any],
    options: Mapping[str, Any] | None,
    generation: int,
    seconds: float,
    fence: Callable[[], None],
) -> dict[str, Any]:
    """After a prune: count again what the output holds, give ``_SUCCESS``
    (when there is one) the new totals, and write the prune's record under
    ``OUTPUT/runs/``. Returns the record."""
    state = index.state(output, options)
    counted = repeats.repeated_ids(state, options)
    gone = repeats.stale_rows(state.coverage(), current)
    figures = {
        **counted.fields(),
        "rows_stale": gone.rows,
        "stale_files": len(gone.files),
    }
    totals = summary.output_totals(state.counts(), state.keys())
    ended = time.time()
    report = {
        "kind": summary.PRUNE,
        "generation": generation,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ended - seconds)),
        "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ended)),
        "wall_s": round(seconds, 3),
        "arguments": io.redact({"input": input_url, "output": output}),
        **done,
        **figures,
        **totals,
    }
    success = summary.read_success(output, options)
    if success is not None:
        fence()
        summary.write_success(
            output,
            {
                **success,
                **totals,
                **figures,
                "rows_pruned": success.get("rows_pruned", 0) + done["rows_pruned"],
            },
            options,
        )
    fence()
    summary.record_run(output, report, options)
    return report
