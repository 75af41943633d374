"""Reconstruct every object of a Parquet catalog as a 32^3 voxel grid, on Ray.

    python jobs/reconstruct.py                      # demo: local Ray, local files
    python jobs/reconstruct.py --input s3://b/catalog --output s3://b/grids
    ray job submit --working-dir . -- python jobs/reconstruct.py --input ... --output ...

The pipeline reads top to bottom: read Parquet -> decode and validate (CPU
tasks) -> Reconstructor actors -> shard sink -> _SUCCESS. Every input row
leaves exactly one manifest row; rerunning the same command resumes. The driver
never imports TensorFlow: the model's id and input size come from a one-shot
task, and the model itself lives only in the actors.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import pyarrow.parquet as pq  # noqa: E402

from pipeline import io, resume, summary  # noqa: E402
from pipeline.decode import (  # noqa: E402
    INPUT_COLUMNS,
    MAX_PIXELS,
    MAX_ROW_BYTES,
    DecodeConfig,
    carried_columns,
)

REPO = Path(__file__).resolve().parents[1]
DEMO_INPUT = REPO / "data" / "demo-catalog"
DEMO_OUTPUT = REPO / "outputs" / "demo"
DEMO_OBJECTS, DEMO_VIEWS, DEMO_SEED = 48, 5, 0
ACTOR_MEMORY = 2 * 1024**3  # bytes reserved per model actor (TensorFlow + weights)
# Two write tasks per CPU: they wait on storage more than they compute, and
# each holds up to --rows-per-shard rows, so more would only add memory.
WRITE_CPUS = 0.5

# Environment of every worker the job starts (a variable already set in the
# driver's environment, e.g. through the job's runtime_env, wins). Without the
# first four, a worker kept the high-water mark of every task it had run:
# pyarrow's jemalloc pool and glibc held a worker at 420-520 MiB after reading
# and writing 4000 rows, against 120-170 MiB with them (README, "Memory").
# Ray Data reads Parquet footers on a pool of 32 actors by default, ~100 MiB
# each at the start of the job; two keep up with thousands of files.
WORKER_ENV = {
    "ARROW_DEFAULT_MEMORY_POOL": "system",
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "131072",
    "MALLOC_TRIM_THRESHOLD_": "131072",
    "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "2",
}

# Exit codes: 0 every row accounted for; 1 the run could not finish (rerun to
# resume); 2 bad arguments; 3 a setup problem (storage, model, output); 4 more
# failed rows than --max-failed-fraction allows.
EXIT_OK, EXIT_RUN, EXIT_USAGE, EXIT_SETUP, EXIT_FAILED_ROWS = 0, 1, 2, 3, 4


# Rows per Ray Data block. Each block costs Ray a task per stage and a call of
# the actor; at 64 rows that overhead held the job to 0.67 of the model's speed
# on 2 CPUs, at 256 to 0.88 (`jobs/benchmark.py pipeline`, README). A block of
# 256 five-view rows holds 16 MB of decoded pixels at 64x64 (61 MB at 127x127).
ROWS_PER_BLOCK = 256


@dataclass(frozen=True)
class JobConfig:
    """The job's arguments, resolved."""

    input: str
    output: str
    model: str = ""  # empty: the shipped weights
    batch_size: int = 16
    actors: tuple[int, int] | None = None  # None: chosen from the cluster
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_actor: float = 1.0
    max_views: int = 24
    threshold: float = 0.4
    max_failed_fraction: float = 1.0
    storage_options: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    rows_per_shard: int = 1024
    rows_per_block: int = ROWS_PER_BLOCK
    max_pixels: int = MAX_PIXELS
    max_row_bytes: int = MAX_ROW_BYTES
    io_retry_seconds: float = io.RETRY_SECONDS
    precision: str = "auto"
    demo: bool = False


def parse_actors(text: str) -> tuple[int, int]:
    """``N`` -> (N, N); ``MIN,MAX`` -> an autoscaling pool."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--actors takes N or MIN,MAX, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or parts[0] < 1 or parts[1] < parts[0]:
        raise argparse.ArgumentTypeError(
            f"--actors takes N or MIN,MAX with 1 <= MIN <= MAX, got {text!r}"
        )
    return parts[0], parts[1]


def parse_json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--storage-options is not JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--storage-options must be a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs/reconstruct.py",
        description=(
            "Reconstruct 32^3 voxel grids from multi-view photos (3D-R2N2) for every row of a "
            "Parquet catalog, on the Ray cluster the job is submitted to (or RAY_ADDRESS), "
            "else on a local Ray. With no arguments: a demo on a small generated catalog."
        ),
        epilog=(
            "Input rows: object_id (string), views (list of PNG/JPEG bytes), optional voxels "
            "(np.packbits of a bool [32,32,32] grid, for IoU); other scalar columns are carried "
            "into the manifest. Output: OUTPUT/shards/*.npz, OUTPUT/manifests/*.parquet (one row "
            "per input row), OUTPUT/_SUCCESS (written last). S3 credentials and endpoint come "
            "from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_DEFAULT_REGION "
            "or --storage-options. Rerun the same command after a crash to resume. Exit codes: "
            "0 ok, 1 run failed (rerun to resume), 2 bad arguments, 3 setup problem, "
            "4 too many failed rows."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--input", metavar="URL", help="Parquet file or folder (s3://, local)")
    parser.add_argument("--output", metavar="URL", help="output folder (s3://, local)")
    parser.add_argument(
        "--model", metavar="URL", default="", help="a .keras model file; default: shipped weights"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="objects per model call")
    parser.add_argument(
        "--actors",
        type=parse_actors,
        default=None,
        metavar="N|MIN,MAX",
        help="model actors: a fixed N or an autoscaling MIN,MAX; default 1..(GPUs/gpus-per-actor)"
        " with GPUs, else 1..(CPUs/(2*cpus-per-actor))",
    )
    parser.add_argument(
        "--gpus-per-actor",
        type=float,
        default=None,
        help="GPUs per model actor; default 1 when the cluster has GPUs, else 0",
    )
    parser.add_argument(
        "--cpus-per-actor",
        type=float,
        default=1.0,
        help="CPUs per model actor (bounds TensorFlow's threads on CPU); keep CPUs free for "
        "the decode tasks",
    )
    parser.add_argument(
        "--max-views",
        type=int,
        default=24,
        help="use at most the first N views of a row (the manifest records how many were given)",
    )
    parser.add_argument(
        "--threshold", type=float, default=0.4, help="p(occupied) for occupied_voxels and iou"
    )
    parser.add_argument(
        "--max-failed-fraction",
        type=float,
        default=1.0,
        help="exit 4 (and write no _SUCCESS) when the output's failed rows pass this fraction",
    )
    parser.add_argument(
        "--storage-options",
        type=parse_json_object,
        default={},
        metavar="JSON",
        help='fsspec options for every URL, e.g. \'{"client_kwargs": {"endpoint_url": "..."}}\'',
    )
    parser.add_argument("--limit", type=int, default=None, help="process at most N input rows")
    parser.add_argument(
        "--rows-per-shard", type=int, default=1024, help="rows gathered into each shard file"
    )
    parser.add_argument(
        "--rows-per-block",
        type=int,
        default=ROWS_PER_BLOCK,
        help="input rows per Ray Data block: the unit of decoding, inference and commit that "
        "streams through the pipeline (a Parquet row group is split to this size)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help="refuse images whose header claims more pixels (decompression bombs)",
    )
    parser.add_argument(
        "--max-row-bytes",
        type=int,
        default=MAX_ROW_BYTES,
        help="refuse rows whose views hold more encoded bytes, before decoding any",
    )
    parser.add_argument(
        "--io-retry-seconds",
        type=float,
        default=io.RETRY_SECONDS,
        help="how long each write retries a storage outage before the run stops (exit 1); "
        "reads retry through Ray Data (up to 10 attempts) on the same errors",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="model arithmetic; auto (default): bf16 where the device computes it natively "
        "(AVX-512 BF16/AMX CPUs, GPUs of compute capability >= 8.0), else fp32",
    )
    return parser


def parse_args(argv: list[str]) -> JobConfig:
    """Arguments -> JobConfig; no arguments at all -> the demo."""
    parser = build_parser()
    args = parser.parse_args(argv)
    demo = not argv
    if demo:
        args.input, args.output = str(DEMO_INPUT), str(DEMO_OUTPUT)
    if not args.input or not args.output:
        parser.error("--input and --output are both required (or give no arguments for the demo)")
    for name in (
        "batch_size",
        "max_views",
        "rows_per_shard",
        "rows_per_block",
        "max_pixels",
        "max_row_bytes",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.limit is not None and args.limit < 0:
        parser.error("--limit must be >= 0")
    if not 0.0 <= args.threshold <= 1.0:
        parser.error("--threshold must be in [0, 1]")
    if not 0.0 <= args.max_failed_fraction <= 1.0:
        parser.error("--max-failed-fraction must be in [0, 1]")
    if args.cpus_per_actor <= 0:
        parser.error("--cpus-per-actor must be > 0")
    if args.io_retry_seconds < 0:
        parser.error("--io-retry-seconds must be >= 0")
    return JobConfig(
        input=args.input,
        output=args.output.rstrip("/"),
        model=args.model,
        batch_size=args.batch_size,
        actors=args.actors,
        gpus_per_actor=args.gpus_per_actor,
        cpus_per_actor=args.cpus_per_actor,
        max_views=args.max_views,
        threshold=args.threshold,
        max_failed_fraction=args.max_failed_fraction,
        storage_options=args.storage_options,
        limit=args.limit,
        rows_per_shard=args.rows_per_shard,
        rows_per_block=args.rows_per_block,
        max_pixels=args.max_pixels,
        max_row_bytes=args.max_row_bytes,
        io_retry_seconds=args.io_retry_seconds,
        precision=args.precision,
        demo=demo,
    )


class SetupError(RuntimeError):
    """A problem found before any row was processed, explained for a person."""


def connect_ray() -> None:
    """Join the cluster the job was submitted to (``ray job submit`` sets
    RAY_ADDRESS for the job) or RAY_ADDRESS; else start a local Ray whose
    workers can import this checkout."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    # Only variables the environment leaves unset: Ray refuses to merge a
    # runtime_env that sets a variable the job's runtime_env sets too.
    env_vars = {k: v for k, v in WORKER_ENV.items() if k not in os.environ}
    footers = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"
    os.environ.setdefault(footers, WORKER_ENV[footers])  # read by Ray Data in the driver too
    try:
        if address:
            ray.init(address=address, runtime_env={"env_vars": env_vars})
        else:
            path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
            ray.init(address="local", runtime_env={"env_vars": {**env_vars, "PYTHONPATH": path}})
    except Exception as exc:
        text = str(exc)
        if "uthentication" in text or "token" in text.lower():
            raise SetupError(
                f"the Ray cluster at {address} refused this client: it requires a token. Set "
                "RAY_AUTH_TOKEN (or ~/.ray/auth_token) to the cluster's token, with "
                "RAY_AUTH_MODE=token."
            ) from None
        raise SetupError(
            f"cannot connect to Ray at {address or 'a new local instance'}: "
            f"{type(exc).__name__}: {text[:300]}"
        ) from None


def make_demo_dataset(path: Path) -> None:
    """Generate the demo catalog once, into a temporary folder renamed into place."""
    if any(path.glob("*.parquet")):
        return
    import shapes

    print(f"demo: generating {DEMO_OBJECTS} objects with {DEMO_VIEWS} views into {path} ...")
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shapes.make_dataset(str(tmp), objects=DEMO_OBJECTS, seed=DEMO_SEED, views=DEMO_VIEWS)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def resolved_options(url: str, config: JobConfig) -> dict[str, Any]:
    """Storage options resolved on the driver (endpoint and region included) so
    that every worker uses the same endpoint as the driver checked."""
    return io.storage_options(url, config.storage_options)


def input_files(config: JobConfig, options: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The input's Parquet files and the columns to read from them.

    Raises:
        io.StorageError: a missing or unreadable input, or one without the
            required columns.
    """
    try:
        files = io.find_files(config.input, ".parquet", options)
    except Exception as exc:
        raise io.explain(exc, config.input, "input", options) from None
    if not files:
        raise io.StorageError(f"cannot use input {config.input}: it holds no .parquet files.")
    try:
        fs, path = io.filesystem(files[0], options)
        with fs.open(path, "rb") as f:
            schema = pq.read_schema(f)
    except Exception as exc:
        raise io.explain(exc, files[0], "input", options) from None
    missing = [c for c in ("object_id", "views") if c not in schema.names]
    if missing:
        raise io.StorageError(
            f"cannot use input {config.input}: column(s) {missing} are missing; the input needs "
            "object_id (string) and views (list of image bytes)."
        )
    columns = [c for c in INPUT_COLUMNS if c in schema.names] + carried_columns(schema)
    return files, columns


def check_model_exists(config: JobConfig, options: dict[str, Any]) -> None:
    """A --model URL must name an existing file (the shipped weights are checked
    when the model loads)."""
    if not config.model:
        return
    try:
        found = io.exists(config.model, options)
    except Exception as exc:
        raise io.explain(exc, config.model, "model", options) from None
    if not found:
        raise io.StorageError(f"cannot use model {config.model}: it does not exist.")


def probe_model(config: JobConfig, options: dict[str, Any]) -> dict[str, Any]:
    """The model's id and input size, from a one-shot task (TensorFlow stays
    out of the driver; the task's process exits after it)."""
    import ray

    from pipeline.infer import probe_model as probe

    task = ray.remote(num_cpus=1, num_gpus=0, max_calls=1)(probe)
    try:
        return ray.get(task.remote(config.model, options))
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        raise SetupError(
            f"cannot load model {config.model or '(shipped weights)'}: "
            f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1][:300]}"
        ) from None


def plan_resources(config: JobConfig) -> tuple[float, float, tuple[int, int]]:
    """(gpus per actor, cpus per actor, (min, max) actors) for this cluster."""
    import ray

    resources = ray.cluster_resources()
    cluster_gpus = resources.get("GPU", 0.0)
    cluster_cpus = resources.get("CPU", 1.0)
    gpus = config.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if cluster_gpus > 0 else 0.0
    cpus = config.cpus_per_actor
    if config.actors is not None:
        actors = config.actors
    elif gpus > 0:
        actors = (1, max(1, int(cluster_gpus // gpus)))
    else:
        actors = (1, max(1, int(cluster_cpus // (2 * cpus))))
    if actors[0] * cpus >= cluster_cpus:
        print(
            f"warning: {actors[0]} actor(s) x {cpus} CPU leave no CPU of {cluster_cpus:g} for "
            "reading and decoding; the job can only progress if the cluster autoscales. "
            "Lower --actors or --cpus-per-actor.",
            file=sys.stderr,
        )
    return gpus, cpus, actors


def run(config: JobConfig) -> int:
    """Run the job on the connected Ray; returns the exit code."""
    import ray
    import ray.data

    from pipeline.decode import decode_batch
    from pipeline.infer import InferConfig, Reconstruct
    from pipeline.sink import ShardSink

    started = time.monotonic()
    in_options = resolved_options(config.input, config)
    out_options = resolved_options(config.output, config)
    model_options = resolved_options(config.model, config) if config.model else {}

    # Storage problems surface here, before Ray starts and before any row is read.
    files, columns = input_files(config, in_options)
    try:
        committed = resume.load_committed(config.output, out_options)
        previous = summary.read_success(config.output, out_options)
    except Exception as exc:
        raise io.explain(exc, config.output, "output", out_options) from None
    check_model_exists(config, model_options)

    connect_ray()
    probed = probe_model(config, model_options)
    model_id, image_size = probed["model_id"], probed["image_size"]
    resume.check_model(config.output, committed, model_id, (previous or {}).get("model"))
    if committed.rows:
        print(
            f"resume: {committed.rows} rows already committed under {config.output}; skipping them"
        )
    try:
        # _SUCCESS is written last; a stale one must not vouch for this run's output.
        io.remove(io.join(config.output, "_SUCCESS"), out_options)
    except Exception as exc:
        raise io.explain(exc, config.output, "output", out_options) from None

    gpus, cpus, (min_actors, max_actors) = plan_resources(config)
    decode_config = DecodeConfig(
        image_size=image_size,
        max_views=config.max_views,
        max_pixels=config.max_pixels,
        max_row_bytes=config.max_row_bytes,
    )
    infer_config = InferConfig(
        model=config.model,
        image_size=image_size,
        batch_size=config.batch_size,
        threshold=config.threshold,
        gpus=gpus,
        cpus=cpus,
        precision=config.precision,
        storage_options=model_options,
    )
    sink = ShardSink(
        config.output,
        out_options,
        rows_per_shard=config.rows_per_shard,
        retry_seconds=config.io_retry_seconds,
    )
    # Ray Data retries its reads on errors whose message matches this list; its
    # defaults are pyarrow's S3 messages, and we read through s3fs.
    context = ray.data.DataContext.get_current()
    context.retried_io_errors = [*context.retried_io_errors, *io.TRANSIENT_ERRORS]

    ds = ray.data.read_parquet(
        [f.split("://", 1)[-1] if io.is_remote(f) else f for f in files],
        filesystem=io.arrow_filesystem(config.input, in_options),
        columns=columns,
    )
    if config.limit is not None:
        ds = ds.limit(config.limit)
    # A Parquet file arrives as one block per row group (often the whole file):
    # split it, streaming, so that several decode tasks share the work, the
    # model starts on the first rows, and shards commit as their rows finish
    # rather than when a whole file is done (which is what a crash loses).
    ds = ds.repartition(target_num_rows_per_block=config.rows_per_block)
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={"config": decode_config, "committed": committed.keys},
        batch_format="pyarrow",
        batch_size=max(1, min(config.batch_size, 32)),
        num_cpus=1,
    )
    ds = ds.map_batches(
        Reconstruct,
        fn_constructor_kwargs={"config": infer_config},
        compute=ray.data.ActorPoolStrategy(
            min_size=min_actors,
            max_size=max_actors,
            # Two calls in flight per actor: Ray Data fetches and batches the next
            # block and serialises the last one's output while the model runs
            # (the model itself still runs one batch at a time). One call at a
            # time left the actor's core ~15% short of the model's own speed.
            max_concurrent_calls_per_actor=2,
        ),
        batch_size=config.batch_size,
        batch_format="pyarrow",
        num_cpus=cpus,
        num_gpus=gpus,
        # A memory reservation keeps Ray from packing more TensorFlow actors on a
        # node than it can hold; it also keeps decoding in its own CPU tasks, which
        # Ray Data would otherwise fuse into the actors whenever both reserve the
        # same resources (always on a CPU-only cluster).
        memory=ACTOR_MEMORY,
    )
    try:
        # Writing is mostly waiting on storage; with a whole CPU each, write tasks
        # queued behind decode tasks for the CPUs the actors leave, and shards
        # committed only when decoding was done (what a crash would lose).
        ds.write_datasink(sink, ray_remote_args={"num_cpus": WRITE_CPUS})
    except Exception as exc:
        print(
            f"error: the run stopped before every row was committed ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ''}). "
            "Committed rows are kept: rerun the same command to resume.",
            file=sys.stderr,
        )
        return EXIT_RUN

    totals = sink.totals
    report = summary.build_summary(
        rows_ok=totals["rows_ok"],
        rows_failed=totals["rows_failed"],
        rows_skipped=totals["rows_skipped"],
        wall_s=time.monotonic() - started,
        model=model_id,
        output=config.output,
        arguments=asdict(config),
        committed_before={"rows_ok": committed.rows_ok, "rows_failed": committed.rows_failed},
        shards=totals["shards"],
    )
    passed = report["failed_fraction"] <= config.max_failed_fraction
    success_url = None
    if passed:
        success_url = io.retrying(
            lambda: summary.write_success(config.output, report, out_options),
            config.io_retry_seconds,
        )
    print(summary.format_report(report, success_url))
    if not passed:
        print(
            f"error: {report['failed_fraction']:.1%} of the output's rows failed, over "
            f"--max-failed-fraction {config.max_failed_fraction:.1%}; see the 'error' column "
            "of the manifests.",
            file=sys.stderr,
        )
        return EXIT_FAILED_ROWS
    return EXIT_OK


def run_demo(config: JobConfig) -> int:
    """The demo's run. Its output folder is its own: grids of other weights (an older
    voxray's) are cleared rather than refused, so the README's command keeps working."""
    try:
        return run(config)
    except resume.OutputConflict:
        print(f"demo: {DEMO_OUTPUT} holds grids of other weights; starting it afresh")
        shutil.rmtree(DEMO_OUTPUT)
        return run(config)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if config.demo:
            connect_ray()
            make_demo_dataset(DEMO_INPUT)
            code = run_demo(config)
        else:
            code = run(config)
    except (SetupError, io.StorageError, resume.OutputConflict) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SETUP
    if config.demo and code == EXIT_OK:
        print(
            f"\ndemo: input {DEMO_INPUT}, output {DEMO_OUTPUT}; "
            "see 'Reading the output' in README.md."
        )
    return code


def leave(code: int) -> None:
    """End the driver process with `code`, whatever Ray's threads are doing.

    A plain exit runs ray.shutdown() from atexit while Ray's own background
    threads (Ray Data's, the core worker's callbacks) may still touch the core
    worker; one that does after shutdown makes Ray end the process with exit
    code 1, after the summary was printed (seen in CI under `ray job submit`).
    A driver on a cluster it joined leaves without shutting down (the cluster
    reclaims a departed driver's workers); a local Ray this process started is
    shut down first so that none of its processes outlive the job.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized() and not os.environ.get("RAY_ADDRESS"):
        ray.shutdown()
    os._exit(code)


if __name__ == "__main__":
    leave(main())
