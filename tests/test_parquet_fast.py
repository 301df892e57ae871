"""polars reads a Parquet file itself only where that gives the exact reader's very frames,
row numbers, rejects and bodies; elsewhere (other types, text that is not UTF-8, dates out of
range, damage) the exact reader reads, from the first row polars did not give."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal, assert_series_equal

from flywheel_import import parquetfast
from flywheel_import.arrowtypes import convert, kept
from flywheel_import.config import CsvOptions
from flywheel_import.errors import InputError
from flywheel_import.inputs import detect
from flywheel_import.sources import RawBatch, read_batches
from tests.test_identity_property import read_back

BATCH_ROWS = [1, 3, 7, 10, 1000]
I64, U64 = np.iinfo(np.int64), np.iinfo(np.uint64)
MS_MAX = 253_402_300_799_999  # 9999-12-31T23:59:59.999
MS_MIN = -62_135_596_800_000  # 0001-01-01T00:00:00


def kept_table(rows: int = 40) -> pa.Table:
    """A column of every type polars may read itself, with nulls, empty text, NaN, infinities,
    extreme integers and the first and last instants of years 1-9999."""

    def cycle(values: list[Any], t: pa.DataType) -> pa.Array:
        return pa.array([values[i % len(values)] for i in range(rows)], t)

    text = ["a", "", None, "ünï €", "x" * 40, "null", " padded ", "two\nlines"]
    return pa.table(
        {
            "event": cycle(["signup", "page_view", "bad name"], pa.string()),
            "user": cycle(["000123", "u-7", "ü", None], pa.large_string()),
            "ts": cycle([0, 1_700_000_000_000_000, None, -1], pa.timestamp("us")),
            "b": cycle([True, False, None], pa.bool_()),
            "i8": cycle([-128, 127, None, 0], pa.int8()),
            "i16": cycle([-32768, 32767, None], pa.int16()),
            "i32": cycle([-(2**31), 2**31 - 1, None], pa.int32()),
            "i64": cycle([int(I64.min), int(I64.max), None, 0], pa.int64()),
            "u8": cycle([0, 255, None], pa.uint8()),
            "u16": cycle([0, 65535, None], pa.uint16()),
            "u32": cycle([0, 2**32 - 1, None], pa.uint32()),
            "u64": cycle([0, int(U64.max), None], pa.uint64()),
            "f32": cycle([1.5, float("nan"), float("inf"), None, -0.0], pa.float32()),
            "f64": cycle([float("-inf"), float("nan"), None, 5e-324, -0.0, 1.0], pa.float64()),
            "s": cycle(text, pa.string()),
            "ls": cycle(text, pa.large_string()),
            "sv": cycle(text, pa.string_view()),
            "d": cycle([dt.date(1, 1, 1), dt.date(9999, 12, 31), None], pa.date32()),
            "ms": cycle([MS_MIN, MS_MAX, None], pa.timestamp("ms")),
            "us_utc": cycle([MS_MIN * 1000, MS_MAX * 1000 + 999, None], pa.timestamp("us", "UTC")),
            "ns": cycle([int(I64.min) + 1, int(I64.max), None], pa.timestamp("ns")),
            "nothing": pa.nulls(rows),
        }
    )


def write(table: pa.Table, path: Path, **options: Any) -> Path:
    pq.write_table(table, path, **{"row_group_size": 7, **options})
    return path


def batches(path: Path, batch_rows: int, *, fast: bool, mp: pytest.MonkeyPatch) -> list[RawBatch]:
    with mp.context() as m:
        if not fast:
            m.setattr(parquetfast, "fast_plan", lambda *a: None)
        return list(read_batches(detect(path), CsvOptions(), batch_rows))


def plan_for(path: Path) -> parquetfast.FastPlan | None:
    return parquetfast.fast_plan(pq.ParquetFile(path), path, str(path))


def assert_same_batches(fast: list[RawBatch], exact: list[RawBatch], batch_rows: int) -> None:
    def frame(bs: list[RawBatch]) -> pl.DataFrame:
        return pl.concat([b.frame for b in bs], how="vertical")

    assert all(b.frame.height <= batch_rows for b in fast)
    assert_frame_equal(frame(fast), frame(exact), check_exact=True)
    assert [(r.row, r.raw, r.reason) for b in fast for r in b.bad] == [
        (r.row, r.raw, r.reason) for b in exact for r in b.bad
    ]
    assert sum(b.rows for b in fast) == sum(b.rows for b in exact)


# --- the types -------------------------------------------------------------------------------


def test_convert_keeps_every_kept_type_as_it_is() -> None:
    batch = kept_table().to_batches()[0]
    assert all(kept(f.type) for f in batch.schema)
    out = convert(batch, "t").batch
    for name in batch.schema.names:
        before, after = batch.column(name), out.column(name)
        if pa.types.is_string_view(before.type):
            before = before.cast(pa.large_string())
        assert after.type == before.type, name
        assert_series_equal(pl.Series(after), pl.Series(before), check_exact=True)


@pytest.mark.parametrize("batch_rows", BATCH_ROWS)
@pytest.mark.parametrize("writer", ["pyarrow", "polars"])
def test_every_kept_type_reads_to_the_exact_readers_frames_and_row_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int, writer: str
) -> None:
    path = tmp_path / "kept.parquet"
    if writer == "pyarrow":
        write(kept_table(), path)
    else:
        frame = pl.from_arrow(kept_table())
        assert isinstance(frame, pl.DataFrame)
        frame.write_parquet(path, row_group_size=7)
    assert plan_for(path) is not None
    fast = batches(path, batch_rows, fast=True, mp=monkeypatch)
    exact = batches(path, batch_rows, fast=False, mp=monkeypatch)
    assert_same_batches(fast, exact, batch_rows)
    rows = pl.concat([b.frame for b in fast]).get_column("__row").to_list()
    assert rows == list(range(1, 41))  # across row groups of 7 and batches of batch_rows


@pytest.mark.parametrize("batch_rows", [3, 1000])
def test_every_kept_type_gives_the_exact_readers_bodies_ids_and_rejects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int
) -> None:
    path = write(kept_table(), tmp_path / "kept.parquet")
    mapping = {
        "event": "event",
        "user_id": "user",
        "timestamp": {"column": "ts", "timezone": "Europe/Paris"},
    }
    fast = read_back(path, mapping, batch_rows)
    monkeypatch.setattr(parquetfast, "fast_plan", lambda *a: None)
    exact = read_back(path, mapping, batch_rows)
    assert fast.bodies and fast.rejects  # both kinds of row are compared
    assert fast == exact


NOT_KEPT = {
    "binary": pa.array([b"\x00\x01", None, b""] * 4),
    "decimal": pa.array([1, None, 2] * 4, pa.decimal128(10, 2)),
    "zoned": pa.array([0, None, 5] * 4, pa.timestamp("us", "Europe/Paris")),
    "time": pa.array([0, None, 5] * 4, pa.time64("us")),
    "duration": pa.array([0, None, 1500] * 4, pa.duration("ms")),
    "dictionary": pa.array(["a", None, "b"] * 4).dictionary_encode(),
    "date64": pa.array([0, None, 86_400_000] * 4, pa.date64()),
    "float16": pa.array([1.5, None, 2.0] * 4, pa.float16()),
    "list": pa.array([[1], None, []] * 4, pa.list_(pa.int64())),
    "struct": pa.array([{"x": 1}, None, {"x": None}] * 4),
}


@pytest.mark.parametrize("kind", list(NOT_KEPT))
def test_a_file_with_one_other_column_is_read_by_the_exact_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    table = pa.table({"event": ["a"] * 12, "n": list(range(12)), kind: NOT_KEPT[kind]})
    path = write(table, tmp_path / "mixed.parquet")
    assert plan_for(path) is None
    fast = batches(path, 5, fast=True, mp=monkeypatch)
    exact = batches(path, 5, fast=False, mp=monkeypatch)
    assert_same_batches(fast, exact, 5)


@pytest.mark.parametrize(
    "options",
    [
        {"use_deprecated_int96_timestamps": True},  # timestamps stored as INT96
        {"store_schema": False},  # the Arrow types not stored: a zone read back as UTC...
    ],
)
def test_kept_types_stored_otherwise_are_read_by_the_exact_reader_or_read_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]
) -> None:
    table = pa.table(
        {
            "ts": pa.array([0, None, 1_700_000_000_000_000_000] * 4, pa.timestamp("ns")),
            "zoned": pa.array([0, None, 5] * 4, pa.timestamp("ms", "Europe/Paris")),
        }
    )
    path = write(table, tmp_path / "stored.parquet", **options)
    if options.get("use_deprecated_int96_timestamps"):
        assert plan_for(path) is None
    fast = batches(path, 5, fast=True, mp=monkeypatch)
    exact = batches(path, 5, fast=False, mp=monkeypatch)
    assert_same_batches(fast, exact, 5)


def test_a_type_other_than_the_stored_one_is_not_read_fast(tmp_path: Path) -> None:
    # An Arrow schema in the file that differs from how the column is stored (a writer's
    # choice) means a conversion on read, which the two readers might make differently.
    path = write(kept_table(), tmp_path / "kept.parquet")
    pf = pq.ParquetFile(path)
    stored = {name: pf.schema.column(i) for i, name in enumerate(pf.schema_arrow.names)}
    check = parquetfast._stored_as_itself
    assert all(check(f.type, stored[f.name]) for f in pf.schema_arrow)
    assert not check(pa.int8(), stored["i32"])
    assert not check(pa.uint32(), stored["i32"])
    assert not check(pa.int32(), stored["i64"])
    assert not check(pa.timestamp("us"), stored["ms"])
    assert not check(pa.date32(), stored["i32"])
    assert not check(pa.string(), stored["nothing"])


# --- values the exact reader rejects ---------------------------------------------------------


def invalid_utf8(rows: int, at: int) -> pa.Array:
    values = [f"v{i}".encode() for i in range(rows)]
    values[at] = b"bad \xff\xfe"
    raw = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), rows, raw.buffers())


@pytest.mark.parametrize("batch_rows", BATCH_ROWS)
@pytest.mark.parametrize("at", [0, 20, 39])
def test_text_not_utf8_hands_over_to_the_exact_reader_with_the_same_rejects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int, at: int
) -> None:
    table = kept_table().append_column("note", invalid_utf8(40, at))
    path = write(table, tmp_path / "bad-text.parquet")
    assert plan_for(path) is not None  # the types alone allow the fast read
    fast = batches(path, batch_rows, fast=True, mp=monkeypatch)
    exact = batches(path, batch_rows, fast=False, mp=monkeypatch)
    assert_same_batches(fast, exact, batch_rows)
    bad = [r for b in fast for r in b.bad]
    assert [(r.row, r.reason) for r in bad] == [(at + 1, "note: text is not valid UTF-8")]


@pytest.mark.parametrize("batch_rows", [1, 4, 1000])
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("d", -719_163),  # the day before 0001-01-01
        ("ms", MS_MAX + 1),
        ("ms", MS_MIN - 1),
        ("us_utc", (MS_MAX + 1) * 1000),
    ],
)
def test_a_date_outside_years_1_to_9999_is_rejected_as_by_the_exact_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int, column: str, value: int
) -> None:
    table = kept_table()
    i = table.schema.get_field_index(column)
    t = table.schema.field(column).type
    stored = pa.int32() if t == pa.date32() else pa.int64()
    ints = table.column(column).cast(stored).to_pylist()
    ints[22] = value
    array = pa.array(ints, stored).cast(t)
    path = write(table.set_column(i, column, array), tmp_path / "range.parquet")
    assert plan_for(path) is not None
    fast = batches(path, batch_rows, fast=True, mp=monkeypatch)
    exact = batches(path, batch_rows, fast=False, mp=monkeypatch)
    assert_same_batches(fast, exact, batch_rows)
    assert [(r.row, r.reason) for b in fast for r in b.bad] == [
        (23, f"{column}: date/time outside years 1-9999")
    ]


def test_a_damaged_row_group_fails_at_the_same_row_with_the_same_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 60
    path = tmp_path / "late.parquet"
    pq.write_table(
        pa.table({"event": ["view"] * n, "user_id": [f"u{i}" for i in range(n)]}),
        path,
        row_group_size=10,
        compression="zstd",
        use_dictionary=False,
    )
    column = pq.ParquetFile(path).metadata.row_group(4).column(1)
    data = bytearray(path.read_bytes())
    end = column.data_page_offset + column.total_compressed_size
    data[end - 12 : end] = bytes(b ^ 0xFF for b in data[end - 12 : end])
    path.write_bytes(bytes(data))
    assert plan_for(path) is not None
    messages, rows = [], []
    for fast in (True, False):
        got: list[RawBatch] = []
        with pytest.raises(InputError) as e, monkeypatch.context() as m:
            if not fast:
                m.setattr(parquetfast, "fast_plan", lambda *a: None)
            got.extend(read_batches(detect(path), CsvOptions(), 10))
        messages.append(str(e.value))
        rows.append(sum(b.rows for b in got))
    assert messages[0] == messages[1]
    assert "unreadable near row 41" in messages[0]
    assert rows == [40, 40]


# --- files ------------------------------------------------------------------------------------


def test_a_gzipped_file_is_read_fast_from_its_temp_copy_which_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = write(kept_table(), tmp_path / "kept.parquet")
    packed = tmp_path / "kept.parquet.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    plans: list[parquetfast.FastPlan | None] = []
    real = parquetfast.fast_plan

    def spy(*args: Any) -> parquetfast.FastPlan | None:
        plans.append(real(*args))
        return plans[-1]

    monkeypatch.setattr(parquetfast, "fast_plan", spy)
    fast = list(read_batches(detect(packed), CsvOptions(), 6))
    assert plans and plans[0] is not None
    exact = batches(plain, 6, fast=False, mp=monkeypatch)
    assert_same_batches(fast, exact, 6)
    # Stopped early (as `init` does after its sample), the temp copy goes too.
    reader = read_batches(detect(packed), CsvOptions(), 6)
    next(reader)
    reader.close()
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("name", ["data[1].parquet", "year=2024/data*.parquet"])
def test_names_polars_could_take_for_patterns_or_partitions_are_read_as_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    write(kept_table(), path)
    assert plan_for(path) is not None
    fast = batches(path, 8, fast=True, mp=monkeypatch)
    exact = batches(path, 8, fast=False, mp=monkeypatch)
    assert_same_batches(fast, exact, 8)
    assert "year" not in fast[0].frame.columns


def test_an_empty_file_reads_the_same_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(kept_table().slice(0, 0), tmp_path / "empty.parquet")
    fast = batches(path, 5, fast=True, mp=monkeypatch)
    exact = batches(path, 5, fast=False, mp=monkeypatch)
    assert sum(b.rows for b in fast) == sum(b.rows for b in exact) == 0


def test_parts_join_small_row_groups_and_cut_large_ones_within_the_limit() -> None:
    assert list(parquetfast.parts([7, 7, 7], 20)) == [(0, 14), (14, 7)]
    assert list(parquetfast.parts([3, 25, 0, 4, 4], 10)) == [
        (0, 3),
        (3, 10),
        (13, 10),
        (23, 5),
        (28, 8),
    ]
    assert list(parquetfast.parts([], 10)) == []
    assert list(parquetfast.parts([10, 10], 10)) == [(0, 10), (10, 10)]


def test_many_tiny_row_groups_are_read_by_the_exact_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = pa.table({"event": ["a"] * 650, "n": list(range(650))})
    tiny = write(table, tmp_path / "tiny.parquet", row_group_size=10)  # 65 groups
    assert plan_for(tiny) is None
    few = write(table.slice(0, 640), tmp_path / "few.parquet", row_group_size=10)  # 64 groups
    assert plan_for(few) is not None
    assert_same_batches(
        batches(tiny, 100, fast=True, mp=monkeypatch),
        batches(tiny, 100, fast=False, mp=monkeypatch),
        100,
    )
