"""A token bucket shared by every sender coroutine, slowed down by 429s (AIMD).

The bucket is kept as a GCRA schedule (one "theoretical arrival time") instead of a token
count: each caller reserves the next free slot and sleeps until it, so tokens accrue
continuously, waiters are served in order, and a late wake-up never costs throughput. No lock
is needed: all state changes happen between awaits of a single event loop.

Burst: ``rate / 20`` tokens (50 ms worth, at least 1) unless configured, so any 1-second window
holds at most ``rate + burst`` requests. After the first 429 the default burst drops to 1: the
server has shown its limit, and a burst right after a pause would only earn more 429s.

Adaptation, in the spirit of TCP congestion control:

* **Decrease.** A 429 pauses every caller until ``now + Retry-After`` (``default_pause`` when
  absent) and halves the rate actually *achieved* (successes per second over the last
  ``window``), not the configured one: like TCP's ``FlightSize / 2``, this lands below the
  server's real limit at once instead of halving a meaningless 1000/s several times. One event
  lowers the rate by 4x at most, so a window with next to no successes cannot drop it to the
  floor; and the 429s of requests sent before the pause ended plus one round trip belong to
  the same event: they extend the pause but do not decrease again.
* **Increase.** Each success adds ``step / rate``, i.e. ``step`` req/s per second of sending.
  ``step`` depends on the *ceiling*, the rate in force when the last 429 hit (at most 1.25x the
  success rate then): a fast exponential climb (``recovery`` per second) to ``knee * ceiling``,
  then a slow linear probe (``probe * ceiling`` per second) through the ceiling, then an
  accelerating one (``accelerate`` per second) once past it, to find out whether the server now
  allows more. This keeps the rate near the server's limit most of the time (a plain AIMD
  sawtooth averages 75% of it) while each 429, which costs a whole Retry-After pause, stays
  rare. Never above the configured rate.
* **Unlimited** (``rate=0``): no schedule at all until the first 429, and ``acquire()`` is a
  single attribute test. The first 429 starts limiting at half the observed success rate, then
  adapts as above with no upper bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["DEFAULT_BURST_SECONDS", "RateLimiter"]

_INF = math.inf

#: The ceiling (rate to climb back to) is the rate a 429 was hit at, unless that is more than
#: this times the measured success rate (a configured rate far above what the server allows).
#: Not the success rate itself: while the rate ramps up, that lags behind and under-estimates.
_CEILING_SLACK = 1.25

#: Default burst, in seconds' worth of tokens: small enough that a 1-second window stays within
#: 5% of the rate, large enough to absorb idle gaps (the pipeline waiting on its next batch).
DEFAULT_BURST_SECONDS = 0.05


class RateLimiter:
    """Token bucket at `rate` req/s (0 = unlimited), capacity `burst`, with AIMD on 429.

    `clock` and `sleep` are injectable so tests run in virtual time; `sleep` must let `clock`
    advance by (at least) the delay it is given. Not thread-safe: one event loop.
    """

    __slots__ = (
        "_accelerate",
        "_burst",
        "_ceiling",
        "_clock",
        "_cur_burst",
        "_decrease",
        "_default_pause",
        "_epoch",
        "_goodput",
        "_interval",
        "_knee",
        "_mark_ok",
        "_mark_t",
        "_min_rate",
        "_ok",
        "_paused_until",
        "_probe",
        "_rate",
        "_recover_until",
        "_recovery",
        "_sleep",
        "_target",
        "_tat",
        "_throttled",
        "_tolerance",
        "_window",
    )

    def __init__(
        self,
        rate: float,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        min_rate: float = 1.0,
        decrease: float = 0.5,
        default_pause: float = 1.0,
        recovery: float = 4.0,
        knee: float = 0.9,
        probe: float = 0.005,
        accelerate: float = 0.2,
        window: float = 1.0,
    ) -> None:
        """Create a limiter.

        `decrease` multiplies the achieved rate on a 429; `default_pause` is the pause when the
        429 carries no Retry-After; `recovery`, `knee`, `probe` and `accelerate` shape the
        increase (see the module docstring); `window` is the span (s) over which the success
        rate is measured. `min_rate` is the floor no 429 pushes the rate below.
        """
        if rate < 0 or math.isnan(rate):
            raise ValueError("rate must be >= 0 (0 means unlimited)")
        if burst is not None and burst < 1:
            raise ValueError("burst must be >= 1")
        if min_rate <= 0:
            raise ValueError("min_rate must be > 0")
        if not 0 < decrease < 1:
            raise ValueError("decrease must be between 0 and 1")
        self._clock = clock
        self._sleep = sleep
        self._burst = burst
        self._min_rate = float(min_rate)
        self._decrease = decrease
        self._default_pause = default_pause
        self._recovery = recovery
        self._knee = knee
        self._probe = probe
        self._accelerate = accelerate
        self._window = window
        self._target = float(rate) if rate > 0 else _INF
        self._ceiling = self._target
        self._rate = _INF
        self._interval = 0.0
        self._tolerance = 0.0
        self._throttled = False
        self._set_rate(self._target)
        self._tat = -_INF
        self._paused_until = -_INF
        self._recover_until = -_INF
        self._epoch = 0
        self._ok = 0
        self._mark_t = -_INF
        self._mark_ok = 0
        self._goodput: float | None = None

    @property
    def current_rate(self) -> float:
        """The rate now in force, in requests per second (``math.inf`` while unlimited)."""
        return self._rate

    @property
    def burst(self) -> float:
        """Requests that may go at once after an idle spell (1 after the first 429)."""
        return self._cur_burst

    @property
    def paused_until(self) -> float:
        """Clock time until which every caller waits (``-inf`` when never paused)."""
        return self._paused_until

    async def acquire(self) -> None:
        """Wait for a token and for any global pause."""
        while True:
            if not self._interval:
                return  # unlimited and never throttled: the hot path is one attribute test
            now = self._clock()
            if now < self._paused_until:
                await self._sleep(self._paused_until - now)
                continue
            tat = self._tat
            if tat < now:
                tat = now
            self._tat = tat + self._interval
            start = tat - self._tolerance
            if start <= now:
                return
            epoch = self._epoch
            await self._sleep(start - now)
            if epoch == self._epoch:
                return
            # A 429 arrived while we waited: the slot was spaced for the old rate, queue again.

    def on_throttle(
        self, retry_after: float | None = None, *, sent_at: float | None = None
    ) -> None:
        """Record a 429: pause all callers, and lower the rate once per congestion event.

        `sent_at` is the clock time the throttled request was let through. A 429 for a request
        sent before the end of the last decrease's pause plus one round trip (measured as
        ``now - sent_at``; ``window / 2`` when `sent_at` is unknown) belongs to the same event:
        it extends the pause but does not decrease again, so the 429s of every request that
        was in flight do not collapse the rate to the floor.
        """
        now = self._clock()
        pause = self._default_pause if retry_after is None else max(0.0, retry_after)
        if now + pause > self._paused_until:
            self._paused_until = now + pause
        if sent_at is None:
            fresh = now >= self._recover_until
            rtt = self._window / 2
        else:
            fresh = sent_at >= self._recover_until
            rtt = max(0.0, now - sent_at)
        if fresh:
            measured = self._measured(now, rtt)
            self._throttled = True
            self._ceiling = max(self._min_rate, min(self._rate, measured * _CEILING_SLACK))
            # Halve the achieved rate, but fall by at most decrease**2 in one event: a window
            # with next to no successes (everything 429) must not drop the rate to the floor.
            floor = self._rate * self._decrease if self._rate < _INF else 0.0
            base = max(min(self._rate, measured), floor)
            self._set_rate(max(self._min_rate, base * self._decrease))
            self._recover_until = self._paused_until + rtt
            # Measure the success rate afresh once sending resumes.
            self._mark_t = self._paused_until
            self._mark_ok = self._ok
        # Void every reserved slot: waiters queue again behind the pause, at the new rate, with
        # an empty bucket (the server's is empty too, so no burst right after a 429).
        self._epoch += 1
        self._tat = self._paused_until + self._tolerance

    def on_success(self) -> None:
        """Record a success: measure the success rate and creep back toward the target."""
        self._ok += 1
        if not self._ok & 31 or self._ok == 1:
            self._roll()
        rate = self._rate
        if rate >= self._target:
            return
        ceiling = self._ceiling
        step = self._probe * ceiling
        if rate < ceiling:
            knee = self._knee * ceiling
            if rate < knee:
                step += self._recovery * (knee - rate)
        else:
            step += self._accelerate * (rate - ceiling)
        rate += step / rate
        self._set_rate(rate if rate < self._target else self._target)

    def _set_rate(self, rate: float) -> None:
        self._rate = rate
        if rate == _INF:
            self._interval = 0.0
            self._tolerance = 0.0
            self._cur_burst = _INF
            return
        if self._burst is not None:
            burst: float = self._burst
        elif self._throttled:
            burst = 1.0  # the server has shown its limit: send evenly spaced from now on
        else:
            # Not rounded: a burst that grows in steps would release a request early each step.
            burst = max(1.0, rate * DEFAULT_BURST_SECONDS)
        self._cur_burst = burst
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval

    def _roll(self) -> None:
        """Close the success-rate measurement window once it spans `window` seconds."""
        now = self._clock()
        span = now - self._mark_t
        if span == _INF:  # first success: start measuring now
            self._mark_t, self._mark_ok = now, 0
        elif span >= self._window:
            self._goodput = (self._ok - self._mark_ok) / span
            self._mark_t, self._mark_ok = now, self._ok

    def _measured(self, now: float, rtt: float) -> float:
        """Recent successes per second: the current window if long enough, else the last one."""
        span = now - self._mark_t
        if self._window / 2 <= span < _INF:
            return max(self._min_rate, (self._ok - self._mark_ok) / span)
        if self._goodput is not None:
            return max(self._min_rate, self._goodput)
        if self._rate < _INF:
            return self._rate
        # Unlimited and throttled within the first window: successes since the first one, over
        # that span plus the round trip it took to come back.
        if span == _INF:
            return self._min_rate
        return max(self._min_rate, self._ok / (span + max(rtt, 1e-3)))
