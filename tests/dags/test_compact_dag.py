"""The monthly compaction DAG: thin, in the writers' pool, and its task compacts the configured database."""

from __future__ import annotations

from datetime import date

import duckdb

from fapiao_audit.config import Config
from fapiao_audit.db import connect


def test_compact_dag_shape(dagbag):
    dag = dagbag.dags["fapiao_compact"]
    assert dag.max_active_runs == 1
    assert [t.task_id for t in dag.tasks] == ["compact"]
    assert dag.get_task("compact").pool == "fapiao_duckdb"


def test_compact_task_uses_the_configured_database(tmp_path, monkeypatch):
    from fapiao_audit.orchestration import compact_database

    db = tmp_path / "db" / "fapiao.duckdb"
    db.parent.mkdir()
    con = connect(db, Config())
    con.execute(
        "INSERT INTO ingested_files VALUES ('2026-11-01', 'registry', 'registry', 'r.csv', 'x', 'csv', NULL, "
        "1, 1, 1, 0, NULL, 0), ('2026-11-30', 'registry', 'registry', 'r.csv', 'y', 'csv', NULL, 1, 1, 1, 0, "
        "NULL, 0)"
    )
    con.execute(
        "INSERT INTO rejected_rows SELECT DATE '2026-11-01', 'registry', 'r.csv', i, md5(i::VARCHAR) || md5((-i)::VARCHAR), 'bad', "
        "NULL, false FROM range(200000) t(i)"
    )
    con.execute("CHECKPOINT")
    con.close()
    (tmp_path / "c.toml").write_text("retain_nights = 1\n", encoding="utf-8")
    for name, value in (
        ("FAPIAO_DB", db),
        ("FAPIAO_LANDING", tmp_path / "landing"),
        ("FAPIAO_REPORTS", tmp_path / "reports"),
        ("FAPIAO_CONFIG", tmp_path / "c.toml"),
    ):
        monkeypatch.setenv(name, str(value))
    out = compact_database()
    assert out["nights_removed"] == ["2026-11-01"]
    assert out["bytes_after"] < out["bytes_before"] / 2
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM rejected_rows").fetchone()[0] == 0
    assert con.execute("SELECT max(night) FROM ingested_files").fetchone()[0] == date(2026, 11, 30)
    con.close()
