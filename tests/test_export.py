"""Exporting grids as files 3D tools open: smooth marching-cubes surfaces that
close at the grid's border, exact voxel cubes, binvox; each format read back by
trimesh and by a second reader (plain OBJ text, the GLB container's own JSON,
shapes/binvox.py); safe file names whatever the ids; the command line."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh
from test_results import build_demo, grids_of, shard_rows

from jobs import export as export_job
from model import voxels
from pipeline import export, io
from pipeline.results import Output
from pipeline.sink import write_shard
from shapes.binvox import read_binvox


def ball(radius: float, centre=(15.5, 15.5, 15.5)) -> np.ndarray:
    """Stored probabilities of a ball: 1 inside, falling to 0 over two voxels."""
    x, y, z = np.indices(voxels.GRID)
    distance = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
    return voxels.quantize(np.clip((radius + 1 - distance) / 2, 0, 1))


def test_smooth_mesh_is_closed_in_the_unit_cube():
    grid = ball(9.0)
    mesh = export.smooth_mesh(grid, 0.4)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert mesh.bounds.min() >= -0.5 and mesh.bounds.max() <= 0.5
    occupied = voxels.occupied(grid, 0.4).sum() / voxels.SIDE**3
    assert mesh.volume == pytest.approx(occupied, rel=0.1)
    # centred where the ball is: voxel centre 15.5 is the cube's centre, 0
    assert np.allclose(mesh.centroid, 0, atol=1e-3)
    # a higher threshold keeps less
    assert export.smooth_mesh(grid, 0.9).volume < mesh.volume


def test_surfaces_close_at_the_border_and_separate_exactly_the_occupied_voxels():
    grid = np.zeros(voxels.GRID, np.uint8)
    grid[:, :, :4] = 255  # a slab on the grid's face
    grid[10, 10, 10] = 102  # exactly at the threshold (0.4 * 255): occupied
    grid[20, 20, 20] = 101  # just under: not
    mesh = export.smooth_mesh(grid, 0.4)
    assert mesh.is_watertight
    assert len(mesh.split(only_watertight=True)) == 2  # the slab and the one voxel
    assert export.lowest_occupied(0.4) == 102
    assert voxels.occupied(np.uint8(export.lowest_occupied(0.4)), 0.4)
    assert not voxels.occupied(np.uint8(export.lowest_occupied(0.4) - 1), 0.4)
    with pytest.raises(ValueError, match="no voxel is occupied"):
        export.smooth_mesh(np.zeros(voxels.GRID, np.uint8), 0.4)


def test_cube_mesh_is_exact():
    grid = np.zeros(voxels.GRID, np.uint8)
    a, b, c = 3, 4, 5
    grid[0:a, 10 : 10 + b, 27 : 27 + c] = 200  # touches the border on x
    mesh = export.cube_mesh(grid, 0.4)
    assert mesh.is_watertight and mesh.volume > 0
    assert mesh.volume == pytest.approx(a * b * c / voxels.SIDE**3)
    assert len(mesh.faces) == 2 * 2 * (a * b + b * c + c * a)
    assert len(mesh.vertices) == (a + 1) * (b + 1) * (c + 1) - (a - 1) * (b - 1) * (c - 1)
    assert mesh.bounds[0] == pytest.approx([-0.5, 10 / 32 - 0.5, 27 / 32 - 0.5])
    # any grid: the volume is exactly the occupied voxels'
    noisy = grids_of(5, 1)[0]
    assert export.cube_mesh(noisy, 0.7).volume == pytest.approx(
        voxels.occupied(noisy, 0.7).sum() / voxels.SIDE**3
    )


def test_cube_mesh_is_watertight_where_voxels_touch_along_an_edge_or_a_corner():
    """Voxels that share only an edge or a corner, alone and with the voxels
    around them joining them on one side or both, and random grids of every
    density: each mesh is watertight, consistently wound, of the voxels' volume."""
    cases = []
    pair = np.zeros(voxels.GRID, bool)
    pair[4, 4, 4] = pair[5, 5, 4] = True  # an edge
    pair[8, 8, 8] = pair[9, 9, 9] = True  # a corner
    cases.append(pair)
    joined = pair.copy()
    joined[4:6, 4:6, 3] = True  # joined below the edge: the edge's lower end
    cases.append(joined.copy())
    joined[4:6, 4:6, 5] = True  # and above: joined around both ends
    cases.append(joined.copy())
    holes = np.ones(voxels.GRID, bool)
    holes[4, 5, 4] = holes[5, 4, 4] = False  # two cavities that touch along an edge
    cases.append(holes)
    rng = np.random.default_rng(3)
    for density in (0.05, 0.3, 0.5, 0.7, 0.95):
        noisy = np.zeros(voxels.GRID, bool)
        noisy[:12, 20:, 10:22] = rng.random((12, 12, 12)) < density  # at the border too
        cases.append(noisy)
    for occupied in cases:
        mesh = export.cube_mesh(occupied.astype(np.uint8) * 255, 0.4)
        assert mesh.is_watertight and mesh.is_winding_consistent
        assert mesh.volume == pytest.approx(occupied.sum() / voxels.SIDE**3)


def glb_counts(data: bytes) -> tuple[int, int]:
    """(vertices, faces) from a GLB's own JSON chunk: the glTF 2.0 container
    read without trimesh (12-byte header, then a JSON chunk)."""
    magic, version, length = struct.unpack_from("<4sII", data)
    assert magic == b"glTF" and version == 2 and length == len(data)
    chunk_length, chunk_type = struct.unpack_from("<I4s", data, 12)
    assert chunk_type == b"JSON"
    gltf = json.loads(data[20 : 20 + chunk_length])
    primitive = gltf["meshes"][0]["primitives"][0]
    vertices = gltf["accessors"][primitive["attributes"]["POSITION"]]["count"]
    faces = gltf["accessors"][primitive["indices"]]["count"] // 3
    return vertices, faces


@pytest.mark.parametrize(
    ("fmt", "cubes"),
    [(f, c) for f in export.FORMATS for c in (False, True) if not (c and f == "binvox")],
)
def test_every_format_reads_back(tmp_path, fmt, cubes):
    source = str(tmp_path / "out")
    objects = build_demo(source, str(tmp_path / "catalog"))
    output = Output(source)
    target = str(tmp_path / "export")
    done = export.export(output, output.select(ids=["proc-0-0000045"]), target, fmt, cubes)
    assert len(done) == 1 and done[0].file is not None
    path = os.path.join(target, done[0].file)
    data = Path(path).read_bytes()
    grid = objects["proc-0-0000045"][0][1]
    occupied = voxels.occupied(grid, 0.4)
    if fmt == "binvox":
        back = read_binvox(data)  # the project's own reader
        assert np.array_equal(back.grid, occupied)
        assert back.translate == (-0.5, -0.5, -0.5) and back.scale == 1.0
        assert data.split(b"\n")[1] == b"dim 32 32 32"  # no comment line for strict readers
        loaded = trimesh.load(path)  # and trimesh's
        assert np.array_equal(loaded.matrix, occupied)
        assert done[0].facts == {"occupied": int(occupied.sum()), "threshold": 0.4}
        # placed where the meshes are: by binvox's definition (voxel i centred at
        # translate + (i + 0.5) / dim * scale), and by trimesh after the scale
        # pipeline.export documents (trimesh reads centres 1/31 apart)
        cubes = export.cube_mesh(grid, 0.4)
        index = np.argwhere(occupied)
        centres = back.translate[0] + (index + 0.5) / 32 * back.scale
        assert np.allclose(centres.min(0) - 1 / 64, cubes.bounds[0])
        assert np.allclose(centres.max(0) + 1 / 64, cubes.bounds[1])
        loaded.apply_scale(31 / 32)
        expected = (index + 0.5) / 32 - 0.5
        assert np.allclose(np.unique(loaded.points, axis=0), np.unique(expected, axis=0))
        assert np.allclose(loaded.bounds, cubes.bounds)
        return
    mesh = trimesh.load(path, force="mesh", process=False)
    facts = done[0].facts
    assert (len(mesh.vertices), len(mesh.faces)) == (facts["vertices"], facts["faces"])
    assert mesh.bounds.min() >= -0.5 - 1e-6 and mesh.bounds.max() <= 0.5 + 1e-6
    # closed and manifold, read back as written: watertight
    assert mesh.is_watertight and mesh.is_winding_consistent and facts["watertight"]
    if cubes:  # the voxels' volume exactly
        assert mesh.volume == pytest.approx(occupied.sum() / voxels.SIDE**3)
    if fmt == "obj":  # plain text: count the vertex and face lines
        lines = data.decode().splitlines()
        assert sum(line.startswith("v ") for line in lines) == facts["vertices"]
        assert sum(line.startswith("f ") for line in lines) == facts["faces"]
    if fmt == "glb":
        assert glb_counts(data) == (facts["vertices"], facts["faces"])
    if fmt == "ply":
        header = data[: data.index(b"end_header")].decode()
        assert f"element vertex {facts['vertices']}" in header
        assert f"element face {facts['faces']}" in header


EVIL_IDS = ["../../escape", "a/b/c", "line\nbreak", "..", ".hidden", "", "ça va ?", "x" * 300]


def test_file_names_are_safe_and_distinct():
    names = [export.file_name(i, "ply") for i in EVIL_IDS]
    assert len(set(names)) == len(names)
    for name in names:
        assert "/" not in name and "\n" not in name and not name.startswith(".")
        assert name.endswith(".ply") and len(name) <= 48 + 1 + 10 + 4
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
    assert export.file_name("chair-7", "glb").startswith("chair-7-")


def test_export_never_writes_outside_its_folder(tmp_path):
    source = str(tmp_path / "out")
    ids = [*EVIL_IDS, "twice", "twice"]
    write_shard(shard_rows(ids, [ball(5.0 + k % 4) for k in range(len(ids))]), source)
    output = Output(source)
    target = tmp_path / "deep" / "export"
    done = export.export(output, output.select(), str(target), "obj")
    assert all(d.file for d in done)
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    outside = {p for p in written if p.parts[:2] != ("deep", "export") and p.parts[0] != "out"}
    assert not outside
    assert len(list(target.iterdir())) == len(ids) + 1  # a file per row, and index.json
    twice = [d.file for d in done if d.object_id == "twice"]
    assert twice[1] == twice[0][:-4] + "-2.obj"  # the second row of a repeated id
    index = json.loads((target / "index.json").read_text())
    assert [r["object_id"] for r in index["rows"]] == [d.object_id for d in done]
    assert index["units"].startswith("unit cube")


def test_export_to_s3(s3_bucket, tmp_path):
    source = f"s3://{s3_bucket}/grids"
    build_demo(source, f"s3://{s3_bucket}/catalog")
    output = Output(source)
    done = export.export(output, output.select(worst=2), f"s3://{s3_bucket}/exports", "glb")
    assert [d.file is not None for d in done] == [True, True]
    data = io.read_bytes(f"s3://{s3_bucket}/exports/{done[0].file}")
    assert glb_counts(data) == (done[0].facts["vertices"], done[0].facts["faces"])


def test_command_line(tmp_path, capsys):
    source = str(tmp_path / "out")
    build_demo(source, str(tmp_path / "catalog"))
    target = tmp_path / "export"

    def run(*args: str) -> int:
        return export_job.main(["--output", source, "--out", str(target), *args])

    assert run("--format", "ply", "--category", "chair") == 0
    assert len(list(target.glob("*.ply"))) == 4  # proc-0-0000040 twice, 43, 46
    # a failed row is reported and skipped, and the exit code says so
    assert run("--format", "obj", "--ids", "proc-0-0000047", "proc-0-0000041") == 1
    printed = capsys.readouterr().out
    assert "skipped 'proc-0-0000047': failed: views is empty" in printed
    assert len(list(target.glob("*.obj"))) == 1
    assert run("--format", "glb", "--cubes", "--worst", "2", "--threshold", "0.6") == 0
    assert json.loads((target / "index.json").read_text())["threshold"] == 0.6
    assert run("--format", "binvox", "--where", "iou < 2") == 0
    assert len(list(target.glob("*.binvox"))) == 8
    index = json.loads((target / "index.json").read_text())
    assert index["threshold"] == 0.4 and index["threshold_source"] == "the rows' run"
    assert run("--format", "ply", "--ids", "nobody") == 2
    assert "no row for object_id 'nobody'" in capsys.readouterr().err
    assert run("--format", "ply", "--where", "iou > 2") == 1
    with pytest.raises(SystemExit):
        run("--format", "binvox", "--cubes")
    with pytest.raises(SystemExit):
        run("--format", "stl")
