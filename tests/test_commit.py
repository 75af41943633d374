"""The commit protocol under a second writer, an interrupted fold and a damaged
output, without Ray: lease generations claimed once by racing processes, a
paused holder taken over by a driver of another host (staged by VOXRAY_HOST)
that then stops and commits nothing, clock skew, a deleted or unreadable
lease; manifests that count only when named for their keys and outranking any
overlap; a retried manifest replacing the index's copy; a fold interrupted at
every step never counted twice by a glob; verify and its repair. On local disk
and on moto S3 where storage matters. Every process started is ended by pid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from io import BytesIO

import duckdb
import pyarrow.parquet as pq
import pytest
from test_plan import positional
from test_sink import model_rows

from conftest import REPO
from pipeline import index, io, verify
from pipeline.lease import Lease, LeaseHeld, StaleGeneration, current_generation
from pipeline.sink import write_shard


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path)
    return f"s3://{request.getfixturevalue('s3_bucket')}"


def rows(fragment: str, start: int, n: int, status: str = "ok", seed: int = 0):
    ids = [f"{fragment}-{start + i}" for i in range(n)]
    return positional(model_rows(ids, [status] * n, seed), fragment, start)


def glob_index(out: str) -> tuple[int, int]:
    """(rows, distinct row keys) that DuckDB sees over index/*.parquet."""
    if not io.list_files(io.join(out, "index"), ".parquet"):
        return 0, 0
    con = duckdb.connect()
    if io.is_remote(out):  # DuckDB reads S3 through s3fs (no httpfs download here)
        con.register_filesystem(io.filesystem(out)[0])
    query = f"SELECT count(*), count(DISTINCT row_key) FROM '{out}/index/*.parquet'"
    return tuple(con.execute(query).fetchall()[0])


def keys_of(out: str) -> list[str]:
    return index.read_table(index.state(out), ["row_key"]).column("row_key").to_pylist()


# --- processes ---------------------------------------------------------------------------


def python(code: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n{code}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


def end(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
    out, _ = proc.communicate(timeout=30)
    return out


def test_racing_drivers_claim_each_generation_once(root):
    out = io.join(root, "out")
    go = time.time() + 3.0  # every process starts taking the lease at this instant
    code = f"""
import time
from pipeline.lease import Lease, LeaseHeld
lease = Lease({out!r}, say=lambda s: None)
time.sleep(max(0.0, {go} - time.time()))
try:
    lease.acquire(); print("held", lease.generation, flush=True)
    time.sleep(max(0.0, {go} + 15 - time.time()))  # held until every process has tried
    lease.release()
except LeaseHeld as exc:
    print("refused", exc, flush=True)
"""
    procs = [python(code) for _ in range(4)]
    try:
        said = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            end(p)
    held = [s for s in said if s.startswith("held")]
    assert len(held) == 1, said
    assert all("refused" in s for s in said if s not in held), said
    assert current_generation(out) == 1  # one claim, one number


def test_a_claim_made_between_looking_and_claiming_wins(root):
    """A driver that found the output free, then lost the race to one that
    claimed while it was still deciding, is refused; it does not claim the next
    number over the winner's head."""
    out = io.join(root, "out")
    winner = Lease(out, say=lambda s: None)

    class Slow(Lease):
        def _wait_for_holder(self) -> int:
            judged = super()._wait_for_holder()
            winner.acquire()  # the other driver claims now, after this one looked
            return judged

    slow = Slow(out, say=lambda s: None)
    try:
        with pytest.raises(LeaseHeld, match="claimed generation 1 first"):
            slow.acquire()
        assert winner.generation == 1 and current_generation(out) == 1
        assert winner.lost is None
    finally:
        winner.release()


HOLDER = """
import sys, time
from pipeline.lease import Lease, LeaseLost, StaleGeneration
from pipeline.sink import write_shard
from test_plan import positional
from test_sink import model_rows
lease = Lease(sys.argv[1], say=lambda s: print(s, flush=True))
try:
    lease.acquire()
    print("held", lease.generation, flush=True)
    for i in range(10**6):   # commits rows i of fragment f, one per shard, until stopped
        write_shard(positional(model_rows([f"f-{i}"], ["ok"]), "f", i), sys.argv[1],
                    generation=lease.generation)
        print("committed", i, flush=True)
        time.sleep(0.1)
except LeaseLost:
    print("lost:", lease.lost, flush=True)
    sys.exit(1)
except StaleGeneration as exc:
    print("refused:", exc, flush=True)
    sys.exit(1)
"""


def holder(out: str, host: str) -> subprocess.Popen:
    env = {"VOXRAY_HOST": host, "VOXRAY_LEASE_TTL": "3", "VOXRAY_LEASE_RENEW": "0.3"}
    env["PYTHONPATH"] = f"{REPO}:{REPO / 'tests'}"
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, out],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )


def wait_for(
    proc: subprocess.Popen, word: str | tuple[str, ...], seen: list[str], timeout: float = 60
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith(word):
            return line
    pytest.fail(f"no {word!r} from the process:\n{''.join(seen)}")


def test_a_paused_holder_is_taken_over_then_stops_and_commits_nothing(root, monkeypatch):
    """A holder of another host paused (SIGSTOP) past the time-to-live is taken
    over by the waiting driver's own clock; resumed (SIGCONT), it finds the
    newer generation and stops at once; none of its rows is counted twice."""
    out = io.join(root, "out")
    seen: list[str] = []
    proc = holder(out, "host-a")
    try:
        wait_for(proc, "committed", seen)
        proc.send_signal(signal.SIGSTOP)
        paused_at = len(io.list_files(io.join(out, "manifests"), ".parquet"))
        monkeypatch.setenv("VOXRAY_HOST", "host-b")
        said: list[str] = []
        waited = time.monotonic()
        lease = Lease(out, ttl=3, say=said.append)
        lease.acquire()
        try:
            assert time.monotonic() - waited >= 3  # one time-to-live, on our clock
            assert lease.generation == 2 and "taking over" in said[-1]
            # the new holder commits every row again, in other groupings
            for start in range(0, paused_at + 3, 2):
                write_shard(rows("f", start, 2), out, generation=lease.generation)
            proc.send_signal(signal.SIGCONT)
            resumed = time.monotonic()
            # paused mid-commit, its fence refuses; paused elsewhere, its lease
            # thread stops it: either way it stops at once and commits nothing
            line = wait_for(proc, ("lost", "refused"), seen, timeout=30)
            assert proc.wait(10) == 1 and time.monotonic() - resumed < 5, "".join(seen)
            assert "generation 2" in line
        finally:
            lease.release()
    finally:
        end(proc)
    current = index.state(out)
    keys = keys_of(out)
    assert len(keys) == len(set(keys)) == current.keys()  # no row twice
    assert {f"f:{i}" for i in range(paused_at + 3)} <= set(keys)
    index.fold(out)
    assert glob_index(out) == (len(keys), len(keys))


def test_a_live_holder_is_not_taken_over_whatever_its_clock_says(tmp_path, monkeypatch):
    """A simulated holder on another host whose clock is 120 s ahead or behind
    keeps renewing: it is never taken over; it is, once it stops."""
    out = str(tmp_path / "out")
    monkeypatch.setattr("pipeline.lease.RENEW_SECONDS", 0.3)
    for skew in (120.0, -120.0):
        stop = threading.Event()

        def renew(skew=skew, stop=stop):
            beat = 0
            while not stop.is_set():
                beat += 1
                body = {"holder": "h", "host": "skewed", "pid": 1, "ttl": 2, "beat": beat,
                        "renewed": time.time() + skew}  # fmt: skip
                io.write_bytes(os.path.join(out, "_LEASE"), json.dumps(body).encode())
                time.sleep(0.2)

        thread = threading.Thread(target=renew, daemon=True)
        thread.start()
        time.sleep(0.3)
        with pytest.raises(LeaseHeld, match="in use by another run"):
            Lease(out, ttl=2, say=lambda s: None).acquire()
        stop.set()
        thread.join()
        with Lease(out, ttl=2, say=lambda s: None) as lease:
            assert lease.generation == current_generation(out)


def test_a_deleted_lease_does_not_let_a_second_driver_in(root):
    out = io.join(root, "out")
    seen: list[str] = []
    for host in (None, "host-a"):  # the same host (its process is alive), another host
        proc = holder(out, host or os.uname().nodename)
        try:
            wait_for(proc, "committed", seen)
            io.remove(io.join(out, "_LEASE"))
            env = {"VOXRAY_HOST": "host-b"} if host else {}
            second = python(
                f"from pipeline.lease import Lease, LeaseHeld\n"
                f"try:\n    Lease({out!r}, ttl=3, say=lambda s: None).acquire(); print('held')\n"
                f"except LeaseHeld as exc:\n    print('refused', exc)",
                env,
            )
            said = second.communicate(timeout=60)[0]
            assert said.startswith("refused"), said
        finally:
            end(proc)
    assert current_generation(out) == 2  # the two holders; the refused took no number


def test_an_unreadable_lease_is_reported_and_treated_as_stale(tmp_path):
    out = str(tmp_path / "out")
    os.makedirs(out)
    with open(os.path.join(out, "_LEASE"), "wb") as f:
        f.write(b"\xff\xfe not json")
    said: list[str] = []
    started = time.monotonic()
    with Lease(out, ttl=1, say=said.append):
        assert time.monotonic() - started >= 1
    assert "is not a voxray lease (UnicodeDecodeError" in said[0]
    with open(os.path.join(out, "_LEASE"), "w") as f:
        f.write("[1, 2]")
    said.clear()
    started = time.monotonic()
    with Lease(out, ttl=30, say=said.append, take=True):  # --take-lease: at once
        assert time.monotonic() - started < 5
    assert any("--take-lease" in s for s in said)


# --- what counts -------------------------------------------------------------------------


def test_copies_foreign_and_broken_manifests_do_not_count(root):
    out = io.join(root, "out")
    for s in range(3):
        write_shard(rows(f"f{s}", 0, 4), out)
    manifests = io.list_files(io.join(out, "manifests"), ".parquet")
    data = io.read_bytes(manifests[0])
    io.write_bytes(io.join(out, "manifests", "part-backup-copy.parquet"), data)  # a backup
    io.write_bytes(io.join(out, "manifests", "part-cut.parquet"), data[: len(data) // 2])
    foreign = io.join(out, "manifests", "other.parquet")
    buffer = BytesIO()
    pq.write_table(pq.read_table(BytesIO(data)).select(["object_id"]), buffer)
    io.write_bytes(foreign, buffer.getvalue())
    current = index.state(out)
    assert current.counts()["rows_ok"] == 12 and current.keys() == 12
    reasons = {r.url.rsplit("/", 1)[1]: r.reason for r in current.rejected}
    assert "a copy or a renamed manifest" in reasons["part-backup-copy.parquet"]
    assert "unreadable" in reasons["part-cut.parquet"]
    assert "not a voxray manifest" in reasons["other.parquet"]
    assert len(keys_of(out)) == 12
    index.fold(out)
    assert glob_index(out) == (12, 12)
    report = verify.check(out)
    assert {f.kind for f in report.problems} == {"manifest rejected"}
    verify.repair(out, report)
    assert len(io.list_files(io.join(out, "manifests"), ".parquet")) == 3
    assert verify.check(out).ok


def test_overlapping_commits_count_once_and_the_older_generation_loses(root):
    out = io.join(root, "out")
    write_shard(rows("f", 0, 8, seed=1), out, generation=1)  # a writer later taken over
    write_shard(rows("f", 0, 4, seed=2), out, generation=2)
    write_shard(rows("f", 4, 4, seed=2), out, generation=2)
    write_shard(rows("g", 0, 2, seed=1), out, generation=1)  # overlaps nothing: counts
    current = index.state(out)
    assert current.keys() == 10 and current.counts()["rows_ok"] == 10
    [overlap] = current.overlaps
    assert overlap.generations == (1, 2) and overlap.rows.startswith("f:")
    assert "generation 1" in current.problems()[0]
    assert sorted(keys_of(out)) == sorted([f"f:{i}" for i in range(8)] + ["g:0", "g:1"])
    index.fold(out, generation=2)
    assert glob_index(out) == (10, 10)
    # a newer writer redoes f in one shard (the loser's name, rewritten): now the
    # folded generation-2 manifests lose, and the part holding them is set aside
    write_shard(rows("f", 0, 8, seed=1), out, generation=3)
    current = index.state(out)
    assert current.keys() == 10 and len(current.overlaps) == 2 and current.stale
    assert {o.generations for o in current.overlaps} == {(2, 3)}
    index.fold(out, generation=3)
    assert glob_index(out) == (10, 10)


def test_a_retried_manifest_replaces_the_index_copy(root):
    """docs/operations.md's retry of failed rows: delete the manifest, rerun;
    the rerun writes a manifest of the same name, which the index must follow."""
    out = io.join(root, "out")
    write_shard(rows("f", 0, 3, status="failed"), out)
    write_shard(rows("g", 0, 3), out)
    index.fold(out)
    assert index.state(out).counts()["rows_failed"] == 3
    failed = [
        u
        for u in io.list_files(io.join(out, "manifests"), ".parquet")
        if pq.read_table(BytesIO(io.read_bytes(u))).column("status")[0].as_py() == "failed"
    ]
    io.remove(failed[0])
    time.sleep(0.01)  # a new mtime on local disk
    write_shard(rows("f", 0, 3), out)  # the retry: same keys, same name, now ok
    current = index.state(out)
    assert current.counts()["rows_ok"] == 6 and current.counts()["rows_failed"] == 0
    index.fold(out)
    assert glob_index(out) == (6, 6)
    table = index.read_table(index.state(out), ["status"])
    assert set(table.column("status").to_pylist()) == {"ok"}


def test_a_fold_interrupted_at_every_step_is_never_counted_twice(root, monkeypatch):
    """Storage fails at the k-th write or removal of a fold, for every k: a glob
    over index/*.parquet never sees a row twice, the reader sees every row once,
    and the next fold makes the index exact."""
    base = io.join(root, "base")
    for s in range(index.MAX_SMALL_PARTS):
        write_shard(rows(f"f{s}", 0, 2), base)
        index.fold(base)  # small parts: the next fold, with one more, merges them
    write_shard(rows("late", 0, 2), base)
    fs, base_path = io.filesystem(base)
    real_write, real_remove = io.write_bytes, io.remove
    k = 0
    while True:
        out = io.join(root, f"run{k}")
        if io.is_remote(out):  # a copy keeps the ETags: the index stays trusted
            fs.copy(base_path, io.filesystem(out)[1], recursive=True)
        else:  # copy2 keeps the mtimes, ditto
            shutil.copytree(base_path, io.filesystem(out)[1])
        steps = [0]

        def failing(real, k=k, steps=steps):
            def call(*args, **kwargs):
                steps[0] += 1
                if steps[0] > k:
                    raise ConnectionError("storage went away")
                return real(*args, **kwargs)

            return call

        monkeypatch.setattr(io, "write_bytes", failing(real_write))
        monkeypatch.setattr(io, "remove", failing(real_remove))
        try:
            index.fold(out)
            finished = True
        except ConnectionError:
            finished = False
        monkeypatch.setattr(io, "write_bytes", real_write)
        monkeypatch.setattr(io, "remove", real_remove)
        seen, distinct = glob_index(out)
        assert seen == distinct, k  # a row never twice
        assert sorted(keys_of(out)) == sorted(keys_of(base)), k
        index.fold(out)
        assert glob_index(out) == (10, 10), k
        if finished:
            break
        k += 1
    assert k >= 7  # the fold had several steps, each interrupted once


def test_a_missing_index_is_rebuilt_and_verify_finds_lost_grids(root):
    out = io.join(root, "out")
    for s in range(3):
        write_shard(rows(f"f{s}", 0, 4), out)
    write_shard(rows("x", 0, 2, status="failed"), out)
    index.fold(out)
    success = {"model": "compact-test", "output_rows_ok": 12, "output_rows_failed": 2}
    io.write_bytes(io.join(out, "_SUCCESS"), json.dumps(success).encode())
    assert verify.check(out, grids=None).ok
    fs, path = io.filesystem(io.join(out, "index"))
    fs.rm(path, recursive=True)
    assert [f.kind for f in verify.check(out).problems] == ["index behind"]
    index.fold(out)
    assert glob_index(out) == (14, 14)
    # a shard deleted, another cut short, a third's bytes replaced
    entries = sorted((e for e in index.state(out).entries if e.shard), key=lambda e: e.name)
    shard_urls = [io.join(out, e.shard["path"]) for e in entries]
    io.remove(shard_urls[0])
    io.write_bytes(shard_urls[1], io.read_bytes(shard_urls[1])[:100])
    data = io.read_bytes(shard_urls[2])
    io.write_bytes(shard_urls[2], bytes(len(data)))
    report = verify.check(out, grids=None)
    kinds = {f.path: f.kind for f in report.problems}
    assert kinds[entries[0].url] == "shard missing"
    assert kinds[entries[1].url] == "shard damaged"
    assert kinds[entries[2].url] == "grid unreadable"
    assert "_SUCCESS vouches for a damaged output" in {f.kind for f in report.problems}
    done = verify.repair(out, report)
    assert any("rerun" in line for line in done)
    current = index.state(out)
    assert current.keys() == 2 and not io.exists(io.join(out, "_SUCCESS"))
    assert len(io.find_files(io.join(out, "rejected"), ".parquet")) == 3  # moved, not deleted
    assert verify.check(out, grids=None).ok


def test_verify_command(tmp_path):
    out = str(tmp_path / "out")
    write_shard(rows("f", 0, 4), out)
    write_shard(rows("g", 0, 4), out)
    shutil.copy(
        io.list_files(io.join(out, "manifests"), ".parquet")[0],
        os.path.join(out, "manifests", "part-0-copy.parquet"),
    )
    command = [sys.executable, str(REPO / "jobs" / "verify.py"), out]
    found = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert found.returncode == 1, found.stdout + found.stderr
    assert "manifest rejected" in found.stdout and "part-0-copy.parquet" in found.stdout
    repaired = subprocess.run([*command, "--repair"], capture_output=True, text=True, cwd=REPO)
    assert "set aside" in repaired.stdout, repaired.stdout + repaired.stderr
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0 and "consistent" in again.stdout, again.stdout
    assert not os.path.exists(os.path.join(out, "_LEASE"))  # repair held the lease, then let go
    with pytest.raises(StaleGeneration):  # and a writer of an older generation is fenced
        write_shard(rows("h", 0, 1), out, generation=0)
