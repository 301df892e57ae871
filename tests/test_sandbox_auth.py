"""Authentication of POST /v1/events: the exact key, no Bearer prefix, Auth-Type: api."""

from __future__ import annotations

import json

import pytest
from sandbox_fixtures import KEY, auth_headers, post_event, post_raw
from sandbox_fixtures import sandbox as sandbox

from flywheel_import.sandbox import DEFAULT_KEY, Sandbox

VALID = {"event": "signup", "user_id": "u1"}


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"Auth-Type": "api"}, "Missing Authorization"),
        ({"Authorization": "wrong", "Auth-Type": "api"}, "Invalid API key"),
        ({"Authorization": f"Bearer {KEY}", "Auth-Type": "api"}, "Bearer"),
        ({"Authorization": KEY.upper(), "Auth-Type": "api"}, "Invalid API key"),
        ({"Authorization": KEY}, "Auth-Type"),
        ({"Authorization": KEY, "Auth-Type": "apikey"}, "Auth-Type"),
        ({"Authorization": KEY, "Auth-Type": "API"}, "Auth-Type"),
    ],
    ids=[
        "no-key",
        "wrong-key",
        "bearer",
        "key-case",
        "no-auth-type",
        "auth-type-other",
        "auth-type-case",
    ],
)
def test_bad_credentials_are_401_unauthorized(
    sandbox: Sandbox, headers: dict[str, str], fragment: str
) -> None:
    body = json.dumps({"event": VALID}).encode()
    answer = post_raw(sandbox.url, body, {"Content-Type": "application/json", **headers})
    assert answer.status == 401
    assert answer.headers["content-type"] == "application/json"
    assert answer.json["code"] == "UNAUTHORIZED"
    assert fragment in answer.json["error"]
    assert set(answer.json) == {"error", "code"}
    stats = sandbox.stats()
    assert stats["unauthorized_401"] == 1
    assert stats["stored"] == 0


def test_exact_key_and_auth_type_are_accepted(sandbox: Sandbox) -> None:
    answer = post_event(sandbox.url, VALID)
    assert answer.status == 200
    assert sandbox.stats()["stored"] == 1


def test_auth_is_checked_before_the_body(sandbox: Sandbox) -> None:
    answer = post_raw(sandbox.url, b"not json", {**auth_headers(), "Authorization": "nope"})
    assert answer.status == 401


def test_default_key_is_the_documented_dev_key() -> None:
    assert DEFAULT_KEY == "sandbox-key"
    with Sandbox() as sb:
        assert sb.key == DEFAULT_KEY
        assert post_event(sb.url, VALID, key=DEFAULT_KEY).status == 200
        assert post_event(sb.url, VALID, key=KEY).status == 401
