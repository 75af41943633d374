"""The layering holds by test: dependencies point one way (jobs -> pipeline ->
model; shapes alone), the commands do not import each other, and the
TensorFlow-free parts (the model's contracts, the decode stage, the driver)
run without TensorFlow loaded."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGES = ("model", "pipeline", "jobs", "shapes")
# package -> first-party or third-party top-level names it must never import
FORBIDDEN = {
    "model": {"pipeline", "jobs", "shapes", "ray"},
    "pipeline": {"jobs", "shapes"},
    "jobs": set(),
    "shapes": {"model", "pipeline", "jobs"},
}
# modules that must not import TensorFlow or Keras at module level
TF_FREE = [
    "model/__init__.py",
    "model/defaults.py",
    "model/images.py",
    "model/voxels.py",
    "model/data.py",
    "model/devices.py",
    *(str(p.relative_to(REPO)) for p in sorted((REPO / "pipeline").glob("*.py"))),
]


def imports(path: Path, module_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in a file, in functions too unless
    ``module_level_only``."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if module_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_dependencies_point_one_way():
    wrong = []
    for package in PACKAGES:
        for path in sorted((REPO / package).glob("*.py")):
            for line, name in imports(path):
                top = name.split(".")[0]
                if top in FORBIDDEN[package]:
                    wrong.append(f"{path.relative_to(REPO)}:{line} imports {name}")
                if package == "jobs" and top == "jobs":
                    wrong.append(f"{path.relative_to(REPO)}:{line} imports another job: {name}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_contract_modules_do_not_import_tensorflow():
    wrong = [
        f"{rel}:{line} imports {name}"
        for rel in TF_FREE
        for line, name in imports(REPO / rel, module_level_only=True)
        if name.split(".")[0] in ("tensorflow", "keras")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_wrong_way_import(tmp_path):
    """The rule itself: a model module importing the pipeline is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy\n\ndef f():\n    from pipeline import io\n")
    names = [name for _, name in imports(bad)]
    assert "pipeline" in names and "pipeline" in FORBIDDEN["model"]
    assert [name for _, name in imports(bad, module_level_only=True)] == ["numpy"]


@pytest.mark.slow
def test_decode_stage_and_driver_run_without_tensorflow(tmp_path):
    """The decode stage, the model's contracts and a whole job's driver, in a
    fresh process: TensorFlow and Keras are never imported there (the model
    lives only in the actors and the one-shot probe task)."""
    script = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
import pyarrow as pa, pyarrow.parquet as pq
import model
from model import images, voxels, data
from pipeline import cluster, job
from pipeline.decode import DecodeConfig, decode_batch
import shapes

rows = [shapes.generate_object(3, i, views=2) for i in range(4)]
table = pa.Table.from_pylist([{{"object_id": r["object_id"], "views": r["views"],
                               "voxels": r["voxels"]}} for r in rows])
decoded = decode_batch(table, DecodeConfig(image_size=64))
loaded = {{"after_decode": sorted(m for m in ("tensorflow", "keras") if m in sys.modules)}}
pq.write_table(table, {str(tmp_path / "catalog.parquet")!r})
config = job.JobConfig(input={str(tmp_path / "catalog.parquet")!r},
                       output={str(tmp_path / "out")!r}, actors=(1, 1))
code = job.run(config)
loaded["after_job"] = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
print(json.dumps({{"code": code, "statuses": decoded.column("status").to_pylist(), **loaded}}))
cluster.leave(0)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["statuses"] == ["ok"] * 4
    assert seen["after_decode"] == [] and seen["after_job"] == []
    assert seen["code"] == 0
