"""The sandbox's settings, checked once so every other module can trust them.

The CLI and the embeddable :class:`~flywheel_import.sandbox.Sandbox` both build a
:class:`SandboxConfig`; a bad value fails here with a :class:`UsageError` naming the flag,
instead of surfacing later as a confusing server behaviour.
"""

from __future__ import annotations

import math
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from flywheel_import.errors import UsageError

#: The key the sandbox accepts when none is given. It is public on purpose: the sandbox guards
#: nothing, and a fixed key lets configs and docs name it.
DEFAULT_KEY = "sandbox-key"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080

#: How often buffered events are written to SQLite, in seconds (one transaction per tick).
DEFAULT_FLUSH_INTERVAL = 0.05

#: How long a ``slow`` fault holds its answer back: longer than any sane client timeout, so the
#: client gives up on an event that is in fact stored.
DEFAULT_SLOW_MS = 30_000.0

#: The seeded fault rates, by flag; together they may not exceed 1 (one fault per request).
FAULT_RATE_FLAGS = (
    ("error_rate", "--error-rate"),
    ("drop_rate", "--drop-rate"),
    ("stored_lost_rate", "--stored-lost-rate"),
    ("slow_rate", "--slow-rate"),
    ("throttle_rate", "--throttle-rate"),
    ("reject_rate", "--reject-rate"),
)


def default_burst(rate_limit: float) -> int:
    """Bucket capacity when ``--burst`` is omitted: a tenth of a second's worth, at least 1.

    Small enough that a client which ignores the limit meets 429s within its first burst.
    """
    return max(1, math.ceil(rate_limit / 10))


def temporary_db_path() -> Path:
    """A database file in a new temporary directory, for runs that were given no ``--db``.

    Only named here; the store creates the directory when the server starts, so a run that
    fails its checks first leaves nothing behind.
    """
    return Path(tempfile.gettempdir()) / f"flywheel-sandbox-{uuid.uuid4().hex[:12]}" / "sandbox.db"


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Everything one sandbox server needs; ``db_path`` is already resolved."""

    db_path: Path
    key: str = DEFAULT_KEY
    host: str = DEFAULT_HOST
    port: int = 0
    rate_limit: float | None = None
    burst: int | None = None
    error_rate: float = 0.0
    drop_rate: float = 0.0
    stored_lost_rate: float = 0.0
    slow_rate: float = 0.0
    slow_ms: float = DEFAULT_SLOW_MS
    throttle_rate: float = 0.0
    reject_rate: float = 0.0
    latency_ms: float = 0.0
    seed: int = 0
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        if not self.key or self.key != self.key.strip() or not self.key.isprintable():
            raise UsageError("--key must be non-empty printable text without surrounding spaces")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port must be between 0 and 65535, got {self.port}")
        if self.rate_limit is not None and not (
            math.isfinite(self.rate_limit) and self.rate_limit > 0
        ):
            raise UsageError(f"--rate-limit must be a positive number, got {self.rate_limit}")
        if self.burst is not None:
            if self.rate_limit is None:
                raise UsageError("--burst needs --rate-limit")
            if self.burst < 1:
                raise UsageError(f"--burst must be at least 1, got {self.burst}")
        rates = {flag: float(getattr(self, name)) for name, flag in FAULT_RATE_FLAGS}
        for flag, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise UsageError(f"{flag} must be between 0 and 1, got {rate}")
        if sum(rates.values()) > 1.0:
            used = [flag for flag, rate in rates.items() if rate]
            raise UsageError(
                f"{', '.join(used)} together must not exceed 1, got {sum(rates.values()):g}"
            )
        for flag, ms in (("--latency-ms", self.latency_ms), ("--slow-ms", self.slow_ms)):
            if not (math.isfinite(ms) and ms >= 0):
                raise UsageError(f"{flag} must be zero or more, got {ms}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("--tls-cert and --tls-key go together: give both or neither")
        if self.flush_interval <= 0:
            raise UsageError("the flush interval must be positive")

    @property
    def effective_burst(self) -> int | None:
        """The token bucket's capacity, or None when there is no rate limit."""
        if self.rate_limit is None:
            return None
        return self.burst if self.burst is not None else default_burst(self.rate_limit)

    @property
    def tls(self) -> bool:
        """Whether the sandbox serves HTTPS."""
        return self.tls_cert is not None

    def describe_faults(self) -> str:
        """One line for the start banner, so a rehearsal log records what was injected."""
        parts = []
        if self.rate_limit is not None:
            parts.append(f"rate limit {self.rate_limit:g}/s (burst {self.effective_burst})")
        if self.error_rate:
            parts.append(f"error rate {self.error_rate:g}")
        if self.drop_rate:
            parts.append(f"drop rate {self.drop_rate:g}")
        if self.stored_lost_rate:
            parts.append(f"stored-lost rate {self.stored_lost_rate:g}")
        if self.slow_rate:
            parts.append(f"slow rate {self.slow_rate:g} ({self.slow_ms:g} ms)")
        if self.throttle_rate:
            parts.append(f"throttle rate {self.throttle_rate:g}")
        if self.reject_rate:
            parts.append(f"reject rate {self.reject_rate:g}")
        if self.latency_ms:
            parts.append(f"latency {self.latency_ms:g} ms")
        return ", ".join(parts) if parts else "none"
