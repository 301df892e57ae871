"""The same rows give the same request bodies and event ids however they are read: CSV or TSV,
plain, gzip or zstd, values quoted or not, any batch size. Property types are decided by one
rule, whichever of the two preflight readers (polars' fast scan for plain UTF-8 files, the
exact reader otherwise) looks at the file."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flywheel_import.config import Config, SourceConfig
from flywheel_import.dedupe import SeenIds
from flywheel_import.errors import InputError
from flywheel_import.inputs import SourceFile, detect
from flywheel_import.pipeline import find_inputs, preflight, prepared_batches
from flywheel_import.profile import FileProfile, _native_csv_profile, profile
from flywheel_import.sources import ROW

MAPPING = {
    "event": "event",
    "user_id": "user id",
    "timestamp": {"column": "ts", "timezone": "Europe/Paris"},
}
FILE_SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# --- writing one table in many forms ---------------------------------------------------------


@dataclass(frozen=True)
class Form:
    """One way of writing a table to disk."""

    name: str
    delimiter: str = ","
    quote_all: bool = False
    compression: str = ""
    bom: bool = False
    eol: str = "\n"

    @property
    def file_name(self) -> str:
        ext = "tsv" if self.delimiter == "\t" else "csv"
        return f"{self.name}.{ext}" + {"": "", "gzip": ".gz", "zstd": ".zst"}[self.compression]


FORMS = [
    Form("plain"),
    Form("quoted", quote_all=True),
    Form("gz", compression="gzip"),
    Form("zst", compression="zstd", quote_all=True),
    Form("crlf_bom", bom=True, eol="\r\n"),
    Form("tab", delimiter="\t"),
    Form("tab_gz", delimiter="\t", compression="gzip", quote_all=True),
]


def cell(value: str, delimiter: str, quote_all: bool) -> str:
    if quote_all or any(ch in value for ch in (delimiter, '"', "\r", "\n")):
        return '"' + value.replace('"', '""') + '"'
    return value


def encode_table(header: Sequence[str], rows: Sequence[Sequence[str]], form: Form) -> bytes:
    lines = [
        form.delimiter.join(cell(v, form.delimiter, form.quote_all) for v in row)
        for row in [header, *rows]
    ]
    data = ("\ufeff" if form.bom else "").encode() + (form.eol.join(lines) + form.eol).encode()
    if form.compression == "gzip":
        return gzip.compress(data)
    if form.compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def write_table(
    folder: Path, header: Sequence[str], rows: Sequence[Sequence[str]], form: Form
) -> Path:
    path = folder / form.file_name
    path.write_bytes(encode_table(header, rows, form))
    return path


@dataclass
class Sent:
    bodies: list[str]
    ids: list[str]
    rows: list[int]
    rejects: list[tuple[int, str]]
    dry_rows: list[int]
    dry_rejects: list[tuple[int, str]]


def read_back(
    path: Path,
    mapping: dict[str, Any],
    batch_rows: int,
    *,
    dry_run: bool = True,
    csv: dict[str, Any] | None = None,
) -> Sent:
    """Bodies and ids a run would send (no network), and what the dry run would accept."""
    source: dict[str, Any] = {"batch_rows": batch_rows}
    if csv:
        source["csv"] = csv
    cfg = Config.model_validate({"mapping": mapping, "source": source})
    jobs = preflight(cfg, find_inputs(cfg, [path]), progress=False)
    out = Sent([], [], [], [], [], [])
    for bodies in (True, False) if dry_run else (True,):
        for prep in prepared_batches(cfg, jobs, SeenIds(), bodies=bodies):
            rejects = [
                (r, c)
                for r, c in zip(
                    prep.rejected.get_column("_row").to_list(),
                    prep.rejected.get_column("_error_code").to_list(),
                    strict=True,
                )
            ]
            if bodies:
                out.bodies += prep.send.get_column("body").to_list()
                out.ids += prep.send.get_column("event_id").to_list()
                out.rows += prep.send.get_column(ROW).to_list()
                out.rejects += rejects
            else:
                out.dry_rows += prep.send.get_column(ROW).to_list()
                out.dry_rejects += rejects
    out.rejects.sort()
    out.dry_rejects.sort()
    return out


# --- tables ----------------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
TIMESTAMPS = [
    "2024-01-15 10:30:00",
    "2024-01-15T10:30:00+02:00",
    "2024-03-31T02:30:00",
    "2024-07-01T12:00:00.250Z",
    "2024-07-01",
    " 2024-07-01 08:00 ",
    "15/01/2024",
    "2024-10-27 02:30:00",
    "2024-01-15T10:30:00Z",
]
VALUE_STYLES: dict[str, st.SearchStrategy[str]] = {
    "number": st.sampled_from(["0", "5", "-1.5", "1e3", "19.99", "123456789012345"]),
    "boolean": st.sampled_from(["true", "false", "TRUE", "False"]),
    "code": st.sampled_from(["007", "02134", "0", "12", "0012"]),
    "text": st.one_of(
        TEXT,
        st.sampled_from(
            ["a,b", 'say "hi"', "two\nlines", "crlf\r\nx", "tab\there", "ünï", "  padded ", "null"]
        ),
    ),
}
PROPERTY_NAMES = ["page", "page name", "prix €", "n", "is trial", "note, long", "ключ"]


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    names = draw(st.lists(st.sampled_from(PROPERTY_NAMES), min_size=1, max_size=3, unique=True))
    styles = [
        draw(st.lists(st.sampled_from(list(VALUE_STYLES)), min_size=1, max_size=2)) for _ in names
    ]
    n = draw(st.integers(1, 12))
    rows: list[list[str]] = []
    for _ in range(n):
        row = [
            draw(st.sampled_from(["signup", "page_view", "bad name", ""])),
            draw(st.sampled_from(["000123", "42", "u-7", "ü", ""])),
            draw(st.sampled_from(TIMESTAMPS)),
        ]
        for style in styles:
            empty = draw(st.integers(0, 4)) == 0
            row.append("" if empty else draw(VALUE_STYLES[draw(st.sampled_from(style))]))
        rows.append(row)
        if draw(st.integers(0, 5)) == 0:
            rows.append(list(row))  # a repeated row: a duplicate event in every form
    return ["event", "user id", "ts", *names], rows


@FILE_SETTINGS
@given(table=tables())
def test_every_form_and_batch_size_sends_identical_bodies_and_ids(
    tmp_path_factory: pytest.TempPathFactory, table: tuple[list[str], list[list[str]]]
) -> None:
    header, rows = table
    folder = tmp_path_factory.mktemp("forms")
    reference: Sent | None = None
    runs = [(form, 1000) for form in FORMS] + [
        (FORMS[0], 1),
        (FORMS[0], 3),
        (FORMS[2], 1),
        (FORMS[5], 3),
    ]
    for form, batch_rows in runs:
        dry_run = form == FORMS[0]
        got = read_back(
            write_table(folder, header, rows, form), MAPPING, batch_rows, dry_run=dry_run
        )
        if dry_run:
            assert got.dry_rows == got.rows, "the dry run accepts what the send run sends"
            assert got.dry_rejects == got.rejects
        if reference is None:
            reference = got
            continue
        assert got.bodies == reference.bodies, (form, batch_rows)
        assert got.ids == reference.ids
        assert got.rejects == reference.rejects


# --- the two preflight readers ---------------------------------------------------------------


def profiles(
    folder: Path, data: bytes, source: SourceConfig, wants: Callable[[str], bool] = lambda c: True
) -> tuple[FileProfile | None, FileProfile | InputError]:
    """(fast profile of the plain file or None if it declines, exact profile of a .gz copy)."""
    plain = folder / "data.csv"
    plain.write_bytes(data)
    packed = folder / "data.csv.gz"
    packed.write_bytes(gzip.compress(data))
    fast = _native_csv_profile(detect(plain), source, wants)
    try:
        exact: FileProfile | InputError = profile(detect(packed), source, wants_kind=wants)
    except InputError as e:
        exact = e
    return fast, exact


def test_thousand_empty_cells_then_numbers_give_numbers_plain_and_compressed(
    tmp_path: Path,
) -> None:
    lines = (
        ["event,user_id,ts,amount"]
        + ["a,u1,2024-01-15 10:30:00,"] * 1000
        + [f"a,u{i},2024-01-15 10:30:00,{i}.5" for i in range(2, 12)]
    )
    data = ("\n".join(lines) + "\n").encode()
    fast, exact = profiles(tmp_path, data, SourceConfig())
    assert fast is not None and isinstance(exact, FileProfile)
    assert fast.text_kinds["amount"] == exact.text_kinds["amount"] == "number"
    mapping = {"event": "event", "user_id": "user_id", "timestamp": "ts"}
    (tmp_path / "p.csv").write_bytes(data)
    (tmp_path / "p.csv.gz").write_bytes(gzip.compress(data))
    plain = read_back(tmp_path / "p.csv", mapping, 1000)
    packed = read_back(tmp_path / "p.csv.gz", mapping, 1000)
    assert plain.bodies == packed.bodies and plain.ids == packed.ids
    assert '"amount":11.5' in plain.bodies[-1]


def test_records_with_too_few_fields_are_not_counted_by_either_reader(tmp_path: Path) -> None:
    # The short record's "n/a" would make the column text; the reader rejects that record.
    data = b"event,n,last\n" + b"a,1,x\n" * 5 + b"a,n/a\n" + b"a,2,x\n"
    fast, exact = profiles(tmp_path, data, SourceConfig())
    assert isinstance(exact, FileProfile) and exact.text_kinds["n"] == "number"
    assert fast is None or fast.text_kinds == exact.text_kinds


def test_fast_scan_serves_clean_files_with_empty_last_cells(tmp_path: Path) -> None:
    data = b"event,n,note\n" + b"a,1,\n" * 3 + b'a,2,"x, y"\n' + b"a,,z\n"
    fast, exact = profiles(tmp_path, data, SourceConfig())
    assert isinstance(exact, FileProfile)
    # Quotes in a file with empty last cells: the delimiters outside quotes are counted.
    assert fast is not None and fast.native_csv is not None
    assert fast.text_kinds == exact.text_kinds and fast.rows == exact.rows == 5
    fast, exact = profiles(tmp_path, b"event,n,note\n" + b"a,1,\n" * 3 + b"a,,z\n", SourceConfig())
    assert fast is not None and isinstance(exact, FileProfile)
    assert (
        fast.text_kinds == exact.text_kinds == {"event": "string", "n": "number", "note": "string"}
    )
    assert fast.rows == exact.rows == 4


def test_header_names_are_the_readers_own_in_both_readers(tmp_path: Path) -> None:
    data = '\ufeff event ,, "user id" ,n\r\na,1,u,5\r\n'.encode()
    fast, exact = profiles(tmp_path, data, SourceConfig())
    assert fast is not None and isinstance(exact, FileProfile)
    assert fast.columns == exact.columns == ["event", "column_2", "user id", "n"]
    assert fast.text_kinds == exact.text_kinds


MESSY_VALUES = [
    "",
    "1",
    "-2.5",
    "007",
    "true",
    "FALSE",
    "x",
    " 5",
    "a,b",
    'q"q',
    "l\nl",
    '""',
    "1e3",
]


@st.composite
def messy_files(draw: st.DrawFn) -> tuple[bytes, bool]:
    """CSV bytes with the irregularities the two readers could see differently."""
    header = draw(st.booleans())
    ncols = draw(st.integers(2, 4))
    names = [draw(st.sampled_from(["a", " b", "c ", "", "d e", "f"])) for _ in range(ncols)]
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    lines = [",".join(names)] if header else []
    for _ in range(draw(st.integers(0, 15))):
        shape = draw(st.sampled_from(["ok"] * 8 + ["short", "long", "blank", "stray quote"]))
        if shape == "blank":
            lines.append("")
            continue
        width = ncols + {"short": -1, "long": 1}.get(shape, 0)
        fields = []
        for _ in range(width):
            v = draw(st.sampled_from(MESSY_VALUES))
            quoted = draw(st.booleans()) or any(ch in v for ch in ',"\n')
            fields.append('"' + v.replace('"', '""') + '"' if quoted else v)
        if shape == "stray quote":
            fields[0] = 'x"y'
        lines.append(",".join(fields))
    bom = "\ufeff" if draw(st.booleans()) else ""
    tail = eol if draw(st.integers(0, 3)) else ""
    return (bom + eol.join(lines) + tail).encode(), header


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=messy_files())
@example(case=(b'1,1\nx"y,1', False))  # a stray quote: polars keeps the value, the reader not
def test_fast_scan_agrees_with_the_exact_reader_or_declines(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[bytes, bool]
) -> None:
    data, header = case
    source = SourceConfig.model_validate({"csv": {"header": header}})
    fast, exact = profiles(tmp_path_factory.mktemp("messy"), data, source)
    if fast is None:
        return
    assert isinstance(exact, FileProfile), f"fast scan accepted what the reader refuses: {exact}"
    assert fast.columns == exact.columns
    assert fast.text_kinds == exact.text_kinds
    assert fast.rows == exact.rows


@pytest.mark.parametrize("rows", [3, 5000])
def test_fast_scan_declines_a_quote_inside_an_unquoted_field_however_many_quotes_precede(
    tmp_path: Path, rows: int
) -> None:
    good = b"event,n,note\n" + b'"a",1,"x, ""y"""\r\n' * rows
    fast, exact = profiles(tmp_path, good + b"a,2,z\n", SourceConfig())
    assert fast is not None and isinstance(exact, FileProfile)
    assert fast.text_kinds == exact.text_kinds and fast.rows == exact.rows == rows + 1
    # The reader takes x"y as opening a quoted field (the record is malformed); polars
    # would read "n/a" as a value and type the column as text.
    fast, exact = profiles(tmp_path, good + b'x"y,n/a,z\n' + b"a,3,z\n", SourceConfig())
    assert fast is None
    assert isinstance(exact, FileProfile) and exact.text_kinds["n"] == "number"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=messy_files())
def test_quote_check_reads_in_chunks_and_agrees_at_any_chunk_size(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[bytes, bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The quote check reads the file in chunks (a memory map would count the whole file in
    the process's memory): a quote at a chunk's edge must be judged as in one piece, and a
    delimiter counted once, inside or outside quotes as a whole read would."""
    from flywheel_import import csvproof, csvsplit

    data, header = case
    path = tmp_path_factory.mktemp("q") / "f.csv"
    path.write_bytes(data)
    src = SourceFile(path, "csv", "none")
    whole = csvproof.text_shape(src, ",", '"', header=header, utf8=True)
    for size, few in [(3, 2048), (4, 0), (7, 1)]:  # few: quotes found one by one, then numpy
        monkeypatch.setattr(csvproof, "CHUNK", size)
        monkeypatch.setattr(csvsplit, "FEW_HITS", few)
        if header and b"\n" not in data[:size]:
            continue  # a header longer than the first chunk is declined on purpose
        assert csvproof.text_shape(src, ",", '"', header=header, utf8=True) == whole
