"""Fault injection: 429 with Retry-After, injected 500/503, drops, stored-but-lost answers, slow
answers, random 429s and 400s, latency, reproducibility."""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import pytest
from sandbox_fixtures import KEY, auth_headers, connect, post_event

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
        "429": 0,
        "400": 0,
        "stored_lost": 0,
        "slow": 0,
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


# The faults added after the first four: stored-lost, slow, random 429, random 400.

NEW_RATES = {
    "stored_lost_rate": 0.15,
    "slow_rate": 0.05,
    "throttle_rate": 0.15,
    "reject_rate": 0.15,
}
EXPECTED = {
    Fault.NONE: "200",
    Fault.STORED_LOST: "dropped",
    Fault.SLOW: "timeout",
    Fault.THROTTLED: "429",
    Fault.REJECTED: "400",
}
HELD = 60_000.0  # ms: a slow answer stays held for the whole test


def legacy_draws(seed: int, error_rate: float, drop_rate: float, count: int) -> list[Fault]:
    """The plan as it was before the newer faults, written out: two draws per request."""
    rng = random.Random(seed)
    draws = []
    for _ in range(count):
        which, kind = rng.random(), rng.random()
        if which < drop_rate:
            draws.append(Fault.DROPPED)
        elif which < drop_rate + error_rate:
            draws.append(Fault.ERROR_500 if kind < 0.5 else Fault.ERROR_503)
        else:
            draws.append(Fault.NONE)
    return draws


def test_newer_fault_rates_at_zero_leave_seeded_sequences_unchanged() -> None:
    for seed in (0, 3, 7):
        plan = FaultPlan(seed, error_rate=0.3, drop_rate=0.2)
        assert [plan.draw() for _ in range(500)] == legacy_draws(seed, 0.3, 0.2, 500)


def test_newer_faults_only_take_requests_the_older_faults_left_alone() -> None:
    old = FaultPlan(5, error_rate=0.2, drop_rate=0.1)
    new = FaultPlan(5, error_rate=0.2, drop_rate=0.1, **NEW_RATES)
    pairs = [(old.draw(), new.draw()) for _ in range(2000)]
    assert all(n == o for o, n in pairs if o is not Fault.NONE)
    assert {n for o, n in pairs if o is Fault.NONE} == set(EXPECTED)


def attempt(sb: Sandbox, event_id: str, timeout: float) -> str:
    """One POST on a fresh connection: its status, "dropped" or "timeout"."""
    conn = connect(sb.url, timeout=timeout)
    try:
        answer = post_event(sb.url, {"event": "e", "event_id": event_id}, conn=conn)
    except TimeoutError:
        return "timeout"
    except (http.client.RemoteDisconnected, ConnectionError):
        return "dropped"
    finally:
        conn.close()
    return str(answer.status)


def test_newer_faults_follow_the_seeded_plan_and_are_counted() -> None:
    seed, count = 1, 40
    plan = FaultPlan(seed, **NEW_RATES)
    expected = [EXPECTED[plan.draw()] for _ in range(count)]
    assert set(expected) == set(EXPECTED.values())  # each fault happens at this seed
    with Sandbox(key=KEY, seed=seed, slow_ms=HELD, **NEW_RATES) as sb:
        # The plan says which answers are held: only those get a short client timeout, so a
        # slow machine cannot turn a prompt answer into a timeout.
        seen = [
            attempt(sb, f"n{i}", 0.3 if want == "timeout" else 10.0)
            for i, want in enumerate(expected)
        ]
        stats = sb.stats()
        stored_ids = [e["event_id"] for e in sb.events()]
    assert seen == expected
    assert stats["faults"] == {
        "500": 0,
        "503": 0,
        "dropped": 0,
        "stored_lost": seen.count("dropped"),
        "slow": seen.count("timeout"),
        "429": seen.count("429"),
        "400": seen.count("400"),
    }
    storing = ("200", "dropped", "timeout")
    assert stored_ids == [f"n{i}" for i, s in enumerate(seen) if s in storing]
    assert stats["stored"] == stats["accepted_200"] == len(stored_ids)
    assert (stats["throttled_429"], stats["rejected_400"], stats["requests"]) == (0, 0, count)


def test_stored_lost_events_are_stored_once_when_the_client_retries_them() -> None:
    with Sandbox(key=KEY, stored_lost_rate=0.5, seed=4) as sb:
        attempts: dict[str, int] = {}
        for i in range(20):
            event_id = f"r{i}"
            attempts[event_id] = 1
            while attempt(sb, event_id, 10.0) == "dropped":
                attempts[event_id] += 1
                assert attempts[event_id] < 30
        stats = sb.stats()
        events = sb.events()
    lost = sum(attempts.values()) - len(attempts)
    assert lost > 0 and stats["faults"]["stored_lost"] == lost
    assert [e["event_id"] for e in events] == [f"r{i}" for i in range(20)]
    assert (stats["stored"], stats["duplicates"], stats["requests"]) == (20, lost, 20 + lost)


def test_stored_lost_on_a_known_event_id_counts_as_a_duplicate() -> None:
    with Sandbox(key=KEY, stored_lost_rate=1.0) as sb:
        assert attempt(sb, "same", 10.0) == "dropped"
        assert attempt(sb, "same", 10.0) == "dropped"
        stats = sb.stats()
        assert [e["event_id"] for e in sb.events()] == ["same"]
    assert (stats["stored"], stats["duplicates"], stats["faults"]["stored_lost"]) == (1, 1, 2)


def test_slow_answer_is_a_200_after_slow_ms_and_the_event_is_stored_at_once() -> None:
    with Sandbox(key=KEY, slow_rate=1.0, slow_ms=300) as sb, ThreadPoolExecutor(1) as pool:
        started = time.perf_counter()
        pending = pool.submit(post_event, sb.url, {"event": "e", "event_id": "late"})
        deadline = time.monotonic() + 10
        while not sb.events() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert [e["event_id"] for e in sb.events()] == ["late"]
        assert pending.result(10).status == 200
        assert time.perf_counter() - started >= 0.3
        assert sb.stats()["faults"]["slow"] == 1


def first_seed_with(plan_args: dict[str, float], wanted: list[Fault]) -> int:
    for seed in range(1000):
        plan = FaultPlan(seed, **plan_args)
        if [plan.draw() for _ in wanted] == wanted:
            return seed
    raise AssertionError("no seed found")


def test_a_held_slow_answer_does_not_hold_up_other_connections() -> None:
    rates = {"slow_rate": 0.5}
    seed = first_seed_with(rates, [Fault.SLOW, Fault.NONE, Fault.NONE])
    with Sandbox(key=KEY, seed=seed, slow_ms=HELD, **rates) as sb:
        held = connect(sb.url, timeout=0.3)
        try:
            body = json.dumps({"event": {"event": "e", "event_id": "held"}})
            held.request("POST", "/v1/events", body=body, headers=auth_headers())
            for i in range(2):
                assert post_event(sb.url, {"event": "e", "event_id": f"free{i}"}).status == 200
            with pytest.raises(TimeoutError):
                held.getresponse()
        finally:
            held.close()
        assert [e["event_id"] for e in sb.events()] == ["held", "free0", "free1"]


def test_stop_sends_a_held_answer_at_once(tmp_path: Path) -> None:
    db = tmp_path / "held.db"
    with ThreadPoolExecutor(1) as pool:
        with Sandbox(key=KEY, db=db, slow_rate=1.0, slow_ms=HELD) as sb:
            pending = pool.submit(post_event, sb.url, {"event": "e", "event_id": "h"})
            deadline = time.monotonic() + 10
            while sb.stats()["requests"] == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
        assert pending.result(10).status == 200  # not after the 60 s it was held for
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT event_id FROM events")] == ["h"]


def test_random_throttle_is_a_429_with_retry_after_1_whatever_the_request_rate() -> None:
    with Sandbox(key=KEY, throttle_rate=1.0) as sb:
        answers = [post_event(sb.url, {"event": "e", "event_id": f"q{i}"}) for i in range(3)]
        stats = sb.stats()
        assert sb.events() == []
    for answer in answers:
        assert answer.status == 429
        assert answer.headers["retry-after"] == "1"
        assert answer.json["code"] == "RATE_LIMITED" and set(answer.json) == {"error", "code"}
    assert (stats["faults"]["429"], stats["throttled_429"], stats["stored"]) == (3, 0, 0)


def test_random_reject_refuses_only_events_that_would_be_accepted() -> None:
    with Sandbox(key=KEY, reject_rate=1.0) as sb:
        valid = post_event(sb.url, {"event": "e", "event_id": "v"})
        invalid = post_event(sb.url, {"event": "bad name"})
        unauthorized = post_event(sb.url, {"event": "e"}, key="wrong")
        stats = sb.stats()
        assert sb.events() == []
    assert valid.status == 400
    assert valid.json["code"] == "VALIDATION_ERROR" and set(valid.json) == {"error", "code"}
    assert invalid.status == 400 and "event.event" in invalid.json["error"]
    assert unauthorized.status == 401
    assert (stats["faults"]["400"], stats["rejected_400"], stats["unauthorized_401"]) == (1, 1, 1)
