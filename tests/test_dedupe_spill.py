"""The duplicate check past its memory bound: fingerprints spill to sorted files on disk and the
answers stay exactly those of an in-memory set, first occurrence kept; memory holds no more
than the bound; the files go when the check is closed, on failure too. And the rejects staged
during a long run hold only their own rows."""

from __future__ import annotations

import csv
import gc
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel_import import InputError, UsageError, pipeline, validate
from flywheel_import.dedupe import SeenIds
from flywheel_import.rejects import RejectsWriter
from flywheel_import.sandbox import Sandbox
from flywheel_import.sources import ROW
from flywheel_import.spill import PAGE, DiskRun

U64 = npt.NDArray[np.uint64]
TOP = np.uint64(2**64 - 1)
PREFIX = "flywheel-import-seen-"


def reference(batches: list[U64]) -> list[list[bool]]:
    """Duplicates by a Python set, value by value: the answer the check must give."""
    seen: set[int] = set()
    out = []
    for batch in batches:
        flags = []
        for v in batch.tolist():
            flags.append(v in seen)
            seen.add(v)
        out.append(flags)
    return out


def planted_batches(seed: int, count: int = 80, size: int = 250) -> list[U64]:
    """Random fingerprints; a fifth of each batch repeats values from any earlier batch (long
    since spilled) or from its own, and the extremes 0 and 2^64-1 come and come again."""
    rng = np.random.default_rng(seed)
    batches: list[U64] = []
    for i in range(count):
        batch = rng.integers(0, 2**64 - 1, size, dtype=np.uint64)
        if batches:
            older = np.concatenate(batches)
            batch[: size // 5] = older[rng.integers(0, len(older), size // 5)]
        batch[-3:-1] = batch[size // 2]  # repeats inside the batch
        if i in (3, 40, 77):
            batch[size // 3] = TOP
        if i in (10, 60):
            batch[size // 4] = 0
        batches.append(rng.permutation(batch))
    return batches


def spill_files(folder: Path | None) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder is not None else []


@pytest.mark.parametrize(
    "filter_bytes", [None, 16], ids=["sized-filter", "filter-lets-every-candidate-through"]
)
def test_spilled_check_flags_exactly_what_an_in_memory_set_flags(
    tmp_path: Path, filter_bytes: int | None
) -> None:
    batches = planted_batches(seed=1)
    with SeenIds(tmp_path, memory_bytes=8 * 700, filter_bytes=filter_bytes) as seen:
        got = [seen.check_and_add(b).tolist() for b in batches]
        files = spill_files(seen.spill_folder)
        kept = len(seen)
    assert got == reference(batches)
    assert kept == len(set(np.concatenate(batches).tolist()))
    # Spilled and merged on disk: run files were written and replaced; some span many pages.
    assert len(files) >= 2 and int(files[-1][4:10]) > len(files)
    assert kept - 700 > 4 * PAGE


def test_the_first_occurrence_is_kept_and_later_ones_flagged_across_spills(tmp_path: Path) -> None:
    a, b, c, d = (np.uint64(v) for v in (11, 2**63, 5, TOP))
    with SeenIds(tmp_path, memory_bytes=8 * 16) as seen:
        assert seen.check_and_add(np.array([a, b, a, d, a], dtype=np.uint64)).tolist() == [
            False,
            False,
            True,
            False,
            True,
        ]
        for start in range(1000, 1100, 10):  # pushes a, b and d out to disk
            seen.check_and_add(np.arange(start, start + 10, dtype=np.uint64))
        assert seen.runs_written >= 2 and seen.in_memory <= 16
        assert seen.check_and_add(np.array([c, b, c, d], dtype=np.uint64)).tolist() == [
            False,
            True,
            True,
            True,
        ]
        assert seen.check_and_add(np.array([c, a], dtype=np.uint64)).tolist() == [True, True]


def test_memory_never_holds_more_fingerprints_than_the_bound(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    bound = 1000
    total = 0
    with SeenIds(tmp_path, memory_bytes=8 * bound) as seen:
        for size in [*rng.integers(1, 400, 200).tolist(), 2500, 7, 1001]:
            total += size
            seen.check_and_add(rng.integers(0, 2**64 - 1, size, dtype=np.uint64))
            assert seen.in_memory <= bound
        assert seen.peak_in_memory <= bound
        assert len(seen) == total  # nothing lost on the way to disk
        assert seen.disk_runs >= 1
    with SeenIds(tmp_path) as roomy:  # the default bound: no spill at this size
        roomy.check_and_add(rng.integers(0, 2**64 - 1, 50_000, dtype=np.uint64))
        assert roomy.in_memory == 50_000 and roomy.spill_folder is None


def test_spill_files_are_removed_at_close_and_the_given_folder_stays(tmp_path: Path) -> None:
    seen = SeenIds(tmp_path / "state", memory_bytes=8 * 10)
    seen.check_and_add(np.arange(100, dtype=np.uint64))
    folder = seen.spill_folder
    assert folder is not None and folder.parent == tmp_path / "state" and spill_files(folder)
    assert folder.stat().st_mode & 0o077 == 0  # private to the user
    seen.close()
    assert not folder.exists()
    assert list((tmp_path / "state").iterdir()) == []
    with pytest.raises(ValueError, match="closed"):
        seen.check_and_add(np.arange(3, dtype=np.uint64))


def test_spill_files_are_removed_when_the_work_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), SeenIds(tmp_path, memory_bytes=8) as seen:
        seen.check_and_add(np.arange(100, dtype=np.uint64))
        folder = seen.spill_folder
        raise RuntimeError("the import failed")
    assert folder is not None and not folder.exists()


def test_spill_files_are_removed_when_a_check_is_dropped_without_close(tmp_path: Path) -> None:
    seen = SeenIds(tmp_path, memory_bytes=8)
    seen.check_and_add(np.arange(100, dtype=np.uint64))
    folder = seen.spill_folder
    assert folder is not None and folder.exists()
    del seen
    gc.collect()
    assert not folder.exists()


def test_a_run_file_that_fails_midway_is_removed(tmp_path: Path) -> None:
    def chunks() -> Iterator[U64]:
        yield np.arange(PAGE * 3, dtype=np.uint64)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        DiskRun.write(tmp_path / "run-000001.u64", chunks())
    assert list(tmp_path.iterdir()) == []


def test_a_spill_folder_that_cannot_be_made_is_a_one_line_usage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    seen = SeenIds(tmp_path / "file" / "state", memory_bytes=8)
    with pytest.raises(UsageError, match="cannot write the duplicate check's spill files") as e:
        seen.check_and_add(np.arange(100, dtype=np.uint64))
    assert str(e.value).startswith(str(tmp_path / "file" / "state")) and "\n" not in str(e.value)
    seen.close()


# --- through the pipeline ----------------------------------------------------------------------

TS = "2024-01-15 10:30:00"


def write_events(path: Path, rows: int) -> None:
    """Rows with a mapped id, some ids repeated from far back; rows without an id whose
    content repeats (derived ids); a few invalid rows."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["event_id", "event", "user_id", "ts", "n"])
        for i in range(rows):
            eid = f"e{i}" if i % 3 else ""
            if i % 11 == 0 and i > 50:  # an id from far back (long spilled, with a tiny bound)
                j = i // 5
                eid = f"e{j + 1 if j % 3 == 0 else j}"
            n = i % 400 if not eid else i  # content repeats every 400 rows of derived ids
            event = "bad name" if i % 97 == 0 else "view"
            w.writerow([eid, event, f"u{n % 13}", TS, n])


def write_mapping(folder: Path, data: Path, batch_rows: int) -> Path:
    cfg = folder / "m.yaml"
    cfg.write_text(f"""
source: {{path: {data.name}, batch_rows: {batch_rows}}}
mapping:
  event: event
  user_id: user_id
  event_id: event_id
  timestamp: ts
""")
    return cfg


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system's temporary folder, pointed at an empty folder the test can look into."""
    tmp = tmp_path / "systmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[SeenIds]]:
    """The duplicate checks the pipeline makes, to look at after the run."""
    made: list[SeenIds] = []
    make = pipeline.seen_ids

    def record(run: pipeline.Session) -> SeenIds:
        made.append(make(run))
        return made[-1]

    monkeypatch.setattr(pipeline, "seen_ids", record)
    yield made


def leftovers(tmp: Path) -> list[str]:
    return [p.name for p in tmp.iterdir() if p.name.startswith(PREFIX)]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_validate_with_a_tiny_bound_rejects_the_same_rows_as_without(
    tmp_path: Path, private_tmp: Path, checks: list[SeenIds], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "events.csv"
    write_events(data, 6000)
    cfg = write_mapping(tmp_path, data, batch_rows=150)
    roomy = validate(cfg, rejects=tmp_path / "roomy.csv")
    monkeypatch.setattr("flywheel_import.dedupe.DEFAULT_MEMORY_BYTES", 8 * 400)
    tight = validate(cfg, rejects=tmp_path / "tight.csv")
    assert read_rows(tmp_path / "tight.csv") == read_rows(tmp_path / "roomy.csv")
    assert (
        tight.by_code["DUPLICATE_EVENT_ID"].count == roomy.by_code["DUPLICATE_EVENT_ID"].count > 500
    )
    assert (tight.valid, tight.rejected) == (roomy.valid, roomy.rejected)
    assert checks[0].runs_written == 0 and checks[0].peak_in_memory > 400
    assert checks[1].runs_written > 4 and checks[1].peak_in_memory <= 400
    assert leftovers(private_tmp) == []


def corrupt_parquet(path: Path, *, groups: int, rows: int, corrupt: int) -> None:
    """A Parquet file whose metadata reads fine but whose row group ``corrupt`` does not."""
    n = groups * rows
    pq.write_table(
        pa.table({"event": ["view"] * n, "user_id": [f"u{i}" for i in range(n)], "ts": [TS] * n}),
        path,
        row_group_size=rows,
        compression="zstd",
        use_dictionary=False,
    )
    column = pq.ParquetFile(path).metadata.row_group(corrupt).column(0)
    data = bytearray(path.read_bytes())
    end = column.data_page_offset + column.total_compressed_size
    data[end - 12 : end] = bytes(b ^ 0xFF for b in data[end - 12 : end])
    path.write_bytes(bytes(data))


def test_a_validate_that_fails_midway_removes_its_spill_files(
    tmp_path: Path, private_tmp: Path, checks: list[SeenIds], monkeypatch: pytest.MonkeyPatch
) -> None:
    corrupt_parquet(tmp_path / "late.parquet", groups=6, rows=10, corrupt=5)
    cfg = tmp_path / "m.yaml"
    cfg.write_text(
        "source: {path: late.parquet, batch_rows: 10}\n"
        "mapping: {event: event, user_id: user_id, timestamp: ts}\n"
    )
    monkeypatch.setattr("flywheel_import.dedupe.DEFAULT_MEMORY_BYTES", 8 * 4)
    with pytest.raises(InputError, match="unreadable"):
        validate(cfg)
    assert checks[0].runs_written > 0  # it had spilled before the failure
    assert leftovers(private_tmp) == []


def test_an_import_with_a_tiny_bound_sends_each_event_once_and_removes_its_spill_files(
    tmp_path: Path, private_tmp: Path, checks: list[SeenIds], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "events.csv"
    write_events(data, 1200)
    cfg = write_mapping(tmp_path, data, batch_rows=100)
    expected = validate(cfg)
    monkeypatch.setattr("flywheel_import.dedupe.DEFAULT_MEMORY_BYTES", 8 * 200)
    with Sandbox(key="k", db=tmp_path / "sandbox.db") as sb:
        report = pipeline.run_import(cfg, api_url=sb.url, key="k", rate=0)
        stats = sb.stats()
    assert report.accepted == expected.valid == stats["stored"]
    assert stats["duplicates"] == 0
    assert (
        report.by_code["DUPLICATE_EVENT_ID"].count == expected.by_code["DUPLICATE_EVENT_ID"].count
    )
    assert checks[-1].runs_written > 0 and checks[-1].peak_in_memory <= 200
    assert leftovers(private_tmp) == []


# --- the rest of a long dry run's memory -------------------------------------------------------


def text_buffer_bytes(frame: pl.DataFrame) -> int:
    """Bytes of text buffers the frame's string columns point into (shared ones included)."""
    total = 0
    for name, dtype in frame.schema.items():
        if dtype == pl.String:
            arr = frame.get_column(name).to_arrow(compat_level=pl.CompatLevel.newest())
            total += sum(b.size for b in arr.buffers() if b is not None)
    return total


def test_staged_rejects_do_not_keep_the_batches_they_came_from(tmp_path: Path) -> None:
    writer = RejectsWriter(tmp_path / "rejects.csv")
    for i in range(5):
        batch = pl.DataFrame(
            {
                "text": [f"row {j} of batch {i}, long enough" for j in range(50_000)],
                ROW: pl.int_range(1, 50_001, eager=True),
            }
        )
        rows = batch.filter(pl.col(ROW) % 25_000 == 7)
        assert text_buffer_bytes(rows) > 1_000_000  # a filter alone keeps the batch's text
        writer.add(rows.rename({ROW: "_row"}).with_columns(pl.lit("x").alias("_source")))
    staged = writer._pending
    assert sum(f.height for f in staged) == 10
    assert sum(text_buffer_bytes(f) for f in staged) < 10_000
    assert [r["text"] for r in read_rows(writer.close())] == [
        f"row {j} of batch {i}, long enough" for i in range(5) for j in (6, 25_006)
    ]
