"""A token bucket shared by every sender coroutine, slowed down by 429s that *we* cause.

The bucket is kept as a GCRA schedule (one "theoretical arrival time") instead of a token
count: each caller reserves the next free slot and sleeps until it, so tokens accrue
continuously, waiters are served in order, and a late wake-up never costs throughput. No lock
is needed: all state changes happen between awaits of a single event loop.

Burst: ``rate / 20`` tokens (50 ms worth, at least 1) unless configured, so any 1-second window
holds at most ``rate + burst`` requests. After the first slowdown the default burst drops to 1.

Which 429s are ours. A 429 is either the API's answer to our own rate (it keeps coming as we
push, it fades as we slow) or noise we cannot change (a quota shared with other clients, a
flaky gateway). Slowing down for noise only loses throughput, so a single 429 changes nothing
here: the throttled request alone is retried after its Retry-After (by the caller), and the
rate is judged per *window* of answers (at least ``window`` seconds and 20 answers):

* **Congestion.** The window's 429 share exceeds the known background share by a margin
  (3 standard errors, at least 2 points). The rate is then cut to ``mild`` times the rate
  actually *achieved* (successes per second) and the cut is put on **probation** (the rate
  holds still meanwhile): if the 429 share of the next full window does not fade (stays above
  60% of what it was), the 429s did not follow our rate, the old rate is restored and that
  share (30% at most) becomes the background to ignore from then on. The background decays
  when windows show fewer 429s.
* **Heavy throttling.** When more than half of the last ~32 answers (with at least 10 429s in
  the window), or of a whole window, are 429s, the server is refusing nearly everything: every
  caller pauses for the Retry-After (``default_pause`` when absent), at once, and the rate is
  halved (``decrease``). Such a cut is never undone by probation.
* **Increase.** Each success adds ``step / rate``, i.e. ``step`` req/s per second of sending.
  ``step`` depends on the *ceiling*, the rate in force when the last cut happened (at most
  1.25x the success rate then): a fast exponential climb (``recovery`` per second) to
  ``knee * ceiling``, then a slow linear probe (``probe * ceiling`` per second) through the
  ceiling, then an accelerating one (``accelerate`` per second) once past it. Never above the
  configured rate.
* **Unlimited** (``rate=0``): no schedule at all until the first cut, and ``acquire()`` is a
  single attribute test.
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

#: Weight of each answer in the moving share of 429s that detects heavy throttling (~32 answers).
_RECENT = 1 / 32

#: The largest share of 429s that may be judged background noise and ignored.
_MAX_BACKGROUND = 0.3


class RateLimiter:
    """Token bucket at `rate` req/s (0 = unlimited), capacity `burst`, slowed by our own 429s.

    `clock` and `sleep` are injectable so tests run in virtual time; `sleep` must let `clock`
    advance by (at least) the delay it is given. Not thread-safe: one event loop.
    """

    __slots__ = (
        "_accelerate",
        "_background",
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
        "_mild",
        "_min_rate",
        "_ok",
        "_paused_until",
        "_probation",
        "_probe",
        "_rate",
        "_recent",
        "_recover_until",
        "_recovery",
        "_retry_after",
        "_rtt",
        "_sleep",
        "_target",
        "_tat",
        "_throttled",
        "_tolerance",
        "_win_n",
        "_win_start",
        "_win_thr",
        "_window",
        "cuts",
        "restores",
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
        mild: float = 0.85,
        default_pause: float = 1.0,
        recovery: float = 4.0,
        knee: float = 0.95,
        probe: float = 0.005,
        accelerate: float = 0.2,
        window: float = 1.0,
    ) -> None:
        """Create a limiter.

        `decrease` multiplies the achieved rate on heavy throttling, `mild` on congestion;
        `default_pause` is the pause of heavy throttling when the 429 carries no Retry-After;
        `recovery`, `knee`, `probe` and `accelerate` shape the increase (see the module
        docstring); `window` is the shortest span (s) over which 429 shares and the success
        rate are measured. `min_rate` is the floor no 429 pushes the rate below.
        """
        if rate < 0 or math.isnan(rate):
            raise ValueError("rate must be >= 0 (0 means unlimited)")
        if burst is not None and burst < 1:
            raise ValueError("burst must be >= 1")
        if min_rate <= 0:
            raise ValueError("min_rate must be > 0")
        if not 0 < decrease < 1 or not 0 < mild < 1:
            raise ValueError("decrease and mild must be between 0 and 1")
        self._clock = clock
        self._sleep = sleep
        self._burst = burst
        self._min_rate = float(min_rate)
        self._decrease = decrease
        self._mild = mild
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
        self._rtt = window / 2
        self._retry_after: float | None = None  # of the latest 429
        self._win_start = -_INF
        self._win_n = 0
        self._win_thr = 0
        self._background = 0.0
        self._recent = 0.0  # share of 429s among the last ~32 answers (moving average)
        # (429 share that caused the cut, rate before it): set while a cut is on probation.
        self._probation: tuple[float, float] | None = None
        self.cuts = 0  # rate cuts made (for reports and tests)
        self.restores = 0  # cuts undone because the 429s did not fade

    @property
    def current_rate(self) -> float:
        """The rate now in force, in requests per second (``math.inf`` while unlimited)."""
        return self._rate

    @property
    def burst(self) -> float:
        """Requests that may go at once after an idle spell (1 after the first cut)."""
        return self._cur_burst

    @property
    def paused_until(self) -> float:
        """Clock time until which every caller waits (``-inf`` when never paused)."""
        return self._paused_until

    @property
    def background(self) -> float:
        """The share of 429s judged not to follow our rate (ignored when deciding cuts)."""
        return self._background

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
            # The rate changed while we waited: the slot was spaced for the old rate, queue again.

    def on_throttle(
        self, retry_after: float | None = None, *, sent_at: float | None = None
    ) -> None:
        """Record a 429. Nothing else happens unless the window shows the 429s are ours.

        `sent_at` is the clock time the throttled request was let through; ``now - sent_at``
        is the round trip, used to tell apart the answers to requests sent before a cut.
        """
        now = self._clock()
        self._retry_after = retry_after
        if sent_at is not None:
            self._rtt = max(0.0, now - sent_at)
        if now < self._win_start:
            return  # an answer to a request sent before the last cut took effect
        self._win_thr += 1
        self._win_n += 1
        self._recent += (1.0 - self._recent) * _RECENT
        if self._win_start == -_INF:
            self._win_start = now
        if self._win_thr >= 10 and self._recent > 0.5:
            self._heavy(now, retry_after)
        else:
            self._maybe_close(now)

    def on_success(self) -> None:
        """Record a success: measure the success rate and creep back toward the target."""
        self._ok += 1
        self._win_n += 1
        self._recent -= self._recent * _RECENT
        if not self._ok & 31 or self._ok == 1:
            self._roll()
        rate = self._rate
        if rate >= self._target or self._probation is not None:
            return  # on probation the rate holds still, or the test would measure the climb
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

    # --- decisions --------------------------------------------------------------------------

    def _maybe_close(self, now: float) -> None:
        """Judge the window once it is long and large enough."""
        span = now - self._win_start
        n = self._win_n
        if span == _INF:
            self._win_start = now
            return
        if span < self._window or (n < 20 and span < 4 * self._window):
            return
        share = self._win_thr / n if n else 0.0
        self._win_start, self._win_n, self._win_thr = now, 0, 0
        if share > 0.5:
            self._heavy(now, self._retry_after)
            return
        probation = self._probation
        if probation is not None:
            self._probation = None
            before, rate_before = probation
            # The 429s did not fade as we slowed: not ours. (A server refusing a large share
            # of requests is never noise to ignore.)
            if _MAX_BACKGROUND > share >= 0.6 * before:
                self._background = max(self._background, share)
                self.restores += 1
                self._restore(rate_before)
            return
        bg = self._background
        if share < bg:
            self._background = 0.8 * bg + 0.2 * share
        margin = max(0.02, 3.0 * math.sqrt(max(bg, 0.01) * (1.0 - bg) / max(n, 1)))
        if share > bg + margin:
            rate_before = self._rate
            self._cut(now, self._mild)
            self._probation = (share, rate_before)

    def _heavy(self, now: float, retry_after: float | None) -> None:
        """Most answers are 429s: everyone waits out the Retry-After, the rate is halved."""
        pause = self._default_pause if retry_after is None else max(0.0, retry_after)
        self._paused_until = max(self._paused_until, now + pause)
        self._probation = None
        self._cut(now, self._decrease)
        self._win_start = self._paused_until + self._rtt
        self._win_n, self._win_thr, self._recent = 0, 0, 0.0
        self._epoch += 1
        self._tat = self._paused_until + self._tolerance

    def _cut(self, now: float, factor: float) -> None:
        """Lower the rate to ``factor`` times what was achieved (at most 4x in one cut)."""
        # What the server let through lately: a window full of 429s says little about its
        # capacity, so the previous window counts too.
        measured = max(self._measured(now, self._rtt), self._goodput or 0.0)
        self._throttled = True
        self._ceiling = max(self._min_rate, min(self._rate, measured * _CEILING_SLACK))
        # A window with next to no successes must not drop the rate to the floor: 4x at most.
        floor = self._rate * self._decrease**2 if self._rate < _INF else 0.0
        self._set_rate(max(self._min_rate, floor, min(self._rate, measured) * factor))
        self.cuts += 1
        # Answers to requests sent before the cut do not count toward the next window.
        start = max(now, self._paused_until) + self._rtt
        self._win_start = start
        self._recover_until = start
        self._mark_t = max(now, self._paused_until)
        self._mark_ok = self._ok
        # Void every reserved slot: waiters queue again at the new rate, with an empty bucket.
        self._epoch += 1
        self._tat = max(now, self._paused_until)

    def _restore(self, rate: float) -> None:
        self._ceiling = max(self._ceiling, min(rate, self._target))
        self._set_rate(min(rate, self._target))
        self._epoch += 1

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
        if self._win_thr or self._probation is not None:
            self._maybe_close(now)
        elif now - self._win_start >= self._window:
            # A window without 429s: nothing to judge, start the next one (and let the
            # background share decay).
            self._background *= 0.8
            self._win_start, self._win_n = now, 0

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
