"""Counters behind ``GET /sandbox/stats``: what a rehearsal's report should reconcile with.

Only the API surface is counted (``/v1/events`` and unknown paths); reading ``/sandbox/*``
never changes the request counters it reports. ``requests`` counts every ``POST /v1/events``;
each one ends in exactly one of: ``stored``, ``duplicates`` (both accepted, see
``accepted_200``), ``rejected_400`` (the body rules), ``unauthorized_401``,
``unsupported_media_type_415``, ``throttled_429`` (the ``--rate-limit`` bucket), or the
injected ``faults`` that refuse a request: ``500``, ``503``, ``dropped``, ``429`` (random
throttling), ``400`` (random reject). The faults ``stored_lost`` and ``slow`` store the event,
so their requests count in ``stored`` or ``duplicates`` as well; ``accepted_200`` includes
them although their 200 is lost or late. Requests whose HTTP framing is broken, on any path,
count only in ``malformed_http``. ``stored_total`` includes earlier runs on the same db.

``connections`` counts TCP connections accepted, on any route (a stats read on a fresh
connection counts its own): with keep-alive it stays near the client's concurrency.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .faults import Fault


@dataclass(slots=True)
class Stats:
    """Mutable counters, updated on the event loop's thread only."""

    requests: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected_400: int = 0
    rejected_400_by_reason: Counter[str] = field(default_factory=Counter)
    unauthorized_401: int = 0
    unsupported_media_type_415: int = 0
    throttled_429: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    not_found_404: int = 0
    method_not_allowed_405: int = 0
    malformed_http: int = 0
    connections: int = 0

    def snapshot(self, stored_total: int) -> dict[str, Any]:
        """The JSON document; ``stored_total`` includes events from earlier runs on the db."""
        return {
            "requests": self.requests,
            "accepted_200": self.stored + self.duplicates,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "stored_total": stored_total,
            "rejected_400": self.rejected_400,
            "rejected_400_by_reason": dict(sorted(self.rejected_400_by_reason.items())),
            "unauthorized_401": self.unauthorized_401,
            "unsupported_media_type_415": self.unsupported_media_type_415,
            "throttled_429": self.throttled_429,
            "faults": {
                kind.value: self.faults[kind.value] for kind in Fault if kind is not Fault.NONE
            },
            "not_found_404": self.not_found_404,
            "method_not_allowed_405": self.method_not_allowed_405,
            "malformed_http": self.malformed_http,
            "connections": self.connections,
        }
