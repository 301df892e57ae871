"""JSON types of ids, properties and timestamps in the request bodies."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from tests.foundation_helpers import csv_text, run

TS = "2024-01-15 10:30:00"
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _instant(text: str) -> datetime:
    assert RFC3339_Z.match(text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- ids -------------------------------------------------------------------------------------


def test_user_id_with_leading_zeros_stays_text(tmp_path: Path) -> None:
    res = run(tmp_path, csv_text("event,user_id,ts", f"a,000123,{TS}", f"a,42,{TS}"))
    assert [e["user_id"] for e in res.events()] == ["000123", "42"]
    assert '"user_id":"000123"' in res.raw_bodies[0]
    assert '"user_id":"42"' in res.raw_bodies[1]


def test_parquet_int64_user_id_is_sent_as_text(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "event": ["a", "a"],
            "user_id": [123, 9007199254740993],
            "ts": ["2024-01-15T10:30:00Z"] * 2,
        },
        schema_overrides={"user_id": pl.Int64},
    )
    res = run(tmp_path, frame, name="data.parquet")
    assert [e["user_id"] for e in res.events()] == ["123", "9007199254740993"]


def test_anonymous_id_from_number_column_is_text(tmp_path: Path) -> None:
    frame = pl.DataFrame({"event": ["a"], "anon": [7], "ts": ["2024-01-15T10:30:00Z"]})
    res = run(
        tmp_path,
        frame,
        {"event": "event", "anonymous_id": "anon", "timestamp": "ts"},
        name="data.parquet",
    )
    assert res.events()[0]["anonymous_id"] == "7"
    assert "user_id" not in res.events()[0]


# --- properties: automatic types ---------------------------------------------------------------


def test_zip_code_with_leading_zero_stays_string(tmp_path: Path) -> None:
    res = run(tmp_path, csv_text("event,user_id,ts,zip", f"a,u1,{TS},02134", f"a,u2,{TS},10001"))
    assert res.props() == [{"zip": "02134"}, {"zip": "10001"}]


def test_column_of_plain_numbers_becomes_json_numbers(tmp_path: Path) -> None:
    res = run(
        tmp_path,
        csv_text(
            "event,user_id,ts,price,qty",
            f"a,u1,{TS},19.99,3",
            f"a,u2,{TS},-0.5,0",
            f"a,u3,{TS},1e3,12",
        ),
    )
    assert res.props() == [
        {"price": 19.99, "qty": 3},
        {"price": -0.5, "qty": 0},
        {"price": 1000.0, "qty": 12},
    ]
    assert '"qty":3' in res.raw_bodies[0]


def test_one_non_numeric_value_keeps_whole_column_text_across_batches(tmp_path: Path) -> None:
    rows = [f"a,u{i},{TS},{i}" for i in range(1, 8)] + [f"a,u8,{TS},n/a"]
    res = run(tmp_path, csv_text("event,user_id,ts,code", *rows), source={"batch_rows": 2})
    assert res.report.valid == 8
    codes = [p["code"] for p in res.props()]
    assert codes == ["1", "2", "3", "4", "5", "6", "7", "n/a"]
    assert all(isinstance(c, str) for c in codes)


def test_non_numeric_value_in_first_row_keeps_later_batches_text(tmp_path: Path) -> None:
    rows = [f"a,u0,{TS},none"] + [f"a,u{i},{TS},{i}" for i in range(1, 6)]
    res = run(tmp_path, csv_text("event,user_id,ts,code", *rows), source={"batch_rows": 2})
    assert [p["code"] for p in res.props()] == ["none", "1", "2", "3", "4", "5"]


def test_type_is_decided_per_file_not_across_files(tmp_path: Path) -> None:
    numbers = csv_text("event,user_id,ts,code", f"a,u1,{TS},1", f"a,u2,{TS},2")
    mixed = csv_text("event,user_id,ts,code", f"a,u3,{TS},3", f"a,u4,{TS},x")
    res = run(tmp_path, {"a.csv": numbers, "b.csv": mixed}, source={"batch_rows": 1})
    assert [p["code"] for p in res.props()] == [1, 2, "3", "x"]


def test_non_numeric_value_after_unterminated_quote_keeps_column_text(tmp_path: Path) -> None:
    rows = [f"a,u1,{TS},1", f'a,"u2,{TS},2', f"a,u3,{TS},3", f"a,u4,{TS},n/a"]
    res = run(tmp_path, csv_text("event,user_id,ts,code", *rows))
    assert res.codes() == ["MALFORMED_ROW"]
    assert [p["code"] for p in res.props()] == ["1", "3", "n/a"]


def test_sixteen_digit_numbers_stay_strings(tmp_path: Path) -> None:
    res = run(
        tmp_path,
        csv_text(
            "event,user_id,ts,card,big",
            f"a,u1,{TS},1234567890123456,123456789012345",
            f"a,u2,{TS},99999999999999999999,5",
        ),
    )
    assert res.props() == [
        {"card": "1234567890123456", "big": 123456789012345},
        {"card": "99999999999999999999", "big": 5},
    ]


def test_true_false_column_becomes_json_booleans(tmp_path: Path) -> None:
    res = run(
        tmp_path,
        csv_text(
            "event,user_id,ts,is_trial", f"a,u1,{TS},true", f"a,u2,{TS},FALSE", f"a,u3,{TS},True"
        ),
    )
    assert [p["is_trial"] for p in res.props()] == [True, False, True]


def test_mixed_boolean_and_other_text_stays_strings(tmp_path: Path) -> None:
    res = run(tmp_path, csv_text("event,user_id,ts,flag", f"a,u1,{TS},true", f"a,u2,{TS},maybe"))
    assert [p["flag"] for p in res.props()] == ["true", "maybe"]


def test_empty_cells_are_omitted_from_properties(tmp_path: Path) -> None:
    res = run(
        tmp_path,
        csv_text("event,user_id,ts,page,price,note", f"a,u1,{TS},,1.5,", f"a,u2,{TS},/home,,x"),
    )
    assert res.props() == [{"price": 1.5}, {"page": "/home", "note": "x"}]
    assert "null" not in "".join(res.raw_bodies)


def test_quoted_empty_cell_is_omitted_like_an_empty_cell(tmp_path: Path) -> None:
    res = run(tmp_path, csv_text("event,user_id,ts,page,note", f'a,u1,{TS},/x,""'))
    assert res.props() == [{"page": "/x"}]


def test_all_properties_empty_gives_empty_properties_object(tmp_path: Path) -> None:
    res = run(tmp_path, csv_text("event,user_id,ts,page", f"a,u1,{TS},", f"a,u2,{TS},/x"))
    assert res.props() == [{}, {"page": "/x"}]
    assert "null" not in res.raw_bodies[0]


def test_nan_in_parquet_float_column_is_omitted(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "event": ["a", "a", "a"],
            "user_id": ["u1", "u2", "u3"],
            "ts": ["2024-01-15T10:30:00Z"] * 3,
            "price": [float("nan"), 2.5, None],
            "page": ["/a", "/b", "/c"],
        }
    )
    res = run(tmp_path, frame, name="data.parquet")
    assert res.rejects == []
    assert res.props() == [{"page": "/a"}, {"price": 2.5, "page": "/b"}, {"page": "/c"}]
    assert "NaN" not in "".join(res.raw_bodies)


def test_text_values_needing_escapes_are_valid_json(tmp_path: Path) -> None:
    res = run(
        tmp_path,
        csv_text("event,user_id,ts,note", f'a,u1,{TS},"say ""hi"" \\ ok"', f"a,u2,{TS},tab\there"),
    )
    assert [p["note"] for p in res.props()] == ['say "hi" \\ ok', "tab\there"]


def test_constant_and_template_event_names(tmp_path: Path) -> None:
    constant = run(
        tmp_path / "c",
        csv_text("user_id,ts", f"u1,{TS}"),
        {"event": {"value": "imported"}, "user_id": "user_id", "timestamp": "ts"},
    )
    assert [e["event"] for e in constant.events()] == ["imported"]
    template = run(
        tmp_path / "t",
        csv_text("cat,act,user_id,ts", f"cart,add,u1,{TS}", f"cart,,u2,{TS}"),
        {"event": {"template": "{cat}_{act}"}, "user_id": "user_id", "timestamp": "ts"},
    )
    assert [e["event"] for e in template.events()] == ["cart_add"]
    assert template.events()[0]["properties"] == {}
    assert template.codes() == ["MISSING_EVENT_NAME"]


# --- properties: declared types ----------------------------------------------------------------


def test_declared_types_override_automatic_types(tmp_path: Path) -> None:
    mapping = {
        "event": "event",
        "user_id": "user_id",
        "timestamp": "ts",
        "properties": {
            "types": {
                "zip": "string",
                "n": "integer",
                "amount": "number",
                "ok": "boolean",
                "when": "datetime",
            }
        },
    }
    res = run(
        tmp_path,
        csv_text(
            "event,user_id,ts,zip,n,amount,ok,when",
            f"a,u1,{TS},10001,42,7,yes,2024-02-01 08:00:00",
            f"a,u2,{TS},94103,-3,0.25,no,2024-02-01T08:00:00+01:00",
        ),
        mapping,
    )
    assert res.rejects == []
    assert res.props() == [
        {"zip": "10001", "n": 42, "amount": 7, "ok": True, "when": "2024-02-01T08:00:00Z"},
        {"zip": "94103", "n": -3, "amount": 0.25, "ok": False, "when": "2024-02-01T07:00:00Z"},
    ]


def test_declared_string_keeps_number_column_as_text_and_rename_applies(tmp_path: Path) -> None:
    mapping = {
        "event": "event",
        "user_id": "user_id",
        "timestamp": "ts",
        "properties": {
            "rename": {"utm_src": "utm_source"},
            "types": {"utm_source": "string"},
            "exclude": ["secret"],
        },
    }
    res = run(tmp_path, csv_text("event,user_id,ts,utm_src,secret", f"a,u1,{TS},123,pw"), mapping)
    assert res.props() == [{"utm_source": "123"}]


def test_mapped_columns_are_not_repeated_as_properties(tmp_path: Path) -> None:
    res = run(tmp_path, csv_text("event,user_id,ts,page", f"a,u1,{TS},/x"))
    (event,) = res.events()
    assert event["properties"] == {"page": "/x"}
    assert set(event) == {"event_id", "event", "user_id", "timestamp", "properties"}


# --- timestamps ------------------------------------------------------------------------------


def _ts_run(tmp_path: Path, values: list[str], **ts: object) -> list[str]:
    mapping = {"event": "event", "user_id": "user_id", "timestamp": {"column": "ts", **ts}}
    rows = [f"a,u{i},{v}" for i, v in enumerate(values)]
    res = run(tmp_path, csv_text("event,user_id,ts", *rows), mapping)
    assert res.rejects == []
    return [e["timestamp"] for e in res.events()]


def test_naive_timestamp_takes_configured_timezone(tmp_path: Path) -> None:
    out = _ts_run(tmp_path, ["2024-07-01 12:00:00", "2024-01-15T12:00:00"], timezone="Europe/Paris")
    assert out == ["2024-07-01T10:00:00Z", "2024-01-15T11:00:00Z"]


def test_naive_timestamp_defaults_to_utc(tmp_path: Path) -> None:
    assert _ts_run(tmp_path, ["2024-07-01 12:00:00"]) == ["2024-07-01T12:00:00Z"]


def test_timestamp_with_offset_keeps_its_instant(tmp_path: Path) -> None:
    out = _ts_run(
        tmp_path,
        ["2024-07-01T12:00:00+02:00", "2024-07-01T12:00:00Z", "2024-07-01T07:00:00-05:00"],
        timezone="Asia/Tokyo",
    )
    assert out == ["2024-07-01T10:00:00Z", "2024-07-01T12:00:00Z", "2024-07-01T12:00:00Z"]


def test_epoch_seconds_with_unit_s(tmp_path: Path) -> None:
    assert _ts_run(tmp_path, ["1704067200", "1720000000"], unit="s") == [
        "2024-01-01T00:00:00Z",
        "2024-07-03T09:46:40Z",
    ]


def test_epoch_milliseconds_with_unit_ms(tmp_path: Path) -> None:
    out = _ts_run(tmp_path, ["1704067200000", "1704067200123"], unit="ms")
    assert out[0] == "2024-01-01T00:00:00Z"
    assert _instant(out[1]) == datetime(2024, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)


def test_custom_timestamp_format(tmp_path: Path) -> None:
    out = _ts_run(
        tmp_path,
        ["15/01/2024 10:30", "31/12/2023 23:59"],
        format="%d/%m/%Y %H:%M",
        timezone="Europe/London",
    )
    assert out == ["2024-01-15T10:30:00Z", "2023-12-31T23:59:00Z"]


def test_custom_format_with_offset_keeps_instant(tmp_path: Path) -> None:
    out = _ts_run(tmp_path, ["15/07/2024 10:30 +0200"], format="%d/%m/%Y %H:%M %z")
    assert out == ["2024-07-15T08:30:00Z"]


def test_value_not_matching_custom_format_is_invalid_timestamp(tmp_path: Path) -> None:
    mapping = {
        "event": "event",
        "user_id": "user_id",
        "timestamp": {"column": "ts", "format": "%d/%m/%Y %H:%M"},
    }
    res = run(tmp_path, csv_text("event,user_id,ts", "a,u1,2024-01-15 10:30:00"), mapping)
    assert res.codes() == ["INVALID_TIMESTAMP"]


def test_parquet_timestamp_columns_come_out_as_utc(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "event": ["a", "a"],
            "user_id": ["u1", "u2"],
            "ts": [datetime(2024, 7, 1, 12, 0), datetime(2024, 1, 1, 0, 0, 5)],
        }
    ).with_columns(pl.col("ts").dt.replace_time_zone("Europe/Paris"))
    res = run(tmp_path, frame, name="data.parquet")
    assert [e["timestamp"] for e in res.events()] == [
        "2024-07-01T10:00:00Z",
        "2023-12-31T23:00:05Z",
    ]


def test_parquet_naive_datetime_takes_configured_timezone(tmp_path: Path) -> None:
    frame = pl.DataFrame({"event": ["a"], "user_id": ["u1"], "ts": [datetime(2024, 7, 1, 12)]})
    mapping = {
        "event": "event",
        "user_id": "user_id",
        "timestamp": {"column": "ts", "timezone": "America/New_York"},
    }
    res = run(tmp_path, frame, mapping, name="data.parquet")
    assert res.events()[0]["timestamp"] == "2024-07-01T16:00:00Z"


def test_every_timestamp_is_rfc3339_with_z(tmp_path: Path) -> None:
    out = _ts_run(
        tmp_path,
        [
            "2024-07-01",
            "2024-07-01 12:00",
            "2024-07-01T12:00:00.250",
            "2024-07-01T12:00:00.5+01:00",
        ],
        timezone="UTC",
    )
    instants = [_instant(t) for t in out]
    assert instants == [
        datetime(2024, 7, 1, tzinfo=UTC),
        datetime(2024, 7, 1, 12, tzinfo=UTC),
        datetime(2024, 7, 1, 12, 0, 0, 250000, tzinfo=UTC),
        datetime(2024, 7, 1, 11, 0, 0, 500000, tzinfo=UTC),
    ]
