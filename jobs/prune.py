"""Drop the output rows of input files that no longer exist.

    python jobs/prune.py --input URL --output URL --dry-run   list them, change nothing
    python jobs/prune.py --input URL --output URL             drop them

A row is stale when its input file is gone: the file named in its row key is
no longer in --input, by URL or by content (a renamed or moved file is not
gone). The job counts them at the end of every run (rows_stale in _SUCCESS and
in Output.status()); this lists each gone file's fragments, rows and some
object ids, and drops them. Dropping takes the output's lease like a job
(refused while one runs), writes for each manifest holding stale rows a new
manifest of its other rows (same shard: no grid moves), moves the old one to
OUTPUT/rejected/<time>-prune/ (never deleted), rebuilds the index and updates
_SUCCESS. Every other row stays readable and counted once, also if the prune
is interrupted; rerun it to finish. Exit 0 when done (or nothing is stale),
1 when it stopped part-way (rerun it), 2 for bad arguments, 3 when the input
or output cannot be read, the output's lease is held, or no committed row is
of this input (most likely the wrong --input: nothing is changed).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from pipeline import cli

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--input", required=True, metavar="URL", help="the catalog as it is now")
    p.add_argument("--output", required=True, metavar="URL", help="the job's output URL")
    p.add_argument("--dry-run", action="store_true", help="list the stale rows, change nothing")
    p.add_argument(
        "--storage-options", type=cli.storage_options, default={}, help="fsspec options JSON"
    )
    args = p.parse_args(argv)
    return cli.run(lambda: _prune(args), permanent=_permanent())


def _permanent() -> tuple[type[BaseException], ...]:
    from pipeline.lease import LeaseHeld
    from pipeline.prune import NothingOfTheInput

    return (LeaseHeld, NothingOfTheInput)


def _prune(args: argparse.Namespace) -> int:
    import time

    from pipeline import io, prune
    from pipeline.lease import Lease, LeaseLost, StaleGeneration

    started = time.monotonic()
    in_options = io.storage_options(args.input, args.storage_options)
    out_options = io.storage_options(args.output, args.storage_options)
    try:
        found_output = io.exists(args.output, out_options)
    except Exception as exc:
        raise io.explain(exc, args.output, "output", out_options) from None
    if not found_output:
        raise io.StorageError(f"cannot prune output {args.output}: it does not exist")
    current = prune.current_input(args.input, in_options)
    if args.dry_run:
        found = prune.find(args.output, current, out_options)
        print(found.format())
        print("dry run: nothing was changed")
        return 0
    lease = Lease(args.output, out_options)
    lease.acquire()  # found with the lease held: no job commits meanwhile
    try:
        found = prune.find(args.output, current, out_options)
        print(found.format())
        if found.nothing and prune.recorded(found, out_options):
            print("nothing to prune")
            return 0
        done = prune.prune(found, out_options, lease.check, lease.generation)
        report = prune.record(
            args.output,
            args.input,
            current,
            done,
            out_options,
            lease.generation,
            time.monotonic() - started,
            lease.check,
        )
    except (LeaseLost, StaleGeneration) as exc:
        print(f"error: the prune stopped: {exc}; rerun it to finish", file=sys.stderr)
        return 1
    finally:
        lease.release()
    print(
        f"pruned {done['rows_pruned']} rows: {done['manifests_written']} manifest(s) written, "
        f"{done['manifests_set_aside']} set aside under {args.output}/rejected/; the output "
        f"holds {report['totals']['rows']} rows, {report['rows_stale']} stale"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
