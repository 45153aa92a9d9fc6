"""Every DAG imports cleanly and follows the house rules: tags, retries, docs, one DAG per file."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert dagbag.dags, "no DAG found"


def test_dags_have_tags_retries_docs(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 100, f"{dag_id} has no doc_md"
        assert dag.default_args.get("retries", 0) >= 1, f"{dag_id} has no retries"
        assert Path(dag.fileloc).stem == dag_id, f"{dag_id} is not in a file named after it"


def test_nightly_shape(dagbag):
    dag = dagbag.dags["fapiao_nightly"]
    assert dag.max_active_runs == 1
    assert {t.task_id for t in dag.tasks} == {
        "extract_database_sources", "wait_for_deliveries", "list_sources", "ingest", "plan_shards", "reconcile_shard", "reconcile", "validate",
        "publish", "quality_gate",
    }
    assert dag.get_task("quality_gate").retries == 0
    for tid in ("ingest", "reconcile", "validate", "publish"):
        assert dag.get_task(tid).pool == "fapiao_duckdb"
    # Shards only read the database: they run side by side, outside the one-slot writer pool.
    assert dag.get_task("reconcile_shard").pool == "default_pool"
    assert "shards" in dag.params
    # A real one-day data interval in Beijing time (a cron *trigger* timetable would have none).
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert dag.timetable.expression == "0 0 * * *"
    assert str(dag.timetable.timezone) in ("Asia/Shanghai", "Timezone('Asia/Shanghai')")


def test_night_from_interval_across_beijing_midnight():
    import pendulum

    from fapiao_audit.orchestration import night_for

    # 15:59 UTC is still 23:59 on the 21st in Beijing; 16:00 UTC is 00:00 on the 22nd.
    assert night_for({}, pendulum.datetime(2026, 11, 21, 15, 59, tz="UTC")).isoformat() == "2026-11-21"
    assert night_for({}, pendulum.datetime(2026, 11, 21, 16, 0, tz="UTC")).isoformat() == "2026-11-22"
    assert night_for({"night": "2026-11-01"}, pendulum.datetime(2026, 11, 21, 16, 0, tz="UTC")).isoformat() == "2026-11-01"
