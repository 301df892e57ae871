"""Event ids: mapped ids as is, derived ids stable, distinct and valid UUIDs."""

from __future__ import annotations

import uuid
from pathlib import Path

import polars as pl

from tests.foundation_helpers import Result, bodies_for, csv_text, run

ROWS = [
    f"{name},u{i},2024-01-0{i} 10:00:00,{i * 1.5}"
    for i, name in enumerate(["signup", "login", "login", "purchase", "logout"], start=1)
]
DATA = csv_text("event,user_id,ts,amount", *ROWS)


def test_every_body_has_an_event_id(tmp_path: Path) -> None:
    res = run(tmp_path, DATA)
    assert len(res.bodies) == 5
    for body in res.bodies:
        assert set(body) == {"event"}
        assert isinstance(body["event"]["event_id"], str)
        assert body["event"]["event_id"]
    for raw in res.raw_bodies:
        assert raw.startswith('{"event":{"event_id":"')


def test_mapped_event_ids_are_sent_as_is(tmp_path: Path) -> None:
    mapping = {"event": "event", "user_id": "user_id", "timestamp": "ts", "event_id": "id"}
    res = run(
        tmp_path,
        csv_text(
            "id,event,user_id,ts",
            "evt-42,a,u1,2024-01-01 00:00:00",
            "000123,a,u2,2024-01-01 00:00:00",
            "Some Id/With:Chars,a,u3,2024-01-01 00:00:00",
        ),
        mapping,
    )
    assert [e["event_id"] for e in res.events()] == ["evt-42", "000123", "Some Id/With:Chars"]
    assert all("id" not in e["properties"] for e in res.events())


def test_mapped_numeric_parquet_event_id_is_text(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "id": [1001, 1002],
            "event": ["a", "a"],
            "user_id": ["u1", "u2"],
            "ts": ["2024-01-01T00:00:00Z"] * 2,
        }
    )
    mapping = {"event": "event", "user_id": "user_id", "timestamp": "ts", "event_id": "id"}
    res = run(tmp_path, frame, mapping, name="data.parquet")
    assert [e["event_id"] for e in res.events()] == ["1001", "1002"]


def test_derived_ids_are_the_same_when_the_file_is_validated_twice(tmp_path: Path) -> None:
    res = run(tmp_path, DATA)
    again = bodies_for(tmp_path / "config.yaml")
    assert again == res.raw_bodies
    first_ids = [e["event_id"] for e in res.events()]
    assert len(first_ids) == 5


def test_derived_ids_do_not_depend_on_batch_size_or_folder(tmp_path: Path) -> None:
    one = run(tmp_path / "one", DATA)
    small = run(tmp_path / "small", DATA, source={"batch_rows": 1})
    assert [e["event_id"] for e in one.events()] == [e["event_id"] for e in small.events()]


def test_different_rows_get_different_derived_ids(tmp_path: Path) -> None:
    res = run(tmp_path, DATA)
    ids = [e["event_id"] for e in res.events()]
    assert len(set(ids)) == len(ids) == 5


def test_rows_differing_in_one_property_get_different_ids(tmp_path: Path) -> None:
    res = run(
        tmp_path,
        csv_text(
            "event,user_id,ts,plan", "a,u1,2024-01-01 00:00:00,free", "a,u1,2024-01-01 00:00:00,pro"
        ),
    )
    ids = [e["event_id"] for e in res.events()]
    assert len(ids) == 2
    assert ids[0] != ids[1]


def test_derived_id_is_a_valid_uuid_string(tmp_path: Path) -> None:
    res = run(tmp_path, DATA)
    for event in res.events():
        text = event["event_id"]
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.variant == uuid.RFC_4122
        assert parsed.version == 8


def _assert_every_sent_event_has_an_id(res: Result) -> None:
    assert res.report.rows_read == res.report.valid + res.report.rejected == 2
    for event in res.events():
        assert isinstance(event["event_id"], str)
        assert event["event_id"] != ""


def test_empty_mapped_event_id_is_never_sent_as_empty_string(tmp_path: Path) -> None:
    mapping = {"event": "event", "user_id": "user_id", "timestamp": "ts", "event_id": "id"}
    res = run(
        tmp_path,
        csv_text("id,event,user_id,ts", "i1,a,u1,2024-01-01 00:00:00", ",a,u2,2024-01-01 00:00:00"),
        mapping,
    )
    _assert_every_sent_event_has_an_id(res)


def test_empty_mapped_event_id_next_to_escaped_id_gives_valid_json(tmp_path: Path) -> None:
    mapping = {"event": "event", "user_id": "user_id", "timestamp": "ts", "event_id": "id"}
    res = run(
        tmp_path,
        csv_text(
            "id,event,user_id,ts", '"i""1",a,u1,2024-01-01 00:00:00', ",a,u2,2024-01-01 00:00:00"
        ),
        mapping,
    )
    _assert_every_sent_event_has_an_id(res)
