"""Source files -> bounded batches of rows, each row tagged with its record number.

Every reader yields :class:`RawBatch` values of at most ``batch_rows`` rows: a polars frame whose
first column ``__row`` is the 1-based data record number in its file (header excluded), plus the
records that could not be parsed, as raw text. Memory follows the chunk size, not the file size.
Struct columns are flattened to ``parent.child``; empty text cells become null.
"""

from __future__ import annotations

import codecs
import io
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import polars as pl

from .config import CsvOptions
from .csvsplit import BadRecord, Block, RecordSplitter
from .errors import InputError
from .inputs import SourceFile, open_stream
from .prefetch import prefetch

ROW = "__row"
CHUNK_BYTES = 4 << 20


@dataclass(slots=True)
class RawBatch:
    source: SourceFile
    frame: pl.DataFrame
    bad: list[BadRecord] = field(default_factory=list)
    bytes_read: int = 0

    @property
    def rows(self) -> int:
        return self.frame.height + len(self.bad)


def read_batches(src: SourceFile, csv: CsvOptions, batch_rows: int,
                 schema: dict[str, pl.DataType] | None = None) -> Iterator[RawBatch]:
    """Yield the file's rows in batches; ``schema`` (from profiling) aligns NDJSON chunks."""
    try:
        if src.format in ("csv", "tsv"):
            yield from _csv_batches(src, csv, batch_rows)
        elif src.format == "parquet":
            yield from _parquet_batches(src, batch_rows)
        else:
            yield from _ndjson_batches(src, batch_rows, schema)
    except InputError:
        raise
    except (OSError, EOFError) as e:
        raise InputError(f"{src.name}: cannot read (truncated or corrupt?): {e}") from None
    except pl.exceptions.PolarsError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{src.name}: cannot read: {first}") from None


# --- CSV / TSV -------------------------------------------------------------------------------


def csv_dialect(src: SourceFile, csv: CsvOptions) -> tuple[str, str | None]:
    """The delimiter and quote for this file (a .tsv file defaults to tabs)."""
    delimiter = csv.delimiter
    if src.format == "tsv" and "delimiter" not in csv.model_fields_set:
        delimiter = "\t"
    return delimiter, csv.quote or None


def _utf8_chunks(src: SourceFile, csv: CsvOptions) -> Iterator[tuple[bytes, int]]:
    """(UTF-8 bytes, raw bytes consumed) chunks; other encodings are transcoded on the fly."""
    enc = codecs.lookup(csv.encoding.replace("utf8-sig", "utf-8-sig")).name
    decoder = None if enc in ("utf-8", "utf-8-sig") else codecs.getincrementaldecoder(enc)()
    with open_stream(src) as stream:
        while True:
            raw = stream.read(CHUNK_BYTES)
            if not raw:
                if decoder is not None:
                    tail = decoder.decode(b"", final=True)
                    if tail:
                        yield tail.encode("utf-8"), 0
                return
            if decoder is None:
                yield raw, len(raw)
            else:
                try:
                    yield decoder.decode(raw).encode("utf-8"), len(raw)
                except UnicodeDecodeError as e:
                    raise InputError(f"{src.name}: not valid {csv.encoding}: {e.reason}") from None


def _csv_blocks(src: SourceFile, csv: CsvOptions, splitter: RecordSplitter
                ) -> Iterator[tuple[Block, int]]:
    chunks = _utf8_chunks(src, csv)
    while True:
        item = next(chunks, None)
        data, consumed = item if item is not None else (b"", 0)
        yield splitter.feed(data, final=item is None), consumed
        if item is None:
            return


def _csv_batches(src: SourceFile, csv: CsvOptions, batch_rows: int) -> Iterator[RawBatch]:
    delimiter, quote = csv_dialect(src, csv)
    splitter = RecordSplitter(delimiter=delimiter, quote=quote, header=csv.header)
    names: list[str] | None = None
    unreported = 0  # bytes read before the columns were known (a header longer than a chunk)
    # Splitting (numpy) runs a block ahead of parsing (polars): both release the GIL.
    for block, consumed in prefetch(_csv_blocks(src, csv, splitter), ahead=1):
        # Only what the block carries: the splitter itself may already be a block ahead.
        if names is None and (block.header is not None or block.ncols is not None):
            names = header_names(src, block.header, block.ncols or 0)
        if names is None:
            unreported += consumed
            continue
        consumed, unreported = consumed + unreported, 0
        frame = _parse_block(src, block.data, names or [], delimiter, quote, csv.null_values)
        if frame.height != len(block.rows):
            raise InputError(f"{src.name}: internal record count mismatch near record "
                             f"{int(block.rows[0]) if len(block.rows) else '?'}")
        frame = frame.insert_column(0, pl.Series(ROW, block.rows, dtype=pl.Int64))
        yield from _slices(src, frame, block.bad, batch_rows, consumed)


def header_names(src: SourceFile, header: list[bytes] | None, ncols: int) -> list[str]:
    if header is None:
        return [f"column_{i + 1}" for i in range(ncols)]
    names = []
    for i, raw in enumerate(header):
        name = raw.decode("utf-8", errors="replace").strip()
        names.append(name or f"column_{i + 1}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{src.name}: duplicate column name(s) in header: {', '.join(dupes)}")
    return names


def cell_value(name: str, null_values: Sequence[str] = ()) -> pl.Expr:
    """A text cell as a value, null when it holds none: empty (quoted ``""`` or not) or one of
    ``source.csv.null_values`` (whole cell, after unquoting). Both preflight readers and the
    batches use this one expression, so they agree on what is empty."""
    col = pl.col(name)
    if not null_values:
        return pl.when(col != "").then(col)
    return pl.when((col != "") & ~col.is_in(list(null_values))).then(col)


def _parse_block(src: SourceFile, data: bytes, names: list[str], delimiter: str,
                 quote: str | None, null_values: Sequence[str] = ()) -> pl.DataFrame:
    schema = dict.fromkeys(names, pl.String)
    if not data:
        return pl.DataFrame(schema=schema)
    frame = pl.read_csv(io.BytesIO(data), has_header=False, schema=schema,
                        separator=delimiter, quote_char=quote, empty_string_is_null=True,
                        raise_if_empty=False, try_parse_dates=False)
    # An empty cell, quoted ("") or not, is "no value": omitted, never sent as "".
    return frame.with_columns(cell_value(n, null_values).alias(n) for n in names)


def _slices(src: SourceFile, frame: pl.DataFrame, bad: list[BadRecord], batch_rows: int,
            consumed: int) -> Iterator[RawBatch]:
    if frame.height <= batch_rows:
        if frame.height or bad or consumed:
            yield RawBatch(src, frame, bad, consumed)
        return
    for off in range(0, frame.height, batch_rows):
        first = off == 0
        yield RawBatch(src, frame.slice(off, batch_rows), bad if first else [],
                       consumed if first else 0)


# --- Parquet ---------------------------------------------------------------------------------


def _parquet_path(src: SourceFile, stack: list[Path]) -> Path:
    """Parquet needs random access: a compressed file is first expanded to a temp file."""
    if src.compression == "none":
        return src.path
    tmp = tempfile.NamedTemporaryFile(prefix="flywheel-", suffix=".parquet", delete=False)  # noqa: SIM115
    with tmp, open_stream(src) as stream:
        shutil.copyfileobj(stream, tmp, 1 << 20)
    stack.append(Path(tmp.name))
    return Path(tmp.name)


def parquet_file(src: SourceFile, stack: list[Path]) -> object:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(_parquet_path(src, stack))
    except Exception as e:  # pyarrow raises its own hierarchy (ArrowInvalid, OSError...)
        raise InputError(f"{src.name}: not a readable Parquet file: {e}") from None


def _parquet_batches(src: SourceFile, batch_rows: int) -> Iterator[RawBatch]:
    temps: list[Path] = []
    try:
        pf = parquet_file(src, temps)
        total_bytes = src.size()
        total_rows = max(1, pf.metadata.num_rows)  # type: ignore[attr-defined]
        next_row = 1
        try:
            for rb in pf.iter_batches(batch_size=batch_rows):  # type: ignore[attr-defined]
                frame = flatten(pl.from_arrow(rb))  # type: ignore[arg-type]
                rows = np.arange(next_row, next_row + frame.height, dtype=np.int64)
                next_row += frame.height
                frame = frame.insert_column(0, pl.Series(ROW, rows))
                yield RawBatch(src, frame, [], total_bytes * frame.height // total_rows)
        except (OSError, ValueError) as e:
            raise InputError(f"{src.name}: Parquet data unreadable near row {next_row}: {e}"
                             ) from None
    finally:
        for t in temps:
            t.unlink(missing_ok=True)


def flatten(frame: pl.DataFrame) -> pl.DataFrame:
    """Struct columns become ``parent.child`` columns, recursively, in place."""
    while any(isinstance(dt, pl.Struct) for dt in frame.dtypes):
        exprs: list[pl.Expr] = []
        for name, dt in frame.schema.items():
            if isinstance(dt, pl.Struct):
                exprs.extend(pl.col(name).struct.field(f.name).alias(f"{name}.{f.name}")
                             for f in dt.fields)
            else:
                exprs.append(pl.col(name))
        frame = frame.select(exprs)
    return frame


# --- NDJSON ----------------------------------------------------------------------------------


def _ndjson_batches(src: SourceFile, batch_rows: int,
                    schema: dict[str, pl.DataType] | None) -> Iterator[RawBatch]:
    next_row = 1
    carry = b""
    first = True
    with open_stream(src) as stream:
        while True:
            raw = stream.read(CHUNK_BYTES)
            final = not raw
            buf = carry + raw
            if first and (len(buf) >= 3 or final):
                first = False
                if buf.startswith(b"\xef\xbb\xbf"):
                    buf = buf[3:]
            cut = len(buf) if final else buf.rfind(b"\n") + 1
            carry = buf[cut:]
            lines = [ln for ln in buf[:cut].split(b"\n") if ln.strip()]
            frame, bad, next_row = _parse_lines(src, lines, next_row)
            if schema is not None:
                frame = conform(frame, schema)
            yield from _slices(src, frame, bad, batch_rows, len(raw))
            if final:
                return


def _parse_lines(src: SourceFile, lines: list[bytes], first_row: int
                 ) -> tuple[pl.DataFrame, list[BadRecord], int]:
    rows = np.arange(first_row, first_row + len(lines), dtype=np.int64)
    bad: list[BadRecord] = []
    good = lines
    if lines:
        try:
            frame = pl.read_ndjson(io.BytesIO(b"\n".join(lines)), infer_schema_length=None)
            if frame.height != len(lines):
                raise ValueError("row count mismatch")
        except (pl.exceptions.PolarsError, ValueError):
            good, keep = [], []
            for i, ln in enumerate(lines):
                reason = _json_problem(ln)
                if reason is None:
                    good.append(ln)
                    keep.append(i)
                else:
                    bad.append(BadRecord(int(rows[i]), ln.decode("utf-8", "replace"), reason))
            rows = rows[keep]
            frame = (pl.read_ndjson(io.BytesIO(b"\n".join(good)), infer_schema_length=None)
                     if good else pl.DataFrame())
    else:
        frame = pl.DataFrame()
    frame = flatten(frame).insert_column(0, pl.Series(ROW, rows, dtype=pl.Int64))
    return frame, bad, first_row + len(lines)


def _json_problem(line: bytes) -> str | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        return f"invalid JSON: {e}"
    if not isinstance(value, dict):
        return f"a line must be a JSON object, not {type(value).__name__}"
    return None


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Give an NDJSON chunk the file's unified columns and types (decided once per file)."""
    exprs = [pl.col(ROW)]
    for name, dtype in schema.items():
        if name not in frame.columns:
            exprs.append(pl.lit(None, dtype).alias(name))
        elif frame.schema[name] == dtype:
            exprs.append(pl.col(name))
        elif dtype == pl.String and isinstance(frame.schema[name], pl.List | pl.Array):
            exprs.append(pl.struct(pl.col(name).alias("v")).struct.json_encode()
                         .str.slice(5).str.head(-1).alias(name))
        else:
            exprs.append(pl.col(name).cast(dtype, strict=False).alias(name))
    return frame.select(exprs)
