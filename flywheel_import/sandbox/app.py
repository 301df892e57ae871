"""Routes and the Flywheel semantics of the sandbox, independent of the wire protocol.

``POST /v1/events`` goes through these steps, in this order, the first that answers wins:
fault draw (always made, see :mod:`.faults`), rate limit -> 429, injected drop / 500 / 503 /
429, ``Authorization`` + ``Auth-Type`` -> 401, ``Content-Type`` -> 415, body rules -> 400,
injected 400, then dedupe and store -> 200. Gateways throttle and fail before the application
authenticates, so those faults come first; an injected 400 refuses an otherwise valid event.
The ``stored_lost`` and ``slow`` faults store the event exactly as a 200 would (dedupe and
counters included), then close the connection unanswered or hold the 200 back by
``--slow-ms``. ``--latency-ms`` delays every answer of ``/v1/events`` (drops included); the
inspection routes ``/sandbox/stats`` and ``/sandbox/events`` are never delayed, faulted or
authenticated.

A failure of the sandbox itself is a generic 500: its detail goes to the sandbox's stderr, not
to the client, which may be any program on the machine.
"""

from __future__ import annotations

import sys
import traceback
import uuid
from collections.abc import Awaitable
from urllib.parse import parse_qs

import orjson

from . import rules
from .config import SandboxConfig
from .faults import GATEWAY_FAULTS, Fault, FaultPlan, TokenBucket, retry_after_seconds
from .stats import Stats
from .wire import Request, Response
from .writer import BatchWriter

EVENTS_PATH = "/v1/events"
STATS_PATH = "/sandbox/stats"
EVENTS_LIST_PATH = "/sandbox/events"
DEFAULT_PAGE = 100
MAX_PAGE = 10_000

SUCCESS_BODY = orjson.dumps({"success": True, "message": "Event tracked successfully"})


def error_body(message: str, code: str) -> bytes:
    """An ErrorResponse document."""
    return orjson.dumps({"error": message, "code": code})


class SandboxApp:
    """Answers requests; owns the counters, the fault plan and the rate limit."""

    def __init__(self, config: SandboxConfig, writer: BatchWriter) -> None:
        self._key = config.key
        self._writer = writer
        self.stats = Stats()
        self._faults = FaultPlan(
            config.seed,
            config.error_rate,
            config.drop_rate,
            stored_lost_rate=config.stored_lost_rate,
            slow_rate=config.slow_rate,
            throttle_rate=config.throttle_rate,
            reject_rate=config.reject_rate,
        )
        burst = config.effective_burst
        self._bucket: TokenBucket | None = None
        self._limit_text = ""
        if config.rate_limit is not None and burst is not None:
            self._bucket = TokenBucket(config.rate_limit, burst)
            self._limit_text = f"{config.rate_limit:g} requests/s, burst {burst}"
        delay = self._delay = config.latency_ms / 1000.0
        # Constant answers are built once: the success path allocates no response.
        self._ok = Response(200, SUCCESS_BODY, delay=delay)
        self._drop = Response(0, drop=True, delay=delay)
        self._slow = Response(200, SUCCESS_BODY, delay=delay + config.slow_ms / 1000.0)
        self._gateway = {
            Fault.DROPPED: self._drop,
            Fault.ERROR_500: Response(
                500,
                error_body("Internal server error (injected by the sandbox)", "INTERNAL_ERROR"),
                delay=delay,
            ),
            Fault.ERROR_503: Response(
                503,
                error_body("Service unavailable (injected by the sandbox)", "SERVICE_UNAVAILABLE"),
                delay=delay,
            ),
            Fault.THROTTLED: Response(
                429,
                error_body(
                    "Rate limit exceeded (quota shared with other clients; injected by the "
                    "sandbox)",
                    "RATE_LIMITED",
                ),
                headers=(("Retry-After", "1"),),
                delay=delay,
            ),
        }
        self._rejected = Response(
            400,
            error_body(
                "Validation failed: event refused (injected by the sandbox)", "VALIDATION_ERROR"
            ),
            delay=delay,
        )
        self._internal = Response(500, error_body("internal error", "INTERNAL_ERROR"))

    # wire.Application

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        """Route a request."""
        path = request.path
        if path == EVENTS_PATH:
            if request.method == "POST":
                return self._post_event(request)
            return self._not_allowed("POST")
        if path == STATS_PATH:
            if request.method == "GET":
                return self._json(200, self.stats_document())
            return self._not_allowed("GET", counted=False)
        if path == EVENTS_LIST_PATH:
            if request.method == "GET":
                return self._list_events(request.query)
            return self._not_allowed("GET", counted=False)
        self.stats.not_found_404 += 1
        return Response(404, error_body(f"no route for {path}", "NOT_FOUND"))

    def framing_error(self, status: int, message: str) -> Response:
        """Broken HTTP framing: counted, answered, connection closed."""
        self.stats.malformed_http += 1
        return Response(status, error_body(message, "BAD_REQUEST"), close=True)

    def internal_error(self, exc: BaseException) -> Response:
        """A bug or an I/O failure in the sandbox itself (never injected).

        The client gets a generic answer; paths, SQL and stack frames stay on our stderr.
        """
        print("sandbox: internal error while answering a request:", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
        return self._internal

    # inspection

    def stats_document(self) -> dict[str, object]:
        """The ``/sandbox/stats`` document."""
        return self.stats.snapshot(self._writer.total)

    async def events_page(self, after: int, limit: int) -> dict[str, object]:
        """The ``/sandbox/events`` document; includes every event acknowledged so far."""
        events = await self._writer.page(after, limit + 1)
        more = len(events) > limit
        events = events[:limit]
        return {"events": events, "next_after": events[-1]["seq"] if more else None}

    # routes

    def _post_event(self, request: Request) -> Response:
        stats = self.stats
        stats.requests += 1
        fault = self._faults.draw()
        if self._bucket is not None:
            wait = self._bucket.take()
            if wait > 0:
                stats.throttled_429 += 1
                return Response(
                    429,
                    error_body(f"Rate limit exceeded ({self._limit_text})", "RATE_LIMITED"),
                    headers=(("Retry-After", str(retry_after_seconds(wait))),),
                    delay=self._delay,
                )
        if fault in GATEWAY_FAULTS:
            stats.faults[fault.value] += 1
            return self._gateway[fault]
        headers = request.headers
        problem = self._auth_problem(headers.get("authorization"), headers.get("auth-type"))
        if problem is not None:
            stats.unauthorized_401 += 1
            return self._error(401, problem, "UNAUTHORIZED")
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            stats.unsupported_media_type_415 += 1
            return self._error(
                415, "Content-Type must be application/json", "UNSUPPORTED_MEDIA_TYPE"
            )
        verdict = rules.check_body(request.body)
        if isinstance(verdict, rules.Rejected):
            stats.rejected_400 += 1
            stats.rejected_400_by_reason[verdict.reason] += 1
            return self._error(400, verdict.message, verdict.code)
        if fault is Fault.REJECTED:
            stats.faults[fault.value] += 1
            return self._rejected
        event_id = verdict.event_id
        generated = event_id is None
        if event_id is None:
            event_id = str(uuid.uuid4())
        if self._writer.add(event_id, generated, request.body):
            stats.stored += 1
        else:
            stats.duplicates += 1
        if fault is Fault.NONE:
            return self._ok
        stats.faults[fault.value] += 1
        return self._drop if fault is Fault.STORED_LOST else self._slow

    def _auth_problem(self, authorization: str | None, auth_type: str | None) -> str | None:
        if authorization is None:
            return "Missing Authorization header"
        if authorization != self._key:
            if authorization.startswith("Bearer ") and authorization[7:] == self._key:
                return "Invalid API key: send the key itself, without the 'Bearer ' prefix"
            return "Invalid API key"
        if auth_type is None:
            return "Missing Auth-Type header (must be 'api')"
        if auth_type != "api":
            return f"Auth-Type header must be 'api', got {auth_type[:40]!r}"
        return None

    async def _list_events(self, query: str) -> Response:
        params = parse_qs(query, keep_blank_values=True)
        try:
            limit = _int_param(params, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
            after = _int_param(params, "after", 0, 0, None)
        except ValueError as exc:
            return Response(400, error_body(str(exc), "INVALID_QUERY"))
        return self._json(200, await self.events_page(after, limit))

    def _not_allowed(self, allowed: str, counted: bool = True) -> Response:
        if counted:
            self.stats.method_not_allowed_405 += 1
        return Response(
            405,
            error_body(f"Method not allowed (use {allowed})", "METHOD_NOT_ALLOWED"),
            headers=(("Allow", allowed),),
        )

    def _error(self, status: int, message: str, code: str) -> Response:
        return Response(status, error_body(message, code), delay=self._delay)

    @staticmethod
    def _json(status: int, document: object) -> Response:
        return Response(status, orjson.dumps(document))


def _int_param(
    params: dict[str, list[str]], name: str, default: int, low: int, high: int | None
) -> int:
    values = params.get(name)
    if not values:
        return default
    text = values[-1]
    bound = f"between {low} and {high}" if high is not None else f"at least {low}"
    if (
        not (text.isascii() and text.isdigit())
        or int(text) < low
        or (high is not None and int(text) > high)
    ):
        raise ValueError(f"{name} must be an integer {bound}, got {text[:40]!r}")
    return int(text)
