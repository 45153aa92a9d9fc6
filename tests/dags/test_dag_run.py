"""fapiao_nightly under dag.test(): a full night, a rerun that replaces it, a failing expectation; each run's
one notification reaching a local SMTP server and a local chat-robot endpoint; the published night's Asset event."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pendulum
import pytest

from fapiao_audit.generate import SOURCES_TOML, generate_night

NIGHT = pendulum.date(2026, 11, 21)


@pytest.fixture(scope="module")
def env(tmp_path_factory, airflow_db, alert_receivers):
    base = tmp_path_factory.mktemp("dagrun")
    mp = pytest.MonkeyPatch()
    mp.setenv("FAPIAO_LANDING", str(base / "landing"))
    mp.setenv("FAPIAO_REPORTS", str(base / "reports"))
    mp.setenv("FAPIAO_DB", str(base / "db" / "fapiao.duckdb"))
    config = base / "fapiao-audit.toml"  # the generated issuers' value codes and ignored columns
    config.write_text(SOURCES_TOML, encoding="utf-8")
    mp.setenv("FAPIAO_CONFIG", str(config))
    generate_night(base / "landing", NIGHT, rows=1000, seed=3)
    yield base
    mp.undo()


def _state(dagrun) -> str:
    return str(getattr(dagrun.state, "value", dagrun.state))


def _keys(path: Path) -> list[tuple[str, ...]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return sorted(
            (r["category"], r["invoice_code"], r["invoice_number"], r["field"], r["source_system"])
            for r in csv.DictReader(f)
        )


def _task_states(dagrun) -> dict[str, str]:
    return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dagrun.get_task_instances()}


def _asset_events(run_id: str) -> list[dict]:
    """The `fapiao_published_night` events this run emitted, from Airflow's metadata DB."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "fapiao_published_night", AssetEvent.source_run_id == run_id)
        ).all()
        return [dict(e.extra or {}) for e in rows]


def _html(mail) -> str:
    return mail.get_body(preferencelist=("html", "plain")).get_content()


def test_nightly_publishes_a_night_and_gate_fails_on_expectations(env, dagbag, alert_receivers):
    dag = dagbag.dags["fapiao_nightly"]
    alert_receivers.clear()
    # A manual run at 2026-11-22 00:00 Beijing covers the interval [11-21, 11-22): night 2026-11-21.
    dagrun = dag.test(logical_date=pendulum.datetime(2026, 11, 22, tz="Asia/Shanghai"))
    states = _task_states(dagrun)
    night_dir = env / "reports" / NIGHT.isoformat()
    assert (night_dir / "manifest.json").is_file()
    assert _keys(night_dir / "exceptions.csv") == _keys(
        env / "landing" / NIGHT.isoformat() / "expected_findings.csv"
    )
    # Injected cross-issuer duplicates fail a threshold: report published, the gate fails the run.
    assert states["publish"] == "success"
    assert states["quality_gate"] == "failed"
    assert _state(dagrun) == "failed"
    summary = json.loads((night_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["outcome"] == "failed"

    # One e-mail and one chat message for the failed run (not one per failed or mapped task).
    report = f"{night_dir}/report.html"
    assert len(alert_receivers.mails) == 1, [m["Subject"] for m in alert_receivers.mails]
    mail = alert_receivers.mails[0]
    assert mail["Subject"] == "[fapiao] night 2026-11-21: run failed, expectations failed"
    assert mail["From"] == "fapiao-audit@example.test"
    assert mail["X-Envelope-To"] == "finance-ops@example.test, data-eng@example.test"
    total = sum(summary["counts"].values())
    line = (
        f"fapiao_nightly night 2026-11-21: run failed at quality_gate; published, {total} findings, "
        f"expectations failed; report {report}"
    )
    assert line in _html(mail)
    assert len(alert_receivers.posts) == 1
    post = alert_receivers.posts[0]
    assert post["path"] == "/robot/send?access_token=test-token"
    assert post["json"] == {"msgtype": "text", "text": {"content": line}}

    # The published night is an Asset event whose extra says which night, how it went, and where.
    events = _asset_events(dagrun.run_id)
    assert events == [
        {
            "night": "2026-11-21",
            "outcome": "failed",
            "counts": summary["counts"],
            "findings": total,
            "report": str(night_dir),
        }
    ]


def test_rerun_with_night_param_replaces_the_night(env, dagbag):
    dag = dagbag.dags["fapiao_nightly"]
    night_dir = env / "reports" / NIGHT.isoformat()
    before = json.loads((night_dir / "manifest.json").read_text(encoding="utf-8"))
    csv_before = (night_dir / "exceptions.csv").read_bytes()
    dagrun = dag.test(
        logical_date=pendulum.datetime(2026, 11, 25, tz="Asia/Shanghai"),
        run_conf={"night": NIGHT.isoformat()},
    )
    assert _task_states(dagrun)["publish"] == "success"
    after = json.loads((night_dir / "manifest.json").read_text(encoding="utf-8"))
    assert after["run_id"] != before["run_id"]
    assert (night_dir / "exceptions.csv").read_bytes() == csv_before
    import duckdb

    con = duckdb.connect(str(env / "db" / "fapiao.duckdb"), read_only=True)
    try:
        staged = con.execute(
            "SELECT count(*), count(DISTINCT (source_system, file, line)) FROM staged_invoices"
        ).fetchone()
        assert staged[0] == staged[1]  # no row staged twice by the rerun
    finally:
        con.close()


def test_passing_night_succeeds(env, dagbag, tmp_path, alert_receivers):
    dag = dagbag.dags["fapiao_nightly"]
    alert_receivers.clear()
    cfg = tmp_path / "lenient.toml"
    cfg.write_text(
        "[thresholds]\nmax_duplicate_across_issuers = 1000\nmax_missing_in_registry_rate = 1\n"
        "max_missing_in_issuer_rate = 1\nmax_field_mismatch_rate = 1\nmax_rejected_rate = 1\n" + SOURCES_TOML,
        encoding="utf-8",
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("FAPIAO_CONFIG", str(cfg))
    try:
        dagrun = dag.test(
            logical_date=pendulum.datetime(2026, 11, 26, tz="Asia/Shanghai"),
            run_conf={"night": NIGHT.isoformat()},
        )
    finally:
        mp.undo()
    summary = json.loads((env / "reports" / NIGHT.isoformat() / "summary.json").read_text(encoding="utf-8"))
    if summary["outcome"] == "passed":
        assert _state(dagrun) == "success"
    else:  # staged-data suites may still fail on injected defects; then the gate must fail the run
        assert _task_states(dagrun)["quality_gate"] == "failed"
    # The outcome goes out once either way, saying which.
    state = "success" if summary["outcome"] == "passed" else "failed"
    assert [m["Subject"] for m in alert_receivers.mails] == [
        f"[fapiao] night 2026-11-21: run {state}, expectations {summary['outcome']}"
    ]
    assert len(alert_receivers.posts) == 1
    assert f"expectations {summary['outcome']}" in alert_receivers.posts[0]["json"]["text"]["content"]
    assert [e["outcome"] for e in _asset_events(dagrun.run_id)] == [summary["outcome"]]


def test_sharded_run_maps_one_task_per_shard_and_publishes_the_same_night(env, dagbag):
    dag = dagbag.dags["fapiao_nightly"]
    night_dir = env / "reports" / NIGHT.isoformat()
    csv_before = (night_dir / "exceptions.csv").read_bytes()
    dagrun = dag.test(
        logical_date=pendulum.datetime(2026, 11, 27, tz="Asia/Shanghai"),
        run_conf={"night": NIGHT.isoformat(), "shards": 4},
    )
    shard_tis = [ti for ti in dagrun.get_task_instances() if ti.task_id == "reconcile_shard"]
    assert sorted(ti.map_index for ti in shard_tis) == [0, 1, 2, 3]
    assert all(str(getattr(ti.state, "value", ti.state)) == "success" for ti in shard_tis)
    assert _task_states(dagrun)["publish"] == "success"
    assert (night_dir / "exceptions.csv").read_bytes() == csv_before


def test_triggered_without_logical_date_takes_the_night_param(env, dagbag):
    # `airflow dags trigger --conf '{"night": ...}'` in Airflow 3 creates a run without a data interval.
    dag = dagbag.dags["fapiao_nightly"]
    dagrun = dag.test(logical_date=None, run_conf={"night": NIGHT.isoformat()})
    states = _task_states(dagrun)
    assert states["wait_for_deliveries"] == "success"
    assert states["publish"] == "success"
