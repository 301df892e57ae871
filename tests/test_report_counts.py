"""Per-code counts and examples, from rejects in the rejects-file layout, batch by batch."""

from __future__ import annotations

import polars as pl

from flywheel_import.report import Report


def rejects(rows: list[tuple[str, int, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "_source": pl.String,
            "_row": pl.Int64,
            "_error_code": pl.String,
            "_error_message": pl.String,
        },
        orient="row",
    )


def test_a_row_with_several_codes_counts_under_each_and_examples_are_first_seen() -> None:
    report = Report()
    report.record(
        rejects(
            [
                ("a.csv", 3, "MISSING_EVENT_NAME", "event name is empty"),
                ("a.csv", 5, "INVALID_TIMESTAMP;INVALID_PROPERTY", "bad ts; bad price"),
                ("a.csv", 9, "INVALID_PROPERTY", "bad zip"),
            ]
        )
    )
    report.record(rejects([]))
    report.record(
        rejects(
            [
                ("b.csv", 1, "INVALID_PROPERTY;DUPLICATE_EVENT_ID", "bad plan; duplicate"),
                ("b.csv", 2, "MISSING_EVENT_NAME", "event name is empty"),
            ]
        )
    )
    counts = {code: entry.count for code, entry in report.by_code.items()}
    assert counts == {
        "MISSING_EVENT_NAME": 2,
        "INVALID_TIMESTAMP": 1,
        "INVALID_PROPERTY": 3,
        "DUPLICATE_EVENT_ID": 1,
    }
    assert list(counts) == [
        "MISSING_EVENT_NAME",
        "INVALID_TIMESTAMP",
        "INVALID_PROPERTY",
        "DUPLICATE_EVENT_ID",
    ]
    examples = {code: entry.example for code, entry in report.by_code.items()}
    assert examples["INVALID_PROPERTY"] == {
        "source": "a.csv",
        "row": 5,
        "message": "bad ts; bad price",
    }
    assert examples["DUPLICATE_EVENT_ID"] == {
        "source": "b.csv",
        "row": 1,
        "message": "bad plan; duplicate",
    }
    assert examples["MISSING_EVENT_NAME"]["row"] == 3  # type: ignore[index]
    assert report.rejected == 5
