"""An :class:`~.infer.Inference` -> the commented YAML of a mapping file (pure).

Every scalar is written as a JSON string (valid YAML in double quotes), so column names with
``$``, dots, spaces or backslashes need no further care.
"""

from __future__ import annotations

import json

from .infer import Inference, TimePick

#: Where written files point editors for completion; ``flywheel-import schema`` writes it.
SCHEMA_FILE = "flywheel-import.schema.json"
_COMMENT_AT = 40


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _line(body: str, note: str = "") -> str:
    if not note:
        return body
    return (
        f"{body.ljust(_COMMENT_AT - 1)} # {note}"
        if len(body) < _COMMENT_AT - 1
        else f"{body}  # {note}"
    )


def render(inf: Inference, *, source_path: str, source_name: str, is_text: bool) -> str:
    out = [
        f"# yaml-language-server: $schema=./{SCHEMA_FILE}",
        f"# (write that file with: flywheel-import schema > {SCHEMA_FILE})",
        f"# Mapping inferred by `flywheel-import init` from {inf.rows:,} sampled rows of",
        f"# {source_name}.",
        "# Lines marked CHECK are guesses: read them, then try it with",
        "#   flywheel-import validate <this file>",
        '# Reference: the README, "The mapping file".',
    ]
    if inf.preset is not None:
        out.append(f"# Layout: {inf.preset.what} (preset {inf.preset.name}).")
    out += ["source:", _line(f"  path: {_q(source_path)}", "INPUT arguments replace it")]
    if is_text and inf.null_values:
        markers = ", ".join(_q(m) for m in inf.null_values)
        out.append(
            _line(f"  csv: {{null_values: [{markers}]}}", "cells seen in the sample, read as empty")
        )
    out += [
        "",
        "api:",
        "  url: https://api.flywheel.cx",
        _line("  key_env: FLYWHEEL_API_KEY", "the key is read from this variable only"),
        "  rate_limit: 100",
        "  concurrency: 32",
        "",
        "mapping:",
    ]
    out += _event(inf)
    for name, pick in (("user_id", inf.user_id), ("anonymous_id", inf.anonymous_id)):
        out.append(
            _line(f"  {name}: {_q(pick.column)}", pick.note)
            if pick.column
            else _line(f"  # {name}: ...", pick.note)
        )
    out += _timestamp(inf.timestamp)
    out.append(
        _line(f"  event_id: {_q(inf.event_id.column)}", inf.event_id.note)
        if inf.event_id.column
        else _line("  # event_id: ...", inf.event_id.note)
    )
    out += [
        "  identify: false",
        "  properties:",
        _line('    include: "*"', "every column not mapped above"),
    ]
    out += _properties(inf)
    out += ["", "validation:"]
    if inf.user_id.column or inf.anonymous_id.column:
        out.append(
            _line(
                "  require_identity: true",
                "rows with neither user_id nor anonymous_id are rejected",
            )
        )
    else:
        out.append(_line("  require_identity: false", "CHECK: no id column was recognised"))
    out += ["", "output:", "  rejects: rejects.csv", "  report: report.json", ""]
    return "\n".join(out)


def _event(inf: Inference) -> list[str]:
    ev = inf.event
    if ev.column is None:
        return [_line('  event: {value: "imported"}', ev.note)]
    if not inf.normalize:
        return [_line(f"  event: {_q(ev.column)}", ev.note)]
    out = [
        "  event:",
        _line(f"    column: {_q(ev.column)}", ev.note),
        _line("    normalize: underscore", "sampled names such as spaces or $ need it"),
    ]
    if inf.names_left_invalid:
        shown = ", ".join(_q(n) for n in inf.names_left_invalid[:3])
        out.append(f"    # names: {{{shown}: ...}}   # CHECK: still invalid after normalize")
    return out


def _timestamp(t: TimePick | None) -> list[str]:
    if t is None:
        return [
            _line(
                "  # timestamp: ...",
                "CHECK: no time column recognised; without one the API stamps the time of import",
            )
        ]
    parts = [f"column: {_q(t.column)}"]
    if t.unit:
        parts.append(f"unit: {t.unit}")
    if t.format:
        parts.append(f"format: {_q(t.format)}")
    if t.naive:
        parts.append("timezone: UTC")
    return [_line(f"  timestamp: {{{', '.join(parts)}}}", t.note)]


def _properties(inf: Inference) -> list[str]:
    out: list[str] = []
    if inf.json:
        pairs = ", ".join(f"{_q(c)}: {_q(p)}" for c, p in inf.json.items())
        out.append(
            _line(
                f"    json: {{{pairs}}}",
                "CHECK: columns of JSON objects; their keys become properties",
            )
        )
    if inf.properties:
        out.append(_line("    # exclude: []", "columns not to send"))
        out.append(
            _line("    # types: {}", "overrides: string | number | integer | boolean | datetime")
        )
        out.append("    # Sent as properties (type as the sample reads):")
        for p in inf.properties:
            note = f"  ({p.note})" if p.note else ""
            out.append(f"    #   {_q(p.column)}: {p.type}{note}")
    return out
