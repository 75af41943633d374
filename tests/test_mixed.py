"""Settings that change what a row means (model, image size, threshold, max
views, precision as resolved): a rerun with another value is refused before
any row is read, naming each setting, what the output holds and what the run
would use; ``--allow-mixed`` mixes them on purpose and ``_SUCCESS`` says so;
precision is recorded per row, and manifests written before that column still
read, resume and are checked. Real Ray, real files, the stand-in device (its
resolved precision is the one it is given, "auto" being fp32)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_job import make_catalog, run_job

from jobs import report as report_job
from pipeline import index, resume, verify
from pipeline.results import Output, read_manifests

STAND_IN = ["--stand-in", "latency_ms=0", "--rows-per-shard", "4"]
FIRST_ROWS = 8  # the first run's --limit: later runs have rows left to do


@pytest.fixture
def started(ray_local, tmp_path, capsys) -> tuple[list[str], str, int]:
    """A catalog and an output holding the first rows of it (threshold 0.4,
    24 views, fp32, the 64 px stand-in); returns (the run's arguments, the
    output, the catalog's rows)."""
    catalog, output = str(tmp_path / "catalog"), str(tmp_path / "grids")
    expected = make_catalog(catalog, good=3, files=2)
    args = ["--input", catalog, "--output", output, *STAND_IN]
    code, _, err = run_job([*args, "--limit", str(FIRST_ROWS)], capsys)
    assert code == 0, err
    return args, output, len(expected)


def _runs(output: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(output, "runs").glob("*.json"))]


def test_each_changed_setting_is_refused_before_any_work(started, capsys):
    args, output, _ = started
    rows, runs = read_manifests(output).num_rows, len(_runs(output))
    cases = {
        ("--threshold", "0.5"): [
            "--threshold: the output holds rows made with 0.4; this run uses 0.5"
        ],
        ("--max-views", "2"): ["--max-views: the output holds rows made with 24; this run uses 2"],
        ("--precision", "bf16"): [
            "--precision (as resolved on the device): the output holds rows made with fp32; "
            "this run uses bf16"
        ],
        ("--stand-in", "latency_ms=0,image_size=32"): [
            "--model: the output already holds grids from model stand-in-64px; "
            "this run uses stand-in-32px",
            "the model's image size: the output holds rows made with 64; this run uses 32",
        ],
    }
    for (flag, value), lines in cases.items():
        code, out, err = run_job([*args, flag, value], capsys)
        assert code == 3, (flag, out, err)
        assert "holds rows made with other settings than this run's" in err
        for line in lines:
            assert line in err, (flag, err)
        assert "--allow-mixed" in err and "new --output" in err
    # two at once: both named, in one refusal
    code, _, err = run_job([*args, "--threshold", "0.3", "--max-views", "5"], capsys)
    assert code == 3 and "--threshold:" in err and "--max-views:" in err
    # refused before any work: no row, no run record (a refused run never started)
    assert read_manifests(output).num_rows == rows
    assert len(_runs(output)) == runs


def test_unchanged_rerun_passes_and_allow_mixed_mixes(started, capsys):
    args, output, total = started
    # The same settings spelled out ("auto" resolves to what the output holds).
    code, _, err = run_job([*args, "--threshold", "0.4", "--limit", "9"], capsys)
    assert code == 0, err
    success = json.loads(Path(output, "_SUCCESS").read_text())
    assert success["mixed"] == {}
    assert success["settings"] == {
        "model": ["stand-in-64px"],
        "image_size": [64],
        "threshold": [0.4],
        "max_views": [24],
        "precision": ["fp32"],
    }
    table = read_manifests(output)
    ok = table.filter(pc.equal(table["status"], "ok"))
    failed = table.filter(pc.equal(table["status"], "failed"))
    assert set(ok.column("precision").to_pylist()) == {"fp32"}
    # rows that never reached the model carry no precision
    assert failed.num_rows and set(failed.column("precision").to_pylist()) == {None}
    assert success["precisions"] == {"fp32": ok.num_rows}

    code, out, err = run_job(
        [*args, "--threshold", "0.5", "--precision", "bf16", "--allow-mixed"], capsys
    )
    assert code == 0, err
    table = read_manifests(output)
    assert table.num_rows == total  # every row once, of both settings
    success = json.loads(Path(output, "_SUCCESS").read_text())
    assert success["mixed"] == {"threshold": [0.4, 0.5], "precision": ["bf16", "fp32"]}
    assert success["arguments"]["allow_mixed"] is True
    new = table.filter(pc.equal(table["threshold"], 0.5))
    new_ok = new.filter(pc.equal(new["status"], "ok"))
    assert (
        new.num_rows == total - 9
        and new_ok.num_rows
        and set(new_ok.column("precision").to_pylist()) == {"bf16"}
    )
    assert success["precisions"] == {"bf16": new_ok.num_rows, "fp32": ok.num_rows}
    # mixed now: a rerun at either threshold alone is refused, naming both held values
    code, _, err = run_job([*args, "--precision", "bf16"], capsys)
    assert code == 3 and "--threshold: the output holds rows made with 0.4, 0.5" in err


def test_a_run_that_committed_nothing_holds_nothing(ray_local, tmp_path, capsys):
    catalog, output = str(tmp_path / "catalog"), str(tmp_path / "grids")
    make_catalog(catalog, good=1, files=1)
    args = ["--input", catalog, "--output", output, *STAND_IN]
    code, _, err = run_job([*args, "--limit", "0", "--threshold", "0.5"], capsys)
    assert code == 0, err
    assert _runs(output)[0]["arguments"]["threshold"] == 0.5  # recorded, no row written
    code, _, err = run_job(args, capsys)
    assert code == 0, err
    success = json.loads(Path(output, "_SUCCESS").read_text())
    assert success["settings"]["threshold"] == [0.4] and success["mixed"] == {}


def _as_older_voxray(output: str) -> None:
    """Rewrite the output as a voxray before the ``precision`` column wrote it:
    manifests without the column whose footers count only statuses and models,
    run records that name the stand-in's precision as ``stand-in`` and no image
    size. Names stay (they are digests of row keys); the index parts naming the
    rewritten manifests are set aside by the index itself."""
    for path in Path(output, "manifests").glob("*.parquet"):
        table = pq.read_table(path)
        metadata = dict(table.schema.metadata)
        counts = json.loads(metadata[index.COUNTS_KEY])
        metadata[index.COUNTS_KEY] = json.dumps(
            {k: counts[k] for k in ("ok", "failed", "models")}
        ).encode()
        old = table.drop_columns(["precision"]).replace_schema_metadata(metadata)
        pq.write_table(old, path, compression="zstd")
    for path in Path(output, "runs").glob("*.json"):
        record = json.loads(path.read_text())
        record.pop("image_size", None)
        record["precision"] = "stand-in"
        path.write_text(json.dumps(record))


def test_manifests_without_the_precision_column_still_read(started, capsys):
    """Read, resumed, folded, verified and reported alongside new ones."""
    args, output, total = started
    _as_older_voxray(output)
    assert "precision" not in pq.read_schema(next(Path(output, "manifests").glob("*.parquet")))
    reader = Output(output)
    assert "precision" not in reader.manifests().column_names
    old_ok = reader.status()["rows_ok"]
    # the older run's threshold is found in its run record (its footers do not say)
    code, _, err = run_job([*args, "--threshold", "0.5"], capsys)
    assert code == 3 and "--threshold: the output holds rows made with 0.4" in err
    # an unchanged rerun resumes: its precision is new, the older rows' unknown
    code, _, err = run_job(args, capsys)
    assert code == 0, err
    table = reader.manifests()
    assert table.num_rows == total
    assert table.column("precision").null_count >= FIRST_ROWS  # the older rows: null
    counted = reader.sql(
        "select precision, count(*) as n from manifests where status = 'ok' group by 1 order by 1"
    ).fetchall()
    new_ok = sum(n for p, n in counted if p == "fp32")
    assert dict(counted) == {"fp32": new_ok, None: old_ok}
    success = json.loads(Path(output, "_SUCCESS").read_text())
    assert success["precisions"] == {"fp32": new_ok, "unrecorded": old_ok}
    assert success["mixed"] == {}
    # the index folds both layouts into one table; verify finds nothing wrong
    current = index.fold(output)
    assert index.read_table(current, ["object_id", "precision"]).num_rows == total
    assert not verify.check(output).problems
    folder = Path(output).parent / "report"
    assert report_job.main(["--output", output, "--out", str(folder), "--cell", "32"]) == 0
    assert (folder / "index.html").exists()
    held = resume.load_committed(output).held
    assert held.values["precision"] == ("fp32",) and held.values["threshold"] == (0.4,)


def test_a_float32_threshold_of_an_older_writer_is_the_same_setting():
    held = resume.Held(values={"threshold": (0.4000000059604645,), "max_views": (24,)})
    resume.check_settings("out", held, resume.Settings(threshold=0.4, max_views=24))
    with pytest.raises(
        resume.MixedSettings,
        match="--max-views: the output holds rows made with 24; this run uses 5",
    ):
        resume.check_settings("out", held, resume.Settings(threshold=0.4, max_views=5))
    resume.check_settings("out", held, resume.Settings(max_views=5), allow_mixed=True)
