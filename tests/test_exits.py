"""Exit codes that tell the truth (docs/job.md, "Exit codes"): what may pass by
itself exits 1 with a hint, what no rerun gets past exits 3 naming the cause,
and neither prints a traceback; every command answers --help without importing
TensorFlow; files the job writes get the mode a plain open() gives."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

from conftest import REPO
from pipeline import cli, cluster, io, stops

COMMANDS = sorted(p for p in (REPO / "jobs").glob("*.py") if p.name != "__init__.py")


def command(
    path: Path, args: list[str], ray_tmp: Path | None = None
) -> subprocess.CompletedProcess:
    """The command as a user runs it, with a Ray temp dir of its own (short:
    Unix socket paths under it must stay short)."""
    temp = ray_tmp or Path(tempfile.mkdtemp(prefix="vxe", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(temp)
    try:
        return subprocess.run(
            [sys.executable, str(path), *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        if ray_tmp is None:
            shutil.rmtree(temp, ignore_errors=True)


def small_catalog(url: str) -> None:
    import shapes

    rows = [shapes.generate_object(3, i, views=1, image_size=64) for i in range(4)]
    table = pa.Table.from_pylist(rows).drop_columns(["cameras"])
    io.write_bytes(io.join(url, "part-0.parquet"), _parquet(table))


def _parquet(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


# --- --help ------------------------------------------------------------------------------

PROBE = """
import json, runpy, sys
path = sys.argv[1]
sys.argv = [path, "--help"]
code = None
try:
    runpy.run_path(path, run_name="__main__")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "tensorflow": "tensorflow" in sys.modules}))
"""


def test_every_command_answers_help_without_tensorflow():
    """Flags are parsed before anything heavy is imported: TensorFlow only
    once a command runs (train.py used to take ~70 s to print its help)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    procs = {
        path.name: subprocess.Popen(
            [sys.executable, "-c", PROBE, str(path)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in COMMANDS
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        result = json.loads(out.strip().splitlines()[-1])
        assert result == {"code": 0, "tensorflow": False}, (name, err[-2000:])
        assert "usage:" in out, name
        assert "Traceback" not in err, (name, err[-2000:])


# --- 1: may pass by itself -------------------------------------------------------------


def test_a_local_ray_that_does_not_start_in_time_exits_1_and_leaves_nothing(tmp_path):
    """A Ray start that times out (a busy machine) is not a setup problem: exit
    1 with a hint, the lease released, no process of the failed start left
    (its session is named in the message). Here Ray gets 0.5 s."""
    catalog, output = str(tmp_path / "catalog"), str(tmp_path / "grids")
    small_catalog(catalog)
    ray_tmp = Path(tempfile.mkdtemp(prefix="vxe", dir="/tmp"))  # short: Unix sockets
    try:
        args = ["--input", catalog, "--output", output, "--ray-start-timeout", "0.5"]
        result = command(REPO / "jobs" / "reconstruct.py", args, ray_tmp)
        made = command(
            REPO / "jobs" / "make_dataset.py",
            ["--output", str(tmp_path / "made"), "--objects", "2", "--seed", "0",
             "--ray-start-timeout", "0.5"],
            ray_tmp,
        )  # fmt: skip
        left = []
        for p in psutil.process_iter(["cmdline"]):
            if str(ray_tmp) in " ".join(p.info["cmdline"] or []):
                left.append(p)
                p.kill()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    for run in (result, made):
        assert run.returncode == 1, run.stderr[-3000:]
        assert "did not answer in time" in run.stderr and "--ray-start-timeout" in run.stderr
        assert "Traceback" not in run.stderr + run.stdout
    assert not left, [p.pid for p in left]
    assert not io.exists(io.join(output, "_LEASE"))
    assert not Path(tmp_path / "made").exists() or not any(Path(tmp_path / "made").iterdir())


def test_each_failure_gets_its_code_in_one_line(capsys):
    """cli.run, which every command's main goes through, row by row of the
    table: 1 for what may pass, 3 for what no rerun gets past, 128 + the
    signal for a stop; a bug keeps its traceback."""

    def failing(exc: BaseException):
        def body() -> int:
            raise exc

        return body

    cases = [
        (cluster.RayUnavailable("a local Ray did not answer in time"), 1),
        (
            io.explain(
                OSError("An error occurred (SlowDown): Please reduce"), "s3://b/o", "output"
            ),
            1,
        ),
        (cluster.SetupError("one model actor ... leaves no CPU"), 3),
        (io.explain(PermissionError(errno.EACCES, "Access Denied"), "s3://b/o", "output"), 3),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/train"), 3),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/out"), 3),
        (stops.Interrupted(signal.SIGINT), 130),
        (stops.Interrupted(signal.SIGTERM), 143),
    ]
    for exc, code in cases:
        assert cli.run(failing(exc)) == code, exc
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    with pytest.raises(ZeroDivisionError):
        cli.run(failing(ZeroDivisionError("a bug")))


# --- 3: no rerun gets past it ----------------------------------------------------------


def test_an_output_that_cannot_exist_is_named_and_exits_3(tmp_path):
    catalog = str(tmp_path / "catalog")
    small_catalog(catalog)
    output = f"/proc/voxray-{uuid.uuid4().hex[:8]}/grids"
    result = command(
        REPO / "jobs" / "reconstruct.py", ["--input", catalog, "--output", output], tmp_path
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert "cannot be created" in result.stderr and output in result.stderr
    assert "bucket" not in result.stderr and "Traceback" not in result.stderr


def test_access_denied_inside_ray_is_permanent():
    """A write denied in a task reaches the driver wrapped (a task error whose
    cause, or only text, holds it); a connection cut is not permanent."""

    class TaskError(Exception):
        def __init__(self, cause: BaseException):
            super().__init__(f"ray::Write() failed\n{type(cause).__name__}: {cause}")
            self.cause = cause

    denied = PermissionError(errno.EACCES, "Permission denied", "/out/shards/.x.tmp")
    assert "access was denied" in io.permanent_cause(TaskError(denied))
    assert "access was denied" in io.permanent_cause(RuntimeError("Forbidden: PutObject"))
    assert "No space left" in io.permanent_cause(
        TaskError(OSError(errno.ENOSPC, "No space left on device"))
    )
    assert io.permanent_cause(TaskError(ConnectionResetError("Connection reset by peer"))) is None


def _deny_writes(folder: Path) -> bool:
    """Make ``folder`` refuse new files, even to root; False where that cannot be done."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        return False
    try:
        (folder / "probe").write_bytes(b"")
    except PermissionError:
        return True
    (folder / "probe").unlink()
    return False


def _allow_writes(folder: Path) -> None:
    if os.geteuid() != 0:
        folder.chmod(0o755)
    else:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)


@pytest.mark.slow
def test_access_denied_mid_run_exits_3_naming_it(tmp_path):
    """The first shard write is refused (its folder takes no new file): exit 3,
    "access was denied" and the path, no traceback (Ray Data's own error lines
    go to its log file), the lease released."""
    catalog, output = str(tmp_path / "catalog"), tmp_path / "grids"
    small_catalog(catalog)
    shards = output / "shards"
    shards.mkdir(parents=True)
    if not _deny_writes(shards):
        pytest.skip("cannot make a folder refuse writes here (root without chattr)")
    try:
        result = command(
            REPO / "jobs" / "reconstruct.py",
            ["--input", catalog, "--output", str(output), "--rows-per-shard", "2"],
        )
    finally:
        _allow_writes(shards)
    text = result.stdout + result.stderr
    assert result.returncode == 3, text[-4000:]
    assert "access was denied" in result.stderr and str(shards) in result.stderr
    assert "Traceback" not in text and "rerun the same command to resume" in result.stderr
    assert not (output / "_LEASE").exists()


# --- file modes --------------------------------------------------------------------------

MODES = """
import os, stat, sys
from pipeline import io
folder = sys.argv[1]
io.write_bytes(io.join(folder, "sub", "written.bin"), b"x")
with open(os.path.join(folder, "plain.bin"), "wb") as f:
    f.write(b"x")
print(*(oct(stat.S_IMODE(os.stat(os.path.join(folder, p)).st_mode))
        for p in ("sub/written.bin", "plain.bin", "sub")))
"""


@pytest.mark.parametrize(
    "umask, file_mode, dir_mode", [(0o027, 0o640, 0o750), (0o002, 0o664, 0o775)]
)
def test_written_files_get_the_mode_open_gives(tmp_path, umask, file_mode, dir_mode):
    """Not mkstemp's 0600: another account on a shared mount reads what the job wrote."""
    result = subprocess.run(
        [sys.executable, "-c", MODES, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        umask=umask,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    written, plain, folder = result.stdout.split()
    assert written == plain == oct(file_mode) and folder == oct(dir_mode)
    assert stat.S_IMODE((tmp_path / "sub" / "written.bin").stat().st_mode) == file_mode


# --- the table -----------------------------------------------------------------------------


def test_the_exit_code_table_is_the_codes_and_names_real_tests():
    """docs/job.md's table: one row per code the job uses, each naming the
    tests that exercise it, and each of those tests exists."""
    from pipeline import job

    text = (REPO / "docs" / "job.md").read_text()
    table = text[text.index("## Exit codes") : text.index("## Stopping a run")]
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    codes = {int(row.split("|")[1]) for row in rows}
    used = {job.EXIT_OK, job.EXIT_RUN, job.EXIT_USAGE, job.EXIT_SETUP, job.EXIT_FAILED_ROWS}
    used |= {stops.Interrupted(s).code for s in stops.SIGNALS}
    assert codes == used and len(rows) == len(used)
    for row in rows:
        named = re.findall(r"`(test_\w+)\.py::(test_\w+)`", row.split("|")[4])
        assert named, row
        for module, test in named:
            assert f"def {test}(" in (REPO / "tests" / f"{module}.py").read_text(), test
