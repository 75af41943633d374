"""An HTML report of one output: a folder that opens offline in any browser,
straight from disk. ``index.html`` holds the summary figure, the sheet of the
worst objects and one sheet per category (PNGs under ``pictures/``), a table of
the rows that sorts by any column and filters by text and status, and a 3D
viewer of each object that has a model (the worst and each category's worst, as
GLB meshes under ``models/``). The viewer is three.js, vendored under
``pipeline/report_assets/`` and copied beside the page: nothing is fetched from
the network when the page is viewed.

Pages opened from ``file://`` may not fetch files or load ES modules, so every
script is a classic ``<script>`` and each model a small script that hands its
GLB (base64) to the page when the object is chosen. This module must never
write outside the folder it is given.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import export, io, preview
from pipeline.layout import OK, error_kind
from pipeline.results import Output

ASSETS = Path(__file__).with_name("report_assets")
SCRIPTS = ("three.min.js", "GLTFLoader.js", "OrbitControls.js")
TABLE_ROWS = 5000  # rows in the page's table (the worst first); the rest are counted
TABLE_COLUMNS = [
    "object_id",
    "category",
    "status",
    "error_kind",
    "iou",
    "n_views",
    "occupied_voxels",
    "threshold",
]


def build(
    output: Output,
    out: str,
    worst: int = 8,
    per_category: int = 2,
    cell: int = 96,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the report of ``output`` into the folder ``out`` (local or a URL).

    Args:
        output: the output to report on.
        out: the folder to write (``index.html`` and its files).
        worst: objects in the worst sheet, each with a 3D model.
        per_category: each category's worst objects, with a sheet and models.
        cell: picture size in the sheets.
        storage_options: fsspec options for ``out``.

    Returns:
        what was written: ``{"rows", "models", "sheets"}``.
    """
    table = output.manifests()
    shown = _table_rows(table)
    has_iou = "iou" in table.column_names and table.column("iou").null_count < table.num_rows
    pictures = {"summary": preview.summary(table, preview.summary_title(output))}
    chosen: list[dict[str, Any]] = []
    if has_iou and worst:
        rows = output.select(worst=worst)
        pictures["worst"] = preview.contact_sheet(output, rows, cell=cell)
        chosen += rows.to_pylist()
    categories = []
    if "category" in table.column_names and has_iou and per_category:
        categories = sorted({c for c in table.column("category").to_pylist() if c is not None})
        for k, category in enumerate(categories):
            rows = output.select(category=category, worst=per_category)
            if rows.num_rows:
                pictures[f"category-{k}"] = preview.contact_sheet(output, rows, cell=cell)
                chosen += rows.to_pylist()
    if not has_iou:  # no ground truth: the first rows by id
        rows = output.select(where="status = 'ok'", limit=worst)
        pictures["first"] = preview.contact_sheet(output, rows, cell=cell)
        chosen += rows.to_pylist()

    models = _write_models(output, chosen, out, storage_options)
    for name, png in pictures.items():
        io.write_bytes(io.join(out, "pictures", f"{name}.png"), png, storage_options)
    for name in (*SCRIPTS, "three-LICENSE.txt"):
        io.write_bytes(io.join(out, "assets", name), (ASSETS / name).read_bytes(), storage_options)
    page = _page(output, table, shown, pictures, categories, models)
    io.write_bytes(io.join(out, "index.html"), page.encode(), storage_options)
    return {"rows": shown.num_rows, "models": len(models), "sheets": len(pictures) - 1}


def _table_rows(table: pa.Table) -> pa.Table:
    """The rows the page's table holds: the known columns, worst IoU first
    (failed rows, then the rest by id), at most ``TABLE_ROWS``."""
    columns = [c for c in TABLE_COLUMNS if c in table.column_names]
    rows = table.select(columns)
    if "error_kind" in columns:
        kinds = [
            k or error_kind(e)
            for k, e in zip(
                table.column("error_kind").to_pylist(),
                table.column("error").to_pylist(),
                strict=True,
            )
        ]
        rows = rows.set_column(columns.index("error_kind"), "error_kind", pa.array(kinds))
    failed = pc.cast(pc.not_equal(rows["status"], OK), pa.int8())
    keys = [("failed", "descending")]
    rows = rows.append_column("failed", failed)
    if "iou" in columns:
        keys.append(("iou", "ascending"))
    rows = rows.sort_by([*keys, ("object_id", "ascending")]).drop_columns(["failed"])
    return rows.slice(0, TABLE_ROWS)


def _write_models(
    output: Output, rows: list[dict[str, Any]], out: str, storage_options
) -> dict[str, dict[str, Any]]:
    """A GLB per chosen row (once each), as ``models/<name>.js`` scripts; returns
    ``{row_key: {"script", "object_id", "iou"}}``."""
    unique = list({r.get("row_key") or r["object_id"]: r for r in rows}.values())
    grids = output.grids(unique) if unique else []
    models: dict[str, dict[str, Any]] = {}
    for row, grid in zip(unique, grids, strict=True):
        try:
            data, _ = export.encode(grid, "glb", row["threshold"])
        except ValueError:  # nothing occupied: no model, the table says so
            continue
        key = row.get("row_key") or row["object_id"]
        name = export.file_name(f"{row['object_id']}\n{key}", "js")  # repeated ids: one each
        payload = json.dumps(key), json.dumps(base64.b64encode(data).decode())
        script = f"window.voxrayModel({payload[0]}, {payload[1]});\n"
        io.write_bytes(io.join(out, "models", name), script.encode(), storage_options)
        models[key] = {
            "script": f"models/{name}",
            "object_id": row["object_id"],
            "iou": row.get("iou"),
        }
    return models


def _page(
    output: Output,
    table: pa.Table,
    shown: pa.Table,
    pictures: dict[str, bytes],
    categories: list[str],
    models: dict[str, dict[str, Any]],
) -> str:
    status = output.status()
    title = f"voxray report: {preview.printable(output.url, 120)}"
    figures = []
    names = {"summary": "Summary", "worst": "The worst objects", "first": "The first objects"}
    for name in pictures:
        heading = names.get(name) or f"Category {categories[int(name.split('-')[1])]}: its worst"
        figures.append(
            f"<figure><figcaption>{html.escape(heading)}</figcaption>"
            f'<img src="pictures/{name}.png" alt="{html.escape(heading)}"></figure>'
        )
    rows = shown.to_pylist()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
    data = {
        "columns": shown.column_names,
        "rows": rows,
        "models": [
            {"key": k, "object_id": m["object_id"], "iou": m["iou"], "script": m["script"]}
            for k, m in models.items()
        ],
        "modelOf": {m["object_id"]: k for k, m in models.items()},
    }
    more = (
        f" (the first {shown.num_rows} of {table.num_rows}, worst first)"
        if table.num_rows > shown.num_rows
        else ""
    )
    scripts = "\n".join(f'<script src="assets/{name}"></script>' for name in SCRIPTS)
    # JSON inside <script>: "</" could end the element early
    embedded = json.dumps(data).replace("</", "<\\/")
    return PAGE.format(
        title=html.escape(title),
        counts=html.escape(
            f"{status['rows_ok']} ok, {status['rows_failed']} failed; "
            f"models {', '.join(status['models']) or 'none'}"
        ),
        repeats=html.escape(_repeats_line(status)),
        figures="\n".join(figures),
        more=html.escape(more),
        scripts=scripts,
        data=embedded,
    )


def _repeats_line(status: dict[str, Any]) -> str:
    """Repeated ids and stale rows, as of the last run that counted them."""
    if status.get("as_of") is None:
        return "repeated ids and stale rows: not counted yet (no run has finished since)"
    return (
        f"{status['duplicate_ids']} object_id(s) with more than one row, "
        f"{status['duplicate_ids_across_files']} of them from different input files; "
        f"{status['rows_stale']} rows of input files that no longer exist "
        f"(as of the {status['as_of']})"
    )


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 16px 24px; color: #222; }}
figure {{ margin: 12px 0 24px; }} figcaption {{ font-weight: 600; margin-bottom: 4px; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
#viewer {{ display: flex; gap: 16px; align-items: flex-start; }}
#view {{ width: 420px; height: 420px; border: 1px solid #ccc; background: #f0f0f0; }}
#models {{ max-height: 420px; overflow: auto; }}
#models button {{ display: block; width: 100%; text-align: left; margin: 2px 0; }}
table {{ border-collapse: collapse; margin-top: 8px; }}
th, td {{ border-bottom: 1px solid #e4e4e4; padding: 3px 8px; text-align: left; }}
th {{ cursor: pointer; background: #f6f6f6; position: sticky; top: 0; }}
td.failed {{ color: #b42020; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{counts}</p>
<p>{repeats}</p>
<h2>3D</h2>
<div id="viewer"><div id="view"></div><div id="models"></div></div>
<p id="viewing"></p>
<h2>Pictures</h2>
{figures}
<h2>Rows{more}</h2>
<p><input id="filter" placeholder="filter: any text in a row" size="40">
<select id="status"><option value="">every status</option><option>ok</option>
<option>failed</option></select> <span id="count"></span></p>
<table id="rows"><thead></thead><tbody></tbody></table>
{scripts}
<script id="data" type="application/json">{data}</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);

// --- the table: sort by a column (click its head), filter by text and status
let order = {{column: null, ascending: true}};
function cellText(value) {{
  if (value === null || value === undefined) return "";
  return typeof value === "number" && !Number.isInteger(value) ? value.toFixed(3) : String(value);
}}
function drawTable() {{
  const text = document.getElementById("filter").value.toLowerCase();
  const status = document.getElementById("status").value;
  let rows = DATA.rows.filter(r => (!status || r.status === status) &&
    (!text || DATA.columns.some(c => cellText(r[c]).toLowerCase().includes(text))));
  if (order.column) {{
    const c = order.column, sign = order.ascending ? 1 : -1;
    rows = rows.slice().sort((a, b) => {{
      const x = a[c], y = b[c];
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sign;
    }});
  }}
  const head = document.querySelector("#rows thead");
  head.replaceChildren(document.createElement("tr"));
  for (const c of [...DATA.columns, "3D"]) {{
    const th = document.createElement("th");
    th.textContent = c + (order.column === c ? (order.ascending ? " \\u25b2" : " \\u25bc") : "");
    if (c !== "3D") th.onclick = () => {{
      order = {{column: c, ascending: order.column === c ? !order.ascending : true}};
      drawTable();
    }};
    head.firstChild.appendChild(th);
  }}
  const body = document.querySelector("#rows tbody");
  body.replaceChildren(...rows.map(r => {{
    const tr = document.createElement("tr");
    for (const c of DATA.columns) {{
      const td = document.createElement("td");
      td.textContent = cellText(r[c]);
      if (r.status !== "ok") td.className = "failed";
      tr.appendChild(td);
    }}
    const td = document.createElement("td");
    const key = DATA.modelOf[r.object_id];
    if (key !== undefined) {{
      const button = document.createElement("button");
      button.textContent = "view";
      button.onclick = () => show(key);
      td.appendChild(button);
    }}
    tr.appendChild(td);
    return tr;
  }}));
  document.getElementById("count").textContent = rows.length + " of " + DATA.rows.length + " rows";
}}
document.getElementById("filter").oninput = drawTable;
document.getElementById("status").onchange = drawTable;
drawTable();

// --- the 3D viewer: three.js, a GLB handed over by models/<name>.js
const view = document.getElementById("view");
const renderer = new THREE.WebGLRenderer({{antialias: true, preserveDrawingBuffer: true}});
renderer.setSize(view.clientWidth, view.clientHeight);
renderer.setClearColor(0xf0f0f0);
view.appendChild(renderer.domElement);
const scene = new THREE.Scene();
scene.add(new THREE.HemisphereLight(0xffffff, 0x666666, 1.0));
const sun = new THREE.DirectionalLight(0xffffff, 0.8);
sun.position.set(-1, 2, 1.5);
scene.add(sun);
const camera = new THREE.PerspectiveCamera(35, 1, 0.01, 20);
camera.position.set(1.1, 0.9, 1.6);
const controls = new THREE.OrbitControls(camera, renderer.domElement);
controls.addEventListener("change", () => renderer.render(scene, camera));
const loaded = {{}};
let current = null;
window.voxrayViewer = {{frames: 0, shown: null}};
function render() {{ renderer.render(scene, camera); window.voxrayViewer.frames += 1; }}
window.voxrayModel = (key, base64) => {{
  const bytes = Uint8Array.from(atob(base64), c => c.charCodeAt(0));
  new THREE.GLTFLoader().parse(bytes.buffer, "", gltf => {{
    loaded[key] = gltf.scene;
    gltf.scene.traverse(node => {{
      if (node.isMesh) node.material = new THREE.MeshStandardMaterial(
        {{color: 0x7394d9, roughness: 0.8, side: THREE.DoubleSide}});
    }});
    place(key);
  }}, error => {{ document.getElementById("viewing").textContent = "cannot read: " + error; }});
}};
function place(key) {{
  if (current) scene.remove(current);
  current = loaded[key];
  scene.add(current);
  const model = DATA.models.find(m => m.key === key);
  document.getElementById("viewing").textContent = "showing " + model.object_id +
    (model.iou === null ? "" : " (IoU " + model.iou.toFixed(3) + ")") +
    " in the unit cube, y up; drag to turn, scroll to zoom";
  window.voxrayViewer.shown = model.object_id;
  render();
}}
function show(key) {{
  if (loaded[key]) return place(key);
  const script = document.createElement("script");
  script.src = DATA.models.find(m => m.key === key).script;
  document.body.appendChild(script);
}}
const list = document.getElementById("models");
for (const m of DATA.models) {{
  const button = document.createElement("button");
  button.textContent = m.object_id + (m.iou === null ? "" : "  IoU " + m.iou.toFixed(3));
  button.onclick = () => show(m.key);
  list.appendChild(button);
}}
if (DATA.models.length) show(DATA.models[0].key);
</script>
</body>
</html>
"""
