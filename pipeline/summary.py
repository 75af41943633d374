"""The job's summary: the ``_SUCCESS`` JSON written last under the output (so
its presence means every row of the run is committed) and the short report
printed for people. Arguments are recorded with every credential-like value
redacted. This module must never write ``_SUCCESS`` before the sink has
finished, and never record a secret.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from pipeline import io
from pipeline.layout import SUCCESS


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
    model: str,
    output: str,
    arguments: Mapping[str, Any],
    committed_before: Mapping[str, int] | None = None,
    shards: int = 0,
) -> dict[str, Any]:
    """The summary of one run.

    ``rows_*`` count this run's input rows: ok and failed were processed now,
    skipped were committed by an earlier run. ``objects_per_s`` is processed
    rows (ok + failed) over the run's wall time. ``failed_fraction`` covers the
    whole output (earlier runs included), so a rerun cannot hide failures.
    """
    before = {"rows_ok": 0, "rows_failed": 0, **(committed_before or {})}
    output_ok = before["rows_ok"] + rows_ok
    output_failed = before["rows_failed"] + rows_failed
    output_rows = output_ok + output_failed
    return {
        "rows_total": rows_ok + rows_failed + rows_skipped,
        "rows_ok": rows_ok,
        "rows_failed": rows_failed,
        "rows_skipped": rows_skipped,
        "objects_per_s": round((rows_ok + rows_failed) / wall_s, 3) if wall_s > 0 else None,
        "wall_s": round(wall_s, 3),
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
    return "\n".join(lines)
