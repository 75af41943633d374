"""The reconstruction job as a library: ``JobConfig`` (every argument and its
default, once), ``preflight`` (the storage checks that run before Ray starts),
``build_dataset`` (the Ray Data chain) and ``run`` (all of it, returning the
exit code). ``jobs/reconstruct.py`` is only its command line.

Before Ray starts: the output is checked to be voxray's, the lease on it is
taken (its first write; ``pipeline.lease``), and only then, with no other
writer possible, every input footer is checked, the output's index says what
is committed, and the read plan keeps only the fragments with rows left to do
(``pipeline.plan``). Every commit carries the lease's generation; a driver
whose lease is taken stops at once. The chain: read those fragments in blocks
-> decode and validate (CPU tasks) -> Reconstructor actors -> shard sink,
folded into the index as it goes -> the index brought up to date and checked
(``pipeline.verify``'s cheap part) -> ``_SUCCESS``. Every input row leaves
exactly one manifest row; running the same config again resumes. The driver
never imports TensorFlow: the model's id and input size come from a one-shot
task, and the model itself lives only in the actors.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from model.defaults import BATCH_SIZE, DEFAULT_MODEL_ID, DEFAULT_WEIGHTS, GPU_BATCH_SIZE
from model.images import MAX_PIXELS
from model.voxels import THRESHOLD
from pipeline import cluster, index, inputs, io, plan, progress, resume, stops, summary, verify
from pipeline.columns import agree_with_output
from pipeline.decode import MAX_ROW_BYTES, DecodeConfig
from pipeline.layout import INDEX, LEASE, LEASES, MANIFESTS, REJECTED, RUNS, SHARDS, SUCCESS
from pipeline.lease import Lease, LeaseHeld, LeaseLost
from pipeline.repeats import CurrentInput, repeated_ids, stale_rows

# Exit codes: 0 every row accounted for; 1 the run could not finish, or Ray or
# storage was unavailable for now (rerun to resume); 2 bad arguments; 3 a
# problem no rerun gets past without a change (setup, access denied); 4 more
# failed rows than max_failed_fraction allows; 128 + the signal's number (130
# SIGINT, 143 SIGTERM) for a run stopped by a signal (pipeline.stops).
EXIT_OK, EXIT_RUN, EXIT_USAGE, EXIT_SETUP, EXIT_FAILED_ROWS = 0, 1, 2, 3, 4

# Rows per Ray Data block. Each block costs Ray a task per stage and a call of
# the actor; at 64 rows that overhead held the job to 0.67 of the model's speed
# on 2 CPUs, at 256 to 0.88 (docs/benchmarks.md). A block of 256 five-view rows
# holds 16 MB of decoded pixels at 64x64 (61 MB at 127x127).
ROWS_PER_BLOCK = 256
# Two write tasks per CPU: they wait on storage more than they compute, and
# each holds up to rows_per_shard rows, so more would only add memory.
WRITE_CPUS = 0.5
# A model actor that has not finished a batch for this long is replaced: a
# batch of 16 objects takes well under a second on a GPU and a few on one CPU
# core; a stuck process (a hung driver call, a paused container) never ends one.
STALL_TIMEOUT = 300.0
# Views a decode task reads per row at most; the manifest records how many were given.
MAX_VIEWS = 24
# Files and folders left out of the input that a run's record names (it counts all).
IGNORED_SHOWN = 20


@dataclass(frozen=True)
class JobConfig:
    """The job's arguments, each with its one default (``jobs/reconstruct.py``
    builds its flags from these).

    Args:
        input: Parquet file or folder URL.
        output: output folder URL.
        model: a ``.keras`` URL; empty for the shipped weights.
        batch_size: objects per model call; None for the device's default
            (``BATCH_SIZE`` on CPU, ``GPU_BATCH_SIZE`` on GPU).
        actors: (min, max) model actors; None to size the pool from the cluster.
        gpus_per_actor: None for 1 when the cluster has GPUs, else 0.
        cpus_per_actor: CPU reservation per actor (TensorFlow's threads on CPU).
        max_views: views used per object (the first ones).
        threshold: p(occupied) for ``occupied_voxels`` and ``iou``.
        max_failed_fraction: above it the run exits 4 and writes no ``_SUCCESS``.
        storage_options: fsspec options for every URL.
        limit: process at most this many input rows.
        rows_per_shard: the most rows in one shard file.
        rows_per_block: input rows per Ray Data block.
        max_pixels: images whose header claims more are refused undecoded.
        max_row_bytes: rows whose views hold more encoded bytes are refused undecoded.
        io_retry_seconds: how long each write retries a storage outage.
        precision: "auto", "fp32" or "bf16".
        skip_bad_files: read around input files that cannot be read or whose
            columns do not fit (each is named in the summary) instead of stopping.
        stall_timeout: seconds after which a model actor whose batch has not
            finished (or, when no actor finishes one, that has finished none) is
            replaced.
        verbose: let TensorFlow, CUDA and Ray Data print their start-up logs.
        xla: "auto" (off where it was measured slower: CPU; off and unmeasured on
            GPU), "on" (view counts padded to ``VIEW_BUCKETS``: one compile per
            bucket) or "off".
        stand_in: a ``model.standin`` spec: a stand-in device in place of the
            model, for benchmarks and fault tests; its rows carry a ``stand-in``
            model id, so its output never mixes with a real model's.
        ray_start_timeout: seconds a local Ray may take to start.
        moved_from: the input URL the output's rows were committed from, for a
            catalog moved since (``--moved-from``): each file the output holds
            under it must be at the same place under ``input`` with the same
            content, else the run is refused. Without it a moved or renamed
            file is still found by its content.
        take_lease: take the output at once from a lease this host cannot judge
            (another host's, or an unreadable ``_LEASE``) instead of watching it
            for one time-to-live; a live driver on this host is still refused.
        allow_mixed: add rows to an output whose rows were made with another
            model, image size, threshold, max views or precision, instead of
            refusing the run (``pipeline.resume.check_settings``); ``_SUCCESS``
            then lists what is mixed.
    """

    input: str
    output: str
    model: str = ""
    batch_size: int | None = None
    actors: tuple[int, int] | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    max_views: int = MAX_VIEWS
    threshold: float = THRESHOLD
    max_failed_fraction: float = 1.0
    storage_options: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    rows_per_shard: int = 1024
    rows_per_block: int = ROWS_PER_BLOCK
    max_pixels: int = MAX_PIXELS
    max_row_bytes: int = MAX_ROW_BYTES
    io_retry_seconds: float = io.RETRY_SECONDS
    precision: str = "auto"
    skip_bad_files: bool = False
    stall_timeout: float = STALL_TIMEOUT
    verbose: bool = False
    take_lease: bool = False
    xla: str = "auto"
    stand_in: str = ""
    ray_start_timeout: float = cluster.RAY_START_SECONDS
    moved_from: str = ""
    allow_mixed: bool = False

    def problems(self) -> list[str]:
        """What is wrong with these arguments, phrased with the job's flags."""
        found = [
            f"--{name.replace('_', '-')} must be >= 1"
            for name in (
                "batch_size",
                "max_views",
                "rows_per_shard",
                "rows_per_block",
                "max_pixels",
                "max_row_bytes",
            )
            if getattr(self, name) is not None and getattr(self, name) < 1
        ]
        if self.limit is not None and self.limit < 0:
            found.append("--limit must be >= 0")
        if not 0.0 <= self.threshold <= 1.0:
            found.append("--threshold must be in [0, 1]")
        if not 0.0 <= self.max_failed_fraction <= 1.0:
            found.append("--max-failed-fraction must be in [0, 1]")
        if self.cpus_per_actor <= 0:
            found.append("--cpus-per-actor must be > 0")
        if self.io_retry_seconds < 0:
            found.append("--io-retry-seconds must be >= 0")
        if self.stall_timeout <= 0:
            found.append("--stall-timeout must be > 0")
        if self.ray_start_timeout <= 0:
            found.append("--ray-start-timeout must be > 0")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            found.append("--gpus-per-actor must be >= 0")
        if self.xla not in ("auto", "on", "off"):
            found.append("--xla must be one of auto, on, off")
        if self.stand_in:
            from model.standin import StandInSpec

            try:
                StandInSpec.parse(self.stand_in)
            except ValueError as exc:
                found.append(str(exc))
            if self.model:
                found.append("--stand-in replaces the model: give --model or --stand-in, not both")
        found += io.overlap_problems(self.input, self.output)
        return found

    def device_batch_size(self, gpus_per_actor: float) -> int:
        """Objects per model call: the user's, else the device's default."""
        if self.batch_size is not None:
            return self.batch_size
        return GPU_BATCH_SIZE if gpus_per_actor > 0 else BATCH_SIZE

    def options(self, url: str) -> dict[str, Any]:
        """Storage options for ``url``, resolved here on the driver (endpoint and
        region included) so that every worker uses the endpoint the driver checked."""
        return io.storage_options(url, self.storage_options) if url else {}


@dataclass(frozen=True)
class Preflight:
    """What the storage checks found, before Ray starts."""

    scan: inputs.Scan  # every input file's footer
    committed: resume.Committed  # what earlier runs committed to the output
    read_plan: plan.ReadPlan  # the fragments this run reads
    previous: dict[str, Any] | None  # the output's _SUCCESS, if any


def preflight(config: JobConfig) -> Preflight:
    """Check the input, the output and the model on storage and plan the read;
    nothing is written.

    Raises:
        io.StorageError: a missing or unreadable input, output or model; input
            files that cannot be read or whose columns do not fit (unless
            ``skip_bad_files``); an input file changed since rows of it were
            committed.
    """
    in_options = config.options(config.input)
    out_options = config.options(config.output)
    scan = scan_input(config.input, in_options, config.skip_bad_files)
    try:
        check_output(config.output, out_options)
        committed = resume.load_committed(config.output, out_options)
        previous = summary.read_success(config.output, out_options)
    except ForeignOutput:
        raise
    except Exception as exc:
        raise io.explain(exc, config.output, "output", out_options) from None
    scan = agree_with_output(scan, committed.types)  # carried types as the output holds them
    files = _input_files(scan)
    try:
        moved = _moved(config, out_options, held=True)
        read_plan = plan.plan(files, committed.coverage, config.limit, moved)
    except plan.InputChanged as exc:
        raise io.StorageError(str(exc)) from None
    if read_plan.unmatched_legacy and read_plan.fragments:
        # an older voxray keyed files by the path as typed and their mtime/ETag:
        # the same catalog reached another way, or moved, is not recognised
        print(
            f"warning: the output holds rows of {read_plan.unmatched_legacy:,} input file(s) "
            "an older voxray keyed by path and mtime/ETag, and no input file matches them. "
            "If --input is that catalog moved, stop and rerun with --moved-from OLD_INPUT_URL; "
            "else their rows are kept and this input's are added.",
            file=sys.stderr,
        )
    if config.model:
        model_options = config.options(config.model)
        try:
            found = io.exists(config.model, model_options)
        except Exception as exc:
            raise io.explain(exc, config.model, "model", model_options) from None
        if not found:
            raise io.StorageError(f"cannot use model {config.model}: it does not exist.")
    return Preflight(scan=scan, committed=committed, read_plan=read_plan, previous=previous)


def _input_files(scan: inputs.Scan) -> list[plan.InputFile]:
    """What planning needs of the usable input files, each by its canonical URL
    (its key's name part: one spelling per file)."""
    return [
        plan.InputFile(io.canonical_url(f.url), f.size, f.version or "", f.row_groups, f.content)
        for f in scan.usable
    ]


def _moved(config: JobConfig, out_options: dict[str, Any], held: bool) -> plan.Moved | None:
    """``--moved-from`` as planning takes it; with ``held``, the files the
    output's run records name under the old URL (each must be found again)."""
    if not config.moved_from:
        return None
    old, new = io.canonical_url(config.moved_from), io.canonical_url(config.input)
    names = None
    if held:
        names = {}
        prefix = old.rstrip("/") + "/"
        for record in summary.read_runs(config.output, out_options):
            for name, url in (record.get("input_files") or {}).items():
                if url == old or url.startswith(prefix):
                    names[name] = url
    return plan.Moved(old, new, names)


def identity_fields(read_plan: plan.ReadPlan) -> dict[str, Any]:
    """How this run matched input files to the output, for its record and
    report: files adopted by content or by --moved-from, files with the same
    content as another (read once), files on an older voxray's keys, and the
    key name of each file it reads (what a later --moved-from checks)."""
    return {
        "adopted_files": len(read_plan.adopted),
        "adopted_examples": [f"{url} ({how})" for url, how in read_plan.adopted[:5]],
        "duplicate_files": {url: first for url, first in read_plan.duplicates},
        "legacy_files": read_plan.legacy_files,
        "input_files": read_plan.names,
    }


class ForeignOutput(io.StorageError):
    """The output folder holds files that look like results but are not voxray's."""


# What a voxray output holds at its top level; anything else that looks like
# data (another tool's _SUCCESS, Parquet or npz files, part-* files) is foreign.
OUTPUT_NAMES = {SUCCESS, LEASE, LEASES, SHARDS, MANIFESTS, INDEX, RUNS, REJECTED}
LOOKS_LIKE_DATA = (".parquet", ".npz", ".csv", ".json", ".crc", ".orc", ".avro")


def check_output(output: str, options: dict[str, Any]) -> None:
    """Refuse an output folder that holds another tool's results.

    Raises:
        ForeignOutput: naming the files that are not voxray's.
    """
    foreign = [
        name
        for name in io.list_names(output, options)
        if name not in OUTPUT_NAMES
        and (name.endswith(LOOKS_LIKE_DATA) or name.startswith(("part-", "_")))
    ]
    success = io.join(output, SUCCESS)
    if io.exists(success, options):
        try:
            if "model" not in json.loads(io.read_bytes(success, options)):
                raise ValueError
        except ValueError:
            foreign.insert(0, f"{SUCCESS} (not voxray's summary)")
    if foreign:
        raise ForeignOutput(
            f"cannot use output {output}: it holds files that are not voxray's "
            f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}). Write the "
            "results to an empty folder, or to an output an earlier voxray run wrote."
        )


def scan_input(url: str, options: dict[str, Any], skip_bad_files: bool = False) -> inputs.Scan:
    """Every input file's footer, checked against the input contract. The
    files are those ``io.list_input`` finds (names starting with ``_`` or
    ``.`` left out, Parquet by suffix or, for a name without one, by content);
    what is left out is printed and kept in ``Scan.skipped``.

    Raises:
        io.StorageError: a missing input, one without Parquet files, or (unless
            ``skip_bad_files``) files that cannot be read or do not fit, named.
    """
    try:
        # one spelling per location: the files' URLs key what the output holds
        listing = io.list_input(io.canonical_url(url), options)
    except Exception as exc:
        raise io.explain(exc, url, "input", options) from None
    scan = inputs.scan(listing.files, options, details=listing.details) if listing.files else None
    if scan is not None:
        scan = _set_aside_non_parquet(scan, listing, options)
    left_out = replace(listing, skipped=scan.skipped if scan else listing.skipped).report()
    if scan is None or not (scan.files or scan.unreadable):
        raise io.StorageError(
            f"cannot use input {url}: it holds no Parquet files.\n{left_out}".strip()
        )
    if left_out:
        print(f"input: {left_out}")
    if not scan.usable:
        raise io.StorageError(f"cannot use input {url}: no file can be used.\n{scan.report()}")
    if not scan.ok:
        if not skip_bad_files:
            raise io.StorageError(
                f"cannot use input {url}: some files cannot be read or do not fit the input "
                f"contract; fix or remove them, or pass --skip-bad-files to read around them.\n"
                f"{scan.report()}"
            )
        print(f"warning: reading around bad input files (--skip-bad-files)\n{scan.report()}")
    return scan


def _set_aside_non_parquet(
    scan: inputs.Scan, listing: io.Listing, options: dict[str, Any]
) -> inputs.Scan:
    """The scan with the files whose names have no suffix and whose footer
    read failed because they are not Parquet at all (no ``PAR1`` at their
    start: a ``README``, a log) moved from ``unreadable`` to ``skipped``; a
    damaged Parquet file stays unreadable."""
    unreadable, skipped = [], list(listing.skipped)
    for bad in scan.unreadable:
        try:
            if bad.url in listing.bare and not io.is_parquet(bad.url, options):
                skipped.append((bad.url, "not Parquet (no PAR1 at its start)"))
                continue
        except Exception:
            pass  # unreadable as it was: its reason is the footer read's
        unreadable.append(bad)
    scan.unreadable, scan.skipped = unreadable, skipped
    return scan


def probe_model(config: JobConfig, gpus: float = 0.0) -> dict[str, Any]:
    """The model's id, input size and precision (resolved on the device of an
    actor with ``gpus`` GPUs), from a one-shot task holding those GPUs
    (TensorFlow stays out of the driver; the task's process exits after it).

    Raises:
        cluster.SetupError: the model cannot be loaded.
    """
    import ray

    from pipeline.infer import probe_model as probe

    if config.stand_in:
        return probe(config.model, {}, config.stand_in, config.precision)
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_calls=1)(probe)
    try:
        options = config.options(config.model)
        return ray.get(task.remote(config.model, options, "", config.precision, gpus))
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        raise cluster.SetupError(
            f"cannot load model {config.model or '(shipped weights)'}: "
            f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1][:300]}"
        ) from None


def build_dataset(
    config: JobConfig,
    found: Preflight,
    image_size: int,
    pool: cluster.ActorPool,
    stats: Any = None,
):
    """The job's Ray Data chain, up to (not including) the sink."""
    import ray.data

    from pipeline.decode import decode_batch
    from pipeline.infer import InferConfig, Reconstruct
    from pipeline.source import CatalogSource

    decode_config = DecodeConfig(
        image_size=image_size,
        max_views=config.max_views,
        max_pixels=config.max_pixels,
        max_row_bytes=config.max_row_bytes,
    )
    batch_size = config.device_batch_size(pool.gpus)
    infer_config = InferConfig(
        model=config.model,
        image_size=image_size,
        batch_size=batch_size,
        threshold=config.threshold,
        gpus=pool.gpus,
        cpus=pool.cpus,
        precision=config.precision,
        storage_options=config.options(config.model),
        stats=stats,
        xla=config.xla,
        stand_in=config.stand_in,
        stall_timeout=config.stall_timeout,
    )
    # The reader yields blocks of rows_per_block rows with their row keys, and
    # only the rows the output lacks: committed fragments are not in the plan.
    source = CatalogSource(
        found.read_plan,
        found.scan.schema,
        config.rows_per_block,
        config.options(config.input),
        config.io_retry_seconds,
        files=_input_files(found.scan),
    )
    ds = ray.data.read_datasource(source, override_num_blocks=len(source.groups))
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={"config": decode_config},
        batch_format="pyarrow",
        batch_size=max(1, min(batch_size, 32)),
        num_cpus=1,
    )
    return ds.map_batches(
        Reconstruct,
        fn_constructor_kwargs={"config": infer_config},
        compute=ray.data.ActorPoolStrategy(
            min_size=pool.min_actors,
            max_size=pool.max_actors,
            # Two calls in flight per actor: one call's host work (Ray Data's
            # fetch and batching, the actor's packing and output) runs while the
            # other's is on the device; the actor lets one device call run at a
            # time. One call at a time left the actor's core ~15% short of the
            # model's own speed on CPU, and a GPU idle during host work.
            max_concurrent_calls_per_actor=2,
        ),
        # A call takes a whole block (or more, for a big model batch): Ray's cost
        # per call is paid per block, and the actor groups the block's rows by
        # view count, which a call of one model batch could not.
        batch_size=max(batch_size, config.rows_per_block),
        batch_format="pyarrow",
        num_cpus=pool.cpus,
        num_gpus=pool.gpus,
        # A memory reservation keeps Ray from packing more TensorFlow actors on a
        # node than it can hold; it also keeps decoding in its own CPU tasks, which
        # Ray Data would otherwise fuse into the actors whenever both reserve the
        # same resources (always on a CPU-only cluster).
        memory=cluster.ACTOR_MEMORY,
    )


def run(config: JobConfig) -> int:
    """Run the job on Ray (joining or starting it); returns the exit code.

    Raises:
        io.StorageError, cluster.SetupError, resume.OutputConflict, LeaseHeld:
            a setup problem, found before any row was processed (exit code 3).
    """
    started = time.monotonic()
    out_options = config.options(config.output)
    try:
        check_output(config.output, out_options)  # nothing is written into another tool's folder
    except ForeignOutput:
        raise
    except Exception as exc:
        raise io.explain(exc, config.output, "output", out_options) from None
    lease = Lease(config.output, out_options, take=config.take_lease)
    try:
        # The job's first write: an output that cannot be written fails here.
        lease.acquire()
    except LeaseHeld:
        raise  # already says what to do
    except Exception as exc:
        raise io.explain(exc, config.output, "output", out_options) from None
    found, run_name = None, None
    try:
        # Planned with the lease held: no other writer can commit under the plan.
        # Storage problems surface here, before Ray starts and before any row is read.
        found = preflight(config)
        # What the rows will mean, checked against what the output holds: the
        # flags' settings before Ray starts, the model's once it is probed.
        previous_model = (found.previous or {}).get("model")
        held = found.committed.held
        resume.check_settings(
            config.output, held, _settings(config), config.allow_mixed, previous_model
        )
        probed = _probe(config, found)
        resume.check_settings(
            config.output, held, _settings(config, probed), config.allow_mixed, previous_model
        )
        record = {
            "generation": lease.generation,
            "host": lease.host,
            "arguments": asdict(config),
            **identity_fields(found.read_plan),
            "image_size": probed["image_size"],
            "precision": probed["precision"],
        }
        run_name = summary.start_run(config.output, io.redact(record), out_options)
        return _run(config, found, probed, started, lease, run_name)
    except LeaseLost:
        print(f"error: {_lost(lease)}", file=sys.stderr)
        return EXIT_RUN
    except stops.Interrupted as stop:
        stop.taken()
        if found is not None:
            stop.rows_committed = _interrupted(config, found, started, run_name)
        else:
            cluster.end_work()
        raise
    finally:
        _release(lease)


def _release(lease: Lease) -> None:
    """Give the lease up; storage that does not answer now (the outage that
    stopped the run) leaves it to expire instead of hiding the exit code."""
    try:
        lease.release()
    except Exception as exc:
        print(
            f"warning: the lease {lease.url} was not removed ({type(exc).__name__}); a rerun "
            f"takes it over once it is {lease.ttl:g} s old (at once on this host)",
            file=sys.stderr,
        )


def _lost(lease: Lease) -> str:
    return (
        f"{lease.lost or 'a newer run took over the output'}. This run (generation "
        f"{lease.generation}) stopped at once; its rows committed before the takeover are "
        "kept, and none it committed after counts. Let the other run finish."
    )


def _settings(config: JobConfig, probed: dict[str, Any] | None = None) -> resume.Settings:
    """What this run's rows will mean, as far as known: before the model is
    probed, the flags' own settings (precision only when given as fp32 or
    bf16) and what is known without loading a model (the shipped weights' id,
    a stand-in's id and size); then the probed model's."""
    if probed is None:
        probed = {"model_id": None if config.model else DEFAULT_MODEL_ID}
        if config.stand_in:  # answered without Ray
            probed = probe_model(config)
    precision = probed.get("precision") or (
        None if config.precision == "auto" else config.precision
    )
    return resume.Settings(
        model=probed.get("model_id"),
        image_size=probed.get("image_size"),
        threshold=config.threshold,
        max_views=config.max_views,
        precision=precision,
    )


def _probe(config: JobConfig, found: Preflight) -> dict[str, Any]:
    """``{"model_id", "image_size", "precision", "pool"}`` of this run: the
    model probed on the device its actors get (``pool``: the actor pool
    planned for the cluster, Ray connected). A stand-in answers without Ray;
    with nothing left to do, no model is loaded for nothing (the shipped
    weights' id is known) and no pool is planned: image size and an "auto"
    precision stay unknown (no row is written)."""
    if config.stand_in:
        return {**probe_model(config), "pool": None}
    if not found.read_plan.fragments:
        model_id, image_size = DEFAULT_MODEL_ID, None
        if config.model:
            cluster.connect(config.verbose, config.ray_start_timeout)
            model_id = probe_model(config)["model_id"]
        precision = None if config.precision == "auto" else config.precision
        return {
            "model_id": model_id,
            "image_size": image_size,
            "precision": precision,
            "pool": None,
        }
    cluster.connect(config.verbose, config.ray_start_timeout)
    pool = cluster.plan_actors(config.actors, config.gpus_per_actor, config.cpus_per_actor)
    return {**probe_model(config, pool.gpus), "pool": pool}


def _run(
    config: JobConfig,
    found: Preflight,
    probed: dict[str, Any],
    started: float,
    lease: Lease,
    run_name: str,
) -> int:
    from pipeline.sink import ShardSink

    out_options = config.options(config.output)
    committed, read_plan = found.committed, found.read_plan
    if committed.rows:
        print(
            f"resume: {committed.rows:,} rows already committed under {config.output}; "
            f"{read_plan.rows_committed:,} of this run's {read_plan.rows_total:,} input rows "
            "are among them and are not read again"
        )
    model_id = probed["model_id"]
    if not read_plan.fragments:
        return _nothing_to_do(config, found, started, model_id, lease, run_name)
    cluster.connect(config.verbose, config.ray_start_timeout)  # a stand-in's run probed without
    try:
        # _SUCCESS is written last; a stale one must not vouch for this run's output.
        io.remove(io.join(config.output, SUCCESS), out_options)
    except Exception as exc:
        raise io.explain(exc, config.output, "output", out_options) from None

    pool = probed["pool"] or cluster.plan_actors(
        config.actors, config.gpus_per_actor, config.cpus_per_actor
    )
    stats = progress.start()
    sink = ShardSink(
        config.output,
        out_options,
        rows_per_shard=config.rows_per_shard,
        retry_seconds=config.io_retry_seconds,
        stats=stats,
        generation=lease.generation,
    )
    ds = build_dataset(config, found, probed["image_size"], pool, stats)
    print(f"reading {read_plan.rows_todo:,} rows in {len(read_plan.fragments):,} fragments")
    try:
        # Writing is mostly waiting on storage; with a whole CPU each, write tasks
        # queued behind decode tasks for the CPUs the actors leave, and shards
        # committed only when decoding was done (what a crash would lose).
        with (
            index.folding(
                config.output, out_options, fence=lease.check, generation=lease.generation
            ),
            progress.reporting(stats, read_plan.rows_todo, config.stall_timeout),
        ):
            ds.write_datasink(sink, ray_remote_args={"num_cpus": WRITE_CPUS})
    except Exception as exc:
        if lease.lost or "StaleGeneration" in repr(exc):
            print(f"error: {_lost(lease)}", file=sys.stderr)
            return EXIT_RUN
        changed = _input_changed(exc)
        if changed is not None:
            print(f"error: the run stopped: {changed}", file=sys.stderr)
            return EXIT_RUN
        cause = io.permanent_cause(exc)
        if cause is not None:
            print(
                f"error: the run stopped: {cause}. Committed rows are kept; fix that, then "
                "rerun the same command to resume.",
                file=sys.stderr,
            )
            return EXIT_SETUP
        print(
            f"error: the run stopped before every row was committed ({root_cause(exc)}). "
            "Committed rows are kept: rerun the same command to resume. (Ray Data's log, "
            "ray-data.log in the Ray session's logs folder, holds the trace.)",
            file=sys.stderr,
        )
        return EXIT_RUN
    time.sleep(1.2 * progress.BEAT_SECONDS)  # the actors' last beats, for the report
    stats_now = progress.snapshot(stats)
    precisions = stats_now["precisions"]
    return _finish(
        config,
        found,
        started,
        model_id=model_id,
        precision=",".join(precisions) or config.precision,
        rows_ok=sink.totals["rows_ok"],
        rows_failed=sink.totals["rows_failed"],
        shards=sink.totals["shards"],
        lease=lease,
        run_name=run_name,
        actors={**stats_now["actors"], "stats_messages": stats_now["messages"]},
    )


def root_cause(exc: BaseException) -> str:
    """``Type: message`` of the error behind ``exc``. Ray wraps a task's own
    error in RayTaskError and Ray Data in UserCodeException, whose own message
    is a retry hint; the worker's traceback is in their text, and its last
    ``Type: message`` line that is not a wrapper's is the cause."""
    texts, outer = [], type(exc).__name__
    while exc is not None and len(texts) < 8:
        texts.append(str(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__
    found = None
    for text in texts:
        for line in text.splitlines():
            match = _ERROR_LINE.match(line)
            if match and match.group(1).rsplit(".", 1)[-1] not in _WRAPPERS:
                found = f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2).strip()}"
    if found is None:
        text = texts[0].strip()
        found = f"{outer}: {text.splitlines()[-1]}" if text else outer
    return found[:400]


def _input_changed(exc: BaseException) -> str | None:
    """The message of an ``inputs.InputChangedDuringRun`` behind ``exc`` (a read
    task's error reaches the driver wrapped by Ray, and perhaps only as text)."""
    texts = []
    while exc is not None and len(texts) < 8:
        if type(exc) is inputs.InputChangedDuringRun:  # not a wrapper posing as one
            return str(exc)
        texts.append(str(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__
    for text in texts:
        for line in text.splitlines():
            found = _CHANGED_LINE.match(line)
            if found:
                return found.group(1).strip()
    return None


_CHANGED_LINE = re.compile(r"^\s*(?:[\w.]+\.)?InputChangedDuringRun: (.+)$")
_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Failed|Exit))(?:\(.*?\))?: (.+)$")
_WRAPPERS = {"RayTaskError", "UserCodeException", "RayDataUserCodeException", "RayActorError"}


def _interrupted(
    config: JobConfig, found: Preflight, started: float, run_name: str | None
) -> int | None:
    """After a stop: end Ray's work (no write may commit once the lease is
    gone), count the rows this run committed from the output itself, and
    record the run as interrupted. Returns that count (None if storage did not
    answer: the stop goes on, the rerun finds out)."""
    cluster.end_work()
    out_options = config.options(config.output)
    try:
        now = resume.load_committed(config.output, out_options)
        before = found.committed
        report = summary.build_summary(
            rows_ok=now.rows_ok - before.rows_ok,
            rows_failed=now.rows_failed - before.rows_failed,
            rows_skipped=found.read_plan.rows_committed,
            wall_s=time.monotonic() - started,
            # one model per output unless mixed on purpose (resume.check_settings)
            model=min(now.models, default=None),
            output=config.output,
            arguments=asdict(config),
            committed_before={"rows_ok": before.rows_ok, "rows_failed": before.rows_failed},
            status=summary.INTERRUPTED,
        )
        report.update(identity_fields(found.read_plan))
        summary.record_run(config.output, report, out_options, run_name, status=summary.INTERRUPTED)
    except Exception as exc:
        print(f"warning: the stopped run was not recorded: {exc!r}"[:300], file=sys.stderr)
        return None
    return now.rows - before.rows


def _nothing_to_do(
    config: JobConfig,
    found: Preflight,
    started: float,
    model_id: str,
    lease: Lease,
    run_name: str,
) -> int:
    """Every input row is committed: say so, start no actor, bring the index up
    to date and check the output as every finishing run does, keep the figures
    of the runs that did the work (``_SUCCESS`` is rewritten only if missing or
    wrong)."""
    print(f"nothing to do: all {found.read_plan.rows_total:,} input rows are committed")
    return _finish(
        config,
        found,
        started,
        model_id=model_id,
        precision=None,
        rows_ok=0,
        rows_failed=0,
        shards=0,
        lease=lease,
        run_name=run_name,
    )


def _watched(
    config: JobConfig, found: Preflight, current: index.State, coverage: plan.Coverage
) -> dict[str, Any]:
    """The figures of repeated work and of stale rows the run reports
    (``pipeline.repeats``): ids with several rows (and from several input
    files), how many more than before this run, and committed rows of input
    files that are gone."""
    counted = io.retrying(
        lambda: repeated_ids(current, config.options(config.output)), config.io_retry_seconds
    )
    gone = stale_rows(coverage, CurrentInput.from_scan(found.scan))
    figures: dict[str, Any] = counted.fields()
    before = 0  # an output that held nothing repeated nothing
    if found.committed.rows:
        before = summary.last_figure(
            config.output, config.options(config.output), found.previous, "duplicate_ids"
        )
    figures["duplicate_ids_grew_by"] = None if before is None else counted.ids - before
    figures["duplicates_count_s"] = round(counted.seconds, 3)
    figures["rows_stale"] = gone.rows
    figures["stale_files"] = len(gone.files)
    return figures


def _finish(
    config: JobConfig,
    found: Preflight,
    started: float,
    *,
    model_id: str,
    precision: str | None,
    rows_ok: int,
    rows_failed: int,
    shards: int,
    lease: Lease,
    run_name: str,
    actors: dict[str, Any] | None = None,
) -> int:
    """Bring the index up to date and check the output (``pipeline.verify``'s
    cheap part), record the run, write ``_SUCCESS`` (unless rows are left to do,
    grids are gone, too many rows failed, or nothing was done and it holds),
    print the report; the exit code."""
    out_options = config.options(config.output)
    committed = found.committed
    # What the output holds now, as every reader will see it: the index folded
    # (a fold a crash interrupted is completed here) and checked.
    io.retrying(
        lambda: index.fold(config.output, out_options, lease.check, lease.generation),
        config.io_retry_seconds,
    )
    current = index.state(config.output, out_options)
    checked = verify.check(config.output, out_options, current=current)
    files = _input_files(found.scan)
    coverage = current.coverage()
    moved = _moved(config, out_options, held=False)
    left = plan.plan(files, coverage, config.limit, moved).rows_todo
    watched = _watched(config, found, current, coverage)
    report = summary.build_summary(
        rows_ok=rows_ok,
        rows_failed=rows_failed,
        rows_skipped=found.read_plan.rows_committed,
        wall_s=time.monotonic() - started,
        model=model_id,
        output=config.output,
        arguments=asdict(config),
        committed_before={"rows_ok": committed.rows_ok, "rows_failed": committed.rows_failed},
        shards=shards,
    )
    report["model_path"] = config.model or str(DEFAULT_WEIGHTS)
    report["precision"] = precision
    if actors is not None:  # the model actors' own figures (docs/benchmarks.md)
        report["actors"] = actors
    report["skipped_files"] = [str(u) for u in found.scan.unreadable] + found.scan.problems
    report["ignored_files"] = {  # not input by their names or content (io.list_input)
        "count": len(found.scan.skipped),
        "first": [f"{url}: {why}" for url, why in found.scan.skipped[:IGNORED_SHOWN]],
    }
    report["generation"] = lease.generation
    report.update(identity_fields(found.read_plan))
    report.update(summary.output_totals(current.counts(), current.keys()))
    report.update(watched)
    runs = io.retrying(
        lambda: summary.record_run(config.output, report, out_options, run_name),
        config.io_retry_seconds,
    )
    # What the output's rows mean now, this run's included (its record names them).
    held = resume.held_settings(current, runs)
    if checked.problems:
        print(checked.format(), file=sys.stderr)
    if checked.damaged:
        print(
            f"error: {len(checked.damaged)} manifest(s) of {config.output} count rows as ok "
            f"whose grids are gone or damaged (above). Run `python jobs/verify.py "
            f"{config.output} --repair` (it sets them aside), then rerun this command to redo "
            "their rows.",
            file=sys.stderr,
        )
        lease.check()
        io.remove(io.join(config.output, SUCCESS), out_options)  # it vouches no more
        return EXIT_SETUP
    if any(f.repair == verify.SET_ASIDE for f in checked.problems):
        print(
            "warning: the files above do not count (readers skip them); `python jobs/verify.py "
            f"{config.output} --repair` moves them to {REJECTED}/",
            file=sys.stderr,
        )
    if left:
        print(
            f"error: {left:,} input rows are not committed (a writer that was taken over "
            "committed them, and its commits do not count). Rerun the same command to "
            "commit them.",
            file=sys.stderr,
        )
        return EXIT_RUN
    passed = report["failed_fraction"] <= config.max_failed_fraction
    success_url = None
    if passed:
        lease.check()  # only the output's holder vouches for it
        vouched = not any(f.repair == verify.UNVOUCH for f in checked.findings)
        if rows_ok + rows_failed == 0 and found.previous is not None and vouched:
            success_url = io.join(config.output, SUCCESS)  # the working runs' figures stay
            if any(found.previous.get(k) != watched[k] for k in summary.WATCHED):
                # ... but what the output holds now (a file gone, ids repeated) is current
                io.retrying(
                    lambda: summary.write_success(
                        config.output,
                        {**found.previous, **{k: watched[k] for k in summary.WATCHED}},
                        out_options,
                    ),
                    config.io_retry_seconds,
                )
        else:
            final = {
                **report,
                **summary.history(runs),
                "settings": {k: list(v) for k, v in held.values.items()},
                "precisions": held.precision_rows,
                "mixed": held.mixed(),
            }
            final.pop("input_files")  # one entry per file read: the run record keeps it
            success_url = io.retrying(
                lambda: summary.write_success(config.output, final, out_options),
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


# What run() raises for a problem found before any row was processed (exit 3;
# but cluster.RayUnavailable and io.StorageUnavailable, which may pass by
# themselves, exit 1: pipeline.cli.run).
SETUP_ERRORS = (cluster.SetupError, io.StorageError, resume.OutputConflict, LeaseHeld)
