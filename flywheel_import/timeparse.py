"""Timestamps: any supported input representation -> an instant in UTC (polars expressions).

Pure and vectorized. A value with an offset keeps its instant; a naive value takes the
configured timezone (times that do not exist or are ambiguous there, at DST changes, become
null and so are reported invalid rather than guessed); epoch numbers take ``unit``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .errors import ConfigError

#: RFC 3339 with an explicit UTC offset, at the precision the value carries.
RFC3339 = "%Y-%m-%dT%H:%M:%S%.fZ"

# Whole seconds first: a fixed-width pattern parses several times faster than one with %.f.
# Parses run with ``cache=False``: export timestamps are nearly all distinct, so polars' cache
# of unique values only costs (a third of the parse, measured on 2M values).
_NAIVE_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)
_UNIT_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
# Years 1..9999 in microseconds: the range RFC 3339 can write.
_MIN_US, _MAX_US = -62_135_596_800_000_000, 253_402_300_799_999_999


def to_utc(
    expr: pl.Expr,
    dtype: pl.DataType,
    *,
    timezone: str,
    fmt: str | None,
    unit: str | None,
    where: str,
) -> pl.Expr:
    """Expression giving ``Datetime(us, UTC)`` or null where the value cannot be read."""
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone:
            return expr.cast(pl.Datetime("us", dtype.time_zone)).dt.convert_time_zone("UTC")
        return _localize(expr.cast(pl.Datetime("us")), timezone)
    if isinstance(dtype, pl.Date):
        return _localize(expr.cast(pl.Datetime("us")), timezone)
    if dtype.is_numeric():
        if unit is None:
            raise ConfigError(f"{where}.unit: the column holds numbers; set unit: s, ms, us or ns")
        return _from_epoch(expr.cast(pl.Float64), unit)
    text = expr.cast(pl.String).str.strip_chars()
    if unit is not None:
        return _from_epoch(text.cast(pl.Float64, strict=False), unit)
    if fmt is not None:
        parsed = text.str.to_datetime(fmt, strict=False, time_unit="us", exact=True, cache=False)
        if "%z" in fmt or "%:z" in fmt or "%#z" in fmt:
            return parsed.dt.convert_time_zone("UTC")
        return _localize(parsed, timezone)
    return pl.coalesce(auto_candidates(text, timezone))


def auto_candidates(text: pl.Expr, timezone: str) -> list[pl.Expr]:
    """Each accepted ISO 8601 shape as its own parse: with an offset first, then naive."""
    aware = text.str.to_datetime("%+", strict=False, time_unit="us", cache=False)
    aware = aware.dt.convert_time_zone("UTC")
    return [aware] + [
        _localize(text.str.to_datetime(f, strict=False, time_unit="us", cache=False), timezone)
        for f in _NAIVE_FORMATS
    ]


class AutoParser:
    """Auto-detected text timestamps, fast: one parse per batch in the common case.

    The result is defined by the canonical order, ``pl.coalesce(auto_candidates(stripped))``
    (what :func:`to_utc` computes), and never depends on the batches seen before nor on other
    threads sharing this parser. Trying every shape on every value costs several parses; an
    export uses one shape, so the shape that worked best lately (a hint, shared by the
    threads) is tried first on the whole batch, as read, and only the values it leaves go
    through the canonical order, stripped, each shape on what the earlier ones left.

    Neither shortcut can change a value's instant. The shapes do not overlap except where
    they agree (an offset is required by the first and refused by the naive ones, which all
    read the same fields, missing ones as zero). And a shape either refuses surrounding
    whitespace (trailing) or skips it as the stripped text would (leading): stripping first
    costs a third of a parse, for values exports rarely have (tested against the canonical
    order, whitespace included).
    """

    def __init__(self, timezone: str) -> None:
        self._candidates = auto_candidates(pl.col("t"), timezone)
        self._first = 0

    def parse(self, text: pl.Series) -> pl.Series:
        first = self._first  # read once: another thread may move the hint meanwhile
        frame = pl.DataFrame({"t": text})
        out = frame.select(self._candidates[first].alias("t")).to_series()
        todo = frame.get_column("t").is_not_null() & out.is_null()
        if not todo.any():
            return out
        left = frame.filter(todo).select(pl.col("t").str.strip_chars())
        filled = pl.repeat(None, left.height, dtype=out.dtype, eager=True).alias("t")
        at = np.arange(left.height)  # the position in ``filled`` of each row of ``left``
        found = [0] * len(self._candidates)
        for i, cand in enumerate(self._candidates):
            if not left.height:
                break
            got = left.select(cand.alias("t")).to_series()
            hit = got.is_not_null().to_numpy()
            found[i] = int(hit.sum())
            if found[i]:
                filled = filled.scatter(at[hit], got.filter(pl.Series(hit)))
                left, at = left.filter(~hit), at[~hit]
        best = max(range(len(found)), key=found.__getitem__)
        if found[best] > len(filled) // 2:
            self._first = best
        return out.scatter(todo.arg_true(), filled)


def _localize(naive: pl.Expr, timezone: str) -> pl.Expr:
    return naive.dt.replace_time_zone(
        timezone, ambiguous="null", non_existent="null"
    ).dt.convert_time_zone("UTC")


def _from_epoch(number: pl.Expr, unit: str) -> pl.Expr:
    micros = (number * (1_000_000 / _UNIT_PER_SECOND[unit])).round(0)
    ok = number.is_finite() & (micros >= _MIN_US) & (micros <= _MAX_US)
    return (
        pl.when(ok)
        .then(micros.cast(pl.Int64, strict=False))
        .otherwise(None)
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
    )


def format_rfc3339(instant: pl.Expr) -> pl.Expr:
    return instant.dt.strftime(RFC3339)
