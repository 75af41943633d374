"""The job's summary: one record per run under ``OUTPUT/runs/`` (written
``running`` when the run has the lease, rewritten ``finished`` at its end, so
a run that never ended stays countable as interrupted; start, end, rows,
speed, the model and where it came from, the precision used, versions,
arguments), the ``_SUCCESS`` JSON written last under the output (so its
presence means every row is committed; it holds the last working run's figures,
the output's own counts from its index under ``totals``, and the runs' history
apart under ``history``) and the short report printed for people.
Arguments are recorded with every credential-like value redacted. This module
must never write ``_SUCCESS`` before the sink has finished, and never record a
secret.
"""

from __future__ import annotations

import json
import platform
import time
import uuid
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from pipeline import io
from pipeline.layout import RUNS, SUCCESS

# Share of failed rows above which the report ends with a warning line.
WARN_FAILED_FRACTION = 0.01


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def build_summary(
    *,
    rows_ok: int,
    rows_failed: int,
    rows_skipped: int,
    wall_s: float,
    model: str | None,
    output: str,
    arguments: Mapping[str, Any],
    committed_before: Mapping[str, int] | None = None,
    shards: int = 0,
    status: str = "finished",
) -> dict[str, Any]:
    """The summary of one run; ``status`` is "finished", or "interrupted" for a
    run stopped by a signal (its rows are what it committed before the stop).

    ``rows_*`` count this run's input rows: ok and failed were processed now,
    skipped were committed by an earlier run. ``objects_per_s`` is processed
    rows (ok + failed) over the run's wall time. ``failed_fraction`` covers the
    whole output (earlier runs included), so a rerun cannot hide failures.
    """
    before = {"rows_ok": 0, "rows_failed": 0, **(committed_before or {})}
    ended = time.time()
    output_ok = before["rows_ok"] + rows_ok
    output_failed = before["rows_failed"] + rows_failed
    output_rows = output_ok + output_failed
    return {
        "status": status,
        "rows_total": rows_ok + rows_failed + rows_skipped,
        "rows_ok": rows_ok,
        "rows_failed": rows_failed,
        "rows_skipped": rows_skipped,
        "objects_per_s": round((rows_ok + rows_failed) / wall_s, 3) if wall_s > 0 else None,
        "wall_s": round(wall_s, 3),
        "started": _iso(ended - wall_s),
        "ended": _iso(ended),
        "model": model,
        "output": output,
        "shards_written": shards,
        "output_rows_ok": output_ok,
        "output_rows_failed": output_failed,
        "failed_fraction": round(output_failed / output_rows, 6) if output_rows else 0.0,
        "arguments": io.redact(arguments),
        "versions": {
            "voxray": _version("voxray"),
            "ray": _version("ray"),
            "python": platform.python_version(),
        },
    }


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


RUNNING, FINISHED, INTERRUPTED = "running", "finished", "interrupted"
PRUNE = "prune"  # the kind of a prune's record under runs/ (pipeline.prune)


def start_run(
    output: str, record: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None
) -> str:
    """Record a run that has just taken the output (``status`` running);
    returns the record's name, for :func:`record_run` to complete."""
    name = f"{_iso(time.time()).replace(':', '')}-{uuid.uuid4().hex[:8]}.json"
    body = {"status": RUNNING, "started": _iso(time.time()), **record}
    data = json.dumps(body, indent=2, sort_keys=True).encode()
    io.write_bytes(io.join(output, RUNS, name), data, storage_options)
    return name


def record_run(
    output: str,
    report: Mapping[str, Any],
    storage_options: Mapping[str, Any] | None = None,
    name: str | None = None,
    status: str = FINISHED,
) -> list[dict[str, Any]]:
    """Write this run's record under ``OUTPUT/runs/`` (completing the one
    :func:`start_run` wrote when ``name`` is given: what it said and the report
    does not, such as the run's image size, stays); returns every run's
    record, oldest first."""
    started: dict[str, Any] = {}
    if name:
        try:
            started = json.loads(io.read_bytes(io.join(output, RUNS, name), storage_options))
        except (FileNotFoundError, ValueError):
            started = {}
    name = name or f"{report['started'].replace(':', '')}-{uuid.uuid4().hex[:8]}.json"
    body = {**started, **report, "status": status}
    data = json.dumps(body, indent=2, sort_keys=True).encode()
    io.write_bytes(io.join(output, RUNS, name), data, storage_options)
    return read_runs(output, storage_options)


def read_runs(
    output: str, storage_options: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Every run's record under ``output``, oldest first."""
    urls = io.list_files(io.join(output, RUNS), ".json", storage_options)
    return [json.loads(io.read_bytes(u, storage_options)) for u in urls]


def history(runs: list[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"runs": N, "history": {...}}``: how many runs there were, how many
    finished and how many were interrupted (a record still ``running``: its
    rows are in the output's counts, never in these), and what the finished
    ones processed together. Records of an older voxray count as finished;
    a prune's record (``kind`` "prune", ``pipeline.prune``) is no run of the
    job: it is counted apart, under ``prunes``."""
    prunes = sum(1 for r in runs if r.get("kind") == PRUNE)
    runs = [r for r in runs if r.get("kind") != PRUNE]
    finished = [r for r in runs if r.get("status", FINISHED) != RUNNING]
    keys = ("rows_ok", "rows_failed", "wall_s")
    return {
        "runs": len(runs),
        "history": {
            FINISHED: len(finished),
            INTERRUPTED: len(runs) - len(finished),
            **{k: round(sum(r.get(k) or 0 for r in finished), 3) for k in keys},
        },
        "prunes": prunes,
    }


def output_totals(counts: Mapping[str, Any], keys: int) -> dict[str, Any]:
    """The output's own figures, from its index (``pipeline.index.State``'s
    counts and distinct keys): what readers get, whatever the runs did."""
    ok, failed = counts["rows_ok"], counts["rows_failed"]
    rows = ok + failed
    return {
        "output_rows_ok": ok,
        "output_rows_failed": failed,
        "failed_fraction": round(failed / rows, 6) if rows else 0.0,
        "totals": {"rows_ok": ok, "rows_failed": failed, "rows": rows, "keys": keys},
    }


# The figures of repeated work and stale rows (pipeline.repeats) that the run
# record and _SUCCESS carry, as of the run that wrote them.
WATCHED = (
    "duplicate_ids",
    "duplicate_ids_across_files",
    "duplicate_rows",
    "rows_stale",
    "stale_files",
)


def last_figure(
    output: str,
    storage_options: Mapping[str, Any] | None,
    success: Mapping[str, Any] | None,
    key: str,
) -> Any:
    """``key`` as the last run that counted it recorded it: from ``success``
    (the output's ``_SUCCESS``) when it holds it, else from the newest run
    record that does (a run that exited 4 or was stopped wrote no
    ``_SUCCESS``); None when no run counted it."""
    if success is not None and key in success:
        return success[key]
    return last_record(output, storage_options, key).get(key)


def last_record(output: str, storage_options: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    """The newest record under ``OUTPUT/runs/`` that holds ``key`` ({} if none).
    Records are named for their start to the second, newest last; of those
    that started in the same second (a prune right after a run), the newer
    lease generation is the newer."""
    urls = io.list_files(io.join(output, RUNS), ".json", storage_options)
    found: dict[str, Any] = {}
    second = None
    for url in reversed(urls):
        started = url.rsplit("/", 1)[-1].rsplit("-", 1)[0]
        if found and started != second:
            break
        try:
            record = json.loads(io.read_bytes(url, storage_options))
        except (FileNotFoundError, ValueError):
            continue
        newer = not found or record.get("generation", 0) > found.get("generation", 0)
        if key in record and newer:
            found, second = record, started
    return found


def write_success(
    output: str, summary: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None
) -> str:
    """Write ``OUTPUT/_SUCCESS``; returns its URL."""
    url = io.join(output, SUCCESS)
    io.write_bytes(url, json.dumps(summary, indent=2, sort_keys=True).encode(), storage_options)
    return url


def read_success(
    output: str, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The ``_SUCCESS`` summary under ``output``, or None when there is none."""
    try:
        return json.loads(io.read_bytes(io.join(output, SUCCESS), storage_options))
    except FileNotFoundError:
        return None


def format_report(summary: Mapping[str, Any], success_url: str | None) -> str:
    """The few lines printed at the end of a run."""
    output = summary["output"]
    lines = [
        "",
        "voxray reconstruct: "
        + ("done" if success_url else "FAILED (too many failed rows; _SUCCESS not written)"),
        f"  rows      ok {summary['rows_ok']}, failed {summary['rows_failed']}, "
        f"skipped (already committed) {summary['rows_skipped']}, "
        f"total {summary['rows_total']}",
        f"  speed     {summary['objects_per_s']} objects/s over {summary['wall_s']} s",
        f"  model     {summary['model']}",
        f"  output    {output}",
        "            manifests/*.parquet (one row per object), shards/*.npz (grids)"
        + (f", {io.join(output, '_SUCCESS')}" if success_url else ""),
        '  read it   python -c "from pipeline.results import read_manifests; '
        f"print(read_manifests('{output}').to_pandas().head())\"",
        "            grid = pipeline.results.load_grid(output, row)  # uint8 [32,32,32]",
    ]
    if summary["rows_failed"]:
        lines.append(
            "  failures  rows with status 'failed' carry the reason in the manifest's "
            "'error' column"
        )
    if summary.get("adopted_files"):
        lines.append(
            f"  adopted   {summary['adopted_files']} input file(s) whose content the output "
            "already holds under another name (renamed or moved): their rows are not redone"
        )
        lines += [f"            {f}" for f in summary.get("adopted_examples", [])[:5]]
    duplicates = summary.get("duplicate_files") or {}
    if duplicates:
        lines.append(
            f"  copies    {len(duplicates)} input file(s) hold the same content as another "
            "input file: read once, under the first"
        )
        lines += [f"            {c} = {first}" for c, first in list(duplicates.items())[:5]]
    if summary.get("duplicate_ids"):
        lines.append(
            f"  repeated  {summary['duplicate_ids']} object_id(s) have more than one row "
            f"({summary['duplicate_rows']} rows); {summary['duplicate_ids_across_files']} of "
            "them have rows from different input files"
        )
    if summary.get("rows_stale"):
        lines.append(
            f"  stale     {summary['rows_stale']} rows of {summary['stale_files']} input "
            "file(s) that no longer exist; see them, and drop them, with "
            f"`python jobs/prune.py --input INPUT --output {output} [--dry-run]`"
        )
    if summary.get("skipped_files"):
        lines.append(
            f"  skipped   {len(summary['skipped_files'])} input file(s) (--skip-bad-files):"
        )
        lines += [f"            {f}" for f in summary["skipped_files"][:10]]
    ignored = summary.get("ignored_files") or {}
    if ignored.get("count"):
        lines.append(
            f"  ignored   {ignored['count']} file(s) or folder(s) under the input are not input "
            "(names starting with _ or ., not Parquet):"
        )
        lines += [f"            {f}" for f in ignored["first"][:5]]
    if (summary.get("duplicate_ids_grew_by") or 0) > 0:
        lines.append(
            f"warning: {summary['duplicate_ids_grew_by']} more object_id(s) have more than one "
            "row than before this run: the same objects in new rows (appended again, or a file "
            "copied under another name?). Output.rows(id) shows each one's rows."
        )
    if summary["failed_fraction"] > WARN_FAILED_FRACTION:
        lines.append(
            f"warning: {summary['failed_fraction']:.1%} of the output's rows failed "
            f"(over {WARN_FAILED_FRACTION:.0%}); pass --max-failed-fraction to make such a run "
            "exit 4"
        )
    return "\n".join(lines)
