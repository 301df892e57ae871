"""The rejects file: every row that was not sent, as read, with where it came from and why.

Rows are staged in Parquet parts next to the destination (memory stays bounded however many
rows are rejected) and the final file is written to a temporary name, made private (0600) and
renamed into place, so a crash never leaves a half-written rejects file. Files with different
columns are merged by name; the ``_`` columns come last.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import polars as pl

from .errors import InputError

TAIL_COLUMNS = ("_source", "_row", "_error_code", "_error_message", "_raw")
_FLUSH_ROWS = 50_000


class RejectsWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._pending: list[pl.DataFrame] = []
        self._pending_rows = 0
        self._parts: list[Path] = []
        self._columns: dict[str, None] = {}
        self._dir: Path | None = None

    def add(self, rows: pl.DataFrame) -> None:
        if not rows.height:
            return
        # Rows filtered out of a batch still point into the whole batch's text buffers
        # (polars string views): staged until the next flush, a few rejects a batch would keep
        # every batch of the file in memory. Rebuilding the text copies just these rows.
        rows = rows.with_columns(pl.concat_str([pl.col(c), pl.lit("")]).alias(c)
                                 for c, dtype in rows.schema.items() if dtype == pl.String)
        self.count += rows.height
        self._columns.update(dict.fromkeys(rows.columns))
        self._pending.append(rows)
        self._pending_rows += rows.height
        if self._pending_rows >= _FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix=".rejects-", dir=self._parent()))
        part = self._dir / f"part-{len(self._parts):06d}.parquet"
        pl.concat(self._pending, how="diagonal").write_parquet(part)
        self._parts.append(part)
        self._pending, self._pending_rows = [], 0

    def _parent(self) -> Path:
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{self.path}: cannot create folder: {e.strerror}") from None
        return parent

    def close(self) -> Path:
        """Write the final file atomically (also when empty: a stale file would mislead)."""
        self._flush()
        data_cols = [c for c in self._columns if c not in TAIL_COLUMNS]
        tail = [c for c in TAIL_COLUMNS if c in self._columns or c != "_raw"]
        order = data_cols + tail
        if self._parts:
            frame = pl.concat([pl.scan_parquet(p) for p in self._parts], how="diagonal")
            missing = [c for c in order if c not in self._columns]
            frame = frame.with_columns(pl.lit(None, pl.String).alias(c) for c in missing)
            lazy = frame.select(order)
        else:
            lazy = pl.DataFrame(schema=dict.fromkeys(order, pl.String)).lazy()
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self._parent())
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            os.chmod(tmp, 0o600)
            suffix = self.path.suffix.lower()
            if suffix == ".parquet":
                lazy.sink_parquet(tmp)
            elif suffix in (".ndjson", ".jsonl"):
                lazy.sink_ndjson(tmp)
            else:
                lazy.sink_csv(tmp)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            self.discard()
        return self.path

    def discard(self) -> None:
        """Remove the staging parts (the destination is left as it was)."""
        if self._dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._dir)
            self._dir = None
            self._parts = []
