"""polars' allocator is asked for one arena when this package loads before polars."""

from __future__ import annotations

import os
import subprocess
import sys

import polars
import pytest

from flywheel_import import allocator


def _env_after_import(preset: str | None, first: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    if preset is not None:
        env["_RJEM_MALLOC_CONF"] = preset
    code = f"import {first}, flywheel_import, os; print(os.environ.get('_RJEM_MALLOC_CONF'))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_importing_the_package_first_asks_polars_for_one_arena() -> None:
    got = _env_after_import(None, "json")
    assert "narenas:1" in got.split(",")


def test_other_settings_in_the_environment_are_kept() -> None:
    got = _env_after_import("background_thread:true", "json").split(",")
    assert "background_thread:true" in got and "narenas:1" in got


def test_a_chosen_number_of_arenas_wins() -> None:
    got = _env_after_import("narenas:4", "json").split(",")
    assert "narenas:4" in got and "narenas:1" not in got


@pytest.mark.parametrize("loaded", [True, False])
def test_nothing_changes_once_polars_is_loaded(loaded: bool) -> None:
    env: dict[str, str] = {}
    if loaded:
        assert sys.modules["polars"] is polars
        allocator.configure(env)
        assert env == {}
    else:
        saved = sys.modules.pop("polars")
        try:
            allocator.configure(env)
        finally:
            sys.modules["polars"] = saved
        assert env == {"_RJEM_MALLOC_CONF": "narenas:1"}
