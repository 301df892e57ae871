"""Request-body rules of ``POST /v1/events``, written from the published spec alone.

This module deliberately shares no code with the importer's mapping or validation: if the two
sides disagree about the spec, a rehearsal against the sandbox shows it.

Decisions where the spec is silent (documented, tested):

* Unknown keys are rejected, both beside ``event`` in the body and inside the event object:
  a typo such as ``userId`` would otherwise be dropped silently and the data lost.
* A date-time string is accepted as a property value (the spec's ``oneOf`` with two string
  branches is a defect; its own example sends one).
* Empty strings are accepted for ``user_id``, ``anonymous_id`` and ``event_id`` (the spec sets
  no minimum length); an empty ``event_id`` is an id like any other and dedupes as such.
* Every problem of a body is reported, in the order of the spec's field list, joined by ``; ``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

EVENT_NAME_PATTERN = "^[a-zA-Z0-9_-]+$"
# fullmatch, not ``$``: Python's ``$`` also matches before a trailing newline, ECMA-262's not.
_EVENT_NAME = re.compile(r"[a-zA-Z0-9_-]+")
# RFC 3339 section 5.6 with its ranges (second 60 is a leap second); only days 29-31 need a
# look at the calendar. [0-9], not \d, which would admit non-ASCII digits.
_DATE_TIME = re.compile(
    r"([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]"
    r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

BODY_KEYS = frozenset({"event"})
EVENT_KEYS = (
    "event",
    "user_id",
    "anonymous_id",
    "timestamp",
    "event_id",
    "properties",
    "identify",
)
_EVENT_KEY_SET = frozenset(EVENT_KEYS)
_ID_FIELDS = ("user_id", "anonymous_id", "event_id")

VALIDATION_ERROR = "VALIDATION_ERROR"
INVALID_JSON = "INVALID_JSON"


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule. ``reason`` is a stable stats key; ``message`` names the field."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid body; ``event_id`` is None when the client sent none."""

    event_id: str | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """An invalid body, with the ErrorResponse ``code`` and every problem found."""

    code: str
    problems: tuple[Problem, ...]

    @property
    def reason(self) -> str:
        """The first problem's reason: one counter per rejected request."""
        return self.problems[0].reason

    @property
    def message(self) -> str:
        """The ErrorResponse ``error`` text."""
        return "Validation failed: " + "; ".join(p.message for p in self.problems)


def check_body(body: bytes) -> Accepted | Rejected:
    """Parse and check one request body."""
    if not body:
        return Rejected(VALIDATION_ERROR, (Problem("body", "request body is required"),))
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Rejected(INVALID_JSON, (Problem("json", f"body is not valid JSON ({exc})"),))
    problems = body_problems(parsed)
    if problems:
        return Rejected(VALIDATION_ERROR, tuple(problems))
    event_id = parsed["event"].get("event_id")
    return Accepted(event_id)


def body_problems(body: Any) -> list[Problem]:
    """Problems of a parsed body ``{"event": {...}}``."""
    if not isinstance(body, dict):
        return [Problem("body", 'body must be a JSON object like {"event": {...}}')]
    problems = [
        Problem("unknown_field", f"unknown top-level field {key!r} (only 'event' is allowed)")
        for key in body
        if key not in BODY_KEYS
    ]
    if "event" not in body:
        problems.insert(0, Problem("event", 'event is required (body is {"event": {...}})'))
        return problems
    event = body["event"]
    if not isinstance(event, dict):
        problems.insert(0, Problem("event", "event must be an object"))
        return problems
    return event_problems(event) + problems


def event_problems(event: dict[str, Any]) -> list[Problem]:
    """Problems of the event object, in the spec's field order, unknown keys last."""
    problems: list[Problem] = []
    name = event.get("event")
    if "event" not in event:
        problems.append(Problem("event.event", "event.event (the event name) is required"))
    elif not isinstance(name, str):
        problems.append(Problem("event.event", "event.event must be a string"))
    elif _EVENT_NAME.fullmatch(name) is None:
        problems.append(Problem("event.event", f"event.event must match {EVENT_NAME_PATTERN}"))
    for field in _ID_FIELDS:
        if field in event and not isinstance(event[field], str):
            problems.append(Problem(f"event.{field}", f"event.{field} must be a string"))
    if "timestamp" in event and not is_date_time(event["timestamp"]):
        problems.append(
            Problem(
                "event.timestamp",
                "event.timestamp must be an RFC 3339 date-time with a timezone offset "
                "(e.g. 2024-01-15T10:30:00Z)",
            )
        )
    if "properties" in event:
        problems.extend(property_problems(event["properties"]))
    if "identify" in event and not isinstance(event["identify"], bool):
        problems.append(Problem("event.identify", "event.identify must be a boolean"))
    if not _EVENT_KEY_SET.issuperset(event):
        problems.extend(
            Problem("unknown_field", f"event.{key} is not a field of the event object")
            for key in event
            if key not in _EVENT_KEY_SET
        )
    return problems


def property_problems(properties: Any) -> list[Problem]:
    """Property values may be strings, finite numbers or booleans, nothing else."""
    if not isinstance(properties, dict):
        return [Problem("event.properties", "event.properties must be an object")]
    return [
        Problem(
            "event.properties",
            f"event.properties.{key} must be a string, number or boolean, not {_json_type(value)}",
        )
        for key, value in properties.items()
        if not _is_property_value(value)
    ]


def is_date_time(value: Any) -> bool:
    """True for an RFC 3339 ``date-time``: calendar-valid and with an explicit offset."""
    if not isinstance(value, str):
        return False
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        return False
    year_text, month_text, day_text = match.groups()
    if day_text < "29":
        return True
    year, month = int(year_text), int(month_text)
    leap = month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return int(day_text) <= _DAYS_IN_MONTH[month - 1] + leap


def _is_property_value(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is bool or kind is int:  # the common case, without isinstance
        return True
    if isinstance(value, str | bool | int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a non-finite number" if isinstance(value, float) else type(value).__name__
