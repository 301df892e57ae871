"""Prepared batches -> concurrent sends -> settled batches, with backpressure.

Reading and validation run in a worker thread (polars releases the GIL) and hand batches over
a queue that holds at most ``ahead`` of them, so a slow API stops the reader instead of growing
memory. ``concurrency`` coroutines pull rows from the batches in order and await
:meth:`Sender.send`; a batch is *settled* when each of its rows has an outcome, and only then
are its API rejects written, so every row read ends accepted or rejected exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import polars as pl

from .prepare import Prepared, reject_rows
from .sources import ROW


class Outcomeish(Protocol):
    """What the dispatcher needs of a send's result (:class:`~.sender.Outcome` fits)."""

    @property
    def accepted(self) -> bool: ...
    @property
    def code(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...


SendFn = Callable[[bytes], Awaitable[Outcomeish]]


@dataclass(slots=True)
class Settling:
    """A batch in flight: its bodies, and the outcome of each row as it arrives."""

    prep: Prepared
    bodies: list[bytes]
    pending: int
    next_index: int = 0
    rejected_at: list[int] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        """Rows of the batch the API has accepted so far."""
        return len(self.bodies) - self.pending - len(self.rejected_at)

    def api_rejects(self) -> pl.DataFrame:
        """The rows the API refused, with their original columns (for the rejects file)."""
        order = sorted(range(len(self.rejected_at)), key=self.rejected_at.__getitem__)
        idx = pl.Series([self.rejected_at[k] for k in order], dtype=pl.UInt32)
        errors = pl.DataFrame({
            ROW: self.prep.send.get_column(ROW).gather(idx),
            "_error_code": [self.codes[k] for k in order],
            "_error_message": [self.messages[k] for k in order],
        }, schema={ROW: pl.Int64, "_error_code": pl.String, "_error_message": pl.String})
        return reject_rows(self.prep.raw[idx], errors, self.prep.source)


class Feed:
    """Rows of the batches in order, handed to whichever worker asks next (no locks: one loop)."""

    def __init__(self) -> None:
        self._batches: deque[Settling] = deque()
        self._more = asyncio.Event()
        self.closed = False

    def push(self, s: Settling) -> None:
        self._batches.append(s)
        self._more.set()

    def close(self) -> None:
        self.closed = True
        self._more.set()

    def take(self) -> tuple[Settling, int] | None:
        while self._batches:
            head = self._batches[0]
            if head.next_index < len(head.bodies):
                i = head.next_index
                head.next_index += 1
                return head, i
            self._batches.popleft()
        return None

    async def wait(self) -> None:
        self._more.clear()
        await self._more.wait()


async def dispatch(batches: Iterator[Prepared], send: SendFn, *, concurrency: int, ahead: int,
                   on_read: Callable[[Prepared], None],
                   on_settled: Callable[[Settling], None],
                   on_outcome: Callable[[Outcomeish], None] | None = None,
                   on_unsettled: Callable[[Settling], None] | None = None) -> None:
    """Send every valid row of ``batches``; call back as batches are read and settled.

    An exception from ``send`` (the API refused the key) or a cancellation stops everything
    at once; ``on_unsettled`` then sees each batch read but not settled, with the outcomes it
    has so far (its other rows are still to do: neither accepted nor rejected).
    """
    feed = Feed()
    unsettled: dict[int, Settling] = {}
    room = threading.Semaphore(ahead)  # batches read but not yet settled
    stop = threading.Event()
    loop_token = anyio.lowlevel.current_token()

    def produce() -> None:
        for prep in batches:
            bodies = prep.send.get_column("body").cast(pl.Binary).to_list()
            while not room.acquire(timeout=0.1):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            anyio.from_thread.run_sync(_arrive, prep, bodies, token=loop_token)

    def _arrive(prep: Prepared, bodies: list[bytes]) -> None:
        on_read(prep)
        settling = Settling(prep, bodies, len(bodies))
        unsettled[id(settling)] = settling
        if settling.pending == 0:
            del unsettled[id(settling)]
            room.release()
            on_settled(settling)
        else:
            feed.push(settling)

    async def worker() -> None:
        while True:
            item = feed.take()
            if item is None:
                if feed.closed:
                    return
                await feed.wait()
                continue
            batch, i = item
            outcome = await send(batch.bodies[i])
            if not outcome.accepted:
                batch.rejected_at.append(i)
                batch.codes.append(outcome.code or "UNKNOWN")
                batch.messages.append(outcome.message or "")
            if on_outcome is not None:
                on_outcome(outcome)
            batch.pending -= 1
            if batch.pending == 0:
                del unsettled[id(batch)]
                room.release()
                on_settled(batch)

    async def read_all() -> None:
        try:
            await anyio.to_thread.run_sync(produce, abandon_on_cancel=True)
        finally:
            feed.close()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_all)
            for _ in range(concurrency):
                tg.start_soon(worker)
    finally:
        stop.set()
        with contextlib.suppress(ValueError):
            room.release()
        if on_unsettled is not None:
            for batch in unsettled.values():
                on_unsettled(batch)
