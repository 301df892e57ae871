"""The rejects file (columns, formats, permissions, atomic write, round trip) and the report."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

import polars as pl
import pytest

from flywheel_import.pipeline import validate
from tests.foundation_helpers import bodies_for, csv_text, read_rejects, run, write_config

HEADER = "event,user_id,ts,zip,price"
DATA = csv_text(
    HEADER,
    "signup,000123,2024-01-15 10:30:00,02134,9.5",  # 1 ok
    "bad name!,000124,2024-01-15 10:30:00,02135,1",  # 2 INVALID_EVENT_NAME
    "login,000125,not a time,10001,2",  # 3 INVALID_TIMESTAMP
    "login,000126,2024-01-15",  # 4 MALFORMED_ROW
    "login,000127,2024-01-16 08:00:00,94103,3.25",  # 5 ok
    ",,,,",  # 6 three codes
)
TAIL = ["_source", "_row", "_error_code", "_error_message"]


def test_rejects_csv_has_original_columns_as_text_then_underscore_columns(tmp_path: Path) -> None:
    res = run(tmp_path, DATA)
    header = next(csv.reader(io.StringIO(res.rejects_path.read_text(encoding="utf-8"))))
    assert header == ["event", "user_id", "ts", "zip", "price", *TAIL, "_raw"]
    by_row = {r["_row"]: r for r in res.rejects}
    assert sorted(by_row) == [2, 3, 4, 6]
    assert by_row[2] == {
        "event": "bad name!",
        "user_id": "000124",
        "ts": "2024-01-15 10:30:00",
        "zip": "02135",
        "price": "1",
        "_source": str(tmp_path / "data" / "data.csv"),
        "_row": 2,
        "_error_code": "INVALID_EVENT_NAME",
        "_raw": None,
        "_error_message": "event name 'bad name!' must match ^[a-zA-Z0-9_-]+$",
    }
    assert by_row[3]["_error_code"] == "INVALID_TIMESTAMP"
    assert by_row[3]["ts"] == "not a time"
    assert by_row[4]["_raw"] == "login,000126,2024-01-15"
    assert by_row[4]["event"] is None
    assert by_row[6]["_error_code"] == "MISSING_EVENT_NAME;MISSING_TIMESTAMP;MISSING_IDENTITY"


def test_rejects_from_parquet_input_hold_values_as_text(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "event": ["bad!"],
            "user_id": [123],
            "ts": ["2024-01-15T10:30:00Z"],
            "price": [9.5],
            "flag": [True],
            "tags": [["x", "y"]],
        }
    )
    res = run(tmp_path, frame, name="data.parquet", rejects_name="rejects.parquet")
    out = pl.read_parquet(res.rejects_path)
    for name in (
        "event",
        "user_id",
        "ts",
        "price",
        "flag",
        "tags",
        "_source",
        "_error_code",
        "_error_message",
    ):
        assert out.schema[name] == pl.String, name
    row = out.row(0, named=True)
    assert (row["user_id"], row["price"], row["flag"]) == ("123", "9.5", "true")
    assert json.loads(row["tags"]) == ["x", "y"]
    assert row["_row"] == 1


@pytest.mark.parametrize("name", ["rejects.csv", "rejects.parquet", "rejects.ndjson"])
def test_rejects_format_follows_extension(tmp_path: Path, name: str) -> None:
    res = run(tmp_path, DATA, rejects_name=name)
    path = res.rejects_path
    if name.endswith(".parquet"):
        assert path.read_bytes()[:4] == b"PAR1"
    elif name.endswith(".ndjson"):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert isinstance(json.loads(first), dict)
    else:
        assert path.read_text(encoding="utf-8").startswith("event,user_id,ts,zip,price,_source")
    rows = read_rejects(path)
    assert sorted(r["_row"] for r in rows) == [2, 3, 4, 6]
    assert {r["_row"]: r["user_id"] for r in rows}[2] == "000124"
    assert {r["_row"]: r["_raw"] for r in rows}[4] == "login,000126,2024-01-15"


@pytest.mark.parametrize("name", ["rejects.csv", "rejects.parquet", "rejects.ndjson"])
def test_rejects_file_is_private(tmp_path: Path, name: str) -> None:
    res = run(tmp_path, DATA, rejects_name=name)
    assert stat.S_IMODE(os.stat(res.rejects_path).st_mode) == 0o600


def test_no_temporary_files_are_left_next_to_the_outputs(tmp_path: Path) -> None:
    many = csv_text(HEADER, *[f"bad!,u{i},2024-01-15 10:30:00,1,1" for i in range(200)])
    res = run(tmp_path, many, source={"batch_rows": 7})
    assert res.report.rejected == 200
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["rejects.csv", "report.json"]


def test_empty_rejects_file_replaces_a_stale_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "rejects.csv").write_text("stale,content\n1,2\n", encoding="utf-8")
    res = run(tmp_path, csv_text("event,user_id,ts", "a,u1,2024-01-15 10:30:00"))
    assert res.report.rejected == 0
    assert res.rejects == []
    assert res.rejects_path.read_text(encoding="utf-8").startswith("_source,_row")


def _fix(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    fixed = []
    for r in rows:
        r = dict(r)
        if r["_raw"]:
            r["event"], r["user_id"], r["ts"] = r["_raw"].split(",")
            r["ts"] += " 00:00:00"
        if not r["event"] or "!" in r["event"] or " " in r["event"]:
            r["event"] = "fixed"
        if not r["user_id"]:
            r["user_id"] = "000999"
        if not r["ts"] or "time" in r["ts"]:
            r["ts"] = "2024-01-20 12:00:00"
        fixed.append(r)
    return fixed


def test_fixed_rejects_file_fed_back_as_input_validates_clean(tmp_path: Path) -> None:
    res = run(tmp_path, DATA)
    text = res.rejects_path.read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = _fix(list(reader))
    fixed = tmp_path / "fixed.csv"
    with fixed.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=reader.fieldnames or [])
        writer.writeheader()
        writer.writerows(rows)
    config = tmp_path / "config.yaml"
    again = validate(config, [fixed], rejects=tmp_path / "again.csv")
    assert (again.rows_read, again.valid, again.rejected) == (4, 4, 0)
    bodies = [json.loads(b)["event"] for b in bodies_for(config, [fixed])]
    assert sorted(b["user_id"] for b in bodies) == ["000124", "000125", "000126", "000999"]
    for b in bodies:
        assert not any(k.startswith("_") for k in b["properties"])
    first = next(b for b in bodies if b["user_id"] == "000124")
    assert first["event"] == "fixed"
    assert first["properties"] == {"zip": "02135", "price": 1}


def test_parquet_rejects_fed_back_unchanged_reproduce_the_same_rejects(tmp_path: Path) -> None:
    res = run(tmp_path, DATA, rejects_name="rejects.parquet")
    again = validate(tmp_path / "config.yaml", [res.rejects_path], rejects=tmp_path / "again.csv")
    assert again.rows_read == 4
    assert again.rejected == 4
    codes = {r["_row"]: r["_error_code"] for r in read_rejects(tmp_path / "again.csv")}
    assert codes[1] == "INVALID_EVENT_NAME"
    assert codes[2] == "INVALID_TIMESTAMP"


# --- report ----------------------------------------------------------------------------------


def test_report_counts_add_up_and_each_code_has_a_first_example(tmp_path: Path) -> None:
    res = run(tmp_path, DATA, source={"batch_rows": 2})
    rep = res.report
    assert (rep.rows_read, rep.valid, rep.rejected) == (6, 2, 4)
    assert rep.rows_read == rep.valid + rep.rejected
    source = str(tmp_path / "data" / "data.csv")
    counts = {code: c.count for code, c in rep.by_code.items()}
    assert counts == {
        "INVALID_EVENT_NAME": 1,
        "INVALID_TIMESTAMP": 1,
        "MALFORMED_ROW": 1,
        "MISSING_EVENT_NAME": 1,
        "MISSING_TIMESTAMP": 1,
        "MISSING_IDENTITY": 1,
    }
    assert rep.by_code["INVALID_TIMESTAMP"].example == {
        "source": source,
        "row": 3,
        "message": "timestamp 'not a time' is not a valid time (or does not exist in the "
        "configured timezone)",
    }
    assert rep.by_code["MALFORMED_ROW"].example == {
        "source": source,
        "row": 4,
        "message": "expected 5 fields, found 3",
    }
    assert rep.by_code["MISSING_IDENTITY"].example["row"] == 6
    assert rep.completed is True


def test_report_example_is_the_first_occurrence_across_batches(tmp_path: Path) -> None:
    rows = [f"bad{i}!,u{i},2024-01-15 10:30:00" for i in range(1, 6)]
    res = run(
        tmp_path,
        csv_text("event,user_id,ts", "ok,u0,2024-01-15 10:30:00", *rows),
        source={"batch_rows": 2},
    )
    entry = res.report.by_code["INVALID_EVENT_NAME"]
    assert entry.count == 5
    assert entry.example is not None
    assert entry.example["row"] == 2
    assert "bad1!" in entry.example["message"]


def test_report_json_has_the_same_figures(tmp_path: Path) -> None:
    res = run(tmp_path, DATA)
    data = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    rep = res.report
    assert (
        (data["rows_read"], data["valid"], data["rejected"])
        == (rep.rows_read, rep.valid, rep.rejected)
        == (6, 2, 4)
    )
    assert data["files"] == 1
    assert data["dry_run"] is True
    assert data["completed"] is True
    assert data["rejects_file"] == str(res.rejects_path)
    assert {k: v["count"] for k, v in data["rejected_by_code"].items()} == {
        k: c.count for k, c in rep.by_code.items()
    }
    assert {k: v["example"] for k, v in data["rejected_by_code"].items()} == {
        k: c.example for k, c in rep.by_code.items()
    }


def test_rejects_and_report_paths_from_config_are_relative_to_config(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "in.csv").write_text(
        csv_text("event,user_id,ts", "bad!,u1,2024-01-15"), encoding="utf-8"
    )
    config = write_config(
        tmp_path / "conf",
        source={"path": "../in.csv"},
        output={"rejects": "../results/rej.ndjson", "report": "../results/rep.json"},
    )
    report = validate(config)
    assert report.rejected == 1
    assert read_rejects(tmp_path / "results" / "rej.ndjson")[0]["_row"] == 1
    assert json.loads((tmp_path / "results" / "rep.json").read_text())["rejected"] == 1
