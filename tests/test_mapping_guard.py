"""A column profiled as numbers or booleans is written raw into the JSON; should a value in a
batch not fit, that value is written as a JSON string: the body stays valid JSON."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from flywheel_import.config import parse_config
from flywheel_import.inputs import SourceFile
from flywheel_import.mapping import Plan, build_plan, map_batch
from flywheel_import.profile import FileProfile, TextKind


def text_plan(kinds: dict[str, TextKind]) -> tuple[Plan, dict[str, str]]:
    """The plan of a CSV file with columns ``e`` (event), ``u`` (user) and ``kinds``, as
    preflight typed them, and each property column's output slot."""
    profile = FileProfile(
        SourceFile(Path("x.csv"), "csv", "none"),
        dict.fromkeys(["e", "u", *kinds], pl.String()),
        rows=3,
        text_kinds=dict(kinds),
        is_text=True,
    )
    plan = build_plan(parse_config("mapping: {event: e, user_id: u}"), profile)
    return plan, {s.column: s.slot for s in plan.properties}


def test_values_that_do_not_fit_their_profile_are_written_as_strings() -> None:
    plan, slots = text_plan({"n": "number", "b": "boolean"})
    frame = pl.DataFrame(
        {
            "__row": [1, 2, 3],
            "e": ["a", "a", "a"],
            "u": ["1", "2", "3"],
            "n": ["1.5", "n/a", None],
            "b": ["TRUE", "false", "maybe"],
        }
    )
    out = map_batch(frame, plan)
    assert out.get_column(slots["n"]).to_list() == ["1.5", '"n/a"', None]
    assert out.get_column(slots["b"]).to_list() == ["true", "false", '"maybe"']
    clean = map_batch(frame.head(1), plan)
    assert clean.get_column(slots["n"]).to_list() == ["1.5"]


def test_text_booleans_are_lowercased_in_any_spelling_and_kept_when_already_lowercase() -> None:
    plan, slots = text_plan({"b": "boolean", "c": "boolean"})
    frame = pl.DataFrame(
        {
            "__row": [1, 2, 3],
            "e": ["a"] * 3,
            "u": ["1", "2", "3"],
            "b": ["true", None, "false"],  # as most writers put them
            "c": ["True", "FALSE", None],
        }
    )
    for profiled in (False, True):
        out = map_batch(frame, plan, profiled=profiled)
        assert out.get_column(slots["b"]).to_list() == ["true", None, "false"]
        assert out.get_column(slots["c"]).to_list() == ["true", "false", None]


def test_a_boolean_batch_that_does_not_fit_is_still_guarded() -> None:
    plan, slots = text_plan({"b": "boolean", "c": "boolean"})
    frame = pl.DataFrame(
        {"__row": [1, 2], "e": ["a"] * 2, "u": ["1", "2"], "b": ["true", "yes"], "c": ["T", None]}
    )
    out = map_batch(frame, plan)
    assert out.get_column(slots["b"]).to_list() == ["true", '"yes"']
    assert out.get_column(slots["c"]).to_list() == ['"T"', None]
