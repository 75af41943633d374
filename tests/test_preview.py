"""Pictures of an output: the voxel renderer's camera convention (the one the
dataset's renderer uses), the contact sheet's layout and what each cell shows
(views, ground truth, reconstruction, or why not), the summary figure, and the
command line."""

from __future__ import annotations

import argparse
import textwrap
from io import BytesIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from test_results import build_demo, grids_of, shard_rows

from jobs import preview as preview_job
from model import voxels
from pipeline import preview, results
from pipeline.results import Output
from pipeline.sink import write_shard

CELL = 64


def drawn(picture: np.ndarray) -> np.ndarray:
    """Pixels that are not the background."""
    return np.any(picture != np.array(preview.BACKGROUND, np.uint8), axis=-1)


def centre_of(picture: np.ndarray) -> tuple[float, float]:
    """(column, row) of the drawn pixels' centre, as fractions of the side."""
    rows, columns = np.nonzero(drawn(picture))
    return columns.mean() / picture.shape[1], rows.mean() / picture.shape[0]


def blue(picture: np.ndarray) -> int:
    """Pixels in the reconstruction's colour (blue well above red)."""
    rgb = picture.astype(int)
    return int(((rgb[..., 2] - rgb[..., 0]) > 40).sum())


def test_renderer_follows_the_dataset_camera_convention():
    """Azimuth 0 looks at the front (+z) with y up, so +x is on the right;
    azimuth 90 looks from +x, so +z is on the left (as shapes/render.py)."""
    grid = np.zeros(voxels.GRID, bool)
    grid[26:30, 14:18, 14:18] = True  # towards +x
    picture = preview.render_voxels(grid, azimuth=0, elevation=0, size=CELL)
    assert picture.shape == (CELL, CELL, 3) and picture.dtype == np.uint8
    assert centre_of(picture)[0] > 0.65  # right of centre (the whole cube fits with a margin)
    grid = np.zeros(voxels.GRID, bool)
    grid[14:18, 26:30, 14:18] = True  # towards +y, up
    assert centre_of(preview.render_voxels(grid, 0, 0, CELL))[1] < 0.35
    grid = np.zeros(voxels.GRID, bool)
    grid[14:18, 14:18, 26:30] = True  # towards +z, the front
    assert centre_of(preview.render_voxels(grid, 90, 0, CELL))[0] < 0.35
    assert centre_of(preview.render_voxels(grid, -90, 0, CELL))[0] > 0.65
    assert not drawn(preview.render_voxels(np.zeros(voxels.GRID, bool), size=CELL)).any()
    # the faces turned to the light are brighter than those turned away
    cube = np.zeros(voxels.GRID, bool)
    cube[8:24, 8:24, 8:24] = True
    picture = preview.render_voxels(cube, 30, 25, CELL).astype(int)
    assert len({tuple(p) for p in picture[drawn(picture.astype(np.uint8))]}) >= 3


def sheet_of(png: bytes) -> np.ndarray:
    image = Image.open(BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def cell(sheet: np.ndarray, row: int, column: int) -> np.ndarray:
    y = preview.HEADER + row * CELL
    x = preview.LABEL_WIDTH + column * CELL
    return sheet[y : y + CELL - 2, x : x + CELL]


def test_contact_sheet(tmp_path):
    source = str(tmp_path / "out")
    build_demo(source, str(tmp_path / "catalog"))
    out = Output(source)
    rows = out.select(ids=["proc-0-0000045", "proc-0-0000047", "proc-0-0000040"])
    sheet = sheet_of(preview.contact_sheet(out, rows, views=5, cell=CELL))
    # 3 views (all the catalog has), the ground truth, the reconstruction twice
    assert sheet.shape == (preview.HEADER + 4 * CELL, preview.LABEL_WIDTH + 6 * CELL, 3)
    ok, failed, repeated = 0, 1, 2
    for v in range(3):
        assert drawn(cell(sheet, ok, v)).mean() > 0.2  # a view's rectangle, a quarter of it
    truth, reconstruction = cell(sheet, ok, 3), cell(sheet, ok, 4)
    assert blue(truth) == 0 and drawn(truth).mean() > 0.05
    assert blue(reconstruction) > 100 and blue(cell(sheet, ok, 5)) > 100
    # a failed row: its views and truth, no reconstruction
    assert drawn(cell(sheet, failed, 0)).mean() > 0.1
    assert blue(cell(sheet, failed, 4)) == 0 and blue(cell(sheet, failed, 5)) == 0
    # a repeated id: both rows reconstructed; which catalog row is whose is unknown
    for r in (repeated, repeated + 1):
        assert blue(cell(sheet, r, 4)) > 100
        y, x = preview.HEADER + r * CELL, preview.LABEL_WIDTH
        assert drawn(sheet[y : y + CELL - 2, x : x + 3 * CELL]).mean() < 0.12  # a note, no view
    # the ground truth agrees with the reconstruction's first angle, in shape and place
    same = drawn(truth) & drawn(reconstruction)
    assert same.sum() > 0.5 * min(drawn(truth).sum(), drawn(reconstruction).sum())


def test_contact_sheet_without_catalog(tmp_path):
    source = str(tmp_path / "out")
    write_shard(shard_rows(["a", "b"], grids_of(1, 2), ["ok", "failed"]), source)
    out = Output(source)  # no _SUCCESS, so no catalog: a note where the views go
    sheet = sheet_of(preview.contact_sheet(out, out.select(), cell=CELL))
    assert sheet.shape == (preview.HEADER + 2 * CELL, preview.LABEL_WIDTH + 3 * CELL, 3)
    assert blue(cell(sheet, 0, 1)) > 100
    sheet = sheet_of(preview.contact_sheet(out, out.select(), cell=CELL, catalog=False))
    assert sheet.shape[1] == preview.LABEL_WIDTH + 2 * CELL


def test_printable_ids():
    assert preview.printable("a\nb\x00c", 30) == "a\\x0ab\\x00c"
    long = preview.printable("x" * 50 + "END", 20)
    assert len(long) == 20 and long.endswith("END") and "…" in long


def test_summary(tmp_path):
    source = str(tmp_path / "out")
    build_demo(source, str(tmp_path / "catalog"))
    out = Output(source)
    figure = sheet_of(preview.summary(out.manifests(), preview.summary_title(out)))
    assert figure.shape == (520, 1900, 3)
    # the fourth panel counts the failed rows by kind: a bar where there is one
    panel = figure[100:460, 1500:1880]
    bars = np.abs(panel.astype(int) - [0xD9, 0x88, 0x73]).sum(-1) < 30
    assert bars.sum() > 100
    # without ground truth or categories it still draws, and says why panels are empty
    plain = str(tmp_path / "plain")
    write_shard(shard_rows(["a", "b"], grids_of(2, 2)), plain)
    assert sheet_of(preview.summary(Output(plain).manifests())).shape == (520, 1900, 3)


def test_command_line(tmp_path, capsys, monkeypatch):
    source = str(tmp_path / "out")
    build_demo(source, str(tmp_path / "catalog"))

    def run(*args: str) -> int:
        return preview_job.main(["--output", source, "--cell", str(CELL), *args])

    sheet = tmp_path / "pictures" / "worst.png"
    titled = 2 * preview.HEADER  # a line that says what the sheet shows, then the columns'
    assert run("--worst", "2", "--out", str(sheet)) == 0
    assert sheet_of(sheet.read_bytes()).shape[0] == titled + 2 * CELL
    assert run("--category", "lamp", "--views", "1", "--out", str(sheet)) == 0
    assert sheet_of(sheet.read_bytes()).shape == (
        titled + 3 * CELL,
        preview.LABEL_WIDTH + 4 * CELL,
        3,
    )
    assert run("--no-catalog", "--out", str(sheet)) == 0  # the first 12 rows by id: all 9
    assert sheet_of(sheet.read_bytes()).shape == (
        titled + 9 * CELL,
        preview.LABEL_WIDTH + 2 * CELL,
        3,
    )
    monkeypatch.setattr(preview_job, "SHEET_ROWS", 2)  # "everything" stops at the cap...
    assert run("--no-catalog", "--out", str(sheet)) == 0
    assert run("--worst", "5", "--out", str(sheet)) == 0  # ...but --worst N says how many
    printed = capsys.readouterr().out
    assert "sheet of 2 rows" in printed and "sheet of 5 rows" in printed
    summary = tmp_path / "summary.png"
    assert run("--summary", "--out", str(summary)) == 0
    assert sheet_of(summary.read_bytes()).shape == (520, 1900, 3)
    assert "summary of 9 rows" in capsys.readouterr().out
    assert run("--ids", "nobody", "--out", str(sheet)) == 2
    assert run("--where", "iou > 2", "--out", str(sheet)) == 1
    with pytest.raises(SystemExit):
        run("--summary")  # --out is required


def test_a_full_grid_is_never_clipped():
    full = np.ones(voxels.GRID, bool)
    for size in (48, 256):
        for azimuth, elevation in (preview.ANGLES[0], (45.0, 35.26), (0.0, 90.0)):
            picture = drawn(preview.render_voxels(full, azimuth, elevation, size))
            assert picture.any()
            edges = [picture[0], picture[-1], picture[:, 0], picture[:, -1]]
            assert not any(edge.any() for edge in edges), (size, azimuth, elevation)


def test_notes_are_whole_clauses_and_empty_view_cells_say_so(tmp_path):
    reason = (
        "view 2: image header claims 90000x90000 = 8100000000 pixels, over the limit "
        "of 100000000; refused without decoding"
    )
    assert preview.fitted(reason, 30, 10) == textwrap.wrap(reason, 30)
    short = preview.fitted(reason, 30, 3)
    assert len(short) <= 3 and short[-1].endswith("…")
    assert " ".join(short).startswith("view 2: image header claims")
    assert " ".join(short)[:-2].strip() in reason  # whole words of the reason, nothing cut
    # a row with fewer views than the others: its empty cells carry a note, not white
    source, catalog = str(tmp_path / "out"), str(tmp_path / "catalog")
    build_demo(source, catalog)
    table = pq.read_table(f"{catalog}/part-00000.parquet")
    views = table.column("views").to_pylist()
    views[1] = views[1][:1]  # proc-0-0000041: one view
    table = table.set_column(table.schema.get_field_index("views"), "views", pa.array(views))
    pq.write_table(table, f"{catalog}/part-00000.parquet")
    out = Output(source)
    sheet = sheet_of(preview.contact_sheet(out, out.select(ids=["proc-0-0000041"]), cell=CELL))
    for v in (1, 2):
        empty = cell(sheet, 0, v)
        assert (empty == np.array(preview.BACKGROUND, np.uint8)).all(-1).mean() > 0.8
        assert (empty == 255).all(-1).mean() < 0.05 and (drawn(empty)).any()  # a note's text


def test_titles_say_what_they_show(tmp_path):
    source = str(tmp_path / "out")
    build_demo(source, str(tmp_path / "catalog"))
    out = Output(source)

    def describe(*argv: str) -> str:
        parser = argparse.ArgumentParser()
        results.add_selection_arguments(parser)
        args = parser.parse_args(argv)
        return results.describe_selection(out, args, results.select_from_arguments(out, args))

    assert describe("--limit", "4") == "4 of 9 rows, by object_id; at most 4; threshold 0.4"
    assert describe("--worst", "2", "--category", "chair") == (
        "2 of 4 rows, lowest IoU first; category chair; the 2 worst by IoU; threshold 0.4"
    )
    assert (
        describe("--where", "iou < 2") == "8 of 8 rows, by object_id; where iou < 2; threshold 0.4"
    )
