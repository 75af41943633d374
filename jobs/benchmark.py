"""Benchmarks of voxray: the model alone (`model`) and the whole job (`pipeline`).

Speed targets are checked here, never in timed unit tests: the machines are
shared and noisy, so every figure is a median of repeated runs, and ratios
are measured side by side in one run.

    python jobs/benchmark.py model --preset res3d-gru-3 --views 5 --batch 8 --precision fp32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def matmul_peak_gflops(dtype: str = "float32", n: int = 2048, runs: int = 7) -> float:
    """Median GFLOP/s of an n x n matmul in TensorFlow, the roofline for the
    convolutions (oneDNN runs both on the same kernels)."""
    import tensorflow as tf

    a = tf.random.stateless_normal((n, n), seed=(1, 2), dtype=dtype)
    b = tf.random.stateless_normal((n, n), seed=(3, 4), dtype=dtype)
    mm = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    mm(a, b).numpy()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        mm(a, b).numpy()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def bench_model(args: argparse.Namespace) -> dict:
    import numpy as np

    from model import Reconstructor, build
    from model.flops import count_flops

    net = build(args.preset)
    jit = {"auto": None, "on": True, "off": False}[args.xla]
    rec = Reconstructor(net, batch_size=args.batch, precision=args.precision, jit_compile=jit)
    s = rec.image_size
    rng = np.random.default_rng(0)
    views = [rng.integers(0, 256, (args.views, s, s, 3), np.uint8) for _ in range(args.batch)]
    flops = count_flops(net, 1, args.views)
    for _ in range(args.warmup):
        rec.predict(views)
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        rec.predict(views)
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    peak = matmul_peak_gflops("float32")
    result = {
        "preset": args.preset,
        "views": args.views,
        "batch": args.batch,
        "precision": args.precision,
        "device": rec.device,
        "xla": rec.jit_compile,
        "runs": args.runs,
        "median_s_per_batch": round(median, 4),
        "objects_per_s": round(args.batch / median, 3),
        "gflops_per_object": round(flops / 1e9, 3),
        "gflops_per_s": round(flops * args.batch / median / 1e9, 1),
        "peak_gflops_per_s": round(peak, 1),
    }
    if args.precision == "bf16":
        result["peak_bf16_gflops_per_s"] = round(matmul_peak_gflops("bfloat16"), 1)
    result["fraction_of_fp32_peak"] = round(result["gflops_per_s"] / peak, 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("model", help="the Reconstructor alone on random views")
    m.add_argument("--preset", default="res3d-gru-3")
    m.add_argument("--views", type=int, default=5)
    m.add_argument("--batch", type=int, default=8)
    m.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    m.add_argument("--xla", choices=("auto", "on", "off"), default="auto")
    m.add_argument("--runs", type=int, default=5, help="timed runs (median reported; >= 5)")
    m.add_argument("--warmup", type=int, default=2)
    m.add_argument("--json", action="store_true", help="last line printed is JSON")
    args = parser.parse_args(argv)
    if args.what == "model":
        if args.runs < 5:
            parser.error("--runs must be at least 5 for a meaningful median")
        result = bench_model(args)
    for k, v in result.items():
        print(f"{k:>24}: {v}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
