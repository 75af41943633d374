"""Score a model on a labelled dataset: mean IoU@0.4 by number of views and by
category, optionally beside the image-blind category-mean oracle.

Examples (the shipped weights on every view count 1..5; a model of your own on
some of them, at bf16, beside the oracle, as JSON):

    python jobs/evaluate.py --data data/test
    python jobs/evaluate.py --data data/test --model runs/compact/model.keras \\
        --views 1,3,5 --precision bf16 --oracle-from data/train --json

With --json the last line printed is one JSON object with keys `iou_by_views`
and `iou_by_category` (and `oracle_iou` with --oracle-from).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from model.defaults import BATCH_SIZE  # noqa: E402
from pipeline import cli, io  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """The exit code; an expected failure is one line on stderr (``cli.run``)."""
    return cli.run(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", required=True, help="Parquet with ground-truth voxels (path or URL)")
    p.add_argument("--model", help=".keras file or URL (default: voxray's shipped weights)")
    p.add_argument("--views", default="1,2,3,4,5", help="view counts to score (default 1..5)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--limit", type=int, help="score only the first N objects")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-object view choice")
    p.add_argument("--oracle-from", help="dataset whose category means form the oracle baseline")
    p.add_argument(
        "--storage-options", type=cli.storage_options, default={}, help="fsspec options JSON"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    args = p.parse_args(argv)
    try:
        views = sorted({int(v) for v in args.views.split(",")})
    except ValueError:
        p.error(f"--views must be comma-separated integers, got {args.views!r}")
    if not views or views[0] < 1:
        p.error("--views must be positive integers")

    from model import Reconstructor, devices
    from model.evaluate import category_means, evaluate, oracle

    def options(url: str) -> dict:
        return io.storage_options(url, args.storage_options)

    t0 = time.perf_counter()
    devices.configure()
    model = Reconstructor(
        args.model,
        batch_size=args.batch_size,
        precision=args.precision,
        storage_options=options(args.model) if args.model else None,
    )
    result = evaluate(
        model,
        args.data,
        views=views,
        limit=args.limit,
        seed=args.seed,
        storage_options=options(args.data),
    )
    if args.oracle_from:
        means = category_means(args.oracle_from, options(args.oracle_from))
        result.update(oracle(means, args.data, args.limit, storage_options=options(args.data)))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"{result['objects']} objects, model {result['model']} ({result['precision']})")
    print(
        "IoU@0.4 by views:    "
        + "  ".join(f"{k}: {v:.3f}" for k, v in result["iou_by_views"].items())
    )
    for c, by_v in result["iou_by_category_and_views"].items():
        print(f"  {c:<12} " + "  ".join(f"{v:.3f}" for v in by_v.values()))
    if "oracle_iou" in result:
        print(f"category-mean oracle IoU@0.5: {result['oracle_iou']:.3f}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
