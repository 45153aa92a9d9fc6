"""One night delivered every way the contract allows reconciles to exactly the injected findings.

The generator's flat-layout night (GB18030 registry export with 合计 row, ERP Parquet with UTC timestamps and
float amounts, POS CSV, web-shop JSONL with string amounts) is re-delivered as: the registry export
as XLSX, the POS file as UTF-8-with-BOM CSV with Chinese headers, full-width ids and 1,234.50
amounts, and the web shop as a PostgreSQL table. Cosmetic differences must produce no finding.
"""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pytest

from fapiao_audit.cli import main
from fapiao_audit.generate import generate_night

NIGHT = "2026-11-21"
KEY = ("category", "invoice_code", "invoice_number", "field", "source_system")
FULLWIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)})
CHINESE = {
    "invoice_code": "发票代码",
    "invoice_number": "发票号码",
    "invoice_type": "发票票种",
    "issue_time": "开票日期",
    "seller_tax_id": "销方识别号",
    "seller_name": "销方名称",
    "buyer_tax_id": "购方识别号",
    "buyer_name": "购买方名称",
    "amount": "金额",
    "tax_amount": "税额",
    "tax_rate": "税率",
    "total_amount": "价税合计",
    "status": "发票状态",
    "remark": "备注",
}


def keys(path: Path) -> list[tuple[str, ...]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return sorted(tuple(r[k] for k in KEY) for r in csv.DictReader(f))


def registry_to_xlsx(night_dir: Path) -> None:
    import openpyxl

    src = next((night_dir / "registry").glob("*.csv"))
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("发票")
    with src.open(encoding="gb18030", newline="") as f:
        for row in csv.reader(f):
            ws.append(row)
    wb.save(src.with_suffix(".xlsx"))
    src.unlink()


def pos_to_chinese_bom_csv(night_dir: Path) -> None:
    src = next((night_dir / "issuers" / "pos").glob("*.csv"))
    with src.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    cols = list(rows[0])
    with src.open("w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f)
        w.writerow([CHINESE.get(c, c) for c in cols])
        for r in rows:
            out = dict(r)
            for c in ("invoice_number", "seller_tax_id", "buyer_tax_id"):
                out[c] = (r[c] or "").translate(FULLWIDTH)
            for c in ("amount", "tax_amount", "total_amount"):
                if r[c]:
                    out[c] = f"{Decimal(r[c]):,.2f}"
            w.writerow([out[c] for c in cols])


def webshop_to_postgres(night_dir: Path, url: str) -> None:
    import psycopg

    src = next((night_dir / "issuers" / "webshop").glob("*.jsonl"))
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    cols = list(rows[0])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS webshop_invoices")
        conn.execute(
            "CREATE TABLE webshop_invoices ("
            + ", ".join(f"{c} {'timestamptz' if c == 'issue_time' else 'text'}" for c in cols)
            + ")"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO webshop_invoices VALUES (" + ", ".join(["%s"] * len(cols)) + ")",
                [[r[c] for c in cols] for r in rows],
            )
    src.unlink()
    src.parent.rmdir()


@pytest.mark.parametrize("variant", ["as_generated", "every_format"])
def test_night_in_every_format_reconciles_exactly(tmp_path, pg, variant):
    landing = tmp_path / "landing"
    night = __import__("datetime").date.fromisoformat(NIGHT)
    res = generate_night(landing, night, rows=700, seed=5, layout="flat")
    night_dir = res.night_dir
    args = ["run", "--night", NIGHT, "--landing", str(landing), "--reports", str(tmp_path / "reports")]
    if variant == "every_format":
        registry_to_xlsx(night_dir)
        pos_to_chinese_bom_csv(night_dir)
        webshop_to_postgres(night_dir, pg)
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'[database_sources.webshop]\nurl = "{pg}"\ntable = "webshop_invoices"\n', encoding="utf-8"
        )
        args += ["--config", str(cfg)]
    assert main(args) in (0, 1)
    assert keys(tmp_path / "reports" / NIGHT / "exceptions.csv") == keys(res.expected_path)
    summary = json.loads((tmp_path / "reports" / NIGHT / "summary.json").read_text(encoding="utf-8"))
    formats = {f["format"] for s in summary["sources"] for f in s["files"]}
    assert formats == (
        {"csv", "parquet", "jsonl"} if variant == "as_generated" else {"xlsx", "csv", "parquet"}
    )
    for s in summary["sources"]:
        for f in s["files"]:
            assert f["rows_read"] == f["rows_loaded"] + f["rows_rejected"] + f["rows_skipped"]
