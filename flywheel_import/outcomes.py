"""HTTP status (or transport error) -> ok / retry / reject / abort: decided here and only here.

A 2xx is accepted. 408, 429, 5xx, timeouts and connection errors are retried (honouring
Retry-After). 401/403 stop the whole run: the key is refused and every further request would
be too. Any other status rejects the row with the API's own ``code`` (``HTTP_<status>`` when the
body has none), so the rejects file says what the API said.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from enum import StrEnum
from http import HTTPStatus

import orjson

EXCERPT = 200  # characters of API text kept in a message
TIMEOUT = "timeout"


class Decision(StrEnum):
    """What the caller does with a response."""

    OK = "ok"
    RETRY = "retry"
    REJECT = "reject"
    ABORT = "abort"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision on one attempt, with the API's code and text and any Retry-After (s)."""

    decision: Decision
    code: str | None
    message: str | None
    retry_after: float | None


OK = Verdict(Decision.OK, None, None, None)


def classify(
    status: int | None,
    body: bytes | None,
    headers: Mapping[str, str] | None,
    error: str | None,
) -> Verdict:
    """Map one response (or transport error, when `status` is None) to a :class:`Verdict`.

    2xx: OK. 408, 429, 5xx, timeouts and connection errors: RETRY, with Retry-After parsed.
    401/403: ABORT, the key is refused and every further request would be too. Any other
    status: REJECT the row, coded with the ``code`` of the API's ``{"error", "code"}`` body, or
    ``HTTP_<status>`` when it has none. Transport errors are coded ``TIMEOUT`` (an `error`
    starting with "timeout") or ``NETWORK_ERROR``.
    """
    if status is None:
        text = clean(error or "") or "no response"
        code = "TIMEOUT" if text.startswith(TIMEOUT) else "NETWORK_ERROR"
        return Verdict(Decision.RETRY, code, text, None)
    if 200 <= status < 300:
        return OK
    api_code, api_text = _api_error(body)
    message = api_text or clean(_decode(body)) or _reason(status)
    if status == 401 or status == 403:
        return Verdict(Decision.ABORT, f"HTTP_{status}", message, None)
    if status == 408 or status == 429 or 500 <= status < 600:
        retry_after = parse_retry_after(_header(headers, "Retry-After"))
        return Verdict(Decision.RETRY, f"HTTP_{status}", message, retry_after)
    return Verdict(Decision.REJECT, api_code or f"HTTP_{status}", message, None)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delay-seconds or an HTTP date; None if unusable.

    `now` is the wall-clock time (``time.time()``) an HTTP date is measured from.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:  # a plain dict is case-sensitive; aiohttp's headers are not
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


def _api_error(body: bytes | None) -> tuple[str | None, str | None]:
    """The ``code`` and ``error`` of an ErrorResponse body, each None when absent."""
    if not body or body.lstrip()[:1] != b"{":
        return None, None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    code, text = doc.get("code"), doc.get("error", doc.get("message"))
    code = clean(code)[:64] or None if isinstance(code, str) else None
    text = clean(text) or None if isinstance(text, str) else None
    return code, text


def _decode(body: bytes | None) -> str:
    return body[: EXCERPT * 4].decode("utf-8", "replace") if body else ""


def clean(text: str) -> str:
    """One line of printable text, at most `EXCERPT` characters: safe in logs and CSV."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
