"""The Ray cluster the job runs on: joining it (or starting a local one), the
environment every worker gets, and how many model actors of what size it can
hold. This module must never import TensorFlow, and never start Ray anywhere
but in ``connect``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

# The checkout that holds this package: a local Ray's workers import it from here.
REPO = Path(__file__).resolve().parents[1]

# Bytes reserved per model actor (TensorFlow + weights). The reservation also
# keeps Ray from packing more actors on a node than it can hold.
ACTOR_MEMORY = 2 * 1024**3

# Environment of every worker the job starts (a variable already set in the
# driver's environment, e.g. through the job's runtime_env, wins). Without the
# first four, a worker kept the high-water mark of every task it had run:
# pyarrow's jemalloc pool and glibc held a worker at 420-520 MiB after reading
# and writing 4000 rows, against 120-170 MiB with them (docs/operations.md).
# Ray Data reads Parquet footers on a pool of 32 actors by default, ~100 MiB
# each at the start of the job; two keep up with thousands of files.
WORKER_ENV = {
    "ARROW_DEFAULT_MEMORY_POOL": "system",
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "131072",
    "MALLOC_TRIM_THRESHOLD_": "131072",
    "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "2",
}


# Hides TensorFlow's and CUDA's start-up lines in every worker (a dozen per
# model actor on a CPU machine: "failed call to cuInit", oneDNN notes, ...):
# TF's own level for what it logs later, and model.devices.QUIET for what it
# prints while it loads. Not set when the user set TF_CPP_MIN_LOG_LEVEL.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "VOXRAY_QUIET_TF": "1"}


class SetupError(RuntimeError):
    """A problem found before any row was processed, explained for a person."""


def connect(verbose: bool = False) -> None:
    """Join the cluster the job was submitted to (``ray job submit`` sets
    RAY_ADDRESS for the job) or RAY_ADDRESS; else start a local Ray whose
    workers can import this checkout. Unless ``verbose``, TensorFlow's and
    CUDA's start-up logs (the workers') and Ray Data's progress bars and
    execution logs (the driver's) are hidden; the job prints its own progress.

    Raises:
        SetupError: the cluster cannot be reached or refuses this client.
    """
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    # Only variables the environment leaves unset: Ray refuses to merge a
    # runtime_env that sets a variable the job's runtime_env sets too.
    quiet = {} if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ else QUIET_ENV
    env_vars = {k: v for k, v in {**WORKER_ENV, **quiet}.items() if k not in os.environ}
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
    if not verbose:
        import logging

        import ray.data

        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False


@dataclass(frozen=True)
class ActorPool:
    """The model actors' size and count on this cluster."""

    gpus: float  # per actor
    cpus: float  # per actor
    min_actors: int
    max_actors: int


def plan_actors(
    actors: tuple[int, int] | None, gpus_per_actor: float | None, cpus_per_actor: float
) -> ActorPool:
    """The actor pool for the connected cluster: the user's choices where given,
    else as many actors as the GPUs (with GPUs) or the CPUs allow, always
    leaving one CPU for reading, decoding and writing. A pool that would not
    leave it is sized down, and says so; one actor that cannot fit is refused
    (a job must never wait for resources it cannot get).

    Raises:
        SetupError: not even one actor fits.
    """
    import ray

    resources = ray.cluster_resources()
    cluster_gpus = resources.get("GPU", 0.0)
    cluster_cpus = resources.get("CPU", 1.0)
    gpus = gpus_per_actor
    if gpus is None:
        gpus = 1.0 if cluster_gpus > 0 else 0.0
    cpus = cpus_per_actor
    if gpus > 0 and gpus > cluster_gpus:
        raise SetupError(
            f"--gpus-per-actor {gpus:g} asks for more GPUs than the cluster has "
            f"({cluster_gpus:g}); lower it, or add GPU nodes"
        )
    # Reading, decoding and writing need at least one CPU beside the actors.
    room = int((cluster_cpus - 1) // cpus) if cluster_cpus > cpus else 0
    if gpus > 0:
        room = min(room, int(cluster_gpus // gpus))
    if room < 1:
        raise SetupError(
            f"one model actor with --cpus-per-actor {cpus:g} leaves no CPU of the cluster's "
            f"{cluster_cpus:g} for reading and decoding; lower --cpus-per-actor"
        )
    if actors is None:
        # one actor per GPU, or per two CPUs: decoding needs about as many CPUs as the model
        most = int(cluster_gpus // gpus) if gpus > 0 else int(cluster_cpus // (2 * cpus))
        actors = (1, max(1, min(room, most)))
    elif actors[1] > room:
        print(
            f"warning: --actors {actors[0]},{actors[1]} x {cpus:g} CPU would leave no CPU of "
            f"{cluster_cpus:g} for reading and decoding; running at most {room} actor(s)",
            file=sys.stderr,
        )
        actors = (min(actors[0], room), room)
    return ActorPool(gpus=gpus, cpus=cpus, min_actors=actors[0], max_actors=actors[1])


def leave(code: int) -> None:
    """End the driver process with ``code``, whatever Ray's threads are doing.

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
