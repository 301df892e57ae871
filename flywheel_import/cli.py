"""Command line: flags -> library call -> one-line errors and exit codes.

Exit codes: 0 every row accepted (or valid, in a dry run), 1 finished with rejects,
2 usage/config/input error (one line, no traceback), 3 the run cannot go on (key refused,
wrong URL or proxy, API unreachable or untrusted; the summary says what is still to do),
4 an unexpected internal error (a bug: set FLYWHEEL_IMPORT_DEBUG=1 for the traceback),
130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from . import __version__, logs
from .errors import FlywheelImportError, UsageError
from .pipeline import validate
from .report import Report
from .shards import parse_shard
from .stops import EXIT_CODES, StoppedAtOnce, run_with_signals


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the YAML mapping file")
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="files, globs or directories (replace source.path)",
    )
    p.add_argument("--rejects", metavar="PATH", help="rejects file (.csv, .parquet, .ndjson)")
    p.add_argument("--report", metavar="PATH", help="write the report as JSON here")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar on stderr (a progress line every --progress-every "
        "seconds instead, as when stderr is not a terminal)",
    )
    p.add_argument(
        "--progress-every",
        type=_positive,
        metavar="SECONDS",
        default=logs.DEFAULT_PROGRESS_EVERY,
        help="seconds between progress lines when there is no bar (default 30)",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr lines as text, or one JSON object per line for log "
        "collectors (the summary is then also logged)",
    )
    p.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        type=str.upper,
        help="the least severe lines shown",
    )
    p.add_argument(
        "--quiet", "-q", action="store_true", help="warnings and errors only: no progress, no notes"
    )


def build_parser() -> argparse.ArgumentParser:
    from .sandbox.cli import add_sandbox_arguments

    parser = argparse.ArgumentParser(
        prog="flywheel-import",
        description="Import CSV/TSV/Parquet/NDJSON exports into the Flywheel events API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="dry run: read and validate every row, send nothing")
    _common(v)

    r = sub.add_parser("run", help="send every valid row to the API")
    _common(r)
    r.add_argument("--dry-run", action="store_true", help="validate only (same as validate)")
    r.add_argument(
        "--sandbox",
        action="store_true",
        help="start a local sandbox API and import into it (no account needed)",
    )
    r.add_argument(
        "--api-url", metavar="URL", help="API base URL (overrides api.url and FLYWHEEL_API_URL)"
    )
    r.add_argument(
        "--rate",
        type=_non_negative,
        metavar="N",
        help="requests per second (overrides api.rate_limit; 0 = no limit)",
    )
    r.add_argument(
        "--concurrency",
        type=_positive_int,
        metavar="N",
        help="requests in flight (overrides api.concurrency)",
    )
    r.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow plain http to a non-loopback host (sends the key in clear)",
    )
    r.add_argument(
        "--state",
        metavar="PATH",
        help="the resume ledger (overrides output.state; default "
        ".flywheel-import/state.db beside the config)",
    )
    r.add_argument(
        "--restart",
        action="store_true",
        help="ignore what the ledger says was already settled: send everything",
    )
    r.add_argument(
        "--shard",
        metavar="K/N",
        help="send only shard K of N (0 <= K < N; rows split by event id), with "
        "its own ledger; give it 1/N of the rate",
    )
    r.add_argument(
        "--processes",
        type=_positive_int,
        metavar="N",
        help="run N shards as local processes (rate and concurrency split among "
        "them) and merge their rejects and reports",
    )

    s = sub.add_parser("sandbox", help="run a local Flywheel-compatible events API")
    add_sandbox_arguments(s)
    _add_init_and_schema(sub)
    return parser


def _add_init_and_schema(sub: Any) -> None:
    from .init import PRESETS

    i = sub.add_parser("init", help="write a commented mapping inferred from a sample of a file")
    i.add_argument(
        "input",
        metavar="INPUT",
        help="an export file (or glob, folder, URL: the first file is sampled)",
    )
    i.add_argument(
        "-o",
        "--output",
        default="mapping.yaml",
        metavar="PATH",
        help="where to write the mapping (default mapping.yaml; - for stdout)",
    )
    i.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="start from the known layout of that tool's export",
    )
    i.add_argument("--force", action="store_true", help="replace an existing output file")
    sub.add_parser("schema", help="print the mapping file's JSON Schema")


def _at_least(kind: Callable[[str], float], minimum: float) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` (int or float) no smaller than ``minimum``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a valid number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}")
        return value

    return parse


_non_negative = _at_least(float, 0)
_positive = _at_least(float, 0.01)
_positive_int = _at_least(int, 1)


def main(argv: Sequence[str] | None = None) -> int:
    logs.configure()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed its one-line usage error
        return 0 if e.code == 0 else 2
    logs.configure(
        getattr(args, "log_format", "text"),
        level=getattr(args, "log_level", "INFO"),
        quiet=getattr(args, "quiet", False),
    )
    try:
        return _dispatch(args)
    except FlywheelImportError as e:
        _note(f"flywheel-import: error: {e}", logging.ERROR)
        if isinstance(e.report, Report):  # a run that had started: what was done, what is not
            _summary(e.report.summary())
        return e.exit_code
    except BrokenPipeError:  # the reader of the sandbox's output went away: not an error
        _silence(sys.stdout)
        _silence(sys.stderr)
        return 0
    except StoppedAtOnce as e:
        _note(
            f"flywheel-import: stopped at once by a second {e.signal_name}; the ledger "
            f"holds what was settled; to resume: {_command_line()}",
            logging.WARNING,
        )
        return e.exit_code
    except KeyboardInterrupt:
        _note(
            "flywheel-import: interrupted; the rejects and report gathered so far were written",
            logging.WARNING,
        )
        return 130
    except Exception as e:  # a bug: one line unless asked for the traceback
        if os.environ.get("FLYWHEEL_IMPORT_DEBUG"):
            raise
        _note(
            f"flywheel-import: internal error ({type(e).__name__}): {e} "
            "(set FLYWHEEL_IMPORT_DEBUG=1 for the traceback)",
            logging.ERROR,
        )
        return 4


_log = logging.getLogger(logs.LOGGER)


def _note(text: str, level: int) -> None:
    """A line of the command's own on stderr: as a log record when the lines are JSON (so
    every stderr line parses), else as plain text, unless ``--quiet`` hides its level."""
    if logs.is_json():
        _log.log(level, "%s", text.removeprefix("flywheel-import: "))
    elif _log.isEnabledFor(level):
        _say(text, sys.stderr)


def _summary(text: str) -> None:
    """The run's summary on stdout, as always; with JSON logs, its lines are logged too, so a
    collector that reads only stderr sees them."""
    _say(text, sys.stdout)
    if logs.is_json():
        for line in text.splitlines():
            if line.strip():
                _log.info("%s", line.strip(), extra={"summary": True})


def _say(text: str, stream: TextIO) -> None:
    """Print and flush at once; a reader that went away (``| head``) is not an error.

    The flush makes a broken pipe surface here, where it is ignored, rather than at exit,
    where Python would print "Exception ignored" and exit 120; the caller still returns the
    run's own exit code (1 when rows were rejected, even if nobody reads the summary).
    """
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        _silence(stream)


def _silence(stream: TextIO) -> None:
    """Point a stream whose reader went away at /dev/null, so the flush at exit succeeds."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not backed by a file (captured, closed)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "sandbox":
        from .sandbox.cli import run_sandbox_command

        return run_sandbox_command(args)
    if args.command in ("init", "schema"):
        return _init_or_schema(args)
    bar = not args.no_progress and not args.quiet and sys.stderr.isatty()
    # Where nobody watches a bar (a pod, a cron job), a progress line now and then instead.
    lines = None if bar or args.quiet else logs.ProgressLog(args.progress_every)
    common: dict[str, Any] = {
        "rejects": args.rejects,
        "report": args.report,
        "progress": bar,
        "on_progress": lines,
    }
    inputs = args.inputs or None
    if args.command == "run" and args.dry_run and (args.shard or args.processes):
        raise UsageError(
            "a dry run validates every row in one process: drop --shard and "
            "--processes (flywheel-import validate)"
        )
    if args.command == "validate" or args.dry_run:
        report = validate(args.config, inputs, **common)
        _summary(report.summary())
        return report.exit_code
    options: dict[str, Any] = {
        **common,
        "rate": args.rate,
        "concurrency": args.concurrency,
        "allow_insecure_http": args.allow_insecure_http,
        "restart": args.restart,
    }
    if args.shard is not None or args.processes is not None:
        code = _sharded(args, inputs)
        if code is not None:
            return code
        options["shard"] = parse_shard(args.shard) if args.shard is not None else None
    if args.sandbox:
        return _run_in_sandbox(args.config, inputs, options)
    report = run_with_signals(
        args.config, inputs, api_url=args.api_url, state=args.state, **options
    )
    _summary(report.summary())
    return _exit_code(report)


def _init_or_schema(args: argparse.Namespace) -> int:
    from .init import draft_mapping
    from .init.schema import schema_text

    if args.command == "schema":
        _say(schema_text().rstrip("\n"), sys.stdout)
        return 0
    to_stdout = args.output == "-"
    out = None if to_stdout else Path(args.output)
    if out is not None and out.exists() and not args.force:
        raise UsageError(f"{out}: already exists; --force replaces it")
    drafted = draft_mapping(args.input, preset=args.preset, output=out)
    if drafted.detected is not None:
        _note(
            f"flywheel-import: the columns match preset {drafted.detected.name} "
            f"({drafted.detected.what}); using its layout",
            logging.INFO,
        )
    if out is None:
        sys.stdout.write(drafted.text)
        sys.stdout.flush()
        return 0
    _write_new(out, drafted.text, replace=args.force)
    _note(
        f"flywheel-import: wrote {out}; check the lines marked CHECK, then: "
        f"flywheel-import validate {shlex.quote(str(out))}",
        logging.INFO,
    )
    return 0


def _write_new(path: Path, text: str, *, replace: bool) -> None:
    """Write through a temporary name; without ``replace``, never over a file that appeared
    meanwhile."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise UsageError(f"{path}: already exists; --force replaces it") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot write: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _sharded(args: argparse.Namespace, inputs: list[str] | None) -> int | None:
    """``--shard``/``--processes`` checked; ``--processes N`` (N > 1) run and merged here
    (its exit code); None: go on as one process."""
    from .shards import child_argv, run_processes

    if args.shard is not None:
        parse_shard(args.shard)
    clash = (
        "--shard"
        if args.shard is not None and args.processes is not None
        else "--sandbox"
        if args.sandbox
        else None
    )
    if clash is not None and args.processes is not None:
        raise UsageError(f"--processes cannot be combined with {clash}")
    if args.sandbox and args.shard is not None:
        raise UsageError(
            "--shard cannot be combined with --sandbox (a fresh sandbox per "
            "shard would hold only that shard's events)"
        )
    if args.processes is None or args.processes == 1:
        return None
    from .pipeline import as_config, read_key, resolve_url

    cfg = as_config(args.config)  # config, URL and key errors: one line here, not N times
    resolve_url(cfg, args.api_url, allow_insecure_http=args.allow_insecure_http)
    read_key(cfg)
    # Each shard's stderr is passed on line by line with its name, so it logs as text;
    # how much it says and how often follows this command.
    logging_flags = [
        "--log-level",
        args.log_level,
        "--progress-every",
        repr(args.progress_every),
        *(["--quiet"] if args.quiet else []),
    ]
    code, report = run_processes(
        [*child_argv(args, inputs or []), *logging_flags],
        args.processes,
        config=args.config,
        rejects=args.rejects,
        report=args.report,
        rate=args.rate,
        concurrency=args.concurrency,
        err=sys.stderr,
    )
    _summary(report.summary())
    if code in EXIT_CODES.values():
        _note(f"to resume: {_command_line()}", logging.WARNING)
    return int(code)


def _exit_code(report: Report) -> int:
    """130/143 after a clean stop on a signal (with the command that resumes), else the
    report's own code."""
    if report.stopped in EXIT_CODES:
        _note(f"to resume: {_command_line()}", logging.WARNING)
        return EXIT_CODES[report.stopped]
    return report.exit_code


def _command_line() -> str:
    return shlex.join(["flywheel-import", *sys.argv[1:]])


def _run_in_sandbox(config: str, inputs: list[str] | None, options: dict[str, Any]) -> int:
    from .sandbox import Sandbox

    db = Path(tempfile.mkdtemp(prefix="flywheel-sandbox-")) / "events.db"
    with Sandbox(db=db) as sb:
        _note(f"sandbox: {sb.url} (database {sb.db_path})", logging.INFO)
        # A fresh API each time, so a throwaway ledger: the command behaves the same each run.
        report: Report = run_with_signals(
            config, inputs, api_url=sb.url, key=sb.key, state=db.parent / "state.db", **options
        )
        stats = sb.stats()
    _summary(
        f"{report.summary()}\n"
        f"sandbox received {stats.get('requests', 0):,} requests and stored "
        f"{stats.get('stored', 0):,} events ({stats.get('duplicates', 0):,} duplicates); "
        f"database: {db}\n"
        f"  see them: flywheel-import sandbox --export events.ndjson --db {db}"
    )
    return report.exit_code
