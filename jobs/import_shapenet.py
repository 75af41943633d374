"""Import ShapeNetRendering and ShapeNetVox32 into voxray's input schema.

Reads RENDERINGS/<synset>/<model>/rendering/NN.png + rendering_metadata.txt and
VOXELS/<synset>/<model>/model.binvox, and writes OUTPUT/part-NNNNN.parquet with
object_id, category, views, voxels and cameras. Models with missing or broken
files are skipped, each with its reason on stderr, and counted in the final
line. Exit code 0 when at least one row was written, 1 when none was, 2 (with
nothing written) on bad arguments or an output that is not empty.

Example:
    python jobs/import_shapenet.py --renderings ShapeNetRendering --voxels ShapeNetVox32 \\
        --output s3://bucket/shapenet --categories chair,table
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli, io  # noqa: E402
from shapes.categories import CATEGORIES  # noqa: E402
from shapes.dataset import DatasetError  # noqa: E402
from shapes.shapenet import import_shapenet  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """The exit code; an expected failure is one line on stderr (``cli.run``)."""
    return cli.run(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=f"categories: {', '.join(CATEGORIES)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--renderings", required=True, help="ShapeNetRendering directory")
    ap.add_argument("--voxels", required=True, help="ShapeNetVox32 directory")
    ap.add_argument("--output", required=True, help="directory URL: local path, file:// or s3://")
    ap.add_argument("--categories", default=None, help="comma-separated subset (default: all 13)")
    ap.add_argument("--rows-per-file", type=int, default=256, help="rows per Parquet file")
    ap.add_argument(
        "--storage-options",
        type=cli.storage_options,
        default={},
        help="fsspec options for --output, JSON",
    )
    args = ap.parse_args(argv)
    options = io.storage_options(args.output, args.storage_options)
    cats = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    try:
        report = import_shapenet(
            args.renderings, args.voxels, args.output, cats, options, args.rows_per_file
        )
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for model, reason in report.skipped:
        print(f"skipped {model}: {reason}", file=sys.stderr)
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(report.reasons().items())) or "none"
    print(
        f"imported {report.rows} objects into {report.files} files; "
        f"skipped {len(report.skipped)} ({reasons}); "
        f"{report.not_selected} of other categories not selected"
    )
    print(json.dumps(report.to_dict()))
    return 0 if report.rows else 1


if __name__ == "__main__":
    sys.exit(main())
