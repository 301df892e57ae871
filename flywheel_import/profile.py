"""Preflight: read each file once for its columns, row count and per-file column types.

A property's JSON type must be decided once per file, never per batch: a zip-code column whose
first 50,000 values look numeric must not flip to strings in batch 7. For text formats that
needs every value, so CSV/TSV/NDJSON files are scanned once before anything is sent; Parquet
answers from its metadata. Preflight also finds config/data mismatches (a mapped column that
does not exist) before a single row is sent or written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from .config import CsvOptions, SourceConfig
from .csvproof import same_records
from .csvsplit import RecordSplitter
from .errors import InputError
from .inputs import SourceFile, open_stream
from .jsonprops import JsonShape, shape_of
from .jsontypes import canonical, merge
from .sources import (
    ROW,
    NativeCsv,
    cell_value,
    csv_dialect,
    file_stamp,
    flatten,
    header_names,
    ndjson_types,
    parquet_file,
    read_batches,
)

TextKind = Literal["number", "boolean", "string"]

#: A plain JSON-safe number: no leading zeros (so ``02134`` stays a code), at most 15 digits
#: before and after the point (so ids and card numbers are not rounded by float64).
PLAIN_NUMBER = r"^-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,15})?(?:[eE][+-]?[0-9]{1,3})?$"
PLAIN_BOOLEAN = r"^(?i:true|false)$"
_HEAD_ROWS = 1000


@dataclass(slots=True)
class FileProfile:
    source: SourceFile
    schema: dict[str, pl.DataType]
    rows: int
    text_kinds: dict[str, TextKind] = field(default_factory=dict)
    is_text: bool = False
    #: NDJSON: the nested types every chunk is read with (objects as structs).
    read_schema: dict[str, pl.DataType] | None = None
    #: Plain CSV: proof that polars may read the batches itself (see :class:`NativeCsv`).
    native_csv: NativeCsv | None = None
    json_shapes: dict[str, JsonShape] = field(default_factory=dict)  # see profile_json

    def __post_init__(self) -> None:
        # NDJSON is typed with its objects nested (so a key holding both objects and scalars
        # is seen as one key) and read that way; the plan sees it flattened, like Parquet.
        if self.source.format == "ndjson" and self.read_schema is None:
            self.read_schema = self.schema
            self.schema = dict(flatten(pl.DataFrame(schema=self.schema), self.source.name).schema)

    @property
    def columns(self) -> list[str]:
        return list(self.schema)


def profile(
    src: SourceFile,
    source: SourceConfig,
    *,
    wants_kind: Callable[[str], bool],
    on_bytes: Callable[[int], None] | None = None,
) -> FileProfile:
    """Columns, types and row count of ``src``; text kinds only for columns ``wants_kind``."""
    if src.format == "parquet":
        return _parquet_profile(src)
    if src.format == "ndjson":
        return _ndjson_profile(src, on_bytes)
    is_csv = src.format in ("csv", "tsv")
    if is_csv and src.compression == "none" and source.csv.encoding in ("utf8", "utf-8"):
        fast = _native_csv_profile(src, source, wants_kind)
        if fast is not None:
            if on_bytes:
                on_bytes(src.size())
            return fast
    schemas: list[dict[str, pl.DataType]] = []
    rows = 0
    stats: dict[str, KindStats] = {}
    for batch in read_batches(src, source.csv, max(source.batch_rows, 100_000)):
        rows += batch.rows
        if on_bytes:
            on_bytes(batch.bytes_read)
        frame = batch.frame.drop(ROW)
        schemas.append(dict(frame.schema))
        if is_csv:
            for c, s in column_stats(frame, [c for c in frame.columns if wants_kind(c)]).items():
                stats[c] = stats.get(c, KindStats()).join(s)
    kinds = {c: s.kind for c, s in stats.items()}
    return FileProfile(src, _unify(src, schemas), rows, kinds, is_text=is_csv)


def _ndjson_profile(src: SourceFile, on_bytes: Callable[[int], None] | None) -> FileProfile:
    """Types merged over every part of the file (:mod:`.jsontypes`); a part that the types
    found so far read whole is not typed again (:func:`.sources.ndjson_types`)."""
    merged: dict[str, pl.DataType] = {}
    rows = 0
    for types, records, consumed in ndjson_types(src, merged):
        rows += records
        if on_bytes:
            on_bytes(consumed)
        if types is not None:
            unified = _unify(src, [merged, types])
            merged.clear()
            merged.update(unified)
    return FileProfile(src, dict(merged), rows)


def profile_json(
    src: SourceFile,
    source: SourceConfig,
    columns: Sequence[str],
    schema: dict[str, pl.DataType],
    native: NativeCsv | None = None,
) -> dict[str, JsonShape]:
    """The :class:`JsonShape` of each JSON-text column (``mapping.properties.json``), from
    every cell of the file, read as its batches are (``native``: see :func:`read_batches`)."""
    shapes = {c: JsonShape() for c in columns}
    present = [c for c in columns if c in schema]
    if not present:
        return shapes
    aligned = schema if src.format == "ndjson" else None
    rows = max(source.batch_rows, 100_000)
    for batch in read_batches(src, source.csv, rows, aligned, native=native):
        for c in present:
            cells = batch.frame.get_column(c)
            if cells.dtype == pl.String:
                shapes[c] = shapes[c].join(shape_of(cells))
    return shapes


def _native_csv_profile(
    src: SourceFile, source: SourceConfig, wants_kind: Callable[[str], bool]
) -> FileProfile | None:
    """polars' own parallel scan, for plain UTF-8 files: several times faster than ours.

    It must reach the decision the exact reader would (the same row must give the same event
    id whether the file is read plain or compressed), so it computes the same
    :class:`KindStats` over the same values, or gives up (None) and the exact reader profiles
    the file. Where it answers, it has also proven that polars reads the file record for
    record as the exact reader does (:func:`.csvproof.same_records`), so the batches may be
    read by polars too (:attr:`FileProfile.native_csv`). Column names are the reader's own
    (stripped, ``column_<i>`` when empty).
    """
    if src.path is None:  # an object in a store: the exact reader streams it
        return None
    delimiter, quote = csv_dialect(src, source.csv)
    try:
        stamp = file_stamp(src.path)  # before any read: a later change shows in the batches
        names = _reader_names(src, source.csv)
        lazy = pl.scan_csv(
            src.path,
            has_header=source.csv.header,
            separator=delimiter,
            quote_char=quote,
            infer_schema=False,
            glob=False,
        )
        found = lazy.collect_schema().names()
        if not names or len(found) != len(names):
            return None
        lazy = lazy.rename(dict(zip(found, names, strict=True)))
        wanted = [c for c in names if wants_kind(c)]
        nulls = source.csv.null_values
        last = names[-1]
        head = lazy.select(list(dict.fromkeys([*wanted, last]))).head(_HEAD_ROWS).collect()
        # The first rows settle what they can (one value that is not a number rules "number"
        # out for the whole file); the scan tests every value for what is open.
        stats = column_stats(head, wanted, nulls)
        open_cols = [c for c in wanted if not stats[c].settled]
        # Empty last cells in the first rows: the scan parses every column at once (see
        # same_records); otherwise it parses only what it counts, several times faster.
        parse_all = head.get_column(last).null_count() > 0
        aggs: list[pl.Expr] = [pl.len().alias("rows"), pl.col(last).null_count().alias("gaps")]
        if parse_all:
            aggs.append(pl.all().null_count().name.prefix("\0"))
        for i, c in enumerate(open_cols):
            aggs += stats_exprs(
                c,
                f"s{i}",
                numbers=stats[c].all_numbers,
                booleans=stats[c].all_booleans,
                nulls=nulls,
            )
        row = lazy.select(aggs).collect(engine="streaming").row(0, named=True)
        rows, gaps = int(row["rows"]), int(row["gaps"])
        if gaps and not parse_all:
            lazy.select(pl.all().null_count()).collect(engine="streaming")
            parse_all = True
        header = source.csv.header
        if not same_records(
            src,
            delimiter,
            quote,
            header=header,
            ncols=len(names),
            rows=rows,
            gaps=gaps,
            parsed_all=parse_all,
        ):
            return None
    except (pl.exceptions.PolarsError, OSError, ValueError, InputError):
        return None
    for i, c in enumerate(open_cols):
        stats[c] = stats[c].join(KindStats.from_row(row, f"s{i}"))
    kinds = {c: s.kind for c, s in stats.items()}
    native = NativeCsv(tuple(names), rows, stamp)
    schema: dict[str, pl.DataType] = dict.fromkeys(names, pl.String())
    return FileProfile(src, schema, rows, kinds, is_text=True, native_csv=native)


def _reader_names(src: SourceFile, csv: CsvOptions) -> list[str]:
    """The column names the exact reader gives this file (from its first record)."""
    delimiter, quote = csv_dialect(src, csv)
    splitter = RecordSplitter(delimiter=delimiter, quote=quote, header=csv.header)
    with open_stream(src) as stream:
        while True:
            chunk = stream.read(1 << 16)
            block = splitter.feed(chunk, final=not chunk)
            if block.header is not None or block.ncols is not None:
                return header_names(src, block.header, block.ncols or 0)
            if not chunk:
                return []


@dataclass(frozen=True, slots=True)
class KindStats:
    """What decides a text column's kind, over every value of the file ("" is empty).

    Each field is an "or" or an "and", so the stats of two parts of a file, even overlapping
    ones, join into the stats of their union: the exact reader joins them batch by batch, the
    fast scan joins the first rows with the rest, and both reach :attr:`kind` from the same
    values by the same rule.
    """

    any_value: bool = False
    all_numbers: bool = True  # every non-empty value matches PLAIN_NUMBER
    all_booleans: bool = True  # every non-empty value matches PLAIN_BOOLEAN

    @property
    def kind(self) -> TextKind:
        """The one typing rule of text columns (README, "Typing rules")."""
        if self.any_value and self.all_numbers:
            return "number"
        if self.any_value and self.all_booleans:
            return "boolean"
        return "string"

    @property
    def settled(self) -> bool:
        """No further value can change the kind (it is text whatever follows)."""
        return self.any_value and not self.all_numbers and not self.all_booleans

    def join(self, other: KindStats) -> KindStats:
        return KindStats(
            self.any_value or other.any_value,
            self.all_numbers and other.all_numbers,
            self.all_booleans and other.all_booleans,
        )

    @classmethod
    def from_row(cls, row: dict[str, Any], prefix: str) -> KindStats:
        return cls(
            bool(row[f"{prefix}v"]), row[f"{prefix}n"] is not False, row[f"{prefix}b"] is not False
        )


def stats_exprs(
    column: str,
    prefix: str,
    *,
    numbers: bool = True,
    booleans: bool = True,
    nulls: Sequence[str] = (),
) -> list[pl.Expr]:
    """Aggregations giving :class:`KindStats` of ``column`` (read back by ``from_row``);
    a test already known to fail is left out (its outcome cannot change). ``nulls``: the
    null markers, empty as in the reader."""
    value = cell_value(column, nulls)
    return [
        value.is_not_null().any().alias(f"{prefix}v"),
        (value.str.contains(PLAIN_NUMBER).all() if numbers else pl.lit(False)).alias(f"{prefix}n"),
        (value.str.contains(PLAIN_BOOLEAN).all() if booleans else pl.lit(False)).alias(
            f"{prefix}b"
        ),
    ]


def column_stats(
    frame: pl.DataFrame, cols: list[str], nulls: Sequence[str] = ()
) -> dict[str, KindStats]:
    """:class:`KindStats` of each of ``cols`` over the rows of ``frame``."""
    if not cols:
        return {}
    aggs = [e for i, c in enumerate(cols) for e in stats_exprs(c, f"s{i}", nulls=nulls)]
    row = frame.select(aggs).row(0, named=True)
    return {c: KindStats.from_row(row, f"s{i}") for i, c in enumerate(cols)}


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
