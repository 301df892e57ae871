"""NDJSON blocks: when polars may parse a block of lines whole, and what a typed read proves.

Checking each line in Python costs several times what polars takes to parse it, so the reader
hands polars whole blocks and keeps the line-by-line path (:mod:`.sources`) for blocks where a
line needs it. Everything here looks at the bytes with numpy and answers conservatively: a
"no" only sends a block down the exact (slower) path, never changes what is read.

- :func:`whole_lines`: may the block go to polars as it is? Its lines are then exactly the
  records the line-by-line path would read, numbered consecutively.
- :func:`members_written` and :func:`members_read`: a block read with a schema loses nothing
  when the frame holds as many non-null members (key-value pairs, nested ones included) as
  the bytes hold. polars drops a key the schema lacks without a word, so this count is what
  lets preflight type a block by reading it with the types found so far. The first count
  never falls short and the second never exceeds, so only equality proves anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import polars as pl
from polars.datatypes import DataTypeClass

from .jsontypes import MAX_DEPTH, nesting

_NL, _QUOTE, _COLON, _SPACE, _BACKSLASH = 10, 34, 58, 32, 92
#: Null members with longer names are not looked up.
_NAME_BYTES = 64
_OPEN_OBJECT, _CLOSE_OBJECT, _OPEN_ARRAY = 123, 125, 91


def _lookup(*byte_values: int) -> npt.NDArray[np.bool_]:
    """A table answering "is this byte one of these?" for a whole array in one gather."""
    table = np.zeros(256, dtype=np.bool_)
    table[list(byte_values)] = True
    return table


_WHITESPACE = _lookup(_SPACE, 9, 13)
_Bytes = npt.NDArray[np.uint8]
#: How far back whitespace before a colon is followed to the byte that decides.
_WS_RUN = 4


def whole_lines(data: bytes, max_line: int) -> int | None:
    """The number of lines of ``data`` (whole lines, the last one may lack its newline) if
    each is a record polars may read as it is: none blank or starting with anything but
    ``{`` (whitespace, a BOM), longer than ``max_line`` bytes, or nested deeper than
    :data:`MAX_DEPTH` (polars crashes on those). Otherwise None.

    Counts over the whole block, not positions of lines: a few vector passes over the bytes.
    """
    if not data or data[0] != _OPEN_OBJECT:
        return None
    a = np.frombuffer(data, np.uint8)
    newlines = int(np.count_nonzero(a == _NL))
    unended = data[-1] != _NL
    # Every newline but a final one starts a line, and each must start with "{".
    if _pairs(a, _NL, _OPEN_OBJECT) != newlines - (not unended):
        return None
    lines = newlines + unended
    if len(data) > max_line and not _short_lines(data, a, max_line):
        return None
    # Each line opens at least one object, so unless the block holds MAX_DEPTH openers more
    # than it has lines, no line can nest that deep; otherwise count them line by line.
    openers = np.count_nonzero(a == _OPEN_OBJECT) + np.count_nonzero(a == _OPEN_ARRAY)
    if openers - lines >= MAX_DEPTH:
        starts, ends = _bounds(a)
        at = np.flatnonzero((a == _OPEN_OBJECT) | (a == _OPEN_ARRAY))
        per_line = np.searchsorted(at, ends) - np.searchsorted(at, starts)
        # The same test as the line-by-line path: only such lines are parsed to measure.
        for i in np.flatnonzero((per_line > MAX_DEPTH) & (ends - starts > 2 * MAX_DEPTH)):
            if too_deep(data[starts[i] : ends[i]]) is not None:
                return None
    return lines


def _pairs(a: _Bytes, first: int, second: int) -> int:
    """How many times byte ``first`` is followed by byte ``second``: two 16-bit passes."""
    value = first | second << 8
    n = len(a)
    even = a[: n - n % 2].view("<u2")
    odd = a[1 : 1 + (n - 1) - (n - 1) % 2].view("<u2")
    return int(np.count_nonzero(even == value) + np.count_nonzero(odd == value))


def _short_lines(data: bytes, a: _Bytes, max_line: int) -> bool:
    """Is no line longer than ``max_line``? Yes without locating lines if each stretch of
    half that length holds a newline; otherwise measured."""
    half = max(1, max_line // 2)
    if all(data.find(b"\n", k, k + half) >= 0 for k in range(0, len(data), half)):
        return True
    starts, ends = _bounds(a)
    return int((ends - starts).max()) <= max_line


def _bounds(a: _Bytes) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(start, end) offsets of each line, its newline excluded."""
    ends = np.flatnonzero(a == _NL)
    if not len(ends) or ends[-1] != len(a) - 1:
        ends = np.append(ends, len(a))
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    return starts, ends


@dataclass(frozen=True, slots=True)
class Written:
    """What the bytes of a block say about its members (:func:`members_written`)."""

    #: At least the non-null members (key-value pairs at any depth), exactly that in
    #: ordinary bytes.
    members: int
    #: The names of the members written null, if each is at the top level of its line as
    #: the braces count (a null member is invisible in a frame, so only its name and place
    #: can say that the types already know its key); None when one is not, or a name is
    #: unsure.
    null_names: frozenset[str] | None
    #: Both kinds of braces, as many of each: the top-level test above holds when every
    #: "{" opens an object (the frame's objects and the lines), none sits in a string.
    braces: int | None


def members_written(data: bytes) -> Written | None:
    """The members written in ``data``, whole JSON lines that polars parsed; None when a key
    may hide from the count.

    Each quote followed by a colon is counted as a key, less those whose value starts with
    ``n`` (only null does). A quote and a colon inside a string (an escaped quote, a string
    opening with a colon) count too, which can only make the count larger. What could make
    it smaller, a key with whitespace before its colon (``"a" :``), is answered None.
    """
    a = np.frombuffer(data, np.uint8)
    colons = np.flatnonzero(a == _COLON)
    colons = colons[colons >= 1]
    before = a[colons - 1]
    spaced = _WHITESPACE[before]
    if spaced.any() and not _text_colons(a, colons[spaced]):
        return None
    keys = colons[before == _QUOTE] - 1
    value = np.minimum(keys + 2, len(a) - 1)
    first = a[value]
    padded = first == _SPACE  # "key": value
    if padded.any():
        first = a[np.where(padded, np.minimum(value + 1, len(a) - 1), value)]
    nulls = first == ord("n")
    members = len(keys) - int(np.count_nonzero(nulls))
    if not nulls.any():
        return Written(members, frozenset(), None)
    opens = np.flatnonzero(a == _OPEN_OBJECT)
    closes = np.flatnonzero(a == _CLOSE_OBJECT)
    if len(opens) != len(closes):
        return Written(members, None, None)
    ends = keys[nulls]
    # Every line before is balanced, so the depth inside this line is the block's count.
    depth = np.searchsorted(opens, ends) - np.searchsorted(closes, ends)
    if (depth != 1).any():
        return Written(members, None, None)
    return Written(members, _names(a, ends), len(opens))


def _names(a: _Bytes, ends: npt.NDArray[np.intp]) -> frozenset[str] | None:
    """The distinct key names closed by the quotes at ``ends``; None when an escape or a long
    name leaves one unsure."""
    quotes = np.flatnonzero(a == _QUOTE)
    starts = quotes[np.searchsorted(quotes, ends) - 1]
    if (a[ends - 1] == _BACKSLASH).any() or (a[starts - 1] == _BACKSLASH).any():
        return None
    lengths = ends - starts - 1
    if int(lengths.max()) > _NAME_BYTES:
        return None
    # Fixed-width rows, zero-padded, so that numpy finds the distinct names.
    offsets = np.arange(_NAME_BYTES)
    at = np.minimum(starts[:, None] + 1 + offsets, len(a) - 1)
    table = np.where(offsets < lengths[:, None], a[at], 0).astype(np.uint8)
    distinct = np.unique(table, axis=0)
    try:
        return frozenset(bytes(row).rstrip(b"\0").decode() for row in distinct)
    except UnicodeDecodeError:
        return None


def _text_colons(a: _Bytes, colons: npt.NDArray[np.intp]) -> bool:
    """Are these colons, each after whitespace, surely not key separators (the last byte
    before the whitespace is not a quote)?"""
    at = colons - 1
    for _ in range(_WS_RUN):
        at = np.maximum(at - 1, 0)
        byte = a[at]
        if (byte == _QUOTE).any():
            return False
        spaced = _WHITESPACE[byte]
        if not spaced.any():
            return True
        at = at[spaced]
    return False


@dataclass(frozen=True, slots=True)
class Read:
    """What a frame read with a schema holds (:func:`members_read`)."""

    #: Non-null members, never more than its bytes hold.
    members: int
    #: Objects read as structs, the lines' own not counted.
    objects: int


def members_read(frame: pl.DataFrame) -> Read | None:
    """The members and objects a frame read with a schema holds (those of struct columns and
    of objects inside lists included); None when it may hold a value polars changed silently
    without losing a member: a list item read as text that was an object or an array (the
    file's types would then make the whole list text), or any item of a list typed as
    holding only nulls."""
    if not any(isinstance(dt, pl.Struct | pl.List) for dt in frame.dtypes):
        # Flat: each column's null count is kept with its data, no query needed.
        return Read(frame.height * frame.width - sum(frame.null_count().row(0)), 0)
    counts: list[pl.Expr] = [pl.lit(0, pl.UInt32)]
    objects: list[pl.Expr] = [pl.lit(0, pl.UInt32)]
    doubts: list[pl.Expr] = [pl.lit(False)]
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        counts.append(col.is_not_null().sum())
        _inside(col, _instance(dtype), counts, objects, doubts, in_list=False)
    row = frame.select(
        pl.sum_horizontal(counts).alias("members"),
        pl.sum_horizontal(objects).alias("objects"),
        pl.any_horizontal(doubts).alias("doubt"),
    ).row(0, named=True)
    return None if row["doubt"] else Read(int(row["members"]), int(row["objects"]))


def _inside(
    expr: pl.Expr,
    dtype: pl.DataType,
    counts: list[pl.Expr],
    objects: list[pl.Expr],
    doubts: list[pl.Expr],
    *,
    in_list: bool,
) -> None:
    if isinstance(dtype, pl.Struct):
        objects.append(expr.is_not_null().sum())
        for f in dtype.fields:
            field = expr.struct.field(f.name)
            counts.append(field.is_not_null().sum())
            _inside(field, _instance(f.dtype), counts, objects, doubts, in_list=False)
    elif isinstance(dtype, pl.List):
        inner = _instance(dtype.inner)
        if inner == pl.Null:
            doubts.append(expr.list.len().sum() > 0)
        _inside(expr.explode(), inner, counts, objects, doubts, in_list=True)
    elif in_list and dtype == pl.String:
        doubts.append(expr.str.slice(0, 1).is_in(["{", "["]).any())


def _instance(dtype: pl.DataType | DataTypeClass) -> pl.DataType:
    return dtype if isinstance(dtype, pl.DataType) else dtype()


def json_object(line: bytes) -> dict[str, Any] | str:
    """The line's object, or why it is not one."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        return f"invalid JSON: {e}"
    if not isinstance(value, dict):
        return f"a line must be a JSON object, not {type(value).__name__}"
    return value


def too_deep(line: bytes) -> str | None:
    """Why a line must not reach polars (too deep, or not JSON at all), or None."""
    problem = json_object(line)
    if isinstance(problem, str):
        return problem
    if nesting(problem) > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    return None
