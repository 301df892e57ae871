"""The SQLite file of accepted events.

One row per stored event, in arrival order (``seq``), holding the request body exactly as
received so a rehearsal can check the importer's encoding byte for byte. WAL mode with
``synchronous=NORMAL``: a crash of the sandbox loses nothing committed, and batched commits stay
cheap. :class:`EventStore` is synchronous and meant to be used from one thread at a time (the
writer thread of :mod:`.writer`); :func:`iter_events` reads a file on its own, for ``--export``.

The events are someone's export, so a new database is created mode 0600 (SQLite gives its
``-wal`` and ``-shm`` files the database's mode); an existing file keeps the mode it has.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import orjson

#: (event_id, generated_id 0/1, received_at ISO 8601 UTC, raw request body)
Row = tuple[str, int, str, str]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY,
    event_id     TEXT    NOT NULL UNIQUE,
    generated_id INTEGER NOT NULL,
    received_at  TEXT    NOT NULL,
    body         TEXT    NOT NULL
)
"""
_COLUMNS = "seq, event_id, generated_id, received_at, body"


class EventStore:
    """Read and append events in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Created here rather than by sqlite3, which would apply the umask (often 0644).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        # The writer thread is not the thread that opens the store; access is serialized.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def event_ids(self) -> set[str]:
        """Every stored id: the dedupe set of a restarted sandbox."""
        return {row[0] for row in self._db.execute("SELECT event_id FROM events")}

    def count(self) -> int:
        """Number of stored events."""
        return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])

    def append(self, rows: Sequence[Row]) -> None:
        """Store a batch in one transaction."""
        if not rows:
            return
        self._db.execute("BEGIN")
        try:
            # OR IGNORE only matters if two sandboxes share a file (unsupported); a single
            # sandbox never sends a known id here, its in-memory dedupe is exact.
            self._db.executemany(
                "INSERT OR IGNORE INTO events (event_id, generated_id, received_at, body) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def page(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` events with ``seq > after``, in arrival order."""
        cursor = self._db.execute(
            f"SELECT {_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        )
        return [event_dict(row) for row in cursor]

    def close(self) -> None:
        """Close the file (a WAL checkpoint happens here)."""
        self._db.close()


def event_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """The public shape of a stored event, as served by ``/sandbox/events`` and exported."""
    seq, event_id, generated_id, received_at, body = row
    return {
        "seq": seq,
        "event_id": event_id,
        "generated_id": bool(generated_id),
        "received_at": received_at,
        "body": orjson.loads(body),
    }


def iter_events(path: Path) -> Iterator[dict[str, Any]]:
    """Every event of a sandbox database, read-only, in arrival order."""
    if not path.is_file():
        raise FileNotFoundError(f"no sandbox database at {path}")
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        for row in db.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq"):
            yield event_dict(row)
    finally:
        db.close()


def export_ndjson(path: Path, out: BinaryIO) -> int:
    """Write every event as one JSON line; returns how many were written."""
    count = 0
    for event in iter_events(path):
        out.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
        count += 1
    return count
