"""One raw batch -> bodies ready to send + rejected rows (mapping, validation, encoding).

The CPU stage of the pipeline, all vectorized polars/numpy work. Its only state is the run's
:class:`~.dedupe.SeenIds` (and the timestamp-shape memo inside the plan).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from . import validation
from .config import Config
from .dedupe import SeenIds, fingerprints
from .encode import BODY_OVERHEAD, Encoder, Member
from .errors import ErrorCode
from .eventid import derive_event_ids
from .jsonexpr import json_value
from .mapping import Plan, map_batch
from .sources import ROW, RawBatch
from .validation import flag

_DERIVED_ID_JSON = 38  # '"' + 36-character UUID + '"'


@dataclass(slots=True)
class Prepared:
    """A batch after validation: what to send and what is already rejected."""

    source: str
    rows_read: int
    send: pl.DataFrame  # __row, event_id, body
    raw: pl.DataFrame  # the raw rows of ``send``, row for row (for rejects the API causes)
    rejected: pl.DataFrame  # raw columns as text + _source, _row, _error_code, _error_message
    codes: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0


def prepare(batch: RawBatch, plan: Plan, cfg: Config, seen: SeenIds) -> Prepared:
    ts_mapped = plan.timestamp is not None
    events = map_batch(batch.frame, plan).with_columns(
        validation.row_checks(timestamp_mapped=ts_mapped,
                              require_identity=cfg.validation.require_identity))
    enc = Encoder(events, timestamp=ts_mapped, identify=plan.identify_constant,
                  properties=[Member(s.key, s.slot, s.quoted) for s in plan.properties])
    ok = events.select(validation.passes_row_checks()).to_series()
    if plan.event_id is None:
        events = events.with_columns(enc.core().alias("core"))
        derived = derive_event_ids(events.get_column("core").filter(ok))
        events = events.with_columns(
            _scatter(events.get_column("event_id"), ok, derived).alias("event_id"),
            (pl.col("core").str.len_bytes() + BODY_OVERHEAD + _DERIVED_ID_JSON
             ).alias("body_bytes"))
    else:
        events = events.with_columns(enc.body().alias("body"))
        events = events.with_columns(pl.col("body").str.len_bytes().alias("body_bytes"))
    too_big = events.get_column("body_bytes") > cfg.api.max_body_bytes
    candidates = ok & ~too_big & events.get_column("event_id").is_not_null()
    dup = pl.Series(flag(ErrorCode.DUPLICATE_EVENT_ID), [False] * events.height,
                    dtype=pl.Boolean)
    if candidates.any():
        hits = seen.check_and_add(fingerprints(events.get_column("event_id").filter(candidates)))
        dup = _scatter(dup, candidates, pl.Series(hits))
    events = events.with_columns(
        dup.alias(flag(ErrorCode.DUPLICATE_EVENT_ID)),
        too_big.alias(flag(ErrorCode.PAYLOAD_TOO_LARGE)),
    ).with_columns(validation.describe(cfg.api.max_body_bytes))
    good = events.get_column("_error_code").is_null()
    body = enc.body_from_core() if plan.event_id is None else pl.col("body")
    send = events.filter(good).select(ROW, "event_id", body.alias("body"))
    bad_rows = events.filter(~good).select(ROW, "_error_code", "_error_message")
    rejected = reject_rows(batch.frame.filter(~good), bad_rows, batch.source.name)
    if batch.bad:
        rejected = pl.concat([rejected, malformed_rows(batch)], how="diagonal")
    codes: dict[str, int] = {}
    for combo, n in bad_rows.group_by("_error_code").len().iter_rows():
        for code in combo.split(";"):
            codes[code] = codes.get(code, 0) + n
    if batch.bad:
        codes[ErrorCode.MALFORMED_ROW] = codes.get(ErrorCode.MALFORMED_ROW, 0) + len(batch.bad)
    raw = batch.frame if good.all() else batch.frame.filter(good)
    return Prepared(batch.source.name, batch.rows, send, raw, rejected, codes, batch.bytes_read)


def _scatter(base: pl.Series, mask: pl.Series, values: pl.Series) -> pl.Series:
    """``base`` with the positions where ``mask`` is true replaced, in order, by ``values``."""
    if not len(values):
        return base
    return base.scatter(mask.arg_true(), values.cast(base.dtype))


def as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Raw columns as text, the way they are written to the rejects file."""
    exprs = []
    for name, dtype in frame.schema.items():
        if name == ROW:
            continue
        col = pl.col(name)
        if dtype == pl.String:
            exprs.append(col)
        elif isinstance(dtype, pl.List | pl.Array | pl.Struct):
            exprs.append(json_value(col).alias(name))
        else:
            exprs.append(col.cast(pl.String, strict=False).alias(name))
    return frame.select(exprs)


def reject_rows(raw: pl.DataFrame, errors: pl.DataFrame, source: str) -> pl.DataFrame:
    """Rejected rows (``raw`` and ``errors`` aligned row by row): original columns as text
    plus ``_source``, ``_row``, ``_error_code`` and ``_error_message``."""
    return as_text(raw).with_columns(
        pl.lit(source).alias("_source"),
        errors.get_column(ROW).alias("_row"),
        errors.get_column("_error_code"),
        errors.get_column("_error_message"),
    )


def malformed_rows(batch: RawBatch) -> pl.DataFrame:
    """Records that could not be parsed: their raw text in ``_raw``."""
    return pl.DataFrame({
        "_source": [batch.source.name] * len(batch.bad),
        "_row": [b.row for b in batch.bad],
        "_error_code": [ErrorCode.MALFORMED_ROW.value] * len(batch.bad),
        "_error_message": [b.reason for b in batch.bad],
        "_raw": [b.raw for b in batch.bad],
    }, schema={"_source": pl.String, "_row": pl.Int64, "_error_code": pl.String,
               "_error_message": pl.String, "_raw": pl.String})
