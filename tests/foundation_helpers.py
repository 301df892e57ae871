"""Shared helpers for the foundation tests: write a config and data into a temp folder, run the
dry run (``validate``), and hand back the report, the rejected rows and the request bodies.

Import explicitly: ``from tests.foundation_helpers import run, write_config, ...``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from flywheel_import.config import load_config
from flywheel_import.dedupe import SeenIds
from flywheel_import.pipeline import find_inputs, preflight, prepared_batches, validate
from flywheel_import.report import Report

#: A mapping that fits the small CSVs most tests write (columns event, user_id, ts, ...).
BASE_MAPPING: dict[str, Any] = {"event": "event", "user_id": "user_id", "timestamp": "ts"}

DataContent = str | bytes | pl.DataFrame


@dataclass
class Result:
    """What one dry run produced."""

    report: Report
    rejects: list[dict[str, Any]]
    bodies: list[dict[str, Any]]
    rejects_path: Path
    raw_bodies: list[str] = field(default_factory=list)

    def codes(self) -> list[str]:
        return [r["_error_code"] for r in self.rejects]

    def reject_at(self, row: int) -> dict[str, Any]:
        hits = [r for r in self.rejects if r["_row"] == row]
        assert len(hits) == 1, f"expected one reject at row {row}, got {hits}"
        return hits[0]

    def events(self) -> list[dict[str, Any]]:
        return [b["event"] for b in self.bodies]

    def props(self) -> list[dict[str, Any]]:
        return [b["event"].get("properties", {}) for b in self.bodies]


def write_data(folder: Path, name: str, content: DataContent) -> Path:
    """Write one data file: text (UTF-8), raw bytes, or a polars frame (by extension)."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, pl.DataFrame):
        if name.endswith(".parquet"):
            content.write_parquet(path)
        elif name.endswith((".ndjson", ".jsonl")):
            content.write_ndjson(path)
        else:
            content.write_csv(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8"))
    return path


def write_config(
    folder: Path,
    mapping: Mapping[str, Any] | None = None,
    *,
    source: Mapping[str, Any] | None = None,
    name: str = "config.yaml",
    **sections: Any,
) -> Path:
    """Write a mapping file; ``sections`` are other top-level keys (api, validation...)."""
    data: dict[str, Any] = {"mapping": dict(BASE_MAPPING if mapping is None else mapping)}
    if source:
        data["source"] = dict(source)
    data.update(sections)
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def read_rejects(path: Path) -> list[dict[str, Any]]:
    """Rejected rows as dicts of text (``_row`` as int; empty cells as ``None``)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        rows = pl.read_parquet(path).to_dicts()
    elif suffix in (".ndjson", ".jsonl"):
        text = path.read_text(encoding="utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        text = path.read_text(encoding="utf-8")
        rows = [
            {k: (v if v != "" else None) for k, v in r.items()}
            for r in csv.DictReader(io.StringIO(text, newline=""))
        ]
    for r in rows:
        if r.get("_row") is not None:
            r["_row"] = int(r["_row"])
    return rows


def bodies_for(config: Path, inputs: Sequence[str | Path] | None = None) -> list[str]:
    """The exact JSON request texts the dry run would send, in order."""
    cfg = load_config(config)
    jobs = preflight(cfg, find_inputs(cfg, inputs), progress=False)
    out: list[str] = []
    for prep in prepared_batches(cfg, jobs, SeenIds()):
        out.extend(prep.send.get_column("body").to_list())
    return out


def run(
    tmp_path: Path,
    data: DataContent | Mapping[str, DataContent],
    mapping: Mapping[str, Any] | None = None,
    *,
    name: str = "data.csv",
    source: Mapping[str, Any] | None = None,
    inputs: Sequence[str | Path] | None = None,
    rejects_name: str = "rejects.csv",
    **sections: Any,
) -> Result:
    """Write config + data under ``tmp_path``, validate, return report, rejects and bodies.

    ``data`` is one file's content (written as ``name``) or ``{file name: content}``. Without
    ``inputs`` and without ``source.path``, every written file is an input, in name order.
    """
    files = dict(data) if isinstance(data, Mapping) else {name: data}
    data_dir = tmp_path / "data"
    written = [write_data(data_dir, n, c) for n, c in files.items()]
    src = dict(source or {})
    if inputs is None and "path" not in src:
        src["path"] = [str(p.relative_to(tmp_path)) for p in sorted(written)]
    config = write_config(tmp_path, mapping, source=src, **sections)
    out = tmp_path / "out"
    rejects_path = out / rejects_name
    report = validate(config, inputs, rejects=rejects_path, report=out / "report.json")
    raw = bodies_for(config, inputs)
    return Result(
        report, read_rejects(rejects_path), [json.loads(b) for b in raw], rejects_path, raw
    )


def csv_text(header: str, *rows: str, newline: str = "\n") -> str:
    """A CSV document from a header line and row lines."""
    return newline.join([header, *rows]) + newline
