"""The mapping file's JSON Schema: generated from the models, committed, used by the example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flywheel_import.cli import main
from flywheel_import.init.schema import config_schema, schema_text

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "configs" / "flywheel-import.schema.json"


def test_committed_schema_is_up_to_date() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == schema_text(), (
        "regenerate: flywheel-import schema > configs/flywheel-import.schema.json"
    )


def test_schema_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == config_schema()


def test_schema_has_the_file_keys_and_not_the_loader_fields() -> None:
    schema = config_schema()
    assert set(schema["properties"]) == {"source", "api", "mapping", "validation", "output"}
    assert schema["required"] == ["mapping"]
    assert schema["additionalProperties"] is False
    assert "json" in schema["$defs"]["PropertiesMapping"]["properties"]


def test_example_points_editors_at_the_schema() -> None:
    first = (REPO / "configs" / "example.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=./flywheel-import.schema.json"
