"""Plain CSV read by polars itself, where preflight proved it reads the file record for record
as the record splitter does (:class:`NativeCsv`): the same frames, record numbers and bad
records as the splitter at any batch size; a file it cannot prove is read by the splitter."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel_import import sources
from flywheel_import.config import SourceConfig
from flywheel_import.csvsplit import whole_records
from flywheel_import.errors import InputError
from flywheel_import.inputs import detect
from flywheel_import.profile import FileProfile, _native_csv_profile, profile
from flywheel_import.sources import ROW, RawBatch, read_batches
from tests.foundation_helpers import run
from tests.test_identity_property import messy_files

BATCH_SIZES = [1, 7, 1000]


def source_config(csv: dict[str, Any] | None = None, batch_rows: int = 1000) -> SourceConfig:
    return SourceConfig.model_validate({"csv": csv or {}, "batch_rows": batch_rows})


def preflight(path: Path, source: SourceConfig) -> FileProfile:
    return profile(detect(path), source, wants_kind=lambda c: True)


def joined(batches: list[RawBatch]) -> tuple[pl.DataFrame, list[tuple[int, str, str]]]:
    frame = pl.concat([b.frame for b in batches]) if batches else pl.DataFrame()
    bad = [(b.row, b.raw, b.reason) for batch in batches for b in batch.bad]
    return frame, bad


def both_reads(
    path: Path, source: SourceConfig, batch_rows: int
) -> tuple[FileProfile, list[RawBatch], list[RawBatch]]:
    """(profile, batches read with its proof, batches read by the record splitter)."""
    prof = preflight(path, source)
    src = detect(path)
    fast = list(read_batches(src, source.csv, batch_rows, native=prof.native_csv))
    exact = list(read_batches(src, source.csv, batch_rows))
    return prof, fast, exact


def assert_same_reads(path: Path, source: SourceConfig, batch_rows: int) -> FileProfile:
    prof, fast, exact = both_reads(path, source, batch_rows)
    fast_frame, fast_bad = joined(fast)
    exact_frame, exact_bad = joined(exact)
    assert fast_frame.equals(exact_frame), (fast_frame, exact_frame)
    assert fast_frame.schema == exact_frame.schema
    assert fast_bad == exact_bad
    assert all(b.frame.height <= batch_rows for b in fast)
    assert sum(b.rows for b in fast) == sum(b.rows for b in exact) == prof.rows
    assert sum(b.bytes_read for b in fast) == path.stat().st_size
    return prof


# --- a corpus of real-shaped files -----------------------------------------------------------

HEADER = ["event id", "event name", "user id", "ts", "properties", "note", "amount", "flag"]


def corpus_rows(n: int) -> list[list[str]]:
    names = ["Add to cart", "page view", "Signed Up", "$pageview"]
    notes = ["", "a, b", 'say "hi"', "two\nlines", "crlf\r\nend", "ünï ✓", "  padded ", "\\N"]
    rows = []
    for i in range(n):
        rows.append(
            [
                str(uuid.UUID(int=i * 7919 + 1)),
                names[i % len(names)],
                "\\N" if i % 5 == 0 else f"{i:07d}",
                f"2024-01-{1 + i % 28:02d} 10:{i % 60:02d}:00",
                f'{{"plan": "pro", "seats": {i}, "tags": ["a", "b, c"]}}' if i % 3 else "",
                notes[i % len(notes)],
                "\\N" if i % 4 == 0 else ("" if i % 6 == 0 else f"{i}.5"),
                "" if i % 2 else "true",
            ]
        )
    return rows


def encode(
    header: list[str] | None,
    rows: list[list[str]],
    *,
    delimiter: str = ",",
    eol: str = "\n",
    quote_all: bool = False,
    bom: bool = False,
    final_eol: bool = True,
    trailing: bool = False,
) -> bytes:
    def cell(v: str) -> str:
        if quote_all or any(ch in v for ch in (delimiter, '"', "\r", "\n")):
            return '"' + v.replace('"', '""') + '"'
        return v

    lines = [
        delimiter.join(cell(v) for v in row) + (delimiter if trailing else "")
        for row in ([header] if header is not None else []) + rows
    ]
    text = eol.join(lines) + (eol if final_eol else "")
    return ("\ufeff" if bom else "").encode() + text.encode()


FORMS: dict[str, dict[str, Any]] = {
    "lf": {},
    "crlf": {"eol": "\r\n"},
    "bom_crlf": {"bom": True, "eol": "\r\n"},
    "quote_all": {"quote_all": True},
    "no_final_newline": {"final_eol": False},
    "trailing_delimiter": {"trailing": True},
    "tab": {"delimiter": "\t"},
}


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("batch_rows", BATCH_SIZES)
@pytest.mark.parametrize("chunk", [97, 4 << 20])
def test_real_shaped_files_read_by_polars_equal_the_record_splitter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str, batch_rows: int, chunk: int
) -> None:
    monkeypatch.setattr(sources, "CHUNK_BYTES", chunk)  # blocks cut inside quoted newlines
    options = FORMS[form]
    path = tmp_path / ("data.tsv" if options.get("delimiter") == "\t" else "data.csv")
    path.write_bytes(encode(HEADER, corpus_rows(60), **options))
    source = source_config({"null_values": ["\\N"]})
    prof = assert_same_reads(path, source, batch_rows)
    assert prof.native_csv is not None, "preflight proves these files"
    assert prof.rows == 60


@pytest.mark.parametrize("batch_rows", BATCH_SIZES)
def test_a_file_without_header_reads_the_same_with_its_numbered_columns(
    tmp_path: Path, batch_rows: int
) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(encode(None, corpus_rows(25), eol="\r\n"))
    prof = assert_same_reads(path, source_config({"header": False}), batch_rows)
    assert prof.native_csv is not None
    assert prof.columns == [f"column_{i}" for i in range(1, 9)]


@pytest.mark.parametrize("chunk", [1, 5, 4 << 20])
def test_blank_lines_before_the_header_are_skipped_in_any_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(sources, "CHUNK_BYTES", chunk)
    path = tmp_path / "data.csv"
    path.write_bytes(b'\xef\xbb\xbf\n\r\n\nev,"n"\r\na,1\r\n"b",2\r\n')
    prof = assert_same_reads(path, source_config(), 1)
    assert prof.native_csv is not None and prof.columns == ["ev", "n"] and prof.rows == 2


@pytest.mark.parametrize("batch_rows", [1, 1000])
def test_a_file_read_without_quoting_keeps_its_quote_characters_either_way(
    tmp_path: Path, batch_rows: int
) -> None:
    path = tmp_path / "data.tsv"
    path.write_bytes(b'event\tnote\na\tsay "hi\nb\t"x"y\n"c"\t\\N\n')
    prof = assert_same_reads(
        path, source_config({"quote": None, "null_values": ["\\N"]}), batch_rows
    )
    assert prof.native_csv is not None and prof.rows == 3


@pytest.mark.parametrize("data", [b"a,b\n", b"a,b", b"\xef\xbb\xbfa,b\r\n"])
def test_a_header_only_file_reads_no_rows_either_way(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    prof = assert_same_reads(path, source_config(), 10)
    assert prof.native_csv is not None and prof.rows == 0


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    case=messy_files(),
    batch_rows=st.sampled_from([1, 2, 5, 1000]),
    nulls=st.sampled_from([[], ["x", "1"]]),
    chunk=st.sampled_from([1, 2, 5, 64, 1 << 20]),
)
def test_wherever_preflight_proves_a_file_both_reads_agree(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[bytes, bool],
    batch_rows: int,
    nulls: list[str],
    chunk: int,
) -> None:
    monkeypatch.setattr(sources, "CHUNK_BYTES", chunk)  # records cut across reads
    data, header = case
    path = tmp_path_factory.mktemp("messy") / "data.csv"
    path.write_bytes(data)
    source = source_config({"header": header, "null_values": nulls})
    try:
        prof, fast, exact = both_reads(path, source, batch_rows)
    except InputError:
        return  # the exact reader refuses the file too (a duplicate header name, say)
    if prof.native_csv is None:
        return  # read by the splitter either way
    fast_frame, fast_bad = joined(fast)
    exact_frame, exact_bad = joined(exact)
    assert fast_frame.equals(exact_frame)
    assert fast_bad == exact_bad == [], "a proven file has no bad record"
    assert fast_frame.get_column(ROW).to_list() == list(range(1, prof.rows + 1))


CELLS = ["", "1", "-2.5", "007", "true", "\\N", "a b", "a,b", 'say "hi"', "l\nl", "x\r\ny", "ü"]
IRREGULAR = ["blank", "short", "long", "stray quote", "spaces"]


@st.composite
def mostly_clean_files(draw: st.DrawFn) -> tuple[bytes, bool, bool]:
    """(CSV bytes, header?, clean?): realistic cells, now and then an irregular line."""
    header = draw(st.booleans())
    ncols = draw(st.integers(1, 4))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    lines = [",".join(f"col {i}" for i in range(ncols))] if header else []
    clean = True
    for _ in range(draw(st.integers(0, 12))):
        shape = draw(st.sampled_from(["ok"] * 12 + IRREGULAR))
        if shape == "blank":
            lines.append("")
        elif shape == "spaces":
            lines.append("  ")
        else:
            width = ncols + {"short": -1, "long": 1}.get(shape, 0)
            fields = []
            for _ in range(max(width, 0)):
                v = draw(st.sampled_from(CELLS))
                quoted = draw(st.integers(0, 3)) == 0 or any(ch in v for ch in ',"\r\n')
                fields.append('"' + v.replace('"', '""') + '"' if quoted else v)
            if shape == "stray quote" and fields:
                fields[0] = 'x"y'
            lines.append(",".join(fields))
        clean = clean and shape == "ok"
    if ncols == 1 and any(line == "" for line in lines):
        clean = False
    bom = "\ufeff" if draw(st.booleans()) else ""
    tail = eol if draw(st.integers(0, 3)) else ""
    data = (bom + eol.join(lines) + tail).encode()
    return data, header, clean and bool(lines)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    case=mostly_clean_files(),
    batch_rows=st.sampled_from([1, 3, 1000]),
    chunk=st.sampled_from([1, 3, 16, 1 << 20]),
)
def test_realistic_files_are_proven_when_clean_and_read_the_same_when_proven(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[bytes, bool, bool],
    batch_rows: int,
    chunk: int,
) -> None:
    monkeypatch.setattr(sources, "CHUNK_BYTES", chunk)
    data, header, clean = case
    path = tmp_path_factory.mktemp("real") / "data.csv"
    path.write_bytes(data)
    source = source_config({"header": header, "null_values": ["\\N"]})
    try:
        prof, fast, exact = both_reads(path, source, batch_rows)
    except InputError:
        assert not clean
        return  # the exact reader refuses some stray quotes too
    if clean:
        assert prof.native_csv is not None, "a clean file is proven"
    if prof.native_csv is None:
        return
    fast_frame, fast_bad = joined(fast)
    exact_frame, exact_bad = joined(exact)
    assert fast_frame.equals(exact_frame)
    assert fast_bad == exact_bad == []
    assert all(b.frame.height <= batch_rows for b in fast)


@settings(max_examples=300, deadline=None)
@given(
    cells=st.lists(st.sampled_from(["", "a", '"x\ny"', '"q""\n""q"', '""', '"a,b"', "\r"])),
    cuts=st.lists(st.integers(1, 9), min_size=1),
)
def test_blocks_end_at_record_ends_however_the_bytes_arrive(
    cells: list[str], cuts: list[int]
) -> None:
    text = "".join(c + ("\n" if i % 2 else ",") for i, c in enumerate(cells)).encode()
    chunks, at = [], 0
    while at < len(text):
        size = cuts[len(chunks) % len(cuts)]
        chunks.append(text[at : at + size])
        at += size
    pieces = list(whole_records(chunks, '"'))
    assert b"".join(pieces) == text
    for piece in pieces[:-1]:
        assert piece.endswith(b"\n") and piece.count(b'"') % 2 == 0
    assert all(pieces)


# --- files preflight does not prove ----------------------------------------------------------

DECLINED = {
    "blank line": b"event,user_id,ts\na,u1,2024-01-01\n\na,u2,2024-01-02\n",
    "too few fields": b"event,user_id,ts\na,u1,2024-01-01\na,u2\na,u3,2024-01-03\n",
    "too many fields": b"event,user_id,ts\na,u1,2024-01-01\na,u2,2024-01-02,x\n",
    "quote inside a field": b'event,user_id,ts\na,u"1,2024-01-01\na,u2,2024-01-02\n',
    "invalid UTF-8": b"event,user_id,ts\na,u\xff,2024-01-01\na,u2,2024-01-02\n",
    "blank line and quotes": b'event,user_id,ts\n"a",u1,2024-01-01\n\na,u2,2024-01-02\n',
    "short and long record": b"event,user_id,ts\na,u1,2024-01-01\na,u2\na,u3,2024-01-03,x\n",
}


@pytest.mark.parametrize("name", list(DECLINED))
def test_a_file_preflight_cannot_prove_is_read_by_the_record_splitter(
    tmp_path: Path, name: str
) -> None:
    data = DECLINED[name]
    (tmp_path / "plain").mkdir()
    plain = tmp_path / "plain" / "data.csv"
    plain.write_bytes(data)
    assert preflight(plain, source_config()).native_csv is None
    mapping = {"event": "event", "user_id": "user_id", "timestamp": "ts"}
    got = run(tmp_path / "plain", data, mapping)
    packed = run(tmp_path / "gz", gzip.compress(data), mapping, name="data.csv.gz")
    assert [(r["_row"], r["_error_code"]) for r in got.rejects] == [
        (r["_row"], r["_error_code"]) for r in packed.rejects
    ]
    assert got.raw_bodies == packed.raw_bodies
    assert got.report.rows_read == packed.report.rows_read


OVER_THE_LIMIT = {
    "quoted lines": b'event,user_id,ts\na,u1,2024-01-01\na,"'
    + (b"x" * 999 + b"\n") * 5000
    + b'",2024-01-02\na,u3,2024-01-03\n',
    "one line": b"event,user_id,ts\na,u1,2024-01-01\na," + b"y" * 9_000_000 + b",2024-01-02\n",
}


@pytest.mark.parametrize("name", list(OVER_THE_LIMIT))
def test_a_record_over_the_splitters_limit_is_not_proven(tmp_path: Path, name: str) -> None:
    """Past its limit (4-8 MiB, as the record falls across its chunks) the splitter rejects a
    record that polars would read whole: a file with records that long (here 5 and 9 MB) is
    read by the splitter, as its compressed copy is."""
    plain = tmp_path / "data.csv"
    plain.write_bytes(OVER_THE_LIMIT[name])
    assert preflight(plain, source_config()).native_csv is None
    if name == "one line":  # long enough for the splitter to reject whatever the alignment
        batches = list(read_batches(detect(plain), source_config().csv, 1000))
        assert next(b.row for batch in batches for b in batch.bad) == 2


def test_a_record_with_too_many_fields_in_a_column_not_typed_is_not_counted(
    tmp_path: Path,
) -> None:
    # Only column "a" is typed: a scan of that column alone would take the long record's "x".
    data = b"a,b,c\n" + b"1,2,3\n" * 5 + b"x,2,3,4\n"
    plain = tmp_path / "data.csv"
    plain.write_bytes(data)
    fast = _native_csv_profile(detect(plain), source_config(), lambda c: c == "a")
    packed = tmp_path / "data.csv.gz"
    packed.write_bytes(gzip.compress(data))
    exact = profile(detect(packed), source_config(), wants_kind=lambda c: c == "a")
    assert exact.text_kinds == {"a": "number"}
    assert fast is None or fast.text_kinds == exact.text_kinds


@pytest.mark.parametrize(
    "data",
    [
        b"a,b,c\n" + b"1,2,3\n" * 5 + b"1,\xff,3\n",  # invalid UTF-8
        b"a,b,c\n" + b"1,2,3\n" * 5 + b"1,2,3,4\n",  # too many fields
        b"a,b,c\n" + b"1,2,\n" * 5 + b"1,2,3,4,5\n\n",  # one too many, one too few
        b"a,b,c\n" + b"1,2,3\n" * 1500 + b"1,2,3,4,5\n\n",  # the same after the first rows
    ],
    ids=["invalid UTF-8", "too many", "compensated", "compensated later"],
)
def test_irregular_records_in_columns_not_typed_are_found(tmp_path: Path, data: bytes) -> None:
    plain = tmp_path / "data.csv"
    plain.write_bytes(data)
    assert _native_csv_profile(detect(plain), source_config(), lambda c: False) is None


def test_empty_last_cells_after_the_first_rows_are_proven_by_a_second_scan(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,b,c\n" + b'1,"x, y",3\n' * 1500 + b"2,z,\n" * 3)
    prof = assert_same_reads(path, source_config(), 500)
    assert prof.native_csv is not None and prof.rows == 1503


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 1 << 20])
def test_utf8_is_checked_across_chunk_edges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    from flywheel_import import csvproof

    monkeypatch.setattr(csvproof, "CHUNK", chunk)
    path = tmp_path / "data.csv"
    good = "h,i\nü,€\n😀,x\n".encode()
    for data, valid in [(good, True), (good[:-4] + b"\xe2\x82", False), (good + b"\xc3", False)]:
        path.write_bytes(data)
        src = detect(path)
        shape = csvproof.text_shape(src, ",", '"', header=False, utf8=True)
        assert (shape is not None) == valid, (data, chunk)


def test_a_line_of_a_lone_carriage_return_before_the_header_is_declined(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"\r\r\nevent\na\nb\n")
    assert _native_csv_profile(detect(path), source_config(), lambda c: True) is None


def test_blank_lines_of_a_one_column_file_are_not_counted_as_rows(tmp_path: Path) -> None:
    plain = tmp_path / "data.csv"
    plain.write_bytes(b"event\na\n\nb\n")
    prof = preflight(plain, source_config())
    assert prof.rows == 2
    assert prof.native_csv is None


# --- the file changes ------------------------------------------------------------------------


def test_a_file_changed_after_preflight_is_read_by_the_record_splitter(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"event,n\n" + b"a,1\n" * 10)
    source = source_config()
    prof = preflight(path, source)
    assert prof.native_csv is not None
    # Now with a blank line and a short record, which polars would number differently.
    path.write_bytes(b"event,n\n" + b"a,1\n" * 3 + b"\n" + b"b\n" + b"a,2\n" * 10)
    src = detect(path)
    fast = list(read_batches(src, source.csv, 4, native=prof.native_csv))
    exact = list(read_batches(src, source.csv, 4))
    frame, bad = joined(fast)
    exact_frame, exact_bad = joined(exact)
    assert frame.equals(exact_frame) and bad == exact_bad
    assert [b[0] for b in bad] == [4]
    assert frame.get_column(ROW).to_list() == [1, 2, 3, *range(5, 15)]


def test_a_file_changed_while_being_read_stops_the_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "CHUNK_BYTES", 64)  # blocks of a few records
    path = tmp_path / "data.csv"
    path.write_bytes(b"event,n\n" + b"a,1\n" * 300)
    source = source_config()
    prof = preflight(path, source)
    batches = read_batches(detect(path), source.csv, 10, native=prof.native_csv)
    assert next(batches).frame.get_column(ROW).to_list() == list(range(1, 11))
    with path.open("ab") as f:
        f.write(b"\n\nb\n")
    with pytest.raises(InputError, match="changed while being read"):
        list(batches)


def test_a_proven_file_is_read_without_the_record_splitter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the record splitter read a proven file")

    data = "event,user_id,ts,note\n" + "".join(f'a,u{i},2024-01-01,"x, {i}"\n' for i in range(50))
    monkeypatch.setattr(sources, "RecordSplitter", refuse)
    result = run(tmp_path, data, {"event": "event", "user_id": "user_id", "timestamp": "ts"})
    assert result.report.rows_read == 50 and result.report.rejected == 0
    assert [p["note"] for p in result.props()][:2] == ["x, 0", "x, 1"]


def test_proven_reads_are_profiled_and_map_as_the_guarded_splitter_reads_do(
    tmp_path: Path,
) -> None:
    """A native read holds the values preflight typed, so its batches skip the guards; the
    events are the same as from the splitter's batches, which are checked."""
    from flywheel_import.config import parse_config
    from flywheel_import.mapping import build_plan, map_batch

    path = tmp_path / "data.csv"
    rows = [
        f"e{i % 3},u{i},{i * 0.5},{['true', 'FALSE', 'True'][i % 3]},{i:05d}" for i in range(50)
    ]
    path.write_text("ev,user,amount,flag,zip\n" + "\n".join(rows) + "\n")
    source = source_config(batch_rows=7)
    prof, fast, exact = both_reads(path, source, 7)
    assert prof.native_csv is not None
    assert prof.text_kinds == {
        "ev": "string",
        "user": "string",
        "amount": "number",
        "flag": "boolean",
        "zip": "string",  # leading zeros
    }
    assert all(b.profiled for b in fast) and not any(b.profiled for b in exact)
    plan = build_plan(parse_config("mapping: {event: ev, user_id: user}"), prof)
    mapped_fast = pl.concat(map_batch(b.frame, plan, profiled=b.profiled) for b in fast)
    mapped_exact = pl.concat(map_batch(b.frame, plan, profiled=b.profiled) for b in exact)
    assert mapped_fast.equals(mapped_exact)
    slots = {s.column: s.slot for s in plan.properties}
    assert mapped_fast.get_column(slots["flag"]).head(3).to_list() == ["true", "false", "true"]
