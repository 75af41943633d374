"""Thirteen parametric object families named as ShapeNet's 13 categories.

Each `build_<category>(rng)` draws one object from its family: proportions,
which parts exist (armrests, stretchers, shelves, engines, ...), how many legs,
thicknesses, small rotations and a colour per part group. `build` then
normalises it: the union's bounding box is centred and scaled so its longest side
is 1 (the unit cube the voxels span), and every part is kept at least
`MIN_HALF` half-thick so that it survives 32^3 voxelisation. A family must never
draw from any random source but the `rng` it is given: that is what makes a
dataset a pure function of (seed, index).

Frame: y up, the front of every object faces +z, width along x. Vehicles, rifles
and boats are long along z with the nose or muzzle at +z.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from shapes.primitives import BOX, CYLINDER, ELLIPSOID, WEDGE, Scene, rotation

CATEGORIES = (
    "airplane",
    "bench",
    "cabinet",
    "car",
    "chair",
    "display",
    "lamp",
    "loudspeaker",
    "rifle",
    "sofa",
    "table",
    "telephone",
    "watercraft",
)

SYNSETS = {
    "airplane": "02691156",
    "bench": "02828884",
    "cabinet": "02933112",
    "car": "02958343",
    "chair": "03001627",
    "display": "03211117",
    "lamp": "03636649",
    "loudspeaker": "03691459",
    "rifle": "04090263",
    "sofa": "04256520",
    "table": "04379243",
    "telephone": "04401088",
    "watercraft": "04530566",
}

# Every part is at least 3 voxels thick after normalisation: thinner parts lose
# a third of their width or more to the 1/32 sampling, and their voxels no longer
# outline what the renders show.
MIN_HALF = 1.5 / 32
# Curved parts voxelise as staircases; below these sizes the staircase is a large
# part of the outline. Thinner cylinders become square bars (which snap to the
# grid exactly) and ellipsoids are kept at least 5 voxels across.
MIN_ROUND_HALF = 2.5 / 32
# Tilted flat parts voxelise as staircases too, if less so.
MIN_TILTED_HALF = 2.0 / 32


class Builder:
    """Collects primitives; sizes are full extents, angles in degrees.

    `frame(origin, rot)` nests a local coordinate frame, for sub-assemblies that
    tilt together (a chair back, a lamp arm).
    """

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._origin = np.zeros(3)
        self._rot = np.eye(3)

    # -- random helpers -------------------------------------------------------
    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def pick(self, options, weights=None):
        w = None if weights is None else np.asarray(weights, float) / np.sum(weights)
        return options[int(self.rng.choice(len(options), p=w))]

    def int(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi]."""
        return int(self.rng.integers(lo, hi + 1))

    def colour(self) -> np.ndarray:
        h, s, v = self.rng.random(), self.u(0.15, 0.85), self.u(0.3, 0.95)
        return np.array(colorsys.hsv_to_rgb(h, s, v))

    # -- frames and parts -----------------------------------------------------
    @contextmanager
    def frame(self, origin, rot=(0.0, 0.0, 0.0)) -> Iterator[None]:
        saved = self._origin, self._rot
        self._origin = self._origin + self._rot @ np.asarray(origin, float)
        self._rot = self._rot @ rotation(*rot)
        try:
            yield
        finally:
            self._origin, self._rot = saved

    def _add(self, kind: int, centre, size, colour, rot) -> None:
        c = self._origin + self._rot @ np.asarray(centre, float)
        r = self._rot @ rotation(*rot)
        self.parts.append((kind, c, np.asarray(size, float) / 2, r, np.asarray(colour, float)))

    def box(self, centre, size, colour, rot=(0, 0, 0)) -> None:
        self._add(BOX, centre, size, colour, rot)

    def ellipsoid(self, centre, size, colour, rot=(0, 0, 0)) -> None:
        self._add(ELLIPSOID, centre, size, colour, rot)

    def wedge(self, centre, size, colour, rot=(0, 0, 0)) -> None:
        """A ramp: full height at -z, down to the floor at +z (before rotation)."""
        self._add(WEDGE, centre, size, colour, rot)

    def cyl(self, centre, diameter, length, colour, axis="y", rot=None, depth=None) -> None:
        """A cylinder of `length` along `axis` (elliptic when `depth` is given)."""
        base = {"y": (0, 0, 0), "x": (0, 0, 90), "z": (90, 0, 0)}[axis]
        size = (diameter, length, diameter if depth is None else depth)
        if rot is None:
            self._add(CYLINDER, centre, size, colour, base)
        else:
            with self.frame(centre, rot):
                self._add(CYLINDER, (0, 0, 0), size, colour, base)

    def bar(self, a, b, thickness, colour, round_=False) -> None:
        """A square (or round) bar from point a to point b."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        v = b - a
        length = float(np.linalg.norm(v))
        y = v / length
        # A rotation that takes local y to the bar's direction.
        helper = np.array([1.0, 0, 0]) if abs(y[0]) < 0.9 else np.array([0, 0, 1.0])
        x = np.cross(y, helper)
        x /= np.linalg.norm(x)
        z = np.cross(x, y)
        r = self._rot @ np.stack([x, y, z], 1)
        c = self._origin + self._rot @ ((a + b) / 2)
        kind = CYLINDER if round_ else BOX
        size = np.array([thickness, length, thickness]) / 2
        self.parts.append((kind, c, size, r, np.asarray(colour, float)))

    def scene(self) -> Scene:
        kind, centre, half, rot, colour = zip(*self.parts, strict=True)
        return Scene(
            np.array(kind, np.int64),
            np.array(centre),
            np.array(half),
            np.array(rot),
            np.clip(np.array(colour), 0, 1),
        )


# ---------------------------------------------------------------------------
# Furniture
# ---------------------------------------------------------------------------


def _legs(b: Builder, w: float, d: float, h: float, t: float, col, round_: bool, splay: float):
    """Four legs under a rectangle w x d whose underside is at height h."""
    for sx in (-1, 1):
        for sz in (-1, 1):
            top = np.array([sx * (w / 2 - t / 2), h, sz * (d / 2 - t / 2)])
            off = np.tan(np.radians(splay)) * h
            foot = top + np.array([sx * off, -h, sz * off])
            b.bar(foot, top, t, col, round_)


def build_chair(b: Builder) -> None:
    w, d, h = b.u(0.4, 0.65), b.u(0.38, 0.6), b.u(0.3, 0.55)
    st = b.u(0.04, 0.12)
    seat_col, leg_col = b.colour(), b.colour()
    back_col = seat_col if b.chance(0.5) else b.colour()
    if b.chance(0.25):
        b.ellipsoid((0, h - st / 2, 0), (w * 1.02, st * 1.6, d * 1.02), seat_col)
    else:
        b.box((0, h - st / 2, 0), (w, st, d), seat_col)
    under = h - st
    base = b.pick(["legs", "pedestal", "sled", "block", "cantilever"], [5, 2, 1.2, 0.8, 0.8])
    if base == "legs":
        t = b.u(0.035, 0.08)
        _legs(
            b,
            w - 2 * b.u(0, 0.05),
            d - 2 * b.u(0, 0.05),
            under,
            t,
            leg_col,
            b.chance(0.4),
            b.u(0, 9) if b.chance(0.4) else 0.0,
        )
        stretch = b.pick(["none", "h", "ring", "side"])
        y = b.u(0.06, 0.45) * under
        if stretch in ("ring", "side"):
            for sx in (-1, 1):
                b.box((sx * (w / 2 - t / 2), y, 0), (t * 0.8, t * 0.8, d - t), leg_col)
        if stretch == "ring":
            for sz in (-1, 1):
                b.box((0, y, sz * (d / 2 - t / 2)), (w - t, t * 0.8, t * 0.8), leg_col)
        if stretch == "h":
            for sx in (-1, 1):
                b.box((sx * (w / 2 - t / 2), y, 0), (t * 0.8, t * 0.8, d - t), leg_col)
            b.box((0, y, 0), (w - t, t * 0.8, t * 0.8), leg_col)
    elif base == "pedestal":
        r = b.u(0.03, 0.06)
        foot = b.u(0.03, 0.1)
        b.cyl((0, (under + foot) / 2, 0), 2 * r, under - foot, leg_col)
        if b.chance(0.3):
            b.cyl((0, foot / 2, 0), b.u(0.35, 0.6), foot, leg_col)
        else:
            n, arm = b.pick([4, 5, 5]), b.u(0.2, 0.33)
            phase = b.u(0, 360)
            for k in range(n):
                with b.frame((0, foot / 2, 0), (0, phase + k * 360 / n, 0)):
                    b.box((0, 0, arm / 2), (0.05, foot, arm), leg_col, rot=(b.u(-4, 8), 0, 0))
                    if b.chance(0.5):
                        b.ellipsoid((0, -foot / 2, arm), (0.06, 0.06, 0.06), leg_col)
    elif base == "sled":
        t = b.u(0.035, 0.06)
        for sx in (-1, 1):
            x = sx * (w / 2 - t / 2)
            b.bar((x, 0, d / 2), (x, under, d / 2 - t), t, leg_col, True)
            b.bar((x, 0, -d / 2), (x, under, -d / 2 + t), t, leg_col, True)
            b.box((x, t / 2, 0), (t, t, d + t), leg_col)
    elif base == "block":
        b.box((0, under / 2, 0), (w * b.u(0.6, 1), under, d * b.u(0.6, 1)), leg_col)
    else:  # cantilever: a tube frame that touches the floor in front only
        t = b.u(0.035, 0.055)
        for sx in (-1, 1):
            x = sx * (w / 2 - t / 2)
            b.box((x, t / 2, 0.02), (t, t, d), leg_col)
            b.box((x, under / 2, d / 2 - t / 2 + 0.02), (t, under, t), leg_col)
    # The back leans about the rear edge of the seat.
    style = b.pick(["solid", "round", "slats", "frame", "none"], [4, 1.2, 1.6, 1.6, 0.5])
    if style != "none":
        bh, bt, tilt = b.u(0.25, 0.65), b.u(0.04, 0.1), b.u(-3, 22)
        bw = w * b.u(0.75, 1.0)
        with b.frame((0, h - st, -d / 2 + bt / 2), (-tilt, 0, 0)):
            if style == "solid":
                b.box((0, bh / 2 + st / 2, 0), (bw, bh + st, bt), back_col)
            elif style == "round":
                b.ellipsoid((0, st + bh * 0.55, 0), (bw, bh * 1.1, bt * 1.4), back_col)
                b.box((0, st + bh * 0.1, 0), (bw * 0.3, bh * 0.25, bt), back_col)
            else:
                pt = b.u(0.035, 0.06)
                for sx in (-1, 1):
                    b.box((sx * (bw / 2 - pt / 2), (bh + st) / 2, 0), (pt, bh + st, pt), leg_col)
                rail = b.u(0.05, 0.12)
                b.box((0, st + bh - rail / 2, 0), (bw, rail, bt), back_col)
                if style == "slats":
                    n = b.int(1, 4)
                    for k in range(n):
                        x = (k + 1) / (n + 1) * bw - bw / 2
                        b.box(
                            (x, st + (bh - rail) / 2, 0),
                            (b.u(0.04, 0.09), bh - rail, bt * 0.7),
                            back_col,
                        )
                else:
                    for k in range(b.int(0, 2)):
                        y = st + (k + 1) * (bh - rail) / 3
                        b.box((0, y, 0), (bw, rail * 0.6, bt * 0.7), back_col)
    if style != "none" and base != "block" and b.chance(0.4):
        ah, aw = b.u(0.14, 0.28), b.u(0.04, 0.09)
        arm_col = leg_col if b.chance(0.5) else seat_col
        panel = b.chance(0.35)
        for sx in (-1, 1):
            x = sx * (w / 2 + aw / 2 - 0.01)
            length = d * b.u(0.7, 1.0)
            b.box((x, h + ah, -d / 2 + length / 2), (aw, 0.04, length), arm_col)
            if panel:
                b.box(
                    (x, (h + ah) / 2 + 0.01, -d / 2 + length / 2),
                    (aw * 0.7, h + ah, length * 0.9),
                    arm_col,
                )
            else:
                b.box(
                    (x, h + ah / 2 - st / 2, -d / 2 + length - aw / 2),
                    (aw * 0.8, ah + st, aw * 0.8),
                    arm_col,
                )


def build_table(b: Builder) -> None:
    shape = b.pick(["rect", "round", "oval", "square"], [4, 2, 1, 1.5])
    length = b.u(0.7, 1.5)
    depth = length if shape in ("round", "square") else length * b.u(0.45, 0.95)
    h, tt = b.u(0.45, 0.8), b.u(0.04, 0.1)
    top_col, leg_col = b.colour(), b.colour()
    if shape in ("round", "oval"):
        b.cyl((0, h - tt / 2, 0), length, tt, top_col, depth=depth)
    else:
        b.box((0, h - tt / 2, 0), (length, tt, depth), top_col)
    under = h - tt
    inset = b.u(0.0, 0.12)
    # Legs of a round top sit inside its inscribed rectangle.
    lw = (length / np.sqrt(2) if shape in ("round", "oval") else length) - 2 * inset
    ld = (depth / np.sqrt(2) if shape in ("round", "oval") else depth) - 2 * inset
    bases = ["legs", "pedestal", "trestle", "panels", "tripod"]
    weights = [5, 2, 1.2, 1.2, 1.0 if shape == "round" else 0.2]
    base = b.pick(bases, weights)
    if base == "legs":
        t = b.u(0.04, 0.11)
        _legs(b, lw, ld, under, t, leg_col, b.chance(0.4), b.u(0, 7) if b.chance(0.3) else 0.0)
        if b.chance(0.5):
            ah = b.u(0.04, 0.12)
            for sz in (-1, 1):
                b.box((0, under - ah / 2, sz * (ld / 2 - t / 2)), (lw - t, ah, t * 0.7), leg_col)
            for sx in (-1, 1):
                b.box((sx * (lw / 2 - t / 2), under - ah / 2, 0), (t * 0.7, ah, ld - t), leg_col)
        if b.chance(0.3):
            y = b.u(0.1, 0.35) * under
            b.box((0, y, 0), (lw - t, 0.04, ld - t), leg_col if b.chance(0.5) else top_col)
        elif b.chance(0.3):
            y = b.u(0.1, 0.3) * under
            for sx in (-1, 1):
                b.box((sx * (lw / 2 - t / 2), y, 0), (t * 0.7, t * 0.7, ld - t), leg_col)
            b.box((0, y, 0), (lw - t, t * 0.7, t * 0.7), leg_col)
    elif base == "pedestal":
        r = b.u(0.04, 0.12)
        b.cyl((0, under / 2, 0), 2 * r, under, leg_col)
        foot = b.pick(["disk", "cross", "star"])
        if foot == "disk":
            b.cyl((0, 0.025, 0), min(lw, ld) * b.u(0.5, 0.9), 0.05, leg_col)
        else:
            n = 2 if foot == "cross" else 4
            for k in range(n):
                b.box(
                    (0, 0.03, 0),
                    (min(lw, ld) * b.u(0.6, 0.9), 0.06, 0.06),
                    leg_col,
                    rot=(0, k * 180 / n + 45 * (foot == "star"), 0),
                )
    elif base == "trestle":
        t = b.u(0.05, 0.1)
        for sx in (-1, 1):
            x = sx * (lw / 2 - t)
            b.box((x, under / 2, 0), (t, under, t * 1.5), leg_col)
            b.box((x, 0.03, 0), (t, 0.06, ld * 0.9), leg_col)
            b.box((x, under - 0.03, 0), (t, 0.06, ld * 0.8), leg_col)
        b.box((0, under * b.u(0.25, 0.6), 0), (lw - 2 * t, 0.05, 0.05), leg_col)
    elif base == "panels":
        t = b.u(0.04, 0.1)
        for sx in (-1, 1):
            b.box((sx * (lw / 2 - t / 2), under / 2, 0), (t, under, ld * b.u(0.6, 1.0)), leg_col)
        if b.chance(0.5):
            b.box(
                (0, under * b.u(0.4, 0.8), -ld / 2 + 0.03), (lw - 2 * t, under * 0.4, 0.05), leg_col
            )
    else:  # tripod
        t = b.u(0.04, 0.08)
        phase = b.u(0, 120)
        for k in range(3):
            a = np.radians(phase + 120 * k)
            rr = min(lw, ld) / 2
            top = np.array([0.5 * rr * np.cos(a), under, 0.5 * rr * np.sin(a)])
            foot = np.array([rr * np.cos(a), 0, rr * np.sin(a)])
            b.bar(foot, top, t, leg_col, True)
    if shape in ("rect", "square") and base in ("legs", "panels") and b.chance(0.2):
        # A drawer block down one side: a desk.
        dw = lw * b.u(0.25, 0.4)
        x = b.pick([-1, 1]) * (lw / 2 - dw / 2)
        b.box((x, under / 2, 0), (dw, under, ld * 0.95), b.colour())


def build_sofa(b: Builder) -> None:
    w, d = b.u(1.1, 2.2), b.u(0.6, 0.95)
    sh, cush = b.u(0.28, 0.45), b.u(0.08, 0.16)
    body_col = b.colour()
    cush_col = body_col if b.chance(0.5) else b.colour()
    legs = b.chance(0.55)
    lh = b.u(0.04, 0.14) if legs else 0.0
    arms = b.pick(["none", "box", "rolled", "low"], [1, 3, 1.5, 1])
    aw = b.u(0.1, 0.25) if arms != "none" else 0.0
    bt = b.u(0.12, 0.28)
    inner = w - 2 * aw
    b.box((0, lh + (sh - cush - lh) / 2, 0), (w, sh - cush - lh, d), body_col)
    n = b.int(1, 4)
    gap = 0.01
    for k in range(n):
        cw = (inner - gap * (n - 1)) / n
        x = -inner / 2 + cw / 2 + k * (cw + gap)
        b.box((x, sh - cush / 2, bt / 2), (cw, cush, d - bt), cush_col)
    bh, tilt = b.u(0.25, 0.6), b.u(0, 16)
    with b.frame((0, sh - cush, -d / 2 + bt / 2), (-tilt, 0, 0)):
        if b.chance(0.7):
            b.box((0, (bh + cush) / 2, 0), (w, bh + cush, bt), body_col)
        else:
            b.ellipsoid((0, (bh + cush) / 2, 0.02), (w, (bh + cush) * 1.1, bt * 1.3), body_col)
        if b.chance(0.4):
            for k in range(n):
                cw = inner / n
                x = -inner / 2 + cw / 2 + k * cw
                b.ellipsoid(
                    (x, cush + bh * 0.45, bt * 0.6), (cw * 0.95, bh * 0.8, bt * 0.9), cush_col
                )
    if arms != "none":
        ah = {"low": b.u(0.02, 0.1), "box": b.u(0.1, 0.3), "rolled": b.u(0.08, 0.25)}[arms]
        for sx in (-1, 1):
            x = sx * (w / 2 - aw / 2)
            b.box((x, lh + (sh + ah - lh) / 2, 0), (aw, sh + ah - lh, d), body_col)
            if arms == "rolled":
                b.cyl((x + sx * 0.02, sh + ah, 0), aw * 1.3, d, body_col, axis="z")
    if b.chance(0.25):
        # A chaise: one end runs forward.
        ext, cw = b.u(0.3, 0.7), inner * b.u(0.3, 0.5)
        x = b.pick([-1, 1]) * (w / 2 - aw - cw / 2)
        b.box((x, lh + (sh - lh) / 2, d / 2 + ext / 2), (cw, sh - lh, ext), cush_col)
    if legs:
        t = b.u(0.04, 0.08)
        xs = [-w / 2 + t, w / 2 - t] + ([0.0] if b.chance(0.3) else [])
        for x in xs:
            for sz in (-1, 1):
                b.cyl((x, lh / 2, sz * (d / 2 - t)), t, lh, (0.25, 0.25, 0.25))


def build_cabinet(b: Builder) -> None:
    w, h, d = b.u(0.35, 1.3), b.u(0.35, 1.5), b.u(0.3, 0.65)
    col, front_col = b.colour(), b.colour()
    feet = b.pick(["none", "plinth", "legs"])
    fh = 0.0 if feet == "none" else b.u(0.04, 0.15)
    if feet == "plinth":
        b.box((0, fh / 2, 0), (w * 0.92, fh, d * 0.9), col)
    elif feet == "legs":
        t = b.u(0.04, 0.07)
        _legs(b, w * 0.96, d * 0.94, fh, t, b.colour(), b.chance(0.5), 0.0)
    y0, ch = fh, h - fh
    if b.chance(0.3):  # open shelving: a hollow carcass
        t = b.u(0.035, 0.07)
        for sx in (-1, 1):
            b.box((sx * (w / 2 - t / 2), y0 + ch / 2, 0), (t, ch, d), col)
        b.box((0, y0 + t / 2, 0), (w, t, d), col)
        b.box((0, y0 + ch - t / 2, 0), (w, t, d), col)
        if b.chance(0.75):
            b.box((0, y0 + ch / 2, -d / 2 + t / 2), (w, ch, t), col)
        n = b.int(0, 4)
        for k in range(n):
            b.box((0, y0 + (k + 1) * ch / (n + 1), 0), (w - 2 * t, t, d - t), col)
        if w > 0.7 and b.chance(0.5):
            b.box((0, y0 + ch / 2, 0), (t, ch, d - t), col)
    else:
        b.box((0, y0 + ch / 2, -0.01), (w, ch, d - 0.02), col)
        layout = b.pick(["doors", "drawers", "mixed", "plain"])
        panel = 0.05
        z = d / 2 - panel / 2 + 0.02
        if layout == "doors":
            n = 1 if w < 0.6 else 2
            for k in range(n):
                pw = w / n - 0.03
                x = -w / 2 + (k + 0.5) * w / n
                b.box((x, y0 + ch / 2, z), (pw, ch - 0.04, panel), front_col)
                hx = x + (pw / 2 - 0.06) * (1 if k == 0 and n == 2 else -1 if n == 2 else 1)
                b.box((hx, y0 + ch / 2, z + 0.03), (0.05, 0.12, 0.05), (0.2, 0.2, 0.2))
        elif layout in ("drawers", "mixed"):
            n = b.int(2, 6)
            top = ch if layout == "drawers" else ch * b.u(0.3, 0.5)
            for k in range(n):
                dh = top / n
                y = y0 + ch - (k + 0.5) * dh
                b.box((0, y, z), (w - 0.04, dh - 0.025, panel), front_col)
                b.box((0, y, z + 0.03), (min(0.2, w / 3), 0.05, 0.05), (0.2, 0.2, 0.2))
            if layout == "mixed":
                b.box((0, y0 + (ch - top) / 2, z), (w - 0.04, ch - top - 0.03, panel), front_col)
    if b.chance(0.4):
        b.box((0, h + 0.025, 0), (w + b.u(0.02, 0.1), 0.05, d + b.u(0.02, 0.08)), b.colour())


def build_bench(b: Builder) -> None:
    length, d, h = b.u(0.9, 2.0), b.u(0.28, 0.55), b.u(0.3, 0.5)
    seat_col, leg_col = b.colour(), b.colour()
    st = b.u(0.04, 0.1)
    if b.chance(0.5):
        n = b.int(2, 4)
        gap = b.u(0.04, 0.07)
        sw = (d - gap * (n - 1)) / n
        for k in range(n):
            b.box((0, h - st / 2, -d / 2 + sw / 2 + k * (sw + gap)), (length, st, sw), seat_col)
    else:
        b.box((0, h - st / 2, 0), (length, st, d), seat_col)
    under = h - st
    supports = b.pick(["legs", "slabs", "aframe", "six"])
    t = b.u(0.04, 0.1)
    inset = b.u(0.0, 0.2) * length
    if supports in ("legs", "six"):
        _legs(b, length - 2 * inset, d * b.u(0.8, 1), under, t, leg_col, b.chance(0.4), 0.0)
        if supports == "six":
            for sz in (-1, 1):
                b.box((0, under / 2, sz * (d * 0.4)), (t, under, t), leg_col)
        if b.chance(0.4):
            b.box((0, under * b.u(0.2, 0.5), 0), (length - 2 * inset, t * 0.8, t * 0.8), leg_col)
    elif supports == "slabs":
        for sx in (-1, 1):
            b.box(
                (sx * (length / 2 - inset - t / 2), under / 2, 0),
                (t, under, d * b.u(0.7, 1)),
                leg_col,
            )
    else:
        spread = b.u(0.1, 0.3) * d
        for sx in (-1, 1):
            x = sx * (length / 2 - inset - t)
            b.bar((x, 0, -d / 2 - spread / 2), (x, under, 0), t, leg_col)
            b.bar((x, 0, d / 2 + spread / 2), (x, under, 0), t, leg_col)
    if b.chance(0.5):
        bh, tilt = b.u(0.2, 0.5), b.u(0, 18)
        with b.frame((0, h, -d / 2 + 0.03), (-tilt, 0, 0)):
            if b.chance(0.5):
                b.box((0, bh / 2, 0), (length, bh, 0.05), seat_col)
            else:
                for k in range(b.int(1, 3)):
                    b.box((0, bh - k * 0.12 - 0.04, 0), (length, 0.07, 0.05), seat_col)
                for sx in (-1, 1):
                    b.box(
                        (sx * (length / 2 - inset - 0.03), bh / 2, -0.02), (0.06, bh, 0.05), leg_col
                    )
        if b.chance(0.4):
            for sx in (-1, 1):
                x = sx * (length / 2 - 0.03)
                b.box((x, h + 0.18, 0), (0.06, 0.05, d), leg_col)
                b.box((x, h + 0.09, d / 2 - 0.03), (0.05, 0.18, 0.05), leg_col)


# ---------------------------------------------------------------------------
# Electronics
# ---------------------------------------------------------------------------


def build_display(b: Builder) -> None:
    sw = b.u(0.5, 1.0)
    sh, st = sw * b.u(0.45, 0.85), b.u(0.03, 0.08)
    frame_col, screen_col, stand_col = b.colour(), b.colour() * 0.4, b.colour()
    stand = b.pick(["neck", "arm", "feet", "none"], [4, 1, 1.5, 1])
    lift = 0.0 if stand == "none" else b.u(0.06, 0.35)
    tilt = b.u(-12, 8)
    cy = lift + sh / 2
    with b.frame((0, cy, 0), (tilt, 0, 0)):
        b.box((0, 0, 0), (sw, sh, st), frame_col)
        b.box((0, 0.01 * b.u(-1, 1), 0.012), (sw * 0.93, sh * 0.88, st), screen_col)
        back = b.pick(["none", "bump", "crt"], [3, 1.5, 0.7])
        if back == "bump":
            b.box(
                (0, -sh * 0.05, -st / 2 - 0.03),
                (sw * b.u(0.3, 0.7), sh * b.u(0.3, 0.7), 0.07),
                frame_col,
            )
        elif back == "crt":
            bd = b.u(0.2, 0.5)
            b.box(
                (0, -sh * 0.05, -st / 2 - bd / 2),
                (sw * 0.75, sh * 0.75, bd),
                frame_col,
                rot=(0, 0, 0),
            )
    if stand == "neck":
        nw = b.u(0.05, 0.15)
        if b.chance(0.5):
            b.box((0, cy / 2, -st), (nw, cy, 0.05), stand_col)
        else:
            b.cyl((0, cy / 2, -st), nw, cy, stand_col)
        foot = b.pick(["box", "disk", "oval"])
        fw, fd = sw * b.u(0.25, 0.6), b.u(0.15, 0.3)
        if foot == "box":
            b.box((0, 0.02, -st), (fw, 0.04, fd), stand_col)
        else:
            b.cyl((0, 0.02, -st), fw, 0.04, stand_col, depth=fd if foot == "oval" else fw)
    elif stand == "arm":
        b.box((0, cy / 2 + 0.1, -st - 0.12), (0.06, cy + 0.2, 0.05), stand_col)
        b.box((0, cy, -st / 2 - 0.06), (0.06, 0.05, 0.12), stand_col)
        b.box((0, 0.02, -st - 0.12), (sw * 0.35, 0.04, 0.2), stand_col)
    elif stand == "feet":
        for sx in (-1, 1):
            x = sx * sw * b.u(0.3, 0.45)
            b.box(
                (x, lift / 2 + 0.02, 0), (0.05, lift + 0.04, 0.05), stand_col, rot=(0, 0, sx * 10)
            )
            b.box((x, 0.02, 0), (0.06, 0.04, b.u(0.15, 0.3)), stand_col)


def build_loudspeaker(b: Builder) -> None:
    kind = b.pick(["tower", "bookshelf", "cube", "cylinder", "bar"], [3, 3, 1.5, 1.2, 1])
    dims = {
        "tower": (b.u(0.22, 0.4), b.u(0.8, 1.2), b.u(0.25, 0.45)),
        "bookshelf": (b.u(0.25, 0.4), b.u(0.35, 0.55), b.u(0.25, 0.4)),
        "cube": (b.u(0.4, 0.6), b.u(0.4, 0.6), b.u(0.4, 0.6)),
        "cylinder": (b.u(0.3, 0.5), b.u(0.4, 1.0), 0.0),
        "bar": (b.u(0.8, 1.2), b.u(0.1, 0.2), b.u(0.1, 0.2)),
    }[kind]
    w, h, d = dims
    body_col, driver_col = b.colour(), b.colour() * 0.5
    y0 = 0.0
    base = b.pick(["none", "feet", "plinth", "stand"], [3, 1, 1, 1 if kind == "bookshelf" else 0.1])
    if base == "feet":
        y0 = 0.04
        _legs(b, w * 0.8, (d or w) * 0.8, y0, 0.05, (0.2, 0.2, 0.2), True, 0.0)
    elif base == "plinth":
        y0 = b.u(0.03, 0.08)
        b.box((0, y0 / 2, 0), (w * 1.15, y0, (d or w) * 1.1), b.colour())
    elif base == "stand":
        y0 = b.u(0.3, 0.6)
        b.box((0, 0.02, 0), (w * 1.1, 0.04, (d or w) * 1.1), (0.15, 0.15, 0.15))
        b.box((0, y0 / 2, 0), (w * 0.3, y0, w * 0.3), (0.15, 0.15, 0.15))
        b.box((0, y0 - 0.02, 0), (w * 0.9, 0.04, (d or w) * 0.9), (0.15, 0.15, 0.15))
    if kind == "cylinder":
        b.cyl((0, y0 + h / 2, 0), w, h, body_col)
        front = w / 2
    else:
        b.box(
            (0, y0 + h / 2, 0),
            (w, h, d),
            body_col,
            rot=(b.u(-4, 0) if kind == "bookshelf" else 0, 0, 0),
        )
        front = d / 2
    if b.chance(0.2) and kind in ("tower", "bookshelf", "cube"):
        b.ellipsoid((0, y0 + h, 0), (w, b.u(0.08, 0.2), d), body_col)
    if b.chance(0.3) and kind != "cylinder":
        b.box((0, y0 + h / 2, front + 0.02), (w * 0.95, h * 0.95, 0.05), b.colour())
    else:
        face = w if kind != "bar" else h * 4
        n = {
            "tower": b.int(2, 4),
            "bookshelf": b.int(1, 2),
            "cube": 1,
            "cylinder": b.int(1, 2),
            "bar": b.int(2, 4),
        }[kind]
        for k in range(n):
            if kind == "bar":
                x, y, r = -w / 2 + (k + 0.5) * w / n, y0 + h / 2, min(h * 0.8, w / n * 0.8)
            else:
                r = min(face * b.u(0.45, 0.8), h / n * 0.9)
                x, y = 0.0, y0 + h - (k + 0.5) * h / n
                if k == 0 and n > 1 and kind != "cylinder":
                    r *= 0.5
            b.cyl((x, y, front + 0.02), r, 0.05, driver_col, axis="z")
            if b.chance(0.5):
                b.ellipsoid((x, y, front + 0.04), (r * 0.4, r * 0.4, 0.06), driver_col)


def build_telephone(b: Builder) -> None:
    kind = b.pick(["smart", "flip", "bar", "desk", "cordless"], [5, 1.5, 2, 1, 0.7])
    body, accent = b.colour(), b.colour() * 0.5
    if kind in ("smart", "bar"):
        h, w, t = b.u(0.6, 1.0), b.u(0.3, 0.55), b.u(0.07, 0.12)
        lying = b.chance(0.15)
        rot = (-90 if lying else 0, b.u(-10, 10) if lying else 0, 0)
        with b.frame((0, t / 2 if lying else h / 2, 0), rot):
            if b.chance(0.4):
                b.box((0, 0, 0), (w, h - w * 0.4, t), body)
                for sy in (-1, 1):
                    b.cyl((0, sy * (h / 2 - w * 0.2), 0), w, t, body, axis="z", depth=w * 0.4)
            else:
                b.box((0, 0, 0), (w, h, t), body)
            if kind == "smart":
                b.box((0, 0, 0.01), (w * 0.9, h * b.u(0.75, 0.9), t), accent)
                if b.chance(0.5):
                    b.box((w * 0.2, h * 0.35, -t / 2 - 0.02), (w * 0.35, w * 0.2, 0.05), accent)
            else:
                b.box((0, h * 0.2, 0.01), (w * 0.8, h * 0.35, t), accent)
                b.box((0, -h * 0.22, 0.02), (w * 0.75, h * 0.4, t), b.colour())
                if b.chance(0.6):
                    b.cyl((w * 0.3, h / 2 + 0.08, 0), 0.07, 0.16, accent)
    elif kind == "flip":
        h, w, t = b.u(0.4, 0.6), b.u(0.3, 0.5), b.u(0.06, 0.1)
        angle = b.u(15, 60)
        with b.frame((0, 0, 0), (b.u(-10, 10), 0, 0)):
            b.box((0, h / 2, 0), (w, h, t), body)
            with b.frame((0, h, 0), (-angle, 0, 0)):
                b.box((0, h / 2, 0), (w, h, t), body)
                b.box((0, h / 2, 0.01), (w * 0.85, h * 0.7, t), accent)
    else:
        bw, bd, bh = b.u(0.5, 0.9), b.u(0.4, 0.8), b.u(0.12, 0.3)
        b.box((0, bh * 0.25, 0), (bw, bh * 0.5, bd), body)
        b.wedge((0, bh * 0.5 + bh * 0.25, 0), (bw, bh * 0.5, bd), body)
        if kind == "desk":
            hl = bw * b.u(0.95, 1.2)
            with b.frame((0, bh + 0.04, -bd * 0.25), (0, 0, 0)):
                b.box((0, 0, 0), (hl * 0.6, 0.07, 0.1), body)
                for sx in (-1, 1):
                    b.ellipsoid((sx * hl * 0.4, 0, 0), (hl * 0.3, 0.14, 0.16), body)
            b.box((0, bh * 0.8, bd * 0.2), (bw * 0.5, 0.05, bd * 0.3), accent, rot=(20, 0, 0))
        else:
            hh = b.u(0.5, 0.9)
            b.box(
                (0, bh * 0.6 + hh / 2, -bd * 0.2),
                (b.u(0.15, 0.25), hh, 0.1),
                body,
                rot=(-b.u(5, 20), 0, 0),
            )


# ---------------------------------------------------------------------------
# Lamps
# ---------------------------------------------------------------------------


def _shade(b: Builder, centre, r: float, h: float, col) -> None:
    """A lampshade hanging from centre (its top)."""
    x, y, z = centre
    kind = b.pick(["drum", "dome", "cone", "box", "globe"])
    if kind == "drum":
        b.cyl((x, y - h / 2, z), 2 * r, h, col)
    elif kind == "dome":
        b.ellipsoid((x, y - h * 0.3, z), (2 * r, h * 1.2, 2 * r), col)
    elif kind == "cone":
        n = 3
        for k in range(n):
            b.cyl((x, y - (k + 0.5) * h / n, z), 2 * r * (0.55 + 0.45 * (k + 1) / n), h / n, col)
    elif kind == "box":
        b.box((x, y - h / 2, z), (2 * r, h, 2 * r), col)
    else:
        b.ellipsoid((x, y - r, z), (2 * r, 2 * r, 2 * r), col)


def build_lamp(b: Builder) -> None:
    kind = b.pick(["floor", "table", "desk", "pendant", "multi"], [2, 3, 2, 1.2, 1])
    metal, shade_col = b.colour(), b.colour()
    pole = b.u(0.06, 0.09)
    if kind != "pendant":
        base = b.pick(["disk", "box", "dome"])
        br, bh = b.u(0.1, 0.25), b.u(0.03, 0.1)
        if base == "disk":
            b.cyl((0, bh / 2, 0), 2 * br, bh, metal)
        elif base == "box":
            b.box((0, bh / 2, 0), (2 * br, bh, 2 * br * b.u(0.6, 1)), metal)
        else:
            b.ellipsoid((0, 0, 0), (2 * br, 2 * bh * 1.5, 2 * br), metal)
    if kind == "floor":
        ph = b.u(0.8, 1.3)
        with b.frame((0, 0, 0)):
            b.cyl((0, ph / 2, 0), pole, ph, metal)
            _shade(b, (0, ph + b.u(0.05, 0.15), 0), b.u(0.12, 0.25), b.u(0.12, 0.3), shade_col)
    elif kind == "table":
        bh = b.u(0.2, 0.45)
        if b.chance(0.5):
            b.ellipsoid((0, bh * 0.55, 0), (b.u(0.12, 0.3), bh, b.u(0.12, 0.3)), metal)
        else:
            b.cyl((0, bh / 2, 0), b.u(0.06, 0.2), bh, metal)
        stem = b.u(0.05, 0.2)
        b.cyl((0, bh + stem / 2, 0), pole, stem, metal)
        sr, sh = b.u(0.14, 0.3), b.u(0.15, 0.35)
        _shade(b, (0, bh + stem + sh * 0.7, 0), sr, sh, shade_col)
    elif kind == "desk":
        l1, l2 = b.u(0.3, 0.6), b.u(0.25, 0.5)
        a1, a2 = b.u(-30, 30), b.u(50, 120)
        yaw = b.u(0, 360)
        with b.frame((0, 0, 0), (0, yaw, 0)), b.frame((0, 0.03, 0), (a1, 0, 0)):
            b.cyl((0, l1 / 2, 0), pole, l1, metal)
            with b.frame((0, l1, 0), (a2, 0, 0)):
                b.ellipsoid((0, 0, 0), (pole * 1.6,) * 3, metal)
                b.cyl((0, l2 / 2, 0), pole, l2, metal)
                with b.frame((0, l2, 0), (b.u(40, 90), 0, 0)):
                    hr = b.u(0.08, 0.16)
                    if b.chance(0.5):
                        b.cyl((0, hr * 0.5, 0), 2 * hr, hr * b.u(0.8, 1.6), shade_col)
                    else:
                        b.ellipsoid((0, hr * 0.6, 0), (2 * hr, 1.4 * hr, 2 * hr), shade_col)
    elif kind == "pendant":
        cord = b.u(0.3, 0.8)
        b.cyl((0, cord, 0), b.u(0.15, 0.3), 0.05, metal)
        b.cyl((0, cord / 2, 0), pole, cord, metal)
        _shade(b, (0, 0.0, 0), b.u(0.15, 0.35), b.u(0.15, 0.35), shade_col)
    else:
        ph = b.u(0.5, 0.9)
        b.cyl((0, ph / 2, 0), pole, ph, metal)
        n = b.int(2, 4)
        phase = b.u(0, 360)
        reach = b.u(0.15, 0.35)
        for k in range(n):
            with b.frame((0, ph, 0), (0, phase + k * 360 / n, 0)):
                rise = b.u(-0.05, 0.15)
                b.bar((0, 0, 0), (reach, rise, 0), pole, metal, True)
                _shade(b, (reach, rise, 0), b.u(0.06, 0.12), b.u(0.08, 0.16), shade_col)


# ---------------------------------------------------------------------------
# Vehicles and weapons (long along z, front at +z)
# ---------------------------------------------------------------------------


def build_airplane(b: Builder) -> None:
    body, wing_col, accent = b.colour(), b.colour(), b.colour()
    fr = b.u(0.06, 0.1)
    length = 1.0
    if b.chance(0.35):
        b.ellipsoid((0, 0, 0), (2 * fr, 2 * fr, length), body)
    else:
        nose, tail = b.u(0.08, 0.2), b.u(0.15, 0.3)
        b.cyl((0, 0, (tail - nose) / 2), 2 * fr, length - nose - tail, body, axis="z")
        b.ellipsoid((0, 0, length / 2 - nose), (2 * fr, 2 * fr, 2 * nose), body)
        b.ellipsoid((0, fr * 0.3, -length / 2 + tail), (2 * fr * 0.9, 2 * fr * 0.8, 2 * tail), body)
    kind = b.pick(["straight", "swept", "delta"], [1.5, 3, 1])
    wy = b.pick([-0.6, 0.0, 0.6]) * fr
    wz = b.u(-0.12, 0.12)
    wt = b.u(0.03, 0.06)
    if kind == "delta":
        span, chord = b.u(0.5, 0.9), b.u(0.4, 0.65)
        # Each half is a ramp turned on its side: root chord along the fuselage,
        # the tip swept back to the trailing edge.
        for sx in (-1, 1):
            b.wedge(
                (sx * (fr * 0.8 + span / 4), wy, wz - 0.05),
                (wt, span / 2, chord),
                wing_col,
                rot=(0, 0, -90 * sx),
            )
    else:
        span = b.u(0.6, 1.4)
        chord = b.u(0.1, 0.28)
        sweep = b.u(-3, 8) if kind == "straight" else b.u(15, 40)
        dihedral = b.u(-5, 8)
        taper = b.chance(0.5)
        for sx in (-1, 1):
            with b.frame((sx * fr * 0.8, wy, wz), (0, sx * sweep, sx * dihedral)):
                half = span / 2
                if taper:
                    b.box((sx * half * 0.3, 0, 0), (half * 0.6, wt, chord), wing_col)
                    b.box(
                        (sx * half * 0.8, 0, -chord * 0.1),
                        (half * 0.42, wt * 0.8, chord * 0.6),
                        wing_col,
                    )
                else:
                    b.box((sx * half / 2, 0, 0), (half, wt, chord), wing_col)
        n_eng = b.pick([0, 2, 4], [1.2, 2, 0.8])
        er, el = b.u(0.03, 0.06), b.u(0.1, 0.2)
        for k in range(n_eng // 2):
            for sx in (-1, 1):
                x = sx * (fr + span / 2 * (0.3 + 0.35 * k))
                sweep_shift = -np.tan(np.radians(sweep)) * abs(x)
                b.cyl(
                    (x, wy - er - wt / 2, wz + sweep_shift + chord * 0.3),
                    2 * er,
                    el,
                    accent,
                    axis="z",
                )
    # Tail.
    tz = -length / 2 + b.u(0.05, 0.12)
    fin_h, fin_c = b.u(0.1, 0.25), b.u(0.1, 0.2)
    twin = b.chance(0.15)
    xs = (-fr * 1.2, fr * 1.2) if twin else (0.0,)
    for x in xs:
        b.box(
            (x, fr + fin_h / 2 - 0.01, tz), (wt, fin_h, fin_c), wing_col, rot=(-b.u(10, 35), 0, 0)
        )
    if kind != "delta" or b.chance(0.3):
        ts, tc = b.u(0.2, 0.5), b.u(0.07, 0.14)
        ty = fr + fin_h - 0.02 if (b.chance(0.25) and not twin) else b.u(0, 0.5) * fr
        b.box((0, ty, tz - 0.02), (ts, wt * 0.8, tc), wing_col, rot=(0, 0, 0))
    if b.chance(0.2):
        b.cyl((0, 0, length / 2 + 0.01), b.u(0.2, 0.35), 0.04, accent, axis="z")


def build_car(b: Builder) -> None:
    kind = b.pick(
        ["sedan", "hatch", "suv", "pickup", "van", "sports", "truck"], [3, 2, 2, 1.5, 1.2, 1.5, 0.8]
    )
    body, glass, tyre = b.colour(), b.colour() * 0.5 + 0.2, np.array([0.12, 0.12, 0.12])
    length = 1.0
    w = b.u(0.3, 0.56)
    wr = b.u(0.06, 0.16)
    clearance = wr * b.u(0.2, 1.2)
    hb = {
        "sports": b.u(0.09, 0.14),
        "suv": b.u(0.18, 0.26),
        "truck": b.u(0.2, 0.3),
        "van": b.u(0.15, 0.25),
    }.get(kind, b.u(0.1, 0.22))
    b.box((0, clearance + hb / 2, 0), (w, hb, length), body)
    top = clearance + hb
    hc = {"sports": b.u(0.06, 0.1), "van": b.u(0.2, 0.35), "truck": b.u(0.15, 0.3)}.get(
        kind, b.u(0.08, 0.22)
    )
    if kind == "van":
        lc, zc = length * b.u(0.75, 0.9), -length * 0.05
    elif kind in ("pickup", "truck"):
        lc, zc = length * b.u(0.25, 0.4), length * b.u(0.1, 0.25)
    elif kind == "hatch":
        lc, zc = length * b.u(0.45, 0.6), -length * b.u(0.0, 0.15)
    else:
        lc, zc = length * b.u(0.35, 0.55), -length * b.u(-0.05, 0.12)
    cw = w * b.u(0.8, 0.95)
    b.box((0, top + hc / 2, zc), (cw, hc, lc), glass if b.chance(0.3) else body)
    # Sloped windscreen and rear window as ramps.
    ws = b.u(0.08, 0.25) * length
    b.wedge((0, top + hc / 2, zc + lc / 2 + ws / 2), (cw, hc, ws), glass)
    if kind in ("sedan", "sports", "suv") and b.chance(0.8):
        rs = b.u(0.05, 0.2) * length
        b.wedge((0, top + hc / 2, zc - lc / 2 - rs / 2), (cw, hc, rs), glass, rot=(0, 180, 0))
    if kind in ("pickup", "truck") and b.chance(0.7):
        wall = 0.04
        bed_len = length / 2 - (zc - lc / 2) - ws * 0
        bz = -length / 2 + bed_len / 2
        bh = b.u(0.05, 0.12)
        for sx in (-1, 1):
            b.box((sx * (w / 2 - wall / 2), top + bh / 2, bz), (wall, bh, bed_len * 0.9), body)
        b.box((0, top + bh / 2, -length / 2 + wall / 2), (w, bh, wall), body)
    if kind == "truck" and b.chance(0.5):
        cargo = length / 2 - (zc - lc / 2) - 0.03
        ch = hc * b.u(1.0, 1.6)
        b.box((0, top + ch / 2, -length / 2 + cargo / 2), (w, ch, cargo), b.colour())
    axles = [length * b.u(0.28, 0.38), -length * b.u(0.28, 0.38)]
    if kind == "truck" and b.chance(0.6):
        axles.append(axles[1] + 2.2 * wr)
    ww = b.u(0.06, 0.1)
    for z in axles:
        for sx in (-1, 1):
            b.cyl((sx * (w / 2 - ww / 2 + 0.01), wr, z), 2 * wr, ww, tyre, axis="x")
    if kind in ("sedan", "sports") and b.chance(0.25):
        b.box((0, top + 0.05, -length / 2 + 0.04), (w * 0.9, 0.04, 0.08), body)
        for sx in (-1, 1):
            b.box((sx * w * 0.3, top + 0.025, -length / 2 + 0.04), (0.04, 0.05, 0.04), body)
    if kind in ("suv", "van") and b.chance(0.3):
        b.box((0, top + hc + 0.025, zc), (cw * 0.9, 0.05, lc * 0.8), (0.2, 0.2, 0.2))


def build_rifle(b: Builder) -> None:
    metal, wood, dark = b.colour() * 0.6, b.colour(), np.array([0.15, 0.15, 0.15])
    rl, rh, rw = b.u(0.18, 0.35), b.u(0.07, 0.13), b.u(0.05, 0.08)
    rz = b.u(-0.1, 0.05)
    b.box((0, 0, rz), (rw, rh, rl), metal)
    bl, br = b.u(0.25, 0.5), b.u(0.02, 0.035)
    b.cyl((0, rh * 0.2, rz + rl / 2 + bl / 2), 2 * br, bl, metal, axis="z")
    if b.chance(0.3):
        b.cyl((0, rh * 0.2, rz + rl / 2 + bl - 0.03), 4 * br, 0.07, dark, axis="z")
    if b.chance(0.6):
        hl = bl * b.u(0.3, 0.7)
        b.box((0, rh * 0.05, rz + rl / 2 + hl / 2), (rw * 1.05, rh * b.u(0.7, 1.1), hl), wood)
    stock = b.pick(["solid", "wedge", "skeleton", "none"], [3, 2, 1, 0.4])
    sl, drop = b.u(0.2, 0.32), b.u(0, 14)
    with b.frame((0, 0, rz - rl / 2), (-drop, 0, 0)):
        sh = b.u(0.1, 0.2)
        if stock == "solid":
            b.box((0, -sh / 2 + rh / 2, -sl / 2), (rw, sh, sl), wood)
        elif stock == "wedge":
            # Flat on top, deepest at the butt.
            b.wedge((0, -sh / 2 + rh / 2, -sl / 2), (rw, sh, sl), wood, rot=(0, 0, 180))
        elif stock == "skeleton":
            b.box((0, rh / 2 - 0.025, -sl / 2), (0.05, 0.05, sl), metal)
            b.box((0, -sh + rh / 2 + 0.025, -sl / 2), (0.05, 0.05, sl), metal)
            b.box((0, -sh / 2 + rh / 2, -sl + 0.025), (rw, sh, 0.05), metal)
    grip_a = b.u(10, 30)
    b.box((0, -rh / 2 - 0.05, rz - rl * 0.3), (rw * 0.9, 0.12, 0.06), wood, rot=(grip_a, 0, 0))
    mag = b.pick(["box", "curved", "drum", "none"], [3, 1.5, 0.5, 1])
    if mag in ("box", "curved"):
        mh = b.u(0.08, 0.22)
        b.box(
            (0, -rh / 2 - mh / 2, rz + rl * 0.15),
            (rw * 0.8, mh, b.u(0.05, 0.09)),
            dark,
            rot=(-b.u(5, 25) if mag == "curved" else 0, 0, 0),
        )
    elif mag == "drum":
        b.cyl((0, -rh / 2 - 0.06, rz + rl * 0.15), 0.14, rw, dark, axis="x")
    if b.chance(0.5):
        sl2 = b.u(0.15, 0.3)
        b.cyl((0, rh / 2 + 0.06, rz), b.u(0.05, 0.08), sl2, dark, axis="z")
        for s in (-1, 1):
            b.box((0, rh / 2 + 0.02, rz + s * sl2 * 0.3), (0.04, 0.05, 0.04), dark)
    if b.chance(0.2):
        z = rz + rl / 2 + bl * 0.6
        for sx in (-1, 1):
            b.bar((0, 0, z), (sx * 0.08, -0.25, z + 0.04), 0.04, dark)


def build_watercraft(b: Builder) -> None:
    kind = b.pick(["sail", "motor", "ship", "canoe", "submarine"], [2, 2, 2, 1, 0.8])
    hull_col, deck_col, sup_col = b.colour(), b.colour(), b.colour()
    length = 1.0
    beam = b.u(0.15, 0.35) if kind != "canoe" else b.u(0.18, 0.26)
    hh = b.u(0.07, 0.18)
    if kind == "submarine":
        r = b.u(0.1, 0.15)
        b.ellipsoid((0, 0, 0), (2 * r, 2 * r, length), hull_col)
        tl = b.u(0.1, 0.2)
        b.box((0, r + 0.06, b.u(0.0, 0.15)), (0.06, 0.14 + r * 0.3, tl), sup_col)
        for rot in ((0, 0, 0), (0, 0, 90)):
            b.box((0, 0, -length / 2 + 0.06), (0.25, 0.04, 0.08), sup_col, rot=rot)
        return
    if kind == "canoe":
        # Pointed at both ends: a midship block and two half-elliptic ends.
        mid, ch = length * b.u(0.3, 0.5), max(hh, 0.12)
        b.box((0, 0, 0), (beam, ch, mid), hull_col)
        for sz in (-1, 1):
            b.cyl((0, 0, sz * mid / 2), beam, ch, hull_col, depth=length - mid)
        if b.chance(0.5):
            for z in (-0.15, 0.15):
                b.box((0, hh * 0.3, z), (beam * 0.8, 0.04, 0.06), deck_col)
        return
    stern_len = length * b.u(0.55, 0.75)
    bow_len = length - stern_len
    zb = -length / 2 + stern_len / 2
    b.box((0, hh / 2, zb), (beam, hh, stern_len), hull_col)
    b.cyl((0, hh / 2, zb + stern_len / 2), beam, hh, hull_col, depth=2 * bow_len)
    if b.chance(0.5):
        keel = b.u(0.04, 0.08)
        b.box((0, -keel / 2, zb + 0.05), (beam * 0.5, keel, stern_len * 0.8), hull_col)
    b.box((0, hh + 0.01, zb), (beam * 0.95, 0.04, stern_len * 0.95), deck_col)
    top = hh + 0.03
    if kind == "sail":
        masts = b.int(1, 2)
        for k in range(masts):
            mz = zb + stern_len / 2 - (k + 0.4) * stern_len / (masts + 0.5)
            mh = b.u(0.4, 0.9) * (1 - 0.3 * k)
            b.cyl((0, top + mh / 2, mz), 0.045, mh, deck_col)
            if b.chance(0.8):
                sl = b.u(0.15, 0.35)
                b.wedge(
                    (0, top + 0.05 + mh * 0.45, mz - sl / 2),
                    (0.04, mh * 0.85, sl),
                    (0.95, 0.95, 0.92),
                    rot=(0, 180, 0),
                )
            if b.chance(0.5):
                jl = b.u(0.1, 0.25)
                b.wedge(
                    (0, top + mh * 0.4, mz + jl / 2 + 0.03), (0.04, mh * 0.75, jl), (0.9, 0.9, 0.9)
                )
        if b.chance(0.6):
            b.box(
                (0, top + 0.04, zb - stern_len * 0.1), (beam * 0.6, 0.08, stern_len * 0.35), sup_col
            )
    else:
        levels = b.int(1, 3) if kind == "ship" else b.int(1, 2)
        lz = zb + b.u(-0.15, 0.15) * stern_len
        ll, lw = stern_len * b.u(0.3, 0.7), beam * b.u(0.6, 0.9)
        y = top
        for _ in range(levels):
            lh = b.u(0.05, 0.12)
            b.box((0, y + lh / 2, lz), (lw, lh, ll), sup_col)
            y += lh
            ll *= b.u(0.5, 0.85)
            lw *= b.u(0.7, 0.95)
        if kind == "motor" and b.chance(0.6):
            b.wedge((0, top + 0.05, lz + ll + 0.05), (beam * 0.7, 0.1, 0.12), (0.6, 0.7, 0.8))
        if kind == "ship":
            for k in range(b.int(0, 3)):
                fr = b.u(0.05, 0.09)
                fh = b.u(0.08, 0.2)
                b.cyl((0, y + fh / 2 - 0.02, lz - ll / 2 - (k + 0.5) * 0.1), fr * 2, fh, b.colour())
            if b.chance(0.6):
                b.cyl((0, y + 0.1, lz + 0.02), 0.04, 0.2, deck_col)


BUILDERS: dict[str, Callable[[Builder], None]] = {
    "airplane": build_airplane,
    "bench": build_bench,
    "cabinet": build_cabinet,
    "car": build_car,
    "chair": build_chair,
    "display": build_display,
    "lamp": build_lamp,
    "loudspeaker": build_loudspeaker,
    "rifle": build_rifle,
    "sofa": build_sofa,
    "table": build_table,
    "telephone": build_telephone,
    "watercraft": build_watercraft,
}


def _aligned(r: np.ndarray) -> bool:
    """Whether a rotation is within about a degree of a signed axis permutation."""
    return bool((np.abs(r).max(0) > np.cos(np.radians(1.0))).all())


def _snap(scene: Scene) -> Scene:
    """Move the faces of axis-aligned parts onto voxel boundaries.

    Such a part then voxelises exactly, so renders and voxels agree to the pixel
    for boxes, the bulk of most objects; the move is at most half a voxel.
    """
    for p in range(len(scene)):
        if scene.kind[p] == ELLIPSOID or not _aligned(scene.rot[p]):
            continue
        # Within a degree of the axes: square it up, so it voxelises exactly.
        r = scene.rot[p] = np.round(scene.rot[p])
        ext = np.abs(r) @ scene.half[p]
        lo = np.round((scene.centre[p] - ext + 0.5) * 32) / 32 - 0.5
        hi = np.round((scene.centre[p] + ext + 0.5) * 32) / 32 - 0.5
        hi = np.maximum(hi, lo + 3 / 32)
        scene.centre[p] = (lo + hi) / 2
        scene.half[p] = np.abs(r).T @ ((hi - lo) / 2)
    return scene


def _fit(scene: Scene) -> Scene:
    lo, hi = scene.bounds()
    side = float((hi - lo).max())
    return scene.transformed(1.0 / side, -(lo + hi) / 2 / side)


def normalise(scene: Scene) -> Scene:
    """Centre the union's bounds and scale its longest side to 1, keeping parts thick."""
    aligned = np.array([_aligned(r) for r in scene.rot])
    for _ in range(3):
        scene = _fit(scene)
        thin_cyl = (scene.kind == CYLINDER) & (scene.half[:, [0, 2]].max(1) < MIN_ROUND_HALF)
        scene.kind[thin_cyl] = BOX
        curved = (scene.kind == ELLIPSOID) | ((scene.kind == CYLINDER) & ~aligned)
        floor = np.select([curved, ~aligned], [MIN_ROUND_HALF, MIN_TILTED_HALF], MIN_HALF)
        floor = floor[:, None] * np.ones(3)
        thin = scene.half < floor
        if not thin.any():
            break
        # Thickening can push a part out of the cube: refit, slightly over-thick.
        scene.half[thin] = floor[thin] * 1.03
    # A last refit keeps the cube; it shrinks parts by a percent at most.
    return _snap(_fit(scene))


def build(category: str, rng: np.random.Generator) -> Scene:
    """One random object of a category, normalised to the unit cube."""
    b = Builder(rng)
    BUILDERS[category](b)
    return normalise(b.scene())
