"""The importer over https vs plain http, each run against a fresh sandbox process.

    python benchmarks/bench_https.py [--events 50000] [--runs 3] [--concurrency 64]

One generated file (``gen_events.py``) is imported with ``flywheel-import run`` (no rate
limit) into a fresh sandbox over http, then into a fresh sandbox over https, alternating, N
runs each. The sandbox serves a certificate from a throwaway CA (``tests/tls_helpers.py``); the
importer trusts it only through ``SSL_CERT_FILE`` in its environment, as a user with a private
CA would. Prints the median events/s of each, the ratio https/http, and the TCP connections
each sandbox accepted from the importer: keep-alive means at most ``--concurrency`` of them,
not one TLS handshake per request.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_run import ROOT, config_file, data_file, ours, sandbox

sys.path.insert(0, str(ROOT / "tests"))
from tls_helpers import TlsFiles, make_tls_files


@contextmanager
def trusting(ca: Path) -> Iterator[None]:
    """``SSL_CERT_FILE`` set for the subprocesses started meanwhile (``ours`` passes our
    environment on to the importer)."""
    previous = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(ca)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = previous


def sandbox_stats(url: str, ca: Path | None) -> dict[str, Any]:
    context = None if ca is None else ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(f"{url}/sandbox/stats", context=context, timeout=30) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def one_run(cfg: Path, tls: TlsFiles | None, concurrency: int) -> dict[str, Any]:
    """Import ``cfg``'s file into a fresh sandbox; the run's figures plus the importer's
    connections (the stats read adds one of its own, taken off here)."""
    flags = () if tls is None else ("--tls-cert", str(tls.cert), "--tls-key", str(tls.key))
    with sandbox(*flags) as (url, _):
        assert url.startswith("https://" if tls else "http://"), url
        if tls is None:
            result = ours(cfg, url, concurrency, 0)
            stats = sandbox_stats(url, None)
        else:
            with trusting(tls.ca):
                result = ours(cfg, url, concurrency, 0)
            stats = sandbox_stats(url, tls.ca)
    result["connections"] = stats["connections"] - 1
    result["stored"] = stats["stored"]
    return result


def compare(events: int, runs: int, concurrency: int, work: Path) -> dict[str, Any]:
    """``runs`` alternating imports over http and https: medians, ratio, connections."""
    tls = make_tls_files(work / "tls")
    cfg = config_file(work, data_file(work, events))
    results: dict[str, list[dict[str, Any]]] = {"http": [], "https": []}
    for _ in range(runs):
        results["http"].append(one_run(cfg, None, concurrency))
        results["https"].append(one_run(cfg, tls, concurrency))
    medians = {scheme: statistics.median(r["eps"] for r in rs) for scheme, rs in results.items()}
    return {
        "events": events,
        "concurrency": concurrency,
        "http_eps": medians["http"],
        "https_eps": medians["https"],
        "ratio": medians["https"] / medians["http"],
        "most_connections": max(r["connections"] for rs in results.values() for r in rs),
        "runs": {
            scheme: [{k: r[k] for k in ("eps", "stored", "connections")} for r in rs]
            for scheme, rs in results.items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = compare(args.events, args.runs, args.concurrency, Path(tmp))
    print(
        f"https vs http, {args.events:,} events, concurrency {args.concurrency}, "
        f"{args.runs} run(s) each, alternating, a fresh sandbox per run"
    )
    for scheme, results in r["runs"].items():
        print(
            f"  {scheme:<5} {r[scheme + '_eps']:8,.0f} events/s  runs "
            + ", ".join(f"{x['eps']:,.0f}" for x in results)
            + "  stored "
            + ", ".join(f"{x['stored']:,}" for x in results)
            + "  connections "
            + ", ".join(str(x["connections"]) for x in results)
        )
    print(f"  ratio https/http {r['ratio']:.2f}")
    most = r["most_connections"]
    verdict = "ok" if most <= args.concurrency else "MORE THAN THE CONCURRENCY"
    print(f"  most connections in a run: {most} (limit {args.concurrency}): {verdict}")
    if most > args.concurrency:
        sys.exit(1)


if __name__ == "__main__":
    main()
