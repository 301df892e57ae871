"""Wires the stages: inputs -> preflight -> read -> prepare -> (send) -> rejects/report.

The one module that knows the order of the stages. Preflight reads every file once before
anything is sent or written, so config/data mismatches stop the run with nothing done.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import polars as pl
from tqdm import tqdm

from .config import Config, load_config
from .dedupe import SeenIds
from .errors import FlywheelImportError, UsageError
from .inputs import SourceFile, expand
from .mapping import Plan, build_plan, wants_text_kind
from .prefetch import ordered_map, prefetch
from .prepare import Examined, Prepared, examine, settle
from .profile import FileProfile, profile
from .rejects import RejectsWriter
from .report import Report, write_json_atomic
from .sources import RawBatch, read_batches

if TYPE_CHECKING:
    from .sender import Sender


@dataclass(slots=True)
class Job:
    """One input file, profiled and planned."""

    profile: FileProfile
    plan: Plan

    @property
    def source(self) -> SourceFile:
        return self.profile.source


def as_config(config: Config | str | Path) -> Config:
    return config if isinstance(config, Config) else load_config(config)


def output_paths(cfg: Config, rejects: str | Path | None, report: str | Path | None
                 ) -> tuple[Path | None, Path | None]:
    """CLI paths are relative to the working directory; config paths to the config file."""
    rej = Path(rejects) if rejects else (cfg.resolve(cfg.output.rejects)
                                          if cfg.output.rejects else None)
    rep = Path(report) if report else (cfg.resolve(cfg.output.report)
                                        if cfg.output.report else None)
    for path in (rej, rep):
        if path is not None:
            _check_writable(path)
    return rej, rep


def _check_writable(path: Path) -> None:
    """Fail before reading anything if an output cannot be written where it was asked for."""
    if path.is_dir():
        raise UsageError(f"{path}: is a folder; give a file name for this output")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{path}: cannot create its folder: {e.strerror or e}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: its folder is not writable")


def find_inputs(cfg: Config, inputs: Sequence[str | Path] | None,
                outputs: Sequence[Path | None] = ()) -> list[SourceFile]:
    skip = [p for p in outputs if p is not None]
    if inputs:
        return expand(inputs, forced=cfg.source.format, skip=skip)
    return expand(cfg.source_paths(), base=cfg.base_dir, forced=cfg.source.format, skip=skip)


def preflight(cfg: Config, files: list[SourceFile], *, progress: bool) -> list[Job]:
    """Profile and plan every file; raises before anything is sent or written."""
    wants = wants_text_kind(cfg)
    total = sum(f.size() for f in files if f.format != "parquet")
    jobs: list[Job] = []
    with tqdm(total=total, unit="B", unit_scale=True, desc="preflight", file=sys.stderr,
              disable=not progress or total == 0, leave=False) as bar:
        for f in files:
            prof = profile(f, cfg.source, wants_kind=wants, on_bytes=bar.update)
            jobs.append(Job(prof, build_plan(cfg, prof)))
    return jobs


def prepared_batches(cfg: Config, jobs: list[Job], seen: SeenIds, *, bodies: bool = True
                     ) -> Iterator[Prepared]:
    for job in jobs:
        raws = prefetch(read_batches(job.source, cfg.source.csv, cfg.source.batch_rows,
                                     job.profile.read_schema))
        # Batches are examined two at a time (polars and numpy release the GIL) and settled
        # in order, so "the first of two equal ids wins" still means the first in the file.
        def work(raw: RawBatch, plan: Plan = job.plan) -> Examined:
            return examine(raw, plan, cfg, bodies=bodies)

        for examined in ordered_map(work, raws, workers=2):
            yield settle(examined, cfg, seen, bodies=bodies)


@dataclass(slots=True)
class Session:
    """What validate and run share: the resolved outputs, the planned files, the tallies."""

    cfg: Config
    jobs: list[Job]
    result: Report
    writer: RejectsWriter | None
    report_path: Path | None
    started: float

    @property
    def total_rows(self) -> int:
        return sum(j.profile.rows for j in self.jobs)

    def take(self, prep: Prepared) -> None:
        """Count a prepared batch and write its rejects."""
        self.result.rows_read += prep.rows_read
        self.result.valid += prep.send.height
        self.reject(prep.rejected)

    def reject(self, rows: pl.DataFrame) -> None:
        self.result.record(rows)
        if self.writer is not None:
            self.writer.add(rows)

    def finish(self) -> None:
        """Write what was gathered, also after a failure: nothing read is lost."""
        self.result.duration_s = time.perf_counter() - self.started
        if self.writer is not None:
            self.result.rejects_path = str(self.writer.close())
        if self.report_path is not None:
            write_json_atomic(self.report_path, self.result.to_dict())


def open_session(cfg: Config, inputs: Sequence[str | Path] | None,
                 rejects: str | Path | None, report: str | Path | None, *, progress: bool,
                 dry_run: bool, started: float) -> Session:
    """Outputs checked, inputs found, every file profiled and planned: nothing read yet is
    lost and nothing is sent or written before this returns."""
    rejects_path, report_path = output_paths(cfg, rejects, report)
    files = find_inputs(cfg, inputs, (rejects_path, report_path))
    jobs = preflight(cfg, files, progress=progress)
    return Session(cfg, jobs, Report(dry_run=dry_run, files=len(files)),
                   RejectsWriter(rejects_path) if rejects_path else None, report_path, started)


def validate(config: Config | str | Path, inputs: Sequence[str | Path] | None = None, *,
             rejects: str | Path | None = None, report: str | Path | None = None,
             progress: bool = False) -> Report:
    """Dry run: read, map and validate every row; write rejects and report; send nothing."""
    cfg = as_config(config)
    run = open_session(cfg, inputs, rejects, report, progress=progress, dry_run=True,
                       started=time.perf_counter())
    try:
        with tqdm(total=run.total_rows, unit="rows", desc="validate", file=sys.stderr,
                  disable=not progress, smoothing=0.1) as bar:
            for prep in prepared_batches(cfg, run.jobs, SeenIds(), bodies=False):
                run.take(prep)
                bar.update(prep.rows_read)
        run.result.completed = True
    except FlywheelImportError as e:
        run.result.error = str(e)
        raise
    finally:
        run.finish()
    return run.result


# --- sending ---------------------------------------------------------------------------------

_LOOPBACK = {"localhost", "::1"}


def resolve_url(cfg: Config, api_url: str | None, *, allow_insecure_http: bool) -> str:
    """``--api-url`` > ``FLYWHEEL_API_URL`` > ``api.url``; plain http only to loopback."""
    url = api_url or os.environ.get("FLYWHEEL_API_URL") or cfg.api.url
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"API URL must look like https://host[:port], got {url!r}")
    host = parsed.hostname
    loopback = host in _LOOPBACK or host.startswith("127.")
    if parsed.scheme == "http" and not loopback and not allow_insecure_http:
        raise UsageError(f"refusing to send the API key over plain http to {host}: use https, "
                         "or pass --allow-insecure-http if you really mean it")
    return url


def read_key(cfg: Config) -> str:
    key = os.environ.get(cfg.api.key_env, "").strip()
    if not key:
        raise UsageError(f"no API key: set the environment variable {cfg.api.key_env} "
                         "(api.key_env names it)")
    return key


def run_import(config: Config | str | Path, inputs: Sequence[str | Path] | None = None,
               **options: Any) -> Report:
    """Import every row: the blocking form of :func:`run_import_async` (same options)."""
    return anyio.run(functools.partial(run_import_async, config, inputs, **options),
                     backend="asyncio")


async def run_import_async(
    config: Config | str | Path, inputs: Sequence[str | Path] | None = None, *,
    rejects: str | Path | None = None, report: str | Path | None = None,
    progress: bool = False, dry_run: bool = False, api_url: str | None = None,
    key: str | None = None, rate: float | None = None, concurrency: int | None = None,
    allow_insecure_http: bool = False,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> Report:
    """Read, validate and send every valid row once; write rejects and report.

    ``key`` overrides the environment (for embedding); ``sleep`` is injectable so tests of
    retries do not wait. Raises :class:`ApiAbort` when the API refuses the key (the rejects and
    the report gathered so far are written first).
    """
    if dry_run:
        return await anyio.to_thread.run_sync(functools.partial(
            validate, config, inputs, rejects=rejects, report=report, progress=progress))
    # The network stack loads only when sending (a dry run stays lighter).
    from .dispatch import Settling, dispatch
    from .sender import Sender, SendSettings

    started = time.perf_counter()
    cfg = as_config(config)
    url = resolve_url(cfg, api_url, allow_insecure_http=allow_insecure_http)
    settings = SendSettings(
        url=url, key=key or read_key(cfg),
        concurrency=concurrency or cfg.api.concurrency, timeout=cfg.api.timeout,
        max_attempts=cfg.api.max_attempts,
        rate_limit=cfg.api.rate_limit if rate is None else rate, burst=cfg.api.burst)
    run = await anyio.to_thread.run_sync(functools.partial(
        open_session, cfg, inputs, rejects, report, progress=progress, dry_run=False,
        started=started))
    result = run.result
    bar = tqdm(total=run.total_rows, unit="rows", desc="import", file=sys.stderr,
               disable=not progress, smoothing=0.1)
    sender = Sender(settings, sleep=sleep) if sleep else Sender(settings)
    done = [0]  # rows with their final outcome: rejected on reading, or answered by the API

    def on_read(prep: Prepared) -> None:
        done[0] += prep.rows_read - prep.send.height
        run.take(prep)

    def on_outcome(outcome: Any) -> None:
        done[0] += 1
        result.accepted += outcome.accepted

    def on_settled(batch: Settling) -> None:
        """Write the API's rejects of a batch (also of one cut short by a stop)."""
        if batch.rejected_at:
            run.reject(batch.api_rejects())

    async def ticker() -> None:
        while True:
            await anyio.sleep(0.25)
            _tick(bar, result, sender, done[0])

    try:
        async with sender, anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            try:
                await dispatch(prepared_batches(cfg, run.jobs, SeenIds()), sender.send,
                               concurrency=settings.concurrency, ahead=_AHEAD,
                               on_read=on_read, on_settled=on_settled, on_outcome=on_outcome,
                               on_unsettled=on_settled)
            finally:
                tg.cancel_scope.cancel()
        result.completed = True
    except BaseException as e:
        err = _first_error(e)
        result.error = str(err) if err is not None else type(e).__name__
        if err is not None and err is not e:
            raise err from None
        raise
    finally:
        _tick(bar, result, sender, done[0])
        bar.close()
        result.sending = _sending(sender, started)
        run.finish()
    return result


#: Batches read ahead of the sending: bounds memory to a few batches whatever the API speed.
_AHEAD = 3


def _first_error(e: BaseException) -> BaseException | None:
    """The error to report out of an exception group (the API abort, an input error...)."""
    if isinstance(e, BaseExceptionGroup):
        for inner in e.exceptions:
            found = _first_error(inner)
            if found is not None:
                return found
        return None
    if isinstance(e, anyio.get_cancelled_exc_class()):
        return None
    return e


def _tick(bar: tqdm[Any], result: Report, sender: Sender, done: int) -> None:
    stats = sender.stats
    bar.n = done
    bar.set_postfix(accepted=stats.accepted, rejected=result.rejected,
                    retries=stats.retries, refresh=False)
    bar.refresh()


def _sending(sender: Sender, started: float) -> dict[str, Any]:
    snap = dict(sender.stats.snapshot())
    elapsed = time.perf_counter() - started
    snap["events_per_s"] = round(sender.stats.accepted / elapsed, 1) if elapsed > 0 else 0.0
    return snap
