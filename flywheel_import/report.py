"""The run's figures: what was read, sent, accepted and rejected, and why.

The accounting identity ``rows_read == accepted + rejected`` (or ``valid + rejected`` in a
dry run) holds at the end of every completed run; :meth:`Report.summary` prints it and
:meth:`Report.to_dict` is what ``--report`` writes as JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

#: Event-name changes listed in the report, and in the printed summary.
TOP_NAME_CHANGES = 50
SUMMARY_NAME_CHANGES = 5
MAX_NAME_PAIRS = 100_000


@dataclass(slots=True)
class CodeCount:
    count: int = 0
    example: dict[str, Any] | None = None


@dataclass(slots=True)
class Report:
    dry_run: bool = True
    files: int = 0
    rows_read: int = 0
    valid: int = 0
    accepted: int = 0
    rejected: int = 0
    skipped_watermark: int = 0
    #: Rows left to other shards (``shard`` is this run's, as "k/n"; None: not sharded).
    skipped_shard: int = 0
    shard: str | None = None
    #: Each shard's own figures, in the report merged from several processes.
    shards: list[dict[str, Any]] | None = None
    by_code: dict[str, CodeCount] = field(default_factory=dict)
    duration_s: float = 0.0
    rejects_path: str | None = None
    completed: bool = False
    error: str | None = None
    sending: dict[str, Any] = field(default_factory=dict)
    #: The whole import so far, from the resume ledger (None without one).
    resume: dict[str, Any] | None = None
    #: What stopped a run cleanly before its end (``SIGINT``, ``SIGTERM``, ``stop``).
    stopped: str | None = None
    # (name as read, name sent) -> rows; see record_names
    names_changed: dict[tuple[str, str], int] = field(default_factory=dict)
    names_changed_rows: int = 0

    def record(self, rejected: pl.DataFrame) -> None:
        """Count rejected rows (rejects-file layout) per code, keeping one example of each.

        A row with several codes counts under each; validation and API rejects alike. Plain
        Python over the code column, no polars query: this runs on the busiest thread, where
        a query waits for polars' threads, busy with the next batches (measured: 4 ms for a
        five-row batch).
        """
        if not rejected.height:
            return
        self.rejected += rejected.height
        codes = rejected.get_column("_error_code").to_list()
        for combo, n in Counter(codes).items():
            for code in combo.split(";"):
                self.by_code.setdefault(code, CodeCount()).count += n
        wanted = {c for c, entry in self.by_code.items() if entry.example is None}
        if not wanted:
            return
        for i, combo in enumerate(codes):
            found = wanted.intersection(combo.split(";"))
            if not found:
                continue
            example = {
                "source": rejected.get_column("_source")[i],
                "row": rejected.get_column("_row")[i],
                "message": rejected.get_column("_error_message")[i],
            }
            for code in found:
                self.by_code[code].example = dict(example)
            wanted -= found
            if not wanted:
                return

    def record_names(self, changes: pl.DataFrame) -> None:
        """Count event names changed by ``names``/``normalize`` (``from``, ``to``, ``count``).

        Distinct pairs are kept up to :data:`MAX_NAME_PAIRS` (names with ids inside them
        could otherwise grow without bound); rows are always counted.
        """
        for source, sent, n in changes.iter_rows():
            self.names_changed_rows += n
            key = (source, sent)
            if key in self.names_changed or len(self.names_changed) < MAX_NAME_PAIRS:
                self.names_changed[key] = self.names_changed.get(key, 0) + n

    def top_name_changes(self, n: int = TOP_NAME_CHANGES) -> list[tuple[str, str, int]]:
        """The ``n`` most frequent changes, most frequent first (ties by name)."""
        ranked = sorted(self.names_changed.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(source, sent, count) for (source, sent), count in ranked[:n]]

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.rejected else 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dry_run": self.dry_run,
            "completed": self.completed,
            "files": self.files,
            "rows_read": self.rows_read,
            "valid": self.valid,
            "rejected": self.rejected,
            "skipped_watermark": self.skipped_watermark,
            "rejected_by_code": {
                code: {"count": c.count, "example": c.example}
                for code, c in sorted(self.by_code.items(), key=lambda kv: -kv[1].count)
            },
            "duration_s": round(self.duration_s, 3),
            "rows_per_s": round(self.rows_per_s, 1),
            "rejects_file": self.rejects_path,
        }
        if self.names_changed_rows:
            out["event_names_changed"] = {
                "rows": self.names_changed_rows,
                "distinct": len(self.names_changed),
                "top": [
                    {"from": source, "to": sent, "count": count}
                    for source, sent, count in self.top_name_changes()
                ],
            }
        if not self.dry_run:
            out["accepted"] = self.accepted
            # Rows read but neither accepted nor rejected: only after a stop (API abort,
            # Ctrl-C); they were not sent, or their answer never came. Still to do.
            out["unsettled"] = self.rows_read - self.accepted - self.rejected
            out["sending"] = self.sending
        if self.resume is not None:
            out["import"] = self.resume
        if self.shard is not None:
            out["shard"] = self.shard
            out["skipped_shard"] = self.skipped_shard
        if self.shards is not None:
            out["shards"] = self.shards
        if self.stopped:
            out["stopped"] = self.stopped
        if self.error:
            out["error"] = self.error
        return out

    def summary(self) -> str:
        lines = []
        head = "Dry run" if self.dry_run else "Import"
        state = "finished" if self.completed else "STOPPED"
        lines.append(
            f"{head} {state}: {self.rows_read:,} rows read from {self.files} file(s) "
            f"in {self.duration_s:.1f}s ({self.rows_per_s:,.0f} rows/s)"
        )
        if self.dry_run:
            lines.append(f"  valid (would be sent): {self.valid:,}")
        else:
            lines.append(f"  accepted: {self.accepted:,}")
            s = self.sending
            if s:
                lines.append(
                    f"  requests: {s.get('requests', 0):,}, retries: "
                    f"{s.get('retries', 0):,}, 429s: {s.get('throttled', 0):,}, "
                    f"latency p50/p99: {s.get('latency_p50_ms', 0)}/"
                    f"{s.get('latency_p99_ms', 0)} ms, "
                    f"{s.get('events_per_s', 0):,} events/s"
                )
        if not self.dry_run and not self.completed:
            unsettled = self.rows_read - self.accepted - self.rejected
            lines.append(f"  not settled (still to do): {unsettled:,}")
        lines.append(
            f"  rejected: {self.rejected:,}"
            + (f" (see {self.rejects_path})" if self.rejected and self.rejects_path else "")
        )
        for code, c in sorted(self.by_code.items(), key=lambda kv: -kv[1].count):
            ex = c.example or {}
            where = f"{ex.get('source')}:{ex.get('row')}" if ex else ""
            lines.append(
                f"    {code:<26} {c.count:>10,}  e.g. {where} {ex.get('message', '')}".rstrip()
            )
        if self.skipped_watermark:
            lines.append(
                f"  skipped (at or below the last run's watermark): {self.skipped_watermark:,}"
            )
        if self.shard is not None:
            lines.append(
                f"  shard {self.shard}: {self.skipped_shard:,} rows left to the other shards"
            )
        for s in self.shards or ():
            state = (
                "finished"
                if s.get("completed")
                else "stopped"
                if s.get("stopped") or s.get("exit_code") in (130, 143)
                else "FAILED"
            )
            lines.append(
                f"  shard {s['shard']}: {state}, {s.get('rows_read', 0):,} read, "
                f"{s.get('accepted', 0):,} accepted, {s.get('rejected', 0):,} "
                f"rejected (exit {s.get('exit_code')})"
            )
        if self.resume is not None:
            r = self.resume
            earlier = (
                f"; {r['files_already_imported']:,} file(s) already imported"
                if r.get("files_already_imported")
                else ""
            )
            skipped = (
                f", {r['rows_settled_earlier']:,} rows settled by earlier runs skipped"
                if r.get("rows_settled_earlier")
                else ""
            )
            lines.append(
                f"  whole import so far: {r['accepted']:,} accepted, "
                f"{r['rejected']:,} rejected{skipped}{earlier}"
            )
        if self.stopped:
            lines.append(f"  stopped by {self.stopped}: run the same command again to go on")
        if self.names_changed_rows:
            top = self.top_name_changes(SUMMARY_NAME_CHANGES)
            lines.append(
                f"  event names changed: {self.names_changed_rows:,} rows, "
                f"{len(self.names_changed):,} distinct; most frequent:"
            )
            lines.extend(f"    {source!r} -> {sent}  {count:,}" for source, sent, count in top)
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
