"""Fault injection: 429 with Retry-After, injected 500/503, drops, latency, reproducibility."""

from __future__ import annotations

import asyncio
import http.client
import time

import aiohttp
import pytest
from sandbox_fixtures import KEY, auth_headers, post_event

from flywheel_import.sandbox import Sandbox
from flywheel_import.sandbox.faults import Fault, FaultPlan, TokenBucket, retry_after_seconds

EVENT = {"event": "signup"}


def outcome(sb: Sandbox, i: int) -> str:
    """Status code of one request on a fresh connection, or "dropped"."""
    try:
        return str(post_event(sb.url, {"event": "e", "event_id": f"id{i}"}).status)
    except (http.client.RemoteDisconnected, ConnectionError):
        return "dropped"


def sequence(seed: int, count: int = 40) -> list[str]:
    with Sandbox(key=KEY, error_rate=0.3, drop_rate=0.2, seed=seed) as sb:
        seen = [outcome(sb, i) for i in range(count)]
        faults = sb.stats()["faults"]
    assert faults == {
        "500": seen.count("500"),
        "503": seen.count("503"),
        "dropped": seen.count("dropped"),
    }
    return seen


def test_same_seed_reproduces_the_fault_sequence() -> None:
    first = sequence(seed=7)
    assert first == sequence(seed=7)
    assert first != sequence(seed=8)
    assert {"200", "500", "503", "dropped"} <= set(first)


def test_fault_sequence_is_the_seeded_plan_in_arrival_order() -> None:
    plan = FaultPlan(seed=3, error_rate=0.3, drop_rate=0.2)
    names = {
        Fault.NONE: "200",
        Fault.ERROR_500: "500",
        Fault.ERROR_503: "503",
        Fault.DROPPED: "dropped",
    }
    expected = [names[plan.draw()] for _ in range(30)]
    assert sequence(seed=3, count=30) == expected


def test_injected_errors_have_error_response_bodies_and_store_nothing() -> None:
    with Sandbox(key=KEY, error_rate=1.0, seed=1) as sb:
        answers = [post_event(sb.url, {"event": "e", "event_id": f"x{i}"}) for i in range(12)]
        assert {a.status for a in answers} == {500, 503}
        for answer in answers:
            expected = "INTERNAL_ERROR" if answer.status == 500 else "SERVICE_UNAVAILABLE"
            assert answer.json["code"] == expected
            assert set(answer.json) == {"error", "code"}
        assert sb.events() == []
        assert sb.stats()["stored"] == 0


def test_dropped_request_is_a_client_connection_error_and_not_stored() -> None:
    with Sandbox(key=KEY, drop_rate=1.0) as sb:
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            post_event(sb.url, {"event": "e", "event_id": "lost"})
        assert sb.events() == []
        assert sb.stats()["faults"]["dropped"] == 1


def test_rate_limit_answers_429_with_retry_after() -> None:
    with Sandbox(key=KEY, rate_limit=0.1, burst=2) as sb:
        statuses = [post_event(sb.url, {"event": "e", "event_id": f"r{i}"}) for i in range(4)]
        assert [a.status for a in statuses] == [200, 200, 429, 429]
        throttled = statuses[2]
        assert throttled.json["code"] == "RATE_LIMITED"
        assert set(throttled.json) == {"error", "code"}
        retry_after = int(throttled.headers["retry-after"])
        assert 1 <= retry_after <= 10
        stats = sb.stats()
        assert (stats["throttled_429"], stats["stored"]) == (2, 2)


def test_rate_limited_requests_still_draw_their_fault() -> None:
    with Sandbox(key=KEY, rate_limit=0.1, burst=1, error_rate=1.0, seed=5) as sb:
        statuses = [post_event(sb.url, EVENT).status for _ in range(3)]
    plan = FaultPlan(seed=5, error_rate=1.0)
    assert statuses[0] == int(plan.draw().value)
    assert statuses[1:] == [429, 429]


def test_latency_delays_each_answer_by_at_least_n_ms() -> None:
    with Sandbox(key=KEY, latency_ms=120) as sb:
        started = time.perf_counter()
        assert post_event(sb.url, EVENT).status == 200
        assert time.perf_counter() - started >= 0.12
        started = time.perf_counter()
        assert post_event(sb.url, {"event": "bad name"}).status == 400
        assert time.perf_counter() - started >= 0.12


def test_latency_does_not_serialize_concurrent_requests() -> None:
    async def burst(count: int) -> tuple[list[int], float, int]:
        # Started from inside a running loop: the sandbox brings its own loop and thread.
        with Sandbox(key=KEY, latency_ms=100) as sb:
            connector = aiohttp.TCPConnector(limit=count)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def one(i: int) -> int:
                    body = {"event": {"event": "e", "event_id": f"c{i}"}}
                    url = f"{sb.url}/v1/events"
                    async with session.post(url, json=body, headers=auth_headers()) as response:
                        return response.status

                started = time.perf_counter()
                statuses = await asyncio.gather(*(one(i) for i in range(count)))
                elapsed = time.perf_counter() - started
            return statuses, elapsed, sb.stats()["stored"]

    statuses, elapsed, stored = asyncio.run(burst(100))
    assert statuses == [200] * 100
    assert 0.1 <= elapsed < 1.5  # serialized, 100 answers of 100 ms would take 10 s
    assert stored == 100


def test_token_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.1)
    now[0] = 0.25
    assert [bucket.take() for _ in range(2)] == [0.0, 0.0]
    assert bucket.take() > 0
    now[0] = 100.0
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() > 0


def test_retry_after_is_whole_seconds_and_never_zero() -> None:
    assert retry_after_seconds(0.001) == 1
    assert retry_after_seconds(1.0) == 1
    assert retry_after_seconds(1.2) == 2


def test_fault_rates_are_roughly_honoured() -> None:
    plan = FaultPlan(seed=11, error_rate=0.1, drop_rate=0.05)
    draws = [plan.draw() for _ in range(20_000)]
    assert draws.count(Fault.DROPPED) / len(draws) == pytest.approx(0.05, abs=0.01)
    errors = draws.count(Fault.ERROR_500) + draws.count(Fault.ERROR_503)
    assert errors / len(draws) == pytest.approx(0.1, abs=0.01)
