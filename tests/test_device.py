"""Device and runtime errors in the model actors, with the stand-in device
(``--stand-in``) raising what a GPU raises, in the whole job as a user runs it
(``python jobs/reconstruct.py`` with its own local Ray). A device error never
fails a row: a transient one restarts the actor and retries the block, and
every row still ends ``ok`` exactly once; out of memory halves the call; one
that follows the block stops the job with exit 1, naming the error, with no
row committed as failed.
"""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pytest
from test_faults import job
from test_job import write_catalog

from pipeline import io
from pipeline.results import read_manifests

OBJECTS = 24
ARGS = ["--batch-size", "4", "--rows-per-shard", "8", "--rows-per-block", "4", "--actors", "1"]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> tuple[str, list[str]]:
    import shapes

    rows = [shapes.generate_object(13, i, views=2) for i in range(OBJECTS)]
    table = pa.Table.from_pylist(rows).drop_columns(["cameras"])
    url = str(tmp_path_factory.mktemp("device") / "catalog")
    write_catalog(url, table, files=2)
    return url, table.column("object_id").to_pylist()


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec, said",
    [
        ("fail=cuda@2", "attempt 1 of 3: InternalError"),
        ("fail=oom@1+3", "ran out of device memory on 4 objects; retrying 2 at a time"),
    ],
)
def test_transient_device_errors_fail_no_row(catalog, tmp_path, spec, said):
    url, ids = catalog
    output = str(tmp_path / "grids")
    with job(["--input", url, "--output", output, *ARGS, "--stand-in", spec]) as run:
        code = run.wait()
        log = run.output() + run.ray_logs()
    assert code == 0, log[-4000:]
    assert said in log, log[-4000:]
    table = read_manifests(output)
    assert sorted(table.column("object_id").to_pylist()) == sorted(ids)
    assert set(table.column("status").to_pylist()) == {"ok"}
    assert set(table.column("model").to_pylist()) == {"stand-in-64px"}
    summary = json.loads(io.read_bytes(io.join(output, "_SUCCESS")))
    assert summary["rows_ok"] == OBJECTS and summary["rows_failed"] == 0


@pytest.mark.slow
def test_a_device_that_keeps_failing_stops_the_job_naming_the_error(catalog, tmp_path):
    url, _ = catalog
    output = str(tmp_path / "grids")
    with job(["--input", url, "--output", output, *ARGS, "--stand-in", "fail=cuda@every"]) as run:
        code = run.wait()
        log = run.output()
    assert code == 1, log[-4000:]
    # 3 or more: a call in flight beside the last attempt may be retried once more
    assert re.search(r"device failed [3-9] times on the same block", log), log[-4000:]
    assert "CUDA_ERROR_ILLEGAL_ADDRESS" in log and "rerun the same command" in log, log[-4000:]
    assert not io.exists(io.join(output, "_SUCCESS"))
    manifests = io.list_files(io.join(output, "manifests"), ".parquet")
    if manifests:  # nothing committed as failed for a device error
        assert "failed" not in read_manifests(output).column("status").to_pylist()


def test_stand_in_flags_are_checked(catalog, tmp_path, capsys):
    from jobs.reconstruct import main

    url, _ = catalog
    base = ["--input", url, "--output", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exit_:
        main([*base, "--stand-in", "fail=disk@1"])
    assert exit_.value.code == 2
    assert "fail=KIND@N" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--stand-in", "latency_ms=1", "--model", "x.keras"])
    assert "not both" in capsys.readouterr().err
