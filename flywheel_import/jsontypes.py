"""JSON values -> polars types, and the one rule that merges two types of the same key.

An NDJSON file is typed once, in preflight, from every line: the types of each chunk (polars'
own inference, or :func:`record_schema` for a chunk polars cannot type) are merged key by key
with :func:`merge`, and every chunk is then read with the merged schema. Reading with one
schema is what makes a record's values the same however the file is cut into chunks. The rule
(commutative and associative, so the order of the chunks does not matter either):

- the same type, or null and a type: that type;
- two kinds of numbers: Float64 (Int128 when both are integers and one needs it);
- two objects: one object with the keys of both, each key merged (nested keys in name order);
- two arrays: one array of the merged items, unless that mixes an object or an array with
  something else, which makes the whole key text (next rule);
- an object or an array with anything else (a scalar, or the other kind of container): text,
  a *mixed* key. Read as text, an object or array value is its JSON text and a scalar its text;
- two different scalars otherwise (a number and a string, a boolean and a number): text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl
from polars.datatypes import DataTypeClass

#: Deepest nesting read (a top-level object is 1): polars reads nested values recursively
#: and crashes on very deep ones, and no event export nests this far.
MAX_DEPTH = 64

_INT64 = (-(2**63), 2**63 - 1)
_INT128 = (-(2**127), 2**127 - 1)


def dtype_of(value: Any) -> pl.DataType:
    """The type polars would give this one value (as parsed by orjson)."""
    if value is None:
        return pl.Null()
    if isinstance(value, bool):
        return pl.Boolean()
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return pl.Int64()
        return pl.Int128() if _INT128[0] <= value <= _INT128[1] else pl.Float64()
    if isinstance(value, float):
        return pl.Float64()
    if isinstance(value, str):
        return pl.String()
    if isinstance(value, dict):
        return _struct({k: dtype_of(v) for k, v in value.items()})
    if isinstance(value, list):
        out: pl.DataType = pl.List(pl.Null())
        for item in value:
            out = merge(out, pl.List(dtype_of(item)))
        return out
    return pl.String()


def nesting(value: Any) -> int:
    """How deeply objects and arrays nest in ``value`` (0 for a scalar); not recursive."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        todo.extend((child, depth + 1) for child in children)
    return deepest


def record_schema(records: Iterable[Mapping[str, Any]]) -> dict[str, pl.DataType]:
    """Top-level keys in order of first appearance, each with the merged type of its values."""
    out: dict[str, pl.DataType] = {}
    for record in records:
        for key, value in record.items():
            out[key] = merge(out.get(key, pl.Null()), dtype_of(value))
    return out


def canonical(dtype: pl.DataType) -> pl.DataType:
    """Nested keys in name order: polars' inference orders them by what a chunk held."""
    if isinstance(dtype, pl.Struct):
        return _struct({f.name: canonical(_instance(f.dtype)) for f in dtype.fields})
    if isinstance(dtype, pl.List):
        return pl.List(canonical(_instance(dtype.inner)))
    return dtype


def merge(a: pl.DataType, b: pl.DataType) -> pl.DataType:
    """The type of a key whose values have types ``a`` and ``b`` (see the module docstring)."""
    if a == b:
        return a
    if a == pl.Null:
        return b
    if b == pl.Null:
        return a
    if isinstance(a, pl.Struct) and isinstance(b, pl.Struct):
        fields = {f.name: _instance(f.dtype) for f in a.fields}
        for f in b.fields:
            dtype = _instance(f.dtype)
            fields[f.name] = merge(fields[f.name], dtype) if f.name in fields else dtype
        return _struct(fields)
    if isinstance(a, pl.List) and isinstance(b, pl.List):
        a_inner, b_inner = _instance(a.inner), _instance(b.inner)
        inner = merge(a_inner, b_inner)
        if inner == pl.String and (_nested(a_inner) or _nested(b_inner)):
            return pl.String()  # items mixing containers and others: the array as JSON text
        return pl.List(inner)
    if _nested(a) or _nested(b):
        return pl.String()
    if a.is_numeric() and b.is_numeric():
        if a.is_integer() and b.is_integer():
            return pl.Int128() if pl.Int128 in (a, b) else pl.Int64()
        return pl.Float64()
    return pl.String()


def _instance(dtype: pl.DataType | DataTypeClass) -> pl.DataType:
    """A member type of a struct or list, which polars may hold as a class."""
    return dtype if isinstance(dtype, pl.DataType) else dtype()


def _nested(dtype: pl.DataType) -> bool:
    return isinstance(dtype, pl.Struct | pl.List)


def _struct(fields: Mapping[str, pl.DataType]) -> pl.Struct:
    return pl.Struct([pl.Field(name, fields[name]) for name in sorted(fields)])
