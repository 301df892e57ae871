"""Source files -> bounded batches of rows, each row tagged with its record number.

Every reader yields :class:`RawBatch` values of at most ``batch_rows`` rows: a polars frame whose
first column ``__row`` is the 1-based data record number in its file (header excluded), plus the
records that could not be parsed, as raw text. Memory follows the chunk size, not the file size.
Struct columns are flattened to ``parent.child``; empty text cells become null. CSV is split into
records by :mod:`.csvsplit`, or read by polars itself where preflight proved that the same
(:class:`NativeCsv`). Parquet batches pass through :mod:`.arrowtypes`, or are read by polars
itself where that provably gives the same frames (:mod:`.parquetfast`); NDJSON chunks are read
with the file's merged types (:mod:`.jsontypes`).
"""

from __future__ import annotations

import codecs
import io
import os
import shutil
import tempfile
import zlib
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl

from .config import CsvOptions
from .csvsplit import MAX_RECORD_BYTES, BadRecord, Block, RecordSplitter, whole_records
from .errors import InputError
from .inputs import SourceFile, open_random, open_stream
from .jsonblocks import (
    Written,
    json_object,
    members_read,
    members_written,
    too_deep,
    whole_lines,
)
from .jsontypes import MAX_DEPTH, record_schema
from .prefetch import ordered_map, prefetch

if TYPE_CHECKING:
    from .parquetfast import FastPlan

ROW = "__row"
CHUNK_BYTES = 4 << 20


@dataclass(slots=True)
class RawBatch:
    source: SourceFile
    frame: pl.DataFrame
    bad: list[BadRecord] = field(default_factory=list)
    bytes_read: int = 0
    #: Rows of ``frame`` settled by an earlier run (resume): still checked for duplicates,
    #: never sent, rejected or counted again. None: no such rows.
    skip: npt.NDArray[np.bool_] | None = None
    #: The values are the very ones preflight typed (polars' read of the file it proved and
    #: stamped, see :class:`NativeCsv`): they fit the plan's guards without a check.
    profiled: bool = False

    @property
    def rows(self) -> int:
        return self.frame.height + len(self.bad)


def read_batches(
    src: SourceFile,
    csv: CsvOptions,
    batch_rows: int,
    schema: dict[str, pl.DataType] | None = None,
    *,
    native: NativeCsv | None = None,
) -> Iterator[RawBatch]:
    """Yield the file's rows in batches; ``schema`` is the NDJSON file's nested types from
    preflight (:attr:`FileProfile.read_schema`): without it, NDJSON frames keep their structs.
    ``native``: preflight's proof that polars reads this CSV file record for record
    (:attr:`FileProfile.native_csv`); without it, CSV goes through the record splitter."""
    with _read_errors(src):
        if src.format in ("csv", "tsv"):
            if native is not None:
                yield from _native_csv_batches(src, csv, batch_rows, native)
            else:
                yield from _csv_batches(src, csv, batch_rows)
        elif src.format == "parquet":
            yield from _parquet_batches(src, batch_rows)
        else:
            yield from _ndjson_batches(src, batch_rows, schema)


@contextmanager
def _read_errors(src: SourceFile) -> Iterator[None]:
    """Errors of reading ``src`` as one :class:`InputError` line naming it."""
    try:
        yield
    except InputError:
        raise
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{src.name}: cannot read (truncated or corrupt?): {e}") from None
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException) as e:
        # A panic is polars failing on data it did not expect: still this file's fault to the
        # user, and worth one line naming it rather than a traceback.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{src.name}: cannot read: {first}") from None
    except Exception as e:
        if src.compression != "zstd" or not _is_zstd_error(e):
            raise
        raise InputError(f"{src.name}: cannot read (truncated or corrupt?): {e}") from None


def _is_zstd_error(e: Exception) -> bool:
    import zstandard  # loaded only for .zst files

    return isinstance(e, zstandard.ZstdError)


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


def _csv_blocks(
    src: SourceFile, csv: CsvOptions, splitter: RecordSplitter
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
            raise InputError(
                f"{src.name}: internal record count mismatch near record "
                f"{int(block.rows[0]) if len(block.rows) else '?'}"
            )
        frame = frame.insert_column(0, pl.Series(ROW, block.rows, dtype=pl.Int64))
        yield from _slices(src, frame, block.bad, batch_rows, consumed)


@dataclass(frozen=True, slots=True)
class NativeCsv:
    """Preflight's finding that polars reads this plain file exactly as the record splitter
    does: the same records (no quote inside an unquoted field), each whole (no blank line, no
    record with too few or too many fields), all valid UTF-8. Then polars' row index is the
    record number, and the batches can skip the splitter. It holds for the file as it was:
    ``stamp`` tells whether it still is."""

    names: tuple[str, ...]
    rows: int
    stamp: FileStamp


class FileStamp(NamedTuple):
    """What changes when a file is written or replaced."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def file_stamp(path: Path) -> FileStamp:
    st = os.stat(path)
    return FileStamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _native_csv_batches(
    src: SourceFile, csv: CsvOptions, batch_rows: int, native: NativeCsv
) -> Iterator[RawBatch]:
    """A file preflight found polars reads exactly (see :class:`NativeCsv`), parsed by polars
    a block of whole records at a time, with no record splitting: the records are numbered
    as they come (there is no blank line to skip, no bad record to set aside).

    Blocks, not polars' streaming scan: the scan reads ahead of a slow consumer by hundreds
    of megabytes. A file changed since preflight is read by the record splitter instead
    (what it holds now is unproven); one changed while being read stops the read rather than
    number rows it may have read differently.
    """
    if src.path is None or src.compression != "none" or file_stamp(src.path) != native.stamp:
        yield from _csv_batches(src, csv, batch_rows)
        return
    delimiter, quote = csv_dialect(src, csv)
    names = list(native.names)
    size, rows, reported = native.stamp.size, 0, 0
    head = b"" if csv.header else None  # the blocks up to the header's, until it is read
    with open(src.path, "rb") as f:
        chunks = iter(lambda: f.read(CHUNK_BYTES), b"")
        for data in whole_records(chunks, quote):
            if head is None:
                frame = _parse_block(src, data, names, delimiter, quote, csv.null_values)
            else:
                head += data
                if not head.removeprefix(b"\xef\xbb\xbf").strip(b"\r\n"):
                    continue  # blank lines before the header
                frame = _parse_block(
                    src, head, names, delimiter, quote, csv.null_values, header=True
                )
                head = None
            numbers = np.arange(rows + 1, rows + 1 + frame.height, dtype=np.int64)
            rows += frame.height
            if rows > native.rows or file_stamp(src.path) != native.stamp:
                raise InputError(f"{src.name}: changed while being read; run again")
            # Progress in bytes, estimated from the rows (the sum is the file's size).
            consumed = size * rows // max(native.rows, 1) - reported
            reported += consumed
            frame = frame.insert_column(0, pl.Series(ROW, numbers, dtype=pl.Int64))
            yield from _slices(src, frame, [], batch_rows, consumed, profiled=True)
    if rows != native.rows:
        raise InputError(f"{src.name}: changed while being read; run again")
    if not rows:
        empty = pl.DataFrame(schema={ROW: pl.Int64, **dict.fromkeys(names, pl.String)})
        yield RawBatch(src, empty, [], size)


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


def _parse_block(
    src: SourceFile,
    data: bytes,
    names: list[str],
    delimiter: str,
    quote: str | None,
    null_values: Sequence[str] = (),
    *,
    header: bool = False,
) -> pl.DataFrame:
    """A block of whole records as text columns named ``names``. ``header``: the block starts
    with the header, which polars skips as its own scan did in preflight (a byte-order mark
    and blank lines before it included); the names stay the reader's."""
    schema = dict.fromkeys(names, pl.String)
    if not data:
        return pl.DataFrame(schema=schema)
    frame = pl.read_csv(
        io.BytesIO(data),
        has_header=header,
        schema=None if header else schema,
        infer_schema=False,
        separator=delimiter,
        quote_char=quote,
        empty_string_is_null=True,
        raise_if_empty=False,
        try_parse_dates=False,
    )
    if header:
        if frame.width != len(names):
            raise InputError(f"{src.name}: changed while being read (its header); run again")
        frame.columns = names
    # An empty cell, quoted ("") or not, is "no value": omitted, never sent as "".
    return frame.with_columns(cell_value(n, null_values).alias(n) for n in names)


def _slices(
    src: SourceFile,
    frame: pl.DataFrame,
    bad: list[BadRecord],
    batch_rows: int,
    consumed: int,
    *,
    profiled: bool = False,
) -> Iterator[RawBatch]:
    if frame.height <= batch_rows:
        if frame.height or bad or consumed:
            yield RawBatch(src, frame, bad, consumed, profiled=profiled)
        return
    for off in range(0, frame.height, batch_rows):
        first = off == 0
        yield RawBatch(
            src,
            frame.slice(off, batch_rows),
            bad if first else [],
            consumed if first else 0,
            profiled=profiled,
        )


def _joined(batches: Iterator[RawBatch], batch_rows: int) -> Iterator[RawBatch]:
    """Consecutive batches smaller than ``batch_rows`` joined up to it, in order.

    A block of a 4 MiB read holds far fewer rows than a batch for narrow records (23,000
    NDJSON lines of 180 bytes), and each batch costs polars a fixed overhead per expression:
    joined, the 2M-row benchmark file examines in two thirds of the CPU time. A batch with
    records set aside is passed on as it is (after what was pending), so every batch's bad
    records stay with the rows around them.
    """
    pending: list[RawBatch] = []
    rows = 0
    for batch in batches:
        fits = not batch.bad and (not pending or batch.frame.schema == pending[0].frame.schema)
        if not fits:
            if pending:
                yield _concat(pending)
                pending, rows = [], 0
            if batch.bad:
                yield batch
                continue
        pending.append(batch)
        rows += batch.frame.height
        if rows >= batch_rows:
            whole = _concat(pending)
            yield RawBatch(whole.source, whole.frame.head(batch_rows), [], whole.bytes_read)
            rest = whole.frame.slice(batch_rows)
            pending = [RawBatch(whole.source, rest, [], 0)] if rest.height else []
            rows = rest.height
    if pending:
        yield _concat(pending)


def _concat(batches: list[RawBatch]) -> RawBatch:
    if len(batches) == 1:
        return batches[0]
    frame = pl.concat([b.frame for b in batches], rechunk=True)
    return RawBatch(batches[0].source, frame, [], sum(b.bytes_read for b in batches))


# --- Parquet ---------------------------------------------------------------------------------


def _parquet_path(src: SourceFile, stack: list[Path]) -> Path | BinaryIO:
    """Parquet needs random access: a compressed file is first expanded to a temp file.

    The temp file is on ``stack`` (for the caller to remove) before a byte is written, so a
    failed expansion (a corrupt or truncated archive) leaves nothing behind. An object in a
    store is read in ranges.
    """
    if src.compression == "none":
        return open_random(src)
    fd, name = tempfile.mkstemp(prefix="flywheel-", suffix=".parquet")
    stack.append(Path(name))
    with open(fd, "wb") as tmp, open_stream(src) as stream:
        shutil.copyfileobj(stream, tmp, 1 << 20)
    return Path(name)


def parquet_file(src: SourceFile, stack: list[Path]) -> object:
    return _open_parquet(src, stack)[0]


def _open_parquet(src: SourceFile, stack: list[Path]) -> tuple[Any, Path | None]:
    """The file opened by pyarrow, and its path on this machine (None: read in ranges)."""
    import pyarrow.parquet as pq

    try:
        path = _parquet_path(src, stack)
    except InputError:
        raise
    except Exception as e:  # gzip, zlib and zstandard each raise their own errors
        raise InputError(f"{src.name}: cannot expand ({src.compression}): {e}") from None
    try:
        return pq.ParquetFile(path), path if isinstance(path, Path) else None
    except Exception as e:  # pyarrow raises its own hierarchy (ArrowInvalid, OSError...)
        raise InputError(f"{src.name}: not a readable Parquet file: {e}") from None


def _parquet_batches(src: SourceFile, batch_rows: int) -> Iterator[RawBatch]:
    """polars reads the file where it provably gives the exact reader's frames (see
    :mod:`.parquetfast`); the exact reader takes over at the first row it cannot."""
    from .parquetfast import fast_plan

    temps: list[Path] = []
    try:
        pf, local = _open_parquet(src, temps)
        sizes = _Share(src.size(), pf.metadata.num_rows)
        plan = fast_plan(pf, local, src.name) if local is not None else None
        done = 0 if plan is None else (yield from _fast_batches(src, plan, pf, batch_rows, sizes))
        yield from _exact_batches(src, pf, batch_rows, sizes, done)
    finally:
        for t in temps:
            t.unlink(missing_ok=True)


def _fast_batches(
    src: SourceFile, plan: FastPlan, pf: Any, batch_rows: int, sizes: _Share
) -> Generator[RawBatch, None, int]:
    """Batches read by polars, up to a row it cannot read; returns the rows given. A batch
    holding rows the exact reader would reject (dates out of range) is read by it."""
    done = 0
    frames = plan.frames(batch_rows)
    while True:
        try:
            asked, frame = next(frames, (0, None))
        except (Exception, pl.exceptions.PanicException):
            return done  # text that is not UTF-8, damage: the exact reader says which
        if frame is None or frame.height != asked or frame.schema != plan.schema:
            return done
        for off in range(0, frame.height, batch_rows):
            part = frame.slice(off, batch_rows)
            if plan.out_of_range(part):
                yield from _exact_batches(src, pf, batch_rows, sizes, done, part.height)
            else:
                rows = pl.Series(ROW, np.arange(done + 1, done + 1 + part.height), pl.Int64)
                yield RawBatch(src, part.insert_column(0, rows), [], sizes(part.height))
            done += part.height


@dataclass(frozen=True, slots=True)
class _Share:
    """A batch's share of the file's bytes, for progress: Parquet says rows, not offsets."""

    total_bytes: int
    total_rows: int

    def __call__(self, rows: int) -> int:
        return self.total_bytes * rows // max(1, self.total_rows)


def _exact_batches(
    src: SourceFile, pf: Any, batch_rows: int, sizes: _Share, start: int, count: int | None = None
) -> Iterator[RawBatch]:
    """Rows ``start`` (0-based) onwards, ``count`` of them or all, read by pyarrow and
    converted (:func:`parquet_frame`)."""
    import pyarrow as pa

    next_row = start + 1
    try:
        for rb in _record_batches(pf, batch_rows, start, count):
            frame, bad = parquet_frame(src, rb, next_row)
            next_row += rb.num_rows
            yield RawBatch(src, frame, bad, sizes(rb.num_rows))
    except (OSError, ValueError, pa.ArrowException) as e:
        raise InputError(f"{src.name}: Parquet data unreadable near row {next_row}: {e}") from None


def _record_batches(pf: Any, batch_rows: int, start: int, count: int | None) -> Iterator[Any]:
    """pyarrow's record batches of rows ``start`` to ``start + count`` (or the end): only
    the row groups holding them are read."""
    if start == 0 and count is None:
        yield from pf.iter_batches(batch_size=batch_rows)
        return
    stop = pf.metadata.num_rows if count is None else start + count
    groups: list[int] = []
    pos = first = 0  # first: the row where the first group read starts
    for i in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        if pos + n > start and pos < stop:
            if not groups:
                first = pos
            groups.append(i)
        pos += n
    if not groups:
        return
    pos = first
    for rb in pf.iter_batches(batch_size=batch_rows, row_groups=groups):
        lo, hi = max(start - pos, 0), min(rb.num_rows, stop - pos)
        if hi > lo:
            yield rb.slice(lo, hi - lo)
        pos += rb.num_rows
        if pos >= stop:
            return


def parquet_frame(src: SourceFile, rb: Any, first_row: int) -> tuple[pl.DataFrame, list[BadRecord]]:
    """One Arrow record batch -> a flattened frame with ``__row``, and the rows that cannot be
    represented (see :mod:`.arrowtypes`) as bad records."""
    from .arrowtypes import convert, row_text

    converted = convert(rb, src.name)
    frame = pl.from_arrow(converted.batch)
    if not isinstance(frame, pl.DataFrame):
        raise InputError(f"{src.name}: Parquet data is not a table")
    frame = flatten(frame, src.name)
    rows = np.arange(first_row, first_row + rb.num_rows, dtype=np.int64)
    bad: list[BadRecord] = []
    if converted.problems:
        at = list(converted.problems)
        bad = [
            BadRecord(int(rows[i]), raw, converted.problems[i])
            for i, raw in zip(at, row_text(rb, at), strict=True)
        ]
        keep = np.ones(rb.num_rows, dtype=np.bool_)
        keep[at] = False
        frame, rows = frame.filter(pl.Series(keep)), rows[keep]
    return frame.insert_column(0, pl.Series(ROW, rows, dtype=pl.Int64)), bad


def flatten(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """Struct columns become ``parent.child`` columns, recursively, in place.

    A name that would then appear twice (a column ``a.b`` next to a struct ``a`` with a field
    ``b``) is an :class:`InputError` naming ``source``.
    """
    while any(isinstance(dt, pl.Struct) for dt in frame.dtypes):
        exprs: list[pl.Expr] = []
        names: list[str] = []
        for name, dt in frame.schema.items():
            if isinstance(dt, pl.Struct):
                for f in dt.fields:
                    names.append(f"{name}.{f.name}")
                    exprs.append(pl.col(name).struct.field(f.name).alias(names[-1]))
            else:
                names.append(name)
                exprs.append(pl.col(name))
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise InputError(
                f"{source}: column name(s) {', '.join(map(repr, twice))} appear "
                "twice once nested keys are flattened (as written, and as "
                "parent.child)"
            )
        frame = frame.select(exprs)
    return frame


# --- NDJSON ----------------------------------------------------------------------------------

#: A line longer than this is one malformed record (the same limit as a CSV record): it is
#: skipped while streaming, never held whole.
MAX_LINE_BYTES = MAX_RECORD_BYTES
#: How much of a too-long line the rejects file keeps in ``_raw``.
LONG_LINE_HEAD = 1024


@dataclass(slots=True)
class _Block:
    """Whole lines polars may parse as they are (:func:`.jsonblocks.whole_lines`): ``count``
    records, numbered consecutively."""

    data: bytes
    count: int
    consumed: int


@dataclass(slots=True)
class _Lines:
    """One chunk's records: the lines to parse, and those set aside before parsing (position
    among the chunk's records, first bytes, reason)."""

    lines: list[bytes]
    aside: list[tuple[int, str, str]]
    consumed: int

    @property
    def count(self) -> int:
        return len(self.lines) + len(self.aside)

    def long_line(self, head: bytes) -> None:
        self.aside.append(
            (
                self.count,
                _text(head[:LONG_LINE_HEAD]) + "...",
                f"line longer than {MAX_LINE_BYTES:,} bytes (the record limit)",
            )
        )

    def add(self, line: bytes) -> None:
        # polars reads nested values recursively and overflows its stack on very deep ones
        # (a crash, not an error), so a line that might be deeply nested is checked first.
        if len(line) > 2 * MAX_DEPTH and line.count(b"{") + line.count(b"[") > MAX_DEPTH:
            problem = too_deep(line)
            if problem is not None:
                self.aside.append((self.count, _text(line), problem))
                return
        self.lines.append(line)


def _ndjson_batches(
    src: SourceFile, batch_rows: int, schema: dict[str, pl.DataType] | None
) -> Iterator[RawBatch]:
    """Without ``schema`` frames keep objects as structs, for the file's types to be merged
    (see :mod:`.jsontypes`); with it, every chunk is read with those types, flattened."""
    yield from _joined(_ndjson_blocks(src, batch_rows, schema), batch_rows)


_PartFrame = tuple[pl.DataFrame, list[BadRecord]]


def _ndjson_blocks(
    src: SourceFile, batch_rows: int, schema: dict[str, pl.DataType] | None
) -> Iterator[RawBatch]:
    """The parts parsed two at a time, in order. Splitting and counting (numpy) run a part
    ahead on their own thread: one thread doing all three kept the two cores 60-75% busy
    while the batches were examined."""

    def parse(item: tuple[_Block | _Lines, int]) -> tuple[_Block | _Lines, _PartFrame]:
        part, first = item
        return part, _part_frame(src, part, first, schema)

    parts = prefetch(_numbered(_ndjson_parts(src)), ahead=1)
    for part, (frame, bad) in ordered_map(parse, parts, workers=2, spare=0):
        yield from _slices(src, frame, bad, batch_rows, part.consumed)


def _numbered(parts: Iterator[_Block | _Lines]) -> Iterator[tuple[_Block | _Lines, int]]:
    """Each part with the record number of its first line."""
    next_row = 1
    for part in parts:
        yield part, next_row
        next_row += part.count


def ndjson_types(
    src: SourceFile, known: Mapping[str, pl.DataType]
) -> Iterator[tuple[dict[str, pl.DataType] | None, int, int]]:
    """Preflight's read of an NDJSON file, a part at a time: (the part's nested types, its
    records, the bytes it consumed).

    The types are None for a part that reads as it is with ``known``, the file's types found
    so far (merged, and kept current by the caller between parts), when the read proves that
    nothing in it can change them: no member dropped, no value polars changed silently
    (:mod:`.jsonblocks`). One typed read costs about a third of inferring the part's types
    from scratch, which the other parts get.
    """
    with _read_errors(src):
        next_row = 1
        # Splitting and counting (numpy) run a part ahead of two typed reads (polars) at a
        # time, in half chunks to hold no more memory than the batch reader. A part proven
        # with the types as they were when it was handed out is proven for the newer ones
        # too: merging is associative, and types that only grew still take it in unchanged.
        parts = prefetch(_with_members(_ndjson_parts(src, max(1, CHUNK_BYTES // 2))), ahead=1)
        snapshots = ((part, written, dict(known)) for part, written in parts)
        for part, kept in ordered_map(_proven, snapshots, workers=2, spare=0):
            first, next_row = next_row, next_row + part.count
            if kept:
                yield None, part.count, part.consumed
                continue
            frame, bad = _part_frame(src, part, first, None)
            records = frame.drop(ROW)
            types = dict(records.schema)
            if members_read(records) is None:
                # polars types a list mixing objects or arrays with other items as a list of
                # their texts; by the file's rule the whole key is text (jsontypes.merge).
                types = record_schema(_objects(part))
            yield types, frame.height + len(bad), part.consumed


def _objects(part: _Block | _Lines) -> Iterator[dict[str, Any]]:
    lines = part.data.split(b"\n") if isinstance(part, _Block) else part.lines
    for line in lines:
        value = json_object(line) if line.strip() else None
        if isinstance(value, dict):
            yield value


def _proven(
    item: tuple[_Block | _Lines, Written | None, dict[str, pl.DataType]],
) -> tuple[_Block | _Lines, bool]:
    part, written, schema = item
    return part, isinstance(part, _Block) and _keeps_types(part, written, schema)


def _with_members(
    parts: Iterator[_Block | _Lines],
) -> Iterator[tuple[_Block | _Lines, Written | None]]:
    for part in parts:
        yield part, members_written(part.data) if isinstance(part, _Block) else None


def _keeps_types(block: _Block, written: Written | None, schema: dict[str, pl.DataType]) -> bool:
    """Does ``block`` (``written``: its members) read with ``schema`` losing nothing, so that
    its own types merge into ``schema`` without changing it?"""
    if not schema or written is None or written.null_names is None:
        return False
    if not written.null_names <= schema.keys():
        return False  # a key only ever null is a column too, and polars drops it unseen
    try:
        frame = _read_ndjson(block.data, schema)
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException, ValueError):
        return False  # the exact path reads it again, and says why if it cannot
    read = members_read(frame)
    if frame.height != block.count or read is None or read.members != written.members:
        return False
    # Null members were found at the top level by counting braces: right if each "{" opens
    # an object the frame holds, or a line.
    return written.braces is None or written.braces == block.count + read.objects


def _part_frame(
    src: SourceFile,
    part: _Block | _Lines,
    first_row: int,
    schema: dict[str, pl.DataType] | None,
) -> tuple[pl.DataFrame, list[BadRecord]]:
    """The part's records as a frame with ``__row`` (flattened when read with ``schema``), and
    those that could not be read. A block polars refuses whole is read line by line."""
    rows = np.arange(first_row, first_row + part.count, dtype=np.int64)
    bad: list[BadRecord] = []
    frame: pl.DataFrame | None = None
    if isinstance(part, _Block):
        frame = _whole_block(part, schema)
        if frame is None:
            part = _split(part.data, part.consumed)
    if frame is None:
        assert isinstance(part, _Lines)
        bad = [BadRecord(int(rows[i]), raw, reason) for i, raw, reason in part.aside]
        if part.aside:
            rows = np.delete(rows, [i for i, _, _ in part.aside])
        frame, more_bad, rows = _parse_lines(part.lines, rows, schema)
        bad = sorted(bad + more_bad, key=lambda b: b.row)
    row = pl.Series(ROW, rows, dtype=pl.Int64)
    if schema is not None:
        frame = flatten(frame, src.name)
        if not frame.width:  # keys that only ever held {} flatten to nothing: rows remain
            return row.to_frame(), bad
    return frame.insert_column(0, row), bad


def _whole_block(block: _Block, schema: dict[str, pl.DataType] | None) -> pl.DataFrame | None:
    try:
        frame = _read_ndjson(block.data, schema)
    except (pl.exceptions.PolarsError, ValueError):
        return None
    return frame if frame.height == block.count else None


def _ndjson_parts(src: SourceFile, chunk_bytes: int | None = None) -> Iterator[_Block | _Lines]:
    """The file's records, a chunk at a time: as a block of whole lines where polars may read
    it as it is, else as lines. Memory stays within two chunks even when a line does not end
    (its first bytes are kept, the rest is skipped up to its newline)."""
    carry = b""
    skipping = False  # inside a line already reported as too long
    first = True
    size = chunk_bytes or CHUNK_BYTES
    with open_stream(src) as stream:
        while True:
            raw = stream.read(size)
            final = not raw
            data = raw
            if skipping:
                nl = data.find(b"\n")
                if nl < 0 and not final:
                    yield _Lines([], [], len(raw))
                    continue
                data, skipping = (data[nl + 1 :] if nl >= 0 else b""), False
            elif not final and len(carry) + len(data) > MAX_LINE_BYTES and b"\n" not in data:
                # The line under way is already too long: keep its start, skip the rest.
                keep = LONG_LINE_HEAD + 3  # room for a BOM, should the file start with it
                head = (carry[:keep] + data[:keep])[:keep]
                if first:
                    first, head = False, head.removeprefix(b"\xef\xbb\xbf")
                carry, skipping = b"", True
                chunk = _Lines([], [], len(raw))
                chunk.long_line(head)
                yield chunk
                continue
            if first and (len(carry) + len(data) >= 3 or final):
                first = False
                carry, data = b"", (carry + data).removeprefix(b"\xef\xbb\xbf")
            # The carry never holds a newline: the chunk's last one ends the block. One copy
            # of the chunk at most, none when it ends with a newline.
            cut = len(data) if final else data.rfind(b"\n") + 1
            if final:
                whole, carry = carry + data, b""
            elif not cut:
                whole, carry = b"", carry + data
            elif carry or cut < len(data):
                whole, carry = b"".join((carry, memoryview(data)[:cut])), data[cut:]
            else:
                whole, carry = data, b""
            count = whole_lines(whole, MAX_LINE_BYTES)
            part = _Block(whole, count, len(raw)) if count else _split(whole, len(raw))
            if len(carry) > MAX_LINE_BYTES:
                if isinstance(part, _Block):
                    yield part
                    part = _Lines([], [], 0)
                part.long_line(carry)
                carry, skipping = b"", True
            yield part
            if final:
                return


def _split(data: bytes, consumed: int) -> _Lines:
    """The non-blank lines of ``data``, those too long or too deep set aside."""
    chunk = _Lines([], [], consumed)
    for line in data.split(b"\n"):
        if len(line) > MAX_LINE_BYTES:
            chunk.long_line(line)
        elif line.strip():
            chunk.add(line)
    return chunk


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _read_ndjson(data: bytes, schema: dict[str, pl.DataType] | None) -> pl.DataFrame:
    if schema is None:
        return pl.read_ndjson(data, infer_schema_length=None)
    return pl.read_ndjson(data, schema=schema)


def _read_lines(lines: list[bytes], schema: dict[str, pl.DataType] | None) -> pl.DataFrame:
    frame = _read_ndjson(b"\n".join(lines), schema)
    if frame.height != len(lines):
        raise ValueError("row count mismatch")
    return frame


def _parse_lines(
    lines: list[bytes], rows: npt.NDArray[np.int64], schema: dict[str, pl.DataType] | None
) -> tuple[pl.DataFrame, list[BadRecord], npt.NDArray[np.int64]]:
    """(frame, unparsable lines, row numbers of the frame's rows)."""
    if not lines:
        return pl.DataFrame(schema=schema), [], rows
    try:
        return _read_lines(lines, schema), [], rows
    except (pl.exceptions.PolarsError, ValueError):
        pass
    # Rare path: a line that is not a JSON object; in preflight also a key whose values mix
    # objects, arrays and scalars (polars cannot type the chunk; the merge rule can).
    bad: list[BadRecord] = []
    good: list[bytes] = []
    keep: list[int] = []
    records: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        value = json_object(line)
        if isinstance(value, str):
            bad.append(BadRecord(int(rows[i]), _text(line), value))
        else:
            good.append(line)
            keep.append(i)
            records.append(value)
    if schema is None:
        schema = record_schema(records)
    try:
        return _read_lines(good, schema), bad, rows[keep]
    except (pl.exceptions.PolarsError, ValueError):
        pass
    # Rarer still: lines that do not fit the file's types (it changed since preflight?).
    frames: list[pl.DataFrame] = []
    fits: list[int] = []
    for i, line in zip(keep, good, strict=True):
        try:
            frames.append(_read_lines([line], schema))
            fits.append(i)
        except (pl.exceptions.PolarsError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            bad.append(
                BadRecord(int(rows[i]), _text(line), f"does not fit the file's types: {first}")
            )
    frame = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    return frame, sorted(bad, key=lambda b: b.row), rows[fits]
