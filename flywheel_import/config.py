"""The mapping file: pydantic models of the YAML, and ``load_config``.

Key names are a public interface (other tools generate these files), so every model refuses
unknown keys and every error is reported as one line naming the file, the key path and, when
the YAML tells us, the line: ``configs/x.yaml:12: mapping.timestamp.unit: must be one of ...``.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .names import Normalize, is_valid_name, normalize_name

PropertyType = Literal["string", "number", "integer", "boolean", "datetime"]
EpochUnit = Literal["s", "ms", "us", "ns"]
SourceFormat = Literal["auto", "csv", "tsv", "parquet", "ndjson"]

_TEMPLATE_FIELD = re.compile(r"\{([^{}]+)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CsvOptions(_Strict):
    """How CSV/TSV text is split. ``quote: null`` (or ``""``) turns quoting off."""

    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","
    quote: Annotated[str, Field(max_length=1)] | None = '"'
    encoding: str = "utf8"
    header: bool = True
    null_values: list[str] = []  # whole cells (after unquoting) read as empty, e.g. "\\N"

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, v: str) -> str:
        import codecs

        try:
            codecs.lookup(v.replace("utf8-sig", "utf-8-sig"))
        except LookupError:
            raise ValueError(f"unknown encoding {v!r}") from None
        return v

    @model_validator(mode="after")
    def _distinct(self) -> CsvOptions:
        if self.quote and self.quote == self.delimiter:
            raise ValueError("quote and delimiter must differ")
        if self.delimiter in "\r\n" or ((self.quote or "") in "\r\n" and self.quote):
            raise ValueError("delimiter and quote cannot be line breaks")
        return self


class SourceConfig(_Strict):
    path: str | list[str] | None = None
    format: SourceFormat = "auto"
    csv: CsvOptions = CsvOptions()
    batch_rows: Annotated[int, Field(ge=1, le=10_000_000)] = 50_000


class ApiConfig(_Strict):
    """Where and how hard to send. ``ca_bundle``: a PEM file of CA certificates trusted on top
    of the system store (a corporate CA); certificate verification cannot be turned off."""

    url: str = "https://api.flywheel.cx"
    key_env: Annotated[str, Field(min_length=1)] = "FLYWHEEL_API_KEY"
    rate_limit: Annotated[float, Field(ge=0)] = 100
    burst: Annotated[int, Field(ge=1)] | None = None
    concurrency: Annotated[int, Field(ge=1, le=4096)] = 32
    timeout: Annotated[float, Field(gt=0)] = 10
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    max_body_bytes: Annotated[int, Field(ge=64)] = 32768
    ca_bundle: Annotated[str, Field(min_length=1)] | None = None


class ColumnRef(_Strict):
    column: Annotated[str, Field(min_length=1)]


class Constant(_Strict):
    value: str | int | float | bool


class BoolConstant(_Strict):
    value: bool


class Template(_Strict):
    """``"{category}_{action}"``: column values joined with literal text."""

    template: Annotated[str, Field(min_length=1)]

    @field_validator("template")
    @classmethod
    def _has_fields(cls, v: str) -> str:
        if not _TEMPLATE_FIELD.search(v):
            raise ValueError("a template needs at least one {column}")
        return v

    def columns(self) -> list[str]:
        return _TEMPLATE_FIELD.findall(self.template)


class _EventNaming(_Strict):
    """How source event names become sent ones: ``names`` first (exact values), then
    ``normalize`` (see :mod:`.names`)."""

    names: dict[str, str] = {}
    normalize: Normalize | None = None

    @model_validator(mode="after")
    def _sendable_names(self) -> _EventNaming:
        for source, target in self.names.items():
            sent = normalize_name(target, self.normalize)
            if not is_valid_name(sent):
                after = f" (after normalize: {sent!r})" if sent != target else ""
                raise ValueError(
                    f"names: {source!r} -> {target!r}{after} is not a valid event "
                    "name (^[a-zA-Z0-9_-]+$)"
                )
        return self

    @property
    def changes_names(self) -> bool:
        return bool(self.names) or self.normalize is not None


class EventColumn(ColumnRef, _EventNaming):
    """``{column: name, names: {...}, normalize: underscore}``."""


class EventTemplate(Template, _EventNaming):
    """``{template: "{category} {action}", normalize: snake_case}``: ``names`` match the
    assembled text."""


FieldSource = str | ColumnRef | Constant


class TimestampMapping(_Strict):
    """Where the event time comes from and how to read it.

    Naive values take ``timezone``; epoch numbers take ``unit``; ``format`` is a strftime
    pattern (with ``%z`` for values that carry an offset).
    """

    column: Annotated[str, Field(min_length=1)] | None = None
    value: str | None = None
    timezone: str = "UTC"
    format: str | None = None
    unit: EpochUnit | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r} (use an IANA name such as UTC)") from None
        return v

    @model_validator(mode="after")
    def _one_source(self) -> TimestampMapping:
        if (self.column is None) == (self.value is None):
            raise ValueError("give exactly one of column or value")
        if self.format and self.unit:
            raise ValueError("format and unit exclude each other")
        return self


class PropertiesMapping(_Strict):
    include: Literal["*"] | list[str] = "*"
    exclude: list[str] = []
    rename: dict[str, str] = {}
    types: dict[str, PropertyType] = {}
    # {column: key prefix}: each cell is a JSON object whose keys become properties. ``json``
    # would shadow a BaseModel attribute, hence the alias.
    json_columns: dict[str, str] = Field(default={}, alias="json")


class WatermarkMapping(_Strict):
    """A column rows are skipped by: at or below the mark of the last completed run."""

    column: Annotated[str, Field(min_length=1)]
    type: Literal["timestamp", "number"] | None = None  # None: from the column's values


class Mapping(_Strict):
    event: str | EventColumn | Constant | EventTemplate
    user_id: FieldSource | None = None
    anonymous_id: FieldSource | None = None
    timestamp: str | TimestampMapping | None = None
    event_id: FieldSource | None = None
    identify: bool | str | ColumnRef | BoolConstant = False
    properties: PropertiesMapping = PropertiesMapping()
    watermark: str | WatermarkMapping | None = None

    def timestamp_spec(self) -> TimestampMapping | None:
        if isinstance(self.timestamp, str):
            return TimestampMapping(column=self.timestamp)
        return self.timestamp


class ValidationOptions(_Strict):
    require_identity: bool = True


class OutputConfig(_Strict):
    rejects: str | None = "rejects.csv"
    report: str | None = None
    #: The resume ledger (SQLite); null: no resuming, every run starts from scratch.
    state: str | None = ".flywheel-import/state.db"

    @field_validator("rejects")
    @classmethod
    def _known_ext(cls, v: str | None) -> str | None:
        if v is not None and not v.lower().endswith((".csv", ".parquet", ".ndjson", ".jsonl")):
            raise ValueError("must end in .csv, .parquet, .ndjson or .jsonl")
        return v


class Config(_Strict):
    """A whole mapping file. ``base_dir`` anchors the relative paths inside it."""

    source: SourceConfig = SourceConfig()
    api: ApiConfig = ApiConfig()
    mapping: Mapping
    validation: ValidationOptions = ValidationOptions()
    output: OutputConfig = OutputConfig()
    base_dir: Path = Field(default=Path("."), exclude=True)
    origin: str = Field(default="<config>", exclude=True)

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def source_paths(self) -> list[str]:
        p = self.source.path
        if p is None:
            return []
        return [p] if isinstance(p, str) else list(p)


# --- loading and error messages -------------------------------------------------------------


def load_config(path: str | Path) -> Config:
    """Read and validate a mapping file; raise :class:`ConfigError` with a one-line message."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config: {e}") from None
    return parse_config(text, origin=str(p), base_dir=p.parent)


def parse_config(text: str, *, origin: str = "<config>", base_dir: Path = Path(".")) -> Config:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{origin}{where}: invalid YAML: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{origin}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the config must be a YAML mapping with a 'mapping' key")
    try:
        return Config.model_validate({**data, "base_dir": base_dir, "origin": origin})
    except ValidationError as e:
        err = _most_specific(e.errors())
        loc = _clean_loc(err["loc"])
        line = _line_of(node, loc)
        where = f"{origin}:{line}" if line else origin
        key = ".".join(str(x) for x in loc) or "(top level)"
        raise ConfigError(f"{where}: {key}: {_explain(err, loc)}") from None


_PRIORITY = {
    "extra_forbidden": 5,
    "value_error": 4,
    "assertion_error": 4,
    "literal_error": 3,
    "missing": 2,
    "greater_than_equal": 4,
    "less_than_equal": 4,
    "greater_than": 4,
    "string_too_short": 4,
    "string_too_long": 4,
}


def _most_specific(errors: list[Any]) -> Any:
    """Pick the error a person should see when a union tried several shapes.

    A dict given where ``str | ColumnRef | Constant`` is allowed fails the ``str`` branch too;
    the useful message is the one from inside the branch that matched the input's shape.
    """

    def branch(err: Any) -> tuple[str, ...]:
        # A model with an "after" validator is labelled "function-after[check(), Model]".
        return tuple(
            p.rsplit(", ", 1)[-1].rstrip("]") if p.startswith("function-") else p
            for p in err["loc"]
            if isinstance(p, str) and (p[:1].isupper() or p.startswith("function-"))
        )

    misfits = {branch(e) for e in errors if e["type"] == "extra_forbidden" and branch(e)}
    fitting = [e for e in errors if branch(e) and branch(e) not in misfits]
    if not fitting and misfits:
        # No shape fits: the one needing the fewest changes says the most.
        sizes = {b: sum(branch(e) == b for e in errors) for b in misfits}
        closest = min(
            misfits,
            key=lambda b: (sizes[b], min(i for i, e in enumerate(errors) if branch(e) == b)),
        )
        fitting = [e for e in errors if branch(e) == closest]
    pool = fitting or errors
    return max(pool, key=lambda e: (_PRIORITY.get(e["type"], 1), -pool.index(e)))


def _clean_loc(loc: tuple[Any, ...]) -> list[str | int]:
    """Drop pydantic's union-branch labels (``str``, ``ColumnRef``...) from an error location."""
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and (
            part[:1].isupper()
            or part in {"str", "int", "float", "bool", "list[str]"}
            or part.startswith(("literal[", "function-", "list["))
        ):
            continue
        out.append(part)
    return out


def _explain(err: Any, loc: list[str | int]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if (
        kind == "extra_forbidden"
        and loc[:2] == ["mapping", "event"]
        and len(loc) == 3
        and (loc[2] in ("names", "normalize"))
    ):
        return "goes with column: or template:, not with value:"
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        known = _known_keys(loc[:-1])
        hint = difflib.get_close_matches(name, known, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"unknown key{suggestion}; allowed: {', '.join(known)}"
    if kind == "missing":
        return "is required"
    if kind == "literal_error" and loc and loc[-1] == "include":
        return "must be '*' or a list of column names"
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        choices = [c.strip(" '\"") for c in re.split(r",| or ", expected) if c.strip(" '\"")]
        return f"must be one of {', '.join(choices)}"
    if kind in {"value_error", "assertion_error"}:
        return str(ctx.get("error", err["msg"]))
    if kind in {"model_type", "model_attributes_type"}:
        got = err.get("input")
        return f"must be a column name or a mapping such as {{column: ...}} (got {got!r})"
    if kind in {
        "string_type",
        "int_type",
        "float_type",
        "bool_type",
        "dict_type",
        "list_type",
        "model_type",
        "int_parsing",
        "float_parsing",
        "bool_parsing",
        "model_attributes_type",
    }:
        return f"{err['msg'].lower()} (got {err.get('input')!r})"
    msg = str(err["msg"])
    return msg[:1].lower() + msg[1:]


_MODELS: dict[str, type[BaseModel]] = {
    "": Config,
    "source": SourceConfig,
    "source.csv": CsvOptions,
    "api": ApiConfig,
    "mapping": Mapping,
    "mapping.properties": PropertiesMapping,
    "mapping.timestamp": TimestampMapping,
    "mapping.watermark": WatermarkMapping,
    "validation": ValidationOptions,
    "output": OutputConfig,
}


def _known_keys(parent: list[str | int]) -> list[str]:
    where = ".".join(str(p) for p in parent)
    if where == "mapping.event":
        return ["column", "value", "template", "names", "normalize"]
    model = _MODELS.get(where)
    if model is None:
        return ["column", "value", "template"]
    return [f.alias or k for k, f in model.model_fields.items() if not f.exclude]


def _line_of(node: yaml.Node | None, loc: list[str | int]) -> int | None:
    """1-based line of the deepest YAML node on ``loc`` (for error messages)."""
    line: int | None = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == part:
                    line = k.start_mark.line + 1
                    node = v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
