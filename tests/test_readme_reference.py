"""The README's reference tables name every error code and every key of the mapping file.

Keys come from the pydantic models, so a key added to ``config.py`` without a README row fails
here. Rows are written as people read them: one row may list several keys (``api.timeout``,
``api.max_attempts``; ``mapping.user_id``, ``anonymous_id``, ``event_id``), and the keys
inside a value (``source.csv``'s ``delimiter``, ``mapping.timestamp``'s ``{column, timezone,
...}``) are named in the row of the key that holds them.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from flywheel_import.config import Config
from flywheel_import.errors import ErrorCode

README = Path(__file__).resolve().parent.parent / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def _table_rows(section: str) -> list[list[str]]:
    """The first table of a section, header and rule left out, as lists of cells."""
    lines = section.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))])
    return rows


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, list[str]]:
    """Dotted path of every key holding a value -> the keys of the mappings that value may be
    (for a union of shapes such as ``str | {column: ...} | {value: ...}``; else empty)."""
    keys: dict[str, list[str]] = {}
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        path = prefix + (field.alias or name)
        models = _models_in(field.annotation)
        if len(models) == 1 and models[0] is field.annotation:
            # A group of keys (``api``, ``source.csv``) is documented by its keys.
            keys.update(config_keys(models[0], path + "."))
        else:
            keys[path] = sorted(
                {f.alias or k for m in models for k, f in m.model_fields.items() if not f.exclude}
            )
    return keys


def documented_rows() -> dict[str, str]:
    """Each key named in the first cell of a mapping-table row -> that row's meaning."""
    rows: dict[str, str] = {}
    for key_cell, meaning in _table_rows(_section("The mapping file")):
        names = re.findall(r"`([^`]+)`", key_cell)
        assert names, key_cell
        parent = names[0].rpartition(".")[0]
        for name in names:
            rows[name if "." in name else f"{parent}.{name}"] = meaning
    return rows


def _named_in(word: str, text: str) -> bool:
    return any(
        re.search(rf"(?<![\w.]){re.escape(word)}\b", span)
        for span in re.findall(r"`([^`]+)`", text)
    )


def test_every_error_code_is_in_the_error_code_table() -> None:
    codes = {cells[0].strip("`") for cells in _table_rows(_section("Error codes"))}
    assert set(ErrorCode) <= codes, set(ErrorCode) - codes


def test_error_code_table_says_how_to_fix_each_row() -> None:
    rows = _table_rows(_section("Error codes"))
    assert all(len(cells) == 3 and cells[2] for cells in rows), rows


def test_every_config_key_is_in_the_mapping_table() -> None:
    rows = documented_rows()
    missing: list[str] = []
    for path, inner in config_keys().items():
        if path in rows:
            missing += [f"{path}: {k}" for k in inner if not _named_in(k, rows[path])]
            continue
        parent, _, leaf = path.rpartition(".")
        if not (parent in rows and _named_in(leaf, rows[parent])):
            missing.append(path)
    assert not missing, missing


def test_key_walk_reaches_nested_and_aliased_keys() -> None:
    keys = config_keys()
    for path in (
        "source.csv.null_values",
        "mapping.properties.json",
        "output.state",
        "mapping.watermark",
        "api.ca_bundle",
    ):
        assert path in keys
    assert {"column", "type"} <= set(keys["mapping.watermark"])
    assert "source.csv" not in keys and "source.csv.delimiter" in keys
    assert "base_dir" not in keys and "origin" not in keys
