"""Does polars read a plain CSV file record for record as the record splitter does?

polars' own reader is several times faster than :mod:`.csvsplit` with a polars parse per block,
but some irregular text it reads differently: a quote inside an unquoted field (``x"y``) is
text to polars and opens a quoted field for the splitter; a record with too few fields, or a
blank line, is a row padded with nulls for polars, and a rejected record or a skipped line for
the splitter; a record with too many fields, or invalid UTF-8, is refused by polars only where
it parses every column. Where none of those occurs, polars' row index is the record number and
its values are the splitter's. This module decides that from what polars' scan counted and one
pass over the file's bytes.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from . import csvsplit
from .inputs import SourceFile

#: Bytes read at a time (a memory map of the whole file would count every page of it in the
#: process's memory).
CHUNK = 8 << 20


def same_records(
    src: SourceFile,
    delimiter: str,
    quote: str | None,
    *,
    header: bool,
    ncols: int,
    rows: int,
    gaps: int,
    parsed_all: bool,
) -> bool:
    """Is every record of the file whole and read alike by polars and the splitter?

    ``rows``: the rows polars' scan read; ``gaps``: its null cells in the last column, where
    records with too few fields and blank lines leave theirs, as empty last cells do;
    ``parsed_all``: the scan parsed every column, so polars refused any record with more
    fields, and invalid UTF-8. The quotes must sit at field edges (see :func:`text_shape`),
    and the delimiters outside quotes add up to ``(ncols - 1) * rows``. Without gaps, no
    record has fewer, so none has more; with gaps, a full parse shows none has more, so none
    has fewer. A one-column file has no delimiter to count: its empty cells are blank lines,
    which the splitter skips.
    """
    if gaps and (ncols < 2 or not parsed_all):
        return False
    shape = text_shape(src, delimiter, quote, header=header, utf8=not parsed_all)
    return shape is not None and shape.delimiters == (ncols - 1) * rows


@dataclass(frozen=True, slots=True)
class TextShape:
    """What one pass over a file's bytes found."""

    #: Delimiters outside quoted fields after the header line.
    delimiters: int = 0


def text_shape(
    src: SourceFile, delimiter: str, quote: str | None, *, header: bool, utf8: bool = False
) -> TextShape | None:
    """None if a quote character of the data does not open a field, close one, or escape
    another (or, with ``utf8``, the file is not valid UTF-8); else the delimiters outside
    quotes.

    The splitter takes any quote as opening or closing (a newline after an odd number of
    them is inside a field); polars reads a quote inside an unquoted field as text. Where
    every quote sits at a field's edge, both read the same records. The header line only
    needs an even count: its names are the splitter's own, and a header read as a different
    number of columns is declined by polars' scan. A chunk without a quote costs one
    ``bytes.find`` and one count of its delimiters (see :func:`.csvsplit.positions`).
    """
    if src.path is None:
        return None
    qb = quote.encode() if quote else b""
    q, sep = (ord(quote) if quote else -1), ord(delimiter)
    check = _Utf8() if utf8 else None
    with open(src.path, "rb") as f:
        buf = f.read(CHUNK)
        if check is not None and not check.valid(buf):
            return None
        all_read = len(buf) < CHUNK
        buf = buf.removeprefix(b"\xef\xbb\xbf")  # both readers drop it
        if header:
            # Both readers skip blank lines before the header; a line of a lone CR is not
            # blank to the splitter, and may be to polars.
            while buf.startswith((b"\n", b"\r\n")):
                buf = buf[buf.index(b"\n") + 1 :]
            if buf.startswith(b"\r"):
                return None
            first_nl = buf.find(b"\n")
            if first_nl < 0:
                whole = all_read and not (qb and buf.count(qb) % 2)
                return TextShape() if whole and (check is None or check.valid(b"")) else None
            if qb and buf[:first_nl].count(qb) % 2:
                return None
            buf = buf[first_nl + 1 :]
        seen, prev, delimiters = 0, 10, 0  # quotes so far; the byte before ``buf``
        while True:
            more = f.read(CHUNK)
            final = not more
            if check is not None and not check.valid(more):
                return None
            block = buf + more if buf else more
            # The last two bytes wait for the next chunk: a closing quote looks past itself.
            limit = len(block) if final else len(block) - 2
            if limit > 0:
                at = csvsplit.positions(block, q, limit) if qb else None
                if at is not None and not _edges(block, at, seen, prev, sep, q, final=final):
                    return None
                if not _records_end_often(block, limit, at, seen):
                    return None
                delimiters += _outside_quotes(block, limit, at, seen, sep)
                seen += 0 if at is None else len(at)
                prev = block[limit - 1]
            buf = block[max(limit, 0) :]
            if final:
                return TextShape(delimiters) if seen % 2 == 0 else None


class _Utf8:
    """Validity of a byte stream fed in pieces (a character may straddle two)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def valid(self, piece: bytes) -> bool:
        """Is the stream valid so far (the whole of it, given an empty last piece)?"""
        # A piece after one that ended inside a character starts with a byte of it, so an
        # ASCII piece has nothing pending before it.
        if piece and piece.isascii():
            return True
        try:
            self._decoder.decode(piece, final=not piece)
        except UnicodeDecodeError:
            return False
        return True


def _edges(
    block: bytes,
    at: npt.NDArray[np.intp],
    seen: int,
    prev: int,
    sep: int,
    q: int,
    *,
    final: bool,
) -> bool:
    """Are the quotes at positions ``at`` of ``block`` at field edges, given ``seen`` quotes
    before ``block`` and the byte ``prev`` before it?"""
    data = np.frombuffer(block, np.uint8)
    n = len(data)
    opening = (seen + np.arange(len(at))) % 2 == 0
    # Before an opening quote: a delimiter, a newline, or the quote just before it (an
    # escape inside a quoted field).
    before = np.where(at > 0, data[np.maximum(at - 1, 0)], prev)
    ok_open = (before == sep) | (before == 10) | (before == q)
    # After a closing quote: the end, a delimiter, a newline (or CR LF), or the quote just
    # after it (an escape).
    after = np.where(at + 1 < n, data[np.minimum(at + 1, n - 1)], 10 if final else 0)
    after2 = np.where(at + 2 < n, data[np.minimum(at + 2, n - 1)], 10 if final else 0)
    ok_close = (after == sep) | (after == 10) | ((after == 13) & (after2 == 10)) | (after == q)
    return bool(np.where(opening, ok_open, ok_close).all())


#: Every full window of this many bytes must hold a record's end: records are then shorter
#: than three windows (a window with none, or the partial ones at a chunk's edges), so none
#: reaches the splitter's limit, past which it rejects a record polars would read whole.
RECORD_WINDOW = csvsplit.MAX_RECORD_BYTES // 4


def _records_end_often(
    block: bytes, limit: int, at: npt.NDArray[np.intp] | None, seen: int
) -> bool:
    """Does each full :data:`RECORD_WINDOW` of ``block[:limit]`` hold a newline outside
    quotes (after an even number of quotes, ``seen`` of them before ``block``)? One ``find``
    per window, plus one per quoted newline met on the way."""
    for start in range(0, limit - RECORD_WINDOW + 1, RECORD_WINDOW):
        stop = start + RECORD_WINDOW
        nl = block.find(b"\n", start, stop)
        while nl >= 0 and at is not None and (seen + int(np.searchsorted(at, nl))) % 2:
            nl = block.find(b"\n", nl + 1, stop)
        if nl < 0:
            return False
    return True


def _outside_quotes(
    block: bytes, limit: int, at: npt.NDArray[np.intp] | None, seen: int, sep: int
) -> int:
    """Delimiters of ``block[:limit]`` outside quoted fields (after an even number of quotes,
    as the splitter counts fields), given ``seen`` quotes before it and its quotes ``at``.

    All are counted, then those between an opening quote and the next quote taken away: one
    ``bytes.count`` per quoted field while they are few.
    """
    total = int(np.count_nonzero(np.frombuffer(block, np.uint8, count=limit) == sep))
    if at is None:
        return total if seen % 2 == 0 else 0
    if len(at) > csvsplit.FEW_HITS:
        delims = np.flatnonzero(np.frombuffer(block, np.uint8, count=limit) == sep)
        inside = (seen + np.searchsorted(at, delims)) & 1
        return total - int(np.count_nonzero(inside))
    edges: list[int] = ([-1] if seen % 2 else []) + at.tolist()
    if len(edges) % 2:
        edges.append(limit)  # a field still open at the end of the block
    byte = bytes([sep])
    pairs = zip(edges[::2], edges[1::2], strict=True)
    return total - sum(block.count(byte, o + 1, c) for o, c in pairs)
