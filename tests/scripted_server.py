"""A tiny real HTTP server on 127.0.0.1 that answers from a script and records what it got.

Runs in the test's own event loop (aiohttp.web on a free port), so the sender is tested over
real loopback HTTP, not mocks::

    async with ScriptedServer(500, 500, 200) as server:
        ... POST to server.url + "/v1/events" ...
    assert len(server.requests) == 3

Each request takes the next :class:`Reply` of the script; once it runs out, `then` answers
every further request. A bare int is shorthand for ``Reply(status)``. Given an
``ssl.SSLContext`` it serves https; `port` picks the port (0: a free one).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

ACCEPTED_BODY = b'{"success": true, "message": "Event tracked successfully"}'


@dataclass(frozen=True)
class Reply:
    """One scripted answer: `status` and `body` (bytes, or an object sent as JSON, or a function
    of the request received that returns one) after `delay` seconds; or, with `drop`, the
    connection closed without any answer."""

    status: int = 200
    body: bytes | Mapping[str, Any] | Callable[[Received], bytes | Mapping[str, Any]] = (
        ACCEPTED_BODY
    )
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False


DROP = Reply(drop=True)


def error(status: int, message: str, code: str | None = None, **headers: str) -> Reply:
    """An API ErrorResponse: ``{"error": message, "code": code}`` (no code when None)."""
    doc: dict[str, str] = {"error": message}
    if code is not None:
        doc["code"] = code
    return Reply(status, doc, {k.replace("_", "-"): v for k, v in headers.items()})


@dataclass(frozen=True)
class Received:
    """What the server got: method, path, headers (as sent), the exact body bytes, and the
    client's address (one per connection, so connection reuse is visible)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int] | None = None


class ScriptedServer:
    """Answers requests from a script of replies; records every request it received."""

    def __init__(
        self,
        *script: Reply | int,
        then: Reply | int = 200,
        ssl_context: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> None:
        self._script = [self._reply(r) for r in script]
        self._then = self._reply(then)
        self._ssl = ssl_context
        self.requests: list[Received] = []
        self.url = ""
        self.port = port
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    @staticmethod
    def _reply(r: Reply | int) -> Reply:
        return Reply(r) if isinstance(r, int) else r

    async def __aenter__(self) -> ScriptedServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._ssl)
        await site.start()
        host, self.port = self._runner.addresses[0][:2]
        self.url = f"{'https' if self._ssl else 'http'}://{host}:{self.port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()  # release handlers still "slow", so shutdown does not wait
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        received = Received(
            request.method, request.path, dict(request.headers), body, peer and peer[:2]
        )
        self.requests.append(received)
        reply = self._script.pop(0) if self._script else self._then
        if reply.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), reply.delay)
        if reply.drop:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # nothing more to do on a dead connection
        content = reply.body(received) if callable(reply.body) else reply.body
        payload = content if isinstance(content, bytes) else orjson.dumps(content)
        return web.Response(
            status=reply.status,
            body=payload,
            headers={"Content-Type": "application/json", **reply.headers},
        )
