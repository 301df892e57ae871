"""Sorted runs of 64-bit fingerprints on disk, so the duplicate check's memory stays bounded.

A run is a file of sorted, distinct uint64 values in native byte order (written by
``tofile``; it lives only as long as the process that wrote it), padded to whole 4 KiB pages
by repeating its last value. In memory a run keeps a fence, the first value of each page
(1/512 of its size), so looking up a value copies exactly one page out of a read-only memory
map. Mapped pages count in the process's resident memory, and the kernel maps a whole
neighbourhood of pages on each fault, so the map is released (``MADV_DONTNEED``: the pages
stay in the page cache) every few dozen pages: a few MiB at most, whatever the file's size.
(Measured: ~3 us a lookup this way, ~5 us with a ``pread`` system call a page.)
Runs are written and merged in bounded chunks: no step holds more than a few MiB.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .errors import UsageError

PAGE = 512  # values per page read by a lookup: 4 KiB
_PAGE_BYTES = PAGE * 8

U64 = npt.NDArray[np.uint64]


class SpillFolder:
    """A private folder for run files: made on first use (``tempfile.mkdtemp``, mode 0700,
    inside ``parent`` or the system's temporary folder), removed with its files by
    :meth:`close`, or when the object is collected or the interpreter exits, should a
    failure skip the close."""

    def __init__(self, parent: Path | None = None) -> None:
        self._parent = parent
        self._path: Path | None = None
        self._cleanup: weakref.finalize[[str], SpillFolder] | None = None
        self._names = itertools.count(1)

    @property
    def path(self) -> Path | None:
        """The folder, once a run has been written (None before, and after :meth:`close`)."""
        return self._path

    def new_file(self) -> Path:
        if self._path is None:
            parent = self._parent
            try:
                if parent is not None:
                    parent.mkdir(parents=True, exist_ok=True)
                made = tempfile.mkdtemp(
                    prefix="flywheel-import-seen-", dir=None if parent is None else str(parent)
                )
            except OSError as e:
                raise self.error(e, parent or Path(tempfile.gettempdir())) from None
            self._path = Path(made)
            self._cleanup = weakref.finalize(self, _remove_tree, made)
        return self._path / f"run-{next(self._names):06d}.u64"

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup()
        self._path = None

    def error(self, e: OSError, where: Path | None = None) -> UsageError:
        """A failure to write here, as the one-line error that ends the run."""
        hint = "" if self._parent is not None else " (TMPDIR chooses another folder)"
        return UsageError(
            f"{where or self._path}: cannot write the duplicate check's spill "
            f"files: {e.strerror or e}{hint}"
        )


class DiskRun:
    """One sorted run on disk, with its fence in memory and the file mapped for lookups."""

    def __init__(self, path: Path, length: int, fence: U64) -> None:
        self.path = path
        self.length = length
        self._fence = fence
        self._map: mmap.mmap | None = None
        self._pages: U64 = _EMPTY.reshape(0, PAGE)
        self._last = np.uint64(0)
        if length:
            with open(path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._pages = np.frombuffer(self._map, dtype=np.uint64).reshape(-1, PAGE)
            self._last = self._pages[-1, -1]

    def __len__(self) -> int:
        return self.length

    @classmethod
    def write(cls, path: Path, chunks: Iterable[U64]) -> DiskRun:
        """Write sorted ``chunks`` (each after the one before) as one run; a partial file is
        removed if writing fails (and the ``OSError`` raised)."""
        fences: list[U64] = []
        length = 0
        try:
            with open(path, "wb") as out:
                last: U64 = _EMPTY
                for chunk in chunks:
                    if not len(chunk):
                        continue
                    fences.append(chunk[(-length) % PAGE :: PAGE].copy())  # not a view
                    chunk.tofile(out)
                    length += len(chunk)
                    last = chunk[-1:]
                if length % PAGE:
                    np.repeat(last, PAGE - length % PAGE).tofile(out)
            return cls(path, length, np.concatenate(fences) if fences else _EMPTY)
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink()
            raise

    def contains(self, needles: U64) -> npt.NDArray[np.bool_]:
        """Which of the sorted ``needles`` the run holds."""
        found = np.zeros(len(needles), dtype=np.bool_)
        if not self.length or not len(needles):
            return found
        page = np.searchsorted(self._fence, needles, side="right").astype(np.intp) - 1
        inside = np.flatnonzero((page >= 0) & (needles <= self._last))
        if not len(inside):
            return found
        page = page[inside]
        first = np.flatnonzero(np.concatenate(([True], page[1:] != page[:-1])))
        for start in range(0, len(first), _PAGES_PER_RELEASE):
            lo = first[start]
            hi = (
                first[start + _PAGES_PER_RELEASE]
                if start + _PAGES_PER_RELEASE < len(first)
                else len(page)
            )
            # The pages copied, in order, are one sorted array: one search answers them all.
            values = self._pages[page[first[start : start + _PAGES_PER_RELEASE]]].ravel()
            self._release()
            want = needles[inside[lo:hi]]
            pos = np.searchsorted(values, want)
            pos[pos == len(values)] = len(values) - 1
            found[inside[lo:hi]] = values[pos] == want
        return found

    def chunks(self, size: int) -> Iterator[U64]:
        """The run in order, ``size`` values at a time (read, never mapped)."""
        left = self.length
        with open(self.path, "rb") as f:
            while left:
                chunk = np.fromfile(f, dtype=np.uint64, count=min(size, left))
                if not len(chunk):
                    return
                left -= len(chunk)
                yield chunk

    def close(self) -> None:
        """Unmap and remove the file."""
        if self._map is not None:
            self._pages = _EMPTY.reshape(0, PAGE)  # the map cannot close while viewed
            self._map.close()
            self._map = None
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _release(self) -> None:
        if self._map is not None and _DONTNEED is not None:
            self._map.madvise(_DONTNEED)


_PAGES_PER_RELEASE = 64  # at most ~5 MiB mapped between releases
_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)
_EMPTY: U64 = np.zeros(0, dtype=np.uint64)


def array_chunks(values: U64, size: int) -> Iterator[U64]:
    """An in-memory run as chunks (views: nothing is copied)."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def merge_chunks(sources: list[Iterator[U64]], size: int) -> Iterator[U64]:
    """K-way merge of sorted, disjoint sources given as chunk iterators, in output chunks of
    at most ``size`` values.

    Each step takes from every source the values up to a cut no source can undercut: the
    smallest of their ``size // k``-th values, so a step outputs at most ``size`` values and
    the source that sets the cut gives all of its share.
    """
    heads: list[tuple[U64, Iterator[U64]]] = []
    for it in sources:
        first = _next_nonempty(it)
        if first is not None:
            heads.append((first, it))
    while heads:
        share = max(1, size // len(heads))
        cut = min(buf[min(len(buf), share) - 1] for buf, _ in heads)
        parts: list[U64] = []
        rest: list[tuple[U64, Iterator[U64]]] = []
        for buf, it in heads:
            k = int(np.searchsorted(buf, cut, side="right"))
            parts.append(buf[:k])
            left = buf[k:] if k < len(buf) else _next_nonempty(it)
            if left is not None:
                rest.append((left, it))
        heads = rest
        out = np.concatenate(parts)
        out.sort(kind="stable")  # finds the sorted parts and merges them
        yield out


def _next_nonempty(it: Iterator[U64]) -> U64 | None:
    for chunk in it:
        if len(chunk):
            return chunk
    return None


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
