"""Generate the procedural ShapeNet-like multi-view dataset as Parquet, on Ray.

Writes OUTPUT/part-NNNNN.parquet in voxray's input schema (object_id, views as
PNG, voxels as packbits of a 32^3 grid) plus `category` and `cameras`. The same
--seed always gives byte-identical rows, whatever the number of workers. Exit
code 2, with nothing written, on bad arguments or an output that is not empty.

Examples (650 objects of 24 views with a contact sheet; 1,000 objects of 1 to
8 views each, drawn per object from the seed, on S3):

    python jobs/make_dataset.py --output /tmp/ds --objects 650 --seed 0 --preview sheet.png
    python jobs/make_dataset.py --output s3://bucket/mixed --objects 1000 --seed 1 --views 1,8 \\
        --storage-options '{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fsspec  # noqa: E402

from pipeline import cli, cluster, io  # noqa: E402
from shapes.categories import CATEGORIES  # noqa: E402
from shapes.dataset import DatasetError, check_output, make_dataset, validate  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__,
        epilog=f"categories: {', '.join(CATEGORIES)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--output", required=True, help="directory URL: local path, file:// or s3://")
    ap.add_argument("--objects", type=int, required=True, help="number of objects (rows)")
    ap.add_argument("--seed", type=int, required=True, help="dataset seed (non-negative)")
    ap.add_argument(
        "--views",
        type=view_counts,
        default=24,
        metavar="N|LOW,HIGH",
        help="renders per object: N each, or LOW,HIGH to draw each object's count uniformly "
        "from LOW..HIGH, the same for a given --seed (default 24)",
    )
    ap.add_argument("--image-size", type=int, default=137, help="render size in px (default 137)")
    ap.add_argument(
        "--categories",
        default=None,
        help="comma-separated subset of the 13 categories (default: all, cycled evenly)",
    )
    ap.add_argument("--preview", default=None, help="also write a contact sheet PNG here")
    ap.add_argument("--rows-per-file", type=int, default=256, help="rows per Parquet file")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default all)")
    ap.add_argument(
        "--ray-start-timeout",
        type=float,
        default=cluster.RAY_START_SECONDS,
        metavar="SECONDS",
        help="how long a local Ray may take to start; past it the command exits 1: rerun "
        f"(default {cluster.RAY_START_SECONDS:g})",
    )
    ap.add_argument(
        "--storage-options",
        type=cli.storage_options,
        default={},
        metavar="JSON",
        help="fsspec options for --output and --preview, as for the job: e.g. "
        '\'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}\'',
    )
    return ap.parse_args(argv)


def view_counts(text: str) -> int | tuple[int, int]:
    """``--views``: a count (``24``) or a range drawn per object (``1,8``); the
    range's bounds are checked with the other arguments (``shapes.dataset.validate``)."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if len(counts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected N or LOW,HIGH (integers), got {text!r}")
    return counts[0] if len(counts) == 1 else (counts[0], counts[1])


def main(argv: list[str] | None = None) -> int:
    """The exit code: 0 written; 1 Ray did not start in time (rerun); 2 bad
    arguments or an output that is not empty (nothing written); 3 storage that
    cannot be used; 130/143 stopped by a signal."""
    args = parse_args(argv)
    if args.ray_start_timeout <= 0:
        print("error: --ray-start-timeout must be > 0", file=sys.stderr)
        return 2
    return cli.run(lambda: generate(args))


def generate(args: argparse.Namespace) -> int:
    options = io.storage_options(args.output, args.storage_options)
    cats = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    try:
        # Checked before Ray starts, so that a bad argument answers at once.
        validate(args.objects, args.seed, args.views, args.image_size, cats, args.rows_per_file)
        fs, root = fsspec.core.url_to_fs(args.output, **options)
        check_output(fs, root.rstrip("/"), args.output)
        cluster.connect(start_timeout=args.ray_start_timeout, num_cpus=args.num_cpus)
        summary = make_dataset(
            args.output,
            args.objects,
            args.seed,
            views=args.views,
            image_size=args.image_size,
            categories=cats,
            storage_options=options,
            rows_per_file=args.rows_per_file,
            num_cpus=args.num_cpus,
            preview=args.preview,
        )
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    cluster.leave(main())
