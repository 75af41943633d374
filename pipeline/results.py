"""Reading a job's output, for analysts and for the job itself. ``Output(url)``
answers the usual questions in one place: which rows (``manifests``, ``select``,
``sql`` through DuckDB), whose grid (``grid``, ``grids``, by ``object_id`` or by
manifest row), and what went in (``views``, ``truth``, read from the catalog the
job read). ``read_manifests`` gathers every committed manifest into one Arrow
table, and every other answer is built on it, so rows are always found through
the commit record: a shard left behind by a crashed task is invisible. Grids are
read through ``pipeline.shards`` (one range read per grid where the manifest
says where it lies, the whole shard otherwise).

This module must never write, and never import TensorFlow or Ray; DuckDB is
imported only when SQL is asked for, so that importing it stays cheap. (The
first read of the manifests imports ``pyarrow.dataset``, and with it pandas,
through ``pyarrow.parquet``'s reader: about half a second, once.)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import reduce
from operator import and_
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from model import images, voxels
from pipeline import index as output_index
from pipeline import io, shards, summary
from pipeline.layout import MANIFEST_SCHEMA, OK, RUNS, SHARDS, SUCCESS, error_kind

if TYPE_CHECKING:
    import duckdb
    import pandas
    import polars
    import pyarrow.dataset as ds

# What finding and reading a grid needs from a manifest row.
LOCATOR = ["object_id", "status", "error", "shard", "index", "grid_offset", "grid_bytes"]
_SHARD_CACHE: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
_SHARD_CACHE_SIZE = 4
_SHARD_CACHE_LOCK = threading.Lock()
_SHOWN_IDS = 5  # ids named in an error message
LIST_ATTEMPTS = 5  # listings of an output a read tries before a missing file is an error
# What an analyst's install lacks, and the line that installs it.
INSTALL_HINT = (
    "pip install -e '.[output]' in a voxray checkout (the job's install), or for the "
    "reader alone: pip install --no-deps -e . && pip install -r requirements-reader.txt"
)


class DuplicateIdError(LookupError):
    """An ``object_id`` with several manifest (or catalog) rows, asked for as one."""


class FailedRowError(ValueError):
    """A manifest row that has no grid: its input row failed, for the reason given."""


def read_manifests(
    url: str,
    columns: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    threads: int = 16,
    *,
    filter: pc.Expression | None = None,
) -> pa.Table:
    """Every manifest row under the output ``url`` as one table.

    Manifests written by reruns with different carried columns are combined,
    missing columns becoming nulls; requested ``columns`` that no manifest has
    are left out. An output with no manifests gives an empty table with the
    manifest's own columns.

    Args:
        url: the output URL.
        columns: the columns to read (all by default).
        storage_options: fsspec options for ``url``.
        threads: manifests read at once.
        filter: a ``pyarrow.compute`` expression; only rows that pass it are
            returned. It is pushed into each manifest's Parquet reader (row
            groups whose statistics exclude it are not read), and may name
            columns that are not in ``columns``. A row of a manifest that lacks
            a column the filter names sees it as null.

    Example:
        >>> table = read_manifests("s3://bucket/grids")
        >>> ok = table.filter(pc.equal(table["status"], "ok"))
        >>> chairs = read_manifests("s3://bucket/grids", filter=pc.field("category") == "chair")
    """
    wanted = columns
    if columns is not None and "error_kind" in columns and "error" not in columns:
        wanted = [*columns, "error"]  # an older manifest's kinds come from its reasons
    table = _listed_again(
        lambda: output_index.read_table(
            output_index.state(url, storage_options),
            wanted,
            storage_options,
            filters=filter,
            threads=threads,
        )
    )
    table = _with_error_kinds(table)
    return table if wanted is columns else table.drop_columns(["error"])


def _listed_again(read: Callable[[], Any], attempts: int = LIST_ATTEMPTS) -> Any:
    """``read()``, listed and read again when a file it listed is gone when it
    is opened: a running job's index fold merges small parts into a larger one
    and then removes them, so a reader can list a part that is gone a moment
    later. The next listing finds the merged part (written before the others
    are removed), so no row is lost or read twice; a file still missing after
    ``attempts`` listings is a real loss and raised."""
    for attempt in range(attempts):
        try:
            return read()
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _with_error_kinds(table: pa.Table) -> pa.Table:
    """``error_kind`` filled from ``error`` where an older voxray left it null."""
    if "error_kind" not in table.column_names or "error" not in table.column_names:
        return table
    kinds, errors = table.column("error_kind"), table.column("error")
    if kinds.null_count == errors.null_count:
        return table
    filled = [
        k or error_kind(e) for k, e in zip(kinds.to_pylist(), errors.to_pylist(), strict=True)
    ]
    position = table.column_names.index("error_kind")
    return table.set_column(position, "error_kind", pa.array(filled, pa.string()))


def load_shard(
    url: str, shard: str, storage_options: Mapping[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """The arrays of one whole shard (``object_id``, ``probabilities``); the last
    few shards read are kept in memory, since rows of a shard are usually read together."""
    key = io.join(url, _checked_shard(shard))
    with _SHARD_CACHE_LOCK:
        if key in _SHARD_CACHE:
            _SHARD_CACHE.move_to_end(key)
            return _SHARD_CACHE[key]
    arrays = shards.read_shard(key, storage_options)
    with _SHARD_CACHE_LOCK:
        _SHARD_CACHE[key] = arrays
        while len(_SHARD_CACHE) > _SHARD_CACHE_SIZE:
            _SHARD_CACHE.popitem(last=False)
    return arrays


def load_grid(
    url: str,
    row: str | Mapping[str, Any] | pa.Table,
    storage_options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """The ``uint8 [32, 32, 32]`` grid (round(p * 255)) of one object: by its
    ``object_id`` or by its manifest row (a dict, or a one-row table).
    ``Output(url, storage_options).grid(row)``; see :meth:`Output.grid`."""
    return Output(url, storage_options).grid(row)


def decode_view(
    data: bytes, size: int | None = None, crop: bool = False, max_pixels: int = images.MAX_PIXELS
) -> np.ndarray:
    """One encoded input view as ``uint8 [S, S, 3]``, as the job prepared it:
    composited over the model's background and padded to a square of side
    ``S`` (``size``, else the image's longer side); with ``crop`` also the
    model's 127/137 centre crop, i.e. what the model saw, up to resizing.

    Raises:
        model.images.DecodeError: the view cannot be decoded (the row's reason).
    """
    rgba = images.read_rgba(data, max_pixels)
    side = size or max(rgba.shape[:2])
    fraction = images.CROP_FRACTION if crop else 1.0
    return images.to_model_input(rgba, side, crop_fraction=fraction)


class Output:
    """A job's output, read-only: its manifests, grids and, through the catalog
    the job read, its inputs.

    Lookups by ``object_id`` read the manifests with the id pushed down as a
    filter, once per call: to read many grids, pass them all to :meth:`grids`.
    An id may have several rows (a catalog that repeats it gets one manifest
    row per input row); asking for it as one object (:meth:`row`, :meth:`grid`,
    :meth:`views`, :meth:`truth`) then raises :class:`DuplicateIdError`: pick a
    row from :meth:`rows` and pass that row instead.

    Args:
        url: the output URL (local path, ``file://`` or ``s3://``).
        storage_options: fsspec options for the output and the catalog; S3
            settings also come from the standard AWS variables.
        catalog: the Parquet catalog (file or folder) the job read, for
            :meth:`views`, :meth:`truth` and the ``catalog`` table in :meth:`sql`.
            By default, the job's ``--input`` as its ``_SUCCESS`` records it.
        threads: storage reads in flight at once.

    Example:
        >>> out = Output("outputs/demo")
        >>> worst = out.select(worst=5)                # the 5 rows of lowest IoU
        >>> grids = out.grids(worst)                   # uint8 [5, 32, 32, 32]
        >>> out.sql("select category, avg(iou) from manifests group by 1").show()
    """

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        catalog: str | None = None,
        threads: int = 16,
    ):
        self.url = url
        self.storage_options = dict(storage_options or {})
        self._catalog = catalog
        self.threads = threads
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._catalog_dataset: ds.Dataset | None = None

    def __repr__(self) -> str:
        return f"Output({self.url!r}, catalog={self._catalog!r})"

    # --- the manifests -------------------------------------------------------

    def manifests(
        self, columns: list[str] | None = None, filter: pc.Expression | None = None
    ) -> pa.Table:
        """Manifest rows as an Arrow table: ``columns`` (all by default) of the
        rows passing ``filter`` (a ``pyarrow.compute`` expression, pushed into
        the Parquet reader). See :func:`read_manifests`."""
        return read_manifests(self.url, columns, self.storage_options, self.threads, filter=filter)

    def to_pandas(
        self, columns: list[str] | None = None, filter: pc.Expression | None = None
    ) -> pandas.DataFrame:
        """The manifest rows as a pandas DataFrame, one row per input row: the one
        safe way to read the whole output into pandas (a glob over every
        ``*.parquet`` under the output counts each row twice: manifests and index).
        Same arguments as :meth:`manifests`."""
        optional("pandas", "Output.to_pandas")
        return self.manifests(columns, filter).to_pandas()

    def to_polars(
        self, columns: list[str] | None = None, filter: pc.Expression | None = None
    ) -> polars.DataFrame:
        """The manifest rows as a Polars DataFrame (Polars is not installed by
        voxray: ``pip install polars``). See :meth:`to_pandas`."""
        return optional("polars", "Output.to_polars").from_arrow(self.manifests(columns, filter))

    def status(self) -> dict[str, Any]:
        """``{"rows_ok", "rows_failed", "models"}`` over the whole output, from the
        index's footers (and any manifest not folded yet): no row is read.

        With them, as of the last run or prune that counted them (named under
        ``as_of``: its end time and kind; None before any did), ``rows_stale``
        (committed rows of input files that no longer exist; ``jobs/prune.py``
        drops them), ``duplicate_ids`` and ``duplicate_ids_across_files``
        (object ids with more than one row, and those with rows from different
        input files); each None when no run counted it."""
        counts = _listed_again(lambda: output_index.state(self.url, self.storage_options).counts())
        record = summary.last_record(self.url, self.storage_options, "rows_stale")
        counts["as_of"] = (
            f"{record.get('kind', 'run')} ended {record.get('ended')}" if record else None
        )
        for key in ("rows_stale", "duplicate_ids", "duplicate_ids_across_files"):
            counts[key] = record.get(key)
        return counts

    def by_category(self) -> pa.Table:
        """Rows, ok rows and mean IoU per ``category`` over the whole output (the
        index's ``category``, ``status`` and ``iou`` columns)."""
        table = self.manifests(["category", "status", "iou"])
        if "category" not in table.column_names:
            raise ValueError("the manifests have no 'category' column (the job's input had none)")
        ok = pc.cast(pc.equal(table["status"], OK), pa.int64())
        table = table.append_column("ok", ok)
        return (
            table.group_by("category")
            .aggregate([("status", "count"), ("ok", "sum"), ("iou", "mean")])
            .rename_columns(["category", "rows", "ok", "mean_iou"])
            .sort_by("category")
        )

    def success(self) -> dict[str, Any] | None:
        """The job's ``_SUCCESS`` summary, or None while no run has completed."""
        url = io.join(self.url, SUCCESS)
        try:
            return json.loads(io.read_bytes(url, self.storage_options))
        except FileNotFoundError:
            return None

    def rows(self, object_ids: str | Iterable[str], columns: list[str] | None = None) -> pa.Table:
        """Every manifest row of these ids (one id or several), in manifest order;
        an id may have several rows, and an unknown id has none."""
        ids = [object_ids] if isinstance(object_ids, str) else list(object_ids)
        return self.manifests(columns, pc.field("object_id").isin(ids))

    def row(self, object_id: str) -> dict[str, Any]:
        """The one manifest row of ``object_id``.

        Raises:
            KeyError: no row has this id.
            DuplicateIdError: several rows have it; choose one from :meth:`rows`.
        """
        found = self.rows(object_id).to_pylist()
        _check_found([object_id], found, self.url)
        return found[0]

    def select(
        self,
        ids: Iterable[str] | None = None,
        where: str | None = None,
        worst: int | None = None,
        category: str | None = None,
        limit: int | None = None,
    ) -> pa.Table:
        """Manifest rows chosen as the output tools choose them; criteria combine (AND).

        Args:
            ids: rows of these object ids (every row of each, ok or failed), in
                the order given. An id with no row raises ``KeyError``.
            where: a SQL condition over the manifest's columns, evaluated by
                DuckDB, e.g. ``"iou < 0.5 and n_views >= 3"``.
            worst: the ``worst`` ok rows of lowest ``iou`` (rows without ground
                truth are left out), lowest first.
            category: rows whose carried ``category`` column is this.
            limit: at most this many rows, the first ones.

        Returns:
            full manifest rows; ordered as ``ids``, or by ``iou`` with ``worst``,
            else by ``object_id``.

        Raises:
            KeyError: an id in ``ids`` has no manifest row.
            ValueError: ``category`` with no ``category`` column, ``worst`` on an
                output without ground truth, a bad ``where``.
        """
        filters = []
        if ids is not None:
            ids = list(dict.fromkeys(ids))
            filters.append(pc.field("object_id").isin(ids))
        if category is not None:
            filters.append(pc.field("category") == category)
        if worst is not None:
            filters += [pc.field("status") == OK, pc.field("iou").is_valid()]
        expression = reduce(and_, filters) if filters else None
        try:
            table = self.manifests(filter=expression)
        except ValueError:
            if category is None or "category" in self.manifests(["category"]).column_names:
                raise
            table = MANIFEST_SCHEMA.empty_table()
        if category is not None and "category" not in table.column_names:
            raise ValueError(
                "the manifests have no 'category' column (the job's input had none): "
                "select with a SQL condition instead"
            )
        if ids is not None:
            found = set(table.column("object_id").to_pylist())
            missing = [i for i in ids if i not in found]
            if missing:
                raise KeyError(_unknown(missing, self.url))
        if where is not None:
            table = _where(table, where)
        if worst is not None:
            if worst < 0:
                raise ValueError(f"worst must be >= 0, got {worst}")
            if table.num_rows == 0 and not self._has_truth():
                raise ValueError(
                    "no ok row has an iou: this output's input had no ground truth (voxels)"
                )
            table = table.sort_by([("iou", "ascending"), ("object_id", "ascending")])
            table = table.slice(0, worst)
        elif ids is not None:
            order = {object_id: k for k, object_id in enumerate(ids)}
            rank = [order[i] for i in table.column("object_id").to_pylist()]
            table = table.take(pa.array(np.argsort(rank, kind="stable")))
        else:
            table = _sorted_by_id(table)
        if limit is not None:
            table = table.slice(0, max(0, limit))
        return table

    def _has_truth(self) -> bool:
        iou = self.manifests(["iou"], pc.field("iou").is_valid())
        return iou.num_rows > 0

    # --- SQL -----------------------------------------------------------------

    def connection(self) -> duckdb.DuckDBPyConnection:
        """This reader's in-memory DuckDB connection (made on first use)."""
        if self._connection is None:
            self._connection = _duckdb().connect()
        return self._connection

    def duckdb(
        self,
        columns: list[str] | None = None,
        filter: pc.Expression | None = None,
    ) -> duckdb.DuckDBPyRelation:
        """The manifests (``columns`` of the rows passing ``filter``, read now)
        as a DuckDB relation, for DuckDB's relational API:
        ``out.duckdb().filter("iou < 0.5").aggregate("category, count(*)")``."""
        return self.connection().from_arrow(self.manifests(columns, filter))

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """Run SQL over the table ``manifests`` (every manifest row, read now) and,
        when the query names it, ``catalog`` (the job's input, scanned lazily:
        only the columns the query names are read, its filters pushed down).

        Example:
            >>> out.sql("select status, count(*) from manifests group by 1").show()
            >>> out.sql("select m.object_id, m.iou, c.category from manifests m "
            ...         "join catalog c using (object_id) order by m.iou limit 5").df()
        """
        connection = self.connection()
        connection.register("manifests", self.manifests())
        unavailable = None
        if re.search(r"\bcatalog\b", query, re.IGNORECASE):
            try:
                connection.register("catalog", self.catalog_dataset())
            except (ValueError, OSError) as exc:  # said only if the query needs it
                unavailable = exc
        try:
            return connection.sql(query)
        except _duckdb().CatalogException as exc:
            if unavailable is not None and "catalog" in str(exc):
                raise ValueError(f"the query reads the catalog: {unavailable}") from exc
            raise

    # --- two runs ------------------------------------------------------------

    def compare(self, other: Output, on: str | None = None) -> pa.Table:
        """Per-object changes from this output (``_a``) to ``other`` (``_b``): one
        row per object found in both, its ``row_key`` in each (``row_key``,
        ``row_key_b``), with ``status``, ``iou``, ``occupied_voxels`` and
        ``threshold`` of each, ``iou_delta`` and ``occupied_delta`` (b - a,
        null where either lacks it), and the carried ``category`` and this run's
        ``n_views``, ordered by the largest change (``|iou_delta|``, else
        ``|occupied_delta|``) first.

        Rows are paired by their identity (``row_key``, the input row's position)
        when both outputs read the same catalog; otherwise by ``object_id``, which
        must then be unique in both.

        Args:
            other: the second output (a rerun with other weights or threshold).
            on: ``"row_key"`` or ``"object_id"``; by default ``row_key`` when the
                two outputs share row keys, else ``object_id``.

        Raises:
            ValueError: pairing by ``object_id`` where an id has several rows
                (named), or no object in common.
        """
        measured = ["status", "iou", "occupied_voxels", "threshold"]
        a = self.manifests(["object_id", "row_key", "category", "n_views", *measured])
        b = other.manifests(["object_id", "row_key", *measured])
        if on is None:
            shared = set(a.column("row_key").to_pylist()) & set(b.column("row_key").to_pylist())
            on = "row_key" if shared else "object_id"
        if on not in ("row_key", "object_id"):
            raise ValueError(f"on must be 'row_key' or 'object_id', got {on!r}")
        if on == "object_id":
            for url, table in ((self.url, a), (other.url, b)):
                counts = pc.value_counts(table.column("object_id")).to_pylist()
                repeated = {c["values"]: c["counts"] for c in counts if c["counts"] > 1}
                if repeated:
                    shown = ", ".join(f"{i!r} has {n} rows" for i, n in list(repeated.items())[:5])
                    raise ValueError(
                        f"cannot pair {self.url} and {other.url} by object_id: in {url}, "
                        f"{shown} (and the outputs share no row_key: other catalogs)"
                    )
        a = a.rename_columns([f"{c}_a" if c in measured else c for c in a.column_names])
        b = b.rename_columns(
            [f"{c}_b" if c in (*measured, "row_key") else c for c in b.column_names]
        )
        if on == "row_key":
            b = b.drop_columns(["object_id"]).append_column("row_key", b["row_key_b"])
        joined = a.join(b, on, join_type="inner")
        if joined.num_rows == 0:
            raise ValueError(f"{self.url} and {other.url} have no object in common (by {on})")
        iou = pc.subtract(joined["iou_b"], joined["iou_a"])
        occupied = pc.subtract(joined["occupied_voxels_b"], joined["occupied_voxels_a"])
        joined = joined.append_column("iou_delta", iou).append_column("occupied_delta", occupied)
        # the largest change first: IoU's where both have it, else occupancy's
        # (scaled below any IoU change), rows with neither last
        change = pc.if_else(
            pc.is_valid(iou),
            pc.abs(pc.cast(iou, pa.float64())),
            pc.divide(pc.cast(pc.abs(occupied), pa.float64()), 1e9),
        )
        ranked = joined.append_column("change", pc.fill_null(change, -1.0))
        ranked = ranked.sort_by([("change", "descending"), ("object_id", "ascending")])
        return ranked.drop_columns(["change"])

    # --- grids ---------------------------------------------------------------

    def grid(self, row: str | Mapping[str, Any] | pa.Table) -> np.ndarray:
        """One object's grid, ``uint8 [32, 32, 32]`` = round(p * 255), by its
        ``object_id`` or by its manifest row (a dict, or a one-row table).

        Occupancy at the run's threshold is ``model.voxels.occupied(grid,
        row["threshold"])``, whose count is the manifest's ``occupied_voxels``.

        Raises:
            KeyError: no row has this id.
            DuplicateIdError: several rows have it; pass one of :meth:`rows` instead.
            FailedRowError: the row failed (the message says why).
            ValueError: the shard disagrees with the manifest row.
        """
        if isinstance(row, pa.Table) and row.num_rows != 1:
            raise ValueError(f"expected one manifest row, got {row.num_rows}")
        return self.grids(row if isinstance(row, pa.Table) else [row])[0]

    def grids(self, rows: Iterable[str | Mapping[str, Any]] | pa.Table) -> np.ndarray:
        """Grids ``uint8 [N, 32, 32, 32]`` in the order asked, by ``object_id`` or by
        manifest row (a table of rows, e.g. from :meth:`select`, or a list of ids
        and row dicts). Ids are looked up in one filtered manifest read. Each
        grid is one range read where the manifest holds ``grid_offset`` and
        ``grid_bytes``, else its whole shard is read once for all its rows; the
        reads run ``threads`` at a time.

        Raises:
            as :meth:`grid`, naming every id concerned.
        """
        located = self._locate(rows)
        out = np.empty((len(located), *voxels.GRID), np.uint8)
        ranged: list[int] = []
        whole: dict[str, list[int]] = {}
        for position, row in enumerate(located):
            if row.get("grid_offset") is not None and row.get("grid_bytes") is not None:
                ranged.append(position)
            else:
                whole.setdefault(row["shard"], []).append(position)

        def read_one(position: int) -> None:
            row = located[position]
            url = io.join(self.url, _checked_shard(row["shard"]))
            out[position] = shards.read_grid(
                url, row["grid_offset"], row["grid_bytes"], self.storage_options
            )

        def read_shard(shard: str) -> None:
            arrays = load_shard(self.url, shard, self.storage_options)
            for position in whole[shard]:
                row = located[position]
                index = int(row["index"])
                held = str(arrays[shards.IDS][index])
                if held != row["object_id"]:
                    raise ValueError(
                        f"shard {shard} holds {held!r} at index {index}, "
                        f"the manifest says {row['object_id']!r}"
                    )
                out[position] = arrays[shards.OLD_GRIDS][index]

        tasks = [(read_one, p) for p in ranged] + [(read_shard, s) for s in whole]
        if tasks:
            with ThreadPoolExecutor(max_workers=max(1, min(self.threads, len(tasks)))) as pool:
                for future in [pool.submit(fn, arg) for fn, arg in tasks]:
                    future.result()
        return out

    def _locate(self, rows: Iterable[str | Mapping[str, Any]] | pa.Table) -> list[dict]:
        """Manifest rows for a mix of ids and rows, each checked to have a grid."""
        if isinstance(rows, pa.Table):
            items: list[Any] = rows.to_pylist()
        elif isinstance(rows, (str, Mapping)):
            items = [rows]
        else:
            items = list(rows)
        ids = list(dict.fromkeys(i for i in items if isinstance(i, str)))
        by_id: dict[str, list[dict]] = {}
        if ids:
            for row in self.rows(ids, LOCATOR).to_pylist():
                by_id.setdefault(row["object_id"], []).append(row)
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise KeyError(_unknown(missing, self.url))
            repeated = {i: len(r) for i, r in by_id.items() if len(r) > 1}
            if repeated:
                raise DuplicateIdError(_repeated(repeated))
        located = []
        for item in items:
            if isinstance(item, str):
                located.append(by_id[item][0])
            elif isinstance(item, Mapping):
                located.append(dict(item))
            else:
                raise TypeError(f"expected an object_id or a manifest row, got {type(item)}")
        failed = [r for r in located if r.get("status") != OK or r.get("shard") is None]
        if failed:
            reasons = "; ".join(
                f"{r.get('object_id')!r}: {r.get('status')}, {r.get('error')!r}"
                for r in failed[:_SHOWN_IDS]
            )
            more = f" (and {len(failed) - _SHOWN_IDS} more)" if len(failed) > _SHOWN_IDS else ""
            raise FailedRowError(f"{len(failed)} row(s) have no grid: {reasons}{more}")
        return located

    # --- the catalog ---------------------------------------------------------

    @property
    def catalog(self) -> str | None:
        """The catalog URL: as given, else the job's ``--input`` from ``_SUCCESS``."""
        if self._catalog is None:
            success = self.success() or {}
            self._catalog = (success.get("arguments") or {}).get("input") or None
        if self._catalog is None:  # no _SUCCESS yet (a run that is going, or exited 4)
            self._catalog = self._input_from_runs()
        return self._catalog

    def _input_from_runs(self) -> str | None:
        """The ``--input`` of the latest run recorded under ``runs/``."""
        urls = io.list_files(io.join(self.url, RUNS), ".json", self.storage_options)
        for url in reversed(urls):  # named by start time: newest last
            try:
                record = json.loads(io.read_bytes(url, self.storage_options))
            except (FileNotFoundError, ValueError):
                continue
            found = (record.get("arguments") or {}).get("input")
            if found:
                return found
        return None

    def catalog_dataset(self) -> ds.Dataset:
        """The catalog as a lazy ``pyarrow.dataset`` over the files the job reads."""
        import pyarrow.dataset as ds  # imports pandas: only when a catalog is read

        if self._catalog_dataset is None:
            url = self.catalog
            if url is None:
                raise ValueError(
                    f"no catalog for {self.url}: pass Output(url, catalog=...) "
                    "(neither _SUCCESS nor runs/*.json names the job's input)"
                )
            # The files the job reads (io.list_input), those without a suffix
            # only when they are Parquet.
            listing = io.list_input(url, self.storage_options)
            files = [
                f
                for f in listing.files
                if f not in listing.bare or io.is_parquet(f, self.storage_options)
            ]
            fs = io.arrow_filesystem(url, self.storage_options)
            paths = [io.filesystem(f, self.storage_options)[1] for f in files]
            self._catalog_dataset = ds.dataset(paths, filesystem=fs, format="parquet")
        return self._catalog_dataset

    def catalog_rows(
        self, object_ids: str | Iterable[str], columns: list[str] | None = None
    ) -> pa.Table:
        """The catalog rows of these ids (``columns`` of them, those the catalog
        has), read with the ids pushed down as a filter."""
        ids = [object_ids] if isinstance(object_ids, str) else list(object_ids)
        dataset = self.catalog_dataset()
        if columns is not None:
            columns = [c for c in columns if c in dataset.schema.names]
        return dataset.to_table(columns=columns, filter=pc.field("object_id").isin(ids))

    def _catalog_row(self, object_id: str, column: str) -> dict[str, Any]:
        found = self.catalog_rows(object_id, ["object_id", column]).to_pylist()
        _check_found([object_id], found, self.catalog)
        return found[0]

    def views(self, object_id: str, size: int | None = None, crop: bool = False) -> np.ndarray:
        """The input views of ``object_id`` from the catalog, ``uint8 [n, S, S, 3]``:
        decoded as the job decoded them (``model.images``), composited over the
        model's background and padded to squares of side ``S`` (``size``, else
        the first view's longer side); ``crop`` also applies the model's
        127/137 centre crop. See :func:`decode_view`.

        Raises:
            KeyError, DuplicateIdError: the id is not in the catalog, or is repeated.
            model.images.DecodeError: a view cannot be decoded.
        """
        encoded = self._catalog_row(object_id, "views").get("views") or []
        if not encoded:
            return np.zeros((0, size or 0, size or 0, 3), np.uint8)
        first = decode_view(encoded[0], size, crop)
        rest = [decode_view(v, first.shape[0], crop) for v in encoded[1:]]
        return np.stack([first, *rest])

    def truth(self, object_id: str) -> np.ndarray:
        """The ground truth of ``object_id`` from the catalog's ``voxels``, bool ``[32, 32, 32]``.

        Raises:
            KeyError, DuplicateIdError: the id is not in the catalog, or is repeated.
            ValueError: the catalog row has no (or malformed) ground truth.
        """
        data = self._catalog_row(object_id, "voxels").get("voxels")
        if data is None or len(data) != voxels.VOXEL_BYTES:
            size = "none" if data is None else f"{len(data)} bytes"
            raise ValueError(
                f"{object_id!r} has no ground truth in {self.catalog} (voxels: {size}, "
                f"expected {voxels.VOXEL_BYTES} bytes)"
            )
        return voxels.unpack_voxels(data)


# --- selection on a command line ---------------------------------------------


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """The row selection flags the output tools share (see :meth:`Output.select`)."""
    group = parser.add_argument_group("selection (criteria combine; none selects every row)")
    group.add_argument("--ids", nargs="+", metavar="ID", help="these object ids")
    group.add_argument("--where", metavar="SQL", help="a SQL condition on manifest columns")
    group.add_argument("--worst", type=int, metavar="N", help="the N ok rows of lowest IoU")
    group.add_argument("--category", metavar="C", help="rows of this category")
    group.add_argument("--limit", type=int, metavar="N", help="at most N rows")


def select_from_arguments(output: Output, args: argparse.Namespace, **defaults: Any) -> pa.Table:
    """:meth:`Output.select` with the flags of :func:`add_selection_arguments`."""
    chosen = {k: getattr(args, k) for k in ("ids", "where", "worst", "category", "limit")}
    for key, value in defaults.items():
        if chosen.get(key) is None:
            chosen[key] = value
    return output.select(**chosen)


def select_for_command(
    output: Output, args: argparse.Namespace, command: str, **defaults: Any
) -> pa.Table | int:
    """:func:`select_from_arguments` for a command line: the rows, or the exit
    code after saying why there are none (2: a bad selection, 1: no match)."""
    try:
        rows = select_from_arguments(output, args, **defaults)
    except KeyError as exc:
        print(f"voxray {command}: {exc.args[0]}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"voxray {command}: {exc}", file=sys.stderr)
        return 2
    if rows.num_rows == 0:
        print(f"voxray {command}: no row of {output.url} matches the selection", file=sys.stderr)
        return 1
    return rows


def describe_selection(output: Output, args: argparse.Namespace, rows: pa.Table) -> str:
    """What a picture of ``rows`` (chosen by :func:`select_for_command`) shows, for
    its title: how many of how many matching rows, in which order, chosen how,
    at which threshold; e.g. ``12 of 48 rows, by object_id; threshold 0.4``."""
    matching = output.select(ids=args.ids, where=args.where, category=args.category)
    if args.worst is not None:
        matching = matching.filter(
            pc.and_(pc.equal(matching["status"], OK), pc.is_valid(matching["iou"]))
        )
        order = "lowest IoU first"
    else:
        order = "in the order given" if args.ids else "by object_id"
    parts = [f"{rows.num_rows} of {matching.num_rows} rows, {order}"]
    if args.ids:
        more = f" and {len(args.ids) - 3} more" if len(args.ids) > 3 else ""
        parts.append("ids " + ", ".join(args.ids[:3]) + more)
    if args.category is not None:
        parts.append(f"category {args.category}")
    if args.where:
        parts.append(f"where {args.where}")
    if args.worst is not None:
        parts.append(f"the {args.worst} worst by IoU")
    if args.limit is not None:
        parts.append(f"at most {args.limit}")
    levels = sorted({t for t in rows.column("threshold").to_pylist() if t is not None})
    if levels:
        parts.append("threshold " + " / ".join(f"{t:g}" for t in levels))
    return "; ".join(parts)


# --- helpers -----------------------------------------------------------------


def _checked_shard(shard: str) -> str:
    """A manifest's shard path, refused unless it lies under ``shards/``."""
    parts = shard.split("/")
    if len(parts) != 2 or parts[0] != SHARDS or parts[1] in ("", ".", ".."):
        raise ValueError(f"a manifest row names shard {shard!r}, not a file under {SHARDS}/")
    return shard


def _where(table: pa.Table, condition: str) -> pa.Table:
    """The rows of ``table`` for which the SQL ``condition`` holds (DuckDB)."""
    duckdb = _duckdb()
    position = "__voxray_position"
    connection = duckdb.connect()
    connection.register("manifests", table.append_column(position, pa.array(range(len(table)))))
    try:
        kept = connection.sql(
            f"select {position} from manifests where ({condition}) order by {position}"
        ).to_arrow_table()
    except duckdb.Error as exc:
        raise ValueError(f"bad SQL condition {condition!r}: {exc}") from None
    finally:
        connection.close()
    return table.take(kept.column(position))


def optional(module: str, needed_by: str) -> Any:
    """An optional package, imported on first use, or an ImportError saying
    which install brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        hint = "pip install polars" if module == "polars" else INSTALL_HINT
        raise ImportError(f"{needed_by} needs the package {module!r}: {hint}") from None


def missing_package(command: str, exc: ImportError) -> int:
    """For a command whose imports failed: say which package is missing and
    how to install it, and return exit code 3 (a setup problem)."""
    print(
        f"voxray {command}: needs the package {exc.name or exc}, which this install "
        f"lacks: {INSTALL_HINT}",
        file=sys.stderr,
    )
    return 3


def _duckdb() -> Any:
    """The ``duckdb`` module, imported on first use (SQL only)."""
    return optional("duckdb", "SQL over an output")


def _sorted_by_id(table: pa.Table) -> pa.Table:
    keys = [(c, "ascending") for c in ("object_id", "shard", "index") if c in table.column_names]
    return table.sort_by(keys) if keys and table.num_rows else table


def _unknown(ids: Sequence[str], where: str | None) -> str:
    shown = ", ".join(repr(i) for i in ids[:_SHOWN_IDS])
    more = f" (and {len(ids) - _SHOWN_IDS} more)" if len(ids) > _SHOWN_IDS else ""
    return f"no row for object_id {shown}{more} in {where}"


def _repeated(counts: Mapping[str, int]) -> str:
    shown = ", ".join(f"{i!r} has {n} rows" for i, n in list(counts.items())[:_SHOWN_IDS])
    return (
        f"object_id {shown} (the input repeated it): pick one row from "
        "Output.rows(object_id) and pass that row instead of the id"
    )


def _check_found(ids: Sequence[str], found: list[dict], where: str | None) -> None:
    if not found:
        raise KeyError(_unknown(ids, where))
    if len(found) > 1:
        raise DuplicateIdError(_repeated({ids[0]: len(found)}))
