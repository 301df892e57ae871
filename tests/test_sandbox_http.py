"""The HTTP layer: routes, keep-alive, pipelining, framing, raw bytes on a socket."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sandbox_fixtures import KEY, auth_headers, connect, post_event, request
from sandbox_fixtures import sandbox as sandbox  # pytest fixture

from flywheel_import.sandbox import Sandbox

EVENT = json.dumps({"event": {"event": "signup"}}).encode()


def raw_socket(sb: Sandbox) -> socket.socket:
    parts = urlsplit(sb.url)
    assert parts.hostname is not None and parts.port is not None
    sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
    return sock


def post_bytes(body: bytes, extra: str = "", length: bool = True) -> bytes:
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: {KEY}\r\nAuth-Type: api\r\n"
        f"Content-Type: application/json\r\n{extra}"
    )
    if length:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """Read ``count`` Content-Length-framed responses."""
    buf = b""
    answers: list[tuple[int, bytes]] = []
    while len(answers) < count:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].decode()
            length = next(
                int(line.split(":")[1])
                for line in head.split("\r\n")
                if line.lower().startswith("content-length:")
            )
            if len(buf) >= end + 4 + length:
                answers.append((int(head.split(" ")[1]), buf[end + 4 : end + 4 + length]))
                buf = buf[end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        assert chunk, "connection closed early"
        buf += chunk
    return answers


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_on_events_is_405_with_error_body(sandbox: Sandbox, method: str) -> None:
    answer = request(sandbox.url, method, "/v1/events", None, auth_headers())
    assert answer.status == 405
    assert answer.headers["allow"] == "POST"
    assert answer.json["code"] == "METHOD_NOT_ALLOWED"
    assert set(answer.json) == {"error", "code"}
    assert sandbox.stats()["method_not_allowed_405"] == 1


@pytest.mark.parametrize("path", ["/", "/v1/event", "/v2/events", "/v1/events/1"])
def test_unknown_path_is_404_with_error_body(sandbox: Sandbox, path: str) -> None:
    answer = request(sandbox.url, "POST", path, EVENT, auth_headers())
    assert answer.status == 404
    assert answer.json["code"] == "NOT_FOUND"
    assert answer.headers["content-type"] == "application/json"


def test_query_string_does_not_change_the_route(sandbox: Sandbox) -> None:
    answer = request(sandbox.url, "POST", "/v1/events?x=1", EVENT, auth_headers())
    assert answer.status == 200


def test_keep_alive_serves_many_requests_on_one_connection(sandbox: Sandbox) -> None:
    conn = connect(sandbox.url)
    conn.connect()
    first_socket = conn.sock
    statuses = [post_event(sandbox.url, {"event": "e"}, conn=conn).status for _ in range(20)]
    statuses.append(post_event(sandbox.url, {"event": "bad name"}, conn=conn).status)
    statuses.append(request(sandbox.url, "GET", "/nope", conn=conn).status)
    statuses.append(post_event(sandbox.url, {"event": "e"}, conn=conn).status)
    assert conn.sock is first_socket  # http.client would have reconnected after a close
    conn.close()
    assert statuses == [200] * 20 + [400, 404, 200]
    assert sandbox.stats()["stored"] == 21


def test_pipelined_requests_are_answered_in_order(sandbox: Sandbox) -> None:
    bad = json.dumps({"event": {"event": "bad name"}}).encode()
    with raw_socket(sandbox) as sock:
        sock.sendall(post_bytes(EVENT) + post_bytes(bad) + post_bytes(EVENT))
        answers = read_responses(sock, 3)
    assert [status for status, _ in answers] == [200, 400, 200]


def test_chunked_request_body_is_accepted(sandbox: Sandbox) -> None:
    body = json.dumps({"event": {"event": "chunked", "event_id": "c1"}}).encode()
    chunked = (
        b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))
        + b"0\r\n\r\n"
    )
    with raw_socket(sandbox) as sock:
        sock.sendall(post_bytes(chunked, "Transfer-Encoding: chunked\r\n", length=False))
        [(status, _)] = read_responses(sock, 1)
    assert status == 200
    assert [e["event_id"] for e in sandbox.events()] == ["c1"]


def test_body_split_across_packets_is_reassembled(sandbox: Sandbox) -> None:
    data = post_bytes(EVENT)
    with raw_socket(sandbox) as sock:
        for i in range(0, len(data), 7):
            sock.sendall(data[i : i + 7])
        [(status, _)] = read_responses(sock, 1)
    assert status == 200


def test_expect_100_continue_gets_an_interim_answer(sandbox: Sandbox) -> None:
    data = post_bytes(EVENT, "Expect: 100-continue\r\n")
    head, body = data[: -len(EVENT)], EVENT
    with raw_socket(sandbox) as sock:
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        [(status, _)] = read_responses(sock, 1)
    assert status == 200


def test_http10_closes_after_the_answer(sandbox: Sandbox) -> None:
    data = post_bytes(EVENT).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    with raw_socket(sandbox) as sock:
        sock.sendall(data)
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close\r\n" in reply


def test_connection_close_header_is_honoured(sandbox: Sandbox) -> None:
    with raw_socket(sandbox) as sock:
        sock.sendall(post_bytes(EVENT, "Connection: close\r\n"))
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"POST /v1/events HTTP/2.0\r\n\r\n", 505),
        (b"POST /v1/events HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (b"POST /v1/events HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"POST /v1/events HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST /v1/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /v1/events HTTP/1.1\r\nbad header\r\n\r\n", 400),
        (b"POST /v1/events HTTP/1.1\r\nX: " + b"a" * 66_000, 431),
    ],
    ids=[
        "request-line",
        "version",
        "content-length",
        "too-large",
        "te-gzip",
        "chunk-size",
        "header-line",
        "huge-headers",
    ],
)
def test_broken_framing_is_answered_then_closed(sandbox: Sandbox, data: bytes, status: int) -> None:
    with raw_socket(sandbox) as sock:
        sock.sendall(data)
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 %d " % status)
    assert b"Connection: close\r\n" in reply
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["code"] == "BAD_REQUEST"
    assert sandbox.stats()["malformed_http"] == 1


def test_delayed_pipelined_answers_keep_their_order_after_half_close() -> None:
    bad = json.dumps({"event": {"event": "bad name"}}).encode()
    with Sandbox(key=KEY, latency_ms=40) as sb, raw_socket(sb) as sock:
        sock.sendall(post_bytes(EVENT) + post_bytes(bad) + post_bytes(EVENT))
        sock.shutdown(socket.SHUT_WR)  # the client has sent everything; answers still due
        reply = read_until_closed(sock)
    statuses = [int(part.split(b" ", 1)[0]) for part in reply.split(b"HTTP/1.1 ")[1:] if part]
    assert statuses == [200, 400, 200]


def test_internal_error_is_a_generic_500_and_the_detail_goes_to_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "broken.db"
    with Sandbox(key=KEY, db=db) as sb:
        with sqlite3.connect(db) as other:  # the file breaks under the running sandbox
            other.execute("DROP TABLE events")
        answer = request(sb.url, "GET", "/sandbox/events")
    assert answer.status == 500
    assert answer.json == {"error": "internal error", "code": "INTERNAL_ERROR"}
    err = capfd.readouterr().err
    assert "no such table: events" in err and "Traceback" in err


def test_connections_counts_tcp_connections_not_requests(sandbox: Sandbox) -> None:
    first, second = connect(sandbox.url), connect(sandbox.url)
    try:
        for i in range(3):
            for name, conn in (("a", first), ("b", second)):
                event = {"event": "e", "event_id": f"{name}{i}"}
                assert post_event(sandbox.url, event, conn=conn).status == 200
    finally:
        first.close()
        second.close()
    stats = sandbox.stats()
    assert (stats["requests"], stats["connections"]) == (6, 2)
