"""The resume ledger: which records of which input files are settled, per destination.

SQLite in WAL mode (the standard library's ``sqlite3``). A record is *settled* when its outcome
is final: accepted by the API, or rejected and already in a rejects part that is on disk
(fsync-ed). Settled records are kept as ranges of record numbers (``__row``), not one row per
record, so a 40-million-row file costs a few rows of SQLite. Each file is remembered with its
fingerprint and the mapping's fingerprint: a file or mapping that changed is new work (its
*generation* goes up and its old settled ranges and rejects no longer count).

Everything is per destination (the API URL): settling rows against staging says nothing about
production. One process at a time: a second one on the same ledger is refused (an advisory
lock on a file beside the database, released by the OS even on ``kill -9``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import UsageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id          INTEGER PRIMARY KEY,
    destination TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    config      TEXT    NOT NULL,
    generation  INTEGER NOT NULL,
    records     INTEGER,
    accepted    INTEGER NOT NULL DEFAULT 0,
    rejected    INTEGER NOT NULL DEFAULT 0,
    complete    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (destination, path)
);
CREATE TABLE IF NOT EXISTS settled (
    file_id INTEGER NOT NULL,
    lo      INTEGER NOT NULL,
    hi      INTEGER NOT NULL,
    PRIMARY KEY (file_id, lo)
);
CREATE TABLE IF NOT EXISTS rejects_parts (
    id          INTEGER PRIMARY KEY,
    destination TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    rows        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS watermarks (
    destination TEXT NOT NULL,
    mapping     TEXT NOT NULL,
    value       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    PRIMARY KEY (destination, mapping)
);
"""

I64 = npt.NDArray[np.int64]


@dataclass(slots=True)
class Ranges:
    """Sorted, disjoint, non-adjacent inclusive ranges of record numbers."""

    lo: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    hi: I64 = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int((self.hi - self.lo + 1).sum())

    def contains(self, rows: I64) -> npt.NDArray[np.bool_]:
        """Which of ``rows`` fall in a range (vectorized)."""
        if not len(self.lo):
            return np.zeros(len(rows), dtype=np.bool_)
        i = np.searchsorted(self.lo, rows, side="right") - 1
        ok = i >= 0
        out = np.zeros(len(rows), dtype=np.bool_)
        out[ok] = rows[ok] <= self.hi[i[ok]]
        return out

    def union(self, rows: I64) -> Ranges:
        """These ranges plus the record numbers ``rows`` (any order, repeats allowed)."""
        if not len(rows):
            return self
        r = np.unique(rows.astype(np.int64, copy=False))
        breaks = np.flatnonzero(np.diff(r) != 1)
        lo = np.concatenate((self.lo, r[np.concatenate(([0], breaks + 1))]))
        hi = np.concatenate((self.hi, r[np.concatenate((breaks, [len(r) - 1]))]))
        return merged(lo, hi)


def merged(lo: I64, hi: I64) -> Ranges:
    """Merge possibly overlapping or adjacent ranges."""
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    reach = np.maximum.accumulate(hi)
    starts = np.concatenate(([True], lo[1:] > reach[:-1] + 1))
    idx = np.flatnonzero(starts)
    ends = np.concatenate((idx[1:] - 1, [len(lo) - 1]))
    return Ranges(lo[idx].copy(), reach[ends].copy())


@dataclass(slots=True)
class FileState:
    """One input file as the ledger knows it, for this run."""

    id: int
    path: str
    generation: int
    settled: Ranges
    complete: bool
    records: int | None
    accepted: int
    rejected: int
    note: str | None = None  # why it is (or is not) new work, for the one-line message
    pending: tuple[str, str, str] | None = None  # (insert|reset, fingerprint, config) to write


class Ledger:
    """The ledger of one destination in one state database. Not thread-safe: one writer."""

    def __init__(self, path: Path, destination: str) -> None:
        self.path = path
        self.destination = destination
        # What this process created, removed again by discard() if the run ends before
        # reading anything (an exit-2 error leaves no new file behind).
        self._created: list[Path] = []
        folder = path.parent
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"{path}: cannot create the state folder: {e.strerror or e}") from None
        self._created.extend(missing)
        with contextlib.suppress(OSError):
            if missing:
                os.chmod(path.parent, 0o700)
        lock_existed = path.with_name(path.name + ".lock").exists()
        self._lock = _lock(path)
        if not lock_existed:
            self._created.insert(0, path.with_name(path.name + ".lock"))
        try:
            if not path.exists():
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
                self._created[:0] = [path.with_name(path.name + s) for s in ("-wal", "-shm")]
                self._created.insert(0, path)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            self._unlock()
            raise UsageError(f"{path}: cannot use the state database: {e}") from None
        self.parts_dir = path.parent / "rejects"
        self.files: dict[str, FileState] = {}

    # --- files ------------------------------------------------------------------------------

    def plan_file(
        self, path: str, fingerprint: dict[str, Any], config: str, *, restart: bool = False
    ) -> FileState:
        """The file's state for this run: settled so far, or new work (with a note why)."""
        fp = json.dumps(fingerprint, sort_keys=True)
        row = self._db.execute(
            "SELECT id, fingerprint, config, generation, records, accepted, rejected, "
            "complete FROM files WHERE destination = ? AND path = ?",
            (self.destination, path),
        ).fetchone()
        if row is None:
            state = FileState(0, path, 1, Ranges(), False, None, 0, 0)
            state.pending = ("insert", fp, config)
        else:
            fid, old_fp, old_cfg, gen, records, accepted, rejected, complete = row
            why = (
                "--restart"
                if restart
                else "the file changed since the last run"
                if old_fp != fp
                else "the mapping changed since the last run"
                if old_cfg != config
                else None
            )
            if why is None:
                state = FileState(
                    fid, path, gen, self._ranges(fid), bool(complete), records, accepted, rejected
                )
                if state.complete:
                    state.note = "already imported"
                elif len(state.settled):
                    state.note = f"resuming after {len(state.settled):,} settled records"
            else:
                state = FileState(
                    fid,
                    path,
                    gen + 1,
                    Ranges(),
                    False,
                    None,
                    0,
                    0,
                    note=f"{why}: importing it as new work",
                )
                state.pending = ("reset", fp, config)
        self.files[path] = state
        return state

    def record_plans(self) -> None:
        """Write what :meth:`plan_file` decided (new files, files starting over), once the
        run is sure to go ahead: a run that fails in preflight changes nothing."""
        with self._tx():
            for state in self.files.values():
                if state.pending is None:
                    continue
                action, fp, config = state.pending
                if action == "insert":
                    cur = self._db.execute(
                        "INSERT INTO files (destination, path, fingerprint, config, generation)"
                        " VALUES (?, ?, ?, ?, 1)",
                        (self.destination, state.path, fp, config),
                    )
                    state.id = int(cur.lastrowid or 0)
                else:
                    self._db.execute("DELETE FROM settled WHERE file_id = ?", (state.id,))
                    self._db.execute(
                        "UPDATE files SET fingerprint = ?, config = ?, generation = ?, "
                        "records = NULL, accepted = 0, rejected = 0, complete = 0 "
                        "WHERE id = ?",
                        (fp, config, state.generation, state.id),
                    )
                state.pending = None

    def _ranges(self, file_id: int) -> Ranges:
        rows = self._db.execute(
            "SELECT lo, hi FROM settled WHERE file_id = ? ORDER BY lo", (file_id,)
        ).fetchall()
        if not rows:
            return Ranges()
        arr = np.array(rows, dtype=np.int64)
        return Ranges(arr[:, 0].copy(), arr[:, 1].copy())

    def current_generations(self) -> dict[int, int]:
        """file id -> generation, for every file of this destination."""
        return dict(
            self._db.execute(
                "SELECT id, generation FROM files WHERE destination = ?", (self.destination,)
            ).fetchall()
        )

    # --- commits ----------------------------------------------------------------------------

    def commit(
        self,
        settled: dict[str, I64],
        accepted: dict[str, int],
        rejected: dict[str, int],
        parts: list[tuple[str, int]],
        complete: dict[str, int] | None = None,
    ) -> None:
        """Record, in one transaction, newly settled records per file (their rejects already
        durable in ``parts``) and the files now complete (path -> record count)."""
        with self._tx():
            for name, count in parts:
                self._db.execute(
                    "INSERT INTO rejects_parts (destination, name, rows) VALUES (?, ?, ?)",
                    (self.destination, name, count),
                )
            for path, numbers in settled.items():
                state = self.files[path]
                state.settled = state.settled.union(numbers)
                self._db.execute("DELETE FROM settled WHERE file_id = ?", (state.id,))
                self._db.executemany(
                    "INSERT INTO settled (file_id, lo, hi) VALUES (?, ?, ?)",
                    [
                        (state.id, int(a), int(b))
                        for a, b in zip(state.settled.lo, state.settled.hi, strict=True)
                    ],
                )
            for path in set(accepted) | set(rejected):
                state = self.files[path]
                state.accepted += accepted.get(path, 0)
                state.rejected += rejected.get(path, 0)
                self._db.execute(
                    "UPDATE files SET accepted = ?, rejected = ? WHERE id = ?",
                    (state.accepted, state.rejected, state.id),
                )
            for path, records in (complete or {}).items():
                state = self.files[path]
                state.complete, state.records = True, records
                self._db.execute(
                    "UPDATE files SET complete = 1, records = ? WHERE id = ?", (records, state.id)
                )

    def part_names(self) -> list[str]:
        """The rejects parts of this destination, oldest first."""
        return [
            r[0]
            for r in self._db.execute(
                "SELECT name FROM rejects_parts WHERE destination = ? ORDER BY id",
                (self.destination,),
            )
        ]

    def totals(self) -> dict[str, int]:
        """The whole import so far at this destination: files, records, accepted, rejected."""
        row = self._db.execute(
            "SELECT count(*), sum(complete), coalesce(sum(accepted), 0), "
            "coalesce(sum(rejected), 0) FROM files WHERE destination = ?",
            (self.destination,),
        ).fetchone()
        return {
            "files": int(row[0]),
            "files_complete": int(row[1] or 0),
            "accepted": int(row[2]),
            "rejected": int(row[3]),
        }

    # --- watermark --------------------------------------------------------------------------

    def watermark(self, mapping: str) -> tuple[str, str] | None:
        """(value, kind) of the high-water mark of the last completed run, if any."""
        row = self._db.execute(
            "SELECT value, kind FROM watermarks WHERE destination = ? AND mapping = ?",
            (self.destination, mapping),
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def set_watermark(self, mapping: str, value: str, kind: str) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO watermarks (destination, mapping, value, kind) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (destination, mapping) DO UPDATE SET value = excluded.value, "
                "kind = excluded.kind",
                (self.destination, mapping, value, kind),
            )

    # --- lifetime ---------------------------------------------------------------------------

    def close(self, *, discard: bool = False) -> None:
        """Release the database and the lock; ``discard``: also remove what this process
        created (the run failed before reading anything)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._unlock()
        if discard:
            for p in self._created:
                with contextlib.suppress(OSError):
                    p.rmdir() if p.is_dir() else p.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _unlock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                os.close(self._lock)
            self._lock = None


def _lock(path: Path) -> int | None:
    """Take the ledger's lock, or refuse: two processes must not settle the same records."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(
            f"{path}: another flywheel-import process is using this state "
            "(wait for it to finish, or give this run its own --state)"
        ) from None
    return fd
