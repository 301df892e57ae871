"""JSON text of polars values, as expressions (shared by the pure stages)."""

from __future__ import annotations

import polars as pl


def json_value(expr: pl.Expr) -> pl.Expr:
    """The JSON text of each value: quoted and escaped strings, numbers, ``[...]`` lists.

    polars only JSON-encodes structs, so the value is wrapped as ``{"v": x}`` and unwrapped
    again; a null stays null (callers omit it).
    """
    return pl.when(expr.is_not_null()).then(
        pl.struct(expr.alias("v")).struct.json_encode().str.slice(5).str.head(-1)
    )
