"""Golden derived event ids of a committed sample (``tests/data/golden.csv`` + ``golden.yaml``).

A derived id is a promise to the API: the same row gives the same id on every re-run, by every
version. Any change to typing, timestamps, body layout or FWH128 that changes one of these ids
fails here; such a change re-sends every event of every scheduled load as new events.
"""

from __future__ import annotations

import csv
import gzip
import io
import shutil
from pathlib import Path

import polars as pl
import pytest

from flywheel_import.config import load_config
from flywheel_import.dedupe import SeenIds
from flywheel_import.eventid import derive_event_ids
from flywheel_import.pipeline import find_inputs, preflight, prepared_batches
from flywheel_import.sources import ROW

DATA = Path(__file__).parent / "data"

#: (record number, derived event id) of every row sent, in order.
GOLDEN_IDS = [
    (1, "a2109398-a6d5-8848-b0ee-1a84d5597e2e"),
    (2, "fb60fe59-715c-8a3b-baca-fc32b416c972"),
    (3, "38dbb9e6-d8bd-8a30-9ee7-6dfd7a9c8e25"),
    (4, "707d4b46-bbad-843e-8592-5a2bcdf40ab9"),
    (5, "394fc768-0bd2-8073-be74-9d62d2693b1c"),
    (6, "624652d8-31de-85b8-a8c3-0d3092318967"),
    (8, "e57121f7-1ec7-8404-9f6b-e0dbf2aaa0db"),
    (9, "53c7e1d9-bcfd-8389-9d58-b37fb472f34a"),
    (10, "d5adcd28-450e-88b5-96a0-1c8cb45b4eaa"),
    (14, "b0712c36-f6e0-8409-9a81-8169347f2dba"),
    (15, "d5b47136-4640-85be-9a5a-92a042851ae4"),
    (17, "8b9e87c2-1926-8cb6-abfb-a35ba1dbcfd3"),
    (18, "ac23ae4e-da59-84e1-a4b6-6bc441a1f93b"),
    (19, "25ee3311-04c8-86ea-8679-544897c745aa"),
]
GOLDEN_REJECTS = [
    (7, "INVALID_TIMESTAMP"),
    (11, "INVALID_EVENT_NAME"),
    (12, "MISSING_IDENTITY"),
    (13, "INVALID_TIMESTAMP"),
    (16, "DUPLICATE_EVENT_ID"),
]
GOLDEN_BODIES = {
    1: '{"event":{"event_id":"a2109398-a6d5-8848-b0ee-1a84d5597e2e","event":"signup",'
    '"user_id":"000123","timestamp":"2024-01-15T09:30:00Z","properties":{"page":"/home",'
    '"price":19.99,"qty":1,"is trial":true,"zip":"02134","note":"first visit"}}}',
    3: '{"event":{"event_id":"38dbb9e6-d8bd-8a30-9ee7-6dfd7a9c8e25","event":"page_view",'
    '"anonymous_id":"a-77f3","timestamp":"2024-01-15T09:32:05Z","properties":{'
    '"page":"/docs/getting started","is trial":false,'
    '"note":"clicked \\"Start\\", then left"}}}',
}


def import_sample(
    path: Path, batch_rows: int | None = None
) -> tuple[list[tuple[int, str]], dict[int, str], list[tuple[int, str]]]:
    """(row, id) sent, bodies by row, (row, code) rejected: what a run would send, no network."""
    cfg = load_config(DATA / "golden.yaml")
    if batch_rows is not None:
        cfg = cfg.model_copy(
            update={"source": cfg.source.model_copy(update={"batch_rows": batch_rows})}
        )
    jobs = preflight(cfg, find_inputs(cfg, [path]), progress=False)
    ids: list[tuple[int, str]] = []
    bodies: dict[int, str] = {}
    rejects: list[tuple[int, str]] = []
    for prep in prepared_batches(cfg, jobs, SeenIds()):
        for row, event_id, body in prep.send.select(ROW, "event_id", "body").rows():
            ids.append((row, event_id))
            bodies[row] = body
        rejects += prep.rejected.select("_row", "_error_code").rows()
    return ids, bodies, sorted(rejects)


def as_tsv(text: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerows(csv.reader(io.StringIO(text, newline="")))
    return out.getvalue()


def test_sample_gives_the_golden_ids_bodies_and_rejects() -> None:
    ids, bodies, rejects = import_sample(DATA / "golden.csv")
    assert ids == GOLDEN_IDS
    assert rejects == GOLDEN_REJECTS
    for row, body in GOLDEN_BODIES.items():
        assert bodies[row] == body


def test_golden_id_is_the_hash_of_the_body_without_its_id() -> None:
    _, bodies, _ = import_sample(DATA / "golden.csv")
    for row, event_id in GOLDEN_IDS:
        core = "{" + bodies[row].removeprefix(f'{{"event":{{"event_id":"{event_id}",').removesuffix(
            "}"
        )
        assert derive_event_ids(pl.Series([core])).item() == event_id


@pytest.mark.parametrize("name", ["golden.csv.gz", "golden.tsv", "golden.csv"])
@pytest.mark.parametrize("batch_rows", [None, 1, 4])
def test_copies_of_the_sample_give_the_golden_ids(
    tmp_path: Path, name: str, batch_rows: int | None
) -> None:
    text = (DATA / "golden.csv").read_text(encoding="utf-8")
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    elif name.endswith(".tsv"):
        path.write_text(as_tsv(text), encoding="utf-8")
    else:
        shutil.copy(DATA / "golden.csv", path)
    ids, _, rejects = import_sample(path, batch_rows)
    assert ids == GOLDEN_IDS
    assert rejects == GOLDEN_REJECTS
