"""Resume: the same command again continues where the last one stopped, sending nothing that
was settled. Runs in subprocesses against a sandbox in this process; ``kill -9`` at several
points, clean stops on SIGINT/SIGTERM, a finished import run again, a changed file, two
processes on one ledger."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flywheel_import import run_import
from flywheel_import.ledger import Ledger
from flywheel_import.resume import destination
from flywheel_import.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
KEY = "resume-key"
ROWS = 3000
BAD = {i for i in range(ROWS) if i % 97 == 13}  # rows rejected before sending (empty name)


def write_import(folder: Path, *, rows: int = ROWS, derived: bool = False) -> Path:
    data = folder / "events.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["event_id", "name", "user", "ts", "plan"])
        for i in range(rows):
            w.writerow(
                [
                    f"e{i:06d}",
                    "" if i in BAD else "page_viewed",
                    f"u{i % 89:04d}",
                    f"2024-02-{1 + i % 28:02d} 09:00:00",
                    "pro",
                ]
            )
    ids = "" if derived else "  event_id: event_id\n"
    cfg = folder / "import.yaml"
    cfg.write_text(f"""
source: {{path: events.csv, batch_rows: 250}}
api: {{key_env: RESUME_KEY, rate_limit: 0, concurrency: 8, timeout: 5}}
mapping:
  event: name
  user_id: user
{ids}  timestamp: {{column: ts, timezone: UTC}}
output: {{rejects: rejects.csv, report: report.json}}
""")
    return cfg


def command(cfg: Path, url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "flywheel_import",
        "run",
        str(cfg),
        "--api-url",
        url,
        "--no-progress",
        *extra,
    ]


def environment() -> dict[str, str]:
    return {
        **os.environ,
        "RESUME_KEY": KEY,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }


def start(cfg: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command(cfg, url, *extra),
        env=environment(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_stored(sb: Sandbox, at_least: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while sb.stats()["stored"] < at_least:
        assert proc.poll() is None, "the import ended before the kill point"
        assert time.monotonic() < deadline, "the import made no progress"
        time.sleep(0.01)


def finish(cfg: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(cfg, url, *extra), env=environment(), text=True, capture_output=True, timeout=120
    )


def rejected_rows(folder: Path) -> list[int]:
    with (folder / "rejects.csv").open(newline="") as f:
        return [int(r["_row"]) for r in csv.DictReader(f)]


def assert_whole_import_once(sb: Sandbox, folder: Path) -> None:
    """Every valid row stored once by event_id; every invalid row in the rejects file once."""
    stored = [e["event_id"] for e in sb.events()]
    assert len(stored) == len(set(stored)) == ROWS - len(BAD)
    rows = rejected_rows(folder)
    assert sorted(rows) == sorted(i + 1 for i in BAD)  # _row is 1-based


@pytest.mark.parametrize("kill_at", [1, 900, 2400])
def test_kill_9_then_the_same_command_completes_with_each_row_once(
    tmp_path: Path, kill_at: int
) -> None:
    cfg = write_import(tmp_path)
    with Sandbox(key=KEY, latency_ms=2) as sb:
        proc = start(cfg, sb.url)
        wait_stored(sb, kill_at, proc)
        proc.kill()
        proc.wait(timeout=30)
        sent_before = sb.stats()["requests"]
        done = finish(cfg, sb.url)
        # 0 or 1: the exit code says whether *this* run rejected rows (validation rejects of
        # batches read ahead may have been settled by the killed run already).
        assert done.returncode in (0, 1), done.stdout + done.stderr
        assert_whole_import_once(sb, tmp_path)
        resent = sb.stats()["duplicates"]
        # Only rows in flight at the kill (and at most about a batch) are sent again.
        assert resent <= 8 + 250 + 1, (resent, sent_before)
    assert "whole import so far: 2,969 accepted, 31 rejected" in done.stdout


def test_a_finished_import_run_again_sends_nothing(tmp_path: Path) -> None:
    cfg = write_import(tmp_path)
    with Sandbox(key=KEY) as sb:
        first = finish(cfg, sb.url)
        requests = sb.stats()["requests"]
        again = finish(cfg, sb.url)
        assert sb.stats()["requests"] == requests
    assert (first.returncode, again.returncode) == (1, 0)  # again: nothing rejected now
    assert "events.csv: already imported" in again.stderr
    assert sorted(rejected_rows(tmp_path)) == sorted(i + 1 for i in BAD)  # kept, not doubled


def test_a_changed_file_is_new_work_with_a_warning(tmp_path: Path) -> None:
    cfg = write_import(tmp_path, rows=200)
    with Sandbox(key=KEY) as sb:
        finish(cfg, sb.url)
        data = tmp_path / "events.csv"
        data.write_text(data.read_text().replace("pro", "max"))
        again = finish(cfg, sb.url)
        stats = sb.stats()
    assert (
        "events.csv: the file changed since the last run: importing it as new work" in again.stderr
    )
    assert stats["requests"] == 2 * (200 - len([i for i in BAD if i < 200]))
    # the old run's rejects no longer count: the new run's rejects, once
    assert sorted(rejected_rows(tmp_path)) == sorted(i + 1 for i in BAD if i < 200)


def test_a_changed_mapping_is_new_work_and_restart_ignores_the_ledger(tmp_path: Path) -> None:
    cfg = write_import(tmp_path, rows=100)
    with Sandbox(key=KEY) as sb:
        finish(cfg, sb.url)
        cfg.write_text(cfg.read_text().replace("  user_id: user\n", "  anonymous_id: user\n"))
        changed = finish(cfg, sb.url)
        restarted = finish(cfg, sb.url, "--restart")
        stats = sb.stats()
    assert "the mapping changed since the last run" in changed.stderr
    assert "--restart: importing it as new work" in restarted.stderr
    valid = 100 - len([i for i in BAD if i < 100])
    assert stats["requests"] == 3 * valid


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_cleanly_and_the_same_command_goes_on(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    cfg = write_import(tmp_path, derived=True)
    with Sandbox(key=KEY, latency_ms=2) as sb:
        proc = start(cfg, sb.url)
        wait_stored(sb, 600, proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        assert f"stopped by {sig.name}" in out and "Import STOPPED" in out
        assert "to resume: flywheel-import run" in err
        stored_at_stop = sb.stats()["stored"]
        done = finish(cfg, sb.url)
        assert done.returncode in (0, 1), done.stderr
        assert "resuming after" in done.stderr
        assert_whole_import_once(sb, tmp_path)
        # A clean stop records every answered row: nothing is sent twice.
        assert sb.stats()["duplicates"] == 0, stored_at_stop


def test_a_second_process_on_the_same_ledger_is_refused(tmp_path: Path) -> None:
    cfg = write_import(tmp_path, rows=20)
    with Sandbox(key=KEY) as sb:
        holder = Ledger(tmp_path / ".flywheel-import" / "state.db", destination(sb.url))
        try:
            second = finish(cfg, sb.url)
        finally:
            holder.close()
        assert sb.stats()["requests"] == 0
    assert second.returncode == 2
    assert "another flywheel-import process is using this state" in second.stderr


def test_the_ledger_is_per_destination(tmp_path: Path) -> None:
    cfg = write_import(tmp_path, rows=50)
    os.environ["RESUME_KEY"] = KEY
    try:
        with Sandbox(key=KEY) as staging, Sandbox(key=KEY) as production:
            run_import(cfg, api_url=staging.url, key=KEY)
            report = run_import(cfg, api_url=production.url, key=KEY)
            assert production.stats()["stored"] == staging.stats()["stored"] > 0
    finally:
        del os.environ["RESUME_KEY"]
    assert report.resume is not None and report.resume["accepted"] == report.accepted


def write_night(folder: Path, name: str, days: range) -> Path:
    data = folder / name
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "user", "ts", "seq"])
        for day in days:
            for hour in range(10):
                w.writerow(
                    [
                        "page_viewed",
                        f"u{day}",
                        f"2024-03-{day:02d} {hour:02d}:00:00",
                        day * 100 + hour,
                    ]
                )
    return data


@pytest.mark.parametrize("column", ["ts", "seq"])
def test_watermark_skips_what_the_last_completed_run_covered(tmp_path: Path, column: str) -> None:
    """Two nightly exports overlapping by one day: the second run sends only new rows."""
    write_night(tmp_path, "night1.csv", range(1, 4))  # days 1-3
    write_night(tmp_path, "night2.csv", range(3, 6))  # days 3-5: day 3 again
    cfg = tmp_path / "nightly.yaml"
    cfg.write_text(f"""
api: {{key_env: RESUME_KEY, rate_limit: 0}}
mapping:
  event: name
  user_id: user
  timestamp: {{column: ts, timezone: UTC}}
  watermark: {column}
  properties: {{include: [seq]}}
output: {{rejects: rejects.csv}}
""")
    with Sandbox(key=KEY) as sb:
        first = run_import(cfg, [tmp_path / "night1.csv"], api_url=sb.url, key=KEY)
        second = run_import(cfg, [tmp_path / "night2.csv"], api_url=sb.url, key=KEY)
        stored = sb.events()
    assert (first.accepted, first.skipped_watermark) == (30, 0)
    assert (second.accepted, second.skipped_watermark) == (20, 10)
    assert second.rows_read == 20
    days = sorted({e["body"]["event"]["user_id"] for e in stored})
    assert days == ["u1", "u2", "u3", "u4", "u5"] and len(stored) == 50


def test_a_run_that_stops_does_not_move_the_watermark(tmp_path: Path) -> None:
    write_night(tmp_path, "night1.csv", range(1, 3))
    cfg = tmp_path / "nightly.yaml"
    cfg.write_text("""
api: {key_env: RESUME_KEY, rate_limit: 0}
source: {path: night1.csv}
mapping: {event: name, user_id: user, timestamp: ts, watermark: ts}
output: {rejects: rejects.csv}
""")
    book_path = tmp_path / ".flywheel-import" / "state.db"
    with Sandbox(key=KEY) as sb:
        with pytest.raises(Exception):  # noqa: B017 - any stop will do: here a refused key
            run_import(cfg, api_url=sb.url, key="wrong-key")
        book = Ledger(book_path, destination(sb.url))
        try:
            assert book.watermark("ts") is None
        finally:
            book.close()
        run_import(cfg, api_url=sb.url, key=KEY)
        book = Ledger(book_path, destination(sb.url))
        try:
            mark = book.watermark("ts")
        finally:
            book.close()
    assert mark is not None and mark[1] == "timestamp"
    # 2024-03-02 09:00:00 UTC in microseconds
    assert float(mark[0]) == 1709370000 * 1_000_000
