"""The dispatcher: bounded read-ahead (a slow API stops the reader), every row settled once,
and rejects of the API kept with their rows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import polars as pl

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
    send = pl.DataFrame({"__row": numbers, "event_id": [f"e{i}" for i in numbers],
                         "body": [f'{{"event":{{"event_id":"e{i}"}}}}' for i in numbers]})
    return Prepared("f.csv", rows, send, raw, pl.DataFrame())


def test_a_slow_api_stops_the_reader_a_few_batches_ahead() -> None:
    pulled: list[int] = []

    def batches() -> Iterator[Prepared]:
        for i in range(50):
            pulled.append(i)
            yield batch(i)

    release = asyncio.Event()
    seen_ahead: list[int] = []

    async def send(body: bytes) -> Answer:
        await release.wait()
        return Answer(True)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            async def watch() -> None:
                await anyio.sleep(0.3)
                seen_ahead.append(len(pulled))
                release.set()
            tg.start_soon(watch)
            await dispatch(batches(), send, concurrency=4, ahead=3,
                           on_read=lambda p: None, on_settled=lambda s: None)

    asyncio.run(main())
    # While nothing was answered, at most `ahead` batches (+1 being handed over) were read.
    assert seen_ahead[0] <= 4
    assert len(pulled) == 50


def test_every_row_settles_once_and_api_rejects_keep_their_rows() -> None:
    settled: list[Settling] = []

    async def send(body: bytes) -> Answer:
        await asyncio.sleep(0)
        if b'"e7"' in body or b'"e23"' in body:
            return Answer(False, "VALIDATION_ERROR", "nope")
        return Answer(True)

    async def main() -> None:
        await dispatch(iter([batch(i) for i in range(3)]), send, concurrency=8, ahead=2,
                       on_read=lambda p: None, on_settled=settled.append)

    asyncio.run(main())
    assert sum(s.accepted for s in settled) == 28
    rejects = pl.concat([s.api_rejects() for s in settled if s.rejected_at])
    assert rejects.get_column("_row").to_list() == [7, 23]
    assert rejects.get_column("name").to_list() == ["n7", "n23"]
    assert set(rejects.get_column("_error_code")) == {"VALIDATION_ERROR"}


def test_a_stop_hands_back_each_batch_cut_short_with_its_outcomes_so_far() -> None:
    cut_short: list[Settling] = []
    sent = 0

    class Refused(Exception):
        pass

    async def send(body: bytes) -> Answer:
        nonlocal sent
        sent += 1
        await asyncio.sleep(0)
        if sent == 15:
            raise Refused
        return Answer(sent % 5 != 0, "VALIDATION_ERROR", "no")

    async def main() -> None:
        await dispatch(iter([batch(i, rows=20) for i in range(3)]), send, concurrency=1,
                       ahead=2, on_read=lambda p: None, on_settled=lambda s: None,
                       on_unsettled=cut_short.append)

    try:
        asyncio.run(main())
    except BaseException as e:  # the task group wraps it
        assert any(isinstance(x, Refused) for x in getattr(e, "exceptions", [e]))
    assert cut_short, "the batch in flight is handed back"
    first = cut_short[0]
    assert first.accepted + len(first.rejected_at) == 14  # the 15th never got an outcome
    assert first.api_rejects().get_column("_row").to_list() == [5, 10]
