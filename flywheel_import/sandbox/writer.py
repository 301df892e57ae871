"""Batching acknowledged events into SQLite without blocking the event loop.

A commit per request would cap the sandbox at a few thousand requests per second. Instead the
loop keeps the dedupe set and a list of pending rows in memory (so duplicate decisions are
exact and instant) and hands the list to one writer thread every tick, one transaction per
tick. Because the writer is a single thread, work submitted later runs later: a read queued
after a flush sees everything acknowledged before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from .store import EventStore, Row

T = TypeVar("T")

#: Flush early when this many rows are pending, to bound memory and transaction size.
MAX_PENDING = 5000


def utc_now() -> str:
    """Receive time as ISO 8601 UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class BatchWriter:
    """Owns the store once the server runs; every method is called on the loop's thread."""

    def __init__(self, store: EventStore, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._seen = store.event_ids()
        self.total = len(self._seen)
        self._pending: list[Row] = []
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sandbox-writer")
        self._ticker: asyncio.Task[None] | None = None
        self._early_flush: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the periodic flush; needs a running loop."""
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def add(self, event_id: str, generated: bool, body: bytes) -> bool:
        """Queue an event; False (and nothing queued) if its id was seen before."""
        if event_id in self._seen:
            return False
        self._seen.add(event_id)
        self._pending.append((event_id, int(generated), utc_now(), body.decode()))
        self.total += 1
        if len(self._pending) >= MAX_PENDING and self._early_flush is None:
            self._early_flush = asyncio.get_running_loop().create_task(self._flush_early())
        return True

    async def flush(self) -> None:
        """Commit everything queued so far."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await self._run(self._store.append, batch)
        except BaseException:
            self._pending[:0] = batch  # acknowledged events are retried, never dropped
            raise

    async def page(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Stored events after cursor ``after``, including every one acknowledged so far."""
        await self.flush()
        return await self._run(self._store.page, after, limit)

    async def close(self) -> None:
        """Stop ticking, commit what is pending, close the file."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.flush()
        await self._run(self._store.close)
        self._executor.shutdown(wait=True)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception as exc:  # keep serving; the error is reported, not swallowed
                print(f"sandbox: writing to the database failed: {exc!r}", file=sys.stderr)

    async def _flush_early(self) -> None:
        try:
            await self.flush()
        finally:
            self._early_flush = None

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)
