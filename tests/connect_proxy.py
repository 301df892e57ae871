"""A small HTTP CONNECT proxy on 127.0.0.1 for tests: counts tunnels, records CONNECT headers.

Every tunnel goes to 127.0.0.1 at the requested port, whatever host was asked for, so a test
can use a name the machine cannot resolve (``api.flywheel.test``): only the proxy "resolves"
it, which shows the client really went through the proxy. With `credentials` set, a CONNECT
without the matching ``Proxy-Authorization: Basic ...`` is answered 407, one to a port nobody
listens on 502. Anything but CONNECT is answered 405. Runs in the test's event loop::

    async with ConnectProxy() as proxy:
        ... HTTPS_PROXY=proxy.url ...
    assert proxy.tunnels == 1
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from types import TracebackType


class ConnectProxy:
    """Tunnels CONNECT requests to loopback; `tunnels` counts those opened, `connects` keeps the
    request line and headers of each CONNECT as received."""

    def __init__(self, *, credentials: tuple[str, str] | None = None) -> None:
        self._expected = (
            None
            if credentials is None
            else "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        )
        self.tunnels = 0
        self.connects: list[tuple[str, dict[str, str]]] = []
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ConnectProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._tunnel(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        line, *rest = head.split("\r\n")
        headers = dict(h.split(":", 1) for h in rest if ":" in h)
        headers = {k.strip(): v.strip() for k, v in headers.items()}
        method, target, _ = line.split(" ", 2)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        self.connects.append((line, headers))
        if self._expected is not None and headers.get("Proxy-Authorization") != self._expected:
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
            )
            await writer.drain()
            return
        port = int(target.rpartition(":")[2])
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:  # as a real proxy answers when it cannot reach the host
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        self.tunnels += 1
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()
