"""A sample of rows -> guesses for each part of a mapping, each with a note saying why (pure).

Columns are recognised by name first (a preset's names, then common ones), and a guess is kept
only if the sampled values fit it: a time column must read as times, an event-id column must be
unique. Whatever is guessed is marked in the written file as something to check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import orjson
import polars as pl

from ..names import is_valid_name, normalize_name
from ..profile import column_stats
from ..timeparse import auto_candidates
from .presets import Preset

NULL_MARKERS = ("\\N", "NULL")

_EVENT = ("event", "eventname", "eventtype", "eventaction", "action", "name", "type")
_USER = (
    "userid",
    "distinctid",
    "propertiesdistinctid",
    "customerid",
    "accountid",
    "uid",
    "memberid",
    "externalid",
    "user",
)
_ANON = ("anonymousid", "anonid", "deviceid", "domainuserid", "cookieid", "visitorid", "clientid")
_TIME = (
    "timestamp",
    "ts",
    "time",
    "eventtime",
    "eventtimestamp",
    "eventts",
    "datetime",
    "occurredat",
    "createdat",
    "date",
    "propertiestime",
    "sentat",
    "receivedat",
)
_EVENT_ID = ("eventid", "insertid", "propertiesinsertid", "messageid", "uuid", "eid", "id")

# Shapes tried when no ISO 8601 shape reads the column; day-first before month-first.
_FORMATS = (
    "%d/%m/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%d.%m.%Y %H:%M:%S",
    "%d-%m-%Y %H:%M:%S",
    "%Y-%m-%d %H:%M:%S %z",
    "%Y-%m-%d %H:%M:%S%.f %z",
)
_EPOCH_TEXT = r"^-?[0-9]+(?:\.[0-9]+)?$"
# An epoch's magnitude in each unit for times between 1973 and 5138: s < 1e11 <= ms < ...
_UNITS = ((1e11, "s"), (1e14, "ms"), (1e17, "us"), (float("inf"), "ns"))
_PER_SECOND = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}
_YEAR_S = 365.2425 * 86400


@dataclass(slots=True)
class Pick:
    """One column chosen for a mapping field, and what to check about it."""

    column: str | None
    note: str


@dataclass(slots=True)
class TimePick:
    column: str
    note: str
    unit: str | None = None
    format: str | None = None
    naive: bool = False


@dataclass(slots=True)
class Property:
    column: str
    type: str
    note: str = ""


@dataclass(slots=True)
class Inference:
    """Everything ``init`` writes, decided from a sample."""

    rows: int
    columns: list[str]
    preset: Preset | None
    event: Pick
    normalize: bool
    names_left_invalid: list[str]
    user_id: Pick
    anonymous_id: Pick
    timestamp: TimePick | None
    event_id: Pick
    null_values: list[str]
    json: dict[str, str]
    properties: list[Property]
    notes: list[str] = field(default_factory=list)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _by_name(
    columns: list[str], preset_names: tuple[str, ...], generic: tuple[str, ...], taken: set[str]
) -> list[str]:
    """Columns matching a preset's exact names, then the generic names, in that order."""
    free = [c for c in columns if c not in taken]
    out = [n for n in preset_names if n in free]
    keys = {c: _key(c) for c in free}
    for g in generic:
        out += [c for c in free if keys[c] == g and c not in out]
    return out


def _values(frame: pl.DataFrame, column: str) -> pl.Series:
    return frame.get_column(column).drop_nulls()


def infer(frame: pl.DataFrame, *, is_text: bool, preset: Preset | None) -> Inference:
    """Guess a mapping for ``frame`` (a sample; ``is_text``: read from CSV/TSV)."""
    columns = list(frame.columns)
    nulls: list[str] = []
    if is_text:
        strings = [c for c, t in frame.schema.items() if t == pl.String]
        nulls = [
            m
            for m in NULL_MARKERS
            if strings
            and frame.select(pl.any_horizontal([pl.col(c).eq(m).any() for c in strings])).item()
        ]
        if nulls:
            frame = frame.with_columns(
                pl.when(pl.col(c).is_in(nulls)).then(None).otherwise(pl.col(c)).alias(c)
                for c in strings
            )
    p = preset
    taken: set[str] = set()

    event = _pick_event(frame, _by_name(columns, p.event if p else (), _EVENT, taken))
    if event.column:
        taken.add(event.column)
    normalize, left = _naming(frame, event.column)

    timestamp = _pick_time(
        frame,
        _by_name(columns, p.timestamp if p else (), _TIME, taken),
        [c for c in columns if c not in taken],
    )
    if timestamp:
        taken.add(timestamp.column)
    user = _pick_id(frame, _by_name(columns, p.user_id if p else (), _USER, taken), "user id")
    if user.column:
        taken.add(user.column)
    anon = _pick_id(
        frame, _by_name(columns, p.anonymous_id if p else (), _ANON, taken), "anonymous id"
    )
    if anon.column:
        taken.add(anon.column)
    event_id = _pick_event_id(frame, _by_name(columns, p.event_id if p else (), _EVENT_ID, taken))
    if event_id.column:
        taken.add(event_id.column)

    rest = [c for c in columns if c not in taken and not c.startswith("_")]
    json_cols = _json_columns(frame, rest, p)
    props = _properties(frame, [c for c in rest if c not in json_cols], is_text)
    return Inference(
        frame.height,
        columns,
        preset,
        event,
        normalize,
        left,
        user,
        anon,
        timestamp,
        event_id,
        nulls,
        json_cols,
        props,
    )


def _pick_event(frame: pl.DataFrame, candidates: list[str]) -> Pick:
    for c in candidates:
        if frame.schema[c] == pl.String and _values(frame, c).len():
            return Pick(c, f"CHECK: event names from column {c!r}")
    return Pick(None, "CHECK: no event-name column recognised; name one (or a template)")


def _naming(frame: pl.DataFrame, column: str | None) -> tuple[bool, list[str]]:
    """Whether sampled names need ``normalize: underscore``, and those it cannot save."""
    if column is None:
        return False, []
    names = _values(frame, column).unique().sort().to_list()
    bad = [n for n in names if not is_valid_name(n)]
    if not bad:
        return False, []
    return True, [n for n in bad if not is_valid_name(normalize_name(n, "underscore"))]


def _pick_id(frame: pl.DataFrame, candidates: list[str], what: str) -> Pick:
    for c in candidates:
        if not isinstance(frame.schema[c], pl.List | pl.Struct) and _values(frame, c).len():
            return Pick(c, f"CHECK: the {what}")
    return Pick(None, f"no {what} column recognised")


def _pick_event_id(frame: pl.DataFrame, candidates: list[str]) -> Pick:
    for c in candidates:
        if isinstance(frame.schema[c], pl.List | pl.Struct):
            continue
        vals = _values(frame, c).cast(pl.String)
        if not vals.len():
            continue
        if vals.n_unique() == vals.len():
            return Pick(
                c, "CHECK: unique in the sample; used as written, so re-imports are recognised"
            )
        return Pick(
            None,
            f"column {c!r} repeats values in the sample, so it is not used as "
            "the event id; ids are derived from each event's content",
        )
    return Pick(None, "no event-id column: a stable id is derived from each event's content")


def _pick_time(frame: pl.DataFrame, by_name: list[str], others: list[str]) -> TimePick | None:
    for c in by_name:
        got = _read_time(frame, c, numbers=True)
        if got:
            return got
    for c in others:  # unnamed: only text that reads as dates and times
        if frame.schema[c] in (pl.String, pl.Datetime, pl.Date) or isinstance(
            frame.schema[c], pl.Datetime
        ):
            got = _read_time(frame, c, numbers=False)
            if got:
                return got
    return None


def _read_time(frame: pl.DataFrame, c: str, *, numbers: bool) -> TimePick | None:
    dtype = frame.schema[c]
    vals = _values(frame, c)
    if not vals.len():
        return None
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone:
            return TimePick(c, f"CHECK: times with a zone ({dtype.time_zone})")
        return TimePick(
            c,
            "CHECK: times without a zone: taken as UTC; set timezone: if they are local",
            naive=True,
        )
    if dtype == pl.Date:
        return TimePick(c, "CHECK: dates only (midnight, UTC)", naive=True)
    if dtype.is_numeric() or (dtype == pl.String and vals.str.contains(_EPOCH_TEXT).all()):
        return _epoch(c, vals.cast(pl.Float64, strict=False)) if numbers else None
    if dtype != pl.String:
        return None
    text = pl.DataFrame({"t": vals.str.strip_chars()})
    cands = auto_candidates(pl.col("t"), "UTC")
    found = text.select(
        aware=cands[0].is_not_null().sum(), any=pl.coalesce(cands).is_not_null().sum()
    ).row(0, named=True)
    n = vals.len()
    if found["any"] == n:
        if found["aware"] == n:
            return TimePick(c, "CHECK: ISO 8601 times with offsets (each keeps its instant)")
        return TimePick(
            c,
            "CHECK: ISO 8601 times without an offset: taken as UTC; set "
            "timezone: (an IANA name) if they are local",
            naive=True,
        )
    for fmt in _FORMATS:
        ok = text.select(
            pl.col("t").str.to_datetime(fmt, strict=False, exact=True).is_not_null().sum()
        ).item()
        if ok == n:
            zoned = "%z" in fmt
            day_first = fmt.startswith("%d/") and any(
                f.startswith("%m/")
                and text.select(
                    pl.col("t").str.to_datetime(f, strict=False, exact=True).is_not_null().all()
                ).item()
                for f in _FORMATS
            )
            note = "CHECK: times in the format below"
            if day_first:
                note += "; day/month order is ambiguous in the sample (day first assumed)"
            if not zoned:
                note += "; taken as UTC: set timezone: if they are local"
            return TimePick(c, note, format=fmt, naive=not zoned)
    return None


def _epoch(c: str, numbers: pl.Series) -> TimePick | None:
    magnitude = float(numbers.abs().median() or 0.0)  # type: ignore[arg-type]
    if magnitude <= 0:
        return None
    unit = next(u for bound, u in _UNITS if magnitude < bound)
    year = 1970 + magnitude / _PER_SECOND[unit] / _YEAR_S
    if not 1990 <= year <= 2100:
        return None
    return TimePick(
        c,
        f"CHECK: epoch numbers in {unit} (from their magnitude, e.g. {numbers[0]:.0f})",
        unit=unit,
    )


def _json_columns(
    frame: pl.DataFrame, candidates: list[str], preset: Preset | None
) -> dict[str, str]:
    """Text columns whose every sampled non-empty value is a JSON object, with a prefix for
    their keys: the preset's, or none for the first whose keys clash with nothing."""
    found: dict[str, set[str]] = {}
    for c in candidates:
        if frame.schema[c] != pl.String:
            continue
        vals = _values(frame, c)
        if not vals.len() or not vals.str.strip_chars_start().str.starts_with("{").all():
            continue
        keys: set[str] = set()
        for cell in vals.to_list():
            try:
                obj = orjson.loads(cell)
            except orjson.JSONDecodeError:
                break
            if not isinstance(obj, dict):
                break
            keys |= _paths(obj)
        else:
            found[c] = keys
    used = {c for c in candidates if c not in found}
    out: dict[str, str] = {}
    wanted = preset.json if preset else {}
    for c in sorted(found, key=lambda c: (c not in wanted, candidates.index(c))):
        prefix = wanted.get(c, "" if not out else f"{c}.")
        if {prefix + k for k in found[c]} & used:
            prefix = f"{c}."
        out[c] = prefix
        used |= {prefix + k for k in found[c]}
    return out


def _paths(obj: dict[str, object], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in obj.items():
        if isinstance(v, dict) and v:
            out |= _paths(v, f"{prefix}{k}.")
        else:
            out.add(prefix + k)
    return out


def _properties(frame: pl.DataFrame, cols: list[str], is_text: bool) -> list[Property]:
    kinds = (
        column_stats(frame, [c for c in cols if frame.schema[c] == pl.String]) if is_text else {}
    )
    out: list[Property] = []
    for c in cols:
        dtype = frame.schema[c]
        vals = _values(frame, c)
        if not vals.len():
            out.append(Property(c, "string", "empty in the sample"))
        elif c in kinds:
            kind = kinds[c].kind
            note = ""
            if (
                kind == "string"
                and vals.str.contains(r"^0[0-9]+$").any()
                and vals.str.contains(r"^[0-9]+$").all()
            ):
                note = "digits with leading zeros: kept as text"
            out.append(Property(c, kind, note))
        elif dtype == pl.Boolean:
            out.append(Property(c, "boolean"))
        elif dtype.is_integer():
            out.append(Property(c, "integer"))
        elif dtype.is_numeric():
            out.append(Property(c, "number"))
        elif isinstance(dtype, pl.Datetime | pl.Date):
            out.append(Property(c, "datetime"))
        elif isinstance(dtype, pl.List):
            out.append(Property(c, "string", "lists are sent as JSON text"))
        else:
            out.append(Property(c, "string"))
    return out
