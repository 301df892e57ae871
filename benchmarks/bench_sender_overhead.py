"""How much does :class:`Sender` cost over a bare aiohttp loop? (events/s, same run, same server)

Starts a minimal HTTP/1.1 keep-alive server (a raw asyncio protocol, so the client is the
bottleneck) in a subprocess, then alternates two clients posting the same pre-built bodies:

* bare:   N aiohttp workers, ``async with session.post(...) as r: await r.read()``, no retries;
* sender: N workers awaiting ``Sender.send(body)`` with rate 0 (limiter, classify, stats on);
* tuned:  (for reference) the bare loop with the choices Sender makes (URL parsed once,
  session-level headers, no cookie jar, 2xx body not read): sender/tuned is Sender's own cost.

Prints the median events/s of each over the runs and the ratio sender/bare, and the client's
CPU time per event, which is steadier than wall-clock rates on a busy machine.

    python benchmarks/bench_sender_overhead.py [--events 20000] [--concurrency 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import yarl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flywheel_import.sender import Sender, SendSettings

KEY = "bench-key"
_RESPONSE_BODY = b'{"success": true, "message": "Event tracked successfully"}'
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(_RESPONSE_BODY)).encode()
    + b"\r\n\r\n"
    + _RESPONSE_BODY
)


class _FastHttp(asyncio.Protocol):
    """Answers every complete request with a fixed 200; enough HTTP/1.1 for keep-alive POSTs."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        out = []
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            length = 0
            for line in buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = end + 4 + length
            if len(buf) < total:
                break
            buf = buf[total:]
            out.append(_RESPONSE)
        self.buf = buf
        if out:
            self.transport.write(b"".join(out))


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_FastHttp, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin


def _bodies(n: int) -> list[bytes]:
    return [
        b'{"event": {"event": "page_view", "user_id": "u%d", "event_id": "bench-%d", '
        b'"timestamp": "2024-01-15T10:30:00Z", "properties": {"path": "/home", "n": %d}}}'
        % (i % 997, i, i)
        for i in range(n)
    ]


Result = tuple[float, float]  # events/s (wall clock), client CPU µs per event


async def _drive(workers: int, n: int, one: Callable[[bytes], Awaitable[object]]) -> Result:
    it: Iterator[bytes] = iter(_bodies(n))

    async def worker() -> None:
        for body in it:
            await one(body)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return n / (time.perf_counter() - started), (time.process_time() - cpu) / n * 1e6


async def bare(url: str, n: int, concurrency: int) -> Result:
    endpoint = url + "/v1/events"
    headers = {"Authorization": KEY, "Auth-Type": "api", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(body: bytes) -> None:
            async with session.post(endpoint, data=body, headers=headers) as resp:
                await resp.read()

        return await _drive(concurrency, n, one)


async def tuned(url: str, n: int, concurrency: int) -> Result:
    endpoint = yarl.URL(url + "/v1/events")  # parsed once
    headers = {"Authorization": KEY, "Auth-Type": "api", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        headers=headers,
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:

        async def one(body: bytes) -> None:
            resp = await session.post(endpoint, data=body)
            resp.release()

        return await _drive(concurrency, n, one)


async def sender(url: str, n: int, concurrency: int) -> Result:
    settings = SendSettings(url, KEY, concurrency=concurrency, rate_limit=0)
    async with Sender(settings) as s:
        rate = await _drive(concurrency, n, s.send)
        assert s.stats.accepted == n, s.stats.snapshot()
        return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{int(server.stdout.readline())}"
        clients = {"bare": bare, "sender": sender, "tuned": tuned}
        results: dict[str, list[Result]] = {name: [] for name in clients}
        for client in clients.values():  # warm-up: imports, connections, caches
            asyncio.run(client(url, 2_000, args.concurrency))
        for run in range(args.runs):
            order = list(clients) if run % 2 == 0 else list(reversed(clients))
            for name in order:
                rate, cpu = asyncio.run(clients[name](url, args.events, args.concurrency))
                results[name].append((rate, cpu))
                print(f"run {run + 1} {name:>6}: {rate:8.0f} events/s {cpu:6.1f} µs CPU/event")
        med = {name: statistics.median(r for r, _ in rs) for name, rs in results.items()}
        cpu_med = {name: statistics.median(c for _, c in rs) for name, rs in results.items()}
        print(f"\n{args.events} events x {args.runs} runs, concurrency {args.concurrency}, medians")
        for name, rate in med.items():
            print(f"  {name:<6} {rate:8.0f} events/s  {cpu_med[name]:6.1f} µs client CPU/event")
        print(f"  ratio sender/bare  {med['sender'] / med['bare']:.3f}")
        print(f"  ratio sender/tuned {med['sender'] / med['tuned']:.3f}")
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
