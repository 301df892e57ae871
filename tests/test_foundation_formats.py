"""Input formats, compression, encodings and input discovery (globs, directories)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import zstandard

from flywheel_import.pipeline import validate
from tests.foundation_helpers import csv_text, run, write_config, write_data

TS = "2024-01-15 10:30:00"
PLAIN = csv_text("event,user_id,ts,zip,price", f"a,000123,{TS},02134,9.5", f"b,u2,{TS},10001,2")
PLAIN_PROPS = [{"zip": "02134", "price": 9.5}, {"zip": "10001", "price": 2}]


# --- Parquet ---------------------------------------------------------------------------------


def test_parquet_typed_columns_keep_their_json_types(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "event": ["a", "b"],
            "user_id": ["000123", "u2"],
            "ts": [datetime(2024, 1, 15, 10, 30, tzinfo=UTC)] * 2,
            "count": [3, -1],
            "ratio": [0.5, 2.0],
            "flag": [True, False],
            "label": ["x", "007"],
            "day": [datetime(2024, 2, 1, 8, tzinfo=UTC), None],
        }
    )
    res = run(tmp_path, frame, name="data.parquet")
    assert res.rejects == []
    assert [e["user_id"] for e in res.events()] == ["000123", "u2"]
    assert [e["timestamp"] for e in res.events()] == ["2024-01-15T10:30:00Z"] * 2
    assert res.props() == [
        {"count": 3, "ratio": 0.5, "flag": True, "label": "x", "day": "2024-02-01T08:00:00Z"},
        {"count": -1, "ratio": 2.0, "flag": False, "label": "007"},
    ]


def test_parquet_struct_column_is_flattened_to_dotted_keys(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "event": ["a", "a"],
            "user_id": ["u1", "u2"],
            "ts": ["2024-01-15T10:30:00Z"] * 2,
            "device": [{"os": "ios", "info": {"version": 17}}, {"os": "android", "info": None}],
        }
    )
    res = run(tmp_path, frame, name="data.parquet")
    assert res.rejects == []
    assert res.props() == [
        {"device.os": "ios", "device.info.version": 17},
        {"device.os": "android"},
    ]


def test_parquet_list_column_is_sent_as_json_text(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "event": ["a", "a"],
            "user_id": ["u1", "u2"],
            "ts": ["2024-01-15T10:30:00Z"] * 2,
            "tags": [["red", "blue"], []],
            "nums": [[1, 2], [3]],
        }
    )
    res = run(tmp_path, frame, name="data.parquet")
    assert res.rejects == []
    props = res.props()
    assert all(isinstance(p["tags"], str) for p in props)
    assert [json.loads(p["tags"]) for p in props] == [["red", "blue"], []]
    assert [json.loads(p["nums"]) for p in props] == [[1, 2], [3]]


# --- NDJSON ----------------------------------------------------------------------------------


def test_ndjson_input_with_nested_object_is_flattened(tmp_path: Path) -> None:
    lines = [
        {
            "event": "a",
            "user_id": "000123",
            "ts": "2024-01-15T10:30:00Z",
            "price": 9.5,
            "ctx": {"page": "/x", "geo": {"country": "FR"}},
            "ok": True,
        },
        {
            "event": "b",
            "user_id": "u2",
            "ts": "2024-01-15T10:30:00+01:00",
            "price": 3,
            "ctx": {"page": "/y", "geo": {"country": "DE"}},
            "ok": False,
        },
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\n"
    res = run(tmp_path, text, name="events.ndjson")
    assert res.rejects == []
    assert [e["user_id"] for e in res.events()] == ["000123", "u2"]
    assert [e["timestamp"] for e in res.events()] == [
        "2024-01-15T10:30:00Z",
        "2024-01-15T09:30:00Z",
    ]
    assert res.props() == [
        {"price": 9.5, "ctx.page": "/x", "ctx.geo.country": "FR", "ok": True},
        {"price": 3, "ctx.page": "/y", "ctx.geo.country": "DE", "ok": False},
    ]


def test_ndjson_bad_json_line_is_malformed_row(tmp_path: Path) -> None:
    text = (
        '{"event":"a","user_id":"u1","ts":"2024-01-15T10:30:00Z"}\n'
        '{"event":"a","user_id":"u2",\n'
        '{"event":"a","user_id":"u3","ts":"2024-01-15T10:30:00Z"}\n'
    )
    res = run(tmp_path, text, name="events.jsonl")
    assert [(r["_row"], r["_error_code"]) for r in res.rejects] == [(2, "MALFORMED_ROW")]
    assert res.rejects[0]["_raw"] == '{"event":"a","user_id":"u2",'
    assert [e["user_id"] for e in res.events()] == ["u1", "u3"]


def test_ndjson_line_that_is_not_an_object_is_malformed_row(tmp_path: Path) -> None:
    text = '{"event":"a","user_id":"u1","ts":"2024-01-15T10:30:00Z"}\n[1,2]\n'
    res = run(tmp_path, text, name="events.ndjson")
    assert [(r["_row"], r["_error_code"]) for r in res.rejects] == [(2, "MALFORMED_ROW")]


def test_ndjson_missing_key_reads_as_empty(tmp_path: Path) -> None:
    text = (
        '{"event":"a","user_id":"u1","ts":"2024-01-15T10:30:00Z","page":"/x"}\n'
        '{"event":"a","user_id":"u2","ts":"2024-01-15T10:30:00Z"}\n'
    )
    res = run(tmp_path, text, name="events.ndjson")
    assert res.props() == [{"page": "/x"}, {}]


def test_ndjson_column_with_numbers_and_text_stays_text_for_whole_file(tmp_path: Path) -> None:
    rows = [
        {"event": "a", "user_id": f"u{i}", "ts": "2024-01-15T10:30:00Z", "code": i}
        for i in range(1, 5)
    ]
    rows.append({"event": "a", "user_id": "u5", "ts": "2024-01-15T10:30:00Z", "code": "x"})
    text = "\n".join(json.dumps(r) for r in rows) + "\n"
    res = run(tmp_path, text, name="events.ndjson", source={"batch_rows": 2})
    assert res.rejects == []
    assert [p["code"] for p in res.props()] == ["1", "2", "3", "4", "x"]


# --- compression -----------------------------------------------------------------------------


def test_gzip_csv_input(tmp_path: Path) -> None:
    res = run(tmp_path, gzip.compress(PLAIN.encode()), name="data.csv.gz")
    assert res.rejects == []
    assert res.props() == PLAIN_PROPS
    assert [e["user_id"] for e in res.events()] == ["000123", "u2"]


def test_zstd_csv_input(tmp_path: Path) -> None:
    data = zstandard.ZstdCompressor().compress(PLAIN.encode())
    res = run(tmp_path, data, name="data.csv.zst")
    assert res.rejects == []
    assert res.props() == PLAIN_PROPS


def test_zstd_csv_with_bad_row_is_rejected_with_row_number(tmp_path: Path) -> None:
    text = csv_text("event,user_id,ts", f"a,u1,{TS}", "a,u2", f"bad!,u3,{TS}")
    data = zstandard.ZstdCompressor().compress(text.encode())
    res = run(tmp_path, data, name="data.csv.zst")
    assert sorted((r["_row"], r["_error_code"]) for r in res.rejects) == [
        (2, "MALFORMED_ROW"),
        (3, "INVALID_EVENT_NAME"),
    ]


def test_gzip_csv_column_type_is_decided_once_per_file(tmp_path: Path) -> None:
    rows = [f"a,u{i},{TS},{i}" for i in range(1, 6)] + [f"a,u6,{TS},six"]
    data = gzip.compress(csv_text("event,user_id,ts,code", *rows).encode())
    res = run(tmp_path, data, name="data.csv.gz", source={"batch_rows": 2})
    assert [p["code"] for p in res.props()] == ["1", "2", "3", "4", "5", "six"]


def test_gzip_ndjson_and_parquet_inputs(tmp_path: Path) -> None:
    nd = '{"event":"a","user_id":"u1","ts":"2024-01-15T10:30:00Z","n":1}\n'
    frame = pl.DataFrame(
        {"event": ["b"], "user_id": ["u2"], "ts": ["2024-01-15T10:30:00Z"], "n": [2]}
    )
    pq = tmp_path / "tmp.parquet"
    frame.write_parquet(pq)
    res = run(
        tmp_path,
        {"a.ndjson.gz": gzip.compress(nd.encode()), "b.parquet.gz": gzip.compress(pq.read_bytes())},
    )
    assert res.rejects == []
    assert [(e["event"], e["properties"]["n"]) for e in res.events()] == [("a", 1), ("b", 2)]


# --- discovery -------------------------------------------------------------------------------


def _three_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_data(data, "b.csv", csv_text("event,user_id,ts", f"b,u2,{TS}"))
    write_data(data, "a.csv", csv_text("event,user_id,ts", f"a,u1,{TS}"))
    write_data(data, "sub/c.csv", csv_text("event,user_id,ts", f"c,u3,{TS}"))
    write_data(data, "notes.txt", "not data")
    write_data(data, ".hidden.csv", csv_text("event,user_id,ts", f"h,u9,{TS}"))


def test_glob_in_source_path_matches_files_in_sorted_order(tmp_path: Path) -> None:
    _three_files(tmp_path)
    res = run(tmp_path, {}, source={"path": "data/*.csv"})
    assert res.report.files == 2
    assert [e["event"] for e in res.events()] == ["a", "b"]


def test_glob_given_as_input_argument(tmp_path: Path) -> None:
    _three_files(tmp_path)
    res = run(
        tmp_path, {}, source={"path": "nowhere.csv"}, inputs=[str(tmp_path / "data" / "*.csv")]
    )
    assert [e["event"] for e in res.events()] == ["a", "b"]


def test_directory_input_reads_supported_files_recursively(tmp_path: Path) -> None:
    _three_files(tmp_path)
    res = run(tmp_path, {}, source={"path": "data"})
    assert res.report.files == 3
    assert [e["event"] for e in res.events()] == ["a", "b", "c"]


def test_directory_given_as_input_argument(tmp_path: Path) -> None:
    _three_files(tmp_path)
    res = run(tmp_path, {}, source={"path": "nowhere.csv"}, inputs=[tmp_path / "data"])
    assert sorted(e["event"] for e in res.events()) == ["a", "b", "c"]


# --- dialects and encodings ------------------------------------------------------------------


def test_tsv_defaults_to_tab_delimiter(tmp_path: Path) -> None:
    text = f"event\tuser_id\tts\tnote\na\tu1\t{TS}\thello, world\n"
    res = run(tmp_path, text, name="data.tsv")
    assert res.rejects == []
    assert res.props() == [{"note": "hello, world"}]


def test_explicit_delimiter_overrides_tsv_default(tmp_path: Path) -> None:
    res = run(
        tmp_path,
        f"event;user_id;ts\na;u1;{TS}\n",
        name="data.tsv",
        source={"csv": {"delimiter": ";"}},
    )
    assert res.rejects == []
    assert res.events()[0]["user_id"] == "u1"


def test_latin1_encoding_is_decoded(tmp_path: Path) -> None:
    data = f"event,user_id,ts,place\na,u1,{TS},caf".encode() + b"\xe9\n"
    res = run(tmp_path, data, source={"csv": {"encoding": "latin-1"}})
    assert res.rejects == []
    assert res.props() == [{"place": "café"}]
    assert "café" in res.raw_bodies[0]


def test_utf8_bom_is_not_part_of_first_column_name(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + PLAIN.encode()
    res = run(tmp_path, data)
    assert res.rejects == []
    assert [e["event"] for e in res.events()] == ["a", "b"]
    assert res.props() == PLAIN_PROPS


def test_crlf_line_endings(tmp_path: Path) -> None:
    text = csv_text(
        "event,user_id,ts,zip,price",
        f"a,000123,{TS},02134,9.5",
        f"b,u2,{TS},10001,2",
        newline="\r\n",
    )
    res = run(tmp_path, text)
    assert res.rejects == []
    assert res.props() == PLAIN_PROPS
    assert not any("\r" in raw for raw in res.raw_bodies)


def test_crlf_with_malformed_row_keeps_raw_without_line_break(tmp_path: Path) -> None:
    text = csv_text("event,user_id,ts", f"a,u1,{TS}", "a,u2", f"a,u3,{TS}", newline="\r\n")
    res = run(tmp_path, text)
    assert [(r["_row"], r["_raw"]) for r in res.rejects] == [(2, "a,u2")]
    assert [e["user_id"] for e in res.events()] == ["u1", "u3"]


def test_input_argument_is_relative_to_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_data(tmp_path / "in", "x.csv", PLAIN)
    (tmp_path / "cfg").mkdir()
    config = write_config(tmp_path / "cfg")
    monkeypatch.chdir(tmp_path)
    report = validate(config, ["in/x.csv"], rejects=tmp_path / "r.csv")
    assert report.valid == 2
    assert report.rejected == 0


def test_a_rejects_file_written_into_the_input_folder_is_refused_not_read_back(
    tmp_path: Path,
) -> None:
    from flywheel_import import validate
    from flywheel_import.errors import UsageError

    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "day1.csv").write_text("event,user\nok,1\nbad name,2\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "source: {path: exports}\nmapping: {event: event, user_id: user}\n"
        "output: {rejects: exports/rejects.csv}\n"
    )
    first = validate(cfg)
    kept = (folder / "rejects.csv").read_bytes()
    with pytest.raises(UsageError, match="also an input"):
        validate(cfg)
    assert (first.rows_read, first.rejected) == (2, 1)
    assert (folder / "rejects.csv").read_bytes() == kept
