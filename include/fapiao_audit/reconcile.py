"""Reconcile: classify every invoice key of a night into findings, in DuckDB SQL.

The heavy lifting is ``sql/reconcile.sql`` (one model, categories as rows you can count); this
module binds the night's parameters, checks tax ids with python-stdnum, and runs the model per
shard (a hash of the invoice key, never the issue date).

Shards are real units of work. ``reconcile_shard`` needs only a read-only view of the database
and writes its result into its own folder (``findings.parquet``, ``unmatched.parquet``,
``stats.json``), so shards can run in separate processes or on separate machines at the same
time. ``merge_shards`` (the single writer) loads every shard's result, runs what needs all of
them (the probable-match search, new/open/resolved against the previous night) and stores the
night's findings in one transaction: the outcome is the same for any shard count.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from stdnum.cn import ric, uscc

from . import __version__, carried
from .config import SHANGHAI, Config
from .db import connect, execute_sql, named_sql, sql_statements
from .decisions import read_folder as read_decisions
from .errors import FapiaoError
from .model import (
    ACTIONS,
    CATEGORIES,
    CATEGORY_CODES,
    COMPARABLE_STATUSES,
    DECISIONS,
    DETAIL_ZH,
    FIELD_LABELS,
    FINDING_SECTIONS,
    INVOICE_TYPES,
    RISK_STATUSES,
    zero_counts,
)
from .versions import NIGHT_TABLE, night_table

#: Statements of reconcile.sql that run once per shard, in order: the shard's keys and both sides
#: side by side, then one section per finding category (the model names them).
_PREPARE = (
    "macros",
    "keys",
    "key_rows",
    "duplicates",
    "one_per_source",
    "monitored",
    "issuer_side",
    "across_issuers",
    "pairs",
    "create_findings",
)
_PER_SHARD = _PREPARE + FINDING_SECTIONS
#: Statements of reconcile.sql that run outside the per-shard sequence.
_SHARD_RESULT = ("shard_stats", "unmatched")
_MERGE = (
    "probable_match",
    "probable_match_apply",
    "missing_causes",
    "money",
    "money_apply",
    "money_at_risk",
    "cases",
    "cases_apply",
)

#: Bumped when the layout of a shard's result changes: older results are then refused, not merged.
SHARD_FORMAT = 2
_TEMP_TABLES = (
    "rc_keys",
    "rc_krows",
    "rc_dups",
    "rc_one",
    "rc_monitored",
    "rc_issuer",
    "rc_across",
    "rc_pairs",
    "rc_findings",
    "rc_bad_tax_ids",
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
    #: Where the monitored sellers came from: configured, issuers (their seller ids), or none (no issuer
    #: delivered a seller id and none is configured: MISSING_IN_ISSUER could not be checked).
    monitored_from: str = "issuers"
    monitored_sellers: int = 0
    #: Distinct seller ids the issuers delivered tonight.
    issuer_sellers: int = 0


@dataclass(frozen=True)
class ShardResult:
    """What one shard found (its findings are in ``folder``, not in memory)."""

    night: date
    shard: int
    shards: int
    folder: Path
    findings: int
    unmatched: int
    issuer_keys: int
    registry_keys: int
    matched_keys: int
    registry_other_sellers: int
    seconds: float


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
        "comparable_statuses": list(COMPARABLE_STATUSES),
        "risk_statuses": list(RISK_STATUSES),
        "invoice_types": list(INVOICE_TYPES),
    }


def _category_params() -> dict[str, list[str]]:
    """The categories in display order and the family of each (findings.sql binds both)."""
    return {"categories": list(CATEGORY_CODES), "families": [c.family for c in CATEGORIES]}


def is_valid_tax_id(tax_id: str) -> bool:
    """GB 32100 check for 18-character ids; an individual's resident id (GB 11643) also passes."""
    return bool(uscc.is_valid(tax_id) or ric.is_valid(tax_id))


def load_bad_tax_ids(con: duckdb.DuckDBPyConnection, night: date, shards: int = 1, shard: int = 0) -> int:
    """Distinct 18-character tax ids of the shard's records that fail their check character, as a temp table."""
    p = {"n": night, "shards": shards, "shard": shard}
    rows = (
        f"FROM {NIGHT_TABLE} WHERE night = $n AND invoice_key IS NOT NULL "
        "AND ($shards = 1 OR hash(invoice_key) % $shards = $shard)"
    )
    ids = con.execute(
        f"SELECT DISTINCT seller_tax_id {rows} AND length(seller_tax_id) = 18 "
        f"UNION SELECT DISTINCT buyer_tax_id {rows} AND length(buyer_tax_id) = 18",
        p,
    ).fetchall()
    bad = sorted(x for (x,) in ids if not is_valid_tax_id(x))
    con.execute("CREATE OR REPLACE TEMP TABLE rc_bad_tax_ids (tax_id VARCHAR)")
    if bad:
        con.executemany("INSERT INTO rc_bad_tax_ids VALUES (?)", [[b] for b in bad])
    return len(bad)


# ---------------------------------------------------------------- shards as units of work


def shard_root(work_dir: Path, night: date) -> Path:
    """Where the shards of a night put their results: ``<work_dir>/shards/<night>/``."""
    return work_dir / "shards" / night.isoformat()


def shard_folder(root: Path, shard: int, shards: int) -> Path:
    return root / f"shard-{shard:04d}-of-{shards:04d}"


def clear_shards(root: Path) -> None:
    """Forget every shard result of a night (before its shards run again)."""
    shutil.rmtree(root, ignore_errors=True)


def night_fingerprint(con: duckdb.DuckDBPyConnection, night: date, cfg: Config, shards: int) -> str:
    """What a shard result depends on: the night's ingested files, the settings the SQL binds, the code.

    A shard result whose fingerprint differs from the merge's (the night was ingested again since,
    or the settings changed) is refused rather than merged.
    """
    files = con.execute(
        "SELECT source_system, file, sha256, rows_loaded FROM ingested_files WHERE night = $n ORDER BY ALL",
        {"n": night},
    ).fetchall()
    staged = con.execute("SELECT count(*) FROM invoice_seen WHERE night = $n", {"n": night}).fetchall()[0][0]
    p = params_for(night, cfg, shards)
    p.pop("shard")
    payload = {"version": __version__, "format": SHARD_FORMAT, "files": files, "staged": staged, "params": p}
    return hashlib.sha256(json.dumps(payload, default=str, sort_keys=True).encode()).hexdigest()


def reconcile_shard(
    con: duckdb.DuckDBPyConnection,
    night: date,
    cfg: Config,
    shard: int,
    shards: int,
    root: Path,
    *,
    fingerprint: str | None = None,
) -> ShardResult:
    """Reconcile the keys of one shard; write the result into its own folder under ``root``.

    Reads the database only (the connection may be read-only) and writes nothing into it but
    temp tables. The folder appears whole or not at all (written aside, then renamed).
    """
    if not 0 <= shard < shards:
        raise FapiaoError(f"shard {shard} is not one of 0..{shards - 1}")
    t0 = time.perf_counter()
    fingerprint = fingerprint or night_fingerprint(con, night, cfg, shards)
    statements = dict(sql_statements("reconcile.sql"))
    p = params_for(night, cfg, shards, shard)
    with night_table(con, night):
        load_bad_tax_ids(con, night, shards, shard)
        for name in _PER_SHARD:
            execute_sql(con, statements[name], p)
        issuer_keys, registry_keys, issuer_only, other = execute_sql(
            con, statements["shard_stats"], p
        ).fetchall()[0]
        findings = con.execute("SELECT count(*) FROM rc_findings").fetchall()[0][0]
        folder = shard_folder(root, shard, shards)
        part = folder.with_name(f".{folder.name}.{os.getpid()}.part")
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        # Files are written through the relational API: paths never go into SQL text.
        con.table("rc_findings").write_parquet(str(part / "findings.parquet"))
        unmatched_rel = con.sql(statements["unmatched"])
        unmatched_rel.write_parquet(str(part / "unmatched.parquet"))
        unmatched = con.execute("SELECT count(*) FROM rc_pairs WHERE in_issuer <> in_registry").fetchall()[0][
            0
        ]
    seconds = round(time.perf_counter() - t0, 3)
    stats = {
        "format": SHARD_FORMAT,
        "fingerprint": fingerprint,
        "night": night.isoformat(),
        "shard": shard,
        "shards": shards,
        "findings": findings,
        "unmatched": unmatched,
        "issuer_keys": issuer_keys,
        "registry_keys": registry_keys,
        "matched_keys": issuer_keys - issuer_only,
        "registry_other_sellers": other,
        "seconds": seconds,
        "pid": os.getpid(),
        "host": os.uname().nodename,
    }
    (part / "stats.json").write_text(json.dumps(stats, indent=1), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(part, folder)
    for t in _TEMP_TABLES:
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return ShardResult(
        night,
        shard,
        shards,
        folder,
        findings,
        unmatched,
        issuer_keys,
        registry_keys,
        issuer_keys - issuer_only,
        other,
        seconds,
    )


def read_shard_stats(root: Path, shards: int, fingerprint: str) -> list[dict[str, Any]]:
    """Every shard's stats, or a clear error naming the shards missing or stale."""
    out, missing, stale = [], [], []
    for k in range(shards):
        f = shard_folder(root, k, shards) / "stats.json"
        try:
            s = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            missing.append(k)
            continue
        if s.get("format") != SHARD_FORMAT or s.get("fingerprint") != fingerprint or s.get("shard") != k:
            stale.append(k)
        out.append(s)
    if missing or stale:
        parts = []
        if missing:
            parts.append(f"no result for shard(s) {_ranges(missing)}")
        if stale:
            parts.append(f"shard(s) {_ranges(stale)} ran on other inputs or settings")
        raise FapiaoError(
            f"{root}: cannot merge {shards} shards: " + "; ".join(parts) + ". Run the night's shards again."
        )
    return out


def _ranges(ks: list[int]) -> str:
    return ", ".join(map(str, ks[:10])) + (f" and {len(ks) - 10} more" if len(ks) > 10 else "")


def merge_shards(
    con: duckdb.DuckDBPyConnection, night: date, cfg: Config, shards: int, root: Path
) -> ReconcileResult:
    """Load every shard's result, find probable matches across shards, store the night's findings."""
    stats = read_shard_stats(root, shards, night_fingerprint(con, night, cfg, shards))
    folders = [shard_folder(root, k, shards) for k in range(shards)]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE rc_all AS FROM read_parquet($f)",
        {"f": [str(f / "findings.parquet") for f in folders]},
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE rc_unmatched AS FROM read_parquet($f)",
        {"f": [str(f / "unmatched.parquet") for f in folders]},
    )
    statements = dict(sql_statements("reconcile.sql"))
    p = params_for(night, cfg)
    con.execute("ALTER TABLE rc_all ADD COLUMN cause VARCHAR")
    for column, kind in (
        ("case_id", "VARCHAR"),
        ("issuer_total", "DECIMAL(18, 2)"),
        ("registry_total", "DECIMAL(18, 2)"),
        ("amount_at_risk", "DECIMAL(18, 2)"),
    ):
        con.execute(f"ALTER TABLE rc_all ADD COLUMN {column} {kind}")
    with night_table(con, night) as table:
        for name in _MERGE:
            execute_sql(con, statements[name], p)
        issuer_sellers = con.execute(
            f"SELECT count(DISTINCT seller_tax_id) FROM {table} WHERE night = $n AND source_kind = 'issuer'",
            {"n": night},
        ).fetchall()[0][0]
    read_decisions(con, Path(cfg.acknowledgements_dir) if cfg.acknowledgements_dir else None, night)
    prev, new, open_, resolved, gone = store_findings(con, night, cfg)
    counts = zero_counts()
    for cat, n in con.execute("SELECT category, count(*) FROM rc_all GROUP BY 1").fetchall():
        counts[cat] = n
    con.execute("DROP TABLE IF EXISTS rc_unmatched")
    con.execute("DROP TABLE IF EXISTS rc_matches")
    con.execute("DROP TABLE IF EXISTS rc_money")
    con.execute("DROP TABLE IF EXISTS rc_cases")

    def total(key: str) -> int:
        return sum(int(s[key]) for s in stats)

    monitored_from = "configured" if cfg.monitored_sellers else "issuers" if issuer_sellers else "none"
    return ReconcileResult(
        night,
        counts,
        total("issuer_keys"),
        total("registry_keys"),
        total("matched_keys"),
        total("registry_other_sellers"),
        prev,
        new,
        open_,
        resolved,
        gone,
        monitored_from,
        len(cfg.monitored_sellers) if cfg.monitored_sellers else issuer_sellers,
        issuer_sellers,
    )


def database_path(con: duckdb.DuckDBPyConnection) -> Path | None:
    """The file behind a connection (None in memory)."""
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return Path(row[0]) if row and row[0] else None


def reconcile_night(
    con: duckdb.DuckDBPyConnection, night: date, cfg: Config, work_dir: Path | None = None
) -> ReconcileResult:
    """Every shard of the night, one after another on this connection, then the merge.

    The shards' results go to ``<work_dir>/shards/<night>/`` (a temporary folder when None) and
    are removed after the merge.
    """
    with (
        tempfile.TemporaryDirectory(prefix="fapiao-shards-")
        if work_dir is None
        else nullcontext(work_dir) as w
    ):
        root = shard_root(Path(w), night)
        clear_shards(root)
        fingerprint = night_fingerprint(con, night, cfg, cfg.shards)
        with night_table(con, night):  # one copy of tonight's snapshot for every shard and the merge
            for shard in range(cfg.shards):
                reconcile_shard(con, night, cfg, shard, cfg.shards, root, fingerprint=fingerprint)
            result = merge_shards(con, night, cfg, cfg.shards, root)
        clear_shards(root)
        return result


# ---------------------------------------------------------------- read-only access for shard workers


def connect_read_only(
    db_path: Path, cfg: Config, allowed_dirs: list[Path] | None = None
) -> duckdb.DuckDBPyConnection:
    """A read-only connection with the configured resources (several processes may hold one each)."""
    if not db_path.is_file():
        raise FapiaoError(f"{db_path}: no database to reconcile (ingest the night first)")
    return connect(db_path, cfg, allowed_dirs=allowed_dirs, read_only=True)


def _install_actions(con: duckdb.DuckDBPyConnection) -> None:
    """model.ACTIONS as a temp table fa_actions(category, field, action, role) for findings.sql."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE fa_actions (category VARCHAR, field VARCHAR, action VARCHAR, "
        "role VARCHAR)"
    )
    con.executemany(
        "INSERT INTO fa_actions VALUES (?, ?, ?, ?)",
        [[cat, fld, a.text, a.role_label] for (cat, fld), a in ACTIONS.items()],
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE fa_detail_zh (category VARCHAR, field VARCHAR, template VARCHAR)"
    )
    con.executemany(
        "INSERT INTO fa_detail_zh VALUES (?, ?, ?)", [[cat, fld, t] for (cat, fld), t in DETAIL_ZH.items()]
    )
    con.execute("CREATE OR REPLACE TEMP TABLE fa_field_labels (field VARCHAR, label VARCHAR)")
    con.executemany("INSERT INTO fa_field_labels VALUES (?, ?)", [[k, v] for k, v in FIELD_LABELS.items()])


def _findings_params(con: duckdb.DuckDBPyConnection, night: date, cfg: Config) -> dict[str, Any]:
    """The parameters of findings.sql for a night (and its macros installed)."""
    start, _ = cfg.window_for(night)
    p: dict[str, Any] = {
        "night": night,
        "window_start": start,
        **_category_params(),
        "closing": [code for code, (_zh, _en, closes) in DECISIONS.items() if closes],
    }
    execute_sql(con, named_sql("findings.sql", "macros"), p)
    p["prev"] = execute_sql(con, named_sql("findings.sql", "previous_night"), p).fetchall()[0][0]
    p["absent"] = execute_sql(con, named_sql("findings.sql", "absent_sources"), p).fetchall()[0][0]
    return p


def store_findings(
    con: duckdb.DuckDBPyConnection, night: date, cfg: Config
) -> tuple[date | None, int, int, int, int]:
    """Replace the night's findings, each with new/open and first-seen relative to the previous night,
    the decisions in force, and the open items carried (left the window or not checked, not closed)."""
    p = _findings_params(con, night, cfg)
    _install_actions(con)
    con.execute("BEGIN TRANSACTION")
    try:
        for name in ("delete_night", "insert_night", "apply_decisions", "delete_carried", "carried_tonight"):
            execute_sql(con, named_sql("findings.sql", name), p)
        carried.store(con)
        carried.drop_uncarried(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    new, open_ = execute_sql(con, named_sql("findings.sql", "status_counts"), p).fetchall()[0]
    resolved, gone = execute_sql(con, named_sql("findings.sql", "resolved_counts"), p).fetchall()[0]
    return p["prev"], new or 0, open_ or 0, resolved or 0, gone or 0


def fetch_findings(con: duckdb.DuckDBPyConnection, night: date) -> pa.Table:
    """The night's stored findings in publication order."""
    return execute_sql(
        con, named_sql("findings.sql", "ordered"), {"night": night, **_category_params()}
    ).to_arrow_table()


def fetch_resolved(con: duckdb.DuckDBPyConnection, night: date, cfg: Config) -> pa.Table:
    """Open items of the previous published night that are no longer open tonight: fixed, or closed by finance."""
    p = _findings_params(con, night, cfg)
    return execute_sql(con, named_sql("findings.sql", "resolved"), p).to_arrow_table()


def fetch_carried(con: duckdb.DuckDBPyConnection, night: date) -> pa.Table:
    """The open items carried tonight (left the window unresolved, or not checked)."""
    return execute_sql(
        con, named_sql("findings.sql", "carried"), {"night": night, **_category_params()}
    ).to_arrow_table()
