"""The benchmark report's verdicts and charts, from made-up figures (no measuring here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

# Loaded by path under its own name: "run" alone would be a poor module name on sys.path.
_spec = importlib.util.spec_from_file_location(
    "bench_report", Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
)
assert _spec is not None and _spec.loader is not None
bench_report = importlib.util.module_from_spec(_spec)
sys.modules["bench_report"] = bench_report
_spec.loader.exec_module(bench_report)


def figures(**changes: Any) -> dict[str, Any]:
    procs = {f"processes_{n}": {"eps": 9000.0, "wall_eps": 8000.0, "ratio": 0.9} for n in (1, 2, 4)}
    r: dict[str, Any] = {
        "throughput": {"import_eps": 9000.0, "bare_eps": 10000.0, "ratio": 0.9},
        "processes": {"bare_eps": 10000.0, **procs},
        "rate": {"mean_eps": 201.0, "target": 200, "busiest_window": 210, "busiest_limit": 220.0},
        "latency": {"server_mean_eps": 2010.0},
        "https": {
            "https_eps": 5000.0,
            "http_eps": 8000.0,
            "ratio": 0.62,
            "most_connections": 64,
            "concurrency": 64,
        },
        "converge": {
            "tail_eps": 297.0,
            "server_limit": 300,
            "client_rate": 1000,
            "arrivals_s": [i / 300 for i in range(3000)],
        },
        "random429": {"noisy_eps": 3500.0, "clean_eps": 4000.0, "ratio": 0.875},
        "validate": {
            fmt: {
                "rows": 1000,
                "validate_s": 1.0,
                "baseline_s": 0.3,
                "time_ratio": 3.3,
                "bare_s": 0.6,
                "bare_ratio": 2.0,
                "validate_rss_mb": 300.0,
                "baseline_rss_mb": 250.0,
                "rss_ratio": 1.2,
            }
            for fmt in ("csv", "parquet", "ndjson")
        },
        "memory": {
            "small_rows": 1000,
            "large_rows": 10000,
            "small_rss_mb": 300.0,
            "large_rss_mb": 310.0,
            "rss_ratio": 1.03,
            "small_us_per_row": 1.5,
            "large_us_per_row": 1.4,
            "time_ratio": 0.93,
        },
    }
    for key, value in changes.items():
        section, field = key.split("__")
        r[section][field] = value
    return r


def test_figures_within_their_targets_all_pass_and_diagnostics_have_no_verdict() -> None:
    lines = bench_report.rows(figures())
    assert [x.measure for x in lines if x.ok is False] == []
    assert {x.measure for x in lines if x.ok is None} >= {
        "throughput, events/s",
        "https vs http, events/s",
        "floor: bare per-row checks, parquet, s",
    }


def test_random_429_ratio_below_the_target_is_a_failure_in_the_table() -> None:
    lines = bench_report.rows(figures(random429__ratio=0.5))
    assert [x.measure for x in lines if x.ok is False] == ["random 5% 429s, events/s"]
    assert "FAIL" in bench_report.table(lines)


def test_a_dry_run_over_four_times_polars_read_fails_for_that_format_only() -> None:
    r = figures()
    r["validate"]["parquet"]["time_ratio"] = 4.4
    lines = bench_report.rows(r)
    assert [x.measure for x in lines if x.ok is False] == ["dry run of 1,000 rows, parquet, s"]


def test_more_connections_than_the_concurrency_fails() -> None:
    lines = bench_report.rows(figures(https__most_connections=65))
    assert [x.measure for x in lines if x.ok is False] == ["https, most connections in a run"]


def test_charts_are_written_as_png_files(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    pngs = bench_report.charts(figures(), tmp_path / "charts")
    assert [p.name for p in pngs] == ["converge.png", "memory.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
