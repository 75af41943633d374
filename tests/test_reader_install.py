"""The reader's own install, without TensorFlow or Ray: requirements-reader.txt
lists exactly the job's dependencies that the reader imports plus the `output`
extra; the reading modules import neither TensorFlow nor Ray; a tool whose
package is missing says which install brings it (exit 3, no traceback); and a
fresh virtualenv given only the reader install reads an S3 output, loads its
grids, exports a GLB and draws a sheet, with tensorflow and ray absent."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib

import numpy as np
import pytest
from test_results import build_demo, grids_of, shard_rows

from conftest import REPO
from pipeline.sink import write_shard

# the job's dependencies the reader imports (pyarrow, fsspec/s3fs, numpy, Pillow)
READER_BASE = {"pyarrow", "fsspec", "s3fs", "numpy", "pillow"}


def requirement_names(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name = re.match(r"[A-Za-z0-9_.\-]+", line).group()
            found[name.lower()] = line
    return found


def test_reader_requirements_are_the_base_it_needs_plus_the_output_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = requirement_names(project["dependencies"])
    extra = requirement_names(project["optional-dependencies"]["output"])
    reader = requirement_names((REPO / "requirements-reader.txt").read_text().splitlines())
    expected = {name: spec for name, spec in base.items() if name in READER_BASE} | extra
    assert reader == expected
    assert not {"tensorflow", "keras", "ray", "tensorboard"} & set(reader)


def test_reading_modules_import_no_tensorflow_or_ray():
    code = (
        "import sys\n"
        "import pipeline.results, pipeline.export, pipeline.preview\n"
        "from jobs import export, preview\n"
        "print(','.join(m for m in ('tensorflow', 'keras', 'ray') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize(("command", "blocked"), [("export", "trimesh"), ("preview", "matplotlib")])
def test_a_missing_package_is_named_with_its_install(tmp_path, command, blocked):
    """Blocked in a fresh process (an import of it fails as when it is absent)."""
    code = (
        "import sys\n"
        f"sys.modules[{blocked!r}] = None\n"
        f"from jobs import {command} as job\n"
        f"sys.exit(job.main(['--output', {str(tmp_path)!r}, '--out', 'x', '--format', 'glb']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert f"needs the package {blocked}" in result.stderr
    assert "requirements-reader.txt" in result.stderr and "[output]" in result.stderr


READER_SCRIPT = r"""
import importlib.util, json, subprocess, sys
absent = [m for m in ("tensorflow", "keras", "ray") if importlib.util.find_spec(m) is None]
from pipeline.results import Output
out = Output(sys.argv[1])
status = out.status()
frame = out.to_pandas(["object_id", "status", "iou"])
ok = out.select(where="status = 'ok'")
grids = out.grids(ok)
by_category = out.sql("select category, count(*) from manifests group by 1").fetchall()
commands = [
    ["jobs/export.py", "--output", sys.argv[1], "--worst", "3", "--format", "glb", "--out", "glb"],
    ["jobs/preview.py", "--output", sys.argv[1], "--worst", "3", "--out", "sheet.png"],
    ["jobs/preview.py", "--output", sys.argv[1], "--summary", "--out", "summary.png"],
]
codes = [subprocess.run([sys.executable, sys.argv[2] + "/" + c[0], *c[1:]]).returncode
         for c in commands]
print(json.dumps({"absent": absent, "status": status, "rows": len(frame),
                  "grids": list(grids.shape), "categories": len(by_category), "codes": codes,
                  "loaded": [m for m in ("tensorflow", "ray") if m in sys.modules]}))
"""


@pytest.mark.slow
def test_a_fresh_venv_with_the_reader_install_reads_exports_and_draws(tmp_path, s3_bucket):
    output = f"s3://{s3_bucket}/grids"
    build_demo(output, f"s3://{s3_bucket}/catalog")
    ids = [f"more-{k:03d}" for k in range(54)]
    grids = grids_of(7, len(ids))
    write_shard(shard_rows(ids, grids, category=["sofa"] * len(ids)), output)

    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        # the README's reader install, as written there (bytecode compiled on use)
        [
            python,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-compile",
            "-r",
            str(REPO / "requirements-reader.txt"),
        ],
        [python, "-m", "pip", "install", "-q", "--no-deps", "-e", str(REPO)],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [python, "-c", READER_SCRIPT, output, str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["absent"] == ["tensorflow", "keras", "ray"] and seen["loaded"] == []
    assert seen["status"]["rows_ok"] == 62 and seen["status"]["rows_failed"] == 1
    assert seen["rows"] == 63 and seen["grids"] == [62, 32, 32, 32]
    assert seen["categories"] == 4 and seen["codes"] == [0, 0, 0]
    assert len(list((tmp_path / "glb").glob("*.glb"))) == 3
    assert (tmp_path / "sheet.png").stat().st_size > 0 and (tmp_path / "summary.png").exists()
    assert np.frombuffer((tmp_path / "sheet.png").read_bytes()[:8], np.uint8).tolist()[1:4] == [
        80,
        78,
        71,
    ]
