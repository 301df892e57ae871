"""Fail fast: an endpoint that has never answered 2xx and cannot work stops the run.

Before the first accepted request, a failure that no retry will mend ends the run with one
line instead of every row ending ``RETRIES_EXHAUSTED`` after minutes of backoff:

* an untrusted certificate, or a proxy refusing the tunnel: at once;
* a host that does not resolve, or a refused connection: after a short grace (an API or proxy
  that is just starting), at least `min_failures` failures over `grace` seconds, or as soon as
  a row would run out of attempts.

Once a request has succeeded the endpoint is known to work, and every failure is transient:
the caller retries as usual. Timeouts and dropped connections never stop the run here.

The caller reports each attempt: :meth:`Reachability.on_success` after a 2xx,
:meth:`Reachability.on_failure` after a transport failure, which returns the line to abort
with, or None to carry on.
"""

from __future__ import annotations

from .transport import Kind

AT_ONCE = frozenset({Kind.TLS, Kind.PROXY_DENIED})
AFTER_GRACE = frozenset({Kind.DNS, Kind.REFUSED})


class Reachability:
    """Decides, attempt by attempt, whether an endpoint that never worked is worth waiting for.

    One per run, shared by every worker (one event loop, so no lock). `now` values come from
    the caller's monotonic clock, so tests drive the grace with a fake one.
    """

    __slots__ = ("_failures", "_first", "grace", "min_failures", "reached")

    def __init__(self, *, grace: float = 10.0, min_failures: int = 3) -> None:
        self.grace = grace
        self.min_failures = min_failures
        self.reached = False  # a request has succeeded: the endpoint works
        self._failures = 0
        self._first: float | None = None

    def on_success(self) -> None:
        self.reached = True

    def on_failure(self, kind: Kind, text: str, now: float, *, last: bool = False) -> str | None:
        """The abort line for this failure, or None to retry as usual.

        `last` says the row has no attempt left: before the first success a DNS or refused
        failure then stops the run rather than ending the row ``RETRIES_EXHAUSTED``.
        """
        if self.reached:
            return None
        if kind in AT_ONCE:
            return text
        if kind not in AFTER_GRACE:
            return None
        self._failures += 1
        if self._first is None:
            self._first = now
        waited = now - self._first
        if last or (self._failures >= self.min_failures and waited >= self.grace):
            tries = "1 attempt" if self._failures == 1 else f"{self._failures} attempts"
            return f"{text} ({tries} over {waited:.1f}s)"
        return None
