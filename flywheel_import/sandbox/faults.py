"""Seeded fault injection and the token-bucket rate limit.

Faults are drawn from one seeded RNG, exactly two draws per ``POST /v1/events`` in arrival
order, whatever then happens to the request (throttled, unauthorized, invalid...). So the n-th
request of a sequential client meets the same fault on every run with the same seed, and
changing one request's outcome never shifts the faults of the ones after it. A drawn fault
that the request never reaches (a reject fault on an unauthorized request) is not counted.

The rate limit is a token bucket on a monotonic clock: it depends on timing, so it is not part
of the seeded sequence.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from enum import StrEnum


class Fault(StrEnum):
    """What the sandbox does to a request instead of (or besides) serving it.

    Values are the keys of ``faults`` in ``/sandbox/stats``. ``DROPPED`` to ``THROTTLED`` stand
    in for a gateway and hit any request; the last three hit only a request that passed every
    check (a valid, authenticated event), because they model what happens to a good event.
    """

    NONE = "none"
    DROPPED = "dropped"
    ERROR_500 = "500"
    ERROR_503 = "503"
    THROTTLED = "429"
    STORED_LOST = "stored_lost"
    SLOW = "slow"
    REJECTED = "400"


#: Gateway faults: they answer before authentication and body checks.
GATEWAY_FAULTS = frozenset({Fault.DROPPED, Fault.ERROR_500, Fault.ERROR_503, Fault.THROTTLED})


class FaultPlan:
    """Decides each request's fault from a seeded RNG.

    Every rate is a fraction of requests. The first draw falls into consecutive intervals, in
    this order: drop, error (split evenly between 500 and 503 by the second draw), stored-lost,
    slow, throttle, reject. Newer faults come last, so a plan with their rates at 0 draws the
    same sequence as before they existed.
    """

    def __init__(
        self,
        seed: int,
        error_rate: float = 0.0,
        drop_rate: float = 0.0,
        *,
        stored_lost_rate: float = 0.0,
        slow_rate: float = 0.0,
        throttle_rate: float = 0.0,
        reject_rate: float = 0.0,
    ) -> None:
        self._rng = random.Random(seed)
        self._drop_rate = drop_rate
        self._fault_rate = drop_rate + error_rate
        bounds: list[tuple[float, Fault]] = []
        upper = self._fault_rate
        for rate, fault in (
            (stored_lost_rate, Fault.STORED_LOST),
            (slow_rate, Fault.SLOW),
            (throttle_rate, Fault.THROTTLED),
            (reject_rate, Fault.REJECTED),
        ):
            if rate > 0:
                upper += rate
                bounds.append((upper, fault))
        self._later = tuple(bounds)

    def draw(self) -> Fault:
        """The next request's fault."""
        which = self._rng.random()
        kind = self._rng.random()  # drawn even when unused, to keep the sequence aligned
        if which < self._drop_rate:
            return Fault.DROPPED
        if which < self._fault_rate:
            return Fault.ERROR_500 if kind < 0.5 else Fault.ERROR_503
        for upper, fault in self._later:
            if which < upper:
                return fault
        return Fault.NONE


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()

    def take(self) -> float:
        """Take a token: 0.0 if one was available, else the seconds until one will be."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


def retry_after_seconds(wait: float) -> int:
    """``Retry-After`` takes whole seconds; round up and never say 0 (clients would spin)."""
    return max(1, math.ceil(wait))
