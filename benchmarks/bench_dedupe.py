"""The duplicate check's cost per batch, this tree's code against an earlier commit's, side by side.

The earlier ``dedupe.py`` and ``spill.py`` (with ``errors.py``, which they import) are read with
``git show REV:...`` into a temporary package, so both versions run in one process on the same
batches, alternating, repetition by repetition. Each scenario feeds ``--batches`` batches of
``--size`` random 64-bit fingerprints (the pipeline's 50,000-row batches) to a new check:

* ``memory``: ``expected`` sized for the whole run, the default 64 MB bound: no spill;
* ``repeats``: the same, with 1% of each batch repeating ids of earlier batches and 0.2% of
  its own (every batch has duplicates, so their placement in batch order is paid too);
* ``spill``: a bound of ``--spill-values`` fingerprints, so runs spill and merge on disk.

First it prints the CPU time (all threads) of the ways to sort one batch considered for
``sort_keys``: numpy's sort (the old one), polars' (on all cores, and on one), and
``sort_keys`` itself. Then, per scenario, the CPU time per batch (median over the
repetitions of the mean over the batches) of ``sort_keys`` (run in parallel workers in the
pipeline) and of ``add_sorted`` (run in order, on one thread), old, new and old/new. Both
versions must give the same answers, leave the same filter words, count the same
``peak_in_memory`` and write the same run files, byte for byte; the script stops if they
do not.

    python benchmarks/bench_dedupe.py [--baseline REV] [--reps 7] [--busy]

``--busy`` keeps the other core busy with a spinning process while measuring (CPU times,
not wall times, are compared; a busy machine shows what shared caches cost).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flywheel_import import dedupe as new_dedupe

ROOT = Path(__file__).resolve().parents[1]
#: The commit before the duplicate check's per-id work was made cheaper.
BASELINE = "53dc9361e985b214ea804376a64ada897157c782"
U64 = npt.NDArray[np.uint64]


def load_baseline(rev: str, into: Path) -> ModuleType:
    """``dedupe`` as it was at ``rev``, imported as its own package."""
    pkg = into / "dedupe_baseline"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("dedupe", "spill", "errors"):
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:flywheel_import/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (pkg / f"{name}.py").write_text(text)
    sys.path.insert(0, str(into))
    return importlib.import_module("dedupe_baseline.dedupe")


def make_batches(seed: int, count: int, size: int, *, repeats: bool) -> list[U64]:
    rng = np.random.default_rng(seed)
    batches: list[U64] = []
    for _ in range(count):
        batch = rng.integers(0, 2**64 - 1, size, dtype=np.uint64, endpoint=True)
        if repeats:
            if batches:
                older = batches[rng.integers(0, len(batches))]
                batch[: size // 100] = older[rng.integers(0, size, size // 100)]
            own = size // 500
            batch[-own:] = batch[rng.integers(0, size - own, own)]
            batch = rng.permutation(batch)
        batches.append(batch)
    return batches


@dataclass
class Outcome:
    sort_us: float  # CPU time per batch
    add_us: float
    answers: list[U64]
    filter: U64
    peak: int
    held: int
    written: int
    files: dict[str, bytes]


def run_once(module: ModuleType, batches: list[U64], settings: dict[str, Any]) -> Outcome:
    clock = time.process_time
    sort_s = add_s = 0.0
    answers = []
    with tempfile.TemporaryDirectory() as tmp, module.SeenIds(Path(tmp), **settings) as seen:
        for batch in batches:
            t0 = clock()
            keys = module.sort_keys(batch)
            t1 = clock()
            answers.append(seen.add_sorted(keys))
            t2 = clock()
            sort_s += t1 - t0
            add_s += t2 - t1
        folder = seen.spill_folder
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder else {}
        outcome = Outcome(
            sort_s / len(batches) * 1e6,
            add_s / len(batches) * 1e6,
            answers,
            seen._filter.copy(),
            seen.peak_in_memory,
            len(seen),
            seen.runs_written,
            files,
        )
    return outcome


def same(a: Outcome, b: Outcome) -> bool:
    return (
        all(np.array_equal(x, y) for x, y in zip(a.answers, b.answers, strict=True))
        and np.array_equal(a.filter, b.filter)
        and (a.peak, a.held, a.written) == (b.peak, b.held, b.written)
        and a.files == b.files
    )


@contextmanager
def busy_core(on: bool) -> Iterator[None]:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def sort_options(size: int, reps: int) -> None:
    fps = make_batches(3, 1, size, repeats=False)[0]
    ways: dict[str, Callable[[], object]] = {
        "np.sort": lambda: np.sort(fps),
        "polars sort": lambda: pl.Series(fps).sort().to_numpy(),
        "polars sort, 1 thread": lambda: pl.Series(fps).sort(multithreaded=False).to_numpy(),
        "sort_keys": lambda: new_dedupe.sort_keys(fps),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(reps * 5):
        for name, way in ways.items():
            t0 = time.process_time()
            way()
            times[name].append(time.process_time() - t0)
    print(f"sorting a batch of {size:,} (CPU time of all threads, median of {reps * 5}):")
    for name, ts in times.items():
        print(f"  {name:<22} {statistics.median(ts) * 1e6:8.0f} us")


def compare(
    name: str,
    old: ModuleType,
    batches: list[U64],
    settings: dict[str, Any],
    reps: int,
) -> None:
    runs: dict[str, list[Outcome]] = {"old": [], "new": []}
    order: list[tuple[str, ModuleType]] = [("old", old), ("new", new_dedupe)]
    for rep in range(reps):
        for label, module in order if rep % 2 == 0 else order[::-1]:
            runs[label].append(run_once(module, batches, settings))
    first_old, first_new = runs["old"][0], runs["new"][0]
    if not same(first_old, first_new):
        raise SystemExit(f"{name}: the two versions disagree")
    dups = sum(int(a.sum()) for a in first_new.answers)

    def median(label: str, pick: Callable[[Outcome], float]) -> float:
        return statistics.median(pick(o) for o in runs[label])

    print(
        f"{name}: {len(batches)} batches of {len(batches[0]):,}, {dups:,} duplicates, "
        f"peak {first_new.peak:,} in memory, {first_new.written} run files written"
    )
    for part, pick in (
        ("sort_keys", lambda o: o.sort_us),
        ("add_sorted", lambda o: o.add_us),
        ("both", lambda o: o.sort_us + o.add_us),
    ):
        a, b = median("old", pick), median("new", pick)
        print(f"  {part:<10} old {a:8.0f} us/batch   new {b:8.0f} us/batch   old/new {a / b:5.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=BASELINE, help="commit to compare with")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--size", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--spill-values", type=int, default=400_000)
    ap.add_argument("--busy", action="store_true", help="keep the other core busy")
    args = ap.parse_args()
    expected = args.batches * args.size
    with tempfile.TemporaryDirectory() as tmp, busy_core(args.busy):
        old = load_baseline(args.baseline, Path(tmp))
        fresh = make_batches(1, args.batches, args.size, repeats=False)
        mixed = make_batches(2, args.batches, args.size, repeats=True)
        sort_options(args.size, args.reps)
        print(f"baseline {args.baseline[:12]}, {args.reps} repetitions, CPU time per batch")
        compare("memory", old, fresh, {"expected": expected}, args.reps)
        compare("repeats", old, mixed, {"expected": expected}, args.reps)
        spill = {"expected": expected, "memory_bytes": 8 * args.spill_values}
        compare("spill", old, mixed, spill, args.reps)


if __name__ == "__main__":
    main()
