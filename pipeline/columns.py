"""The names and types of carried columns: the input's scalar columns that the
job does not read itself and carries into every manifest row. One rule names
them in the output (:func:`carried_name`), applied once, right after a row is
read (``pipeline.plan``), so that no column the job adds on the way (the
manifest's own, ``read_error``, ``pixels``, ``probabilities``) ever meets an
input column of the same name; and one check keeps a carried column's type
what the output already holds (:func:`agree_with_output`), so that every manifest of an
output reads as one table. This module must never read a row, and never import
TensorFlow or Ray.

The rule: a name is kept as it is unless it starts with ``input_`` or equals a
reserved name (both in any case); then it is carried as ``input_<name>``. It is
injective (kept names never start with ``input_``, renamed ones always do, and
each side is one-to-one), and no carried name equals a reserved one in any case
(a kept one by the rule; a renamed one starts with ``input_``, which no reserved
name does), so DuckDB, whose names ignore case, sees them apart too. Two input
columns equal up to case (``SKU`` and ``sku``) would be carried under names
equal up to case: ``pipeline.inputs`` refuses them, naming both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pyarrow as pa

from pipeline import io
from pipeline.layout import MANIFEST_SCHEMA

PREFIX = "input_"
# Columns the job reads from the input (in their canonical types); every other
# scalar column is carried.
INPUT_COLUMNS = ("object_id", "views", "voxels")
# Columns the job itself adds to a row on its way to the manifest: the
# manifest's own, the reader's, and the payloads between stages.
RESERVED_COLUMNS = (
    *MANIFEST_SCHEMA.names,
    "read_error",  # pipeline.plan.READ_ERROR (plan imports this module)
    "pixels",
    "probabilities",
    "voxels",
    "views",
)
_RESERVED = frozenset(n.lower() for n in RESERVED_COLUMNS)


class TypeDrift(io.StorageError):
    """A carried column whose type differs from the one the output holds."""


def carried_name(name: str) -> str:
    """The manifest name of the input column ``name`` (see the module)."""
    lowered = name.lower()
    if lowered.startswith(PREFIX) or lowered in _RESERVED:
        return PREFIX + name
    return name


def carry(table: pa.Table) -> pa.Table:
    """``table`` (input rows as read) with every column but ``INPUT_COLUMNS``
    under its carried name."""
    names = [c if c in INPUT_COLUMNS else carried_name(c) for c in table.column_names]
    return table if names == table.column_names else table.rename_columns(names)


def fits(held: pa.DataType, new: pa.DataType) -> bool:
    """Whether the held type holds every value of the new one unchanged:
    ``pipeline.inputs.widen`` of the two is the held type (``int32`` or null
    into ``int64``, ``float32`` into ``float64``), or both are text (or both
    bytes) in another layout (``large_string`` as written by Polars into
    ``string``: a carried value is far below 2 GiB)."""
    from pipeline.inputs import widen  # the input's type rules (Parquet, numpy): loaded late

    if widen(held, new) == held:
        return True
    return any(held in family and new in family for family in _LAYOUTS)


_LAYOUTS = (
    (pa.string(), pa.large_string(), pa.string_view()),
    (pa.binary(), pa.large_binary(), pa.binary_view()),
)


def agree_with_output(scan, held: Mapping[str, Mapping[pa.DataType, str]]):
    """``scan`` (a ``pipeline.inputs.Scan``) with each carried column in the
    type the output holds: a column whose values the held type holds
    unchanged (:func:`fits`) is read as the held type, so every manifest
    agrees; any other difference is refused before any work, and so is an
    output whose manifests already hold a column in types no reader combines
    (written before this check: its index could not be folded).

    Args:
        scan: the input's scan; its ``schema`` is the read schema.
        held: the output's carried columns by manifest name: each type found
            and a file that holds it (``pipeline.index.column_types``).

    Raises:
        TypeDrift: naming an input file, the column, the held and the new type;
            or the output's column and its types, with a file of each.
    """
    for name, types in held.items():
        if _held_type(types) is None:
            raise TypeDrift(
                f"cannot add to the output: its manifests hold column {name!r} as "
                f"{_listed(types)}, which no reader combines (written before voxray refused a "
                "change of a column's type). Rewrite one side's manifests with the column cast "
                "to the other's type, or write to a new --output."
            )
    fields = []
    for f in scan.schema:
        target = _held_type(held.get(carried_name(f.name), {}))
        if f.name in INPUT_COLUMNS or target in (pa.null(), f.type):
            fields.append(f)
        elif fits(target, f.type):
            fields.append(f.with_type(target))
        else:
            raise TypeDrift(_drift(scan, f, target, held[carried_name(f.name)]))
    if [f.type for f in fields] == scan.schema.types:
        return scan
    return dataclasses.replace(scan, schema=pa.schema(fields))


def _held_type(types: Mapping[pa.DataType, str]) -> pa.DataType | None:
    """The one type the output's files hold a column in, as readers combine
    them: the null type where none has a typed value, None where they cannot
    be combined."""
    fields = [pa.schema([("c", t)]) for t in types if t != pa.null()]
    if not fields:
        return pa.null()
    try:
        return pa.unify_schemas(fields, promote_options="permissive").field("c").type
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return None


def _listed(types: Mapping[pa.DataType, str]) -> str:
    return " and ".join(f"{t} (as in {url})" for t, url in types.items() if t != pa.null())


def _drift(scan, f: pa.Field, target: pa.DataType, types: Mapping[pa.DataType, str]) -> str:
    """The refusal: the first input file whose type of the column does not fit."""
    where, found = "the input", f.type
    for info in scan.usable:
        if f.name in info.schema.names:
            kind = info.schema.field(f.name).type
            kind = kind.value_type if pa.types.is_dictionary(kind) else kind
            if not fits(target, kind):
                where, found = info.url, kind
                break
    return (
        f"cannot add input {where} to the output: its column {f.name!r} is {found}, and the "
        f"output's manifests hold {carried_name(f.name)!r} as {_listed(types)}. Every manifest "
        "of an output must agree on a column's type (readers combine them): cast the column to "
        "the held type in the input, or write to a new --output."
    )
