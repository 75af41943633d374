"""What an output holds more than once, and what it holds of input files that
are gone: the two figures an operator watches on a catalog that lives for
years, counted at the end of every run (``pipeline.job``) and by
``pipeline.prune``.

*Repeated ids*: ``object_id`` values with more than one row in the output, and
how many of those have rows from different input files (the name part of
their row keys, the text before the first ``-``, differs): an object appended
again in a new file, or a file copied under another name, shows up here.
Counted from the index's ``object_id`` and ``row_key`` columns alone, one
file at a time through 64-bit hashes of the ids (8 bytes a row in memory),
the candidates then compared as strings.

*Stale rows*: committed rows of input files that no longer exist. A fragment
key is ``<name>-<content>-<row group>`` (``pipeline.plan``): the name part is
the first 12 hex of the sha256 of the file's canonical URL, the content part
16 hex of its footer digest (8 hex in keys written before content identity,
``legacy``: those are matched by name alone). A committed fragment belongs to
the current input when its name part or its content part is that of a
current input file (a renamed or moved file is still the same content);
otherwise it is stale. Counted from the index's coverage: no row is read.

This module must never read an input row, and never write.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import index, io, plan

NAME_DIGITS = 12  # a fragment key's name part
CONTENT_DIGITS = 16  # its content part (8 in a legacy key)


def name_part(url: str) -> str:
    """The name part of the fragment keys of the file at ``url``, however spelled."""
    return plan.file_name(io.canonical_url(url))


@dataclass(frozen=True)
class CurrentInput:
    """The input files as they are now: their name parts and content parts.

    Args:
        names: name parts of every file listed (readable or not: a file that
            exists but cannot be read is not gone).
        contents: content parts of the files whose footer was read.
    """

    names: frozenset[str]
    contents: frozenset[str]

    @classmethod
    def of(cls, urls: Iterable[str], contents: Iterable[str]) -> CurrentInput:
        return cls(
            frozenset(name_part(u) for u in urls),
            frozenset(c[:CONTENT_DIGITS] for c in contents if c),
        )

    @classmethod
    def from_scan(cls, scan: Any) -> CurrentInput:
        """From an ``inputs.Scan``: every file it listed, and the readable ones' content."""
        urls = [f.url for f in scan.files] + [u.url for u in scan.unreadable]
        return cls.of(urls, (f.content for f in scan.files))

    def holds(self, fragment: str) -> bool:
        """Whether the committed ``fragment`` is of a current input file."""
        name, _, rest = fragment.partition("-")
        if name in self.names:
            return True
        content = rest.partition("-")[0]
        return len(content) == CONTENT_DIGITS and content in self.contents


@dataclass(frozen=True)
class Stale:
    """Committed rows of input files that no longer exist.

    Args:
        coverage: the stale fragments and their committed row ranges.
    """

    coverage: plan.Coverage

    @property
    def rows(self) -> int:
        return sum(plan.covered(r) for r in self.coverage.values())

    @property
    def files(self) -> dict[str, list[str]]:
        """``{name part: [fragment, ...]}``: the gone files and their fragments."""
        out: dict[str, list[str]] = {}
        for fragment in sorted(self.coverage):
            out.setdefault(fragment.partition("-")[0], []).append(fragment)
        return out


def stale_rows(coverage: Mapping[str, plan.Ranges], current: CurrentInput) -> Stale:
    """The fragments of ``coverage`` (an output's committed rows) that are of
    no current input file."""
    return Stale({f: list(r) for f, r in coverage.items() if not current.holds(f)})


@dataclass(frozen=True)
class Repeats:
    """``object_id`` values with more than one row in an output.

    Args:
        ids: ids with more than one row.
        across_files: of those, ids whose rows come from different input files.
        rows: the rows of those ids.
        seconds: what counting them took.
    """

    ids: int
    across_files: int
    rows: int
    seconds: float = 0.0

    def fields(self) -> dict[str, int]:
        """The figures as the run record and ``_SUCCESS`` hold them."""
        return {
            "duplicate_ids": self.ids,
            "duplicate_ids_across_files": self.across_files,
            "duplicate_rows": self.rows,
        }


def repeated_ids(
    current: index.State, options: Mapping[str, Any] | None = None, threads: int = 4
) -> Repeats:
    """Count the repeated ids of the output ``current`` describes, from the
    index (its parts and the manifests not folded yet), one file at a time:
    each file's ``object_id`` column is hashed to 64 bits, the hashes that
    occur twice are the candidates, and only the candidates' rows are read
    again (with ``row_key``) and counted exactly, so a hash collision never
    counts. Memory: 8 bytes a row, plus the files being read (``threads``)."""
    started = time.monotonic()
    urls = [f.url for f in current.files]

    def hashed(url: str) -> np.ndarray:
        ids = index._read(url, options, ["object_id"]).column("object_id")
        return _hash_strings(ids)

    per_file = index._map(hashed, urls, threads)
    if not per_file:
        return Repeats(0, 0, 0, time.monotonic() - started)
    every = np.sort(np.concatenate(per_file))
    candidates = np.unique(every[1:][every[1:] == every[:-1]])
    del every
    if len(candidates) == 0:
        return Repeats(0, 0, 0, time.monotonic() - started)

    def rows(position: int) -> pa.Table | None:
        found = np.flatnonzero(np.isin(per_file[position], candidates))
        if len(found) == 0:
            return None
        table = index._read(urls[position], options, ["object_id", "row_key"])
        return table.take(pa.array(found, pa.int64())).replace_schema_metadata()

    tables = [t for t in index._map(rows, list(range(len(urls))), threads) if t is not None]
    return repeated_ids_in(pa.concat_tables(tables), started)


# A polynomial hash of each id's bytes modulo 2**64 (odd multiplier): cheap in
# numpy and exact enough to pick candidates, which are then compared as strings.
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_NULL_HASH = np.uint64(0x2545F4914F6CDD1D)  # null ids: never counted (filtered later)


def _hash_strings(ids: pa.ChunkedArray) -> np.ndarray:
    """``uint64`` per value of a string column (equal strings, equal hashes)."""
    out = []
    for chunk in ids.chunks:
        if len(chunk) == 0:
            continue
        chunk = chunk.cast(pa.large_string()) if pa.types.is_string(chunk.type) else chunk
        offsets = np.frombuffer(chunk.buffers()[1], np.int64)[
            chunk.offset : chunk.offset + len(chunk) + 1
        ]
        data = np.frombuffer(chunk.buffers()[2] or b"", np.uint8)[offsets[0] : offsets[-1]]
        starts = (offsets[:-1] - offsets[0]).astype(np.int64)
        lengths = np.diff(offsets)
        hashes = lengths.astype(np.uint64) * _MULTIPLIER  # the length, mixed in
        if len(data):
            width = int(lengths.max())
            powers = np.cumprod(np.full(width, _MULTIPLIER, np.uint64))
            if int(lengths.min()) == width:  # ids of one length (the usual): column by column
                matrix = data.reshape(len(lengths), width)
                for j in range(width):
                    hashes += (matrix[:, j].astype(np.uint64) + np.uint64(1)) * powers[j]
            else:
                position = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths)
                terms = (data.astype(np.uint64) + np.uint64(1)) * powers[position]
                some = lengths > 0
                hashes[some] += np.add.reduceat(terms, starts[some])
        if chunk.null_count:
            hashes[~np.asarray(chunk.is_valid())] = _NULL_HASH
        out.append(hashes)
    return np.concatenate(out) if out else np.empty(0, np.uint64)


def repeated_ids_in(table: pa.Table, started: float | None = None) -> Repeats:
    """Count the repeated ids of ``table`` (``object_id`` and ``row_key``
    columns); a null id (a row whose id could not be read) repeats nothing."""
    import pyarrow.compute as pc  # at the run's end only: ~9 MiB the pre-flight does without

    started = time.monotonic() if started is None else started
    several = _several(table.column("object_id"))
    if len(several) == 0:
        return Repeats(0, 0, 0, time.monotonic() - started)
    rows = table.filter(pc.is_in(table.column("object_id"), value_set=several.field("values")))
    return _tally(several, rows, started)


def _several(ids: pa.ChunkedArray) -> pa.StructArray:
    """``{values, counts}`` of the ids (not null) that occur more than once."""
    import pyarrow.compute as pc

    if len(ids) == 0:
        return pa.array([], pa.struct([("values", pa.string()), ("counts", pa.int64())]))
    counts = pc.value_counts(ids)
    return counts.filter(
        pc.and_(pc.is_valid(counts.field("values")), pc.greater(counts.field("counts"), 1))
    )


def _tally(several: pa.StructArray, rows: pa.Table, started: float) -> Repeats:
    """The figures, from the repeated ids' counts and their rows' keys."""
    import pyarrow.compute as pc

    # The name part of a key is its first NAME_DIGITS characters (the pinned
    # key format: 12 hex, then "-").
    names = pc.utf8_slice_codeunits(rows.column("row_key"), 0, NAME_DIGITS)
    files = (
        pa.table({"object_id": rows.column("object_id"), "name": names})
        .group_by("object_id")
        .aggregate([("name", "count_distinct")])
    )
    across = pc.sum(pc.greater(files.column("name_count_distinct"), 1)).as_py() or 0
    total = pc.sum(several.field("counts")).as_py() or 0
    return Repeats(len(several), across, total, time.monotonic() - started)
