"""Ingest: every format, encoding and header; accounting; refusals."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import pytest

from factories import BUYER_C, NIGHT, SELLER_A, invoice, write_csv
from fapiao_audit.config import Config, build_config
from fapiao_audit.errors import InputError
from fapiao_audit.ingest import header_key, ingest_night, map_headers

REGISTRY_HEADERS = [
    "序号",
    "发票代码",
    "发票号码",
    "数电发票号码",
    "销方识别号",
    "销方名称",
    "购方识别号",
    "购买方名称",
    "开票日期",
    "金额",
    "税额",
    "价税合计",
    "发票来源",
    "发票票种",
    "发票状态",
    "是否正数发票",
    "发票风险等级",
    "开票人",
    "备注",
]


def registry_rows() -> list[list[str]]:
    return [
        [
            "1",
            "",
            "",
            "26110000000000000001",
            SELLER_A,
            "北京甲科技有限公司",
            BUYER_C,
            "北京丙贸易有限公司",
            "2026-11-18 10:00:00",
            "1,000.00",
            "130.00",
            "1,130.00",
            "电子发票服务平台",
            "数电票（普通发票）",
            "正常",
            "是",
            "正常",
            "张三",
            "",
        ],
        [
            "2",
            "011002600111",
            "00012345",
            "",
            SELLER_A,
            "北京甲科技有限公司",
            "",
            "李四",
            "2026-11-18 11:00:00",
            "50.00",
            "1.50",
            "51.50",
            "税控",
            "增值税电子普通发票",
            "已作废",
            "是",
            "",
            "张三",
            "",
        ],
        [
            "合计",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "1,050.00",
            "131.50",
            "1,181.50",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ],
    ]


def write_registry_csv(path: Path, encoding: str) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding=encoding, newline="") as f:
        w = csv.writer(f)
        w.writerow(REGISTRY_HEADERS)
        w.writerows(registry_rows())
    return path


def issuer_night(tmp_path: Path) -> Path:
    landing = tmp_path / "landing"
    write_csv(landing / NIGHT.isoformat() / "issuers" / "erp" / "erp.csv", [invoice("26110000000000000001")])
    return landing


def staged(con, source="registry"):
    return con.execute(
        "SELECT invoice_key, invoice_code, invoice_number, issue_time, amount, tax_amount, total_amount, status, "
        "buyer_tax_id, line FROM staged_invoices WHERE source_system = ? ORDER BY line",
        [source],
    ).fetchall()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_registry_export_loads_in_every_encoding(tmp_path, mem_con, encoding):
    landing = issuer_night(tmp_path)
    write_registry_csv(landing / NIGHT.isoformat() / "registry" / "export.csv", encoding)
    res = ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    reg = next(f for f in res.files if f.source_system == "registry")
    # the 合计 row is no invoice and no rejection: it is counted as skipped
    assert (reg.rows_read, reg.rows_loaded, reg.rows_rejected, reg.rows_skipped) == (3, 2, 0, 1)
    assert reg.encoding == encoding
    rows = staged(mem_con)
    assert rows[0][:3] == ("26110000000000000001", "", "26110000000000000001")
    assert rows[1][:3] == ("011002600111-00012345", "011002600111", "00012345")
    assert str(rows[0][4]) == "1000.00" and rows[1][7] == "voided" and rows[1][8] == ""
    rej = mem_con.execute("SELECT file, line, reason, skipped FROM rejected_rows").fetchall()
    assert rej == [("registry/export.csv", 4, "合计 totals row: not an invoice (skipped)", True)]


def test_xlsx_first_sheet(tmp_path, mem_con):
    import openpyxl

    landing = issuer_night(tmp_path)
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(REGISTRY_HEADERS)
    for r in registry_rows():
        ws.append(r)
    ws.cell(row=2, column=9).value = __import__("datetime").datetime(2026, 11, 18, 10, 0)
    wb.create_sheet("other").append(["ignored"])
    path = landing / NIGHT.isoformat() / "registry" / "export.xlsx"
    path.parent.mkdir(parents=True)
    wb.save(path)
    res = ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    reg = next(f for f in res.files if f.source_system == "registry")
    assert (reg.format, reg.rows_read, reg.rows_loaded, reg.rows_rejected, reg.rows_skipped) == (
        "xlsx",
        3,
        2,
        0,
        1,
    )
    assert [r[0] for r in staged(mem_con)] == ["26110000000000000001", "011002600111-00012345"]
    assert [r[9] for r in staged(mem_con)] == [2, 3]


def test_parquet_utc_timestamps_and_float_amounts(tmp_path, mem_con):
    landing = tmp_path / "landing"
    write_registry_csv(landing / NIGHT.isoformat() / "registry" / "export.csv", "utf-8")
    path = landing / NIGHT.isoformat() / "issuers" / "erp" / "erp.parquet"
    path.parent.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        "COPY (SELECT '' AS invoice_code, '26110000000000000001' AS invoice_number, "
        "TIMESTAMPTZ '2026-11-18 02:00:00+00' AS issue_time, ? AS seller_tax_id, 1000.0000000001::DOUBLE AS amount, "
        "129.99999999::DOUBLE AS tax_amount, 1130.0::DOUBLE AS total_amount, 0.13::DOUBLE AS tax_rate, "
        "12345678::BIGINT AS buyer_tax_id) TO '" + str(path) + "' (FORMAT parquet)",
        [SELLER_A],
    )
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    row = mem_con.execute(
        "SELECT issue_time, amount, tax_amount, tax_rate, buyer_tax_id, line FROM staged_invoices "
        "WHERE source_system = 'erp'"
    ).fetchone()
    assert str(row[0]) == "2026-11-18 10:00:00"  # UTC 02:00 is 10:00 in Beijing
    assert (str(row[1]), str(row[2]), str(row[3]), row[4], row[5]) == (
        "1000.00",
        "130.00",
        "0.1300",
        "12345678",
        1,
    )


def test_jsonl_string_amounts_and_bad_lines(tmp_path, mem_con):
    landing = tmp_path / "landing"
    write_registry_csv(landing / NIGHT.isoformat() / "registry" / "export.csv", "utf-8")
    path = landing / NIGHT.isoformat() / "issuers" / "shop" / "orders.jsonl"
    path.parent.mkdir(parents=True)
    good = {
        "invoice_number": "26110000000000000001",
        "issue_time": "2026-11-18T10:00:00+08:00",
        "seller_tax_id": SELLER_A,
        "amount": "1,000.00",
        "tax_rate": "13%",
        "tax_amount": "130",
        "total_amount": 1130,
    }
    path.write_text(json.dumps(good, ensure_ascii=False) + "\n{broken\n\n[1, 2]\n", encoding="utf-8")
    res = ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    shop = next(f for f in res.files if f.source_system == "shop")
    assert (shop.rows_read, shop.rows_loaded, shop.rows_rejected) == (3, 1, 2)
    rej = mem_con.execute(
        "SELECT line, raw, reason FROM rejected_rows WHERE source_system = 'shop' ORDER BY line"
    ).fetchall()
    assert rej == [(2, "{broken", "malformed JSON line"), (4, "[1, 2]", "JSON line is not an object")]


def test_rejected_rows_keep_file_line_raw_reason(tmp_path, mem_con):
    landing = tmp_path / "landing"
    write_registry_csv(landing / NIGHT.isoformat() / "registry" / "export.csv", "utf-8")
    rows = [
        invoice("26110000000000000001"),
        invoice("", amount="5"),
        dict(invoice("26110000000000000002"), amount="abc"),
        invoice("26110000000000000003", issue_time="yesterday"),
    ]
    path = write_csv(landing / NIGHT.isoformat() / "issuers" / "erp" / "erp.csv", rows)
    with path.open("a", encoding="utf-8") as f:
        f.write("only,three,fields\n")
        f.write(",".join(["", "26110000000000000004", *[""] * 13]) + "\n")
    res = ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    erp = next(f for f in res.files if f.source_system == "erp")
    assert erp.rows_read == erp.rows_loaded + erp.rows_rejected == 6
    rej = mem_con.execute(
        "SELECT line, reason FROM rejected_rows WHERE source_system = 'erp' ORDER BY line"
    ).fetchall()
    assert [(line, reason.split(":")[0]) for line, reason in rej] == [
        (3, "missing invoice number"),
        (4, "unparseable amount"),
        (5, "unparseable issue time"),
        (6, "malformed CSV row (missing columns)"),
        (7, "missing issue time"),
    ]


def test_both_number_columns_take_the_non_empty_one():
    headers = ["发票代码", "发票号码", "数电发票号码", "开票日期", "销方识别号", "金额"]
    m = map_headers(headers, {})
    assert m["invoice_number"] == [2, 1] and m["invoice_code"] == [0]
    assert header_key(" Invoice Number ") == header_key("invoice_number") == "invoicenumber"


def test_per_source_column_mapping(tmp_path, mem_con):
    landing = tmp_path / "landing"
    write_registry_csv(landing / NIGHT.isoformat() / "registry" / "export.csv", "utf-8")
    cols = ["FP_NO", "FP_DATE", "SELLER", "NET", "VAT", "GROSS"]
    rows = [
        {
            "FP_NO": "26110000000000000001",
            "FP_DATE": "2026-11-18 10:00:00",
            "SELLER": SELLER_A,
            "NET": "1000",
            "VAT": "130",
            "GROSS": "1130",
        }
    ]
    write_csv(landing / NIGHT.isoformat() / "issuers" / "legacy" / "x.csv", rows, columns=cols)
    with pytest.raises(InputError, match="missing required column"):
        ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    cfg = build_config(
        {
            "sources": {
                "legacy": {
                    "columns": {
                        "FP_NO": "invoice_number",
                        "fp date": "issue_time",
                        "SELLER": "seller_tax_id",
                        "NET": "amount",
                        "VAT": "tax_amount",
                        "GROSS": "total_amount",
                    }
                }
            }
        }
    )
    ingest_night(mem_con, landing, NIGHT, cfg, tmp_path / "tmp")
    assert staged(mem_con, "legacy")[0][0] == "26110000000000000001"


def test_rerun_replaces_and_same_bytes_load_once(tmp_path, mem_con):
    landing = tmp_path / "landing"
    reg = write_registry_csv(landing / NIGHT.isoformat() / "registry" / "export.csv", "utf-8")
    (reg.parent / "export-resent.csv").write_bytes(reg.read_bytes())
    write_csv(landing / NIGHT.isoformat() / "issuers" / "erp" / "erp.csv", [invoice("26110000000000000001")])
    for _ in range(2):
        res = ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    dup = next(f for f in res.files if f.file == "registry/export.csv")
    assert dup.duplicate_of == "registry/export-resent.csv" and dup.rows_read == 0
    assert mem_con.execute("SELECT count(*) FROM staged_invoices").fetchone()[0] == 3
    assert mem_con.execute("SELECT count(*) FROM rejected_rows").fetchone()[0] == 1


# ------------------------------------------------------------------ refusals


def night_with_registry(tmp_path: Path) -> Path:
    landing = issuer_night(tmp_path)
    write_registry_csv(landing / NIGHT.isoformat() / "registry" / "export.csv", "utf-8")
    return landing


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.parquet", b"PAR1" + b"\x00garbage" * 20, "cannot read as parquet"),
        ("bad.xlsx", b"PK\x03\x04 not really a zip", "not a readable .xlsx"),
        ("bad.csv", bytes(range(256)) * 4, "binary content"),
        # GB18030 is validated while it is transcoded, not in a pass of its own: still refused.
        (
            "gbk_nul.csv",
            "发票号码,开票日期,金额\n".encode("gb18030") + b"1\x00,2026-11-18,3\n",
            "binary content",
        ),
        (
            "gbk_bad.csv",
            "发票号码,开票日期,金额\n".encode("gb18030") + b"1,\x81\x20\xff,3\n",
            "neither UTF-8 nor GBK",
        ),
        ("bad.jsonl", b"not json at all\nstill not\n", "no line is a JSON object"),
        ("empty.csv", b"", "empty file"),
        ("nocols.csv", "开票日期,金额\n2026-11-18,1\n".encode(), "missing required column"),
    ],
)
def test_unreadable_file_is_refused_with_its_name(tmp_path, mem_con, name, content, message):
    landing = night_with_registry(tmp_path)
    path = landing / NIGHT.isoformat() / "issuers" / "erp" / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as e:
        ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    assert name in str(e.value)
    assert not list((tmp_path / "tmp").glob("*.utf8")), "a transcoded copy was left behind"


def test_truncated_parquet_is_refused(tmp_path, mem_con):
    landing = night_with_registry(tmp_path)
    path = landing / NIGHT.isoformat() / "issuers" / "erp" / "t.parquet"
    duckdb.connect().execute(f"COPY (SELECT range AS x FROM range(1000)) TO '{path}' (FORMAT parquet)")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputError, match="t.parquet"):
        ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")


def test_missing_registry_or_night_is_refused(tmp_path, mem_con):
    landing = issuer_night(tmp_path)
    with pytest.raises(InputError, match="registry delivery is missing"):
        ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    with pytest.raises(InputError, match="no delivery folder for night 2026-11-22"):
        ingest_night(mem_con, landing, date(2026, 11, 22), Config(), tmp_path / "tmp")


def test_source_folder_named_like_injection_is_refused(tmp_path, mem_con):
    landing = night_with_registry(tmp_path)
    evil = landing / NIGHT.isoformat() / "issuers" / "x'; DROP TABLE staged_invoices; --"
    write_csv(evil / "a.csv", [invoice("26110000000000000001")])
    with pytest.raises(InputError, match="not an accepted issuing-system name"):
        ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    assert mem_con.execute("SELECT count(*) FROM staged_invoices").fetchone() == (0,)
