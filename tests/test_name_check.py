"""INVALID_EVENT_NAME matched once per distinct name gives the flags of matching every row."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel_import.errors import ErrorCode
from flywheel_import.validation import flag, name_check, row_checks

NAMES = st.sampled_from(
    ["page_view", "Signed Up", "add-to-cart", "$pageview", "ünï", "a.b", "x", "", "9_z"]
)


def _flags(names: list[str | None], expr: pl.Expr) -> list[bool]:
    frame = pl.DataFrame({"event": names}, schema={"event": pl.String})
    out = frame.with_columns(expr.alias("flag"))  # as the batch gets it: broadcast
    return out.get_column("flag").to_list()


def _per_row() -> pl.Expr:
    checks = row_checks(timestamp_mapped=False, require_identity=False)
    name = flag(ErrorCode.INVALID_EVENT_NAME)
    return next(c for c in checks if c.meta.output_name() == name)


@settings(max_examples=200, deadline=None)
@given(names=st.lists(st.none() | NAMES, min_size=1, max_size=200))
def test_flags_by_distinct_name_equal_the_flags_by_row(names: list[str | None]) -> None:
    series = pl.Series("event", names, dtype=pl.String)
    batch = name_check(series)
    if batch is None:  # most names differ: the caller matches every row
        assert series.drop_nulls().n_unique() > len(names) // 8
        return
    assert batch.meta.output_name() == flag(ErrorCode.INVALID_EVENT_NAME)
    assert _flags(names, batch) == _flags(names, _per_row())


def test_a_batch_of_few_names_is_checked_by_name_and_one_of_many_by_row() -> None:
    few = pl.Series("event", ["buy", "Signed Up", None] * 100)
    assert name_check(few) is not None
    assert _flags(few.to_list(), name_check(few)) == [False, True, False] * 100  # type: ignore[arg-type]
    many = pl.Series("event", [f"e{i}" for i in range(300)])
    assert name_check(many) is None


def test_row_checks_can_leave_the_name_check_out() -> None:
    names = [
        c.meta.output_name()
        for c in row_checks(timestamp_mapped=True, require_identity=True, names=False)
    ]
    assert flag(ErrorCode.INVALID_EVENT_NAME) not in names
    assert flag(ErrorCode.MISSING_EVENT_NAME) in names
