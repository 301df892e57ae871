"""``source.csv.null_values``: cells such as ``\\N`` (MySQL and Mixpanel TSV exports) or
``NULL`` are read as empty, whole cell and case-sensitive, after unquoting; in the preflight
typing (either reader) and in the batches alike."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel_import.config import SourceConfig
from flywheel_import.profile import FileProfile
from tests.foundation_helpers import csv_text, run
from tests.test_identity_property import (
    FORMS,
    MESSY_VALUES,
    Sent,
    profiles,
    read_back,
    write_table,
)

MARKERS = {"null_values": ["\\N", "NULL"]}
MAPPING = {"event": "event", "user_id": "user_id", "timestamp": "ts"}


def test_a_number_column_with_null_markers_is_a_number_column(tmp_path: Path) -> None:
    data = csv_text(
        "event,user_id,ts,amount,note",
        "a,u1,2024-01-01,\\N,x",
        "a,u2,2024-01-01,12.5,NULL",
        "a,u3,2024-01-01,NULL,\\N",
    )
    result = run(tmp_path, data, MAPPING, source={"csv": MARKERS})
    assert result.props() == [{"note": "x"}, {"amount": 12.5}, {}]


def test_without_null_values_a_marker_is_text(tmp_path: Path) -> None:
    data = csv_text("event,user_id,ts,amount", "a,u1,2024-01-01,\\N", "a,u2,2024-01-01,5")
    assert run(tmp_path, data, MAPPING).props() == [{"amount": "\\N"}, {"amount": "5"}]


def test_markers_match_whole_cells_case_sensitively_after_unquoting(tmp_path: Path) -> None:
    data = csv_text(
        "event,user_id,ts,v",
        'a,u1,2024-01-01,"\\N"',
        "a,u2,2024-01-01,null",
        "a,u3,2024-01-01,\\N\\N",
        'a,u4,2024-01-01," NULL"',
        "a,u5,2024-01-01,NULL",
    )
    result = run(tmp_path, data, MAPPING, source={"csv": MARKERS})
    assert [p.get("v") for p in result.props()] == [None, "null", "\\N\\N", " NULL", None]


def test_markers_in_mapped_fields_are_missing_values(tmp_path: Path) -> None:
    data = csv_text(
        "event,user_id,ts", "\\N,u1,2024-01-01", "a,\\N,2024-01-01", "a,u1,\\N", "a,u1,2024-01-01"
    )
    result = run(tmp_path, data, MAPPING, source={"csv": MARKERS})
    assert result.codes() == ["MISSING_EVENT_NAME", "MISSING_IDENTITY", "MISSING_TIMESTAMP"]
    assert result.reject_at(1)["event"] is None  # read as empty: the rejects show it empty


def test_a_mixpanel_style_tsv_reads_its_markers(tmp_path: Path) -> None:
    data = (
        "event\tdistinct_id\ttime\t$city\tprice\n"
        "watch video\tu1\t1704103200\t\\N\t3\n"
        "add to cart\tu2\t1704103260\tParis\t\\N\n"
    )
    result = run(
        tmp_path,
        data,
        {
            "event": {"column": "event", "normalize": "snake_case"},
            "user_id": "distinct_id",
            "timestamp": {"column": "time", "unit": "s"},
        },
        name="export.tsv",
        source={"csv": {"null_values": ["\\N"]}},
    )
    assert result.codes() == []
    assert [(e["event"], e["properties"]) for e in result.events()] == [
        ("watch_video", {"price": 3}),
        ("add_to_cart", {"$city": "Paris"}),
    ]


@pytest.mark.parametrize("values", [["\\N"], ["\\N", "NULL", "-"]])
def test_both_preflight_readers_type_marker_columns_alike(
    tmp_path: Path, values: list[str]
) -> None:
    data = b"event,n,b,s\n" + b"a,\\N,\\N,\\N\n" * 1500 + b"a,1,true,-\na,NULL,\\N,x\n"
    source = SourceConfig.model_validate({"csv": {"null_values": values}})
    fast, exact = profiles(tmp_path, data, source)
    assert fast is not None and isinstance(exact, FileProfile)
    assert fast.text_kinds == exact.text_kinds
    assert exact.text_kinds["b"] == "boolean"
    assert exact.text_kinds["n"] == ("number" if "NULL" in values else "string")


def test_plain_and_compressed_files_with_markers_send_the_same_bodies(tmp_path: Path) -> None:
    lines = (
        ["event,user_id,ts,amount"]
        + ["a,u1,2024-01-15 10:30:00,\\N"] * 1200
        + [f"a,u{i},2024-01-15 10:30:00,{i}" for i in range(2, 6)]
    )
    data = ("\n".join(lines) + "\n").encode()
    (tmp_path / "p.csv").write_bytes(data)
    (tmp_path / "p.csv.gz").write_bytes(gzip.compress(data))
    plain = read_back(tmp_path / "p.csv", MAPPING, 1000, csv=MARKERS)
    packed = read_back(tmp_path / "p.csv.gz", MAPPING, 1000, csv=MARKERS)
    assert plain.bodies == packed.bodies and plain.ids == packed.ids
    assert '"amount":5' in plain.bodies[-1]


CELLS = st.sampled_from(
    ["\\N", "\\N", "NULL", "", "1", "2.5", "true", "x", "\\n", "null", "N", "a,\\N"]
)


@st.composite
def marker_tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    rows = []
    for _ in range(draw(st.integers(1, 10))):
        rows.append(
            [
                draw(st.sampled_from(["signup", "\\N", "NULL"])),
                draw(st.sampled_from(["u1", "\\N", "007"])),
                draw(st.sampled_from(["2024-01-15 10:30:00", "\\N"])),
                draw(CELLS),
                draw(CELLS),
            ]
        )
    return ["event", "user_id", "ts", "p", "q"], rows


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(table=marker_tables())
def test_every_form_and_batch_size_sends_identical_bodies_with_markers(
    tmp_path_factory: pytest.TempPathFactory, table: tuple[list[str], list[list[str]]]
) -> None:
    header, rows = table
    folder = tmp_path_factory.mktemp("markers")
    reference: Sent | None = None
    runs = [(form, 1000) for form in FORMS] + [(FORMS[0], 1), (FORMS[2], 3)]
    for form, batch_rows in runs:
        got = read_back(
            write_table(folder, header, rows, form), MAPPING, batch_rows, dry_run=False, csv=MARKERS
        )
        if reference is None:
            reference = got
            continue
        assert got.bodies == reference.bodies, (form, batch_rows)
        assert got.ids == reference.ids
        assert got.rejects == reference.rejects
    assert reference is not None
    for body in reference.bodies:
        event = json.loads(body)["event"]
        values = [event.get(k) for k in ("event", "user_id")] + list(event["properties"].values())
        assert not {"\\N", "NULL"} & set(values), body


@st.composite
def messy_marker_files(draw: st.DrawFn) -> bytes:
    lines = ["a,b,c"]
    for _ in range(draw(st.integers(0, 12))):
        fields = []
        for _ in range(3):
            v = draw(st.sampled_from([*MESSY_VALUES, "\\N", "NULL", "\\N", "\\N"]))
            quoted = draw(st.booleans()) or any(ch in v for ch in ',"\n')
            fields.append('"' + v.replace('"', '""') + '"' if quoted else v)
        lines.append(",".join(fields))
    return ("\n".join(lines) + "\n").encode()


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=messy_marker_files())
def test_fast_scan_agrees_with_the_exact_reader_on_markers_or_declines(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    source = SourceConfig.model_validate({"csv": MARKERS})
    fast, exact = profiles(tmp_path_factory.mktemp("mm"), data, source)
    if fast is None:
        return
    assert isinstance(exact, FileProfile)
    assert fast.text_kinds == exact.text_kinds and fast.rows == exact.rows


def test_null_values_must_be_a_list_of_text(tmp_path: Path) -> None:
    from flywheel_import.errors import ConfigError

    with pytest.raises(ConfigError, match=r"source\.csv\.null_values"):
        run(
            tmp_path,
            csv_text("event,user_id,ts", "a,u,2024-01-01"),
            MAPPING,
            source={"csv": {"null_values": "\\N"}},
        )
