"""The Ray cluster the job runs on: joining it (or starting a local one), the
environment every worker gets, and how many model actors of what size it can
hold. This module must never import TensorFlow, and never start Ray anywhere
but in ``connect``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline import stops

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
# prints while it loads. A TF_CPP_MIN_LOG_LEVEL the user set is kept as it is
# (3 hides more, 0 shows TF's own logs); the start-up lines stay hidden either way.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "VOXRAY_QUIET_TF": "1"}

# How long a local Ray may take to start (its GCS to come up and its node to
# register), over as many attempts as fit. Ray's own waits are 30 s each, which
# a busy machine passes now and then; the unchanged rerun then succeeds.
RAY_START_SECONDS = 120.0
# Ray's GCS wait, in whole seconds; also how many seconds a driver tries to
# reach the GCS of a cluster it joins. A value the user set is kept.
_GCS_WAIT = "RAY_gcs_server_port_wait_time_s"
# Ray's logger of the warning, at every local start, that token authentication
# is on (it stays on; the warning is hidden). The dashboard URL, with its ANSI
# colours, is an INFO line: hidden by ray.init's logging level.
_AUTH_LOGGER = "ray._private.authentication"


class SetupError(RuntimeError):
    """A problem found before any row was processed, explained for a person;
    the same command cannot succeed without a change (exit 3)."""


class RayUnavailable(RuntimeError):
    """Ray could not be started or reached in time: a busy machine, a cluster
    restarting. The unchanged command may succeed later (exit 1)."""


def connect(
    verbose: bool = False, start_timeout: float = RAY_START_SECONDS, num_cpus: int | None = None
) -> None:
    """Join the cluster the job was submitted to (``ray job submit`` sets
    RAY_ADDRESS for the job) or RAY_ADDRESS; else start a local Ray whose
    workers can import this checkout, with ``num_cpus`` CPUs (None: the
    machine's), waiting up to ``start_timeout`` seconds for it. Unless
    ``verbose``, TensorFlow's and CUDA's start-up logs (the workers'), Ray's
    start-up notices and Ray Data's progress bars and execution logs (the
    driver's) are hidden; the job prints its own progress.
    The process's SIGINT and SIGTERM handlers survive (``pipeline.stops``).

    Raises:
        SetupError: the cluster refuses this client.
        RayUnavailable: Ray did not start, or could not be reached, in time.
    """
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    # Only variables the environment leaves unset: Ray refuses to merge a
    # runtime_env that sets a variable the job's runtime_env sets too.
    quiet = {} if verbose else QUIET_ENV
    env_vars = {k: v for k, v in {**WORKER_ENV, **quiet}.items() if k not in os.environ}
    footers = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"
    os.environ.setdefault(footers, WORKER_ENV[footers])  # read by Ray Data in the driver too
    if not verbose:
        logging.getLogger(_AUTH_LOGGER).setLevel(logging.ERROR)
    if address:
        options: dict = {"runtime_env": {"env_vars": env_vars}}
    else:
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        options = {
            "runtime_env": {"env_vars": {**env_vars, "PYTHONPATH": path}},
            "num_cpus": num_cpus,
        }
    deadline = time.monotonic() + start_timeout
    while True:
        before = _descendants()
        try:
            with stops.kept(), _gcs_wait(deadline):
                ray.init(
                    address=address or "local",
                    logging_level=logging.INFO if verbose else logging.WARNING,
                    **options,
                )
            break
        except Exception as exc:
            # A failed start leaves what it started (a GCS server, a raylet).
            _end([p for p in _descendants() if p not in before], patience=0)
            problem = _classify(exc, address, start_timeout)
            if (
                isinstance(problem, RayUnavailable)
                and not address
                and time.monotonic() < deadline - 1
            ):
                continue
            raise problem from None
    if not verbose:
        import ray.data

        # Ray Data's console lines (a failed task's traceback among them) go;
        # its log file (ray-data.log in the session's logs) keeps them all.
        for handler in logging.getLogger("ray.data").handlers:
            if getattr(handler, "stream", None) in (sys.stderr, sys.stdout):
                handler.setLevel(logging.CRITICAL + 1)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        _absorb_constructor_notice()


def _classify(exc: Exception, address: str | None, start_timeout: float) -> Exception:
    text = str(exc)
    where = f"the Ray cluster at {address}" if address else "a local Ray"
    if "uthentication" in text or "token" in text.lower():
        return SetupError(
            f"{where} refused this client: it requires a token. Set RAY_AUTH_TOKEN (or "
            "~/.ray/auth_token) to the cluster's token, with RAY_AUTH_MODE=token."
        )
    if isinstance(exc, TimeoutError | ConnectionError) or "timed out" in text.lower():
        hint = (
            f"check RAY_ADDRESS ({address}) and that the cluster is up, then rerun the same command"
            if address
            else f"the machine may be busy: rerun the same command, or give Ray longer with "
            f"--ray-start-timeout (this run waited {start_timeout:g} s)"
        )
        return RayUnavailable(f"{where} did not answer in time ({text.strip()[:200]}); {hint}")
    return SetupError(f"cannot start or join {where}: {type(exc).__name__}: {text[:300]}")


@contextlib.contextmanager
def _gcs_wait(deadline: float) -> Iterator[None]:
    """Ray's GCS wait set to the seconds left before ``deadline`` (unless the
    user set it), for one ``ray.init``."""
    if _GCS_WAIT in os.environ:
        yield
        return
    os.environ[_GCS_WAIT] = str(max(0, int(deadline - time.monotonic())))
    try:
        yield
    finally:
        os.environ.pop(_GCS_WAIT, None)


def _absorb_constructor_notice() -> None:
    """Spend Ray's one error-level notice per driver about actors whose
    constructor arguments live in the object store, with stderr muted.

    Ray Data always passes its model actors their code through the object
    store and restarts them after a crash, so Ray's core worker prints that
    notice (``core_worker.cc ... has constructor arguments in the object
    store``) at the start of every successful run; it is logged once per
    process, so one actor that is never scheduled (it asks for a resource no
    node has) and killed at once takes it, and the job's own actors are quiet.
    """
    import ray

    class Absorb:
        def __init__(self, arg: object) -> None:
            pass

    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        cls = ray.remote(num_cpus=0, max_restarts=1, resources={"voxray-never": 1})(Absorb)
        ray.kill(cls.remote(ray.put(None)), no_restart=True)
    except Exception:  # only a notice is at stake
        pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


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
    shut down first, and every process it started is ended (``end_work``).
    A signal now would only cut that short: from here on they are ignored.
    """
    for signum in stops.SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    sys.stdout.flush()
    sys.stderr.flush()
    end_work()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def end_work() -> None:
    """Stop everything Ray does for this driver, if this process started Ray:
    shut the local Ray down and end, by pid, any of the processes it started
    (its GCS, raylet, dashboard, workers) that outlive the shutdown. A driver
    on a cluster it joined does nothing here: the cluster ends a departed
    driver's tasks and actors when it exits."""
    if os.environ.get("RAY_ADDRESS"):
        return
    started = _descendants()
    ray = sys.modules.get("ray")
    try:
        # getattr: a stop can come while ray is still being imported
        if ray is not None and getattr(ray, "is_initialized", lambda: False)():
            ray.shutdown()
    finally:
        _end(started, patience=3.0)


def _descendants() -> list:
    """This process's descendants (psutil processes), empty if it has none."""
    import psutil

    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _end(processes: list, patience: float, grace: float = 3.0) -> None:
    """End these processes by pid: after ``patience`` seconds for them to exit
    by themselves (after Ray's own shutdown), SIGTERM, then after ``grace``
    seconds SIGKILL."""
    import psutil

    alive = [p for p in processes if p.is_running()]
    if alive and patience > 0:
        _, alive = psutil.wait_procs(alive, timeout=patience)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(alive, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)
