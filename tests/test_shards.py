"""Shards: ``run_import(shard=(k, n))`` and ``--shard K/N`` split one import into disjoint
parts that together store every valid row once and reject every bad row once; ``--processes
N`` runs them as local processes and merges their outputs. Against the sandbox on loopback."""

from __future__ import annotations

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from flywheel_import import UsageError, run_import, validate
from flywheel_import.cli import main
from flywheel_import.sandbox import Sandbox
from flywheel_import.shards import (
    parse_shard,
    shard_of_ids,
    shard_of_records,
    state_path,
    worst,
)

ROOT = Path(__file__).resolve().parent.parent
KEY = "shard-key"
ROWS = 600


def write_import(folder: Path, *, derived: bool = False) -> Path:
    """600 records: empty names (validation rejects), records with a field too many
    (malformed), and repeats of the previous row's id (mapped) or content (derived)."""
    data = folder / "events.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["event_id", "name", "user", "ts", "n"])
        prev: list[str] = []
        for i in range(ROWS):
            row = [
                f"e{i:06d}",
                "page_viewed",
                f"u{i % 41:03d}",
                f"2024-03-{1 + i % 28:02d} 08:00:00",
                str(i),
            ]
            if i % 53 == 11:
                row[1] = ""
            if i % 50 == 7:  # mapped: same id, other content; derived: same content
                row = [prev[0], *row[1:]] if not derived else list(prev)
            if i % 71 == 30:
                row = [*row, "extra"]
            w.writerow(row)
            prev = row
    ids = "" if derived else "  event_id: event_id\n"
    cfg = folder / "import.yaml"
    cfg.write_text(f"""
source: {{path: events.csv, batch_rows: 64}}
api: {{key_env: SHARD_KEY, rate_limit: 0, concurrency: 8, timeout: 5}}
mapping:
  event: name
  user_id: user
{ids}  timestamp: {{column: ts, timezone: UTC}}
output: {{rejects: rejects.csv, report: report.json}}
""")
    return cfg


def rejects(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


#: The environment of a CLI run in a subprocess: the key, and this checkout first on the path.
ENV = {
    **os.environ,
    "SHARD_KEY": KEY,
    "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
}


def processes_command(cfg: Path, url: str, *extra: str) -> list[str]:
    """``flywheel-import run CFG --processes 2`` against ``url``."""
    return [
        sys.executable, "-m", "flywheel_import", "run", str(cfg), "--api-url", url,
        "--processes", "2", *extra, "--no-progress",
    ]  # fmt: skip


def run_shard(cfg: Path, url: str, k: int, n: int) -> tuple[object, list[dict[str, str]]]:
    out = cfg.parent / f"rejects-{k}.csv"
    report = run_import(
        cfg, api_url=url, key=KEY, shard=(k, n), rejects=out, report=cfg.parent / f"report-{k}.json"
    )
    return report, rejects(out)


@pytest.mark.parametrize("derived", [False, True], ids=["mapped-ids", "derived-ids"])
def test_three_shards_are_disjoint_and_together_store_each_valid_row_and_reject_each_bad_once(
    tmp_path: Path, derived: bool
) -> None:
    cfg = write_import(tmp_path, derived=derived)
    whole = validate(cfg, rejects=tmp_path / "all-rejects.csv", report=tmp_path / "dry.json")
    expected = Counter((r["_row"], r["_error_code"]) for r in rejects(tmp_path / "all-rejects.csv"))
    assert {"MALFORMED_ROW", "MISSING_EVENT_NAME", "DUPLICATE_EVENT_ID"} <= {
        code for _, code in expected
    }
    seen: Counter[tuple[str, str]] = Counter()
    with Sandbox(key=KEY) as sb:
        reports = []
        for k in range(3):
            report, rows = run_shard(cfg, sb.url, k, 3)
            reports.append(report)
            seen.update((r["_row"], r["_error_code"]) for r in rows)
        stats = sb.stats()
    assert seen == expected  # every rejected row in exactly one shard's rejects file
    assert stats["stored"] == whole.valid and stats["duplicates"] == 0
    assert sum(r.accepted for r in reports) == whole.valid  # type: ignore[attr-defined]
    assert sum(r.rows_read for r in reports) == ROWS  # type: ignore[attr-defined]
    for r in reports:
        assert r.rows_read + r.skipped_shard == ROWS  # type: ignore[attr-defined]
        assert r.rows_read == r.accepted + r.rejected  # type: ignore[attr-defined]
        assert r.accepted > 0  # type: ignore[attr-defined]
    saved = json.loads((tmp_path / "report-1.json").read_text())
    assert saved["shard"] == "1/3" and saved["skipped_shard"] == ROWS - saved["rows_read"]


def test_the_shard_of_an_id_and_of_a_record_is_fixed_across_runs_and_machines() -> None:
    ids = pl.Series(["e000001", "order-42", "018f3a6e-7b1c-8d2e-9f00-112233445566", ""])
    assert shard_of_ids(ids, 4).tolist() == [1, 3, 0, 1]
    assert shard_of_ids(ids, 3).tolist() == [0, 0, 1, 0]
    assert shard_of_records("events.csv", [1, 2, 3, 4], 3).tolist() == [0, 2, 2, 2]
    # The base name decides, not the folder or bucket it is read from.
    assert (
        shard_of_records("/mnt/a/events.csv", [1, 2, 3, 4], 3).tolist()
        == shard_of_records("s3://b/x/events.csv", [1, 2, 3, 4], 3).tolist()
        == [0, 2, 2, 2]
    )


def test_each_shard_keeps_its_own_ledger(tmp_path: Path) -> None:
    cfg = write_import(tmp_path)
    with Sandbox(key=KEY) as sb:
        first = [run_shard(cfg, sb.url, k, 3)[0] for k in (0, 1)]
        before = sb.stats()["requests"]
        again, _ = run_shard(cfg, sb.url, 1, 3)
        after_again = sb.stats()["requests"]
        last, _ = run_shard(cfg, sb.url, 2, 3)
        stats = sb.stats()
    assert after_again == before and again.accepted == 0  # type: ignore[attr-defined]
    assert last.accepted > 0  # type: ignore[attr-defined]
    assert stats["requests"] - after_again == last.accepted  # type: ignore[attr-defined]
    assert stats["duplicates"] == 0
    assert stats["stored"] == sum(r.accepted for r in first) + last.accepted  # type: ignore
    state = tmp_path / ".flywheel-import"
    for k in range(3):
        assert (state / f"state.shard-{k}-of-3.db").exists()
    assert not (state / "state.db").exists()
    assert state_path(Path("s/state.db"), (1, 4)) == Path("s/state.shard-1-of-4.db")


def test_processes_two_run_shards_and_merge_one_rejects_file_and_one_report(tmp_path: Path) -> None:
    cfg = write_import(tmp_path)
    whole = validate(cfg, rejects=tmp_path / "all-rejects.csv", report=tmp_path / "dry.json")
    with Sandbox(key=KEY) as sb:
        done = subprocess.run(
            processes_command(cfg, sb.url), env=ENV, text=True, capture_output=True, timeout=120
        )
        stats = sb.stats()
    assert done.returncode == 1, done.stderr  # rows were rejected
    assert stats["stored"] == whole.valid and stats["duplicates"] == 0
    merged = rejects(tmp_path / "rejects.csv")
    assert sorted((r["_row"], r["_error_code"]) for r in merged) == sorted(
        (r["_row"], r["_error_code"]) for r in rejects(tmp_path / "all-rejects.csv")
    )
    assert stat.S_IMODE((tmp_path / "rejects.csv").stat().st_mode) == 0o600
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["completed"] is True
    assert report["rows_read"] == ROWS and report["accepted"] == whole.valid
    assert report["rejected"] == whole.rejected
    assert [s["shard"] for s in report["shards"]] == ["0/2", "1/2"]
    assert sum(s["accepted"] for s in report["shards"]) == whole.valid
    assert all(s["exit_code"] == 1 for s in report["shards"])
    assert f"accepted: {whole.valid:,}" in done.stdout
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == [".flywheel-import"]


def test_sigterm_to_processes_stops_every_shard_cleanly_and_the_same_command_goes_on(
    tmp_path: Path,
) -> None:
    cfg = write_import(tmp_path)
    whole = validate(cfg, rejects=tmp_path / "all-rejects.csv", report=tmp_path / "dry.json")
    with Sandbox(key=KEY) as sb:
        cmd = processes_command(cfg, sb.url, "--rate", "100")
        proc = subprocess.Popen(
            cmd, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 60
        while sb.stats()["stored"] < 20:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        stopped = json.loads((tmp_path / "report.json").read_text())
        again = subprocess.run(cmd, env=ENV, text=True, capture_output=True, timeout=120)
        stats = sb.stats()
    assert proc.returncode == 143, err
    assert stopped["completed"] is False and stopped["stopped"] == "SIGTERM"
    assert stopped["accepted"] < whole.valid
    assert "stopped" in out and err.count("to resume:") == 1
    assert again.returncode == 1, again.stderr
    assert stats["stored"] == whole.valid
    final = rejects(tmp_path / "rejects.csv")
    assert len(final) == whole.rejected  # each rejected row once, across both runs


def test_processes_merge_when_a_shard_has_no_rejects(tmp_path: Path) -> None:
    data = tmp_path / "events.csv"
    data.write_text(
        "event_id,name,user,ts\n"
        + "".join(f"e{i},{'' if i == 3 else 'seen'},u{i},2024-01-02 03:04:05\n" for i in range(20))
    )
    cfg = tmp_path / "import.yaml"
    cfg.write_text(
        "source: {path: events.csv}\napi: {key_env: SHARD_KEY, rate_limit: 0}\n"
        "mapping: {event: name, user_id: user, event_id: event_id, timestamp: ts}\n"
        "output: {rejects: rejects.csv, report: report.json}\n"
    )
    with Sandbox(key=KEY) as sb:
        done = subprocess.run(
            processes_command(cfg, sb.url), env=ENV, text=True, capture_output=True, timeout=120
        )
        stats = sb.stats()
    assert done.returncode == 1, done.stderr
    assert stats["stored"] == 19
    assert [(r["_row"], r["_error_code"]) for r in rejects(tmp_path / "rejects.csv")] == [
        ("4", "MISSING_EVENT_NAME")
    ]
    shards = json.loads((tmp_path / "report.json").read_text())["shards"]
    assert sorted(s["rejected"] for s in shards) == [0, 1]


@pytest.mark.parametrize("spec", ["3/3", "x/2", "1", "-1/2", "0/0"])
def test_a_bad_shard_is_a_one_line_usage_error(
    tmp_path: Path, spec: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_import(tmp_path)
    assert main(["run", str(cfg), f"--shard={spec}", "--api-url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{spec}" in err
    assert not (tmp_path / "rejects.csv").exists()
    with pytest.raises(UsageError):
        parse_shard(spec)


def test_a_dry_run_refuses_a_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_import(tmp_path)
    assert main(["run", str(cfg), "--dry-run", "--shard", "0/2"]) == 2
    assert "dry run" in capsys.readouterr().err
    with pytest.raises(UsageError, match="dry run"):
        run_import(cfg, dry_run=True, shard=(0, 2))


def test_the_merged_exit_code_is_the_worst_shard_s() -> None:
    assert worst([0, 1, 0]) == 1
    assert worst([1, 3, 2]) == 3
    assert worst([0, -9]) == 4  # a shard killed by a signal
    assert worst([0, 1], ["SIGTERM"]) == 143
    assert worst([130, 1]) == 130
