"""Clean stops on SIGINT (Ctrl-C) and SIGTERM (how Kubernetes evicts a pod): CLI only.

The first signal asks the run to stop: reading stops, the requests in flight finish (bounded
by the timeout), what was settled goes to the ledger, rejects and report are written, and the
command returns 130 (SIGINT) or 143 (SIGTERM) with the summary and the command that resumes.
A second signal stops at once (the ledger stays consistent: it only ever records settled
rows, in transactions). As a library, nothing here is used: no handler is installed.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import anyio

from .pipeline import run_import_async
from .report import Report

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


class StoppedAtOnce(Exception):
    """A second signal cut the run short (outputs and ledger were still written)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = EXIT_CODES[signal_name]


def run_with_signals(config: str | Path, inputs: list[str] | None, **options: Any) -> Report:
    """:func:`run_import` with SIGINT/SIGTERM handlers for a clean stop."""
    return anyio.run(_run, config, inputs, options, backend="asyncio")


async def _run(config: str | Path, inputs: list[str] | None, options: dict[str, Any]) -> Report:
    stop = anyio.Event()
    received: list[str] = []
    loop = asyncio.get_running_loop()
    scope = anyio.CancelScope()

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        if len(received) == 1:
            stop.set()
        else:
            scope.cancel()

    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            handled.append(sig)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
            pass
    report: Report | None = None
    try:
        with scope:
            report = await run_import_async(config, inputs, stop=stop, **options)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    if report is None:
        raise StoppedAtOnce(received[-1] if received else "SIGINT")
    if received:
        report.stopped = received[0]
    return report
