"""The send path under faults, against a sandbox in its own process.

    python benchmarks/bench_faults.py random429 [--events 20000] [--runs 3]
    python benchmarks/bench_faults.py chaos     [--events 2000]
    python benchmarks/bench_faults.py stall     [--events 50000]

* random429: the same import into a fault-free sandbox and into one answering 5% of requests
  at random ``429 Retry-After: 1`` (a quota shared with other clients), alternating; medians
  of events/s and their ratio (target >= 0.60: random 429s must not collapse the rate).
* chaos: 5% random 429 + 5% 5xx + 1% dropped connections + 1% answers slower than the
  timeout (the event is stored, the answer comes too late), concurrency 32: the wall time
  (target: 2,000 rows within 60 s), and every valid row stored exactly once by event_id.
* stall: 30% of events refused by the API (400): the event loop's longest stall inside the
  importer, measured by a task that asks to wake every 5 ms (target: under 20 ms).

``--client-root PATH`` runs the importer from another checkout (e.g. an older commit, for a
before/after figure) against this checkout's sandbox.
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_run import KEY, ROOT, config_file, data_file, sandbox

RUN = textwrap.dedent("""
    import asyncio, json, sys, time
    sys.path.insert(0, sys.argv[1])
    from flywheel_import import run_import_async

    async def main(cfg, url, concurrency, key, timeout):
        lags = []
        async def monitor():
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - t - 0.005)
        mon = asyncio.ensure_future(monitor())
        t0 = time.perf_counter()
        report = await run_import_async(cfg, api_url=url, key=key, concurrency=concurrency,
                                        rate=0)
        dt = time.perf_counter() - t0
        mon.cancel()
        lags.sort()
        print(json.dumps({"events": report.accepted, "rejected": report.rejected,
                          "rows": report.rows_read, "s": dt, "eps": report.accepted / dt,
                          "max_lag_ms": lags[-1] * 1000 if lags else 0,
                          "p99_lag_ms": lags[int(len(lags) * 0.99)] * 1000 if lags else 0,
                          "sending": report.sending}))

    asyncio.run(main(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]))
""")


def run(client: Path, cfg: Path, url: str, concurrency: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", RUN, str(client), str(cfg), url, str(concurrency), KEY, "0"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_KEY": KEY},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def with_timeout(cfg: Path, seconds: float) -> Path:
    text = cfg.read_text().replace("max_attempts: 8", f"max_attempts: 8, timeout: {seconds:g}")
    cfg.write_text(text)
    return cfg


def stored(db: Path) -> tuple[int, int]:
    """(events stored, distinct event ids) in the sandbox's database."""
    with sqlite3.connect(db) as conn:
        n, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM events"
        ).fetchone()
    return int(n), int(distinct)


def random429(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cfg = config_file(work, data_file(work, args.events))
    clean, noisy = [], []
    for _ in range(args.runs):
        with sandbox() as (url, _):
            clean.append(run(args.client_root, cfg, url, 64))
        with sandbox("--throttle-rate", "0.05", "--seed", "1") as (url, _):
            noisy.append(run(args.client_root, cfg, url, 64))
    c = statistics.median(r["eps"] for r in clean)
    n = statistics.median(r["eps"] for r in noisy)
    print(f"random 429s, {args.events:,} events, concurrency 64, no rate limit")
    print(f"  fault-free {c:8,.0f} events/s  runs " + ", ".join(f"{r['eps']:,.0f}" for r in clean))
    print(f"  5% 429     {n:8,.0f} events/s  runs " + ", ".join(f"{r['eps']:,.0f}" for r in noisy))
    last = noisy[-1]["sending"]
    print(
        f"  ratio {n / c:.2f} (target >= 0.60); last noisy run: {last['throttled']:,} 429s "
        f"of {last['requests']:,} requests, all accepted: "
        f"{all(r['events'] + r['rejected'] == r['rows'] for r in noisy)}"
    )
    return {
        "events": args.events,
        "clean_eps": c,
        "noisy_eps": n,
        "ratio": n / c,
        "throttled": last["throttled"],
        "requests": last["requests"],
    }


def chaos(args: argparse.Namespace, work: Path) -> None:
    cfg = with_timeout(config_file(work, data_file(work, args.events)), 10)
    flags = (
        "--throttle-rate",
        "0.05",
        "--error-rate",
        "0.05",
        "--drop-rate",
        "0.01",
        "--slow-rate",
        "0.01",
        "--slow-ms",
        "15000",
        "--seed",
        "3",
    )
    t0 = time.perf_counter()
    with sandbox(*flags) as (url, db):
        r = run(args.client_root, cfg, url, 32)
        wall = time.perf_counter() - t0
        time.sleep(1.0)  # the sandbox writes in batches: let the last ones land
        n, distinct = stored(db)
    s = r["sending"]
    print(
        f"chaos: 5% 429 + 5% 5xx + 1% dropped + 1% slower than the 10 s timeout, "
        f"{args.events:,} rows, concurrency 32"
    )
    print(f"  import finished in {r['s']:.1f} s (target <= 60 s; {wall:.1f} s with the sandbox)")
    print(
        f"  accepted {r['events']:,}, rejected {r['rejected']:,} of {r['rows']:,} rows; "
        f"requests {s['requests']:,}, retries {s['retries']:,}, errors {s['errors']}"
    )
    print(
        f"  stored at the sandbox: {n:,} events, {distinct:,} distinct ids "
        f"(each valid row once: {n == distinct == r['events']})"
    )


def stall(args: argparse.Namespace, work: Path) -> None:
    cfg = config_file(work, data_file(work, args.events))
    results = []
    for _ in range(args.runs):
        with sandbox("--reject-rate", "0.3", "--seed", "2") as (url, _):
            results.append(run(args.client_root, cfg, url, 64))
    print(f"event-loop stalls, 30% API rejects, {args.events:,} events, concurrency 64")
    for r in results:
        print(
            f"  longest stall {r['max_lag_ms']:6.1f} ms, p99 {r['p99_lag_ms']:5.1f} ms, "
            f"{r['eps']:,.0f} events/s, rejected {r['rejected']:,}"
        )
    worst = statistics.median(r["max_lag_ms"] for r in results)
    print(f"  median of the longest stalls: {worst:.1f} ms (target < 20 ms)")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["random429", "chaos", "stall"])
    ap.add_argument("--events", type=int)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--client-root",
        type=Path,
        default=ROOT,
        help="checkout whose importer is measured (default: this one)",
    )
    args = ap.parse_args()
    args.events = args.events or {"random429": 20_000, "chaos": 2000, "stall": 50_000}[args.what]
    with tempfile.TemporaryDirectory() as tmp:
        {"random429": random429, "chaos": chaos, "stall": stall}[args.what](args, Path(tmp))


if __name__ == "__main__":
    main()
