"""Config + file profile -> a plan; a plan turns a raw batch into event columns (pure).

The plan is built once per file (so a property's JSON type is fixed for the file) and applied
to every batch as polars expressions. Output columns of :func:`map_batch`:

``__row``, ``event`` (the name to send), ``event_raw`` (the name as read, before ``names`` and
``normalize``), ``user_id``, ``anonymous_id``, ``event_id`` (mapped, may be null),
``ts_raw`` (text as read, null when empty), ``timestamp`` (RFC 3339 UTC or null),
``identify`` (bool or null) and ``identify_raw``, one ``p<i>`` column per property (text to
quote, or JSON text, see :attr:`PropertySpec.quoted`; null = omit) and ``prop_errors`` (text,
null when every property is fine).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import polars as pl

from .config import (
    BoolConstant,
    ColumnRef,
    Config,
    Constant,
    EventColumn,
    EventTemplate,
    Template,
    TimestampMapping,
)
from .errors import ConfigError, InputError
from .jsonexpr import json_value
from .jsonprops import JsonColumn, Problem, decode, plan_json_columns, refuse_clashes
from .jsonprops import problem as json_problem
from .names import name_expr
from .profile import PLAIN_BOOLEAN, PLAIN_NUMBER, FileProfile
from .sources import ROW
from .timeparse import AutoParser, format_rfc3339, to_utc

Kind = Literal[
    "raw_number", "number", "integer", "boolean", "text_boolean", "string", "datetime", "json_text"
]

_TS = "__ts"
_BAD = "__prop_bad"
_JSON_NUMBER = r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$"
_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]


@dataclass(frozen=True, slots=True)
class PropertySpec:
    column: str
    key: str
    kind: Kind
    slot: str = ""  # output column of map_batch

    @property
    def quoted(self) -> bool:
        """Is the mapped value text to be written as a JSON string (else it is JSON already)?"""
        return self.kind in ("string", "datetime", "json_text")


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything :func:`map_batch` needs, resolved against one file's columns."""

    event: pl.Expr
    user_id: pl.Expr | None
    anonymous_id: pl.Expr | None
    event_id: pl.Expr | None
    ts_raw: pl.Expr | None
    timestamp: pl.Expr | None
    identify: pl.Expr
    identify_raw: pl.Expr
    properties: tuple[PropertySpec, ...]
    property_exprs: tuple[tuple[pl.Expr, Problem | None], ...]
    added_null_columns: tuple[str, ...] = ()
    ts_auto: AutoParser | None = None
    # (slot, column, pattern): text written raw into the JSON (profiled numbers, booleans)
    guards: tuple[tuple[str, str, str], ...] = ()
    json_columns: tuple[JsonColumn, ...] = ()  # decoded into their leaves before mapping
    identify_constant: bool | None = False  # None: read from a column
    event_source: pl.Expr | None = None  # the name as read, when names/normalize change it


def mapped_columns(cfg: Config) -> set[str]:
    """Columns consumed by the event fields (so not sent again as properties)."""
    return {col for key, col in _needed(cfg) if not key.startswith("mapping.properties")}


def property_columns(cfg: Config, columns: list[str]) -> list[str]:
    """Columns sent as one property each (JSON columns are sent as their keys instead)."""
    props = cfg.mapping.properties
    skip = set(props.exclude) | set(props.json_columns)
    if props.include == "*":
        skip |= mapped_columns(cfg)
        return [c for c in columns if c not in skip and not c.startswith("_") and c != ROW]
    return [c for c in props.include if c not in skip]


def build_plan(cfg: Config, prof: FileProfile) -> Plan:
    """Resolve the mapping against one file; a missing column is a :class:`ConfigError`."""
    schema = dict(prof.schema)
    where = f"{cfg.origin}: "
    if not schema:
        raise InputError(f"{prof.source.name}: the file is empty (no header, no columns)")
    needed = _needed(cfg)
    missing = [(key, col) for key, col in needed if col not in schema]
    added: list[str] = []
    if missing and prof.source.format == "ndjson":
        # JSON lines may omit keys; a key absent from the whole file reads as empty.
        for _, col in missing:
            schema[col] = pl.String()
            added.append(col)
    elif missing:
        key, col = missing[0]
        raise ConfigError(
            f"{where}{key}: column {col!r} not found in {prof.source.name} "
            f"(columns: {', '.join(prof.columns) or 'none'})"
        )
    m = cfg.mapping
    ts = m.timestamp_spec()
    ts_raw = ts_expr = None
    ts_auto = None
    if ts is not None:
        ts_raw, ts_expr = _timestamp(ts, schema, "mapping.timestamp")
        if ts.column and schema[ts.column] == pl.String and not ts.format and not ts.unit:
            ts_auto = AutoParser(ts.timezone)
            ts_expr = pl.col(_TS)
    identify, identify_raw = _identify(m.identify, schema)
    specs = _property_specs(cfg, prof, schema)
    json_columns, json_specs = _json_specs(cfg, prof, schema, specs)
    specs += json_specs
    tz = ts.timezone if ts else "UTC"
    # Text numbers: a CSV value must be plain (see PLAIN_NUMBER); a Parquet decimal too wide
    # for polars arrives as exact text and is any JSON number.
    number = PLAIN_NUMBER if prof.is_text else _JSON_NUMBER
    event_source = _event(m.event, schema)
    naming = (
        m.event
        if isinstance(m.event, EventColumn | EventTemplate) and m.event.changes_names
        else None
    )
    return Plan(
        event=(
            event_source
            if naming is None
            else name_expr(event_source, names=naming.names, normalize=naming.normalize)
        ),
        event_source=None if naming is None else event_source,
        user_id=_id_field(m.user_id, schema),
        anonymous_id=_id_field(m.anonymous_id, schema),
        event_id=_id_field(m.event_id, schema),
        ts_raw=ts_raw,
        timestamp=ts_expr,
        identify=identify,
        identify_raw=identify_raw,
        properties=tuple(specs),
        property_exprs=tuple(_property_value(s, schema[s.column], tz) for s in specs),
        json_columns=tuple(json_columns),
        added_null_columns=tuple(added),
        ts_auto=ts_auto,
        guards=tuple(
            (s.slot, s.column, number if s.kind == "raw_number" else PLAIN_BOOLEAN)
            for s in specs
            if s.kind in ("raw_number", "text_boolean") and schema[s.column] == pl.String
        ),
        identify_constant=(
            m.identify
            if isinstance(m.identify, bool)
            else bool(m.identify.value)
            if isinstance(m.identify, BoolConstant)
            else None
        ),
    )


def map_batch(
    frame: pl.DataFrame, plan: Plan, *, text_times: bool = True, profiled: bool = False
) -> pl.DataFrame:
    """Raw batch -> event columns (see the module docstring).

    ``text_times=False`` leaves ``timestamp`` as a UTC datetime: a dry run needs only its
    size and identity, not its text (see :meth:`Encoder.core_length`). ``profiled``: the
    batch holds the very values preflight typed (:attr:`.sources.RawBatch.profiled`), so
    they fit the plan's guards without a check.
    """
    if plan.added_null_columns:
        frame = frame.with_columns(
            pl.lit(None, pl.String).alias(c) for c in plan.added_null_columns
        )
    if plan.ts_auto is not None and plan.ts_raw is not None:
        raw = frame.select(plan.ts_raw).to_series()
        frame = frame.with_columns(plan.ts_auto.parse(raw).alias(_TS))
    if plan.json_columns:
        frame = frame.with_columns(s for jc in plan.json_columns for s in decode(frame, jc))
    null = pl.lit(None, pl.String)
    values = {
        s.slot: value.alias(s.slot)
        for s, (value, _) in zip(plan.properties, plan.property_exprs, strict=True)
    }
    _guard(frame, plan, values, profiled=profiled)
    problems = [p for _, p in plan.property_exprs if p is not None]
    problems += [json_problem(jc) for jc in plan.json_columns]
    flagged = (
        [pl.any_horizontal(b for b, _ in problems).fill_null(False).alias(_BAD)] if problems else []
    )
    out = frame.select(
        pl.col(ROW),
        plan.event.alias("event"),
        *(() if plan.event_source is None else (plan.event_source.alias("event_raw"),)),
        (plan.user_id if plan.user_id is not None else null).alias("user_id"),
        (plan.anonymous_id if plan.anonymous_id is not None else null).alias("anonymous_id"),
        (plan.event_id if plan.event_id is not None else null).alias("event_id"),
        (plan.ts_raw if plan.ts_raw is not None else null).alias("ts_raw"),
        (
            null
            if plan.timestamp is None
            else format_rfc3339(plan.timestamp)
            if text_times
            else plan.timestamp
        ).alias("timestamp"),
        plan.identify.alias("identify"),
        plan.identify_raw.alias("identify_raw"),
        *values.values(),
        null.alias("prop_errors"),
        *flagged,
    )
    if problems:
        bad = out.get_column(_BAD)
        out = out.drop(_BAD)
        if bad.any():
            out = out.with_columns(_problem_texts(frame, bad, problems))
    if plan.event_source is None:
        out = out.insert_column(2, out.get_column("event").alias("event_raw"))
    return out


def _guard(frame: pl.DataFrame, plan: Plan, values: dict[str, pl.Expr], *, profiled: bool) -> None:
    """Profiled text columns are written raw; should a value not fit the profile (it cannot
    when preflight read the same records), that batch writes it as a JSON string instead of
    producing invalid JSON. One check per batch, not a second expression per row.

    Text booleans are written lowercased. A batch that holds only ``true`` and ``false`` (as
    most writers put them) is written as read: lowercasing costs ten times the check, and
    those values fit the guard too.
    """
    booleans = {s.slot: s.column for s in plan.properties if s.kind == "text_boolean"}
    guards = [] if profiled else list(plan.guards)
    if not guards and not booleans:
        return
    lowercase = [
        (pl.col(c).is_null() | (pl.col(c) == "true") | (pl.col(c) == "false")).all().alias(s)
        for s, c in booleans.items()
    ]
    numbers = [g for g in guards if g[0] not in booleans]
    fits = frame.select(*lowercase, *_fit_checks(numbers)).row(0, named=True)
    for slot, column in booleans.items():
        if fits[slot]:
            values[slot] = pl.col(column).alias(slot)
    unfit = [g for g in numbers if not fits[g[0]]]
    spelled = [g for g in guards if g[0] in booleans and not fits[g[0]]]
    if spelled:  # booleans in other spellings: their guard proper
        again = frame.select(_fit_checks(spelled)).row(0, named=True)
        unfit += [g for g in spelled if not again[g[0]]]
    for slot, column, pattern in unfit:
        col = pl.col(column)
        values[slot] = (
            pl.when(col.str.contains(pattern))
            .then(values[slot])
            .otherwise(json_value(col))
            .alias(slot)
        )


def _fit_checks(guards: list[tuple[str, str, str]]) -> list[pl.Expr]:
    """Per guard (slot, column, pattern): does every value of the batch fit?"""
    return [(pl.col(c).is_null() | pl.col(c).str.contains(p)).all().alias(s) for s, c, p in guards]


def _problem_texts(frame: pl.DataFrame, bad: pl.Series, problems: list[Problem]) -> pl.Series:
    """``prop_errors`` of a batch where some row has a problem: the text is built for those
    rows only (a handful a batch at most: building it for every row cost as much as the
    values)."""
    where = bad.arg_true()
    texts = frame[where].select(
        pl.concat_str([pl.when(b).then(m) for b, m in problems], separator="; ", ignore_nulls=True)
    )
    none = pl.repeat(None, len(bad), dtype=pl.String, eager=True)
    return none.scatter(where, texts.to_series()).alias("prop_errors")


# --- fields ----------------------------------------------------------------------------------


def _needed(cfg: Config) -> list[tuple[str, str]]:
    m = cfg.mapping
    out: list[tuple[str, str]] = []
    for key in ("event", "user_id", "anonymous_id", "event_id", "identify"):
        f = getattr(m, key)
        if isinstance(f, str):
            out.append((f"mapping.{key}", f))
        elif isinstance(f, ColumnRef):
            out.append((f"mapping.{key}.column", f.column))
        elif isinstance(f, Template):
            out.extend((f"mapping.{key}.template", c) for c in f.columns())
    ts = m.timestamp_spec()
    if ts is not None and ts.column:
        out.append(("mapping.timestamp", ts.column))
    props = m.properties
    if props.include != "*":
        out.extend(
            (f"mapping.properties.include[{i}]", c)
            for i, c in enumerate(props.include)
            if c not in props.json_columns
        )
    out.extend((f"mapping.properties.json.{c}", c) for c in props.json_columns)
    return out


def _text(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """An id as text: ``000123`` stays, an int64 123 becomes ``"123"``, 12.0 becomes ``"12"``."""
    if dtype == pl.String:
        out = expr
    elif _nested(dtype):
        out = json_value(expr)
    elif dtype.is_float():
        out = (
            pl.when(expr.is_finite() & (expr == expr.round(0)) & (expr.abs() < 2**53))
            .then(expr.cast(pl.Int64, strict=False).cast(pl.String))
            .otherwise(expr.cast(pl.String))
        )
    elif dtype == pl.Boolean:
        out = pl.when(expr).then(pl.lit("true")).otherwise(pl.lit("false"))
    else:
        out = expr.cast(pl.String, strict=False)
    return pl.when(out != "").then(out)


def _nested(dtype: pl.DataType) -> bool:
    return isinstance(dtype, pl.List | pl.Array | pl.Struct)


def _constant_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _id_field(
    f: str | ColumnRef | Constant | None, schema: dict[str, pl.DataType]
) -> pl.Expr | None:
    if f is None:
        return None
    if isinstance(f, Constant):
        return pl.lit(_constant_text(f.value), pl.String)
    col = f if isinstance(f, str) else f.column
    return _text(pl.col(col), schema[col])


def _event(f: str | ColumnRef | Constant | Template, schema: dict[str, pl.DataType]) -> pl.Expr:
    if isinstance(f, Template):
        parts: list[pl.Expr] = []
        pos = 0
        for match in re.finditer(r"\{([^{}]+)\}", f.template):
            if match.start() > pos:
                parts.append(pl.lit(f.template[pos : match.start()]))
            parts.append(_text(pl.col(match.group(1)), schema[match.group(1)]))
            pos = match.end()
        if pos < len(f.template):
            parts.append(pl.lit(f.template[pos:]))
        return pl.concat_str(parts)  # any empty part makes the name empty: MISSING_EVENT_NAME
    out = _id_field(f, schema)
    assert out is not None
    return out


def _timestamp(
    ts: TimestampMapping, schema: dict[str, pl.DataType], where: str
) -> tuple[pl.Expr, pl.Expr]:
    if ts.value is not None:
        raw: pl.Expr = pl.lit(ts.value, pl.String)
        dtype: pl.DataType = pl.String()
    else:
        assert ts.column is not None
        dtype = schema[ts.column]
        raw = _text(pl.col(ts.column), dtype) if dtype == pl.String else pl.col(ts.column)
        if _nested(dtype):  # a list is no time: its JSON text fails to parse, row by row
            raw, dtype = _text(raw, dtype), pl.String()
    instant = to_utc(raw, dtype, timezone=ts.timezone, fmt=ts.format, unit=ts.unit, where=where)
    raw_text = _text(raw, dtype) if dtype != pl.String else raw
    return raw_text, instant


def _identify(
    f: bool | str | ColumnRef | BoolConstant, schema: dict[str, pl.DataType]
) -> tuple[pl.Expr, pl.Expr]:
    if isinstance(f, bool):
        return pl.lit(f), pl.lit(None, pl.String)
    if isinstance(f, BoolConstant):
        return pl.lit(f.value), pl.lit(None, pl.String)
    col = f if isinstance(f, str) else f.column
    dtype = schema[col]
    if dtype == pl.Boolean:
        return pl.col(col), pl.lit(None, pl.String)
    raw = _text(pl.col(col), dtype)
    return _parse_bool(raw), raw


def _parse_bool(text: pl.Expr) -> pl.Expr:
    low = text.str.strip_chars().str.to_lowercase()
    return pl.when(low.is_in(_TRUE)).then(pl.lit(True)).when(low.is_in(_FALSE)).then(pl.lit(False))


# --- properties ------------------------------------------------------------------------------


def _property_specs(
    cfg: Config, prof: FileProfile, schema: dict[str, pl.DataType]
) -> list[PropertySpec]:
    props = cfg.mapping.properties
    columns = property_columns(cfg, list(schema))
    colset = set(columns)
    for name in props.rename:
        if name not in colset and prof.source.format != "ndjson":
            raise ConfigError(
                f"{cfg.origin}: mapping.properties.rename.{name}: {name!r} is not "
                f"a property column of {prof.source.name}"
            )
    renamed = {props.rename.get(c, c): c for c in columns}
    if len(renamed) != len(columns):
        raise ConfigError(
            f"{cfg.origin}: mapping.properties.rename: two properties would share one name"
        )
    types = {}
    for name, typ in props.types.items():
        col = name if name in colset else renamed.get(name)
        if col is None:
            if prof.source.format == "ndjson":
                continue
            raise ConfigError(
                f"{cfg.origin}: mapping.properties.types.{name}: {name!r} is not a "
                f"property of {prof.source.name}"
            )
        types[col] = typ
    specs: list[PropertySpec] = []
    for col in columns:
        kind = _kind(types.get(col), schema[col], prof.text_kinds.get(col))
        specs.append(PropertySpec(col, props.rename.get(col, col), kind, f"p{len(specs)}"))
    return specs


def _kind(declared: str | None, dtype: pl.DataType, text_kind: str | None) -> Kind:
    if declared == "string":
        return "string"
    if declared in ("number", "integer", "boolean", "datetime"):
        return declared  # type: ignore[return-value]
    if text_kind == "number":
        return "raw_number"
    if text_kind == "boolean":
        return "text_boolean"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_integer() or isinstance(dtype, pl.Decimal):
        return "raw_number"
    if dtype.is_float():
        return "number"
    if isinstance(dtype, pl.Datetime | pl.Date):
        return "datetime"
    if isinstance(dtype, pl.List | pl.Array | pl.Struct):
        return "json_text"
    return "string"


def _property_value(
    spec: PropertySpec, dtype: pl.DataType, timezone: str
) -> tuple[pl.Expr, Problem | None]:
    """(JSON value text or null to omit, its problem if it can have one) for one property."""
    col = pl.col(spec.column)
    label = spec.column
    if _nested(dtype) and spec.kind not in ("json_text", "string"):
        # Declared a number, boolean or date-time: its JSON text is checked like any text.
        col, dtype = json_value(col), pl.String()

    def problem(bad: pl.Expr, what: str) -> Problem:
        shown = col.cast(pl.String, strict=False).str.slice(0, 60)
        return bad, pl.lit(f"{label}: {what} ") + json_value(shown)

    if spec.kind == "raw_number":
        # Text columns are checked per batch by the plan's guards (see map_batch).
        return col if dtype == pl.String else col.cast(pl.String), None
    if spec.kind == "text_boolean":
        return col.str.to_lowercase(), None
    if spec.kind == "string":
        return (_text(col, dtype) if dtype != pl.String else col), None
    if spec.kind == "json_text":
        return json_value(col), None
    if spec.kind == "boolean":
        if dtype == pl.Boolean:
            return pl.when(col).then(pl.lit("true")).when(col.not_()).then(pl.lit("false")), None
        parsed = _parse_bool(col.cast(pl.String, strict=False))
        bad = col.is_not_null() & parsed.is_null()
        value = pl.when(parsed).then(pl.lit("true")).when(parsed.not_()).then(pl.lit("false"))
        return value, problem(bad, "is not a boolean:")
    if spec.kind in ("number", "integer"):
        if dtype == pl.String:
            number = col.str.strip_chars().cast(pl.Float64, strict=False)
        else:
            number = col.cast(pl.Float64, strict=False)
        is_nan = number.is_nan()
        if spec.kind == "integer":
            ok = number.is_finite() & (number == number.round(0)) & (number.abs() < 2**53)
            integer = pl.when(ok).then(number.cast(pl.Int64, strict=False).cast(pl.String))
            bad = col.is_not_null() & ~ok.fill_null(False)
            return integer, problem(bad, "is not an integer:")
        finite = number.is_finite().fill_null(False)
        if dtype == pl.String:
            plain = col.str.contains(_JSON_NUMBER)
            text = pl.when(plain).then(col).otherwise(json_value(number))
            # Text "NaN" is a value the user wrote: reject it rather than drop it.
            bad = col.is_not_null() & ~finite
        else:
            # A finite float's string cast is its JSON text (tested equal), at half the cost.
            text = number.cast(pl.String)
            bad = col.is_not_null() & ~finite & ~is_nan.fill_null(False)  # NaN = missing
        return pl.when(finite).then(text), problem(bad, "is not a finite number:")
    # datetime
    instant = to_utc(
        col,
        dtype,
        timezone=timezone,
        fmt=None,
        unit=None,
        where=f"mapping.properties.types.{label}",
    )
    bad = col.is_not_null() & instant.is_null()
    return format_rfc3339(instant), problem(bad, "is not a date-time:")


_JSON_KINDS: dict[str, Kind] = {
    "integer": "raw_number",
    "number": "number",
    "boolean": "boolean",
    "text": "string",
    "json": "string",
}


def _json_specs(
    cfg: Config, prof: FileProfile, schema: dict[str, pl.DataType], specs: list[PropertySpec]
) -> tuple[list[JsonColumn], list[PropertySpec]]:
    """The JSON columns' leaves as properties after ``specs``; their output columns are added
    to ``schema``, so the usual property values apply to them."""
    columns = plan_json_columns(
        cfg.mapping.properties.json_columns,
        prof.json_shapes,
        schema,
        where=cfg.origin,
        file=prof.source.name,
    )
    refuse_clashes(
        {s.key: s.column for s in specs}, columns, where=cfg.origin, file=prof.source.name
    )
    leaves = [leaf for jc in columns for leaf in jc.leaves]
    schema.update((leaf.slot, leaf.dtype) for leaf in leaves)
    return columns, [
        PropertySpec(leaf.slot, leaf.key, _JSON_KINDS[leaf.kind], f"p{len(specs) + i}")
        for i, leaf in enumerate(leaves)
    ]


def wants_text_kind(cfg: Config) -> Callable[[str], bool]:
    """Which columns preflight must scan to type: auto-typed property candidates only."""
    props = cfg.mapping.properties
    mapped = mapped_columns(cfg)
    inverse = {v: k for k, v in props.rename.items()}
    declared = {inverse.get(k, k) for k in props.types} | set(props.types)
    include = None if props.include == "*" else set(props.include)
    excluded = set(props.exclude) | set(props.json_columns)

    def wants(col: str) -> bool:
        if col in mapped or col in excluded or col in declared or col.startswith("_"):
            return False
        return include is None or col in include

    return wants
