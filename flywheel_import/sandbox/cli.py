"""``flywheel-import sandbox`` / ``python -m flywheel_import.sandbox``: flags -> server.

Kept thin: the flags build a :class:`SandboxConfig`, then either ``--export`` dumps a database
or the server runs in the foreground until Ctrl-C or SIGTERM, after which every acknowledged
event is on disk. Usage problems raise :class:`UsageError` for the caller to report.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from flywheel_import.errors import FlywheelImportError, UsageError

from .config import (
    DEFAULT_HOST,
    DEFAULT_KEY,
    DEFAULT_PORT,
    DEFAULT_SLOW_MS,
    SandboxConfig,
    temporary_db_path,
)
from .server import SandboxServer, loop_factory
from .store import export_ndjson


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sandbox's flags to ``parser``."""
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port, 0 for any free one (%(default)s)"
    )
    parser.add_argument(
        "--key", default=DEFAULT_KEY, help="API key to accept as Authorization (%(default)s)"
    )
    parser.add_argument(
        "--db", type=Path, help="SQLite file of stored events (default: a new temporary file)"
    )
    parser.add_argument(
        "--rate-limit", type=float, metavar="N", help="token bucket refill, requests/s (off)"
    )
    parser.add_argument(
        "--burst", type=int, metavar="N", help="token bucket capacity (max(1, ceil(N/10)))"
    )
    parser.add_argument(
        "--error-rate",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of requests answered 500 or 503 (%(default)s)",
    )
    parser.add_argument(
        "--drop-rate",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of requests whose connection is closed unanswered (%(default)s)",
    )
    parser.add_argument(
        "--stored-lost-rate",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of valid events stored, then their connection closed unanswered "
        "(%(default)s)",
    )
    parser.add_argument(
        "--slow-rate",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of valid events stored at once but answered after --slow-ms (%(default)s)",
    )
    parser.add_argument(
        "--slow-ms",
        type=float,
        default=DEFAULT_SLOW_MS,
        metavar="N",
        help="how long a --slow-rate answer is held back (%(default)g)",
    )
    parser.add_argument(
        "--throttle-rate",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of requests answered 429 with Retry-After: 1, whatever the request "
        "rate (%(default)s)",
    )
    parser.add_argument(
        "--reject-rate",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of valid events answered 400 VALIDATION_ERROR (%(default)s)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        metavar="N",
        help="delay before each answer of /v1/events (%(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the fault sequence (%(default)s)"
    )
    parser.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="serve https with this certificate (chain)"
    )
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    parser.add_argument(
        "--export",
        type=Path,
        metavar="OUT.ndjson",
        help="write the events of --db as NDJSON ('-' for stdout) and exit",
    )


def run_sandbox_command(args: argparse.Namespace) -> int:
    """Run the ``sandbox`` command; returns the exit code."""
    if args.export is not None:
        return _export(args.db, args.export)
    config = SandboxConfig(
        db_path=args.db if args.db is not None else temporary_db_path(),
        key=args.key,
        host=args.host,
        port=args.port,
        rate_limit=args.rate_limit,
        burst=args.burst,
        error_rate=args.error_rate,
        drop_rate=args.drop_rate,
        stored_lost_rate=args.stored_lost_rate,
        slow_rate=args.slow_rate,
        slow_ms=args.slow_ms,
        throttle_rate=args.throttle_rate,
        reject_rate=args.reject_rate,
        latency_ms=args.latency_ms,
        seed=args.seed,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve(config))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m flywheel_import.sandbox",
        description="A local Flywheel-compatible events API, for tests and import rehearsals.",
    )
    add_sandbox_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_sandbox_command(args)
    except FlywheelImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


async def _serve(config: SandboxConfig) -> None:
    try:
        server = await SandboxServer.start(config)
    except OSError as exc:
        raise UsageError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(
        "Flywheel sandbox running\n"
        f"  url:    {server.url}\n"
        f"  key:    {config.key}   (send 'Authorization: {config.key}' and 'Auth-Type: api')\n"
        f"  db:     {config.db_path}\n"
        f"  tls:    {config.tls_cert if config.tls else 'off'}\n"
        f"  seed:   {config.seed}\n"
        f"  faults: {config.describe_faults()}\n"
        "Press Ctrl-C to stop.",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    stats = server.stats()
    print(
        f"Stopped: {stats['stored']} stored, {stats['duplicates']} duplicates, "
        f"{stats['stored_total']} in {config.db_path}, {stats['connections']} connections",
        flush=True,
    )


def _export(db: Path | None, out: Path) -> int:
    if db is None:
        raise UsageError("--export needs --db, the database to export")
    if not db.is_file():
        raise UsageError(f"--db {db}: no such sandbox database")
    if str(out) == "-":
        count = export_ndjson(db, sys.stdout.buffer)
        sys.stdout.flush()
    else:
        with out.open("wb") as handle:
            count = export_ndjson(db, handle)
    print(f"Exported {count} events from {db} to {out}", file=sys.stderr)
    return 0
