"""Two nodes (ray.cluster_utils.Cluster, both on loopback): the model actors
run on both, and the output is the same as on one node."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import psutil
import pytest
from test_job import check_every_row_once, make_catalog, run_job

from conftest import REPO, build_models
from pipeline.results import load_grid, read_manifests

# Run in its own process: this pytest process may already hold the session's
# local Ray, and a process joins one cluster at most.
TWO_NODES = textwrap.dedent(
    """
    import json, sys
    import ray
    from ray.cluster_utils import Cluster

    sys.path.insert(0, sys.argv[1])
    from jobs.reconstruct import main

    # 3 CPUs per node and 2 per actor: one actor fits on each node, and each
    # node keeps a CPU for reading, decoding and writing.
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 3, "node_ip_address": "127.0.0.1",
                        "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=3, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": sys.argv[1]}})
        code = main(sys.argv[2:])
        from ray._private import state

        actors = [a for a in state.actors().values() if "MapWorker" in a["ActorClassName"]]
        print("RESULT " + json.dumps({
            "code": code,
            "actor_nodes": sorted({a["Address"]["NodeID"] for a in actors}),
            "cluster_nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
        }))
    finally:
        ray.shutdown()
        cluster.shutdown()
    """
)


def run_two_nodes(args: list[str], temp_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Cluster() records its address under Ray's temp dir for every later plain
    # ray.init() on this machine: keep that file, and the sessions, in our own.
    env["RAY_TMPDIR"] = temp_dir
    # Resolve "this node" to 127.0.0.1, so that both nodes and the driver talk
    # over loopback only (otherwise ray.init maps 127.0.0.1 to the host's address).
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    proc = subprocess.Popen(
        [sys.executable, "-c", TWO_NODES, str(REPO), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    descendants: list[psutil.Process] = []
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        descendants = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        out, err = proc.communicate()
    finally:
        for child in descendants:  # only after a hang: end what it started, by pid
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (out + err)[-5000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.mark.slow
def test_two_nodes_same_output_as_one(ray_local, tmp_path, capsys):
    catalog = str(tmp_path / "catalog")
    expected = make_catalog(catalog, good=8, files=2)
    model_files = build_models(tmp_path)
    common = ["--input", catalog, "--model", model_files[0], "--batch-size", "2",
              "--rows-per-shard", "3", "--max-views", "5"]  # fmt: skip

    two = str(tmp_path / "two-nodes")
    temp_dir = tempfile.mkdtemp(prefix="vxr", dir="/tmp")  # short: Unix socket paths
    try:
        result = run_two_nodes(
            [*common, "--output", two, "--actors", "2", "--cpus-per-actor", "2"], temp_dir
        )
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert result["code"] == 0
    assert len(result["cluster_nodes"]) == 2
    assert result["actor_nodes"] == result["cluster_nodes"]  # an actor on each node

    one = str(tmp_path / "one-node")
    code, out, err = run_job([*common, "--output", one], capsys)
    assert code == 0, err

    a = {r["object_id"]: r for r in check_every_row_once(two, expected).to_pylist()}
    b = {r["object_id"]: r for r in check_every_row_once(one, expected).to_pylist()}
    assert a.keys() == b.keys()
    for object_id, row in a.items():
        other = b[object_id]
        for column in ("status", "error", "n_views", "n_views_given", "model"):
            assert row[column] == other[column], (object_id, column)
        if row["status"] == "ok":
            diff = np.abs(load_grid(two, row).astype(int) - load_grid(one, other).astype(int))
            assert diff.max() <= 1, object_id
            assert abs(row["occupied_voxels"] - other["occupied_voxels"]) <= 32
    assert read_manifests(two).num_rows == read_manifests(one).num_rows == len(expected)
