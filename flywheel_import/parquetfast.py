"""Parquet files polars can read by itself, to the very frames the exact reader builds.

The exact reader (:func:`.sources.parquet_frame`) decodes each record batch with pyarrow, then
takes it through :func:`.arrowtypes.convert` and ``pl.from_arrow``; most of that time is
pyarrow's decoding. For columns the conversion keeps as they are, polars' own reader is
several times faster and gives the same values. "The same" must hold for every file, so a
file is read this way only when, before reading:

- every column is of a type the conversion keeps (:func:`.arrowtypes.kept`), stored the way
  Parquet stores that very type (no INT96, no integer narrowed or timestamp unit changed on
  read: conversions the two readers might make differently);
- polars reads the file's schema to exactly the types of the exact reader's frames (this
  also rules out what the first check lets through and polars reads otherwise);
- its row groups are not many tiny ones (polars reads those slower than pyarrow);

and, while reading:

- text that is not UTF-8 makes polars fail (it checks every value, as the conversion does),
  as does anything else it cannot read: the caller reads on from the first row not yet
  yielded with the exact reader, which rejects those rows or names the damage as today;
- a batch holding a date or time outside years 1-9999 (rows the conversion rejects) is
  reported by :meth:`FastPlan.out_of_range`, for the caller to read it exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from .arrowtypes import convert, empty_batch, instant_bounds, kept
from .errors import InputError

#: Many row groups (more than this) of under _SMALL_GROUP_ROWS rows on average read slower
#: with polars than with pyarrow (measured: 20,000 groups of 10 rows, 1.6 s against 1.1 s).
_MANY_GROUPS = 64
_SMALL_GROUP_ROWS = 100


@dataclass(frozen=True, slots=True)
class FastPlan:
    """How polars reads one local Parquet file: the frames' schema, the columns whose stored
    integers must lie within bounds (dates and times in years 1-9999), and the rows of each
    row group."""

    path: Path
    schema: pl.Schema
    bounds: dict[str, tuple[int, int]]
    row_groups: list[int]

    def frames(self, batch_rows: int) -> Iterator[tuple[int, pl.DataFrame]]:
        """(rows asked for, frame) for the file's rows in order, at most twice ``batch_rows``
        at a time (the caller slices them into batches).

        Each part is read when asked for: polars' own batched reader runs ahead of a slow
        consumer by many row groups, holding them in memory. A part is whole row groups
        where they are small enough, so each is decoded once.
        """
        lazy = pl.scan_parquet(self.path, glob=False, hive_partitioning=False)
        for start, rows in parts(self.row_groups, 2 * batch_rows):
            yield rows, lazy.slice(start, rows).collect()

    def out_of_range(self, frame: pl.DataFrame) -> bool:
        """Does a bounded column of ``frame`` hold a value outside its bounds?"""
        if not self.bounds or not frame.height:
            return False
        aggs: list[pl.Expr] = []
        for i, name in enumerate(self.bounds):
            stored = pl.col(name).to_physical()
            aggs += [stored.min().alias(f"lo{i}"), stored.max().alias(f"hi{i}")]
        row = frame.select(aggs).row(0)
        for i, (lo, hi) in enumerate(self.bounds.values()):
            least, most = row[2 * i], row[2 * i + 1]
            if least is not None and (least < lo or most > hi):
                return True
        return False


def fast_plan(pf: Any, path: Path, source: str) -> FastPlan | None:
    """A plan to read ``path`` (opened by pyarrow as ``pf``) with polars, or None when the
    exact reader must (see the module docstring)."""
    arrow: pa.Schema = pf.schema_arrow
    if not all(kept(f.type) for f in arrow):
        return None
    groups = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    if len(groups) > _MANY_GROUPS and sum(groups) < _SMALL_GROUP_ROWS * len(groups):
        return None  # polars spends more per row group than pyarrow: tiny ones read slower
    columns = [pf.schema.column(i) for i in range(len(pf.schema))]
    if len(columns) != len(arrow):
        return None
    if not all(_stored_as_itself(f.type, c) for f, c in zip(arrow, columns, strict=True)):
        return None
    try:
        expected = pl.from_arrow(convert(empty_batch(arrow), source).batch)
        found = pl.scan_parquet(path, glob=False, hive_partitioning=False).collect_schema()
    except (InputError, pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError):
        # Such as duplicate names: the exact reader reports what it finds, as ever.
        return None
    if not isinstance(expected, pl.DataFrame) or found != expected.schema:
        return None
    bounds = {f.name: b for f in arrow if (b := instant_bounds(f.type)) is not None}
    return FastPlan(path, found, bounds, groups)


def parts(row_groups: list[int], limit: int) -> Iterator[tuple[int, int]]:
    """(first row, rows) of consecutive parts of at most ``limit`` rows: neighbouring row
    groups that fit together, or pieces of one larger than ``limit``."""
    start = rows = 0
    for n in row_groups:
        if rows and rows + n > limit:
            yield start, rows
            start, rows = start + rows, 0
        if n > limit:
            for off in range(0, n, limit):
                yield start + off, min(limit, n - off)
            start += n
        else:
            rows += n
    if rows:
        yield start, rows


#: The bits of each integer type, as Parquet's ``Int`` logical type states them.
_INT_WIDTHS = {
    pa.int8(): 8,
    pa.int16(): 16,
    pa.int32(): 32,
    pa.int64(): 64,
    pa.uint8(): 8,
    pa.uint16(): 16,
    pa.uint32(): 32,
    pa.uint64(): 64,
}
_UNITS = {"ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def _stored_as_itself(t: pa.DataType, column: Any) -> bool:
    """Is the Parquet column stored as Arrow type ``t`` itself, so that neither reader
    converts its values on the way?"""
    physical: str = column.physical_type
    logical: dict[str, Any] = json.loads(column.logical_type.to_json())
    kind = logical.get("Type")
    if pa.types.is_null(t):
        return kind == "Null"
    if pa.types.is_boolean(t):
        return physical == "BOOLEAN" and kind == "None"
    if pa.types.is_integer(t):
        width = _INT_WIDTHS[t]
        if physical != ("INT64" if width == 64 else "INT32"):
            return False
        if kind == "None":
            return pa.types.is_signed_integer(t) and width in (32, 64)
        return (
            kind == "Int"
            and logical.get("bitWidth") == width
            and logical.get("isSigned") == pa.types.is_signed_integer(t)
        )
    if pa.types.is_float32(t):
        return physical == "FLOAT" and kind == "None"
    if pa.types.is_float64(t):
        return physical == "DOUBLE" and kind == "None"
    if pa.types.is_date32(t):
        return physical == "INT32" and kind == "Date"
    if pa.types.is_timestamp(t):
        return (
            physical == "INT64"
            and kind == "Timestamp"
            and logical.get("timeUnit") == _UNITS.get(t.unit)
        )
    # UTF-8 text
    return physical == "BYTE_ARRAY" and kind == "String"
