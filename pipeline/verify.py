"""The fsck of an output: are the commit records, the grids, the index and
``_SUCCESS`` consistent with one another, and (``repair``) put right what is
not, without losing anything.

The cheap checks read footers and listings only (the index's state, the
listing of ``shards/``, ``_SUCCESS``): every manifest readable and named for
its keys, no input row committed by two manifests or twice by one, each
manifest's shard present with the size it recorded, the index current, and
``_SUCCESS`` agreeing with the index. The costly ones read rows: every
manifest's row keys against its name (``keys``), and the grids of a sample of
ok rows or of all of them at their offsets (``grids``). ``repair`` moves what
does not count or has lost its grids to ``OUTPUT/rejected/`` (so the next run
redoes those rows), rebuilds the index, and removes a ``_SUCCESS`` that no
longer holds. This module must never delete a manifest or a shard, and never
repair without holding the output's lease.
"""

from __future__ import annotations

import json
import posixpath
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline import index, io
from pipeline.layout import MANIFESTS, OK, REJECTED, SHARDS, SUCCESS

SAMPLE_ROWS = 200  # grids read by the default sample
THREADS = 16

# Kinds of finding, and what repair does about each.
SET_ASIDE = "set aside"  # the manifest moves to rejected/: its rows are redone
REFOLD = "refold"  # the index is rebuilt from the manifests
UNVOUCH = "unvouch"  # _SUCCESS is removed; the next run writes it again
NOTE = "note"  # nothing is wrong with the rows readers get


@dataclass
class Finding:
    """One thing wrong with an output."""

    kind: str  # e.g. "manifest rejected", "shard missing"
    path: str  # the file concerned
    detail: str
    repair: str  # SET_ASIDE, REFOLD, UNVOUCH or NOTE

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.detail}"


@dataclass
class Report:
    """What :func:`check` found."""

    output: str
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.repair != NOTE]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def damaged(self) -> list[Finding]:
        """Rows counted as ok whose grids are gone or unreadable."""
        return [f for f in self.problems if f.kind.startswith(("shard", "grid"))]

    def format(self, limit: int = 50) -> str:
        lines = [
            f"verify {self.output}: "
            + ("consistent" if self.ok else f"{len(self.problems)} problem(s)")
            + f" ({', '.join(f'{k} {v:,}' for k, v in self.checked.items())}; "
            f"{self.seconds:.1f} s)"
        ]
        lines += [f"  {f}" for f in self.findings[:limit]]
        if len(self.findings) > limit:
            lines.append(f"  ... and {len(self.findings) - limit} more")
        return "\n".join(lines)


def check(
    output: str,
    options: Mapping[str, Any] | None = None,
    grids: int | None = 0,
    keys: bool = False,
    current: index.State | None = None,
) -> Report:
    """Check ``output``; ``grids`` is how many ok rows' grids to read (0 none,
    None all), ``keys`` reads every manifest's row keys."""
    started = time.monotonic()
    report = Report(output)
    current = current or index.state(output, options)
    add = report.findings.append
    for r in current.rejected:
        add(Finding("manifest rejected", r.url, r.reason, SET_ASIDE))
    for o in current.overlaps:
        add(Finding("rows committed twice", o.loser, o.describe(), SET_ASIDE))
    for p in current.stale:
        add(Finding("index part stale", p.url, p.problem or "", REFOLD))
    for p in current.leftovers:
        add(Finding("index part left over", p.url, "its manifests are in another part", REFOLD))
    if current.pending:
        add(
            Finding(
                "index behind",
                io.join(output, "index"),
                f"{len(current.pending)} manifest(s) in no part",
                REFOLD,
            )
        )
    entries = current.entries
    for e in entries:
        if e.coverage and e.keys() != e.rows:
            add(
                Finding(
                    "rows committed twice",
                    e.url,
                    f"{e.rows} rows for {e.keys()} input rows",
                    SET_ASIDE,
                )
            )
    _check_shards(output, options, entries, add)
    if keys:
        _check_keys(output, options, entries, add)
    if grids != 0:
        broken = {f.path for f in report.findings if f.kind.startswith("shard")}
        report.checked["grids"] = _check_grids(output, options, current, grids, broken, add)
    counts = current.counts()
    _check_success(output, options, counts, report, add)
    report.checked = {
        "manifests": len(entries),
        "rows": counts["rows_ok"] + counts["rows_failed"],
        **report.checked,
    }
    report.seconds = time.monotonic() - started
    return report


def _check_shards(output, options, entries: list[index.Entry], add) -> None:
    """Each manifest's shard listed with the size its footer recorded."""
    listed = _sizes(io.join(output, SHARDS), options)
    referenced = set()
    for e in entries:
        if not e.shard:
            continue
        path = e.shard["path"]
        referenced.add(posixpath.basename(path))
        size = listed.get(posixpath.basename(path))
        if size is None:
            add(
                Finding(
                    "shard missing",
                    e.url,
                    f"{path} is gone ({e.counts.get(OK)} ok rows)",
                    SET_ASIDE,
                )
            )
        elif size != e.shard["bytes"]:
            add(
                Finding(
                    "shard damaged",
                    e.url,
                    f"{path} holds {size} bytes, the manifest recorded {e.shard['bytes']}",
                    SET_ASIDE,
                )
            )
    if all(e.shard or not e.counts.get(OK) for e in entries):
        unreferenced = len(set(listed) - referenced)
        if unreferenced:
            add(
                Finding(
                    "shards unreferenced",
                    io.join(output, SHARDS),
                    f"{unreferenced} file(s) no manifest points at (a retried or fenced "
                    "writer's; readers never see them)",
                    NOTE,
                )
            )


def _sizes(url: str, options) -> dict[str, int]:
    fs, path = io.filesystem(url, options)
    try:
        found = fs.ls(path, detail=True, refresh=True) if io.is_remote(url) else fs.ls(path, True)
    except FileNotFoundError:
        return {}
    return {
        posixpath.basename(e["name"].rstrip("/")): int(e.get("size") or 0)
        for e in found
        if e.get("type") == "file"
    }


def _check_keys(output, options, entries: list[index.Entry], add) -> None:
    """Every manifest's row keys make its name, and none repeats."""
    from pipeline.sink import shard_name

    def one(e: index.Entry) -> Finding | None:
        try:
            keys = index._read(e.url, options, ["row_key"]).column("row_key").to_pylist()
        except Exception as exc:
            return Finding("manifest unreadable", e.url, f"{type(exc).__name__}", SET_ASIDE)
        if len(set(keys)) != len(keys):
            return Finding("rows committed twice", e.url, "a row key repeats", SET_ASIDE)
        if e.coverage and f"{shard_name(keys)}.parquet" != e.name:
            return Finding(
                "manifest misnamed", e.url, "its rows' keys do not make its name", SET_ASIDE
            )
        return None

    for found in index._map(one, entries, THREADS):
        if found:
            add(found)


def _check_grids(
    output, options, current: index.State, limit: int | None, broken: set[str], add
) -> int:
    """Read ``limit`` ok rows' grids (all when None) at their offsets, but
    those of manifests whose shard is already known gone or damaged."""
    from pipeline import shards

    table = index.read_table(
        current, ["object_id", "status", "shard", "grid_offset", "grid_bytes", "index"], options
    )
    owner = {e.shard["path"]: e.url for e in current.entries if e.shard}
    rows = [
        r for r in table.to_pylist() if r["status"] == OK and owner.get(r["shard"]) not in broken
    ]
    if limit is not None and len(rows) > limit:
        rows = random.Random(0).sample(rows, limit)

    def one(row: dict) -> Finding | None:
        url = io.join(output, row["shard"])
        try:
            if row["grid_offset"] is None:  # an older layout: the whole shard
                grid = shards.read_shard(url, options)["probabilities"][row["index"]]
            else:
                grid = shards.read_grid(url, row["grid_offset"], row["grid_bytes"], options)
            if grid.shape != (32, 32, 32):
                raise ValueError(f"shape {grid.shape}")
        except Exception as exc:
            manifest = owner.get(row["shard"]) or io.join(
                output, MANIFESTS, posixpath.basename(row["shard"]).split("-")[0] + ".parquet"
            )
            return Finding(
                "grid unreadable",
                manifest,
                f"{row['object_id']!r} at {row['shard']}: {type(exc).__name__}: {str(exc)[:100]}",
                SET_ASIDE,
            )
        return None

    seen = set()
    for found in index._map(one, rows, THREADS):
        if found and found.path not in seen:
            seen.add(found.path)
            add(found)
    return len(rows)


def _check_success(output, options, counts, report: Report, add) -> None:
    try:
        success = json.loads(io.read_bytes(io.join(output, SUCCESS), options))
    except FileNotFoundError:
        return
    except ValueError:
        add(Finding("_SUCCESS unreadable", io.join(output, SUCCESS), "not JSON", UNVOUCH))
        return
    said = (success.get("output_rows_ok"), success.get("output_rows_failed"))
    if said != (counts["rows_ok"], counts["rows_failed"]):
        add(
            Finding(
                "_SUCCESS disagrees",
                io.join(output, SUCCESS),
                f"it says {said[0]} ok and {said[1]} failed rows, the manifests hold "
                f"{counts['rows_ok']} and {counts['rows_failed']}",
                UNVOUCH,
            )
        )
    elif any(f.repair == SET_ASIDE for f in report.findings):
        add(
            Finding(
                "_SUCCESS vouches for a damaged output",
                io.join(output, SUCCESS),
                "see above",
                UNVOUCH,
            )
        )


def set_aside(
    output: str, url: str, folder: str, options: Mapping[str, Any] | None = None
) -> str | None:
    """Move the file ``url`` to ``OUTPUT/rejected/<folder>/`` (copied whole
    before the original goes, so an interruption leaves it in one place or
    both, never in none); its new URL, or None if it was already gone."""
    target = io.join(output, REJECTED, folder, posixpath.basename(url))
    try:
        data = io.read_bytes(url, options)
    except FileNotFoundError:
        return None
    io.write_bytes(target, data, options)
    io.remove(url, options)
    return target


def repair(
    output: str,
    report: Report,
    options: Mapping[str, Any] | None = None,
    fence: Callable[[], None] | None = None,
    generation: int = 0,
) -> list[str]:
    """Put right what ``report`` found (the caller holds the lease; ``fence``
    raises once it does not): set aside manifests, rebuild the index, remove a
    ``_SUCCESS`` that no longer holds. Returns what was done, one line each."""
    check = fence or (lambda: None)
    done: list[str] = []
    aside = sorted({f.path for f in report.findings if f.repair == SET_ASIDE})
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for url in aside:
        check()
        target = set_aside(output, url, stamp, options)
        if target:
            done.append(f"set aside {url} -> {target}")
    if aside or any(f.repair == UNVOUCH for f in report.findings):
        check()
        if io.exists(io.join(output, SUCCESS), options):
            io.remove(io.join(output, SUCCESS), options)
            done.append(f"removed {io.join(output, SUCCESS)} (the next run writes it again)")
    if aside or any(f.repair == REFOLD for f in report.findings):
        current = index.fold(output, options, fence, generation)
        done.append(f"index rebuilt: {len(current.parts)} part(s)")
    if aside:
        done.append("rerun the job with the same arguments to redo the rows set aside")
    return done
