"""DUPLICATE_EVENT_ID for rows without a mapped id: two rows are duplicates exactly when their
derived event ids are equal, that is when their cores (the event's JSON without the id) are
equal. The dry run finds the same duplicates as a run that builds the bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel_import.config import Config
from flywheel_import.dedupe import SeenIds
from flywheel_import.encode import Encoder, Member
from flywheel_import.pipeline import find_inputs, preflight, prepared_batches
from flywheel_import.sources import ROW

MAPPING = {"event": "event", "user_id": "user_id", "timestamp": "ts"}
TS = "2024-01-15 10:30:00"


@dataclass
class Outcome:
    sent: list[tuple[str, int, str]]  # (file, row, body)
    duplicates: list[tuple[str, int]]  # rows rejected DUPLICATE_EVENT_ID (file, row)
    dry_sent: list[tuple[str, int]]
    dry_duplicates: list[tuple[str, int]]

    def events(self) -> list[dict[str, object]]:
        return [json.loads(body)["event"] for _, _, body in self.sent]


def import_files(tmp_path: Path, files: dict[str, str], batch_rows: int = 1000) -> Outcome:
    """Write ``files`` and prepare them as a send run and as a dry run would (no network)."""
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    cfg = Config.model_validate({"mapping": MAPPING, "source": {"batch_rows": batch_rows}})
    jobs = preflight(cfg, find_inputs(cfg, sorted(tmp_path / n for n in files)), progress=False)
    out = Outcome([], [], [], [])
    for bodies in (True, False):
        for prep in prepared_batches(cfg, jobs, SeenIds(), bodies=bodies):
            name = Path(prep.source).name
            dups = prep.rejected.filter(pl.col("_error_code") == "DUPLICATE_EVENT_ID")
            found = [(name, r) for r in dups.get_column("_row").to_list()]
            if bodies:
                out.sent += [(name, r, b) for r, b in prep.send.select(ROW, "body").rows()]
                out.duplicates += found
            else:
                out.dry_sent += [(name, r) for r in prep.send.get_column(ROW).to_list()]
                out.dry_duplicates += found
    assert out.dry_sent == [(f, r) for f, r, _ in out.sent], "dry run and send run disagree"
    assert out.dry_duplicates == out.duplicates
    return out


def test_same_value_under_different_property_names_is_not_a_duplicate(tmp_path: Path) -> None:
    out = import_files(
        tmp_path,
        {
            "a.csv": f"event,user_id,ts,page\nview,u1,{TS},home\n",
            "b.csv": f"event,user_id,ts,screen\nview,u1,{TS},home\n",
        },
    )
    assert out.duplicates == []
    assert [e["properties"] for e in out.events()] == [{"page": "home"}, {"screen": "home"}]
    assert out.events()[0]["event_id"] != out.events()[1]["event_id"]


def test_text_five_and_number_five_are_different_events(tmp_path: Path) -> None:
    # In b.csv the column holds text ("x"), so its 5 is the JSON string "5".
    out = import_files(
        tmp_path,
        {
            "a.csv": f"event,user_id,ts,n\nview,u1,{TS},5\n",
            "b.csv": f"event,user_id,ts,n\nview,u1,{TS},5\nview,u2,{TS},x\n",
        },
    )
    assert out.duplicates == []
    first, second = out.events()[:2]
    assert first["properties"] == {"n": 5} and second["properties"] == {"n": "5"}
    assert first["event_id"] != second["event_id"]


def test_same_event_from_a_file_with_an_extra_empty_column_is_a_duplicate(tmp_path: Path) -> None:
    # Both rows are {"event":"view",...,"properties":{"n":1}}: one event, one derived id.
    out = import_files(
        tmp_path,
        {
            "a.csv": f"event,user_id,ts,note,n\nview,u1,{TS},,1\n",
            "b.csv": f"event,user_id,ts,n\nview,u1,{TS},1\n",
        },
    )
    assert out.duplicates == [("b.csv", 1)]
    assert [(f, r) for f, r, _ in out.sent] == [("a.csv", 1)]


def test_nulls_in_different_places_are_different_events(tmp_path: Path) -> None:
    out = import_files(
        tmp_path,
        {"a.csv": f"event,user_id,ts,x,y\nview,u1,{TS},1,\nview,u1,{TS},,1\nview,u1,{TS},,\n"},
    )
    assert out.duplicates == []
    assert [e["properties"] for e in out.events()] == [{"x": 1}, {"y": 1}, {}]


def test_a_true_duplicate_across_two_files_is_still_caught(tmp_path: Path) -> None:
    row = f"view,u1,{TS},home,3"
    out = import_files(
        tmp_path,
        {
            "a.csv": f"event,user_id,ts,page,n\n{row}\nview,u2,{TS},x,1\n",
            "b.csv": f"event,user_id,ts,page,n\nview,u3,{TS},y,2\n{row}\n",
        },
        batch_rows=1,
    )
    assert out.duplicates == [("b.csv", 2)]
    assert len(out.sent) == 3


# --- the fingerprint itself --------------------------------------------------------------------

VALUES = st.one_of(st.none(), st.sampled_from(["5", "home", "true", "", 'a"b', "ü"]))


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["view", "buy"]),
            st.sampled_from([None, "u1", "u2"]),
            st.sampled_from([None, "u1"]),
            VALUES,
            VALUES,
            VALUES,
        ),
        min_size=2,
        max_size=12,
    ),
    keys=st.sampled_from([("page", "page"), ("page", "screen"), ("a", "b")]),
    quoted=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    identify=st.sampled_from([None, True, False]),
)
def test_fingerprints_are_equal_exactly_when_cores_are_equal(
    rows: list[tuple[str | None, ...]],
    keys: tuple[str, str],
    quoted: tuple[bool, bool, bool],
    identify: bool | None,
) -> None:
    names = ["event", "user_id", "anonymous_id", "p0", "p1", "p2"]
    frame = pl.DataFrame(rows, schema=dict.fromkeys(names, pl.String), orient="row").with_columns(
        pl.lit(None, pl.String).alias("event_id"),
        pl.lit(TS).alias("timestamp"),
        (pl.col("p0") == "true").alias("identify"),
    )
    # Raw (unquoted) members hold JSON text: keep them valid so the core parses.
    frame = frame.with_columns(
        pl.when(pl.col(f"p{i}").is_in(["5", "true"]) | pl.lit(quoted[i]))
        .then(pl.col(f"p{i}"))
        .alias(f"p{i}")
        for i in range(3)
    )
    props = [
        Member(keys[0], "p0", quoted[0]),
        Member(keys[1], "p1", quoted[1]),
        Member("n", "p2", quoted[2]),
    ]
    enc = Encoder(frame, timestamp=True, identify=identify, properties=props)
    cores = frame.select(enc.core().alias("core")).get_column("core").to_list()
    fps = enc.content_hash(frame).to_list()
    for i in range(len(cores)):
        for j in range(i + 1, len(cores)):
            assert (cores[i] == cores[j]) == (fps[i] == fps[j]), (cores[i], cores[j])
    # A row's fingerprint does not depend on the batch it is in.
    alone = [
        Encoder(frame.slice(i, 1), timestamp=True, identify=identify, properties=props)
        .content_hash(frame.slice(i, 1))
        .item()
        for i in range(frame.height)
    ]
    assert alone == fps


def test_a_wide_sparse_table_fingerprints_in_one_pass_per_column() -> None:
    """64 nullable property columns: the chain grows with the columns, one link each (a
    branch per skipped link once doubled the expression with each one and never ended)."""
    n = 64
    frame = pl.DataFrame(
        {
            "event": ["a", "a", "a"],
            "user_id": ["u", "u", None],
            "anonymous_id": [None] * 3,
            "event_id": [None] * 3,
            "timestamp": ["2024-01-01T00:00:00Z"] * 3,
            **{f"p{i}": [None if (i + r) % 3 else str(i) for r in range(3)] for i in range(n)},
        },
        schema_overrides={"anonymous_id": pl.String, "event_id": pl.String},
    )
    props = [Member(f"k{i}", f"p{i}", True) for i in range(n)]
    enc = Encoder(frame, timestamp=True, identify=False, properties=props)
    fps = enc.content_hash(frame).to_list()
    cores = frame.select(enc.core().alias("c")).get_column("c").to_list()
    assert len(set(fps)) == len(set(cores)) == 3


def test_a_null_member_fingerprints_as_a_member_the_file_does_not_have() -> None:
    """Two files of one run: the core omits a null member, so the row of a file with an
    empty ``coupon`` column is the same event as the row of a file without the column; the
    order and the keys of the members still count."""
    base = {
        "event": ["buy"],
        "user_id": ["u1"],
        "anonymous_id": [None],
        "event_id": [None],
        "timestamp": [TS],
    }
    schema = dict.fromkeys([*base, "p0", "p1"], pl.String)

    def fingerprint(props: list[tuple[str, str | None]]) -> int:
        frame = pl.DataFrame(
            {**base, **{f"p{i}": [v] for i, (_, v) in enumerate(props)}},
            schema={k: schema[k] for k in [*base, *(f"p{i}" for i in range(len(props)))]},
        )
        members = [Member(k, f"p{i}", True) for i, (k, _) in enumerate(props)]
        enc = Encoder(frame, timestamp=True, identify=False, properties=members)
        return int(enc.content_hash(frame).item())

    plain = fingerprint([("page", "home")])
    assert fingerprint([("page", "home"), ("coupon", None)]) == plain
    assert fingerprint([("coupon", None), ("page", "home")]) == plain
    assert fingerprint([("screen", "home")]) != plain
    assert fingerprint([("page", "home"), ("coupon", "")]) != plain
    assert fingerprint([("a", "1"), ("b", "2")]) != fingerprint([("b", "2"), ("a", "1")])

    # Null in some rows only: the per-row skip agrees with the column-wide one.
    frame = pl.DataFrame(
        {**{k: v * 2 for k, v in base.items()}, "p0": ["home", "home"], "p1": [None, "x"]},
        schema=schema,
    )
    members = [Member("page", "p0", True), Member("coupon", "p1", True)]
    enc = Encoder(frame, timestamp=True, identify=False, properties=members)
    first, second = enc.content_hash(frame).to_list()
    assert first == plain and second != plain
