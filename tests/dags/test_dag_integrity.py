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
        "extract_database_sources",
        "wait_for_deliveries",
        "list_sources",
        "ingest",
        "plan_shards",
        "reconcile_shard",
        "reconcile",
        "validate",
        "publish",
        "quality_gate",
    }
    assert dag.get_task("quality_gate").retries == 0
    for tid in ("ingest", "reconcile", "validate", "publish"):
        assert dag.get_task(tid).pool == "fapiao_duckdb"
    # Shards only read the database: they run side by side, outside the one-slot writer pool.
    assert dag.get_task("reconcile_shard").pool == "default_pool"
    assert "shards" in dag.params and dag.params["allow_missing"] == []
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
    assert (
        night_for({"night": "2026-11-01"}, pendulum.datetime(2026, 11, 21, 16, 0, tz="UTC")).isoformat()
        == "2026-11-01"
    )


def test_every_dag_and_task_is_time_limited(dagbag):
    from datetime import timedelta

    for dag_id, dag in dagbag.dags.items():
        assert dag.dagrun_timeout is not None, f"{dag_id} has no dagrun_timeout"
        for t in dag.tasks:
            assert t.execution_timeout is not None, f"{dag_id}.{t.task_id} has no execution_timeout"
            assert t.execution_timeout <= dag.dagrun_timeout
    nightly = dagbag.dags["fapiao_nightly"]
    # A hung night is failed before the next one is due (max_active_runs=1 would block it).
    assert nightly.dagrun_timeout == timedelta(hours=20)
    assert {t.execution_timeout for t in nightly.tasks} == {timedelta(hours=2)}
    assert nightly.get_task("wait_for_deliveries").timeout == 6 * 3600


def test_deadline_alert_when_the_night_is_not_published_by_the_morning(dagbag):
    from datetime import timedelta

    from airflow.sdk import AsyncCallback, DeadlineReference

    [alert] = dagbag.dags["fapiao_nightly"].deadline
    # The logical date is the night's 00:00 in Beijing: due at 08:00 the next morning by default.
    assert alert.reference == DeadlineReference.DAGRUN_LOGICAL_DATE
    assert alert.interval == timedelta(hours=32)
    assert isinstance(alert.callback, AsyncCallback)
    assert alert.callback.path == "fapiao_audit.notifications.night_not_published"
    assert alert.callback.kwargs == {"publish_by": "08:00 Asia/Shanghai"}


def _parse_nightly(env: dict[str, str]) -> str:
    """Parse dags/fapiao_nightly.py in a fresh interpreter (the hour is read when the file is parsed)."""
    import os
    import subprocess
    import sys

    code = (
        "import runpy, sys\n"
        "try:\n"
        "    g = runpy.run_path(sys.argv[1])\n"
        "except ValueError as e:\n"
        "    print('error:', e); sys.exit(0)\n"
        "print(g['PUBLISH_BY_HOUR'], g['fapiao_nightly']().deadline[0].interval)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "dags" / "fapiao_nightly.py")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def test_publish_by_hour_is_configurable_and_checked():
    assert _parse_nightly({"FAPIAO_PUBLISH_BY_HOUR": "6"}) == "6 1 day, 6:00:00"
    assert (
        _parse_nightly({"FAPIAO_PUBLISH_BY_HOUR": "25"})
        == "error: FAPIAO_PUBLISH_BY_HOUR must be an hour 0-23, got 25"
    )


def test_notifications_are_per_run_not_per_task(dagbag):
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    from fapiao_audit.notifications import ChatWebhookNotifier

    dag = dagbag.dags["fapiao_nightly"]
    for callbacks in (dag.on_failure_callback, dag.on_success_callback):
        assert [isinstance(c, SmtpNotifier) for c in callbacks] == [True, False]
        assert isinstance(callbacks[1], ChatWebhookNotifier)
        assert callbacks[0].smtp_conn_id == "smtp_default" and callbacks[1].conn_id == "fapiao_chat"
    for t in dag.tasks:  # a task-level failure callback would send one message per failed mapped task
        assert not t.on_failure_callback, t.task_id


def test_published_night_is_an_asset_with_a_downstream_example(dagbag):
    from airflow.sdk import Asset

    published = Asset("fapiao_published_night")
    assert dagbag.dags["fapiao_nightly"].get_task("publish").outlets == [published]
    downstream = dagbag.dags["fapiao_after_publish"]
    assert type(downstream.timetable).__name__ == "AssetTriggeredTimetable"
    assert list(downstream.timetable.asset_condition.objects) == [published]
