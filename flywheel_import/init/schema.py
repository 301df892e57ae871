"""The mapping file's JSON Schema, from the pydantic models: editors complete and check keys
with it (``# yaml-language-server: $schema=...``)."""

from __future__ import annotations

import json
from typing import Any

from ..config import Config

#: Fields of :class:`Config` set by the loader, never written in a file.
_INTERNAL = ("base_dir", "origin")


def config_schema() -> dict[str, Any]:
    schema = Config.model_json_schema()
    props = schema.get("properties", {})
    for name in _INTERNAL:
        props.pop(name, None)
    schema["title"] = "flywheel-import mapping file"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    return json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"
