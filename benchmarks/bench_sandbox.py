"""Throughput of the sandbox, measured with wrk the way a user would run it.

The sandbox must never be the bottleneck of an import rehearsal; this script is the evidence.
It starts ``python -m flywheel_import.sandbox`` as a subprocess (database in a temporary
directory, nothing written into the repository), runs ``wrk`` with ``bench_sandbox.lua``
(a small valid event, a unique ``event_id`` per request) at a few connection counts, and
prints the median requests/s of several runs. It then checks the sandbox's own counters: every
request answered 200 and stored, no duplicates.

    python benchmarks/bench_sandbox.py [--connections 16 64 256] [--duration 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LUA = HERE / "bench_sandbox.lua"
KEY = "bench-key"


def start_sandbox(db: Path, latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    """Start the sandbox on a free port; returns the process and its URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flywheel_import.sandbox",
            "--port",
            "0",
            "--db",
            str(db),
            "--key",
            KEY,
            "--latency-ms",
            str(latency_ms),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    found: list[str] = []

    def read_banner() -> None:
        assert proc.stdout is not None
        while line := proc.stdout.readline():
            match = re.search(r"url:\s+(\S+)", line)
            if match:
                found.append(match.group(1))
            if line.startswith("Press Ctrl-C"):
                return

    reader = threading.Thread(target=read_banner, daemon=True)
    reader.start()
    reader.join(30)
    if not found:
        proc.kill()
        raise SystemExit("the sandbox did not start")
    return proc, found[0]


def run_wrk(
    url: str, connections: int, duration: float, threads: int, tag: str
) -> dict[str, float]:
    """One wrk run; returns requests/s and the count of non-2xx answers and socket errors."""
    env = {**os.environ, "SANDBOX_KEY": KEY, "BENCH_RUN": tag}
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "-s", str(LUA), url],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None:
        raise SystemExit(f"unexpected wrk output:\n{out}\n{result.stderr}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(rate.group(1)),
        "non_2xx": float(non_2xx.group(1)) if non_2xx else 0.0,
        "socket_errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="runs per connection count")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1 leaves a core)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="sandbox --latency-ms")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found; skipping (install it: apt-get install -y wrk)")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        proc, url = start_sandbox(Path(tmp) / "bench.db", args.latency_ms)
        try:
            print(
                f"sandbox {url}, latency {args.latency_ms:g} ms, wrk -t{args.threads}, "
                f"{args.duration:g} s x {args.runs} runs, {os.cpu_count()} CPUs"
            )
            print(f"{'connections':>11}  {'median req/s':>12}  {'runs':<30}  non-2xx  sock-err")
            for connections in args.connections:
                runs = [
                    run_wrk(
                        url,
                        connections,
                        args.duration,
                        args.threads,
                        f"{connections}-{i}-{time.time_ns()}",
                    )
                    for i in range(args.runs)
                ]
                rates = [r["rps"] for r in runs]
                print(
                    f"{connections:>11}  {statistics.median(rates):>12,.0f}  "
                    f"{', '.join(f'{r:,.0f}' for r in rates):<30}  "
                    f"{sum(r['non_2xx'] for r in runs):>7,.0f}  "
                    f"{sum(r['socket_errors'] for r in runs):>8,.0f}",
                    flush=True,
                )
            with urllib.request.urlopen(f"{url}/sandbox/stats") as response:
                stats = json.load(response)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(
        f"sandbox counters: {stats['requests']:,} requests, {stats['stored']:,} stored, "
        f"{stats['duplicates']:,} duplicates, {stats['rejected_400']:,} rejected; "
        f"exit code {proc.returncode}"
    )
    ok = stats["stored"] == stats["requests"] and stats["duplicates"] == 0
    print("check:", "every request stored once" if ok else "MISMATCH (see counters)")
    return 0 if ok and proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
