"""Event columns -> request bodies ``{"event": {...}}`` as JSON text (pure, vectorized).

Bodies are assembled by one flat polars ``concat_str`` per batch, never per-row objects. Text
values are written between literal quotes when the batch holds nothing that JSON must escape
(the common case, checked per column per batch) and through polars' JSON encoder otherwise;
either way the bytes are the same. Null values are omitted, never sent as ``null``.

The "core" is the event object without its id: name, user_id, anonymous_id, timestamp (UTC),
identify and the properties in column order. A derived id is computed from it
(:mod:`.eventid`), so two rows identical in every mapped value are one event.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import polars as pl

from .jsonexpr import json_value

#: Characters that JSON strings must escape (Aho-Corasick over literals: twice a regex's speed).
NEEDS_ESCAPE = [chr(i) for i in range(32)] + ['"', "\\"]


@dataclass(frozen=True, slots=True)
class Member:
    """One ``"key": value`` of the event object, read from column ``column`` of a batch."""

    key: str
    column: str
    quoted: bool


def key_text(key: str) -> str:
    return orjson.dumps(key).decode()


class Encoder:
    """Builds the core and body expressions for a batch (decisions depend on its content)."""

    def __init__(
        self,
        frame: pl.DataFrame,
        *,
        timestamp: bool,
        identify: bool | None,
        properties: Sequence[Member],
    ) -> None:
        self._frame = frame
        self._escapes: dict[str, bool] | None = None
        nulls = {c: frame.get_column(c).null_count() for c in frame.columns}
        self._nulls = {c: n > 0 for c, n in nulls.items()}
        self._all_null = {c: n == frame.height for c, n in nulls.items()}
        self._timestamp = timestamp
        self._timestamp_is_datetime = timestamp and isinstance(
            frame.schema.get("timestamp"), pl.Datetime
        )
        self._identify = identify
        self._properties = properties

    @property
    def _escape(self) -> dict[str, bool]:
        """Which quoted columns hold text JSON must escape: checked when first needed (a dry
        run whose rows are all far below the size limit never needs it)."""
        if self._escapes is None:
            quoted = [
                "event",
                "user_id",
                "anonymous_id",
                "event_id",
                *(m.column for m in self._properties if m.quoted),
            ]
            checks = self._frame.select(
                pl.col(c).str.contains_any(NEEDS_ESCAPE).any().alias(c) for c in quoted
            )
            escapes = {c: bool(v) for c, v in checks.row(0, named=True).items()}
            escapes["timestamp"] = False  # RFC 3339 text never needs escaping
            self._escapes = escapes
        return self._escapes

    def value(self, column: str, quoted: bool) -> list[pl.Expr]:
        col = pl.col(column)
        if not quoted:
            return [col]
        if self._escape.get(column, True):
            return [json_value(col)]
        return [pl.lit('"'), col, pl.lit('"')]

    def member(self, prefix: str, column: str, quoted: bool) -> list[pl.Expr]:
        """``prefix`` + value, omitted where the value is null."""
        parts = [pl.lit(prefix), *self.value(column, quoted)]
        if not self._nulls.get(column, True):
            return parts
        return [pl.when(pl.col(column).is_not_null()).then(pl.concat_str(parts))]

    def core_members(self) -> list[pl.Expr]:
        """Everything inside the event object after ``{`` (ends with the closing ``}``)."""
        parts = [
            pl.lit('"event":'),
            *self.value("event", True),
            *self.member(',"user_id":', "user_id", True),
            *self.member(',"anonymous_id":', "anonymous_id", True),
        ]
        if self._timestamp:
            parts += self.member(',"timestamp":', "timestamp", True)
        if self._identify is None:  # from a column
            parts.append(
                pl.when(pl.col("identify").is_not_null()).then(
                    pl.when(pl.col("identify"))
                    .then(pl.lit(',"identify":true'))
                    .otherwise(pl.lit(',"identify":false'))
                )
            )
        elif self._identify:
            parts.append(pl.lit(',"identify":true'))
        parts.append(pl.lit(',"properties":{'))
        parts += self._properties_parts()
        parts.append(pl.lit("}}"))
        return parts

    def _properties_parts(self) -> list[pl.Expr]:
        props = self._properties
        if not props:
            return []
        if not self._nulls.get(props[0].column, True):
            # The first member is always there: it needs no comma, the others lead with one.
            out = [
                pl.lit(key_text(props[0].key) + ":"),
                *self.value(props[0].column, props[0].quoted),
            ]
            for m in props[1:]:
                out += self.member("," + key_text(m.key) + ":", m.column, m.quoted)
            return out
        inner: list[pl.Expr] = []
        for m in props:
            inner += self.member("," + key_text(m.key) + ":", m.column, m.quoted)
        return [pl.concat_str(inner, ignore_nulls=True).str.slice(1)]

    def core(self) -> pl.Expr:
        return pl.concat_str([pl.lit("{"), *self.core_members()], ignore_nulls=True)

    # --- the same layout, measured instead of written (a dry run needs only the size) ---

    def _value_length(self, column: str, quoted: bool) -> pl.Expr:
        col = pl.col(column)
        if column == "timestamp" and self._timestamp_is_datetime:
            return rfc3339_length(col) + 2
        if not quoted:
            return col.str.len_bytes()
        if self._escape.get(column, True):
            return json_value(col).str.len_bytes()
        return col.str.len_bytes() + 2

    def _member_length(self, prefix: str, column: str, quoted: bool) -> pl.Expr:
        size = len(prefix.encode()) + self._value_length(column, quoted)
        return pl.when(pl.col(column).is_not_null()).then(size).otherwise(0)

    def _optional_members(self) -> list[tuple[str, str, bool]]:
        """(prefix, column, quoted) of the members a row may omit, in the core's order:
        user_id, anonymous_id, timestamp (when mapped), then the properties."""
        out = [(',"user_id":', "user_id", True), (',"anonymous_id":', "anonymous_id", True)]
        if self._timestamp:
            out.append((',"timestamp":', "timestamp", True))
        return out + [("," + key_text(m.key) + ":", m.column, m.quoted) for m in self._properties]

    def core_length(self) -> pl.Expr:
        """``core().str.len_bytes()`` computed from the value lengths alone (tested equal)."""
        optional = self._optional_members()
        fields = optional[: len(optional) - len(self._properties)]
        total = (
            len('{"event":')
            + self._value_length("event", True).fill_null(0)
            + len(',"properties":{')
            + len("}}")
        )
        for prefix, column, quoted in fields:
            total = total + self._member_length(prefix, column, quoted)
        if self._identify is None:
            total = total + pl.when(pl.col("identify").is_null()).then(0).when(
                pl.col("identify")
            ).then(len(',"identify":true')).otherwise(len(',"identify":false'))
        elif self._identify:
            total = total + len(',"identify":true')
        if self._properties:
            props = pl.sum_horizontal(
                self._member_length(prefix, column, quoted)
                for prefix, column, quoted in optional[len(fields) :]
            )
            total = total + pl.when(props > 0).then(props - 1).otherwise(0)
        return total.cast(pl.Int64)

    def core_length_bound(self) -> int | None:
        """At least every row's :meth:`core_length`, from each column's longest value alone;
        None when a member's type has no such bound.

        A JSON string is at most six bytes per byte of text (``\\u001f``), plus its quotes.
        Event rows are usually a few hundred bytes against a limit of tens of kilobytes, so
        this one aggregate per column spares measuring every row (and the escape checks that
        measuring needs).
        """
        members = [('"event":', "event", True), *self._optional_members()]
        schema = self._frame.schema
        text = list(dict.fromkeys(c for _, c, _ in members if schema[c] == pl.String))
        longest = (
            self._frame.select(pl.col(c).str.len_bytes().max() for c in text).row(0, named=True)
            if text
            else {}
        )
        total = len("{") + len(',"identify":false') + len(',"properties":{') + len("}}")
        for prefix, column, quoted in members:
            dtype = schema[column]
            if dtype == pl.String:
                n = longest[column] or 0
                size = 6 * n + 2 if quoted else n
            elif isinstance(dtype, pl.Datetime):
                size = 29  # quoted RFC 3339 with microseconds
            elif dtype == pl.Null:
                size = 0
            else:
                return None
            total += len(prefix.encode()) + size
        return total

    def content_hash(self, frame: pl.DataFrame) -> pl.Series:
        """A 64-bit fingerprint of each row's core: equal exactly when the cores are equal (so
        when the derived ids are), but computed without writing the core's text.

        A chain over the members in the order the core writes them: each present member
        hashes its value with a seed naming its key and whether the value is written as a
        JSON string, and the chain takes it in as ``h * K + value hash`` (wrapping 64-bit
        arithmetic, ``K`` odd); a null member is skipped (``h * 1 + 0``), as the core omits
        it. So ``{"page": "home"}`` and ``{"screen": "home"}`` differ, ``"5"`` and ``5``
        differ, the order of the members counts, and a null in a column that another file
        does not have changes nothing. One hash of the result spreads every member into every
        bit. Two different cores share a fingerprint with probability about 2^-64 per pair
        (the value hashes are uniform and ``K`` is invertible modulo 2^64). Multiplying and
        adding, the chain is one flat expression: skipping needs no branch, and rehashing at
        every link cost a fifth of the fingerprint.
        """
        h = pl.lit(_CHAIN_START, pl.UInt64)
        for seed, column in self._chain():
            if column is None:  # a member every core has, or the start of the properties
                h = h * _K + pl.lit(seed, pl.UInt64)
            elif self._all_null.get(column, False):
                continue
            elif self._nulls.get(column, True):
                present = pl.col(column).is_not_null()
                value = pl.when(present).then(pl.col(column).hash(seed=seed)).otherwise(_ZERO)
                h = h * pl.when(present).then(_K).otherwise(_ONE) + value
            else:
                h = h * _K + pl.col(column).hash(seed=seed)
        return frame.select(h.hash(seed=_MIX_SEED).alias(_CHAIN)).get_column(_CHAIN)

    def _chain(self) -> list[tuple[int, str | None]]:
        """(seed naming the member, column or None) for each member of the core, in order."""
        out: list[tuple[int, str | None]] = [
            (_seed("event", "event", True), "event"),
            (_seed("event", "user_id", True), "user_id"),
            (_seed("event", "anonymous_id", True), "anonymous_id"),
        ]
        if self._timestamp:
            out.append((_seed("event", "timestamp", True), "timestamp"))
        if self._identify is None:
            out.append((_seed("event", "identify", False), "identify"))
        elif self._identify:
            out.append((_seed("event", "identify", False, "true"), None))
        out.append((_seed("properties"), None))
        out += [(_seed("property", m.key, m.quoted), m.column) for m in self._properties]
        return out

    def body(self, event_id_column: str = "event_id") -> pl.Expr:
        """``{"event":{"event_id":...,<core members>}}``."""
        return pl.concat_str(
            [
                pl.lit('{"event":{"event_id":'),
                *self.value(event_id_column, True),
                pl.lit(","),
                *self.core_members(),
                pl.lit("}"),
            ],
            ignore_nulls=True,
        )

    def body_from_core(self, event_id_column: str = "event_id") -> pl.Expr:
        """The body from an already built ``core`` column (saves rebuilding the members)."""
        return pl.concat_str(
            [
                pl.lit('{"event":{"event_id":'),
                *self.value(event_id_column, True),
                pl.lit(","),
                pl.col("core").str.slice(1),
                pl.lit("}"),
            ]
        )


def rfc3339_length(instant: pl.Expr) -> pl.Expr:
    """Length of :data:`~.timeparse.RFC3339` text of a datetime(us): 20 characters, plus
    ``.fff`` or ``.ffffff`` when there is a fraction (``%.f`` prints 0, 3 or 6 digits at
    microsecond precision)."""
    us = instant.dt.microsecond()
    return pl.when(us == 0).then(20).when(us % 1000 == 0).then(24).otherwise(27).cast(pl.Int64)


@functools.lru_cache(maxsize=4096)
def _seed(*parts: str | bool) -> int:
    """A fixed 64-bit number naming a member: its place (event or properties), its key and
    whether its value is a JSON string."""
    digest = hashlib.blake2b(orjson.dumps(parts), digest_size=8).digest()
    return int.from_bytes(digest, "little")


_CHAIN_START, _MIX_SEED = _seed("core"), _seed("mix")
_CHAIN = "__content_chain"
_K = pl.lit(0x9E3779B97F4A7C15, pl.UInt64)  # odd: multiplying by it is invertible mod 2^64
_ONE, _ZERO = pl.lit(1, pl.UInt64), pl.lit(0, pl.UInt64)

#: Bytes the body adds to the core besides the id's JSON: it wraps the core as
#: '{"event":' + '{"event_id":' + id + ',' + core without its '{' + '}'.
BODY_OVERHEAD = len('{"event":{"event_id":,}') - len("{")
