"""Prepared batches -> concurrent attempts -> settled batches, with backpressure.

Reading and validation run in a worker thread (polars releases the GIL) and hand batches over
while at most ``ahead`` of them are unsettled, so a slow API stops the reader instead of
growing memory. ``concurrency`` workers make attempts (:meth:`Sender.attempt`): that many
requests are in flight, never more, and a worker never sleeps through a backoff.

A row whose attempt says "retry later" leaves its batch as a :class:`Straggler` that owns its
body and its raw values, and waits for its next attempt outside any worker. A batch whose
rows have all been handed out hands its rows still in flight to stragglers too. So a batch is
*settled* (its API rejects written, its read-ahead slot free) as soon as each of its own rows
has an outcome: one row in a long backoff or a slow answer never stops the pipeline. The
rows waiting to retry are bounded (``max_waiting``; past it workers only retry); every row read
ends accepted or rejected exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import numpy as np
import polars as pl

from .prepare import Prepared, reject_rows
from .sources import ROW


class Outcomeish(Protocol):
    """What the dispatcher needs of a final result (:class:`~.sender.Outcome` fits)."""

    @property
    def accepted(self) -> bool: ...
    @property
    def code(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...


class Retryish(Protocol):
    """Not final: try again after ``delay`` seconds (:class:`~.sender.Retry` fits)."""

    @property
    def delay(self) -> float: ...


#: ``attempt(body, attempt_number)`` -> a final outcome, or when to retry.
AttemptFn = Callable[[bytes, int], Awaitable["Outcomeish | Retryish"]]


@dataclass(slots=True)
class Straggler:
    """A row that left its batch before its outcome was known: it carries what it needs."""

    source: str
    row: int  # the record number (``__row``)
    body: bytes
    values: tuple[Any, ...]  # the raw row, for the rejects file should it fail
    schema: pl.Schema
    attempts: int

    def rejected(self, code: str, message: str) -> pl.DataFrame:
        """The row in the rejects-file layout (built off the event loop)."""
        raw = pl.DataFrame([self.values], schema=self.schema, orient="row")
        errors = pl.DataFrame(
            {ROW: [self.row], "_error_code": [code], "_error_message": [message]},
            schema={ROW: pl.Int64, "_error_code": pl.String, "_error_message": pl.String},
        )
        return reject_rows(raw, errors, self.source)


@dataclass(slots=True)
class Settling:
    """A batch in flight: its bodies, and the outcome of each of its own rows."""

    prep: Prepared
    bodies: list[bytes]
    pending: int  # rows still the batch's without an outcome
    next_index: int = 0
    inflight: set[int] = field(default_factory=set)  # first attempts on the wire
    detached: dict[int, Straggler] = field(default_factory=dict)  # in flight, handed over
    deferred_at: list[int] = field(default_factory=list)  # rows handed to stragglers
    rejected_at: list[int] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def deferred(self) -> int:
        return len(self.deferred_at)

    @property
    def accepted(self) -> int:
        """Rows of the batch the API has accepted (stragglers count on their own)."""
        return len(self.bodies) - self.pending - self.deferred - len(self.rejected_at)

    def final_rows(self) -> pl.Series:
        """Record numbers of the rows whose outcome is final and counted with this batch
        (accepted or rejected; not stragglers, not rows never sent or still in flight)."""
        final = np.zeros(len(self.bodies), dtype=np.bool_)
        final[: self.next_index] = True
        for group in (self.inflight, self.deferred_at):
            if group:
                final[np.fromiter(group, dtype=np.intp)] = False
        return self.prep.send.get_column(ROW).filter(pl.Series(final))

    def straggler(self, i: int, attempts: int) -> Straggler:
        """Row ``i`` as a straggler (a few microseconds: one row's values are copied)."""
        prep = self.prep
        return Straggler(
            prep.source,
            int(prep.send.get_column(ROW)[i]),
            self.bodies[i],
            prep.raw.row(i),
            prep.raw.schema,
            attempts,
        )

    def api_rejects(self) -> pl.DataFrame:
        """The rows the API refused, with their original columns (for the rejects file)."""
        order = sorted(range(len(self.rejected_at)), key=self.rejected_at.__getitem__)
        idx = pl.Series([self.rejected_at[k] for k in order], dtype=pl.UInt32)
        errors = pl.DataFrame(
            {
                ROW: self.prep.send.get_column(ROW).gather(idx),
                "_error_code": [self.codes[k] for k in order],
                "_error_message": [self.messages[k] for k in order],
            },
            schema={ROW: pl.Int64, "_error_code": pl.String, "_error_message": pl.String},
        )
        return reject_rows(self.prep.raw[idx], errors, self.prep.source)


def _is_final(step: Outcomeish | Retryish) -> TypeGuard[Outcomeish]:
    return hasattr(step, "accepted")


def _delay(step: Outcomeish | Retryish) -> float:
    return float(step.delay)  # type: ignore[union-attr]


class Feed:
    """Rows of the batches in order, handed to whichever worker asks next (no locks: one loop)."""

    def __init__(self) -> None:
        self._batches: deque[Settling] = deque()
        self.closed = False

    def push(self, s: Settling) -> None:
        self._batches.append(s)

    def take(self) -> tuple[Settling, int] | None:
        while self._batches:
            head = self._batches[0]
            if head.next_index < len(head.bodies):
                i = head.next_index
                head.next_index += 1
                return head, i
            self._batches.popleft()
        return None


async def dispatch(
    batches: Iterator[Prepared],
    attempt: AttemptFn,
    *,
    concurrency: int,
    ahead: int,
    on_read: Callable[[Prepared], None],
    on_settled: Callable[[Settling], None],
    on_outcome: Callable[[Outcomeish], None] | None = None,
    on_straggler: Callable[[Straggler, Outcomeish], None] | None = None,
    on_unsettled: Callable[[Settling], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    max_waiting: int | None = None,
    stop: anyio.Event | None = None,
) -> None:
    """Send every valid row of ``batches``; call back as batches are read and settled.

    ``on_read`` runs in the reading thread (before the batch is handed over, so it may block
    to slow the reader); the other callbacks run on the event loop and must be quick.
    ``on_outcome`` sees each final outcome, of batch rows and stragglers alike;
    ``on_straggler`` a straggler's final outcome (besides ``on_outcome``). An
    exception from ``attempt`` (the API refused the key) or a cancellation stops everything
    at once; ``on_unsettled`` then sees each batch read but not settled, with the outcomes it
    has so far (its other rows, and the stragglers, are still to do: neither accepted nor
    rejected).

    ``stop`` asks for a clean stop: reading stops, no new attempt starts, the attempts in
    flight finish (bounded by the timeout), then it returns; ``on_unsettled`` sees the batches
    cut short, as after an exception.
    """
    feed = Feed()
    unsettled: dict[int, Settling] = {}
    room = threading.Semaphore(ahead)  # batches read but not yet settled
    stop_reading = threading.Event()
    loop_token = anyio.lowlevel.current_token()
    wake = asyncio.Event()  # something to do: a batch, a due retry, the end
    ready: deque[Straggler] = deque()  # stragglers due for their next attempt
    cap = max_waiting if max_waiting is not None else max(1024, 32 * concurrency)
    counts = {"outstanding": 0, "waiting": 0}  # rows without final outcome; asleep to retry
    tg: anyio.abc.TaskGroup
    stopping = [False]
    live = [concurrency]  # workers still running

    def produce() -> None:
        for prep in batches:
            bodies = prep.send.get_column("body").cast(pl.Binary).to_list()
            on_read(prep)
            while not room.acquire(timeout=0.1):
                if stop_reading.is_set():
                    return
            if stop_reading.is_set():
                return
            anyio.from_thread.run_sync(_arrive, prep, bodies, token=loop_token)

    def _arrive(prep: Prepared, bodies: list[bytes]) -> None:
        settling = Settling(prep, bodies, len(bodies))
        counts["outstanding"] += len(bodies)
        unsettled[id(settling)] = settling
        if not bodies:
            settle(settling)
        else:
            feed.push(settling)
            wake.set()

    def settle(batch: Settling) -> None:
        del unsettled[id(batch)]
        room.release()
        on_settled(batch)

    def hand_over_inflight(batch: Settling) -> None:
        """Every remaining row of the batch is on the wire: let stragglers finish them."""
        for i in batch.inflight:
            batch.detached[i] = batch.straggler(i, 0)
        batch.deferred_at.extend(batch.inflight)
        batch.pending -= len(batch.inflight)
        batch.inflight = set()
        settle(batch)

    def final(outcome: Outcomeish) -> None:
        counts["outstanding"] -= 1
        if on_outcome is not None:
            on_outcome(outcome)
        if not counts["outstanding"] and feed.closed:
            wake.set()  # the last outcome: let idle workers finish

    def wait_then_retry(s: Straggler, delay: float) -> None:
        counts["waiting"] += 1

        async def later() -> None:
            await sleep(delay)
            counts["waiting"] -= 1
            ready.append(s)
            wake.set()

        tg.start_soon(later)

    async def retry(s: Straggler) -> None:
        step = await attempt(s.body, s.attempts + 1)
        s.attempts += 1
        land(s, step)

    def land(s: Straggler, step: Outcomeish | Retryish) -> None:
        if not _is_final(step):
            wait_then_retry(s, _delay(step))
            return
        if on_straggler is not None:
            on_straggler(s, step)
        final(step)

    async def worker() -> None:
        try:
            await work()
        finally:
            live[0] -= 1
            if not live[0]:  # the last worker: every row has its outcome, or a stop
                tg.cancel_scope.cancel()

    async def watch_stop(event: anyio.Event) -> None:
        await event.wait()
        stopping[0] = True
        stop_reading.set()
        wake.set()

    async def work() -> None:
        while True:
            if stopping[0]:
                return
            if ready:
                await retry(ready.popleft())
                continue
            item = feed.take() if counts["waiting"] < cap else None
            if item is None:
                if feed.closed and not counts["outstanding"]:
                    return
                wake.clear()
                await wake.wait()
                continue
            batch, i = item
            batch.inflight.add(i)
            if batch.next_index == len(batch.bodies) and batch.pending == len(batch.inflight):
                hand_over_inflight(batch)
            step = await attempt(batch.bodies[i], 1)
            if batch.detached:
                s = batch.detached.pop(i, None)
                if s is not None:
                    s.attempts = 1
                    land(s, step)
                    continue
            batch.inflight.discard(i)
            batch.pending -= 1
            if not _is_final(step):
                batch.deferred_at.append(i)
                wait_then_retry(batch.straggler(i, 1), _delay(step))
            else:
                if not step.accepted:
                    batch.rejected_at.append(i)
                    batch.codes.append(step.code or "UNKNOWN")
                    batch.messages.append(step.message or "")
                final(step)
            if batch.pending == 0:
                settle(batch)
            elif (
                batch.next_index == len(batch.bodies)
                and batch.inflight
                and batch.pending == len(batch.inflight)
            ):
                hand_over_inflight(batch)

    async def read_all() -> None:
        try:
            await anyio.to_thread.run_sync(produce, abandon_on_cancel=True)
        finally:
            feed.closed = True
            wake.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_all)
            if stop is not None:
                tg.start_soon(watch_stop, stop)
            for _ in range(concurrency):
                tg.start_soon(worker)
            # Workers end once every row has its outcome (or on a stop); the last one to end
            # cancels what is left: the stop watcher, and after a stop the retry timers and
            # the reader.
    finally:
        stop_reading.set()
        with contextlib.suppress(ValueError):
            room.release()
        if on_unsettled is not None:
            for batch in unsettled.values():
                on_unsettled(batch)
