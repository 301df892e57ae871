"""Airflow: one import split into N shards, one mapped task per shard.

Each task runs ``flywheel_import.run_import`` with ``shard=(k, N)`` and its own resume ledger
(``state.db`` becomes ``state.shard-k-of-N.db``), so a retried task continues its shard where
it stopped. A run that cannot go on (key refused, wrong URL: the command's exit 3) raises
``ApiAbort`` and fails the task; a run that finished with rejects succeeds and says how many.
"""

from __future__ import annotations

import datetime

from airflow.decorators import dag, task

import flywheel_import as fi

N = 8  # keep N (and the mapping) the same across re-runs: each shard's ledger is per N
API_RATE = 1000.0  # requests/s the API allows this import; each shard gets 1/N of it
CONFIG = "/opt/imports/import.yaml"
INPUTS = ["s3://bucket/exports/*.csv.gz"]
SHARED = "/shared/flywheel"  # a volume every worker sees (SQLite needs file locks on it)


@task(retries=3)
def import_shard(k: int) -> dict[str, int | bool]:
    # ApiAbort, ConfigError, InputError and UsageError are left to propagate: the task fails
    # (and a retry resumes from the shard's ledger). The key comes from the worker's
    # environment (api.key_env), never from the DAG.
    report = fi.run_import(
        CONFIG,
        INPUTS,
        shard=(k, N),
        rate=API_RATE / N,
        state=f"{SHARED}/state.db",
        rejects=f"{SHARED}/rejects-{k}.csv",
        report=f"{SHARED}/report-{k}.json",
    )
    return {"accepted": report.accepted, "rejected": report.rejected, "completed": report.completed}


@dag(schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False)
def flywheel_import_sharded() -> None:
    import_shard.expand(k=list(range(N)))


flywheel_import_sharded()
