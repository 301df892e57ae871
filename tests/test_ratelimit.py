"""RateLimiter in virtual time: accuracy, pauses, AIMD, and convergence on a server's limit."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from flywheel_import.ratelimit import RateLimiter


class VirtualTime:
    """A clock and a sleep for many coroutines: time jumps to the next wake-up once every
    coroutine is asleep, so simulated minutes take milliseconds and never depend on load."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(delay, 0.0), next(self._seq), fut))
        await fut

    def run(self, *coros: Coroutine[Any, Any, None]) -> None:
        asyncio.run(self._run(coros))

    async def _run(self, coros: tuple[Coroutine[Any, Any, None], ...]) -> None:
        tasks = [asyncio.ensure_future(c) for c in coros]
        while True:
            live = sum(not t.done() for t in tasks)
            while live and len(self._timers) < live:  # let every runnable task reach a sleep
                await asyncio.sleep(0)
                live = sum(not t.done() for t in tasks)
            if not live:
                break
            when, _, fut = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            fut.set_result(None)
        for t in tasks:
            t.result()


def limiter(vt: VirtualTime, rate: float, burst: int | None = None, **kw: Any) -> RateLimiter:
    return RateLimiter(rate, burst, clock=vt.clock, sleep=vt.sleep, **kw)


def acquirers(
    lim: RateLimiter, vt: VirtualTime, n: int, workers: int, stamps: list[float]
) -> list[Coroutine[Any, Any, None]]:
    left = itertools.count()

    async def worker() -> None:
        while next(left) < n:
            await lim.acquire()
            stamps.append(vt.now)

    return [worker() for _ in range(workers)]


def max_in_window(stamps: list[float], width: float = 1.0) -> int:
    stamps = sorted(stamps)
    best, lo = 0, 0
    for hi, t in enumerate(stamps):
        while stamps[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.mark.parametrize("rate", [50, 1000, 4000])
def test_mean_rate_within_3_percent_and_any_second_within_5_percent_plus_burst(
    rate: int,
) -> None:
    vt = VirtualTime()
    lim = limiter(vt, rate)
    stamps: list[float] = []
    n = max(rate * 4, 400)
    vt.run(*acquirers(lim, vt, n, 32, stamps))
    assert len(stamps) == n
    mean = (n - 1) / (stamps[-1] - stamps[0])
    assert abs(mean - rate) / rate < 0.03
    burst = lim.burst
    assert burst == max(1, rate / 20)
    assert max_in_window(stamps) <= rate * 1.05 + burst


def test_tokens_accrue_continuously_so_an_idle_spell_allows_only_the_burst() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 100, burst=5)
    stamps: list[float] = []

    async def scenario() -> None:
        await vt.sleep(60.0)  # a long idle spell does not bank more than `burst` tokens
        for _ in range(8):
            await lim.acquire()
            stamps.append(vt.now)

    vt.run(scenario())
    assert stamps[:5] == [60.0] * 5
    assert stamps[5:] == pytest.approx([60.01, 60.02, 60.03])


def test_unlimited_never_sleeps() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 0)
    stamps: list[float] = []
    vt.run(*acquirers(lim, vt, 10_000, 8, stamps))
    assert len(stamps) == 10_000
    assert vt.sleeps == [] and vt.now == 0.0
    assert lim.current_rate == math.inf


def test_on_throttle_pauses_every_waiter_until_retry_after() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 100)
    stamps: list[float] = []

    async def throttle_at(t: float) -> None:
        await vt.sleep(t)
        lim.on_throttle(2.0, sent_at=t - 0.01)

    # 20 waiters hold reserved slots when the 429 arrives at t=0.05.
    vt.run(throttle_at(0.05), *acquirers(lim, vt, 60, 20, stamps))
    assert len(stamps) == 60
    before = [t for t in stamps if t <= 0.05]
    after = [t for t in stamps if t > 0.05]
    assert after and min(after) >= 2.05
    assert len(before) + len(after) == 60
    # resumes evenly spaced at the halved rate: no burst right after the pause
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert min(gaps) == pytest.approx(1 / lim.current_rate, rel=0.01)


def test_throttle_without_retry_after_uses_default_pause() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 100, default_pause=1.5)
    lim.on_throttle(None)
    assert lim.paused_until == 1.5


def test_429s_of_requests_in_flight_halve_the_rate_only_once() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 400)
    vt.now = 10.0
    for _ in range(200):  # already sent at 400/s, a 429 each, so the measured rate is ~0
        lim.on_success()
    vt.now = 10.5
    for i in range(50):  # every request in flight comes back 429 within one round trip
        lim.on_throttle(1.0, sent_at=10.45 + i * 0.0005)
    assert lim.current_rate == pytest.approx(200, rel=0.01)
    # a request sent after the pause (and one round trip) that is throttled again: new event
    vt.now = 11.7
    lim.on_throttle(1.0, sent_at=11.6)
    assert lim.current_rate == pytest.approx(100, rel=0.05)


def test_decrease_halves_the_achieved_rate_not_the_configured_one() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 1000)
    for i in range(600):  # only 300 successes per second come back
        vt.now = i / 300
        lim.on_success()
    lim.on_throttle(1.0, sent_at=vt.now - 0.02)
    assert lim.current_rate == pytest.approx(250, rel=0.01)  # fell by 4x at most
    vt.now = lim.paused_until
    for _ in range(450):
        vt.now += 1 / 300
        lim.on_success()
    lim.on_throttle(1.0, sent_at=vt.now - 0.02)
    assert lim.current_rate == pytest.approx(150, rel=0.05)


def test_decrease_without_sent_at_happens_at_most_once_per_pause() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 100)
    lim.on_throttle(1.0)
    lim.on_throttle(1.0)
    assert lim.current_rate == 50
    vt.now = 1.4  # still within the pause plus half a window: the same event
    lim.on_throttle(1.0)
    assert lim.current_rate == 50
    vt.now = 3.0  # no success since: the rate falls, but by 4x at most
    lim.on_throttle(1.0)
    assert lim.current_rate == 12.5


def test_rate_never_drops_below_min_rate() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 10, min_rate=2.0)
    for _ in range(20):
        vt.now += 10
        lim.on_throttle(0.0)
    assert lim.current_rate == 2.0


def test_recovery_after_decrease_is_gradual_and_returns_to_the_configured_rate() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 200)
    lim.on_throttle(0.0)
    assert lim.current_rate == 100
    seen = [lim.current_rate]
    for _ in range(40):  # 40 simulated seconds of successes at the current rate
        for _ in range(int(lim.current_rate)):
            vt.now += 1 / lim.current_rate
            lim.on_success()
        seen.append(lim.current_rate)
    assert all(b >= a for a, b in itertools.pairwise(seen))
    assert seen[1] < 200  # not straight back: about 1.5 s to get near the old rate
    assert 170 < seen[2] < 200
    assert seen[-1] == 200  # and never past the configured rate


def test_unlimited_starts_limiting_at_half_the_observed_rate_after_a_429() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 0)
    for i in range(2000):  # 2 s of successes at 1000/s
        vt.now = i / 1000
        lim.on_success()
    lim.on_throttle(1.0, sent_at=vt.now - 0.02)
    assert lim.current_rate == pytest.approx(500, rel=0.05)
    assert lim.paused_until == pytest.approx(vt.now + 1.0)


def test_invalid_arguments_are_refused() -> None:
    for kwargs in ({"rate": -1}, {"rate": 10, "burst": 0}, {"rate": 10, "decrease": 1.0}):
        with pytest.raises(ValueError):
            RateLimiter(**kwargs)


def simulate(
    configured: float,
    *,
    server_rate: float = 300.0,
    server_burst: float = 30.0,
    retry_after: str | None = "1",
    workers: int = 64,
    rtt: float = 0.02,
    seconds: float = 60.0,
) -> tuple[list[float], int, int, RateLimiter]:
    """Workers send through the limiter to a server that allows `server_rate` req/s (a token
    bucket); a 429 carries `retry_after` and the worker retries after it, like Sender."""
    vt = VirtualTime()
    lim = limiter(vt, configured)
    tokens, last = server_burst, 0.0
    accepted: list[float] = []
    counts = {"sent": 0, "429": 0}

    def server_allows(now: float) -> bool:
        nonlocal tokens, last
        tokens = min(server_burst, tokens + (now - last) * server_rate)
        last = now
        if tokens >= 1:
            tokens -= 1
            return True
        return False

    async def worker() -> None:
        while vt.now < seconds:
            await lim.acquire()
            sent = vt.now
            counts["sent"] += 1
            ok = server_allows(sent)
            await vt.sleep(rtt)
            if ok:
                accepted.append(vt.now)
                lim.on_success()
            else:
                counts["429"] += 1
                wait = None if retry_after is None else float(retry_after)
                lim.on_throttle(wait, sent_at=sent)
                await vt.sleep(1.0 if wait is None else wait)

    vt.run(*(worker() for _ in range(workers)))
    return accepted, counts["sent"], counts["429"], lim


@pytest.mark.parametrize(
    ("configured", "retry_after", "server_burst"),
    [(1000, "1", 30.0), (1000, None, 1.0), (0, "1", 30.0)],
    ids=["1000/s-retry-after-1s", "1000/s-no-retry-after-strict-server", "unlimited"],
)
def test_converges_near_a_server_limit_of_300_per_second(
    configured: float, retry_after: str | None, server_burst: float
) -> None:
    accepted, sent, throttled, lim = simulate(
        configured, retry_after=retry_after, server_burst=server_burst
    )
    last = 20.0  # about one cycle of 429, pause, recovery and slow probe
    achieved = sum(t >= 60.0 - last for t in accepted) / last
    assert abs(achieved - 300) / 300 < 0.15, achieved
    assert throttled / sent < 0.02
    assert 150 <= lim.current_rate < 400


def test_many_coroutines_on_a_real_event_loop_get_the_configured_rate() -> None:
    """The same limiter on real asyncio sleeps (about 50 ms): late wake-ups do not cost rate."""
    stamps: list[float] = []

    async def main() -> None:
        lim = RateLimiter(3000, burst=1)
        left = itertools.count()

        async def worker() -> None:
            while next(left) < 150:
                await lim.acquire()
                stamps.append(time.monotonic())

        await asyncio.gather(*(worker() for _ in range(20)))

    asyncio.run(main())
    mean = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert 3000 * 0.75 < mean < 3000 * 1.03  # never above; the lower bound allows a busy CI


def test_acquire_below_the_rate_completes_without_suspending() -> None:
    """The hot path: when a token is there, acquire() returns without ever yielding."""
    calls: list[float] = []

    async def sleep(d: float) -> None:
        calls.append(d)

    ticks = itertools.count()
    lim = RateLimiter(1000, clock=lambda: next(ticks) * 0.01, sleep=sleep)  # demand: 100/s
    for _ in range(1000):
        with pytest.raises(StopIteration):
            lim.acquire().send(None)
    assert calls == []
