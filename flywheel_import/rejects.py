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
import uuid
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from .errors import InputError

TAIL_COLUMNS = ("_source", "_row", "_error_code", "_error_message", "_raw")
_FLUSH_ROWS = 50_000


#: Columns tying a staged reject to the ledger's file generation (never in the final file).
LEDGER_COLUMNS = ("__file_id", "__generation")


def owned_text(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` with their text copied out of the batch they were filtered from.

    Rows filtered out of a batch still point into the whole batch's text buffers (polars
    string views): staged until the next flush, a few rejects a batch would keep every batch
    of the file in memory. The examining threads call this on the rejects they build, so the
    thread writing them does no polars work (its queries would wait behind theirs).
    """
    return rows.with_columns(
        pl.concat_str([pl.col(c), pl.lit("")]).alias(c)
        for c, dtype in rows.schema.items()
        if dtype == pl.String
    )


class RejectsWriter:
    """Stages rejected rows in Parquet parts; :meth:`close` writes the final file.

    With ``store`` (the resume ledger's folder) the parts are kept there for good and
    :meth:`flush` makes them durable (fsync) before the ledger marks their rows settled; the
    final file then holds the parts of earlier runs too (``earlier``), keeping only rows whose
    ``__file_id``/``__generation`` are in ``keep``: each rejected row of the whole import once.
    """

    def __init__(
        self,
        path: Path,
        *,
        store: Path | None = None,
        earlier: Sequence[Path] = (),
        keep: pl.DataFrame | None = None,
    ) -> None:
        self.path = path
        self.count = 0
        self._pending: list[pl.DataFrame] = []
        self._pending_rows = 0
        self._parts: list[Path] = list(earlier)
        self._columns: dict[str, None] = {}
        for part in earlier:
            self._columns.update(dict.fromkeys(pl.read_parquet_schema(part)))
        self._dir: Path | None = store
        self._store = store
        self._keep = keep
        self._new: list[tuple[str, int]] = []

    def add(self, rows: pl.DataFrame, *, owned: bool = False) -> None:
        """Stage ``rows``; ``owned``: their text is already their own (:func:`owned_text`)."""
        if not rows.height:
            return
        if not owned:
            rows = owned_text(rows)
        self.count += rows.height
        self._columns.update(dict.fromkeys(rows.columns))
        self._pending.append(rows)
        self._pending_rows += rows.height
        if self._pending_rows >= _FLUSH_ROWS and self._store is None:
            self._flush()

    def flush(self) -> list[tuple[str, int]]:
        """Write what is pending as a part (durably, with a store); the parts written since
        the last call, as (file name, rows)."""
        self._flush()
        new, self._new = self._new, []
        return new

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix=".rejects-", dir=self._parent()))
        self._dir.mkdir(parents=True, exist_ok=True)
        part = self._dir / f"part-{uuid.uuid4().hex}.parquet"
        frame = pl.concat(self._pending, how="diagonal")
        if self._store is None:
            frame.write_parquet(part)
        else:
            tmp = part.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                frame.write_parquet(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, part)
            _fsync_dir(part.parent)
        self._parts.append(part)
        self._new.append((part.name, frame.height))
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
        data_cols = [c for c in self._columns if c not in TAIL_COLUMNS and c not in LEDGER_COLUMNS]
        tail = [c for c in TAIL_COLUMNS if c in self._columns or c != "_raw"]
        order = data_cols + tail
        if self._parts:
            frame = pl.concat([pl.scan_parquet(p) for p in self._parts], how="diagonal")
            if self._keep is not None and all(c in self._columns for c in LEDGER_COLUMNS):
                frame = frame.join(self._keep.lazy(), on=list(LEDGER_COLUMNS), how="semi")
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
        """Remove the staging parts (the destination is left as it was); the parts kept in
        a store stay: they belong to the import, not to this run."""
        if self._dir is not None and self._store is None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._dir)
            self._dir = None
            self._parts = []


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
