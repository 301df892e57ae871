"""``flywheel-import init``: a mapping inferred from a sample validates that input cleanly."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from flywheel_import import validate
from flywheel_import.cli import main

REPO = Path(__file__).resolve().parent.parent
PRESET_DATA = REPO / "tests" / "data" / "presets"


def _init(tmp_path: Path, data: Path, *extra: str) -> tuple[Path, dict[str, object], str]:
    out = tmp_path / "mapping.yaml"
    assert main(["init", str(data), "-o", str(out), *extra]) == 0
    text = out.read_text(encoding="utf-8")
    return out, yaml.safe_load(text), text


def _assert_clean(mapping: Path, rows: int) -> None:
    report = validate(mapping)
    assert (report.rows_read, report.rejected, report.valid) == (rows, 0, rows)


def _csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_epoch_seconds_are_read_with_unit_s(tmp_path: Path) -> None:
    data = _csv(
        tmp_path / "e.csv",
        ["event,user_id,ts,price", "open,u1,1705314600,1.5", "close,u2,1705314660,2"],
    )
    out, m, _ = _init(tmp_path, data)
    assert m["mapping"]["timestamp"] == {"column": "ts", "unit": "s"}  # type: ignore[index]
    _assert_clean(out, 2)


def test_epoch_milliseconds_in_ndjson_are_read_with_unit_ms(tmp_path: Path) -> None:
    data = tmp_path / "e.ndjson"
    data.write_text(
        "".join(
            json.dumps({"name": n, "uid": "u1", "time": 1705314600123 + i}) + "\n"
            for i, n in enumerate(["a", "b", "c"])
        ),
        encoding="utf-8",
    )
    out, m, _ = _init(tmp_path, data)
    mp = m["mapping"]
    assert mp["timestamp"] == {"column": "time", "unit": "ms"}  # type: ignore[index]
    assert (mp["event"], mp["user_id"]) == ("name", "uid")  # type: ignore[index]
    _assert_clean(out, 3)


def test_naive_times_take_utc_and_say_to_check_the_zone(tmp_path: Path) -> None:
    data = _csv(
        tmp_path / "e.csv",
        ["event_name,customer_id,created_at", "a,1,2024-01-15 10:30:00", "b,2,2024-01-15T11:00:00"],
    )
    out, m, text = _init(tmp_path, data)
    assert m["mapping"]["timestamp"] == {
        "column": "created_at",  # type: ignore[index]
        "timezone": "UTC",
    }
    assert "set timezone:" in text
    _assert_clean(out, 2)


def test_iso_times_with_offsets_need_no_zone(tmp_path: Path) -> None:
    data = _csv(
        tmp_path / "e.csv",
        [
            "event,anonymous_id,timestamp",
            "a,x1,2024-01-15T10:30:00+02:00",
            "b,x2,2024-01-15T10:30:00Z",
        ],
    )
    out, m, _ = _init(tmp_path, data)
    assert m["mapping"]["timestamp"] == {"column": "timestamp"}  # type: ignore[index]
    assert m["mapping"]["anonymous_id"] == "anonymous_id"  # type: ignore[index]
    _assert_clean(out, 2)


def test_day_first_text_times_get_a_format(tmp_path: Path) -> None:
    data = _csv(
        tmp_path / "e.csv",
        ["event,user_id,when", "a,u1,15/01/2024 10:30:00", "b,u2,31/01/2024 11:00:00"],
    )
    out, m, _ = _init(tmp_path, data)
    assert m["mapping"]["timestamp"]["format"] == "%d/%m/%Y %H:%M:%S"  # type: ignore[index]
    _assert_clean(out, 2)


def test_ids_with_leading_zeros_stay_text_and_are_noted(tmp_path: Path) -> None:
    data = _csv(
        tmp_path / "e.csv",
        [
            "event,user_id,ts,zip",
            "a,000123,2024-01-15 10:30:00,02134",
            "b,000124,2024-01-15 10:31:00,10001",
        ],
    )
    out, m, text = _init(tmp_path, data)
    assert m["mapping"]["user_id"] == "user_id"  # type: ignore[index]
    assert '"zip": string  (digits with leading zeros' in text
    _assert_clean(out, 2)


def test_names_with_spaces_turn_normalize_on(tmp_path: Path) -> None:
    data = _csv(
        tmp_path / "e.csv",
        [
            "event,user_id,ts",
            "add to cart,u1,2024-01-15 10:30:00",
            "$pageview,u2,2024-01-15 10:31:00",
        ],
    )
    out, m, _ = _init(tmp_path, data)
    assert m["mapping"]["event"] == {
        "column": "event",  # type: ignore[index]
        "normalize": "underscore",
    }
    _assert_clean(out, 2)


def test_clean_names_leave_normalize_off(tmp_path: Path) -> None:
    data = _csv(tmp_path / "e.csv", ["event,user_id,ts", "add_to_cart,u1,2024-01-15 10:30:00"])
    _, m, _ = _init(tmp_path, data)
    assert m["mapping"]["event"] == "event"  # type: ignore[index]


def test_json_object_columns_and_null_markers_are_configured(tmp_path: Path) -> None:
    data = _csv(
        tmp_path / "e.csv",
        [
            "event,user_id,ts,props,note,plan",
            'a,u1,2024-01-15 10:30:00,"{""page"":""home"",""n"":1}",\\N,NULL',
            'b,u2,2024-01-15 10:31:00,"{""page"":""cart""}",x,pro',
            "c,u3,2024-01-15 10:32:00,,y,free",
        ],
    )
    out, m, _ = _init(tmp_path, data)
    assert m["source"]["csv"] == {"null_values": ["\\N", "NULL"]}  # type: ignore[index]
    assert m["mapping"]["properties"]["json"] == {"props": ""}  # type: ignore[index]
    _assert_clean(out, 3)


def test_a_json_column_whose_keys_clash_with_a_column_gets_a_prefix(tmp_path: Path) -> None:
    data = _csv(
        tmp_path / "e.csv",
        ["event,user_id,ts,page,extra", 'a,u1,2024-01-15 10:30:00,home,"{""page"":""x""}"'],
    )
    out, m, _ = _init(tmp_path, data)
    assert m["mapping"]["properties"]["json"] == {"extra": "extra."}  # type: ignore[index]
    _assert_clean(out, 1)


def test_repeated_ids_are_not_taken_as_event_ids(tmp_path: Path) -> None:
    data = _csv(
        tmp_path / "e.csv",
        ["event,user_id,ts,id", "a,u1,2024-01-15 10:30:00,7", "b,u1,2024-01-15 10:31:00,7"],
    )
    out, m, text = _init(tmp_path, data)
    assert "event_id" not in m["mapping"]  # type: ignore[operator]
    assert "repeats values in the sample" in text
    _assert_clean(out, 2)


def test_gzip_csv_and_parquet_inputs_are_sampled(tmp_path: Path) -> None:
    raw = "event,user_id,ts\na,u1,2024-01-15 10:30:00\nb,u2,2024-01-15 10:31:00\n"
    gz = tmp_path / "e.csv.gz"
    gz.write_bytes(gzip.compress(raw.encode()))
    out, _, _ = _init(tmp_path, gz)
    _assert_clean(out, 2)
    pq = tmp_path / "e.parquet"
    pl.DataFrame(
        {
            "event": ["a", "b"],
            "user_id": [1, 2],
            "ts": pl.Series(["2024-01-15 10:30:00", "2024-01-15 10:31:00"]).str.to_datetime(),
        }
    ).write_parquet(pq)
    out, m, _ = _init(tmp_path, pq, "--force")
    assert m["mapping"]["timestamp"] == {"column": "ts", "timezone": "UTC"}  # type: ignore[index]
    _assert_clean(out, 2)


@pytest.mark.parametrize(
    ("name", "preset", "event", "user", "anon", "event_id", "ts"),
    [
        (
            "mixpanel.ndjson",
            "mixpanel",
            "event",
            "properties.distinct_id",
            None,
            "properties.$insert_id",
            {"column": "properties.time", "unit": "s"},
        ),
        (
            "amplitude.csv",
            "amplitude",
            "event_type",
            "user_id",
            "device_id",
            "$insert_id",
            {"column": "event_time", "timezone": "UTC"},
        ),
        (
            "segment_tracks.csv",
            "segment",
            "event",
            "user_id",
            "anonymous_id",
            "id",
            {"column": "timestamp"},
        ),
        (
            "posthog_events.csv",
            "posthog",
            "event",
            "distinct_id",
            None,
            "uuid",
            {"column": "timestamp"},
        ),
        (
            "snowplow_events.tsv",
            "snowplow",
            "event_name",
            "user_id",
            "domain_userid",
            "event_id",
            {"column": "derived_tstamp", "timezone": "UTC"},
        ),
    ],
)
def test_each_preset_sample_maps_and_validates_cleanly(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    preset: str,
    event: str,
    user: str,
    anon: str | None,
    event_id: str,
    ts: dict[str, str],
) -> None:
    out, m, _ = _init(tmp_path, PRESET_DATA / name)
    assert f"match preset {preset} " in capsys.readouterr().err
    mp = m["mapping"]
    ev = mp["event"]  # type: ignore[index]
    assert (ev if isinstance(ev, str) else ev["column"]) == event
    assert (mp["user_id"], mp.get("anonymous_id"), mp["event_id"]) == (  # type: ignore[index,union-attr]
        user,
        anon,
        event_id,
    )
    assert mp["timestamp"] == ts  # type: ignore[index]
    rows = sum(1 for _ in (PRESET_DATA / name).open()) - (name != "mixpanel.ndjson")
    _assert_clean(out, rows)
    # Asked for by name, the same layout gives the same file.
    again = tmp_path / "again.yaml"
    assert main(["init", str(PRESET_DATA / name), "-o", str(again), "--preset", preset]) == 0
    assert yaml.safe_load(again.read_text())["mapping"] == mp


def test_preset_json_prefixes_are_used(tmp_path: Path) -> None:
    _, m, _ = _init(tmp_path, PRESET_DATA / "amplitude.csv", "--preset", "amplitude")
    assert m["mapping"]["properties"]["json"] == {  # type: ignore[index]
        "event_properties": "",
        "user_properties": "user.",
    }


def test_an_existing_file_is_kept_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _csv(tmp_path / "e.csv", ["event,user_id,ts", "a,u1,2024-01-15 10:30:00"])
    out = tmp_path / "mapping.yaml"
    out.write_text("mine\n")
    capsys.readouterr()
    assert main(["init", str(data), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists; --force replaces it" in err[0]
    assert out.read_text() == "mine\n"
    assert main(["init", str(data), "-o", str(out), "--force"]) == 0
    assert out.read_text().startswith("# yaml-language-server: $schema=")


def test_dash_writes_to_stdout_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _csv(tmp_path / "e.csv", ["event,user_id,ts", "a,u1,2024-01-15 10:30:00"])
    monkeypatch.chdir(tmp_path)
    assert main(["init", "e.csv", "-o", "-"]) == 0
    text = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.csv"]
    (tmp_path / "m.yaml").write_text(text)
    m = yaml.safe_load(text)
    assert m["source"]["path"] == "e.csv"
    _assert_clean(tmp_path / "m.yaml", 1)


def test_unreadable_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path / "missing.csv"), "-o", "-"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.csv" in err[0]
    empty = tmp_path / "empty.csv"
    empty.write_text("event,user_id\n")
    assert main(["init", str(empty), "-o", "-"]) == 2
    assert "no rows" in capsys.readouterr().err


def test_python_dash_m_runs_the_command_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "flywheel_import", "--version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("flywheel-import ")
