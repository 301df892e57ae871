"""Memory of a dry run does not grow with the import: a large file vs a file 10x smaller.

    python benchmarks/bench_memory.py [--small 2000000] [--large 20000000] [--repeat 3]
                                      [--memory-bytes N] [--keep DIR]

Both files come from ``gen_events.py`` and are validated with ``bench_validate.py``'s
mapping (derived ids: every row's content is fingerprinted and kept by the duplicate check).
Each measurement runs in a fresh process; its peak RSS is the kernel's count for that child
(``os.wait4``), its time is measured inside it. The small file runs ``--repeat`` times around
the one run of the large file (medians are quoted). Targets: the large run's peak within 1.25x
the small run's, at the same time per row within 15%. ``--memory-bytes`` lowers the
duplicate check's in-memory bound (default: the library's, 64 MB) to show the same property
on a smaller pair of files.
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

from bench_validate import CONFIG

ROOT = Path(__file__).resolve().parent.parent

VALIDATE = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    from flywheel_import import dedupe, pipeline
    if sys.argv[5] != "default":
        dedupe.DEFAULT_MEMORY_BYTES = int(sys.argv[5])
    made = []
    make = pipeline.seen_ids
    pipeline.seen_ids = lambda run: made.append(make(run)) or made[-1]
    t = time.perf_counter()
    report = pipeline.validate(sys.argv[2], [sys.argv[3]], rejects=sys.argv[4])
    print(json.dumps({"s": time.perf_counter() - t, "rows": report.rows_read,
                      "rejected": report.rejected, "runs_written": made[0].runs_written,
                      "peak_fingerprints": made[0].peak_in_memory}))
""")


def measure(csv: Path, config: Path, rejects: Path, memory_bytes: str) -> dict[str, Any]:
    """One dry run in its own process: its figures and the child's peak RSS."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "-c", VALIDATE, str(ROOT), str(config),
                                 str(csv), str(rejects), memory_bytes], stdout=out)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise SystemExit(f"validate of {csv} failed with exit code {proc.returncode}")
        out.seek(0)
        result: dict[str, Any] = json.loads(out.read().strip().splitlines()[-1])
    result["rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    result["us_per_row"] = result["s"] / result["rows"] * 1e6
    return result


def generate(path: Path, rows: int) -> None:
    if not path.exists():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gen_events.py"), str(path),
                        "--rows", str(rows)], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=2_000_000)
    ap.add_argument("--large", type=int, default=20_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of the small file")
    ap.add_argument("--memory-bytes", default="default")
    ap.add_argument("--keep", type=Path, help="generate (or reuse) the files in this folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        small, large = work / f"events-{args.small}.csv", work / f"events-{args.large}.csv"
        generate(small, args.small)
        generate(large, args.large)
        config = Path(tmp) / "bench.yaml"
        config.write_text(CONFIG)
        rejects = Path(tmp) / "rejects.csv"
        smalls = [measure(small, config, rejects, args.memory_bytes)]
        big = measure(large, config, rejects, args.memory_bytes)
        smalls += [measure(small, config, rejects, args.memory_bytes)
                   for _ in range(args.repeat - 1)]
    s_rss = statistics.median(r["rss_mb"] for r in smalls)
    s_us = statistics.median(r["us_per_row"] for r in smalls)
    print(f"small: {args.small:,} rows, {len(smalls)} runs; large: {args.large:,} rows, 1 run; "
          f"bound {args.memory_bytes}")
    print(f"peak RSS  small {s_rss:6.0f} MB  large {big['rss_mb']:6.0f} MB  "
          f"ratio {big['rss_mb'] / s_rss:4.2f}x (target <= 1.25x)")
    print(f"per row   small {s_us:6.3f} us  large {big['us_per_row']:6.3f} us  "
          f"ratio {big['us_per_row'] / s_us:4.2f}x (target within 15%)")
    print(f"duplicate check: peak {big['peak_fingerprints']:,} fingerprints in memory, "
          f"{big['runs_written']} run files written (small: {smalls[0]['runs_written']})")
    print("runs: small " + ", ".join(f"{r['s']:.2f}s/{r['rss_mb']:.0f}MB" for r in smalls)
          + f" | large {big['s']:.2f}s/{big['rss_mb']:.0f}MB")


if __name__ == "__main__":
    main()
