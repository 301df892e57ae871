"""The key and URL credentials never leak, not even in part; plain http only to real loopback.

Loopback is decided by address (``ipaddress``), never by prefix: ``http://127.evil.example``
is a remote host, and the key would travel to it in clear. Decided: ``[::ffff:127.0.0.1]``
(IPv4-mapped) is refused without ``--allow-insecure-http``: whether it reaches loopback depends
on the operating system's dual-stack settings, and ``127.0.0.1`` says the same thing plainly.

The key is masked in API text before the text is cut to its excerpt or folded to one line, so a
server echoing the request headers cannot leave half a key in the rejects file; tested against
a real server that echoes the ``Authorization`` header it received.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from flywheel_import import ApiAbort, run_import_async
from flywheel_import.config import parse_config
from flywheel_import.errors import UsageError
from flywheel_import.outcomes import EXCERPT, Secrets, classify
from flywheel_import.pipeline import resolve_url
from flywheel_import.sender import Sender, SendSettings
from flywheel_import.urls import is_loopback, redact_userinfo
from tests.network_helpers import KEY, write_import
from tests.scripted_server import Received, Reply, ScriptedServer

CFG = parse_config("mapping: {event: name}")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- plain http only to loopback ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://127.1.2.3",
        "http://[::1]:9",
        "http://localhost:8080",
        "http://LOCALHOST/base",
        "https://127.evil.example",
    ],
)
def test_plain_http_to_loopback_and_any_https_are_allowed(url: str) -> None:
    assert resolve_url(CFG, url, allow_insecure_http=False) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.evil.example",
        "http://localhost.evil.com",
        "http://0.0.0.0:8080",
        "http://[::ffff:127.0.0.1]:8080",
        "http://2130706433",
        "http://127.1",
        "http://10.0.0.1",
        "http://127.0.0.1.nip.io",
    ],
)
def test_plain_http_to_anything_else_is_refused_unless_allowed(url: str) -> None:
    with pytest.raises(UsageError, match="refusing to send the API key over plain http"):
        resolve_url(CFG, url, allow_insecure_http=False)
    assert resolve_url(CFG, url, allow_insecure_http=True) == url


def test_loopback_is_an_address_or_localhost_and_nothing_that_looks_like_one() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.255.0.9", "::1", "[::1]", "localhost"]))
    assert not any(
        map(
            is_loopback,
            [
                "127.evil.example",
                "localhost.evil.com",
                "0.0.0.0",
                "::ffff:127.0.0.1",
                "::",
                "128.0.0.1",
                "localhost.",
            ],
        )
    )


@pytest.mark.parametrize(
    "url", ["https://user:Zq9-secret@api.example.com", "http://Zq9-secret@127.0.0.1:8080"]
)
def test_a_url_with_credentials_is_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(UsageError) as err:
        resolve_url(CFG, url, allow_insecure_http=True)
    assert "must not carry a user or password" in str(err.value)
    assert "Zq9-secret" not in str(err.value) and "***@" in str(err.value)
    with pytest.raises(UsageError) as err:
        SendSettings(url, KEY)
    assert "Zq9-secret" not in str(err.value)


@pytest.mark.parametrize(
    "url", ["https://u:Zq9-secret@host:notaport", "ftp://u:Zq9-secret@h", "https://[::1"]
)
def test_a_malformed_url_is_a_usage_error_that_hides_credentials(url: str) -> None:
    with pytest.raises(UsageError) as err:
        resolve_url(CFG, url, allow_insecure_http=False)
    assert "API URL must look like https://host[:port]" in str(err.value)
    assert "Zq9-secret" not in str(err.value)


def test_redact_userinfo_hides_every_url_credential_in_a_text() -> None:
    text = "via http://u:p@proxy:3128 to https://key@api.example.com/x and ftp://a@b"
    assert redact_userinfo(text) == (
        "via http://***@proxy:3128 to https://***@api.example.com/x and ftp://***@b"
    )
    assert redact_userinfo("mail me: someone@example.com") == "mail me: someone@example.com"


# --- the key, masked before anything is cut -----------------------------------------------------


def pieces(secret: str, size: int = 6) -> list[str]:
    """Every run of `size` characters of `secret`: none may show anywhere."""
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def assert_no_part_of(secret: str, text: str | None) -> None:
    assert text is not None
    leaked = [p for p in pieces(secret) if p in text]
    assert not leaked, f"{leaked} of the key in {text!r}"


def test_a_key_straddling_the_excerpt_boundary_is_masked_not_cut_in_half() -> None:
    for offset in range(EXCERPT - len(KEY), EXCERPT + 2):
        body = ("x" * offset + "Authorization: " + KEY + " trailing").encode()
        verdict = classify(400, body, None, None, secrets=Secrets.of(KEY))
        assert_no_part_of(KEY, verdict.message)


@pytest.mark.parametrize(
    "key", ['k3y"with\\both-Zq9secret', "k3y/slash-Zq9secret", "cl\u00e9-unicode-Zq9secret"]
)
def test_a_key_echoed_json_escaped_is_masked(key: str) -> None:
    secrets = Secrets.of(key)
    escaped = [json.dumps(key)[1:-1], json.dumps(key).replace("/", "\\/")[1:-1]]
    for form in escaped:
        # as JSON (parsed), and as a JSON-looking text that does not parse (shown raw)
        for body in (
            b'{"error": "header was %s"}' % form.encode(),
            b'{"error": "header was %s' % form.encode(),
        ):
            verdict = classify(400, body, None, None, secrets=secrets)
            assert_no_part_of(key, verdict.message)
            assert_no_part_of(form, verdict.message)


def test_a_key_with_runs_of_spaces_is_masked_before_whitespace_is_folded() -> None:
    key = "abc  def   Zq9-secret"
    verdict = classify(500, f"got {key}\n".encode(), None, None, secrets=Secrets.of(key))
    assert verdict.message == "got ***"


def test_a_key_spelled_with_unicode_escapes_in_json_is_masked() -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in KEY)
    body = b'{"error": "bad key %s", "code": "BAD_%s"}' % (escaped.encode(), escaped.encode())
    verdict = classify(400, body, None, None, secrets=Secrets.of(KEY))
    assert verdict.message == "bad key ***" and verdict.code == "BAD_***"


def test_transport_error_text_is_masked_too() -> None:
    verdict = classify(None, None, None, f"ServerDisconnectedError: {KEY}", secrets=Secrets.of(KEY))
    assert verdict.message == "ServerDisconnectedError: ***"


def echo_authorization_at(offset: int, *, status: int = 400) -> Reply:
    """A reply whose body quotes the Authorization header received, `offset` characters in."""

    def body(req: Received) -> dict[str, Any]:
        return {
            "error": "x" * offset + f" Authorization: {req.headers['Authorization']}",
            "code": "ECHO",
        }

    return Reply(status, body)


@pytest.mark.anyio
async def test_a_server_echoing_the_key_at_the_excerpt_boundary_leaves_no_part_of_it(
    tmp_path: Path,
) -> None:
    lead = len(" Authorization: ")
    # the key starts before the excerpt's end and ends after it: a cut would keep 6+ characters
    offsets = list(range(EXCERPT - lead - len(KEY) + 1, EXCERPT - lead - 6, 2))
    cfg = write_import(tmp_path, rows=len(offsets), rate_limit=0, concurrency=1)
    async with ScriptedServer(*(echo_authorization_at(o) for o in offsets)) as server:
        report = await run_import_async(cfg, api_url=server.url, key=KEY)
    assert report.rejected == len(offsets)
    assert all(r.headers["Authorization"] == KEY for r in server.requests)  # it was echoed
    with (tmp_path / "rejects.csv").open(newline="") as f:
        messages = [row["_error_message"] for row in csv.DictReader(f)]
    assert len(messages) == len(offsets) and all("Authorization: *" in m for m in messages)
    for text in (*messages, (tmp_path / "report.json").read_text()):
        assert_no_part_of(KEY, text)


@pytest.mark.anyio
async def test_an_abort_line_echoing_the_key_leaves_no_part_of_it() -> None:
    reply = echo_authorization_at(EXCERPT - 30, status=401)
    async with ScriptedServer(then=reply) as server, Sender(SendSettings(server.url, KEY)) as s:
        with pytest.raises(ApiAbort) as stop:
            await s.send(b"{}")
    assert "refused the key" in str(stop.value)
    assert_no_part_of(KEY, str(stop.value))
