"""Derived event ids: a stable 128-bit hash of the event's JSON, written as a UUID.

When no ``event_id`` column is mapped, each event gets ``UUIDv8(FWH128(core))`` where ``core``
is the event object's JSON without the id (see :mod:`.encode`). The same row therefore carries
the same id on every retry and every re-run, so the API can drop what it has already stored.

FWH128 is defined here, once and for all (changing it would re-send every event of every
scheduled load): two 64-bit multiply-xorshift lanes over the UTF-8 bytes read as little-endian
64-bit words (the last one zero-padded), finished with the length and MurmurHash3's fmix64.
It is computed with numpy over whole batches (a per-row SHA-1 in Python costs ~1 µs a row,
more than reading the file); it is not a cryptographic hash, which ids that only need to be
unique across honest data do not require. ``tests/test_eventid.py`` pins known values.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl

U64 = npt.NDArray[np.uint64]

_C1, _C2 = np.uint64(0x87C37B91114253D5), np.uint64(0x4CF5AD432745937F)
_C3, _C4 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)
_N1, _N2 = np.uint64(0x52DCE729), np.uint64(0x38495AB5)
_SEED1, _SEED2 = np.uint64(0x666C7977_68656C31), np.uint64(0x666C7977_68656C32)
_R1, _R2 = np.uint64(31), np.uint64(29)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _fmix(h: U64) -> U64:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def fwh128(texts: pl.Series) -> tuple[U64, U64]:
    """The two 64-bit lanes of FWH128 for each (non-null) string of ``texts``."""
    import pyarrow as pa  # imported on first use: a dry run never needs it

    n = texts.len()
    arr = texts.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = arr.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
    # 8 spare zero bytes so that every 8-byte read from an in-string offset stays in bounds.
    padded = np.zeros(len(raw) + 8, dtype=np.uint8)
    padded[: len(raw)] = raw
    # A little-endian uint64 view starting at *every* byte: word j of a row is one lookup.
    at = np.ndarray(shape=(max(len(padded) - 7, 0),), dtype="<u8", buffer=padded.data, strides=(1,))
    starts = offsets[:-1]
    lens = (offsets[1:] - starts).astype(np.int64)
    nwords = (lens + 7) // 8
    order = np.argsort(-nwords, kind="stable")
    s_starts, s_lens, s_words = starts[order], lens[order], nwords[order]
    h1 = np.full(n, _SEED1, dtype=np.uint64)
    h2 = np.full(n, _SEED2, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(int(s_words[0]) if n else 0):
            c = int(np.searchsorted(-s_words, -j, side="left"))  # rows with more than j words
            w = at[s_starts[:c] + 8 * j]
            rem = s_lens[:c] - 8 * j
            partial = rem < 8
            if partial.any():
                shift = (8 * np.clip(rem, 0, 8)).astype(np.uint64)
                mask = np.where(
                    partial, (np.uint64(1) << (shift & np.uint64(63))) - np.uint64(1), ~np.uint64(0)
                )
                w = w & mask
            for h, c1, c2, r in ((h1, _C1, _C2, _R1), (h2, _C3, _C4, _R2)):
                hc = h[:c]
                hc ^= w * c1
                hc ^= hc >> r
                hc *= c2
        ln = s_lens.astype(np.uint64)
        h1 ^= ln
        h2 ^= ln
        h1 += h2
        h2 += h1
        h1 = _fmix(h1)
        h2 = _fmix(h2)
        a, b = h1 + h2, h2 + h1 + h2
    out1 = np.empty(n, dtype=np.uint64)
    out2 = np.empty(n, dtype=np.uint64)
    out1[order], out2[order] = a, b
    return out1, out2


def as_uuid(h1: U64, h2: U64) -> pl.Series:
    """Format lanes as RFC 9562 UUIDv8 strings (version and variant bits set)."""
    n = len(h1)
    raw = np.empty((n, 16), dtype=np.uint8)
    raw[:, :8] = h1.astype(">u8").view(np.uint8).reshape(n, 8)
    raw[:, 8:] = h2.astype(">u8").view(np.uint8).reshape(n, 8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x80  # version 8: custom hash
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122/9562 variant
    hexed = np.empty((n, 32), dtype=np.uint8)
    hexed[:, 0::2] = _HEX[raw >> 4]
    hexed[:, 1::2] = _HEX[raw & 15]
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    text[:, 0:8] = hexed[:, 0:8]
    text[:, 9:13] = hexed[:, 8:12]
    text[:, 14:18] = hexed[:, 12:16]
    text[:, 19:23] = hexed[:, 16:20]
    text[:, 24:36] = hexed[:, 20:32]
    import pyarrow as pa

    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int64)
    arr = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text.tobytes()))
    out = pl.from_arrow(arr)
    assert isinstance(out, pl.Series)
    return out


def derive_event_ids(cores: pl.Series) -> pl.Series:
    """Event ids for the given core JSON texts (no nulls)."""
    if cores.len() == 0:
        return pl.Series(cores.name, [], dtype=pl.String)
    return as_uuid(*fwh128(cores)).alias(cores.name)
