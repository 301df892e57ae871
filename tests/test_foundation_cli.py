"""``flywheel-import validate``: exit codes, one-line errors, and the bundled sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flywheel_import.cli import main
from tests.foundation_helpers import bodies_for, csv_text, read_rejects, write_config, write_data

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "configs" / "example.yaml"
SAMPLE_CSV = REPO / "sample_data" / "events.csv"
SAMPLE_PARQUET = REPO / "sample_data" / "events.parquet"

CLEAN = csv_text("event,user_id,ts", "a,u1,2024-01-15 10:30:00", "b,u2,2024-01-15 10:31:00")
DIRTY = csv_text("event,user_id,ts", "a,u1,2024-01-15 10:30:00", "bad!,u2,2024-01-15 10:31:00")


def _setup(tmp_path: Path, data: str) -> Path:
    write_data(tmp_path / "data", "events.csv", data)
    return write_config(tmp_path, source={"path": "data/events.csv"})


def _outputs(tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    return [
        "--rejects",
        str(out / "rejects.csv"),
        "--report",
        str(out / "report.json"),
        "--no-progress",
    ]


def _assert_one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("flywheel-import: error: ")
    assert "Traceback" not in err
    return lines[0]


def _assert_no_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert not (out / "rejects.csv").exists()
    assert not (out / "report.json").exists()


def test_exit_code_0_when_nothing_is_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _setup(tmp_path, CLEAN)
    assert main(["validate", str(config), *_outputs(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "valid (would be sent): 2" in out
    assert read_rejects(tmp_path / "out" / "rejects.csv") == []


def test_exit_code_1_when_rows_are_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _setup(tmp_path, DIRTY)
    assert main(["validate", str(config), *_outputs(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "rejected: 1" in out
    assert "INVALID_EVENT_NAME" in out
    rejects = read_rejects(tmp_path / "out" / "rejects.csv")
    assert [(r["_row"], r["_error_code"]) for r in rejects] == [(2, "INVALID_EVENT_NAME")]
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert (report["rows_read"], report["valid"], report["rejected"]) == (2, 1, 1)


def test_input_arguments_replace_source_path(tmp_path: Path) -> None:
    config = _setup(tmp_path, DIRTY)
    other = write_data(tmp_path / "other", "clean.csv", CLEAN)
    assert main(["validate", str(config), str(other), *_outputs(tmp_path)]) == 0


def test_exit_code_2_for_invalid_config_with_one_line_and_no_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_data(tmp_path / "data", "events.csv", CLEAN)
    config = tmp_path / "bad.yaml"
    config.write_text(
        "source: {path: data/events.csv}\nmapping:\n  event: event\n"
        "  timestamp: {column: ts, unit: minutes}\n",
        encoding="utf-8",
    )
    assert main(["validate", str(config), *_outputs(tmp_path)]) == 2
    line = _assert_one_line_error(capsys.readouterr().err)
    assert line == (
        f"flywheel-import: error: {config}:4: mapping.timestamp.unit: must be one of s, ms, us, ns"
    )
    _assert_no_outputs(tmp_path)


def test_exit_code_2_for_unknown_config_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("mapping:\n  event: event\n  evnt_id: id\n", encoding="utf-8")
    assert main(["validate", str(config), *_outputs(tmp_path)]) == 2
    line = _assert_one_line_error(capsys.readouterr().err)
    assert "mapping.evnt_id: unknown key (did you mean 'event_id'?)" in line
    _assert_no_outputs(tmp_path)


def test_exit_code_2_for_missing_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml"), *_outputs(tmp_path)]) == 2
    line = _assert_one_line_error(capsys.readouterr().err)
    assert "nope.yaml" in line
    _assert_no_outputs(tmp_path)


def test_exit_code_2_for_missing_input_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _setup(tmp_path, CLEAN)
    missing = tmp_path / "data" / "missing.csv"
    assert main(["validate", str(config), str(missing), *_outputs(tmp_path)]) == 2
    line = _assert_one_line_error(capsys.readouterr().err)
    assert str(missing) in line
    _assert_no_outputs(tmp_path)


def test_exit_code_2_for_glob_matching_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _setup(tmp_path, CLEAN)
    pattern = str(tmp_path / "data" / "*.parquet")
    assert main(["validate", str(config), pattern, *_outputs(tmp_path)]) == 2
    line = _assert_one_line_error(capsys.readouterr().err)
    assert "no files match" in line
    _assert_no_outputs(tmp_path)


def test_exit_code_2_for_mapped_column_missing_from_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_data(tmp_path / "data", "events.csv", csv_text("name,user_id,ts", "a,u1,2024-01-15"))
    config = write_config(tmp_path, source={"path": "data/events.csv"})
    assert main(["validate", str(config), *_outputs(tmp_path)]) == 2
    line = _assert_one_line_error(capsys.readouterr().err)
    assert "mapping.event: column 'event' not found in" in line
    assert "events.csv" in line
    _assert_no_outputs(tmp_path)


@pytest.mark.parametrize(
    "argv",
    [
        ["validate"],
        ["validate", "x.yaml", "--bogus"],
        ["frobnicate", "x.yaml"],
        [],
        ["run", "x.yaml", "--concurrency", "0"],
    ],
)
def test_exit_code_2_for_bad_command_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "usage:" in err


# --- the bundled sample ----------------------------------------------------------------------

SAMPLE_REJECTS = {
    42: "MISSING_EVENT_NAME",
    88: "INVALID_EVENT_NAME",
    134: "MISSING_TIMESTAMP",
    251: "INVALID_TIMESTAMP",
    378: "MISSING_IDENTITY",
    513: "DUPLICATE_EVENT_ID",
    702: "MALFORMED_ROW",
}


def test_example_config_validates_bundled_csv_with_known_rejects(tmp_path: Path) -> None:
    assert main(["validate", str(EXAMPLE), *_outputs(tmp_path)]) == 1
    rejects = read_rejects(tmp_path / "out" / "rejects.csv")
    assert {r["_row"]: r["_error_code"] for r in rejects} == SAMPLE_REJECTS
    assert all(Path(r["_source"]).resolve() == SAMPLE_CSV for r in rejects)
    by_row = {r["_row"]: r for r in rejects}
    assert by_row[513]["event_id"] == "evt_0000512"
    assert by_row[251]["ts"] == "31/02/2024 10:00"
    assert by_row[702]["_raw"] == "evt_broken,page_viewed,000042"
    assert by_row[88]["internal_note"] == "multi-line\nnote"
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert (report["rows_read"], report["valid"], report["rejected"]) == (1201, 1194, 7)
    assert {k: v["count"] for k, v in report["rejected_by_code"].items()} == {
        code: 1 for code in SAMPLE_REJECTS.values()
    }


def test_example_config_sends_typed_sample_events() -> None:
    bodies = [json.loads(b)["event"] for b in bodies_for(EXAMPLE)]
    assert len(bodies) == 1194
    first = bodies[0]
    assert first == {
        "event_id": "evt_0000001",
        "event": "page_viewed",
        "user_id": "004703",
        "timestamp": "2024-08-06T02:35:30Z",
        "properties": {
            "page": "/",
            "plan": "starter",
            "utm_source": "newsletter",
            "zip": "00501",
            "is_trial": False,
        },
    }
    purchase = next(b for b in bodies if b["event_id"] == "evt_0000002")
    assert purchase["properties"]["price"] == 348.97
    assert all("internal_note" not in b["properties"] for b in bodies)


def test_sample_parquet_validates_with_the_same_mapping_as_input(tmp_path: Path) -> None:
    assert main(["validate", str(EXAMPLE), str(SAMPLE_PARQUET), *_outputs(tmp_path)]) == 1
    rejects = read_rejects(tmp_path / "out" / "rejects.csv")
    codes = {r["event_id"]: r["_error_code"] for r in rejects}
    assert codes == {
        "evt_0000042": "MISSING_EVENT_NAME",
        "evt_0000088": "INVALID_EVENT_NAME",
        "evt_0000378": "MISSING_IDENTITY",
        "evt_0000512": "DUPLICATE_EVENT_ID",
    }
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert (report["rows_read"], report["valid"], report["rejected"]) == (1198, 1194, 4)


def test_sample_parquet_and_csv_give_the_same_events() -> None:
    from_csv = {e["event_id"]: e for e in (json.loads(b)["event"] for b in bodies_for(EXAMPLE))}
    from_pq = {
        e["event_id"]: e
        for e in (json.loads(b)["event"] for b in bodies_for(EXAMPLE, [SAMPLE_PARQUET]))
    }
    common = from_csv.keys() & from_pq.keys()
    assert len(common) >= 1190
    assert [eid for eid in sorted(common) if from_csv[eid] != from_pq[eid]] == []


def test_unwritable_outputs_fail_before_reading_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "ok.csv"
    data.write_text("event,user\na,1\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mapping: {event: event, user_id: user}\n")
    for flag, target in (("--report", str(tmp_path)), ("--rejects", "/proc/nope/r.csv")):
        code = main(["validate", str(cfg), str(data), flag, target, "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2
        assert err.startswith("flywheel-import: error:") and target in err


def test_an_empty_input_file_is_named_in_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "empty.csv"
    data.write_bytes(b"")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mapping: {event: event}\noutput: {rejects: null}\n")
    assert main(["validate", str(cfg), str(data), "--no-progress"]) == 2
    assert "empty.csv: the file is empty" in capsys.readouterr().err
