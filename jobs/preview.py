"""Pictures of an output: a contact sheet of selected objects (input views,
the reconstruction from two angles, the ground truth, the IoU), or with
--summary one figure of the whole output (IoU by category and by number of
views, occupied voxels).

    python jobs/preview.py --output outputs/demo --worst 6 --out worst.png
    python jobs/preview.py --output outputs/demo --category chair --out chairs.png
    python jobs/preview.py --output outputs/demo --summary --out summary.png
    python jobs/preview.py --output outputs/demo --compare outputs/demo-new --out changed.png

The views and the ground truth come from the catalog the job read (its --input,
as _SUCCESS records it), or from --catalog. A sheet shows the selected rows,
at most 12 unless --ids, --worst or --limit say how many; --summary takes every
row, or the selected ones. --compare pairs each selected row with the same
object in a second output (by row identity when both read one catalog, else
by object_id, which must then be unique) and shows those that changed most,
or with --summary how IoU moved by category and by number of views.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

import pyarrow.compute as pc  # noqa: E402

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
        "--compare",
        metavar="URL",
        help="a second output (other weights or threshold): a paired sheet of the objects "
        "that changed most, or with --summary the change by category and by views",
    )
    p.add_argument(
        "--storage-options", type=cli.storage_options, default={}, help="fsspec options JSON"
    )
    results.add_selection_arguments(p)
    args = p.parse_args(argv)

    output = results.Output(args.output, args.storage_options, catalog=args.catalog)
    if args.compare:
        return compare(preview, output, args)
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


def compare(preview, output: results.Output, args: argparse.Namespace) -> int:
    """--compare: the selected rows of --output (a) beside the same objects in
    the second output (b)."""
    other = results.Output(args.compare, args.storage_options)
    # --limit says how many changed objects to show, not which rows to compare
    selection = argparse.Namespace(**{**vars(args), "limit": None})
    rows = results.select_for_command(output, selection, "preview")
    if isinstance(rows, int):
        return rows
    try:
        pairs = output.compare(other)
    except ValueError as exc:
        print(f"voxray preview: {exc}", file=sys.stderr)
        return 2
    pairs = pairs.filter(pc.is_in(pairs["row_key"], rows["row_key"]))
    heading = f"a = {preview.printable(output.url, 60)}, b = {preview.printable(other.url, 60)}"
    if args.summary:
        png = preview.compare_summary(pairs, heading)
        what = f"summary of {pairs.num_rows} objects in both"
    else:
        shown = pairs.slice(0, args.limit or SHEET_ROWS)
        title = f"{heading}; the {shown.num_rows} of {pairs.num_rows} that changed most"
        png = preview.compare_sheet(output, other, shown, args.cell, title)
        what = f"sheet of the {shown.num_rows} of {pairs.num_rows} objects that changed most"
    io.write_bytes(args.out, png, args.storage_options)
    print(f"voxray preview: {args.out} ({what})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
