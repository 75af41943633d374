"""Pictures of an output for people: a contact sheet (per object its input
views, the reconstruction from two angles, the ground truth, the IoU) and a
summary figure of a whole output (IoU by category and by number of views, the
distribution of occupied voxels). Voxels are drawn by matplotlib (Agg, no
display) as shaded cube faces; the sheet is put together with Pillow.

A picture shows what the output holds and nothing else: occupancy at each
row's own threshold, views decoded as the job decoded them (over the model's
background), ids printed with control characters escaped. This module must
never write anything but the PNG bytes it returns.
"""

from __future__ import annotations

import functools
import io
import re
import textwrap
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mpl_toolkits.mplot3d.art3d import Poly3DCollection
from PIL import Image, ImageDraw, ImageFont

from model import images, voxels
from pipeline.export import voxel_faces
from pipeline.layout import OK, error_kind
from pipeline.results import Output, decode_view

RECONSTRUCTION = (0.45, 0.58, 0.85)  # blue
TRUTH = (0.62, 0.70, 0.50)  # sage
AMBIENT = 0.35
# Light from the upper left of the camera, slightly in front (as shapes/render.py).
LIGHT_CAM = np.array([-0.45, 0.65, 0.6]) / np.linalg.norm([-0.45, 0.65, 0.6])
# (azimuth, elevation) of the reconstruction's pictures, and their column titles; the
# ground truth is drawn from the first
ANGLES = ((30.0, 25.0), (210.0, 25.0))
ANGLE_TITLES = ("reconstruction", "from behind")
BACKGROUND = images.TEST_BACKGROUND
LABEL_WIDTH = 230
HEADER = 26
TEXT = (20, 20, 20)
MUTED = (110, 110, 110)
ALERT = (180, 30, 30)
MEDIAN = "#1f4e9c"


def camera_basis(azimuth: float, elevation: float) -> tuple[np.ndarray, ...]:
    """(position, right, up, forward) of a camera on the unit sphere, in voxray's
    world (y up): azimuth 0 looks at the object's front (+z) and grows towards +x."""
    az, el = np.radians([azimuth, elevation])
    position = np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
    forward = -position
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    return position, right, np.cross(right, forward), forward


def render_voxels(
    occupied: np.ndarray,
    azimuth: float = ANGLES[0][0],
    elevation: float = ANGLES[0][1],
    size: int = 128,
    colour: tuple[float, float, float] = RECONSTRUCTION,
) -> np.ndarray:
    """An RGB picture ``uint8 [size, size, 3]`` of a bool ``grid[x, y, z]`` (y up)
    in the unit cube, seen from (``azimuth``, ``elevation``) in degrees, in
    orthographic projection, Lambert-shaded over the model's background. The
    framing is the same for every grid, so sizes compare across pictures."""
    _, right, up, forward = camera_basis(azimuth, elevation)
    figure = Figure(figsize=(size / 100, size / 100), dpi=100, facecolor=np.array(BACKGROUND) / 255)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1), projection="3d", facecolor=np.array(BACKGROUND) / 255)
    axes.set_proj_type("ortho")
    axes.view_init(elev=elevation, azim=azimuth - 90.0)
    # zoom 0.85: the whole unit cube's projection fits the picture from any angle,
    # with a margin, so a grid full to its faces is never clipped at any size
    axes.set_box_aspect((1, 1, 1), zoom=0.85)
    for limit in (axes.set_xlim, axes.set_ylim, axes.set_zlim):
        limit(-0.5, 0.5)
    axes.set_axis_off()
    quads, normals = voxel_faces(occupied)
    if len(quads):
        # back faces culled: fewer polygons to sort, none painted over a front face
        facing = normals @ -forward > 0
        quads, normals = quads[facing], normals[facing]
        light = LIGHT_CAM[0] * right + LIGHT_CAM[1] * up - LIGHT_CAM[2] * forward
        shade = AMBIENT + (1 - AMBIENT) * np.clip(normals @ light, 0.0, 1.0)
        colours = np.clip(np.asarray(colour)[None, :] * shade[:, None], 0, 1)
        world = quads / voxels.SIDE - 0.5
        # voxray (x, y up, z) -> matplotlib (X, Y, Z up) = (x, -z, y): a rotation
        faces = np.stack([world[..., 0], -world[..., 2], world[..., 1]], axis=-1)
        # each face outlined in its own colour, or seams show between neighbours
        polygons = Poly3DCollection(faces, facecolors=colours, edgecolors=colours, linewidths=0.3)
        axes.add_collection3d(polygons)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def printable(text: Any, width: int) -> str:
    """``text`` on one line: control characters escaped, the middle cut to ``width``."""
    text = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", str(text))
    if len(text) > width:
        keep = width - 1
        text = text[: keep - keep // 3] + "…" + text[len(text) - keep // 3 :]
    return text


def _label(row: dict[str, Any]) -> list[tuple[str, tuple[int, int, int]]]:
    lines = [(printable(row.get("object_id"), 30), TEXT)]
    if row.get("category") is not None:
        lines.append((printable(row["category"], 30), MUTED))
    if row.get("status") == OK:
        iou = row.get("iou")
        lines.append(("IoU —" if iou is None else f"IoU {iou:.3f}", TEXT))
        lines.append((f"views {row.get('n_views')} of {row.get('n_views_given')}", MUTED))
        lines.append((f"occupied {row.get('occupied_voxels')} at {row.get('threshold')}", MUTED))
    else:
        kind = row.get("error_kind") or error_kind(row.get("error"))
        lines.append((f"FAILED: {kind}" if kind else "FAILED", ALERT))
        for part in fitted(printable(row.get("error"), 400), 30, 4):
            lines.append((part, ALERT))
    return lines


def fitted(text: str, width: int, lines: int) -> list[str]:
    """``text`` wrapped to ``width`` characters in at most ``lines`` lines; when
    it is longer, whole clauses are dropped from its end (at ``;``, ``:``,
    ``,`` or ``.``) and an ellipsis says so: never a line cut mid-word."""
    wrapped = textwrap.wrap(text, width)
    if len(wrapped) <= lines:
        return wrapped
    clauses = re.split(r"(?<=[;:,.])\s+", text)
    while len(clauses) > 1:
        clauses.pop()
        wrapped = textwrap.wrap(" ".join(clauses) + " …", width)
        if len(wrapped) <= lines:
            return wrapped
    words = text.split()  # one long clause: whole words, as many as fit
    while words and len(textwrap.wrap(" ".join(words) + " …", width)) > lines:
        words.pop()
    return textwrap.wrap(" ".join(words) + " …", width)


def _note(sheet: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str) -> None:
    """``text`` in the cell ``box``, in the largest of a few font sizes at which
    it fits whole (else shortened by whole clauses, see :func:`fitted`)."""
    x0, y0, x1, y1 = box
    sheet.rectangle(box, fill=BACKGROUND)
    for size in (11, 9, 8):
        width, lines = max(8, (x1 - x0 - 8) * 5 // (3 * size)), max(1, (y1 - y0 - 8) // (size + 3))
        if len(textwrap.wrap(text, width)) <= lines:
            break
    for k, line in enumerate(fitted(text, width, lines)):
        sheet.text((x0 + 4, y0 + 4 + (size + 3) * k), line, fill=MUTED, font=_font(size))


def contact_sheet(
    output: Output,
    rows: pa.Table,
    views: int = 5,
    cell: int = 128,
    catalog: bool = True,
    title: str = "",
) -> bytes:
    """PNG bytes: one row per manifest row of ``rows``: its label (id, category,
    IoU, views used, occupied voxels; the reason when it failed), up to
    ``views`` input views, the ground truth and the reconstruction from the same
    angle, and the reconstruction from behind. Views and ground truth come from
    the output's catalog (:attr:`Output.catalog`); without ``catalog``, or when
    the catalog cannot be read, their cells say why they are empty, as does a
    view cell of a row with fewer views than others. ``title`` (what the sheet
    shows: see :func:`pipeline.results.describe_selection`) heads the sheet."""
    records = rows.to_pylist()
    ok = [k for k, r in enumerate(records) if r.get("status") == OK and r.get("shard") is not None]
    grids = dict(zip(ok, output.grids([records[k] for k in ok]), strict=True))
    inputs, note = _catalog_inputs(output, records) if catalog else ({}, None)
    found_rows = [r for found in inputs.values() for r in found]
    shown = min(views, max([len(r.get("views") or []) for r in found_rows] or [0]))
    has_truth = any(r.get("voxels") is not None for r in found_rows)
    groups = [("input views", max(shown, 1) if catalog else 0)]
    groups += [("ground truth", int(has_truth)), *((title, 1) for title in ANGLE_TITLES)]

    width = LABEL_WIDTH + cell * sum(n for _, n in groups)
    top = HEADER * (1 + bool(title))
    sheet = Image.new("RGB", (width, top + cell * len(records)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if title:
        text = fitted(printable(title, 400), max(20, width // 8), 1)[0]
        draw.text((8, 6), text, fill=TEXT, font=_font(14))
    x = LABEL_WIDTH
    for heading, n in groups:
        if n:
            draw.text((x + 4, top - HEADER + 6), heading, fill=TEXT, font=_font(13))
        x += cell * n

    for r, row in enumerate(records):
        y = top + r * cell
        for k, (line, colour) in enumerate(_label(row)):
            draw.text((8, y + 8 + 17 * k), line, fill=colour, font=_font(13 if k == 0 else 12))
        found = inputs.get(row.get("object_id"), [])
        source = found[0] if len(found) == 1 else None
        x = LABEL_WIDTH
        if catalog:
            if source is not None:
                given = (source.get("views") or [])[:shown]
                for v in range(shown):
                    box = (x + v * cell, y, x + (v + 1) * cell - 1, y + cell - 1)
                    if v >= len(given) or given[v] is None:
                        _note(draw, box, f"no view {v + 1} (the row has {len(given)})")
                        continue
                    try:
                        sheet.paste(Image.fromarray(decode_view(given[v], cell)), box[:2])
                    except images.DecodeError as exc:
                        _note(draw, box, str(exc))
            else:
                why = note or (
                    f"{len(found)} catalog rows have this id" if found else "not in the catalog"
                )
                _note(draw, (x, y, x + cell * max(shown, 1) - 1, y + cell - 1), why)
            x += cell * max(shown, 1)
        if has_truth:
            truth = source.get("voxels") if source is not None else None
            if truth is not None and len(truth) == voxels.VOXEL_BYTES:
                picture = render_voxels(voxels.unpack_voxels(truth), *ANGLES[0], cell, TRUTH)
                sheet.paste(Image.fromarray(picture), (x, y))
            else:
                _note(draw, (x, y, x + cell - 1, y + cell - 1), "no ground truth")
            x += cell
        if r in grids:
            occupied = voxels.occupied(grids[r], row["threshold"])
            for azimuth, elevation in ANGLES:
                picture = render_voxels(occupied, azimuth, elevation, cell)
                sheet.paste(Image.fromarray(picture), (x, y))
                x += cell
        else:
            _note(draw, (x, y, x + cell * len(ANGLES) - 1, y + cell - 1), "no reconstruction")
        draw.line([(0, y + cell - 1), (width, y + cell - 1)], fill=(255, 255, 255), width=2)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _catalog_inputs(
    output: Output, records: list[dict[str, Any]]
) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
    """Catalog rows (``views``, ``voxels``) by object id, in one filtered read;
    or nothing and the reason the catalog could not be read."""
    ids = list(dict.fromkeys(r["object_id"] for r in records if r.get("object_id") is not None))
    inputs: dict[str, list[dict[str, Any]]] = {}
    try:
        table = output.catalog_rows(ids, ["object_id", "views", "voxels"])
    except (ValueError, OSError) as exc:
        return inputs, f"no catalog: {exc}"
    for found in table.to_pylist():
        inputs.setdefault(found["object_id"], []).append(found)
    return inputs, None


def summary(table: pa.Table, title: str = "") -> bytes:
    """PNG bytes of one figure over manifest rows: IoU by category (lowest median
    first), IoU by number of views used, a histogram of occupied voxels of the
    ok rows, and the failed rows by ``error_kind``; each group with its count,
    the heading with the totals."""
    records = table.to_pylist()
    rows = [r for r in records if r.get("status") == OK]
    scored = [r for r in rows if r.get("iou") is not None]
    failures = [r for r in records if r.get("status") != OK]
    failed = len(failures)

    figure = Figure(figsize=(19, 5.2), dpi=100)
    FigureCanvasAgg(figure)
    layout = figure.add_gridspec(1, 4, width_ratios=(1.25, 1.0, 1.0, 1.0), wspace=0.42)
    by_category, by_views, occupied, by_kind = (figure.add_subplot(layout[0, k]) for k in range(4))

    panels = (
        (by_category, "category", "IoU by category (lowest median first)"),
        (by_views, "n_views", "IoU by number of views used"),
    )
    for axes, key, label in panels:
        if not scored:
            _empty(axes, label, "no IoU: the job's input had no ground truth (voxels)")
        elif key not in table.column_names:
            _empty(axes, label, f"the manifests have no {key!r} column")
        else:
            groups: dict[Any, list[float]] = {}
            for r in scored:
                groups.setdefault(r[key], []).append(r["iou"])
            if key == "n_views":
                order = sorted(groups, key=lambda k: (k is None, k or 0))
            else:
                order = sorted(groups, key=lambda k: (np.median(groups[k]), str(k)))
            _boxes(axes, groups, order, label)

    counts = [r["occupied_voxels"] for r in rows if r.get("occupied_voxels") is not None]
    label = "Occupied voxels at the threshold"
    if counts:
        median = float(np.median(counts))
        occupied.hist(counts, bins=30, color="#7394d9", edgecolor="white")
        occupied.axvline(median, color=MEDIAN, linestyle="--", label=f"median {median:.0f}")
        occupied.legend(frameon=False)
        occupied.set_xlabel(f"occupied voxels (of {voxels.SIDE**3})")
        occupied.set_ylabel("ok rows")
        occupied.yaxis.set_major_locator(MaxNLocator(integer=True))  # rows are whole
        occupied.set_title(label, loc="left", fontsize=12)
    else:
        _empty(occupied, label, "no ok rows")

    label = "Failed rows by error_kind"
    if failures:
        kinds: dict[str, int] = {}
        for r in failures:
            kind = r.get("error_kind") or error_kind(r.get("error")) or "(none)"
            kinds[kind] = kinds.get(kind, 0) + 1
        order = sorted(kinds, key=lambda k: (kinds[k], k))  # most at the top
        by_kind.barh(range(len(order)), [kinds[k] for k in order], color="#d98873", height=0.6)
        by_kind.set_yticks([])  # each bar says its kind, inside the panel
        for y, k in enumerate(order):
            by_kind.text(0.02 * max(kinds.values()), y, f"{k}  n={kinds[k]}", va="center")
        by_kind.xaxis.set_major_locator(MaxNLocator(integer=True))
        by_kind.set_xlabel("failed rows")
        by_kind.set_title(label, loc="left", fontsize=12)
    else:
        _empty(by_kind, label, "no failed rows")

    mean = f", mean IoU {np.mean([r['iou'] for r in scored]):.3f}" if scored else ""
    heading = f"{title}\n" if title else ""
    figure.suptitle(f"{heading}{len(rows)} ok, {failed} failed{mean}", x=0.01, ha="left")
    # room for the heading's lines above the panels' titles
    top = 0.9 - 0.045 * (heading.count("\n") + 1)
    figure.subplots_adjust(left=0.1, right=0.985, top=top, bottom=0.12)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def compare_summary(pairs: pa.Table, title: str = "") -> bytes:
    """PNG bytes of one figure over :meth:`Output.compare` rows: mean IoU before
    (a) and after (b) by category and by number of views, bars side by side with
    each group's count (mean occupied voxels where the outputs have no IoU), and
    the distribution of the per-object change."""
    records = pairs.to_pylist()
    both = [r for r in records if r["status_a"] == OK and r["status_b"] == OK]
    scored = [r for r in both if r["iou_a"] is not None and r["iou_b"] is not None]
    measure, label = ("iou", "IoU") if scored else ("occupied_voxels", "occupied voxels")
    used = scored or both
    figure = Figure(figsize=(17, 5.2), dpi=100)
    FigureCanvasAgg(figure)
    layout = figure.add_gridspec(1, 3, width_ratios=(1.25, 1.0, 1.0), wspace=0.35)
    panels = [figure.add_subplot(layout[0, k]) for k in range(3)]
    for axes, key, heading in (
        (panels[0], "category", f"mean {label} by category, a then b"),
        (panels[1], "n_views", f"mean {label} by number of views, a then b"),
    ):
        groups: dict[Any, list[dict]] = {}
        for r in used:
            groups.setdefault(r.get(key), []).append(r)
        if not groups or (len(groups) == 1 and None in groups):
            _empty(axes, heading, f"the rows have no {key!r}")
            continue
        order = sorted(groups, key=lambda k: (k is None, str(k) if key == "category" else k or 0))
        y = np.arange(len(order))[::-1]
        for offset, side, colour in ((0.2, "a", "#b0b0b0"), (-0.2, "b", "#7394d9")):
            means = [np.mean([r[f"{measure}_{side}"] for r in groups[k]]) for k in order]
            axes.barh(y + offset, means, height=0.38, color=colour, label=side)
        axes.set_yticks(
            y, [f"{'(none)' if k is None else printable(k, 20)}  n={len(groups[k])}" for k in order]
        )
        axes.legend(loc="best")
        axes.set_xlabel(f"mean {label}")
        axes.set_title(heading, loc="left", fontsize=12)
    deltas = [r[f"{measure}_b"] - r[f"{measure}_a"] for r in used]
    heading = f"change in {label} per object (b - a)"
    if deltas:
        panels[2].hist(deltas, bins=30, color="#7394d9", edgecolor="white")
        panels[2].axvline(0, color="0.3", linewidth=1)
        panels[2].yaxis.set_major_locator(MaxNLocator(integer=True))
        panels[2].set_xlabel(f"{label} b - a")
        panels[2].set_ylabel("objects")
        panels[2].set_title(heading, loc="left", fontsize=12)
    else:
        _empty(panels[2], heading, "no object is ok in both")
    better = sum(d > 0 for d in deltas)
    worse = sum(d < 0 for d in deltas)
    changed = sum(r["status_a"] != r["status_b"] for r in records)
    mean = (
        f", mean {label} {np.mean([r[f'{measure}_a'] for r in used]):.3f} -> "
        f"{np.mean([r[f'{measure}_b'] for r in used]):.3f}"
        if used
        else ""
    )
    heading = f"{title}\n" if title else ""
    figure.suptitle(
        f"{heading}{len(records)} objects in both: {better} higher, {worse} lower, "
        f"{changed} changed status{mean}",
        x=0.01,
        ha="left",
    )
    figure.subplots_adjust(left=0.1, right=0.985, top=0.9 - 0.045 * (1 + bool(title)), bottom=0.12)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def compare_sheet(a: Output, b: Output, pairs: pa.Table, cell: int = 128, title: str = "") -> bytes:
    """PNG bytes: one row per :meth:`Output.compare` row: its label (id, IoU or
    occupied voxels a -> b), the reconstruction of ``a`` and of ``b`` from the
    same angle, and the ground truth when ``a``'s catalog has it."""
    records = pairs.to_pylist()
    pictures: dict[tuple[int, str], np.ndarray] = {}
    for side, output, key in (("a", a, "row_key"), ("b", b, "row_key_b")):
        ok = [k for k, r in enumerate(records) if r[f"status_{side}"] == OK]
        if ok:  # each side's rows by their own row keys (ids may repeat)
            keys = [records[k][key] for k in ok]
            found = output.manifests(filter=pc.field("row_key").isin(keys)).to_pylist()
            by_key = {r["row_key"]: r for r in found}
            grids = output.grids([by_key[records[k][key]] for k in ok])
            for k, grid in zip(ok, grids, strict=True):
                level = records[k][f"threshold_{side}"]
                pictures[(k, side)] = render_voxels(voxels.occupied(grid, level), *ANGLES[0], cell)
    inputs, _ = _catalog_inputs(a, records)
    has_truth = any(r.get("voxels") is not None for found in inputs.values() for r in found)
    columns = ["a", "b", *(["ground truth"] if has_truth else [])]
    top = HEADER * (1 + bool(title))
    sheet = Image.new(
        "RGB", (LABEL_WIDTH + cell * len(columns), top + cell * len(records)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((8, 6), fitted(printable(title, 400), 200, 1)[0], fill=TEXT, font=_font(14))
    for c, heading in enumerate(columns):
        draw.text(
            (LABEL_WIDTH + c * cell + 4, top - HEADER + 6), heading, fill=TEXT, font=_font(13)
        )
    for k, row in enumerate(records):
        y = top + k * cell
        lines = [(printable(row["object_id"], 30), TEXT)]
        if row.get("category") is not None:
            lines.append((printable(row["category"], 30), MUTED))
        for name, key, fmt in (("IoU", "iou", ".3f"), ("occupied", "occupied_voxels", "d")):
            pair = [row[f"{key}_a"], row[f"{key}_b"]]
            if None not in pair:
                lines.append((f"{name} {pair[0]:{fmt}} -> {pair[1]:{fmt}}", TEXT))
        if row["status_a"] != row["status_b"]:
            lines.append((f"status {row['status_a']} -> {row['status_b']}", ALERT))
        for n, (line, colour) in enumerate(lines):
            draw.text((8, y + 8 + 17 * n), line, fill=colour, font=_font(13 if n == 0 else 12))
        for c, side in enumerate(("a", "b")):
            box = (LABEL_WIDTH + c * cell, y, LABEL_WIDTH + (c + 1) * cell - 1, y + cell - 1)
            if (k, side) in pictures:
                sheet.paste(Image.fromarray(pictures[(k, side)]), box[:2])
            else:
                _note(draw, box, f"no reconstruction ({row[f'status_{side}']})")
        if has_truth:
            found = inputs.get(row["object_id"], [])
            truth = found[0].get("voxels") if len(found) == 1 else None
            box = (LABEL_WIDTH + 2 * cell, y, LABEL_WIDTH + 3 * cell - 1, y + cell - 1)
            if truth is not None and len(truth) == voxels.VOXEL_BYTES:
                picture = render_voxels(voxels.unpack_voxels(truth), *ANGLES[0], cell, TRUTH)
                sheet.paste(Image.fromarray(picture), box[:2])
            else:
                _note(draw, box, "no ground truth")
        draw.line([(0, y + cell - 1), (sheet.width, y + cell - 1)], fill=(255, 255, 255), width=2)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _boxes(axes: Any, groups: dict[Any, list[float]], order: list, title: str) -> None:
    """Horizontal box plots of ``groups`` in ``order``, the first at the top."""
    order = order[::-1]  # matplotlib draws the first box at the bottom
    axes.boxplot(
        [groups[k] for k in order],
        orientation="horizontal",
        tick_labels=[
            f"{'(none)' if k is None else printable(k, 20)}  n={len(groups[k])}" for k in order
        ],
        widths=0.6 if len(order) > 1 else 0.3,
        medianprops={"color": MEDIAN, "linewidth": 2},
        showmeans=True,
        meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": MEDIAN},
    )
    axes.set_xlim(0, 1)
    axes.set_xlabel("IoU (box: quartiles, line: median, diamond: mean)")
    axes.set_title(title, loc="left", fontsize=12)
    axes.grid(axis="x", alpha=0.3)


def _empty(axes, title: str, text: str) -> None:
    axes.set_title(title, loc="left", fontsize=12)
    axes.text(0.5, 0.5, text, ha="center", va="center", wrap=True, color="0.4")
    axes.set_axis_off()


def summary_title(output: Output) -> str:
    """The summary's heading: the output and its model, from ``_SUCCESS`` when there."""
    success = output.success() or {}
    model = success.get("model")
    return printable(output.url, 90) + (f"  ·  model {model}" if model else "")
