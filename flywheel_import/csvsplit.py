"""Split CSV bytes into records, vectorized, and set aside the ones that cannot be parsed.

polars parses well-formed CSV very fast, but one ragged or badly quoted line makes it fail the
whole read (or silently pad/truncate). So records are found first with numpy: a newline ends a
record when an even number of quote characters precedes it (``""`` escapes keep the parity).
Records with the wrong number of fields outside quotes, unterminated quotes or invalid UTF-8
are handed back as raw text with their record number; only clean records reach polars. This
module is pure: bytes in, records out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

#: A record may legitimately span lines (a quoted note); an unterminated quote would otherwise
#: swallow the rest of the file. Past this many bytes the record's first line is declared bad.
MAX_RECORD_BYTES = 4 << 20
#: Up to this many hits a block is searched with ``bytes.find``, past it once by numpy.
FEW_HITS = 2048


@dataclass(slots=True)
class BadRecord:
    row: int
    raw: str
    reason: str


@dataclass(slots=True)
class Block:
    """Complete records from one feed: clean CSV bytes for polars, their numbers, the rejects."""

    data: bytes
    rows: npt.NDArray[np.int64]
    bad: list[BadRecord] = field(default_factory=list)
    header: list[bytes] | None = None
    ncols: int | None = None  # known once the first record (or the header) has been seen


class RecordSplitter:
    """Stateful splitter fed with successive chunks of UTF-8 bytes.

    Record numbers are 1-based, count data records only (the header is not one) and skip blank
    lines, so they match what a person counts in a spreadsheet view of the file.
    """

    def __init__(
        self,
        *,
        delimiter: str = ",",
        quote: str | None = '"',
        header: bool = True,
        ncols: int | None = None,
        validate_utf8: bool = True,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self._delim = ord(delimiter)
        self._quote = ord(quote) if quote else None
        self._want_header = header
        self.ncols = ncols
        self._validate_utf8 = validate_utf8
        self._max = max_record_bytes
        self._carry = b""
        self._next_row = 1
        self._first = True
        self.header: list[bytes] | None = None

    def feed(self, chunk: bytes, *, final: bool = False) -> Block:
        buf = self._carry + chunk if self._carry else chunk
        self._carry = b""
        if self._first and buf:
            if len(buf) < 3 and not final:
                self._carry = buf
                return Block(b"", np.empty(0, dtype=np.int64), [], self.header, self.ncols)
            self._first = False
            if buf.startswith(b"\xef\xbb\xbf"):
                buf = buf[3:]
        rows: list[npt.NDArray[np.int64]] = []
        pieces: list[bytes] = []
        bad: list[BadRecord] = []
        while True:
            data, nums, more_bad, rest, resync = self._split(buf, final)
            if data:
                pieces.append(data)
                rows.append(nums)
            bad.extend(more_bad)
            if not resync:
                self._carry = rest
                break
            # An unterminated quote: its first line is bad, parsing restarts on the next line.
            nl = rest.find(b"\n")
            line, buf = (rest, b"") if nl < 0 else (rest[: nl + 1], rest[nl + 1 :])
            bad.append(
                BadRecord(
                    self._take_row(), _text(line.rstrip(b"\r\n")), "unterminated quoted field"
                )
            )
            if not buf:
                break
        out_rows = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
        return Block(b"".join(pieces), out_rows, bad, self.header, self.ncols)

    def _take_row(self) -> int:
        n = self._next_row
        self._next_row += 1
        return n

    def _split(
        self, buf: bytes, final: bool
    ) -> tuple[bytes, npt.NDArray[np.int64], list[BadRecord], bytes, bool]:
        """Return (clean bytes, their row numbers, bad records, leftover, needs-resync)."""
        empty = np.empty(0, dtype=np.int64)
        if not buf:
            return b"", empty, [], b"", False
        arr = np.frombuffer(buf, dtype=np.uint8)
        nl = np.flatnonzero(arr == 10)
        quotes = None
        if self._quote is not None and buf.find(self._quote) >= 0:
            quotes = np.flatnonzero(arr == self._quote)
        ends = nl if quotes is None else nl[(np.searchsorted(quotes, nl) & 1) == 0]
        tail_start = int(ends[-1]) + 1 if len(ends) else 0
        tail = buf[tail_start:]
        if tail and final:
            tail_odd = (
                quotes is not None
                and ((len(quotes) - np.searchsorted(quotes, tail_start)) & 1) == 1
            )
            if tail_odd and tail_start == 0:
                return b"", empty, [], buf, True
            if not tail_odd:
                ends = np.append(ends, len(buf))
                tail = b""
        elif tail and not final and tail_start == 0 and len(buf) > self._max:
            return b"", empty, [], buf, True
        if not len(ends):
            return b"", empty, [], tail, bool(tail) and final

        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        # Strip the record terminator (\n, and \r before it) to measure the content.
        stop = ends.copy()
        has_cr = (stop > starts) & (arr[np.maximum(stop - 1, 0)] == 13)
        stop = stop - has_cr
        blank = stop == starts

        if self.header is None and self._want_header:
            first = int(np.flatnonzero(~blank)[0]) if (~blank).any() else None
            if first is None:
                return b"", empty, [], tail, bool(tail) and final
            self.header = _split_fields(buf[starts[first] : stop[first]], self._delim, self._quote)
            self.ncols = len(self.header)
            blank = blank.copy()
            blank[: first + 1] = True  # header and any blank lines before it are not data
        delims = np.flatnonzero(arr[: int(ends[-1])] == self._delim)
        if quotes is not None and len(delims):
            delims = delims[(np.searchsorted(quotes, delims) & 1) == 0]
        before_end = np.searchsorted(delims, ends)
        nfields = np.diff(before_end, prepend=0) + 1
        if self.ncols is None:
            self.ncols = int(nfields[~blank][0]) if (~blank).any() else None
        wrong = (~blank) & (nfields != (self.ncols or 0))

        keep = ~blank & ~wrong
        n_data = int((~blank).sum())
        numbers = np.full(len(ends), -1, dtype=np.int64)
        numbers[~blank] = np.arange(self._next_row, self._next_row + n_data, dtype=np.int64)
        self._next_row += n_data

        bad = [
            BadRecord(
                int(numbers[i]),
                _text(buf[starts[i] : stop[i]]),
                f"expected {self.ncols} fields, found {int(nfields[i])}",
            )
            for i in np.flatnonzero(wrong)
        ]
        end_of_records = int(ends[-1]) + 1 if int(ends[-1]) < len(buf) else len(buf)
        dropped = np.flatnonzero(~keep)
        if not len(dropped):
            data = buf[:end_of_records]
        elif int(dropped[-1]) == len(dropped) - 1:  # only a prefix (the header) is dropped
            data = buf[
                int(starts[len(dropped)]) if len(dropped) < len(ends) else len(buf) : end_of_records
            ]
        else:
            idx = np.flatnonzero(keep)
            data = b"".join(buf[starts[i] : ends[i]] + b"\n" for i in idx) if len(idx) else b""
        kept_numbers = numbers[keep]
        if data and not data.endswith(b"\n"):
            data += b"\n"
        if self._validate_utf8 and data:
            data, kept_numbers, enc_bad = _drop_invalid_utf8(data, kept_numbers, self._quote)
            bad.extend(enc_bad)
        return data, kept_numbers, bad, tail, final and bool(tail)


def _drop_invalid_utf8(
    data: bytes, rows: npt.NDArray[np.int64], quote: int | None
) -> tuple[bytes, npt.NDArray[np.int64], list[BadRecord]]:
    try:
        data.decode("utf-8")
        return data, rows, []
    except UnicodeDecodeError:
        pass
    # Rare path: re-split the clean block and test each record on its own.
    arr = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(arr == 10)
    if quote is not None:
        q = np.flatnonzero(arr == quote)
        nl = nl[(np.searchsorted(q, nl) & 1) == 0]
    good: list[bytes] = []
    good_rows: list[int] = []
    bad: list[BadRecord] = []
    start = 0
    for i, end in enumerate(nl.tolist()):
        rec = data[start : end + 1]
        start = end + 1
        try:
            rec.decode("utf-8")
            good.append(rec)
            good_rows.append(int(rows[i]))
        except UnicodeDecodeError as e:
            bad.append(
                BadRecord(
                    int(rows[i]),
                    _text(rec.rstrip(b"\r\n")),
                    f"invalid UTF-8 at byte {e.start} (set source.csv.encoding?)",
                )
            )
    return b"".join(good), np.asarray(good_rows, dtype=np.int64), bad


def _split_fields(record: bytes, delim: int, quote: int | None) -> list[bytes]:
    """Fields of one record (the header), unquoting ``"a,b"`` and ``""`` escapes."""
    fields: list[bytes] = []
    cur = bytearray()
    in_q = False
    i = 0
    while i < len(record):
        c = record[i]
        if quote is not None and c == quote:
            if in_q and i + 1 < len(record) and record[i + 1] == quote:
                cur.append(quote)
                i += 1
            else:
                in_q = not in_q
        elif c == delim and not in_q:
            fields.append(bytes(cur))
            cur = bytearray()
        else:
            cur.append(c)
        i += 1
    fields.append(bytes(cur))
    return fields


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def positions(block: bytes, byte: int, limit: int) -> npt.NDArray[np.intp] | None:
    """Offsets of ``byte`` in ``block[:limit]``, None if there is none.

    ``find`` runs at memory speed, and most files quote a few fields if any; a block with
    many hits (every field quoted) is searched once by numpy instead. (``bytes.count`` is
    several times slower than either.)
    """
    needle = bytes([byte])
    i = block.find(needle, 0, limit)
    if i < 0:
        return None
    found: list[int] = []
    while i >= 0 and len(found) < FEW_HITS:
        found.append(i)
        i = block.find(needle, i + 1, limit)
    if i < 0:
        return np.array(found, dtype=np.intp)
    return np.flatnonzero(np.frombuffer(block, np.uint8, count=limit) == byte)


def whole_records(chunks: Iterable[bytes], quote: str | None) -> Iterator[bytes]:
    """``chunks`` re-cut into pieces of whole records, each ending at a newline outside
    quotes (after an even number of quote characters since the piece began); what follows
    the last one is the last piece.

    Only for text known to be regular (no quote inside an unquoted field): the cut then
    falls where any CSV reader ends a record, so each piece parses on its own.
    """
    carry = b""
    for chunk in chunks:
        buf = carry + chunk if carry else chunk
        cut = _last_record_end(buf, ord(quote) if quote else None)
        if cut < 0:
            carry = buf
            continue
        yield buf[: cut + 1]
        carry = buf[cut + 1 :]
    if carry:
        yield carry


def _last_record_end(buf: bytes, quote: int | None) -> int:
    cut = buf.rfind(b"\n")
    if cut < 0 or quote is None:
        return cut
    at = positions(buf, quote, cut)
    if at is None:
        return cut
    while cut >= 0:
        before = int(np.searchsorted(at, cut))
        if before % 2 == 0:
            return cut
        # Inside a quoted field: the record began before the quote that opened it.
        cut = buf.rfind(b"\n", 0, int(at[before - 1]))
    return cut
