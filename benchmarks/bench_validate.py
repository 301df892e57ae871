"""validate vs polars merely reading the same file, per format: time and peak memory, side by side.

    python benchmarks/bench_validate.py [--rows 2000000] [--repeat 5] [--formats csv,parquet,ndjson]

One 9-column events table (``gen_events.py``) is written three ways: CSV (every cell text, as a
warehouse export has it), Parquet and NDJSON (``price`` a float and ``is_trial`` a boolean, as
typed writers emit them). The baseline is polars' own batched read of the file
(``scan_*(...).collect_batches()``), the least any dry run must do. Each measurement runs in a
fresh subprocess, so peak RSS is its own; baseline and validate alternate and the medians are
compared.

Targets: validate <= 4x the baseline's time on every format; peak RSS <= 1.6x the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("csv", "parquet", "ndjson")
TIME_TARGET = 4.0
RSS_TARGET = 1.6

SCAN = {
    "csv": "pl.scan_csv(path, infer_schema=False)",
    "parquet": "pl.scan_parquet(path)",
    "ndjson": "pl.scan_ndjson(path)",
}

BASELINE = textwrap.dedent("""
    import json, sys, time
    import polars as pl
    path = sys.argv[1]
    t = time.perf_counter()
    rows = 0
    for batch in {scan}.collect_batches():
        rows += batch.height
    print(json.dumps({{"s": time.perf_counter() - t, "rows": rows}}))
""")

VALIDATE = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[3])
    from flywheel_import import validate
    t = time.perf_counter()
    report = validate(sys.argv[2], [sys.argv[1]], rejects=sys.argv[4])
    print(json.dumps({"s": time.perf_counter() - t, "rows": report.rows_read,
                      "rejected": report.rejected}))
""")

# The per-row work no dry run can skip, as a bare script: polars' batched read, then on two
# threads (reading ahead without bound, which validate must not) the event-name pattern, the
# timestamp parsed with its format known (validate detects it), each value as the text the
# body would hold (typed values written, text ones matched against the profile's number and
# boolean patterns), a 64-bit fingerprint of the row's values and a sort of the fingerprints
# for duplicates. No row numbers, messages, rejects, preflight or bounded memory: a floor,
# not a rival.
BARE = textwrap.dedent("""
    import json, sys, time
    from concurrent.futures import ThreadPoolExecutor
    import numpy as np
    import polars as pl
    path = sys.argv[1]
    NUMBER = r"^-?(?:0|[1-9][0-9]{{0,14}})(?:\\.[0-9]{{1,15}})?(?:[eE][+-]?[0-9]{{1,3}})?$"
    def text(batch, name):
        col = pl.col(name)
        dtype = batch.schema[name]
        if dtype == pl.String:
            pattern = "^(?i:true|false)$" if name == "is_trial" else NUMBER
            return pl.when(col.str.contains(pattern)).then(col)
        if dtype == pl.Boolean:
            return pl.when(col).then(pl.lit("true")).otherwise(pl.lit("false"))
        return col.cast(pl.String)
    def work(batch):
        values = batch.select(
            pl.col("event_name").str.contains("^[a-zA-Z0-9_-]+$").alias("ok"),
            pl.col("ts").str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="us",
                                         cache=False).dt.replace_time_zone("UTC"),
            text(batch, "price").alias("price"),
            text(batch, "is_trial").alias("is_trial"),
            "event_id", "event_name", "user_id", "page", "plan", "zip",
        )
        h = pl.lit(1, pl.UInt64)
        for i, name in enumerate(values.columns):
            h = h * pl.lit(0x9E3779B97F4A7C15, pl.UInt64) + pl.col(name).hash(seed=i)
        return np.sort(values.select(h.hash(seed=7)).to_series().to_numpy())
    t = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        keys = list(pool.map(work, {scan}.collect_batches()))
    merged = np.sort(np.concatenate(keys))
    dups = int((merged[1:] == merged[:-1]).sum())
    print(json.dumps({{"s": time.perf_counter() - t, "rows": len(merged), "dups": dups}}))
""")

WRITE = textwrap.dedent("""
    import sys
    from pathlib import Path
    import polars as pl
    csv = Path(sys.argv[1])
    typed = pl.read_csv(csv, infer_schema=False).with_columns(
        pl.col("price").cast(pl.Float64), pl.col("is_trial") == "true"
    )
    for fmt in sys.argv[2:]:
        if fmt == "parquet":
            typed.write_parquet(csv.with_suffix(".parquet"))
        else:
            typed.write_ndjson(csv.with_suffix(".ndjson"))
""")

CONFIG = """
mapping:
  event: event_name
  user_id: user_id
  timestamp: {column: ts, timezone: UTC}
  properties: {types: {zip: string}}
"""


def run(code: str, *args: str) -> dict[str, Any]:
    """``code`` in a fresh interpreter: its last JSON line, plus its own peak RSS (the
    kernel's count for the child, from ``wait4``)."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=out)
        _, status, usage = os.wait4(proc.pid, 0)
        exit_code = os.waitstatus_to_exitcode(status)
        if exit_code:
            raise SystemExit(f"benchmark subprocess failed with exit code {exit_code}: {args}")
        out.seek(0)
        result: dict[str, Any] = json.loads(out.read().strip().splitlines()[-1])
    result["rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    return result


def generate(path: Path, rows: int) -> None:
    """``gen_events.py``'s table of ``rows`` rows as CSV at ``path`` (kept if already there)."""
    if not path.exists():
        script = str(ROOT / "benchmarks" / "gen_events.py")
        subprocess.run([sys.executable, script, str(path), "--rows", str(rows)], check=True)


def write_formats(csv: Path, formats: tuple[str, ...]) -> dict[str, Path]:
    """The table of ``csv`` written once per format next to it (kept if already there)."""
    paths = {f: csv.with_suffix(f".{f}") for f in formats}
    todo = [f for f in formats if f != "csv" and not paths[f].exists()]
    if todo:  # in a child: a large parent would lend its peak RSS to every later fork
        subprocess.run([sys.executable, "-c", WRITE, str(csv), *todo], check=True)
    return paths


def compare(path: Path, repeat: int, work: Path, fmt: str = "csv") -> dict[str, Any]:
    """``repeat`` alternating runs of the baseline and of validate on ``path``: the medians."""
    config = work / "bench.yaml"
    config.write_text(CONFIG)
    baseline = BASELINE.format(scan=SCAN[fmt])
    bare_script = BARE.format(scan=SCAN[fmt])
    base, mine, bare = [], [], []
    for _ in range(repeat):
        base.append(run(baseline, str(path)))
        mine.append(run(VALIDATE, str(path), str(config), str(ROOT), str(work / "rejects.csv")))
        bare.append(run(bare_script, str(path)))
    bt = statistics.median(r["s"] for r in base)
    vt = statistics.median(r["s"] for r in mine)
    ft = statistics.median(r["s"] for r in bare)
    bm = statistics.median(r["rss_mb"] for r in base)
    vm = statistics.median(r["rss_mb"] for r in mine)
    if mine[0]["rows"] != base[0]["rows"]:
        raise SystemExit(f"{fmt}: validate read {mine[0]['rows']} rows, polars {base[0]['rows']}")
    return {
        "format": fmt,
        "rows": mine[0]["rows"],
        "rejected": mine[0]["rejected"],
        "mb": path.stat().st_size / 1e6,
        "baseline_s": bt,
        "validate_s": vt,
        "time_ratio": vt / bt,
        "bare_s": ft,
        "bare_ratio": ft / bt,
        "baseline_rss_mb": bm,
        "validate_rss_mb": vm,
        "rss_ratio": vm / bm,
        "baseline_runs_s": [r["s"] for r in base],
        "validate_runs_s": [r["s"] for r in mine],
        "bare_runs_s": [r["s"] for r in bare],
    }


def compare_formats(
    csv: Path, repeat: int, work: Path, formats: tuple[str, ...] = FORMATS
) -> dict[str, dict[str, Any]]:
    paths = write_formats(csv, formats)
    return {f: compare(paths[f], repeat, work, f) for f in formats}


def print_table(results: dict[str, dict[str, Any]]) -> None:
    first = next(iter(results.values()))
    print(f"{first['rows']:,.0f} rows; validate rejected {first['rejected']:,.0f} in each format")
    print(
        f"{'format':8} {'MB':>6} {'polars s':>9} {'validate s':>11} {'ratio':>6}   "
        f"{'polars MB':>9} {'validate MB':>11} {'ratio':>6}"
    )
    for f, r in results.items():
        print(
            f"{f:8} {r['mb']:6.0f} {r['baseline_s']:9.2f} {r['validate_s']:11.2f} "
            f"{r['time_ratio']:5.1f}x   {r['baseline_rss_mb']:9.0f} {r['validate_rss_mb']:11.0f} "
            f"{r['rss_ratio']:5.2f}x"
        )
    print(f"targets: time <= {TIME_TARGET:g}x, peak RSS <= {RSS_TARGET:g}x, on every format")
    print("the floor: a bare script doing only the per-row work a dry run cannot skip")
    for f, r in results.items():
        print(
            f"  {f:8} bare {r['bare_s']:.2f} s = {r['bare_ratio']:.1f}x polars; "
            f"validate {r['validate_s'] / r['bare_s']:.2f}x the bare script"
        )
    for f, r in results.items():
        print(
            f"runs (s) {f}: polars "
            + ", ".join(f"{t:.2f}" for t in r["baseline_runs_s"])
            + " | validate "
            + ", ".join(f"{t:.2f}" for t in r["validate_runs_s"])
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--keep", type=Path, help="generate (or reuse) the files in this folder")
    args = ap.parse_args()
    formats = tuple(f for f in args.formats.split(",") if f)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        ap.error(f"unknown formats: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        csv = folder / f"events-{args.rows}.csv"
        generate(csv, args.rows)
        print_table(compare_formats(csv, args.repeat, Path(tmp), formats))


if __name__ == "__main__":
    main()
