"""Reconstruct every object of a Parquet catalog as a 32^3 voxel grid, on Ray.

    python jobs/reconstruct.py                      # demo: local Ray, local files
    python jobs/reconstruct.py --input s3://b/catalog --output s3://b/grids
    ray job submit --working-dir . -- python jobs/reconstruct.py --input ... --output ...

The command line of ``pipeline.job``: flags -> ``JobConfig`` -> ``run`` -> exit
code. With no arguments at all it runs the demo on a generated catalog.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import shutil  # noqa: E402

from model.defaults import DEFAULT_MODEL_ID, DEFAULT_WEIGHTS  # noqa: E402
from pipeline import cli, cluster, job, resume  # noqa: E402
from pipeline.job import JobConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO_INPUT = REPO / "data" / "demo-catalog"
DEMO_OUTPUT = REPO / "outputs" / "demo"
DEMO_OBJECTS, DEMO_VIEWS, DEMO_SEED = 48, 5, 0
DEFAULTS = {
    f.name: None if f.default is dataclasses.MISSING else f.default
    for f in dataclasses.fields(JobConfig)
}

# flag -> (argparse keywords, help); the default is JobConfig's, appended to the help
FLAGS: dict[str, tuple[dict, str]] = {
    "--input": ({"metavar": "URL"}, "Parquet file or folder (s3://, local); required"),
    "--output": ({"metavar": "URL"}, "output folder (s3://, local); required"),
    "--model": (
        {"metavar": "URL"},
        "a .keras model file (local, s3://); default: the shipped weights "
        f"({DEFAULT_WEIGHTS.name}, model id {DEFAULT_MODEL_ID})",
    ),
    "--batch-size": (
        {"type": int},
        "objects per model call; default 16 on CPU actors, 256 on GPU actors",
    ),
    "--actors": (
        {"type": cli.actors, "metavar": "N|MIN,MAX"},
        "model actors: a fixed N or an autoscaling MIN,MAX; default 1..(GPUs/gpus-per-actor) "
        "with GPUs, else 1..(CPUs/(2*cpus-per-actor))",
    ),
    "--gpus-per-actor": (
        {"type": float},
        "GPUs per model actor; default 1 when the cluster has GPUs, else 0",
    ),
    "--cpus-per-actor": (
        {"type": float},
        "CPUs per model actor (bounds TensorFlow's threads on CPU); keep CPUs free for decoding",
    ),
    "--max-views": (
        {"type": int},
        "use at most the first N views of a row (the manifest records how many were given)",
    ),
    "--threshold": ({"type": float}, "p(occupied) for occupied_voxels and iou"),
    "--max-failed-fraction": (
        {"type": float},
        "exit 4 (and write no _SUCCESS) when the output's failed rows pass this fraction",
    ),
    "--storage-options": (
        {"type": cli.storage_options, "metavar": "JSON"},
        'fsspec options for every URL, e.g. \'{"client_kwargs": {"endpoint_url": "..."}}\'',
    ),
    "--limit": ({"type": int}, "process at most N input rows; default all"),
    "--rows-per-shard": ({"type": int}, "rows gathered into each shard file"),
    "--rows-per-block": (
        {"type": int},
        "input rows per Ray Data block: the unit of decoding, inference and commit that "
        "streams through the pipeline (a Parquet row group is split to this size)",
    ),
    "--max-pixels": ({"type": int}, "refuse images whose header claims more pixels"),
    "--max-row-bytes": ({"type": int}, "refuse rows whose views hold more encoded bytes"),
    "--io-retry-seconds": (
        {"type": float},
        "how long each write retries a storage outage before the run stops (exit 1); "
        "reads retry through Ray Data (up to 10 attempts) on the same errors",
    ),
    "--skip-bad-files": (
        {"action": "store_true"},
        "read around input files that cannot be read or whose columns do not fit the input "
        "contract (each is named in the summary) instead of stopping with exit 3",
    ),
    "--stall-timeout": (
        {"type": float, "metavar": "SECONDS"},
        "replace a model actor whose batch has not finished for this long (a stuck or "
        "paused process); Ray restarts it and its batch is retried",
    ),
    "--verbose": (
        {"action": "store_true"},
        "show TensorFlow's, CUDA's and Ray Data's start-up logs and progress bars "
        "(hidden by default; your own TF_CPP_MIN_LOG_LEVEL is always kept)",
    ),
    "--ray-start-timeout": (
        {"type": float, "metavar": "SECONDS"},
        "how long a local Ray may take to start (over as many tries as fit); past it the "
        "run exits 1: rerun, or give it longer on a busy machine",
    ),
    "--moved-from": (
        {"metavar": "OLD_INPUT_URL"},
        "the input URL this output's rows were committed from, when the catalog has moved "
        "since: every file the output holds under it must be at the same place under --input "
        "with the same content, else the run is refused (exit 3). Files are found by their "
        "content without it too; it states the move and checks it (docs/job.md)",
    ),
    "--take-lease": (
        {"action": "store_true"},
        "take the output at once from a lease this host cannot judge (another host's, or an "
        "unreadable _LEASE) instead of watching it for 30 s; a live run on this host is still "
        "refused, and a run taken over stops (exit 1)",
    ),
    "--allow-mixed": (
        {"action": "store_true"},
        "add rows to an output whose rows were made with another --model, image size, "
        "--threshold, --max-views or --precision (as resolved on the device), instead of "
        "refusing the run with exit 3; every row records its model, threshold and precision, "
        "and _SUCCESS lists what is mixed",
    ),
    "--precision": (
        {"choices": ("auto", "fp32", "bf16")},
        "model arithmetic; auto: bf16 where the device computes it natively "
        "(AVX-512 BF16/AMX CPUs, GPUs of compute capability >= 8.0), else fp32",
    ),
    "--xla": (
        {"choices": ("auto", "on", "off")},
        "XLA compilation of the model; auto: off on CPU (measured slower there) and, until "
        "measured, on GPU; on: view counts padded to a fixed set, one compile per set",
    ),
    "--stand-in": (
        {"metavar": "SPEC"},
        "benchmarks and fault tests only: a stand-in device in place of the model, e.g. "
        "'latency_ms=1,per_object_us=300' or 'fail=cuda@3' (docs/benchmarks.md); its output "
        "rows carry model id stand-in-*, never mixed with a real model's",
    ),
}
EPILOG = (
    "Input rows: object_id (string), views (list of PNG/JPEG bytes), optional voxels "
    "(np.packbits of a bool [32,32,32] grid, for IoU); other scalar columns are carried "
    "into the manifest. Output: OUTPUT/shards/*.npz, OUTPUT/manifests/*.parquet (one row "
    "per input row), OUTPUT/_SUCCESS (written last). S3 credentials and endpoint come "
    "from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_DEFAULT_REGION "
    "or --storage-options. Rerun the same command after a crash or a stop to resume. Exit "
    "codes: 0 ok; 1 stopped part-way, or Ray or storage unavailable for now (rerun to "
    "resume); 2 bad arguments; 3 a problem no rerun gets past (setup, access denied); "
    "4 too many failed rows; 130 / 143 stopped by SIGINT / SIGTERM (rerun to resume). "
    "See docs/job.md."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobs/reconstruct.py",
        description=(
            "Reconstruct 32^3 voxel grids from multi-view photos (3D-R2N2) for every row of a "
            "Parquet catalog, on the Ray cluster the job is submitted to (or RAY_ADDRESS), "
            "else on a local Ray. With no arguments: a demo on a small generated catalog."
        ),
        epilog=EPILOG,
    )
    for flag, (kwargs, text) in FLAGS.items():
        name = flag[2:].replace("-", "_")
        default = DEFAULTS[name]
        shown = default not in (None, "") and not isinstance(default, bool)
        help_text = f"{text} (default: {default})" if shown else text
        parser.add_argument(flag, default=default, help=help_text, **kwargs)
    return parser


def parse_args(argv: list[str]) -> JobConfig:
    """Arguments -> JobConfig; no arguments at all -> the demo's."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not argv:
        args.input, args.output = str(DEMO_INPUT), str(DEMO_OUTPUT)
    if not args.input or not args.output:
        parser.error("--input and --output are both required (or give no arguments for the demo)")
    args.output = args.output.rstrip("/") or args.output
    # None is every such field's own default (storage_options' is a fresh dict)
    given = {name: getattr(args, name) for name in DEFAULTS}
    config = JobConfig(**{k: v for k, v in given.items() if v is not None})
    for problem in config.problems():
        parser.error(problem)
    return config


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


def run_demo(config: JobConfig) -> int:
    """The demo's run. Its output folder is its own: grids of other weights (an older
    voxray's) or other settings (``--precision auto`` resolved on another machine)
    are cleared rather than refused, so the README's command keeps working."""
    cluster.connect(config.verbose, config.ray_start_timeout)
    make_demo_dataset(DEMO_INPUT)
    try:
        code = job.run(config)
    except resume.OutputConflict:
        print(f"demo: {DEMO_OUTPUT} holds grids of other weights; starting it afresh")
        shutil.rmtree(DEMO_OUTPUT)
        code = job.run(config)
    if code == job.EXIT_OK:
        print(
            f"\ndemo: input {DEMO_INPUT}, output {DEMO_OUTPUT}; "
            "see 'Reading the output' in README.md."
        )
    return code


def main(argv: list[str] | None = None) -> int:
    """The job's exit code; a failure the job explains (docs/job.md's exit
    codes) is one line on stderr, never a traceback."""
    argv = sys.argv[1:] if argv is None else argv
    config = parse_args(argv)
    return cli.run(
        lambda: run_demo(config) if not argv else job.run(config), permanent=job.SETUP_ERRORS
    )


if __name__ == "__main__":
    cluster.leave(main())
