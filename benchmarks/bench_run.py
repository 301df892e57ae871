"""The send path, measured against a sandbox server in its own process.

    python benchmarks/bench_run.py throughput [--events 50000] [--runs 3]
    python benchmarks/bench_run.py latency    [--events 20000]
    python benchmarks/bench_run.py rate       [--events 4000]
    python benchmarks/bench_run.py converge   [--events 9000]
    python benchmarks/bench_run.py processes  [--events 50000] [--runs 3]

* throughput: ``flywheel-import run`` (no rate limit, concurrency 64, timed from the call:
  reading, validation and sending) vs a bare script (64 aiohttp workers posting bodies built
  before its clock starts, 2xx bodies never read, no validation, no retries), alternating,
  each in a fresh process against a fresh sandbox; medians and the ratio.
* latency: sandbox with ``--latency-ms 50``, ``--rate 2000 --concurrency 200`` (target: 2,000
  events/s within 5%).
* rate: ``--rate 200`` (target: mean within 3% of 200/s, the busiest 1-second window at the
  server within 5% plus the burst), from the arrival times the sandbox stored.
* converge: a sandbox allowing 300/s, the client configured at 1,000/s: the accepted rate
  over the last 10 s (target: near 300/s, instead of hammering) and the share of 429s.
* processes: ``flywheel-import run --processes P`` for P = 1, 2, 4 (concurrency 64 in all,
  split among the processes) vs the bare script, alternating, each against a fresh sandbox;
  events/s from the report's duration (the slowest shard, from its call: interpreter
  start-up excluded) and from the wall clock of the whole command; medians.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"

CONFIG = """
api: {{key_env: BENCH_KEY, rate_limit: 0, concurrency: 64, max_attempts: 8}}
mapping:
  event: event_name
  user_id: user_id
  event_id: event_id
  timestamp: {{column: ts, timezone: UTC}}
  properties: {{types: {{zip: string}}}}
output: {{rejects: {rejects}}}
"""

BARE = textwrap.dedent("""
    import asyncio, json, sys, time
    import aiohttp, orjson, polars as pl

    async def main(path, url, workers):
        # The baseline is as fast as a bare script can be: bodies are built before the clock
        # starts, and a 2xx body is never read.
        bodies = []
        for batch in pl.scan_csv(path, infer_schema=False).collect_batches():
            for row in batch.iter_rows(named=True):
                ev = {"event_id": row.pop("event_id"), "event": row.pop("event_name"),
                      "user_id": row.pop("user_id"),
                      "timestamp": row.pop("ts").replace(" ", "T") + "Z",
                      "properties": row}
                bodies.append(orjson.dumps({"event": ev}))
        headers = {"Authorization": sys.argv[4], "Auth-Type": "api",
                   "Content-Type": "application/json"}
        it = iter(bodies)
        ok = 0
        t0 = time.perf_counter()
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=workers), headers=headers) as s:
            async def worker():
                nonlocal ok
                for body in it:
                    r = await s.post(url + "/v1/events", data=body)
                    ok += r.status == 200
                    r.release()
            await asyncio.gather(*(worker() for _ in range(workers)))
        dt = time.perf_counter() - t0
        print(json.dumps({"events": ok, "s": dt, "eps": ok / dt}))

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""")

OURS = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[5])
    from flywheel_import import run_import
    t0 = time.perf_counter()
    rate = float(sys.argv[4])
    report = run_import(sys.argv[1], api_url=sys.argv[2], key=sys.argv[6],
                        concurrency=int(sys.argv[3]), rate=rate)
    dt = time.perf_counter() - t0
    print(json.dumps({"events": report.accepted, "rejected": report.rejected, "s": dt,
                      "eps": report.accepted / dt, "sending": report.sending}))
""")


@contextmanager
def sandbox(*flags: str) -> Iterator[tuple[str, Path]]:
    """A sandbox in its own process on a free port; yields (url, db path)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flywheel_import.sandbox",
                "--port",
                "0",
                "--key",
                KEY,
                "--db",
                str(db),
                *flags,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            url = ""
            deadline = time.monotonic() + 20
            while not url and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if "url:" in line:
                    url = line.split("url:", 1)[1].strip()
            if not url:
                raise RuntimeError("sandbox did not start")
            yield url, db
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def data_file(folder: Path, events: int) -> Path:
    csv = folder / "events.csv"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gen_events.py"),
            str(csv),
            "--rows",
            str(events),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # gen_events sprinkles a few empty names in; keep them: the bare script sends them too.
    return csv


def config_file(folder: Path, csv: Path) -> Path:
    cfg = folder / "bench.yaml"
    cfg.write_text(CONFIG.format(rejects=folder / "rejects.csv") + f"source: {{path: {csv}}}\n")
    return cfg


def ours(cfg: Path, url: str, concurrency: int, rate: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", OURS, str(cfg), url, str(concurrency), str(rate), str(ROOT), KEY],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_KEY": KEY},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def bare(csv: Path, url: str, concurrency: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", BARE, str(csv), url, str(concurrency), KEY],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def arrivals(db: Path) -> list[float]:
    """Arrival times (s) of the stored events, from the sandbox's database."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT received_at FROM events ORDER BY seq").fetchall()
    return [datetime.fromisoformat(r[0].replace("Z", "+00:00")).timestamp() for r in rows]


def windows(times: list[float]) -> tuple[float, int]:
    """(mean events/s over the run, most events in any 1-second window)."""
    span = times[-1] - times[0]
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return (len(times) - 1) / span if span > 0 else 0.0, best


def import_into_sandbox(
    args: argparse.Namespace, work: Path, flags: tuple[str, ...], concurrency: int, rate: float
) -> tuple[dict[str, Any], list[float]]:
    """One import of a fresh data file into a fresh sandbox: (the run's figures, arrivals)."""
    cfg = config_file(work, data_file(work, args.events))
    with sandbox(*flags) as (url, db):
        result = ours(cfg, url, concurrency, rate)
        return result, arrivals(db)


def throughput(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    csv = data_file(work, args.events)
    cfg = config_file(work, csv)
    b, o = [], []
    for _ in range(args.runs):
        with sandbox() as (url, _):
            b.append(bare(csv, url, 64))
        with sandbox() as (url, _):
            o.append(ours(cfg, url, 64, 0))
    be = statistics.median(r["eps"] for r in b)
    oe = statistics.median(r["eps"] for r in o)
    print(f"throughput, {args.events:,} events, concurrency 64, no rate limit")
    print(f"  bare   {be:8,.0f} events/s  runs " + ", ".join(f"{r['eps']:,.0f}" for r in b))
    print(f"  import {oe:8,.0f} events/s  runs " + ", ".join(f"{r['eps']:,.0f}" for r in o))
    print(f"  ratio  {oe / be:.2f} (the bare script only sends: its bodies are prebuilt)")
    return {
        "events": args.events,
        "bare_eps": be,
        "import_eps": oe,
        "ratio": oe / be,
        "bare_runs": [r["eps"] for r in b],
        "import_runs": [r["eps"] for r in o],
    }


def latency(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    r, times = import_into_sandbox(args, work, ("--latency-ms", "50"), 200, 2000)
    mean, peak = windows(times)
    print(f"latency 50 ms, --rate 2000 --concurrency 200, {args.events:,} events")
    print(f"  server-side mean {mean:,.0f}/s (target 2,000 within 5%), busiest second {peak:,}")
    print(
        f"  client: {r['eps']:,.0f} events/s end to end, p50 "
        f"{r['sending'].get('latency_p50_ms')} ms"
    )
    return {
        "events": args.events,
        "server_mean_eps": mean,
        "busiest_second": peak,
        "client_eps": r["eps"],
        "latency_p50_ms": r["sending"].get("latency_p50_ms"),
    }


def rate(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    _, times = import_into_sandbox(args, work, (), 32, 200)
    mean, peak = windows(times)
    burst = max(1, round(200 / 20))
    per_second = Counter(int(t - times[0]) for t in times)
    print(f"rate 200/s, {len(times):,} events at the server over {times[-1] - times[0]:.1f}s")
    print(f"  mean {mean:.1f}/s ({(mean / 200 - 1) * 100:+.1f}%, target within 3%)")
    print(
        f"  busiest 1-second window {peak} (target <= {200 * 1.05 + burst:.0f} = 5% + burst "
        f"{burst}); per calendar second: {sorted(per_second.values())[-3:]}"
    )
    return {
        "events": len(times),
        "target": 200,
        "mean_eps": mean,
        "busiest_window": peak,
        "busiest_limit": 200 * 1.05 + burst,
    }


def converge(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    r, times = import_into_sandbox(args, work, ("--rate-limit", "300"), 64, 1000)
    tail = [t for t in times if t >= times[-1] - 10]
    mean_tail = (len(tail) - 1) / (tail[-1] - tail[0]) if len(tail) > 1 else 0.0
    sending = r["sending"]
    print(f"server allows 300/s, client configured at 1000/s, {args.events:,} events")
    print(
        f"  accepted rate over the last 10 s at the server: {mean_tail:,.0f}/s (target: near 300)"
    )
    print(
        f"  429s: {sending['throttled']:,} of {sending['requests']:,} requests "
        f"({sending['throttled'] / max(1, sending['requests']):.1%}); "
        f"all accepted: {r['events']:,}, rejected {r['rejected']:,}"
    )
    return {
        "events": args.events,
        "server_limit": 300,
        "client_rate": 1000,
        "tail_eps": mean_tail,
        "throttled": sending["throttled"],
        "requests": sending["requests"],
        "accepted": r["events"],
        "arrivals_s": [round(t - times[0], 4) for t in times],
    }


def by_command(cfg: Path, url: str, processes: int, work: Path) -> dict[str, float]:
    """``flywheel-import run --processes P`` as a user runs it: (events/s by the report's
    duration, events/s by the wall clock of the command)."""
    report = work / f"report-{processes}.json"
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flywheel_import",
            "run",
            str(cfg),
            "--api-url",
            url,
            "--processes",
            str(processes),
            "--concurrency",
            "64",
            "--rate",
            "0",
            "--no-progress",
            "--restart",
            "--report",
            str(report),
        ],
        cwd=ROOT,
        env={**os.environ, "BENCH_KEY": KEY, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        check=False,
    )
    wall = time.perf_counter() - t0
    data = json.loads(report.read_text())
    return {"eps": data["accepted"] / data["duration_s"], "wall_eps": data["accepted"] / wall}


def processes(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    csv = data_file(work, args.events)
    cfg = config_file(work, csv)
    counts = (1, 2, 4)
    b: list[dict[str, float]] = []
    o: dict[int, list[dict[str, float]]] = {p: [] for p in counts}
    for _ in range(args.runs):
        with sandbox() as (url, _):
            b.append(bare(csv, url, 64))
        for p in counts:
            with sandbox() as (url, _):
                o[p].append(by_command(cfg, url, p, work))
    be = statistics.median(r["eps"] for r in b)
    figures: dict[str, Any] = {
        "events": args.events,
        "bare_eps": be,
        "bare_runs": [r["eps"] for r in b],
    }
    print(
        f"processes, {args.events:,} events, concurrency 64 in all, no rate limit, "
        f"{os.cpu_count()} cores (the sandbox shares them)"
    )
    print(f"  bare          {be:8,.0f} events/s  runs " + ", ".join(f"{r['eps']:,.0f}" for r in b))
    for p in counts:
        oe = statistics.median(r["eps"] for r in o[p])
        we = statistics.median(r["wall_eps"] for r in o[p])
        print(
            f"  processes={p}   {oe:8,.0f} events/s ({oe / be:.2f}x)  wall clock {we:,.0f}/s"
            f"  runs " + ", ".join(f"{r['eps']:,.0f}" for r in o[p])
        )
        figures[f"processes_{p}"] = {
            "eps": oe,
            "wall_eps": we,
            "ratio": oe / be,
            "runs": [r["eps"] for r in o[p]],
        }
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["throughput", "latency", "rate", "converge", "processes"])
    ap.add_argument("--events", type=int)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    args.events = (
        args.events
        or {
            "throughput": 50_000,
            "latency": 20_000,
            "rate": 4000,
            "converge": 9000,
            "processes": 50_000,
        }[args.what]
    )
    with tempfile.TemporaryDirectory() as tmp:
        {
            "throughput": throughput,
            "latency": latency,
            "rate": rate,
            "converge": converge,
            "processes": processes,
        }[args.what](args, Path(tmp))


if __name__ == "__main__":
    main()
