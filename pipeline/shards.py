"""The shard file: one ``.npz`` per shard, in which every object's grid is its
own compressed member, so that one grid reads without its neighbours.

Layout (a zip archive that ``numpy.load`` opens as it is):

    object_id.npy        str [N]: the ids, in shard order
    g000000.npy ...      uint8 [32, 32, 32] each: grid i = round(p * 255), deflated alone

``encode`` returns the file's bytes and, per grid, where its zip record lies
(``grid_offset``, ``grid_bytes``), which the manifest keeps; ``read_grid`` then
fetches just that byte range (one storage request of about the grid's
compressed size, on local disk or through fsspec's range reads on S3) and
inflates it. ``read_shard`` reads a whole shard; it also reads the earlier
layout (one ``probabilities`` array of all grids). This module must never put
an ``object_id`` into a path or a member name, and never import TensorFlow or Ray.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Mapping
from io import BytesIO
from typing import Any

import numpy as np

from model.voxels import GRID, GRID_BYTES
from pipeline import io

IDS = "object_id"
OLD_GRIDS = "probabilities"  # the layout before one member per grid
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # a zip local file header, 30 bytes
_LOCAL_SIGNATURE = b"PK\x03\x04"


def _npy_header() -> bytes:
    """The ``.npy`` header of one uint8 grid: the same bytes for every grid."""
    buffer = BytesIO()
    np.lib.format.write_array(buffer, np.zeros(GRID, np.uint8), allow_pickle=False)
    return buffer.getvalue()[:-GRID_BYTES]


NPY_HEADER = _npy_header()


def member(index: int) -> str:
    """The zip member name of grid ``index`` (``np.load(shard)[name[:-4]]``)."""
    return f"g{index:06d}.npy"


def _entry(name: str) -> zipfile.ZipInfo:
    """A member with a fixed date (zip's epoch), so that the same rows always
    make the same bytes: a shard is named by its bytes' digest, and a member
    stamped with the time of writing would give a retry of the same rows a
    shard of its own whenever it crossed zip's 2-second clock."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def encode(object_ids: list[str], grids: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A shard's bytes, and each grid's zip record: ``(data, offsets int64 [N],
    lengths int32 [N])``; ``grids`` is ``uint8 [N, 32, 32, 32]`` or ``[N * 32768]``."""
    grids = np.ascontiguousarray(grids, dtype=np.uint8).reshape(-1, GRID_BYTES)
    if len(grids) != len(object_ids):
        raise ValueError("every object in a shard needs its grid")
    buffer = BytesIO()
    ids = BytesIO()
    np.lib.format.write_array(ids, np.asarray(object_ids, dtype=np.str_), allow_pickle=False)
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(_entry(f"{IDS}.npy"), ids.getvalue())
        for i, grid in enumerate(grids):
            archive.writestr(_entry(member(i)), NPY_HEADER + grid.tobytes())
        records = archive.infolist()[1:]
    offsets = np.array([r.header_offset for r in records], np.int64)
    lengths = np.array(
        [
            _LOCAL_HEADER.size + len(r.filename.encode()) + len(r.extra) + r.compress_size
            for r in records
        ],
        np.int32,
    )
    return buffer.getvalue(), offsets, lengths


def decode_record(record: bytes | memoryview) -> np.ndarray:
    """One grid ``uint8 [32, 32, 32]`` from its zip record (local header + the
    deflated ``.npy``; anything after the record is ignored)."""
    fields = _LOCAL_HEADER.unpack_from(record)
    if fields[0] != _LOCAL_SIGNATURE:
        raise ValueError("not a zip record: the manifest's grid_offset does not match the shard")
    method, compressed, name_length, extra_length = fields[3], fields[7], fields[9], fields[10]
    start = _LOCAL_HEADER.size + name_length + extra_length
    data = record[start : start + compressed]
    raw = zlib.decompress(data, -15) if method == zipfile.ZIP_DEFLATED else bytes(data)
    if len(raw) != len(NPY_HEADER) + GRID_BYTES or raw[: len(NPY_HEADER)] != NPY_HEADER:
        return np.load(BytesIO(raw), allow_pickle=False)  # not one of ours: let numpy parse it
    return np.frombuffer(raw, np.uint8, offset=len(NPY_HEADER)).reshape(GRID)


def read_grid(
    url: str, offset: int, length: int, storage_options: Mapping[str, Any] | None = None
) -> np.ndarray:
    """Grid ``uint8 [32, 32, 32]`` of the shard at ``url`` whose zip record is
    ``length`` bytes at ``offset`` (the manifest's ``grid_offset``, ``grid_bytes``)."""
    fs, path = io.filesystem(url, storage_options)
    return decode_record(fs.cat_file(path, start=int(offset), end=int(offset) + int(length)))


def read_shard(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """A whole shard: ``{"object_id": str [N], "probabilities": uint8 [N, 32, 32, 32]}``."""
    return parse_shard(io.read_bytes(url, storage_options))


def parse_shard(data: bytes) -> dict[str, np.ndarray]:
    """:func:`read_shard` on a shard's bytes. The grid members are inflated
    straight from the buffer (``np.load`` member by member is 2x slower)."""
    with zipfile.ZipFile(BytesIO(data)) as archive:
        records = archive.infolist()
        with archive.open(f"{IDS}.npy") as f:
            ids = np.load(f, allow_pickle=False)
        if any(r.filename == f"{OLD_GRIDS}.npy" for r in records):
            with archive.open(f"{OLD_GRIDS}.npy") as f:
                return {IDS: ids, OLD_GRIDS: np.load(f, allow_pickle=False)}
    grids = np.empty((len(ids), GRID_BYTES), np.uint8)
    position = {r.filename: r for r in records}
    view = memoryview(data)
    for i in range(len(ids)):
        record = position[member(i)]
        grids[i] = decode_record(view[record.header_offset :]).reshape(-1)
    return {IDS: ids, OLD_GRIDS: grids.reshape(-1, *GRID)}
