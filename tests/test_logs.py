"""Logs where there is no terminal (pods, Airflow, cron) and the library's progress callback.

The CLI runs as a subprocess with stderr piped (not a TTY), against the sandbox with a little
latency so a run lasts a second or so; progress lines come every 0.2 s there.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel_import import Progress, run_import, validate
from flywheel_import.logs import JsonFormatter, ProgressFeed, ProgressLog
from flywheel_import.sandbox import Sandbox
from tests.test_run import KEY, write_config, write_events

REPO = Path(__file__).resolve().parent.parent
ROWS = 200


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    # ~20 ms a request, 4 in flight: 200 rows take about a second.
    with Sandbox(key=KEY, latency_ms=20) as sb:
        yield sb


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, write_events(tmp_path, ROWS, bad=2), rate_limit=0, concurrency=4)


def cli(config: Path, url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TEST_FLYWHEEL_KEY": KEY}
    env.pop("NO_COLOR", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "flywheel_import",
            "run",
            str(config),
            "--api-url",
            url,
            "--progress-every",
            "0.2",
            *flags,
        ],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def progress_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "progress:" in line]


def test_cli_without_a_terminal_logs_progress_lines(config: Path, sandbox: Sandbox) -> None:
    done = cli(config, sandbox.url)
    assert done.returncode == 1, done.stderr  # the 2 bad rows
    lines = progress_lines(done.stderr)
    assert lines, done.stderr
    assert all(
        f"of {ROWS:,} rows" in line
        and "events/s" in line
        and "ETA" in line
        and "rejected" in line
        and "retries" in line
        and "429s" in line
        for line in lines
    )
    assert "Import finished: 200 rows read" in done.stdout  # the summary stays on stdout


def test_json_log_format_makes_every_stderr_line_a_json_object(
    config: Path, sandbox: Sandbox
) -> None:
    done = cli(config, sandbox.url, "--log-format", "json")
    assert done.returncode == 1, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    progress = [r for r in records if r["logger"] == "flywheel_import.progress"]
    assert progress, done.stderr
    for r in progress:
        assert r["total"] == ROWS and 0 <= r["rows_done"] <= ROWS
        assert {"events_per_s", "eta_s", "rejected", "retries", "throttled"} <= r.keys()
    summary = [r["message"] for r in records if r.get("summary")]
    assert summary[0].startswith("Import finished: 200 rows read")
    assert "Import finished: 200 rows read" in done.stdout


def test_quiet_shows_no_progress_lines_and_no_notes(config: Path, sandbox: Sandbox) -> None:
    done = cli(config, sandbox.url, "--quiet")
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""
    assert "Import finished" in done.stdout


def test_log_level_warning_hides_progress_lines(config: Path, sandbox: Sandbox) -> None:
    done = cli(config, sandbox.url, "--log-level", "warning")
    assert done.returncode == 1, done.stderr
    assert progress_lines(done.stderr) == []


def test_library_prints_nothing_by_default_even_when_its_callback_raises(
    config: Path, sandbox: Sandbox
) -> None:
    # A fresh interpreter: no handler left by an earlier test, no pytest logging plugin.
    script = textwrap.dedent(f"""
        from flywheel_import import run_import
        def fail(progress):
            raise RuntimeError("dashboard down")
        report = run_import({str(config)!r}, api_url={sandbox.url!r}, key={KEY!r},
                            on_progress=fail)
        assert report.accepted == {ROWS - 2}, report.accepted
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")


def test_run_import_calls_on_progress_up_to_the_last_row(
    config: Path, sandbox: Sandbox, capfd: pytest.CaptureFixture[str]
) -> None:
    seen: list[Progress] = []
    report = run_import(config, api_url=sandbox.url, key=KEY, on_progress=seen.append)
    assert report.accepted == ROWS - 2
    assert len(seen) >= 2  # the ticker's calls during the run, and the final one
    assert all(p.rows_total == ROWS for p in seen)
    assert [p.rows_done for p in seen] == sorted(p.rows_done for p in seen)
    last = seen[-1]
    assert (last.rows_done, last.accepted, last.rejected) == (ROWS, ROWS - 2, 2)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_a_callback_that_raises_does_not_stop_the_run_and_is_logged_once(
    config: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Progress] = []

    def fail(p: Progress) -> None:
        calls.append(p)
        raise ValueError("boom")

    with caplog.at_level(logging.WARNING, logger="flywheel_import"):
        report = run_import(config, api_url=sandbox.url, key=KEY, on_progress=fail)
    assert report.completed and report.accepted == ROWS - 2
    assert len(calls) >= 2  # still called after the first failure
    raised = [r for r in caplog.records if "progress callback raised" in r.getMessage()]
    assert len(raised) == 1 and "boom" in raised[0].getMessage()


def test_validate_calls_on_progress_with_the_rows_checked(config: Path) -> None:
    seen: list[Progress] = []
    report = validate(config, on_progress=seen.append)
    assert seen and seen[-1].rows_done == report.rows_read == ROWS
    assert (seen[-1].accepted, seen[-1].rejected) == (ROWS - 2, 2)


def test_feed_holds_back_calls_closer_than_the_interval() -> None:
    now = [0.0]
    got: list[float] = []
    feed = ProgressFeed(lambda p: got.append(p.elapsed_s), min_interval=0.25, clock=lambda: now[0])
    for t in (0.0, 0.1, 0.2, 0.3, 0.5, 0.6):
        now[0] = t
        feed.push(Progress(0, 10, 0, 0, 0, 0, elapsed_s=t))
    assert got == [0.0, 0.3, 0.6]
    feed.push(Progress(10, 10, 10, 0, 0, 0, elapsed_s=0.61), force=True)
    assert got[-1] == 0.61


def test_progress_log_writes_one_line_per_interval_of_run_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lines = ProgressLog(every=30)
    with caplog.at_level(logging.INFO, logger="flywheel_import"):
        for t in range(0, 100, 5):  # called every 5 s of run time
            lines(Progress(t, 100, t, 0, 1, 2, elapsed_s=float(t)))
    logged = [r for r in caplog.records if r.name == "flywheel_import.progress"]
    assert [r.__dict__["rows_done"] for r in logged] == [30, 60, 90]
    assert "30 of 100 rows (30.0%), 1.0 events/s, ETA 1m10s" in logged[0].getMessage()
    assert "retries 1, 429s 2" in logged[0].getMessage()


def test_json_formatter_carries_the_extra_fields() -> None:
    record = logging.LogRecord(
        "flywheel_import.progress", logging.INFO, __file__, 1, "progress %s", ("x",), None
    )
    record.rows_done = 5
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "progress x" and line["rows_done"] == 5
    assert line["level"] == "INFO" and line["ts"].endswith("+00:00")


def test_processes_pass_the_progress_interval_on_to_each_shard(
    config: Path, sandbox: Sandbox
) -> None:
    done = cli(config, sandbox.url, "--processes", "2", "--concurrency", "4")
    assert done.returncode == 1, done.stderr
    shards = {line.split("]")[0] for line in progress_lines(done.stderr)}
    assert shards <= {"[shard 0/2", "[shard 1/2"} and shards, done.stderr
