"""Event ids seen so far in a run, for ``DUPLICATE_EVENT_ID``, in bounded memory.

A Python set of id strings costs ~100 bytes per row: 40 MB per million rows, growing with the
file. Instead each id is reduced to a 64-bit fingerprint (a polars hash of the id or, for a
derived id, :meth:`~.encode.Encoder.content_hash` of the event's core, equal exactly when the
ids are; it only needs to be stable within one run) kept in sorted numpy arrays merged like an
LSM tree. Past a bound (64 MB by default) the runs in memory are merged into a sorted file
(:mod:`.spill`), so memory stays the same from a million rows to a hundred million. In front
of all of them sits a Bloom filter sized for the run (at most 32 MiB), so almost every new id
is ruled out by one memory access and only the rare candidate searches the runs, one page of
each spilled run.
Two different ids share a fingerprint with probability about n^2 / 2^65 (under 1e-4 for 50
million rows).
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Iterator, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from .spill import DiskRun, SpillFolder, array_chunks, merge_chunks

#: Fingerprints kept in memory (8 bytes each) before the runs spill to disk.
DEFAULT_MEMORY_BYTES = 64 << 20

_FANOUT = 4
# The filter: 64-bit words picked by a fingerprint's top bits, three bits set in each from
# its low 18 bits. The ids of a batch are sorted, so their words are read in address order
# (the hardware prefetcher follows) and one access answers all three bits. 16 to 32 bits an
# id (sizes are powers of two): under 0.75% false hits; at the 32 MiB cap, 1.2% at 20 million
# ids, 5.5% at 40 million (each false hit searches the runs: a page of each run on disk).
_BITS_PER_ID = 16
_FILTER_MIN_WORDS = 1 << 18  # 2 MiB
_FILTER_MAX_WORDS = 1 << 22  # 32 MiB
_ONE, _TWELVE, _LOW6 = np.uint64(1), np.uint64(12), np.uint64(63)
_BIT = np.left_shift(_ONE, np.arange(64, dtype=np.uint64))
# The first two bits of every 12-bit value in one lookup: 32 KiB, held in the L1 cache, and
# one gather costs less than the shifts and masks it replaces.
_TWO_BITS = _BIT[np.arange(4096) & 63] | _BIT[np.arange(4096) >> 6]
_LOW12 = 4095
_TOP16 = np.uint64(48)


@dataclass(frozen=True, slots=True)
class SortedKeys:
    """A batch's fingerprints in sorted order, with repeats inside the batch marked."""

    fps: npt.NDArray[np.uint64]  # as the batch holds them
    ranked: npt.NDArray[np.uint64]  # sorted
    repeats: npt.NDArray[np.bool_]  # ranked[i] equals an earlier value of the batch

    def order(self) -> npt.NDArray[np.intp]:
        """``ranked[i] == fps[order[i]]``; among equal values the first occurrence first.
        Needed only to place duplicates, which are rare: sorting values alone is faster."""
        by_top = _by_top_bits(self.fps)
        # Equal values share their top bits, so both steps keep them in batch order.
        return by_top[np.argsort(self.fps[by_top], kind="stable")]


def sort_keys(fps: npt.NDArray[np.uint64]) -> SortedKeys:
    """Sort once, in sorted order binary searches stay in cache."""
    ranked = fps[_by_top_bits(fps)]
    ranked.sort(kind="stable")  # only neighbours are out of order: a linear pass or two
    repeats = np.zeros(len(fps), dtype=np.bool_)
    repeats[1:] = ranked[1:] == ranked[:-1]
    return SortedKeys(fps, ranked, repeats)


def _by_top_bits(fps: npt.NDArray[np.uint64]) -> npt.NDArray[np.intp]:
    """A stable order of ``fps`` by their top 16 bits: numpy sorts 16-bit keys by radix, in
    linear time. Fingerprints are hashes, spread evenly, so this leaves a batch all but
    sorted (about one value a key at 65,536 values) and a merge sort finishes it in a pass;
    a comparison sort of 64-bit values costs several times as much."""
    return np.argsort((fps >> _TOP16).astype(np.uint16), kind="stable")


def _bits(ranked: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Each fingerprint's three filter bits, from its low 18 bits, as one word."""
    mask: npt.NDArray[np.uint64] = _TWO_BITS.take(ranked.view(np.int64) & _LOW12)
    third = ranked >> _TWELVE
    third &= _LOW6
    np.left_shift(_ONE, third, out=third)
    mask |= third
    return mask


class SeenIds:
    """Sorted runs of fingerprints; ``check_and_add`` keeps the first occurrence of each.

    ``memory_bytes`` bounds the fingerprints held in memory, merge copies included; older
    runs spill into a private folder inside ``spill_dir`` (default: the system's temporary
    folder), removed by :meth:`close` (use it as a context manager). ``expected`` (the rows
    the run will read) sizes the filter; ``filter_bytes`` sets it outright.
    """

    def __init__(
        self,
        spill_dir: Path | None = None,
        *,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
        expected: int = 0,
        filter_bytes: int | None = None,
    ) -> None:
        self._limit = max(1, memory_bytes // 8)
        # The runs in memory lie side by side from the start of one block the size of the
        # bound, oldest first (views of it); a merge writes its copy just past them and
        # copies it back. So a page is faulted in once between spills, where a new array
        # for each merged run faulted in all of its pages again. Made on first use and
        # again after a spill.
        self._store: npt.NDArray[np.uint64] | None = None
        self._runs: list[npt.NDArray[np.uint64]] = []
        self._held = 0  # fingerprints in self._runs: the store's first self._held values
        self._peak = 0
        self._disk: list[DiskRun] = []
        self._written = 0
        self._folder = SpillFolder(spill_dir)
        # Spills read and write a chunk at a time: a small fraction of the bound.
        self._chunk = min(1 << 18, max(1024, self._limit // 16))
        if filter_bytes is not None:
            words = 1 << ((max(filter_bytes, 16) // 8).bit_length() - 1)
        else:
            want = -(-expected * _BITS_PER_ID // 64)
            words = min(_FILTER_MAX_WORDS, max(_FILTER_MIN_WORDS, 1 << (want - 1).bit_length()))
        self._shift = np.uint64(64 - (words.bit_length() - 1))
        self._filter = np.zeros(words, dtype=np.uint64)
        self._lock = threading.Lock()  # close() may come from another thread mid-batch
        self._closed = False

    def __len__(self) -> int:
        return self._held + sum(len(r) for r in self._disk)

    @property
    def in_memory(self) -> int:
        """Fingerprints held in memory now."""
        return self._held

    @property
    def peak_in_memory(self) -> int:
        """The most fingerprints ever held in memory at once, merge copies included."""
        return self._peak

    @property
    def spill_folder(self) -> Path | None:
        """The folder of the spilled runs, once there is one."""
        return self._folder.path

    @property
    def disk_runs(self) -> int:
        """Runs on disk now."""
        return len(self._disk)

    @property
    def runs_written(self) -> int:
        """Run files written so far, by spills and by merges on disk (kept after close)."""
        return self._written

    def close(self) -> None:
        """Remove the spilled runs and their folder (the check is over)."""
        with self._lock:
            self._closed = True
            for run in self._disk:
                run.close()
            self._disk.clear()
            self._runs.clear()
            self._store = None
            self._held = 0
            self._folder.close()

    def __enter__(self) -> SeenIds:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def check_and_add(self, fps: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        """True where a fingerprint was seen before (in earlier calls or earlier in ``fps``)."""
        return self.add_sorted(sort_keys(fps))

    def add_sorted(self, keys: SortedKeys) -> npt.NDArray[np.bool_]:
        """:meth:`check_and_add` for keys already sorted by :func:`sort_keys` (which needs
        no shared state, so callers can run it in parallel)."""
        ranked = keys.ranked
        if not len(ranked):
            return np.zeros(0, dtype=np.bool_)
        with self._lock:
            if self._closed:
                raise ValueError("the duplicate check is closed")
            seen = keys.repeats.copy()
            # Signed words index without a conversion; they are far below 2^63.
            word = (ranked >> self._shift).view(np.int64)
            mask = _bits(ranked)
            words = self._filter.take(word)
            maybe = np.flatnonzero((words & mask) == mask)
            if len(maybe):
                seen[maybe] |= self._search(ranked[maybe])
            # Every id's bits go in, the seen ones' too: theirs are set already (by an
            # earlier batch, or by the first occurrence in this one), so the filter is the
            # same and no id needs picking out.
            words |= mask
            self._filter[word] = words
            # Ids sharing a word (neighbours: the words are sorted) each wrote only their
            # own bits over the word as read; OR all of theirs in again.
            shared = np.flatnonzero(word[1:] == word[:-1])
            if len(shared):
                shared = np.concatenate((shared, shared + 1))
                np.bitwise_or.at(self._filter, word[shared], mask[shared])
            if not seen.all():
                self._push(ranked if not seen.any() else ranked[~seen])
        dup = np.zeros(len(ranked), dtype=np.bool_)
        if seen.any():
            dup[keys.order()] = seen
        return dup

    def _search(self, needles: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        """Which of the sorted ``needles`` (candidates the filter let through) are kept."""
        hits = np.zeros(len(needles), dtype=np.bool_)
        for run in self._runs:
            pos = np.searchsorted(run, needles)
            pos[pos == len(run)] = 0
            hits |= run[pos] == needles
        if self._disk and not hits.all():
            rest = np.flatnonzero(~hits)
            for disk in self._disk:
                hits[rest] |= disk.contains(needles[rest])
        return hits

    def _push(self, run: npt.NDArray[np.uint64]) -> None:
        if len(run) > self._limit:  # a batch larger than the whole bound goes straight out
            self._spill([run])
            return
        if self._held + len(run) > self._limit:
            self._spill_memory()
        if self._store is None:
            self._store = _alloc(self._limit)
        store, start = self._store, self._held
        self._held += len(run)
        store[start : self._held] = run
        self._runs.append(store[start : self._held])
        self._peak = max(self._peak, self._held)
        # Merge the newest _FANOUT runs once they are of a size (tiers of 4x): a few runs per
        # tier, O(log4 n) tiers, each id copied O(log4 n) times. Lookups only search the runs
        # for the ids the filter could not rule out, so a handful of runs costs little.
        runs = self._runs
        while _merge_due(runs):
            size = sum(len(r) for r in runs[-_FANOUT:])
            need = self._held + size
            if need > self._limit:  # the copy would pass the bound: spill instead
                self._spill_memory()
                return
            self._peak = max(self._peak, need)
            merged = store[self._held - size : self._held]
            merged[:] = _merge(runs[-_FANOUT:], store[self._held : need], self._chunk)
            del runs[-_FANOUT:]
            runs.append(merged)

    def _spill_memory(self) -> None:
        """Every run in memory, oldest to newest, merged into one run on disk."""
        if self._runs:
            self._spill(self._runs)
            self._runs = []
            self._held = 0
            self._store = None  # its pages go back to the system with the runs spilled

    def _spill(self, runs: list[npt.NDArray[np.uint64]]) -> None:
        size = self._chunk
        self._write([array_chunks(r, size) for r in runs])
        # The runs on disk are tiered like those in memory, merged a chunk at a time.
        disk = self._disk
        while _merge_due(disk):
            group = disk[-_FANOUT:]
            self._write([r.chunks(size) for r in group])
            del disk[-_FANOUT - 1 : -1]
            for r in group:
                r.close()

    def _write(self, sources: list[Iterator[npt.NDArray[np.uint64]]]) -> None:
        chunks = sources[0] if len(sources) == 1 else merge_chunks(sources, self._chunk)
        try:
            self._disk.append(DiskRun.write(self._folder.new_file(), chunks))
        except OSError as e:  # a full disk, say: the run cannot go on
            raise self._folder.error(e) from None
        self._written += 1


def _merge_due(runs: Sequence[Sized]) -> bool:
    return len(runs) >= _FANOUT and len(runs[-_FANOUT]) <= 2 * len(runs[-1])


def _merge(
    runs: list[npt.NDArray[np.uint64]], out: npt.NDArray[np.uint64], chunk: int
) -> npt.NDArray[np.uint64]:
    """Merge sorted runs into ``out`` a chunk at a time: scratch space of a chunk, where
    timsort over the runs where they lie would borrow half the result again from the C
    heap (see :func:`_alloc`: large blocks freed there may stay resident)."""
    at = 0
    for part in merge_chunks([array_chunks(r, chunk) for r in runs], chunk):
        out[at : at + len(part)] = part
        at += len(part)
    return out


def _alloc(n: int) -> npt.NDArray[np.uint64]:
    """The store of the runs in memory, in its own memory map when large: freeing it
    returns the memory to the system at once, and only the pages used are resident. From
    the C heap, large blocks freed among live ones stay in the resident size (measured:
    +50 MB over a 20-million-id run, with an array for each merged run)."""
    if n < _OWN_MAP or _ANONYMOUS is None:
        return np.empty(n, dtype=np.uint64)
    buf = mmap.mmap(-1, n * 8, flags=mmap.MAP_PRIVATE | _ANONYMOUS)
    if _HUGEPAGE is not None:  # as numpy does for its own large arrays: fewer page faults
        buf.madvise(_HUGEPAGE)
    return np.frombuffer(buf, dtype=np.uint64)


_OWN_MAP = 1 << 16  # values: 512 KiB
_ANONYMOUS: int | None = getattr(mmap, "MAP_ANONYMOUS", None)
_HUGEPAGE: int | None = getattr(mmap, "MADV_HUGEPAGE", None)
