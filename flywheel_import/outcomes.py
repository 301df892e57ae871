"""HTTP status (or transport error) -> ok / retry / reject / abort: decided here and only here.

A 2xx is accepted. 408, 429, 5xx, timeouts and connection errors are retried (honouring
Retry-After). 401/403 stop the whole run: the key is refused and every further request would
be too. So do 3xx (redirects are not followed), 404, 405 and 407: the URL or the proxy is
wrong, not the row, and rejecting every row one request at a time would say nothing more.
Any other status rejects the row with the API's own ``code`` (``HTTP_<status>`` when the body
has none), so the rejects file says what the API said.

API text is masked of the key (:class:`Secrets`) before it is cut or folded to one line, so no
part of the key survives a server that echoes the request headers.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from enum import StrEnum
from http import HTTPStatus

import orjson

from .urls import redact_userinfo

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

#: Statuses that say the URL or proxy is wrong (3xx too): no row can succeed there.
WRONG_ENDPOINT = frozenset({404, 405, 407})
MASK = "***"


@dataclass(frozen=True, slots=True)
class Secrets:
    """Text never to show (the API key), in each form a server may echo it.

    The key as sent, and JSON-escaped (``"`` and ``\\`` escaped, non-ASCII as ``\\uXXXX`` or
    not, ``/`` as ``\\/`` or not): a JSON body quoting the key shows one of these.
    """

    texts: tuple[str, ...] = ()
    raw: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, *secrets: str) -> Secrets:
        forms: set[str] = set()
        for secret in filter(None, secrets):
            escaped = {orjson.dumps(secret).decode()[1:-1], json.dumps(secret)[1:-1]}
            forms |= {secret, *escaped, *(e.replace("/", "\\/") for e in escaped)}
        texts = tuple(sorted(forms, key=len, reverse=True))  # an escaped form before the key
        return cls(texts, tuple(t.encode() for t in texts))

    def mask(self, text: str) -> str:
        for secret in self.texts:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def mask_bytes(self, data: bytes) -> bytes:
        for secret in self.raw:
            if secret in data:
                data = data.replace(secret, MASK.encode())
        return data


NO_SECRETS = Secrets()


def classify(
    status: int | None,
    body: bytes | None,
    headers: Mapping[str, str] | None,
    error: str | None,
    *,
    secrets: Secrets = NO_SECRETS,
) -> Verdict:
    """Map one response (or transport error, when `status` is None) to a :class:`Verdict`.

    2xx: OK. 408, 429, 5xx, timeouts and connection errors: RETRY, with Retry-After parsed.
    401/403: ABORT, the key is refused and every further request would be too. 3xx, 404, 405,
    407: ABORT, the endpoint is wrong (:func:`abort_message` says which). Any other status:
    REJECT the row, coded with the ``code`` of the API's ``{"error", "code"}`` body, or
    ``HTTP_<status>`` when it has none. Transport errors are coded ``TIMEOUT`` (an `error`
    starting with "timeout") or ``NETWORK_ERROR``. `secrets` are masked in every message.
    """
    if status is None:
        text = clean(secrets.mask(error or "")) or "no response"
        code = "TIMEOUT" if text.startswith(TIMEOUT) else "NETWORK_ERROR"
        return Verdict(Decision.RETRY, code, text, None)
    if 200 <= status < 300:
        return OK
    if body:
        body = secrets.mask_bytes(body)  # before anything is cut: no half key survives
    api_code, api_text = _api_error(body, secrets)
    message = api_text or clean(_decode(body)) or _reason(status)
    if status == 401 or status == 403:
        return Verdict(Decision.ABORT, f"HTTP_{status}", message, None)
    if 300 <= status < 400:
        location = _header(headers, "Location")
        if location:
            message = f"redirects to {clean(secrets.mask(redact_userinfo(location)))}"
        return Verdict(Decision.ABORT, f"HTTP_{status}", message, None)
    if status in WRONG_ENDPOINT:
        return Verdict(Decision.ABORT, f"HTTP_{status}", message, None)
    if status == 408 or status == 429 or 500 <= status < 600:
        retry_after = parse_retry_after(_header(headers, "Retry-After"))
        return Verdict(Decision.RETRY, f"HTTP_{status}", message, retry_after)
    return Verdict(Decision.REJECT, api_code or f"HTTP_{status}", message, None)


def abort_message(status: int, message: str | None, url: str) -> str:
    """The one line an ABORT verdict stops the run with: the key refused, or the URL wrong.

    `url` is the endpoint as shown to the user (no credentials in it).
    """
    if status == 401 or status == 403:
        return (
            f"API refused the key (HTTP {status}): check that the API key is valid and "
            f"allowed to send events (API said: {message})"
        )
    answer = f"POST {url} answered {status} {_reason(status)}"
    if 300 <= status < 400:
        return f"{answer} ({message}): check api.url (redirects are not followed)"
    if status == 407:
        return f"{answer}: check HTTPS_PROXY / HTTP_PROXY and the proxy's user and password"
    said = f" (API said: {message})" if message and message != _reason(status) else ""
    return f"{answer}: check api.url{said}"


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


def _api_error(body: bytes | None, secrets: Secrets = NO_SECRETS) -> tuple[str | None, str | None]:
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
    # Parsed strings are masked again: a JSON escape (\\u0073k_...) can spell the key anew.
    code = clean(secrets.mask(code))[:64] or None if isinstance(code, str) else None
    text = clean(secrets.mask(text)) or None if isinstance(text, str) else None
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
