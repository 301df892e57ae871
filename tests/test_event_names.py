"""Event names from other tools' exports (``add to cart``, ``$pageview``, ``addToCart``) become
names the API accepts: ``names`` renames exact values first, then ``normalize`` applies a fixed
rule; what is still invalid is rejected quoting the original, and the report lists the
changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel_import.errors import ConfigError
from flywheel_import.names import VALID_NAME, name_expr, normalize_name
from tests.foundation_helpers import csv_text, run

HEADER = "event,user_id,ts"


def named(event: dict[str, Any]) -> dict[str, Any]:
    return {"event": event, "user_id": "user_id", "timestamp": "ts"}


def rows_of(*names: str) -> str:
    return csv_text(
        HEADER, *(f"{n},u{i},2024-01-{1 + i:02d} 10:00:00" for i, n in enumerate(names))
    )


def sent(tmp_path: Path, event: dict[str, Any], *names: str) -> list[str]:
    return [e["event"] for e in run(tmp_path, rows_of(*names), named(event)).events()]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("add to cart", "add_to_cart"),
        ("$pageview", "pageview"),
        ("Viewed Page!", "Viewed_Page"),
        ("watch  video", "watch_video"),
        ("a _b", "a__b"),
        ("--x--", "--x--"),
        ("addToCart", "addToCart"),
        ("café crème", "caf_cr_me"),
    ],
)
def test_underscore_turns_each_run_of_other_characters_into_one_underscore(
    tmp_path: Path, source: str, expected: str
) -> None:
    assert sent(tmp_path, {"column": "event", "normalize": "underscore"}, source) == [expected]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Viewed Page", "viewed_page"),
        ("addToCart", "add_to_cart"),
        ("HTTPRequest", "http_request"),
        ("getHTTPResponseCode", "get_http_response_code"),
        ("$pageview", "pageview"),
        ("version2Update", "version2_update"),
        ("ABC", "abc"),
        ("Add To Cart", "add_to_cart"),
        ("already_snake", "already_snake"),
    ],
)
def test_snake_case_also_splits_camel_case_and_lowercases(
    tmp_path: Path, source: str, expected: str
) -> None:
    assert sent(tmp_path, {"column": "event", "normalize": "snake_case"}, source) == [expected]


@settings(max_examples=300, deadline=None)
@given(
    names=st.lists(st.text(max_size=12), min_size=1, max_size=20),
    mode=st.sampled_from(["underscore", "snake_case"]),
)
def test_the_vectorized_rule_equals_the_documented_one_and_yields_valid_or_empty_names(
    names: list[str], mode: Any
) -> None:
    got = (
        pl.select(name_expr(pl.lit(pl.Series(names, dtype=pl.String)), normalize=mode))
        .to_series()
        .to_list()
    )
    assert got == [normalize_name(n, mode) for n in names]
    assert all(g == "" or pl.Series([g]).str.contains(VALID_NAME).all() for g in got)


def test_unicode_letters_become_underscores_and_a_name_of_only_those_is_rejected_quoting_it(
    tmp_path: Path,
) -> None:
    result = run(
        tmp_path,
        rows_of("注册", "$$$", "ok"),
        named({"column": "event", "normalize": "underscore"}),
    )
    assert [e["event"] for e in result.events()] == ["ok"]
    for row, original in ((1, "注册"), (2, "$$$")):
        reject = result.reject_at(row)
        assert reject["_error_code"] == "INVALID_EVENT_NAME"
        assert f"event name '{original}' (after names/normalize: '')" in reject["_error_message"]
        assert reject["event"] == original  # the rejects file keeps the text as read


def test_an_empty_cell_is_still_a_missing_name_not_an_invalid_one(tmp_path: Path) -> None:
    result = run(
        tmp_path, rows_of("", "a b"), named({"column": "event", "normalize": "snake_case"})
    )
    assert result.codes() == ["MISSING_EVENT_NAME"]


def test_names_match_the_source_value_before_normalize_changes_it(tmp_path: Path) -> None:
    event = {
        "column": "event",
        "normalize": "snake_case",
        "names": {"Add To Cart": "cart_add", "$delete": "removed"},
    }
    assert sent(tmp_path, event, "Add To Cart", "add to cart", "$delete", "$Delete") == [
        "cart_add",
        "add_to_cart",
        "removed",
        "delete",
    ]


def test_a_renamed_name_is_normalized_too(tmp_path: Path) -> None:
    event = {"column": "event", "normalize": "snake_case", "names": {"x": "SignedUp"}}
    assert sent(tmp_path, event, "x") == ["signed_up"]


def test_names_alone_rename_exactly_and_leave_other_invalid_names_invalid(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        rows_of("watch video", "Watch Video", "ok"),
        named({"column": "event", "names": {"watch video": "video_watched"}}),
    )
    assert [e["event"] for e in result.events()] == ["video_watched", "ok"]
    reject = result.reject_at(2)
    assert reject["_error_code"] == "INVALID_EVENT_NAME"
    assert reject["_error_message"] == "event name 'Watch Video' must match ^[a-zA-Z0-9_-]+$"


def test_templates_are_normalized_after_assembly_and_names_match_the_assembled_text(
    tmp_path: Path,
) -> None:
    data = csv_text(
        "category,action,user_id,ts",
        "Video,play now,u1,2024-01-01",
        "Cart,Add,u2,2024-01-01",
        "Video,,u3,2024-01-01",
    )
    result = run(
        tmp_path,
        data,
        {
            "event": {
                "template": "{category} {action}",
                "normalize": "snake_case",
                "names": {"Cart Add": "added_to_cart"},
            },
            "user_id": "user_id",
            "timestamp": "ts",
        },
    )
    assert [e["event"] for e in result.events()] == ["video_play_now", "added_to_cart"]
    assert result.codes() == ["MISSING_EVENT_NAME"]  # an empty part still empties the name


def test_names_normalizing_to_one_value_are_one_event_name(tmp_path: Path) -> None:
    data = csv_text(
        HEADER,
        "Add To Cart,u1,2024-01-01 10:00:00",
        "add to cart,u1,2024-01-01 10:00:00",
        "add_to_cart,u2,2024-01-01 10:00:00",
    )
    result = run(tmp_path, data, named({"column": "event", "normalize": "snake_case"}))
    assert [e["event"] for e in result.events()] == ["add_to_cart", "add_to_cart"]
    # The first two rows are now the same event: the derived id hashes what is sent.
    assert result.codes() == ["DUPLICATE_EVENT_ID"]
    changes = result.report.to_dict()["event_names_changed"]
    assert changes["rows"] == 2 and changes["distinct"] == 2
    assert {(c["from"], c["to"], c["count"]) for c in changes["top"]} == {
        ("Add To Cart", "add_to_cart", 1),
        ("add to cart", "add_to_cart", 1),
    }


def test_a_changed_name_gets_the_id_of_the_name_it_became(tmp_path: Path) -> None:
    normalized = run(
        tmp_path / "a",
        rows_of("add to cart"),
        named({"column": "event", "normalize": "underscore"}),
    )
    written = run(tmp_path / "b", rows_of("add_to_cart"), named({"column": "event"}))
    assert normalized.raw_bodies == written.raw_bodies


def test_report_lists_the_fifty_most_frequent_changes_and_the_summary_a_few(tmp_path: Path) -> None:
    names = [f"page {i:02d}" for i in range(60) for _ in range(1 + i % 3)]
    data = csv_text(HEADER, *(f"{n},u{k},2024-01-01 10:00:00" for k, n in enumerate(names)))
    result = run(
        tmp_path,
        data,
        named({"column": "event", "normalize": "underscore"}),
        source={"batch_rows": 7},
    )
    changes = result.report.to_dict()["event_names_changed"]
    assert changes["rows"] == len(names) and changes["distinct"] == 60
    top = changes["top"]
    assert len(top) == 50
    assert [t["count"] for t in top] == sorted((t["count"] for t in top), reverse=True)
    assert top[0] == {"from": "page 02", "to": "page_02", "count": 3}
    summary = result.report.summary().splitlines()
    at = next(i for i, line in enumerate(summary) if "event names changed" in line)
    assert "120 rows, 60 distinct" in summary[at]
    assert summary[at + 1].strip() == "'page 02' -> page_02  3"
    assert len([line for line in summary if " -> " in line]) == 5


def test_no_names_or_normalize_means_no_listing(tmp_path: Path) -> None:
    result = run(tmp_path, rows_of("a b"), named({"column": "event"}))
    assert "event_names_changed" not in result.report.to_dict()
    assert "event names changed" not in result.report.summary()


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            {"column": "event", "normalize": "kebab"},
            "mapping.event.normalize: must be one of underscore, snake_case",
        ),
        (
            {"value": "x", "normalize": "underscore"},
            "mapping.event.normalize: goes with column: or template:, not with value:",
        ),
        (
            {"column": "event", "names": {"a": "b c"}},
            "mapping.event: names: 'a' -> 'b c' is not a valid event name",
        ),
        (
            {"column": "event", "names": {"a": "$"}, "normalize": "underscore"},
            "mapping.event: names: 'a' -> '$' (after normalize: '') is not a valid event name",
        ),
    ],
)
def test_naming_config_mistakes_are_one_line_errors(
    tmp_path: Path, event: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        run(tmp_path, rows_of("a"), named(event))
    assert message in str(info.value) and "\n" not in str(info.value)
