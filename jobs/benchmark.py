"""Benchmarks of voxray: the model alone (`model`) and the whole job (`pipeline`).

Speed targets are checked here, never in timed unit tests: the machines are
shared and noisy, so every figure is a median of repeated runs, and ratios
are measured side by side in one run.

    python jobs/benchmark.py model --preset res3d-gru-3 --views 5 --batch 8 --precision fp32
    python jobs/benchmark.py pipeline --objects 48 --json
    python jobs/benchmark.py views --objects 96 --json

`pipeline` runs the whole job (`jobs/reconstruct.py`, its own local Ray) on N
procedural objects and on 10N, samples the memory of every process of the job
(driver, Ray's own processes, every worker), and then times the Reconstructor
alone on the same decoded views with the same batch size and thread count.
`views` compares the job's throughput on objects with 1 to 24 views (uniform)
with what uniform 5-view throughput predicts from the model's FLOPs.
"""

from __future__ import annotations

import argparse
import contextlib
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


# --- the whole job --------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "jobs" / "reconstruct.py"
SEED = 5
ROWS_PER_FILE = 64


def make_catalog(
    folder: Path, objects: int, copies: int, views: int | tuple[int, int], image_size: int = 137
) -> None:
    """``objects`` procedural objects, written ``copies`` times under distinct ids
    (rendering is the slow part; decoding and inference cost the same for a
    copy). ``views`` is a count, or (low, high) drawn uniformly per object."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    import shapes

    rng = np.random.default_rng(SEED)
    most = views if isinstance(views, int) else views[1]
    base = []
    for i in range(objects):
        row = shapes.generate_object(SEED, i, views=most, image_size=image_size)
        n = most if isinstance(views, int) else int(rng.integers(views[0], views[1] + 1))
        base.append({"object_id": row["object_id"], "views": row["views"][:n]})
    rows = [dict(r, object_id=f"{r['object_id']}-copy{c:03d}") for c in range(copies) for r in base]
    folder.mkdir(parents=True, exist_ok=True)
    for f, start in enumerate(range(0, len(rows), ROWS_PER_FILE)):
        table = pa.Table.from_pylist(rows[start : start + ROWS_PER_FILE])
        pq.write_table(table, folder / f"part-{f:05d}.parquet")


def process_role(proc) -> str:
    import psutil

    try:
        line = " ".join(proc.cmdline())
    except psutil.Error:
        return "gone"
    if "MapWorker(MapBatches(Reconstruct))" in line:
        return "model actor"
    if line.startswith("ray::"):
        return "ray workers (read, decode, write, idle)"
    return "ray system (gcs, raylet, dashboard, ...)"


def run_job(
    catalog: Path, output: Path, batch: int, extra: list[str], interval: float = 0.5
) -> dict:
    """Run the job in its own process tree; sample the summed PSS of every
    process in it; end every process it leaves behind, by pid."""
    import subprocess

    import psutil

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log_path = output.with_suffix(".log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(JOB), "--input", str(catalog), "--output", str(output),
             "--batch-size", str(batch), *extra],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        root = psutil.Process(proc.pid)
        seen: dict[int, psutil.Process] = {}
        peak = {"total_mib": 0.0}
        started = time.monotonic()
        while proc.poll() is None:
            procs = [root]
            with contextlib.suppress(psutil.Error):
                procs += root.children(recursive=True)
            sample: dict[str, float] = {}
            total = 0.0
            for p in procs:
                seen.setdefault(p.pid, p)
                try:
                    mem = p.memory_full_info()
                except psutil.Error:
                    continue
                mib = getattr(mem, "pss", mem.rss) / 2**20
                role = "driver" if p.pid == proc.pid else process_role(p)
                sample[role] = sample.get(role, 0.0) + mib
                total += mib
            if total > peak["total_mib"]:
                peak = {"total_mib": total, "processes": len(procs), "by_role": sample}
            time.sleep(interval)
        wall = time.monotonic() - started
    for p in seen.values():  # normally gone already; end leftovers by pid
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                p.terminate()
                p.wait(10)
        except psutil.Error:
            pass
    if proc.returncode != 0:
        raise RuntimeError(f"the job exited {proc.returncode}; see {log_path}")
    summary = json.loads((output / "_SUCCESS").read_text())
    # Steady-state throughput from the commits: rows committed after the first
    # manifest over the time between the first and the last (the job's own
    # figure also holds Ray's start and two TensorFlow imports).
    manifests = sorted((output / "manifests").glob("*.parquet"), key=lambda m: m.stat().st_mtime)
    import pyarrow.parquet as pq

    rows = [pq.read_metadata(m).num_rows for m in manifests]
    span = manifests[-1].stat().st_mtime - manifests[0].stat().st_mtime
    steady = (sum(rows) - rows[0]) / span if span > 0 else None
    return {
        "rows": summary["rows_total"],
        "wall_s": round(wall, 2),
        "job_objects_per_s": summary["objects_per_s"],
        "objects_per_s": round(steady, 3) if steady else None,
        "peak_mib": round(peak["total_mib"], 1),
        "peak_processes": peak.get("processes"),
        "peak_by_role_mib": {k: round(v, 1) for k, v in sorted(peak.get("by_role", {}).items())},
    }


def model_only(catalog: Path, batch: int, cpus: float, model: str, runs: int) -> dict:
    """The Reconstructor alone on the catalog's decoded views: same batch size,
    same thread count as one actor (`configure_tensorflow(cpus)`), median of runs."""
    import pyarrow.parquet as pq

    from pipeline.decode import DecodeConfig, decode_views
    from pipeline.infer import InferConfig, load_reconstructor

    rec = load_reconstructor(InferConfig(model=model, image_size=0, batch_size=batch, cpus=cpus))
    config = DecodeConfig(image_size=rec.image_size)
    views = []
    for f in sorted(catalog.glob("*.parquet")):
        for row in pq.read_table(f, columns=["views"]).column("views").to_pylist():
            views.append(decode_views(row, config)[0])
    rec.warm_up()
    rec.predict(views[: batch * 2])
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        rec.predict(views)
        times.append(time.perf_counter() - t)
    return {
        "objects": len(views),
        "objects_per_s": round(len(views) / statistics.median(times), 3),
        "views": [int(v.shape[0]) for v in views],
        "model": rec.model_id,
    }


def job_args(args: argparse.Namespace) -> list[str]:
    extra = ["--actors", "1", "--cpus-per-actor", str(args.cpus_per_actor)]
    extra += ["--rows-per-block", str(args.rows_per_block)]
    # Shards small enough that their commit times trace the run's speed.
    extra += ["--rows-per-shard", str(args.rows_per_shard)]
    return extra + (["--model", args.model] if args.model else [])


def bench_pipeline(args: argparse.Namespace) -> dict:
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="voxray-bench-"))
    results = {}
    for scale in (1, 10):
        catalog = work / f"catalog-x{scale}"
        make_catalog(catalog, args.objects, scale, args.views)
        results[scale] = run_job(catalog, work / f"out-x{scale}", args.batch, job_args(args))
        print(f"x{scale}: {json.dumps(results[scale])}", file=sys.stderr, flush=True)
    # The model alone on the 10N catalog's views (the run whose speed we report).
    alone = model_only(work / "catalog-x10", args.batch, args.cpus_per_actor, args.model, args.runs)
    small, big = results[1], results[10]
    return {
        "objects": [small["rows"], big["rows"]],
        "views": args.views,
        "batch": args.batch,
        "objects_per_s": big["objects_per_s"],
        "model_only_objects_per_s": alone["objects_per_s"],
        # None when the 10N run committed a single shard (no commit times to time it by)
        "pipeline_efficiency": round(big["objects_per_s"] / alone["objects_per_s"], 3)
        if big["objects_per_s"]
        else None,
        "job_objects_per_s": [small["job_objects_per_s"], big["job_objects_per_s"]],
        "wall_s": [small["wall_s"], big["wall_s"]],
        "peak_mib": [small["peak_mib"], big["peak_mib"]],
        "memory_ratio_10x": round(big["peak_mib"] / small["peak_mib"], 3),
        "peak_processes": [small["peak_processes"], big["peak_processes"]],
        "peak_by_role_mib": [small["peak_by_role_mib"], big["peak_by_role_mib"]],
        "model": alone["model"],
        "work_dir": str(work),
    }


def bench_views(args: argparse.Namespace) -> dict:
    """Mixed view counts (1..24, uniform) against FLOP-proportional 5-view speed."""
    import tempfile

    import numpy as np

    from model import Reconstructor
    from model.flops import count_flops

    work = Path(tempfile.mkdtemp(prefix="voxray-bench-"))
    uniform, mixed = work / "catalog-5", work / "catalog-mixed"
    make_catalog(uniform, args.objects, 1, 5)
    make_catalog(mixed, args.objects, 1, (1, 24))
    five = run_job(uniform, work / "out-5", args.batch, job_args(args))
    many = run_job(mixed, work / "out-mixed", args.batch, job_args(args))
    import pyarrow.parquet as pq

    counts = [
        len(v)
        for f in sorted(mixed.glob("*.parquet"))
        for v in pq.read_table(f, columns=["views"]).column("views").to_pylist()
    ]
    net = (Reconstructor(args.model or None)).model
    per_views = {n: count_flops(net, 1, n) for n in sorted(set(counts) | {5})}
    mean_flops = float(np.mean([per_views[n] for n in counts]))
    expected = five["objects_per_s"] * per_views[5] / mean_flops
    return {
        "objects": args.objects,
        "batch": args.batch,
        "uniform5_objects_per_s": five["objects_per_s"],
        "mixed_objects_per_s": many["objects_per_s"],
        "mean_views_mixed": round(float(np.mean(counts)), 2),
        "gflops_5_views": round(per_views[5] / 1e9, 3),
        "mean_gflops_mixed": round(mean_flops / 1e9, 3),
        "flop_proportional_objects_per_s": round(expected, 3),
        "mixed_vs_flop_proportional": round(many["objects_per_s"] / expected, 3),
        "work_dir": str(work),
    }


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
    for name, text in (
        ("pipeline", "the whole job at N and 10N objects: speed, memory, vs the model alone"),
        ("views", "the job on 1..24 views per object vs FLOP-proportional 5-view speed"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--objects", type=int, default=48, help="N")
        p.add_argument("--batch", type=int, default=16)
        p.add_argument("--cpus-per-actor", type=float, default=1.0)
        p.add_argument("--rows-per-block", type=int, default=64)
        p.add_argument("--rows-per-shard", type=int, default=64)
        p.add_argument("--model", default="", help="a .keras file; default: shipped weights")
        p.add_argument("--runs", type=int, default=5, help="model-only timed runs (median)")
        p.add_argument("--json", action="store_true", help="last line printed is JSON")
        if name == "pipeline":
            p.add_argument("--views", type=int, default=5, help="views per object")
    args = parser.parse_args(argv)
    if args.what == "model":
        if args.runs < 5:
            parser.error("--runs must be at least 5 for a meaningful median")
        result = bench_model(args)
    elif args.what == "pipeline":
        result = bench_pipeline(args)
    else:
        result = bench_views(args)
    for k, v in result.items():
        print(f"{k:>24}: {v}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
