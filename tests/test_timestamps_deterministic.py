"""Auto-detected timestamps: the same text gives the same instant whatever was parsed before
and however many threads share the parser (the shape tried first is only a speed hint)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel_import.timeparse import AutoParser, auto_candidates

TZ = "Europe/Paris"
SHAPES = [
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S.%f%z",
    "%Y-%m-%d %H:%M:%S%z",
]
JUNK = ["", "  ", "n/a", "15/01/2024", "2024-13-01", "2024-03-31 02:30:00"]  # last: DST gap


def canonical(values: list[str | None]) -> list[datetime | None]:
    """The definition: every shape in canonical order on the stripped text."""
    frame = pl.DataFrame({"t": values}, schema={"t": pl.String})
    stripped = pl.col("t").str.strip_chars()
    return frame.select(pl.coalesce(auto_candidates(stripped, TZ))).to_series().to_list()


def render(instant: datetime, shape: str, pad: bool) -> str:
    text = (instant.astimezone(UTC) if "Z" in shape else instant).strftime(shape)
    return f" {text} " if pad else text


def mixed_batch(rng: random.Random, dominant: int, size: int) -> list[str | None]:
    out: list[str | None] = []
    base = datetime(2024, 1, 1, tzinfo=UTC)
    for _ in range(size):
        roll = rng.random()
        if roll < 0.05:
            out.append(None)
        elif roll < 0.10:
            out.append(rng.choice(JUNK))
        else:
            shape = SHAPES[dominant] if roll < 0.6 else rng.choice(SHAPES)
            instant = (
                base
                + timedelta(
                    seconds=rng.randrange(366 * 86400), microseconds=rng.randrange(1_000_000)
                )
            ).astimezone(rng.choice([UTC, timezone(timedelta(hours=5, minutes=30))]))
            out.append(render(instant, shape, pad=rng.random() < 0.2))
    return out


def test_result_does_not_depend_on_the_batches_parsed_before() -> None:
    rng = random.Random(7)
    probe = mixed_batch(rng, 0, 300)
    expected = canonical(probe)
    parser = AutoParser(TZ)
    for dominant in range(len(SHAPES)):
        parser.parse(pl.Series("t", mixed_batch(rng, dominant, 200), dtype=pl.String))
        assert parser.parse(pl.Series("t", probe, dtype=pl.String)).to_list() == expected


def test_threads_sharing_one_parser_get_the_canonical_result() -> None:
    rng = random.Random(11)
    batches = [
        mixed_batch(rng, rng.randrange(len(SHAPES)), rng.choice([1, 5, 50, 400]))
        for _ in range(160)
    ]
    expected = [canonical(b) for b in batches]
    parser = AutoParser(TZ)

    def parse(i: int) -> list[datetime | None]:
        return parser.parse(pl.Series("t", batches[i], dtype=pl.String)).to_list()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            got = list(pool.map(parse, range(len(batches))))
            mismatched = [i for i in range(len(batches)) if got[i] != expected[i]]
            assert mismatched == []


class _HintMovedByOthers(AutoParser):
    """The hint as another thread could leave it: different at every read."""

    reads = 0

    @property  # type: ignore[override]
    def _first(self) -> int:
        self.reads += 1
        return self.reads % 3

    @_first.setter
    def _first(self, value: int) -> None:
        pass


def test_hint_moved_by_another_thread_during_a_parse_changes_nothing() -> None:
    values: list[str | None] = [
        "2024-07-01 12:00:00",
        "2024-07-01T12:00:00",
        "2024-07-01",
        "2024-07-01T12:00:00+02:00",
        None,
        "x",
    ]
    expected = canonical(values)
    for start in range(3):
        parser = _HintMovedByOthers(TZ)
        parser.reads = start
        assert parser.parse(pl.Series("t", values, dtype=pl.String)).to_list() == expected


@settings(max_examples=200, deadline=None)
@given(
    instant=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    shape=st.sampled_from(SHAPES),
    offset_minutes=st.integers(-14 * 60, 14 * 60),
    pad=st.booleans(),
)
def test_shapes_that_both_read_a_value_agree_on_its_instant(
    instant: datetime, shape: str, offset_minutes: int, pad: bool
) -> None:
    """So trying one shape first can never change a value's instant."""
    if "%z" in shape:
        instant = instant.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    text = render(instant, shape, pad)
    frame = pl.DataFrame({"t": [text]})
    parsed = frame.select(
        c.alias(str(i)) for i, c in enumerate(auto_candidates(pl.col("t").str.strip_chars(), TZ))
    ).row(0)
    found = {v for v in parsed if v is not None}
    assert len(found) <= 1, (text, parsed)


WHITESPACE = st.text(alphabet=" \t\n\r\x0b\x0c\u00a0\u2003", max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    instant=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    shape=st.sampled_from(SHAPES),
    offset_minutes=st.integers(-14 * 60, 14 * 60),
    before=WHITESPACE,
    after=WHITESPACE,
    inner=st.sampled_from([" ", "  ", "\t"]),
)
def test_a_shape_reading_text_as_is_agrees_with_the_canonical_stripped_parse(
    instant: datetime, shape: str, offset_minutes: int, before: str, after: str, inner: str
) -> None:
    """The first try reads the text unstripped: whatever a shape reads that way must be
    the instant the canonical order gives the stripped text."""
    if "%z" in shape:
        instant = instant.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    text = before + render(instant, shape, pad=False).replace(" ", inner) + after
    expected = canonical([text])[0]
    frame = pl.DataFrame({"t": [text]})
    as_is = frame.select(
        c.alias(str(i)) for i, c in enumerate(auto_candidates(pl.col("t"), TZ))
    ).row(0)
    assert {v for v in as_is if v is not None} <= {expected}, (text, as_is, expected)
    for first in range(len(SHAPES)):
        parser = AutoParser(TZ)
        parser._first = first % len(auto_candidates(pl.col("t"), TZ))
        got = parser.parse(pl.Series("t", [text, None, "x"], dtype=pl.String)).to_list()
        assert got == [expected, None, None], (text, first)
