"""Arrow columns -> types the mapping understands: one conversion for Parquet schema and data.

polars imports most Arrow types, but not all (decimal256, intervals, unions, list views); some
into types that cannot be sent (binary, times of day, durations, maps); and some values
without checking them, only to panic later (text that is not UTF-8, dates past year 9999). So
every record batch passes through :func:`convert` before polars sees it, and preflight converts
an empty batch of the file's schema the same way: a file is planned with exactly the types its
batches will have. What a column becomes depends on its type only, never on a batch's values:

- UUID (``arrow.uuid``, or any ``fixed_size_binary(16)``, which is how DuckDB and Spark store
  them) -> lowercase ``8-4-4-4-12`` text; other binary -> lowercase hex text;
- dictionary and run-end encoded -> decoded values; ``string_view`` -> text;
- times of day -> ``HH:MM:SS`` or ``HH:MM:SS.ffffff`` text (nanoseconds are truncated);
- durations -> exact seconds as a decimal number (1500 ms -> ``1.500``);
- decimals -> ``decimal128`` (their text as written); those wider than 38 digits, which
  polars cannot hold, -> exact number text, listed in :attr:`Converted.number_text`;
- timestamps with a time zone -> the same instants in UTC (any zone name Arrow allows);
- maps -> JSON object text; fixed-size lists and list views -> lists; float16 -> float32;
- anything else -> Arrow's string cast, or else Python's ``str`` of each value.

A value that cannot be represented at all (an instant outside years 1-9999, a time of day
outside 0-24 h, text that is not UTF-8) makes its row a *problem*: :func:`convert` empties the
value and reports the row, which the reader rejects as ``MALFORMED_ROW``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import polars as pl
import pyarrow as pa

from .errors import InputError
from .jsonexpr import json_value
from .jsontypes import MAX_DEPTH

Mask = npt.NDArray[np.bool_]
Problem = tuple[Mask, str]  # rows (of the array at hand) and why

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_DECIMAL128_DIGITS = 38
_TIME_US_PER_DAY = 86_400_000_000
_RANGE_REASON = "date/time outside years 1-9999"
# Years 1..9999 (what RFC 3339 can write) per storage unit; int64 nanoseconds always fit.
_SECONDS_MIN, _SECONDS_MAX = -62_135_596_800, 253_402_300_799
_INSTANT_RANGE = {
    "s": (_SECONDS_MIN, _SECONDS_MAX),
    "ms": (_SECONDS_MIN * 1_000, _SECONDS_MAX * 1_000 + 999),
    "us": (_SECONDS_MIN * 1_000_000, _SECONDS_MAX * 1_000_000 + 999_999),
    "date32": (-719_162, 2_932_896),
}
_DURATION_SCALE = {"s": 0, "ms": 3, "us": 6, "ns": 9}


def _compute() -> Any:
    """``pyarrow.compute``, loaded on first use: a quarter of a Parquet dry run's start when
    polars reads the file and nothing is converted here."""
    import pyarrow.compute

    return pyarrow.compute


@dataclass(slots=True)
class Converted:
    """A record batch polars can import, and what :func:`convert` found on the way."""

    batch: pa.RecordBatch
    number_text: list[str] = field(default_factory=list)  # columns (dotted) of number text
    problems: dict[int, str] = field(default_factory=dict)  # row index -> reason


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    """A batch of no rows: what preflight converts to learn the types of the batches."""
    return pa.RecordBatch.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema)


def convert(batch: pa.RecordBatch, source: str) -> Converted:
    """Convert every column (see the module docstring); ``source`` names the file in errors."""
    names = batch.schema.names
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"{source}: duplicate column name(s): {', '.join(map(repr, twice))}")
    for f in batch.schema:
        if _depth(f.type) > MAX_DEPTH:
            raise InputError(f"{source}: column {f.name!r} nests deeper than {MAX_DEPTH} levels")
    number_text: list[str] = []
    arrays: list[pa.Array] = []
    found: list[Problem] = []
    for name, column in zip(names, batch.columns, strict=True):
        array, problems = _convert(column, _Where(source, name, name, number_text))
        arrays.append(array)
        found.extend(problems)
    out = pa.RecordBatch.from_arrays(arrays, names=names)
    reasons: dict[int, str] = {}
    for mask, why in found:
        for i in np.flatnonzero(mask).tolist():
            reasons.setdefault(int(i), why)
    return Converted(out, number_text, dict(sorted(reasons.items())))


def kept(t: pa.DataType) -> bool:
    """Does :func:`convert` return arrays of type ``t`` as they are, apart from emptying
    problem values? (null, booleans, integers, float32/64, UTF-8 text, date32, timestamps in
    ms/us/ns without a zone or in UTC.) polars can then read such columns itself."""
    if pa.types.is_timestamp(t):
        return t.unit != "s" and t.tz in (None, "UTC")
    return bool(
        pa.types.is_null(t)
        or pa.types.is_boolean(t)
        or pa.types.is_integer(t)
        or pa.types.is_float32(t)
        or pa.types.is_float64(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or _is(t, "is_string_view")
        or pa.types.is_date32(t)
    )


def instant_bounds(t: pa.DataType) -> tuple[int, int] | None:
    """The stored integers of a date or timestamp type that lie in years 1-9999 (inclusive
    bounds); None: every value does (nanoseconds) or the type is no instant."""
    if pa.types.is_date32(t):
        return _INSTANT_RANGE["date32"]
    if pa.types.is_date64(t):
        return _INSTANT_RANGE["ms"]
    if pa.types.is_timestamp(t):
        return _INSTANT_RANGE.get(t.unit)
    return None


def row_text(batch: pa.RecordBatch, rows: list[int]) -> list[str]:
    """Rows of the original batch as JSON-ish text, for the rejects file's ``_raw``.

    Only for problem rows (a handful): each value is shown as best it can be, since some of
    them cannot be turned into Python objects at all.
    """
    columns = list(zip(batch.schema.names, batch.columns, strict=True))
    out = []
    for i in rows:
        record = {name: _cell(column, i) for name, column in columns}
        out.append(orjson.dumps(record, default=_json_default).decode())
    return out


# --- the conversion, recursively -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Where:
    source: str
    label: str  # for messages: the column, ``[]`` for list items, ``{}`` for map entries
    path: str | None  # the flattened column name; None inside lists and maps
    number_text: list[str]

    def child(self, name: str) -> _Where:
        path = None if self.path is None else f"{self.path}.{name}"
        return _Where(self.source, f"{self.label}.{name}", path, self.number_text)

    def item(self, suffix: str) -> _Where:
        return _Where(self.source, self.label + suffix, None, self.number_text)


def _convert(arr: pa.Array, where: _Where) -> tuple[pa.Array, list[Problem]]:
    t = arr.type
    if isinstance(t, pa.BaseExtensionType):
        storage = arr.storage
        if t.extension_name == "arrow.uuid":
            return _uuid_text(storage), []
        if t.extension_name == "arrow.bool8":
            return _compute().not_equal(storage, 0), []
        return _convert(storage, where)
    if pa.types.is_dictionary(t):
        return _convert(arr.dictionary_decode(), where)
    if pa.types.is_run_end_encoded(t):
        return _convert(_compute().run_end_decode(arr), where)
    if (
        pa.types.is_null(t)
        or pa.types.is_boolean(t)
        or pa.types.is_integer(t)
        or pa.types.is_float32(t)
        or pa.types.is_float64(t)
    ):
        return arr, []
    if pa.types.is_float16(t):
        return arr.cast(pa.float32()), []
    if pa.types.is_string(t) or pa.types.is_large_string(t) or _is(t, "is_string_view"):
        return _utf8(arr, where)
    if pa.types.is_fixed_size_binary(t):
        return (_uuid_text(arr) if t.byte_width == 16 else _hex_text(arr)), []
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or _is(t, "is_binary_view"):
        return _hex_text(arr), []
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return _instants(arr, where)
    if pa.types.is_time(t):
        return _time_of_day(arr, where)
    if pa.types.is_duration(t):
        return _seconds(arr), []
    if pa.types.is_decimal(t):
        return _decimal(arr, where), []
    if pa.types.is_struct(t):
        return _struct(arr, where)
    if pa.types.is_map(t):
        return _map(arr, where)
    if (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or _is(t, "is_list_view")
        or _is(t, "is_large_list_view")
    ):
        return _list(arr, where)
    return _fallback(arr, where), []


def _depth(t: pa.DataType) -> int:
    """How deeply a type nests (structs, lists, maps); not recursive, so any depth is safe."""
    deepest = 0
    todo = [(t, 0)]
    while todo:
        t, depth = todo.pop()
        deepest = max(deepest, depth)
        if isinstance(t, pa.BaseExtensionType):
            todo.append((t.storage_type, depth))
        elif pa.types.is_dictionary(t) or pa.types.is_run_end_encoded(t):
            todo.append((t.value_type, depth))
        elif pa.types.is_map(t):
            todo += [(t.key_type, depth + 1), (t.item_type, depth + 1)]
        elif pa.types.is_struct(t):
            todo += [(t.field(i).type, depth + 1) for i in range(t.num_fields)]
        elif hasattr(t, "value_type"):
            todo.append((t.value_type, depth + 1))  # the list types
    return deepest


def _is(t: pa.DataType, test: str) -> bool:
    """A type test that older pyarrow versions may not have (their types cannot occur)."""
    check: Callable[[pa.DataType], bool] | None = getattr(pa.types, test, None)
    return bool(check(t)) if check is not None else False


def _with_nulls(values: pa.Array, like: pa.Array) -> pa.Array:
    """``values`` with nulls wherever ``like`` has them."""
    if not like.null_count:
        return values
    return _compute().if_else(_compute().is_valid(like), values, pa.scalar(None, values.type))


def _blank(arr: pa.Array, mask: Mask) -> pa.Array:
    return _compute().if_else(pa.array(mask), pa.scalar(None, arr.type), arr)


def _utf8(arr: pa.Array, where: _Where) -> tuple[pa.Array, list[Problem]]:
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.large_string())  # (a cast of any kind loads pyarrow.compute)
    try:
        arr.validate(full=True)
        return arr, []
    except pa.ArrowInvalid:
        pass
    # Rare path: find the rows (polars would take the bytes as they are, then panic on them).
    raw = arr.cast(pa.large_binary()).to_pylist()
    bad = np.array([v is not None and not _is_utf8(v) for v in raw], dtype=np.bool_)
    return _blank(arr, bad), [(bad, f"{where.label}: text is not valid UTF-8")]


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _hex_digits(data: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    out = np.empty(len(data) * 2, dtype=np.uint8)
    out[0::2] = _HEX[data >> 4]
    out[1::2] = _HEX[data & 15]
    return out


def _fixed_bytes(arr: pa.Array) -> npt.NDArray[np.uint8]:
    """The values of a fixed_size_binary array as one byte array (nulls as zeros)."""
    width = arr.type.byte_width
    buf = arr.buffers()[1]
    if buf is None:
        return np.zeros(len(arr) * width, dtype=np.uint8)
    data = np.frombuffer(buf, dtype=np.uint8)
    return data[arr.offset * width : (arr.offset + len(arr)) * width]


def _string_array(
    n: int, offsets: npt.NDArray[np.int64], chars: npt.NDArray[np.uint8], like: pa.Array
) -> pa.Array:
    out = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))
    return _with_nulls(out, like)


def _uuid_text(arr: pa.Array) -> pa.Array:
    """16-byte values -> canonical lowercase ``8-4-4-4-12`` text."""
    n = len(arr)
    digits = _hex_digits(_fixed_bytes(arr)).reshape(n, 32)
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    for dst, src, width in ((0, 0, 8), (9, 8, 4), (14, 12, 4), (19, 16, 4), (24, 20, 12)):
        text[:, dst : dst + width] = digits[:, src : src + width]
    offsets = np.arange(n + 1, dtype=np.int64) * 36
    return _string_array(n, offsets, text.reshape(-1), arr)


def _hex_text(arr: pa.Array) -> pa.Array:
    """Binary values -> lowercase hex text, vectorized over the value buffer."""
    n = len(arr)
    if pa.types.is_fixed_size_binary(arr.type):
        width = arr.type.byte_width
        offsets = np.arange(n + 1, dtype=np.int64) * (2 * width)
        return _string_array(n, offsets, _hex_digits(_fixed_bytes(arr)), arr)
    arr = arr.cast(pa.large_binary())
    offs_buf, data_buf = arr.buffers()[1], arr.buffers()[2]
    if n == 0 or offs_buf is None:
        return pa.array([None] * n, pa.large_string())
    offs = np.frombuffer(offs_buf, dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8)
        if data_buf is not None
        else np.zeros(0, dtype=np.uint8)
    )[int(offs[0]) : int(offs[-1])]
    return _string_array(n, (offs - offs[0]) * 2, _hex_digits(data), arr)


def _out_of_range(values: pa.Array, lo: int, hi: int) -> Mask:
    storage = pa.int32() if pa.types.is_date32(values.type) else pa.int64()
    ints = values.view(storage)
    bad = _compute().or_(_compute().less(ints, lo), _compute().greater(ints, hi)).fill_null(False)
    return np.asarray(bad.to_numpy(zero_copy_only=False), dtype=np.bool_)


def _instants(arr: pa.Array, where: _Where) -> tuple[pa.Array, list[Problem]]:
    t = arr.type
    if pa.types.is_timestamp(t) and t.tz is not None:
        # Stored values are UTC instants already; the zone name (which polars might not know,
        # e.g. "+01:00") only matters for display, and the API is sent UTC.
        arr = arr.cast(pa.timestamp(t.unit, "UTC"))
    bounds = instant_bounds(t)
    if bounds is None or not len(arr):
        return arr, []
    bad = _out_of_range(arr, *bounds)
    if not bad.any():
        return arr, []
    return _blank(arr, bad), [(bad, f"{where.label}: {_RANGE_REASON}")]


def _time_of_day(arr: pa.Array, where: _Where) -> tuple[pa.Array, list[Problem]]:
    micros = arr.cast(pa.time64("us"), safe=False)  # nanoseconds are truncated
    problems: list[Problem] = []
    if len(arr):
        bad = _out_of_range(micros, 0, _TIME_US_PER_DAY - 1)
        if bad.any():
            micros = _blank(micros, bad)
            problems.append((bad, f"{where.label}: time of day outside 00:00-24:00"))
    text = _compute().replace_substring_regex(micros.cast(pa.large_string()), r"\.0{6}$", "")
    return text, problems


def _seconds(arr: pa.Array) -> pa.Array:
    """A duration -> exact seconds: the stored integer read as a decimal of the unit's scale."""
    n = len(arr)
    ticks = np.asarray(
        arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64
    )
    words = np.empty((n, 2), dtype=np.int64)  # little-endian 128-bit two's complement
    words[:, 0] = ticks
    words[:, 1] = ticks >> 63
    dtype = pa.decimal128(_DECIMAL128_DIGITS, _DURATION_SCALE[arr.type.unit])
    out = pa.Array.from_buffers(dtype, n, [None, pa.py_buffer(words)])
    return _with_nulls(out, arr)


def _decimal(arr: pa.Array, where: _Where) -> pa.Array:
    t = arr.type
    precision, scale = t.precision, t.scale
    if scale < 0:
        # 12300 as (5, -2): the same values fit (7, 0) exactly.
        precision, scale = precision - scale, 0
    precision = max(precision, scale)
    if precision <= _DECIMAL128_DIGITS:
        target = pa.decimal128(precision, scale)
        return arr if t == target else arr.cast(target)
    # Too wide for polars: the exact text, written into the JSON as a number.
    if where.path is not None:
        where.number_text.append(where.path)
    return arr.cast(pa.large_string())


def _struct(arr: pa.Array, where: _Where) -> tuple[pa.Array, list[Problem]]:
    t = arr.type
    if t.num_fields == 0:
        return pa.nulls(len(arr)), []
    names = [t.field(i).name for i in range(t.num_fields)]
    children: list[pa.Array] = []
    problems: list[Problem] = []
    for name, child in zip(names, arr.flatten(), strict=True):  # parent nulls applied
        converted, found = _convert(child, where.child(name))
        children.append(converted)
        problems.extend(found)
    mask = arr.is_null() if arr.null_count else None
    return pa.StructArray.from_arrays(children, names=names, mask=mask), problems


def _lengths(arr: pa.Array) -> npt.NDArray[np.int64]:
    return np.asarray(
        _compute().list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False),
        dtype=np.int64,
    )


def _rebuild(arr: pa.Array, lengths: npt.NDArray[np.int64], values: pa.Array) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    mask = arr.is_null() if arr.null_count else None
    return pa.LargeListArray.from_arrays(pa.array(offsets), values, mask=mask)


def _to_rows(problems: list[Problem], lengths: npt.NDArray[np.int64]) -> list[Problem]:
    """Problems found among list items -> problems of the rows holding those items."""
    if not problems:
        return []
    parents = np.repeat(np.arange(len(lengths)), lengths)
    out: list[Problem] = []
    for mask, why in problems:
        rows = np.zeros(len(lengths), dtype=np.bool_)
        rows[parents[mask]] = True
        out.append((rows, why))
    return out


def _list(arr: pa.Array, where: _Where) -> tuple[pa.Array, list[Problem]]:
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        arr = arr.cast(pa.large_list(t.value_type))  # list views
    lengths = _lengths(arr)
    values, found = _convert(arr.flatten(), where.item("[]"))  # null lists' items skipped
    return _rebuild(arr, lengths, values), _to_rows(found, lengths)


def _map(arr: pa.Array, where: _Where) -> tuple[pa.Array, list[Problem]]:
    """Map -> JSON object text, built for all entries at once: ``{"k":v,...}``."""
    if arr.offset:  # a slice: rebuilt lists take offsets or a validity slice, not both
        arr = arr.take(pa.array(np.arange(len(arr), dtype=np.int64)))
    entries = pa.StructArray.from_arrays([arr.keys, arr.items], names=["k", "v"])
    as_list = pa.ListArray.from_arrays(
        arr.offsets, entries, mask=arr.is_null() if arr.null_count else None
    )
    lengths = _lengths(as_list)
    flat = as_list.flatten()
    keys, key_problems = _convert(flat.field(0), where.item("{}"))
    values, value_problems = _convert(flat.field(1), where.item("{}"))
    frame = pl.from_arrow(pa.table({"k": keys, "v": values}))
    assert isinstance(frame, pl.DataFrame)
    key_text = pl.col("k") if frame.schema["k"] == pl.String else pl.col("k").cast(pl.String)
    texts = (
        frame.select(
            pl.concat_str(
                json_value(key_text), pl.lit(":"), json_value(pl.col("v")).fill_null(pl.lit("null"))
            ).alias("e")
        )
        .to_series()
        .to_arrow()
        .cast(pa.large_string())
    )

    def text(value: str) -> pa.Scalar:
        return pa.scalar(value, pa.large_string())

    joined = _compute().binary_join(_rebuild(as_list, lengths, texts), text(","))
    return (
        _compute().binary_join_element_wise(text("{"), joined, text("}"), text("")),
        _to_rows(key_problems + value_problems, lengths),
    )


def _fallback(arr: pa.Array, where: _Where) -> pa.Array:
    """A type with no better reading: its text, from Arrow if it can, else from Python."""
    try:
        return arr.cast(pa.large_string())
    except pa.ArrowException:
        pass
    try:
        values = arr.to_pylist()
    except Exception as e:  # pyarrow raises its own hierarchy and Python's errors
        raise InputError(
            f"{where.source}: column {where.label!r} of Arrow type {arr.type} cannot be read: {e}"
        ) from None
    return pa.array([None if v is None else str(v) for v in values], pa.large_string())


# --- raw text of problem rows ----------------------------------------------------------------


def _cell(column: pa.Array, i: int) -> Any:
    try:
        return column[i].as_py()
    except Exception:  # a value Python cannot hold (year 11000, bad UTF-8): Arrow shows it
        pass
    one = column.slice(i, 1)
    try:
        return bytes(one.cast(pa.large_binary())[0].as_py() or b"").decode("utf-8", "replace")
    except Exception:  # not a text column
        pass
    try:
        return one.cast(pa.large_string())[0].as_py()
    except Exception:  # nested: pyarrow's own printing shows what it can
        return one.to_string(indent=0, window=3)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
