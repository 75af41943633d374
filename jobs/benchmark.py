"""Benchmarks of voxray: the model alone (`model`), training steps (`train`),
the whole job (`pipeline`), mixed view counts (`views`), image decoding per
core (`decode`), good views flagged as carrying no picture (`flags`), what
resume, the index and grid reads cost with N rows committed (`scale`), and the
input pre-flight over many files (`scan`).

Speed targets are checked here, never in timed unit tests: the machines are
shared and noisy, so every figure is a median of repeated runs, and ratios
are measured side by side in one run.

    python jobs/benchmark.py model --preset res3d-gru-3 --views 5 --batch 8 --precision fp32
    python jobs/benchmark.py train --preset res3d-gru-3 --batch 24 --precision bf16 --json
    python jobs/benchmark.py pipeline --objects 200 --json
    python jobs/benchmark.py views --objects 200 --json
    python jobs/benchmark.py decode --json
    python jobs/benchmark.py flags --json
    python jobs/benchmark.py scale --committed 10000000 [--s3] --json
    python jobs/benchmark.py scan --files 10000 [--s3] [--groups 5000 --compare OLD] --json

`pipeline` runs the whole job (`jobs/reconstruct.py`, its own local Ray) on N
procedural objects and on 10N (the same objects copied), each `--repeats`
times, interleaved. The job's steady-state speed is the 9N extra objects over
the extra wall time (medians): fixed costs (Ray's start, TensorFlow imports,
the model's load and warm-up) cancel, everything per object stays in. The
memory of every process of the job (driver, Ray's own processes, every
worker) is sampled throughout; the peak at 10N over the peak at N shows
whether memory grows with the data. Then the Reconstructor alone, loaded as
the actor loads it, runs on the same decoded views: `pipeline_efficiency` is
the job's steady-state objects/s over the model's alone.
`views` measures the same two speeds on objects with 1 to 24 views (uniform)
and on 5-view objects, and compares each with what the model's FLOPs predict.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from io import BytesIO
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


def _preset_net(args: argparse.Namespace):
    """The benchmarked network: `--preset`, at `--image-size` when given."""
    from model import build

    return build(args.preset, **({"image_size": args.image_size} if args.image_size else {}))


def bench_model(args: argparse.Namespace) -> dict:
    import numpy as np

    from model import Reconstructor
    from model.flops import count_flops

    net = _preset_net(args)
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
        "image_size": s,
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


def bench_train(args: argparse.Namespace) -> dict:
    """Training steps per second on random views and voxels: the step of
    `jobs/train.py` (the same function), batch B, each object with 1..5 views
    drawn with a fixed seed (the recipe's mean of 3), Adam, fp32 or bf16."""
    import keras
    import numpy as np
    import tensorflow as tf

    from model import with_precision
    from model.reconstructor import pack_views
    from model.training import make_train_step
    from model.voxels import GRID

    keras.utils.set_random_seed(0)
    net = with_precision(_preset_net(args), args.precision)
    step = make_train_step(net, keras.optimizers.Adam(1e-4))
    s = net.input["views"].shape[1]
    rng = np.random.default_rng(0)
    views, index = pack_views(
        [rng.integers(0, 256, (int(k), s, s, 3), np.uint8) for k in rng.integers(1, 6, args.batch)]
    )
    voxels = rng.integers(0, 2, (args.batch, *GRID)).astype(np.int32)
    for _ in range(args.warmup):
        step(views, index, voxels)[0].numpy()
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        step(views, index, voxels)[0].numpy()
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    return {
        "preset": args.preset,
        "image_size": s,
        "batch": args.batch,
        "views_in_batch": int(len(views)),
        "precision": args.precision,
        "device": "GPU" if tf.config.list_logical_devices("GPU") else "CPU",
        "runs": args.runs,
        "median_s_per_step": round(median, 4),
        "steps_per_s": round(1 / median, 3),
        "objects_per_s": round(args.batch / median, 2),
    }


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


def catalog_views(folder: Path) -> list[list[bytes]]:
    """The ``views`` column of every row of a local catalog, file by file."""
    import pyarrow.parquet as pq

    return [
        views
        for f in sorted(folder.rglob("*.parquet"))
        for views in pq.read_table(f, columns=["views"]).column("views").to_pylist()
    ]


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
    return {
        "rows": summary["rows_total"],
        "wall_s": round(wall, 2),
        "job_objects_per_s": summary["objects_per_s"],
        "peak_mib": round(peak["total_mib"], 1),
        "peak_processes": peak.get("processes"),
        "peak_by_role_mib": {k: round(v, 1) for k, v in sorted(peak.get("by_role", {}).items())},
    }


def marginal_rate(
    catalogs: dict[int, Path], work: Path, args: argparse.Namespace, extra: list[str] | None = None
) -> dict:
    """The job's steady-state objects/s. The job runs on every catalog (scales 1 and k: the same
    objects copied k times) ``args.repeats`` times, interleaved (``extra``: the job's flags,
    default ``job_args(args)``); the big run's extra rows over its extra wall time (medians)
    is the rate. Ray's start, the TensorFlow imports, the model's load and warm-up, the
    pipeline filling and draining and the shut-down cost both runs the same and cancel;
    everything that grows with the rows (read, decode, inference, encode, write, commit, and
    Ray's work per task and per block) stays in. (Manifest commit times cannot stand in for
    this: Ray Data runs the writes late, so most rows are decoded and inferred before the
    first commit.)"""
    runs: dict[int, list[dict]] = {scale: [] for scale in catalogs}
    for r in range(args.repeats):
        for scale, catalog in catalogs.items():
            flags = job_args(args) if extra is None else extra
            result = run_job(catalog, work / f"{catalog.name}-run{r}", args.batch, flags)
            runs[scale].append(result)
            print(f"{catalog.name} run {r}: {json.dumps(result)}", file=sys.stderr, flush=True)
    small, big = min(runs), max(runs)
    rows = runs[big][0]["rows"] - runs[small][0]["rows"]

    extra_s = statistics.median(x["wall_s"] for x in runs[big]) - statistics.median(
        x["wall_s"] for x in runs[small]
    )
    return {
        # None: the noise in the fixed costs swallowed the extra work
        "objects_per_s": round(rows / extra_s, 3) if extra_s > 0 else None,
        "rows": [runs[small][0]["rows"], runs[big][0]["rows"]],
        "wall_s": [[x["wall_s"] for x in runs[s]] for s in (small, big)],
        "peak_mib": [max(x["peak_mib"] for x in runs[s]) for s in (small, big)],
        "peak_processes": [max(x["peak_processes"] or 0 for x in runs[s]) for s in (small, big)],
        "peak_by_role_mib": [
            max(runs[s], key=lambda x: x["peak_mib"])["peak_by_role_mib"] for s in (small, big)
        ],
    }


def model_only(catalog: Path, args: argparse.Namespace) -> dict:
    """The Reconstructor alone on the catalog's decoded views, as the job's actor
    holds it (`load_reconstructor`: same batch size, precision and thread
    count); median objects/s of ``args.runs`` passes over all of them."""
    from pipeline.decode import DecodeConfig, decode_views
    from pipeline.infer import InferConfig, load_reconstructor

    config = InferConfig(
        model=args.model, image_size=0, batch_size=args.batch, cpus=args.cpus_per_actor
    )
    rec = load_reconstructor(config)
    decode = DecodeConfig(image_size=rec.image_size)
    views = [decode_views(row, decode)[0] for row in catalog_views(catalog)]
    rec.warm_up()
    rec.predict(views[: args.batch * 2])
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        rec.predict(views)
        times.append(time.perf_counter() - t)
    import tensorflow as tf

    return {
        "objects": len(views),
        "objects_per_s": round(len(views) / statistics.median(times), 3),
        "precision": rec.precision,
        "threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "model": rec.model_id,
    }


def job_args(args: argparse.Namespace) -> list[str]:
    extra = ["--actors", "1", "--cpus-per-actor", str(args.cpus_per_actor)]
    extra += ["--rows-per-block", str(args.rows_per_block)]
    extra += ["--rows-per-shard", str(args.rows_per_shard)]
    return extra + (["--model", args.model] if args.model else [])


def bench_pipeline(args: argparse.Namespace) -> dict:
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="voxray-bench-"))
    catalogs = {}
    for scale in (1, 10):
        catalogs[scale] = work / f"catalog-x{scale}"
        make_catalog(catalogs[scale], args.objects, scale, args.views)
    job = marginal_rate(catalogs, work, args)
    # The 10N catalog is the N objects copied: the model sees the same batches.
    alone = model_only(catalogs[1], args)
    return {
        "objects": job["rows"],
        "views": args.views,
        "batch": args.batch,
        "objects_per_s": job["objects_per_s"],
        "model_only_objects_per_s": alone["objects_per_s"],
        "pipeline_efficiency": round(job["objects_per_s"] / alone["objects_per_s"], 3)
        if job["objects_per_s"]
        else None,
        "wall_s": job["wall_s"],
        "peak_mib": job["peak_mib"],
        "memory_ratio_10x": round(job["peak_mib"][1] / job["peak_mib"][0], 3),
        "peak_processes": job["peak_processes"],
        "peak_by_role_mib": job["peak_by_role_mib"],
        "precision": alone["precision"],
        "threads_per_actor": alone["threads"],
        "model": alone["model"],
        "work_dir": str(work),
    }


def bench_views(args: argparse.Namespace) -> dict:
    """Mixed view counts (1..24, uniform) against FLOP-proportional 5-view speed,
    for the whole job (steady state) and for the model alone."""
    import tempfile

    import numpy as np

    from model import Reconstructor
    from model.flops import count_flops

    work = Path(tempfile.mkdtemp(prefix="voxray-bench-"))
    catalogs: dict[str, dict[int, Path]] = {"5": {}, "mixed": {}}
    for name, views in (("5", 5), ("mixed", (1, 24))):
        for scale in (1, args.scale):
            catalogs[name][scale] = work / f"catalog-{name}-x{scale}"
            make_catalog(catalogs[name][scale], args.objects, scale, views)
    job = {name: marginal_rate(c, work, args) for name, c in catalogs.items()}
    alone = {name: model_only(c[1], args) for name, c in catalogs.items()}

    counts = [len(v) for v in catalog_views(catalogs["mixed"][1])]
    net = Reconstructor(args.model or None).model
    per_views = {n: count_flops(net, 1, n) for n in sorted(set(counts) | {5})}
    # objects/s at a fixed FLOP rate goes as 1 / (mean FLOPs per object)
    flop_factor = per_views[5] / float(np.mean([per_views[n] for n in counts]))

    def compare(five: float | None, mixed: float | None) -> dict:
        if not five or not mixed:
            return {"uniform5_objects_per_s": five, "mixed_objects_per_s": mixed}
        return {
            "uniform5_objects_per_s": five,
            "mixed_objects_per_s": mixed,
            "flop_proportional_objects_per_s": round(five * flop_factor, 3),
            "mixed_vs_flop_proportional": round(mixed / (five * flop_factor), 3),
        }

    return {
        "objects": args.objects,
        "scale": args.scale,
        "batch": args.batch,
        "mean_views_mixed": round(float(np.mean(counts)), 2),
        "gflops_5_views": round(per_views[5] / 1e9, 3),
        "mean_gflops_mixed": round(per_views[5] / flop_factor / 1e9, 3),
        "job": compare(job["5"]["objects_per_s"], job["mixed"]["objects_per_s"]),
        "model_only": compare(alone["5"]["objects_per_s"], alone["mixed"]["objects_per_s"]),
        "wall_s": {name: j["wall_s"] for name, j in job.items()},
        "precision": alone["5"]["precision"],
        "work_dir": str(work),
    }


def bench_decode(args: argparse.Namespace) -> dict:
    """Views decoded per second on one core, as a decode task does it (PNG or
    JPEG to the model's input: composite, centre crop, resize), for sizing the
    CPUs that feed an actor. Median of ``args.runs`` passes.

    With ``--kinds``, photo-like catalogs of those kinds (``shapes.photos``,
    cached under ``--cache``) instead: CPU ms per view at each size, of the job's
    decode and of the one it had before issue 18 (``legacy_model_input``),
    interleaved run by run. With ``--quality``, the IoU check of
    :func:`decode_quality` as well."""
    import tempfile

    from pipeline.decode import DecodeConfig, decode_views

    if args.kinds or args.quality:
        return bench_decode_kinds(args)
    if args.catalog:
        folder = Path(args.catalog)
    else:
        folder = Path(tempfile.mkdtemp(prefix="voxray-bench-")) / "catalog"
        make_catalog(folder, args.objects, 1, args.views)
    rows = catalog_views(folder)[: args.objects]
    n_views = sum(len(r) for r in rows)
    result: dict = {"objects": len(rows), "views": n_views}
    for size in args.sizes:
        config = DecodeConfig(image_size=size)
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            for r in rows:
                decode_views(r, config)
            times.append(time.perf_counter() - t)
        result[f"views_per_s_{size}px"] = round(n_views / statistics.median(times), 1)
    return result


def held_out_catalog(cache: Path, objects: int, seed: int, views: int = 24) -> Path:
    """The held-out set's rows (``shapes.generate_object(seed, i)``, what
    ``jobs/make_dataset.py --objects N --seed S`` writes, views only), written
    once under ``cache`` on every core."""
    import shutil
    from concurrent.futures import ProcessPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(cache) / f"held-out-n{objects}-v{views}-s{seed}"
    if folder.is_dir():
        return folder
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    starts = list(range(0, objects, ROWS_PER_FILE))
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        chunks = pool.map(
            _held_out_rows,
            [(seed, range(s, min(s + ROWS_PER_FILE, objects)), views) for s in starts],
        )
        for f, rows in enumerate(chunks):
            pq.write_table(pa.Table.from_pylist(rows), partial / f"part-{f:05d}.parquet")
    try:
        partial.rename(folder)
    except OSError:  # another process wrote it first: the same bytes
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def _held_out_rows(task: tuple) -> list[dict]:
    import shapes

    seed, indices, views = task
    return [
        {k: v for k, v in shapes.generate_object(seed, i, views=views).items() if k != "cameras"}
        for i in indices
    ]


def bench_flags(args: argparse.Namespace) -> dict:
    """Views of good data that the decode stage would drop as carrying no
    picture (``model.images.view_problem``, ``NoPicture``): every view of the
    held-out set (``--held-out`` objects of seed ``--seed``, 24 views each) and
    of the ``--kinds`` photo catalogs, at each ``--sizes``. The thresholds are
    right when every count is 0; the smallest object fraction and the largest
    noise ratio seen show the margin to them."""
    import tempfile

    import numpy as np

    from model.images import (
        MAX_NOISE_RATIO,
        MIN_OBJECT_FRACTION,
        DecodeError,
        read_model_input,
        view_measures,
        view_problem,
    )

    cache = Path(args.cache or Path(tempfile.gettempdir()) / "voxray-photos")
    folders = {"held-out": held_out_catalog(cache, args.held_out, args.seed)}
    for kind in [k for k in args.kinds.split(",") if k]:
        folders[kind] = photo_catalog(cache, kind, args.objects, args.views)
    result: dict = {
        "thresholds": {
            "min_object_fraction": MIN_OBJECT_FRACTION,
            "max_noise_ratio": MAX_NOISE_RATIO,
        }
    }
    for name, folder in folders.items():
        views = [v for r in catalog_views(folder) for v in r]
        for size in args.sizes:
            flagged, fractions, ratios, reasons = 0, [], [], []
            for data in views:
                try:
                    view = read_model_input(data, size)
                except DecodeError as exc:
                    flagged += 1
                    reasons.append(str(exc))
                    continue
                fraction, ratio = view_measures(view)
                fractions.append(fraction)
                ratios.append(ratio)
                if (problem := view_problem(view)) is not None:
                    flagged += 1
                    reasons.append(problem)
            result[f"{name}@{size}"] = {
                "views": len(views),
                "flagged": flagged,
                "false_flag_rate": flagged / len(views),
                "min_object_fraction": round(float(np.min(fractions)), 4),
                "max_noise_ratio": round(float(np.max(ratios)), 3),
                "reasons": reasons[:3],
            }
    return result


def legacy_model_input(data: bytes, size: int):
    """The job's per-view decode before issue 18, kept here only to measure
    against (square images): the whole image decoded to RGBA, every pixel of
    the crop composited over 240, one LANCZOS from full size."""
    import numpy as np
    from PIL import Image

    from model.images import CROP_FRACTION, TEST_BACKGROUND, read_rgba

    rgba = read_rgba(data)
    side = rgba.shape[0]
    if rgba.shape[1] != side:
        raise ValueError("legacy_model_input measures square images only")
    crop = max(1, min(side, int(round(side * CROP_FRACTION))))
    at = int(round((side - crop) * 0.5))
    image = Image.fromarray(np.ascontiguousarray(rgba[at : at + crop, at : at + crop]))
    backdrop = Image.new("RGBA", image.size, (*TEST_BACKGROUND, 255))
    rgb = Image.alpha_composite(backdrop, image).convert("RGB")
    if crop != size:
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=None)
    return np.asarray(rgb)


def photo_catalog(
    cache: Path, kind: str, objects: int, views: int | tuple[int, int] = 5, seed: int = SEED
) -> Path:
    """A ``shapes.photos`` catalog, written once under ``cache`` (into a temporary
    folder renamed when complete, so a folder that exists is whole)."""
    import shutil

    from shapes.photos import write_catalog

    low, high = (views, views) if isinstance(views, int) else views
    folder = Path(cache) / f"{kind}-n{objects}-v{low}-{high}-s{seed}"
    if not folder.is_dir():
        partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        write_catalog(partial, kind, objects, views, seed=seed, rows_per_file=ROWS_PER_FILE)
        try:
            partial.rename(folder)
        except OSError:  # another process wrote the same catalog first: the same bytes
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def _first_views(folder: Path, limit: int) -> list[list[bytes]]:
    """Whole rows of the catalog holding at least ``limit`` views (or all)."""
    rows, n = [], 0
    for r in catalog_views(folder):
        if n >= limit:
            break
        rows.append(r)
        n += len(r)
    return rows


def _cpu_ms_per_view(decode_row, rows: list[list[bytes]], min_s: float = 0.3) -> float:
    """CPU ms per view of ``decode_row`` over ``rows``, passes repeated until
    ``min_s`` of CPU time (a pass over 100 small PNGs is too short to time)."""
    n = sum(len(r) for r in rows)
    passes, start = 0, time.process_time()
    while True:
        for r in rows:
            decode_row(r)
        passes += 1
        spent = time.process_time() - start
        if spent >= min_s:
            return 1000 * spent / (passes * n)


def decode_ms_per_view(folder: Path, image_size: int, runs: int = 3, limit: int = 100) -> float:
    """CPU ms per view of the job's decode (``pipeline.decode.decode_views``) on
    the first ``limit`` views (whole rows) of a local catalog at ``image_size``:
    the median of ``runs`` timings, on one core."""
    from pipeline.decode import DecodeConfig, decode_views

    rows = _first_views(folder, limit)
    config = DecodeConfig(image_size=image_size)
    return statistics.median(
        _cpu_ms_per_view(lambda r: decode_views(r, config), rows) for _ in range(runs)
    )


def _legacy_ms_per_view(folder: Path, image_size: int, limit: int) -> float:
    rows = _first_views(folder, limit)
    return _cpu_ms_per_view(lambda r: [legacy_model_input(v, image_size) for v in r], rows)


def bench_decode_kinds(args: argparse.Namespace) -> dict:
    """``decode --kinds/--quality``: the old and the new decode side by side."""
    import tempfile

    cache = Path(args.cache or Path(tempfile.gettempdir()) / "voxray-photos")
    kinds = [k for k in args.kinds.split(",") if k]
    result: dict = {"cache": str(cache)}
    if kinds:
        result.update(objects=args.objects, views_per_object=args.views)
    ms: dict = {}
    for kind in kinds:
        t = time.process_time()  # of writing the catalog (0 when cached): one process
        folder = photo_catalog(cache, kind, args.objects, args.views)
        rows = _first_views(folder, args.limit)
        views = [v for r in rows for v in r]
        ms[kind] = {
            "views_timed": len(views),
            "kb_per_view": round(sum(map(len, views)) / len(views) / 1024, 1),
            "catalog_cpu_s": round(time.process_time() - t, 1),
        }
        for size in args.sizes:
            old, new = [], []
            for _ in range(args.runs):  # interleaved: both see the same machine
                old.append(_legacy_ms_per_view(folder, size, args.limit))
                new.append(decode_ms_per_view(folder, size, runs=1, limit=args.limit))
            o, n = statistics.median(old), statistics.median(new)
            ms[kind][str(size)] = {
                "old_ms": round(o, 2),
                "new_ms": round(n, 2),
                "ratio": round(o / n, 2),
            }
    if kinds:
        result["ms_per_view"] = ms
        result["decode_ms_per_view"] = {
            k: {s: v[s]["new_ms"] for s in map(str, args.sizes)} for k, v in ms.items()
        }
    if args.quality:
        result["quality"] = decode_quality(cache, args.quality_objects, args.views)
    return result


def decode_quality(cache: Path, objects: int, views: int = 5) -> dict:
    """The IoU of the shipped model on the first ``objects`` held-out objects
    (seed 3003, the model card's test set; ``views`` cameras each, drawn as
    ``shapes.photos`` draws them), decoded by the job's old and new paths:
    from the 137 px renders (``png137``) and from 1024 px studio JPEGs of the
    same objects (``jpeg1024``). IoU@0.4 with the first view and with all."""
    import numpy as np

    from model import Reconstructor, devices
    from model.images import read_model_input
    from model.voxels import THRESHOLD, iou, unpack_voxels

    devices.configure()
    rec = Reconstructor(None, precision="fp32")
    size = rec.image_size
    out: dict = {"objects": objects, "views": views, "model": rec.model_id, "image_size": size}
    scores: dict = {}
    pixels: dict = {}
    for kind in ("png137", "jpeg1024"):
        folder = photo_catalog(cache, kind, objects, views, seed=3003)
        import pyarrow.parquet as pq

        table = pq.read_table(folder, columns=["views", "voxels"])
        truth = np.stack([unpack_voxels(v) for v in table.column("voxels").to_pylist()])
        rows = table.column("views").to_pylist()
        for path, decode in (("old", legacy_model_input), ("new", read_model_input)):
            decoded = [np.stack([decode(v, size) for v in r]) for r in rows]
            pixels[kind, path] = decoded
            for n in (1, views):
                probs = rec.predict([d[:n] for d in decoded])
                scores[kind, path, n] = iou(probs >= THRESHOLD, truth)
    out["iou"] = {
        f"{kind}_{path}": {
            str(n): round(float(scores[kind, path, n].mean()), 4) for n in (1, views)
        }
        for kind in ("png137", "jpeg1024")
        for path in ("old", "new")
    }

    def delta(a: tuple, b: tuple) -> dict:
        return {
            str(n): round(float((scores[(*a, n)] - scores[(*b, n)]).mean()), 4) for n in (1, views)
        }

    out["held_out_new_minus_old"] = delta(("png137", "new"), ("png137", "old"))
    out["jpeg1024_new_minus_png137_new"] = delta(("jpeg1024", "new"), ("png137", "new"))
    out["jpeg1024_new_minus_old"] = delta(("jpeg1024", "new"), ("jpeg1024", "old"))
    out["png137_pixels_identical"] = all(
        np.array_equal(a, b)
        for a, b in zip(pixels["png137", "old"], pixels["png137", "new"], strict=True)
    )
    out["jpeg1024_mean_abs_pixel_diff"] = round(
        float(
            np.mean(
                [
                    np.abs(a.astype(np.int16) - b).mean()
                    for a, b in zip(
                        pixels["jpeg1024", "old"], pixels["jpeg1024", "new"], strict=True
                    )
                ]
            )
        ),
        3,
    )
    return out


# --- feeding the accelerator ------------------------------------------------------------

# One H200 as the stand-in models it: a sustained 200 TFLOP/s on the model's
# convolutions (about a fifth of its dense bf16 peak; the figure docs/ and
# DESIGN.md plan with) and 0.1 ms per call for launches and the copies. An
# assumption, not a measurement: no GPU was measured (docs/benchmarks.md).
H200_FLOPS = 200e12
H200_CALL_MS = 0.1
FEED_PRESETS = ("compact-wide", "res3d-gru-3")
FEED_KINDS = ("png137", "jpeg300", "jpeg1024", "jpeg2048")


def h200_latency(preset: str, views: int = 5) -> dict:
    """The stand-in's latency for ``preset`` on one H200 (see ``H200_FLOPS``):
    FLOPs per object from the network itself (``model.flops``)."""
    from model import build
    from model.flops import count_flops

    net = build(preset)
    flops = count_flops(net, 1, views)
    size = int(net.input["views"].shape[1])
    per_object_us = round(flops / H200_FLOPS * 1e6, 3)
    return {
        "image_size": size,
        "gflops_per_object": round(flops / 1e9, 3),
        "per_object_us": per_object_us,
        "latency_ms": H200_CALL_MS,
        # the --stand-in value that waits as this preset would on one H200
        "spec": f"image_size={size},latency_ms={H200_CALL_MS},per_object_us={per_object_us}",
    }


def copied_catalog(folder: Path, into: Path, copies: int) -> Path:
    """A catalog's rows ``copies`` times under new ids (same photos)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    into.mkdir(parents=True, exist_ok=True)
    for f in sorted(folder.rglob("*.parquet")):
        table = pq.read_table(f)
        ids = table.column("object_id")
        for c in range(copies):
            named = pc.binary_join_element_wise(ids, pa.scalar(f"-copy{c}"), "")
            pq.write_table(table.set_column(0, "object_id", named), into / f"c{c}-{f.name}")
    return into


def decoded_block(folder: Path, image_size: int, rows: int):
    """The decode stage's output for the first ``rows`` rows of a catalog, as
    the actor receives it (one Arrow table), repeated to ``rows`` when the
    catalog is smaller."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.decode import DecodeConfig, decode_batch

    tables, have = [], 0
    for f in sorted(folder.rglob("*.parquet")):
        # no ground truth, as in a real catalog (the actor's IoU work is then skipped)
        tables.append(pq.read_table(f, columns=["object_id", "views"]))
        have += tables[-1].num_rows
        if have >= rows:
            break
    table = pa.concat_tables(tables)
    table = pa.concat_tables([table] * -(-rows // table.num_rows)).slice(0, rows)
    return decode_batch(table, DecodeConfig(image_size=image_size)).combine_chunks()


def actor_host_us(block, image_size: int, batch: int, calls: int = 15) -> float:
    """CPU µs per object of the model actor's own work (the stand-in's wait is
    zero and it does no work but pick a grid): its thread's CPU time per call
    over a block of rows, median of ``calls``, in this process without Ray."""
    from pipeline.infer import InferConfig, Reconstruct

    spec = f"image_size={image_size}"
    actor = Reconstruct(
        InferConfig(model="", image_size=image_size, batch_size=batch, stand_in=spec)
    )
    actor(block)
    times = []
    for _ in range(calls):
        t = time.thread_time()
        actor(block)
        times.append(time.thread_time() - t)
    return statistics.median(times) / block.num_rows * 1e6


def feed_actor(block, image_size: int, batch: int, spec: str, blocks: int) -> dict:
    """One model actor with the stand-in, fed by Ray Data from blocks already
    decoded (the same block ``blocks`` times, from the object store: decoding is
    not the limit), its grids pulled back as the sink would pull them. Rate
    over the steady state (first output to last); the actor's own figures from
    the stats actor (busy fraction, host CPU per object, messages)."""
    import ray
    import ray.data

    from pipeline import cluster, progress
    from pipeline.infer import InferConfig, Reconstruct

    ref = ray.put(block)
    stats = progress.start()
    config = InferConfig(
        model="", image_size=image_size, batch_size=batch, stand_in=spec, stats=stats
    )
    ds = ray.data.from_arrow_refs([ref] * blocks).map_batches(
        Reconstruct,
        fn_constructor_kwargs={"config": config},
        compute=ray.data.ActorPoolStrategy(size=1, max_concurrent_calls_per_actor=2),
        batch_size=max(batch, block.num_rows),
        batch_format="pyarrow",
        num_cpus=1,
        memory=cluster.ACTOR_MEMORY // 4,
    )
    first, rows, seen = None, 0, 0
    for out in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        if first is None:
            first = time.perf_counter()
        else:
            rows += out.num_rows
        seen += out.num_rows
    elapsed = time.perf_counter() - first
    deadline = time.monotonic() + 5  # the actor's last beat follows its last call
    while time.monotonic() < deadline:
        snap = progress.snapshot(stats)
        if snap["actors"]["rows"] >= seen:
            break
        time.sleep(0.2)
    ray.kill(stats)
    return {
        "objects_per_s": round(rows / elapsed, 1) if elapsed > 0 else None,
        "busy_fraction": snap["actors"]["busy_fraction"],
        "host_us_per_object": snap["actors"]["host_us_per_object"],
        "stats_messages_per_block": round(snap["messages"] / max(1, snap["actors"]["calls"]), 3),
        "blocks": snap["actors"]["calls"],
    }


def stats_load(actors: int = 64, seconds: float = 5.0, calls_per_s: float = 20.0) -> dict:
    """The stats actor's load with ``actors`` simulated model actors, each
    finishing ``calls_per_s`` batches a second for ``seconds``: through its own
    Beat (as an actor does now), and with the two messages per batch an actor
    used to send (started, finished). Messages sent per second, how long after
    the last batch the stats actor had worked through them (0: it kept up), and
    the share of one core it spent."""
    import threading

    import ray

    from pipeline import progress

    def run(scheme: str) -> dict:
        stats = progress.start()
        ray.get([stats.register.remote(f"a{i}", None, "simulated") for i in range(actors)])
        before = ray.get(stats.usage.remote())
        started = time.monotonic()
        stop = started + seconds
        beats = [progress.Beat(stats, f"a{i}", lambda: 0.0, keepalive=60.0) for i in range(actors)]
        sent = [0] * actors

        def actor(i: int) -> None:
            beat, k = beats[i], 0
            while time.monotonic() < stop:
                if scheme == "beat":
                    beat.end(beat.begin(), 256)
                else:  # the old protocol's two messages per batch
                    progress.tell(stats, "beat", f"a{i}", {"calls": k})
                    progress.tell(stats, "beat", f"a{i}", {"calls": k + 1})
                    sent[i] += 2
                k += 1
                time.sleep(1.0 / calls_per_s)

        threads = [threading.Thread(target=actor, args=(i,)) for i in range(actors)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(2 * progress.BEAT_SECONDS)  # the beats' last messages
        after = ray.get(stats.usage.remote(), timeout=600)  # queued behind every message
        drained = time.monotonic() - stop - 2 * progress.BEAT_SECONDS
        ray.kill(stats)
        messages = after["messages"] - before["messages"]
        busy_s = time.monotonic() - started
        return {
            "messages_per_s": round(messages / seconds, 1),
            "drained_after_s": round(max(0.0, drained), 2),
            "stats_actor_core_share": round((after["cpu_s"] - before["cpu_s"]) / busy_s, 4),
        }

    return {
        "actors": actors,
        "batches_per_s": actors * calls_per_s,
        "beat": run("beat"),
        "two_per_batch": run("old"),
    }


def bench_feed(args: argparse.Namespace) -> dict:
    """What the pipeline can feed an accelerator, with the stand-in device in
    place of the model (``--stand-in``): the actor's host work, one actor fed
    pre-decoded blocks at zero latency and at one H200's latency per preset,
    decode per view on real-photo catalogs, the whole job end to end, and the
    stats actor under 64 simulated actors."""
    import tempfile

    import ray

    from model.defaults import GPU_BATCH_SIZE

    work = Path(tempfile.mkdtemp(prefix="voxray-feed-"))
    cache = Path(args.cache or Path(tempfile.gettempdir()) / "voxray-photos")
    catalogs = {k: photo_catalog(cache, k, args.objects, args.views) for k in args.kinds}
    base = catalogs.get("png137") or next(iter(catalogs.values()))
    result: dict = {"objects": args.objects, "views": args.views, "batch": args.batch}

    latencies = {p: h200_latency(p, args.views) for p in FEED_PRESETS}
    result["h200_assumption"] = {
        "flops_per_s": H200_FLOPS,
        "call_ms": H200_CALL_MS,
        "presets": latencies,
    }
    blocks = {s: decoded_block(base, s, args.block_rows) for s in (64, 127)}
    # the actor's own code per object (its __call__, in this process, no Ray)
    result["actor_call_us_per_object"] = {
        str(s): round(actor_host_us(b, s, args.batch), 1) for s, b in blocks.items()
    }
    result["actor_call_us_per_object_batch16"] = {
        str(s): round(actor_host_us(b, s, 16), 1) for s, b in blocks.items()
    }
    result["decode_ms_per_view"] = {
        k: round(decode_ms_per_view(folder, 64, runs=3, limit=args.decode_objects), 3)
        for k, folder in catalogs.items()
    }
    result["decode_ms_per_view_127"] = {
        k: round(decode_ms_per_view(folder, 127, runs=3, limit=args.decode_objects), 3)
        for k, folder in catalogs.items()
    }
    print(json.dumps(result), file=sys.stderr, flush=True)  # partial: what is measured so far
    result["decode_objects_per_s_per_core"] = {
        k: round(1000.0 / (ms * args.views), 1) for k, ms in result["decode_ms_per_view"].items()
    }

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})  # fmt: skip
    try:
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
        zero = {
            str(size): feed_actor(block, size, args.batch, f"image_size={size}", args.feed_blocks)
            for size, block in blocks.items()
        }
        result["zero_latency_objects_per_s"] = zero["64"]["objects_per_s"]
        result["zero_latency"] = zero
        # everything in the actor's process per object (Ray Data's share too)
        result["actor_host_us_per_object"] = {s: z["host_us_per_object"] for s, z in zero.items()}

        def h200_feeds(batch: int) -> dict:
            feeds = {}
            for preset, lat in latencies.items():
                size = lat["image_size"]
                feeds[preset] = feed_actor(blocks[size], size, batch, lat["spec"], args.feed_blocks)
            return feeds

        busy = h200_feeds(args.batch)
        result["h200_feed"] = busy
        result["busy_fraction"] = {p: b["busy_fraction"] for p, b in busy.items()}
        # the reason for the GPU default: the same feeds at the CPU's batch size
        small = h200_feeds(16)
        result["h200_feed_batch16"] = small
        result["stats_load"] = stats_load()
        print(json.dumps(result), file=sys.stderr, flush=True)
    finally:
        ray.shutdown()

    spec = latencies["compact-wide"]["spec"]
    # Calls of 32 rows: the actor's window from its first call to its last is the
    # stream's steady state (startup, model load and the last commits left out).
    rows = str(args.job_block_rows)
    extra = ["--stand-in", spec, "--actors", "1", "--rows-per-block", rows]
    extra += ["--rows-per-shard", rows]
    jobs = {}
    for kind, folder in catalogs.items():
        catalog = copied_catalog(folder, work / f"{kind}-x3", 3)
        try:
            run = run_job(catalog, work / f"job-{kind}", args.job_block_rows, extra)
        except RuntimeError as exc:  # one catalog's failure leaves the others' figures
            jobs[kind] = {"error": str(exc)}
            continue
        actors = json.loads((work / f"job-{kind}" / "_SUCCESS").read_text()).get("actors", {})
        jobs[kind] = {
            "rows": run["rows"],
            "wall_s": run["wall_s"],
            "objects_per_s": round(actors["rows"] / actors["active_s"], 1)
            if actors.get("active_s")
            else None,
            "actor_calls": actors.get("calls"),
            "busy_fraction": actors.get("busy_fraction"),
        }
        print(f"job {kind}: {json.dumps(jobs[kind])}", file=sys.stderr, flush=True)
    result["job"] = jobs
    headline = jobs.get("png137") or next(iter(jobs.values()))
    result["objects_per_s"] = headline.get("objects_per_s")
    result["stats_messages_per_block"] = result["zero_latency"]["64"]["stats_messages_per_block"]
    result["gpu_batch_size"] = GPU_BATCH_SIZE
    result["work_dir"] = str(work)
    return result


def bench_grouping(args: argparse.Namespace) -> dict:
    """Grouping by view count, measured: the same block of objects with 1..24
    views (uniform) through the model in calls of ``--batch`` objects, three
    ways: in input order (each call runs as many recurrence steps as its
    most-viewed object, as when a Ray batch was one model call), sorted by view
    count (calls mix neighbouring counts), and grouped by exact count (the
    actor's way: no masked step, some calls smaller). Median of ``--runs``."""
    import numpy as np

    from model import Reconstructor
    from model.voxels import threshold_level

    rec = Reconstructor(args.model or None, batch_size=args.batch)
    s, rng = rec.image_size, np.random.default_rng(SEED)
    counts = rng.integers(1, 25, args.objects)
    views = [rng.integers(0, 256, (int(n), s, s, 3), np.uint8) for n in counts]
    level = threshold_level()

    def in_order(order: np.ndarray) -> list[np.ndarray]:
        return [order[i : i + args.batch] for i in range(0, len(order), args.batch)]

    def by_count() -> list[np.ndarray]:
        order = np.argsort(counts, kind="stable")
        runs = np.split(order, np.flatnonzero(np.diff(counts[order])) + 1)
        return [r[i : i + args.batch] for r in runs for i in range(0, len(r), args.batch)]

    plans = {
        "input_order": in_order(np.arange(len(counts))),
        "sorted": in_order(np.argsort(counts, kind="stable")),
        "grouped": by_count(),
    }
    rec.run_packed(np.concatenate(views[: args.batch]), counts[: args.batch], level)
    result: dict = {"objects": args.objects, "batch": args.batch, "model": rec.model_id}
    packed = {
        name: [(np.concatenate([views[i] for i in c]), counts[c]) for c in calls]
        for name, calls in plans.items()
    }
    times: dict[str, list[float]] = {name: [] for name in plans}
    for _ in range(args.runs):  # interleaved: a change in the machine's load hits all three
        for name, calls in packed.items():
            t = time.perf_counter()
            for v, n in calls:
                rec.run_packed(v, n, level)
            times[name].append(time.perf_counter() - t)
    for name, calls in plans.items():
        result[name] = {
            "calls": len(calls),
            "recurrence_steps": sum(len(c) * int(counts[c].max()) for c in calls),
            "objects_per_s": round(args.objects / statistics.median(times[name]), 2),
        }
    base = result["input_order"]["objects_per_s"]
    for name in ("sorted", "grouped"):
        result[name]["vs_input_order"] = round(result[name]["objects_per_s"] / base, 3)
    result["real_views"] = int(counts.sum())
    return result


# --- catalog scale ----------------------------------------------------------------------

SCALE_VIEW = b"\x89PNG-not-decoded"  # committed rows are never read: any bytes do
SCALE_FRESH = 2000  # fresh rows with real views, decoded with and without the output
SCALE_GROUP_ROWS = 1024  # input rows per row group (one fragment each)
SCALE_FILE_GROUPS = 64  # row groups per input file


def scale_catalog(root: str, committed: int, options: dict, fresh: int = SCALE_FRESH) -> list[str]:
    """An input of ``committed`` rows with placeholder views (never decoded),
    then ``fresh`` rows of real procedural objects, in a file of their own."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    import shapes
    from pipeline import io

    fs, base = io.filesystem(root, options)
    fs.makedirs(base, exist_ok=True)
    per_file = SCALE_GROUP_ROWS * SCALE_FILE_GROUPS
    views = pa.array([[SCALE_VIEW]] * per_file, pa.list_(pa.binary()))
    categories = pa.array(np.array(["chair", "table", "car", "lamp"])[np.arange(per_file) % 4])
    for f, start in enumerate(range(0, committed, per_file)):
        n = min(per_file, committed - start)
        ids = pa.array([f"obj-{i:09d}" for i in range(start, start + n)])
        table = pa.table({"object_id": ids, "views": views[:n], "category": categories[:n]})
        with fs.open(f"{base}/part-{f:06d}.parquet", "wb") as out:
            pq.write_table(table, out, row_group_size=SCALE_GROUP_ROWS)
    real = [shapes.generate_object(SEED, i, views=5) for i in range(50)]
    rows = [
        {"object_id": f"fresh-{i:06d}", "views": real[i % 50]["views"], "category": "sofa"}
        for i in range(fresh)
    ]
    with fs.open(f"{base}/zz-fresh.parquet", "wb") as out:
        pq.write_table(pa.Table.from_pylist(rows), out, row_group_size=SCALE_GROUP_ROWS)
    return io.find_files(root, ".parquet", options)


def scale_output(output: str, files: list, committed: int, options: dict) -> dict:
    """Manifests committing the first ``committed`` input rows in shards of
    1024 rows, as the sink writes them, folded into the index. Only the shards
    the benchmark reads are written (planning never opens a shard)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import index, io, plan, shards
    from pipeline.layout import MANIFEST_SCHEMA
    from pipeline.sink import shard_name

    z, y, x = np.mgrid[:32, :32, :32]
    rng = np.random.default_rng(0)
    grids = []
    for _ in range(1024):  # soft ellipsoids: a model's grid compresses about as well
        c, r = rng.uniform(10, 22, 3), rng.uniform(4, 12, 3)
        d = np.sqrt(((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2)
        grids.append(np.clip(255 * (1.5 - d), 0, 255))
    ids = [f"obj-{i:09d}" for i in range(1024)]
    data, offsets, lengths = shards.encode(ids, np.stack(grids).astype(np.uint8))
    keys = [  # as the job keys them: canonical URL, footer digest
        plan.fragment_key(io.canonical_url(f.url), f.content, g)
        for f in files
        for g in range(len(f.row_groups))
    ]
    n_shards = -(-committed // 1024)
    read = set(np.random.default_rng(1).choice(n_shards, min(21, n_shards), replace=False))
    started = time.perf_counter()
    for s in range(n_shards):
        n = min(1024, committed - s * 1024)
        first = s * 1024
        row_keys = [f"{keys[first // 1024]}:{i}" for i in range(n)]
        name = shard_name(row_keys)  # named for its keys, as the sink names it
        if s in read:
            io.write_bytes(io.join(output, "shards", f"{name}.npz"), data, options)
        table = pa.table(
            {
                "object_id": [f"obj-{i:09d}" for i in range(first, first + n)],
                "status": ["ok"] * n,
                "error": pa.nulls(n, pa.string()),
                "error_kind": pa.nulls(n, pa.string()),
                "warning": pa.nulls(n, pa.string()),
                "shard": [f"shards/{name}.npz"] * n,
                "index": pa.array(np.arange(n), pa.int32()),
                "n_views": pa.array(np.ones(n), pa.int32()),
                "n_views_given": pa.array(np.ones(n), pa.int32()),
                "occupied_voxels": pa.array(np.full(n, 900), pa.int32()),
                "threshold": [0.4] * n,
                "model": ["synthetic-000000000000"] * n,
                "precision": ["fp32"] * n,
                "iou": pa.array(np.linspace(0.3, 0.9, n), pa.float32()),
                "row_key": row_keys,
                "grid_offset": pa.array(offsets[:n], pa.int64()),
                "grid_bytes": pa.array(lengths[:n], pa.int32()),
                "category": np.array(["chair", "table", "car", "lamp"])[
                    np.arange(first, first + n) % 4
                ],
            }
        ).cast(pa.unify_schemas([MANIFEST_SCHEMA, pa.schema([("category", pa.string())])]))
        table = table.replace_schema_metadata(
            index.manifest_metadata(
                table, name, {keys[first // 1024]: [[0, n]]}, 1, f"shards/{name}.npz", len(data)
            )
        )
        buffer = BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        io.write_bytes(io.join(output, "manifests", f"{name}.parquet"), buffer.getvalue(), options)
    made = time.perf_counter() - started
    started = time.perf_counter()
    index.fold(output, options)
    return {
        "write_s": round(made, 1),
        "fold_s": round(time.perf_counter() - started, 1),
        "shards_read": sorted(int(s) for s in read),
    }


def _plan_in_fresh_process(input_url: str, output: str, options: dict) -> dict:
    """Pre-flight and read planning as the job's driver does it, in a process of
    its own: seconds and the process's peak RSS."""
    import subprocess

    code = f"""
import json, sys, time
sys.path.insert(0, {str(REPO)!r})
from pipeline import job
t = time.perf_counter()
found = job.preflight(job.JobConfig(input={input_url!r}, output={output!r},
                                    storage_options={options!r}))
s = time.perf_counter() - t
# VmHWM: this process's own peak (ru_maxrss would carry the forking parent's over exec)
peak = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")][0] / 1024
print(json.dumps({{"plan_s": s, "rows_todo": found.read_plan.rows_todo,
    "fragments": len(found.read_plan.fragments),
    "peak_rss_mib": peak}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _repeats_in_fresh_process(output: str, options: dict) -> dict:
    """What the end of every run adds to count repeated ids and stale rows
    (``pipeline.repeats``: the index's ``object_id`` and ``row_key`` columns,
    and its coverage), in a process of its own: seconds and the peak RSS over
    the process's own after the index's state is read."""
    import subprocess

    code = f"""
import json, sys, time
sys.path.insert(0, {str(REPO)!r})
from pipeline import index, io, repeats
def peak():
    return [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")][0] / 1024
options = io.storage_options({output!r}, {options!r})
state = index.state({output!r}, options)
before = peak()
t = time.perf_counter()
counted = repeats.repeated_ids(state, options)
s = time.perf_counter() - t
t = time.perf_counter()
gone = repeats.stale_rows(state.coverage(), repeats.CurrentInput.of([], []))
stale_s = time.perf_counter() - t
print(json.dumps({{"duplicates_s": s, "stale_count_s": stale_s, "rows_stale": gone.rows,
    "duplicate_ids": counted.ids, "peak_rss_mib": peak(), "rss_before_mib": before}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _prune_last_file(input_url: str, output: str, options: dict) -> dict:
    """Delete the input's last file of committed rows and prune its rows as
    ``jobs/prune.py`` does (the lease, the replacements, the set-asides, the
    fold, the record): seconds of each step and what it dropped."""
    from pipeline import io, prune
    from pipeline.lease import Lease

    in_options = io.storage_options(input_url, options)
    out_options = io.storage_options(output, options)
    committed = [u for u in io.find_files(input_url, ".parquet", in_options) if "/part-" in u]
    if len(committed) < 2:  # the prune would refuse an input that holds none of the output
        return {"skipped": "one input file of committed rows (--committed <= 65536)"}
    io.remove(committed[-1], in_options)
    t = time.perf_counter()
    current = prune.current_input(input_url, in_options)
    lease = Lease(output, out_options, say=lambda s: None)
    lease.acquire()
    try:
        found = prune.find(output, current, out_options)
        find_s = time.perf_counter() - t
        t = time.perf_counter()
        done = prune.prune(found, out_options, lease.check, lease.generation, say=lambda s: None)
        prune_s = time.perf_counter() - t
        t = time.perf_counter()
        report = prune.record(
            output, input_url, current, done, out_options, lease.generation, 0.0, lease.check
        )
        record_s = time.perf_counter() - t
    finally:
        lease.release()
    return {
        "find_s": round(find_s, 3),
        "prune_s": round(prune_s, 3),
        "record_s": round(record_s, 3),
        "rows_pruned": done["rows_pruned"],
        "manifests_set_aside": done["manifests_set_aside"],
        "manifests_written": done["manifests_written"],
        "rows_left": report["totals"]["rows"],
        "rows_stale_after": report["rows_stale"],
    }


def _decode_once(input_url: str, output: str, options: dict) -> float:
    """Rows/s of one pass of planning, reading and decoding what a run has left
    to do, as the job's driver, read and decode tasks do it (no Ray)."""
    from pipeline import job, plan
    from pipeline.decode import DecodeConfig, decode_batch

    config = job.JobConfig(input=input_url, output=output, storage_options=options)
    t = time.perf_counter()
    found = job.preflight(config)
    rows = 0
    for fragment in found.read_plan.fragments:
        for block in plan.read_fragment(fragment, found.scan.schema, 256, options):
            rows += decode_batch(block, DecodeConfig(image_size=64)).num_rows
    return rows / (time.perf_counter() - t)


def bench_scale(args: argparse.Namespace) -> dict:
    """Catalog-scale costs with ``--committed`` rows already in the output (see
    docs/benchmarks.md): planning, decode with the output present, whole-output
    status and per-category aggregate, one grid cold, 20 grids from 20 shards."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.compute as pc

    from pipeline import index, inputs, io, shards

    moto = None
    if args.s3:
        moto, options, root = _start_moto()
    else:
        options, root = {}, tempfile.mkdtemp(prefix="voxray-scale-")
    try:
        n = args.committed
        input_url, output = io.join(root, "catalog"), io.join(root, "output")
        urls = scale_catalog(input_url, n, options, args.fresh)
        files = inputs.scan(urls, io.storage_options(input_url, options)).files
        made = scale_output(output, files, n, io.storage_options(output, options))
        planned = _plan_in_fresh_process(input_url, output, options)
        fresh_input = io.join(root, "fresh")
        io.write_bytes(
            io.join(fresh_input, "zz-fresh.parquet"),
            io.read_bytes(
                io.join(input_url, "zz-fresh.parquet"), io.storage_options(input_url, options)
            ),
            io.storage_options(fresh_input, options),
        )
        rates: dict[str, list[float]] = {"present": [], "fresh": []}
        for _ in range(5):  # interleaved, medians: the machine's noise hits both alike
            rates["present"].append(_decode_once(input_url, output, options))
            rates["fresh"].append(_decode_once(fresh_input, io.join(root, "empty"), options))
        present, empty = (statistics.median(rates[k]) for k in ("present", "fresh"))

        out_options = io.storage_options(output, options)
        from pipeline.results import Output

        reader = Output(output, options)
        t = time.perf_counter()
        counts = reader.status()
        status_s = time.perf_counter() - t
        t = time.perf_counter()
        by_category = reader.by_category()
        category_s = time.perf_counter() - t
        t = time.perf_counter()
        wanted = f"obj-{n // 2:09d}"
        row = index.read_table(
            index.state(output, out_options),
            None,
            out_options,
            filters=pc.field("object_id") == wanted,
        ).to_pylist()[0]
        lookup_s = time.perf_counter() - t

        read = made["shards_read"]
        current = index.state(output, out_options)
        columns = ["shard", "grid_offset", "grid_bytes"]
        rows = []
        for s in read:  # a row of each written shard (its grid records are the template's)
            one = pc.field("object_id") == f"obj-{min(s * 1024 + 17, n - 1):09d}"
            found = index.read_table(current, columns, out_options, filters=one)
            rows.append(found.to_pylist()[0])
        first, rest = rows[0], rows[1:21]
        t = time.perf_counter()
        shards.read_grid(
            io.join(output, first["shard"]), first["grid_offset"], first["grid_bytes"], out_options
        )
        cold_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()

        def grid(r: dict):
            url = io.join(output, r["shard"])
            return shards.read_grid(url, r["grid_offset"], r["grid_bytes"], out_options)

        with ThreadPoolExecutor(20) as pool:
            list(pool.map(grid, rest))
        grids20_s = time.perf_counter() - t
        # the same 20 through the analyst's reader, by id (its lookups included)
        ids20 = [f"obj-{min(s * 1024 + 17, n - 1):09d}" for s in read[1:21]]
        t = time.perf_counter()
        reader.grids(ids20)
        reader_grids20_s = time.perf_counter() - t
        # verify's metadata checks (what every finishing run does): footers, listings,
        # _SUCCESS; the shards the synthesis did not write are reported missing
        from pipeline import verify

        t = time.perf_counter()
        checked = verify.check(output, out_options, grids=0)
        verify_s = time.perf_counter() - t
        kinds: dict[str, int] = {}
        for f in checked.findings:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        watched = _repeats_in_fresh_process(output, options)
        pruned = _prune_last_file(input_url, output, options) if args.prune else None
        return {
            "committed": n,
            "storage": "s3 (moto)" if args.s3 else "local",
            "plan_s": round(planned["plan_s"], 3),
            "driver_peak_rss_mib": round(planned["peak_rss_mib"], 1),
            "rows_todo": planned["rows_todo"],
            "decode_rows_per_s": {"output_present": round(present, 1), "fresh": round(empty, 1)},
            "decode_ratio": round(present / empty, 3),
            "status_count_s": round(status_s, 3),
            "status": counts,
            "category_aggregate_s": round(category_s, 3),
            "categories": by_category.num_rows,
            "lookup_by_id_s": round(lookup_s, 3),
            "lookup_found": row["object_id"] == wanted,
            "grid_cold_ms": round(cold_ms, 2),
            "grid_cold_bytes": int(first["grid_bytes"]),
            "grids20_s": round(grids20_s, 3),
            "reader_grids20_by_id_s": round(reader_grids20_s, 3),
            "verify_metadata_s": round(verify_s, 3),
            "verify_findings": kinds,
            "synthesis": made,
            "index_parts": len(index.state(output, out_options).parts),
            # what every run's end adds: repeated ids from the index, stale rows
            "duplicates_count_s": round(watched["duplicates_s"], 3),
            "duplicates_peak_rss_mib": round(watched["peak_rss_mib"], 1),
            "duplicates_rss_before_mib": round(watched["rss_before_mib"], 1),
            "stale_count_s": round(watched["stale_count_s"], 4),
            "prune": pruned,
        }
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(10)


def _start_moto():
    """A moto S3 server on a free loopback port, and a bucket in it."""
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="scale",
        AWS_SECRET_ACCESS_KEY="scale", AWS_DEFAULT_REGION="us-east-1",
    )  # fmt: skip
    import boto3

    for _ in range(100):
        try:
            boto3.client(
                "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1"
            ).create_bucket(Bucket="voxray-scale")
            break
        except Exception:
            time.sleep(0.2)
    return server, {}, "s3://voxray-scale"


def bench_scan(args: argparse.Namespace) -> dict:
    """The input pre-flight: list ``--files`` small Parquet files and read every
    footer (``pipeline.inputs.scan``), in a fresh process, as the job's driver
    does before Ray starts: seconds, and that process's peak RSS. Then, unless
    ``--groups 0``, the read of one file of ``--groups`` one-row groups against
    the same rows in one row group (``bench_row_groups``)."""
    import subprocess
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import io

    moto = None
    if args.s3:
        moto, _, root = _start_moto()
    else:
        root = tempfile.mkdtemp(prefix="voxray-scan-")
    try:
        buffer = BytesIO()
        table = pa.table({"object_id": ["a", "b", "c", "d"], "views": [[b"x"]] * 4, "sku": [1] * 4})
        pq.write_table(table, buffer)
        data = buffer.getvalue()
        for i in range(args.files):
            io.write_bytes(io.join(root, "catalog", f"part-{i:06d}.parquet"), data)
        code = f"""
import json, sys, time
sys.path.insert(0, {str(REPO)!r})
from pipeline import inputs, io
t = time.perf_counter()
files = io.find_files({io.join(root, "catalog")!r}, ".parquet", {{}})
listed = time.perf_counter() - t
scan = inputs.scan(files, io.storage_options({root!r}))
peak = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")][0]
print(json.dumps({{"list_s": listed, "scan_s": time.perf_counter() - t - listed,
                  "usable": len(scan.usable), "peak_rss_mib": peak / 1024}}))
"""
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        groups = (
            bench_row_groups(args, tempfile.mkdtemp(prefix="voxray-groups-")) if args.groups else {}
        )
        return {
            "files": args.files,
            "storage": "s3 (moto)" if args.s3 else "local",
            "list_s": round(measured["list_s"], 2),
            "scan_s": round(measured["scan_s"], 2),
            "ms_per_file": round(1000 * measured["scan_s"] / args.files, 3),
            "usable": measured["usable"],
            "driver_peak_rss_mib": round(measured["peak_rss_mib"], 1),
            **groups,
        }
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(10)


# One pass of the job's read path over a catalog, in a fresh process whose
# sys.path starts at a checkout (this one, or older code given by --compare):
# the pre-flight plans it, then every read task of the job's datasource runs
# here, in turn, as Ray would run each. Only names both versions have are used.
_READ_PASS = """
import json, sys, time
sys.path.insert(0, {code!r})
from pipeline import job
from pipeline.source import CatalogSource
t = time.perf_counter()
found = job.preflight(job.JobConfig(input={input!r}, output={output!r}))
planned = time.perf_counter() - t
source = CatalogSource(found.read_plan, found.scan.schema, 256, {{}})
tasks = source.get_read_tasks(1)
t = time.perf_counter()
rows = sum(block.num_rows for task in tasks for block in task())
print(json.dumps({{"plan_s": planned, "read_s": time.perf_counter() - t, "rows": rows,
                  "tasks": len(tasks)}}))
"""


# The floor: the same file read by plain pyarrow (every row group in one
# pre-buffered pass of 256-row batches), no plan, no check, no row keys.
_ARROW_PASS = """
import glob, json, time
import pyarrow.parquet as pq
t = time.perf_counter()
rows = 0
for path in glob.glob({input!r} + "/*.parquet"):
    with open(path, "rb") as f:
        parquet = pq.ParquetFile(f, pre_buffer=True)
        groups = list(range(parquet.metadata.num_row_groups))
        rows += sum(b.num_rows for b in parquet.iter_batches(256, row_groups=groups))
print(json.dumps({{"plan_s": 0.0, "read_s": time.perf_counter() - t, "rows": rows, "tasks": 1}}))
"""


def bench_row_groups(args: argparse.Namespace, root: str) -> dict:
    """One local file of ``--groups`` one-row groups against the same rows in
    one row group, read through the job's own read path (``_READ_PASS``):
    medians of ``--repeats`` alternating runs, their ratio, the same for plain
    pyarrow (``_ARROW_PASS``, the floor), and with ``--compare`` for older
    code, all run alternately."""
    import shutil
    import subprocess

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Photos do not compress: views of random bytes, ~8 kB a row as five small photos.
    rng = np.random.default_rng(SEED)
    n = args.groups
    table = pa.table(
        {
            "object_id": [f"obj-{i:06d}" for i in range(n)],
            "views": pa.array(
                [[rng.bytes(1600) for _ in range(5)] for _ in range(n)], pa.list_(pa.binary())
            ),
            "category": np.array(["chair", "table", "car", "lamp"])[np.arange(n) % 4],
        }
    )
    catalogs = {"many": os.path.join(root, "groups-many"), "one": os.path.join(root, "groups-one")}
    for name, folder in catalogs.items():
        os.makedirs(folder, exist_ok=True)
        pq.write_table(table, os.path.join(folder, "part.parquet"),
                       row_group_size=1 if name == "many" else n)  # fmt: skip
    codes = {"new": str(REPO), "arrow": ""}
    if args.compare:
        codes["old"] = os.path.abspath(args.compare)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    runs: dict[str, list[dict]] = {f"{c}_{k}": [] for c in codes for k in catalogs}
    for _ in range(args.repeats):  # alternating: the machine's noise hits every case alike
        for code, path in codes.items():
            for name, folder in catalogs.items():
                script = (_READ_PASS if path else _ARROW_PASS).format(
                    code=path, input=folder, output=os.path.join(root, f"out-{code}-{name}")
                )
                out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                                     text=True, env=env, check=True)  # fmt: skip
                measured = json.loads(out.stdout.strip().splitlines()[-1])
                assert measured["rows"] == n, measured
                runs[f"{code}_{name}"].append(measured)
    result: dict = {"row_groups": n, "repeats": args.repeats}
    median = {k: statistics.median(r["read_s"] for r in v) for k, v in runs.items()}
    for key, values in runs.items():
        result[f"{key}_read_s"] = round(median[key], 3)
        result[f"{key}_plan_s"] = round(statistics.median(r["plan_s"] for r in values), 3)
        result[f"{key}_read_tasks"] = values[0]["tasks"]
    for code in codes:
        result[f"{code}_many_over_one"] = round(median[f"{code}_many"] / median[f"{code}_one"], 2)
    # what the job's reader adds to pyarrow's own read of the many-group file
    result["new_many_over_arrow"] = round(median["new_many"] / median["arrow_many"], 2)
    if args.compare:
        result["speedup_many"] = round(median["old_many"] / median["new_many"], 1)
    if args.job:
        result.update(_row_groups_job(args, Path(root)))
    shutil.rmtree(root, ignore_errors=True)
    return result


def _row_groups_job(args: argparse.Namespace, root: Path) -> dict:
    """The whole job (``--stand-in latency_ms=0``: decode and everything around
    the model) on ``--groups`` rows of real procedural views, one file of
    one-row groups against one row group, alternating: wall medians, ratio."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import shapes
    from model.defaults import BATCH_SIZE

    made = [shapes.generate_object(SEED, i, views=5) for i in range(50)]  # repeated
    n = args.groups
    table = pa.table(
        {
            "object_id": [f"obj-{i:06d}" for i in range(n)],
            "views": pa.array([made[i % 50]["views"] for i in range(n)], pa.list_(pa.binary())),
        }
    )
    catalogs = {"many": root / "job-many", "one": root / "job-one"}
    for name, folder in catalogs.items():
        folder.mkdir(parents=True, exist_ok=True)
        # no dictionary: the one-group file must not store the repeated views once
        pq.write_table(table, folder / "part.parquet", use_dictionary=False,
                       row_group_size=1 if name == "many" else n)  # fmt: skip
    walls: dict[str, list[float]] = {name: [] for name in catalogs}
    for r in range(args.repeats):
        for name, folder in catalogs.items():
            flags = ["--stand-in", "latency_ms=0"]
            done = run_job(folder, root / f"job-out-{name}-{r}", BATCH_SIZE, flags)
            walls[name].append(done["wall_s"])
    wall = {name: statistics.median(v) for name, v in walls.items()}
    return {
        "job_many_wall_s": round(wall["many"], 1),
        "job_one_wall_s": round(wall["one"], 1),
        "job_many_over_one": round(wall["many"] / wall["one"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    from model.defaults import BATCH_SIZE, GPU_BATCH_SIZE
    from pipeline.job import JobConfig

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("model", help="the Reconstructor alone on random views")
    m.add_argument("--preset", default="res3d-gru-3")
    m.add_argument("--image-size", type=int, help="input side in pixels (default: the preset's)")
    m.add_argument("--views", type=int, default=5)
    m.add_argument("--batch", type=int, default=8)
    m.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    m.add_argument("--xla", choices=("auto", "on", "off"), default="auto")
    m.add_argument("--runs", type=int, default=5, help="timed runs (median reported; >= 5)")
    m.add_argument("--warmup", type=int, default=2)
    m.add_argument("--json", action="store_true", help="last line printed is JSON")
    t = sub.add_parser("train", help="training steps per second (the step of jobs/train.py)")
    t.add_argument("--preset", default="compact")
    t.add_argument("--image-size", type=int, help="input side in pixels (default: the preset's)")
    t.add_argument("--batch", type=int, default=24)
    t.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    t.add_argument("--runs", type=int, default=15, help="timed steps (median reported; >= 5)")
    t.add_argument("--warmup", type=int, default=3)
    t.add_argument("--json", action="store_true", help="last line printed is JSON")
    for name, text in (
        ("pipeline", "the whole job at N and 10N objects: speed, memory, vs the model alone"),
        ("views", "the job on 1..24 views per object vs FLOP-proportional 5-view speed"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--objects", type=int, default=200, help="N distinct objects")
        p.add_argument("--batch", type=int, default=BATCH_SIZE)
        p.add_argument("--cpus-per-actor", type=float, default=1.0)
        # the job's own defaults: what a user gets
        p.add_argument("--rows-per-block", type=int, default=JobConfig.rows_per_block)
        p.add_argument("--rows-per-shard", type=int, default=JobConfig.rows_per_shard)
        p.add_argument("--model", default="", help="a .keras file; default: shipped weights")
        p.add_argument("--runs", type=int, default=5, help="model-only timed runs (median)")
        p.add_argument(
            "--repeats", type=int, default=3, help="job runs per scale (median wall; >= 1)"
        )
        p.add_argument("--json", action="store_true", help="last line printed is JSON")
        if name == "pipeline":
            p.add_argument("--views", type=int, default=5, help="views per object")
        else:
            p.add_argument("--scale", type=int, default=5, help="big run = N objects x scale")
    c = sub.add_parser("scale", help="resume, index and grid access with N rows committed")
    c.add_argument("--committed", type=int, default=100_000, help="rows already committed")
    c.add_argument("--s3", action="store_true", help="on a moto S3 server on loopback")
    c.add_argument("--fresh", type=int, default=SCALE_FRESH, help="rows left to do (decoded)")
    c.add_argument("--json", action="store_true", help="last line printed is JSON")
    c.add_argument(
        "--prune", action="store_true", help="at the end, delete an input file and prune its rows"
    )
    n = sub.add_parser("scan", help="the input pre-flight: every footer of N small files")
    n.add_argument("--files", type=int, default=10_000)
    n.add_argument("--s3", action="store_true", help="on a moto S3 server on loopback")
    n.add_argument(
        "--groups",
        type=int,
        default=5000,
        help="read one file of N one-row groups vs one group of N rows (0: skip)",
    )
    n.add_argument("--repeats", type=int, default=3, help="alternating runs of the read (median)")
    n.add_argument("--compare", default="", help="a checkout of older code, read side by side")
    n.add_argument(
        "--job",
        action="store_true",
        help="also the whole job (--stand-in latency_ms=0) on both files",
    )
    n.add_argument("--json", action="store_true", help="last line printed is JSON")
    d = sub.add_parser("decode", help="views decoded per second on one core")
    d.add_argument("--catalog", default="", help="a local Parquet folder; default: procedural")
    d.add_argument("--objects", type=int, default=200)
    d.add_argument("--views", type=int, default=5, help="views per procedural object")
    d.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[64, 127])
    d.add_argument("--runs", type=int, default=5)
    d.add_argument(
        "--kinds",
        default="",
        help="photo catalogs to time, old vs new decode: png137,jpeg300,jpeg1024,jpeg2048",
    )
    d.add_argument("--cache", default="", help="where --kinds catalogs are kept (default: tmp)")
    d.add_argument("--limit", type=int, default=100, help="views timed per kind")
    d.add_argument("--quality", action="store_true", help="IoU, old vs new decode (loads TF)")
    d.add_argument("--quality-objects", type=int, default=130, help="held-out objects scored")
    d.add_argument("--json", action="store_true", help="last line printed is JSON")
    fl = sub.add_parser("flags", help="good views flagged as carrying no picture (should be 0)")
    fl.add_argument("--held-out", type=int, default=650, help="held-out objects (24 views each)")
    fl.add_argument("--seed", type=int, default=3003, help="the held-out set's seed")
    fl.add_argument("--kinds", default="jpeg300,jpeg1024", help="photo catalogs to check too")
    fl.add_argument("--objects", type=int, default=100, help="objects per photo catalog")
    fl.add_argument("--views", type=int, default=5, help="views per photo object")
    fl.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[64, 127])
    fl.add_argument("--cache", default="", help="where catalogs are kept (default: tmp)")
    fl.add_argument("--json", action="store_true", help="last line printed is JSON")
    f = sub.add_parser("feed", help="what the pipeline feeds an accelerator (stand-in device)")
    f.add_argument("--objects", type=int, default=200, help="objects per catalog")
    f.add_argument("--views", type=int, default=5)
    f.add_argument("--kinds", type=lambda s: s.split(","), default=list(FEED_KINDS))
    f.add_argument("--batch", type=int, default=GPU_BATCH_SIZE, help="objects per device call")
    f.add_argument("--block-rows", type=int, default=256, help="rows per block (--rows-per-block)")
    f.add_argument("--feed-blocks", type=int, default=120, help="pre-decoded blocks fed")
    f.add_argument("--job-block-rows", type=int, default=32, help="--rows-per-block of the jobs")
    f.add_argument("--decode-objects", type=int, default=40, help="objects timed per catalog")
    f.add_argument("--cache", default="", help="where photo catalogs are kept (default: tmp)")
    f.add_argument("--json", action="store_true", help="last line printed is JSON")
    g = sub.add_parser("grouping", help="1..24-view objects: calls grouped by view count or not")
    g.add_argument("--objects", type=int, default=256, help="objects in the block")
    g.add_argument("--batch", type=int, default=BATCH_SIZE, help="objects per model call")
    g.add_argument("--model", default="", help="a .keras file; default: shipped weights")
    g.add_argument("--runs", type=int, default=3)
    g.add_argument("--json", action="store_true", help="last line printed is JSON")
    args = parser.parse_args(argv)
    if args.what == "grouping":
        result = bench_grouping(args)
    elif args.what == "feed":
        result = bench_feed(args)
    elif args.what == "decode":
        result = bench_decode(args)
    elif args.what == "flags":
        result = bench_flags(args)
    elif args.what == "scale":
        result = bench_scale(args)
    elif args.what == "scan":
        result = bench_scan(args)
    elif args.what in ("model", "train"):
        if args.runs < 5:
            parser.error("--runs must be at least 5 for a meaningful median")
        result = bench_model(args) if args.what == "model" else bench_train(args)
    elif args.repeats < 1 or getattr(args, "scale", 10) < 2 or args.runs < 1:
        parser.error("--repeats and --runs must be >= 1 and --scale >= 2")
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
