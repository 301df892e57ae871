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
    out = subprocess.run([sys.executable, "-c", code, *args], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


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
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gen_events.py"), str(csv),
                            "--rows", str(args.rows)], check=True)
        size = csv.stat().st_size / 1e6
        config = work / "bench.yaml"
        config.write_text(CONFIG)
        base, mine = [], []
        for _ in range(args.repeat):
            base.append(run(BASELINE, str(csv)))
            mine.append(run(VALIDATE, str(csv), str(config), str(ROOT),
                            str(work / "rejects.csv")))
    bt = statistics.median(r["s"] for r in base)
    vt = statistics.median(r["s"] for r in mine)
    bm = statistics.median(r["rss_mb"] for r in base)
    vm = statistics.median(r["rss_mb"] for r in mine)
    print(f"file: {mine[0]['rows']:,.0f} rows ({size:.0f} MB); validate rejected "
          f"{mine[0]['rejected']:,.0f}")
    print(f"time   baseline {bt:6.2f}s  validate {vt:6.2f}s  ratio {vt / bt:4.1f}x (target <= 6x)")
    print(f"peak   baseline {bm:6.0f}MB validate {vm:6.0f}MB ratio {vm / bm:4.2f}x "
          "(target <= 1.6x and <= 600 MB)")
    print("runs (s): baseline " + ", ".join(f"{r['s']:.2f}" for r in base)
          + " | validate " + ", ".join(f"{r['s']:.2f}" for r in mine))


if __name__ == "__main__":
    main()
