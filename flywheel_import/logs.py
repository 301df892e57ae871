"""Logs and progress where there is no terminal: pods, Airflow tasks, cron jobs.

The library only logs (logger ``flywheel_import``, a ``NullHandler`` by default) and calls an
optional ``on_progress`` callback; the command line decides how the lines look (text or one
JSON object per line) and how often a progress line is written. No colour is ever used, so
``NO_COLOR`` holds by construction.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

LOGGER = "flywheel_import"
log = logging.getLogger(LOGGER)
progress_log = logging.getLogger(f"{LOGGER}.progress")

LogFormat = Literal["text", "json"]

#: Seconds between two progress lines when nobody watches a bar.
DEFAULT_PROGRESS_EVERY = 30.0
#: The fastest the library calls ``on_progress``: often enough for a bar, cheap for the loop.
MIN_CALLBACK_INTERVAL = 0.25


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run is: rows with a final outcome out of the total, and the tallies so far.

    ``accepted`` counts valid rows in a dry run; ``retries`` and ``throttled`` (429s) are 0
    there (nothing is sent).
    """

    rows_done: int
    rows_total: int
    accepted: int
    rejected: int
    retries: int
    throttled: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        """Rows settled per second since the start."""
        return self.rows_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far; None before anything is done."""
        rate = self.rate
        return max(self.rows_total - self.rows_done, 0) / rate if rate > 0 else None


ProgressCallback = Callable[[Progress], None]


class ProgressFeed:
    """Calls a caller's ``on_progress`` without letting it break the run.

    An exception in the callback is logged once (a warning) and ignored from then on: a
    dashboard that fails must not stop an import of hours.
    """

    def __init__(
        self,
        callback: ProgressCallback | None,
        *,
        min_interval: float = MIN_CALLBACK_INTERVAL,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._callback = callback
        self._min_interval = min_interval
        self._clock = clock
        self._last: float | None = None
        self._failed = False

    def push(self, progress: Progress, *, force: bool = False) -> None:
        """Hand ``progress`` on, unless the last call was under ``min_interval`` ago (``force``:
        the caller keeps the cadence itself, or this is the final figure)."""
        if self._callback is None:
            return
        now = self._clock()
        if not force and self._last is not None and now - self._last < self._min_interval:
            return
        self._last = now
        try:
            self._callback(progress)
        except Exception as e:
            if not self._failed:
                self._failed = True
                log.warning(
                    "the progress callback raised %s: %s; ignored for the rest of the run",
                    type(e).__name__,
                    e,
                )


class ProgressLog:
    """An ``on_progress`` callback that logs one progress line every ``every`` seconds.

    Timed by the run's own ``elapsed_s``, so a test drives it without a clock.
    """

    def __init__(self, every: float = DEFAULT_PROGRESS_EVERY) -> None:
        self.every = every
        self._next = every

    def __call__(self, p: Progress) -> None:
        if p.elapsed_s < self._next or not progress_log.isEnabledFor(logging.INFO):
            return
        self._next = p.elapsed_s + self.every
        progress_log.info("%s", progress_text(p), extra=progress_fields(p))


def progress_fields(p: Progress) -> dict[str, Any]:
    """The figures of a progress line as structured fields (the JSON lines carry them)."""
    eta = p.eta_s
    return {
        "rows_done": p.rows_done,
        "total": p.rows_total,
        "percent": round(100 * p.rows_done / p.rows_total, 1) if p.rows_total else 100.0,
        "events_per_s": round(p.rate, 1),
        "eta_s": None if eta is None else round(eta),
        "accepted": p.accepted,
        "rejected": p.rejected,
        "retries": p.retries,
        "throttled": p.throttled,
        "elapsed_s": round(p.elapsed_s, 1),
    }


def progress_text(p: Progress) -> str:
    f = progress_fields(p)
    eta = "?" if f["eta_s"] is None else _duration(f["eta_s"])
    return (
        f"progress: {p.rows_done:,} of {p.rows_total:,} rows ({f['percent']:.1f}%), "
        f"{f['events_per_s']:,.1f} events/s, ETA {eta}, rejected {p.rejected:,}, "
        f"retries {p.retries:,}, 429s {p.throttled:,}"
    )


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


# Attributes every LogRecord has; anything else was passed as ``extra=`` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors: ts, level, logger, message, then the
    record's extra fields (rows_done, total, events_per_s...)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """``flywheel-import: message``, as the command always wrote its notes."""

    def __init__(self) -> None:
        super().__init__("flywheel-import: %(message)s")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (a test's capture, a redirect)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure(
    fmt: LogFormat = "text", *, level: str | int = logging.INFO, quiet: bool = False
) -> None:
    """Send the package's logs to stderr in ``fmt``; ``quiet``: warnings and errors only.

    Replaces the handler an earlier call installed (the command may run more than once in a
    process, as in tests), and leaves the caller's own handlers alone.
    """
    logger = logging.getLogger(LOGGER)
    for h in list(logger.handlers):
        if isinstance(h, _StderrHandler):
            logger.removeHandler(h)
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    wanted = logging.getLevelName(level) if isinstance(level, str) else level
    logger.setLevel(max(wanted, logging.WARNING) if quiet else wanted)


def is_json() -> bool:
    """Whether the command writes its log lines as JSON (its other stderr lines follow)."""
    return any(
        isinstance(h, _StderrHandler) and isinstance(h.formatter, JsonFormatter)
        for h in logging.getLogger(LOGGER).handlers
    )


__all__ = [
    "JsonFormatter",
    "Progress",
    "ProgressCallback",
    "ProgressFeed",
    "ProgressLog",
    "TextFormatter",
    "configure",
    "is_json",
]
