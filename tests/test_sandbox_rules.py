"""The spec's date-time rule, checked directly (the HTTP tests cover the other rules)."""

from __future__ import annotations

import pytest

from flywheel_import.sandbox.rules import is_date_time


@pytest.mark.parametrize(
    "value",
    [
        "2024-01-15T10:30:00Z",
        "2024-01-31T00:00:00+00:00",
        "2024-02-29T12:00:00-03:30",
        "2000-02-29T12:00:00Z",
        "2024-04-30T23:59:59.999999999+23:59",
        "2016-12-31T23:59:60Z",
        "0001-01-01t00:00:00z",
    ],
)
def test_rfc3339_date_times_with_offset_are_valid(value: str) -> None:
    assert is_date_time(value)


@pytest.mark.parametrize(
    "value",
    [
        "2024-01-15T10:30:00",
        "2024-01-15T10:30Z",
        "2024-01-15",
        "2024-01-15 10:30:00Z",
        "2024-1-15T10:30:00Z",
        "2023-02-29T12:00:00Z",
        "2100-02-29T12:00:00Z",
        "2024-04-31T12:00:00Z",
        "2024-00-10T12:00:00Z",
        "2024-01-00T12:00:00Z",
        "2024-01-15T24:00:00Z",
        "2024-01-15T10:60:00Z",
        "2024-01-15T10:30:61Z",
        "2024-01-15T10:30:00+24:00",
        "2024-01-15T10:30:00+01:60",
        "2024-01-15T10:30:00+0100",
        "2024-01-15T10:30:00.Z",
        "2024-01-15T10:30:00Z\n",
        "\uff12\uff10\uff12\uff14-01-15T10:30:00Z",  # full-width digits
        "",
        None,
        1705314600,
    ],
)
def test_other_values_are_not_date_times(value: object) -> None:
    assert not is_date_time(value)
