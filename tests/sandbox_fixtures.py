"""Shared helpers of the sandbox tests: a plain HTTP client, sandbox fixtures, the CLI's banner.

The client is ``http.client`` on purpose: the sandbox is checked by something that shares no
code with the importer.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from flywheel_import.sandbox import Sandbox

KEY = "test-key"

REPO = Path(__file__).resolve().parent.parent


def sandbox_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "flywheel_import.sandbox", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def read_banner(proc: subprocess.Popen[str], timeout: float = 15.0) -> dict[str, str]:
    """The ``name: value`` lines printed at start, read until 'Press Ctrl-C'."""
    stdout = proc.stdout
    assert stdout is not None
    lines: list[str] = []

    def read() -> None:
        # A thread, not select(): the text wrapper buffers lines select() cannot see.
        while (line := stdout.readline()) and not line.startswith("Press Ctrl-C"):
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert not reader.is_alive(), f"no banner within {timeout} s: {lines}"
    assert proc.poll() is None, f"sandbox exited early: {lines}"
    matches = (re.match(r"\s+(\w+):\s+(\S+)", line) for line in lines)
    return {m.group(1): m.group(2) for m in matches if m}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


def auth_headers(key: str = KEY) -> dict[str, str]:
    return {"Authorization": key, "Auth-Type": "api", "Content-Type": "application/json"}


def connect(
    url: str, timeout: float = 5.0, context: ssl.SSLContext | None = None
) -> http.client.HTTPConnection:
    """A connection to ``url``'s host; HTTPS (verified with ``context``) for https URLs."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    if parts.scheme == "https":
        return http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=context
        )
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> Answer:
    """One request; reuses ``conn`` when given (keep-alive), else a fresh connection."""
    own = conn is None
    conn = conn or connect(url)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, raw)
    finally:
        if own:
            conn.close()


def post_event(
    url: str,
    event: Any,
    key: str = KEY,
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> Answer:
    """POST ``{"event": event}`` with valid auth headers (``headers`` overrides them)."""
    body = json.dumps({"event": event}).encode()
    return post_raw(url, body, {**auth_headers(key), **(headers or {})}, conn)


def post_raw(
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> Answer:
    return request(
        url, "POST", "/v1/events", body, auth_headers() if headers is None else headers, conn
    )


def get_json(url: str, path: str) -> Any:
    answer = request(url, "GET", path)
    assert answer.status == 200, answer.raw
    return answer.json


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fresh sandbox per test: counters start at zero."""
    with Sandbox(key=KEY) as sb:
        yield sb


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[Sandbox]:
    """One sandbox for a module's tests that do not read counters."""
    with Sandbox(key=KEY) as sb:
        yield sb
