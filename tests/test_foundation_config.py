"""Config errors: one-line messages naming the file, the line and the key."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from flywheel_import.config import Config, load_config
from flywheel_import.errors import ConfigError
from flywheel_import.pipeline import validate
from tests.foundation_helpers import csv_text, write_config, write_data


def _error(tmp_path: Path, text: str) -> tuple[str, Path]:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    return message, path


def test_unknown_key_names_file_line_key_and_suggests_the_right_one(tmp_path: Path) -> None:
    msg, path = _error(tmp_path, "mapping:\n  event: e\n  user_idd: u\n")
    assert msg.startswith(f"{path}:3: mapping.user_idd: unknown key (did you mean 'user_id'?)")
    assert "allowed: event, user_id" in msg


def test_unknown_top_level_key_suggests_source(tmp_path: Path) -> None:
    msg, path = _error(tmp_path, "sorce: {path: x.csv}\nmapping:\n  event: e\n")
    assert msg.startswith(f"{path}:1: sorce: unknown key (did you mean 'source'?)")


def test_unknown_nested_key_in_timestamp_suggests_timezone(tmp_path: Path) -> None:
    msg, path = _error(tmp_path, "mapping:\n  event: e\n  timestamp: {column: ts, zone: UTC}\n")
    assert msg.startswith(
        f"{path}:3: mapping.timestamp.zone: unknown key (did you mean 'timezone'?)"
    )


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    msg, path = _error(tmp_path, "source:\n  batch_rows: many\nmapping:\n  event: e\n")
    assert msg.startswith(f"{path}:2: source.batch_rows: ")
    assert "integer" in msg
    assert "'many'" in msg


def test_wrong_type_list_expected(tmp_path: Path) -> None:
    msg, path = _error(tmp_path, "mapping:\n  event: e\n  properties:\n    exclude: notalist\n")
    assert msg.startswith(f"{path}:4: mapping.properties.exclude: ")
    assert "list" in msg


def test_bad_enum_lists_the_allowed_values(tmp_path: Path) -> None:
    msg, path = _error(
        tmp_path, "mapping:\n  event: e\n  timestamp:\n    column: ts\n    unit: minutes\n"
    )
    assert msg == f"{path}:5: mapping.timestamp.unit: must be one of s, ms, us, ns"


def test_bad_property_type_enum(tmp_path: Path) -> None:
    msg, path = _error(tmp_path, "mapping:\n  event: e\n  properties:\n    types: {price: money}\n")
    assert msg == (
        f"{path}:4: mapping.properties.types.price: must be one of string, number, "
        "integer, boolean, datetime"
    )


def test_unknown_timezone_is_a_config_error(tmp_path: Path) -> None:
    msg, path = _error(
        tmp_path, "mapping:\n  event: e\n  timestamp: {column: ts, timezone: Mars/Base}\n"
    )
    assert msg.startswith(f"{path}:3: mapping.timestamp.timezone: ")
    assert "Mars/Base" in msg


def test_missing_mapping_section(tmp_path: Path) -> None:
    msg, path = _error(tmp_path, "source:\n  path: x.csv\n")
    assert msg == f"{path}: mapping: is required"


def test_missing_event_key_in_mapping(tmp_path: Path) -> None:
    msg, path = _error(tmp_path, "mapping:\n  user_id: u\n")
    assert msg.startswith(f"{path}:1: mapping.event: is required")


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    msg, path = _error(tmp_path, "mapping:\n  event: e\n bad: x\n")
    assert msg.startswith(f"{path}:3: invalid YAML: ")


def test_empty_config_file_is_an_error(tmp_path: Path) -> None:
    msg, path = _error(tmp_path, "")
    assert msg.startswith(f"{path}: ")
    assert "mapping" in msg


def test_config_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_mapped_column_missing_from_data_names_column_and_file(tmp_path: Path) -> None:
    data = write_data(
        tmp_path / "data", "events.csv", csv_text("event,uid,ts", "a,u1,2024-01-01 00:00:00")
    )
    config = write_config(tmp_path, source={"path": "data/events.csv"})
    with pytest.raises(ConfigError) as info:
        validate(config, rejects=tmp_path / "out" / "r.csv", report=tmp_path / "out" / "r.json")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{config}: mapping.user_id: ")
    assert "'user_id'" in msg
    assert str(data) in msg
    assert "event, uid, ts" in msg
    assert not (tmp_path / "out" / "r.csv").exists()


def test_declared_type_for_unknown_property_is_config_error(tmp_path: Path) -> None:
    write_data(
        tmp_path / "data", "events.csv", csv_text("event,user_id,ts", "a,u1,2024-01-01 00:00:00")
    )
    config = write_config(
        tmp_path,
        {
            "event": "event",
            "user_id": "user_id",
            "timestamp": "ts",
            "properties": {"types": {"prize": "number"}},
        },
        source={"path": "data/events.csv"},
    )
    with pytest.raises(ConfigError, match=r"mapping\.properties\.types\.prize"):
        validate(config, rejects=tmp_path / "r.csv")


def test_epoch_number_column_without_unit_is_config_error(tmp_path: Path) -> None:
    frame = pl.DataFrame({"event": ["a"], "user_id": ["u1"], "ts": [1704067200]})
    write_data(tmp_path / "data", "events.parquet", frame)
    config = write_config(tmp_path, source={"path": "data/events.parquet"})
    with pytest.raises(ConfigError, match=r"mapping\.timestamp\.unit"):
        validate(config, rejects=tmp_path / "r.csv")


def test_example_config_loads_with_its_documented_choices() -> None:
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "example.yaml")
    assert isinstance(cfg, Config)
    assert cfg.mapping.properties.types == {"zip": "string"}
    assert cfg.mapping.properties.rename == {"utm_src": "utm_source"}
    assert cfg.validation.require_identity is True
