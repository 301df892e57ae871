"""One raw batch -> bodies ready to send + rejected rows (mapping, validation, encoding).

The CPU stage of the pipeline, all vectorized polars/numpy work. Its only state is the run's
:class:`~.dedupe.SeenIds` (and the timestamp-shape memo inside the plan).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import polars as pl

from . import validation
from .config import Config
from .dedupe import SeenIds, SortedKeys, sort_keys
from .encode import BODY_OVERHEAD, Encoder, Member
from .errors import ErrorCode
from .eventid import derive_event_ids
from .jsonexpr import json_value
from .mapping import Plan, map_batch
from .names import name_changes
from .shards import Shard, shard_of_ids, shard_of_records
from .sources import ROW, RawBatch
from .validation import flag
from .watermark import Watermark

_DERIVED_ID_JSON = 38  # '"' + 36-character UUID + '"'
_ID_SEED = 0x1D5EED


@dataclass(slots=True)
class Prepared:
    """A batch after validation: what to send and what is already rejected."""

    source: str
    rows_read: int
    send: pl.DataFrame  # __row, event_id, body
    raw: pl.DataFrame  # the raw rows of ``send``, row for row (for rejects the API causes)
    rejected: pl.DataFrame  # raw columns as text + _source, _row, _error_code, _error_message
    skipped_watermark: int = 0  # rows at or below the last completed run's mark
    watermark_max: float | None = None  # the largest watermark value of the batch
    renames: pl.DataFrame | None = None  # from, to, count: event names changed (see names.py)
    skipped_shard: int = 0  # rows left to other shards (see shards.py)


@dataclass(slots=True)
class Examined:
    """A batch checked row by row and assembled as if no earlier batch shared its ids.

    Only the duplicate check against earlier batches remains (:func:`settle`); it usually
    finds nothing, and then ``prepared`` is the answer as it stands.
    """

    batch: RawBatch
    events: pl.DataFrame
    encoder: Encoder
    candidates: npt.NDArray[np.intp]  # rows that pass every other check
    keys: SortedKeys  # their dedupe fingerprints (id hash, or content hash when derived)
    prepared: Prepared


def examine(
    batch: RawBatch,
    plan: Plan,
    cfg: Config,
    *,
    bodies: bool = True,
    watermark: Watermark | None = None,
    shard: Shard | None = None,
) -> Examined:
    """Everything about a batch that does not depend on other batches (runs in parallel).

    With a ``shard``, the rows of other shards become skipped rows: neither sent, rejected,
    counted as read nor checked for duplicates (their ids are another shard's).
    """
    watermark_max = None
    fresh: npt.NDArray[np.bool_] | None = None
    if watermark is not None:
        below, watermark_max = watermark.apply(batch.frame)
        if below is not None:
            fresh = below if batch.skip is None else below & ~batch.skip
            batch.skip = below if batch.skip is None else below | batch.skip
    ts_mapped = plan.timestamp is not None
    events = map_batch(batch.frame, plan, text_times=bodies, profiled=batch.profiled)
    names = validation.name_check(events.get_column("event"))
    checks = validation.row_checks(
        timestamp_mapped=ts_mapped,
        require_identity=cfg.validation.require_identity,
        names=names is None,
    )
    events = events.with_columns(*checks, *(() if names is None else (names,)))
    enc = Encoder(
        events,
        timestamp=ts_mapped,
        identify=plan.identify_constant,
        properties=[Member(s.key, s.slot, s.quoted) for s in plan.properties],
    )
    # Rows without an id (none mapped, or the mapped cell empty) get one derived from content.
    derived = pl.col("event_id").is_null()
    # A derived id is a function of the event's content: equal content, equal id.
    id_key = pl.col("event_id").hash(seed=_ID_SEED)
    if events.get_column("event_id").null_count():
        events = events.with_columns(enc.content_hash(events).alias("_content"))
        key = pl.when(derived).then(pl.col("_content")).otherwise(id_key)
    else:
        key = id_key
    body_bytes, too_big = _body_size(events, enc, cfg.api.max_body_bytes)
    events = events.with_columns(
        validation.passes_row_checks().alias("_ok"),
        body_bytes.alias("body_bytes"),
        derived.alias("_derived"),
        key.alias("_key"),
    )
    events = events.with_columns(too_big.alias(flag(ErrorCode.PAYLOAD_TOO_LARGE)))
    candidates = np.flatnonzero(events.select(pl.col("_ok") & ~too_big).to_series().to_numpy())
    skipped_shard = 0
    if shard is not None:
        own, events = _own_rows(batch, events, enc, candidates, shard)
        skipped_shard = int((~own if batch.skip is None else ~own & ~batch.skip).sum())
        skipped_shard += _keep_own_malformed(batch, shard)
        fresh = None if fresh is None else fresh & own
        candidates = candidates[own[candidates]]
        batch.skip = ~own if batch.skip is None else batch.skip | ~own
    keys = events.get_column("_key").to_numpy()[candidates].astype(np.uint64, copy=False)
    no_dups = np.zeros(events.height, dtype=np.bool_)
    prepared = assemble(batch, events, enc, no_dups, cfg, bodies=bodies)
    prepared.skipped_watermark = 0 if fresh is None else int(fresh.sum())
    prepared.watermark_max = watermark_max
    prepared.skipped_shard = skipped_shard
    if plan.event_source is not None:
        prepared.renames = name_changes(events)
    return Examined(batch, events, enc, candidates, sort_keys(keys), prepared)


def _body_size(events: pl.DataFrame, enc: Encoder, limit: int) -> tuple[pl.Expr, pl.Expr]:
    """(each body's size in bytes, whether it is over ``limit``), measured, not built: bodies
    are written for sendable rows only. When even the batch's upper bound fits, no row is
    measured and the size stays null."""
    bound = enc.core_length_bound()
    ids = events.get_column("event_id")
    longest_id = ids.str.len_bytes().max() if ids.dtype == pl.String else None
    id_bound = max(_DERIVED_ID_JSON, 6 * int(longest_id or 0) + 2)  # type: ignore[arg-type]
    fits = bound is not None and bound + BODY_OVERHEAD + id_bound <= limit
    if fits and ids.dtype in (pl.String, pl.Null):
        return pl.lit(None, pl.Int64), pl.lit(False)
    id_bytes = (
        pl.when(pl.col("event_id").is_null())
        .then(_DERIVED_ID_JSON)
        .otherwise(json_value(pl.col("event_id")).str.len_bytes())
    )
    return enc.core_length() + BODY_OVERHEAD + id_bytes, pl.col("body_bytes") > limit


def settle(ex: Examined, cfg: Config, seen: SeenIds, *, bodies: bool = True) -> Prepared:
    """The in-order part: duplicates against earlier batches (and the batch rebuilt, in the
    rare case it has some)."""
    hits = seen.add_sorted(ex.keys)
    if not hits.any():
        return ex.prepared
    dup = np.zeros(ex.events.height, dtype=np.bool_)
    dup[ex.candidates] = hits
    rebuilt = assemble(ex.batch, ex.events, ex.encoder, dup, cfg, bodies=bodies)
    # Only what the duplicates change; the rest (counts, watermark, renames) stays as examined.
    return replace(ex.prepared, send=rebuilt.send, raw=rebuilt.raw, rejected=rebuilt.rejected)


def _own_rows(
    batch: RawBatch,
    events: pl.DataFrame,
    enc: Encoder,
    candidates: npt.NDArray[np.intp],
    shard: Shard,
) -> tuple[npt.NDArray[np.bool_], pl.DataFrame]:
    """Which rows of the batch are this shard's: rows that pass every check by their event
    id (derived here if not mapped: the id sent), the others by file and record number.

    The ids derived here are written into ``events`` (no longer marked derived), so the
    bodies are built with them instead of deriving them a second time.
    """
    k, n = shard
    own = np.zeros(events.height, dtype=np.bool_)
    is_candidate = np.zeros(events.height, dtype=np.bool_)
    is_candidate[candidates] = True
    if len(candidates):
        derive = pl.Series(is_candidate) & events.get_column("_derived")
        if derive.any():
            cores = events.filter(derive).select(enc.core()).to_series()
            events = events.with_columns(
                _scatter(events.get_column("event_id"), derive, derive_event_ids(cores)),
                (events.get_column("_derived") & ~derive).alias("_derived"),
            )
        ids = events.get_column("event_id").cast(pl.String).gather(candidates)
        own[candidates] = shard_of_ids(ids, n) == k
    others = np.flatnonzero(~is_candidate)
    if len(others):
        rows = events.get_column(ROW).to_numpy()[others]
        own[others] = shard_of_records(batch.source.name, rows, n) == k
    return own, events


def _keep_own_malformed(batch: RawBatch, shard: Shard) -> int:
    """Keep this shard's malformed records; how many were another shard's."""
    if not batch.bad:
        return 0
    k, n = shard
    mine = shard_of_records(batch.source.name, [b.row for b in batch.bad], n) == k
    kept = [b for b, m in zip(batch.bad, mine, strict=True) if m]
    left = len(batch.bad) - len(kept)
    batch.bad = kept
    return left


def assemble(
    batch: RawBatch,
    events: pl.DataFrame,
    enc: Encoder,
    dup_np: npt.NDArray[np.bool_],
    cfg: Config,
    *,
    bodies: bool,
) -> Prepared:
    """Rejects and bodies of a batch, given which rows are duplicates of earlier ones.

    ``bodies=False`` (a dry run) skips what only the sending needs: the request texts and the
    derived ids (duplicates are still found, from the content the ids are derived from).
    """
    dup = pl.Series(flag(ErrorCode.DUPLICATE_EVENT_ID), dup_np)
    events = events.with_columns(dup)
    good = events.select(
        pl.col("_ok") & ~dup & ~pl.col(flag(ErrorCode.PAYLOAD_TOO_LARGE))
    ).to_series()
    bad = ~good
    rows = batch.rows
    if batch.skip is not None:  # settled by an earlier run: neither sent nor rejected again
        skip = pl.Series(batch.skip)
        good, bad = good & ~skip, bad & ~skip
        rows -= int(batch.skip.sum())
    # Messages are built for the rejected rows only: usually a handful per batch, so they
    # are gathered by position first (a filter, or a lazy query, costs more than the rows).
    where = bad.arg_true()
    bad_events = events[where]
    bad_rows = bad_events.select(
        ROW, *validation.describe(cfg.api.max_body_bytes, validation.flagged(bad_events))
    )
    rejected = reject_rows(batch.frame[where], bad_rows, batch.source.name)
    if batch.bad:
        rejected = pl.concat([rejected, malformed_rows(batch)], how="diagonal")
    all_good = bool(good.all())
    if not bodies:  # a dry run keeps only the row numbers of what it would send
        send = events.select(ROW).filter(good)
        return Prepared(batch.source.name, rows, send, batch.frame.clear(), rejected)
    sendable = events if all_good else events.filter(good)
    if sendable.get_column("_derived").any():
        cores = sendable.select(ROW, "event_id", "_derived", enc.core().alias("core"))
        mask = cores.get_column("_derived")
        ids = _scatter(
            cores.get_column("event_id"),
            mask,
            derive_event_ids(cores.get_column("core").filter(mask)),
        )
        send = cores.with_columns(ids.alias("event_id")).select(
            ROW, "event_id", enc.body_from_core().alias("body")
        )
    else:
        send = sendable.select(ROW, "event_id", enc.body().alias("body"))
    raw = batch.frame if all_good else batch.frame.filter(good)
    return Prepared(batch.source.name, rows, send, raw, rejected)


def _scatter(base: pl.Series, mask: pl.Series, values: pl.Series) -> pl.Series:
    """``base`` with the positions where ``mask`` is true replaced, in order, by ``values``."""
    if not len(values):
        return base
    return base.scatter(mask.arg_true(), values.cast(base.dtype))


def as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Raw columns as text, the way they are written to the rejects file, each its own copy
    (see :func:`.rejects.owned_text`: a few rows must not hold the whole batch's text)."""
    exprs = []
    for name, dtype in frame.schema.items():
        if name == ROW:
            continue
        col = pl.col(name)
        if dtype == pl.String:
            exprs.append(pl.concat_str([col, pl.lit("")]).alias(name))
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
    return pl.DataFrame(
        {
            "_source": [batch.source.name] * len(batch.bad),
            "_row": [b.row for b in batch.bad],
            "_error_code": [ErrorCode.MALFORMED_ROW.value] * len(batch.bad),
            "_error_message": [b.reason for b in batch.bad],
            "_raw": [b.raw for b in batch.bad],
        },
        schema={
            "_source": pl.String,
            "_row": pl.Int64,
            "_error_code": pl.String,
            "_error_message": pl.String,
            "_raw": pl.String,
        },
    )
