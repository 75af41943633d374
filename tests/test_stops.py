"""Clean stops with real signals: `python jobs/reconstruct.py` runs as a user
runs it (its own process group, its own local Ray), is sent SIGTERM (to the
driver alone, as a container runtime does) and then SIGINT (to the whole
group, as a terminal's Ctrl-C does) after it has committed something; each
stop prints one line, exits 128 + the signal, releases the lease, records the
run as interrupted and leaves no process it started. The rerun finishes with
every input row exactly once. All three runs use umask 027: every file the
job wrote is then mode 0640 (what a plain open() gives), every folder 0750."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pytest
from test_job import write_catalog

from conftest import REPO
from pipeline import io
from pipeline.results import read_manifests

JOB = str(REPO / "jobs" / "reconstruct.py")
OBJECTS = 96
# Many small commits, so that a signal lands between the first and the last.
ARGS = ["--batch-size", "4", "--rows-per-shard", "4", "--rows-per-block", "4", "--actors", "1"]
UMASK = 0o027
TIMEOUT = 240.0


def catalog(url: str) -> int:
    import shapes

    rows = [shapes.generate_object(5, i, views=2, image_size=64) for i in range(OBJECTS)]
    write_catalog(url, pa.Table.from_pylist(rows).drop_columns(["cameras"]), files=3)
    return OBJECTS


class Driver:
    """The job in its own session (process group), every descendant recorded
    as it appears so that survivors can be found (and ended) by pid."""

    def __init__(self, args: list[str], argv: list[str] | None = None):
        """``python jobs/reconstruct.py ARGS``, or ``argv`` when given."""
        self.temp_dir = tempfile.mkdtemp(prefix="vxs", dir="/tmp")  # short: Unix sockets
        drop = ("RAY_ADDRESS", "TF_CPP_MIN_LOG_LEVEL")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(RAY_TMPDIR=self.temp_dir, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            argv or [sys.executable, JOB, *args],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            umask=UMASK,
        )
        self.seen: dict[int, psutil.Process] = {}

    def watch(self) -> None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)

    def survivors(self) -> list[psutil.Process]:
        alive = []
        for p in self.seen.values():
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
        return alive

    def finish(self) -> tuple[int, str]:
        try:
            out, _ = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            pytest.fail(f"the driver did not end in {TIMEOUT} s:\n{out[-4000:]}")
        return self.proc.returncode, out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for p in self.survivors():
            with contextlib.suppress(psutil.Error):
                p.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def committed_rows(output: str) -> int:
    try:
        return read_manifests(output, columns=["row_key"]).num_rows
    except Exception:  # nothing committed yet
        return 0


def stop_after_a_commit(output: str, args: list[str], signum: int, group: bool) -> int:
    """Run the job until it commits more than the output held, send
    ``signum``; returns the rows the run says it committed."""
    before = committed_rows(output)
    manifests = io.join(output, "manifests")
    known = len(io.list_files(manifests, ".parquet"))
    driver = Driver(args)
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(io.list_files(manifests, ".parquet")) <= known:
            driver.watch()
            if driver.proc.poll() is not None or time.monotonic() > deadline:
                code, out = driver.finish()
                pytest.fail(f"no commit before the job ended ({code}):\n{out[-4000:]}")
            time.sleep(0.05)
        driver.watch()
        started = time.monotonic()
        (os.killpg if group else os.kill)(driver.proc.pid, signum)
        code, out = driver.finish()
        stopped_in = time.monotonic() - started
        survivors = driver.survivors()
    finally:
        driver.close()
    name = signal.Signals(signum).name
    assert code == 128 + signum, out[-4000:]
    assert stopped_in < 60, f"{name}: {stopped_in:.0f} s to stop"
    lines = [line for line in out.splitlines() if line.strip()]
    # one line says it; no traceback, no dump, no Ray noise
    assert len([line for line in lines if "interrupted" in line]) == 1, out[-4000:]
    found = re.fullmatch(
        rf"interrupted \({name}\) after (\d+) rows committed; rerun the same command to resume",
        lines[-1],
    )
    assert found, out[-4000:]
    for noise in ("Traceback", "SIGTERM received", "KeyboardInterrupt", "core_worker", "\x1b["):
        assert noise not in out, out[-4000:]
    assert not survivors, [(p.pid, p.name()) for p in survivors]
    assert not io.exists(io.join(output, "_LEASE"))  # released
    assert not io.exists(io.join(output, "_SUCCESS"))
    rows = int(found.group(1))
    assert committed_rows(output) == before + rows > before
    return rows


@pytest.mark.slow
def test_sigterm_and_sigint_stop_cleanly_and_the_rerun_finishes(tmp_path):
    url = str(tmp_path / "catalog")
    total = catalog(url)
    output = str(tmp_path / "grids")
    args = ["--input", url, "--output", output, *ARGS]

    first = stop_after_a_commit(output, args, signal.SIGTERM, group=False)
    second = stop_after_a_commit(output, args, signal.SIGINT, group=True)
    assert first + second < total, "the stops came too late to test a resume"

    driver = Driver(args)
    try:
        code, out = driver.finish()
    finally:
        driver.close()
    assert code == 0, out[-4000:]
    keys = read_manifests(output, columns=["row_key"]).column("row_key").to_pylist()
    assert len(keys) == len(set(keys)) == total  # every row exactly once

    records = [json.loads(p.read_text()) for p in sorted(Path(output, "runs").glob("*.json"))]
    assert [r["status"] for r in records] == ["interrupted", "interrupted", "finished"]
    assert [r["rows_ok"] + r["rows_failed"] for r in records] == [
        first,
        second,
        total - first - second,
    ]
    success = json.loads(Path(output, "_SUCCESS").read_text())
    assert success["rows_skipped"] == first + second

    # what the job wrote is readable by the group, as open() under umask 027 makes it
    for path in Path(output).rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o750 if path.is_dir() else 0o640), (path, oct(mode))


STARTING = """
import time
from pipeline import cli, cluster

def body() -> int:
    print("starting", flush=True)
    cluster.connect()
    time.sleep(60)
    return 0

cluster.leave(cli.run(body))
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_ray_starts_is_clean(signum):
    """ray.init installs Ray's own SIGTERM handlers (one exits, one dumps a
    stack and aborts): a stop while Ray starts is still one line, 128 +
    the signal, and nothing of the half-started Ray left."""
    driver = Driver([], argv=[sys.executable, "-c", STARTING])
    try:
        assert driver.proc.stdout.readline().strip() == "starting"
        deadline = time.monotonic() + 1.0  # into ray.init: its processes are starting
        while time.monotonic() < deadline:
            driver.watch()
            time.sleep(0.05)
        os.kill(driver.proc.pid, signum)
        code, out = driver.finish()
        survivors = driver.survivors()
    finally:
        driver.close()
    name = signal.Signals(signum).name
    assert code == 128 + signum, out
    assert out.strip() == f"interrupted ({name}); rerun the same command to resume", out
    assert not survivors, [p.name() for p in survivors]
