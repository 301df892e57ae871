"""Event-name normalization: source names such as ``add to cart`` or ``$pageview`` -> names the
API accepts (``^[a-zA-Z0-9_-]+$``). Pure: polars expressions for the batches, and the same rule
in plain Python for config checks and tests (tested equal).

Exports from other analytics tools use spaces, ``$`` prefixes and camelCase freely; the API
refuses all of them. ``normalize`` is a fixed, documented rule rather than a guess, so the same
source name always becomes the same sent name, in every batch and every run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import polars as pl

Normalize = Literal["underscore", "snake_case"]

#: What the API accepts as an event name.
VALID_NAME = r"^[a-zA-Z0-9_-]+$"

_OUTSIDE = r"[^A-Za-z0-9_-]+"
# camelCase boundaries: "HTTPRequest" -> "HTTP_Request" (an acronym before a capitalized word),
# then "addToCart" -> "add_To_Cart" (a lower-case letter or digit before a capital).
_ACRONYM = r"([A-Z]+)([A-Z][a-z])"
_CAMEL = r"([a-z0-9])([A-Z])"


def name_expr(
    expr: pl.Expr, *, names: Mapping[str, str] | None = None, normalize: Normalize | None = None
) -> pl.Expr:
    """The sent name: ``names`` applied to exact source values first, then ``normalize``.

    A null stays null (``MISSING_EVENT_NAME``); a name normalizing to nothing becomes ``""``,
    which fails the name check (``INVALID_EVENT_NAME``), quoting the original.
    """
    if names:
        expr = expr.replace(dict(names))
    if normalize is None:
        return expr
    expr = expr.str.replace_all(_OUTSIDE, "_").str.strip_chars("_")
    if normalize == "snake_case":
        expr = (
            expr.str.replace_all(_ACRONYM, "${1}_${2}")
            .str.replace_all(_CAMEL, "${1}_${2}")
            .str.to_lowercase()
        )
    return expr


def normalize_name(name: str, normalize: Normalize | None) -> str:
    """:func:`name_expr`'s rule for one name (``names`` aside)."""
    if normalize is None:
        return name
    out = re.sub(_OUTSIDE, "_", name).strip("_")
    if normalize == "snake_case":
        out = re.sub(_CAMEL, r"\1_\2", re.sub(_ACRONYM, r"\1_\2", out)).lower()
    return out


def is_valid_name(name: str) -> bool:
    return re.fullmatch(VALID_NAME, name) is not None


def name_changes(events: pl.DataFrame) -> pl.DataFrame:
    """``from``, ``to``, ``count`` of a batch's rows (``event_raw`` and ``event`` columns) whose
    name was changed into a valid one; a name still invalid is counted under
    ``INVALID_EVENT_NAME`` instead."""
    return (
        events.lazy()
        .filter((pl.col("event_raw") != pl.col("event")) & pl.col("event").str.contains(VALID_NAME))
        .group_by(pl.col("event_raw").alias("from"), pl.col("event").alias("to"))
        .agg(pl.len().alias("count"))
        .collect()
    )
