"""The duplicate check's cheap paths change no answer: batches sorted by their top bits first
give the plain sort and the first-occurrence order; every id's filter bits are set, ids that
share a filter word in one batch included; runs kept side by side in one store give the
answers of a Python set, with the same memory accounting and the same files on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel_import.dedupe import SeenIds, sort_keys
from tests.test_dedupe_spill import reference

U64 = npt.NDArray[np.uint64]
TOP = 2**64 - 1
FILTER_WORD_SHIFT = 46  # the smallest filter (2^18 words), sized for up to 131,072 ids


def filter_bits(value: int) -> int:
    return (1 << (value & 63)) | (1 << ((value >> 6) & 63)) | (1 << ((value >> 12) & 63))


# Values that crowd the cheap paths: repeats, shared top 16 bits (one radix key), shared
# filter words, the extremes.
values = st.one_of(
    st.integers(0, TOP),
    st.sampled_from([0, 1, TOP, TOP - 1, 2**63, 2**48 - 1, 2**48]),
    st.integers(0, 2**16).map(lambda low: (0xABCD << 48) | low),
    st.integers(0, 2**18).map(lambda low: (5 << FILTER_WORD_SHIFT) | low),
)
batch = st.lists(values, max_size=300).map(lambda v: np.array(v, dtype=np.uint64))


@settings(max_examples=200, deadline=None)
@given(fps=batch)
def test_sorted_keys_are_the_plain_sort_and_their_order_puts_first_occurrences_first(
    fps: U64,
) -> None:
    keys = sort_keys(fps)
    assert np.array_equal(keys.ranked, np.sort(fps))
    assert keys.repeats.tolist() == [
        i > 0 and v == keys.ranked[i - 1] for i, v in enumerate(keys.ranked.tolist())
    ]
    assert np.array_equal(keys.order(), np.argsort(fps, kind="stable"))


def test_a_large_batch_of_random_fingerprints_sorts_as_numpy_does() -> None:
    fps = np.random.default_rng(5).integers(0, TOP, 300_000, dtype=np.uint64, endpoint=True)
    fps[::1000] = fps[7]  # a value repeated all through the batch
    keys = sort_keys(fps)
    assert np.array_equal(keys.ranked, np.sort(fps))
    assert np.array_equal(keys.order(), np.argsort(fps, kind="stable"))


def test_ids_sharing_a_filter_word_in_one_batch_are_each_found_again_later() -> None:
    word = 12345 << FILTER_WORD_SHIFT
    # Distinct bits for each: a missing write of any one id's bits rules that id out.
    ids = [word | a | (a + 1) << 6 | (a + 2) << 12 for a in (1, 4, 7, 10)]
    with SeenIds() as seen:
        first = seen.check_and_add(np.array([ids[2], ids[0], ids[3], ids[1], ids[0]], np.uint64))
        assert first.tolist() == [False, False, False, False, True]
        for v in ids:
            assert seen.check_and_add(np.array([v], np.uint64)).tolist() == [True]


@settings(max_examples=25, deadline=None)
@given(batches=st.lists(batch, min_size=1, max_size=12))
def test_the_filter_holds_exactly_the_bits_of_every_id_added(batches: list[U64]) -> None:
    with SeenIds() as seen:
        for b in batches:
            seen.check_and_add(b)
        expected: dict[int, int] = {}
        for v in np.concatenate(batches).tolist():
            expected[v >> FILTER_WORD_SHIFT] = expected.get(v >> FILTER_WORD_SHIFT, 0) | (
                filter_bits(v)
            )
        got = seen._filter
        assert {int(w): int(got[w]) for w in np.flatnonzero(got)} == expected


@st.composite
def planted(draw: st.DrawFn) -> list[U64]:
    """Batches of varied sizes; some values come back from earlier batches or their own."""
    count = draw(st.integers(1, 25))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    out: list[U64] = []
    for _ in range(count):
        b = rng.integers(0, TOP, draw(st.integers(0, 400)), dtype=np.uint64, endpoint=True)
        if out and len(b):
            older = np.concatenate(out)
            if len(older):
                k = draw(st.integers(0, len(b)))
                b[:k] = older[rng.integers(0, len(older), k)]
        if len(b) > 2:
            b[-2:] = b[rng.integers(0, len(b) - 2, 2)]
        out.append(rng.permutation(b))
    return out


@settings(max_examples=60, deadline=None)
@given(
    batches=planted(),
    bound=st.sampled_from([1, 50, 300, 1000, 100_000]),
    filter_bytes=st.sampled_from([None, 16, 4096]),
)
def test_random_batches_with_planted_repeats_get_the_answers_of_a_python_set(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[U64],
    bound: int,
    filter_bytes: int | None,
) -> None:
    folder = tmp_path_factory.mktemp("seen")
    with SeenIds(folder, memory_bytes=8 * bound, filter_bytes=filter_bytes) as seen:
        got = []
        for b in batches:
            got.append(seen.check_and_add(b).tolist())
            assert seen.in_memory <= bound
        assert got == reference(batches)
        assert len(seen) == len(set(np.concatenate(batches).tolist()))
        assert seen.peak_in_memory <= bound


def test_runs_are_held_merged_and_spilled_as_before(tmp_path: Path) -> None:
    """Figures of the check before its runs shared one store: the same tiers, the same
    accounting of merge copies, the same spills and merges on disk."""
    rng = np.random.default_rng(7)
    with SeenIds(tmp_path, memory_bytes=8 * 5000) as seen:
        peaks = []
        for _ in range(120):
            size = int(rng.integers(1, 700))
            seen.check_and_add(rng.integers(0, TOP, size, dtype=np.uint64, endpoint=True))
            peaks.append(seen.peak_in_memory)
        folder = seen.spill_folder
        assert folder is not None
        names = sorted(p.name for p in folder.iterdir())
        assert (seen.in_memory, seen.peak_in_memory) == (3081, 4992)
        assert (seen.disk_runs, seen.runs_written) == (4, 12)
        assert names == [f"run-{n:06d}.u64" for n in (5, 10, 11, 12)]
        assert [len(r) for r in seen._disk] == [16159, 15087, 4069, 3920]
        assert [len(r) for r in seen._runs] == [1771, 137, 690, 483]
        assert sorted(set(peaks))[-5:] == [1378, 1462, 3641, 4513, 4992]
        for run in seen._runs:
            assert np.all(run[1:] > run[:-1])
