"""Results must not depend on where the reader's fixed-size chunks happen to cut the file.

Real files are read in 8 MiB chunks; the chunk size is shrunk here so that records, multi-line
fields, CRLF pairs and multi-byte characters straddle chunk boundaries in a small file.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

import flywheel_import.sources as sources
from tests.foundation_helpers import Result, csv_text, run

ROWS = [
    "signup,u1,2024-01-15 10:30:00,plain",
    'login,u2,2024-01-15 10:31:00,"multi\nline\nnote, with comma"',
    "login,u3,2024-01-15 10:32:00,café crème",
    "",
    "broken,u4",
    'view,u5,2024-01-15 10:33:00,"' + "long " * 40 + '"',
    "bad name!,u6,2024-01-15 10:34:00,x",
    'view,u7,2024-01-15 10:35:00,"say ""hi"""',
    'view,"u8,2024-01-15 10:36:00,unterminated',
    "view,u9,2024-01-15 10:37:00,ünïcödé ✓",
    "view,u10,,empty ts",
    "view,u11,2024-01-15 10:38:00,last",
]
CSV = csv_text("event,user_id,ts,note", *ROWS)
CSV_CRLF = csv_text("event,user_id,ts,note", *ROWS, newline="\r\n")


def _summary(res: Result) -> tuple[object, ...]:
    rejects = sorted((r["_row"], r["_error_code"], r.get("_raw")) for r in res.rejects)
    return res.report.rows_read, res.report.valid, rejects, res.raw_bodies


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[object, ...]]:
    base = tmp_path_factory.mktemp("base")
    return {"lf": _summary(run(base / "lf", CSV)), "crlf": _summary(run(base / "crlf", CSV_CRLF))}


def test_expected_result_of_the_chunking_fixture(expected: dict[str, tuple[object, ...]]) -> None:
    rows_read, valid, rejects, bodies = expected["lf"]
    assert (rows_read, valid) == (11, 7)
    assert rejects == [
        (4, "MALFORMED_ROW", "broken,u4"),
        (6, "INVALID_EVENT_NAME", None),
        (8, "MALFORMED_ROW", 'view,"u8,2024-01-15 10:36:00,unterminated'),
        (10, "MISSING_TIMESTAMP", None),
    ]
    notes = [json.loads(b)["event"]["properties"]["note"] for b in bodies]  # type: ignore[union-attr]
    assert notes == [
        "plain",
        "multi\nline\nnote, with comma",
        "café crème",
        "long " * 40,
        'say "hi"',
        "ünïcödé ✓",
        "last",
    ]
    assert expected["crlf"][:3] == expected["lf"][:3]


@pytest.mark.parametrize("chunk", [23, 37, 64])
@pytest.mark.parametrize("kind", ["lf", "crlf"])
def test_csv_result_does_not_depend_on_chunk_boundaries(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    expected: dict[str, tuple[object, ...]],
    chunk: int,
    kind: str,
) -> None:
    monkeypatch.setattr(sources, "CHUNK_BYTES", chunk)
    res = run(tmp_path, CSV if kind == "lf" else CSV_CRLF, source={"batch_rows": 3})
    assert _summary(res) == expected[kind]


@pytest.mark.parametrize("chunk", [23, 41])
def test_gzip_csv_result_does_not_depend_on_chunk_boundaries(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    expected: dict[str, tuple[object, ...]],
    chunk: int,
) -> None:
    monkeypatch.setattr(sources, "CHUNK_BYTES", chunk)
    res = run(tmp_path, gzip.compress(CSV.encode()), name="data.csv.gz")
    assert _summary(res) == expected["lf"]


def test_csv_header_longer_than_a_read_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "CHUNK_BYTES", 8)
    res = run(tmp_path, CSV)
    assert res.report.rows_read == 11
    assert res.report.valid == 7


def _ndjson(bom: bool) -> bytes:
    lines = []
    for i in range(1, 11):
        obj = {
            "event": "bad!" if i == 6 else "a",
            "user_id": f"u{i}",
            "ts": "2024-01-15T10:30:00Z",
            "code": i if i < 9 else "x",
            "ctx": {"k": i} if i % 2 else {"j": "y"},
            "note": "n" * (5 * i),
        }
        lines.append(json.dumps(obj))
    text = "\n".join(lines[:4]) + "\n\n" + "\n".join(lines[4:]) + "\n"
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode()


def _check_ndjson(res: Result) -> None:
    assert res.report.rows_read == 10
    assert [(r["_row"], r["_error_code"]) for r in res.rejects] == [(6, "INVALID_EVENT_NAME")]
    props = res.props()
    assert [p["code"] for p in props] == ["1", "2", "3", "4", "5", "7", "8", "x", "x"]
    assert props[0]["ctx.k"] == 1
    assert props[1]["ctx.j"] == "y"


def test_ndjson_reference_result(tmp_path: Path) -> None:
    _check_ndjson(run(tmp_path, _ndjson(False), name="data.ndjson"))


@pytest.mark.parametrize("chunk", [40, 97, 150])
def test_ndjson_result_does_not_depend_on_chunk_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(sources, "CHUNK_BYTES", chunk)
    _check_ndjson(run(tmp_path, _ndjson(False), name="data.ndjson", source={"batch_rows": 2}))


def test_ndjson_with_bom_whose_first_line_fits_a_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "CHUNK_BYTES", 150)
    _check_ndjson(run(tmp_path, _ndjson(True), name="data.ndjson"))


def test_ndjson_with_bom_whose_first_line_spans_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "CHUNK_BYTES", 40)
    _check_ndjson(run(tmp_path, _ndjson(True), name="data.ndjson"))
