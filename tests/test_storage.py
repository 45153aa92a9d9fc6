"""Months of nights: retention of staged rows, compaction of the database file, old nights refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from factories import invoice
from fapiao_audit.cli import main
from fapiao_audit.config import Config
from fapiao_audit.errors import InputError
from fapiao_audit.generate import generate_night
from fapiao_audit.pipeline import Paths, run_night
from fapiao_audit.storage import compact

FIRST = date(2026, 11, 1)
NIGHTS = [FIRST + timedelta(days=i) for i in range(4)]


def _count(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def months(tmp_path_factory):
    """Four consecutive generated nights (flat layout, 2,000 invoices a side) run twice: keeping every
    night, and with retain_nights = 2."""
    base = tmp_path_factory.mktemp("months")
    landing = base / "landing"
    for n in NIGHTS:
        generate_night(landing, n, rows=2000, seed=5, layout="flat")
    out = {}
    for name, keep in (("all", 0), ("two", 2)):
        paths = Paths(landing, base / name / "reports", base / name / "fapiao.duckdb")
        for n in NIGHTS:
            run_night(paths, n, Config(retain_nights=keep))
        out[name] = paths
    return base, out


def test_retention_removes_old_nights_staged_rows_only(months):
    _, runs = months
    db = runs["two"].db
    assert _count(db, "SELECT DISTINCT night FROM staged_invoices ORDER BY 1") == [(NIGHTS[2],), (NIGHTS[3],)]
    assert _count(db, "SELECT count(*) FROM rejected_rows WHERE night < DATE '2026-11-03'") == [(0,)]
    # findings, runs and the ingested files' audit trail are kept for every night
    for table in ("findings", "runs", "ingested_files", "run_state"):
        assert _count(db, f"SELECT count(DISTINCT night) FROM {table}") == [(4,)], table
    assert _count(runs["all"].db, "SELECT count(DISTINCT night) FROM staged_invoices") == [(4,)]
    # what was published does not depend on retention
    for n in NIGHTS:
        name = f"{n.isoformat()}/exceptions.csv"
        assert (runs["all"].reports / name).read_bytes() == (runs["two"].reports / name).read_bytes(), name


def test_retention_counts_nights_run(tmp_path):
    """A night run by mistake far in the future takes one place among the kept nights; it does not push
    every other night out (calendar days would)."""
    from fapiao_audit.db import connect
    from fapiao_audit.storage import retention_horizon

    con = connect(tmp_path / "f.duckdb", Config())
    for n in (*NIGHTS, date(2036, 11, 1)):
        con.execute(
            "INSERT INTO ingested_files VALUES ($n, 'registry', 'registry', 'r.csv', 'x', 'csv', NULL, 1, 1, "
            "1, 0, NULL, 0)",
            {"n": n},
        )
    assert retention_horizon(con, Config(retain_nights=3)) == NIGHTS[2]
    assert retention_horizon(con, Config(retain_nights=9)) is None
    assert retention_horizon(con, Config(retain_nights=0)) is None
    con.close()


def test_night_outside_retention_is_refused(months, capsys):
    base, runs = months
    paths = runs["two"]
    published = (paths.reports / NIGHTS[1].isoformat() / "exceptions.csv").read_bytes()
    staged = _count(paths.db, "SELECT night, count(*) FROM staged_invoices GROUP BY 1 ORDER BY 1")
    cfg = base / "two.toml"
    cfg.write_text("retain_nights = 2\n", encoding="utf-8")
    code = main(
        [
            "run",
            "--night",
            NIGHTS[1].isoformat(),
            "--landing",
            str(paths.landing),
            "--reports",
            str(paths.reports),
            "--db",
            str(paths.db),
            "--config",
            str(cfg),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "2026-11-02 is outside the retention of 2 nights" in err and "2026-11-03 to 2026-11-04" in err
    assert "Traceback" not in err
    # nothing changed: neither the published night nor the database
    assert (paths.reports / NIGHTS[1].isoformat() / "exceptions.csv").read_bytes() == published
    assert _count(paths.db, "SELECT night, count(*) FROM staged_invoices GROUP BY 1 ORDER BY 1") == staged
    # a backfill of a night never run, older still, is refused the same way
    with pytest.raises(InputError, match="outside the retention"):
        run_night(paths, FIRST - timedelta(days=10), Config(retain_nights=2))


def test_compact_shrinks_the_file_and_a_rerun_stays_byte_identical(months, tmp_path):
    _, runs = months
    # a copy of the database that kept every night: compaction with retain_nights = 2 removes two nights
    db = tmp_path / "fapiao.duckdb"
    db.write_bytes(runs["all"].db.read_bytes())
    before = db.stat().st_size
    res = compact(db, Config(retain_nights=2))
    assert res.sweep.nights == (NIGHTS[0], NIGHTS[1])
    assert res.bytes_before == before and res.bytes_after == db.stat().st_size
    assert db.stat().st_size < 0.75 * before, (before, db.stat().st_size)
    assert not list(tmp_path.glob(".fapiao.duckdb.compact-*"))
    assert _count(db, "SELECT count(DISTINCT night) FROM findings") == [(4,)]
    assert _count(db, "SELECT DISTINCT night FROM staged_invoices ORDER BY 1") == [(NIGHTS[2],), (NIGHTS[3],)]
    # the newest night rerun on the compacted file publishes the same bytes
    paths = Paths(runs["all"].landing, tmp_path / "reports", db)
    run_night(paths, NIGHTS[3], Config(retain_nights=2))
    for name in ("exceptions.csv",):
        assert (paths.reports / NIGHTS[3].isoformat() / name).read_bytes() == (
            runs["all"].reports / NIGHTS[3].isoformat() / name
        ).read_bytes()
    # compacting again: nothing left to remove, the file stays about the size it is
    again = compact(db, Config(retain_nights=2))
    assert again.sweep.nights == () and again.bytes_after <= 1.1 * again.bytes_before


def test_compact_command(months, tmp_path, capsys):
    _, runs = months
    db = tmp_path / "fapiao.duckdb"
    db.write_bytes(runs["all"].db.read_bytes())
    cfg = tmp_path / "c.toml"
    cfg.write_text("retain_nights = 3\n", encoding="utf-8")
    assert main(["compact", "--db", str(db), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "staged rows of 1 night(s) 2026-11-01..2026-11-01 removed" in out and "MB ->" in out
    assert main(["compact", "--db", str(tmp_path / "nope.duckdb")]) == 2
    assert "is not a database file" in capsys.readouterr().err


def test_kill_during_compaction_leaves_the_old_database_usable(months, tmp_path):
    _, runs = months
    db = tmp_path / "fapiao.duckdb"
    db.write_bytes(runs["two"].db.read_bytes())
    findings = _count(db, "SELECT night, count(*) FROM findings GROUP BY 1 ORDER BY 1")
    marker = tmp_path / "paused"
    env = {**os.environ, "FAPIAO_TEST_PAUSE_AT": "compact", "FAPIAO_TEST_PAUSE_FILE": str(marker)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fapiao_audit.cli", "compact", "--db", str(db)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate()
        leftovers = list(tmp_path.glob(".fapiao.duckdb.compact-*"))
        assert leftovers  # the new file is being written beside the old one
        # a run waiting for the lock meanwhile is refused, not let in
        with pytest.raises(Exception, match="another fapiao-audit run is using this database"):
            run_night(Paths(runs["two"].landing, tmp_path / "r", db), NIGHTS[3], Config(retain_nights=2))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # the old file is the database, whole
    assert _count(db, "SELECT night, count(*) FROM findings GROUP BY 1 ORDER BY 1") == findings
    paths = Paths(runs["two"].landing, tmp_path / "reports", db)
    run_night(paths, NIGHTS[3], Config(retain_nights=2))
    assert (paths.reports / NIGHTS[3].isoformat() / "exceptions.csv").read_bytes() == (
        runs["two"].reports / NIGHTS[3].isoformat() / "exceptions.csv"
    ).read_bytes()
    # the next compaction removes what the killed one left
    res = compact(db, Config(retain_nights=2))
    assert res.leftovers_removed and not list(tmp_path.glob(".fapiao.duckdb.compact-*"))


def test_a_red_invoice_still_finds_its_blue_after_retention(make_night, tmp_path):
    """orphan_red_invoices looks for the blue original in every earlier night: retention keeps the
    blue invoices of the nights it removes, one per key, the record that lookup takes (the registry's:
    the ERP's total, half of it, would make the red exceed its blue), so the finding does not change."""
    blue_no = "26110000000000000020"
    blue = invoice(blue_no, day="2026-10-01", status="red_reversed")
    erp_blue = invoice(blue_no, day="2026-10-01", status="red_reversed", amount="500.00")
    other = invoice("26110000000000000030", day="2026-10-20")
    red = invoice(
        "26110000000000000021", day="2026-10-20", amount="-1000.00", remark=f"被红冲蓝字数电票号码：{blue_no}"
    )
    landing = tmp_path / "landing"
    make_night([blue], {"erp": [erp_blue]}, night=date(2026, 10, 1), landing=landing)
    make_night([other], {"erp": [other]}, night=date(2026, 10, 10), landing=landing)
    make_night([other, red], {"erp": [other, red]}, night=date(2026, 10, 20), landing=landing)
    got = {}
    for keep in (0, 2):
        paths = Paths(landing, tmp_path / f"r{keep}", tmp_path / f"db{keep}" / "fapiao.duckdb")
        for n in (date(2026, 10, 1), date(2026, 10, 10), date(2026, 10, 20)):
            run_night(paths, n, replace(Config(), retain_nights=keep))
        got[keep] = (paths.reports / "2026-10-20" / "exceptions.csv").read_bytes()
        if keep:  # the first night's rows are gone; its blue invoice is kept
            assert _count(paths.db, "SELECT min(night) FROM staged_invoices") == [(date(2026, 10, 10),)]
            assert _count(
                paths.db,
                "SELECT invoice_key, source_kind, night, total_amount FROM retired_blues WHERE invoice_key = "
                f"'{blue_no}'",
            ) == [(blue_no, "registry", date(2026, 10, 1), Decimal("1130.00"))]
    assert b"ORPHAN_RED_INVOICE" not in got[0]
    assert got[2] == got[0]


def test_a_database_with_staged_tables_is_moved_into_versions(months, tmp_path):
    """A database written before versions holds staged_invoices / staged_lines as plain tables, some
    without the newer columns: the first connection moves their rows into versions (the snapshots read
    the same), and the newest night rerun on it publishes the same bytes."""
    from fapiao_audit.db import connect

    _, runs = months
    db = tmp_path / "fapiao.duckdb"
    db.write_bytes(runs["all"].db.read_bytes())
    order = "ORDER BY night, source_system, file, line"
    staged = _count(db, f"SELECT * FROM staged_invoices {order}")
    lines = _count(db, f"SELECT * FROM staged_lines {order}")
    con = duckdb.connect(str(db))
    for view in ("staged_invoices", "staged_lines"):
        con.execute(f"CREATE TABLE fa_old AS SELECT * FROM {view}")
        con.execute(f"DROP VIEW {view}")
        con.execute(f"ALTER TABLE fa_old RENAME TO {view}")
    con.execute("ALTER TABLE staged_invoices DROP COLUMN source_document")  # written before it existed
    for table in ("invoice_versions", "invoice_seen", "line_versions", "line_seen", "staged_parts"):
        con.execute(f"DROP TABLE {table}")
    con.close()
    connect(db, Config()).close()
    assert _count(
        db, "SELECT table_type FROM information_schema.tables WHERE table_name = 'staged_invoices'"
    ) == [("VIEW",)]
    assert _count(db, f"SELECT * EXCLUDE (source_document) FROM staged_invoices {order}") == [
        row[:-1] for row in staged
    ]
    assert _count(db, f"SELECT * FROM staged_lines {order}") == lines
    paths = Paths(runs["all"].landing, tmp_path / "reports", db)
    run_night(paths, NIGHTS[3], Config())
    assert (paths.reports / NIGHTS[3].isoformat() / "exceptions.csv").read_bytes() == (
        runs["all"].reports / NIGHTS[3].isoformat() / "exceptions.csv"
    ).read_bytes()


def test_carried_items_are_stored_once_and_listed_every_night(months):
    """An open item carried night after night is one row of values (carried_items) and one narrow row a
    night; the view lists it on each night with that night's age."""
    _, runs = months
    db = runs["all"].db
    nights, items, distinct = _count(
        db, "SELECT count(*), (SELECT count(*) FROM carried_items), count(DISTINCT item) FROM carried_nights"
    )[0]
    assert items == distinct > 0 and nights > items, "items carried on several nights are stored once"
    again = _count(
        db,
        "SELECT finding_id, list(night ORDER BY night), list(age_days ORDER BY night), "
        "list(DISTINCT first_seen) FROM carried_findings GROUP BY ALL HAVING count(*) > 1 LIMIT 1",
    )
    fid, seen, ages, (first,) = again[0]
    assert ages == [(n - first).days for n in seen], fid
    assert _count(db, "SELECT DISTINCT finding_status = carried_as FROM carried_findings") == [(True,)]


def test_a_database_with_a_carried_findings_table_is_moved_into_items(months, tmp_path):
    """A database written before the split holds carried_findings as one full row per night and item:
    the first connection moves them (the view reads the same rows), and a rerun publishes the same bytes."""
    from fapiao_audit.db import connect

    _, runs = months
    db = tmp_path / "fapiao.duckdb"
    db.write_bytes(runs["all"].db.read_bytes())
    order = "ORDER BY ALL"
    before = _count(db, f"SELECT * FROM carried_findings {order}")
    assert len({row[0] for row in before}) >= 2, "items carried on two nights or more"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE fa_old AS SELECT * FROM carried_findings")
    con.execute("DROP VIEW carried_findings")
    con.execute("DROP TABLE carried_items")
    con.execute("DROP TABLE carried_nights")
    con.execute("ALTER TABLE fa_old RENAME TO carried_findings")
    con.close()
    connect(db, Config()).close()
    assert _count(
        db, "SELECT table_type FROM information_schema.tables WHERE table_name = 'carried_findings'"
    ) == [("VIEW",)]
    assert _count(db, f"SELECT * FROM carried_findings {order}") == before
    assert _count(db, "SELECT count(*) FROM carried_items")[0][0] < len(before)
    paths = Paths(runs["all"].landing, tmp_path / "reports", db)
    run_night(paths, NIGHTS[3], Config())
    got, want = (r / NIGHTS[3].isoformat() for r in (paths.reports, runs["all"].reports))
    assert (got / "exceptions.csv").read_bytes() == (want / "exceptions.csv").read_bytes()
    assert (
        json.loads((got / "summary.json").read_bytes())["open_items"]
        == json.loads((want / "summary.json").read_bytes())["open_items"]
    )
    assert _count(db, f"SELECT * FROM carried_findings {order}") == before


def test_retention_removes_the_versions_no_kept_night_holds(months):
    _, runs = months
    for db in (runs["two"].db, runs["all"].db):
        assert _count(
            db,
            "SELECT count(*) FROM invoice_versions v WHERE NOT EXISTS "
            "(SELECT 1 FROM invoice_seen s WHERE s.version_id = v.version_id)",
        ) == [(0,)]
    kept, every = (
        _count(r.db, "SELECT count(*) FROM invoice_versions")[0][0] for r in (runs["two"], runs["all"])
    )
    assert kept < every
