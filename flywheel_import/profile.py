"""Preflight: read each file once for its columns, row count and per-file column types.

A property's JSON type must be decided once per file, never per batch: a zip-code column whose
first 50,000 values look numeric must not flip to strings in batch 7. For text formats that
needs every value, so CSV/TSV/NDJSON files are scanned once before anything is sent; Parquet
answers from its metadata. Preflight also finds config/data mismatches (a mapped column that
does not exist) before a single row is sent or written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from .config import SourceConfig
from .errors import InputError
from .inputs import SourceFile
from .jsontypes import canonical, merge
from .sources import ROW, csv_dialect, flatten, parquet_file, read_batches

TextKind = Literal["number", "boolean", "string"]

#: A plain JSON-safe number: no leading zeros (so ``02134`` stays a code), at most 15 digits
#: before and after the point (so ids and card numbers are not rounded by float64).
PLAIN_NUMBER = r"^-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,15})?(?:[eE][+-]?[0-9]{1,3})?$"
PLAIN_BOOLEAN = r"^(?i:true|false)$"
_SAMPLE_ROWS = 1000


@dataclass(slots=True)
class FileProfile:
    source: SourceFile
    schema: dict[str, pl.DataType]
    rows: int
    text_kinds: dict[str, TextKind] = field(default_factory=dict)
    is_text: bool = False
    #: NDJSON: the nested types every chunk is read with (objects as structs).
    read_schema: dict[str, pl.DataType] | None = None

    def __post_init__(self) -> None:
        # NDJSON is typed with its objects nested (so a key holding both objects and scalars
        # is seen as one key) and read that way; the plan sees it flattened, like Parquet.
        if self.source.format == "ndjson" and self.read_schema is None:
            self.read_schema = self.schema
            self.schema = dict(flatten(pl.DataFrame(schema=self.schema), self.source.name).schema)

    @property
    def columns(self) -> list[str]:
        return list(self.schema)


def profile(src: SourceFile, source: SourceConfig, *, wants_kind: Callable[[str], bool],
            on_bytes: Callable[[int], None] | None = None) -> FileProfile:
    """Columns, types and row count of ``src``; text kinds only for columns ``wants_kind``."""
    if src.format == "parquet":
        return _parquet_profile(src)
    is_csv = src.format in ("csv", "tsv")
    if is_csv and src.compression == "none" and source.csv.encoding in ("utf8", "utf-8"):
        fast = _native_csv_profile(src, source, wants_kind)
        if fast is not None:
            if on_bytes:
                on_bytes(src.size())
            return fast
    schemas: list[dict[str, pl.DataType]] = []
    rows = 0
    counts: dict[str, list[int]] = {}
    for batch in read_batches(src, source.csv, max(source.batch_rows, 100_000)):
        rows += batch.rows
        if on_bytes:
            on_bytes(batch.bytes_read)
        frame = batch.frame.drop(ROW)
        schemas.append(dict(frame.schema))
        if is_csv and frame.height:
            _count_kinds(frame, [c for c in frame.columns if wants_kind(c)], counts)
    return FileProfile(src, _unify(src, schemas), rows, _kinds(counts), is_text=is_csv)


def _native_csv_profile(src: SourceFile, source: SourceConfig,
                        wants_kind: Callable[[str], bool]) -> FileProfile | None:
    """polars' own parallel scan, for plain UTF-8 files: several times faster than ours.

    Anything it cannot parse (too many fields, bad quoting, invalid UTF-8) raises, and the exact
    reader profiles the file instead (None). What it lets through, rows with too few fields,
    only adds values, so it can turn a column into text but never hide a text value; the
    mapping also writes any value that is not a plain number as a JSON string, so even a
    misjudged column can never produce invalid JSON. The row count only sizes the progress bar.
    """
    delimiter, quote = csv_dialect(src, source.csv)
    try:
        lazy = pl.scan_csv(src.path, has_header=source.csv.header, separator=delimiter,
                           quote_char=quote, infer_schema=False)
        names = lazy.collect_schema().names()
        if not source.csv.header:
            names = [f"column_{i + 1}" for i in range(len(names))]
            lazy = lazy.rename(dict(zip(lazy.collect_schema().names(), names, strict=True)))
        if len(set(names)) != len(names) or any(not n or n != n.strip() for n in names):
            return None  # let the exact reader name or refuse them
        # The first rows give each column its only possible kind; the scan then checks every
        # value against that one pattern (a column with text in its first rows is text).
        guess: dict[str, TextKind] = {}
        wanted = [c for c in names if wants_kind(c)]
        if wanted:
            head = lazy.select(wanted).head(_SAMPLE_ROWS).collect()
            for c in wanted:
                values = head.get_column(c).drop_nulls()
                values = values.filter(values != "")
                if values.len() and values.str.contains(PLAIN_NUMBER).all():
                    guess[c] = "number"
                elif values.len() and values.str.contains(PLAIN_BOOLEAN).all():
                    guess[c] = "boolean"
                else:
                    guess[c] = "string"
        scan = [c for c, kind in guess.items() if kind != "string"]
        aggs: list[pl.Expr] = [pl.len().alias("__rows")]
        for c in scan:
            value = pl.when(pl.col(c) != "").then(pl.col(c))  # "" is empty, as in the reader
            pattern = PLAIN_NUMBER if guess[c] == "number" else PLAIN_BOOLEAN
            aggs += [value.count().alias(f"n{c}"), value.str.contains(pattern).sum().alias(f"m{c}")]
        row = lazy.select(aggs).collect(engine="streaming").row(0)
    except (pl.exceptions.PolarsError, OSError, ValueError):
        return None
    kinds = dict(guess)
    for i, c in enumerate(scan):
        nonnull, matching = int(row[1 + 2 * i] or 0), int(row[2 + 2 * i] or 0)
        if not nonnull or matching != nonnull:
            kinds[c] = "string"
    return FileProfile(src, dict.fromkeys(names, pl.String()), int(row[0]), kinds, is_text=True)


def _kinds(counts: dict[str, list[int]]) -> dict[str, TextKind]:
    kinds: dict[str, TextKind] = {}
    for col, (nonnull, numbers, booleans) in counts.items():
        if nonnull and numbers == nonnull:
            kinds[col] = "number"
        elif nonnull and booleans == nonnull:
            kinds[col] = "boolean"
        else:
            kinds[col] = "string"
    return kinds


def _count_kinds(frame: pl.DataFrame, cols: list[str], counts: dict[str, list[int]]) -> None:
    if not cols:
        return
    aggs: list[pl.Expr] = []
    for c in cols:
        aggs += [pl.col(c).count().alias(f"n{c}"),
                 pl.col(c).str.contains(PLAIN_NUMBER).sum().alias(f"d{c}"),
                 pl.col(c).str.contains(PLAIN_BOOLEAN).sum().alias(f"b{c}")]
    row = frame.select(aggs).row(0)
    for i, c in enumerate(cols):
        acc = counts.setdefault(c, [0, 0, 0])
        for j in range(3):
            acc[j] += int(row[3 * i + j] or 0)


def _unify(src: SourceFile, schemas: list[dict[str, pl.DataType]]) -> dict[str, pl.DataType]:
    """One schema for the whole file: each column's chunk types merged (see :mod:`.jsontypes`).

    NDJSON keys go in name order: polars orders the keys it infers by what a chunk holds, and
    a record's body must not depend on how the file was cut.
    """
    out: dict[str, pl.DataType] = {}
    for s in schemas:
        for name, dtype in s.items():
            out[name] = merge(out[name], canonical(dtype)) if name in out else canonical(dtype)
    return dict(sorted(out.items())) if src.format == "ndjson" else out


def _parquet_profile(src: SourceFile) -> FileProfile:
    """Types from the file's schema, converted exactly as its batches will be."""
    from .arrowtypes import convert, empty_batch

    temps: list[Path] = []
    try:
        pf = parquet_file(src, temps)
        converted = convert(empty_batch(pf.schema_arrow), src.name)  # type: ignore[attr-defined]
        rows = int(pf.metadata.num_rows)  # type: ignore[attr-defined]
    finally:
        for t in temps:
            t.unlink(missing_ok=True)
    empty = pl.from_arrow(converted.batch)
    if not isinstance(empty, pl.DataFrame):
        raise InputError(f"{src.name}: Parquet schema is not a table")
    # Decimals too wide for polars arrive as their exact text: numbers, like the text numbers
    # of a CSV file.
    kinds: dict[str, TextKind] = dict.fromkeys(converted.number_text, "number")
    return FileProfile(src, dict(flatten(empty, src.name).schema), rows, kinds)
