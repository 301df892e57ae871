"""Resuming an import: the ledger applied to one run.

Before reading: each input file is looked up in the ledger (by destination, path, the file's
fingerprint and the mapping's): a file already imported is skipped, an interrupted one goes
on after its settled records, a changed one is new work. While reading: the records settled
by an earlier run are marked in each batch (:attr:`RawBatch.skip`), still checked for
duplicates so "the first of two equal ids wins" means the same as in one run, but neither sent
nor rejected again. While sending: outcomes are collected on the outbox thread and committed
once a batch's worth has settled (or a second has passed), each commit after the rejects it
covers are on disk. A crash loses at
most the outcomes since the last commit: those rows are sent again with the same event ids,
and the API drops what it already has.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import polars as pl

from . import watermark
from .config import Config
from .inputs import SourceFile
from .ledger import I64, FileState, Ledger
from .rejects import LEDGER_COLUMNS, RejectsWriter
from .sources import RawBatch

log = logging.getLogger("flywheel_import")

_COMMIT_EVERY = 1.0  # seconds between ledger commits
_EDGE = 1 << 20  # bytes hashed at each end of a file for its fingerprint


def destination(url: str) -> str:
    """The ledger's name for an API: scheme, host, port and path (no credentials, no query)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}"


def config_fingerprint(cfg: Config) -> str:
    """What decides the events a file gives: the mapping, validation and how text is read.

    Not the API settings (rate, concurrency) nor batch sizes: they change how, not what.
    """
    what = {
        "mapping": cfg.mapping.model_dump(mode="json"),
        "validation": cfg.validation.model_dump(mode="json"),
        "csv": cfg.source.csv.model_dump(mode="json"),
        "format": cfg.source.format,
        "max_body_bytes": cfg.api.max_body_bytes,
    }
    text = json.dumps(what, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_fingerprint(src: SourceFile) -> dict[str, Any]:
    """What identifies this version of a file (:meth:`SourceFile.fingerprint`: path, size and
    modification time; URL, ETag, size for an object), plus for a local file a hash of its
    first and last MiB and its size: cheap on a 10 GB file, and a rewritten file is caught
    even if its size and time match."""
    fp: dict[str, Any] = dict(src.fingerprint())
    if src.path is None:
        return fp
    size = int(fp["size"])
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(size).encode())
    with open(src.path, "rb") as f:
        digest.update(f.read(_EDGE))
        if size > 2 * _EDGE:
            f.seek(-_EDGE, 2)
            digest.update(f.read(_EDGE))
    fp["edges"] = digest.hexdigest()
    return fp


class Resume:
    """One run's use of the ledger: plans the files, masks settled rows, records outcomes.

    The planning and masking run before/while reading; :meth:`settle` and :meth:`commit`
    run on the outbox thread only (one writer).
    """

    def __init__(
        self, ledger: Ledger, cfg: Config, files: list[SourceFile], *, restart: bool = False
    ) -> None:
        self.ledger = ledger
        config = config_fingerprint(cfg)
        self.states: dict[str, FileState] = {}
        self.todo: list[SourceFile] = []
        self.done: list[SourceFile] = []
        self.notes: list[str] = []
        for src in files:
            state = ledger.plan_file(src.name, file_fingerprint(src), config, restart=restart)
            self.states[src.name] = state
            if state.note:
                self.notes.append(f"{src.name}: {state.note}")
            (self.done if state.complete else self.todo).append(src)
        self.skipped_rows = 0
        self._pending: dict[str, list[I64]] = {}
        self._accepted: dict[str, int] = {}
        self._rejected: dict[str, int] = {}
        self._last = time.monotonic()
        self._pending_rows = 0
        # A commit at least once a batch: a crash then re-sends at most about one batch plus
        # the requests in flight.
        self._commit_rows = max(1, min(cfg.source.batch_rows, 50_000))
        self.writer: RejectsWriter | None = None
        self.watermark = watermark.spec(cfg)
        self.mark = (
            None if self.watermark is None or restart else ledger.watermark(self.watermark.column)
        )
        self._kind: str | None = None
        self._top: float | None = None

    def rejects_writer(self, path: Path) -> RejectsWriter:
        """The rejects file of the whole import: earlier runs' parts kept, each row once."""
        gens = self.ledger.current_generations()
        keep = pl.DataFrame(
            {"__file_id": list(gens), "__generation": list(gens.values())},
            schema={"__file_id": pl.Int64, "__generation": pl.Int64},
        )
        parts = self.ledger.parts_dir
        earlier = [parts / n for n in self.ledger.part_names() if (parts / n).exists()]
        self.writer = RejectsWriter(path, store=parts, earlier=earlier, keep=keep)
        return self.writer

    # --- reading ----------------------------------------------------------------------------

    def mask(self, batches: Iterator[RawBatch]) -> Iterator[RawBatch]:
        """Mark the rows an earlier run settled (and drop its settled malformed records)."""
        for raw in batches:
            settled = self.states[raw.source.name].settled
            if len(settled.lo):
                rows = raw.frame.get_column("__row").to_numpy()
                skip = settled.contains(rows)
                gone = settled.contains(np.array([b.row for b in raw.bad], dtype=np.int64))
                bad = [b for b, g in zip(raw.bad, gone, strict=True) if not g]
                self.skipped_rows += int(skip.sum()) + len(raw.bad) - len(bad)
                raw.bad = bad
                if skip.any():
                    raw.skip = skip
            yield raw

    # --- outcomes (outbox thread) -----------------------------------------------------------

    def tag(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Rejected rows tied to their file's generation (for the import's rejects file)."""
        if not rows.height:
            return rows
        state = self.states[rows.get_column("_source")[0]]
        return rows.with_columns(
            pl.lit(state.id, pl.Int64).alias(LEDGER_COLUMNS[0]),
            pl.lit(state.generation, pl.Int64).alias(LEDGER_COLUMNS[1]),
        )

    def settle(self, source: str, rows: pl.Series | I64, *, accepted: int, rejected: int) -> None:
        """These records have their final outcome (their rejects already handed to the
        writer); committed with the next :meth:`commit`."""
        arr = rows.to_numpy() if isinstance(rows, pl.Series) else rows
        if len(arr):
            self._pending.setdefault(source, []).append(arr.astype(np.int64, copy=False))
        if accepted:
            self._accepted[source] = self._accepted.get(source, 0) + accepted
        if rejected:
            self._rejected[source] = self._rejected.get(source, 0) + rejected
        self._pending_rows += len(arr)
        if (
            self._pending_rows >= self._commit_rows
            or time.monotonic() - self._last >= _COMMIT_EVERY
        ):
            self.commit()

    def saw_watermark(self, largest: float | None) -> None:
        """The largest watermark value of a batch read (outbox thread)."""
        if largest is not None and (self._top is None or largest > self._top):
            self._top = largest

    def commit(self, *, complete: bool = False, kind: str | None = None) -> None:
        """Make the rejects durable, then record the settled rows in one transaction;
        ``complete``: every file of the run was read and settled to the end."""
        parts = self.writer.flush() if self.writer is not None else []
        settled = {src: np.concatenate(arrs) for src, arrs in self._pending.items()}
        done = {}
        if complete:
            for src in self.todo:
                state = self.states[src.name]
                new = settled.get(src.name)
                done[src.name] = len(state.settled.union(new) if new is not None else state.settled)
        self.ledger.commit(settled, self._accepted, self._rejected, parts, done)
        if complete and self.watermark is not None and self._top is not None and kind:
            # Only a completed run moves the mark (and never back).
            old = float(self.mark[0]) if self.mark is not None else None
            top = self._top if old is None else max(old, self._top)
            self.ledger.set_watermark(self.watermark.column, repr(top), kind)
        self._pending, self._accepted, self._rejected = {}, {}, {}
        self._pending_rows = 0
        self._last = time.monotonic()

    def summary(self) -> dict[str, Any]:
        """The whole import so far at this destination (for the report)."""
        return {
            "state": str(self.ledger.path),
            "destination": self.ledger.destination,
            "files_already_imported": len(self.done),
            "rows_settled_earlier": self.skipped_rows,
            **self.ledger.totals(),
        }
