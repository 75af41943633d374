"""Check an output of the reconstruction job, and repair it: the fsck of an output.

    python jobs/verify.py OUTPUT                   footers, listings, _SUCCESS; 200 grids
    python jobs/verify.py OUTPUT --grids all --keys   every grid and every row key too
    python jobs/verify.py OUTPUT --repair          set aside what does not count, rebuild
                                                   the index, then rerun the job

Checks that every manifest is readable and named for its keys, that no input
row is committed twice, that every manifest's shard is there with the size it
recorded (and, read, that grids load at their offsets), that the index holds
exactly the manifests that count, and that _SUCCESS agrees. --repair takes the
output's lease (refused while a job runs), moves rejected, overlapping or
damaged manifests to OUTPUT/rejected/ (never deleted; the next run redoes their
rows), rebuilds the index and removes a _SUCCESS that no longer holds.
Exit 0 when the output is consistent (after --repair: when nothing is left to
redo), 1 when something is wrong, 2 for bad arguments, 3 when the output
cannot be read or its lease is held.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402


def grids(text: str) -> int | None:
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--grids takes a number or 'all', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("--grids must be >= 0")
    return value


def main(argv: list[str] | None = None) -> int:
    from pipeline import cli

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("output", metavar="OUTPUT", help="the job's output URL (s3://, local)")
    p.add_argument(
        "--grids", type=grids, default=200, metavar="N|all",
        help="ok rows whose grids are read at their offsets (default 200, a sample; 0 none)",
    )  # fmt: skip
    p.add_argument("--keys", action="store_true", help="read every manifest's row keys too")
    p.add_argument("--repair", action="store_true", help="put right what is found (see above)")
    p.add_argument(
        "--storage-options", type=cli.storage_options, default={}, help="fsspec options JSON"
    )
    args = p.parse_args(argv)

    from pipeline import io, verify
    from pipeline.lease import Lease, LeaseHeld

    options = io.storage_options(args.output, args.storage_options)
    try:
        if not io.exists(args.output, options):
            print(f"error: output {args.output} does not exist", file=sys.stderr)
            return 3
        report = verify.check(args.output, options, grids=args.grids, keys=args.keys)
    except Exception as exc:
        print(f"error: {io.explain(exc, args.output, 'output', options)}", file=sys.stderr)
        return 3
    print(report.format())
    if not args.repair or report.ok:
        return 0 if report.ok else 1
    lease = Lease(args.output, options)
    try:
        lease.acquire()
    except LeaseHeld as exc:
        print(f"error: cannot repair: {exc}", file=sys.stderr)
        return 3
    try:
        for line in verify.repair(args.output, report, options, lease.check, lease.generation):
            print(f"  {line}")
        again = verify.check(args.output, options, grids=0)
        print(again.format())
    finally:
        lease.release()
    redo = any(f.repair == verify.SET_ASIDE for f in report.findings)
    return 1 if redo or not again.ok else 0


if __name__ == "__main__":
    sys.exit(main())
