"""One running sandbox inside an event loop: listener, application and database writer.

Shared by the CLI (foreground, stopped by a signal) and :class:`~.embed.Sandbox` (a background
thread). Shutdown order matters for "nothing acknowledged is lost": stop accepting, let each
connection finish the answer in progress (a delayed answer is sent at once: its event is
already stored, and a ``slow`` fault could otherwise hold the shutdown for its whole delay),
then flush pending rows and close the file.
"""

from __future__ import annotations

import asyncio
import importlib
import sqlite3
from collections.abc import Callable
from typing import Any, cast

from flywheel_import.errors import UsageError

from .app import SandboxApp
from .config import SandboxConfig
from .store import EventStore
from .tls import server_context
from .wire import HttpConnection
from .writer import BatchWriter

#: How long a shutdown waits for answers already in progress (asynchronous ones: a page of
#: ``/sandbox/events`` being read).
SHUTDOWN_GRACE = 5.0


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when it is installed (roughly 1.5x the throughput), else asyncio's."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.new_event_loop
    return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)


class SandboxServer:
    """A listening sandbox; build it with :meth:`start` inside the loop that will run it."""

    def __init__(
        self,
        config: SandboxConfig,
        app: SandboxApp,
        writer: BatchWriter,
        server: asyncio.Server,
        connections: set[HttpConnection],
    ) -> None:
        self.config = config
        self.app = app
        self._writer = writer
        self._server = server
        self._connections = connections
        self._closed = False
        sockname = server.sockets[0].getsockname()
        self.port: int = sockname[1]
        host = config.host
        scheme = "https" if config.tls else "http"
        netloc = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{netloc}:{self.port}"

    @classmethod
    async def start(cls, config: SandboxConfig) -> SandboxServer:
        """Load the TLS files, open the database, listen.

        Raises UsageError for unusable TLS files (before anything is created) or database,
        and OSError if the address is taken.
        """
        loop = asyncio.get_running_loop()
        tls = None
        if config.tls_cert is not None and config.tls_key is not None:
            tls = server_context(config.tls_cert, config.tls_key)
        try:
            store = EventStore(config.db_path)  # milliseconds; the server is not serving yet
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"--db {config.db_path}: cannot open it ({exc})") from exc
        connections: set[HttpConnection] = set()
        try:
            writer = BatchWriter(store, config.flush_interval)
            app = SandboxApp(config, writer)

            def accept() -> HttpConnection:
                # Called once per accepted TCP connection, before any TLS handshake.
                app.stats.connections += 1
                return HttpConnection(app, connections)

            server = await loop.create_server(
                accept,
                config.host,
                config.port,
                reuse_address=True,
                backlog=2048,
                ssl=tls,
            )
        except BaseException:
            store.close()
            raise
        writer.start()
        return cls(config, app, writer, server, connections)

    def stats(self) -> dict[str, Any]:
        """The ``/sandbox/stats`` document."""
        return self.app.stats_document()

    async def events_page(self, after: int, limit: int) -> dict[str, Any]:
        """The ``/sandbox/events`` document."""
        return await self.app.events_page(after, limit)

    async def close(self) -> None:
        """Stop listening, finish answers in progress, flush and close the database."""
        if self._closed:
            return
        self._closed = True
        self._server.close()
        for connection in list(self._connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_GRACE
        while self._connections and loop.time() < deadline:
            await asyncio.sleep(0.005)
        for connection in list(self._connections):
            connection.abort()
        await self._writer.close()
