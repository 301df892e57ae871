"""Every benchmark in one command: measure, compare with the baselines, report, chart.

    python benchmarks/run.py [--quick] [--out benchmarks/results.json]

Runs, side by side in one invocation, the measurements of ``bench_run.py`` (throughput and
``--processes 1/2/4`` vs the bare aiohttp script, rate accuracy, the 50 ms latency case, 429
convergence), ``bench_https.py``, ``bench_faults.py random429``, ``bench_validate.py`` (dry
run vs polars' own read, as CSV, Parquet and NDJSON) and ``bench_memory.py`` (peak memory at
two file sizes). Prints one table (measure, value, baseline, ratio, target, pass/fail),
writes every figure and the machine to a JSON file, and draws PNG charts next to it under
``charts/``.

``--quick`` shrinks every size (a few thousand events, 100k rows) so the whole run takes
well under a minute; it writes to a temporary folder unless ``--out`` is given, and exits 0
whenever it ran: on a shared machine its targets are reported, not enforced. A full run exits
1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_faults
import bench_https
import bench_memory
import bench_run
import bench_validate

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "flywheel-import",
    "polars",
    "pyarrow",
    "aiohttp",
    "orjson",
    "numpy",
    "pydantic",
    "anyio",
    "matplotlib",
)


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does; ``--quick`` only shrinks these."""

    throughput: int
    processes: int
    runs: int
    latency: int
    rate: int
    converge: int
    https: int
    random429: int
    validate_rows: int
    validate_repeat: int
    memory_small: int
    memory_large: int
    memory_repeat: int


FULL = Sizes(
    throughput=30_000,
    processes=30_000,
    runs=3,
    latency=20_000,
    rate=4000,
    converge=9000,
    https=30_000,
    random429=20_000,
    validate_rows=1_000_000,
    validate_repeat=5,
    memory_small=1_000_000,
    memory_large=10_000_000,
    memory_repeat=3,
)
QUICK = Sizes(
    throughput=3000,
    processes=3000,
    runs=1,
    latency=2000,
    rate=400,
    converge=1500,
    https=2000,
    random429=2000,
    validate_rows=100_000,
    validate_repeat=1,
    memory_small=10_000,
    memory_large=100_000,
    memory_repeat=1,
)


@dataclass(frozen=True)
class Row:
    """One line of the table; ``ok`` is None for a diagnostic figure without a target."""

    measure: str
    value: str
    baseline: str
    ratio: str
    target: str
    ok: bool | None


def machine() -> dict[str, Any]:
    """Where the figures come from: cores, memory, CPU model, Python and package versions."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "cpu_model": model or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "commit": commit or None,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def measure_all(sizes: Sizes, work: Path) -> dict[str, Any]:
    """Every measurement, one after the other, each in its own folder; the scripts' own
    printouts go to stderr so the table stays alone on stdout."""

    def ns(events: int) -> argparse.Namespace:
        return argparse.Namespace(events=events, runs=sizes.runs, client_root=ROOT)

    def memory(folder: Path) -> dict[str, Any]:
        small, large = folder / "small.csv", folder / "large.csv"
        bench_validate.generate(small, sizes.memory_small)
        bench_validate.generate(large, sizes.memory_large)
        return bench_memory.compare(small, large, sizes.memory_repeat, "default", folder)

    def validate(folder: Path) -> dict[str, Any]:
        csv = folder / "events.csv"
        bench_validate.generate(csv, sizes.validate_rows)
        return bench_validate.compare_formats(csv, sizes.validate_repeat, folder)

    steps: dict[str, Callable[[Path], dict[str, Any]]] = {
        "throughput": lambda d: bench_run.throughput(ns(sizes.throughput), d),
        "processes": lambda d: bench_run.processes(ns(sizes.processes), d),
        "rate": lambda d: bench_run.rate(ns(sizes.rate), d),
        "latency": lambda d: bench_run.latency(ns(sizes.latency), d),
        "https": lambda d: bench_https.compare(sizes.https, sizes.runs, 64, d),
        "converge": lambda d: bench_run.converge(ns(sizes.converge), d),
        "random429": lambda d: bench_faults.random429(ns(sizes.random429), d),
        "validate": validate,
        "memory": memory,
    }
    results: dict[str, Any] = {}
    for name, step in steps.items():
        folder = work / name
        folder.mkdir()
        print(f"== {name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            results[name] = step(folder)
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
    return results


def rows(r: dict[str, Any]) -> list[Row]:
    """The table, from the figures; targets are those the scripts' docstrings state."""
    t, p, rt, lat = r["throughput"], r["processes"], r["rate"], r["latency"]
    h, cv, f, v, m = r["https"], r["converge"], r["random429"], r["validate"], r["memory"]
    out = [
        Row(
            "throughput, events/s",
            f"{t['import_eps']:,.0f}",
            f"{t['bare_eps']:,.0f} bare",
            f"{t['ratio']:.2f}x",
            "(diagnostic)",
            None,
        )
    ]
    for n in (1, 2, 4):
        q = p[f"processes_{n}"]
        out.append(
            Row(
                f"--processes {n}, events/s",
                f"{q['eps']:,.0f}",
                f"{p['bare_eps']:,.0f} bare",
                f"{q['ratio']:.2f}x",
                "(diagnostic)",
                None,
            )
        )
    err = rt["mean_eps"] / rt["target"] - 1
    out.append(
        Row(
            "rate 200/s, mean at the server",
            f"{rt['mean_eps']:.1f}/s",
            "200/s",
            f"{err:+.1%}",
            "within 3%",
            abs(err) <= 0.03,
        )
    )
    out.append(
        Row(
            "rate 200/s, busiest 1 s window",
            f"{rt['busiest_window']}",
            f"{rt['busiest_limit']:.0f} limit",
            "",
            "<= 5% + burst",
            rt["busiest_window"] <= rt["busiest_limit"],
        )
    )
    err = lat["server_mean_eps"] / 2000 - 1
    out.append(
        Row(
            "latency 50 ms, rate 2000/s",
            f"{lat['server_mean_eps']:,.0f}/s",
            "2,000/s",
            f"{err:+.1%}",
            "within 5%",
            abs(err) <= 0.05,
        )
    )
    out.append(
        Row(
            "https vs http, events/s",
            f"{h['https_eps']:,.0f}",
            f"{h['http_eps']:,.0f}",
            f"{h['ratio']:.2f}x",
            "(diagnostic)",
            None,
        )
    )
    out.append(
        Row(
            "https, most connections in a run",
            f"{h['most_connections']}",
            f"{h['concurrency']} concurrency",
            "",
            "<= concurrency",
            h["most_connections"] <= h["concurrency"],
        )
    )
    err = cv["tail_eps"] / cv["server_limit"] - 1
    out.append(
        Row(
            "429 convergence, last 10 s",
            f"{cv['tail_eps']:,.0f}/s",
            "300/s allowed",
            f"{err:+.1%}",
            "within 10%",
            abs(err) <= 0.10,
        )
    )
    out.append(
        Row(
            "random 5% 429s, events/s",
            f"{f['noisy_eps']:,.0f}",
            f"{f['clean_eps']:,.0f} fault-free",
            f"{f['ratio']:.2f}x",
            ">= 0.60x",
            f["ratio"] >= 0.60,
        )
    )
    for fmt in (f for f in bench_validate.FORMATS if f in v):
        w = v[fmt]
        out.append(
            Row(
                f"dry run of {w['rows']:,} rows, {fmt}, s",
                f"{w['validate_s']:.2f}",
                f"{w['baseline_s']:.2f} polars read",
                f"{w['time_ratio']:.1f}x",
                f"<= {bench_validate.TIME_TARGET:g}x",
                w["time_ratio"] <= bench_validate.TIME_TARGET,
            )
        )
        out.append(
            Row(
                f"floor: bare per-row checks, {fmt}, s",
                f"{w['bare_s']:.2f}",
                f"{w['baseline_s']:.2f} polars read",
                f"{w['bare_ratio']:.1f}x",
                "-",
                None,
            )
        )
        out.append(
            Row(
                f"dry run, {fmt}, peak RSS MB",
                f"{w['validate_rss_mb']:.0f}",
                f"{w['baseline_rss_mb']:.0f} polars read",
                f"{w['rss_ratio']:.2f}x",
                f"<= {bench_validate.RSS_TARGET:g}x",
                w["rss_ratio"] <= bench_validate.RSS_TARGET,
            )
        )
    out.append(
        Row(
            f"peak RSS MB, {m['large_rows']:,} rows",
            f"{m['large_rss_mb']:.0f}",
            f"{m['small_rss_mb']:.0f} at {m['small_rows']:,}",
            f"{m['rss_ratio']:.2f}x",
            "<= 1.25x",
            m["rss_ratio"] <= 1.25,
        )
    )
    out.append(
        Row(
            f"time per row, {m['large_rows']:,} rows",
            f"{m['large_us_per_row']:.2f} us",
            f"{m['small_us_per_row']:.2f} us",
            f"{m['time_ratio']:.2f}x",
            "within 15%",
            abs(m["time_ratio"] - 1) <= 0.15,
        )
    )
    return out


def table(lines: list[Row]) -> str:
    head = ("measure", "value", "baseline", "ratio", "target", "result")
    cells = [head] + [
        (
            x.measure,
            x.value,
            x.baseline,
            x.ratio,
            x.target,
            "-" if x.ok is None else "pass" if x.ok else "FAIL",
        )
        for x in lines
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def charts(r: dict[str, Any], folder: Path) -> list[Path]:
    """Events/s over time in the 429 convergence run; peak memory against rows."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI or servers
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    cv = r["converge"]
    per_second = Counter(int(t) for t in cv["arrivals_s"])
    seconds = list(range(max(per_second) + 1)) if per_second else []
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(seconds, [per_second.get(s, 0) for s in seconds], marker=".", label="accepted")
    ax.axhline(
        cv["server_limit"],
        color="grey",
        linestyle="--",
        label=f"server allows {cv['server_limit']}/s",
    )
    ax.set(
        xlabel="seconds since the first event",
        ylabel="events/s at the server",
        title=f"429 convergence: client configured at {cv['client_rate']}/s",
    )
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    converge_png = folder / "converge.png"
    fig.savefig(converge_png, dpi=100)
    plt.close(fig)

    m = r["memory"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(
        [m["small_rows"], m["large_rows"]],
        [m["small_rss_mb"], m["large_rss_mb"]],
        marker="o",
        label="validate (dry run), peak RSS",
    )
    ax.axhline(
        m["small_rss_mb"] * 1.25,
        color="grey",
        linestyle="--",
        label="target: 1.25x the small file's peak",
    )
    ax.set_xscale("log")
    ax.set(
        xlabel="rows in the file",
        ylabel="peak RSS (MB)",
        title="Peak memory of a dry run against file size",
    )
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    memory_png = folder / "memory.png"
    fig.savefig(memory_png, dpi=100)
    plt.close(fig)
    return [converge_png, memory_png]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes, targets not enforced")
    ap.add_argument(
        "--out",
        type=Path,
        help="results file (charts go beside it, in charts/); "
        "default benchmarks/results.json, or a temporary folder with --quick",
    )
    args = ap.parse_args()
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory() as tmp:
        # A quick run never overwrites the committed figures unless asked to.
        out = args.out or (
            Path(tempfile.mkdtemp(prefix="flywheel-bench-")) / "results.json"
            if args.quick
            else ROOT / "benchmarks" / "results.json"
        )
        t0 = time.perf_counter()
        work = Path(tmp) / "work"
        work.mkdir()
        results = measure_all(sizes, work)
        lines = rows(results)
        data = {
            "mode": "quick" if args.quick else "full",
            "machine": machine(),
            "sizes": sizes.__dict__,
            "seconds": round(time.perf_counter() - t0, 1),
            "table": [x.__dict__ for x in lines],
            "results": results,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1) + "\n")
        pngs = charts(results, out.parent / "charts")
        mach = data["machine"]
        print(
            f"{data['mode']} run, {data['seconds']:.0f} s, {mach['cores']} cores, "
            f"{mach['memory_gb']} GB, {mach['cpu_model']}, Python {mach['python']}"
        )
        print(table(lines))
        print(f"wrote {out} and {', '.join(str(p) for p in pngs)}")
    missed = [x.measure for x in lines if x.ok is False]
    if missed and not args.quick:
        print(f"targets missed: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
