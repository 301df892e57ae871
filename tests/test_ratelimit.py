"""RateLimiter in virtual time: accuracy, pauses, AIMD, and convergence on a server's limit."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
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


def throttles(
    lim: RateLimiter, vt: VirtualTime, n: int, *, retry_after: float | None = 1.0, rtt: float = 0.01
) -> None:
    for _ in range(n):
        lim.on_throttle(retry_after, sent_at=vt.now - rtt)


def successes(lim: RateLimiter, vt: VirtualTime, n: int, rate: float) -> None:
    for _ in range(n):
        vt.now += 1 / rate
        lim.on_success()


def test_a_lone_429_neither_pauses_nor_slows_anyone() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 100)
    successes(lim, vt, 50, 100)
    throttles(lim, vt, 1, retry_after=30.0)
    assert lim.paused_until == -math.inf
    assert lim.current_rate == 100 and lim.cuts == 0


def test_heavy_throttling_pauses_every_waiter_until_retry_after() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 100)
    stamps: list[float] = []

    async def throttle_at(t: float) -> None:
        await vt.sleep(t)
        throttles(lim, vt, 30, retry_after=2.0)  # 30 429s and no success: the server refuses

    # 20 waiters hold reserved slots when the 429s arrive at t=0.05.
    vt.run(throttle_at(0.05), *acquirers(lim, vt, 60, 20, stamps))
    assert len(stamps) == 60
    before = [t for t in stamps if t <= 0.05]
    after = [t for t in stamps if t > 0.05]
    assert after and min(after) >= 2.05
    assert len(before) + len(after) == 60
    # resumes evenly spaced at the lower rate: no burst right after the pause
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert min(gaps) == pytest.approx(1 / lim.current_rate, rel=0.01)
    assert lim.current_rate < 100


def test_heavy_throttling_without_retry_after_uses_default_pause() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 100, default_pause=1.5)
    throttles(lim, vt, 30, retry_after=None)
    assert lim.paused_until == 1.5


def test_a_window_with_too_many_429s_cuts_to_a_share_of_the_achieved_rate() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 1000, mild=0.85)
    for _ in range(12):  # 300 successes per second come back, and 10% 429s
        successes(lim, vt, 27, 300)
        throttles(lim, vt, 3)
    assert lim.cuts == 1
    assert lim.current_rate == pytest.approx(0.85 * 300, rel=0.05)
    assert lim.paused_until == -math.inf  # a cut, not a pause


def test_a_cut_stays_when_the_429s_fade_as_we_slow() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 1000)
    for _ in range(12):
        successes(lim, vt, 27, 300)
        throttles(lim, vt, 3)
    cut_to = lim.current_rate
    vt.now += 0.1
    successes(lim, vt, 400, 300)  # a whole window without 429s after the cut
    assert lim.restores == 0 and lim.background == 0.0
    assert lim.current_rate >= cut_to  # recovering from the cut, not restored at once
    assert lim.current_rate < 1000


def test_429s_that_do_not_fade_when_we_slow_are_background_and_the_rate_is_restored() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 2000)
    for _ in range(300):  # 2000/s with 5% of answers 429 whatever the rate (a shared quota)
        successes(lim, vt, 19, 2000)
        throttles(lim, vt, 1)
    assert lim.cuts == 1 and lim.restores == 1
    assert lim.current_rate == 2000
    assert 0.03 < lim.background < 0.07
    for _ in range(600):  # 6 more seconds of the same noise: no further cut
        successes(lim, vt, 19, 2000)
        throttles(lim, vt, 1)
    assert lim.cuts == 1 and lim.current_rate == 2000


def test_answers_to_requests_sent_before_a_cut_do_not_count_toward_the_next_window() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 400)
    successes(lim, vt, 400, 400)
    throttles(lim, vt, 9)  # 9 of 409: over 2%, under half
    successes(lim, vt, 20, 400)
    assert lim.cuts == 1
    rate = lim.current_rate
    # The 429s of every request still in flight come back within the round trip: ignored.
    lim.on_throttle(1.0, sent_at=vt.now - 0.001)
    throttles(lim, vt, 30, rtt=0.001)
    assert lim.cuts == 1 and lim.current_rate == rate


def test_rate_never_drops_below_min_rate() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 10, min_rate=2.0)
    for _ in range(20):
        vt.now += 10
        throttles(lim, vt, 30, retry_after=0.0)
    assert lim.current_rate == 2.0


def test_recovery_after_a_cut_is_gradual_and_returns_to_the_configured_rate() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 200)
    successes(lim, vt, 400, 200)
    throttles(lim, vt, 30, retry_after=0.0)
    assert lim.current_rate == 100
    vt.now += 0.1
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


def test_unlimited_starts_limiting_at_half_the_observed_rate_when_throttled_heavily() -> None:
    vt = VirtualTime()
    lim = limiter(vt, 0)
    for i in range(2000):  # 2 s of successes at 1000/s
        vt.now = i / 1000
        lim.on_success()
    vt.now += 0.02
    lim.on_throttle(1.0, sent_at=vt.now - 0.02)
    assert lim.current_rate == math.inf  # one 429 is no reason to start limiting
    throttles(lim, vt, 30, rtt=0.02)
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
    noise: float = 0.0,
) -> tuple[list[float], list[tuple[float, bool]], RateLimiter]:
    """Workers send through the limiter to a server that allows `server_rate` req/s (a token
    bucket) and also answers a random `noise` share of requests 429 (a quota shared with
    others). As in the dispatcher, a throttled request does not hold its worker: the worker
    goes on with the next one (demand is endless, so retries are just more requests)."""
    vt = VirtualTime()
    lim = limiter(vt, configured)
    tokens, last = server_burst, 0.0
    accepted: list[float] = []
    answers: list[tuple[float, bool]] = []  # (time, throttled)
    rng = random.Random(5)

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
            ok = rng.random() >= noise and server_allows(sent)
            await vt.sleep(rtt)
            answers.append((vt.now, not ok))
            if ok:
                accepted.append(vt.now)
                lim.on_success()
            else:
                lim.on_throttle(None if retry_after is None else float(retry_after), sent_at=sent)

    vt.run(*(worker() for _ in range(workers)))
    return accepted, answers, lim


def share_429(answers: list[tuple[float, bool]], since: float) -> float:
    late = [throttled for t, throttled in answers if t >= since]
    return sum(late) / len(late)


@pytest.mark.parametrize(
    ("configured", "retry_after", "server_burst"),
    [(1000, "1", 30.0), (1000, None, 1.0), (0, "1", 30.0)],
    ids=["1000/s-retry-after-1s", "1000/s-no-retry-after-strict-server", "unlimited"],
)
def test_converges_near_a_server_limit_of_300_per_second(
    configured: float, retry_after: str | None, server_burst: float
) -> None:
    accepted, answers, lim = simulate(
        configured, retry_after=retry_after, server_burst=server_burst
    )
    last = 20.0  # about one cycle of cut, recovery and slow probe
    achieved = sum(t >= 60.0 - last for t in accepted) / last
    assert abs(achieved - 300) / 300 < 0.1, achieved
    assert share_429(answers, 60.0 - last) < 0.04  # the limit used, not abused
    assert 150 <= lim.current_rate < 400


@pytest.mark.parametrize("noise", [0.05, 0.2])
def test_random_429s_that_do_not_follow_our_rate_do_not_slow_the_run(noise: float) -> None:
    accepted, _answers, lim = simulate(2000, server_rate=1e9, noise=noise, seconds=30.0)
    achieved = sum(t >= 20.0 for t in accepted) / 10.0
    assert achieved > 0.95 * 2000 * (1 - noise), achieved
    assert lim.current_rate == 2000 and lim.restores >= 1


def test_a_real_limit_behind_random_429s_is_still_found() -> None:
    accepted, answers, _lim = simulate(1000, noise=0.05)
    achieved = sum(t >= 40.0 for t in accepted) / 20.0
    assert abs(achieved - 300) / 300 < 0.1, achieved
    assert share_429(answers, 40.0) < 0.05 + 0.05


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
