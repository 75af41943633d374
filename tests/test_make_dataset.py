"""make_dataset: layout, schema, determinism under Ray, S3, and refusal of bad input."""

import io
import json
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from shapes.categories import CATEGORIES
from shapes.dataset import (
    SCHEMA,
    DatasetError,
    generate_object,
    make_dataset,
    table_bytes,
    validate,
    view_count,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "jobs" / "make_dataset.py"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )


def test_local_dataset_layout_schema_and_bytes(ray_local, tmp_path):
    out = tmp_path / "ds"
    preview = tmp_path / "sheet.png"
    summary = make_dataset(
        str(out), 15, seed=9, views=2, image_size=64, rows_per_file=6, preview=str(preview)
    )
    assert summary["rows"] == 15 and summary["files"] == 3
    assert sorted(p.name for p in out.iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]
    table = pq.read_table(out)  # pyarrow reads the directory as one dataset
    assert table.schema.equals(SCHEMA)
    assert table.schema.field("object_id").nullable is False
    rows = pa.concat_tables([pq.read_table(out / f"part-0000{i}.parquet") for i in range(3)])
    ids = rows.column("object_id").to_pylist()
    assert ids == [f"proc-9-{i:07d}" for i in range(15)]
    cats = rows.column("category").to_pylist()
    assert set(cats[:13]) == set(CATEGORIES) and set(cats[2:15]) == set(CATEGORIES)
    # Ray's parallel run wrote exactly what a serial loop produces.
    for i in (0, 7, 14):
        assert rows.slice(i, 1).to_pylist()[0] == generate_object(9, i, views=2, image_size=64)
    sheet = Image.open(preview)
    assert sheet.size[1] == 13 * 137 and sheet.size[0] > 6 * 137


def test_categories_narrow_and_stay_even(ray_local, tmp_path):
    make_dataset(
        str(tmp_path / "ds"), 5, seed=1, views=1, image_size=32, categories=["table", "chair"]
    )
    cats = pq.read_table(tmp_path / "ds").column("category").to_pylist()
    assert cats == ["chair", "table", "chair", "table", "chair"]


def test_s3_output(ray_local, s3_bucket):
    url = f"s3://{s3_bucket}/procedural"
    make_dataset(url, 3, seed=2, views=1, image_size=32)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    assert fs.ls(f"{s3_bucket}/procedural", detail=False) == [
        f"{s3_bucket}/procedural/part-00000.parquet"
    ]
    table = pq.read_table(io.BytesIO(fs.cat(f"{s3_bucket}/procedural/part-00000.parquet")))
    assert table.num_rows == 3
    with pytest.raises(DatasetError, match="not empty"):
        make_dataset(url, 3, seed=2, views=1, image_size=32)


def test_view_counts_drawn_per_object_from_the_seed():
    """``views=(low, high)``: each object's count is drawn from its own seed (the
    same for every worker and file, and as shapes.photos draws it), its cameras
    are the first of the ``high`` it would get, its shape and voxels unchanged."""
    counts = [view_count(3, i, (1, 4)) for i in range(40)]
    assert set(counts) == {1, 2, 3, 4} and counts == [view_count(3, i, (1, 4)) for i in range(40)]
    assert [view_count(3, i, 5) for i in range(3)] == [5, 5, 5]
    for i in range(3):
        mixed = generate_object(3, i, views=(1, 4), image_size=16)
        full = generate_object(3, i, views=4, image_size=16)
        n = counts[i]
        assert len(mixed["views"]) == len(mixed["cameras"]) == n
        assert mixed["cameras"] == full["cameras"][:n] and mixed["views"] == full["views"][:n]
        assert mixed["voxels"] == full["voxels"]
    with pytest.raises(DatasetError, match="LOW <= HIGH, got 4,2"):
        validate(1, 0, (4, 2), 32, None, 1)
    with pytest.raises(DatasetError, match="positive count"):
        validate(1, 0, 0, 32, None, 1)


def test_row_groups_are_small():
    rows = [
        {"object_id": str(i), "category": "chair", "views": [b"x"], "voxels": b"", "cameras": []}
        for i in range(130)
    ]
    meta = pq.read_metadata(io.BytesIO(table_bytes(pa.Table.from_pylist(rows, schema=SCHEMA))))
    assert meta.num_row_groups == 3 and meta.row_group(0).num_rows == 64


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"objects": 0}, "positive"),
        ({"objects": -3}, "positive"),
        ({"categories": ["chair", "spaceship"]}, "unknown category spaceship"),
        ({"seed": -1}, "non-negative"),
    ],
)
def test_bad_arguments_write_nothing(tmp_path, kwargs, match):
    args = {"objects": 2, "seed": 0} | kwargs
    with pytest.raises(DatasetError, match=match):
        make_dataset(str(tmp_path / "ds"), args.pop("objects"), args.pop("seed"), **args)
    assert not (tmp_path / "ds").exists()


def test_cli_bad_input_exits_2_and_leaves_output_alone(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(b"someone's data")
    base = ["--seed", "0", "--output"]
    cases = [
        (["--objects", "3", *base, str(out)], "not empty"),
        (["--objects", "0", *base, str(tmp_path / "new")], "positive"),
        (["--objects", "2", "--categories", "boat", *base, str(tmp_path / "n")], "category boat"),
        (["--objects", "2", *base, str(out / "part-00000.parquet")], "is a file"),
    ]
    for args, message in cases:
        res = run_cli(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert message in res.stderr and "Traceback" not in res.stderr
    assert (out / "part-00000.parquet").read_bytes() == b"someone's data"
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    out, sheet = tmp_path / "ds", tmp_path / "sheet.png"
    res = run_cli(
        "--output", str(out), "--objects", "3", "--seed", "4", "--views", "2",
        "--image-size", "48", "--num-cpus", "1", "--preview", str(sheet),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["rows"] == 3
    table = pq.read_table(out)
    assert table.column("object_id").to_pylist() == [f"proc-4-{i:07d}" for i in range(3)]
    grid = np.unpackbits(np.frombuffer(table.column("voxels")[0].as_py(), np.uint8))
    assert grid.size == 32**3 and grid.any()
    assert Image.open(sheet).format == "PNG"
