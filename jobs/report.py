"""An HTML report of an output, in one command: a folder with index.html that
opens offline, from disk, in any browser: the summary figure, the worst
objects' and each category's worst objects' sheets, a table of the rows that
sorts and filters, and those objects in 3D (three.js, bundled in the folder).

    python jobs/report.py --output outputs/demo --out report/
    python jobs/report.py --output s3://bucket/grids --worst 20 --per-category 3 --out report/

Exit 0 when the report is written, 1 when the output has no rows, 3 when a
package it needs is not installed (the message says how to install it).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

from pipeline import cli, results  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    try:
        from pipeline import report  # matplotlib, trimesh, scikit-image: the output tools
    except ImportError as exc:
        return results.missing_package("report", exc)

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--output", required=True, metavar="URL", help="the job's output (s3://, local)")
    p.add_argument("--out", required=True, metavar="DIR", help="the report's folder")
    p.add_argument("--worst", type=int, default=8, help="worst objects shown, in 3D too (8)")
    p.add_argument("--per-category", type=int, default=2, help="each category's worst (2)")
    p.add_argument("--cell", type=int, default=96, help="picture size in the sheets (96)")
    p.add_argument("--catalog", metavar="URL", help="the job's input (default: from the output)")
    p.add_argument(
        "--storage-options", type=cli.storage_options, default={}, help="fsspec options JSON"
    )
    args = p.parse_args(argv)
    output = results.Output(args.output, args.storage_options, catalog=args.catalog)
    if output.manifests(["status"]).num_rows == 0:
        print(f"voxray report: {args.output} has no rows", file=sys.stderr)
        return 1
    done = report.build(
        output, args.out, args.worst, args.per_category, args.cell, args.storage_options
    )
    print(
        f"voxray report: {args.out}/index.html ({done['rows']} rows in its table, "
        f"{done['sheets']} sheets, {done['models']} objects in 3D); open it in a browser"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
