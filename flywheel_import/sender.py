"""Request bodies -> HTTP POSTs -> one final :class:`Outcome` per body.

One event per request (the API has no batch endpoint), so per-request overhead is the
importer's speed limit: one aiohttp session and connection pool for the whole run, headers and
URL built once, the body of a 2xx never read. Every response and transport error goes through
:func:`.outcomes.classify`, the one place that decides ok / retry / reject / abort.

The API key is a secret: it is sent in the ``Authorization`` header and appears nowhere else,
not in a repr, an exception, a message or the stats (API text is scrubbed of it, too).
"""

from __future__ import annotations

import math
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import TracebackType
from typing import Any, Self

import aiohttp
import anyio
import yarl

from .errors import ApiAbort, ErrorCode, UsageError
from .outcomes import OK, Decision, Secrets, Verdict, abort_message, classify, parse_retry_after
from .ratelimit import RateLimiter
from .reachability import Reachability
from .transport import Failure, describe, proxy_for, proxy_variable, tls_context
from .urls import redact_userinfo

__all__ = [
    "Decision",
    "Outcome",
    "Retry",
    "SendSettings",
    "SendStats",
    "Sender",
    "Verdict",
    "classify",
    "parse_retry_after",
]


def _version() -> str:
    """The package's version, looked up lazily: the package's ``__init__`` may import us."""
    try:
        from . import __version__
    except ImportError:
        try:
            return metadata.version("flywheel-import")
        except metadata.PackageNotFoundError:
            return "0+unknown"
    return str(__version__)


@dataclass(frozen=True, slots=True)
class SendSettings:
    """How to reach the API and how hard to push it. The key never shows in the repr.

    `rate_limit` is requests per second (0: no limit, 429s still pause and slow the run);
    `timeout` is per attempt; `max_attempts` counts the first one; a Retry-After longer than
    `retry_after_max` seconds is cut to it so a server's "come back tomorrow" cannot stall the
    run (the row ends ``RETRIES_EXHAUSTED`` instead, after its attempts). `tls` is the trust
    to verify the API with (the system store when None); `grace` is how long an API that has
    never answered may stay unresolvable or refuse connections before the run stops.
    """

    url: str
    key: str = field(repr=False)
    concurrency: int = 32
    timeout: float = 10.0
    max_attempts: int = 8
    rate_limit: float = 0
    burst: int | None = None
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 300.0
    user_agent: str = field(default_factory=lambda: f"flywheel-import/{_version()}")
    tls: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    grace: float = 10.0

    def __post_init__(self) -> None:
        parsed = yarl.URL(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise UsageError(
                f"API URL must be http(s)://host[:port][/path], got {redact_userinfo(self.url)!r}"
            )
        if parsed.user is not None or parsed.password is not None:
            raise UsageError(
                "API URL must not carry a user or password (the key is sent in "
                f"its own header): got {redact_userinfo(self.url)!r}"
            )
        if not self.key or any(not c.isprintable() for c in self.key):
            raise UsageError("API key is empty or contains a line break or control character")
        if self.concurrency < 1 or self.max_attempts < 1:
            raise UsageError("concurrency and max_attempts must be >= 1")
        if (
            not self.timeout > 0
            or self.rate_limit < 0
            or (self.burst is not None and self.burst < 1)
        ):
            raise UsageError("timeout must be > 0, rate_limit >= 0 and burst >= 1")
        if not self.grace >= 0:
            raise UsageError("grace must be >= 0")

    @property
    def endpoint(self) -> str:
        """``{url}/v1/events``, a trailing slash of `url` dropped."""
        return self.url.rstrip("/") + "/v1/events"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The final result of one body: accepted, or why not (`code` is a rejects-file code)."""

    accepted: bool
    code: str | None
    message: str | None
    attempts: int
    status: int | None


_ACCEPTED_FIRST_TRY = Outcome(True, None, None, 1, 200)


@dataclass(frozen=True, slots=True)
class Retry:
    """Not final yet: make the next attempt after `delay` seconds (backoff or Retry-After)."""

    delay: float


class SendStats:
    """Counters and a latency histogram, in bounded memory whatever the number of requests.

    Latencies go to log-spaced buckets (16 per doubling, so a percentile is within ~2.2%),
    from 1 µs to about 2 minutes.
    """

    __slots__ = (
        "_hist",
        "_lat_n",
        "accepted",
        "errors",
        "exhausted",
        "rejected",
        "requests",
        "retries",
        "throttled",
    )

    _PER_OCTAVE = 16
    _BUCKETS = 27 * _PER_OCTAVE  # 2**27 µs ≈ 134 s

    def __init__(self) -> None:
        self.requests = 0  # attempts sent
        self.accepted = 0
        self.rejected = 0  # rows refused by the API (4xx)
        self.exhausted = 0  # rows that ran out of attempts
        self.retries = 0
        self.throttled = 0  # 429 responses
        self.errors: dict[str, int] = {}  # failed attempts by code: HTTP_503, TIMEOUT, ...
        self._hist = [0] * (self._BUCKETS + 1)
        self._lat_n = 0

    def record_latency(self, seconds: float) -> None:
        us = seconds * 1e6
        i = int(math.log2(us) * self._PER_OCTAVE) if us > 1.0 else 0
        self._hist[i if i < self._BUCKETS else self._BUCKETS] += 1
        self._lat_n += 1

    def count_error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def percentile_ms(self, q: float) -> float | None:
        """The `q`-th percentile (0-100) of attempt latency in ms; None before any attempt."""
        if not self._lat_n:
            return None
        rank = max(1, math.ceil(self._lat_n * q / 100))
        seen = 0
        for i, n in enumerate(self._hist):
            seen += n
            if seen >= rank:
                return float(2 ** ((i + 0.5) / self._PER_OCTAVE) / 1000)
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def p50_ms(self) -> float | None:
        return self.percentile_ms(50)

    @property
    def p99_ms(self) -> float | None:
        return self.percentile_ms(99)

    def snapshot(self) -> dict[str, Any]:
        """Plain, JSON-ready copy of the counters."""
        p50, p99 = self.p50_ms, self.p99_ms
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "exhausted": self.exhausted,
            "retries": self.retries,
            "throttled": self.throttled,
            "errors": dict(sorted(self.errors.items())),
            "latency_p50_ms": None if p50 is None else round(p50, 3),
            "latency_p99_ms": None if p99 is None else round(p99, 3),
        }

    def __repr__(self) -> str:
        return f"SendStats({self.snapshot()!r})"


class Sender:
    """POSTs bodies to ``{url}/v1/events`` and retries them to a final :class:`Outcome`.

    Use as ``async with Sender(settings) as sender``; `concurrency` coroutines then share it,
    each awaiting :meth:`send`. `sleep`, `rng` and `clock` are injectable so tests never wait;
    they also drive the default :class:`RateLimiter` (an injected `limiter` must use the same
    `clock`: send times are passed to it). Once the run is stopped (key refused, wrong
    endpoint, or an endpoint that cannot work: see :mod:`.reachability`) every send raises
    :class:`ApiAbort` before its next attempt; a send asleep in a backoff raises when it wakes
    (the pipeline's task group cancels it sooner). :meth:`attempt` makes one attempt and says
    when to retry; :meth:`send` retries in place.
    """

    def __init__(
        self,
        settings: SendSettings,
        *,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.stats = SendStats()
        self.limiter = limiter or RateLimiter(
            settings.rate_limit, settings.burst, clock=clock, sleep=sleep
        )
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clock = clock
        self._url = yarl.URL(settings.endpoint)
        self._headers = {
            "Authorization": settings.key,
            "Auth-Type": "api",
            "Content-Type": "application/json",
            "User-Agent": settings.user_agent,
        }
        self._secrets = Secrets.of(settings.key)
        self._reach = Reachability(grace=settings.grace)
        self._route: dict[str, Any] = {}  # per-request proxy options, when there is a proxy
        self._proxy: yarl.URL | None = None
        self._session: aiohttp.ClientSession | None = None
        self._abort: str | None = None

    def __repr__(self) -> str:
        return f"Sender({self.settings!r})"

    @property
    def sleep(self) -> Callable[[float], Awaitable[None]]:
        """The sleep this sender waits with (injected in tests): retry waits use it too."""
        return self._sleep

    @property
    def aborted(self) -> bool:
        """True once the run is stopped: every later :meth:`send` raises ApiAbort."""
        return self._abort is not None

    async def __aenter__(self) -> Self:
        s = self.settings
        self._proxy = proxy_for(self._url)
        if self._proxy is not None:
            # aiohttp copies a session's default headers into the CONNECT it sends the proxy,
            # in clear: the key must go with each request instead.
            self._route = {"proxy": self._proxy, "headers": self._headers}
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=s.concurrency, ttl_dns_cache=300, ssl=s.tls or tls_context()
            ),
            # The pool holds one connection per worker, so `total` is the request's own time.
            timeout=aiohttp.ClientTimeout(total=s.timeout),
            headers=None if self._proxy else self._headers,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, body: bytes) -> Outcome:
        """Send one body until accepted, rejected or out of attempts; ApiAbort on a stop.

        Waits out each retry in place (the pipeline uses :meth:`attempt` instead, so a row
        waiting to retry holds no worker). The same `body` bytes go out on every attempt, so
        the event_id inside lets the server drop a duplicate when an attempt timed out after
        all.
        """
        attempt = 0
        while True:
            attempt += 1
            step = await self.attempt(body, attempt)
            if isinstance(step, Outcome):
                return step
            await self._sleep(step.delay)

    async def attempt(self, body: bytes, attempt: int) -> Outcome | Retry:
        """Make attempt number `attempt` (1-based) for `body`: a final :class:`Outcome`, or
        a :class:`Retry` saying how long to wait before the next attempt.

        Raises :class:`ApiAbort` once the run is stopped (now or earlier in the run).
        """
        session = self._session
        if session is None:
            raise RuntimeError("Sender.attempt() outside 'async with Sender(...)'")
        stats, clock, limiter = self.stats, self._clock, self.limiter
        if self._abort is not None:
            raise ApiAbort(self._abort)
        await limiter.acquire()
        if self._abort is not None:
            raise ApiAbort(self._abort)
        stats.requests += 1
        status: int | None = None
        data: bytes | None = None
        headers: Mapping[str, str] | None = None
        error: str | None = None
        failure: Failure | None = None
        sent = clock()
        try:
            resp = await session.post(self._url, data=body, allow_redirects=False, **self._route)
            try:
                status = resp.status
                if not 200 <= status < 300:  # a 2xx body says nothing we need
                    data = await resp.read()
                    headers = resp.headers
            finally:
                resp.release()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            failure = describe(
                exc,
                timeout=self.settings.timeout,
                proxy=self._proxy,
                variable=proxy_variable(self._url),
            )
            status, error = None, failure.text
        stats.record_latency(clock() - sent)
        verdict = classify(status, data, headers, error, secrets=self._secrets)

        if verdict is OK:
            self._reach.on_success()
            limiter.on_success()
            stats.accepted += 1
            if attempt == 1 and status == 200:
                return _ACCEPTED_FIRST_TRY
            return Outcome(True, None, None, attempt, status)
        code = verdict.code or "UNKNOWN"
        stats.count_error(code)
        message = self._scrub(verdict.message)
        if verdict.decision is Decision.REJECT:
            stats.rejected += 1
            return Outcome(False, code, message, attempt, status)
        if verdict.decision is Decision.ABORT and status is not None:
            self._abort = abort_message(status, message, str(self._url))
            raise ApiAbort(self._abort)
        if failure is not None:
            stop = self._reach.on_failure(
                failure.kind,
                message or failure.text,
                clock(),
                last=attempt >= self.settings.max_attempts,
            )
            if stop is not None:
                self._abort = stop
                raise ApiAbort(stop)
        retry_after = verdict.retry_after
        if retry_after is not None and retry_after > self.settings.retry_after_max:
            retry_after = self.settings.retry_after_max
        if status == 429:
            stats.throttled += 1
            limiter.on_throttle(retry_after, sent_at=sent)
        if attempt >= self.settings.max_attempts:
            stats.exhausted += 1
            last = message if status is None else f"HTTP {status}: {message}"
            return Outcome(False, ErrorCode.RETRIES_EXHAUSTED.value, last, attempt, status)
        stats.retries += 1
        return Retry(self.backoff(attempt, retry_after))

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based).

        Full jitter: uniform in ``[0, min(backoff_max, backoff_base * 2**(attempt-1))]``, so
        retries of many rows spread out instead of coming back together. A Retry-After is a
        floor (up to `retry_after_max`): the server said when, we never come back sooner.
        """
        s = self.settings
        cap = min(s.backoff_max, s.backoff_base * 2.0 ** min(attempt - 1, 60))
        delay = self._rng.uniform(0.0, cap)
        if retry_after is not None:
            delay = max(delay, min(retry_after, s.retry_after_max))
        return delay

    def _scrub(self, text: str | None) -> str | None:
        """Drop the key from API or error text (a server may echo the request headers)."""
        if text is None:
            return None
        key = self.settings.key
        return text.replace(key, "***") if key in text else text
