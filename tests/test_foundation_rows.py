"""``_row`` numbering and malformed CSV records in the middle of a file."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tests.foundation_helpers import csv_text, run

HEADER = "event,user_id,ts,note"


def _row(i: int, *, event: str = "a", note: str = "n") -> str:
    return f"{event},u{i},2024-01-01 00:00:{i:02d},{note}"


def test_row_numbers_are_one_based_and_exclude_the_header(tmp_path: Path) -> None:
    res = run(tmp_path, csv_text(HEADER, _row(1, event="bad!"), _row(2), _row(3, event="")))
    assert [(r["_row"], r["user_id"]) for r in res.rejects] == [(1, "u1"), (3, "u3")]


def test_multiline_quoted_field_counts_as_one_record(tmp_path: Path) -> None:
    res = run(
        tmp_path,
        csv_text(
            HEADER,
            _row(1),
            _row(2, note='"line one\nline two\nthree"'),
            _row(3),
            _row(4, event="bad!"),
            _row(5),
        ),
    )
    assert res.report.rows_read == 5
    assert [(r["_row"], r["user_id"]) for r in res.rejects] == [(4, "u4")]
    assert res.props()[1] == {"note": "line one\nline two\nthree"}


def test_rejected_row_after_multiline_field_keeps_its_number_across_batches(tmp_path: Path) -> None:
    rows = [_row(1, note='"a\nb"'), _row(2, note='"c\r\nd"'), _row(3), _row(4, event="")]
    res = run(tmp_path, csv_text(HEADER, *rows), source={"batch_rows": 1})
    assert [(r["_row"], r["user_id"]) for r in res.rejects] == [(4, "u4")]


def test_blank_lines_are_skipped_and_not_counted(tmp_path: Path) -> None:
    text = csv_text(HEADER, _row(1), "", _row(2), "", "", _row(3, event="bad!"), "")
    res = run(tmp_path, text)
    assert res.report.rows_read == 3
    assert res.report.valid == 2
    assert [(r["_row"], r["user_id"]) for r in res.rejects] == [(3, "u3")]


def test_row_numbers_without_header_start_at_first_line(tmp_path: Path) -> None:
    text = "a,u1,2024-01-01 00:00:00\nbad!,u2,2024-01-01 00:00:00\n"
    mapping = {"event": "column_1", "user_id": "column_2", "timestamp": "column_3"}
    res = run(tmp_path, text, mapping, source={"csv": {"header": False}})
    assert [(r["_row"], r["column_2"]) for r in res.rejects] == [(2, "u2")]
    assert res.events()[0]["user_id"] == "u1"


def test_parquet_row_numbers_continue_across_batches(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "event": ["a", "a", "bad!", "a", ""],
            "user_id": list("12345"),
            "ts": ["2024-01-01T00:00:00Z"] * 5,
        }
    )
    res = run(tmp_path, frame, name="data.parquet", source={"batch_rows": 2})
    assert [(r["_row"], r["user_id"]) for r in res.rejects] == [(3, "3"), (5, "5")]


def test_ndjson_row_numbers_skip_blank_lines(tmp_path: Path) -> None:
    text = (
        '{"event":"a","user_id":"u1","ts":"2024-01-01T00:00:00Z"}\n\n'
        '{"event":"bad!","user_id":"u2","ts":"2024-01-01T00:00:00Z"}\n'
    )
    res = run(tmp_path, text, name="data.ndjson")
    assert [(r["_row"], r["user_id"]) for r in res.rejects] == [(2, "u2")]


def test_malformed_records_mid_file_keep_raw_text_and_rest_goes_through(tmp_path: Path) -> None:
    rows = [_row(i) for i in range(1, 11)]
    rows[3] = "a,u4,only three"  # row 4: too few fields
    rows[6] = "a,u7,2024-01-01 00:00:07,n,extra"  # row 7: too many fields
    res = run(tmp_path, csv_text(HEADER, *rows), source={"batch_rows": 3})
    assert res.report.rows_read == 10
    assert res.report.valid == 8
    assert [(r["_row"], r["_error_code"], r["_raw"]) for r in res.rejects] == [
        (4, "MALFORMED_ROW", "a,u4,only three"),
        (7, "MALFORMED_ROW", "a,u7,2024-01-01 00:00:07,n,extra"),
    ]
    assert "expected 4 fields, found 5" in res.reject_at(7)["_error_message"]
    assert sorted(int(e["user_id"][1:]) for e in res.events()) == [1, 2, 3, 5, 6, 8, 9, 10]


def test_unterminated_quote_mid_file_rejects_only_that_record(tmp_path: Path) -> None:
    rows = [
        _row(1),
        'a,"u2,2024-01-01 00:00:02,n',
        _row(3, note='"x, y"'),
        _row(4),
        _row(5, note='"p, q"'),
        _row(6, event="bad!"),
    ]
    res = run(tmp_path, csv_text(HEADER, *rows))
    assert res.report.rows_read == 6
    assert sorted((r["_row"], r["_error_code"]) for r in res.rejects) == [
        (2, "MALFORMED_ROW"),
        (6, "INVALID_EVENT_NAME"),
    ]
    assert res.reject_at(2)["_raw"] == 'a,"u2,2024-01-01 00:00:02,n'
    assert [p["note"] for p in res.props()] == ["n", "x, y", "n", "p, q"]


def test_invalid_utf8_record_is_malformed_and_others_pass(tmp_path: Path) -> None:
    data = (
        (HEADER + "\n" + _row(1) + "\n").encode()
        + b"a,u2,2024-01-01 00:00:02,caf\xe9\n"
        + (_row(3) + "\n").encode()
    )
    res = run(tmp_path, data)
    assert [(r["_row"], r["_error_code"]) for r in res.rejects] == [(2, "MALFORMED_ROW")]
    assert "UTF-8" in res.reject_at(2)["_error_message"]
    assert [e["user_id"] for e in res.events()] == ["u1", "u3"]
