"""JSON-text property columns: a cell holding a JSON object whose keys become properties.

Amplitude and PostHog exports keep an event's properties as JSON text in one column
(``event_properties``). ``mapping.properties.json`` names such columns; each key becomes a
property (with a prefix), nested objects are flattened to ``parent.child`` like Parquet
structs, lists and values of mixed shape are sent as JSON text, nulls are omitted.

Typing follows the rest of the importer: decided once per file, from every cell, never per
batch. Preflight gathers, per key path, which JSON types it holds (:class:`JsonShape`, a union
that joins across batches and readers); the batches are then decoded by polars against the
dtype that shape decides (:func:`decode`), vectorized. polars' own schema inference cannot
type keys alone (it reads ``true`` in an integer column as 1 and refuses an object where a
number was seen), so preflight reads its inferred dtype as a first answer, checks the one
case where that answer can hide a type, and walks the objects in Python only for a batch
polars refuses (objects and scalars under one key, or cells that are not objects).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import polars as pl
from polars.datatypes import DataTypeClass

from .errors import ConfigError, InputError
from .jsonexpr import json_value

#: A property's problem: (which rows have it, its message for those rows).
Problem = tuple[pl.Expr, pl.Expr]

AnyDtype = pl.DataType | DataTypeClass  # a struct field's dtype may be either

Path = tuple[str, ...]
JsonKind = Literal["integer", "number", "boolean", "text", "json"]

# The JSON types a key was seen with, as bits.
BOOL, INT, FLOAT, STR, LIST, OBJ = 1, 2, 4, 8, 16, 32
_SCALARS = BOOL | INT | FLOAT | STR
_INT64 = (-(2**63), 2**63)


@dataclass(frozen=True, slots=True)
class JsonShape:
    """For each key path of a column (``("device", "os")``), the JSON types seen there.

    A union: the shape of a file is the join of the shapes of any parts covering it, so
    batch sizes and readers cannot change it. A path seen only with ``null`` is absent.
    """

    types: dict[Path, int] = field(default_factory=dict)

    def join(self, other: JsonShape) -> JsonShape:
        out = dict(self.types)
        for path, bits in other.types.items():
            out[path] = out.get(path, 0) | bits
        return JsonShape(out)

    def properties(self) -> dict[Path, JsonKind]:
        """The key paths sent as properties, each with its kind, sorted by path.

        A path holding only objects is flattened into its children; any other mix that
        involves an object or a list is sent whole as JSON text (its children are not).
        """
        out: dict[Path, JsonKind] = {}
        whole: list[Path] = []  # paths sent whole: their children are inside them
        for path in sorted(self.types):
            if any(path[: len(w)] == w for w in whole):
                continue
            bits = self.types[path]
            if bits == OBJ or not bits:
                continue
            kind = kind_of(bits)
            if kind == "json":
                whole.append(path)
            out[path] = kind
        return out


def kind_of(bits: int) -> JsonKind:
    """The one typing rule of JSON keys (README, "Typing rules")."""
    if bits & (LIST | OBJ):
        return "json"
    if bits == BOOL:
        return "boolean"
    if bits == INT:
        return "integer"
    if bits & ~(INT | FLOAT) == 0:
        return "number"
    return "text"  # strings, or scalars of several types: each value as its text


# --- preflight: the shape of a batch's cells -------------------------------------------------


def objects(cells: pl.Series) -> pl.Series:
    """Is each cell a JSON object? (null cells: false)."""
    return (
        cells.str.json_path_match("$").is_not_null()
        & cells.str.strip_chars_start().str.starts_with("{")
    ).fill_null(False)


def screened(cells: pl.Series) -> pl.Series:
    """``cells`` less those polars would read although they are not JSON: a lone UTF-16
    surrogate escape (``"\\ud800"``) decodes to garbage instead of failing. Only cells with
    a surrogate escape are parsed a second time, so the answer never depends on the batch."""
    suspect = cells.str.contains(_SURROGATE).fill_null(False)
    if not suspect.any():
        return cells
    return pl.select(pl.when(~suspect | objects(cells)).then(cells)).to_series()


_SURROGATE = r"\\u[dD][89a-fA-F]"


def shape_of(cells: pl.Series) -> JsonShape:
    """The :class:`JsonShape` of a column's cells; cells that are not objects count for
    nothing (they are rejected when sent)."""
    cells = screened(cells).drop_nulls()
    if not len(cells):
        return JsonShape()
    try:
        decoded = cells.str.json_decode(infer_schema_length=None)
    except pl.exceptions.PolarsError:
        cells = cells.filter(objects(cells))
        if not len(cells):
            return JsonShape()
        try:
            decoded = cells.str.json_decode(infer_schema_length=None)
        except pl.exceptions.PolarsError:
            return _walked(cells)
    if not isinstance(decoded.dtype, pl.Struct):
        return JsonShape()  # scalars only: no object at all
    types: dict[Path, int] = {}
    numeric: list[Path] = []
    _read_dtype(decoded.dtype, (), types, numeric)
    # polars types a key holding both numbers and booleans as a number (true is 1): where a
    # numeric key reads 0 or 1, read those cells again with the key as text to tell.
    ones = {path: (leaf == 0) | (leaf == 1) for path in numeric for leaf in (_leaf(decoded, path),)}
    suspects = [path for path, hit in ones.items() if hit.any()]
    if suspects:
        again = cells.filter(
            pl.select(pl.any_horizontal(ones[p] for p in suspects).fill_null(False)).to_series()
        )
        texts = again.str.json_decode(_as_text(decoded.dtype, suspects))
        for path in suspects:
            if _leaf(texts, path).is_in(["true", "false"]).any():
                types[path] |= BOOL
    return JsonShape(types)


def _leaf(decoded: pl.Series, path: Path) -> pl.Series:
    for key in path:
        decoded = decoded.struct.field(key)
    return decoded


def _read_dtype(dtype: AnyDtype, path: Path, types: dict[Path, int], numeric: list[Path]) -> None:
    if isinstance(dtype, pl.Struct):
        if path:
            types[path] = types.get(path, 0) | OBJ
        for f in dtype.fields:
            _read_dtype(f.dtype, (*path, f.name), types, numeric)
        return
    if isinstance(dtype, pl.List | pl.Array):
        bits = LIST
    elif dtype == pl.String:
        bits = STR
    elif dtype == pl.Boolean:
        bits = BOOL
    elif dtype in (pl.Int64, pl.Int32, pl.Int16, pl.Int8, pl.UInt8, pl.UInt16, pl.UInt32):
        bits = INT
        numeric.append(path)
    elif dtype.is_float():
        bits = FLOAT
        numeric.append(path)
    elif dtype.is_integer():
        bits = STR  # past int64: text, as _walk reads it
    else:
        bits = 0  # null only
    types[path] = types.get(path, 0) | bits


def _as_text(dtype: AnyDtype, numeric: list[Path], path: Path = ()) -> AnyDtype:
    """``dtype`` with the numeric leaves in ``numeric`` read as text."""
    if isinstance(dtype, pl.Struct):
        return pl.Struct(
            {f.name: _as_text(f.dtype, numeric, (*path, f.name)) for f in dtype.fields}
        )
    return pl.String() if path in numeric else dtype


def _walked(cells: Iterable[str]) -> JsonShape:
    """The shape found by reading each object in Python: only for a batch polars refuses.

    The standard library's reader, as it keeps integers of any size exact (orjson turns
    those past 64 bits into floats, where polars reads them as integers)."""
    types: dict[Path, int] = {}
    for text in set(cells):
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            _walk(value, (), types)
    return JsonShape(types)


def _walk(obj: dict[str, object], path: Path, types: dict[Path, int]) -> None:
    for key, value in obj.items():
        here = (*path, key)
        if value is None:
            continue
        if isinstance(value, bool):
            bits = BOOL
        elif isinstance(value, int):
            # Past int64 no reader keeps every digit of a JSON number: sent as text.
            bits = INT if _INT64[0] <= value < _INT64[1] else STR
        elif isinstance(value, float):
            bits = FLOAT
        elif isinstance(value, str):
            bits = STR
        elif isinstance(value, list):
            bits = LIST
        else:
            assert isinstance(value, dict)
            bits = OBJ
            _walk(value, here, types)
        types[here] = types.get(here, 0) | bits


# --- batches: decoding against the file's shape ----------------------------------------------

_DTYPES: dict[str, pl.DataType] = {
    "integer": pl.Int64(),
    "number": pl.Float64(),
    "boolean": pl.Boolean(),
    "text": pl.String(),
}


@dataclass(frozen=True, slots=True)
class JsonLeaf:
    """One property from a JSON column: its key path, kind, output column and name."""

    path: Path
    kind: JsonKind
    slot: str
    key: str

    def describe(self, column: str) -> str:
        path = " > ".join(repr(k) for k in self.path)
        return f"{'nested ' if len(self.path) > 1 else ''}key {path} of JSON column {column!r}"

    @property
    def dtype(self) -> pl.DataType:
        return pl.String() if self.kind == "json" else _DTYPES[self.kind]


@dataclass(frozen=True, slots=True)
class JsonColumn:
    """How one JSON column of one file is decoded: the dtype of its typed keys (None when
    it has none), the leaves, and the column flagging cells that are not objects."""

    column: str
    leaves: tuple[JsonLeaf, ...]
    bad_slot: str

    @property
    def dtype(self) -> pl.Struct | None:
        tree: dict[str, object] = {}
        for leaf in self.leaves:
            if leaf.kind == "json":
                continue
            node = tree
            for key in leaf.path[:-1]:
                child = node.setdefault(key, {})
                assert isinstance(child, dict)
                node = child
            node[leaf.path[-1]] = leaf.dtype
        return _struct(tree) if tree else None


def _struct(tree: dict[str, object]) -> pl.Struct:
    return pl.Struct(
        {
            k: _struct(v) if isinstance(v, dict) else v  # type: ignore[misc]
            for k, v in tree.items()
        }
    )


def plan_json_columns(
    json_columns: dict[str, str],
    shapes: dict[str, JsonShape],
    schema: dict[str, pl.DataType],
    *,
    where: str,
    file: str,
) -> list[JsonColumn]:
    """``mapping.properties.json`` (``{column: prefix}``) resolved against one file's shapes."""
    out: list[JsonColumn] = []
    for i, (col, prefix) in enumerate(json_columns.items()):
        if schema[col] not in (pl.String, pl.Null):
            raise ConfigError(
                f"{where}: mapping.properties.json.{col}: column {col!r} of "
                f"{file} is {schema[col]}, not JSON text"
            )
        leaves: list[JsonLeaf] = []
        for n, (path, kind) in enumerate(shapes.get(col, JsonShape()).properties().items()):
            if kind == "json" and any("\\" in key for key in path):
                raise InputError(
                    f"{file}: mapping.properties.json.{col}: key "
                    f"{'.'.join(path)!r} holds lists or mixed values and has a "
                    "backslash in its name: it cannot be read"
                )
            leaves.append(JsonLeaf(path, kind, f"__j{i}_{n}", prefix + ".".join(path)))
        out.append(JsonColumn(col, tuple(leaves), f"__j{i}_bad"))
    return out


def refuse_clashes(
    column_keys: dict[str, str], columns: list[JsonColumn], *, where: str, file: str
) -> None:
    """Two sources of one property name (``column_keys``: property -> column): one line
    naming both."""
    origins = {key: f"column {col!r}" for key, col in column_keys.items()}
    for jc in columns:
        for leaf in jc.leaves:
            here = leaf.describe(jc.column)
            other = origins.setdefault(leaf.key, here)
            if other != here:
                raise ConfigError(
                    f"{where}: mapping.properties.json.{jc.column}: property "
                    f"{leaf.key!r} would come from both {other} and {here} in "
                    f"{file} (set a prefix, or rename/exclude the column)"
                )


def json_path(path: Path) -> str:
    """A JSONPath for ``path`` in bracket notation (any key but one with a backslash)."""
    return "$" + "".join("['" + key.replace("'", "\\'") + "']" for key in path)


def decode(frame: pl.DataFrame, spec: JsonColumn) -> list[pl.Series]:
    """The leaf columns of ``spec`` for a batch (null = omit), and its bad-cell flags.

    One ``json_decode`` of the whole column against the file's dtype; keys sent as JSON text
    are matched by path. A batch holding cells that are not objects decodes the others.
    """
    cells = frame.get_column(spec.column)
    readable = screened(cells)
    dtype = spec.dtype
    decoded: pl.Series | None = None
    if dtype is not None:
        valid = readable.is_not_null()
        try:
            decoded = readable.str.json_decode(dtype)
        except pl.exceptions.PolarsError:
            valid = objects(readable)
            decoded = _decode_valid(readable, valid, dtype)
        # A cell "null" is valid JSON but no object: it decodes to null.
        bad = cells.is_not_null() & (~valid | decoded.is_null())
    else:
        bad = cells.is_not_null() & ~objects(readable)
    good = cells.is_not_null() & ~bad
    out = [bad.alias(spec.bad_slot)]
    for leaf in spec.leaves:
        if leaf.kind == "json":
            value = cells.str.json_path_match(json_path(leaf.path))
        else:
            assert decoded is not None
            value = _leaf(decoded, leaf.path)
        out.append(pl.select(pl.when(good).then(value)).to_series().alias(leaf.slot))
    return out


def _decode_valid(cells: pl.Series, valid: pl.Series, dtype: pl.Struct) -> pl.Series:
    masked = pl.select(pl.when(valid).then(cells)).to_series()
    try:
        return masked.str.json_decode(dtype)
    except pl.exceptions.PolarsError:
        pass
    # Rare: an object polars reads as JSON but not against the file's types (a number past
    # float range, say). Cell by cell, so that only those cells are rejected.
    parts: list[pl.Series] = []
    for text in masked:
        one = pl.Series([text], dtype=pl.String)
        try:
            parts.append(one.str.json_decode(dtype))
        except pl.exceptions.PolarsError:
            parts.append(pl.Series([None], dtype=dtype))
    return pl.concat(parts)


def problem(spec: JsonColumn) -> Problem:
    """The INVALID_PROPERTY of a batch row whose cell is not a JSON object."""
    shown = pl.col(spec.column).str.slice(0, 60)
    return pl.col(spec.bad_slot), pl.lit(f"{spec.column}: is not a JSON object: ") + json_value(
        shown
    )
