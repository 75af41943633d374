"""Faults with real processes: the job's driver or a model actor killed with
SIGKILL mid-run, the S3 endpoint cut for a few seconds, and an output that
already holds a shard without its manifest. After each, every input row has
exactly one manifest row and the grids equal a clean run's (to rounding). The
job runs as a user runs it, `python jobs/reconstruct.py` in its own process
with its own local Ray; every process it starts is followed by pid and ended
by pid."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_job import write_catalog

from conftest import REPO, TEST_KEY_ID, TEST_SECRET, free_port
from pipeline import io, verify
from pipeline.lease import current_generation
from pipeline.results import load_grid, read_manifests

JOB = str(REPO / "jobs" / "reconstruct.py")
SEED = 11
OBJECTS = 96
VIEWS = 3
# Small shards and batches: many commits over the run, so that a fault lands
# between the first commit and the last.
ARGS = ["--batch-size", "4", "--rows-per-shard", "4", "--rows-per-block", "4", "--actors", "1"]
JOB_TIMEOUT = 170.0


# --- the catalog and a clean run ---------------------------------------------------------


def catalog_table() -> pa.Table:
    import shapes

    rows = [shapes.generate_object(SEED, i, views=VIEWS) for i in range(OBJECTS)]
    return pa.Table.from_pylist(rows).drop_columns(["cameras"])


class Job:
    """`python jobs/reconstruct.py ARGS` in its own process, with a Ray temp dir
    of its own; every descendant it ever has is recorded, so that all of them
    can be ended by pid even after the driver itself was killed."""

    def __init__(self, args: list[str], env_update: dict | None = None):
        self.temp_dir = tempfile.mkdtemp(prefix="vxf", dir="/tmp")  # short: Unix sockets
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(RAY_TMPDIR=self.temp_dir, **(env_update or {}))
        self.log = Path(self.temp_dir, "job.log")
        self._log = open(self.log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, JOB, *args],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.root = psutil.Process(self.proc.pid)
        self.seen: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.descendants()
            time.sleep(0.2)

    def descendants(self) -> list[psutil.Process]:
        """Every live descendant now (recorded as it is found)."""
        found: dict[int, psutil.Process] = {}
        # Children of recorded processes too: after the driver is killed, what
        # its Ray processes started is no longer under the driver.
        for parent in [self.root, *list(self.seen.values())]:
            with contextlib.suppress(psutil.Error):
                for child in parent.children(recursive=True):
                    found[child.pid] = self.seen.setdefault(child.pid, child)
        return list(found.values())

    def model_actors(self) -> list[psutil.Process]:
        actors = []
        for p in self.descendants():
            with contextlib.suppress(psutil.Error):
                if "MapWorker(MapBatches(Reconstruct))" in " ".join(p.cmdline()):
                    actors.append(p)
        return actors

    def wait(self, timeout: float = JOB_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the job did not finish in {timeout} s:\n{self.output()[-4000:]}")

    def kill_driver(self) -> None:
        self.descendants()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def output(self) -> str:
        self._log.flush()
        return self.log.read_text(errors="replace")

    def ray_logs(self) -> str:
        texts = []
        for path in Path(self.temp_dir).rglob("*"):
            if path.is_file() and path.suffix in (".log", ".out", ".err", ".txt", ".json"):
                with contextlib.suppress(OSError):
                    texts.append(path.read_text(errors="replace"))
        return "\n".join(texts)

    def close(self) -> None:
        """End the driver, then every recorded descendant still alive, by pid."""
        self._stop.set()
        self._watcher.join(5)
        if self.proc.poll() is None:
            self.descendants()
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.descendants()
        for p in self.seen.values():
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    p.terminate()
        for p in self.seen.values():
            with contextlib.suppress(psutil.Error):
                p.wait(10)
        for p in self.seen.values():
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
        self._log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def job(args: list[str], env_update: dict | None = None) -> Iterator[Job]:
    running = Job(args, env_update)
    try:
        yield running
    finally:
        running.close()


def wait_for_commit(output: str, job_: Job, timeout: float = 150.0) -> int:
    """Wait until the job has committed at least one manifest; return how many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        committed = len(io.list_files(io.join(output, "manifests"), ".parquet"))
        if committed:
            return committed
        assert job_.proc.poll() is None, "job ended before committing:\n" + job_.output()[-4000:]
        time.sleep(0.05)
    pytest.fail(f"no manifest after {timeout} s:\n{job_.output()[-4000:]}")


def grids(output: str) -> dict[str, np.ndarray]:
    table = read_manifests(output)
    return {r["object_id"]: load_grid(output, r) for r in table.to_pylist()}


def check_once_and_equal(output: str, ids: list[str], clean: dict[str, np.ndarray]) -> dict:
    """Every input row exactly once, ok, with the clean run's grid (within 1/255);
    returns the _SUCCESS summary."""
    table = read_manifests(output)
    assert sorted(table.column("object_id").to_pylist()) == sorted(ids)
    assert set(table.column("status").to_pylist()) == {"ok"}
    for object_id, grid in grids(output).items():
        diff = np.abs(grid.astype(int) - clean[object_id].astype(int))
        assert diff.max() <= 1, object_id
    return json.loads(io.read_bytes(io.join(output, "_SUCCESS")))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> tuple[str, list[str]]:
    url = str(tmp_path_factory.mktemp("faults") / "catalog")
    table = catalog_table()
    write_catalog(url, table)
    return url, table.column("object_id").to_pylist()


@pytest.fixture(scope="module")
def clean(catalog, tmp_path_factory) -> tuple[str, dict[str, np.ndarray]]:
    """One uninterrupted run: the reference every fault run is compared with."""
    url, ids = catalog
    output = str(tmp_path_factory.mktemp("clean") / "grids")
    with job(["--input", url, "--output", output, *ARGS]) as run:
        code = run.wait()
        assert code == 0, run.output()[-4000:]
    reference = grids(output)
    assert sorted(reference) == sorted(ids)
    return output, reference


# --- retries ---------------------------------------------------------------------------


def test_transient_storage_errors_are_retried_others_are_not():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("[Errno 111] Connection refused")
        return "done"

    assert io.retrying(flaky, seconds=30) == "done" and len(calls) == 3
    assert io.is_transient(OSError('Could not connect to the endpoint URL: "http://x/b/k"'))
    assert not io.is_transient(FileNotFoundError("s3://b/k"))
    assert not io.is_transient(PermissionError("AccessDenied"))

    def missing():
        calls.append(1)
        raise FileNotFoundError("s3://b/k")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        io.retrying(missing, seconds=30)
    assert len(calls) == 1  # a permanent error is not retried


# --- the faults --------------------------------------------------------------------------


@pytest.mark.slow
def test_driver_killed_after_first_commit_then_rerun(catalog, clean, tmp_path):
    url, ids = catalog
    output = str(tmp_path / "grids")
    args = ["--input", url, "--output", output, *ARGS]
    with job(args) as run:
        wait_for_commit(output, run)
        run.kill_driver()
    # killed mid-run: something committed, not everything, nothing vouched for
    committed = read_manifests(output).num_rows
    assert 0 < committed < len(ids)
    assert not io.exists(io.join(output, "_SUCCESS"))

    with job(args) as rerun:
        code = rerun.wait()
        assert code == 0, rerun.output()[-4000:]
        # the killed driver's lease does not block the rerun, which says why
        assert "is gone; taking over" in rerun.output()
    summary = check_once_and_equal(output, ids, clean[1])
    # whatever the killed run committed (its last writes may have landed while it died)
    assert summary["rows_skipped"] >= committed > 0
    assert summary["rows_skipped"] + summary["rows_ok"] == summary["rows_total"] == len(ids)
    # the output's own counts, and the killed run counted as interrupted
    assert summary["totals"] == {"rows_ok": 96, "rows_failed": 0, "rows": 96, "keys": 96}
    assert summary["history"]["interrupted"] == 1 and summary["history"]["finished"] == 1
    assert_index_exact(output, len(ids))

    # a deleted index is rebuilt by a rerun with nothing to do
    shutil.rmtree(os.path.join(output, "index"))
    with job(args) as rerun:
        assert rerun.wait() == 0, rerun.output()[-4000:]
        assert "nothing to do" in rerun.output()
    assert_index_exact(output, len(ids))
    # a deleted shard is found by the same rerun: exit 3, no _SUCCESS, the repair named
    lost = sorted(os.listdir(os.path.join(output, "shards")))[0]
    os.remove(os.path.join(output, "shards", lost))
    with job(args) as rerun:
        assert rerun.wait() == 3, rerun.output()[-4000:]
        assert "shard missing" in rerun.output() and "verify.py" in rerun.output()
    assert not io.exists(io.join(output, "_SUCCESS"))


def live(processes) -> list[int]:
    """The pids of ``processes`` still running (zombies are not)."""
    alive = []
    for p in processes:
        with contextlib.suppress(psutil.Error):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
    return alive


def assert_index_exact(output: str, rows: int) -> None:
    """DuckDB over index/*.parquet sees every row once; verify finds nothing."""
    import duckdb

    query = f"SELECT count(*), count(DISTINCT row_key) FROM '{output}/index/*.parquet'"
    assert tuple(duckdb.connect().execute(query).fetchall()[0]) == (rows, rows)
    report = verify.check(output, grids=None)
    assert report.ok, report.format()


@pytest.mark.slow
def test_a_paused_driver_is_taken_over_and_stops(catalog, clean, tmp_path):
    """A driver of another host paused (SIGSTOP; its Ray workers run on) past
    the lease's time-to-live is taken over; continued, it stops at once, exit 1,
    and nothing it committed after the takeover counts."""
    url, ids = catalog
    output = str(tmp_path / "grids")
    args = ["--input", url, "--output", output, *ARGS]
    seam = {"VOXRAY_LEASE_TTL": "6", "VOXRAY_LEASE_RENEW": "1"}
    with job(args, {**seam, "VOXRAY_HOST": "host-a"}) as first:
        wait_for_commit(output, first)
        first.root.suspend()
        with job(args, {**seam, "VOXRAY_HOST": "host-b"}) as second:
            deadline = time.monotonic() + 90
            while current_generation(output) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert current_generation(output) == 2, second.output()[-4000:]
            first.root.resume()
            resumed = time.monotonic()
            assert first.wait(60) == 1, first.output()[-4000:]
            assert time.monotonic() - resumed < 20
            assert "taken by generation 2" in first.output()
            # its Ray work ended with it (the local Ray it started is shut down)
            deadline = time.monotonic() + 30
            while live(first.seen.values()) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not live(first.seen.values()), live(first.seen.values())
            # two local Rays on two cores shared with other work: the second is slow
            assert second.wait(400) == 0, second.output()[-4000:]
            assert "watching it for 6 s" in second.output()
    summary = check_once_and_equal(output, ids, clean[1])
    assert summary["totals"]["rows"] == summary["totals"]["keys"] == len(ids)
    assert_index_exact(output, len(ids))


@pytest.mark.slow
def test_a_second_driver_on_a_held_output_is_refused(catalog, clean, tmp_path):
    """Two real drivers on one output: the second is refused while the first
    runs, and the first finishes with every row once."""
    url, ids = catalog
    output = str(tmp_path / "grids")
    args = ["--input", url, "--output", output, *ARGS]
    with job(args) as first:
        wait_for_commit(output, first)
        with job(args) as second:
            assert second.wait() == 3, second.output()[-4000:]
            assert "is in use by another run of the job" in second.output()
            assert f"pid {first.proc.pid}" in second.output()
        assert first.wait() == 0, first.output()[-4000:]
    check_once_and_equal(output, ids, clean[1])
    assert not io.exists(io.join(output, "_LEASE"))  # released at the end


@pytest.mark.slow
def test_a_stalled_model_actor_is_replaced(clean, tmp_path):
    """An actor stopped mid-run (SIGSTOP, never continued) is found by the stall
    check, replaced, and the job finishes with every row once. The catalog is
    the fault catalog five times over (new ids), so that the model still has
    work when the first shard commits."""
    table = catalog_table()
    ids = table["object_id"]
    copies = pa.concat_tables(
        table.set_column(0, "object_id", pc.binary_join_element_wise(ids, f"~{c}", ""))
        for c in range(5)
    )
    url = str(tmp_path / "catalog")
    write_catalog(url, copies)
    output = str(tmp_path / "grids")
    args = ["--input", url, "--output", output, *ARGS, "--stall-timeout", "20"]
    with job(args) as run:
        wait_for_commit(output, run)
        actors = run.model_actors()
        assert actors, run.output()[-4000:]
        for actor in actors:
            actor.suspend()  # SIGSTOP
        assert run.wait() == 0, run.output()[-4000:]
        assert "looks stalled" in run.output() and "replacing it" in run.output()
    table = read_manifests(output)
    ids = table.column("object_id").to_pylist()
    assert sorted(ids) == sorted(copies.column("object_id").to_pylist())
    assert set(table.column("status").to_pylist()) == {"ok"}
    for row in table.to_pylist()[::37]:
        original = clean[1][row["object_id"].rsplit("~", 1)[0]]
        assert np.abs(load_grid(output, row).astype(int) - original).max() <= 1


@pytest.mark.slow
def test_model_actor_killed_mid_run(catalog, clean, tmp_path):
    url, ids = catalog
    output = str(tmp_path / "grids")
    with job(["--input", url, "--output", output, *ARGS]) as run:
        wait_for_commit(output, run)
        actors = run.model_actors()
        assert len(actors) == 1, [p.cmdline() for p in actors]
        os.kill(actors[0].pid, signal.SIGKILL)
        killed_at = read_manifests(output).num_rows
        code = run.wait()
        assert code == 0, run.output()[-4000:]
    assert killed_at < len(ids)  # the kill landed before the end
    summary = check_once_and_equal(output, ids, clean[1])
    assert summary["rows_ok"] == len(ids) and summary["rows_skipped"] == 0


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of the S3 server that can go down:
    while cut, it closes every open connection and every new one at once
    (as a restarting endpoint or a load balancer does)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.down = threading.Event()
        self.refused = 0
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.server.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.down.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self.lock:
                self.connections -= {src, dst}

    def cut(self) -> None:
        self.down.set()
        with self.lock:
            open_now = list(self.connections)
        for s in open_now:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.running = False
        self.cut()
        self.server.close()
        self.thread.join(5)


@pytest.mark.slow
def test_s3_outage_mid_run_is_retried_and_nothing_leaks(s3_server, catalog, clean):
    import boto3

    _, ids = catalog
    bucket = f"voxray-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    url, output = f"s3://{bucket}/catalog", f"s3://{bucket}/grids"
    write_catalog(url, catalog_table())
    proxy = CuttingProxy(s3_server.port)
    # The secret given on the command line as well as in the environment: it
    # must show up in no log, manifest or _SUCCESS.
    options = json.dumps({"key": TEST_KEY_ID, "secret": TEST_SECRET})
    args = ["--input", url, "--output", output, *ARGS, "--storage-options", options]
    try:
        with job(args, {"AWS_ENDPOINT_URL": proxy.endpoint}) as run:
            wait_for_commit(output, run)
            proxy.cut()
            time.sleep(4.0)
            proxy.restore()
            code = run.wait()
            logs = run.output() + run.ray_logs()
            assert code == 0, run.output()[-4000:]
    finally:
        proxy.close()
    assert proxy.refused > 0  # the job did hit the outage
    summary = check_once_and_equal(output, ids, clean[1])
    assert summary["rows_ok"] == len(ids)

    fs, root = io.filesystem(output)
    written = b"".join(fs.cat_file(p) for p in fs.find(root) if not p.endswith(".npz"))
    for secret in (TEST_SECRET, TEST_KEY_ID):
        assert secret not in logs
        assert secret.encode() not in written
    assert summary["arguments"]["storage_options"]["secret"] == "***"


@pytest.mark.slow
def test_shard_without_manifest_is_never_counted(catalog, clean, tmp_path):
    url, ids = catalog
    output = tmp_path / "grids"
    shutil.copytree(clean[0], output)
    (output / "_SUCCESS").unlink()
    # A crash between the two writes: a shard whose manifest never landed ...
    manifests = sorted((output / "manifests").glob("*.parquet"))
    lost = pq.read_table(manifests[0]).column("object_id").to_pylist()
    manifests[0].unlink()
    # ... and one that nothing will ever reference, holding other rows' ids.
    stray = output / "shards" / "part-00000000000000000000000000000000.npz"
    np.savez_compressed(
        stray, object_id=np.asarray(ids[:3]), probabilities=np.zeros((3, 32, 32, 32), np.uint8)
    )
    with job(["--input", url, "--output", str(output), *ARGS]) as run:
        code = run.wait()
        assert code == 0, run.output()[-4000:]
    summary = check_once_and_equal(str(output), ids, clean[1])
    assert summary["rows_skipped"] == len(ids) - len(lost)
    assert summary["rows_ok"] == len(lost)
    assert summary["output_rows_ok"] == len(ids)  # the stray shard's rows are not counted
    referenced = set(read_manifests(str(output)).column("shard").to_pylist())
    assert f"shards/{stray.name}" not in referenced
