"""classify() branch by branch, then Sender over real loopback HTTP against a scripted server.

Waits are injected: the sender's and the limiter's sleep record the delay, advance a fake
clock and return at once, so retries with multi-second backoffs run in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from flywheel_import.errors import ApiAbort, ErrorCode, UsageError
from flywheel_import.ratelimit import RateLimiter
from flywheel_import.sender import (
    Decision,
    Outcome,
    Retry,
    Sender,
    SendSettings,
    SendStats,
    classify,
    parse_retry_after,
)
from tests.scripted_server import DROP, Reply, ScriptedServer, error

KEY = "sk_live_7f3a-SECRET-c0ffee"
BODY = b'{"event": {"event": "signup", "user_id": "000123", "event_id": "evt-42"}}'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp needs asyncio


class FakeTime:
    """Clock and sleep: sleeping records the delay and moves the clock, without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


def make_sender(url: str, ft: FakeTime, **settings: Any) -> Sender:
    return Sender(
        SendSettings(url, KEY, **settings), sleep=ft.sleep, clock=ft.clock, rng=random.Random(7)
    )


# --- classify ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_classify_2xx_is_ok(status: int) -> None:
    v = classify(status, b"", {}, None)
    assert v.decision is Decision.OK
    assert (v.code, v.message, v.retry_after) == (None, None, None)


def test_classify_400_with_api_code_rejects_with_that_code_and_error_text() -> None:
    body = b'{"error": "Validation failed: event is required", "code": "VALIDATION_ERROR"}'
    v = classify(400, body, {"Content-Type": "application/json"}, None)
    assert v.decision is Decision.REJECT
    assert v.code == "VALIDATION_ERROR"
    assert v.message == "Validation failed: event is required"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": "bad things"}', "bad things"),
        (b"<html>\n  <b>nope</b>\r\n</html>", "<html> <b>nope</b> </html>"),
        (b"", "Bad Request"),
        (b"[1, 2]", "[1, 2]"),
        (b"{not json", "{not json"),
    ],
    ids=["json-without-code", "html", "empty", "json-not-object", "broken-json"],
)
def test_classify_400_without_code_rejects_as_http_400(body: bytes, message: str) -> None:
    v = classify(400, body, None, None)
    assert (v.decision, v.code, v.message) == (Decision.REJECT, "HTTP_400", message)


@pytest.mark.parametrize(("status", "reason"), [(413, "Request Entity Too Large"), (422, None)])
def test_classify_other_4xx_reject_with_http_code(status: int, reason: str | None) -> None:
    v = classify(status, b"" if reason else b'{"error": "unprocessable"}', None, None)
    assert (v.decision, v.code) == (Decision.REJECT, f"HTTP_{status}")
    assert v.message == (reason or "unprocessable")


def test_classify_excerpt_is_one_short_printable_line() -> None:
    v = classify(404, b"line1\nline2\x00\x1b[31m" + b"x" * 5000, None, None)
    assert v.message is not None
    assert len(v.message) <= 200 and "\n" not in v.message and "\x1b" not in v.message
    assert v.message.startswith("line1 line2")


@pytest.mark.parametrize("status", [401, 403])
def test_classify_401_and_403_abort(status: int) -> None:
    v = classify(status, b'{"error": "Invalid API key"}', None, None)
    assert (v.decision, v.code, v.message) == (Decision.ABORT, f"HTTP_{status}", "Invalid API key")


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_classify_408_429_and_5xx_retry(status: int) -> None:
    v = classify(status, b"", {}, None)
    assert (v.decision, v.code, v.retry_after) == (Decision.RETRY, f"HTTP_{status}", None)


def test_classify_reads_retry_after_seconds_case_insensitively() -> None:
    assert classify(429, b"", {"Retry-After": "2"}, None).retry_after == 2.0
    assert classify(503, b"", {"retry-after": " 7 "}, None).retry_after == 7.0


def test_classify_reads_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    v = classify(429, b"", {"Retry-After": when}, None)
    assert v.retry_after is not None and 28.0 <= v.retry_after <= 31.0


def test_parse_retry_after_edge_cases() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now=now) == 90.0
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now=now) == 0.0
    for bad in (None, "", "soon", "nan", "inf", "Mon, 99 Foo 2024"):
        assert parse_retry_after(bad) is None


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("timeout after 10s", "TIMEOUT"),
        ("ServerDisconnectedError: Server disconnected", "NETWORK_ERROR"),
        (None, "NETWORK_ERROR"),
    ],
)
def test_classify_transport_errors_retry(error: str | None, code: str) -> None:
    v = classify(None, None, None, error)
    assert (v.decision, v.code) == (Decision.RETRY, code)
    assert v.message


# --- settings, stats --------------------------------------------------------------------


def test_settings_repr_and_str_hide_the_key() -> None:
    s = SendSettings("https://api.flywheel.cx", KEY)
    assert KEY not in repr(s) and KEY not in str(s)
    assert s.user_agent.startswith("flywheel-import/")
    assert s.endpoint == "https://api.flywheel.cx/v1/events"
    assert SendSettings("http://h:1/base/", KEY).endpoint == "http://h:1/base/v1/events"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "ftp://x"},
        {"url": "nohost"},
        {"key": ""},
        {"key": KEY + "\n"},
        {"concurrency": 0},
        {"max_attempts": 0},
        {"timeout": 0},
        {"rate_limit": -1},
    ],
)
def test_invalid_settings_raise_usage_error_without_the_key(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"url": "https://api.flywheel.cx", "key": KEY, **kwargs}
    with pytest.raises(UsageError) as exc:
        SendSettings(**args)
    assert KEY not in str(exc.value)


def test_stats_latency_percentiles_in_bounded_memory() -> None:
    stats = SendStats()
    rng = random.Random(1)
    samples = [rng.uniform(0.001, 0.101) for _ in range(50_000)]
    for s in samples:
        stats.record_latency(s)
    samples.sort()
    assert stats.p50_ms == pytest.approx(samples[25_000] * 1000, rel=0.03)
    assert stats.p99_ms == pytest.approx(samples[49_500] * 1000, rel=0.03)
    assert len(stats._hist) == SendStats._BUCKETS + 1  # fixed, whatever the count
    assert SendStats().snapshot()["latency_p50_ms"] is None


def test_backoff_is_full_jitter_under_an_exponential_cap_with_retry_after_as_floor() -> None:
    sender = Sender(
        SendSettings("http://x", KEY, backoff_base=0.5, backoff_max=4.0, retry_after_max=60),
        rng=random.Random(3),
    )
    for attempt, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0), (5000, 4.0)]:
        delays = [sender.backoff(attempt) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8  # spread over the whole range
    assert sender.backoff(1, retry_after=2.0) == 2.0
    assert sender.backoff(1, retry_after=3600) == 60.0


# --- Sender over HTTP -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def scripted(
    *script: Reply | int, then: Reply | int = 200, path: str = "", **settings: Any
) -> AsyncIterator[tuple[ScriptedServer, Sender, FakeTime]]:
    """A scripted server and a Sender pointed at it (with fake time), both running."""
    ft = FakeTime()
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(ScriptedServer(*script, then=then))
        sender = await stack.enter_async_context(make_sender(server.url + path, ft, **settings))
        yield server, sender, ft


@pytest.mark.anyio
async def test_send_posts_the_exact_body_with_api_headers_to_v1_events() -> None:
    async with scripted(200, path="/") as (server, sender, _):
        out = await sender.send(BODY)
    assert out == Outcome(True, None, None, 1, 200)
    [req] = server.requests
    assert (req.method, req.path, req.body) == ("POST", "/v1/events", BODY)
    assert req.headers["Authorization"] == KEY  # the key itself, no "Bearer "
    assert req.headers["Auth-Type"] == "api"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["User-Agent"].startswith("flywheel-import/")


@pytest.mark.anyio
async def test_5xx_then_success_is_accepted_after_three_attempts_with_identical_bytes() -> None:
    async with scripted(500, 502, 200) as (server, sender, ft):
        out = await sender.send(BODY)
    assert (out.accepted, out.attempts, out.status) == (True, 3, 200)
    assert [r.body for r in server.requests] == [BODY] * 3
    ids = {orjson.loads(r.body)["event"]["event_id"] for r in server.requests}
    assert ids == {"evt-42"}
    assert len(ft.sleeps) == 2 and 0 <= ft.sleeps[0] <= 0.5 and 0 <= ft.sleeps[1] <= 1.0
    snap = sender.stats.snapshot()
    assert (snap["requests"], snap["accepted"], snap["retries"]) == (3, 1, 2)
    assert snap["errors"] == {"HTTP_500": 1, "HTTP_502": 1}


@pytest.mark.anyio
async def test_400_with_code_is_rejected_with_that_code_and_message_without_retry() -> None:
    reply = error(400, "Validation failed: bad event name", "VALIDATION_ERROR")
    async with scripted(reply) as (server, sender, ft):
        out = await sender.send(BODY)
    assert out == Outcome(False, "VALIDATION_ERROR", "Validation failed: bad event name", 1, 400)
    assert len(server.requests) == 1 and ft.sleeps == []
    assert sender.stats.rejected == 1


@pytest.mark.anyio
async def test_400_without_code_is_rejected_as_http_400() -> None:
    async with scripted(Reply(400, b"malformed JSON")) as (_, sender, _):
        out = await sender.send(BODY)
    assert (out.accepted, out.code, out.message) == (False, "HTTP_400", "malformed JSON")


@pytest.mark.anyio
async def test_429_retry_after_is_honoured_by_the_throttled_request_alone() -> None:
    async with scripted(Reply(429, b"", {"Retry-After": "2"}), rate_limit=100) as (_, sender, ft):
        out = await sender.send(BODY)
    assert (out.accepted, out.attempts) == (True, 2)
    assert max(ft.sleeps) >= 2.0
    # One 429 is no sign that our rate causes them: nobody else pauses, the rate stays.
    assert sender.limiter.current_rate == 100
    assert sender.limiter.paused_until == float("-inf")
    assert sender.stats.throttled == 1


@pytest.mark.anyio
async def test_attempt_returns_the_retry_delay_instead_of_sleeping() -> None:
    async with scripted(Reply(429, b"", {"Retry-After": "3"}), 200) as (server, sender, ft):
        first = await sender.attempt(BODY, 1)
        second = await sender.attempt(BODY, 2)
    assert isinstance(first, Retry) and first.delay >= 3.0
    assert second == Outcome(True, None, None, 2, 200)
    assert ft.sleeps == [] and len(server.requests) == 2


@pytest.mark.anyio
async def test_a_huge_retry_after_is_cut_to_retry_after_max() -> None:
    tomorrow = Reply(429, b"", {"Retry-After": "86400"})
    async with scripted(tomorrow, retry_after_max=10) as (_, sender, ft):
        assert (await sender.send(BODY)).accepted
    assert max(ft.sleeps) == 10.0


@pytest.mark.anyio
async def test_an_injected_limiter_is_used_and_slowed_by_heavy_throttling() -> None:
    ft = FakeTime()
    lim = RateLimiter(50, clock=ft.clock, sleep=ft.sleep)
    script = [Reply(429, b"", {"Retry-After": "1"})] * 30
    async with ScriptedServer(*script) as server:
        settings = SendSettings(server.url, KEY, max_attempts=40)
        sender = Sender(settings, limiter=lim, sleep=ft.sleep, clock=ft.clock)
        async with sender:
            assert (await sender.send(BODY)).accepted
    assert sender.limiter is lim and lim.current_rate < 50


@pytest.mark.anyio
async def test_dropped_connection_then_success_is_accepted() -> None:
    async with scripted(DROP, 200) as (server, sender, _):
        out = await sender.send(BODY)
    assert (out.accepted, out.attempts) == (True, 2)
    assert [r.body for r in server.requests] == [BODY] * 2
    assert sender.stats.errors == {"NETWORK_ERROR": 1}


@pytest.mark.anyio
async def test_response_slower_than_timeout_is_retried_then_retries_exhausted() -> None:
    slow = Reply(delay=5.0)  # released when the server closes: nothing waits 5 s
    async with scripted(then=slow, timeout=0.02, max_attempts=3) as (server, sender, ft):
        out = await sender.send(BODY)
    assert out == Outcome(False, ErrorCode.RETRIES_EXHAUSTED, "timeout after 0.02s", 3, None)
    assert len(server.requests) == 3 and len(ft.sleeps) == 2
    assert sender.stats.exhausted == 1 and sender.stats.errors == {"TIMEOUT": 3}


@pytest.mark.anyio
async def test_persistent_503_ends_retries_exhausted_naming_the_last_status() -> None:
    async with scripted(then=error(503, "overloaded"), max_attempts=4) as (server, sender, _):
        out = await sender.send(BODY)
    assert out == Outcome(False, "RETRIES_EXHAUSTED", "HTTP 503: overloaded", 4, 503)
    assert len(server.requests) == 4


@pytest.mark.anyio
async def test_401_raises_api_abort_without_the_key_and_stops_every_later_send() -> None:
    async with scripted(then=error(401, f"invalid key {KEY}")) as (server, sender, _):
        with pytest.raises(ApiAbort) as first:
            await sender.send(BODY)
        with pytest.raises(ApiAbort) as later:
            await sender.send(BODY)
    assert len(server.requests) == 1  # the later send never went out
    for exc in (first.value, later.value):
        assert "HTTP 401" in str(exc)
        assert KEY not in str(exc) and KEY not in repr(exc)
    assert sender.aborted


@pytest.mark.anyio
async def test_403_stops_every_concurrent_worker_quickly() -> None:
    bodies = [BODY] * 100
    errors: list[ApiAbort] = []

    async def worker(sender: Sender) -> None:  # how the pipeline drives the sender
        try:
            while bodies:
                await sender.send(bodies.pop())
        except ApiAbort as exc:
            errors.append(exc)

    async with scripted(then=Reply(403, b"forbidden"), concurrency=8) as (server, sender, _):
        await asyncio.gather(*(worker(sender) for _ in range(8)))
    assert len(errors) == 8  # every worker stopped on ApiAbort
    assert len(server.requests) <= 8  # at most the requests already in flight
    assert len(bodies) >= 100 - 8


@pytest.mark.anyio
async def test_key_is_absent_from_repr_stats_and_messages_even_if_the_api_echoes_it() -> None:
    echo = error(400, f"unknown header Authorization: {KEY}", "BAD_HEADER")
    async with scripted(echo, then=Reply(500, KEY.encode()), max_attempts=2) as (_, sender, _):
        rejected = await sender.send(BODY)
        exhausted = await sender.send(BODY)
    texts = [repr(sender), repr(sender.settings), repr(sender.stats), str(sender.stats.snapshot())]
    assert all(KEY not in t for t in [*texts, repr(rejected), repr(exhausted)])
    assert rejected.message == "unknown header Authorization: ***"
    assert exhausted.message == "HTTP 500: ***"


@pytest.mark.anyio
async def test_concurrent_workers_reuse_at_most_concurrency_connections() -> None:
    bodies = [BODY.replace(b"evt-42", b"evt-%d" % i) for i in range(60)]
    pending = list(bodies)

    async def worker(sender: Sender) -> None:
        while pending:
            assert (await sender.send(pending.pop())).accepted

    async with scripted(concurrency=4) as (server, sender, _):
        await asyncio.gather(*(worker(sender) for _ in range(4)))
    assert sorted(r.body for r in server.requests) == sorted(bodies)
    assert len({r.peer for r in server.requests}) <= 4
    assert sender.stats.accepted == 60


@pytest.mark.anyio
async def test_send_outside_the_context_manager_is_an_error() -> None:
    sender = Sender(SendSettings("http://127.0.0.1:9", KEY))
    with pytest.raises(RuntimeError):
        await sender.send(BODY)
