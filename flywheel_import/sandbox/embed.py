"""The sandbox as a context manager, for tests and ``run --sandbox``.

The server runs on its own event loop in a daemon thread, so it works whatever the caller does
with its own thread, including running an asyncio loop there (the helpers block only for the
moment it takes to read a counter or a page). Startup binds port 0 on loopback, so many
sandboxes can run side by side and each starts in milliseconds.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from .config import (
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_HOST,
    DEFAULT_KEY,
    DEFAULT_SLOW_MS,
    SandboxConfig,
    temporary_db_path,
)
from .server import SandboxServer, loop_factory
from .store import iter_events

T = TypeVar("T")

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 30.0


class Sandbox:
    """A local Flywheel events API on ``127.0.0.1`` and a free port.

    ``db=None`` uses a fresh temporary directory, removed on exit; pass a path to keep the
    database (and to restart on it: stored events and their dedupe survive). The other
    arguments mirror the CLI flags; ``burst`` defaults to ``max(1, ceil(rate_limit / 10))``.
    With ``tls_cert`` and ``tls_key`` (PEM files) it serves ``https://``.
    """

    def __init__(
        self,
        *,
        key: str = DEFAULT_KEY,
        db: str | Path | None = None,
        rate_limit: float | None = None,
        burst: int | None = None,
        error_rate: float = 0.0,
        drop_rate: float = 0.0,
        stored_lost_rate: float = 0.0,
        slow_rate: float = 0.0,
        slow_ms: float = DEFAULT_SLOW_MS,
        throttle_rate: float = 0.0,
        reject_rate: float = 0.0,
        latency_ms: float = 0.0,
        seed: int = 0,
        host: str = DEFAULT_HOST,
        port: int = 0,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
    ) -> None:
        self._temporary = db is None
        self.config = SandboxConfig(
            db_path=temporary_db_path() if db is None else Path(db),
            key=key,
            host=host,
            port=port,
            rate_limit=rate_limit,
            burst=burst,
            error_rate=error_rate,
            drop_rate=drop_rate,
            stored_lost_rate=stored_lost_rate,
            slow_rate=slow_rate,
            slow_ms=slow_ms,
            throttle_rate=throttle_rate,
            reject_rate=reject_rate,
            latency_ms=latency_ms,
            seed=seed,
            flush_interval=flush_interval,
            tls_cert=None if tls_cert is None else Path(tls_cert),
            tls_key=None if tls_key is None else Path(tls_key),
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: SandboxServer | None = None
        self._final_stats: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        """The API key to send as ``Authorization``."""
        return self.config.key

    @property
    def db_path(self) -> Path:
        """The SQLite file of stored events."""
        return self.config.db_path

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (POST to ``url + "/v1/events"``).

        ``https://`` when the sandbox serves TLS.
        """
        return self._running().url

    def start(self) -> Self:
        """Start serving; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("this sandbox was already started")
        started = threading.Event()
        failure: list[BaseException] = []
        self._loop = loop_factory()()
        self._thread = threading.Thread(
            target=self._serve, args=(started, failure), name="flywheel-sandbox", daemon=True
        )
        self._thread.start()
        if not started.wait(_START_TIMEOUT):
            raise RuntimeError("the sandbox did not start in time")
        if failure:
            self._thread.join()
            self._cleanup()
            raise failure[0]
        return self

    def stop(self) -> None:
        """Finish answers in progress, flush every acknowledged event to disk, stop."""
        server, loop, thread = self._server, self._loop, self._thread
        if server is None or loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(_STOP_TIMEOUT)
            self._final_stats = server.stats()
        finally:
            self._server = None
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_STOP_TIMEOUT)
            self._cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """The ``/sandbox/stats`` document (the final one once stopped)."""
        if self._server is None and self._final_stats is not None:
            return self._final_stats
        server = self._running()
        return self._call(self._stats_async(server))

    def events(self, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Stored events with ``seq > after`` in arrival order, as ``/sandbox/events`` has them.

        ``limit=None`` returns them all. Works after stop while the database still exists.
        """
        if self._server is None:
            if not self.db_path.exists():
                raise RuntimeError("the sandbox is stopped and its temporary database is gone")
            events = [e for e in iter_events(self.db_path) if e["seq"] > after]
            return events if limit is None else events[:limit]
        return self._call(self._events_async(self._server, after, limit))

    # internals

    def _running(self) -> SandboxServer:
        if self._server is None:
            raise RuntimeError("the sandbox is not running (use it as a context manager)")
        return self._server

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_STOP_TIMEOUT)

    @staticmethod
    async def _stats_async(server: SandboxServer) -> dict[str, Any]:
        return server.stats()

    @staticmethod
    async def _events_async(
        server: SandboxServer, after: int, limit: int | None
    ) -> list[dict[str, Any]]:
        page_size = 10_000
        events: list[dict[str, Any]] = []
        while limit is None or len(events) < limit:
            want = page_size if limit is None else min(page_size, limit - len(events))
            page = await server.events_page(after, want)
            events.extend(page["events"])
            if page["next_after"] is None:
                break
            after = page["next_after"]
        return events

    def _serve(self, started: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            try:
                self._server = loop.run_until_complete(SandboxServer.start(self.config))
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                started.set()
            loop.run_forever()
        finally:
            loop.close()

    def _cleanup(self) -> None:
        if self._temporary:
            shutil.rmtree(self.config.db_path.parent, ignore_errors=True)
