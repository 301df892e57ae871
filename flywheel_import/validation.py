"""Event columns -> per-row error flags, codes and messages (pure, vectorized).

Each check is one boolean polars expression; a row's codes are listed in the fixed order of
:data:`flywheel_import.errors.CODE_ORDER`, joined by ``;``, with one message per code joined
by ``; ``. Checks that need state across batches (duplicate ids) or the encoded body (size)
are computed by the caller and passed in as flag columns.
"""

from __future__ import annotations

import functools

import polars as pl

from .errors import CODE_ORDER, ErrorCode
from .names import VALID_NAME

EVENT_NAME = VALID_NAME


def flag(code: ErrorCode) -> str:
    return f"e_{code.value}"


def _quoted(col: str) -> pl.Expr:
    return pl.lit("'") + pl.col(col).str.slice(0, 80) + pl.lit("'")


# The expressions are built once per setting, not per batch: building them is Python work
# that holds the GIL the examining threads share (measured: half the cost of a small batch).
@functools.cache
def row_checks(
    *, timestamp_mapped: bool, require_identity: bool, names: bool = True
) -> tuple[pl.Expr, ...]:
    """Flag columns for the checks that depend on the row alone; ``names=False`` leaves out
    INVALID_EVENT_NAME, for the caller to add the batch's :func:`name_check`."""
    event = pl.col("event")
    has_user = pl.col("user_id").is_not_null()
    checks = {
        ErrorCode.MISSING_EVENT_NAME: event.is_null(),
        ErrorCode.INVALID_EVENT_NAME: event.is_not_null() & ~event.str.contains(EVENT_NAME),
        ErrorCode.MISSING_TIMESTAMP: (
            pl.col("ts_raw").is_null() if timestamp_mapped else pl.lit(False)
        ),
        ErrorCode.INVALID_TIMESTAMP: (
            pl.col("ts_raw").is_not_null() & pl.col("timestamp").is_null()
        ),
        ErrorCode.MISSING_IDENTITY: (
            ~has_user & pl.col("anonymous_id").is_null() if require_identity else pl.lit(False)
        ),
        ErrorCode.IDENTIFY_WITHOUT_USER_ID: pl.col("identify").fill_null(False) & ~has_user,
        ErrorCode.INVALID_IDENTIFY: (
            pl.col("identify_raw").is_not_null() & pl.col("identify").is_null()
        ),
        ErrorCode.INVALID_PROPERTY: pl.col("prop_errors").is_not_null(),
    }
    if not names:
        del checks[ErrorCode.INVALID_EVENT_NAME]
    return tuple(expr.fill_null(False).alias(flag(code)) for code, expr in checks.items())


def name_check(names: pl.Series) -> pl.Expr | None:
    """The INVALID_EVENT_NAME flag of a batch whose ``names`` repeat, as they do in exports
    (a few dozen event names): the pattern is matched once per distinct name, not once per
    row (matching cost three times the hashing that finds them). None when most differ."""
    distinct = names.drop_nulls().unique()
    if len(distinct) > len(names) // 8:
        return None
    bad = distinct.filter(~distinct.str.contains(EVENT_NAME))
    listed = pl.lit(False) if bad.is_empty() else pl.col("event").is_in(pl.lit(bad).implode())
    return listed.fill_null(False).alias(flag(ErrorCode.INVALID_EVENT_NAME))


_ROW_FLAGS = (
    ErrorCode.MISSING_EVENT_NAME,
    ErrorCode.INVALID_EVENT_NAME,
    ErrorCode.MISSING_TIMESTAMP,
    ErrorCode.INVALID_TIMESTAMP,
    ErrorCode.MISSING_IDENTITY,
    ErrorCode.IDENTIFY_WITHOUT_USER_ID,
    ErrorCode.INVALID_IDENTIFY,
    ErrorCode.INVALID_PROPERTY,
)


@functools.cache
def passes_row_checks() -> pl.Expr:
    return ~pl.any_horizontal([pl.col(flag(c)) for c in _ROW_FLAGS])


def messages(max_body_bytes: int) -> dict[ErrorCode, pl.Expr]:
    """One human message per code, quoting the offending value where there is one."""
    return {
        ErrorCode.MISSING_EVENT_NAME: pl.lit("event name is empty"),
        # The name as read: that is what the user can find in the source (and in the rejects).
        ErrorCode.INVALID_EVENT_NAME: pl.concat_str(
            [
                pl.lit("event name "),
                _quoted("event_raw"),
                pl.when(pl.col("event_raw") != pl.col("event")).then(
                    pl.lit(" (after names/normalize: ") + _quoted("event") + pl.lit(")")
                ),
                pl.lit(" must match ^[a-zA-Z0-9_-]+$"),
            ],
            ignore_nulls=True,
        ),
        ErrorCode.MISSING_TIMESTAMP: pl.lit(
            "timestamp is empty (the API would stamp the event with the time of import)"
        ),
        ErrorCode.INVALID_TIMESTAMP: pl.lit("timestamp ")
        + _quoted("ts_raw")
        + pl.lit(" is not a valid time (or does not exist in the configured timezone)"),
        ErrorCode.MISSING_IDENTITY: pl.lit("neither user_id nor anonymous_id is set"),
        ErrorCode.IDENTIFY_WITHOUT_USER_ID: pl.lit("identify is true but user_id is empty"),
        ErrorCode.INVALID_IDENTIFY: pl.lit("identify ")
        + _quoted("identify_raw")
        + pl.lit(" is not a boolean"),
        ErrorCode.DUPLICATE_EVENT_ID: pl.when(pl.col("event_id").is_null())
        .then(
            pl.lit(
                "an identical event (same derived event_id) was already seen earlier in this run"
            )
        )
        .otherwise(
            pl.lit("event_id ")
            + _quoted("event_id")
            + pl.lit(" was already seen earlier in this run")
        ),
        ErrorCode.INVALID_PROPERTY: pl.lit("invalid property ") + pl.col("prop_errors"),
        ErrorCode.PAYLOAD_TOO_LARGE: pl.lit("request body is ")
        + pl.col("body_bytes").cast(pl.String)
        + pl.lit(f" bytes, over api.max_body_bytes ({max_body_bytes})"),
    }


@functools.cache
def describe(
    max_body_bytes: int, codes: tuple[ErrorCode, ...] | None = None
) -> tuple[pl.Expr, ...]:
    """``_error_code`` and ``_error_message`` from the flag columns (null for a clean row).

    ``codes``: only these flags are read (those set in some row, see :func:`flagged`); the
    result is the same, and a query with one or two codes plans several times faster than
    one with all of them (measured: 0.7 ms for a few rows, most of a small batch's rejects).
    """
    texts = messages(max_body_bytes)
    order = [c for c in CODE_ORDER if c in texts and (codes is None or c in codes)]
    if not order:
        none = pl.lit(None, pl.String)
        return none.alias("_error_code"), none.alias("_error_message")
    listed = [pl.when(pl.col(flag(c))).then(pl.lit(c.value)) for c in order]
    notes = [pl.when(pl.col(flag(c))).then(texts[c]) for c in order]
    code = pl.concat_str(listed, separator=";", ignore_nulls=True)
    return (
        pl.when(code != "").then(code).alias("_error_code"),
        pl.when(code != "")
        .then(pl.concat_str(notes, separator="; ", ignore_nulls=True))
        .alias("_error_message"),
    )


def flagged(frame: pl.DataFrame) -> tuple[ErrorCode, ...]:
    """The codes whose flag column is set in some row of ``frame``."""
    return tuple(
        c for c in CODE_ORDER if flag(c) in frame.columns and frame.get_column(flag(c)).any()
    )
