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
    latency_ms: float = 0.0
    seed: int = 0
    flush_interval: float = DEFAULT_FLUSH_INTERVAL

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
        for flag, rate in (("--error-rate", self.error_rate), ("--drop-rate", self.drop_rate)):
            if not 0.0 <= rate <= 1.0:
                raise UsageError(f"{flag} must be between 0 and 1, got {rate}")
        if self.error_rate + self.drop_rate > 1.0:
            raise UsageError("--error-rate plus --drop-rate must not exceed 1")
        if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise UsageError(f"--latency-ms must be zero or more, got {self.latency_ms}")
        if self.flush_interval <= 0:
            raise UsageError("the flush interval must be positive")

    @property
    def effective_burst(self) -> int | None:
        """The token bucket's capacity, or None when there is no rate limit."""
        if self.rate_limit is None:
            return None
        return self.burst if self.burst is not None else default_burst(self.rate_limit)

    def describe_faults(self) -> str:
        """One line for the start banner, so a rehearsal log records what was injected."""
        parts = []
        if self.rate_limit is not None:
            parts.append(f"rate limit {self.rate_limit:g}/s (burst {self.effective_burst})")
        if self.error_rate:
            parts.append(f"error rate {self.error_rate:g}")
        if self.drop_rate:
            parts.append(f"drop rate {self.drop_rate:g}")
        if self.latency_ms:
            parts.append(f"latency {self.latency_ms:g} ms")
        return ", ".join(parts) if parts else "none"
