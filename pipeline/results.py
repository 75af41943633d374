"""Reading a job's output, for downstream users and for the job itself:
``read_manifests`` gathers every committed manifest into one Arrow table, and
``load_grid`` fetches one object's grid from its shard. Only manifests are read
to find rows, so a shard left behind by a crashed task (written, never
committed) is invisible. This module must never write, and never import
TensorFlow or Ray.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import io
from pipeline.layout import MANIFEST_SCHEMA, MANIFESTS

_SHARD_CACHE: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
_SHARD_CACHE_SIZE = 4


def manifest_urls(url: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """URLs of the committed manifests under an output URL, sorted."""
    return io.list_files(io.join(url, MANIFESTS), ".parquet", storage_options)


def read_manifest(
    url: str, columns: list[str] | None = None, storage_options: Mapping[str, Any] | None = None
) -> pa.Table:
    """One manifest file as a table."""
    fs, path = io.filesystem(url, storage_options)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


def read_manifests(
    url: str,
    columns: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    threads: int = 16,
) -> pa.Table:
    """Every manifest row under the output ``url`` as one table.

    Manifests written by reruns with different carried columns are combined,
    missing columns becoming nulls. An output with no manifests gives an empty
    table with the manifest's own columns.

    Example:
        >>> table = read_manifests("s3://bucket/grids")
        >>> ok = table.filter(pc.equal(table["status"], "ok"))
    """
    urls = manifest_urls(url, storage_options)
    if not urls:
        schema = MANIFEST_SCHEMA
        if columns is not None:
            schema = pa.schema([f for f in MANIFEST_SCHEMA if f.name in columns])
        return schema.empty_table()
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(urls)))) as pool:
        tables = list(pool.map(lambda u: read_manifest(u, columns, storage_options), urls))
    return pa.concat_tables(tables, promote_options="permissive")


def load_shard(
    url: str, shard: str, storage_options: Mapping[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """The arrays of one shard (``object_id``, ``probabilities``); the last few
    shards read are kept in memory, since rows of a shard are usually read together."""
    key = io.join(url, shard)
    if key in _SHARD_CACHE:
        _SHARD_CACHE.move_to_end(key)
        return _SHARD_CACHE[key]
    data = io.read_bytes(key, storage_options)
    with np.load(BytesIO(data), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    _SHARD_CACHE[key] = arrays
    while len(_SHARD_CACHE) > _SHARD_CACHE_SIZE:
        _SHARD_CACHE.popitem(last=False)
    return arrays


def load_grid(
    url: str,
    manifest_row: Mapping[str, Any] | pa.Table,
    storage_options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """The ``uint8 [32, 32, 32]`` grid (round(p * 255)) of one ok manifest row.

    Args:
        url: the output URL the manifest was read from.
        manifest_row: a row as a dict (``table.to_pylist()[i]``) or a one-row table.
        storage_options: fsspec options for ``url``.

    Raises:
        ValueError: the row is not ok, or its shard disagrees with the manifest.
    """
    if isinstance(manifest_row, pa.Table):
        if manifest_row.num_rows != 1:
            raise ValueError(f"expected one manifest row, got {manifest_row.num_rows}")
        manifest_row = manifest_row.to_pylist()[0]
    if manifest_row.get("status") != "ok" or manifest_row.get("shard") is None:
        raise ValueError(
            f"object {manifest_row.get('object_id')!r} has no grid: "
            f"status {manifest_row.get('status')!r}, error {manifest_row.get('error')!r}"
        )
    arrays = load_shard(url, manifest_row["shard"], storage_options)
    index = int(manifest_row["index"])
    if str(arrays["object_id"][index]) != manifest_row["object_id"]:
        raise ValueError(
            f"shard {manifest_row['shard']} holds {arrays['object_id'][index]!r} at "
            f"index {index}, the manifest says {manifest_row['object_id']!r}"
        )
    return np.array(arrays["probabilities"][index], dtype=np.uint8)
