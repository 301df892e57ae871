"""Event ids seen so far in a run, in 8 bytes per id, for ``DUPLICATE_EVENT_ID``.

A Python set of id strings costs ~100 bytes per row: 40 MB per million rows, growing with the
file. Instead each id is reduced to a 64-bit fingerprint (a polars hash of the id or, for a
derived id, :meth:`~.encode.Encoder.content_hash` of the event's core, equal exactly when the
ids are; it only needs to be stable within one run) kept in a few sorted numpy arrays merged
like an LSM tree behind a 2 MiB bit filter, so most lookups are one cached memory access and
memory is 8 bytes per kept id.
Two different ids share a fingerprint with probability about n^2 / 2^65 (under 1e-4 for 50
million rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_FANOUT = 4
_FILTER_BITS = 24  # 2 MiB: stays in cache; ~11% false hits at 2M ids


@dataclass(frozen=True, slots=True)
class SortedKeys:
    """A batch's fingerprints in sorted order, with repeats inside the batch marked."""

    ranked: npt.NDArray[np.uint64]
    order: npt.NDArray[np.intp]  # ranked[i] == fps[order[i]]
    repeats: npt.NDArray[np.bool_]  # ranked[i] equals an earlier value of the batch


def sort_keys(fps: npt.NDArray[np.uint64]) -> SortedKeys:
    """Sort once, in sorted order binary searches stay in cache; among equal values a stable
    order puts the first occurrence first, so only later ones are repeats."""
    order = np.argsort(fps)
    ranked = fps[order]
    repeats = np.zeros(len(fps), dtype=np.bool_)
    repeats[1:] = ranked[1:] == ranked[:-1]
    if repeats.any():
        order = np.argsort(fps, kind="stable")
        ranked = fps[order]
        repeats[1:] = ranked[1:] == ranked[:-1]
    return SortedKeys(ranked, order, repeats)


class SeenIds:
    """Sorted runs of fingerprints; ``check_and_add`` keeps the first occurrence of each."""

    def __init__(self) -> None:
        self._runs: list[npt.NDArray[np.uint64]] = []
        # A one-bit-per-bucket filter in front of the sorted runs: most new ids miss it, so
        # only the few that hit pay for binary searches through tens of MB.
        self._filter = np.zeros(1 << (_FILTER_BITS - 3), dtype=np.uint8)

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs)

    def check_and_add(self, fps: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        """True where a fingerprint was seen before (in earlier calls or earlier in ``fps``)."""
        return self.add_sorted(sort_keys(fps))

    def add_sorted(self, keys: SortedKeys) -> npt.NDArray[np.bool_]:
        """:meth:`check_and_add` for keys already sorted by :func:`sort_keys` (which needs
        no shared state, so callers can run it in parallel)."""
        ranked = keys.ranked
        if not len(ranked):
            return np.zeros(0, dtype=np.bool_)
        seen = keys.repeats.copy()
        bucket = ranked >> np.uint64(64 - _FILTER_BITS)
        byte, bit = bucket >> np.uint64(3), (bucket & np.uint64(7)).astype(np.uint8)
        maybe = np.flatnonzero((self._filter[byte] >> bit) & 1)
        if len(maybe):
            hits = np.zeros(len(maybe), dtype=np.bool_)
            needles = ranked[maybe]
            for run in self._runs:
                pos = np.searchsorted(run, needles)
                pos[pos == len(run)] = 0
                hits |= run[pos] == needles
            seen[maybe] |= hits
        fresh = ~seen
        if fresh.any():
            # Sorted values give sorted byte indices: OR the bits of each byte in one pass.
            fb = byte[fresh]
            bits = np.left_shift(np.uint8(1), bit[fresh])
            starts = np.flatnonzero(np.concatenate(([True], fb[1:] != fb[:-1])))
            self._filter[fb[starts]] |= np.bitwise_or.reduceat(bits, starts)
            self._push(ranked[fresh])
        dup = np.empty(len(ranked), dtype=np.bool_)
        dup[keys.order] = seen
        return dup

    def _push(self, run: npt.NDArray[np.uint64]) -> None:
        self._runs.append(run)
        # Merge the newest _FANOUT runs once they are of a size (tiers of 4x): a few runs per
        # tier, O(log4 n) tiers, each id copied O(log4 n) times. Lookups only search the runs
        # for the ids the filter could not rule out, so a handful of runs costs little.
        runs = self._runs
        while len(runs) >= _FANOUT and len(runs[-_FANOUT]) <= 2 * len(runs[-1]):
            merged = _merge(runs[-_FANOUT:])
            del runs[-_FANOUT:]
            runs.append(merged)


def _merge(runs: list[npt.NDArray[np.uint64]]) -> npt.NDArray[np.uint64]:
    """Merge sorted runs: numpy's stable sort (timsort) of their concatenation finds the runs
    and merges them (measured faster than a searchsorted merge)."""
    out = np.concatenate(runs)
    out.sort(kind="stable")
    return out
