"""The dispatcher: bounded read-ahead (a slow API stops the reader), every row settled once,
rejects of the API kept with their rows, and rows waiting to retry or slow to answer that
neither hold a worker nor stop the reading."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import polars as pl
import pytest

from flywheel_import.dispatch import Settling, dispatch
from flywheel_import.prepare import Prepared


@dataclass
class Answer:
    accepted: bool
    code: str | None = None
    message: str | None = None


def batch(index: int, rows: int = 10) -> Prepared:
    numbers = list(range(index * rows + 1, index * rows + rows + 1))
    raw = pl.DataFrame({"__row": numbers, "name": [f"n{i}" for i in numbers]})
    send = pl.DataFrame(
        {
            "__row": numbers,
            "event_id": [f"e{i}" for i in numbers],
            "body": [f'{{"event":{{"event_id":"e{i}"}}}}' for i in numbers],
        }
    )
    return Prepared("f.csv", rows, send, raw, pl.DataFrame())


def test_a_slow_api_stops_the_reader_a_few_batches_ahead() -> None:
    pulled: list[int] = []

    def batches() -> Iterator[Prepared]:
        for i in range(50):
            pulled.append(i)
            yield batch(i)

    release = asyncio.Event()
    seen_ahead: list[int] = []

    async def send(body: bytes, attempt: int) -> Answer:
        await release.wait()
        return Answer(True)

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                await anyio.sleep(0.3)
                seen_ahead.append(len(pulled))
                release.set()

            tg.start_soon(watch)
            await dispatch(
                batches(),
                send,
                concurrency=4,
                ahead=3,
                on_read=lambda p: None,
                on_settled=lambda s: None,
            )

    asyncio.run(main())
    # While nothing was answered, at most `ahead` batches (+1 being handed over) were read.
    assert seen_ahead[0] <= 4
    assert len(pulled) == 50


def test_every_row_settles_once_and_api_rejects_keep_their_rows() -> None:
    settled: list[Settling] = []
    outcomes: list[Answer] = []
    late: list[pl.DataFrame] = []

    async def send(body: bytes, attempt: int) -> Answer:
        await asyncio.sleep(0)
        if b'"e7"' in body or b'"e23"' in body or b'"e30"' in body:
            return Answer(False, "VALIDATION_ERROR", "nope")
        return Answer(True)

    async def main() -> None:
        await dispatch(
            iter([batch(i) for i in range(3)]),
            send,
            concurrency=8,
            ahead=2,
            on_read=lambda p: None,
            on_settled=settled.append,
            on_outcome=outcomes.append,
            on_straggler=lambda s, o: o.accepted or late.append(s.rejected(o.code, o.message)),
        )

    asyncio.run(main())
    assert len(settled) == 3 and len(outcomes) == 30
    assert sum(o.accepted for o in outcomes) == 27
    # Rows still in flight when their batch ran out are finished as stragglers: either way
    # each reject is written once, with the row's own columns.
    assert sum(s.accepted + len(s.rejected_at) + s.deferred for s in settled) == 30
    rejects = pl.concat([s.api_rejects() for s in settled if s.rejected_at] + late)
    assert sorted(rejects.get_column("_row").to_list()) == [7, 23, 30]
    assert sorted(rejects.get_column("name").to_list()) == ["n23", "n30", "n7"]
    assert set(rejects.get_column("_error_code")) == {"VALIDATION_ERROR"}


def test_a_stop_hands_back_each_batch_cut_short_with_its_outcomes_so_far() -> None:
    cut_short: list[Settling] = []
    sent = 0

    class Refused(Exception):
        pass

    async def send(body: bytes, attempt: int) -> Answer:
        nonlocal sent
        sent += 1
        await asyncio.sleep(0)
        if sent == 15:
            raise Refused
        return Answer(sent % 5 != 0, "VALIDATION_ERROR", "no")

    async def main() -> None:
        await dispatch(
            iter([batch(i, rows=20) for i in range(3)]),
            send,
            concurrency=1,
            ahead=2,
            on_read=lambda p: None,
            on_settled=lambda s: None,
            on_unsettled=cut_short.append,
        )

    with pytest.raises(BaseException) as stopped:  # the task group wraps it
        asyncio.run(main())
    e = stopped.value
    assert any(isinstance(x, Refused) for x in getattr(e, "exceptions", [e]))
    assert cut_short, "the batch in flight is handed back"
    first = cut_short[0]
    assert first.accepted + len(first.rejected_at) == 14  # the 15th never got an outcome
    assert first.api_rejects().get_column("_row").to_list() == [5, 10]


@dataclass
class Later:
    delay: float


def test_rows_waiting_to_retry_hold_no_worker_and_do_not_stop_reading() -> None:
    """One worker; every 10th row asks to retry in an hour (virtual). Every other row is
    sent meanwhile and every batch settles: waits happen outside the worker."""
    order: list[str] = []
    settled: list[Settling] = []
    rejected: list[tuple[int, str]] = []
    outcomes: list[Answer] = []
    hour = asyncio.Event()

    async def sleep(delay: float) -> None:
        assert delay == 3600.0
        await hour.wait()

    async def send(body: bytes, attempt: int) -> Answer | Later:
        await asyncio.sleep(0)
        event_id = body.split(b'"')[5].decode()
        order.append(f"{event_id}#{attempt}")
        number = int(event_id[1:])
        if number % 10 == 0 and attempt == 1:
            return Later(3600.0)
        if number == 20:
            return Answer(False, "VALIDATION_ERROR", "bad on retry")
        return Answer(True)

    async def main() -> None:
        async def release_when_first_pass_done() -> None:
            while len(order) < 50:
                await asyncio.sleep(0)
            hour.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(release_when_first_pass_done)
            await dispatch(
                iter([batch(i) for i in range(5)]),
                send,
                concurrency=1,
                ahead=1,
                on_read=lambda p: None,
                on_settled=settled.append,
                on_outcome=outcomes.append,
                on_straggler=lambda s, o: o.accepted or rejected.append((s.row, o.code)),
                sleep=sleep,
            )

    asyncio.run(main())
    first_pass = order[:50]
    assert first_pass == [f"e{i}#1" for i in range(1, 51)]  # nobody waited for the retries
    assert sorted(order[50:]) == sorted(f"e{i}#2" for i in (10, 20, 30, 40, 50))
    assert len(settled) == 5 and all(s.deferred == 1 for s in settled)
    assert sum(s.accepted for s in settled) == 45
    assert rejected == [(20, "VALIDATION_ERROR")]
    assert len(outcomes) == 50 and sum(o.accepted for o in outcomes) == 49


def test_a_slow_answer_does_not_keep_its_batch_or_the_reader_waiting() -> None:
    """Row e3 answers only once everything else is done; ahead=1 would deadlock if its batch
    waited for it, yet all 5 batches are read, sent and settled first."""
    slow_release = asyncio.Event()
    settled_rows: list[int] = []

    async def send(body: bytes, attempt: int) -> Answer:
        if b'"e3"' in body:
            await slow_release.wait()
            return Answer(False, "VALIDATION_ERROR", "late and bad")
        await asyncio.sleep(0)
        return Answer(True)

    stragglers: list[tuple[int, pl.DataFrame]] = []

    def on_settled(s: Settling) -> None:
        settled_rows.append(s.accepted + len(s.rejected_at) + s.deferred)
        if len(settled_rows) == 5:
            slow_release.set()

    async def main() -> None:
        await dispatch(
            iter([batch(i) for i in range(5)]),
            send,
            concurrency=4,
            ahead=1,
            on_read=lambda p: None,
            on_settled=on_settled,
            on_straggler=lambda s, o: (
                o.accepted or stragglers.append((s.row, s.rejected(o.code, o.message)))
            ),
        )

    asyncio.run(main())
    assert settled_rows == [10] * 5
    [(row, frame)] = stragglers
    assert row == 3
    assert frame.select("name", "_row", "_error_code", "_error_message").row(0) == (
        "n3",
        3,
        "VALIDATION_ERROR",
        "late and bad",
    )


def test_retries_past_max_waiting_pause_new_rows_instead_of_growing_memory() -> None:
    waiting_peak = 0
    waiting = 0
    release = asyncio.Event()

    async def sleep(delay: float) -> None:
        nonlocal waiting, waiting_peak
        waiting += 1
        waiting_peak = max(waiting_peak, waiting)
        if waiting >= 5:
            release.set()
        await release.wait()
        waiting -= 1

    async def send(body: bytes, attempt: int) -> Answer | Later:
        await asyncio.sleep(0)
        return Later(1.0) if attempt == 1 else Answer(True)

    async def main() -> None:
        await dispatch(
            iter([batch(i) for i in range(3)]),
            send,
            concurrency=2,
            ahead=2,
            on_read=lambda p: None,
            on_settled=lambda s: None,
            sleep=sleep,
            max_waiting=5,
        )

    asyncio.run(main())
    assert waiting_peak <= 5 + 2  # the cap, plus the attempts in flight when it was reached
