"""Every per-row error code, each on its own, plus the order of codes on a row with several."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from flywheel_import.errors import ErrorCode
from tests.foundation_helpers import csv_text, run

HEADER = "event,user_id,ts"
GOOD = "signup,u1,2024-01-15 10:30:00"


def test_empty_event_name_is_missing_event_name(tmp_path: Path) -> None:
    res = run(tmp_path, csv_text(HEADER, GOOD, ",u2,2024-01-15 10:30:00"))
    assert res.codes() == ["MISSING_EVENT_NAME"]
    assert res.reject_at(2)["user_id"] == "u2"
    assert res.report.valid == 1


def test_event_name_outside_allowed_characters_is_invalid_event_name(tmp_path: Path) -> None:
    res = run(
        tmp_path,
        csv_text(
            HEADER,
            GOOD,
            "signup completed!,u2,2024-01-15 10:30:00",
            "ok-name_2,u3,2024-01-15 10:30:00",
        ),
    )
    assert res.codes() == ["INVALID_EVENT_NAME"]
    rej = res.reject_at(2)
    assert "signup completed!" in rej["_error_message"]
    assert sorted(e["event"] for e in res.events()) == ["ok-name_2", "signup"]


def test_empty_mapped_timestamp_is_missing_timestamp(tmp_path: Path) -> None:
    res = run(tmp_path, csv_text(HEADER, GOOD, "signup,u2,"))
    assert res.codes() == ["MISSING_TIMESTAMP"]
    assert res.reject_at(2)["user_id"] == "u2"


def test_unparseable_timestamp_is_invalid_timestamp(tmp_path: Path) -> None:
    res = run(
        tmp_path,
        csv_text(HEADER, GOOD, "signup,u2,31/02/2024 10:00", "signup,u3,2024-02-30 10:00:00"),
    )
    assert res.codes() == ["INVALID_TIMESTAMP", "INVALID_TIMESTAMP"]
    assert "31/02/2024 10:00" in res.reject_at(2)["_error_message"]


def test_naive_time_skipped_by_dst_change_is_invalid_timestamp(tmp_path: Path) -> None:
    mapping = {
        "event": "event",
        "user_id": "user_id",
        "timestamp": {"column": "ts", "timezone": "America/New_York"},
    }
    res = run(
        tmp_path,
        csv_text(
            HEADER,
            "a,u1,2024-03-10 01:30:00",
            "a,u2,2024-03-10 02:30:00",
            "a,u3,2024-03-10 03:30:00",
        ),
        mapping,
    )
    assert res.codes() == ["INVALID_TIMESTAMP"]
    assert res.reject_at(2)["ts"] == "2024-03-10 02:30:00"
    # The neighbours exist: 01:30 EST = 06:30Z, 03:30 EDT = 07:30Z.
    assert sorted(e["timestamp"] for e in res.events()) == [
        "2024-03-10T06:30:00Z",
        "2024-03-10T07:30:00Z",
    ]


def test_naive_time_repeated_by_dst_change_is_invalid_timestamp(tmp_path: Path) -> None:
    mapping = {
        "event": "event",
        "user_id": "user_id",
        "timestamp": {"column": "ts", "timezone": "America/New_York"},
    }
    res = run(tmp_path, csv_text(HEADER, "a,u1,2024-11-03 01:30:00"), mapping)
    assert res.codes() == ["INVALID_TIMESTAMP"]


def test_row_without_user_or_anonymous_id_is_missing_identity(tmp_path: Path) -> None:
    mapping = {"event": "event", "user_id": "user_id", "anonymous_id": "anon", "timestamp": "ts"}
    res = run(
        tmp_path,
        csv_text(
            "event,user_id,anon,ts",
            "a,u1,,2024-01-01 00:00:00",
            "a,,x1,2024-01-01 00:00:00",
            "a,,,2024-01-01 00:00:00",
        ),
        mapping,
    )
    assert res.codes() == ["MISSING_IDENTITY"]
    assert res.reject_at(3)["_error_message"] == "neither user_id nor anonymous_id is set"
    assert res.report.valid == 2


def test_require_identity_false_accepts_rows_without_identity(tmp_path: Path) -> None:
    res = run(
        tmp_path, csv_text(HEADER, "a,,2024-01-01 00:00:00"), validation={"require_identity": False}
    )
    assert res.rejects == []
    assert res.report.valid == 1
    (event,) = res.events()
    assert "user_id" not in event
    assert "anonymous_id" not in event


def test_identify_true_without_user_id_is_identify_without_user_id(tmp_path: Path) -> None:
    mapping = {
        "event": "event",
        "user_id": "user_id",
        "anonymous_id": "anon",
        "timestamp": "ts",
        "identify": True,
    }
    res = run(
        tmp_path,
        csv_text("event,user_id,anon,ts", "a,u1,,2024-01-01 00:00:00", "a,,x1,2024-01-01 00:00:00"),
        mapping,
    )
    assert res.codes() == ["IDENTIFY_WITHOUT_USER_ID"]
    assert res.reject_at(2)["anon"] == "x1"
    (event,) = res.events()
    assert event["identify"] is True


def test_identify_column_true_without_user_id_is_rejected(tmp_path: Path) -> None:
    mapping = {
        "event": "event",
        "user_id": "user_id",
        "anonymous_id": "anon",
        "timestamp": "ts",
        "identify": "ident",
    }
    res = run(
        tmp_path,
        csv_text(
            "event,user_id,anon,ts,ident",
            "a,,x1,2024-01-01 00:00:00,true",
            "a,,x2,2024-01-01 00:00:00,false",
        ),
        mapping,
    )
    assert res.codes() == ["IDENTIFY_WITHOUT_USER_ID"]
    assert res.reject_at(1)["anon"] == "x1"
    (event,) = res.events()
    assert event["identify"] is False


def test_identify_column_with_non_boolean_is_invalid_identify(tmp_path: Path) -> None:
    mapping = {**{"event": "event", "user_id": "user_id", "timestamp": "ts"}, "identify": "ident"}
    res = run(
        tmp_path,
        csv_text(
            "event,user_id,ts,ident",
            "a,u1,2024-01-01 00:00:00,yes",
            "a,u2,2024-01-01 00:00:00,maybe",
        ),
        mapping,
    )
    assert res.codes() == ["INVALID_IDENTIFY"]
    assert "maybe" in res.reject_at(2)["_error_message"]
    (event,) = res.events()
    assert event["identify"] is True


def test_duplicate_event_id_keeps_first_rejects_later(tmp_path: Path) -> None:
    mapping = {"event": "event", "user_id": "user_id", "timestamp": "ts", "event_id": "id"}
    rows = [f"e{i},a,u{i},2024-01-01 00:00:0{i}" for i in range(1, 6)]
    rows.append("e2,a,u9,2024-01-01 00:00:09")  # row 6 repeats row 2's id
    rows.append("e5,a,u8,2024-01-01 00:00:08")  # row 7 repeats row 5's id
    res = run(tmp_path, csv_text("id,event,user_id,ts", *rows), mapping, source={"batch_rows": 2})
    assert res.codes() == ["DUPLICATE_EVENT_ID", "DUPLICATE_EVENT_ID"]
    assert [r["_row"] for r in res.rejects] == [6, 7]
    assert {r["user_id"] for r in res.rejects} == {"u9", "u8"}
    assert res.report.rows_read == res.report.valid + res.report.rejected == 7
    kept = {e["event_id"]: e["user_id"] for e in res.events()}
    assert kept == {"e1": "u1", "e2": "u2", "e3": "u3", "e4": "u4", "e5": "u5"}


def test_duplicate_event_id_across_two_files(tmp_path: Path) -> None:
    mapping = {"event": "event", "user_id": "user_id", "timestamp": "ts", "event_id": "id"}
    first = csv_text(
        "id,event,user_id,ts", "x1,a,u1,2024-01-01 00:00:00", "x2,a,u2,2024-01-01 00:00:00"
    )
    second = csv_text(
        "id,event,user_id,ts", "x3,a,u3,2024-01-01 00:00:00", "x1,a,u4,2024-01-01 00:00:00"
    )
    res = run(tmp_path, {"a.csv": first, "b.csv": second}, mapping, source={"batch_rows": 1})
    assert res.codes() == ["DUPLICATE_EVENT_ID"]
    rej = res.rejects[0]
    assert rej["_source"].endswith("b.csv")
    assert rej["_row"] == 2
    assert rej["user_id"] == "u4"
    assert sorted(e["event_id"] for e in res.events()) == ["x1", "x2", "x3"]


def test_identical_rows_without_mapped_id_are_duplicates(tmp_path: Path) -> None:
    res = run(
        tmp_path,
        csv_text(HEADER, GOOD, "other,u1,2024-01-15 10:30:00", GOOD),
        source={"batch_rows": 1},
    )
    assert res.codes() == ["DUPLICATE_EVENT_ID"]
    assert res.rejects[0]["_row"] == 3


def test_non_number_in_number_property_is_invalid_property(tmp_path: Path) -> None:
    mapping = {
        "event": "event",
        "user_id": "user_id",
        "timestamp": "ts",
        "properties": {"types": {"price": "number"}},
    }
    res = run(
        tmp_path,
        csv_text(
            "event,user_id,ts,price", "a,u1,2024-01-01 00:00:00,9.5", "a,u2,2024-01-01 00:00:00,abc"
        ),
        mapping,
    )
    assert res.codes() == ["INVALID_PROPERTY"]
    rej = res.reject_at(2)
    assert "price" in rej["_error_message"]
    assert "abc" in rej["_error_message"]
    assert res.props() == [{"price": 9.5}]


def test_fraction_in_integer_property_is_invalid_property(tmp_path: Path) -> None:
    mapping = {
        "event": "event",
        "user_id": "user_id",
        "timestamp": "ts",
        "properties": {"types": {"n": "integer"}},
    }
    res = run(
        tmp_path,
        csv_text(
            "event,user_id,ts,n", "a,u1,2024-01-01 00:00:00,3", "a,u2,2024-01-01 00:00:00,1.5"
        ),
        mapping,
    )
    assert res.codes() == ["INVALID_PROPERTY"]
    assert res.reject_at(2)["n"] == "1.5"
    assert res.props() == [{"n": 3}]
    assert '"n":3' in res.raw_bodies[0]


def test_infinite_number_property_is_invalid_property(tmp_path: Path) -> None:
    mapping = {
        "event": "event",
        "user_id": "user_id",
        "timestamp": "ts",
        "properties": {"types": {"price": "number"}},
    }
    res = run(
        tmp_path,
        csv_text(
            "event,user_id,ts,price",
            "a,u1,2024-01-01 00:00:00,inf",
            "a,u2,2024-01-01 00:00:00,-Infinity",
            "a,u3,2024-01-01 00:00:00,1e999",
            "a,u4,2024-01-01 00:00:00,2",
        ),
        mapping,
    )
    assert res.codes() == ["INVALID_PROPERTY"] * 3
    assert res.props() == [{"price": 2}]


def test_infinity_in_parquet_float_column_is_invalid_property(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "event": ["a", "a"],
            "user_id": ["u1", "u2"],
            "ts": ["2024-01-01T00:00:00Z"] * 2,
            "price": [float("inf"), 1.25],
        }
    )
    res = run(tmp_path, frame, name="data.parquet")
    assert res.codes() == ["INVALID_PROPERTY"]
    assert res.rejects[0]["user_id"] == "u1"
    assert res.props() == [{"price": 1.25}]


def test_body_over_max_body_bytes_is_payload_too_large(tmp_path: Path) -> None:
    long = "x" * 300
    res = run(
        tmp_path,
        csv_text(
            "event,user_id,ts,note",
            f"a,u1,2024-01-01 00:00:00,{long}",
            "a,u2,2024-01-01 00:00:00,short",
        ),
        api={"max_body_bytes": 250},
    )
    assert res.codes() == ["PAYLOAD_TOO_LARGE"]
    assert res.reject_at(1)["user_id"] == "u1"
    assert "250" in res.reject_at(1)["_error_message"]
    assert all(len(b.encode()) <= 250 for b in res.raw_bodies)
    assert len(res.bodies) == 1


def test_payload_too_large_with_mapped_event_id(tmp_path: Path) -> None:
    mapping = {"event": "event", "user_id": "user_id", "timestamp": "ts", "event_id": "id"}
    long = "y" * 300
    res = run(
        tmp_path,
        csv_text(
            "id,event,user_id,ts,note",
            f"i1,a,u1,2024-01-01 00:00:00,{long}",
            "i2,a,u2,2024-01-01 00:00:00,short",
        ),
        mapping,
        api={"max_body_bytes": 250},
    )
    assert res.codes() == ["PAYLOAD_TOO_LARGE"]
    assert [e["event_id"] for e in res.events()] == ["i2"]


def _exact_size_case(tmp_path: Path, mapping: dict[str, object], data: str) -> None:
    probe = run(tmp_path / "probe", data, mapping)
    size = len(probe.raw_bodies[0].encode())
    over = run(tmp_path / "over", data, mapping, api={"max_body_bytes": size - 1})
    assert over.codes() == ["PAYLOAD_TOO_LARGE"]
    assert f"request body is {size} bytes" in over.rejects[0]["_error_message"]
    exact = run(tmp_path / "exact", data, mapping, api={"max_body_bytes": size})
    assert exact.rejects == []
    assert exact.raw_bodies == probe.raw_bodies


def test_body_of_exactly_max_body_bytes_is_accepted_with_mapped_event_id(tmp_path: Path) -> None:
    mapping = {"event": "event", "user_id": "user_id", "timestamp": "ts", "event_id": "id"}
    _exact_size_case(
        tmp_path, mapping, csv_text("id,event,user_id,ts", "i1,a,u1,2024-01-01 00:00:00")
    )


def test_body_of_exactly_max_body_bytes_is_accepted_with_derived_event_id(tmp_path: Path) -> None:
    _exact_size_case(
        tmp_path,
        {"event": "event", "user_id": "user_id", "timestamp": "ts"},
        csv_text("event,user_id,ts", "a,u1,2024-01-01 00:00:00"),
    )


def test_wrong_field_count_mid_file_is_malformed_row(tmp_path: Path) -> None:
    res = run(tmp_path, csv_text(HEADER, GOOD, "broken,u2", "signup,u3,2024-01-15 10:30:00"))
    assert res.codes() == ["MALFORMED_ROW"]
    rej = res.reject_at(2)
    assert rej["_raw"] == "broken,u2"
    assert "expected 3 fields, found 2" in rej["_error_message"]
    assert sorted(e["user_id"] for e in res.events()) == ["u1", "u3"]


def test_unterminated_quote_is_malformed_row(tmp_path: Path) -> None:
    res = run(tmp_path, csv_text(HEADER, GOOD, 'signup,"u2,2024-01-15 10:30:00'))
    assert res.codes() == ["MALFORMED_ROW"]
    rej = res.reject_at(2)
    assert rej["_raw"] == 'signup,"u2,2024-01-15 10:30:00'
    assert "unterminated" in rej["_error_message"]
    assert [e["user_id"] for e in res.events()] == ["u1"]


def test_row_with_several_problems_lists_all_codes_in_error_code_order(tmp_path: Path) -> None:
    mapping = {
        "event": "event",
        "user_id": "user_id",
        "timestamp": "ts",
        "identify": "ident",
        "properties": {"types": {"price": "number"}},
    }
    res = run(
        tmp_path,
        csv_text("event,user_id,ts,ident,price", "bad name!,,not-a-time,perhaps,abc", ",,,,"),
        mapping,
    )
    first = res.reject_at(1)
    assert first["_error_code"] == (
        "INVALID_EVENT_NAME;INVALID_TIMESTAMP;MISSING_IDENTITY;INVALID_IDENTIFY;INVALID_PROPERTY"
    )
    messages = first["_error_message"].split("; ")
    assert len(messages) >= 5
    assert "bad name!" in messages[0]
    assert "not-a-time" in messages[1]
    second = res.reject_at(2)
    assert second["_error_code"] == "MISSING_EVENT_NAME;MISSING_TIMESTAMP;MISSING_IDENTITY"
    order = [c.value for c in ErrorCode]
    for row in res.rejects:
        codes = row["_error_code"].split(";")
        assert codes == sorted(codes, key=order.index)
    assert res.report.by_code["MISSING_IDENTITY"].count == 2
    assert res.report.by_code["INVALID_PROPERTY"].count == 1


def test_identify_without_user_id_and_missing_identity_are_both_listed(tmp_path: Path) -> None:
    mapping = {
        "event": "event",
        "user_id": "user_id",
        "timestamp": "ts",
        "identify": True,
        "properties": {"types": {"n": "integer"}},
    }
    res = run(tmp_path, csv_text("event,user_id,ts,n", "a,,2024-01-01 00:00:00,1.5"), mapping)
    assert res.codes() == ["MISSING_IDENTITY;IDENTIFY_WITHOUT_USER_ID;INVALID_PROPERTY"]
