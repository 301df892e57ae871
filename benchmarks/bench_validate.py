"""validate vs a bare polars batched read of the same CSV: time and peak memory, side by side.

    python benchmarks/bench_validate.py [--rows 2000000] [--repeat 7] [--csv PATH]

Each measurement runs in a fresh subprocess (so peak RSS is its own), alternating baseline and
validate, and the medians are compared. Targets: validate <= 6x the baseline's time; peak RSS
<= 600 MB and <= 1.6x the baseline's peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

BASELINE = textwrap.dedent("""
    import json, resource, sys, time
    import polars as pl
    t = time.perf_counter()
    rows = 0
    for batch in pl.scan_csv(sys.argv[1], infer_schema=False).collect_batches():
        rows += batch.height
    print(json.dumps({"s": time.perf_counter() - t, "rows": rows,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")

VALIDATE = textwrap.dedent("""
    import json, resource, sys, time
    sys.path.insert(0, sys.argv[3])
    from flywheel_import import validate
    t = time.perf_counter()
    report = validate(sys.argv[2], [sys.argv[1]], rejects=sys.argv[4])
    print(json.dumps({"s": time.perf_counter() - t, "rows": report.rows_read,
                      "rejected": report.rejected,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")

CONFIG = """
mapping:
  event: event_name
  user_id: user_id
  timestamp: {column: ts, timezone: UTC}
  properties: {types: {zip: string}}
"""


def run(code: str, *args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def compare(csv: Path, repeat: int, work: Path) -> dict[str, Any]:
    """``repeat`` alternating runs of the baseline and of validate on ``csv``: the medians."""
    config = work / "bench.yaml"
    config.write_text(CONFIG)
    base, mine = [], []
    for _ in range(repeat):
        base.append(run(BASELINE, str(csv)))
        mine.append(run(VALIDATE, str(csv), str(config), str(ROOT), str(work / "rejects.csv")))
    bt = statistics.median(r["s"] for r in base)
    vt = statistics.median(r["s"] for r in mine)
    bm = statistics.median(r["rss_mb"] for r in base)
    vm = statistics.median(r["rss_mb"] for r in mine)
    return {
        "rows": mine[0]["rows"],
        "rejected": mine[0]["rejected"],
        "mb": csv.stat().st_size / 1e6,
        "baseline_s": bt,
        "validate_s": vt,
        "time_ratio": vt / bt,
        "baseline_rss_mb": bm,
        "validate_rss_mb": vm,
        "rss_ratio": vm / bm,
        "baseline_runs_s": [r["s"] for r in base],
        "validate_runs_s": [r["s"] for r in mine],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--csv", type=Path, help="reuse this file instead of generating one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        csv = args.csv or work / "events.csv"
        if args.csv is None:
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "benchmarks" / "gen_events.py"),
                    str(csv),
                    "--rows",
                    str(args.rows),
                ],
                check=True,
            )
        r = compare(csv, args.repeat, work)
    print(f"file: {r['rows']:,.0f} rows ({r['mb']:.0f} MB); validate rejected {r['rejected']:,.0f}")
    print(
        f"time   baseline {r['baseline_s']:6.2f}s  validate {r['validate_s']:6.2f}s  "
        f"ratio {r['time_ratio']:4.1f}x (target <= 6x)"
    )
    print(
        f"peak   baseline {r['baseline_rss_mb']:6.0f}MB validate {r['validate_rss_mb']:6.0f}MB "
        f"ratio {r['rss_ratio']:4.2f}x (target <= 1.6x and <= 600 MB)"
    )
    print(
        "runs (s): baseline "
        + ", ".join(f"{t:.2f}" for t in r["baseline_runs_s"])
        + " | validate "
        + ", ".join(f"{t:.2f}" for t in r["validate_runs_s"])
    )


if __name__ == "__main__":
    main()
