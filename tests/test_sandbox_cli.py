"""``python -m flywheel_import.sandbox`` as a user runs it: banner, signals, --export."""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_fixtures import (
    KEY,
    REPO,
    environment,
    get_json,
    post_event,
    read_banner,
    sandbox_command,
)

from flywheel_import.errors import UsageError
from flywheel_import.sandbox import SandboxConfig
from flywheel_import.sandbox.cli import add_sandbox_arguments, main, run_sandbox_command


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], Path]]:
    db = tmp_path / "cli.db"
    proc = subprocess.Popen(
        sandbox_command("--port", "0", "--db", str(db), "--key", KEY, "--seed", "4"),
        cwd=REPO,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, read_banner(proc), db
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_url_key_db_and_persists_events_on_signal(
    running: tuple[subprocess.Popen[str], dict[str, str], Path], signum: signal.Signals
) -> None:
    proc, banner, db = running
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", banner["url"])
    assert banner["key"] == KEY
    assert banner["db"] == str(db)
    assert banner["seed"] == "4"
    url = banner["url"]
    for i in range(10):
        assert post_event(url, {"event": "cli", "event_id": f"c{i}"}).status == 200
    assert post_event(url, {"event": "cli", "event_id": "c0"}).status == 200
    assert get_json(url, "/sandbox/stats")["stored"] == 10
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert "Stopped: 10 stored, 1 duplicates" in stdout
    assert "Traceback" not in stderr
    with sqlite3.connect(db) as conn:
        ids = [row[0] for row in conn.execute("SELECT event_id FROM events ORDER BY seq")]
    assert ids == [f"c{i}" for i in range(10)]


def test_cli_export_writes_ndjson_and_exits(tmp_path: Path) -> None:
    db = tmp_path / "export.db"
    from flywheel_import.sandbox import Sandbox

    with Sandbox(key=KEY, db=db) as sb:
        post_event(sb.url, {"event": "a", "event_id": "x1", "properties": {"p": 1.5}})
        post_event(sb.url, {"event": "b"})
    out = tmp_path / "out.ndjson"
    result = subprocess.run(
        sandbox_command("--export", str(out), "--db", str(db)),
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2]
    assert lines[0]["event_id"] == "x1"
    assert lines[0]["body"] == {"event": {"event": "a", "event_id": "x1", "properties": {"p": 1.5}}}
    assert lines[1]["generated_id"] is True
    assert "Exported 2 events" in result.stderr


def test_export_to_stdout(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    from flywheel_import.sandbox import Sandbox

    db = tmp_path / "stdout.db"
    with Sandbox(key=KEY, db=db) as sb:
        post_event(sb.url, {"event": "a", "event_id": "s1"})
    assert main(["--export", "-", "--db", str(db)]) == 0
    [line] = capsysbinary.readouterr().out.splitlines()
    assert json.loads(line)["event_id"] == "s1"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--export", "out.ndjson"], "--export needs --db"),
        (["--export", "out.ndjson", "--db", "/nonexistent/x.db"], "no such sandbox database"),
        (["--error-rate", "1.5"], "--error-rate"),
        (["--error-rate", "0.6", "--drop-rate", "0.6"], "must not exceed 1"),
        (["--rate-limit", "0"], "--rate-limit"),
        (["--burst", "5"], "--burst needs --rate-limit"),
        (["--latency-ms", "-1"], "--latency-ms"),
        (["--slow-ms", "-1"], "--slow-ms"),
        (["--throttle-rate", "2"], "--throttle-rate"),
        (["--stored-lost-rate", "-0.1"], "--stored-lost-rate"),
        (["--slow-rate", "0.5", "--reject-rate", "0.3", "--drop-rate", "0.3"], "must not exceed 1"),
        (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
        (["--port", "70000"], "--port"),
        (["--key", ""], "--key"),
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str], fragment: str, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_sandbox_arguments(parser)
    args = parser.parse_args([*argv, "--port", "0"] if "--port" not in argv else argv)
    if args.db is None and args.export is None:
        args.db = tmp_path / "unused.db"
    with pytest.raises(UsageError, match=re.escape(fragment)):
        run_sandbox_command(args)


def test_main_reports_usage_errors_as_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--export", "x.ndjson"]) == 2
    assert capsys.readouterr().err.startswith("error: --export needs --db")


def test_flag_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_sandbox_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.key, args.db) == ("127.0.0.1", 8080, "sandbox-key", None)
    assert (args.rate_limit, args.burst, args.error_rate, args.drop_rate) == (None, None, 0, 0)
    assert (args.latency_ms, args.seed, args.export) == (0, 0, None)
    assert (args.stored_lost_rate, args.slow_rate, args.slow_ms) == (0, 0, 30_000)
    assert (args.throttle_rate, args.reject_rate) == (0, 0)
    assert (args.tls_cert, args.tls_key) == (None, None)


def test_banner_names_every_fault_in_use(tmp_path: Path) -> None:
    config = SandboxConfig(
        db_path=tmp_path / "f.db",
        stored_lost_rate=0.1,
        slow_rate=0.1,
        slow_ms=500,
        throttle_rate=0.1,
        reject_rate=0.1,
    )
    assert config.describe_faults() == (
        "stored-lost rate 0.1, slow rate 0.1 (500 ms), throttle rate 0.1, reject rate 0.1"
    )


def test_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        parser = argparse.ArgumentParser()
        add_sandbox_arguments(parser)
        args = parser.parse_args(["--port", port, "--db", str(tmp_path / "busy.db")])
        with pytest.raises(UsageError, match="cannot listen"):
            run_sandbox_command(args)
