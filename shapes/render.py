"""Pure-numpy renderer: ray casting of analytic primitives and of voxel grids.

`render` casts one ray per pixel centre against every primitive of a `Scene`
(only inside the primitive's projected bounding rectangle, which is what makes
it fast), keeps the nearest hit, and shades it with Lambert lighting from a
directional light plus ambient. Pixels that hit nothing get alpha 0, as in
ShapeNetRendering. `raycast_voxels` marches the same camera rays through a
32^3 grid; the silhouette test and the preview sheet use it. Nothing here may
draw anything the primitives (or the voxels) do not contain: no anti-aliasing
fringe, no background, no outline.

Camera convention (all angles in degrees): the camera sits at
`distance * (cos(el) sin(az), sin(el), cos(el) cos(az))`, looks at the origin
with y up, so azimuth 0 looks at the object's front (+z) and azimuth grows
towards +x; `in_plane_rotation` turns the camera about its viewing axis; `fov`
is the full angle across the (square) image.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from shapes.primitives import BOX, CYLINDER, ELLIPSOID, GRID, WEDGE, Scene

AMBIENT = 0.35
# Light direction in camera coordinates (right, up, towards the camera): from
# the upper left, slightly in front, like a desk lamp over the photographer's shoulder.
LIGHT_CAM = np.array([-0.45, 0.65, 0.6]) / np.linalg.norm([-0.45, 0.65, 0.6])


@dataclass(frozen=True)
class Camera:
    """A view as ShapeNet's rendering_metadata.txt records it (degrees; distance in
    units of the unit cube the voxels span)."""

    azimuth: float
    elevation: float
    in_plane_rotation: float
    distance: float
    fov: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(position, right, up, forward) in world coordinates."""
        az, el, ip = np.radians([self.azimuth, self.elevation, self.in_plane_rotation])
        pos = self.distance * np.array(
            [np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)]
        )
        fwd = -pos / np.linalg.norm(pos)
        right = np.cross(fwd, [0.0, 1.0, 0.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, fwd)
        right, up = np.cos(ip) * right + np.sin(ip) * up, -np.sin(ip) * right + np.cos(ip) * up
        return pos, right, up, fwd

    def focal(self, size: int) -> float:
        return (size / 2) / np.tan(np.radians(self.fov) / 2)

    def rays(self, size: int) -> np.ndarray:
        """Unnormalised ray directions through pixel centres, float32 [size, size, 3]."""
        _, right, up, fwd = self.basis()
        f = self.focal(size)
        c = (np.arange(size) + 0.5 - size / 2) / f
        x, y = c[None, :], -c[:, None]
        d = fwd + x[..., None] * right + y[..., None] * up
        return d.astype(np.float32)

    def project(self, points: np.ndarray, size: int) -> np.ndarray:
        """World points [..., 3] -> pixel coordinates [..., 2] as (column, row)."""
        pos, right, up, fwd = self.basis()
        rel = points - pos
        z = rel @ fwd
        f = self.focal(size)
        return np.stack([size / 2 + f * (rel @ right) / z, size / 2 - f * (rel @ up) / z], -1)


def _intervals(kind: int, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit ray parameters of a unit-scaled primitive (local o [3], d [n, 3])."""
    if kind == ELLIPSOID:
        a = (d * d).sum(-1)
        b = d @ o
        c = o @ o - 1.0
        disc = b * b - a * c
        s = np.sqrt(np.maximum(disc, 0.0))
        tn = np.where(disc >= 0, (-b - s) / a, np.inf)
        return tn, (-b + s) / a
    if kind == CYLINDER:
        dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
        a = dx * dx + dz * dz
        b = o[0] * dx + o[2] * dz
        c = o[0] ** 2 + o[2] ** 2 - 1.0
        disc = b * b - a * c
        s = np.sqrt(np.maximum(disc, 0.0))
        t0 = np.where(disc >= 0, (-b - s) / a, np.inf)
        t1 = (-b + s) / a
        y0 = (-1.0 - o[1]) / dy
        y1 = (1.0 - o[1]) / dy
        return np.maximum(t0, np.minimum(y0, y1)), np.minimum(t1, np.maximum(y0, y1))
    # Box and wedge: three slabs.
    t1 = (-1.0 - o) / d
    t2 = (1.0 - o) / d
    tn = np.minimum(t1, t2).max(-1)
    tf = np.maximum(t1, t2).min(-1)
    if kind == WEDGE:
        # Half-space y + z <= 0 (in unit-scaled coordinates).
        nd = d[..., 1] + d[..., 2]
        no = o[1] + o[2]
        tp = -no / nd
        tn = np.where(nd < 0, np.maximum(tn, tp), tn)
        tf = np.where(nd > 0, np.minimum(tf, tp), tf)
        if no > 0:
            tn = np.where(nd == 0, np.inf, tn)
    return tn, tf


def _normals(scene: Scene, prim: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Outward unit normals at surface points [n, 3] of primitives prim [n]."""
    rot = scene.rot[prim]
    half = scene.half[prim]
    local = np.einsum("nji,nj->ni", rot, points - scene.centre[prim])
    q = local / half
    kind = scene.kind[prim]
    n = np.zeros_like(q)
    # Box and wedge: the face the point is closest to, measured in world units.
    flat = (kind == BOX) | (kind == WEDGE)
    if flat.any():
        gaps = half[flat] - np.abs(local[flat])
        axis = gaps.argmin(1)
        rows = np.arange(len(axis))
        nb = np.zeros((len(axis), 3))
        nb[rows, axis] = np.sign(local[flat][rows, axis])
        wedge = kind[flat] == WEDGE
        if wedge.any():
            h = half[flat][wedge]
            lw = local[flat][wedge]
            pn = np.stack([np.zeros(len(h)), 1 / h[:, 1], 1 / h[:, 2]], 1)
            pn /= np.linalg.norm(pn, axis=1, keepdims=True)
            plane_gap = -(lw * pn).sum(1)
            on_plane = plane_gap < gaps[wedge].min(1)
            nw = nb[wedge]
            nw[on_plane] = pn[on_plane]
            nb[wedge] = nw
        n[flat] = nb
    ell = kind == ELLIPSOID
    n[ell] = q[ell] / half[ell]
    cyl = kind == CYLINDER
    if cyl.any():
        qc, hc = q[cyl], half[cyl]
        radial = np.sqrt(qc[:, 0] ** 2 + qc[:, 2] ** 2)
        cap = np.abs(qc[:, 1]) > radial
        nc = np.stack([qc[:, 0] / hc[:, 0], np.zeros(len(qc)), qc[:, 2] / hc[:, 2]], 1)
        nc[cap] = np.stack([np.zeros(cap.sum()), np.sign(qc[cap, 1]), np.zeros(cap.sum())], 1)
        n[cyl] = nc
    world = np.einsum("nij,nj->ni", rot, n)
    return world / np.maximum(np.linalg.norm(world, axis=1, keepdims=True), 1e-12)


def render(scene: Scene, camera: Camera, size: int = 137) -> np.ndarray:
    """RGBA uint8 [size, size, 4] image of the scene; alpha is 0 where no primitive is hit."""
    pos, right, up, fwd = camera.basis()
    dirs = camera.rays(size)
    depth = np.full((size, size), np.inf, dtype=np.float32)
    prim_id = np.full((size, size), -1, dtype=np.int32)
    rects = camera.project(scene.local_corners(), size)  # [P, 8, 2]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for p in range(len(scene)):
            c0, r0 = np.floor(rects[p].min(0)).astype(int)
            c1, r1 = np.ceil(rects[p].max(0)).astype(int) + 1
            c0, r0 = max(c0, 0), max(r0, 0)
            c1, r1 = min(c1, size), min(r1, size)
            if c0 >= c1 or r0 >= r1:
                continue
            # Into the primitive's unit-scaled local frame, where it is a unit shape.
            scale = (1.0 / scene.half[p]).astype(np.float32)
            rs = (scene.rot[p] * scale[None, :]).astype(np.float32)
            o = ((pos - scene.centre[p]) @ scene.rot[p] * scale).astype(np.float32)
            d = dirs[r0:r1, c0:c1] @ rs
            tn, tf = _intervals(int(scene.kind[p]), o, d)
            zb = depth[r0:r1, c0:c1]
            hit = (tn <= tf) & (tn > 0) & (tn < zb)
            zb[hit] = tn[hit]
            prim_id[r0:r1, c0:c1][hit] = p
    rgba = np.zeros((size, size, 4), dtype=np.uint8)
    mask = prim_id >= 0
    if not mask.any():
        return rgba
    pid = prim_id[mask]
    points = pos + dirs[mask].astype(np.float64) * depth[mask, None].astype(np.float64)
    normals = _normals(scene, pid, points)
    light = LIGHT_CAM[0] * right + LIGHT_CAM[1] * up - LIGHT_CAM[2] * fwd
    lambert = np.clip(normals @ light, 0.0, 1.0)
    shade = AMBIENT + (1.0 - AMBIENT) * lambert
    colour = scene.colour[pid] * shade[:, None]
    rgba[mask, :3] = np.clip(np.rint(colour * 255), 0, 255).astype(np.uint8)
    rgba[mask, 3] = 255
    return rgba


def encode_png(rgba: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG bytes of an RGBA uint8 image."""
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def raycast_voxels(
    grid: np.ndarray, camera: Camera, size: int, step: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """March camera rays through a bool grid[x, y, z] over [-0.5, 0.5]^3.

    Returns (hit bool [size, size], normal float [size, size, 3]): the silhouette of
    the occupied voxels and the outward normal of the voxel face each ray enters
    first. `step` is the marching step in voxels; a ray that grazes a voxel for
    less than a step can miss it.
    """
    pos, _, _, _ = camera.basis()
    hit = np.zeros((size, size), dtype=bool)
    normal = np.zeros((size, size, 3))
    occupied = np.argwhere(grid)
    if len(occupied) == 0:
        return hit, normal
    # March only the rays and the depth range that can meet the occupied box.
    lo = occupied.min(0) / GRID - 0.5
    hi = (occupied.max(0) + 1) / GRID - 0.5
    corners = np.array(
        [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )
    rect = camera.project(corners, size)
    c0, r0 = np.maximum(np.floor(rect.min(0)).astype(int), 0)
    c1, r1 = np.minimum(np.ceil(rect.max(0)).astype(int) + 1, size)
    centre, reach = (lo + hi) / 2, np.linalg.norm(hi - lo) / 2
    dist = np.linalg.norm(centre - pos)
    ts = np.arange(dist - reach, dist + reach, step / GRID)
    dirs = camera.rays(size)[r0:r1, c0:c1].reshape(-1, 3).astype(np.float64)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    flat_grid = grid.ravel()
    sub_hit = np.zeros(len(dirs), dtype=bool)
    sub_normal = np.zeros((len(dirs), 3))
    chunk = max(1, 1_000_000 // len(ts))
    with np.errstate(divide="ignore", invalid="ignore"):
        for s in range(0, len(dirs), chunk):
            d = dirs[s : s + chunk]
            idx = np.floor((pos + d[:, None, :] * ts[None, :, None] + 0.5) * GRID).astype(np.int32)
            valid = ((idx >= 0) & (idx < GRID)).all(-1)
            flat = (idx[..., 0] * GRID + idx[..., 1]) * GRID + idx[..., 2]
            occ = valid & flat_grid[np.where(valid, flat, 0)]
            rows = np.nonzero(occ.any(1))[0]
            vox = idx[rows, occ[rows].argmax(1)]
            # The entry face of the first occupied voxel: the slab entered last.
            vlo = vox / GRID - 0.5
            dr = d[rows]
            t_lo = (vlo - pos) / dr
            t_hi = (vlo + 1 / GRID - pos) / dr
            axis = np.nan_to_num(np.minimum(t_lo, t_hi), nan=-np.inf).argmax(1)
            n = np.zeros((len(rows), 3))
            n[np.arange(len(rows)), axis] = -np.sign(dr[np.arange(len(rows)), axis])
            sub_hit[s + rows] = True
            sub_normal[s + rows] = n
    hit[r0:r1, c0:c1] = sub_hit.reshape(r1 - r0, c1 - c0)
    normal[r0:r1, c0:c1] = sub_normal.reshape(r1 - r0, c1 - c0, 3)
    return hit, normal


def shade_normals(
    hit: np.ndarray, normal: np.ndarray, camera: Camera, colour: tuple[float, float, float]
) -> np.ndarray:
    """RGBA uint8 image of a single-colour surface given per-pixel normals."""
    _, right, up, fwd = camera.basis()
    light = LIGHT_CAM[0] * right + LIGHT_CAM[1] * up - LIGHT_CAM[2] * fwd
    shade = AMBIENT + (1.0 - AMBIENT) * np.clip(normal @ light, 0.0, 1.0)
    rgba = np.zeros(hit.shape + (4,), dtype=np.uint8)
    rgb = np.asarray(colour)[None, None, :] * shade[..., None]
    rgba[..., :3] = np.where(hit[..., None], np.clip(np.rint(rgb * 255), 0, 255), 0)
    rgba[..., 3] = np.where(hit, 255, 0)
    return rgba
