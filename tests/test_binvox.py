"""binvox reader and writer: round trips, binvox's axis order, and broken files."""

import numpy as np
import pytest

from shapes.binvox import Binvox, BinvoxError, read_binvox, write_binvox


def header(d: int) -> bytes:
    return f"#binvox 1\ndim {d} {d} {d}\ntranslate 0.1 -0.2 0.3\nscale 1.5\ndata\n".encode()


@pytest.mark.parametrize("d,density", [(32, 0.0), (32, 0.3), (32, 1.0), (8, 0.5), (1, 1.0)])
def test_round_trip(d, density):
    grid = np.random.default_rng(0).random((d, d, d)) < density
    back = read_binvox(write_binvox(Binvox(grid, (0.1, -0.2, 0.3), 1.5)))
    assert back.grid.dtype == bool and back.grid.shape == (d, d, d)
    np.testing.assert_array_equal(back.grid, grid)
    assert back.translate == (0.1, -0.2, 0.3) and back.scale == 1.5


def test_axis_order_is_binvox_xzy():
    # binvox stores x slowest, then z, then y fastest: voxel (x=1, y=2, z=3) of a
    # 4^3 grid is run position 1*16 + 3*4 + 2 = 30.
    data = header(4) + bytes([0, 30, 1, 1, 0, 33])
    grid = read_binvox(data).grid
    assert list(zip(*np.nonzero(grid), strict=True)) == [(1, 2, 3)]
    assert write_binvox(Binvox(grid, (0.1, -0.2, 0.3), 1.5)) == data


def test_long_runs_split_at_255():
    data = write_binvox(np.ones((32, 32, 32), bool))
    body = data[data.index(b"data\n") + 5 :]
    runs = np.frombuffer(body, np.uint8).reshape(-1, 2)
    assert (runs[:, 0] == 1).all() and runs[:, 1].max() == 255 and runs[:, 1].sum() == 32**3


@pytest.mark.parametrize(
    "data,match",
    [
        (b"#binvox 1\ndim 4 4 4\ndata\n" + bytes([0, 30, 1]), "odd number"),
        (b"#binvox 1\ndim 4 4 4\ndata\n" + bytes([0, 30, 1, 1]), "cover 31 voxels"),
        (b"P6 not a voxel file\n", "header ends|no 'data'|not a binvox"),
        (b"#binvox 1\ndim 4 4 2\ndata\n" + bytes([0, 32]), "cubic"),
        (b"#binvox 1\ndim four\ndata\n", "bad header"),
        (b"#binvox 1\ndata\n", "dim"),
        (b"#binvox 1\ndim 2 2 2\ndata\n" + bytes([7, 8]), "0 or 1"),
    ],
)
def test_broken_files_raise(data, match):
    with pytest.raises(BinvoxError, match=match):
        read_binvox(data)
