"""Reader and writer of binvox files (ShapeNetVox32's `model.binvox`).

Format (Patrick Min's binvox): an ASCII header
`#binvox 1`, `dim D D D`, `translate tx ty tz`, `scale s`, `data`, then
run-length pairs of bytes (value 0/1, count 1..255) covering D^3 voxels. The
runs are in binvox's order, in which y runs fastest, then z, then x: flat index
`x * D*D + z * D + y`. This module converts to and from voxray's convention,
`grid[x, y, z]` (y up), so a caller never sees binvox's order. It must never
return a grid whose voxel count does not match its header: a short or long run
stream is an error, not a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class BinvoxError(ValueError):
    """A file that is not a well-formed binvox file."""


@dataclass
class Binvox:
    """A binvox grid in voxray's axis order, grid[x, y, z], plus its placement."""

    grid: np.ndarray  # bool [D, D, D]
    translate: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0


def read_binvox(data: bytes) -> Binvox:
    """Parse binvox bytes into grid[x, y, z]."""
    pos, dims, translate, scale = 0, None, (0.0, 0.0, 0.0), 1.0
    lines = []
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise BinvoxError("header ends before the 'data' line")
        line = data[pos:end].strip()
        pos = end + 1
        lines.append(line)
        if line == b"data":
            break
        if len(lines) > 16:
            raise BinvoxError("header has no 'data' line in its first 16 lines")
    if not lines[0].startswith(b"#binvox"):
        raise BinvoxError(f"not a binvox file (first line {lines[0][:20]!r})")
    try:
        for line in lines[1:-1]:
            key, *vals = line.decode("ascii").split()
            if key == "dim":
                dims = tuple(int(v) for v in vals)
            elif key == "translate":
                translate = tuple(float(v) for v in vals)
            elif key == "scale":
                scale = float(vals[0])
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        raise BinvoxError(f"bad header line: {e}") from e
    if dims is None or len(dims) != 3 or min(dims) <= 0:
        raise BinvoxError(f"bad or missing dim line: {dims}")
    if len(set(dims)) != 1:
        raise BinvoxError(f"only cubic grids are supported, got dim {dims}")
    body = np.frombuffer(data, dtype=np.uint8, offset=pos)
    if len(body) % 2:
        raise BinvoxError("run-length data has an odd number of bytes (truncated?)")
    values, counts = body[0::2], body[1::2].astype(np.int64)
    total = int(counts.sum())
    n = dims[0] ** 3
    if total != n:
        raise BinvoxError(f"run lengths cover {total} voxels, header says {n}")
    if (values > 1).any():
        raise BinvoxError("run values must be 0 or 1")
    d = dims[0]
    flat = np.repeat(values.astype(bool), counts)
    # binvox order is [x, z, y]; voxray's is [x, y, z].
    grid = flat.reshape(d, d, d).transpose(0, 2, 1)
    return Binvox(np.ascontiguousarray(grid), translate, scale)


def write_binvox(vox: Binvox | np.ndarray) -> bytes:
    """binvox bytes of grid[x, y, z] (a Binvox or a bare bool array)."""
    if isinstance(vox, np.ndarray):
        vox = Binvox(vox)
    grid = np.asarray(vox.grid, dtype=bool)
    if grid.ndim != 3 or len(set(grid.shape)) != 1:
        raise BinvoxError(f"need a cubic 3-D grid, got shape {grid.shape}")
    d = grid.shape[0]
    flat = grid.transpose(0, 2, 1).ravel().astype(np.uint8)
    # Runs: boundaries where the value changes, then split runs longer than 255.
    change = np.flatnonzero(np.diff(flat)) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [len(flat)]]))
    out = bytearray()
    for s, length in zip(starts, lengths, strict=True):
        v = flat[s]
        while length > 0:
            step = min(int(length), 255)
            out += bytes((v, step))
            length -= step
    tx, ty, tz = vox.translate
    header = f"#binvox 1\ndim {d} {d} {d}\ntranslate {tx} {ty} {tz}\nscale {vox.scale}\ndata\n"
    return header.encode("ascii") + bytes(out)
