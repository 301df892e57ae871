"""Shared helpers of the sandbox tests: a plain HTTP client and sandbox fixtures.

The client is ``http.client`` on purpose: the sandbox is checked by something that shares no
code with the importer.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from flywheel_import.sandbox import Sandbox

KEY = "test-key"


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


def connect(url: str, timeout: float = 5.0) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
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
