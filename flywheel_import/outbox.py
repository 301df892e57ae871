"""The run's file work (rejects, tallies) on one thread, in order, off the event loop.

Writing rejects and counting them per code are polars work that takes milliseconds per batch:
on the event loop that would stall every request in flight. The dispatcher and the reader
hand it here instead; one thread does it in arrival order, so the rejects file and the report
have a single writer. The reader's hand-over waits while the backlog is long, which keeps
memory bounded whatever the speed of the disk.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

_STOP = object()


class Outbox:
    """Calls the functions it is given, in order, on its own thread."""

    def __init__(self, backlog: int = 4) -> None:
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._backlog = backlog
        self._pending = 0
        self._cond = threading.Condition()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flywheel-outbox", daemon=True)
        self._thread.start()

    def put(self, work: Callable[[], None], *, wait: bool = False) -> None:
        """Queue ``work``; never blocks unless ``wait`` (then only while the backlog is long).

        Work queued after a failure is dropped: the failure stops the run.
        """
        with self._cond:
            if wait:
                while self._pending >= self._backlog and self.error is None:
                    self._cond.wait(0.1)
            self._pending += 1
        self._queue.put(work)

    def close(self) -> None:
        """Finish everything queued, then stop the thread; re-raise its failure, if any."""
        self._queue.put(_STOP)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            work = self._queue.get()
            if work is _STOP:
                return
            try:
                if self.error is None:
                    work()  # type: ignore[operator]
            except BaseException as e:  # handed to whoever checks: the run stops
                self.error = e
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()
