"""Parquet columns of every Arrow type: exact JSON values, in the dry run and at the API.

A corpus file is written with pyarrow (several rows per type, nulls included), validated, and
sent to the sandbox; the request bodies, the stored bodies, the rejects file and the exit code
are checked. Values no reader can represent are rejected rows, never a crash.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel_import.arrowtypes import convert, empty_batch
from flywheel_import.cli import main
from flywheel_import.config import SourceConfig
from flywheel_import.errors import InputError
from flywheel_import.inputs import detect
from flywheel_import.profile import profile
from flywheel_import.sandbox import Sandbox
from flywheel_import.sources import read_batches
from tests.foundation_helpers import read_rejects, run, write_config

KEY = "parquet-types-key-123"
U1 = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")
U2 = uuid.UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")
MAPPING = {"event": "event", "user_id": "uid", "timestamp": "ts"}


def corpus() -> pa.Table:
    """Three rows of every type Parquet can hold; row 2 is all nulls, row 3 is rejected."""
    uuid_struct = pa.struct([("c", pa.string()), ("u", pa.binary(16))])
    return pa.table(
        {
            "event": pa.array(["page_viewed", "page_viewed", "bad name!"]),
            "uid": pa.array([U1.bytes, U2.bytes, U1.bytes], pa.uuid()),
            "ts": pa.array(
                [
                    dt.datetime(2024, 1, 15, 10, 30),
                    dt.datetime(2024, 1, 15, 10, 30, 0, 5),
                    dt.datetime(2024, 1, 15),
                ],
                pa.timestamp("us"),
            ),
            "fsb16": pa.array([U2.bytes, None, U1.bytes], pa.binary(16)),
            "fsb4": pa.array([b"\x00\x01\xab\xff", None, b"abcd"], pa.binary(4)),
            "bin": pa.array([b"\xde\xad", None, b"\x00"], pa.binary()),
            "lbin": pa.array([b"\xbe\xef", None, b"\x00"], pa.large_binary()),
            "bview": pa.array([b"\x01", None, b"\x02"], pa.binary_view()),
            "lstr": pa.array(["x", None, "z"], pa.large_string()),
            "sview": pa.array(["é", None, "q"], pa.string_view()),
            "dict": pa.array(["pro", None, "free"]).dictionary_encode(),
            "dict_int": pa.array([7, None, 8]).dictionary_encode(),
            "d32": pa.array([dt.date(2024, 2, 29), None, dt.date(1, 1, 1)], pa.date32()),
            "d64": pa.array([dt.date(2024, 3, 1), None, dt.date(9999, 12, 31)], pa.date64()),
            "ts_ms": pa.array([1705314600123, None, 0], pa.timestamp("ms")),
            "ts_us_tz": pa.array(
                [1705314600000001, None, 0], pa.timestamp("us", "America/New_York")
            ),
            "ts_ns_tz": pa.array([1705314600000002000, None, 0], pa.timestamp("ns", "+05:30")),
            "ts_ns": pa.array([1705314600000000000, None, 0], pa.timestamp("ns")),
            "t32s": pa.array([dt.time(10, 30), None, dt.time(0, 0)], pa.time32("s")),
            "t32ms": pa.array(
                [dt.time(10, 30, 1, 500000), None, dt.time(23, 59, 59, 999000)], pa.time32("ms")
            ),
            "t64us": pa.array(
                [dt.time(10, 30, 1, 123456), None, dt.time(0, 0, 0, 1)], pa.time64("us")
            ),
            "t64ns": pa.array([37801123456789, None, 999], pa.time64("ns")),
            "dur_s": pa.array([90, None, -5], pa.duration("s")),
            "dur_ms": pa.array([1500, None, 1], pa.duration("ms")),
            "dur_us": pa.array([2_000_001, None, 0], pa.duration("us")),
            "dur_ns": pa.array([1, None, 10**18], pa.duration("ns")),
            "dec": pa.array([Decimal("1.50"), None, Decimal("-0.05")], pa.decimal128(10, 2)),
            "dec38": pa.array(
                [Decimal("12345678901234567890123456789012345678"), None, Decimal(-1)],
                pa.decimal128(38, 0),
            ),
            "dec38s": pa.array(
                [Decimal("0.12345678901234567890123456789012345678"), None, Decimal(0)],
                pa.decimal128(38, 38),
            ),
            "dec256": pa.array([Decimal("123.40"), None, Decimal(-1)], pa.decimal256(20, 2)),
            "dec256w": pa.array(
                [Decimal("1234567890123456789012345678901234567890.5"), None, Decimal(0)],
                pa.decimal256(50, 1),
            ),
            "map": pa.array([[("a", 1), ("b", 2)], None, []], pa.map_(pa.string(), pa.int64())),
            "map_bin": pa.array(
                [[(1, b"\xff")], None, [(2, None)]], pa.map_(pa.int32(), pa.binary())
            ),
            "list": pa.array([[1, 2], None, []], pa.list_(pa.int64())),
            "llist": pa.array([["a"], None, ["b", None]], pa.large_list(pa.string())),
            "lstruct": pa.array(
                [[{"x": 1, "y": "s"}], None, [{"x": None, "y": None}]],
                pa.list_(pa.struct([("x", pa.int64()), ("y", pa.string())])),
            ),
            "fsl": pa.array([[1.5, 2.0], None, [0.0, -1.0]], pa.list_(pa.float64(), 2)),
            "lbinl": pa.array([[b"\x01\x02"], None, []], pa.list_(pa.binary())),
            "st": pa.array(
                [{"a": 1, "b": {"c": "deep", "u": U1.bytes}}, None, {"a": None, "b": None}],
                pa.struct([("a", pa.int64()), ("b", uuid_struct)]),
            ),
            "nul": pa.nulls(3),
            "f16": pa.array(np.array([1.5, np.nan, -2], dtype=np.float16)),
            "f32": pa.array([0.25, None, 1e10], pa.float32()),
            "i8": pa.array([-128, None, 127], pa.int8()),
            "u64": pa.array([2**64 - 1, None, 0], pa.uint64()),
            "flag": pa.array([True, None, False]),
        }
    )


#: The first row's properties, exactly as sent (numbers as written, order of the columns).
FIRST_PROPERTIES = (
    '{"fsb16":"7c9e6679-7425-40de-944b-e07fc1f90ae7","fsb4":"0001abff","bin":"dead",'
    '"lbin":"beef","bview":"01","lstr":"x","sview":"é","dict":"pro","dict_int":7,'
    '"d32":"2024-02-29T00:00:00Z","d64":"2024-03-01T00:00:00Z",'
    '"ts_ms":"2024-01-15T10:30:00.123Z","ts_us_tz":"2024-01-15T10:30:00.000001Z",'
    '"ts_ns_tz":"2024-01-15T10:30:00.000002Z","ts_ns":"2024-01-15T10:30:00Z",'
    '"t32s":"10:30:00","t32ms":"10:30:01.500000","t64us":"10:30:01.123456",'
    '"t64ns":"10:30:01.123456","dur_s":90,"dur_ms":1.500,"dur_us":2.000001,'
    '"dur_ns":0.000000001,"dec":1.50,"dec38":12345678901234567890123456789012345678,'
    '"dec38s":0.12345678901234567890123456789012345678,"dec256":123.40,'
    '"dec256w":1234567890123456789012345678901234567890.5,'
    '"map":"{\\"a\\":1,\\"b\\":2}","map_bin":"{\\"1\\":\\"ff\\"}","list":"[1,2]",'
    '"llist":"[\\"a\\"]","lstruct":"[{\\"x\\":1,\\"y\\":\\"s\\"}]","fsl":"[1.5,2.0]",'
    '"lbinl":"[\\"0102\\"]","st.a":1,"st.b.c":"deep",'
    '"st.b.u":"0f8fad5b-d9cb-469f-a165-70867728950e","f16":1.5,"f32":0.25,"i8":-128,'
    '"u64":18446744073709551615,"flag":true}'
)


def properties_text(body: str) -> str:
    """The ``properties`` object of a request body, as the exact text sent."""
    start = body.index('"properties":') + len('"properties":')
    return body[start : body.rindex("}}")]


def write_corpus(folder: Path, name: str = "corpus.parquet") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pq.write_table(corpus(), path)
    return path


def test_every_arrow_type_becomes_the_documented_json_value(tmp_path: Path) -> None:
    path = write_corpus(tmp_path / "in")
    res = run(tmp_path, {}, MAPPING, inputs=[str(path)])
    assert res.report.rows_read == 3 and res.report.valid == 2
    first, second = res.raw_bodies
    assert properties_text(first) == FIRST_PROPERTIES
    assert json.loads(first)["event"]["user_id"] == str(U1)
    assert json.loads(first)["event"]["timestamp"] == "2024-01-15T10:30:00Z"
    # The all-null row: every property omitted, none sent as null.
    assert json.loads(second)["event"]["properties"] == {}
    assert json.loads(second)["event"]["user_id"] == str(U2)
    assert json.loads(second)["event"]["timestamp"] == "2024-01-15T10:30:00.000005Z"


def test_rejected_parquet_row_is_written_with_its_columns_as_text(tmp_path: Path) -> None:
    path = write_corpus(tmp_path / "in")
    res = run(tmp_path, {}, MAPPING, inputs=[str(path)])
    [row] = res.rejects
    assert (row["_row"], row["_error_code"]) == (3, "INVALID_EVENT_NAME")
    expected = {
        "uid": str(U1),
        "fsb16": str(U1),
        "fsb4": "61626364",
        "bin": "00",
        "bview": "02",
        "dict": "free",
        "dict_int": "8",
        "d32": "0001-01-01",
        "d64": "9999-12-31",
        "t32ms": "23:59:59.999000",
        "t64us": "00:00:00.000001",
        "t64ns": "00:00:00",
        "dur_s": "-5",
        "dur_ms": "0.001",
        "dur_ns": "1000000000.000000000",
        "dec": "-0.05",
        "dec256w": "0.0",
        "map": "{}",
        "map_bin": '{"2":null}',
        "llist": '["b",null]',
        "fsl": "[0.0,-1.0]",
        "st.a": None,
        "nul": None,
        "u64": "0",
        "flag": "false",
    }
    assert {k: row[k] for k in expected} == expected


def test_corpus_sent_to_the_sandbox_is_stored_exactly_and_never_exits_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_corpus(tmp_path / "in")
    cfg = write_config(
        tmp_path,
        MAPPING,
        source={"path": str(path)},
        api={"key_env": "PARQUET_TYPES_KEY", "rate_limit": 0},
        output={"rejects": "out/rejects.csv", "report": "out/report.json"},
    )
    monkeypatch.setenv("PARQUET_TYPES_KEY", KEY)
    assert main(["validate", str(cfg), "--no-progress"]) == 1
    with Sandbox(key=KEY) as sb:
        code = main(["run", str(cfg), "--api-url", sb.url, "--no-progress"])
        stored = [e["body"]["event"] for e in sb.events()]
    assert code == 1  # finished, with the one rejected row
    assert [e["user_id"] for e in stored] == [str(U1), str(U2)]
    # The sandbox parses with orjson (integers past 64 bits become floats): compare alike.
    assert stored[0]["properties"] == orjson.loads(FIRST_PROPERTIES)
    assert stored[1]["properties"] == {}
    rejects = read_rejects(tmp_path / "out" / "rejects.csv")
    assert [(r["_row"], r["_error_code"]) for r in rejects] == [(3, "INVALID_EVENT_NAME")]
    assert rejects[0]["map"] == "{}" and rejects[0]["uid"] == str(U1)


def test_duckdb_style_uuid_column_gives_canonical_id_text(tmp_path: Path) -> None:
    # DuckDB and Spark write UUIDs as 16 raw bytes; some readers see them without the UUID
    # annotation, as fixed_size_binary(16).
    table = pa.table(
        {
            "event": ["a", "a"],
            "ts": ["2024-01-15T10:30:00Z"] * 2,
            "user": pa.array([U1.bytes, U2.bytes], pa.binary(16)),
            "session": pa.array([U2.bytes, None], pa.binary(16)),
        }
    )
    path = tmp_path / "duck.parquet"
    pq.write_table(table, path)
    res = run(
        tmp_path,
        {},
        {"event": "event", "user_id": "user", "timestamp": "ts", "event_id": "session"},
        inputs=[str(path)],
    )
    assert res.rejects == []
    assert [e["user_id"] for e in res.events()] == [str(U1), str(U2)]
    assert res.events()[0]["event_id"] == str(U2)
    assert res.props() == [{}, {}]


def test_profile_and_batches_give_every_column_the_same_type(tmp_path: Path) -> None:
    path = write_corpus(tmp_path)
    src = detect(path)
    options = SourceConfig()
    prof = profile(src, options, wants_kind=lambda _: True)
    for batch_rows in (1, 2, 10):
        for batch in read_batches(src, options.csv, batch_rows):
            assert dict(batch.frame.drop("__row").schema) == prof.schema
    assert prof.text_kinds == {"dec256w": "number"}


def test_timestamp_units_and_zones_give_utc_instants(tmp_path: Path) -> None:
    instant = 1705314600  # 2024-01-15T10:30:00Z
    columns = {
        f"{unit}{'_tz' if tz else ''}": pa.array([instant * scale, None], pa.timestamp(unit, tz))
        for unit, scale in (("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9))
        for tz in (None, "Asia/Tokyo")
    }
    batch = pa.RecordBatch.from_pydict(columns)
    frame = pl.from_arrow(convert(batch, "t").batch)
    assert isinstance(frame, pl.DataFrame)
    for name in columns:
        values = frame.get_column(name)
        if name.endswith("_tz"):
            assert values.dtype == pl.Datetime(values.dtype.time_unit, "UTC")  # type: ignore[attr-defined]
        assert values.dt.epoch("s").to_list() == [instant, None]
    # Naive instants take the mapping's timezone, aware ones keep their instant.
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table(
            {
                "event": ["a"],
                "user_id": ["u"],
                "ts": pa.array([instant * 1000], pa.timestamp("ms")),
                "at": pa.array([instant * 1000], pa.timestamp("ms", "Asia/Tokyo")),
            }
        ),
        path,
    )
    res = run(
        tmp_path,
        {},
        {
            "event": "event",
            "user_id": "user_id",
            "timestamp": {"column": "ts", "timezone": "Europe/Paris"},
        },
        inputs=[str(path)],
    )
    assert res.events()[0]["timestamp"] == "2024-01-15T09:30:00Z"
    assert res.props() == [{"at": "2024-01-15T10:30:00Z"}]


def test_wide_decimals_are_sent_as_the_exact_numbers(tmp_path: Path) -> None:
    wide = "1234567890123456789012345678901234567.12345678901234567890123456789012345678"
    path = tmp_path / "w.parquet"
    pq.write_table(
        pa.table(
            {
                "event": ["a", "a"],
                "user_id": ["u", "v"],
                "ts": ["2024-01-15T10:30:00Z"] * 2,
                "big": pa.array([Decimal(wide), Decimal("-0.5")], pa.decimal256(76, 38)),
                "id38": pa.array(
                    [Decimal("99999999999999999999999999999999999999"), None], pa.decimal128(38, 0)
                ),
            }
        ),
        path,
    )
    res = run(
        tmp_path,
        {},
        {"event": "event", "user_id": "id38", "anonymous_id": "user_id", "timestamp": "ts"},
        inputs=[str(path)],
    )
    assert res.rejects == []
    first, second = (properties_text(b) for b in res.raw_bodies)
    assert first == '{"big":' + wide + "}"
    assert second == '{"big":-0.50000000000000000000000000000000000000}'
    assert res.events()[0]["user_id"] == "99999999999999999999999999999999999999"
    assert json.loads(res.raw_bodies[0], parse_float=Decimal)["event"]["properties"][
        "big"
    ] == Decimal(wide)


def test_negative_scale_decimal_becomes_a_whole_decimal() -> None:
    batch = pa.RecordBatch.from_pydict(
        {"d": pa.array([Decimal("12300"), None], pa.decimal128(5, -2))}
    )
    frame = pl.from_arrow(convert(batch, "x").batch)
    assert isinstance(frame, pl.DataFrame)
    assert frame.schema["d"] == pl.Decimal(7, 0)
    assert frame.get_column("d").cast(pl.String).to_list() == ["12300", None]


def test_unrepresentable_values_are_malformed_rows_and_the_rest_is_sent(tmp_path: Path) -> None:
    bad_text = pa.Array.from_buffers(
        pa.string(),
        4,
        [
            None,
            pa.py_buffer(np.array([0, 1, 3, 4, 5], np.int32).tobytes()),
            pa.py_buffer(b"a\xff\xfebc"),
        ],
    )
    path = tmp_path / "hostile.parquet"
    pq.write_table(
        pa.table(
            {
                "event": ["a", "a", "a", "a"],
                "user_id": ["u1", "u2", "u3", "u4"],
                "ts": pa.array([1, 2, 300_000_000_000_000, 4], pa.timestamp("ms")),
                "note": bad_text,
                "when": pa.array(
                    [dt.date(2024, 1, 1), None, None, dt.date(2024, 1, 2)], pa.date32()
                ),
                "tags": pa.array([[1], [2], [3], [4]], pa.list_(pa.int64())),
            }
        ),
        path,
    )
    res = run(
        tmp_path,
        {},
        {"event": "event", "user_id": "user_id", "timestamp": {"column": "ts", "timezone": "UTC"}},
        inputs=[str(path)],
    )
    assert res.report.rows_read == 4
    assert [(r["_row"], r["_error_code"]) for r in res.rejects] == [
        (2, "MALFORMED_ROW"),
        (3, "MALFORMED_ROW"),
    ]
    assert res.rejects[0]["_error_message"] == "note: text is not valid UTF-8"
    assert res.rejects[1]["_error_message"] == "ts: date/time outside years 1-9999"
    assert '"user_id": "u3"' in res.rejects[1]["_raw"].replace('":"', '": "')
    assert [e["user_id"] for e in res.events()] == ["u1", "u4"]
    assert [p["note"] for p in res.props()] == ["a", "c"]


def test_unrepresentable_values_inside_lists_and_structs_reject_their_row() -> None:
    big = 300_000_000_000_000
    batch = pa.RecordBatch.from_pydict(
        {
            "l": pa.array([[0], [0, big], None], pa.list_(pa.timestamp("ms"))),
            "s": pa.array([{"t": 0}, {"t": 0}, {"t": big}], pa.struct([("t", pa.timestamp("ms"))])),
            "m": pa.array(
                [[("k", 0)], [], [("k", -big)]], pa.map_(pa.string(), pa.timestamp("ms"))
            ),
            "t": pa.array([0, 90_000, 1], pa.time32("s")),
        }
    )
    converted = convert(batch, "x.parquet")
    assert converted.problems == {
        1: "l[]: date/time outside years 1-9999",
        2: "s.t: date/time outside years 1-9999",
    }
    assert convert(batch.slice(1), "x").problems == {
        0: "l[]: date/time outside years 1-9999",
        1: "s.t: date/time outside years 1-9999",
    }
    frame = pl.from_arrow(converted.batch)
    assert isinstance(frame, pl.DataFrame)
    assert frame.get_column("t").to_list() == ["00:00:00", None, "00:00:01"]


def test_time_of_day_past_midnight_is_a_problem_row() -> None:
    batch = pa.RecordBatch.from_pydict({"t": pa.array([0, 90_000], pa.time32("s"))})
    assert convert(batch, "x").problems == {1: "t: time of day outside 00:00-24:00"}


def test_types_with_no_json_reading_become_their_text() -> None:
    union = pa.UnionArray.from_sparse(
        pa.array([0, 1], pa.int8()), [pa.array([1, 2]), pa.array(["a", "b"])]
    )
    batch = pa.RecordBatch.from_pydict(
        {
            "interval": pa.array([(1, 2, 3), None], pa.month_day_nano_interval()),
            "union": union,
            "ree": pa.RunEndEncodedArray.from_arrays([1, 2], ["x", "y"]),
            "json": pa.array(['{"a": 1}', None], pa.json_()),
            "lview": pa.array([[1], None], pa.list_view(pa.int64())),
        }
    )
    frame = pl.from_arrow(convert(batch, "x").batch)
    empty = pl.from_arrow(convert(empty_batch(batch.schema), "x").batch)
    assert isinstance(frame, pl.DataFrame) and isinstance(empty, pl.DataFrame)
    assert frame.schema == empty.schema
    assert frame.to_dict(as_series=False) == {
        "interval": ["MonthDayNano(months=1, days=2, nanoseconds=3)", None],
        "union": ["1", "b"],
        "ree": ["x", "y"],
        "json": ['{"a": 1}', None],
        "lview": [[1], None],
    }


def test_corrupt_parquet_gz_is_one_line_error_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    good = tmp_path / "good.parquet"
    pq.write_table(
        pa.table({"event": ["a"], "user_id": ["u"], "ts": ["2024-01-15T10:30:00Z"]}), good
    )
    packed = gzip.compress(good.read_bytes())
    data = tmp_path / "data"
    data.mkdir()
    (data / "bad.parquet.gz").write_bytes(packed[: len(packed) // 2] + b"\x00" * 64)
    cfg = write_config(
        tmp_path,
        {"event": "event", "user_id": "user_id", "timestamp": "ts"},
        source={"path": "data/bad.parquet.gz"},
    )
    assert main(["validate", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bad.parquet.gz" in err and len(err.strip().splitlines()) == 1
    assert list(temp.glob("flywheel-*")) == []


def test_garbage_parquet_gz_is_one_line_error_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    data = tmp_path / "data"
    data.mkdir()
    for name, content in (
        ("a.parquet.gz", b"not gzip at all"),
        ("b.parquet.gz", gzip.compress(b"not parquet either")),
    ):
        (data / name).write_bytes(content)
        cfg = write_config(
            tmp_path,
            {"event": "event", "user_id": "user_id", "timestamp": "ts"},
            source={"path": f"data/{name}"},
        )
        assert main(["validate", str(cfg), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert name in err and len(err.strip().splitlines()) == 1
        assert list(temp.glob("flywheel-*")) == []


def test_duplicate_or_colliding_parquet_columns_are_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [pa.array(["a"]), pa.array(["u"]), pa.array(["2024-01-15T10:30:00Z"])]
    tables = {
        "dup.parquet": pa.table(
            [*base, pa.array([1]), pa.array([2])], names=["event", "user_id", "ts", "x", "x"]
        ),
        "dotted.parquet": pa.table(
            [*base, pa.array([1]), pa.array([{"b": 2}])],
            names=["event", "user_id", "ts", "a.b", "a"],
        ),
    }
    for name, table in tables.items():
        pq.write_table(table, tmp_path / name)
        cfg = write_config(
            tmp_path,
            {"event": "event", "user_id": "user_id", "timestamp": "ts"},
            source={"path": name},
        )
        assert main(["validate", str(cfg), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0] and "internal error" not in err[0]


def test_parquet_type_nested_too_deep_is_a_one_line_error() -> None:
    dtype: pa.DataType = pa.int64()
    for _ in range(70):
        dtype = pa.struct([("a", dtype)])
    batch = pa.RecordBatch.from_arrays([pa.nulls(1, dtype)], names=["deep"])
    with pytest.raises(InputError, match="'deep' nests deeper than 64 levels"):
        convert(batch, "x.parquet")


def test_list_column_mapped_as_id_or_timestamp_rejects_the_row(tmp_path: Path) -> None:
    path = tmp_path / "l.parquet"
    pq.write_table(
        pa.table({"event": ["a"], "user_id": pa.array([[1, 2]]), "ts": pa.array([[1]])}), path
    )
    res = run(
        tmp_path,
        {},
        {"event": "event", "user_id": "user_id", "timestamp": "ts"},
        inputs=[str(path)],
    )
    assert [(r["_row"], r["_error_code"], r["user_id"]) for r in res.rejects] == [
        (1, "INVALID_TIMESTAMP", "[1,2]")
    ]
