"""Issuing systems as they really export: their header families, issuance and upload states, value codes,
time forms, the key they should give, why an invoice is missing (cause), a failed issuance, and a night
whose issuers deliver no seller id."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pytest

from factories import BUYER_C, NIGHT, SELLER_A, invoice, write_csv, write_rows
from fapiao_audit.cli import main
from fapiao_audit.config import Config, build_config
from fapiao_audit.errors import ConfigError
from fapiao_audit.ingest import ingest_night
from fapiao_audit.reconcile import fetch_findings, reconcile_night

DAY = NIGHT.isoformat()
OLD = "2026-11-18"  # issued three days before the night: past the 48 h grace period


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def registry(landing: Path, numbers: list[str], **extra: str) -> None:
    write_csv(landing / DAY / "registry" / "r.csv", [invoice(n, day=OLD, **extra) for n in numbers])


def staged(con, source: str, *columns: str) -> dict[str, tuple]:
    cols = ", ".join(columns)
    return {
        r[0]: r[1:]
        for r in con.execute(
            f"SELECT invoice_key, {cols} FROM staged_invoices WHERE source_system = ? ORDER BY line", [source]
        ).fetchall()
    }


def findings(con) -> list[dict]:
    return fetch_findings(con, NIGHT).to_pylist()


# --------------------------------------------------------------------------- header families


def test_a_pinyin_header_export_reads_every_column(tmp_path, mem_con):
    """A 税控 query export: fpdm / fphm / zzfphm / kprq / gfsh / xfsh / hjje / hjse / jshj, in GB18030."""
    landing = tmp_path / "landing"
    write_rows(
        landing / DAY / "issuers" / "taxctl" / "查询导出.csv",
        ["fpdm", "fphm", "zzfphm", "kprq", "gfsh", "xfsh", "hjje", "hjse", "jshj"],
        [
            [
                "011002300111",
                "12345678",
                "",
                "2026.11.18 09:30:00",
                BUYER_C,
                SELLER_A,
                "100.00",
                "13.00",
                "113.00",
            ],
            # a 数电 paper invoice: the 20-digit number is the key, not the 8-digit one beside it
            [
                "",
                "87654321",
                "26112000000000000002",
                "2026.11.18",
                BUYER_C,
                SELLER_A,
                "200.00",
                "26.00",
                "226.00",
            ],
        ],
        encoding="gb18030",
    )
    registry(landing, ["26112000000000000002"])
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    got = staged(
        mem_con,
        "taxctl",
        "seller_tax_id",
        "buyer_tax_id",
        "amount",
        "tax_amount",
        "total_amount",
        "issue_time",
    )
    assert list(got) == ["011002300111-12345678", "26112000000000000002"]
    first = got["011002300111-12345678"]
    assert first[:2] == (SELLER_A, BUYER_C)
    assert [str(v) for v in first[2:5]] == ["100.00", "13.00", "113.00"]
    assert first[5] == datetime(2026, 11, 18, 9, 30)
    assert got["26112000000000000002"][5] == datetime(2026, 11, 18)


def test_an_api_style_jsonl_reads_every_column(tmp_path, mem_con):
    """invoiceTime in epoch milliseconds is an instant, shown in Beijing time."""
    landing = tmp_path / "landing"
    instant = datetime(2026, 11, 18, 2, 0, tzinfo=ZoneInfo("UTC"))
    write_jsonl(
        landing / DAY / "issuers" / "shop" / "invoices.jsonl",
        [
            {
                "allElectronicInvoiceNumber": "26112000000000000003",
                "invoiceTime": int(instant.timestamp() * 1000),
                "exTaxAmount": 300,
                "taxAmount": 39,
                "orderAmount": 339,
                "payerTaxNo": BUYER_C,
                "payerName": "北京丙贸易有限公司",
                "salerTaxNum": SELLER_A,
            },
            {
                "invoiceNo": "26112000000000000004",
                "invoice_time": str(int(instant.timestamp())),
                "sum_price": "10",
                "sum_tax": "1.3",
                "invoice_amount": "11.3",
                "payer_register_no": BUYER_C,
                "payee_register_no": SELLER_A,
            },
        ],
    )
    registry(landing, ["26112000000000000003"])
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    got = staged(mem_con, "shop", "issue_time", "seller_tax_id", "buyer_tax_id", "buyer_name", "total_amount")
    assert got["26112000000000000003"] == (
        datetime(2026, 11, 18, 10, 0),
        SELLER_A,
        BUYER_C,
        "北京丙贸易有限公司",
        pytest.approx(339),
    )
    assert got["26112000000000000004"][:3] == (datetime(2026, 11, 18, 10, 0), SELLER_A, BUYER_C)
    assert str(got["26112000000000000004"][4]) == "11.30"


def test_a_batch_template_with_instruction_rows_finds_its_header(tmp_path, mem_con):
    """A batch-invoicing template: instruction rows first, required columns marked with '*', and an ERP
    document number (单据编号) that is evidence, never the invoice number."""
    landing = tmp_path / "landing"
    path = landing / DAY / "issuers" / "batch" / "批量开票模板.xlsx"
    path.parent.mkdir(parents=True)
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["填表说明：带*为必填项；金额保留两位小数；开票日期格式 yyyy-mm-dd"])
    ws.append(["单据编号不超过 40 个字符", None, "发票号码为 8 位或 20 位数字"])
    ws.append([])
    ws.append(
        [
            "单据编号*",
            "发票代码",
            "发票号码*",
            "开票日期*",
            "销售方税号*",
            "购买方税号",
            "合计金额*",
            "合计税额*",
            "价税合计(小写)*",
            "发票状态",
            "报送状态",
        ]
    )
    ws.append(
        [
            "XS2026111800017",
            None,
            "26112000000000000005",
            "2026-11-18 11:00:00",
            SELLER_A,
            BUYER_C,
            "500.00",
            "65.00",
            "565.00",
            "开票成功",
            "已报送",
        ]
    )
    wb.save(path)
    registry(landing, ["26112000000000000005"])
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    got = staged(mem_con, "batch", "line", "source_document", "status", "upload_status", "total_amount")
    assert list(got) == ["26112000000000000005"]
    line, document, status, upload, total = got["26112000000000000005"]
    assert (line, document, status, upload, str(total)) == (
        5,
        "XS2026111800017",
        "normal",
        "uploaded",
        "565.00",
    )


def test_a_missing_invoice_shows_its_source_document(tmp_path, mem_con):
    landing = tmp_path / "landing"
    row = invoice("26112000000000000001", day=OLD)
    row["单据编号"] = "XS2026111800017"
    write_csv(landing / DAY / "issuers" / "erp" / "e.csv", [row], columns=list(row))
    registry(landing, ["26112000000000000009"])
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    reconcile_night(mem_con, NIGHT, Config())
    (missing,) = [f for f in findings(mem_con) if f["category"] == "MISSING_IN_REGISTRY"]
    assert missing["detail"].endswith("; source document XS2026111800017")
    assert missing["invoice_key"] == "26112000000000000001"
    rejected = mem_con.execute("SELECT count(*) FROM rejected_rows WHERE source_system = 'batch'").fetchone()[
        0
    ]
    assert rejected == 0


def test_a_document_number_alone_is_not_an_invoice_number(tmp_path, mem_con):
    landing = tmp_path / "landing"
    write_rows(
        landing / DAY / "issuers" / "erp" / "e.csv",
        ["单据编号", "开票日期", "销方识别号", "金额"],
        [["XS2026111800017", "2026-11-18", SELLER_A, "1.00"]],
    )
    registry(landing, ["26112000000000000005"])
    assert (
        main(
            [
                "run",
                "--night",
                DAY,
                "--landing",
                str(landing),
                "--reports",
                str(tmp_path / "r"),
                "--db",
                str(tmp_path / "d.duckdb"),
            ]
        )
        == 2
    )


# --------------------------------------------------------------------------- states and value codes


@pytest.mark.parametrize(
    "word,status",
    [
        ("开票完成", "normal"),
        ("开票成功", "normal"),
        ("已开具", "normal"),
        ("开票中", "issuing"),
        ("签章中", "issuing"),
        ("开票成功签章中", "issuing"),
        ("开票失败", "failed"),
        ("签章失败", "failed"),
        ("开票成功签章失败", "failed"),
        ("作废中", "voided"),
    ],
)
def test_issuance_state_words(tmp_path, mem_con, word, status):
    landing = tmp_path / "landing"
    write_csv(landing / DAY / "issuers" / "erp" / "e.csv", [invoice("26112000000000000001", status=word)])
    registry(landing, ["26112000000000000009"])
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    assert staged(mem_con, "erp", "status") == {"26112000000000000001": (status,)}


@pytest.mark.parametrize("header", ["报送状态", "上传状态", "报送标志", "bszt", "bsbz"])
@pytest.mark.parametrize(
    "word,state",
    [
        ("已报送", "uploaded"),
        ("已上传", "uploaded"),
        ("未报送", "not_uploaded"),
        ("未上传", "not_uploaded"),
        ("待上传", "not_uploaded"),
        ("报送中", "uploading"),
        ("报送失败", "failed"),
        ("上传失败", "failed"),
        ("验签失败", "signature_failed"),
        ("审核中", "审核中"),
        ("", None),
    ],
)
def test_upload_state_words(tmp_path, mem_con, header, word, state):
    landing = tmp_path / "landing"
    row = invoice("26112000000000000001")
    row[header] = word
    write_csv(landing / DAY / "issuers" / "erp" / "e.csv", [row], columns=list(row))
    registry(landing, ["26112000000000000009"])
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    assert staged(mem_con, "erp", "upload_status") == {"26112000000000000001": (state,)}


SOURCES = """
[sources.taxctl.values.status]
"0" = "开票成功"
"1" = "开票中"
"2" = "开票失败"
[sources.taxctl.values.upload_status]
"0" = "未报送"
"1" = "已报送"
"2" = "报送失败"
"3" = "验签失败"
"4" = "报送中"
[sources.taxctl.values.tax_rate]
"-1" = "不征税"
"-2" = "免税"
[sources.taxctl.values.invoice_type]
"026" = "增值税电子普通发票"
[sources.shop]
ignore_columns = ["invoiceType"]
"""


def sources_config() -> Config:
    import tomllib

    return build_config(tomllib.loads(SOURCES))


def test_value_codes_are_mapped_per_source_and_never_guessed(tmp_path, mem_con):
    landing = tmp_path / "landing"
    write_rows(
        landing / DAY / "issuers" / "taxctl" / "t.csv",
        ["fpdm", "fphm", "kprq", "xfsh", "hjje", "hjse", "jshj", "税率", "发票类型", "开票状态", "bszt"],
        [
            ["011002300111", "00000001", "2026-11-18", SELLER_A, "100", "0", "100", "-1", "026", "0", "1"],
            ["011002300111", "00000002", "2026-11-18", SELLER_A, "100", "0", "100", "-2", "026", "1", "0"],
            ["011002300111", "00000003", "2026-11-18", SELLER_A, "100", "0", "100", "-3", "999", "2", "7"],
        ],
    )
    # the same codes from another system mean nothing: kept as they are
    write_rows(
        landing / DAY / "issuers" / "other" / "o.csv",
        ["发票号码", "开票日期", "销方识别号", "金额", "开票状态", "报送状态"],
        [["26112000000000000001", "2026-11-18", SELLER_A, "1.00", "2", "1"]],
    )
    registry(landing, ["26112000000000000009"])
    ingest_night(mem_con, landing, NIGHT, sources_config(), tmp_path / "tmp")
    got = staged(mem_con, "taxctl", "status", "upload_status", "tax_rate", "invoice_type", "invoice_type_raw")
    assert got["011002300111-00000001"][:2] == ("normal", "uploaded")
    assert got["011002300111-00000002"][:2] == ("issuing", "not_uploaded")
    assert got["011002300111-00000003"][:2] == ("failed", "7")
    assert [str(got[k][2]) for k in got] == ["0.0000", "0.0000", "None"]  # -3: no code, not a rate of -3
    assert got["011002300111-00000001"][3] == "electronic_normal"
    assert got["011002300111-00000003"][3:] == ("999", "999")
    assert staged(mem_con, "other", "status", "upload_status") == {"26112000000000000001": ("2", "1")}


def test_ignored_columns_feed_nothing(tmp_path, mem_con):
    """shop's invoiceType is a blue/red flag, not a kind: ignored, so it neither maps nor compares."""
    landing = tmp_path / "landing"
    write_jsonl(
        landing / DAY / "issuers" / "shop" / "s.jsonl",
        [
            {
                "invoiceNo": "26112000000000000001",
                "invoiceTime": "2026-11-18 10:00:00",
                "exTaxAmount": "1000.00",
                "taxAmount": "130.00",
                "orderAmount": "1130.00",
                "salerTaxNum": SELLER_A,
                "invoiceType": "1",
            }
        ],
    )
    write_csv(landing / DAY / "registry" / "r.csv", [invoice("26112000000000000001", day=OLD)])
    ingest_night(mem_con, landing, NIGHT, sources_config(), tmp_path / "tmp")
    assert staged(mem_con, "shop", "invoice_type_raw") == {"26112000000000000001": (None,)}


def test_invoice_type_is_compared_between_recognised_kinds_only(tmp_path, mem_con):
    landing = tmp_path / "landing"
    write_csv(
        landing / DAY / "issuers" / "erp" / "e.csv",
        [
            invoice("26112000000000000001", day=OLD, invoice_type="1"),  # a flag: not comparable
            invoice("26112000000000000002", day=OLD, invoice_type="普通发票"),  # 数电 context: digital_normal
            invoice(
                "26112000000000000003", day=OLD, invoice_type="增值税专用发票"
            ),  # digital_special: differs
        ],
    )
    write_csv(
        landing / DAY / "registry" / "r.csv",
        [
            invoice(n, day=OLD, invoice_type="数电票（普通发票）")
            for n in ("26112000000000000001", "26112000000000000002", "26112000000000000003")
        ],
    )
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    assert staged(mem_con, "erp", "invoice_type")["26112000000000000002"] == ("digital_normal",)
    reconcile_night(mem_con, NIGHT, Config())
    got = [(f["category"], f["invoice_key"], f["field"], f["issuer_value"]) for f in findings(mem_con)]
    assert got == [("FIELD_MISMATCH", "26112000000000000003", "invoice_type", "digital_special")]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2026.11.18", datetime(2026, 11, 18)),
        ("2026.11.18 09:05:01", datetime(2026, 11, 18, 9, 5, 1)),
        ("2026.1.8", datetime(2026, 1, 8)),
        ("1794967200", datetime(2026, 11, 18, 10, 0)),
        ("1794967200000", datetime(2026, 11, 18, 10, 0)),
    ],
)
def test_issue_time_forms(tmp_path, mem_con, text, expected):
    landing = tmp_path / "landing"
    write_csv(landing / DAY / "issuers" / "erp" / "e.csv", [invoice("26112000000000000001", issue_time=text)])
    registry(landing, ["26112000000000000009"])
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    assert staged(mem_con, "erp", "issue_time") == {"26112000000000000001": (expected,)}


def test_a_spreadsheet_serial_number_in_a_text_file_is_rejected_with_its_reason(tmp_path, mem_con):
    landing = tmp_path / "landing"
    write_csv(
        landing / DAY / "issuers" / "erp" / "e.csv",
        [invoice("26112000000000000001"), invoice("26112000000000000002", issue_time="46344")],
    )
    registry(landing, ["26112000000000000009"])
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    (reason,) = mem_con.execute("SELECT reason FROM rejected_rows WHERE source_system = 'erp'").fetchone()
    assert "46344" in reason and "spreadsheet serial number" in reason


# --------------------------------------------------------------------------- causes and failed issuance


def cause_night(tmp_path: Path) -> Path:
    """One issuer with every upload and issuance state; the registry holds only 26112000000000000099."""
    landing = tmp_path / "landing"
    rows = [
        invoice("26112000000000000001", day=OLD, upload_status="已报送"),
        invoice("26112000000000000002", day=OLD, upload_status="未报送"),
        invoice("26112000000000000003", day=OLD, upload_status="报送中"),
        invoice("26112000000000000004", day=OLD, upload_status="报送失败"),
        invoice("26112000000000000005", day=OLD, upload_status="验签失败"),
        invoice("26112000000000000006", day=OLD, upload_status="未报送", status="开票中"),
        invoice("26112000000000000007", day=OLD, upload_status=""),
        invoice("26112000000000000008", day=OLD, upload_status="人工处理"),
        invoice("26112000000000000010", day=DAY, upload_status="已报送"),  # inside the grace period
        invoice("26112000000000000011", day=DAY, upload_status="未报送", status="签章中"),  # inside, issuing
        invoice("26112000000000000012", day=OLD, upload_status="未报送", status="开票失败"),  # never issued
        invoice(
            "26112000000000000099", day=OLD, upload_status="已报送", status="签章失败"
        ),  # registry holds it
    ]
    write_csv(landing / DAY / "issuers" / "erp" / "e.csv", rows, columns=list(rows[0]))
    write_csv(landing / DAY / "issuers" / "pos" / "p.csv", [invoice("26112000000000000013", day=OLD)])
    registry(landing, ["26112000000000000099"])
    return landing


def test_every_missing_invoice_carries_its_cause(tmp_path, mem_con):
    ingest_night(mem_con, cause_night(tmp_path), NIGHT, Config(), tmp_path / "tmp")
    reconcile_night(mem_con, NIGHT, Config())
    got = {
        f["invoice_key"][-2:]: (f["category"], f["cause"])
        for f in findings(mem_con)
        if f["category"] in ("MISSING_IN_REGISTRY", "PENDING_SYNC")
    }
    assert got == {
        "01": ("MISSING_IN_REGISTRY", "uploaded_but_absent"),
        "02": ("MISSING_IN_REGISTRY", "not_uploaded"),
        "03": ("MISSING_IN_REGISTRY", "uploading"),
        "04": ("MISSING_IN_REGISTRY", "upload_failed"),
        "05": ("MISSING_IN_REGISTRY", "signature_failed"),
        "06": ("MISSING_IN_REGISTRY", "stuck_issuing"),
        "07": ("MISSING_IN_REGISTRY", "unknown"),
        "08": ("MISSING_IN_REGISTRY", "unknown"),
        "10": ("PENDING_SYNC", "uploaded_but_absent"),
        "11": ("PENDING_SYNC", "issuing"),
        "13": ("MISSING_IN_REGISTRY", "unknown"),  # a system without an upload column
    }
    assert {
        f["cause"] for f in findings(mem_con) if f["category"] not in ("MISSING_IN_REGISTRY", "PENDING_SYNC")
    } == {None}


def test_a_failed_issuance_is_not_issued_not_missing_and_a_status_mismatch_if_the_registry_holds_it(
    tmp_path, mem_con
):
    ingest_night(mem_con, cause_night(tmp_path), NIGHT, Config(), tmp_path / "tmp")
    reconcile_night(mem_con, NIGHT, Config())
    by_key: dict[str, list[tuple]] = {}
    for f in findings(mem_con):
        by_key.setdefault(f["invoice_key"][-2:], []).append(
            (f["category"], f["field"], f["issuer_value"], f["registry_value"])
        )
    assert by_key["12"] == [("NOT_ISSUED", "", "failed", None)]
    assert by_key["99"] == [("STATUS_MISMATCH", "status", "failed", "normal")]


def test_the_outputs_carry_the_cause_and_the_report_groups_missing_invoices_by_it(tmp_path):
    landing = cause_night(tmp_path)
    reports = tmp_path / "reports"
    code = main(
        [
            "run",
            "--night",
            DAY,
            "--landing",
            str(landing),
            "--reports",
            str(reports),
            "--db",
            str(tmp_path / "d.duckdb"),
        ]
    )
    assert code in (0, 1)
    night = reports / DAY
    with (night / "exceptions.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    causes = {r["invoice_number"][-2:]: r["cause"] for r in rows if r["category"] == "MISSING_IN_REGISTRY"}
    assert causes["01"] == "uploaded_but_absent" and causes["06"] == "stuck_issuing"
    assert all(r["cause"] == "" for r in rows if r["category"] not in ("MISSING_IN_REGISTRY", "PENDING_SYNC"))
    summary = json.loads((night / "summary.json").read_text(encoding="utf-8"))
    assert summary["missing_by_cause"] == {
        "uploaded_but_absent": 1,
        "upload_failed": 1,
        "signature_failed": 1,
        "stuck_issuing": 1,
        "uploading": 1,
        "not_uploaded": 1,
        "unknown": 3,
    }
    assert list(summary["missing_by_cause"])[0] == "uploaded_but_absent"
    assert summary["pending_by_cause"] == {"uploaded_but_absent": 1, "issuing": 1}
    assert summary["counts"]["NOT_ISSUED"] == 1
    wb = openpyxl.load_workbook(night / "exceptions.xlsx", read_only=True)
    ws = wb["MISSING_IN_REGISTRY"]
    header = [c.value for c in next(ws.iter_rows(max_row=1))]
    cells = {
        r[header.index("发票号码")][-2:]: r[header.index("原因")]
        for r in ws.iter_rows(min_row=2, values_only=True)
    }
    assert cells["01"] == "已报送但税务系统中没有" and cells["07"].startswith("原因不明")
    html = (night / "report.html").read_text(encoding="utf-8")
    section = html[html.index('id="missing-causes"') : html.index('id="trend"')]
    assert section.index("uploaded_but_absent") < section.index("not_uploaded")
    assert 'class="serious"' in section


# --------------------------------------------------------------------------- monitored sellers


def no_seller_night(tmp_path: Path) -> Path:
    """The issuer delivers no seller id; the registry holds an invoice the issuer does not have."""
    landing = tmp_path / "landing"
    write_rows(
        landing / DAY / "issuers" / "shop" / "s.csv",
        ["发票号码", "开票日期", "金额", "税额", "价税合计"],
        [["26112000000000000001", OLD, "1000.00", "130.00", "1130.00"]],
    )
    registry(landing, ["26112000000000000001", "26112000000000000002"])
    return landing


def run_no_seller(tmp_path: Path, capsys, config: str = "") -> tuple[int, dict, str]:
    args = [
        "run",
        "--night",
        DAY,
        "--landing",
        str(no_seller_night(tmp_path)),
        "--reports",
        str(tmp_path / "r"),
        "--db",
        str(tmp_path / "d.duckdb"),
    ]
    if config:
        (tmp_path / "c.toml").write_text(config, encoding="utf-8")
        args += ["--config", str(tmp_path / "c.toml")]
    code = main(args)
    summary = json.loads((tmp_path / "r" / DAY / "summary.json").read_text(encoding="utf-8"))
    return code, summary, capsys.readouterr().err


def test_without_seller_ids_missing_in_issuer_is_not_checked_and_the_run_says_so(tmp_path, capsys):
    code, summary, err = run_no_seller(tmp_path, capsys)
    assert code in (0, 1)
    assert summary["not_checked"] == ["MISSING_IN_ISSUER"]
    assert summary["monitored_sellers"] == {"from": "none", "count": 0}
    assert "MISSING_IN_ISSUER was not checked" in err and "monitored_sellers" in err
    assert any("not checked" in w for w in summary["warnings"])
    html = (tmp_path / "r" / DAY / "report.html").read_text(encoding="utf-8")
    assert "MISSING_IN_ISSUER was not checked" in html and "未检查" in html


def test_without_seller_ids_the_configured_monitored_sellers_are_used(tmp_path, capsys):
    code, summary, err = run_no_seller(tmp_path, capsys, f'monitored_sellers = ["{SELLER_A}"]\n')
    assert code in (0, 1)
    assert summary["not_checked"] == []
    assert summary["monitored_sellers"] == {"from": "configured", "count": 1}
    assert summary["counts"]["MISSING_IN_ISSUER"] == 1
    assert "uses the 1 seller(s) of monitored_sellers" in err


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "text,message",
    [
        ("[sources.taxctl]\nvalue = 1\n", "unknown config key 'sources.taxctl.value'"),
        (
            '[sources.taxctl.values.colour]\n"1" = "red"\n',
            "'sources.taxctl.values.colour': not a canonical column",
        ),
        ('[sources.taxctl.values]\nstatus = "2"\n', "'sources.taxctl.values.status': expected a table"),
        (
            '[sources.taxctl]\nignore_columns = "invoiceType"\n',
            "'sources.taxctl.ignore_columns': expected a list",
        ),
    ],
)
def test_bad_source_settings_name_the_key(text, message):
    import tomllib

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config(tomllib.loads(text))


# --------------------------------------------------------------------------- a night of real issuer exports


def test_a_night_of_real_issuer_exports_finds_every_cause_and_nothing_false(tmp_path):
    """A pinyin-header 税控 export (GB18030, numeric state codes mapped in the configuration), an API-style
    JSON Lines file (epoch milliseconds, a blue/red invoiceType flag ignored) and a batch template with
    instruction rows, against a registry export: every injected cause is found, and nothing else."""
    landing = tmp_path / "landing"
    d = landing / DAY
    utc = ZoneInfo("UTC")

    def ms(day: int, hour: int) -> int:  # Beijing wall-clock time of 2026-11-<day> as epoch milliseconds
        return int(datetime(2026, 11, day, hour - 8, 0, tzinfo=utc).timestamp() * 1000)

    # 税控: status codes 0 开票成功 1 开票中 2 开票失败; upload codes 0 未报送 1 已报送 2 报送失败 3 验签失败 4 报送中
    taxctl = [
        ["011002300111", "10000001", "", "2026.11.18 09:00:00", "1", "1"],  # clean, in the registry
        [
            "",
            "87654321",
            "26112000000000000101",
            "2026.11.18",
            "0",
            "1",
        ],  # 20-digit key beside an 8-digit one
        ["011002300111", "10000002", "", "2026.11.18 09:00:00", "0", "0"],  # not uploaded
        ["011002300111", "10000003", "", "2026.11.18 09:00:00", "0", "2"],  # upload failed
        ["011002300111", "10000004", "", "2026.11.18 09:00:00", "0", "3"],  # signature failed
        ["011002300111", "10000005", "", "2026.11.18 09:00:00", "0", "4"],  # still uploading
        ["011002300111", "10000006", "", "2026.11.18 09:00:00", "1", "0"],  # stuck issuing
        ["011002300111", "10000007", "", "2026.11.18 09:00:00", "2", "0"],  # failed: never issued
    ]
    write_rows(
        d / "issuers" / "taxctl" / "开票查询.csv",
        ["fpdm", "fphm", "zzfphm", "kprq", "开票状态", "bszt", "xfsh", "gfsh", "hjje", "hjse", "jshj"],
        [[*r, SELLER_A, BUYER_C, "1000.00", "130.00", "1130.00"] for r in taxctl],
        encoding="gb18030",
    )
    # API: uploaded but absent; a clean one; a failed issuance the registry holds after all
    shop = [
        ("26112000000000000201", "开票完成", "已上传"),
        ("26112000000000000202", "开票完成", "已上传"),
        ("26112000000000000203", "签章失败", "未上传"),
    ]
    write_jsonl(
        d / "issuers" / "shop" / "orders.jsonl",
        [
            {
                "allElectronicInvoiceNumber": n,
                "invoiceTime": ms(18, 10),
                "exTaxAmount": 1000,
                "taxAmount": 130,
                "orderAmount": 1130,
                "payerTaxNo": BUYER_C,
                "salerTaxNum": SELLER_A,
                "invoiceType": "1",
                "status": status,
                "上传状态": upload,
            }
            for n, status, upload in shop
        ],
    )
    # batch template: instruction rows, then a header with '*'; one clean, one whose state is unknown text
    path = d / "issuers" / "batch" / "批量开票.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["填表说明：带*为必填项"])
    ws.append(["单据编号最长 40 字符；金额保留两位小数"])
    ws.append(
        [
            "单据编号*",
            "发票号码*",
            "开票日期*",
            "销售方税号*",
            "购买方税号",
            "合计金额*",
            "合计税额*",
            "价税合计(小写)*",
            "发票状态",
            "报送状态",
        ]
    )
    ws.append(
        [
            "XS001",
            "26112000000000000301",
            "2026-11-18 11:00:00",
            SELLER_A,
            BUYER_C,
            "1000.00",
            "130.00",
            "1130.00",
            "已开具",
            "已报送",
        ]
    )
    ws.append(
        [
            "XS002",
            "26112000000000000302",
            "2026-11-18 11:00:00",
            SELLER_A,
            BUYER_C,
            "1000.00",
            "130.00",
            "1130.00",
            "已开具",
            "人工复核",
        ]
    )
    path.parent.mkdir(parents=True)
    wb.save(path)
    in_registry = [
        "011002300111-10000001",
        "26112000000000000101",
        "26112000000000000202",
        "26112000000000000203",
        "26112000000000000301",
    ]
    write_csv(
        d / "registry" / "r.csv",
        [
            invoice(
                k.split("-")[-1],
                code=k.split("-")[0] if "-" in k else "",
                day=OLD,
                time="09:00:00",
                invoice_type="数电票（普通发票）" if "-" not in k else "增值税电子普通发票",
            )
            for k in in_registry
        ],
    )
    reports = tmp_path / "reports"
    config = tmp_path / "c.toml"
    config.write_text(SOURCES, encoding="utf-8")
    code = main(
        [
            "run",
            "--night",
            DAY,
            "--landing",
            str(landing),
            "--reports",
            str(reports),
            "--db",
            str(tmp_path / "d.duckdb"),
            "--config",
            str(config),
        ]
    )
    assert code in (0, 1)
    with (reports / DAY / "exceptions.csv").open(encoding="utf-8-sig", newline="") as f:
        got = sorted(
            (r["category"], r["invoice_key"], r["field"], r["source_system"], r["cause"])
            for r in csv.DictReader(f)
        )
    assert got == sorted(
        [
            ("MISSING_IN_REGISTRY", "011002300111-10000002", "", "taxctl", "not_uploaded"),
            ("MISSING_IN_REGISTRY", "011002300111-10000003", "", "taxctl", "upload_failed"),
            ("MISSING_IN_REGISTRY", "011002300111-10000004", "", "taxctl", "signature_failed"),
            ("MISSING_IN_REGISTRY", "011002300111-10000005", "", "taxctl", "uploading"),
            ("MISSING_IN_REGISTRY", "011002300111-10000006", "", "taxctl", "stuck_issuing"),
            ("NOT_ISSUED", "011002300111-10000007", "", "taxctl", ""),
            ("MISSING_IN_REGISTRY", "26112000000000000201", "", "shop", "uploaded_but_absent"),
            ("STATUS_MISMATCH", "26112000000000000203", "status", "shop", ""),
            ("MISSING_IN_REGISTRY", "26112000000000000302", "", "batch", "unknown"),
        ]
    )
