"""Shards: one import split into N disjoint parts, on N machines or N processes of one.

Shard K of N takes the rows whose event id hashes to K: ``FWH128(id text)`` (the hash of
:mod:`.eventid`, first 64-bit lane) modulo N, the same on every machine and Python version,
so equal ids land in one shard and ``DUPLICATE_EVENT_ID`` means what it means in one run.
Derived ids are derived first (the hash is of the UUID text sent). A row rejected before it
has an id (a validation reject, a malformed record) is placed by ``FWH128("<file base
name>:<record number>")`` instead, so it lands in exactly one shard's rejects file.

:func:`run_processes` runs the N shards of one command as local subprocesses and merges
their rejects files and reports into one of each.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import polars as pl

from .errors import UsageError
from .eventid import fwh128

Shard = tuple[int, int]

#: Exit codes from best to worst: a merged run exits with the worst of its shards (a shard
#: stopped by a signal sent to it alone counts as stopped).
_SEVERITY = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 130: 5, 143: 5}


def parse_shard(text: str) -> Shard:
    """``"K/N"`` -> (K, N), 0 <= K < N; one-line :class:`UsageError` otherwise."""
    k_text, sep, n_text = text.partition("/")
    try:
        k, n = int(k_text), int(n_text)
    except ValueError:
        k = n = -1
    if not sep or n < 1:
        raise UsageError(f"--shard {text}: must be K/N with whole numbers, e.g. 0/4")
    return check_shard((k, n))


def check_shard(shard: Shard) -> Shard:
    k, n = shard
    if not (isinstance(k, int) and isinstance(n, int)) or n < 1 or not 0 <= k < n:
        raise UsageError(
            f"shard {k}/{n}: K must be 0 to N-1 and N at least 1 (shards of 3 are 0/3, 1/3, 2/3)"
        )
    return (k, n)


def shard_of_ids(ids: pl.Series, n: int) -> npt.NDArray[np.int64]:
    """The shard of each event id (text, no nulls)."""
    lane, _ = fwh128(ids.cast(pl.String))
    return (lane % np.uint64(n)).astype(np.int64)


def shard_of_records(
    source: str, rows: npt.NDArray[np.int64] | Sequence[int], n: int
) -> npt.NDArray[np.int64]:
    """The shard of records known only by their place: the file's base name (the same
    whatever folder or bucket it is read from) and the record number."""
    base = source.rstrip("/").rsplit("/", 1)[-1]
    texts = pl.Series([f"{base}:{int(r)}" for r in rows], dtype=pl.String)
    if not len(texts):
        return np.zeros(0, np.int64)
    return shard_of_ids(texts, n)


def state_path(path: Path, shard: Shard | None) -> Path:
    """Each shard's own ledger: ``state.db`` -> ``state.shard-1-of-4.db``."""
    if shard is None:
        return path
    k, n = shard
    return path.with_name(f"{path.stem}.shard-{k}-of-{n}{path.suffix}")


# --- N local processes -----------------------------------------------------------------------


@dataclass(slots=True)
class Child:
    shard: Shard
    proc: subprocess.Popen[bytes]
    rejects: Path | None
    report: Path
    stderr_tail: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None


def child_options(processes: int, rate: float, concurrency: int) -> tuple[float, int]:
    """Each of N processes gets 1/N of the rate (0: none stays none) and of the requests in
    flight (at least one)."""
    return (rate / processes if rate else 0.0), max(1, math.ceil(concurrency / processes))


def run_processes(
    argv: Sequence[str],
    processes: int,
    *,
    config: str,
    rejects: str | None,
    report: str | None,
    rate: float | None,
    concurrency: int | None,
    err: IO[str],
) -> tuple[int, Any]:
    """Run ``flywheel-import run <argv> --shard k/N`` for each k as subprocesses, wait for
    all, merge their outputs; returns (exit code, merged :class:`~.report.Report`).

    ``argv`` is the command's own arguments without ``--rejects``, ``--report``, ``--rate``,
    ``--concurrency`` and ``--processes`` (each child gets its own). SIGINT and SIGTERM are
    passed on to every child (each stops cleanly; a second one stops them at once); the
    children run in their own process group, so a Ctrl-C reaches them once, through here.
    """
    from .pipeline import as_config, output_paths

    cfg = as_config(config)
    rejects_path, report_path = output_paths(cfg, rejects, report)
    rate_each, conc_each = child_options(
        processes, cfg.api.rate_limit if rate is None else rate, concurrency or cfg.api.concurrency
    )
    near = (rejects_path or report_path or Path.cwd()).parent
    work = Path(tempfile.mkdtemp(prefix=".flywheel-shards-", dir=near))
    received: list[str] = []
    children: list[Child] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        for c in children:
            if c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for k in range(processes):
            rej = work / f"rejects-{k}.parquet" if rejects_path is not None else None
            rep = work / f"report-{k}.json"
            cmd = [
                sys.executable,
                "-m",
                "flywheel_import",
                "run",
                *argv,
                "--shard",
                f"{k}/{processes}",
                "--report",
                str(rep),
                "--rate",
                repr(rate_each),
                "--concurrency",
                str(conc_each),
            ]
            if rej is not None:
                cmd += ["--rejects", str(rej)]
            proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
            )
            child = Child((k, processes), proc, rej, rep)
            child.pump = threading.Thread(target=_pump, args=(child, err), daemon=True)
            child.pump.start()
            children.append(child)
        for c in children:
            c.proc.wait()
            if c.pump is not None:
                c.pump.join()
        merged = merge_reports(children, rejects_path)
        merged.stopped = received[0] if received else merged.stopped
        if report_path is not None:
            from .report import write_json_atomic

            write_json_atomic(report_path, merged.to_dict())
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        for c in children:
            if c.proc.poll() is None:  # only after a failure here: leave nothing running
                c.proc.kill()
                c.proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    for c in children:
        code = c.proc.returncode
        if code not in (0, 1) and not received:
            why = c.stderr_tail[-1] if c.stderr_tail else f"exit {code}"
            print(
                f"flywheel-import: shard {c.shard[0]}/{processes} failed (exit {code}): {why}",
                file=err,
                flush=True,
            )
    return worst([c.proc.returncode for c in children], received), merged


def worst(codes: Sequence[int], received: Sequence[str] = ()) -> int:
    """The merged exit code: 130/143 after a stop by a signal, else the worst child's
    (3 > 2 > 1 > 0; an unexpected code, a child killed by a signal, counts as 4)."""
    if received:
        return 143 if received[0] == "SIGTERM" else 130
    return max((c if c in _SEVERITY else 4 for c in codes), key=_SEVERITY.__getitem__, default=0)


def _pump(child: Child, err: IO[str]) -> None:
    """Pass a child's stderr on, each line naming its shard (the last lines kept)."""
    assert child.proc.stderr is not None
    k, n = child.shard
    for raw in child.proc.stderr:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        if line.startswith("to resume: "):  # the whole command resumes, said once at the end
            continue
        child.stderr_tail = [*child.stderr_tail[-4:], line]
        with contextlib.suppress(OSError, ValueError):
            print(f"[shard {k}/{n}] {line}", file=err, flush=True)


def merge_reports(children: Sequence[Child], rejects: Path | None) -> Any:
    """One report of the whole run: figures summed, each shard's own under ``shards``; and
    one rejects file (atomic, 0600) made of the shards' rejects."""
    from .rejects import RejectsWriter
    from .report import CodeCount, Report

    merged = Report(dry_run=False)
    merged.completed = True
    shards: list[dict[str, Any]] = []
    errors: list[str] = []
    sending: dict[str, int] = {}
    latency: dict[str, float] = {}
    durations = [0.0]
    for c in children:
        k, n = c.shard
        data = _read_json(c.report)
        entry = {"shard": f"{k}/{n}", "exit_code": c.proc.returncode, **(data or {})}
        entry.pop("rejects_file", None)
        shards.append(entry)
        if data is None:
            merged.completed = False
            errors.append(
                f"shard {k}/{n}: " + (c.stderr_tail[-1] if c.stderr_tail else "no report")
            )
            continue
        merged.files = max(merged.files, int(data.get("files", 0)))
        for name in ("rows_read", "valid", "accepted", "rejected", "skipped_watermark"):
            setattr(merged, name, getattr(merged, name) + int(data.get(name, 0)))
        merged.completed = merged.completed and bool(data.get("completed"))
        durations.append(float(data.get("duration_s", 0.0)))
        if data.get("error"):
            errors.append(f"shard {k}/{n}: {data['error']}")
        if data.get("stopped") and merged.stopped is None:
            merged.stopped = str(data["stopped"])
        for code, by in data.get("rejected_by_code", {}).items():
            entry_count = merged.by_code.setdefault(code, CodeCount())
            entry_count.count += int(by.get("count", 0))
            entry_count.example = entry_count.example or by.get("example")
        for key, value in (data.get("sending") or {}).items():
            if key.startswith("latency_") and isinstance(value, int | float):
                latency[key] = max(latency.get(key, 0.0), float(value))  # the slowest shard's
            elif isinstance(value, int) and not isinstance(value, bool):
                sending[key] = sending.get(key, 0) + value
    merged.duration_s = max(durations)
    if merged.duration_s > 0:
        sending_out: dict[str, Any] = {**sending, **latency}
        sending_out["events_per_s"] = round(merged.accepted / merged.duration_s, 1)
        merged.sending = sending_out
    merged.error = "; ".join(errors) or None
    merged.shards = shards
    if rejects is not None:
        # A shard without rejects wrote an empty file whose columns are all text: left out.
        parts = [
            c.rejects
            for c in children
            if c.rejects is not None
            and c.rejects.exists()
            and pl.scan_parquet(c.rejects).select(pl.len()).collect().item()
        ]
        merged.rejects_path = str(RejectsWriter(rejects, earlier=parts).close())
    return merged


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def child_argv(args: Any, inputs: Sequence[str]) -> list[str]:
    """The arguments every shard shares (its own outputs, rate and concurrency are added)."""
    argv = [args.config, *inputs, "--no-progress"]
    if args.api_url:
        argv += ["--api-url", args.api_url]
    if args.state:
        argv += ["--state", args.state]
    for flag in ("allow_insecure_http", "restart"):
        if getattr(args, flag):
            argv.append("--" + flag.replace("_", "-"))
    return argv
