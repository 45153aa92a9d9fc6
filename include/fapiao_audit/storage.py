"""Storage over months: retention of staged rows, and compaction of the database file.

A night's snapshots are stored as versions (versions.py): a record is written once, and a night adds a
narrow row per staged row. Kept forever, even that grows without end. Retention keeps the snapshots
(invoices, lines, rejected rows) of the newest ``retain_nights`` nights only, and the versions they
hold; findings, runs, the stages' results and the ingested files' audit trail are small and kept
forever. DuckDB reuses the blocks freed by deletes but never gives them back to the file system:
``compact`` rewrites the database into a new file and swaps it in atomically, under the same
one-writer lock a run takes.

One thing older nights are still asked for: a red invoice's blue original "found in no snapshot"
looks through every earlier staged night (reconcile.sql, orphan_red_invoices). Before a night's rows
go, its non-red invoices' keys and totals are folded into ``retired_blues`` (one row per key: the
record that lookup would take, the latest night's), so retention changes no finding.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from .config import Config
from .db import connect, exclusive
from .errors import InputError, LockError
from .versions import STORES, drop_unseen

#: Tables whose rows belong to a night and are removed once it falls out of retention (the snapshots'
#: seen rows; the versions no kept night holds any more go with them).
RETAINED_TABLES = ("invoice_seen", "line_seen", "staged_parts", "rejected_rows")


def kept_nights(con: duckdb.DuckDBPyConnection, cfg: Config, tonight: date | None = None) -> list[date]:
    """The nights whose staged rows are kept, newest first: the ``retain_nights`` newest nights run (with
    ``tonight``). Counted in nights run, not calendar days: a night run by mistake far in the future takes
    one place, it does not push every other night out."""
    nights = {n for (n,) in con.execute("SELECT DISTINCT night FROM ingested_files").fetchall()}
    if tonight is not None:
        nights.add(tonight)
    return (
        sorted(nights, reverse=True)[: cfg.retain_nights]
        if cfg.retain_nights
        else sorted(nights, reverse=True)
    )


def retention_horizon(
    con: duckdb.DuckDBPyConnection, cfg: Config, tonight: date | None = None
) -> date | None:
    """The oldest night whose staged rows are kept (None: every night is kept)."""
    kept = kept_nights(con, cfg, tonight)
    if cfg.retain_nights == 0 or len(kept) < cfg.retain_nights:
        return None
    return kept[-1]


def check_retained(con: duckdb.DuckDBPyConnection, night: date, cfg: Config) -> None:
    """Refuse a night outside retention (exit 2): ``retain_nights`` newer nights have run, so its staged
    rows are gone (or would be removed at once), and so may be the earlier nights it is compared with: a
    rerun or a late backfill could not reproduce what was published for it."""
    horizon = retention_horizon(con, cfg, night)
    if horizon is not None and night < horizon:
        newest = kept_nights(con, cfg)[0]
        raise InputError(
            f"night {night.isoformat()} is outside the retention of {cfg.retain_nights} nights (the database "
            f"keeps the staged rows of the {cfg.retain_nights} newest nights run, {horizon.isoformat()} to "
            f"{newest.isoformat()}); it cannot be run or rerun. Its published files stay as they are; to run it "
            "anyway, raise retain_nights in the configuration above the number of nights run since"
        )


@dataclass(frozen=True)
class SweepResult:
    horizon: date | None
    nights: tuple[date, ...]
    rows_removed: dict[str, int]


def sweep(con: duckdb.DuckDBPyConnection, cfg: Config) -> SweepResult:
    """Remove the staged rows of nights before the retention horizon, in one transaction."""
    horizon = retention_horizon(con, cfg)
    removed = dict.fromkeys((*RETAINED_TABLES, *(v.versions for v in STORES)), 0)
    if horizon is None:
        return SweepResult(None, (), removed)
    nights = tuple(
        n
        for (n,) in con.execute(
            "SELECT DISTINCT night FROM invoice_seen WHERE night < $h UNION "
            "SELECT DISTINCT night FROM line_seen WHERE night < $h UNION "
            "SELECT DISTINCT night FROM rejected_rows WHERE night < $h ORDER BY 1",
            {"h": horizon},
        ).fetchall()
    )
    if not nights:
        return SweepResult(horizon, (), removed)
    con.execute("BEGIN TRANSACTION")
    try:
        # The blue originals of the nights going, one per key: the record orphan_red_invoices would take
        # of them (the latest night, the registry's before an issuer's, then the first system by name),
        # against the one an earlier sweep kept for the same key. (One per key, not per key and source:
        # the registry and the issuer hold the same blue invoices, and only one is ever read.)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE st_blues AS "
            "WITH going AS MATERIALIZED (SELECT invoice_key, source_kind, source_system, night, total_amount "
            "FROM staged_invoices WHERE night < $h AND NOT is_red AND invoice_key IS NOT NULL) "
            "SELECT invoice_key, unnest(arg_min({'source_kind': source_kind, 'source_system': source_system, "
            "'night': night, 'total_amount': total_amount}, {'age': DATE '9999-12-31' - night, "
            "'issuer': source_kind <> 'registry', 'system': source_system})) "
            "FROM (FROM going UNION ALL SELECT invoice_key, source_kind, source_system, night, total_amount "
            "FROM retired_blues WHERE invoice_key IN (SELECT invoice_key FROM going)) GROUP BY invoice_key",
            {"h": horizon},
        )
        con.execute("DELETE FROM retired_blues WHERE invoice_key IN (SELECT invoice_key FROM st_blues)")
        con.execute("INSERT INTO retired_blues BY NAME FROM st_blues")
        for table in RETAINED_TABLES:
            # Table names come from the fixed tuple above.
            removed[table] = con.execute(f"DELETE FROM {table} WHERE night < $h", {"h": horizon}).fetchall()[
                0
            ][0]
        removed |= drop_unseen(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.execute("DROP TABLE IF EXISTS temp.main.st_blues")
    try:
        con.execute("CHECKPOINT")  # the freed blocks become reusable by the next night's rows
    except duckdb.TransactionException:
        pass
    return SweepResult(horizon, nights, removed)


# ---------------------------------------------------------------- compaction

#: Names of compaction's temp files beside the database: ``.<db name>.compact-<pid>`` (+ ``.wal``).
_COMPACT_TAG = ".compact-"


def _temp_files(db_path: Path) -> list[Path]:
    prefix = f".{db_path.name}{_COMPACT_TAG}"
    return sorted(p for p in db_path.parent.glob(f"{prefix}*") if p.name.startswith(prefix))


@dataclass(frozen=True)
class CompactResult:
    db: Path
    bytes_before: int
    bytes_after: int
    sweep: SweepResult
    leftovers_removed: tuple[str, ...]


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, (os.O_RDONLY | os.O_DIRECTORY) if directory else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compact(db_path: Path, cfg: Config, *, log: object = None) -> CompactResult:
    """Apply retention, then rewrite the database into a new file and swap it in (``os.replace``).

    Safe under the one-writer lock (a run waits for it, or it waits for the run, ``lock_timeout_s``)
    and against a kill at any moment: until the replace, the database is the old file, untouched
    (the copy is written beside it under a temp name); the replace is atomic; a temp file a killed
    compaction left is removed the next time.
    """
    db_path = Path(db_path)
    if not db_path.is_file():
        raise InputError(f"--db: {db_path} is not a database file")
    say = (lambda m: print(f"fapiao-audit: {m}", file=sys.stderr, flush=True)) if log else (lambda m: None)
    with exclusive(db_path, cfg.lock_timeout_s):
        leftovers = tuple(p.name for p in _temp_files(db_path))
        for p in _temp_files(db_path):
            p.unlink(missing_ok=True)
        before = db_path.stat().st_size + _size(db_path.with_name(db_path.name + ".wal"))
        con = connect(db_path, cfg)
        try:
            swept = sweep(con, cfg)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        say(
            f"retention: removed the staged rows of {len(swept.nights)} night(s) before "
            f"{swept.horizon.isoformat() if swept.horizon else '-'}"
        )
        wal = db_path.with_name(db_path.name + ".wal")
        if wal.exists():  # a checkpointed, closed database has none; with one, the copy would miss rows
            raise LockError(
                f"{wal}: the database still has a write-ahead log after a checkpoint; not compacted"
            )
        tmp = db_path.with_name(f".{db_path.name}{_COMPACT_TAG}{os.getpid()}")
        try:
            _copy_database(db_path, tmp, cfg)
            _fsync_path(tmp)
            os.replace(tmp, db_path)
            _fsync_path(db_path.parent, directory=True)
        finally:
            for p in (tmp, tmp.with_name(tmp.name + ".wal")):
                p.unlink(missing_ok=True)
        after = db_path.stat().st_size
    say(f"compacted {db_path}: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
    return CompactResult(db_path, before, after, swept, leftovers)


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 0


def _copy_database(src: Path, dst: Path, cfg: Config) -> None:
    """Every table of ``src`` into a fresh file ``dst`` (checkpointed, closed)."""
    from .db import pause_point

    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": cfg.duckdb_memory_limit,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    if cfg.duckdb_threads:
        config["threads"] = cfg.duckdb_threads
    if cfg.duckdb_temp_directory:
        config["temp_directory"] = cfg.duckdb_temp_directory
    con = duckdb.connect(":memory:", config=config)
    try:
        # Paths are bound through the relational API nowhere here: ATTACH takes a literal, so quote it.
        con.execute(f"ATTACH {_literal(str(src))} AS fa_old (READ_ONLY)")
        con.execute(f"ATTACH {_literal(str(dst))} AS fa_new")
        con.execute("COPY FROM DATABASE fa_old TO fa_new")
        con.execute("CHECKPOINT fa_new")
        pause_point("compact")  # test hook: the copy written, the old file not yet replaced
        con.execute("DETACH fa_new")
        con.execute("DETACH fa_old")
    finally:
        con.close()


def _literal(text: str) -> str:
    """A SQL string literal (ATTACH takes no parameters); the text is a path this process chose."""
    return "'" + text.replace("'", "''") + "'"
