"""The registry's export as it is really downloaded (tests/data/registry-export, a night in the exact
layout of 全量发票查询's workbook) gives exactly the expected findings, on both of its landings."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import duckdb
import openpyxl
import pytest

from fapiao_audit.cli import main

EXAMPLE = Path(__file__).parent / "data" / "registry-export"
NIGHT = "2025-03-10"
SOURCE = {"landing-erp": "erp", "landing-thirdparty": "kaipiao"}
WITH_FIELD = ("FIELD_MISMATCH", "INVALID_RECORD", "REGISTRY_RISK", "STATUS_MISMATCH")


def _key(row: dict[str, str]) -> str:
    if row.get("invoice_key"):
        return row["invoice_key"]
    return f"{row['invoice_code']}-{row['invoice_number']}" if row["invoice_code"] else row["invoice_number"]


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module", params=sorted(SOURCE))
def night(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(request.param)
    code = main(
        [
            "run",
            "--night",
            NIGHT,
            "--landing",
            str(EXAMPLE / request.param),
            "--reports",
            str(base / "reports"),
            "--db",
            str(base / "fapiao.duckdb"),
        ]
    )
    return request.param, base, code


def test_exactly_the_expected_findings(night):
    landing, base, code = night
    assert code in (0, 1)  # published (13 invoices: every rate threshold is exceeded)
    got = _read(base / "reports" / NIGHT / "exceptions.csv")
    expected = _read(EXAMPLE / "expected_findings.csv")
    assert sorted(
        (r["category"], _key(r), r["field"] if r["category"] in WITH_FIELD else "") for r in got
    ) == sorted((r["category"], r["invoice_key"], r["field"]) for r in expected)
    # the issuer's findings name the issuer's system
    assert {
        r["source_system"] for r in got if r["category"] in ("MISSING_IN_REGISTRY", "FIELD_MISMATCH")
    } == {SOURCE[landing]}
    quiet = {r["invoice_key"] for r in _read(EXAMPLE / "no_finding.csv")}
    assert not quiet & {_key(r) for r in got}


def test_the_totals_row_is_skipped_and_nothing_rejected(night):
    _landing, base, _code = night
    summary = json.loads((base / "reports" / NIGHT / "summary.json").read_text(encoding="utf-8"))
    (registry,) = [s for s in summary["sources"] if s["source_system"] == "registry"]
    # 11 invoices and the 合计行 on 发票基础信息, 13 lines on 信息汇总表
    assert (
        registry["rows_read"],
        registry["rows_loaded"],
        registry["rows_rejected"],
        registry["rows_skipped"],
    ) == (25, 24, 0, 1)
    for source in summary["sources"]:
        assert source["rows_rejected"] == 0
        for f in source["files"]:
            assert f["rows_read"] == f["rows_loaded"] + f["rows_rejected"] + f["rows_skipped"]
    rejected_rate = [
        r
        for s in summary["expectations"]["suites"]
        for r in s["results"]
        if r["expectation"] == "rejected_rate"
    ]
    assert rejected_rate[0]["observed_value"] == 0.0 and rejected_rate[0]["success"]


def test_invoices_and_lines_are_staged_apart(night):
    _landing, base, _code = night
    con = duckdb.connect(str(base / "fapiao.duckdb"), read_only=True)
    try:
        invoices = con.execute(
            "SELECT invoice_key, sheet, lines, lines_amount, amount, status, risk_level, is_red, original_invoice_key "
            "FROM staged_invoices WHERE source_kind = 'registry' ORDER BY invoice_key"
        ).fetchall()
        lines = con.execute(
            "SELECT invoice_key, count(*), sum(amount) FROM staged_lines WHERE source_kind = 'registry' "
            "GROUP BY ALL ORDER BY 1"
        ).fetchall()
        skipped = con.execute("SELECT sheet, line, reason, skipped FROM rejected_rows").fetchall()
    finally:
        con.close()
    by_key = {r[0]: r for r in invoices}
    assert len(invoices) == 11 and {r[1] for r in invoices} == {"发票基础信息"}
    assert "1100243130-04815126" in by_key  # the legacy invoice: '--' in 数电发票号码 is no number
    assert by_key["1100243130-04815126"][5] == "voided"
    assert by_key["25112000000100001105"][5] == "red_reversed"  # 已红冲-全额
    assert by_key["25112000000100001111"][5] == "partly_red_reversed"  # 已红冲-部分
    assert by_key["25112000000100001110"][6] == "suspicious"  # 发票风险等级 疑点发票
    # the discount line (-200) belongs to a blue invoice: its 2 lines add up to the invoice, not red
    assert by_key["25112000000100001102"][2:5] == (2, 1000, 1000) and not by_key["25112000000100001102"][7]
    assert by_key["25112000000100001106"][7:] == (True, "25112000000100001105")
    assert len(lines) == 11 and sum(n for _k, n, _a in lines) == 13
    assert skipped == [("发票基础信息", 13, "合计 totals row: not an invoice (skipped)", True)]


def test_a_workbook_without_a_required_column_is_refused(tmp_path, capsys):
    landing = tmp_path / "landing"
    shutil.copytree(EXAMPLE / "landing-erp", landing)
    (path,) = (landing / NIGHT / "registry").glob("*.xlsx")
    wb = openpyxl.load_workbook(path)
    ws = wb["发票基础信息"]
    for cell in ws[1]:
        if cell.value == "开票日期":
            cell.value = "日期"
    wb.save(path)
    code = main(
        [
            "run",
            "--night",
            NIGHT,
            "--landing",
            str(landing),
            "--reports",
            str(tmp_path / "r"),
            "--db",
            str(tmp_path / "d.duckdb"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert path.name in err and "发票基础信息" in err and "issue_time / 开票日期" in err and "'日期'" in err
    assert not (tmp_path / "r" / NIGHT).exists()
