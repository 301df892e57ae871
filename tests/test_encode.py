"""Body assembly: valid JSON whatever the values, nulls omitted, and the measured size (used
by the dry run and PAYLOAD_TOO_LARGE) equal to the bytes actually written."""

from __future__ import annotations

import json
from datetime import UTC

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel_import.encode import BODY_OVERHEAD, Encoder, Member
from flywheel_import.jsonexpr import json_value
from flywheel_import.timeparse import format_rfc3339

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
    from datetime import datetime

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


_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12
) | st.sampled_from(["", '"', "\\", "\x00\x1f", "\u2028", "😀"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(
            _TEXT,
            st.none() | _TEXT,
            st.none() | _TEXT,
            st.none() | st.datetimes(timezones=st.just(UTC)),
            st.none() | st.booleans(),
            st.none() | _TEXT,
            st.none() | st.from_regex(r"-?[0-9]{1,8}(\.[0-9]{1,6})?", fullmatch=True),
        ),
        min_size=1,
        max_size=8,
    ),
    identify=st.sampled_from([None, True, False]),
)
def test_size_bound_is_at_least_every_rows_measured_size(
    rows: list[tuple[object, ...]], identify: bool | None
) -> None:
    """The dry run skips measuring a batch whose bound fits the limit: the bound must never
    be below a row's real size, whatever the text (escapes, non-ASCII) or the timestamp."""
    names = ["event", "user_id", "anonymous_id", "timestamp", "identify", "p0", "p1"]
    frame = pl.DataFrame(
        [dict(zip(names, r, strict=True)) for r in rows],
        schema={
            "event": pl.String,
            "user_id": pl.String,
            "anonymous_id": pl.String,
            "timestamp": pl.Datetime("us", "UTC"),
            "identify": pl.Boolean,
            "p0": pl.String,
            "p1": pl.String,
        },
    ).with_columns(pl.lit(None, pl.String).alias("event_id"))
    props = [Member("page", "p0", True), Member("price", "p1", False)]
    for timestamps in (frame, frame.with_columns(format_rfc3339(pl.col("timestamp")))):
        enc = Encoder(timestamps, timestamp=True, identify=identify, properties=props)
        bound = enc.core_length_bound()
        assert bound is not None
        written = timestamps.select(enc.core()).to_series().str.len_bytes()
        assert written.max() <= bound  # type: ignore[operator]


def test_size_bound_declines_member_types_it_cannot_bound() -> None:
    frame = EVENTS.with_columns(pl.Series("p1", [1.5, 2.0, None, 3.0]))
    enc = Encoder(frame, timestamp=True, identify=None, properties=PROPS)
    assert enc.core_length_bound() is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_a_finite_floats_string_cast_is_its_json_text(values: list[float]) -> None:
    """Number properties read as floats are written with a string cast, not the JSON encoder:
    the bytes (so the derived ids) must be the same."""
    frame = pl.DataFrame({"x": values}, schema={"x": pl.Float64})
    cast = frame.select(pl.col("x").cast(pl.String)).to_series().to_list()
    encoded = frame.select(json_value(pl.col("x"))).to_series().to_list()
    assert cast == encoded
    assert [json.loads(c) for c in cast] == values
