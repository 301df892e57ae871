"""No row lost, none counted twice, when the API stores an event but its answer never arrives.

The sandbox's ``stored_lost`` fault stores the event and closes the connection; its ``slow``
fault stores it and answers after the client has given up. The importer must retry both with
the same event_id (the API drops the repeat), and count each row once: every valid row
stored exactly once, the report's accepted count equal to the events stored.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flywheel_import import run_import
from flywheel_import.sandbox import Sandbox
from tests.test_run import KEY, assert_accounted, no_sleep, write_config, write_events


@pytest.mark.parametrize("mapped_ids", [True, False], ids=["mapped-ids", "derived-ids"])
def test_lost_and_late_answers_are_retried_and_every_row_is_stored_once(
    tmp_path: Path, mapped_ids: bool
) -> None:
    data = write_events(tmp_path, 400, bad=4)
    cfg = write_config(tmp_path, data, rate_limit=0, concurrency=16, timeout=0.4, max_attempts=20)
    if not mapped_ids:
        cfg.write_text(cfg.read_text().replace("  event_id: event_id\n", ""))
    faults = {"stored_lost_rate": 0.1, "slow_rate": 0.1, "slow_ms": 1200.0, "seed": 11}
    with Sandbox(key=KEY, **faults) as sb:  # type: ignore[arg-type]
        report = run_import(cfg, api_url=sb.url, key=KEY, sleep=no_sleep)
        stats = sb.stats()
        stored = sb.events()
    assert_accounted(report)
    assert (report.accepted, report.rejected) == (396, 4)
    ids = [e["event_id"] for e in stored]
    assert len(ids) == len(set(ids)) == report.accepted
    faulted = stats["faults"]
    assert faulted["stored_lost"] > 0 and faulted["slow"] > 0
    # The retries of stored events arrived and were dropped as duplicates, not stored again.
    assert stats["duplicates"] >= faulted["stored_lost"]
    assert report.sending["errors"].get("TIMEOUT", 0) > 0
