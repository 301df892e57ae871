"""NDJSON edge cases: keys of mixed shapes, lines past the record limit, chunk independence.

Every file here is also read with tiny chunks (``CHUNK_BYTES``) and batches, and must give the
same request bodies and the same rejects however it is cut.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from flywheel_import import sources
from flywheel_import.cli import main
from flywheel_import.config import SourceConfig
from flywheel_import.csvsplit import MAX_RECORD_BYTES
from flywheel_import.inputs import detect
from flywheel_import.jsontypes import merge
from flywheel_import.profile import profile
from flywheel_import.sandbox import Sandbox
from tests.foundation_helpers import read_rejects, run, write_config

TS = "2024-01-15T10:30:00Z"
KEY = "ndjson-edges-key-123"


def line(user: str, **props: Any) -> str:
    return json.dumps({"event": "a", "user_id": user, "ts": TS, **props})


def ndjson(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def outcome(
    tmp_path: Path, text: str | bytes, name: str = "events.ndjson", **source: Any
) -> tuple[list[str], list[tuple[int, str, str | None]]]:
    """(request bodies, (row, code, message) of each reject) of one dry run."""
    res = run(tmp_path, text, name=name, source=source or None)
    rejects = [(r["_row"], r["_error_code"], r["_error_message"]) for r in res.rejects]
    return res.raw_bodies, sorted(rejects)


def every_chunking(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    text: str | bytes,
    name: str = "events.ndjson",
    chunks: tuple[int, ...] = (50, 300, 4 << 20),
) -> tuple[list[str], list[tuple[int, str, str | None]]]:
    """The outcome with each chunk size (and a tiny batch size); asserts they are identical."""
    results = []
    for i, size in enumerate(chunks):
        monkeypatch.setattr(sources, "CHUNK_BYTES", size)
        results.append(outcome(tmp_path / f"c{i}", text, name, batch_rows=2))
    for other in results[1:]:
        assert other == results[0]
    return results[0]


# --- keys whose values mix objects, arrays and scalars ---------------------------------------

MIXED = ndjson(
    line("u1", ctx="plain", n=1, o={"b": 1, "a": 2}, tags=["x"]),
    line("u2", ctx={"a": 1, "z": [1, {"q": None}]}, n=2.5, o={"a": {"deep": True}}),
    line("u3", ctx=[1, 2], n=None, tags=[]),
    line("u4", ctx=5, tags=["y", "z"]),
    line("u5", ctx=True, o={"b": "x"}),
    line("u6", ctx=None),
)


def test_key_mixing_objects_arrays_and_scalars_is_one_text_property(tmp_path: Path) -> None:
    bodies, rejects = outcome(tmp_path, MIXED)
    assert rejects == []
    props = [json.loads(b)["event"].get("properties", {}) for b in bodies]
    assert [p.get("ctx") for p in props] == [
        "plain",
        '{"a": 1, "z": [1, {"q": null}]}',
        "[1, 2]",
        "5",
        "true",
        None,
    ]
    # Nested keys follow the same rule: o.a holds 2 and an object, o.b 1 and "x".
    assert [(p.get("o.a"), p.get("o.b")) for p in props] == [
        ("2", "1"),
        ('{"deep": true}', None),
        (None, None),
        (None, None),
        (None, "x"),
        (None, None),
    ]
    # A key that is only ever an array stays JSON text of the array, a number a number.
    assert [p.get("tags") for p in props] == ['["x"]', None, "[]", '["y","z"]', None, None]
    assert [p.get("n") for p in props] == [1.0, 2.5, None, None, None, None]


def test_mixed_key_bodies_are_identical_however_the_file_is_chunked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    filler = [
        line(f"f{i}", ctx={"page": f"/p{i}", "n": i}, o={"z": 1, "y": 2}, n=i) for i in range(16)
    ]
    # The mixing happens in one place only: with small chunks, most chunks never see it.
    text = ndjson(
        *filler[:8],
        line("m1", ctx="scalar", n=0.5),
        line("m2", ctx=[1]),
        *filler[8:],
        line("m3", o={"y": {"deep": 1}}),
    )
    bodies, rejects = every_chunking(tmp_path, monkeypatch, text)
    assert rejects == []
    props = [json.loads(b)["event"]["properties"] for b in bodies]
    assert props[0] == {"ctx": '{"page": "/p0", "n": 0}', "o.y": "2", "o.z": 1, "n": 0.0}
    assert props[8] == {"ctx": "scalar", "n": 0.5}
    assert props[9] == {"ctx": "[1]"}
    assert props[-1] == {"o.y": '{"deep": 1}'}


def test_keys_are_in_name_order_however_the_file_is_chunked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # polars orders the keys it infers by what a chunk holds: nested {c, b} for the first two
    # lines in one chunk, {b} and then {b, c} in two; top-level keys much the same.
    rng = np.random.default_rng(3)
    others = [
        line(f"r{i}", **{k: i for k in rng.choice(list("hgfedcba"), 3, replace=False)})
        for i in range(30)
    ]
    text = ndjson(line("k1", p={"b": 1}), line("k2", p={"c": "x", "b": 2}), *others)
    bodies, _ = every_chunking(tmp_path, monkeypatch, text, chunks=(90, 700, 4 << 20))
    keys = [list(json.loads(b)["event"]["properties"]) for b in bodies]
    assert keys[:2] == [["p.b"], ["p.b", "p.c"]]
    assert all(k == sorted(k) for k in keys)


def test_mixed_key_in_one_chunk_and_across_chunks_reads_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = ndjson(
        line("u1", v={"a": 1}),
        line("u2", v=[1, {"b": 2}]),
        line("u3", v=7),
        line("u4", v=[[1], 2]),
        line("u5", v=[[1], [{"c": None}]]),
    )
    bodies, rejects = every_chunking(tmp_path, monkeypatch, text, chunks=(16, 4 << 20))
    assert rejects == []
    values = [json.loads(b)["event"]["properties"]["v"] for b in bodies]
    assert values == ['{"a": 1}', '[1, {"b": 2}]', "7", "[[1], 2]", '[[1], [{"c": null}]]']


def test_preflight_types_a_mixed_key_as_text() -> None:
    assert merge(pl.Struct({"a": pl.Int64}), pl.String) == pl.String
    assert merge(pl.List(pl.Int64), pl.Int64) == pl.String
    assert merge(pl.List(pl.Int64), pl.Struct({"a": pl.Int64})) == pl.String
    assert merge(pl.List(pl.Int64), pl.List(pl.Struct({"a": pl.Int64}))) == pl.String
    assert merge(pl.List(pl.Int64), pl.List(pl.String)) == pl.List(pl.String)
    assert merge(pl.Int64, pl.Float64) == pl.Float64
    assert merge(pl.Int64, pl.Boolean) == pl.String
    assert merge(pl.Null, pl.Struct({"b": pl.Int64, "a": pl.Int64})) == pl.Struct(
        {"b": pl.Int64, "a": pl.Int64}
    )
    assert merge(
        pl.Struct({"b": pl.Int64}), pl.Struct({"a": pl.Boolean, "b": pl.Float64})
    ) == pl.Struct({"a": pl.Boolean, "b": pl.Float64})


def test_profile_of_mixed_file_is_flat_for_the_plan_and_nested_for_reading(tmp_path: Path) -> None:
    path = tmp_path / "m.ndjson"
    path.write_text(MIXED)
    prof = profile(detect(path), SourceConfig(), wants_kind=lambda _: True)
    assert prof.schema["ctx"] == pl.String and prof.schema["o.a"] == pl.String
    assert prof.schema["n"] == pl.Float64 and prof.schema["tags"] == pl.List(pl.String)
    assert prof.read_schema is not None
    assert prof.read_schema["o"] == pl.Struct({"a": pl.String, "b": pl.String})
    assert prof.rows == 6


def test_mixed_file_is_sent_not_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "events.ndjson"
    data.write_text(MIXED)
    cfg = write_config(
        tmp_path,
        {"event": "event", "user_id": "user_id", "timestamp": "ts"},
        source={"path": data.name},
        api={"key_env": "NDJSON_EDGES_KEY"},
    )
    monkeypatch.setenv("NDJSON_EDGES_KEY", KEY)
    with Sandbox(key=KEY) as sb:
        code = main(["run", str(cfg), "--api-url", sb.url, "--no-progress", "--rate", "0"])
        stored = [e["body"]["event"] for e in sb.events()]
    assert code == 0
    assert [e["properties"].get("ctx") for e in stored] == [
        "plain",
        '{"a": 1, "z": [1, {"q": null}]}',
        "[1, 2]",
        "5",
        "true",
        None,
    ]


def test_line_that_does_not_fit_the_file_types_is_a_malformed_row() -> None:
    # What a line changed after preflight would meet: the chunk is read with the file's types.
    lines = [b'{"a": 1}', b'{"a": "x"}', b'{"a": 3}']
    rows = np.arange(1, 4, dtype=np.int64)
    frame, bad, kept = sources._parse_lines(lines, rows, {"a": pl.Int64()})
    assert frame.get_column("a").to_list() == [1, 3] and kept.tolist() == [1, 3]
    assert [(b.row, b.raw) for b in bad] == [(2, '{"a": "x"}')]
    assert bad[0].reason.startswith("does not fit the file's types")


def test_bad_lines_next_to_mixed_keys_are_malformed_and_the_rest_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = ndjson(
        line("u1", v={"a": 1}),
        '{"event": "a", "user_id": ',
        line("u3", v="s"),
        "[1, 2]",
        line("u5", v=2),
    )
    bodies, rejects = every_chunking(tmp_path, monkeypatch, text)
    assert [(row, code) for row, code, _ in rejects] == [(2, "MALFORMED_ROW"), (4, "MALFORMED_ROW")]
    assert [json.loads(b)["event"]["properties"]["v"] for b in bodies] == ['{"a": 1}', "s", "2"]


# --- lines past the record limit -------------------------------------------------------------

LIMIT_REASON = f"line longer than {MAX_RECORD_BYTES:,} bytes (the record limit)"


def long_line_file(pad: int) -> bytes:
    good = [line(f"u{i}").encode() for i in (1, 3, 4)]
    long = ('{"event":"a","user_id":"x","ts":"' + TS + '","pad":"').encode() + b"x" * pad + b'"}'
    return b"\n".join([good[0], long, good[1], b"", good[2]]) + b"\n"


@pytest.mark.parametrize("name", ["events.ndjson", "events.ndjson.gz"])
def test_line_over_the_record_limit_is_one_malformed_row_and_the_file_goes_on(
    tmp_path: Path, name: str
) -> None:
    data = long_line_file(5 << 20)
    res = run(tmp_path, gzip.compress(data) if name.endswith(".gz") else data, name=name)
    assert [e["user_id"] for e in res.events()] == ["u1", "u3", "u4"]
    assert res.report.rows_read == 4
    [reject] = res.rejects
    assert (reject["_row"], reject["_error_code"]) == (2, "MALFORMED_ROW")
    assert reject["_error_message"] == LIMIT_REASON
    assert reject["_raw"].startswith('{"event":"a","user_id":"x"')
    assert len(reject["_raw"]) == sources.LONG_LINE_HEAD + 3 and reject["_raw"].endswith("...")


def test_long_line_at_the_end_without_newline_is_a_malformed_row(tmp_path: Path) -> None:
    data = long_line_file(5 << 20).rstrip(b"\n") + b"\n" + b'{"pad":"' + b"y" * (5 << 20)
    res = run(tmp_path, data, name="events.ndjson")
    assert [e["user_id"] for e in res.events()] == ["u1", "u3", "u4"]
    assert [(r["_row"], r["_error_message"]) for r in res.rejects] == [
        (2, LIMIT_REASON),
        (5, LIMIT_REASON),
    ]


def test_long_lines_are_found_alike_however_the_file_is_chunked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 120)
    monkeypatch.setattr(sources, "LONG_LINE_HEAD", 20)
    pad = '{"pad":"' + "p" * 150 + '"}'
    text = "\ufeff" + ndjson(
        pad,
        line("u2"),
        pad + "   ",
        " " * 130,
        line("u5"),
        pad,
        pad,
        line("u8", note="n" * 30),
        pad,
    )
    bodies, rejects = every_chunking(tmp_path, monkeypatch, text, chunks=(13, 119, 121, 4 << 20))
    assert [json.loads(b)["event"]["user_id"] for b in bodies] == ["u2", "u5", "u8"]
    assert [row for row, _, _ in rejects] == [1, 3, 4, 6, 7, 9]
    assert {message for _, _, message in rejects} == {
        "line longer than 120 bytes (the record limit)"
    }


def test_long_line_is_skipped_without_being_held_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.ndjson"
    path.write_bytes(long_line_file(40 << 20))
    src = detect(path)
    tracemalloc.start()
    try:
        rows: list[int] = []
        bad: list[int] = []
        for batch in sources.read_batches(src, SourceConfig().csv, 1000):
            rows += batch.frame.get_column("__row").to_list()
            bad += [b.row for b in batch.bad]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (rows, bad) == ([1, 3, 4], [2])
    assert peak < 24 << 20  # a few 4 MiB chunks, far from the 40 MiB line


# --- hostile files: a row reject or a one-line error, never an internal error ----------------


def validate_cli(
    tmp_path: Path,
    name: str,
    data: bytes,
    capsys: pytest.CaptureFixture[str],
    mapping: dict[str, Any] | None = None,
) -> tuple[int, list[str]]:
    (tmp_path / name).write_bytes(data)
    cfg = write_config(tmp_path, mapping, source={"path": name}, output={"rejects": "rejects.csv"})
    code = main(["validate", str(cfg), "--no-progress"])
    return code, capsys.readouterr().err.strip().splitlines()


def test_deeply_nested_line_is_a_malformed_row_not_a_crash(tmp_path: Path) -> None:
    # polars overflows its stack on such a line (the process dies), so run it apart.
    deep = (
        '{"event":"a","user_id":"u2","ts":"'
        + TS
        + '","d":'
        + '{"a":' * 1000
        + "1"
        + "}" * 1000
        + "}"
    )
    (tmp_path / "deep.ndjson").write_text(ndjson(line("u1"), deep, line("u3")))
    cfg = write_config(tmp_path, source={"path": "deep.ndjson"}, output={"rejects": "rejects.csv"})
    done = subprocess.run(
        [sys.executable, "-m", "flywheel_import", "validate", str(cfg), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    [reject] = read_rejects(tmp_path / "rejects.csv")
    assert (reject["_row"], reject["_error_message"]) == (2, "nested deeper than 64 levels")


def test_key_written_dotted_and_nested_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ndjson(line("u1", **{"a.b": 1}), line("u2", a={"b": 2})).encode()
    code, err = validate_cli(tmp_path, "dotted.ndjson", data, capsys)
    assert code == 2 and len(err) == 1
    assert "dotted.ndjson" in err[0] and "'a.b' appear twice" in err[0]


def test_corrupt_zstd_ndjson_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = validate_cli(tmp_path, "bad.ndjson.zst", b"not zstd at all", capsys)
    assert code == 2 and len(err) == 1 and "bad.ndjson.zst" in err[0]


def test_arrays_where_ids_times_or_numbers_are_expected_reject_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ndjson(
        json.dumps({"event": "a", "user_id": ["x"], "ts": [1], "n": [1]}), line("u2", n=2)
    ).encode()
    mapping = {
        "event": "event",
        "user_id": "user_id",
        "timestamp": "ts",
        "properties": {"types": {"n": "number"}},
    }
    code, _ = validate_cli(tmp_path, "lists.ndjson", data, capsys, mapping)
    assert code == 1
    [reject] = read_rejects(tmp_path / "rejects.csv")
    assert reject["_row"] == 1
    assert reject["_error_code"] == "INVALID_TIMESTAMP;INVALID_PROPERTY"
    assert reject["user_id"] == '["x"]'


def test_polars_refusing_a_chunk_is_a_one_line_error_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ndjson(line("u1", __row=5)).encode()  # collides with the record number column
    code, err = validate_cli(tmp_path, "row.ndjson", data, capsys)
    assert code == 2 and len(err) == 1
    assert "row.ndjson: cannot read" in err[0] and "internal error" not in err[0]
