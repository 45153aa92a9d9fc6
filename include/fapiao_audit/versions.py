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
"""

from __future__ import annotations

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
    """Stage the rows of ``rows_view`` (``line`` and the record's values by name) as one file's part of a
    night's snapshot. Runs inside the caller's transaction; table and view names are the fixed ones of
    this module and of ingest.py, the values are bound."""
    cols = content_columns(con, store)
    values = ", ".join(f"r.{c}" for c in cols)
    placed = "".join(f", {c}" for c in store.positional)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE ing_cand AS SELECT r.line, r.invoice_key, hash({values}) AS row_hash{placed} "
        f"FROM {rows_view} r"
    )
    base = con.execute(f"SELECT coalesce(max(version_id), 0) FROM {store.versions}").fetchall()[0][0]
    if restage_all:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE ing_vid AS SELECT line, NULL::BIGINT AS version_id FROM ing_cand"
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE ing_new AS SELECT line, invoice_key, row_hash, "
            "$base + row_number() OVER (ORDER BY line) AS version_id FROM ing_cand",
            {"base": base},
        )
    else:
        # The versions this source already has with the same key and values (several only if an
        # earlier restage_all wrote duplicates: the first is taken).
        con.execute(
            "CREATE OR REPLACE TEMP TABLE ing_vid AS SELECT c.line, min(v.version_id) AS version_id "
            f"FROM ing_cand c JOIN {store.versions} v ON v.source_system = $system AND v.row_hash = c.row_hash "
            "AND v.invoice_key IS NOT DISTINCT FROM c.invoice_key GROUP BY c.line",
            {"system": system},
        )
        # The rest: one new version per distinct record (a record twice in the file is one version).
        con.execute(
            "CREATE OR REPLACE TEMP TABLE ing_new AS SELECT line, invoice_key, row_hash, "
            "$base + row_number() OVER (ORDER BY line) AS version_id FROM ("
            "SELECT DISTINCT ON (invoice_key, row_hash) c.line, c.invoice_key, c.row_hash FROM ing_cand c "
            "ANTI JOIN ing_vid m ON m.line = c.line ORDER BY c.invoice_key, c.row_hash, c.line)",
            {"base": base},
        )
    written = con.execute(
        f"INSERT INTO {store.versions} BY NAME SELECT n.version_id, $kind AS source_kind, "
        f"$system AS source_system, n.row_hash, $night AS first_night, {values} "
        f"FROM ing_new n JOIN {rows_view} r ON r.line = n.line ORDER BY n.version_id",
        {"kind": kind, "system": system, "night": night},
    ).fetchall()[0][0]
    to_new = (
        "n.line = c.line"
        if restage_all
        else "m.version_id IS NULL AND n.invoice_key IS NOT DISTINCT FROM c.invoice_key AND n.row_hash = c.row_hash"
    )
    seen = con.execute(
        f"INSERT INTO {store.seen} BY NAME SELECT $night AS night, $kind AS source_kind, $system AS source_system, "
        f"$file AS file, $sheet AS sheet, c.line, coalesce(m.version_id, n.version_id) AS version_id{placed} "
        f"FROM ing_cand c LEFT JOIN ing_vid m ON m.line = c.line LEFT JOIN ing_new n ON {to_new} ORDER BY c.line",
        {"night": night, "kind": kind, "system": system, "file": file, "sheet": sheet},
    ).fetchall()[0][0]
    for t in ("ing_cand", "ing_vid", "ing_new"):
        con.execute(f"DROP TABLE IF EXISTS temp.main.{t}")
    return Staged(seen, written)


def forget(con: duckdb.DuckDBPyConnection, where: str, params: dict[str, object]) -> None:
    """Remove nights' snapshot rows (``where`` over night / source_system) from both seen tables; the
    versions they held stay until :func:`drop_unseen`."""
    for store in STORES:
        con.execute(f"DELETE FROM {store.seen} WHERE {where}", params)


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
                "CREATE OR REPLACE TEMP TABLE fa_migrate AS SELECT row_number() OVER (ORDER BY night, "
                f"source_system, file, line) AS version_id, night, source_kind, source_system, file, sheet, line"
                f"{placed}, {values} FROM {table}"
            )
            con.execute(
                f"INSERT INTO {store.versions} BY NAME SELECT version_id, source_kind, source_system, "
                f"hash({values}) AS row_hash, night AS first_night, {values} FROM fa_migrate ORDER BY version_id"
            )
            con.execute(
                f"INSERT INTO {store.seen} BY NAME SELECT night, source_kind, source_system, file, sheet, line, "
                f"version_id{placed} FROM fa_migrate ORDER BY version_id"
            )
            con.execute("DROP TABLE temp.main.fa_migrate")
            con.execute(f"DROP TABLE {table}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
