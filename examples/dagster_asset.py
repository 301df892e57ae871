"""Dagster: an asset whose materialization is one import, with the Report as metadata.

Re-materializing resumes from the ledger (``state``): settled rows are not sent again. A run
that cannot go on raises ``ApiAbort`` (the command's exit 3) and the materialization fails.
"""

from __future__ import annotations

from dagster import MaterializeResult, asset

import flywheel_import as fi

CONFIG = "/opt/imports/import.yaml"
INPUTS = ["s3://bucket/exports/*.csv.gz"]
STATE = "/var/lib/flywheel-import/state.db"
REJECTS = "/var/lib/flywheel-import/rejects.csv"


@asset
def flywheel_events() -> MaterializeResult:
    report = fi.run_import(CONFIG, INPUTS, state=STATE, rejects=REJECTS)
    return MaterializeResult(
        metadata={
            "rows_read": report.rows_read,
            "accepted": report.accepted,
            "rejected": report.rejected,
            "skipped_watermark": report.skipped_watermark,
            "completed": report.completed,
            "rejects_path": report.rejects_path or "",
            "duration_s": round(report.duration_s, 1),
        }
    )
