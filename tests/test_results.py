"""Reading an output as a downstream user does: all manifests as one Arrow
table, grids by id or by row (one range read per grid, or whole shards of
older outputs), the row choices the output tools share, DuckDB over the
manifests and the catalog, the inputs' views and ground truth, locally and on
S3; and every example of docs/output.md, run against the demo's own output."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image
from test_sink import model_rows

from conftest import REPO
from model import voxels
from pipeline import io, results, shards
from pipeline.layout import MANIFEST_SCHEMA, SUCCESS
from pipeline.results import (
    DuplicateIdError,
    FailedRowError,
    Output,
    load_grid,
    read_manifests,
)
from pipeline.sink import write_shard

_ROWS = itertools.count()


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/grids"


# --- building outputs and catalogs without running the job ---------------------------


def shard_rows(ids, grids, status=None, iou=None, threshold=0.4, **carried) -> pa.Table:
    """Rows as the model stage hands them to the sink, with the given grids;
    each row gets a row key of its own (as the job's positional keys)."""
    n = len(ids)
    status = status or ["ok"] * n
    ok = [s == "ok" for s in status]
    occupied = [
        int(voxels.occupied(g, threshold).sum()) if good else None
        for g, good in zip(grids, ok, strict=True)
    ]
    columns = {
        "row_key": pa.array([f"test-fragment:{next(_ROWS)}" for _ in ids]),
        "object_id": pa.array(ids, pa.string()),
        "n_views": pa.array([3 if good else None for good in ok], pa.int32()),
        "n_views_given": pa.array([3] * n, pa.int32()),
        "status": pa.array(status, pa.string()),
        "error": pa.array([None if good else "views is empty" for good in ok], pa.string()),
        "probabilities": pa.array(
            [g.tobytes() if good else None for g, good in zip(grids, ok, strict=True)],
            pa.binary(),
        ),
        "occupied_voxels": pa.array(occupied, pa.int32()),
        "iou": pa.array(iou if iou is not None else [None] * n, pa.float32()),
        "threshold": pa.array([threshold] * n, pa.float64()),
        "model": pa.array(["compact-test"] * n, pa.string()),
    }
    columns.update({name: pa.array(values) for name, values in carried.items()})
    return pa.table(columns)


def random_object(rng: np.random.Generator, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(truth bool [32]^3, stored grid uint8 [32]^3): a box, and probabilities
    that find it with ``noise``."""
    truth = np.zeros(voxels.GRID, bool)
    lo = rng.integers(2, 12, 3)
    hi = lo + rng.integers(6, 18, 3)
    truth[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    p = np.clip(truth * 0.75 + rng.normal(0.1, noise, voxels.GRID), 0, 1)
    return truth, voxels.quantize(p)


def png_view(rng: np.random.Generator, width: int, height: int) -> bytes:
    """An RGBA PNG: a coloured rectangle on transparent pixels."""
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = [
        *rng.integers(0, 200, 3),
        255,
    ]
    buffer = BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


DEMO_IDS = [f"proc-0-00000{k}" for k in range(40, 48)]
CATEGORIES = ["chair", "lamp", "bench"]


def build_demo(
    output: str, catalog: str, seed: int = 0, carried: str | None = None, rerun: bool = False
) -> dict:
    """An output like the demo's: 8 ids in two shards, one failed
    (``proc-0-0000047``, a lamp), one repeated (``proc-0-0000040``, two input
    rows); its catalog (views as RGBA PNGs, voxels) and a ``_SUCCESS`` naming
    it. Row keys are the catalog's positions, so two outputs of one catalog
    pair by row; ``rerun`` leaves an existing catalog as it is (another run's
    grids over it). ``carried`` adds one more carried column of that name.
    Returns ``{object_id: [(truth, grid, iou), ...]}`` in input order."""
    rng = np.random.default_rng(seed)
    ids = [*DEMO_IDS, DEMO_IDS[0]]
    categories = [CATEGORIES[k % 3] for k in range(len(DEMO_IDS))] + [CATEGORIES[0]]
    objects: dict[str, list] = {}
    truths, grids, ious, catalog_rows = [], [], [], []
    for k, object_id in enumerate(ids):
        truth, grid = random_object(rng, noise=0.05 + 0.04 * k)
        score = float(voxels.iou(voxels.occupied(grid), truth))
        truths.append(truth)
        grids.append(grid)
        ious.append(score)
        objects.setdefault(object_id, []).append((truth, grid, score))
        catalog_rows.append(
            {
                "object_id": object_id,
                "category": categories[k],
                "views": [png_view(rng, 40, 40), png_view(rng, 40, 30), png_view(rng, 40, 40)],
                "voxels": np.packbits(truth).tobytes(),
            }
        )
    status = ["failed" if i == DEMO_IDS[-1] else "ok" for i in ids]
    ious = [s if st == "ok" else None for s, st in zip(ious, status, strict=True)]
    extra = {carried: [f"{carried}-{k}" for k in range(len(ids))]} if carried else {}
    keys = [f"{catalog}/part-00000.parquet:{k}" for k in range(len(ids))]
    for part in (slice(0, 5), slice(5, None)):
        rows = shard_rows(
            ids[part],
            grids[part],
            status[part],
            ious[part],
            category=categories[part],
            **{k: v[part] for k, v in extra.items()},
        )
        write_shard(rows.set_column(0, "row_key", pa.array(keys[part])), output)
    if not (rerun and io.exists(io.join(catalog, "part-00000.parquet"))):
        buffer = BytesIO()
        pq.write_table(pa.Table.from_pylist(catalog_rows), buffer)
        io.write_bytes(io.join(catalog, "part-00000.parquet"), buffer.getvalue())
    summary = {"arguments": {"input": catalog}, "model": "compact-test", "rows_total": len(ids)}
    io.write_bytes(io.join(output, SUCCESS), json.dumps(summary).encode())
    return objects


def write_old_layout(output: str, name: str, ids: list[str], grids: list[np.ndarray]) -> None:
    """A shard and manifest as voxray wrote them before one zip member per grid:
    all grids in one ``probabilities`` array, no ``grid_offset``/``grid_bytes``."""
    buffer = BytesIO()
    np.savez_compressed(buffer, object_id=np.asarray(ids, np.str_), probabilities=np.stack(grids))
    io.write_bytes(io.join(output, "shards", f"{name}.npz"), buffer.getvalue())
    n = len(ids)
    manifest = pa.table(
        {
            "object_id": pa.array(ids, pa.string()),
            "status": pa.array(["ok"] * n),
            "error": pa.array([None] * n, pa.string()),
            "shard": pa.array([f"shards/{name}.npz"] * n),
            "index": pa.array(range(n), pa.int32()),
            "n_views": pa.array([5] * n, pa.int32()),
            "n_views_given": pa.array([5] * n, pa.int32()),
            "occupied_voxels": pa.array([int(voxels.occupied(g).sum()) for g in grids], pa.int32()),
            "threshold": pa.array([0.4] * n),
            "model": pa.array(["compact-test"] * n),
            "iou": pa.array([None] * n, pa.float32()),
            "row_key": pa.array(ids),
            "category": pa.array(["old"] * n),
        }
    )
    buffer = BytesIO()
    pq.write_table(manifest, buffer)
    io.write_bytes(io.join(output, "manifests", f"{name}.parquet"), buffer.getvalue())


def grids_of(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, voxels.GRID, dtype=np.uint8) for _ in range(n)]


# --- the functions underneath ---------------------------------------------------------


def test_reader_imports_fast_without_tensorflow_ray_or_duckdb():
    """Under 1 s, counted in CPU time: wall time on these shared 2-core
    machines also counts whatever else runs."""
    code = (
        "import sys, time\n"
        "t = time.process_time()\n"
        "import pipeline.results\n"
        "print(time.process_time() - t)\n"
        "heavy = ('tensorflow', 'keras', 'ray', 'duckdb', 'matplotlib', 'trimesh', 'skimage')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stderr
    seconds, loaded = result.stdout.splitlines()
    assert loaded == "", f"importing pipeline.results loaded {loaded}"
    assert float(seconds) < 1.0


def test_empty_output_reads_as_empty_table(output):
    table = read_manifests(output)
    assert table.num_rows == 0 and table.schema == MANIFEST_SCHEMA
    assert Output(output).select().num_rows == 0


def test_read_manifests_and_load_grid(output):
    first = model_rows(["a", "b", "c"], ["ok", "failed", "ok"], seed=1)
    second = model_rows(["d", "e"], ["ok", "ok"], seed=2).drop_columns(["sku"])
    write_shard(first, output)
    write_shard(second, output)

    table = read_manifests(output)
    assert sorted(table.column("object_id").to_pylist()) == ["a", "b", "c", "d", "e"]
    assert table.column("sku").null_count == 2  # absent in the second shard's manifest
    ok = table.filter(pc.equal(table["status"], "ok"))
    assert ok.num_rows == 4

    grids = {
        **dict(zip(["a", "b", "c"], first["probabilities"].to_pylist(), strict=True)),
        **dict(zip(["d", "e"], second["probabilities"].to_pylist(), strict=True)),
    }
    for row in ok.to_pylist():
        grid = load_grid(output, row)
        assert grid.shape == (32, 32, 32) and grid.dtype == np.uint8
        assert grid.tobytes() == grids[row["object_id"]]
        assert load_grid(output, row["object_id"]).tobytes() == grids[row["object_id"]]
    one = ok.filter(pc.equal(ok["object_id"], "d"))
    assert load_grid(output, one).tobytes() == grids["d"]  # a one-row table works too

    failed = table.filter(pc.equal(table["status"], "failed")).to_pylist()[0]
    with pytest.raises(ValueError, match="have no grid"):
        load_grid(output, failed)


def test_column_selection_and_filters(output):
    write_shard(shard_rows(["a", "b"], grids_of(1, 2), sku=[1, 2]), output)
    write_shard(shard_rows(["c"], grids_of(2, 1), ["failed"]), output)  # no sku column
    table = read_manifests(output, columns=["object_id", "status"])
    assert table.column_names == ["object_id", "status"]
    # a column some manifests lack reads as null there; one no manifest has is left out
    table = read_manifests(output, columns=["sku", "object_id", "nowhere"])
    assert table.column_names == ["sku", "object_id"]
    assert sorted(table.to_pylist(), key=lambda r: r["object_id"]) == [
        {"sku": 1, "object_id": "a"},
        {"sku": 2, "object_id": "b"},
        {"sku": None, "object_id": "c"},
    ]
    # filters are pushed down, may name unread columns, and see missing ones as null
    out = Output(output)
    ok = out.manifests(["object_id"], filter=pc.field("status") == "ok")
    assert sorted(ok.column("object_id").to_pylist()) == ["a", "b"]
    assert out.manifests(["object_id"], pc.field("sku") == 2).to_pylist() == [{"object_id": "b"}]
    no_sku = out.manifests(["object_id"], pc.field("sku").is_null())
    assert no_sku.to_pylist() == [{"object_id": "c"}]
    with pytest.raises(ValueError, match="cannot filter"):
        out.manifests(filter=pc.field("nowhere") == 1)


def test_grids_by_id_and_row_with_one_range_read_each(output, monkeypatch):
    objects = build_demo(output, f"{output}-catalog")
    out = Output(output)
    assert "grid_offset" in out.manifests().column_names

    def no_whole_shards(*args, **kwargs):
        raise AssertionError("read a whole shard although the manifest says where the grid is")

    reads = []
    read_grid = shards.read_grid
    monkeypatch.setattr(shards, "read_shard", no_whole_shards)
    monkeypatch.setattr(
        shards, "read_grid", lambda *a, **k: reads.append(a[1:3]) or read_grid(*a, **k)
    )
    wanted = ["proc-0-0000045", "proc-0-0000041", "proc-0-0000045"]
    grids = out.grids(wanted)
    assert grids.shape == (3, 32, 32, 32) and grids.dtype == np.uint8
    for grid, object_id in zip(grids, wanted, strict=True):
        assert np.array_equal(grid, objects[object_id][0][1])
    assert len(reads) == 3  # one range read per grid asked for
    assert np.array_equal(out.grid("proc-0-0000043"), objects["proc-0-0000043"][0][1])
    row = out.row("proc-0-0000043")
    assert row["occupied_voxels"] == voxels.occupied(out.grid(row), row["threshold"]).sum()
    worst = out.select(worst=3)
    assert np.array_equal(out.grids(worst), np.stack([out.grid(r) for r in worst.to_pylist()]))


def test_older_outputs_read_whole_shards(output, monkeypatch):
    """Manifests without grid_offset (outputs of an older voxray) load through
    the whole shard, one read per shard, also beside newer manifests."""
    old = grids_of(3, 3)
    write_old_layout(output, "part-old", ["x", "y", "z"], old)
    new = grids_of(4, 1)
    write_shard(shard_rows(["w"], new), output)
    results._SHARD_CACHE.clear()
    calls = []
    read_shard = shards.read_shard
    monkeypatch.setattr(
        shards, "read_shard", lambda *a, **k: calls.append(a[0]) or read_shard(*a, **k)
    )
    out = Output(output)
    grids = out.grids(["z", "w", "x", "y"])
    assert [g.tobytes() for g in grids] == [g.tobytes() for g in (old[2], new[0], old[0], old[1])]
    assert len(calls) == 1 and calls[0].endswith("shards/part-old.npz")
    assert out.manifests().column("grid_offset").null_count == 3
    # the shard must hold the id the manifest names at that index
    wrong = dict(out.row("x"), object_id="someone-else")
    with pytest.raises(ValueError, match="the manifest says"):
        out.grid(wrong)
    with pytest.raises(ValueError, match="not a file under shards/"):
        out.grid(dict(out.row("x"), shard="../elsewhere.npz"))


def test_unknown_failed_and_repeated_ids(output):
    build_demo(output, f"{output}-catalog")
    out = Output(output)
    with pytest.raises(KeyError, match="no-such-id"):
        out.grid("no-such-id")
    with pytest.raises(KeyError, match="'nope-1', 'nope-2'"):
        out.grids(["proc-0-0000041", "nope-1", "nope-2"])
    with pytest.raises(FailedRowError, match="proc-0-0000047.*views is empty"):
        out.grid("proc-0-0000047")
    assert issubclass(FailedRowError, ValueError)
    # a repeated id: every input row has its own manifest row; asked for as one, refused
    rows = out.rows("proc-0-0000040")
    assert rows.num_rows == 2 and len(set(rows.column("row_key").to_pylist())) == 2
    for call in (out.grid, out.row, lambda i: out.grids([i])):
        with pytest.raises(DuplicateIdError, match=r"2 rows.*Output.rows"):
            call("proc-0-0000040")
    first, second = (out.grid(rows.slice(k, 1)) for k in range(2))
    assert not np.array_equal(first, second)
    assert np.array_equal(out.grids(rows)[1], second)
    assert out.rows(["proc-0-0000041", "unknown"]).num_rows == 1


def test_select(output):
    objects = build_demo(output, f"{output}-catalog")
    out = Output(output)
    everything = out.select()
    assert everything.num_rows == 9
    assert everything.column("object_id").to_pylist() == sorted(
        everything.column("object_id").to_pylist()
    )
    picked = out.select(ids=["proc-0-0000045", "proc-0-0000040", "proc-0-0000047"])
    assert picked.column("object_id").to_pylist() == [
        "proc-0-0000045",
        "proc-0-0000040",
        "proc-0-0000040",
        "proc-0-0000047",
    ]
    with pytest.raises(KeyError, match="'absent'"):
        out.select(ids=["proc-0-0000045", "absent"])

    scores = sorted(
        (s, i) for i, found in objects.items() for _, _, s in found if i != "proc-0-0000047"
    )
    worst = out.select(worst=3)
    assert worst.column("object_id").to_pylist() == [i for _, i in scores[:3]]
    assert worst.column("iou").to_pylist() == pytest.approx([s for s, _ in scores[:3]])

    lamps = out.select(category="lamp")
    assert set(lamps.column("object_id").to_pylist()) == {
        "proc-0-0000041",
        "proc-0-0000044",
        "proc-0-0000047",
    }
    worst_lamp = out.select(category="lamp", worst=1)
    assert worst_lamp.num_rows == 1 and worst_lamp["status"][0].as_py() == "ok"
    low = out.select(where="iou < 0.8 and category = 'chair'", limit=2)
    assert low.num_rows <= 2 and all(r["iou"] < 0.8 for r in low.to_pylist())
    assert low.schema == everything.schema  # SQL chooses rows, never changes columns
    assert out.select(where="status = 'failed'").column("object_id").to_pylist() == [
        "proc-0-0000047"
    ]
    with pytest.raises(ValueError, match="bad SQL condition"):
        out.select(where="no_such_column > 1")
    plain = output + "-plain"  # no category, no ground truth
    write_shard(shard_rows(["q"], grids_of(9, 1)), plain)
    with pytest.raises(ValueError, match="no 'category' column"):
        Output(plain).select(category="lamp")
    with pytest.raises(ValueError, match="no ground truth"):
        Output(plain).select(worst=2)


def test_sql_and_relations(output):
    build_demo(output, f"{output}-catalog")
    out = Output(output)
    counts = dict(out.sql("select status, count(*) from manifests group by 1").fetchall())
    assert counts == {"ok": 8, "failed": 1}
    joined = out.sql(
        "select m.object_id, len(c.views) as n from manifests m join catalog c "
        "using (object_id) where m.object_id = 'proc-0-0000045'"
    ).fetchall()
    assert joined == [("proc-0-0000045", 3)]
    assert out.sql("select count(*) from manifests where error != 'catalog'").fetchall()
    io.remove(io.join(output, SUCCESS))  # no catalog known: said when a query needs it
    with pytest.raises(ValueError, match="the query reads the catalog: no catalog"):
        Output(output).sql("select * from catalog")
    low = out.duckdb(["object_id", "iou"]).filter("iou < 0.8").fetchall()
    assert all(iou < 0.8 for _, iou in low)
    assert len(low) == sum(1 for r in out.select().to_pylist() if (r["iou"] or 1) < 0.8)


def test_views_and_truth_from_the_catalog(output):
    objects = build_demo(output, f"{output}-catalog")
    out = Output(output)  # the catalog comes from _SUCCESS
    assert out.catalog == f"{output}-catalog"
    views = out.views("proc-0-0000045")
    assert views.shape == (3, 40, 40, 3) and views.dtype == np.uint8
    # transparent pixels are the model's background; the 40x30 view is padded with it
    assert tuple(views[0, 0, 0]) == (240, 240, 240) and tuple(views[1, 2, 20]) == (240, 240, 240)
    assert out.views("proc-0-0000045", size=16, crop=True).shape == (3, 16, 16, 3)
    truth = out.truth("proc-0-0000045")
    assert truth.dtype == bool and np.array_equal(truth, objects["proc-0-0000045"][0][0])
    row = out.row("proc-0-0000045")
    assert voxels.iou(voxels.occupied(out.grid(row)), truth) == pytest.approx(row["iou"])
    with pytest.raises(KeyError, match="not-there"):
        out.truth("not-there")
    with pytest.raises(DuplicateIdError):
        out.views("proc-0-0000040")
    elsewhere = Output(output, catalog=f"{output}-catalog/part-00000.parquet")
    assert np.array_equal(elsewhere.truth("proc-0-0000045"), truth)
    io.remove(io.join(output, SUCCESS))
    with pytest.raises(ValueError, match="no catalog"):
        Output(output).views("proc-0-0000045")


# --- docs/output.md -------------------------------------------------------------------


def doc_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of every fenced block of a Markdown file, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", path.read_text(), re.MULTILINE | re.DOTALL)


# A print whose line ends in a comment, or whose next line is "# -> ...": the
# comment shows what it prints.
RESULT_COMMENT = re.compile(r"^\s*print\(.*\)\s+# (?P<shown>.+)$")
RESULT_LINE = re.compile(r"^\s*# -> (?P<shown>.+)$")


def shown_results(code: str) -> list[tuple[int, str]]:
    """(line of the print, what its comment shows) for every result comment of a
    python block; a ``# -> `` line after anything but a one-line print fails."""
    lines = code.splitlines()
    found = []
    for number, line in enumerate(lines, 1):
        if match := RESULT_COMMENT.match(line):
            found.append((number, match["shown"]))
        elif match := RESULT_LINE.match(line):
            above = lines[number - 2] if number > 1 else ""
            assert re.match(r"^\s*print\(.*\)$", above), f"'# ->' not after a print: {line}"
            found.append((number - 1, match["shown"]))
    return found


NUMBER = re.compile(r"-?\d+\.\d+")


def shows(comment: str, printed: str) -> bool:
    """Whether ``printed`` is what ``comment`` shows, ``...`` standing for any
    text. A decimal number in the comment matches one within 0.01 (or 1%):
    the demo's figures come from one CPU's bf16 kernels, and another CPU's
    (AMX rather than AVX-512 BF16, or fp32) may move the last digit."""
    parts = []
    for part in comment.split("..."):
        pieces = NUMBER.split(part.strip())
        parts.append(r"(-?\d+(?:\.\d+)?)".join(re.escape(p) for p in pieces))
    match = re.fullmatch(".*".join(parts), printed, re.DOTALL)
    if match is None:
        return False
    expected = [float(x) for x in NUMBER.findall(comment)]
    got = [float(x) for x in match.groups()]
    return all(abs(g - e) <= max(0.01, 0.01 * abs(e)) for g, e in zip(got, expected, strict=True))


def test_shows():
    assert shows("48 {'ok': 48}", "48 {'ok': 48}")
    assert shows("{'mean_iou': 0.636...}", "{'mean_iou': 0.6362118}")
    assert shows("/.../data/demo-catalog", "/work/x/data/demo-catalog")
    assert not shows("48 {'ok': 48}", "47 {'ok': 47}")
    assert not shows("0.636...", "x 0.636")
    assert shows("mean IoU 0.745", "mean IoU 0.748")
    assert not shows("mean IoU 0.745", "mean IoU 0.76")
    assert not shows("48 objects", "47 objects")
    code = "x = 1\nprint(x)  # 1\nprint(x, x)\n# -> 1 1\n"
    assert shown_results(code) == [(2, "1"), (3, "1 1")]
    with pytest.raises(AssertionError, match="not after a print"):
        shown_results("x = 1\n# -> 1\n")


def run_commands(code: str, commands: dict, where: str) -> None:
    """Each line of a bash block, through its command's own ``main``."""
    for line in code.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        argv = shlex.split(line)
        if argv[0] != "python" or argv[1] not in commands:
            pytest.fail(f"{where} has a command the test cannot run: {line}")
        assert commands[argv[1]](argv[2:]) == 0, line


@pytest.mark.slow
def test_docs_examples_run_on_the_demo(demo_run, ray_local, tmp_path, monkeypatch):
    """Every python block of docs/output.md runs, in order, in one namespace, and
    every command of its bash blocks succeeds (so do the README's commands),
    against the demo's own output (the ``demo_run`` fixture's); every print
    whose line ends in a comment prints what the comment shows, and nothing is
    written into docs/. The examples read from a copy of the checkout's
    ``outputs/demo`` and ``data/demo-catalog`` and write their pictures and
    exports there; the job's command runs in the checkout, as a reader's would,
    so that its rows pair with the demo's by row (the input's path is part of a
    row's identity)."""
    import builtins
    import shutil

    from jobs import export as export_job
    from jobs import preview as preview_job
    from jobs import reconstruct as reconstruct_job
    from jobs import report as report_job

    assert demo_run.returncode == 0, demo_run.stderr[-3000:]
    for name in ("outputs/demo", "data/demo-catalog"):
        shutil.copytree(REPO / name, tmp_path / name)

    def reconstruct(argv: list[str]) -> int:
        output = argv[argv.index("--output") + 1]
        shutil.rmtree(REPO / output, ignore_errors=True)
        with monkeypatch.context() as m:
            m.chdir(REPO)
            code = reconstruct_job.main(argv)
        shutil.copytree(REPO / output, tmp_path / output)
        return code

    commands = {
        "jobs/export.py": export_job.main,
        "jobs/preview.py": preview_job.main,
        "jobs/report.py": report_job.main,
        "jobs/reconstruct.py": reconstruct,
    }
    monkeypatch.chdir(tmp_path)
    docs_before = {p: p.stat().st_mtime for p in (REPO / "docs").iterdir()}
    printed: dict[tuple[str, int], list[str]] = {}

    def recording_print(*values, sep=" ", end="\n", **kwargs):
        caller = sys._getframe(1)
        where = (caller.f_code.co_filename, caller.f_lineno)
        printed.setdefault(where, []).append(sep.join(str(v) for v in values))
        builtins.print(*values, sep=sep, end=end, **kwargs)

    blocks = doc_blocks(REPO / "docs" / "output.md")
    assert [lang for lang, _ in blocks].count("python") >= 8
    namespace: dict = {"print": recording_print}
    checked = 0
    for k, (language, code) in enumerate(blocks):
        name = f"docs/output.md, block {k}"
        if language == "python":
            exec(compile(code, name, "exec"), namespace)
            for number, shown in shown_results(code):
                seen = printed.get((name, number))
                assert seen, f"{name}, line {number} printed nothing; it shows {shown}"
                for text in seen:
                    assert shows(shown, text), f"{name}, line {number}: {text}\nshows {shown}"
                checked += 1
        elif language == "bash":
            run_commands(code, commands, name)
    assert checked >= 15
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Reading the output") :]
    bash = re.search(r"^```bash\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    run_commands(bash.group(1), commands, "README.md")

    for picture in ("worst.png", "summary.png", "changed.png", "report/index.html"):
        assert (tmp_path / "pictures" / picture).exists()
    assert list((tmp_path / "exports" / "worst").glob("*.glb"))
    assert (tmp_path / "chairs.png").exists() and list((tmp_path / "chairs").glob("*.glb"))
    assert {p: p.stat().st_mtime for p in (REPO / "docs").iterdir()} == docs_before


def test_status_and_categories_over_the_whole_output(tmp_path):
    """Counts from the index's footers, and a per-category aggregate, agree with
    the rows themselves; a manifest not folded yet counts too."""
    import pyarrow.compute as pc

    from pipeline import index
    from pipeline.results import Output

    out = str(tmp_path / "out")
    rows = model_rows(["a", "b", "c"], ["ok", "failed", "ok"])
    rows = rows.append_column("category", pa.array(["chair", "chair", "lamp"]))
    write_shard(rows, out)
    index.fold(out)
    write_shard(model_rows(["d"], ["ok"]).append_column("category", pa.array(["lamp"])), out)
    reader = Output(out)
    assert reader.status() == {
        "rows_ok": 3,
        "rows_failed": 1,
        "models": ["compact-test"],
        # counted at a run's end: no run has recorded them here
        "as_of": None,
        "rows_stale": None,
        "duplicate_ids": None,
        "duplicate_ids_across_files": None,
    }
    table = reader.by_category().to_pylist()
    assert [(r["category"], r["rows"], r["ok"]) for r in table] == [("chair", 2, 1), ("lamp", 2, 2)]
    assert pc.sum(pc.equal(reader.manifests(["status"])["status"], "ok")).as_py() == 3


def test_catalog_from_the_run_records_without_success(tmp_path):
    """A run that exited 4 (or is still going) has no _SUCCESS: the catalog is
    the latest run record's --input."""
    from pipeline import summary

    out, catalog = str(tmp_path / "out"), str(tmp_path / "catalog")
    build_demo(out, catalog)
    io.remove(io.join(out, SUCCESS))
    assert Output(out).catalog is None
    for started, url in (("2026-01-01T00:00:00Z", "/elsewhere"), ("2026-02-01T00:00:00Z", catalog)):
        summary.record_run(out, {"started": started, "arguments": {"input": url}})
    reader = Output(out)
    assert reader.catalog == catalog
    assert reader.truth("proc-0-0000045").shape == (32, 32, 32)


def test_to_pandas_and_polars(tmp_path):
    out = str(tmp_path / "out")
    build_demo(out, str(tmp_path / "catalog"))
    frame = Output(out).to_pandas(["object_id", "status"])
    assert list(frame.columns) == ["object_id", "status"] and len(frame) == 9
    try:
        import polars  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install polars"):
            Output(out).to_polars()
    else:
        assert Output(out).to_polars().height == 9
