"""NDJSON read in whole blocks gives exactly what reading it line by line gives.

The line-by-line path (every line split, checked and parsed on its own when polars refuses a
chunk) is the reference: the block path is switched off by making every block look unclean
(``whole_lines`` -> None) and preflight's typed reads by making none prove anything
(``_keeps_types`` -> False). Both read the same generated files at several chunk sizes and
must agree on every frame value and type, every row number and every bad record.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel_import import jsonblocks, sources
from flywheel_import.config import SourceConfig
from flywheel_import.inputs import detect
from flywheel_import.jsontypes import MAX_DEPTH
from flywheel_import.profile import FileProfile, profile

TS = "2024-01-15T10:30:00Z"
BOM = b"\xef\xbb\xbf"
CHUNKS = (64, 300, 4096, 4 << 20)


def record(i: int, **extra: Any) -> dict[str, Any]:
    return {"event": "view", "user_id": f"u{i}", "ts": TS, "n": i, "price": i / 4, **extra}


def lines_of(records: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(r, separators=(",", ":")).encode() for r in records]


def deep_line(levels: int) -> bytes:
    return b'{"user_id":"deep","d":' + b'{"a":' * levels + b"1" + b"}" * levels + b"}"


# --- reading both ways -----------------------------------------------------------------------


def line_by_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "whole_lines", lambda data, max_line: None)
    monkeypatch.setattr(sources, "_keeps_types", lambda block, written, schema: False)


def typed(value: Any) -> Any:
    """A value with its type spelled out: 1, 1.0 and True must not compare equal."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def read_all(path: Path, schema: dict[str, pl.DataType] | None) -> dict[str, Any]:
    """Every record read from ``path``: typed values by row number, bad records, bytes."""
    rows: dict[int, Any] = {}
    bad: list[tuple[int, str, str]] = []
    consumed = 0
    for batch in sources.read_batches(detect(path), SourceConfig().csv, 7, schema):
        names = [str(dt) for dt in batch.frame.dtypes]
        for values in batch.frame.iter_rows(named=True):
            row = values.pop(sources.ROW)
            assert row not in rows
            rows[row] = (names, typed(values))
        bad += [(b.row, b.raw, b.reason) for b in batch.bad]
        consumed += batch.bytes_read
    return {"rows": rows, "bad": sorted(bad), "consumed": consumed}


def profiled(path: Path) -> tuple[dict[str, pl.DataType], dict[str, pl.DataType] | None, int]:
    prof: FileProfile = profile(detect(path), SourceConfig(), wants_kind=lambda _: True)
    return prof.schema, prof.read_schema, prof.rows


def both_ways(
    path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(profile, records without and with the file's types) by blocks, then line by line."""
    out = []
    with monkeypatch.context() as m:
        m.setattr(sources, "CHUNK_BYTES", chunk)
        for reference in (False, True):
            if reference:
                line_by_line(m)
            schema, read_schema, rows = profiled(path)
            out.append(
                ((schema, read_schema, rows), read_all(path, None), read_all(path, read_schema))
            )
    return out[0], out[1]


def assert_same_both_ways(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    for chunk in CHUNKS:
        blocks, lines = both_ways(path, monkeypatch, chunk)
        assert blocks[0] == lines[0], f"profile differs at CHUNK_BYTES={chunk}"
        assert blocks[1] == lines[1], f"records (nested) differ at CHUNK_BYTES={chunk}"
        assert blocks[2] == lines[2], f"records (typed) differ at CHUNK_BYTES={chunk}"
    return blocks


# --- files mixing clean blocks with lines that need the exact path ---------------------------


def mixed_file(
    tmp_path: Path, *, crlf: bool = False, bom: bool = False, end_nl: bool = True
) -> Path:
    rng = random.Random(7)
    good = lines_of([record(i) for i in range(400)])
    special = {
        40: b'{"event":"view","user_id":',  # cut short: invalid JSON
        90: b"",  # blank
        91: b"   \t",  # whitespace only
        130: b'  {"event":"view","user_id":"indented","ts":"' + TS.encode() + b'"}',
        170: b"[1, 2]",  # not an object
        210: deep_line(MAX_DEPTH + 5),
        # As deep as allowed, with brackets in a string making it look deeper still.
        250: b'{"s":"[[[[","l":' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}",
        260: b'{"user_id":"brackets","s":"' + b"[" * 200 + b'"}',  # inside a string: not deep
        300: b'{"user_id":"long","pad":"' + b"x" * 3000 + b'"}',
        350: BOM + b'{"user_id":"bom-inside"}',
    }
    lines = []
    for i, line in enumerate(good):
        lines.append(special.get(i, line))
        if rng.random() < 0.01:
            lines.append(b'{"late_key":' + str(i).encode() + b',"user_id":"x"}')
    eol = b"\r\n" if crlf else b"\n"
    data = (BOM if bom else b"") + eol.join(lines) + (eol if end_nl else b"")
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "form", [{}, {"crlf": True}, {"bom": True}, {"end_nl": False}, {"crlf": True, "bom": True}]
)
def test_blocks_with_bad_blank_long_deep_and_bom_lines_read_as_line_by_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: dict[str, bool]
) -> None:
    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 2000)
    path = mixed_file(tmp_path, **form)
    (schema, _, rows), nested, _ = assert_same_both_ways(path, monkeypatch)
    assert rows == len(nested["rows"]) + len(nested["bad"]) > 400
    reasons = {row: reason for row, _, reason in nested["bad"]}
    assert any(r.startswith("invalid JSON") for r in reasons.values())
    assert f"nested deeper than {MAX_DEPTH} levels" in reasons.values()
    assert "line longer than 2,000 bytes (the record limit)" in reasons.values()
    assert "a line must be a JSON object, not list" in reasons.values()
    assert "late_key" in schema and "l" in schema


def test_row_numbers_skip_blank_lines_and_count_every_other_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rows.ndjson"
    lines = lines_of([record(i) for i in range(6)])
    path.write_bytes(b"\n".join([lines[0], b"", lines[1], b"oops", lines[2], b" ", *lines[3:]]))
    for chunk in (16, 4 << 20):
        monkeypatch.setattr(sources, "CHUNK_BYTES", chunk)
        got = read_all(path, None)
        assert sorted(got["rows"]) == [1, 2, 4, 5, 6, 7]
        assert [(row, raw) for row, raw, _ in got["bad"]] == [(3, "oops")]
        assert profiled(path)[2] == 7


def test_crlf_lines_read_in_blocks_give_the_values_of_lf_lines(tmp_path: Path) -> None:
    lines = lines_of([record(i, tag="t") for i in range(50)])
    (tmp_path / "lf.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "crlf.ndjson").write_bytes(b"\r\n".join(lines) + b"\r\n")
    assert (
        read_all(tmp_path / "lf.ndjson", None)["rows"]
        == (read_all(tmp_path / "crlf.ndjson", None)["rows"])
    )


# --- preflight: types proven by a typed read, or inferred ------------------------------------

LATE_CHANGES = {
    "a key first seen late": {"late": "x"},
    "an integer key turning float": {"n": 2.5},
    "a float key given a string": {"price": "free"},
    "a new key inside an object": {"ctx": {"page": "/", "new": True}},
    "an object key given a scalar": {"ctx": 5},
    "a list of strings given an object item": {"tags": ["a", {"k": 1}]},
    "a list of strings given a list item": {"tags": [["nested"]]},
    "an empty list key given items": {"empty": [1, 2]},
    "a list of objects given a new member": {"items": [{"sku": "s", "qty": 2}]},
    "a boolean key given a number": {"flag": 1},
    "an integer past 64 bits": {"n": 2**64},
    "a null-only key given a value": {"nothing": "now"},
    "a key only ever null": {"never": None},
    "a nested key only ever null": {"ctx": {"page": "/", "never": None}},
    "a key written with a space before its colon": None,
}


def steady(i: int) -> dict[str, Any]:
    return record(
        i,
        ctx={"page": f"/p{i % 3}"},
        tags=["a", "b"],
        empty=[],
        items=[{"sku": f"s{i}"}],
        flag=i % 2 == 0,
        nothing=None,
    )


@pytest.mark.parametrize("change", list(LATE_CHANGES))
def test_a_change_in_a_late_block_reaches_the_file_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    lines = lines_of([steady(i) for i in range(300)])
    extra = LATE_CHANGES[change]
    if extra is None:
        late = b'{"user_id" : "spaced", "late" : 1}'
    else:
        late = lines_of([{**steady(280), **extra}])[0]
    path = tmp_path / "late.ndjson"
    path.write_bytes(b"\n".join([*lines[:280], late, *lines[280:]]) + b"\n")
    (schema, read_schema, rows), _, _ = assert_same_both_ways(path, monkeypatch)
    assert rows == 301
    line_by_line(monkeypatch)
    monkeypatch.setattr(sources, "CHUNK_BYTES", 1 << 30)  # one chunk: the types of the file
    assert profiled(path) == (schema, read_schema, rows)


def test_a_uniform_file_is_typed_by_reading_its_blocks_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "uniform.ndjson"
    path.write_bytes(b"\n".join(lines_of([steady(i) for i in range(2000)])) + b"\n")
    monkeypatch.setattr(sources, "CHUNK_BYTES", 8192)
    kept: list[bool] = []
    keeps = sources._keeps_types

    def spy(block: Any, written: int | None, schema: dict[str, pl.DataType]) -> bool:
        kept.append(keeps(block, written, schema))
        return kept[-1]

    monkeypatch.setattr(sources, "_keeps_types", spy)
    parsed: list[bytes] = []
    parse_lines = sources._parse_lines
    monkeypatch.setattr(
        sources, "_parse_lines", lambda lines, *a: parsed.extend(lines) or parse_lines(lines, *a)
    )
    _, _, rows = profiled(path)
    assert rows == 2000 and len(kept) > 20
    # The first block is typed from scratch, and so may be the next (two are read at a time).
    assert kept[2:] == [True] * (len(kept) - 2)
    assert len(read_all(path, None)["rows"]) == 2000
    assert parsed == []  # no block went line by line


def test_a_list_mixing_objects_with_other_items_is_text_however_the_file_is_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Alone in a chunk, polars types [false, {}] as a list of texts; with the next line it
    # cannot type the chunk and the file's rule decides: the whole key is text.
    path = tmp_path / "lists.ndjson"
    path.write_bytes(b'{"b":[false,{}]}\n{"a":1,"b":null}\n{"a":2,"b":["x"]}\n')
    seen = set()
    for chunk in (17, 1 << 20):
        monkeypatch.setattr(sources, "CHUNK_BYTES", chunk)
        schema, _, _ = profiled(path)
        seen.add(str(schema["b"]))
        values = [v[1]["b"] for _, v in sorted(read_all(path, dict(schema))["rows"].items())]
        assert values == [("str", "[false, {}]"), ("NoneType", None), ("str", '["x"]')]
    assert seen == {"String"}


# --- a property: any file, any chunk size --------------------------------------------------

KEYS = ["a", "b", "c", "ctx", "tags"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False, width=64)
    | st.text(alphabet='ab:" {}[]\\n', max_size=6)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=6,
)
odd_lines = st.sampled_from(
    [b"", b"  ", b"not json", b"[1]", b"5", b'{"a":1} {"b":2}', b' {"a": 1}', b'{"a" : "s"}']
)
line_values = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), values, max_size=4).map(
        lambda d: json.dumps(d, separators=(",", ":")).encode()
    ),
    st.dictionaries(st.sampled_from(KEYS), values, max_size=4).map(
        lambda d: json.dumps(d).encode()
    ),
    odd_lines,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    head=st.lists(line_values, min_size=1, max_size=20),
    steady_lines=st.integers(min_value=0, max_value=40),
    tail=st.lists(line_values, max_size=20),
    chunk=st.sampled_from([24, 80, 256, 4 << 20]),
)
def test_any_file_reads_alike_in_blocks_line_by_line_and_in_one_piece(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    head: list[bytes],
    steady_lines: int,
    tail: list[bytes],
    chunk: int,
) -> None:
    # A steady middle lets typed reads prove blocks; what comes after may change the types.
    middle = lines_of(
        [
            {"a": i, "b": "s" if i % 2 else None, "ctx": {"x": i}, "tags": ["t"]}
            for i in range(steady_lines)
        ]
    )
    path = tmp_path_factory.mktemp("prop") / "p.ndjson"
    path.write_bytes(b"\n".join([*head, *middle, *tail]) + b"\n")

    def outcome(size: int, *, reference: bool = False) -> tuple[Any, ...]:
        with monkeypatch.context() as m:
            m.setattr(sources, "CHUNK_BYTES", size)
            if reference:
                line_by_line(m)
            try:
                schema, read_schema, rows = profiled(path)
                return (schema, read_schema, rows), read_all(path, read_schema)
            except Exception as e:  # every way must refuse the file alike
                return "error", type(e).__name__, str(e)

    blocks = outcome(chunk)
    assert blocks == outcome(chunk, reference=True)
    # However the file is cut: the same types, so the same values. Not yet for integers past
    # 64 bits: polars types them Int128, orjson (for a part polars cannot type) as floats.
    if not re.search(rb"[0-9]{19}", path.read_bytes()):
        assert blocks[:2] == outcome(1 << 30)[:2]


# --- the checks on their own -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"a":1}\n{"a":2}\n', 2),
        (b'{"a":1}\n{"a":2}', 2),
        (b'{"a":1}\r\n{"a":2}\r\n', 2),
        (b'{"a":1}\n\n{"a":2}\n', None),
        (b'{"a":1}\n \n{"a":2}\n', None),
        (b'{"a":1}\n {"a":2}\n', None),
        (BOM + b'{"a":1}\n', None),
        (b'{"a":1}\n' + BOM + b'{"a":1}\n', None),
        (b"", None),
        (b"[1]\n", None),
    ],
)
def test_whole_lines_counts_lines_only_where_each_starts_an_object(
    data: bytes, expected: int | None
) -> None:
    assert jsonblocks.whole_lines(data, 100) == expected


def test_whole_lines_refuses_a_line_over_the_limit_anywhere_in_the_block() -> None:
    short = b'{"a":1}\n'
    for at in (0, 5, 19):
        lines = [short] * 20
        lines[at] = b'{"a":"' + b"x" * 95 + b'"}\n'
        assert jsonblocks.whole_lines(b"".join(lines), 100) is None
        assert jsonblocks.whole_lines(b"".join(lines), 110) == 20


def test_whole_lines_refuses_a_deep_line_and_lets_a_shallow_one_with_many_brackets_through() -> (
    None
):
    # Deep lines never reach polars here: it crashes on them (checked in a subprocess by
    # test_ndjson_edges); only the bytes are looked at.
    plain = b'{"a":1}\n' * 10
    # deep_line(n): n objects inside the line's own, MAX_DEPTH levels in all at n = MAX_DEPTH - 1
    assert jsonblocks.whole_lines(plain + deep_line(MAX_DEPTH - 1) + b"\n", 1 << 20) == 11
    assert jsonblocks.whole_lines(plain + deep_line(MAX_DEPTH) + b"\n", 1 << 20) is None
    assert jsonblocks.whole_lines(plain + deep_line(5000) + b"\n" + plain, 1 << 20) is None
    wide = b'{"l":[' + b",".join([b"[1]"] * 200) + b"]}\n"
    assert jsonblocks.whole_lines(plain + wide, 1 << 20) == 11
    in_text = b'{"s":"' + b"{" * 300 + b'"}\n'
    assert jsonblocks.whole_lines(in_text + plain, 1 << 20) == 11
    # Many lines, each a little nested: the bound is per line, not per block.
    assert jsonblocks.whole_lines(b'{"a":{"b":[{"c":1}]}}\n' * 100, 1 << 20) == 100


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"a":1,"b":null,"c":"x"}\n', 2),
        (b'{"a": 1, "b": null, "c": {"d": null, "e": [1, {"f": 2}]}}\n', 4),
        (b'{"a":"k:v","b":"say \\":\\" now"}\n', 3),  # escaped quote and colon: one too many
        (b'{"a":":null"}\n', 1),
        (b'{"note":"Prix : 5"}\n', 1),  # a colon after a space, inside text
        (b'{"a" :1}\n', None),  # a key spaced from its colon could hide
        (b'{"a":"x" :1}\n', None),
    ],
)
def test_members_written_never_counts_too_few(data: bytes, expected: int | None) -> None:
    written = jsonblocks.members_written(data)
    assert (None if written is None else written.members) == expected


@pytest.mark.parametrize(
    ("data", "names"),
    [
        (b'{"a":1,"b":"x"}\n', frozenset()),
        (b'{"a":1,"b":null}\n{"c":null,"b":null}\n', frozenset({"b", "c"})),
        (b'{"a": null, "long_name_\xc3\xa9": null}\n', frozenset({"a", "long_name_\u00e9"})),
        (b'{"a":{"b":null}}\n', None),  # nested: its place is not known
        (b'{"a":null,"b":"{"}\n', None),  # a brace in a string: the count is unsure
        (b'{"x\\"y":null}\n', None),  # an escaped quote in the name
        (b'{"' + b"k" * 65 + b'":null}\n', None),
    ],
)
def test_members_written_names_null_members_only_where_they_are_surely_top_level(
    data: bytes, names: frozenset[str] | None
) -> None:
    written = jsonblocks.members_written(data)
    assert written is not None and written.null_names == names


def test_members_read_counts_nested_members_and_doubts_silent_changes() -> None:
    schema = {
        "a": pl.Int64(),
        "o": pl.Struct({"x": pl.Int64(), "y": pl.Struct({"z": pl.String()})}),
        "l": pl.List(pl.Struct({"k": pl.Int64()})),
    }
    data = b'{"a":1,"o":{"x":null,"y":{"z":"s"}},"l":[{"k":1},null,{}]}\n{"o":null,"l":[]}\n'
    frame = pl.read_ndjson(data, schema=schema)
    written, read = jsonblocks.members_written(data), jsonblocks.members_read(frame)
    assert written is not None and read is not None
    assert read.members == written.members == 7
    assert read.objects == 4  # o, o.y, two items of l: the lines' own not counted
    texts = pl.read_ndjson(b'{"t":["a",{"k":1}]}\n', schema={"t": pl.List(pl.String())})
    assert jsonblocks.members_read(texts) is None
    nulls = pl.read_ndjson(b'{"t":["x"]}\n', schema={"t": pl.List(pl.Null())})
    assert nulls.get_column("t").to_list() == [[None]]  # polars drops the value silently
    assert jsonblocks.members_read(nulls) is None


def test_a_block_polars_refuses_whole_is_read_line_by_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every line starts an object, so the block looks clean; polars still refuses it.
    lines = lines_of([record(i) for i in range(10)])
    lines[4] = b'{"event":"view","user_id":"u4","ts":"' + TS.encode() + b'"} trailing'
    path = tmp_path / "refused.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert jsonblocks.whole_lines(path.read_bytes(), 1 << 20) == 10
    got = read_all(path, None)
    assert sorted(got["rows"]) == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert [(row, reason.split(":")[0]) for row, _, reason in got["bad"]] == [(5, "invalid JSON")]


def test_compressed_file_reads_as_the_plain_one(tmp_path: Path) -> None:
    data = mixed_file(tmp_path).read_bytes()
    (tmp_path / "m.ndjson.gz").write_bytes(gzip.compress(data))
    plain, packed = (
        read_all(tmp_path / "mixed.ndjson", None),
        read_all(tmp_path / "m.ndjson.gz", None),
    )
    assert plain["rows"] == packed["rows"] and plain["bad"] == packed["bad"]


def test_small_blocks_are_joined_into_whole_batches_with_bad_lines_kept_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of a few lines are joined up to batch_rows (each batch costs polars a fixed
    overhead); a block with a bad line is passed on as it is, its neighbours not joined over
    it, and every row keeps its number."""
    lines = lines_of([record(i) for i in range(300)])
    lines[150] = b'{"user_id": broken'
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    monkeypatch.setattr(sources, "CHUNK_BYTES", 1024)  # about 12 lines a block
    prof = profile(detect(path), SourceConfig(), wants_kind=lambda c: True)
    batches = list(sources.read_batches(detect(path), SourceConfig().csv, 50, prof.read_schema))
    numbers = [r for b in batches for r in b.frame.get_column(sources.ROW).to_list()]
    assert numbers == [r for r in range(1, 301) if r != 151]
    assert [b.row for batch in batches for b in batch.bad] == [151]
    sizes = [b.frame.height for b in batches]
    assert max(sizes) == 50
    assert sizes.count(50) >= 4  # joined: blocks alone hold about 12 rows
    assert len(batches) < 300 // 12
    assert all(b.frame.get_column(sources.ROW).is_sorted() for b in batches)
    assert sum(b.bytes_read for b in batches) == path.stat().st_size
