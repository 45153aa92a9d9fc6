"""The open-items ledger's storage: each carried item's values once, one narrow row per night.

An open item whose invoice left the window (or whose system did not deliver) is carried night after
night until it is fixed or closed, and every published night lists it again. Stored as a full row per
night, the ledger grew with the number of items times the number of nights they stay open (111 MB of a
1M-a-side database after 30 generated nights). Here the columns that do not change while an item is
carried are stored once in ``carried_items``; each night adds a narrow row to ``carried_nights`` (the
item, why it is carried, the decision in force that night). The view ``carried_findings`` (schema.sql)
gives the same rows, columns and values as the table it replaces; its age and status are computed from
the night (``night - first_seen``, ``carried_as``), as they were when the rows were written.

An item is matched on all of its values, not on a hash, so two items never share a row by accident.
"""

from __future__ import annotations

import duckdb

#: Columns of carried_findings kept per night in carried_nights (besides the night and the item).
_NIGHTLY = ("carried_as", "decision", "decision_note", "decided_by", "decided_on")
#: Where a database written before this split keeps its carried rows until :func:`migrate` moves them.
_LEGACY = "legacy_carried_findings"


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [
        name
        for (name,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND table_name = $t ORDER BY column_index",
            {"t": table},
        ).fetchall()
    ]


def item_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The values of a carried item: every column of carried_items but its id."""
    return [c for c in _columns(con, "carried_items") if c != "item"]


def store(con: duckdb.DuckDBPyConnection, rows: str = "temp.main.fa_carried") -> None:
    """File the carried rows of ``rows`` (a table with carried_findings' columns, any nights): add the
    items not stored yet, then one narrow row per row. Runs inside the caller's transaction; the caller
    deletes the nights' earlier rows first, and calls :func:`drop_uncarried` after."""
    cols = item_columns(con)
    values = ", ".join(cols)
    con.execute(
        f"INSERT INTO carried_items (item, {values}) "
        f"SELECT (SELECT coalesce(max(item), 0) FROM carried_items) + row_number() OVER (ORDER BY {values}), "
        f"{values} FROM (SELECT DISTINCT {values} FROM {rows} EXCEPT SELECT {values} FROM carried_items)"
    )
    match = " AND ".join(f"i.{c} IS NOT DISTINCT FROM r.{c}" for c in cols)
    nightly = ", ".join(f"r.{c}" for c in _NIGHTLY)
    con.execute(
        f"INSERT INTO carried_nights (night, item, {', '.join(_NIGHTLY)}) "
        f"SELECT r.night, i.item, {nightly} FROM {rows} r JOIN carried_items i ON {match} ORDER BY r.night, i.item"
    )


def drop_uncarried(con: duckdb.DuckDBPyConnection) -> None:
    """Remove the items no night carries any more (after a night's rows were replaced)."""
    con.execute(
        "DELETE FROM carried_items i WHERE NOT EXISTS (SELECT 1 FROM carried_nights n WHERE n.item = i.item)"
    )


def set_aside_legacy(con: duckdb.DuckDBPyConnection) -> None:
    """A database written before this split holds ``carried_findings`` as a plain table: rename it out
    of the way of the view (:func:`migrate` then moves its rows)."""
    if con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND database_name = current_database() "
        "AND table_name = 'carried_findings'"
    ).fetchall()[0][0]:
        con.execute(f"ALTER TABLE carried_findings RENAME TO {_LEGACY}")


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Move the rows of a set-aside carried_findings table into items and nights, and drop it, in one
    transaction (a kill before the commit leaves it set aside; the next connection moves it)."""
    have = _columns(con, _LEGACY)
    if not have:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        missing = con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND table_name IN ('carried_items', 'carried_nights') "
            "AND column_name NOT IN ('item', 'night') AND NOT list_contains($have, column_name) "
            "ORDER BY table_name, column_index",
            {"have": have},
        ).fetchall()
        for col, kind in missing:  # written before the column existed: it was empty then
            con.execute(f"ALTER TABLE {_LEGACY} ADD COLUMN {col} {kind}")
        store(con, _LEGACY)
        con.execute(f"DROP TABLE {_LEGACY}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
