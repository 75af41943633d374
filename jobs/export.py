"""Export reconstructions as files that 3D tools open: smooth PLY, OBJ or GLB
meshes (marching cubes at the run's threshold), exact voxel cubes (--cubes),
or binvox voxel grids.

    python jobs/export.py --output outputs/demo --worst 5 --format glb --out exports/worst
    python jobs/export.py --output s3://bucket/grids --ids chair-17 sofa-3 --format obj --out ex
    python jobs/export.py --output outputs/demo --where "iou < 0.6" --format ply --cubes --out ex

One file per selected ok row, named from its object id (safe characters plus a
digest of the id), in the unit cube [-0.5, 0.5]^3 with y up; `index.json` in
--out lists every selected row with its file, or why it has none. Exit 0 when
every selected row was exported, 1 when some were not (failed rows, nothing
occupied) or nothing matched, 2 for bad arguments or unknown ids, 3 when a
package it needs is not installed (the message says how to install it).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

from pipeline import cli, results  # noqa: E402


def threshold(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"--threshold must be in (0, 1], got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    try:
        from pipeline import export  # trimesh and scikit-image: the output tools' packages
    except ImportError as exc:
        return results.missing_package("export", exc)

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--output", required=True, metavar="URL", help="the job's output (s3://, local)")
    p.add_argument("--format", required=True, choices=export.FORMATS)
    p.add_argument(
        "--out", required=True, metavar="DIR", help="folder for the files (made if missing)"
    )
    p.add_argument(
        "--cubes", action="store_true", help="exact voxel cubes instead of a smooth surface"
    )
    p.add_argument(
        "--threshold",
        type=threshold,
        metavar="T",
        help="p(occupied) (default: the run's threshold)",
    )
    p.add_argument(
        "--storage-options", type=cli.storage_options, default={}, help="fsspec options JSON"
    )
    results.add_selection_arguments(p)
    args = p.parse_args(argv)
    if args.cubes and args.format == "binvox":
        p.error("--cubes is for meshes; binvox holds the voxels themselves")

    output = results.Output(args.output, args.storage_options)
    rows = results.select_for_command(output, args, "export")
    if isinstance(rows, int):
        return rows

    done = export.export(
        output, rows, args.out, args.format, args.cubes, args.threshold, args.storage_options
    )
    written = [d for d in done if d.file is not None]
    print(
        f"voxray export: {len(written)} {args.format} file(s) in {args.out} (index.json lists them)"
    )
    for d in done:
        if d.file is None:
            print(f"  skipped {d.object_id!r}: {d.reason}")
    return 0 if len(written) == len(done) else 1


if __name__ == "__main__":
    sys.exit(main())
