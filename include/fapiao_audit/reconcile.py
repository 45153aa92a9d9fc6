"""Reconcile: classify every invoice key of a night into findings, in DuckDB SQL.

The heavy lifting is ``sql/reconcile.sql`` (one model, categories as rows you can count);
this module binds the night's parameters, checks tax ids with python-stdnum, runs the model
per shard (a hash of the invoice key, never the issue date), and stores the findings of the
night with their status relative to the previous published night.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
from stdnum.cn import ric, uscc

from .config import SHANGHAI, Config
from .db import execute_sql, named_sql, sql_statements

CATEGORIES = (
    "MISSING_IN_REGISTRY",
    "PENDING_SYNC",
    "MISSING_IN_ISSUER",
    "DUPLICATE_IN_SOURCE",
    "DUPLICATE_ACROSS_ISSUERS",
    "FIELD_MISMATCH",
    "STATUS_MISMATCH",
    "REGISTRY_RISK",
    "INVALID_RECORD",
    "ORPHAN_RED_INVOICE",
)

#: Statements of reconcile.sql that run once per shard, in order.
_PER_SHARD = (
    "rows",
    "duplicates",
    "one_per_source",
    "monitored",
    "issuer_side",
    "across_issuers",
    "pairs",
    "create_findings",
    "missing_in_registry",
    "missing_in_issuer",
    "duplicate_in_source",
    "duplicate_across_issuers",
    "field_mismatch",
    "status_mismatch",
    "registry_risk",
    "invalid_records",
    "orphan_red_invoices",
)


@dataclass(frozen=True)
class ReconcileResult:
    night: date
    counts: dict[str, int]
    issuer_keys: int
    registry_keys: int
    matched_keys: int
    registry_other_sellers: int
    previous_night: date | None
    new: int
    open: int
    resolved: int
    out_of_window: int


def params_for(night: date, cfg: Config, shards: int = 1, shard: int = 0) -> dict[str, Any]:
    as_of = cfg.as_of_for(night).astimezone(SHANGHAI).replace(tzinfo=None)
    start, end = cfg.window_for(night)
    return {
        "night": night,
        "window_start": start,
        "window_end": end,
        "as_of": as_of,
        "grace_cutoff": as_of - timedelta(hours=cfg.sync_grace_hours),
        "amount_tol": cfg.amount_tolerance,
        "tax_tol": cfg.tax_tolerance,
        "monitored": list(cfg.monitored_sellers),
        "shards": shards,
        "shard": shard,
    }


def is_valid_tax_id(tax_id: str) -> bool:
    """GB 32100 check for 18-character ids; an individual's resident id (GB 11643) also passes."""
    return bool(uscc.is_valid(tax_id) or ric.is_valid(tax_id))


def load_bad_tax_ids(con: duckdb.DuckDBPyConnection, night: date) -> int:
    """Distinct 18-character tax ids of the night that fail their check character, as a temp table."""
    ids = con.execute(
        "SELECT DISTINCT x FROM (SELECT seller_tax_id AS x FROM staged_invoices WHERE night = $n "
        "UNION ALL SELECT buyer_tax_id FROM staged_invoices WHERE night = $n) WHERE length(x) = 18",
        {"n": night},
    ).fetchall()
    bad = sorted(x for (x,) in ids if not is_valid_tax_id(x))
    con.execute("CREATE OR REPLACE TEMP TABLE rc_bad_tax_ids (tax_id VARCHAR)")
    if bad:
        con.executemany("INSERT INTO rc_bad_tax_ids VALUES (?)", [[b] for b in bad])
    return len(bad)


def reconcile_night(con: duckdb.DuckDBPyConnection, night: date, cfg: Config) -> ReconcileResult:
    """Compute the night's findings into the temp table ``rc_all`` (not yet stored)."""
    load_bad_tax_ids(con, night)
    shards = cfg.shards
    issuer_keys = registry_keys = matched = other = 0
    statements = dict(sql_statements("reconcile.sql"))
    for shard in range(shards):
        p = params_for(night, cfg, shards, shard)
        for name in _PER_SHARD:
            execute_sql(con, statements[name], p)
        i, r, m = execute_sql(con, statements["key_counts"], p).fetchone()
        issuer_keys, registry_keys, matched = issuer_keys + i, registry_keys + r, matched + m
        other += execute_sql(con, statements["out_of_scope"], p).fetchone()[0]
        # Unmatched keys of every shard meet again for the probable-match search: a typo moves a
        # key into another shard.
        if shard == 0:
            con.execute("CREATE OR REPLACE TEMP TABLE rc_all AS FROM rc_findings")
            con.execute(
                "CREATE OR REPLACE TEMP TABLE rc_unmatched AS FROM rc_pairs WHERE in_issuer <> in_registry"
            )
        else:
            con.execute("INSERT INTO rc_all FROM rc_findings")
            con.execute("INSERT INTO rc_unmatched FROM rc_pairs WHERE in_issuer <> in_registry")
    p = params_for(night, cfg)
    match_sql = statements["probable_match"].replace("FROM rc_pairs", "FROM rc_unmatched")
    execute_sql(con, match_sql, p)
    execute_sql(con, statements["probable_match_apply"].replace("rc_findings", "rc_all"), p)
    prev, new, open_, resolved, gone = store_findings(con, night, cfg)
    counts = dict.fromkeys(CATEGORIES, 0)
    for cat, n in con.execute("SELECT category, count(*) FROM rc_all GROUP BY 1").fetchall():
        counts[cat] = n
    return ReconcileResult(night, counts, issuer_keys, registry_keys, matched, other, prev, new, open_, resolved, gone)


def store_findings(con: duckdb.DuckDBPyConnection, night: date, cfg: Config) -> tuple[date | None, int, int, int, int]:
    """Replace the night's findings, each with new/open and first-seen relative to the previous night."""
    start, _ = cfg.window_for(night)
    p = {"night": night, "window_start": start}
    prev = execute_sql(con, named_sql("findings.sql", "previous_night"), p).fetchone()[0]
    p["prev"] = prev
    con.execute("BEGIN TRANSACTION")
    try:
        execute_sql(con, named_sql("findings.sql", "delete_night"), p)
        execute_sql(con, named_sql("findings.sql", "insert_night"), p)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    new, open_ = execute_sql(con, named_sql("findings.sql", "status_counts"), p).fetchone()
    resolved, gone = execute_sql(con, named_sql("findings.sql", "resolved_counts"), p).fetchone()
    return prev, new or 0, open_ or 0, resolved or 0, gone or 0


def fetch_findings(con: duckdb.DuckDBPyConnection, night: date) -> pa.Table:
    """The night's stored findings in publication order."""
    return execute_sql(
        con, named_sql("findings.sql", "ordered"), {"night": night, "categories": list(CATEGORIES)}
    ).to_arrow_table()


def fetch_resolved(con: duckdb.DuckDBPyConnection, night: date, cfg: Config) -> pa.Table:
    """Findings of the previous published night that are gone tonight."""
    start, _ = cfg.window_for(night)
    prev = execute_sql(con, named_sql("findings.sql", "previous_night"), {"night": night}).fetchone()[0]
    p = {"night": night, "prev": prev, "window_start": start, "categories": list(CATEGORIES)}
    return execute_sql(con, named_sql("findings.sql", "resolved"), p).to_arrow_table()


def now_shanghai() -> datetime:
    return datetime.now(SHANGHAI)
