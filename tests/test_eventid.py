"""FWH128 derived ids: pinned values (a change would re-send every scheduled load), uniqueness,
and independence from batch composition."""

from __future__ import annotations

import uuid

import numpy as np
import polars as pl

from flywheel_import.dedupe import SeenIds
from flywheel_import.eventid import derive_event_ids

PINNED = {
    "": "78601772-0dfa-828d-a8ff-6963c3e5b727",
    "a": "a657913f-aff5-8ae5-98eb-de084b395c74",
    '{"event":"page_viewed"}': "62ffc57d-4f8b-8601-84b0-f44ff0d90d42",
    "é" * 9: "a2a136bd-9697-81ac-a82b-fe55b77756b1",
    "x" * 1000: "03fdc2ee-9a29-8c19-8565-52fccc268d44",
}


def test_derived_ids_are_pinned_forever() -> None:
    got = derive_event_ids(pl.Series(list(PINNED))).to_list()
    assert got == list(PINNED.values())


def test_an_id_does_not_depend_on_its_neighbours_in_the_batch() -> None:
    texts = list(PINNED)
    alone = [derive_event_ids(pl.Series([t])).item() for t in texts]
    shuffled = [*texts[::-1], "y" * 5000]
    together = derive_event_ids(pl.Series(shuffled)).to_list()
    assert together[: len(texts)] == alone[::-1]


def test_derived_ids_are_rfc_9562_version_8_uuids() -> None:
    for text in derive_event_ids(pl.Series(["a", "b", "c" * 70])).to_list():
        parsed = uuid.UUID(text)
        assert parsed.version == 8 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_a_million_distinct_texts_give_a_million_distinct_ids() -> None:
    texts = pl.Series([f'{{"event":"e","user_id":"{i:07d}"}}' for i in range(1_000_000)])
    assert derive_event_ids(texts).n_unique() == 1_000_000


def test_one_byte_and_trailing_zero_bytes_change_the_id() -> None:
    ids = derive_event_ids(pl.Series(["abcdefgh", "abcdefgi", "abcdefgh\x00", "abcdefg"]))
    assert ids.n_unique() == 4


def test_seen_ids_keeps_the_first_and_flags_later_repeats() -> None:
    seen = SeenIds()
    first = seen.check_and_add(np.array([5, 3, 5, 7, 3, 9], dtype=np.uint64))
    assert first.tolist() == [False, False, True, False, True, False]
    second = seen.check_and_add(np.array([9, 10, 10, 1], dtype=np.uint64))
    assert second.tolist() == [True, False, True, False]
    assert len(seen) == 6


def test_seen_ids_stays_exact_across_many_merged_runs() -> None:
    rng = np.random.default_rng(4)
    seen = SeenIds()
    batches = [rng.integers(0, 2**63, 5000, dtype=np.uint64) for _ in range(30)]
    for b in batches:
        assert not seen.check_and_add(b).any()
    assert seen.check_and_add(np.concatenate([b[:10] for b in batches])).all()
    assert len(seen) == 150_000
