"""What a run reads: the input cut into fragments (one Parquet row group of one
file each), less what the output already holds.

A row's identity is its position: ``row_key = "<fragment>:<row>"``, where the
fragment key ``<name>-<content>-<row group>`` digests the file's canonical URL
(the name part) and its footer (the content part: ``inputs.footer_digest``,
row counts, byte ranges and statistics of every row group), never its mtime or
ETag. A file is matched to what the output holds by its content first, so a
touched, copied, restored or re-uploaded file, a renamed file or a moved
catalog takes the keys it was committed under and nothing is done twice; a
file whose name holds rows of a content no file holds now has changed, and is
refused. Keys of an older voxray (content part: size and ETag/mtime) still
count for the same file and version. Each manifest records, in its Parquet
metadata, which row ranges of which fragments it commits; the output index
folds those records together. Planning a rerun therefore costs one footer per
input file and one record per fragment, never a lookup per committed row: a
fragment committed in full is not read at all, and only a fragment that was in
flight at a crash is read and filtered by row position, inside its own read
task. Duplicate ``object_id`` values are separate rows, each committed once.

This module must never read a row to plan, and never import TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline import io
from pipeline.columns import carry

Ranges = list[list[int]]  # sorted, disjoint [start, stop) row ranges of one fragment
Coverage = dict[str, Ranges]  # fragment key -> committed row ranges

COVERAGE_KEY = b"voxray.rows"  # a manifest's (and index part's) Parquet metadata
READ_ERROR = "read_error"  # the reader's column: why a row's data could not be read


class InputChanged(RuntimeError):
    """Files the output has rows of were changed since they were committed, or
    do not match a stated move (``--moved-from``); the message names each."""


NAME_HEX, CONTENT_HEX, LEGACY_HEX = 12, 16, 8  # the parts of a fragment key


def file_name(url: str) -> str:
    """The name part of a fragment key: a digest of the file's canonical URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:NAME_HEX]


def fragment_key(url: str, content: str, row_group: int) -> str:
    """``<name>-<content>-<row group>``: the name part digests the file's
    canonical URL (``io.canonical_url``), the content part is the first 16 hex
    of its ``inputs.footer_digest``, so a file is known by what it holds,
    whatever its name, mtime or ETag."""
    if len(content) < CONTENT_HEX:
        raise ValueError(f"{url}: a fragment key needs the file's footer digest, got {content!r}")
    return f"{file_name(url)}-{content[:CONTENT_HEX]}-{row_group}"


def legacy_content(size: int, version: str) -> str:
    """The content part of keys an older voxray wrote: size and ETag/mtime."""
    return hashlib.sha256(f"{size}:{version}".encode()).hexdigest()[:LEGACY_HEX]


def merge_ranges(ranges: Iterable[Iterable[int]]) -> Ranges:
    """Sorted, disjoint ranges covering the same rows; touching ranges join."""
    out: Ranges = []
    for start, stop in sorted((int(a), int(b)) for a, b in ranges):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], stop)
        else:
            out.append([start, stop])
    return out


def coverage_of(row_keys: Iterable[str]) -> Coverage:
    """The fragments' row ranges that ``row_keys`` (``"<fragment>:<row>"``) cover;
    keys of another form (rows not read by the job's reader) cover nothing."""
    rows: dict[str, list[int]] = {}
    for key in row_keys:
        fragment, _, row = key.rpartition(":")
        if fragment and row.isdigit():
            rows.setdefault(fragment, []).append(int(row))
    out: Coverage = {}
    for fragment, positions in rows.items():
        positions.sort()
        ranges: Ranges = []
        for p in positions:
            if ranges and p == ranges[-1][1]:
                ranges[-1][1] = p + 1
            else:
                ranges.append([p, p + 1])
        out[fragment] = ranges
    return out


def merge_coverage(parts: Iterable[Mapping[str, Ranges]]) -> Coverage:
    gathered: dict[str, list] = {}
    for part in parts:
        for fragment, ranges in part.items():
            gathered.setdefault(fragment, []).extend(ranges)
    return {fragment: merge_ranges(r) for fragment, r in gathered.items()}


def encode_coverage(coverage: Mapping[str, Ranges]) -> bytes:
    return json.dumps(coverage, separators=(",", ":"), sort_keys=True).encode()


def decode_coverage(metadata: Mapping[bytes, bytes] | None) -> Coverage:
    """The coverage recorded in a Parquet file's key-value metadata ({} if none)."""
    raw = (metadata or {}).get(COVERAGE_KEY)
    return json.loads(raw) if raw else {}


def covered(ranges: Ranges) -> int:
    return sum(stop - start for start, stop in ranges)


@dataclass(frozen=True)
class Fragment:
    """One row group of one input file, and what of it is committed.

    Args:
        file: the file's URL.
        row_group: the row group's number in the file.
        rows: rows to consider (the row group's, or fewer under a --limit).
        key: the fragment key (see :func:`fragment_key`).
        done: committed row ranges; a read task skips these rows.
        content: the file's ``inputs.footer_digest`` when it was planned.
    """

    file: str
    row_group: int
    rows: int
    key: str
    done: tuple[tuple[int, int], ...] = ()
    content: str = ""

    @property
    def todo(self) -> int:
        return self.rows - sum(min(b, self.rows) - min(a, self.rows) for a, b in self.done)


@dataclass(frozen=True)
class InputFile:
    """What planning needs of one input file (from its footer)."""

    url: str
    size: int
    version: str
    row_groups: tuple[int, ...]  # rows per row group
    content: str = ""  # inputs.footer_digest: the file's content, whatever its name


@dataclass(frozen=True)
class Moved:
    """A stated move of the whole input (``--moved-from``).

    Args:
        old: the input's canonical URL when the output's rows were committed.
        new: its canonical URL now.
        held: file-name part -> URL of the files the output's runs recorded
            under ``old``: each must be found again, and at least one file must
            be; None to map the files found now without those checks.
    """

    old: str
    new: str
    held: Mapping[str, str] | None = None

    def old_url(self, url: str) -> str | None:
        """Where ``url`` (under ``new``) was before the move; None if not under it."""
        if url == self.new:
            return self.old
        if url.startswith(self.new.rstrip("/") + "/"):
            return self.old.rstrip("/") + url[len(self.new.rstrip("/")) :]
        return None


@dataclass(frozen=True)
class ReadPlan:
    """The fragments a run reads, the counts it reports, and how input files
    were matched to what the output holds."""

    fragments: list[Fragment] = field(default_factory=list)  # with rows left to do
    rows_total: int = 0  # input rows this run covers (all of them, or --limit)
    rows_committed: int = 0  # of those, committed by earlier runs
    adopted: list[tuple[str, str]] = field(default_factory=list)  # (file, whose rows it takes)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (file, same content as)
    legacy_files: int = 0  # files matched by an older voxray's keys (size and ETag/mtime)
    names: dict[str, str] = field(default_factory=dict)  # key name part -> file, files with work
    unmatched_legacy: int = 0  # files of an older voxray's keys that no input file matched

    @property
    def rows_todo(self) -> int:
        return self.rows_total - self.rows_committed


@dataclass
class _Held:
    """What the output holds under one (name, content) pair of key parts."""

    groups: int = 0
    rows: int = 0


def plan(
    files: Iterable[InputFile],
    coverage: Mapping[str, Ranges],
    limit: int | None = None,
    moved: Moved | None = None,
) -> ReadPlan:
    """The read plan: every fragment of ``files`` in order (file, row group), up
    to ``limit`` rows, minus the rows ``coverage`` commits.

    A file is matched to what the output holds by its content first: a file
    whose footer digest is committed under any name (renamed, moved, copied,
    touched, re-uploaded, spelled another way) takes those keys, committed and
    not yet committed row groups alike, so nothing is done twice. Keys of an
    older voxray (content part: size and ETag/mtime) still count for the file
    of that name and version. A second file with the same content is read once
    (listed in ``duplicates``). ``moved`` maps each file to its URL before a
    stated move, and requires every file found there to hold what was committed.
    Costs one pass over ``coverage``'s keys and one over the files.

    Raises:
        InputChanged: the output holds rows of a file name under another
            content, and the file's content is committed nowhere (every such
            file is named, with what was committed and what is there now); or
            files that do not match ``moved``.
    """
    files = list(files)
    held: dict[tuple[str, str], _Held] = {}  # (name, content) -> groups, rows committed
    for key, ranges in coverage.items():
        parts = key.split("-")
        if len(parts) == 3:
            h = held.setdefault((parts[0], parts[1]), _Held())
            h.groups += 1
            h.rows += covered(ranges)
    by_name: dict[str, set[str]] = {}
    by_content: dict[str, set[str]] = {}
    for name, content in held:
        by_name.setdefault(name, set()).add(content)
        if len(content) == CONTENT_HEX:
            by_content.setdefault(content, set()).add(name)

    present = {f.content[:CONTENT_HEX] for f in files}
    # Per file: the name part its keys take and its content part; None for a
    # duplicate. Decided per content, so that copies share one owner.
    chosen: list[tuple[str, str] | None] = [None] * len(files)
    owner_of: dict[str, int] = {}  # content -> the file read for it
    adopted: list[tuple[str, str]] = []
    duplicates: list[tuple[str, str]] = []
    changed: list[str] = []
    differs: list[str] = []
    legacy = 0
    recorded: dict[str, list[str]] = {}  # old URL -> names it was read under
    for name, url in (moved.held or {}).items() if moved else ():
        recorded.setdefault(url, []).append(name)
    identities = []  # per file: its content part, its names (own, before a move), its URL then
    for i, f in enumerate(files):
        content = f.content[:CONTENT_HEX]
        if len(content) < CONTENT_HEX:
            raise ValueError(f"{f.url}: no footer digest (inputs.footer_digest) to key it by")
        before = moved.old_url(f.url) if moved else None
        # its names before the move: its old URL's, and the names the runs
        # recorded reading that URL under (keys kept through an earlier move)
        names = [file_name(f.url)]
        if before:
            names += [file_name(before), *recorded.get(before, ())]
        identities.append((content, names, before))
        # An older voxray's keys count for this very file and version, before any
        # copy of it can claim its content.
        old = legacy_content(f.size, f.version)
        match = next((n for n in names if old in by_name.get(n, ())), None)
        if match is not None:
            chosen[i] = (match, old)
            legacy += 1
            if match != names[0]:
                adopted.append((f.url, f"moved from {before}"))
            owner_of.setdefault(content, i)
    for i, (f, (content, names, before)) in enumerate(zip(files, identities, strict=True)):
        if chosen[i] is not None:
            continue
        if content in owner_of:
            duplicates.append((f.url, files[owner_of[content]].url))
            continue
        owner_of[content] = i
        own = names[0]
        committed = by_content.get(content, set())
        for name in names[1:]:
            if name in by_name and name not in committed:
                differs.append(_differs(f, before, by_name[name], held, name))
        if committed:
            name = next((n for n in names if n in committed), None)
            if name is None:
                # most rows first: a content committed under two names (outputs of
                # two branches of history) resumes where most is done
                name = min(committed, key=lambda n: (-held[(n, content)].rows, n))
                adopted.append((f.url, f"same content as the committed file named {name}"))
            elif name != own:
                adopted.append((f.url, f"moved from {before}"))
            chosen[i] = (name, content)
            continue
        # content committed nowhere: new, unless its name holds rows of a content
        # that no file holds now (a legacy key here is one that did not match)
        lost = {c for c in by_name.get(own, ()) if c not in present or len(c) == LEGACY_HEX}
        if lost:
            changed.append(_changed(f, own, lost, held))
        chosen[i] = (own, content)
    if moved and moved.held is not None:
        found = {n for _, names, _ in identities for n in names[1:]}
        for name, url in sorted(moved.held.items(), key=lambda item: item[1]):
            if name in by_name and name not in found:
                differs.append(f"  {url}: missing (not at the same place under {moved.new})")
    if (
        moved
        and moved.held is not None
        and not differs
        and not any(n in by_name for _, names, _ in identities for n in names[1:])
    ):
        differs.append(f"  no file under {moved.new} has rows in the output under {moved.old}")
    if differs:
        raise InputChanged(
            f"--moved-from {moved.old}: {len(differs)} file(s) the output holds under it are "
            f"not found with the same content at the same place under {moved.new}:\n"
            + "\n".join(differs)
            + "\nRestore them, or give the right --moved-from (or none: files with "
            "committed content are found by content alone)."
        )
    if changed:
        raise InputChanged(
            f"{len(changed)} input file(s) changed since the output committed rows from them; "
            "their rows cannot be matched to the new content:\n"
            + "\n".join(changed)
            + "\nRestore each file, write to a new --output, or drop its old rows with "
            "`python jobs/prune.py` (see its --help) and rerun."
        )

    fragments: list[Fragment] = []
    names_read: dict[str, str] = {}
    total = done_rows = 0
    for f, keyed in zip(files, chosen, strict=True):
        if keyed is None:
            continue
        name, content = keyed
        for g, n in enumerate(f.row_groups):
            if limit is not None:
                n = min(n, limit - total)
                if n <= 0:
                    break
            key = f"{name}-{content}-{g}"
            done = tuple((a, min(b, n)) for a, b in coverage.get(key, ()) if a < n)
            fragment = Fragment(f.url, g, n, key, done, f.content)
            total += n
            done_rows += n - fragment.todo
            if fragment.todo:
                fragments.append(fragment)
                names_read[name] = f.url
        if limit is not None and total >= limit:
            break
    matched = {keyed[0] for keyed in chosen if keyed is not None}
    unmatched = sum(
        1
        for name, contents in by_name.items()
        if name not in matched and any(len(c) == LEGACY_HEX for c in contents)
    )
    return ReadPlan(fragments, total, done_rows, adopted, duplicates, legacy, names_read, unmatched)


def _now(f: InputFile) -> str:
    return (
        f"there now: {sum(f.row_groups):,} rows in {len(f.row_groups):,} row group(s), "
        f"{f.size:,} bytes, digest {f.content[:CONTENT_HEX]}"
    )


def _was(name: str, contents: Iterable[str], held: Mapping[tuple[str, str], _Held]) -> str:
    parts = []
    for c in sorted(contents):
        h = held[(name, c)]
        what = (
            f"version key {c} (an output of an older voxray: size and ETag/mtime)"
            if len(c) == LEGACY_HEX
            else f"digest {c}"
        )
        parts.append(f"{h.rows:,} rows of {h.groups:,} row group(s), {what}")
    return "committed: " + "; ".join(parts)


def _changed(f: InputFile, name: str, lost: set[str], held: Mapping) -> str:
    return f"  {f.url}: {_was(name, lost, held)}; {_now(f)}"


def _differs(f: InputFile, before: str, contents: set[str], held: Mapping, name: str) -> str:
    return f"  {before} -> {f.url}: differs; {_was(name, contents, held)}; {_now(f)}"


def read_fragment(
    fragment: Fragment,
    columns: pa.Schema,
    batch_rows: int,
    storage_options: Mapping[str, Any],
    retry_seconds: float = io.RETRY_SECONDS,
) -> Iterator[pa.Table]:
    """The fragment's rows that are not committed, as tables of at most
    ``batch_rows`` rows with a ``row_key`` and a ``read_error`` column, and
    the input's other columns under their manifest names
    (``pipeline.columns.carried_name``): the job's reader
    (``pipeline.source.read_file``) on one fragment."""
    from pipeline.source import read_file

    return read_file([fragment], columns, batch_rows, storage_options, retry_seconds)


def with_row_keys(table: pa.Table, keys: list[str], error: str | None = None) -> pa.Table:
    """Input rows with the reader's columns added: their ``row_key`` and
    ``error`` as their ``read_error``. Carried columns are put under their
    manifest names first, so no column the job adds (row_key, read_error,
    status, ...) meets an input one."""
    table = carry(table)
    errors = pa.array([error] * len(keys), pa.string())
    return table.append_column("row_key", pa.array(keys, pa.string())).append_column(
        READ_ERROR, errors
    )


def groups(fragments: list[Fragment], parallelism: int, min_rows: int = 1) -> list[list[Fragment]]:
    """``fragments`` in at most about ``parallelism`` groups of consecutive
    ones, of about equal rows to do and at least ``min_rows`` each (small
    files share a read task, whose blocks then hold whole ``min_rows``).

    A file is split between groups only in pieces of at least as many rows as
    it has fragments planned: each read task parses the footer of every file
    it reads, which grows with the file's row groups, so a file of 5,000
    one-row groups cut into 20 tasks would parse its footer 20 times."""
    if not fragments:
        return []
    target = max(min_rows, -(-sum(f.todo for f in fragments) // max(1, parallelism)))
    per_file: dict[str, int] = {}
    for f in fragments:
        per_file[f.file] = per_file.get(f.file, 0) + 1
    out: list[list[Fragment]] = [[]]
    rows = piece = 0  # rows of the group, and of its last file
    for f in fragments:
        if out[-1] and out[-1][-1].file != f.file:
            piece = 0
        if rows >= target and (piece == 0 or piece >= per_file[f.file]):
            out.append([])
            rows = piece = 0
        out[-1].append(f)
        rows += f.todo
        piece += f.todo
    return out
