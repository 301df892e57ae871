"""Regenerate sample_data/events.csv and events.parquet (deterministic, seeded).

The CSV has 1,200 realistic rows, a handful of them deliberately bad (one of each problem a
warehouse export tends to have), so ``flywheel-import validate`` has something to report.
"""

from __future__ import annotations

import csv
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

OUT = Path(__file__).resolve().parent.parent / "sample_data"
EVENTS = [
    "page_viewed",
    "signup_completed",
    "product_purchased",
    "cart_updated",
    "trial_started",
    "plan_upgraded",
]
PAGES = ["/", "/pricing", "/docs", "/blog/launch", "/signup", "/checkout"]
PLANS = ["free", "starter", "premium", "enterprise"]
SOURCES = ["google_ads", "newsletter", "twitter", "direct", ""]
ZIPS = ["02134", "10001", "94103", "60601", "00501"]


def rows(n: int, rng: random.Random) -> list[dict[str, str]]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        ts = start + timedelta(seconds=rng.randrange(0, 300 * 86400))
        anonymous = rng.random() < 0.15
        user = "" if anonymous else f"{rng.randrange(1, 5000):06d}"
        event = rng.choice(EVENTS)
        price = (
            f"{rng.randrange(5, 500)}.{rng.randrange(0, 100):02d}"
            if event == "product_purchased"
            else ""
        )
        out.append(
            {
                "event_id": f"evt_{i + 1:07d}",
                "event_name": event,
                "user_id": user,
                "anonymous_id": f"anon_{rng.randrange(10**8):08d}"
                if anonymous or rng.random() < 0.3
                else "",
                "ts": ts.strftime("%Y-%m-%d %H:%M:%S"),
                "page": rng.choice(PAGES),
                "plan": rng.choice(PLANS),
                "price": price,
                "utm_src": rng.choice(SOURCES),
                "zip": rng.choice(ZIPS),
                "is_trial": rng.choice(["true", "false"]),
                "internal_note": rng.choice(
                    ["", "", "checked by ops", "note, with a comma", "multi-line\nnote"]
                ),
            }
        )
    return out


def main() -> None:
    rng = random.Random(20240115)
    data = rows(1200, rng)
    # The bad ones, one of each kind a warehouse export produces.
    data[41]["event_name"] = ""  # MISSING_EVENT_NAME
    data[87]["event_name"] = "signup completed!"  # INVALID_EVENT_NAME
    data[133]["ts"] = ""  # MISSING_TIMESTAMP
    data[250]["ts"] = "31/02/2024 10:00"  # INVALID_TIMESTAMP
    data[377]["user_id"] = ""  # MISSING_IDENTITY
    data[377]["anonymous_id"] = ""
    data[512]["event_id"] = data[511]["event_id"]  # DUPLICATE_EVENT_ID
    data[640]["ts"] = "2024-03-10 02:30:00"  # fine in UTC (see configs/example.yaml)
    OUT.mkdir(exist_ok=True)
    fields = list(data[0])
    path = OUT / "events.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for i, row in enumerate(data):
            w.writerow(row)
            if i == 700:  # a record with too few fields: MALFORMED_ROW
                f.write("evt_broken,page_viewed,000042\n")
    pl.read_csv(path, infer_schema=False).with_columns(
        pl.col("ts").str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_zone="UTC"),
        pl.col("price").cast(pl.Float64, strict=False),
        pl.col("is_trial") == "true",
    ).filter(pl.col("ts").is_not_null() & pl.col("event_id").is_not_null()).write_parquet(
        OUT / "events.parquet", row_group_size=256
    )


if __name__ == "__main__":
    main()
