"""Shared pieces of the endpoint and URL-safety tests: a test CA, a small import to run, the
CLI in a subprocess (its own environment), and a port nobody listens on.

Import explicitly: ``from tests.network_helpers import ...``.
"""

from __future__ import annotations

import asyncio
import csv
import os
import socket
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

KEY = "sk_test_network-5ecr3t-key"
KEY_ENV = "TEST_FLYWHEEL_KEY"
ROOT = Path(__file__).resolve().parent.parent
#: A name only the test proxy "resolves" (RFC 6761 reserves .test): reaching it proves the proxy.
PROXIED_HOST = "api.flywheel.test"


@dataclass(frozen=True)
class LocalCA:
    """A private CA and a server certificate it signed for loopback and `PROXIED_HOST`."""

    ca: trustme.CA
    server: ssl.SSLContext

    def write_pem(self, path: Path) -> Path:
        self.ca.cert_pem.write_to_path(str(path))
        return path


def make_ca(*names: str) -> LocalCA:
    ca = trustme.CA()
    cert = ca.issue_cert(*(names or ("127.0.0.1", "localhost", PROXIED_HOST)))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    return LocalCA(ca, server)


def write_import(folder: Path, rows: int = 12, **api: Any) -> Path:
    """A CSV of `rows` valid events and a config for it (rejects and report beside it)."""
    with (folder / "events.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["event_id", "name", "user", "ts"])
        for i in range(rows):
            w.writerow([f"e{i:05d}", "page_viewed", f"u{i}", "2024-01-15 10:00:00"])
    api_lines = "\n".join(f"  {k}: {v}" for k, v in {"key_env": KEY_ENV, **api}.items())
    cfg = folder / "import.yaml"
    cfg.write_text(f"""source: {{path: events.csv}}
api:
{api_lines}
mapping:
  event: name
  user_id: user
  event_id: event_id
  timestamp: {{column: ts, timezone: UTC}}
output: {{rejects: rejects.csv, report: report.json}}
""")
    return cfg


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


async def run_cli(
    *args: str, env: Mapping[str, str] | None = None, drop: tuple[str, ...] = ()
) -> CliResult:
    """``python -m flywheel_import ARGS`` in a subprocess, without blocking the test's loop
    (servers the test runs keep answering). `env` is added to this process's environment,
    names in `drop` removed from it."""
    full = {k: v for k, v in os.environ.items() if k not in drop}
    full.update(
        {
            KEY_ENV: KEY,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
        }
    )
    full.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flywheel_import",
        *args,
        "--no-progress",
        env=full,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
)
