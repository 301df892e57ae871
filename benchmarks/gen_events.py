"""Generate a large, realistic events CSV for benchmarks (vectorized: seconds, not minutes).

    python benchmarks/gen_events.py OUT.csv --rows 2000000

Nine columns, ~85 bytes a row, a few bad rows sprinkled in (empty names, bad timestamps).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl


def frame(rows: int, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    events = np.array(["page_viewed", "signup_completed", "product_purchased", "cart_updated"])
    plans = np.array(["free", "starter", "premium", "enterprise"])
    pages = np.array(["/", "/pricing", "/docs", "/blog/launch", "/signup", "/checkout"])
    ts = (
        np.datetime64("2023-01-01T00:00:00")
        + rng.integers(0, 365 * 86400, rows).astype("timedelta64[s]")
    ).astype("datetime64[ms]")
    df = pl.DataFrame(
        {
            "event_id": pl.int_range(0, rows, eager=True).cast(pl.String).str.zfill(10),
            "event_name": events[rng.integers(0, len(events), rows)],
            "user_id": pl.Series(rng.integers(1, 200_000, rows)).cast(pl.String).str.zfill(7),
            "ts": pl.Series(ts).dt.strftime("%Y-%m-%d %H:%M:%S"),
            "page": pages[rng.integers(0, len(pages), rows)],
            "plan": plans[rng.integers(0, len(plans), rows)],
            "price": pl.Series(rng.integers(100, 50000, rows) / 100).cast(pl.String),
            "zip": pl.Series(rng.integers(0, 99999, rows)).cast(pl.String).str.zfill(5),
            "is_trial": pl.Series(rng.integers(0, 2, rows) == 1).cast(pl.String),
        }
    )
    bad = rng.integers(0, rows, max(1, rows // 10_000))
    return df.with_columns(
        pl.when(pl.int_range(0, rows).is_in(bad))
        .then(pl.lit(""))
        .otherwise(pl.col("event_name"))
        .alias("event_name")
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", type=int, default=2_000_000)
    args = ap.parse_args()
    frame(args.rows).write_csv(args.out)
    print(f"{args.out}: {args.rows:,} rows, {args.out.stat().st_size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
