"""Background threads for the CPU stages, each bounded a few items ahead of its consumer.

Reading (numpy record splitting, polars parsing) and preparing (polars expressions, hashing)
both release the GIL for most of their work, so on two cores they overlap. The queue bound
keeps memory to a few batches; an exception in the thread is re-raised in the consumer.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


def prefetch(items: Iterator[T], ahead: int = 2) -> Iterator[T]:
    q: queue.Queue[object] = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # handed to the consumer, which re-raises it
            put(_Failure(e))

    thread = threading.Thread(target=run, name="flywheel-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=5)


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def ordered_map(
    fn: Callable[[T], R], items: Iterator[T], workers: int = 2, *, spare: int = 1
) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, results in input order, at most
    ``workers + spare`` items taken ahead (``Executor.map`` would read the whole input first):
    a spare keeps the workers busy while the consumer handles a result."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flywheel-map") as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= workers + spare:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
