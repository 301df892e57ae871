"""The background stages: results in input order, bounded read-ahead, errors re-raised."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from flywheel_import.prefetch import ordered_map, prefetch


def test_ordered_map_keeps_input_order_whatever_finishes_first() -> None:
    slow_first = threading.Event()

    def fn(i: int) -> int:
        if i == 0:
            slow_first.wait(timeout=5)  # the second item finishes first
        else:
            slow_first.set()
        return i * 10

    assert list(ordered_map(fn, iter(range(6)), workers=2)) == [0, 10, 20, 30, 40, 50]


def test_ordered_map_takes_at_most_one_item_more_than_its_workers_ahead() -> None:
    taken: list[int] = []

    def items() -> Iterator[int]:
        for i in range(20):
            taken.append(i)
            yield i

    out = ordered_map(lambda i: i, items(), workers=2)
    assert next(out) == 0
    assert len(taken) == 3  # two workers, plus one queued while the consumer works
    assert list(out) == list(range(1, 20))

    taken.clear()
    out = ordered_map(lambda i: i, items(), workers=2, spare=0)
    assert next(out) == 0
    assert len(taken) == 2


def test_errors_in_either_stage_reach_the_consumer() -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("unreadable")

    with pytest.raises(ValueError, match="unreadable"):
        list(prefetch(broken()))

    def fn(i: int) -> int:
        if i == 2:
            raise KeyError(i)
        return i

    with pytest.raises(KeyError):
        list(ordered_map(fn, iter(range(5))))
