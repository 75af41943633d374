"""Pictures of an output: a contact sheet of selected objects (input views,
the reconstruction from two angles, the ground truth, the IoU), or with
--summary one figure of the whole output (IoU by category and by number of
views, occupied voxels).

    python jobs/preview.py --output outputs/demo --worst 6 --out worst.png
    python jobs/preview.py --output outputs/demo --category chair --out chairs.png
    python jobs/preview.py --output outputs/demo --summary --out summary.png

The views and the ground truth come from the catalog the job read (its --input,
as _SUCCESS records it), or from --catalog. A sheet shows the selected rows,
at most 12 unless --ids, --worst or --limit say how many; --summary takes every
row, or the selected ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

from pipeline import cli, io, results  # noqa: E402

SHEET_ROWS = 12


def main(argv: list[str] | None = None) -> int:
    try:
        from pipeline import preview  # matplotlib: the output tools' package
    except ImportError as exc:
        return results.missing_package("preview", exc)

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--output", required=True, metavar="URL", help="the job's output (s3://, local)")
    p.add_argument("--out", required=True, metavar="PNG", help="the picture to write")
    p.add_argument("--summary", action="store_true", help="one figure of the whole output")
    p.add_argument("--catalog", metavar="URL", help="the job's input (default: from _SUCCESS)")
    p.add_argument("--no-catalog", action="store_true", help="leave out views and ground truth")
    p.add_argument("--views", type=int, default=5, help="input views shown per object (5)")
    p.add_argument("--cell", type=int, default=128, help="picture size in pixels (128)")
    p.add_argument(
        "--storage-options", type=cli.storage_options, default={}, help="fsspec options JSON"
    )
    results.add_selection_arguments(p)
    args = p.parse_args(argv)

    output = results.Output(args.output, args.storage_options, catalog=args.catalog)
    # a sheet of "everything" stops at SHEET_ROWS; ids and --worst N say how many
    capped = not (args.summary or args.ids or args.worst is not None)
    rows = results.select_for_command(
        output, args, "preview", **({"limit": SHEET_ROWS} if capped else {})
    )
    if isinstance(rows, int):
        return rows

    described = results.describe_selection(output, args, rows)
    if args.summary:
        png = preview.summary(rows, f"{preview.summary_title(output)}\n{described}")
    else:
        png = preview.contact_sheet(
            output, rows, args.views, args.cell, not args.no_catalog, described
        )
    io.write_bytes(args.out, png, args.storage_options)
    what = "summary of" if args.summary else "sheet of"
    print(f"voxray preview: {args.out} ({what} {rows.num_rows} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
