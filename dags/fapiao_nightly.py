"""
### fapiao_nightly: reconcile the night's issued fapiao against the tax registry

Runs once per business night `D` (Asia/Shanghai): its data interval is `[D 00:00, D+1 00:00)`
Beijing time and the night comes from that interval, never from "now". Trigger with
`{"night": "YYYY-MM-DD"}` to rerun one night; a rerun or backfill replaces that night.

0. **extract_database_sources**: PostgreSQL sources (Airflow connections) into the landing layout.
1. **wait_for_deliveries**: waits until `<landing>/<D>/registry` and an issuing system have delivered.
2. **list_sources** (drops staged rows of sources that no longer deliver) then **ingest** mapped per
   source: read, normalise, stage in DuckDB.
3. **plan_shards**, then **reconcile_shard** mapped per shard: each shard (a hash partition of the
   invoice keys) reads DuckDB read-only and writes its findings to its own folder beside the
   database, so shards run side by side, on any worker that sees that folder.
   **reconcile** merges them (the single writer): probable matches across shards, new/open/resolved,
   the night's findings stored in one transaction. The outcome does not depend on the shard count.
4. **validate**: Great Expectations suites from `expectations/`.
5. **publish**: `exceptions.csv`, `exceptions.xlsx`, `summary.json`, `report.html`, `manifest.json`
   into `<reports>/<D>/`, atomically.
6. **quality_gate**: fails the run (no retry) when an expectation failed; the report is already published.

**Notifications**, once per run (never per task): e-mail through Airflow's SMTP connection `smtp_default`
to the Variable `FAPIAO_ALERT_EMAIL`, and a DingTalk or WeCom robot through the connection `fapiao_chat`
(host: the robot's webhook URL; password: a DingTalk robot's signing secret). Each carries the night's
one-line summary and the report's path; an unconfigured channel is skipped with one log line.

**Asset**: `publish` updates the asset `fapiao_published_night`; each event's extra holds the night, its
outcome (`passed` / `failed`), the findings per category and the report folder. `fapiao_after_publish`
is an example of a DAG scheduled on it.

**Time limits**: a run is failed after `DAGRUN_TIMEOUT`, a task attempt after `TASK_TIMEOUT`, and a deadline
alert goes out when the night is not published by `FAPIAO_PUBLISH_BY_HOUR` o'clock (Beijing, default 8) the
morning after it (environment variable of the DAG processor; a run's deadline is fixed when it is created).

Paths: Airflow Variables or environment variables `FAPIAO_LANDING`, `FAPIAO_REPORTS`, `FAPIAO_DB`,
`FAPIAO_CONFIG`. DuckDB has one writer: every task that writes to it runs in the one-slot pool
`fapiao_duckdb`, and `max_active_runs=1`; shard tasks only read it (shared lock) and run in
`default_pool`. Shard count: the `shards` param, else the configuration's `shards` (default 1).
"""

from __future__ import annotations

import os
from datetime import date, timedelta

import pendulum
from airflow.sdk import (
    Asset,
    AsyncCallback,
    CronDataIntervalTimetable,
    DeadlineAlert,
    DeadlineReference,
    Param,
    PokeReturnValue,
    dag,
    get_current_context,
    task,
)

from fapiao_audit.notifications import night_not_published, night_notifiers

POOL = "fapiao_duckdb"
#: One event per published night; the extra says which night, how it went and where the report is.
PUBLISHED_NIGHT = Asset("fapiao_published_night")
#: A run that has not finished by then is failed, so that the next night (max_active_runs=1) can start.
DAGRUN_TIMEOUT = timedelta(hours=20)
#: Per task attempt; the sensor's own `timeout` (6 h) bounds the wait for deliveries across reschedules.
TASK_TIMEOUT = timedelta(hours=2)
#: The night D must be published by this hour (Asia/Shanghai) on D+1. Read from the environment only: no
#: Variable or database at parse time.
PUBLISH_BY_HOUR = int(os.environ.get("FAPIAO_PUBLISH_BY_HOUR", "8"))
if not 0 <= PUBLISH_BY_HOUR <= 23:
    raise ValueError(f"FAPIAO_PUBLISH_BY_HOUR must be an hour 0-23, got {PUBLISH_BY_HOUR}")


def _night() -> str:
    from fapiao_audit.orchestration import night_for

    ctx = get_current_context()
    # A run triggered without a logical date (Airflow 3) has no data interval: the `night` param decides.
    return night_for(ctx["params"], ctx.get("data_interval_start")).isoformat()


@dag(
    dag_id="fapiao_nightly",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="Asia/Shanghai"),
    start_date=pendulum.datetime(2026, 11, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=DAGRUN_TIMEOUT,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "pool": POOL,
        "execution_timeout": TASK_TIMEOUT,
    },
    on_failure_callback=night_notifiers(),
    on_success_callback=night_notifiers(),
    # The logical date is the night's 00:00 in Beijing: the night is due at PUBLISH_BY_HOUR the next morning.
    # Runs without a logical date (a triggered rerun of a night) get no deadline; the callback alerts only for
    # scheduled runs that have not published their night (a backfill or a rerun is late by definition).
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=timedelta(hours=24 + PUBLISH_BY_HOUR),
        callback=AsyncCallback(
            night_not_published, kwargs={"publish_by": f"{PUBLISH_BY_HOUR:02d}:00 Asia/Shanghai"}
        ),
    ),
    params={
        "night": Param(
            None,
            type=["null", "string"],
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            description="Business night YYYY-MM-DD; overrides the night of the data interval",
        ),
        "shards": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=1024,
            description="Reconciliation shards (one task each); default: the configuration's `shards`",
        ),
        "allow_missing": Param(
            [],
            type="array",
            items={"type": "string"},
            description="Issuing systems allowed to deliver nothing tonight (their open findings "
            "are carried as not checked); as `fapiao-audit run --allow-missing`",
        ),
    },
    tags=["fapiao", "reconciliation", "data-quality"],
    doc_md=__doc__,
)
def fapiao_nightly():
    @task(pool="default_pool")
    def extract_database_sources() -> list[dict]:
        from fapiao_audit.orchestration import extract_sources

        return extract_sources(date.fromisoformat(_night()))

    @task.sensor(poke_interval=120, timeout=6 * 3600, mode="reschedule", pool="default_pool")
    def wait_for_deliveries() -> PokeReturnValue:
        from fapiao_audit.orchestration import deliveries_ready

        night = _night()
        return PokeReturnValue(is_done=deliveries_ready(date.fromisoformat(night)), xcom_value=night)

    @task
    def list_sources(night: str) -> list[str]:
        """The night's sources; staged rows of sources that no longer deliver are dropped (a DuckDB writer)."""
        from fapiao_audit.orchestration import prune, sources_of

        sources = sources_of(date.fromisoformat(night))
        prune(date.fromisoformat(night), sources, get_current_context()["params"].get("allow_missing") or [])
        return sources

    @task(max_active_tis_per_dag=1)
    def ingest(source: str, night: str) -> dict:
        from fapiao_audit.orchestration import ingest_one

        return ingest_one(date.fromisoformat(night), source)

    @task(pool="default_pool")
    def plan_shards(night: str, ingested: list[dict]) -> list[dict]:
        from fapiao_audit.orchestration import plan_shards as plan
        from fapiao_audit.orchestration import shard_count

        shards = shard_count(get_current_context()["params"].get("shards"))
        return [{"shard": k, "shards": shards} for k in plan(date.fromisoformat(night), shards)]

    @task(pool="default_pool", map_index_template="{{ shard_label }}")
    def reconcile_shard(shard: int, shards: int, night: str) -> dict:
        from fapiao_audit.orchestration import reconcile_shard as run

        get_current_context()["shard_label"] = f"shard {shard + 1} of {shards}"
        return run(date.fromisoformat(night), shard, shards)

    @task
    def reconcile(night: str, shard_results: list[dict]) -> dict:
        from fapiao_audit.orchestration import reconcile as run

        # Index within len(): iterating the lazy XCom sequence probes one past its end and logs an error.
        results = [shard_results[i] for i in range(len(shard_results))]
        shards = {r["shards"] for r in results}
        if len(shards) != 1 or len(results) != next(iter(shards)):
            raise ValueError(
                f"shard results do not add up: {sorted((r['shard'], r['shards']) for r in results)}"
            )
        return run(date.fromisoformat(night), shards.pop())

    @task
    def validate(night: str, counts: dict) -> bool:
        from fapiao_audit.orchestration import validate as run

        return run(date.fromisoformat(night))

    @task(outlets=[PUBLISHED_NIGHT])
    def publish(night: str, passed: bool) -> dict:
        from fapiao_audit.orchestration import publish as run

        result = run(date.fromisoformat(night))
        get_current_context()["outlet_events"][PUBLISHED_NIGHT].extra = {
            "night": result["night"],
            "outcome": result["outcome"],
            "counts": result["counts"],
            "findings": sum(result["counts"].values()),
            "report": result["published"],
        }
        return result

    @task(retries=0, pool="default_pool")
    def quality_gate(result: dict) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        if result["outcome"] != "passed":
            raise AirflowFailException(
                f"night {result['night']}: expectations failed; report published at {result['published']}"
            )

    night = wait_for_deliveries()
    extract_database_sources() >> night
    sources = list_sources(night)
    ingested = ingest.partial(night=night).expand(source=sources)
    shard_results = reconcile_shard.partial(night=night).expand_kwargs(plan_shards(night, ingested))
    counts = reconcile(night, shard_results)
    passed = validate(night, counts)
    quality_gate(publish(night, passed))


fapiao_nightly()
