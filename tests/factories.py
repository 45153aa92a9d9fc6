"""Small landing nights written by hand, so each test states its own data."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path
from typing import Any

NIGHT = date(2026, 11, 21)

# Valid unified social credit codes (GB 32100 check character verified by python-stdnum).
SELLER_A = "91110108551385082Q"
SELLER_B = "91110105306438668F"
BUYER_C = "91110105MA01R2QX0P"
OUTSIDER = "91310000MA1FL4Q20X"

CANONICAL = [
    "invoice_code",
    "invoice_number",
    "invoice_type",
    "issue_time",
    "seller_tax_id",
    "seller_name",
    "buyer_tax_id",
    "buyer_name",
    "amount",
    "tax_amount",
    "tax_rate",
    "total_amount",
    "status",
    "original_invoice_number",
    "remark",
]


def invoice(
    number: str,
    *,
    code: str = "",
    day: str = "2026-11-18",
    time: str = "10:00:00",
    seller: str = SELLER_A,
    amount: str = "1000.00",
    rate: str = "0.13",
    tax: str | None = None,
    total: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One invoice row in canonical columns; tax and total consistent unless given."""
    from decimal import ROUND_HALF_UP, Decimal

    a = Decimal(amount)
    t = Decimal(tax) if tax is not None else (a * Decimal(rate)).quantize(Decimal("0.01"), ROUND_HALF_UP)
    row = {
        "invoice_code": code,
        "invoice_number": number,
        "invoice_type": "数电票（普通发票）" if not code else "增值税电子普通发票",
        "issue_time": f"{day} {time}",
        "seller_tax_id": seller,
        "seller_name": "北京甲科技有限公司",
        "buyer_tax_id": BUYER_C,
        "buyer_name": "北京丙贸易有限公司",
        "amount": str(a),
        "tax_amount": str(t),
        "tax_rate": rate,
        "total_amount": total if total is not None else str(a + t),
        "status": "normal",
        "original_invoice_number": "",
        "remark": "",
    }
    row.update(extra)
    return row


def write_csv(
    path: Path, rows: list[dict[str, Any]], *, columns: list[str] | None = None, encoding: str = "utf-8"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = columns or CANONICAL
    with path.open("w", encoding=encoding, newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([r.get(c, "") for c in cols])
    return path


def write_rows(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    """A CSV in the file's own headers (not the canonical ones)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding=encoding, newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def stage_rows(con, view: str, columns: str, rows: list) -> None:
    """Rows (``columns`` of ``staged_invoices`` or ``staged_lines``, comma separated) staged the way ingest
    stores them: as versions and seen rows, one call of versions.stage per night, source, file and sheet."""
    from fapiao_audit.versions import INVOICES, LINES, stage

    store = INVOICES if view == "staged_invoices" else LINES
    con.execute(f"CREATE OR REPLACE TEMP TABLE t_stage AS SELECT * FROM {view} LIMIT 0")
    marks = ", ".join(["?"] * len(columns.split(",")))
    con.executemany(f"INSERT INTO t_stage ({columns}) VALUES ({marks})", rows)
    groups = con.execute(
        "SELECT DISTINCT night, source_kind, source_system, file, sheet FROM t_stage"
    ).fetchall()
    for night, kind, system, file, sheet in groups:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE t_stage_rows AS SELECT * FROM t_stage WHERE night = ? AND source_kind = ? "
            "AND source_system = ? AND file = ? AND sheet IS NOT DISTINCT FROM ?",
            [night, kind, system, file, sheet],
        )
        stage(con, store, "t_stage_rows", night=night, kind=kind, system=system, file=file, sheet=sheet)
    con.execute("DROP TABLE IF EXISTS temp.main.t_stage_rows")
    con.execute("DROP TABLE IF EXISTS temp.main.t_stage")
