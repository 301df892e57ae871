"""Scheduled loads: skip the rows at or below the high-water mark of the last completed run.

A nightly export often overlaps the previous one. With ``mapping.watermark: <column>`` (a
timestamp, or an increasing number) each row's value is compared with the mark the ledger
kept from the last *completed* run: rows at or below it are skipped (``skipped_watermark`` in
the report), neither sent nor rejected. The new mark, the largest value read, is committed
only when the run completes, so a run that stops midway changes nothing.

Values compare as numbers: a timestamp as microseconds since the epoch (UTC, after the
mapping's timezone for naive values), a number as a float. A cell that cannot be read as
either is never skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from .config import Config, WatermarkMapping
from .errors import ConfigError
from .profile import FileProfile
from .timeparse import to_utc

Kind = Literal["timestamp", "number"]


@dataclass(frozen=True, slots=True)
class Watermark:
    """One file's watermark column as a comparable value, and the mark to skip up to."""

    column: str
    kind: Kind
    value: pl.Expr  # Float64 (number) or Int64 microseconds (timestamp)
    mark: float | None  # from the last completed run; None: skip nothing

    def apply(self, frame: pl.DataFrame) -> tuple[npt.NDArray[np.bool_] | None, float | None]:
        """(rows at or below the mark, or None; the largest value of the batch)."""
        values = frame.select(self.value.cast(pl.Float64).alias("w")).to_series()
        top = values.max()
        largest = float(top) if isinstance(top, int | float) else None
        if self.mark is None:
            return None, largest
        below = (values <= self.mark).fill_null(False).to_numpy()
        return (below if below.any() else None), largest


def spec(cfg: Config) -> WatermarkMapping | None:
    w = cfg.mapping.watermark
    if w is None:
        return None
    return WatermarkMapping(column=w) if isinstance(w, str) else w


def plan(cfg: Config, prof: FileProfile, mark: tuple[str, str] | None) -> Watermark | None:
    """The watermark of one file; ``mark`` is (value, kind) from the ledger."""
    w = spec(cfg)
    if w is None:
        return None
    if w.column not in prof.schema:
        raise ConfigError(
            f"{cfg.origin}: mapping.watermark: column {w.column!r} not found in "
            f"{prof.source.name} (columns: {', '.join(prof.columns)})"
        )
    dtype = prof.schema[w.column]
    col = pl.col(w.column)
    ts = cfg.mapping.timestamp_spec()
    kind: Kind
    if w.type is not None:
        kind = w.type
    elif dtype.is_numeric():
        kind = "number"
    elif isinstance(dtype, pl.Datetime | pl.Date):
        kind = "timestamp"
    elif prof.text_kinds.get(w.column) == "number":
        kind = "number"
    else:
        kind = "timestamp"
    if kind == "number":
        source = col.str.strip_chars() if dtype == pl.String else col
        value = source.cast(pl.Float64, strict=False)
    else:
        same = ts is not None and ts.column == w.column
        value = to_utc(
            col,
            dtype,
            timezone=ts.timezone if ts else "UTC",
            fmt=ts.format if same and ts else None,
            unit=ts.unit if same and ts else None,
            where="mapping.watermark",
        ).dt.epoch("us")
    last = None
    if mark is not None:
        text, stored = mark
        if stored != kind:
            raise ConfigError(
                f"{cfg.origin}: mapping.watermark: the last run's mark is a "
                f"{stored}, this column reads as a {kind}; set "
                f"mapping.watermark.type, or start over with --restart"
            )
        last = float(text)
    return Watermark(w.column, kind, value, last)
