"""Wires the stages: inputs -> preflight -> read -> prepare -> (send) -> rejects/report.

The one module that knows the order of the stages. Preflight reads every file once before
anything is sent or written, so config/data mismatches stop the run with nothing done.
"""

from __future__ import annotations

import contextlib
import functools
import logging
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
import numpy as np
import polars as pl
from tqdm import tqdm

from . import dedupe, watermark
from .config import Config, load_config
from .dedupe import SeenIds
from .errors import FlywheelImportError, UsageError
from .inputs import SourceFile, expand
from .ledger import Ledger
from .logs import Progress, ProgressCallback, ProgressFeed
from .mapping import Plan, build_plan, wants_text_kind
from .outbox import Outbox
from .prefetch import ordered_map, prefetch
from .prepare import Examined, Prepared, examine, settle
from .profile import FileProfile, profile, profile_json
from .rejects import RejectsWriter
from .report import Report, write_json_atomic
from .resume import Resume, destination
from .shards import Shard, check_shard, state_path
from .sources import RawBatch, read_batches
from .watermark import Watermark

log = logging.getLogger("flywheel_import")

if TYPE_CHECKING:
    from .sender import Sender


@dataclass(slots=True)
class Job:
    """One input file, profiled and planned."""

    profile: FileProfile
    plan: Plan
    watermark: Watermark | None = None

    @property
    def source(self) -> SourceFile:
        return self.profile.source


def as_config(config: Config | str | Path) -> Config:
    return config if isinstance(config, Config) else load_config(config)


def output_paths(
    cfg: Config, rejects: str | Path | None, report: str | Path | None
) -> tuple[Path | None, Path | None]:
    """CLI paths are relative to the working directory; config paths to the config file."""
    rej = (
        Path(rejects)
        if rejects
        else (cfg.resolve(cfg.output.rejects) if cfg.output.rejects else None)
    )
    rep = (
        Path(report) if report else (cfg.resolve(cfg.output.report) if cfg.output.report else None)
    )
    for path in (rej, rep):
        if path is not None:
            _check_writable(path)
    if rej is not None and rep is not None and _same_file(rej, rep):
        raise UsageError(
            f"{rep}: the rejects file and the report would be the same file "
            "(the report would replace the rejected rows); give each its own"
        )
    return rej, rep


def _check_writable(path: Path) -> None:
    """Fail before reading anything if an output cannot be written where it was asked for.

    Leaves no trace: a missing folder is created to prove it can be, then removed again (the
    writers create it for real), so a run refused later has changed nothing on disk.
    """
    if path.is_dir():
        raise UsageError(f"{path}: is a folder; give a file name for this output")
    folder = path.parent
    made: list[Path] = []  # innermost first: the order they can be removed in
    probe = folder
    while not probe.exists() and probe != probe.parent:
        made.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writable = os.access(folder, os.W_OK | os.X_OK)
    except OSError as e:
        raise UsageError(f"{path}: cannot create its folder: {e.strerror or e}") from None
    finally:
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()
    if not writable:
        raise UsageError(f"{path}: its folder is not writable")


def _same_file(a: Path, b: Path) -> bool:
    """Same file on disk (symlinks and hard links included), or the same path once resolved."""
    try:
        return a.samefile(b)
    except OSError:  # one of them does not exist yet
        return a.resolve() == b.resolve()


def find_inputs(cfg: Config, inputs: Sequence[str | Path] | None) -> list[SourceFile]:
    if inputs:
        return expand(inputs, forced=cfg.source.format)
    return expand(cfg.source_paths(), base=cfg.base_dir, forced=cfg.source.format)


def _refuse_outputs_among_inputs(
    files: Sequence[SourceFile], outputs: dict[str, Path | None]
) -> None:
    """Refuse an output that is also an input, before anything is read.

    Replacing it would lose rows: the rejects file fed back as an input is rewritten with
    only the rows rejected again (in a dry run, the fixed rows vanish; in a run stopped
    midway, the rows not yet sent). Whether it was named, matched by a glob or found in an
    input folder, and through whichever link, it is the same file.
    """
    for kind, out in outputs.items():
        if out is None or not out.exists():
            continue
        for f in files:
            if f.path is not None and _same_file(f.path, out):
                alt = out.with_name(f"{out.stem}-2{out.suffix}").name
                named = "" if f.path == out else f" (read as {f.path})"
                raise UsageError(
                    f"{out}: this {kind} file is also an input of this run{named} and would "
                    f"be replaced; write the {kind} elsewhere, e.g. --{kind} {alt}"
                )


def preflight(
    cfg: Config,
    files: list[SourceFile],
    *,
    progress: bool,
    mark: tuple[str, str] | None = None,
    watermarked: bool = False,
) -> list[Job]:
    """Profile and plan every file; raises before anything is sent or written. ``mark``:
    the watermark of the last completed run (a run with a ledger)."""
    wants = wants_text_kind(cfg)
    with_watermark = watermarked
    json_columns = list(cfg.mapping.properties.json_columns)
    total = sum(f.size() for f in files if f.format != "parquet")
    jobs: list[Job] = []
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc="preflight",
        file=sys.stderr,
        disable=not progress or total == 0,
        leave=False,
    ) as bar:
        for f in files:
            prof = profile(f, cfg.source, wants_kind=wants, on_bytes=bar.update)
            if json_columns:
                prof.json_shapes = profile_json(
                    f, cfg.source, json_columns, prof.schema, prof.native_csv
                )
            wm = watermark.plan(cfg, prof, mark) if with_watermark else None
            jobs.append(Job(prof, build_plan(cfg, prof), wm))
    return jobs


def prepared_batches(
    cfg: Config,
    jobs: list[Job],
    seen: SeenIds,
    *,
    bodies: bool = True,
    resume: Resume | None = None,
    shard: Shard | None = None,
) -> Iterator[Prepared]:
    for job in jobs:
        read = read_batches(
            job.source,
            cfg.source.csv,
            cfg.source.batch_rows,
            job.profile.read_schema,
            native=job.profile.native_csv,
        )
        raws = prefetch(resume.mask(read) if resume is not None else read)

        # Batches are examined two at a time (polars and numpy release the GIL) and settled
        # in order, so "the first of two equal ids wins" still means the first in the file.
        def work(
            raw: RawBatch, plan: Plan = job.plan, wm: Watermark | None = job.watermark
        ) -> Examined:
            return examine(raw, plan, cfg, bodies=bodies, watermark=wm, shard=shard)

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
    resume: Resume | None = None

    @property
    def total_rows(self) -> int:
        return sum(j.profile.rows for j in self.jobs)

    def take(self, prep: Prepared) -> None:
        """Count a prepared batch and write its rejects."""
        self.result.rows_read += prep.rows_read
        self.result.valid += prep.send.height
        self.result.skipped_watermark += prep.skipped_watermark
        self.result.skipped_shard += prep.skipped_shard
        if prep.renames is not None:
            self.result.record_names(prep.renames)
        self.reject(prep.rejected, owned=True)
        if self.resume is not None:
            self.resume.saw_watermark(prep.watermark_max)
            self.resume.settle(
                prep.source,
                prep.rejected.get_column("_row"),
                accepted=0,
                rejected=prep.rejected.height,
            )

    def reject(self, rows: pl.DataFrame, *, owned: bool = False) -> None:
        """Count and stage rejected rows; ``owned``: see :meth:`RejectsWriter.add`."""
        self.result.record(rows)
        if self.writer is not None:
            tagged = self.resume.tag(rows) if self.resume is not None else rows
            self.writer.add(tagged, owned=owned)

    def finish(self) -> None:
        """Write what was gathered, also after a failure: nothing read is lost.

        A run that failed before taking a single row gathered nothing, and then writes
        nothing: replacing the outputs of an earlier run with empty ones would lose them.
        """
        self.result.duration_s = time.perf_counter() - self.started
        if not self.result.completed and not self.result.rows_read and not self.result.rejected:
            if self.writer is not None:
                self.writer.discard()
            return
        if self.writer is not None:
            self.result.rejects_path = str(self.writer.close())
        if self.report_path is not None:
            write_json_atomic(self.report_path, self.result.to_dict())


def open_session(
    cfg: Config,
    inputs: Sequence[str | Path] | None,
    rejects: str | Path | None,
    report: str | Path | None,
    *,
    progress: bool,
    dry_run: bool,
    started: float,
    ledger: tuple[Path, str] | None = None,
    restart: bool = False,
) -> Session:
    """Outputs checked, inputs found, every file profiled and planned: nothing read yet is
    lost and nothing is sent or written before this returns.

    With a ``ledger`` (its path and the destination: a run that resumes), files already
    imported are left out and the rejects file gathers the whole import's rejects. The
    ledger is locked here (a second process is refused before reading); a failure before
    this returns leaves no new state file behind.
    """
    rejects_path, report_path = output_paths(cfg, rejects, report)
    files = find_inputs(cfg, inputs)
    _refuse_outputs_among_inputs(files, {"rejects": rejects_path, "report": report_path})
    if ledger is None:
        jobs = preflight(cfg, files, progress=progress)
        writer = RejectsWriter(rejects_path) if rejects_path is not None else None
        return Session(
            cfg, jobs, Report(dry_run=dry_run, files=len(files)), writer, report_path, started
        )
    book = Ledger(*ledger)
    try:
        resume = Resume(book, cfg, files, restart=restart)
        jobs = preflight(
            cfg,
            resume.todo,
            progress=progress,
            mark=resume.mark,
            watermarked=resume.watermark is not None,
        )
        book.record_plans()
    except BaseException:
        book.close(discard=True)
        raise
    for note in resume.notes:
        log.warning("%s", note)
    writer = resume.rejects_writer(rejects_path) if rejects_path is not None else None
    return Session(
        cfg,
        jobs,
        Report(dry_run=dry_run, files=len(resume.todo)),
        writer,
        report_path,
        started,
        resume,
    )


def validate(
    config: Config | str | Path,
    inputs: Sequence[str | Path] | None = None,
    *,
    rejects: str | Path | None = None,
    report: str | Path | None = None,
    progress: bool = False,
    on_progress: ProgressCallback | None = None,
) -> Report:
    """Dry run: read, map and validate every row; write rejects and report; send nothing.

    ``on_progress`` is called with a :class:`~.logs.Progress` at most every 0.25 s (once per
    batch read at most, and once at the end); an exception in it is logged once and ignored.
    """
    cfg = as_config(config)
    run = open_session(
        cfg, inputs, rejects, report, progress=progress, dry_run=True, started=time.perf_counter()
    )
    seen = seen_ids(run)
    feed = ProgressFeed(on_progress)
    try:
        with _bar(run.total_rows, "validate", progress) as bar:
            for prep in prepared_batches(cfg, run.jobs, seen, bodies=False):
                run.take(prep)
                bar.update(prep.rows_read)
                feed.push(_checked(run))
        run.result.completed = True
        feed.push(_checked(run), force=True)
    except FlywheelImportError as e:
        run.result.error = str(e)
        raise
    finally:
        seen.close()
        run.finish()
    return run.result


def _checked(run: Session) -> Progress:
    """A dry run's progress: rows read, valid (as ``accepted``) and rejected so far."""
    r = run.result
    return Progress(
        rows_done=r.rows_read,
        rows_total=run.total_rows,
        accepted=r.valid,
        rejected=r.rejected,
        retries=0,
        throttled=0,
        elapsed_s=time.perf_counter() - run.started,
    )


def seen_ids(run: Session) -> SeenIds:
    """The run's duplicate check: past the memory bound its fingerprints spill into a private
    temporary folder, removed when the run ends (the caller closes it)."""
    return SeenIds(None, memory_bytes=dedupe.DEFAULT_MEMORY_BYTES, expected=run.total_rows)


# --- sending ---------------------------------------------------------------------------------


def resolve_url(cfg: Config, api_url: str | None, *, allow_insecure_http: bool) -> str:
    """``--api-url`` > ``FLYWHEEL_API_URL`` > ``api.url``; plain http only to loopback.

    Loopback is ``localhost``, 127.0.0.0/8 and ``::1`` by address, never by prefix: a name such
    as ``127.evil.example`` is remote. A URL carrying ``user:password@`` is refused (the key has
    its own header) and never echoed.
    """
    from .urls import is_loopback, redact_userinfo

    url = api_url or os.environ.get("FLYWHEEL_API_URL") or cfg.api.url
    shape = f"API URL must look like https://host[:port], got {redact_userinfo(url)!r}"
    try:
        parsed = urlsplit(url)
        host, _ = parsed.hostname, parsed.port  # a port that is not a number raises
    except ValueError:
        raise UsageError(shape) from None
    if parsed.scheme not in ("http", "https") or not host:
        raise UsageError(shape)
    if parsed.username is not None or parsed.password is not None:
        raise UsageError(
            "API URL must not carry a user or password (the key is sent in its "
            f"own header): got {redact_userinfo(url)!r}"
        )
    if parsed.scheme == "http" and not is_loopback(host) and not allow_insecure_http:
        raise UsageError(
            f"refusing to send the API key over plain http to {host}: use https, "
            "or pass --allow-insecure-http if you really mean it"
        )
    return url


def read_key(cfg: Config) -> str:
    key = os.environ.get(cfg.api.key_env, "").strip()
    if not key:
        raise UsageError(
            f"no API key: set the environment variable {cfg.api.key_env} (api.key_env names it)"
        )
    return key


def run_import(
    config: Config | str | Path, inputs: Sequence[str | Path] | None = None, **options: Any
) -> Report:
    """Import every row: the blocking form of :func:`run_import_async` (same options)."""
    return anyio.run(
        functools.partial(run_import_async, config, inputs, **options), backend="asyncio"
    )


async def run_import_async(
    config: Config | str | Path,
    inputs: Sequence[str | Path] | None = None,
    *,
    rejects: str | Path | None = None,
    report: str | Path | None = None,
    progress: bool = False,
    dry_run: bool = False,
    api_url: str | None = None,
    key: str | None = None,
    rate: float | None = None,
    concurrency: int | None = None,
    allow_insecure_http: bool = False,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    state: str | Path | None = None,
    restart: bool = False,
    stop: anyio.Event | None = None,
    shard: Shard | None = None,
    on_progress: ProgressCallback | None = None,
) -> Report:
    """Read, validate and send every valid row once; write rejects and report.

    ``key`` overrides the environment (for embedding); ``sleep`` is injectable so tests of
    retries do not wait. ``state`` overrides ``output.state``, the resume ledger (rows settled
    by an earlier run of the same import are not sent again; ``restart`` ignores what it
    says). Setting ``stop`` stops cleanly: reading stops, requests in flight finish, and what
    was settled is recorded (the report says ``completed: false``; run again to go on).
    ``shard=(k, n)`` sends only shard k of n (see :mod:`.shards`), with its own ledger
    (``state.shard-k-of-n.db``); give each shard 1/n of the rate. A dry run refuses it.
    Raises :class:`ApiAbort` when the run cannot go on (the rejects and the report gathered
    so far are written first). Installs no signal handlers. ``on_progress`` is called from
    the event loop with a :class:`~.logs.Progress` every 0.25 s and once at the end; an
    exception in it is logged once and ignored.
    """
    if shard is not None:
        shard = check_shard(shard)
        if dry_run:
            raise UsageError(
                "a dry run validates every row and takes no shard: drop the "
                "shard (or --shard) to validate"
            )
    if dry_run:
        return await anyio.to_thread.run_sync(
            functools.partial(
                validate,
                config,
                inputs,
                rejects=rejects,
                report=report,
                progress=progress,
                on_progress=on_progress,
            )
        )
    # The network stack loads only when sending (a dry run stays lighter).
    from .dispatch import Settling, Straggler, dispatch
    from .sender import Sender, SendSettings
    from .transport import tls_context

    started = time.perf_counter()
    cfg = as_config(config)
    url = resolve_url(cfg, api_url, allow_insecure_http=allow_insecure_http)
    ca_bundle = cfg.resolve(cfg.api.ca_bundle) if cfg.api.ca_bundle else None
    settings = SendSettings(
        url=url,
        key=key or read_key(cfg),
        concurrency=concurrency or cfg.api.concurrency,
        timeout=cfg.api.timeout,
        max_attempts=cfg.api.max_attempts,
        rate_limit=cfg.api.rate_limit if rate is None else rate,
        burst=cfg.api.burst,
        tls=tls_context(ca_bundle, where=f"{cfg.origin}: api.ca_bundle"),
    )
    run = await anyio.to_thread.run_sync(
        functools.partial(
            open_session,
            cfg,
            inputs,
            rejects,
            report,
            progress=progress,
            dry_run=False,
            started=started,
            ledger=ledger_of(cfg, state, url, shard),
            restart=restart,
        )
    )
    result = run.result
    if shard is not None:
        result.shard = f"{shard[0]}/{shard[1]}"
    resume = run.resume
    bar = _bar(run.total_rows, "import", progress)
    sender = Sender(settings, sleep=sleep) if sleep else Sender(settings)
    # File and polars work (rejects, tallies) runs on the outbox's thread, never on the loop.
    outbox = Outbox(backlog=_AHEAD)
    # Rows with their final outcome: rejected on reading (counted by the reading thread), or
    # answered by the API (counted on the loop); two counters, one writer each.
    done_reading, done_sending = [0], [0]

    def on_read(prep: Prepared) -> None:
        done_reading[0] += prep.rows_read - prep.send.height + prep.skipped_shard
        outbox.put(functools.partial(run.take, prep), wait=True)

    def on_outcome(outcome: Any) -> None:
        done_sending[0] += 1
        result.accepted += outcome.accepted

    def record_batch(batch: Settling) -> None:  # on the outbox thread
        if batch.rejected_at:
            run.reject(batch.api_rejects())
        if resume is not None:
            final = batch.final_rows()
            rejected = len(batch.rejected_at)
            resume.settle(
                batch.prep.source, final, accepted=final.len() - rejected, rejected=rejected
            )

    def on_settled(batch: Settling) -> None:
        """Write the API's rejects of a batch (also of one cut short by a stop)."""
        if batch.rejected_at or resume is not None:
            outbox.put(functools.partial(record_batch, batch))

    def record_straggler(row: Straggler, outcome: Any) -> None:  # on the outbox thread
        if not outcome.accepted:
            run.reject(row.rejected(outcome.code or "UNKNOWN", outcome.message or ""))
        if resume is not None:
            resume.settle(
                row.source,
                np.array([row.row], dtype=np.int64),
                accepted=int(outcome.accepted),
                rejected=int(not outcome.accepted),
            )

    def on_straggler(row: Straggler, outcome: Any) -> None:
        if resume is not None or not outcome.accepted:
            outbox.put(functools.partial(record_straggler, row, outcome))

    def done() -> int:
        return done_reading[0] + done_sending[0]

    feed = ProgressFeed(on_progress)

    async def ticker() -> None:
        while True:
            await anyio.sleep(0.25)
            if outbox.error is not None:
                raise outbox.error
            _tick(bar, result, sender, done())
            # The ticker keeps the 0.25 s cadence itself; the feed need not hold any back.
            feed.push(_sent(run, sender, done()), force=True)

    seen = seen_ids(run)
    try:
        async with sender, anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            try:
                await dispatch(
                    prepared_batches(cfg, run.jobs, seen, resume=resume, shard=shard),
                    sender.attempt,
                    concurrency=settings.concurrency,
                    ahead=_AHEAD,
                    on_read=on_read,
                    on_settled=on_settled,
                    on_outcome=on_outcome,
                    on_straggler=on_straggler,
                    on_unsettled=on_settled,
                    sleep=sender.sleep,
                    stop=stop,
                )
            finally:
                tg.cancel_scope.cancel()
        result.completed = stop is None or not stop.is_set()
    except BaseException as e:
        err = _first_error(e)
        result.error = str(err) if err is not None else type(e).__name__
        if isinstance(err, FlywheelImportError):
            err.report = result
        if err is not None and err is not e:
            raise err from None
        raise
    finally:
        result.sending = _sending(sender, started)
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(_close_outputs, outbox, run, result)
            finally:  # waits for a spill the reading thread may be in the middle of
                await anyio.to_thread.run_sync(seen.close)
        _tick(bar, result, sender, done())
        bar.close()
        feed.push(_sent(run, sender, done()), force=True)
    return result


def _close_outputs(outbox: Outbox, run: Session, result: Report) -> None:
    """Drain the outbox, commit the ledger, then write rejects and report (also after a
    failure: what was settled is recorded, and nothing read is lost)."""
    try:
        outbox.close()
        if run.resume is not None:
            kinds = {j.watermark.kind for j in run.jobs if j.watermark is not None}
            run.resume.commit(
                complete=result.completed, kind=kinds.pop() if len(kinds) == 1 else None
            )
            result.resume = run.resume.summary()
    except BaseException as e:
        result.error = result.error or str(e)
        result.completed = False
        raise
    finally:
        try:
            run.finish()
        finally:
            if run.resume is not None:
                run.resume.ledger.close()


def ledger_of(
    cfg: Config, state: str | Path | None, url: str, shard: Shard | None = None
) -> tuple[Path, str] | None:
    """Where the resume ledger is and whose it is: ``state`` (a CLI path, relative to the
    working folder) or ``output.state`` (relative to the config file), with
    ``.shard-k-of-n`` before the suffix for a shard, and the destination (the API URL);
    None: resuming is off."""
    path = Path(state) if state else (cfg.resolve(cfg.output.state) if cfg.output.state else None)
    return None if path is None else (state_path(path, shard), destination(url))


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


def _bar(total: int, desc: str, progress: bool) -> tqdm[Any]:
    """The rows progress bar on stderr (off without a terminal: log lines replace it)."""
    return tqdm(
        total=total, unit="rows", desc=desc, file=sys.stderr, disable=not progress, smoothing=0.1
    )


def _tick(bar: tqdm[Any], result: Report, sender: Sender, done: int) -> None:
    stats = sender.stats
    bar.n = done
    bar.set_postfix(
        accepted=stats.accepted, rejected=result.rejected, retries=stats.retries, refresh=False
    )
    bar.refresh()


def _sent(run: Session, sender: Sender, done: int) -> Progress:
    stats = sender.stats
    return Progress(
        rows_done=done,
        rows_total=run.total_rows,
        accepted=stats.accepted,
        rejected=run.result.rejected,
        retries=stats.retries,
        throttled=stats.throttled,
        elapsed_s=time.perf_counter() - run.started,
    )


def _sending(sender: Sender, started: float) -> dict[str, Any]:
    snap = dict(sender.stats.snapshot())
    elapsed = time.perf_counter() - started
    snap["events_per_s"] = round(sender.stats.accepted / elapsed, 1) if elapsed > 0 else 0.0
    return snap
