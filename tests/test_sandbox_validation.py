"""Body rules of POST /v1/events, from the spec: each broken rule is a 400 naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sandbox_fixtures import post_event, post_raw
from sandbox_fixtures import sandbox as sandbox  # pytest fixture
from sandbox_fixtures import shared_sandbox as shared_sandbox  # pytest fixture

from flywheel_import.sandbox import Sandbox

SUCCESS = {"success": True, "message": "Event tracked successfully"}
GOOD = {"event": "signup", "user_id": "u1"}

BAD_EVENTS: list[tuple[str, dict[str, Any], str]] = [
    ("name-missing", {"user_id": "u1"}, "event.event"),
    ("name-null", {"event": None}, "event.event"),
    ("name-number", {"event": 12}, "event.event"),
    ("name-space", {"event": "sign up"}, "event.event"),
    ("name-empty", {"event": ""}, "event.event"),
    ("name-trailing-newline", {"event": "signup\n"}, "event.event"),
    ("name-non-ascii", {"event": "inscripción"}, "event.event"),
    ("name-dot", {"event": "user.signup"}, "event.event"),
    ("user-id-number", {**GOOD, "user_id": 123}, "event.user_id"),
    ("anonymous-id-bool", {**GOOD, "anonymous_id": True}, "event.anonymous_id"),
    ("event-id-number", {**GOOD, "event_id": 7}, "event.event_id"),
    ("event-id-null", {**GOOD, "event_id": None}, "event.event_id"),
    ("timestamp-naive", {**GOOD, "timestamp": "2024-01-15T10:30:00"}, "event.timestamp"),
    ("timestamp-date-only", {**GOOD, "timestamp": "2024-01-15"}, "event.timestamp"),
    ("timestamp-space", {**GOOD, "timestamp": "2024-01-15 10:30:00Z"}, "event.timestamp"),
    ("timestamp-month-13", {**GOOD, "timestamp": "2024-13-15T10:30:00Z"}, "event.timestamp"),
    ("timestamp-feb-30", {**GOOD, "timestamp": "2024-02-30T10:30:00Z"}, "event.timestamp"),
    ("timestamp-feb-29-2023", {**GOOD, "timestamp": "2023-02-29T10:30:00Z"}, "event.timestamp"),
    ("timestamp-hour-24", {**GOOD, "timestamp": "2024-01-15T24:00:00Z"}, "event.timestamp"),
    (
        "timestamp-offset-no-colon",
        {**GOOD, "timestamp": "2024-01-15T10:30:00+0100"},
        "event.timestamp",
    ),
    ("timestamp-epoch-number", {**GOOD, "timestamp": 1705314600}, "event.timestamp"),
    ("timestamp-epoch-string", {**GOOD, "timestamp": "1705314600"}, "event.timestamp"),
    ("properties-array", {**GOOD, "properties": [1, 2]}, "event.properties"),
    ("properties-string", {**GOOD, "properties": "a=1"}, "event.properties"),
    ("property-null", {**GOOD, "properties": {"plan": None}}, "event.properties.plan"),
    (
        "property-object",
        {**GOOD, "properties": {"address": {"city": "X"}}},
        "event.properties.address",
    ),
    ("property-array", {**GOOD, "properties": {"tags": ["a"]}}, "event.properties.tags"),
    ("identify-string", {**GOOD, "identify": "true"}, "event.identify"),
    ("identify-number", {**GOOD, "identify": 1}, "event.identify"),
    ("unknown-field", {**GOOD, "userId": "u1"}, "event.userId"),
]


@pytest.mark.parametrize(
    ("event", "field"), [(e, f) for _, e, f in BAD_EVENTS], ids=[i for i, _, _ in BAD_EVENTS]
)
def test_broken_rule_is_400_validation_error_naming_the_field(
    shared_sandbox: Sandbox, event: dict[str, Any], field: str
) -> None:
    answer = post_event(shared_sandbox.url, event)
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/json"
    body = answer.json
    assert set(body) == {"error", "code"}
    assert body["code"] == "VALIDATION_ERROR"
    assert body["error"].startswith("Validation failed: ")
    assert field in body["error"]


@pytest.mark.parametrize(
    ("raw", "code", "fragment"),
    [
        (b"", "VALIDATION_ERROR", "body"),
        (b'{"event": {"event": "x"', "INVALID_JSON", "JSON"),
        (b'{"event": {"event": "x", "properties": {"big": 1e400}}}', "INVALID_JSON", "JSON"),
        (b'{"event": {"event": "x", "properties": {"n": NaN}}}', "INVALID_JSON", "JSON"),
        (b"\xff\xfe", "INVALID_JSON", "JSON"),
        (b"[]", "VALIDATION_ERROR", "body"),
        (b"{}", "VALIDATION_ERROR", "event is required"),
        (b'{"event": "signup"}', "VALIDATION_ERROR", "event must be an object"),
        (b'{"event": {"event": "x"}, "user_id": "u1"}', "VALIDATION_ERROR", "'user_id'"),
    ],
    ids=[
        "empty",
        "truncated",
        "infinite-number",
        "nan",
        "not-utf8",
        "array",
        "no-wrapper",
        "wrapper-string",
        "field-outside-wrapper",
    ],
)
def test_malformed_body_is_400(
    shared_sandbox: Sandbox, raw: bytes, code: str, fragment: str
) -> None:
    answer = post_raw(shared_sandbox.url, raw)
    assert answer.status == 400
    assert answer.json["code"] == code
    assert fragment in answer.json["error"]


@pytest.mark.parametrize(
    "event",
    [
        {"event": "signup"},
        {"event": "Product-Purchased_2", "user_id": "000123", "anonymous_id": "anon_1"},
        {"event": "x", "user_id": "", "event_id": ""},
        {"event": "x", "timestamp": "2024-01-15T10:30:00Z"},
        {"event": "x", "timestamp": "2024-01-15T10:30:00.123456+05:30"},
        {"event": "x", "timestamp": "2024-02-29T23:59:59-00:00"},
        {"event": "x", "timestamp": "2016-12-31T23:59:60Z"},
        {"event": "x", "timestamp": "2024-01-15t10:30:00z"},
        {"event": "x", "identify": True, "user_id": "u1"},
        {"event": "x", "identify": False},
        {"event": "x", "properties": {}},
        {
            "event": "x",
            "properties": {
                "s": "text",
                "i": -3,
                "f": 99.99,
                "b": False,
                "big": 2**63 - 1,
                "signup_date": "2024-01-15T10:30:00Z",
                "empty": "",
            },
        },
    ],
    ids=[
        "minimal",
        "all-ids",
        "empty-ids",
        "utc",
        "offset-fraction",
        "leap-day",
        "leap-second",
        "lowercase-t-z",
        "identify-true",
        "identify-false",
        "no-properties",
        "property-types",
    ],
)
def test_valid_event_is_200_with_the_exact_success_body(
    shared_sandbox: Sandbox, event: dict[str, Any]
) -> None:
    answer = post_event(shared_sandbox.url, event)
    assert answer.status == 200, answer.raw
    assert answer.headers["content-type"] == "application/json"
    assert answer.json == SUCCESS
    assert answer.raw == b'{"success":true,"message":"Event tracked successfully"}'
    assert int(answer.headers["content-length"]) == len(answer.raw)


def test_date_time_property_is_accepted_despite_the_oneof_defect(sandbox: Sandbox) -> None:
    event = {
        "event": "signup",
        "event_id": "dt1",
        "properties": {"signup_date": "2024-01-15T10:30:00Z"},
    }
    assert post_event(sandbox.url, event).status == 200
    [stored] = sandbox.events()
    assert stored["body"]["event"]["properties"]["signup_date"] == "2024-01-15T10:30:00Z"


def test_every_problem_is_reported_and_the_first_is_counted(sandbox: Sandbox) -> None:
    event = {"event": "bad name", "user_id": 5, "properties": {"p": None}, "extra": 1}
    error = post_event(sandbox.url, event).json["error"]
    positions = [
        error.index(f)
        for f in ("event.event", "event.user_id", "event.properties.p", "event.extra")
    ]
    assert positions == sorted(positions)
    stats = sandbox.stats()
    assert stats["rejected_400"] == 1
    assert stats["rejected_400_by_reason"] == {"event.event": 1}
    assert stats["stored"] == 0


def test_rejections_are_counted_by_reason(sandbox: Sandbox) -> None:
    post_event(sandbox.url, {"event": "x", "timestamp": "yesterday"})
    post_event(sandbox.url, {"event": "x", "timestamp": "2024-01-01"})
    post_event(sandbox.url, {"event": "x", "properties": {"a": []}})
    post_raw(sandbox.url, b"{")
    post_event(sandbox.url, {"event": "x", "Event": "y"})
    stats = sandbox.stats()
    assert stats["rejected_400"] == 5
    assert stats["rejected_400_by_reason"] == {
        "event.timestamp": 2,
        "event.properties": 1,
        "json": 1,
        "unknown_field": 1,
    }


def test_wrong_content_type_is_415(sandbox: Sandbox) -> None:
    body = json.dumps({"event": GOOD}).encode()
    headers = {"Authorization": "test-key", "Auth-Type": "api", "Content-Type": "text/plain"}
    answer = post_raw(sandbox.url, body, headers)
    assert answer.status == 415
    assert answer.json["code"] == "UNSUPPORTED_MEDIA_TYPE"
    charset = {**headers, "Content-Type": "application/json; charset=utf-8"}
    assert post_raw(sandbox.url, body, charset).status == 200
    assert sandbox.stats()["unsupported_media_type_415"] == 1


def test_body_is_stored_exactly_as_sent(sandbox: Sandbox) -> None:
    event = {
        "event": "x",
        "event_id": "exact",
        "user_id": "000123",
        "properties": {"price": 1.0, "n": 10, "flag": True},
    }
    raw = json.dumps({"event": event}).encode()
    assert post_raw(sandbox.url, raw).status == 200
    [stored] = sandbox.events()
    assert stored["body"] == {"event": event}
    assert stored["body"]["event"]["user_id"] == "000123"
    assert isinstance(stored["body"]["event"]["properties"]["price"], float)
