"""Shards are units of work whose outcome never depends on how many there are.

A night run with 1 shard or with 8 publishes byte-identical exceptions.csv; shards run in separate
processes against a read-only database and are merged by the single writer; a merge refuses missing
or stale shard results; findings that span shards (red invoices of one blue, probable matches) come
out the same.
"""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb
import pytest

from factories import NIGHT, invoice
from fapiao_audit.cli import main
from fapiao_audit.config import Config
from fapiao_audit.errors import FapiaoError
from fapiao_audit.ingest import ingest_night
from fapiao_audit.reconcile import (
    fetch_findings,
    merge_shards,
    reconcile_night,
    reconcile_shard,
    shard_root,
)

GEN_NIGHT = "2026-11-21"


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("shards")
    assert (
        main(
            [
                "generate",
                "--night",
                GEN_NIGHT,
                "--out",
                str(base / "landing"),
                "--rows",
                "4000",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    return base / "landing"


def _run(landing: Path, out: Path, shards: int) -> Path:
    code = main(
        [
            "run",
            "--night",
            GEN_NIGHT,
            "--landing",
            str(landing),
            "--reports",
            str(out / "reports"),
            "--db",
            str(out / "fapiao.duckdb"),
            "--shards",
            str(shards),
        ]
    )
    assert code in (0, 1)
    return out / "reports" / GEN_NIGHT


def test_exceptions_csv_byte_identical_for_1_and_8_shards(landing, tmp_path):
    one = _run(landing, tmp_path / "one", 1)
    eight = _run(landing, tmp_path / "eight", 8)
    csv_one = (one / "exceptions.csv").read_bytes()
    assert csv_one.count(b"\n") > 100
    assert (eight / "exceptions.csv").read_bytes() == csv_one
    s1 = json.loads((one / "summary.json").read_text(encoding="utf-8"))
    s8 = json.loads((eight / "summary.json").read_text(encoding="utf-8"))
    for key in ("counts", "keys", "new", "open", "resolved", "out_of_scope", "total_findings"):
        assert s1[key] == s8[key], key
    # The in-process run leaves no shard results behind.
    assert not list((tmp_path / "eight").glob(".*fapiao-tmp/shards/*/shard-*"))


def _ingest(landing: Path, db: Path, cfg: Config) -> None:
    from fapiao_audit.pipeline import Paths, open_db, stage_ingest

    paths = Paths(landing, db.parent / "reports", db)
    with open_db(paths, cfg) as con:
        stage_ingest(con, paths, date.fromisoformat(GEN_NIGHT), cfg)


def _shard_in_own_process(env: dict[str, str], shard: int, shards: int) -> dict:
    import os

    os.environ.update(env)
    from fapiao_audit.orchestration import reconcile_shard as run

    return run(date.fromisoformat(GEN_NIGHT), shard, shards)


def test_shards_in_separate_processes_then_merge(landing, tmp_path, monkeypatch):
    db = tmp_path / "db" / "fapiao.duckdb"
    cfg = Config()
    _ingest(landing, db, cfg)
    env = {"FAPIAO_LANDING": str(landing), "FAPIAO_REPORTS": str(tmp_path / "reports"), "FAPIAO_DB": str(db)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from fapiao_audit import orchestration

    night = date.fromisoformat(GEN_NIGHT)
    assert orchestration.plan_shards(night, 3) == [0, 1, 2]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:  # three processes hold read-only connections at the same time
        results = pool.starmap(_shard_in_own_process, [(env, k, 3) for k in range(3)])
    assert sorted(r["shard"] for r in results) == [0, 1, 2]
    assert len({r["pid"] for r in results}) >= 2
    counts = orchestration.reconcile(night, shards=3)
    # The same night reconciled in one piece gives the same findings.
    con = duckdb.connect(str(db), read_only=True)
    try:
        sharded = sorted(
            map(
                tuple,
                con.execute(
                    "SELECT category, invoice_key, field, source_system, detail, coalesce(suggested_match, '') "
                    "FROM findings WHERE night = ?",
                    [night],
                ).fetchall(),
            )
        )
    finally:
        con.close()
    assert sum(counts.values()) == len(sharded)
    from fapiao_audit.db import connect

    whole = connect(":memory:", cfg)
    try:
        ingest_night(whole, landing, night, cfg, tmp_path / "tmp")
        reconcile_night(whole, night, cfg)
        single = sorted(
            map(
                tuple,
                whole.execute(
                    "SELECT category, invoice_key, field, source_system, detail, coalesce(suggested_match, '') "
                    "FROM findings WHERE night = ?",
                    [night],
                ).fetchall(),
            )
        )
    finally:
        whole.close()
    assert sharded == single


def test_merge_refuses_missing_and_stale_shards(landing, tmp_path, mem_con):
    night = date.fromisoformat(GEN_NIGHT)
    cfg = Config()
    ingest_night(mem_con, landing, night, cfg, tmp_path / "tmp")
    root = shard_root(tmp_path / "work", night)
    for k in (0, 1):
        reconcile_shard(mem_con, night, cfg, k, 3, root)
    with pytest.raises(FapiaoError, match=r"no result for shard\(s\) 2"):
        merge_shards(mem_con, night, cfg, 3, root)
    # Shard 2 computed under other settings is stale: refused, not merged.
    reconcile_shard(mem_con, night, replace(cfg, sync_grace_hours=12), 2, 3, root)
    with pytest.raises(FapiaoError, match=r"shard\(s\) 2 ran on other inputs or settings"):
        merge_shards(mem_con, night, cfg, 3, root)
    reconcile_shard(mem_con, night, cfg, 2, 3, root)
    merged = merge_shards(mem_con, night, cfg, 3, root)
    assert sum(merged.counts.values()) == len(fetch_findings(mem_con, night))


def _keys_in_other_shards(con, candidates: list[str], shards: int) -> list[str]:
    """Pick keys that fall into different shards (by the same hash the SQL uses)."""
    seen: dict[int, str] = {}
    for k in candidates:
        s = con.execute("SELECT hash(?::VARCHAR) % ?", [k, shards]).fetchone()[0]
        seen.setdefault(s, k)
    return list(seen.values())


def test_red_invoices_of_one_blue_in_different_shards(make_night, mem_con, tmp_path):
    blue = "26110000000000000100"
    reds = _keys_in_other_shards(mem_con, [f"2611000000000000{i:04d}" for i in range(200, 260)], 8)[:2]
    # Each red alone stays under the blue's total; together they exceed it.
    rows = [invoice(blue, amount="1000.00", status="partly_red_reversed")] + [
        invoice(r, amount="-600.00", remark=f"被红冲蓝字数电票号码：{blue}") for r in reds
    ]
    landing = make_night(rows, {"erp": rows})
    out = {}
    for shards in (1, 8):
        cfg = Config(shards=shards)
        ingest_night(mem_con, landing, NIGHT, cfg, tmp_path / "tmp")
        reconcile_night(mem_con, NIGHT, cfg)
        out[shards] = sorted(
            (r["category"], r["invoice_number"], r["detail"])
            for r in fetch_findings(mem_con, NIGHT).to_pylist()
        )
    assert out[1] == out[8]
    assert {(c, n) for c, n, _ in out[8]} == {("ORPHAN_RED_INVOICE", r) for r in reds}
    assert all("exceed" in d for _, _, d in out[8])


def test_probable_match_across_shards(make_night, mem_con, tmp_path):
    # A typo moves the key into another shard: the match is still found after the merge.
    issued, typo = _keys_in_other_shards(
        mem_con, [f"261100000000000012{i:02d}" for i in range(10)] + ["26110000000000001201"], 8
    )[:2]
    keep = invoice("26110000000000000999")
    landing = make_night([invoice(typo), keep], {"erp": [invoice(issued), keep]})
    cfg = Config(shards=8)
    ingest_night(mem_con, landing, NIGHT, cfg, tmp_path / "tmp")
    reconcile_night(mem_con, NIGHT, cfg)
    rows = {r["category"]: r for r in fetch_findings(mem_con, NIGHT).to_pylist()}
    assert rows["MISSING_IN_REGISTRY"]["suggested_match"] == typo
    assert rows["MISSING_IN_ISSUER"]["suggested_match"] == issued
