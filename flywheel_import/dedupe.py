"""Event ids seen so far in a run, in 8 bytes per id, for ``DUPLICATE_EVENT_ID``.

A Python set of id strings costs ~100 bytes per row: 40 MB per million rows, growing with the
file. Instead each id is reduced to a 64-bit fingerprint (a polars hash of the id, or of the
event's content for derived ids: it only needs to be stable within one run) kept in a few
sorted numpy arrays merged like an LSM tree behind a 2 MiB bit filter, so most lookups are
one cached memory access and memory is 8 bytes per kept id.
Two different ids share a fingerprint with probability about n^2 / 2^65 (under 1e-4 for 50
million rows).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_FILTER_BITS = 24  # 2 MiB: stays in cache; ~11% false hits at 2M ids


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
        if not len(fps):
            return np.zeros(0, dtype=np.bool_)
        # Work in sorted order: binary searches with sorted needles stay in cache, and after a
        # stable sort a value equal to its predecessor is a repeat within the batch.
        order = np.argsort(fps)
        ranked = fps[order]
        seen = np.zeros(len(fps), dtype=np.bool_)
        seen[1:] = ranked[1:] == ranked[:-1]
        if seen.any():  # repeats within the batch: a stable order keeps the first one first
            order = np.argsort(fps, kind="stable")
            ranked = fps[order]
            seen[1:] = ranked[1:] == ranked[:-1]
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
        dup = np.empty(len(fps), dtype=np.bool_)
        dup[order] = seen
        return dup

    def _push(self, run: npt.NDArray[np.uint64]) -> None:
        self._runs.append(run)
        # Merge while the newest run has outgrown the one before it (a binary counter):
        # O(log n) runs, each id copied O(log n) times over a whole run.
        while len(self._runs) > 1 and len(self._runs[-1]) >= len(self._runs[-2]):
            b = self._runs.pop()
            a = self._runs.pop()
            self._runs.append(_merge(a, b))


def _merge(a: npt.NDArray[np.uint64], b: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Merge two sorted runs: numpy's stable sort of their concatenation finds the two runs
    and merges them in one pass (measured faster than a searchsorted merge)."""
    out = np.concatenate([a, b])
    out.sort(kind="stable")
    return out
