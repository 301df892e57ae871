"""HTTP/1.1 server protocol on a raw :class:`asyncio.Protocol`: the sandbox's wire layer.

A general web framework spends tens of microseconds per request; the sandbox must outrun any
importer, so this parser does only what API clients need, in a few microseconds: persistent
connections (HTTP/1.1 keep-alive, HTTP/1.0 ``Connection: keep-alive``), pipelining (answers in
order, one request at a time per connection), ``Content-Length`` and chunked bodies, and
``Expect: 100-continue``. Malformed framing gets an error answer and the connection is closed,
since the next request's start can no longer be found.

The application behind it decides everything else; it may answer at once, after a delay (the
connection stays busy meanwhile, so later pipelined requests wait; other connections do not),
asynchronously, or by dropping the connection. The same protocol serves TLS connections:
asyncio does the encryption below it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, cast

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
_STATUS_LINES: dict[int, bytes] = {
    status: f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n".encode()
    for status, reason in _REASONS.items()
}


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request. Header names are lower-case; the last of a repeated header wins."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool
    http10: bool


@dataclass(frozen=True, slots=True)
class Response:
    """A JSON answer. ``delay`` holds it back (seconds); ``drop`` closes instead of answering."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False
    delay: float = 0.0
    drop: bool = False


class Application(Protocol):
    """What the wire layer serves."""

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        """Answer a request, now or later."""
        ...

    def framing_error(self, status: int, message: str) -> Response:
        """Answer a request whose framing is broken (the connection closes afterwards)."""
        ...

    def internal_error(self, exc: BaseException) -> Response:
        """Answer a request whose asynchronous handler raised."""
        ...


class _FramingError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def serialize(response: Response, keep_alive: bool, http10: bool) -> bytes:
    """The bytes of a response, with ``Content-Length`` and the right ``Connection`` header."""
    head = _STATUS_LINES.get(response.status)
    if head is None:
        head = f"HTTP/1.1 {response.status} Status\r\nContent-Type: application/json\r\n".encode()
    parts = [head, b"Content-Length: %d\r\n" % len(response.body)]
    for name, value in response.headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif http10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    parts.append(response.body)
    return b"".join(parts)


class HttpConnection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, app: Application, registry: set[HttpConnection]) -> None:
        self._app = app
        self._registry = registry
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._busy = False  # a response is pending; later requests wait in the buffer
        self._closed = False
        self._close_after_response = False  # the server is shutting down
        self._eof = False  # the client sent all it will send
        self._continue_sent = False
        self._reading_paused = False
        self._writing_paused = False  # the client is not reading its answers
        self._timer: asyncio.TimerHandle | None = None
        self._delayed: tuple[Response, Request] | None = None  # what the timer will send
        self._task: asyncio.Future[Response] | None = None
        self._tls = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._tls = transport.get_extra_info("ssl_object") is not None
        self._registry.add(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._process()

    def eof_received(self) -> bool | None:
        # A half-closed client still gets the answers it is owed; then we close. Complete
        # requests are handled as they arrive, so when idle the buffer holds only a fragment.
        # TLS has no half-close: its transport closes whatever we return.
        if not self._busy or self._tls:
            return None
        self._eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._registry.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()

    def pause_writing(self) -> None:
        # A client that does not read its answers must not make us buffer without bound.
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()

    # lifecycle

    def shutdown(self) -> None:
        """Close now if idle, else right after the answer in progress.

        A delayed answer is sent at once: the delay is simulated, its outcome already decided.
        """
        if not self._busy:
            self._close()
            return
        self._close_after_response = True
        if self._timer is not None and self._delayed is not None:
            self._timer.cancel()
            self._finish(*self._delayed)

    def abort(self) -> None:
        """Close at once, discarding any answer in progress (shutdown grace has run out)."""
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    # request processing

    def _process(self) -> None:
        while not self._busy and not self._closed:
            try:
                request = self._parse()
            except _FramingError as exc:
                self._write(self._app.framing_error(exc.status, str(exc)), False, False)
                return
            if request is None:
                break
            self._dispatch(request)
        if not self._busy and (self._close_after_response or self._eof):
            self._close()
        self._update_reading()

    def _dispatch(self, request: Request) -> None:
        try:
            result = self._app.handle(request)
        except Exception as exc:
            result = self._app.internal_error(exc)
        if isinstance(result, Response):
            if result.delay <= 0:
                self._write(result, request.keep_alive, request.http10)
                return
            self._busy = True
            self._delayed = (result, request)
            self._timer = self._loop.call_later(result.delay, self._finish, result, request)
            return
        self._busy = True
        task = asyncio.ensure_future(result)
        self._task = task
        task.add_done_callback(lambda done: self._task_done(done, request))

    def _task_done(self, task: asyncio.Future[Response], request: Request) -> None:
        self._task = None
        if task.cancelled():
            return
        exc = task.exception()
        response = task.result() if exc is None else self._app.internal_error(exc)
        self._finish(response, request)

    def _finish(self, response: Response, request: Request) -> None:
        self._timer = None
        self._delayed = None
        self._busy = False
        self._write(response, request.keep_alive, request.http10)
        if not self._closed:
            self._process()

    def _write(self, response: Response, keep_alive: bool, http10: bool) -> None:
        transport = self._transport
        if self._closed or transport is None:
            return
        if response.drop:
            self._close()
            return
        keep_alive = keep_alive and not response.close and not self._close_after_response
        transport.write(serialize(response, keep_alive, http10))
        if not keep_alive:
            self._close()

    def _close(self) -> None:
        if not self._closed and self._transport is not None:
            self._closed = True
            self._transport.close()

    def _update_reading(self) -> None:
        """Read unless the client ignores its answers or queues too much behind a slow one."""
        if self._closed or self._transport is None:
            return
        backlog = self._busy and len(self._buf) > MAX_HEADER_BYTES + MAX_BODY_BYTES
        pause = self._writing_paused or backlog
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    # parsing

    def _parse(self) -> Request | None:
        """The next complete request in the buffer (removed from it), or None if incomplete."""
        buf = self._buf
        while buf.startswith(b"\r\n"):  # RFC 9112 2.2: ignore empty lines before a request
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEADER_BYTES:
                raise _FramingError(431, "request headers are too large")
            return None
        if end > MAX_HEADER_BYTES:
            raise _FramingError(431, "request headers are too large")
        lines = buf[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise _FramingError(400, "malformed request line")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _FramingError(505, f"unsupported HTTP version {version!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise _FramingError(400, f"malformed header line {line[:80]!r}")
            headers[name.lower()] = value.strip(" \t")
        body_start = end + 4
        framed = self._read_body(headers, body_start)
        if framed is None:
            return None
        body, body_end = framed
        del buf[:body_end]
        self._continue_sent = False
        http10 = version == "HTTP/1.0"
        connection = headers.get("connection", "").lower()
        keep_alive = "keep-alive" in connection if http10 else "close" not in connection
        path, _, query = target.partition("?")
        return Request(method, path, query, headers, body, keep_alive, http10)

    def _read_body(self, headers: dict[str, str], start: int) -> tuple[bytes, int] | None:
        encoding = headers.get("transfer-encoding")
        if encoding is not None:
            if "content-length" in headers:
                raise _FramingError(400, "both Transfer-Encoding and Content-Length are set")
            if encoding.lower() != "chunked":
                raise _FramingError(501, f"unsupported Transfer-Encoding {encoding!r}")
            framed = _dechunk(self._buf, start)
        else:
            length_text = headers.get("content-length", "0")
            if not (length_text.isascii() and length_text.isdigit()):
                raise _FramingError(400, f"invalid Content-Length {length_text[:40]!r}")
            length = int(length_text)
            if length > MAX_BODY_BYTES:
                raise _FramingError(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
            end = start + length
            framed = (bytes(self._buf[start:end]), end) if len(self._buf) >= end else None
        if framed is None and not self._continue_sent:
            if headers.get("expect", "").lower() == "100-continue" and self._transport:
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._continue_sent = True
        return framed


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """A chunked body starting at ``pos``: (body, end offset), or None if incomplete."""
    chunks: list[bytes] = []
    total = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > 1024:
                raise _FramingError(400, "malformed chunk size line")
            return None
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        if _CHUNK_SIZE.fullmatch(size_text) is None:
            raise _FramingError(400, "malformed chunk size line")
        size = int(size_text, 16)
        pos = eol + 2
        if size == 0:
            return _skip_trailers(buf, pos, b"".join(chunks))
        total += size
        if total > MAX_BODY_BYTES:
            raise _FramingError(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
        if len(buf) < pos + size + 2:
            return None
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise _FramingError(400, "chunk is not followed by CRLF")
        chunks.append(bytes(buf[pos : pos + size]))
        pos += size + 2


def _skip_trailers(buf: bytearray, pos: int, body: bytes) -> tuple[bytes, int] | None:
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > MAX_HEADER_BYTES:
                raise _FramingError(431, "chunked trailers are too large")
            return None
        if eol == pos:
            return body, eol + 2
        pos = eol + 2
