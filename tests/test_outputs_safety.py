"""Outputs never lose rows: an output that is also an input is refused, an exit-2 error leaves
every file as it was, and a reader of stdout that goes away does not change the exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel_import.cli import main
from flywheel_import.sandbox import Sandbox
from tests.foundation_helpers import csv_text, read_rejects

TS = "2024-01-15 10:30:00"
KEY = "outputs-safety-key"
MAPPING = "mapping: {event: event, user_id: user_id, timestamp: ts}\n"
DIRTY = csv_text("event,user_id,ts", f"ok,u1,{TS}", f"bad!,u2,{TS}", f"ok,u3,{TS}")


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under ``root``, hidden ones included."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("flywheel-import: error: ") and "Traceback" not in err
    return lines[0]


def write_config(
    folder: Path,
    *,
    name: str = "m.yaml",
    out: str = "out",
    body: str = MAPPING,
    source: str = "{path: data/events.csv}",
) -> Path:
    cfg = folder / name
    cfg.write_text(
        f"source: {source}\napi: {{key_env: SAFETY_KEY}}\n{body}"
        f"output: {{rejects: {out}/rejects.csv, report: {out}/report.json}}\n"
    )
    return cfg


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config, its data, and the outputs of a first dry run (one rejected row)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAFETY_KEY", raising=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "events.csv").write_text(DIRTY)
    write_config(tmp_path)
    assert main(["validate", "m.yaml", "--no-progress"]) == 1
    assert len(read_rejects(tmp_path / "out" / "rejects.csv")) == 1
    return tmp_path


# --- 1. an output that is also an input is refused -------------------------------------------


def test_feeding_the_rejects_file_back_to_itself_is_refused_and_keeps_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("d.csv").write_text(DIRTY)
    Path("m.yaml").write_text(MAPPING + "output: {rejects: rejects.csv}\n")
    assert main(["validate", "m.yaml", "d.csv", "--no-progress"]) == 1
    fixed = Path("rejects.csv").read_text().replace("bad!", "fixed")
    Path("rejects.csv").write_text(fixed)
    before = snapshot(tmp_path)
    capsys.readouterr()

    assert main(["validate", "m.yaml", "rejects.csv", "--no-progress"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "rejects.csv" in line and "--rejects rejects-2.csv" in line
    assert snapshot(tmp_path) == before

    # The command the error suggests (and the README shows) re-drives the fixed row.
    assert (
        main(["validate", "m.yaml", "rejects.csv", "--rejects", "rejects-2.csv", "--no-progress"])
        == 0
    )
    assert "valid (would be sent): 1" in capsys.readouterr().out
    assert Path("rejects.csv").read_text() == fixed
    assert read_rejects(tmp_path / "rejects-2.csv") == []
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "flywheel-import validate m.yaml rejects.csv --rejects rejects-2.csv" in readme


def test_a_run_fed_its_own_rejects_file_is_refused_before_sending_anything(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rejects = workdir / "out" / "rejects.csv"
    # Many rows, and a key the API refuses: a run stopped at once would leave most unsent.
    rejects.write_text(csv_text("event,user_id,ts", *(f"fixed,u{i},{TS}" for i in range(200))))
    before = snapshot(workdir)
    capsys.readouterr()
    monkeypatch.setenv("SAFETY_KEY", "not-" + KEY)
    with Sandbox(key=KEY) as sb:
        code = main(["run", "m.yaml", "out/rejects.csv", "--api-url", sb.url, "--no-progress"])
        stats = sb.stats()
    assert code == 2
    assert "--rejects rejects-2.csv" in one_line_error(capsys.readouterr().err)
    assert stats.get("requests", 0) == 0
    assert snapshot(workdir) == before


def _glob(root: Path) -> list[str]:
    return ["validate", "m.yaml", "*/*.csv"]


def _folder(root: Path) -> list[str]:
    return ["validate", "m.yaml", "."]


def _absolute(root: Path) -> list[str]:
    return ["validate", "m.yaml", str(root / "data" / ".." / "out" / "rejects.csv")]


def _symlink(root: Path) -> list[str]:
    (root / "data" / "link.csv").symlink_to(root / "out" / "rejects.csv")
    return ["validate", "m.yaml", "data/link.csv"]


def _hardlink(root: Path) -> list[str]:
    os.link(root / "out" / "rejects.csv", root / "data" / "hard.csv")
    return ["validate", "m.yaml", "data/hard.csv"]


def _rejects_onto_the_input(root: Path) -> list[str]:
    return ["validate", "m.yaml", "--rejects", "data/events.csv"]


def _report_onto_the_input(root: Path) -> list[str]:
    return ["validate", "m.yaml", "--report", "./data/../data/events.csv"]


def _report_onto_the_rejects(root: Path) -> list[str]:
    return ["validate", "m.yaml", "--report", "out/rejects.csv"]


def _input_folder_holding_the_rejects(root: Path) -> list[str]:
    write_config(root, name="in-folder.yaml", out="data", source="{path: data}")
    (root / "data" / "rejects.csv").write_text(DIRTY)  # an earlier run's, or being fixed
    return ["validate", "in-folder.yaml"]


@pytest.mark.parametrize(
    "setup",
    [
        _glob,
        _folder,
        _absolute,
        _symlink,
        _hardlink,
        _rejects_onto_the_input,
        _report_onto_the_input,
        _report_onto_the_rejects,
        _input_folder_holding_the_rejects,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_an_output_that_is_also_an_input_is_refused_whichever_way_it_is_named(
    workdir: Path, setup: Callable[[Path], list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = setup(workdir)
    before = snapshot(workdir)
    capsys.readouterr()
    assert main([*argv, "--no-progress"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "--rejects" in line or "--report" in line or "same file" in line
    assert snapshot(workdir) == before


def test_a_report_beside_the_inputs_is_not_an_input(workdir: Path) -> None:
    """Only files the run would read count: a .json report in the input folder is fine."""
    write_config(workdir, name="beside.yaml", out="data", source="{path: data}")
    assert main(["validate", "beside.yaml", "--rejects", "out/r2.csv", "--no-progress"]) == 1
    assert main(["validate", "beside.yaml", "--rejects", "out/r2.csv", "--no-progress"]) == 1
    assert (workdir / "data" / "report.json").exists()


# --- 2. an exit-2 error touches nothing ------------------------------------------------------


def _bad_config(root: Path, out: str, env: pytest.MonkeyPatch) -> list[str]:
    write_config(root, name="c.yaml", out=out, body=MAPPING.replace("}", ", colour: red}"))
    return ["validate", "c.yaml"]


def _missing_column(root: Path, out: str, env: pytest.MonkeyPatch) -> list[str]:
    write_config(
        root, name="c.yaml", out=out, body=MAPPING.replace("user_id: user_id", "user_id: nope")
    )
    return ["validate", "c.yaml"]


def _missing_input(root: Path, out: str, env: pytest.MonkeyPatch) -> list[str]:
    write_config(root, name="c.yaml", out=out)
    return ["validate", "c.yaml", "data/nope.csv"]


def _duplicate_header(root: Path, out: str, env: pytest.MonkeyPatch) -> list[str]:
    (root / "data" / "dup.csv").write_text(csv_text("event,user_id,ts,ts", f"a,u1,{TS},x"))
    write_config(root, name="c.yaml", out=out)
    return ["validate", "c.yaml", "data/dup.csv"]


def _duplicate_header_in_a_run(root: Path, out: str, env: pytest.MonkeyPatch) -> list[str]:
    """Found by the reader once sending has started, before any row was taken."""
    env.setenv("SAFETY_KEY", KEY)
    return ["run", *_duplicate_header(root, out, env)[1:], "--api-url", "http://127.0.0.1:9"]


def _empty_file(root: Path, out: str, env: pytest.MonkeyPatch) -> list[str]:
    (root / "data" / "empty.csv").write_bytes(b"")
    write_config(root, name="c.yaml", out=out)
    return ["validate", "c.yaml", "data/empty.csv"]


def _unreadable_parquet(root: Path, out: str, env: pytest.MonkeyPatch) -> list[str]:
    (root / "data" / "x.parquet").write_bytes(b"PAR1 this is not parquet at all")
    write_config(root, name="c.yaml", out=out)
    return ["validate", "c.yaml", "data/x.parquet"]


def _invalid_encoding(root: Path, out: str, env: pytest.MonkeyPatch) -> list[str]:
    (root / "data" / "ascii.csv").write_bytes(f"event,user_id,ts\na,u\xe9,{TS}\n".encode())
    write_config(
        root, name="c.yaml", out=out, source="{path: data/ascii.csv, csv: {encoding: ascii}}"
    )
    return ["validate", "c.yaml"]


def _report_is_a_folder(root: Path, out: str, env: pytest.MonkeyPatch) -> list[str]:
    write_config(root, name="c.yaml", out=out)
    return ["validate", "c.yaml", "--report", "data"]


def _rejects_folder_cannot_be_made(root: Path, out: str, env: pytest.MonkeyPatch) -> list[str]:
    write_config(root, name="c.yaml", out=out)
    return ["validate", "c.yaml", "--rejects", "data/events.csv/sub/r.csv"]


def _unknown_flag(root: Path, out: str, env: pytest.MonkeyPatch) -> list[str]:
    write_config(root, name="c.yaml", out=out)
    return ["validate", "c.yaml", "--colour"]


def _missing_api_key(root: Path, out: str, env: pytest.MonkeyPatch) -> list[str]:
    write_config(root, name="c.yaml", out=out)
    env.delenv("SAFETY_KEY", raising=False)
    return ["run", "c.yaml", "--api-url", "http://127.0.0.1:9"]


def _insecure_url(root: Path, out: str, env: pytest.MonkeyPatch) -> list[str]:
    write_config(root, name="c.yaml", out=out)
    env.setenv("SAFETY_KEY", KEY)
    return ["run", "c.yaml", "--api-url", "http://api.example.com"]


EXIT_2 = [
    _bad_config,
    _missing_column,
    _missing_input,
    _duplicate_header,
    _duplicate_header_in_a_run,
    _empty_file,
    _unreadable_parquet,
    _invalid_encoding,
    _report_is_a_folder,
    _rejects_folder_cannot_be_made,
    _unknown_flag,
    _missing_api_key,
    _insecure_url,
]


@pytest.mark.parametrize("out", ["out", "new/out"], ids=["existing-outputs", "new-folder"])
@pytest.mark.parametrize("setup", EXIT_2, ids=lambda f: f.__name__.strip("_"))
def test_an_exit_2_error_leaves_every_file_and_folder_as_it_was(
    workdir: Path,
    setup: Callable[[Path, str, pytest.MonkeyPatch], list[str]],
    out: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = setup(workdir, out, monkeypatch)
    before = snapshot(workdir)
    capsys.readouterr()
    assert main([*argv, "--no-progress"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert snapshot(workdir) == before


def corrupt_parquet(path: Path, *, groups: int, rows_per_group: int, corrupt: int) -> None:
    """A Parquet file whose metadata reads fine but whose row group ``corrupt`` does not."""
    n = groups * rows_per_group
    table = pa.table(
        {
            "event": ["bad!" if i == 0 else "ok" for i in range(n)],
            "user_id": [f"u{i}" for i in range(n)],
            "ts": [TS] * n,
        }
    )
    pq.write_table(
        table, path, row_group_size=rows_per_group, compression="zstd", use_dictionary=False
    )
    column = pq.ParquetFile(path).metadata.row_group(corrupt).column(0)
    data = bytearray(path.read_bytes())
    end = column.data_page_offset + column.total_compressed_size
    data[end - 12 : end] = bytes(b ^ 0xFF for b in data[end - 12 : end])
    path.write_bytes(bytes(data))


def test_a_failure_after_rows_were_read_still_writes_what_was_gathered(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt_parquet(workdir / "data" / "late.parquet", groups=6, rows_per_group=10, corrupt=5)
    write_config(workdir, name="late.yaml", source="{path: data/late.parquet, batch_rows: 10}")
    assert main(["validate", "late.yaml", "--no-progress"]) == 2
    assert "unreadable near row 51" in one_line_error(capsys.readouterr().err)
    rejects = read_rejects(workdir / "out" / "rejects.csv")
    assert [(Path(r["_source"]).name, r["_row"]) for r in rejects] == [("late.parquet", 1)]
    report = json.loads((workdir / "out" / "report.json").read_text())
    assert report["completed"] is False and report["rows_read"] > 0
    assert "unreadable near row 51" in report["error"]


# --- 3. a broken pipe keeps the exit code ----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [(DIRTY, 1), (DIRTY.replace("bad!", "ok"), 0)],
    ids=["with-rejects", "clean"],
)
def test_a_closed_stdout_pipe_keeps_the_exit_code_and_prints_nothing_on_stderr(
    workdir: Path, data: str, expected: int
) -> None:
    (workdir / "data" / "events.csv").write_text(data)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away before a byte was written (as `| head -0`)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "flywheel_import", "validate", "m.yaml", "--no-progress"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=workdir,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.returncode == expected
    assert done.stderr.decode() == ""


def test_a_reader_that_takes_one_line_then_leaves_keeps_the_exit_code(workdir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel_import", "validate", "m.yaml", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=workdir,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1
    assert first.startswith(b"Dry run finished")
    assert err == b""
