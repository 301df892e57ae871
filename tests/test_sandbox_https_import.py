"""The import over HTTPS against the sandbox served with a certificate from a CA the test
makes: untrusted stops the run within seconds naming the host; trusted through
``api.ca_bundle`` or ``SSL_CERT_FILE`` every row is accepted, on reused connections."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flywheel_import.sandbox import Sandbox
from tests.network_helpers import KEY, run_cli, write_import
from tests.tls_helpers import make_tls_files


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_an_untrusted_https_sandbox_stops_the_run_at_once(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    cfg = write_import(tmp_path, rows=40, rate_limit=0, concurrency=4)
    with Sandbox(key=KEY, tls_cert=tls.cert, tls_key=tls.key) as sb:
        started = time.monotonic()
        result = await run_cli(
            "run", str(cfg), "--api-url", sb.url, drop=("SSL_CERT_FILE", "SSL_CERT_DIR")
        )
        took = time.monotonic() - started
        stored = sb.stats()["stored"]
    assert result.code == 3, result.err
    assert "certificate verify failed for 127.0.0.1" in result.err
    assert "api.ca_bundle or SSL_CERT_FILE" in result.err
    assert stored == 0 and took < 30  # seconds, not minutes of retries
    assert "not settled (still to do): 40" in result.out


@pytest.mark.anyio
@pytest.mark.parametrize("trust", ["ca_bundle", "SSL_CERT_FILE"])
async def test_a_trusted_https_sandbox_gets_every_row_on_reused_connections(
    tmp_path: Path, trust: str
) -> None:
    tls = make_tls_files(tmp_path / "tls")
    extra = {"ca_bundle": "tls/ca.pem"} if trust == "ca_bundle" else {}
    cfg = write_import(tmp_path, rows=300, rate_limit=0, concurrency=8, **extra)
    env = {"SSL_CERT_FILE": str(tls.ca)} if trust == "SSL_CERT_FILE" else {}
    with Sandbox(key=KEY, tls_cert=tls.cert, tls_key=tls.key) as sb:
        result = await run_cli("run", str(cfg), "--api-url", sb.url, env=env)
        stats = sb.stats()
    assert result.code == 0, result.err
    assert stats["stored"] == 300
    assert stats["connections"] <= 8 + 1  # no handshake per request (+1: this stats read)
