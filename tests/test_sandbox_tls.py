"""HTTPS: the sandbox with a certificate, keep-alive over TLS, and unusable TLS files."""

from __future__ import annotations

import re
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_fixtures import (
    KEY,
    connect,
    environment,
    post_event,
    read_banner,
    request,
    sandbox_command,
)
from tls_helpers import TlsFiles, make_tls_files

from flywheel_import.errors import UsageError
from flywheel_import.sandbox import Sandbox
from flywheel_import.sandbox.cli import main


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https_sandbox(tls: TlsFiles) -> Iterator[Sandbox]:
    with Sandbox(key=KEY, tls_cert=tls.cert, tls_key=tls.key) as sb:
        yield sb


def trusting(tls: TlsFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls.ca))


def test_https_with_the_ca_trusted_answers_many_requests_on_one_connection(
    https_sandbox: Sandbox, tls: TlsFiles
) -> None:
    assert re.fullmatch(r"https://127\.0\.0\.1:\d+", https_sandbox.url)
    conn = connect(https_sandbox.url, context=trusting(tls))
    try:
        statuses = [
            post_event(https_sandbox.url, {"event": "e", "event_id": f"t{i}"}, conn=conn).status
            for i in range(5)
        ]
        statuses.append(post_event(https_sandbox.url, {"event": "bad name"}, conn=conn).status)
    finally:
        conn.close()
    assert statuses == [200] * 5 + [400]
    stats = https_sandbox.stats()
    assert (stats["stored"], stats["connections"]) == (5, 1)
    assert [e["event_id"] for e in https_sandbox.events()] == [f"t{i}" for i in range(5)]


def test_https_with_the_default_trust_store_fails_verification(
    https_sandbox: Sandbox,
) -> None:
    conn = connect(https_sandbox.url, context=ssl.create_default_context())
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            post_event(https_sandbox.url, {"event": "e"}, conn=conn)
    finally:
        conn.close()
    assert https_sandbox.stats()["requests"] == 0


def test_plain_http_to_an_https_sandbox_gets_no_answer(https_sandbox: Sandbox) -> None:
    with pytest.raises((ConnectionError, OSError)):
        request(https_sandbox.url.replace("https://", "http://"), "GET", "/sandbox/stats")


def test_tls_cert_without_key_is_a_usage_error(tls: TlsFiles) -> None:
    with pytest.raises(UsageError, match="--tls-cert and --tls-key go together"):
        Sandbox(tls_cert=tls.cert)


def _garbage(folder: Path) -> Path:
    path = folder / "garbage.pem"
    path.write_text("not a certificate\n")
    return path


@pytest.mark.parametrize(
    ("which", "fragment"),
    [
        ("missing-cert", "--tls-cert"),
        ("missing-key", "--tls-key"),
        ("garbage-cert", "not a PEM certificate and its private key"),
        ("foreign-key", "not a PEM certificate and its private key"),
    ],
)
def test_unusable_tls_files_are_a_one_line_error_with_exit_2(
    which: str,
    fragment: str,
    tls: TlsFiles,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cert, key = tls.cert, tls.key
    if which == "missing-cert":
        cert = tmp_path / "absent-cert.pem"
    elif which == "missing-key":
        key = tmp_path / "absent-key.pem"
    elif which == "garbage-cert":
        cert = _garbage(tmp_path)
    else:
        key = make_tls_files(tmp_path / "other").key
    db = tmp_path / "never.db"
    argv = ["--port", "0", "--db", str(db), "--tls-cert", str(cert), "--tls-key", str(key)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not db.exists()  # the files are checked before the database is created


def test_embedded_sandbox_with_a_missing_certificate_fails_at_start(
    tls: TlsFiles, tmp_path: Path
) -> None:
    sb = Sandbox(key=KEY, tls_cert=tmp_path / "absent.pem", tls_key=tls.key)
    with pytest.raises(UsageError, match="--tls-cert"):
        sb.start()


def test_cli_serves_https_and_reports_connections_on_stop(tls: TlsFiles, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        sandbox_command(
            "--port",
            "0",
            "--db",
            str(tmp_path / "cli.db"),
            "--key",
            KEY,
            "--tls-cert",
            str(tls.cert),
            "--tls-key",
            str(tls.key),
        ),
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = read_banner(proc)
        url = banner["url"]
        assert url.startswith("https://127.0.0.1:")
        assert banner["tls"] == str(tls.cert)
        conn = connect(url, context=trusting(tls))
        try:
            for i in range(3):
                assert post_event(url, {"event": "e", "event_id": f"c{i}"}, conn=conn).status == 200
        finally:
            conn.close()
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Stopped: 3 stored, 0 duplicates" in stdout and "1 connections" in stdout
