"""Body assembly: valid JSON whatever the values, nulls omitted, and the measured size (used
by the dry run and PAYLOAD_TOO_LARGE) equal to the bytes actually written."""

from __future__ import annotations

import json

import polars as pl
import pytest

from flywheel_import.encode import BODY_OVERHEAD, Encoder, Member

EVENTS = pl.DataFrame(
    {
        "event": ["signup", "buy", 'a"b', "x"],
        "user_id": ["007", None, "u\\1", "ü"],
        "anonymous_id": [None, "anon", None, None],
        "event_id": ["e1", 'e"2', "e3", "e4"],
        "timestamp": [
            "2024-01-15T10:30:00Z",
            None,
            "2024-01-15T10:30:00.5Z",
            "2024-01-15T10:30:00Z",
        ],
        "identify": [True, None, False, None],
        "p0": [None, "plain", "tab\there", "line\nbreak"],
        "p1": ["12.5", "3", None, "-1"],
        "p2": ["true", "false", None, None],
    },
    schema_overrides={"identify": pl.Boolean},
)
PROPS = [
    Member("page", "p0", True),
    Member("price", "p1", False),
    Member('is "trial"', "p2", False),
]


@pytest.mark.parametrize("identify", [None, True, False])
@pytest.mark.parametrize("props", [PROPS, PROPS[1:], []])
def test_measured_size_equals_written_bytes(identify: bool | None, props: list[Member]) -> None:
    enc = Encoder(EVENTS, timestamp=True, identify=identify, properties=props)
    out = EVENTS.select(
        enc.core().alias("core"), enc.core_length().alias("n"), enc.body().alias("body")
    )
    assert out.get_column("core").str.len_bytes().to_list() == out.get_column("n").to_list()
    assert (
        out.get_column("body").str.len_bytes()
        == out.get_column("n")
        + BODY_OVERHEAD
        + EVENTS.select(
            pl.col("event_id").str.len_bytes() + 2 + pl.col("event_id").str.count_matches('"')
        ).to_series()
    ).all()


def test_bodies_are_valid_json_with_nulls_omitted() -> None:
    enc = Encoder(EVENTS, timestamp=True, identify=None, properties=PROPS)
    bodies = [json.loads(b) for b in EVENTS.select(enc.body()).to_series().to_list()]
    first, second, third, fourth = (b["event"] for b in bodies)
    assert first == {
        "event_id": "e1",
        "event": "signup",
        "user_id": "007",
        "timestamp": "2024-01-15T10:30:00Z",
        "identify": True,
        "properties": {"price": 12.5, 'is "trial"': True},
    }
    assert second["event_id"] == 'e"2' and "user_id" not in second
    assert "timestamp" not in second and "identify" not in second
    assert second["properties"] == {"page": "plain", "price": 3, 'is "trial"': False}
    assert third["event"] == 'a"b' and third["user_id"] == "u\\1"
    assert third["properties"] == {"page": "tab\there"} and third["identify"] is False
    assert fourth["user_id"] == "ü" and fourth["properties"]["page"] == "line\nbreak"


def test_content_hash_is_equal_exactly_for_equal_content() -> None:
    doubled = pl.concat([EVENTS, EVENTS.head(1)])
    enc = Encoder(doubled, timestamp=True, identify=None, properties=PROPS)
    hashes = enc.content_hash(doubled).to_list()
    assert hashes[0] == hashes[-1]
    assert len(set(hashes[:-1])) == EVENTS.height


def test_measured_size_from_datetimes_equals_the_rfc3339_text() -> None:
    from datetime import UTC, datetime

    from flywheel_import.timeparse import format_rfc3339

    instants = [
        datetime(2024, 1, 15, 10, 30, tzinfo=UTC),
        datetime(2024, 1, 15, 10, 30, 0, 120000, tzinfo=UTC),
        datetime(2024, 1, 15, 10, 30, 0, 123456, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 1000, tzinfo=UTC),
    ]
    frame = EVENTS.with_columns(pl.Series("timestamp", instants))
    as_text = frame.with_columns(format_rfc3339(pl.col("timestamp")).alias("timestamp"))
    by_time = Encoder(frame, timestamp=True, identify=None, properties=PROPS)
    by_text = Encoder(as_text, timestamp=True, identify=None, properties=PROPS)
    measured = frame.select(by_time.core_length()).to_series().to_list()
    written = as_text.select(by_text.core()).to_series().str.len_bytes().to_list()
    assert measured == written
