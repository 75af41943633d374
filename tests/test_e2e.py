"""End to end as a user runs it: a real `ray start --head --block` on loopback
ports with token authentication on, `ray job submit --working-dir .` of
jobs/reconstruct.py, input and output on S3 (moto server). Every process the
test starts is ended by its pid."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from test_job import BAD_ROWS, check_every_row_once, make_catalog

from conftest import (
    REPO,
    TEST_KEY_ID,
    TEST_SECRET,
    build_models,
    free_port,
    stop_process,
    wait_for_port,
)
from pipeline import io
from pipeline.results import load_grid

RAY = str(Path(sys.executable).with_name("ray"))


def ray_cli(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RAY, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def end_tree(proc: subprocess.Popen, descendants: list[psutil.Process]) -> None:
    """End `ray start` and then, by pid, anything it started that outlived it."""
    stop_process(proc, timeout=30)
    for child in descendants:
        try:
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                child.terminate()
                try:
                    child.wait(10)
                except psutil.TimeoutExpired:
                    child.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def ray_head(s3_server, tmp_path):
    """`ray start --head --block` with token auth, on loopback ports; yields
    (dashboard address, env with the token)."""
    token = secrets.token_hex(32)
    # Every port is chosen here: Ray's fixed defaults (the agent's 52365) can be
    # held by another Ray on the machine, and then the job agent never comes up.
    names = ("gcs", "dashboard", "node", "object", "client")
    names += ("agent", "agent-grpc", "env", "metrics")
    ports = {name: free_port() for name in names}
    # Unix socket paths must stay short; pytest's tmp_path can be too long.
    temp_dir = tempfile.mkdtemp(prefix="vxr", dir="/tmp")
    # The head is pinned to loopback by --node-ip-address below; conftest's
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps its job agent from registering.
    drop = ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        # as a user with the venv activated: the job's `python` is the venv's
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        # `ray start` records its address for later plain ray.init() calls on this
        # machine; keep that record in our own folder.
        RAY_TMPDIR=temp_dir,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        # on SIGTERM the head drains first; nothing needs draining after the test
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="3",
    )
    log = open(tmp_path / "ray-head.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            RAY, "start", "--head", "--block",
            "--node-ip-address", "127.0.0.1",
            "--port", str(ports["gcs"]),
            "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(ports["dashboard"]),
            "--node-manager-port", str(ports["node"]),
            "--object-manager-port", str(ports["object"]),
            "--ray-client-server-port", str(ports["client"]),
            "--dashboard-agent-listen-port", str(ports["agent"]),
            "--dashboard-agent-grpc-port", str(ports["agent-grpc"]),
            "--runtime-env-agent-port", str(ports["env"]),
            "--metrics-export-port", str(ports["metrics"]),
            "--include-dashboard", "true",
            "--num-cpus", "2", "--num-gpus", "0",
            "--temp-dir", temp_dir,
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    descendants: list[psutil.Process] = []
    try:
        wait_for_port(ports["dashboard"], timeout=90)
        address = f"http://127.0.0.1:{ports['dashboard']}"
        deadline = time.monotonic() + 60
        while True:  # the job API answers a little after the port opens
            probe = ray_cli(["job", "list", "--address", address], env, timeout=60)
            if probe.returncode == 0:
                break
            assert time.monotonic() < deadline, probe.stdout + probe.stderr
            time.sleep(1)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        yield address, env
    finally:
        if proc.poll() is None:
            descendants += [
                p
                for p in psutil.Process(proc.pid).children(recursive=True)
                if p.pid not in {d.pid for d in descendants}
            ]
        end_tree(proc, descendants)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_end_to_end(ray_head, s3_bucket, tmp_path):
    address, env = ray_head
    catalog, output = f"s3://{s3_bucket}/catalog", f"s3://{s3_bucket}/grids"
    model = f"s3://{s3_bucket}/models/compact.keras"
    expected = make_catalog(catalog)
    io.write_bytes(model, Path(build_models(tmp_path)[0]).read_bytes())

    # without the cluster's token the job client is refused
    wrong = dict(env, RAY_AUTH_TOKEN=secrets.token_hex(32))
    refused = ray_cli(["job", "list", "--address", address], wrong, timeout=60)
    assert refused.returncode != 0
    message = (refused.stdout + refused.stderr).lower()
    assert any(w in message for w in ("authenticat", "unauthori", "token")), message[-2000:]

    command = [
        "job", "submit", "--address", address, "--working-dir", ".", "--",
        "python", "jobs/reconstruct.py", "--input", catalog, "--output", output,
        "--model", model, "--batch-size", "4", "--rows-per-shard", "4", "--max-views", "5",
        "--max-failed-fraction", "0.5",
    ]  # fmt: skip
    for _ in range(20):
        submit = ray_cli(command, env, timeout=400)
        # the job API can answer before the head's job agent is up; nothing was submitted
        if "No available agent" not in submit.stdout + submit.stderr:
            break
        time.sleep(2)
    logs = submit.stdout + submit.stderr
    if submit.returncode != 0:
        report = [f"ray job submit exited {submit.returncode}", logs[-6000:]]
        session_logs = Path(env["RAY_TMPDIR"]).glob("session_*/logs/*")
        for path in [tmp_path / "ray-head.log", *sorted(session_logs)]:
            if path.name.startswith(("ray-head", "job-driver", "runtime_env", "raylet.err")):
                report += [f"--- {path.name} (tail) ---", path.read_text(errors="replace")[-3000:]]
        pytest.fail("\n".join(report))
    assert "succeeded" in logs
    assert "voxray reconstruct: done" in logs and output in logs
    assert TEST_SECRET not in logs and TEST_KEY_ID not in logs
    # quiet by default: no Ray notice about actor constructor arguments, no trace
    assert "core_worker.cc" not in logs and "Traceback" not in logs, logs[-4000:]

    table = check_every_row_once(output, expected)
    summary = json.loads(io.read_bytes(io.join(output, "_SUCCESS")))
    assert summary["rows_total"] == len(expected)
    assert summary["rows_failed"] == len(BAD_ROWS)
    assert summary["rows_ok"] == len(expected) - len(BAD_ROWS)
    assert summary["rows_skipped"] == 0
    assert summary["versions"]["ray"]
    ok = [r for r in table.to_pylist() if r["status"] == "ok"]
    assert all(r["iou"] is not None for r in ok)
    assert load_grid(output, ok[0]).shape == (32, 32, 32)
