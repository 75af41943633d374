"""Analytic solid primitives, the one geometric truth that renders and voxels share.

An object is a `Scene`: a handful of convex primitives (box, cylinder, ellipsoid,
wedge), each with a centre, half-extents, a rotation and a colour. The renderer
ray-casts these same primitives and `voxelize` tests voxel centres against them,
so a render and its voxels can only disagree by the 1/32 sampling of the grid.
This module must never approximate a primitive differently in the two paths.

World frame: right-handed, y up, the front of every object faces +z. The voxel
grid is `grid[x, y, z]` over the unit cube [-0.5, 0.5]^3; cell i spans
[-0.5 + i/32, -0.5 + (i+1)/32] on its axis and is occupied when its centre is
inside any primitive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOX, CYLINDER, ELLIPSOID, WEDGE = 0, 1, 2, 3
KIND_NAMES = ("box", "cylinder", "ellipsoid", "wedge")

GRID = 32
# Voxel centres along one axis of the unit cube.
CENTRES = -0.5 + (np.arange(GRID) + 0.5) / GRID


def rotation(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """Rotation matrix from angles in degrees, applied about x, then y, then z."""
    ax, ay, az = np.radians([rx, ry, rz])
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


@dataclass
class Scene:
    """A solid made of primitives. Local frame of primitive p: x_local = R_p^T (x - centre_p).

    Shapes in the local frame, with half-extents h = (hx, hy, hz):
      box        |x| <= hx, |y| <= hy, |z| <= hz
      cylinder   (x/hx)^2 + (z/hz)^2 <= 1, |y| <= hy          (axis along local y)
      ellipsoid  (x/hx)^2 + (y/hy)^2 + (z/hz)^2 <= 1
      wedge      box and y/hy + z/hz <= 0  (a ramp: high at -z, down to the floor at +z)
    """

    kind: np.ndarray  # int [P]
    centre: np.ndarray  # float [P, 3]
    half: np.ndarray  # float [P, 3]
    rot: np.ndarray  # float [P, 3, 3]
    colour: np.ndarray  # float [P, 3] in [0, 1]

    def __len__(self) -> int:
        return len(self.kind)

    def local_corners(self) -> np.ndarray:
        """Corners of each primitive's oriented bounding box in world space, [P, 8, 3]."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        local = signs[None] * self.half[:, None, :]
        return np.einsum("pij,pkj->pki", self.rot, local) + self.centre[:, None, :]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact axis-aligned bounds of the union, (lo [3], hi [3])."""
        los, his = [], []
        for p in range(len(self)):
            r, h, c = self.rot[p], self.half[p], self.centre[p]
            if self.kind[p] == ELLIPSOID:
                ext = np.sqrt(((r * h[None, :]) ** 2).sum(1))
            elif self.kind[p] == CYLINDER:
                # Extent of an elliptic disc plus the axis half-length.
                ext = np.abs(r[:, 1]) * h[1] + np.sqrt(
                    (r[:, 0] * h[0]) ** 2 + (r[:, 2] * h[2]) ** 2
                )
            elif self.kind[p] == WEDGE:
                # Not symmetric about its centre: take its six vertices.
                tri = ((-1, -1), (1, -1), (-1, 1))  # (y, z) corners of the ramp
                pts = np.array([[sx, y, z] for sx in (-1, 1) for y, z in tri]) * h @ r.T + c
                los.append(pts.min(0))
                his.append(pts.max(0))
                continue
            else:
                ext = np.abs(r) @ h
            los.append(c - ext)
            his.append(c + ext)
        return np.min(los, 0), np.max(his, 0)

    def transformed(self, scale: float, shift: np.ndarray) -> Scene:
        """x -> scale * x + shift."""
        return Scene(
            self.kind.copy(),
            self.centre * scale + shift,
            self.half * scale,
            self.rot.copy(),
            self.colour.copy(),
        )


def inside(scene: Scene, points: np.ndarray) -> np.ndarray:
    """Whether each point [N, 3] lies inside any primitive of the scene, bool [N]."""
    occ = np.zeros(len(points), dtype=bool)
    for p in range(len(scene)):
        local = (points - scene.centre[p]) @ scene.rot[p]
        q = local / scene.half[p]
        k = scene.kind[p]
        if k == BOX:
            m = np.abs(q).max(1) <= 1.0
        elif k == CYLINDER:
            m = (q[:, 0] ** 2 + q[:, 2] ** 2 <= 1.0) & (np.abs(q[:, 1]) <= 1.0)
        elif k == ELLIPSOID:
            m = (q**2).sum(1) <= 1.0
        else:
            m = (np.abs(q).max(1) <= 1.0) & (q[:, 1] + q[:, 2] <= 0.0)
        occ |= m
    return occ


def voxelize(scene: Scene) -> np.ndarray:
    """Occupancy of the 32^3 grid over [-0.5, 0.5]^3 by voxel-centre test, bool [x, y, z]."""
    gx, gy, gz = np.meshgrid(CENTRES, CENTRES, CENTRES, indexing="ij")
    pts = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], 1)
    return inside(scene, pts).reshape(GRID, GRID, GRID)
