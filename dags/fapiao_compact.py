"""
### fapiao_compact: keep the DuckDB file the size of the nights it retains

Once a month (the 1st, 12:00 Beijing time, away from the nightly run), **compact** applies
`retain_nights` (the staged rows of older nights are removed; findings, runs and summaries stay) and
rewrites the database into a new file beside it, then swaps it in atomically. DuckDB reuses the space
of deleted rows but never shrinks its file; this does.

It runs in the one-slot pool `fapiao_duckdb` with the nightly DAG's writers and takes the same lock,
so it never overlaps a night. Killed at any moment, the old file is still the database; the temp file
left beside it is removed by the next compaction. Paths and configuration: the nightly DAG's
(`FAPIAO_DB`, `FAPIAO_CONFIG`). It needs free disk for one more copy of the compacted database.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

POOL = "fapiao_duckdb"


@dag(
    dag_id="fapiao_compact",
    schedule="0 12 1 * *",
    start_date=pendulum.datetime(2026, 11, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    # The lock wait (15 min) plus a rewrite of the retained nights, with room: a hung compaction must not
    # hold the writers' pool into the next night.
    dagrun_timeout=timedelta(hours=6),
    default_args={
        "retries": 1,
        "retry_delay": timedelta(minutes=30),
        "pool": POOL,
        "execution_timeout": timedelta(hours=2),
    },
    tags=["fapiao", "maintenance"],
    doc_md=__doc__,
)
def fapiao_compact():
    @task
    def compact() -> dict:
        from fapiao_audit.orchestration import compact_database

        return compact_database()

    compact()


fapiao_compact()
