"""Staged records as versions: what a night writes is what changed.

A night's snapshot of a source repeats most of the night before (a 7-day window moves by a day). Each
normalised record (an invoice of ``staged_invoices``, a line of ``staged_lines``) is stored once in a
versions table, the first night it arrives with these values; a night adds one narrow row per staged
row to a "seen" table: where the row was read (file, sheet, line) and which version it holds. The views
``staged_invoices`` and ``staged_lines`` (schema.sql) join the two and give every night's snapshot with
the columns and values it always had, so reconciliation, expectations, reports, reruns and backfills
read what they read before.

Whether a record is unchanged is asked on its normalised values: a ``hash()`` of every value of the
record, looked up together with its source and key among the versions already stored. (Asking on the
raw row instead, to skip normalising unchanged rows, was measured no faster: the normalisation it saves
is about what hashing, matching and reassembling the raw rows cost.) With ``restage_all`` every row is
written as a new version, as if nothing had been staged before: the switch the equivalence test
compares with.

A version no kept night holds any more is removed with the nights retention removes (storage.sweep).

The stages that ask tonight's snapshot many questions (reconciliation, expectations) read it from a temp
table copied once (:func:`night_table`): every query of the view joins the night's seen rows to their
versions again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date

import duckdb

#: Columns of a versions table that are not a record's values.
_META = ("version_id", "source_kind", "source_system", "row_hash", "first_night")


@dataclass(frozen=True)
class Store:
    view: str
    versions: str
    seen: str
    #: Columns kept with the seen row, not the version: they say where something is in tonight's file.
    positional: tuple[str, ...] = ()


INVOICES = Store("staged_invoices", "invoice_versions", "invoice_seen", ("line_rate_line",))
LINES = Store("staged_lines", "line_versions", "line_seen")
STORES = (INVOICES, LINES)


def content_columns(con: duckdb.DuckDBPyConnection, store: Store) -> list[str]:
    """A record's values: the versions table's columns but its bookkeeping, in table order."""
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = $t "
        "ORDER BY column_index",
        {"t": store.versions},
    ).fetchall()
    return [c for (c,) in rows if c not in _META]


@dataclass(frozen=True)
class Staged:
    rows: int  # rows of tonight's snapshot (seen rows written)
    versions: int  # of them, new versions written


def stage(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    rows_view: str,
    *,
    night: date,
    kind: str,
    system: str,
    file: str,
    sheet: str | None,
    restage_all: bool = False,
) -> Staged:
    """Stage the rows of ``rows_view`` (``line``, unique, and the record's values by name) as one file's
    part of a night's snapshot. Runs inside the caller's transaction, in two statements that hold nothing
    but what DuckDB can spill (no scratch tables: a small ``duckdb_memory_limit`` must still do). Table
    and view names are the fixed ones of this module and of ingest.py; the values are bound."""
    if held_night(con) is not None:
        raise RuntimeError(f"{file}: rows staged while a night's snapshot copy is held on this connection")
    cols = content_columns(con, store)
    values = ", ".join(f"r.{c}" for c in cols)
    row_hash = f"hash({values})"
    placed = "".join(f", r.{c}" for c in store.positional)
    # A new version's id is the largest id so far plus its line in the file: unique (lines are, and the
    # next file starts above this one's largest) with no numbering pass (a window over all the rows
    # does not spill to disk the way joins and aggregates do).
    base = con.execute(f"SELECT coalesce(max(version_id), 0) FROM {store.versions}").fetchall()[0][0]
    part = part_id(con, night, kind, system, file, sheet)
    if restage_all:
        # Every row a new version; the seen rows number them the same way.
        new = f"SELECT r.line, r.invoice_key, {row_hash} AS row_hash FROM {rows_view} r"
        seen_sql = (
            f"SELECT $night AS night, $part AS part_id, r.line, $base + r.line AS version_id{placed} "
            f"FROM {rows_view} r ORDER BY r.line"
        )
    else:
        # New versions: the records this source has no version of yet (with the same key and values),
        # once each (a record twice in the file is one version, numbered at its first line).
        new = (
            f"SELECT min(c.line) AS line, c.invoice_key, c.row_hash FROM (SELECT r.line, r.invoice_key, "
            f"{row_hash} AS row_hash FROM {rows_view} r) c WHERE NOT EXISTS (SELECT 1 FROM {store.versions} v "
            "WHERE v.source_system = $system AND v.row_hash = c.row_hash "
            "AND v.invoice_key IS NOT DISTINCT FROM c.invoice_key) GROUP BY c.invoice_key, c.row_hash"
        )
        # Then every row holds the version of its key and values (the first, should an earlier
        # restage_all have written the same record twice).
        seen_sql = (
            f"SELECT $night AS night, $part AS part_id, r.line, min(v.version_id) AS version_id{placed} "
            f"FROM {rows_view} r "
            f"JOIN {store.versions} v ON v.source_system = $system AND v.row_hash = {row_hash} "
            f"AND v.invoice_key IS NOT DISTINCT FROM r.invoice_key GROUP BY r.line{placed} ORDER BY r.line"
        )
    written = con.execute(
        f"INSERT INTO {store.versions} BY NAME SELECT $base + n.line AS version_id, "
        f"$kind AS source_kind, $system AS source_system, n.row_hash, $night AS first_night, {values} "
        f"FROM ({new}) n JOIN {rows_view} r ON r.line = n.line",
        {"kind": kind, "system": system, "night": night, "base": base},
    ).fetchall()[0][0]
    matched_by = {"base": base} if restage_all else {"system": system}
    seen = con.execute(
        f"INSERT INTO {store.seen} BY NAME {seen_sql}", {"night": night, "part": part, **matched_by}
    ).fetchall()[0][0]
    rows = con.execute(f"SELECT count(*) FROM {rows_view}").fetchall()[0][0]
    if seen != rows:  # every row must hold a version: never a row lost on the way
        raise RuntimeError(f"{file}: {rows} rows to stage, {seen} staged ({store.seen})")
    return Staged(seen, written)


#: Tonight's staged invoices, copied once for the stages that query them many times (:func:`night_table`).
NIGHT_TABLE = "night_invoices"
#: One row: the night :data:`NIGHT_TABLE` holds.
_HELD = "night_invoices_held"


def held_night(con: duckdb.DuckDBPyConnection) -> date | None:
    """The night whose snapshot this connection holds in :data:`NIGHT_TABLE`, if any."""
    try:
        row = con.execute(f"SELECT night FROM temp.{_HELD}").fetchone()
    except duckdb.CatalogException:
        return None
    return row[0] if row else None


@contextmanager
def night_table(con: duckdb.DuckDBPyConnection, night: date) -> Iterator[str]:
    """Tonight's ``staged_invoices`` in the temp table :data:`NIGHT_TABLE` while the block runs (its name
    is yielded). A block inside another for the same night reads the outer one's copy (``run_night``
    holds one across reconciliation and expectations); nothing stages rows while a copy is held."""
    held = held_night(con)
    if held == night:
        yield NIGHT_TABLE
        return
    if held is not None:
        raise RuntimeError(f"the snapshot of {held} is held on this connection, not {night}'s")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {NIGHT_TABLE} AS SELECT * FROM staged_invoices WHERE night = $n",
        {"n": night},
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_HELD} AS SELECT $n::DATE AS night", {"n": night})
    try:
        yield NIGHT_TABLE
    finally:
        for table in (_HELD, NIGHT_TABLE):
            try:
                con.execute(f"DROP TABLE IF EXISTS temp.{table}")
            except duckdb.Error:  # a connection left unusable by the block's own error: nothing to free
                pass


def part_id(
    con: duckdb.DuckDBPyConnection, night: date, kind: str, system: str, file: str, sheet: str | None
) -> int:
    """The part (night, source, file, sheet) the rows being staged belong to, added if new."""
    key = {"night": night, "system": system, "file": file, "sheet": sheet}
    found = con.execute(
        "SELECT part_id FROM staged_parts WHERE night = $night AND source_system = $system AND file = $file "
        "AND sheet IS NOT DISTINCT FROM $sheet",
        key,
    ).fetchall()
    if found:
        return int(found[0][0])
    new = con.execute("SELECT coalesce(max(part_id), 0) + 1 FROM staged_parts").fetchall()[0][0]
    con.execute(
        "INSERT INTO staged_parts VALUES ($part, $night, $kind, $system, $file, $sheet)",
        {**key, "part": new, "kind": kind},
    )
    return int(new)


def forget(con: duckdb.DuckDBPyConnection, where: str, params: dict[str, object]) -> None:
    """Remove nights' snapshot rows (``where`` over night / source_system) and their parts; the versions
    they held stay until :func:`drop_unseen`."""
    for store in STORES:
        con.execute(
            f"DELETE FROM {store.seen} WHERE part_id IN (SELECT part_id FROM staged_parts WHERE {where})",
            params,
        )
    con.execute(f"DELETE FROM staged_parts WHERE {where}", params)


def drop_unseen(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Remove the versions no night's snapshot holds any more; how many, by versions table."""
    out = {}
    for store in STORES:
        out[store.versions] = con.execute(
            f"DELETE FROM {store.versions} v WHERE NOT EXISTS "
            f"(SELECT 1 FROM {store.seen} s WHERE s.version_id = v.version_id)"
        ).fetchall()[0][0]
    return out


_LEGACY_COLUMNS = (
    "ALTER TABLE staged_invoices ADD COLUMN IF NOT EXISTS sheet VARCHAR",
    "ALTER TABLE staged_invoices ADD COLUMN IF NOT EXISTS risk_level VARCHAR",
    "ALTER TABLE staged_invoices ADD COLUMN IF NOT EXISTS lines INTEGER",
    "ALTER TABLE staged_invoices ADD COLUMN IF NOT EXISTS lines_amount DECIMAL(18, 2)",
    "ALTER TABLE staged_invoices ADD COLUMN IF NOT EXISTS lines_tax DECIMAL(18, 2)",
    "ALTER TABLE staged_invoices ADD COLUMN IF NOT EXISTS line_rate_gap DECIMAL(38, 6)",
    "ALTER TABLE staged_invoices ADD COLUMN IF NOT EXISTS line_rate_line BIGINT",
    "ALTER TABLE staged_invoices ADD COLUMN IF NOT EXISTS line_problem VARCHAR",
    "ALTER TABLE staged_invoices ADD COLUMN IF NOT EXISTS upload_status VARCHAR",
    "ALTER TABLE staged_invoices ADD COLUMN IF NOT EXISTS source_document VARCHAR",
)


#: Where plain staged tables of an older database wait for :func:`migrate` (renamed before schema.sql
#: creates the views of the same names).
_LEGACY = {"staged_invoices": "legacy_staged_invoices", "staged_lines": "legacy_staged_lines"}


def set_aside_legacy(con: duckdb.DuckDBPyConnection) -> None:
    """A database written before versions holds ``staged_invoices`` / ``staged_lines`` as plain tables:
    rename them out of the way of the views (:func:`migrate` then moves their rows)."""
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND database_name = current_database() "
        "AND table_name IN ('staged_invoices', 'staged_lines') ORDER BY 1"
    ).fetchall()
    for (table,) in rows:
        con.execute(f"ALTER TABLE {table} RENAME TO {_LEGACY[table]}")


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Move the rows of set-aside plain staged tables into versions (one version per row, as the nights
    were staged) and drop them, in one transaction. A kill before the commit leaves them set aside, and
    the next connection moves them."""
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND database_name = current_database() "
        "AND table_name IN ('legacy_staged_invoices', 'legacy_staged_lines') ORDER BY 1"
    ).fetchall()
    if not rows:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        for (table,) in rows:
            store = INVOICES if table == "legacy_staged_invoices" else LINES
            if store is INVOICES:
                for sql in _LEGACY_COLUMNS:
                    con.execute(sql.replace("staged_invoices", table, 1))
            cols = content_columns(con, store)
            values = ", ".join(cols)
            placed = "".join(f", {c}" for c in store.positional)
            con.execute(
                "INSERT INTO staged_parts SELECT (SELECT coalesce(max(part_id), 0) FROM staged_parts) + row_number() "
                "OVER (ORDER BY night, source_system, file, sheet), * FROM (SELECT DISTINCT night, source_kind, "
                f"source_system, file, sheet FROM {table} EXCEPT SELECT night, source_kind, source_system, file, "
                "sheet FROM staged_parts)"
            )
            con.execute(
                "CREATE OR REPLACE TEMP TABLE fa_migrate AS SELECT row_number() OVER (ORDER BY t.night, "
                f"t.source_system, t.file, t.line) AS version_id, t.night, t.source_kind, t.source_system, "
                f"p.part_id, t.line{placed}, {values} FROM {table} t JOIN staged_parts p ON p.night = t.night "
                "AND p.source_system = t.source_system AND p.file = t.file AND p.sheet IS NOT DISTINCT FROM t.sheet"
            )
            con.execute(
                f"INSERT INTO {store.versions} BY NAME SELECT version_id, source_kind, source_system, "
                f"hash({values}) AS row_hash, night AS first_night, {values} FROM fa_migrate ORDER BY version_id"
            )
            con.execute(
                f"INSERT INTO {store.seen} BY NAME SELECT night, part_id, line, version_id{placed} "
                "FROM fa_migrate ORDER BY version_id"
            )
            con.execute("DROP TABLE temp.main.fa_migrate")
            con.execute(f"DROP TABLE {table}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
