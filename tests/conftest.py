"""Shared fixtures: a real S3 endpoint (moto server on loopback) and a local Ray.

Every process a fixture starts is ended by its pid. Nothing here talks to any
address but 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Ray maps a local node's 127.0.0.1 to the host's own address unless this is
# "0"; every Ray the tests start (ray.init, the job's local Ray, `ray start`)
# inherits it, so all their traffic stays on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# Credentials of the moto server; tests search outputs for these to prove no
# secret leaks.
TEST_KEY_ID = "voxraytestkeyid"
TEST_SECRET = "voxray-test-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """End a process we started, by its pid: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


class MotoServer:
    """A moto S3 server on 127.0.0.1 that can be restarted on the same port."""

    def __init__(self, port: int):
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    """Session-wide moto server; the standard AWS variables point at it."""
    server = MotoServer(free_port())
    server.start()
    env = {
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": TEST_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": TEST_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server: MotoServer) -> str:
    """A fresh, empty bucket; returns its name."""
    import boto3

    name = f"voxray-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1").create_bucket(
        Bucket=name
    )
    return name


@pytest.fixture(scope="session")
def ray_local(s3_server: MotoServer) -> Iterator[None]:
    """A local Ray for the session, started after the S3 variables are set so
    that its workers inherit them."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )
    try:
        yield
    finally:
        ray.shutdown()


def build_models(folder: Path) -> tuple[str, str]:
    """Two compact models with different random weights, built in a subprocess so
    that this process (the job's driver in these tests) never imports TensorFlow."""
    a, b = str(folder / "a.keras"), str(folder / "b.keras")
    code = (
        "import sys, keras; from model import build, save_model\n"
        "keras.utils.set_random_seed(1); save_model(build('compact'), sys.argv[1])\n"
        "keras.utils.set_random_seed(2); save_model(build('compact'), sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", code, a, b], check=True, cwd=REPO, capture_output=True)
    return a, b


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> tuple[str, str]:
    return build_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def demo_run() -> subprocess.CompletedProcess:
    """The README's first command, ``python jobs/reconstruct.py`` with no
    arguments, run once per session in the checkout (it writes the git-ignored
    ``data/demo-catalog`` and ``outputs/demo``), for the tests of the demo and of
    the docs that read its output. A ``_SUCCESS`` of other weights (an older
    voxray's demo) is put there first, so every session's run starts afresh and
    shows that the demo clears it. Skips where the shipped weights are absent."""
    import json

    from model.saving import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.exists():
        pytest.skip(f"{DEFAULT_WEIGHTS} is not in this checkout")
    demo = REPO / "outputs" / "demo"
    demo.mkdir(parents=True, exist_ok=True)
    (demo / "_SUCCESS").write_text(json.dumps({"model": "compact-000000000000"}))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # a safety net only: the demo takes one to two minutes on a loaded laptop
    return subprocess.run(
        [sys.executable, str(REPO / "jobs" / "reconstruct.py")],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
