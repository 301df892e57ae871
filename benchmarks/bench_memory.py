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
import statistics
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from bench_validate import CONFIG, generate, run

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
    result = run(VALIDATE, str(ROOT), str(config), str(csv), str(rejects), memory_bytes)
    result["us_per_row"] = result["s"] / result["rows"] * 1e6
    return result


def compare(small: Path, large: Path, repeat: int, memory_bytes: str, work: Path) -> dict[str, Any]:
    """The small file ``repeat`` times around one run of the large one: medians and ratios."""
    config = work / "bench.yaml"
    config.write_text(CONFIG)
    rejects = work / "rejects.csv"
    smalls = [measure(small, config, rejects, memory_bytes)]
    big = measure(large, config, rejects, memory_bytes)
    smalls += [measure(small, config, rejects, memory_bytes) for _ in range(repeat - 1)]
    s_rss = statistics.median(r["rss_mb"] for r in smalls)
    s_us = statistics.median(r["us_per_row"] for r in smalls)
    return {
        "small_rows": smalls[0]["rows"],
        "large_rows": big["rows"],
        "small_rss_mb": s_rss,
        "large_rss_mb": big["rss_mb"],
        "rss_ratio": big["rss_mb"] / s_rss,
        "small_us_per_row": s_us,
        "large_us_per_row": big["us_per_row"],
        "time_ratio": big["us_per_row"] / s_us,
        "peak_fingerprints": big["peak_fingerprints"],
        "runs_written": big["runs_written"],
        "small_runs_written": smalls[0]["runs_written"],
        "small_runs": [(r["s"], r["rss_mb"]) for r in smalls],
        "large_run": (big["s"], big["rss_mb"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
        r = compare(small, large, args.repeat, args.memory_bytes, Path(tmp))
    print(
        f"small: {args.small:,} rows, {args.repeat} runs; large: {args.large:,} rows, 1 run; "
        f"bound {args.memory_bytes}"
    )
    print(
        f"peak RSS  small {r['small_rss_mb']:6.0f} MB  large {r['large_rss_mb']:6.0f} MB  "
        f"ratio {r['rss_ratio']:4.2f}x (target <= 1.25x)"
    )
    print(
        f"per row   small {r['small_us_per_row']:6.3f} us  large "
        f"{r['large_us_per_row']:6.3f} us  ratio {r['time_ratio']:4.2f}x (target within 15%)"
    )
    print(
        f"duplicate check: peak {r['peak_fingerprints']:,} fingerprints in memory, "
        f"{r['runs_written']} run files written (small: {r['small_runs_written']})"
    )
    print(
        "runs: small "
        + ", ".join(f"{s:.2f}s/{m:.0f}MB" for s, m in r["small_runs"])
        + f" | large {r['large_run'][0]:.2f}s/{r['large_run'][1]:.0f}MB"
    )


if __name__ == "__main__":
    main()
