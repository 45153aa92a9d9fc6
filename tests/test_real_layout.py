"""The exports' own words and shapes, one rule at a time: statuses, risk levels, 是否正数发票, placeholders,
red-invoice remarks, totals rows, header variants, line files and the line rules."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from factories import BUYER_C, NIGHT, SELLER_A, invoice, write_csv, write_rows
from fapiao_audit.config import Config
from fapiao_audit.ingest import header_key, ingest_night, map_headers
from fapiao_audit.reconcile import fetch_findings, reconcile_night

DAY = "2026-11-18 10:00:00"
LINE_HEADERS = [
    "单据编号",
    "发票代码",
    "发票号码",
    "开票日期",
    "销方识别号",
    "销方名称",
    "购方识别号",
    "购方名称",
    "项目名称",
    "数量",
    "单价",
    "金额",
    "税率",
    "税额",
    "发票状态",
    "备注",
]


def registry_with(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    landing = tmp_path / "landing"
    write_csv(landing / NIGHT.isoformat() / "registry" / "r.csv", rows)
    write_csv(landing / NIGHT.isoformat() / "issuers" / "erp" / "erp.csv", [invoice("26110000000000000999")])
    return landing


def staged_values(con, column: str, source: str = "registry") -> dict[str, object]:
    return dict(
        con.execute(
            f"SELECT invoice_key, {column} FROM staged_invoices WHERE source_system = ? ORDER BY line",
            [source],
        ).fetchall()
    )


@pytest.mark.parametrize(
    "word,status",
    [
        ("正常", "normal"),
        ("已作废", "voided"),
        ("作废", "voided"),
        ("已红冲-全额", "red_reversed"),
        ("已红冲—全额", "red_reversed"),
        ("全额红冲", "red_reversed"),
        ("已红冲", "red_reversed"),
        ("已红冲-部分", "partly_red_reversed"),
        ("部分红冲", "partly_red_reversed"),
        ("失控", "out_of_control"),
        ("异常", "abnormal"),
        ("", "normal"),
        ("Voided", "voided"),
        ("审核中", "审核中"),
    ],
)
def test_status_words(tmp_path, mem_con, word, status):
    landing = registry_with(tmp_path, [invoice("26110000000000000001", status=word)])
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    assert staged_values(mem_con, "status") == {"26110000000000000001": status}


@pytest.mark.parametrize(
    "word,level",
    [
        ("正常", "none"),
        ("", "none"),
        ("--", "none"),
        ("疑点发票", "suspicious"),
        ("异常凭证", "abnormal_voucher"),
        ("失控", "out_of_control"),
        ("高风险", "高风险"),
    ],
)
def test_risk_levels(tmp_path, mem_con, word, level):
    row = invoice("26110000000000000001")
    row["发票风险等级"] = word
    landing = tmp_path / "landing"
    cols = [*row.keys()]
    write_csv(landing / NIGHT.isoformat() / "registry" / "r.csv", [row], columns=cols)
    write_csv(landing / NIGHT.isoformat() / "issuers" / "erp" / "erp.csv", [invoice("26110000000000000001")])
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    assert staged_values(mem_con, "risk_level") == {"26110000000000000001": level}
    reconcile_night(mem_con, NIGHT, Config())
    risks = [
        (r["category"], r["field"], r["registry_value"])
        for r in fetch_findings(mem_con, NIGHT).to_pylist()
        if r["category"] == "REGISTRY_RISK"
    ]
    assert risks == ([] if level == "none" else [("REGISTRY_RISK", "risk_level", level)])


def test_without_a_risk_column_there_is_no_risk(tmp_path, mem_con):
    landing = registry_with(tmp_path, [invoice("26110000000000000001")])
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    assert staged_values(mem_con, "risk_level") == {"26110000000000000001": None}


@pytest.mark.parametrize(
    "positive,amount,red",
    [
        ("否", "-100.00", True),
        ("否", "100.00", True),
        ("是", "-100.00", True),
        ("是", "100.00", False),
        ("", "100.00", False),
        ("N", "100.00", True),
        ("是", "0.00", False),
    ],
)
def test_red_invoices_by_is_positive_or_a_negative_total(tmp_path, mem_con, positive, amount, red):
    row = invoice("26110000000000000001", amount=amount)
    row["是否正数发票"] = positive
    landing = tmp_path / "landing"
    write_csv(landing / NIGHT.isoformat() / "registry" / "r.csv", [row], columns=[*row.keys()])
    write_csv(landing / NIGHT.isoformat() / "issuers" / "erp" / "erp.csv", [invoice("26110000000000000009")])
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    assert staged_values(mem_con, "is_red") == {"26110000000000000001": red}


@pytest.mark.parametrize(
    "remark,key",
    [
        (
            "被红冲蓝字数电发票号码：25112000000100001105 红字发票信息确认单编号：110125030600321",
            "25112000000100001105",
        ),
        ("被红冲蓝字数电票号码：25112000000100001105", "25112000000100001105"),
        ("被红冲蓝字发票代码：032002200704 被红冲蓝字发票号码：20857892", "032002200704-20857892"),
        ("被红冲蓝字发票号码：20857892 被红冲蓝字发票代码：032002200704", "032002200704-20857892"),
        ("对应正数发票代码:037001700111号码:30785030", "037001700111-30785030"),
        ("对应正数发票代码:037001700111 号码:10621901鲁NGR681 收款人:王", "037001700111-10621901"),
        ("合同编号：HT2611", None),
    ],
)
def test_red_remark_forms(tmp_path, mem_con, remark, key):
    landing = registry_with(tmp_path, [invoice("26110000000000000001", amount="-100.00", remark=remark)])
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    assert staged_values(mem_con, "original_invoice_key") == {"26110000000000000001": key}


@pytest.mark.parametrize("dash", ["--", "-", "—", "——", "－－", " -- "])
def test_dash_placeholders_are_empty_in_every_column(tmp_path, mem_con, dash):
    legacy = invoice(
        "04815126", code="1100243130", buyer_tax_id=dash, buyer_name=dash, remark=dash, tax_rate=dash
    )
    header = [
        "发票代码",
        "发票号码",
        "数电发票号码",
        "开票日期",
        "销方识别号",
        "购方识别号",
        "购买方名称",
        "金额",
        "税率",
        "税额",
        "价税合计",
        "发票状态",
        "备注",
    ]
    row = [
        legacy["invoice_code"],
        legacy["invoice_number"],
        dash,
        DAY,
        SELLER_A,
        dash,
        dash,
        "1000.00",
        dash,
        "130.00",
        "1130.00",
        dash,
        dash,
    ]
    landing = tmp_path / "landing"
    write_rows(landing / NIGHT.isoformat() / "registry" / "r.csv", header, [row])
    write_csv(landing / NIGHT.isoformat() / "issuers" / "erp" / "erp.csv", [invoice("26110000000000000009")])
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    got = mem_con.execute(
        "SELECT invoice_key, buyer_tax_id, buyer_name, remark, tax_rate, status FROM staged_invoices "
        "WHERE source_system = 'registry'"
    ).fetchall()
    assert got == [("1100243130-04815126", "", "", None, None, "normal")]


@pytest.mark.parametrize("first", ["合计", "合计行", "总计", "小计", " 合 计 "])
def test_totals_rows_are_skipped_not_rejected(tmp_path, mem_con, first):
    header = ["序号", "发票号码", "开票日期", "销方识别号", "金额", "税额", "价税合计"]
    rows = [
        ["1", "26110000000000000001", DAY, SELLER_A, "100.00", "13.00", "113.00"],
        [first, "", "", "", "100.00", "13.00", "113.00"],
        ["", "", "", "", "", "", ""],  # an empty row: nothing lost, skipped too
        ["2", "", DAY, SELLER_A, "5.00", "0", "5.00"],
    ]  # no number: rejected
    landing = tmp_path / "landing"
    write_rows(landing / NIGHT.isoformat() / "registry" / "r.csv", header, rows)
    write_csv(landing / NIGHT.isoformat() / "issuers" / "erp" / "erp.csv", [invoice("26110000000000000001")])
    res = ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    reg = next(f for f in res.files if f.source_system == "registry")
    assert (reg.rows_read, reg.rows_loaded, reg.rows_rejected, reg.rows_skipped) == (4, 1, 1, 2)
    assert mem_con.execute("SELECT line, skipped FROM rejected_rows ORDER BY line").fetchall() == [
        (3, True),
        (4, True),
        (5, False),
    ]


@pytest.mark.parametrize(
    "header,canonical",
    [
        ("开票日期*", "issue_time"),
        ("销方税号", "seller_tax_id"),
        ("购方税号", "buyer_tax_id"),
        ("票据类型", "invoice_type"),
        ("开具日期", "issue_time"),
        ("价税合计金额", "total_amount"),
        ("发票风险等级", "risk_level"),
        ("是否正数发票", "is_positive"),
        ("货物或应税劳务名称", "item_name"),
        ("项目名称", "item_name"),
        ("商品名称", "item_name"),
        ("税收分类编码", "tax_code"),
        ("单价", "unit_price"),
        ("数 量", "quantity"),
    ],
)
def test_header_variants(header, canonical):
    assert map_headers([header], {}) == {canonical: [0]}
    assert header_key("开票日期 * ") == header_key("开票日期")


def test_paper_invoices_of_the_digital_platform_are_paper(tmp_path, mem_con):
    landing = registry_with(
        tmp_path,
        [
            invoice("26110000000000000001", invoice_type="数电纸质发票（普通发票）"),
            invoice("26110000000000000002", invoice_type="数电发票（增值税专用发票）"),
            invoice("26110000000000000003", invoice_type="数电票（普通发票）"),
        ],
    )
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    assert list(staged_values(mem_con, "invoice_type").values()) == [
        "paper_normal",
        "digital_special",
        "digital_normal",
    ]


def line(
    doc: str,
    number: str,
    item: str,
    amount: str,
    rate: str,
    tax: str,
    *,
    code: str = "",
    day: str = DAY,
    buyer: str = "北京丙贸易有限公司",
    status: str = "正常",
    remark: str = "",
) -> list[str]:
    return [
        doc,
        code,
        number,
        day,
        SELLER_A,
        "北京甲科技有限公司",
        BUYER_C,
        buyer,
        item,
        "1",
        amount,
        amount,
        rate,
        tax,
        status,
        remark,
    ]


def line_file_night(tmp_path: Path, lines: list[list[str]], registry: list[dict[str, str]]) -> Path:
    landing = tmp_path / "landing"
    write_rows(
        landing / NIGHT.isoformat() / "issuers" / "erp" / "lines.csv", LINE_HEADERS, lines, "utf-8-sig"
    )
    write_csv(landing / NIGHT.isoformat() / "registry" / "r.csv", registry)
    return landing


def findings(con) -> list[tuple[str, str, str, str]]:
    return sorted(
        (r["category"], r["invoice_key"], r["field"], r["source_system"])
        for r in fetch_findings(con, NIGHT).to_pylist()
    )


def test_a_line_file_is_grouped_into_invoices_and_its_lines_kept(tmp_path, mem_con):
    a, b = "26110000000000000001", "26110000000000000002"
    lines = [
        line("D1", a, "*信息技术服务*软件", "800.00", "13%", "104.00"),
        line("D1", a, "*信息技术服务*运维", "200.00", "6%", "12.00"),  # mixed rates
        line("D1", a, "*折扣*", "-100.00", "13%", "-13.00"),  # a discount line: not red
        line("D2", b, "*蔬菜*有机蔬菜", "500.00", "免税", "0"),
        ["D3", "", "", DAY, SELLER_A, "", "", "", "x", "1", "1", "1.00", "13%", "0.13", "正常", ""],  # no key
    ]
    registry = [
        invoice(a, amount="900.00", tax="103.00", rate=""),
        invoice(b, amount="500.00", tax="0.00", rate="免税"),
    ]
    landing = line_file_night(tmp_path, lines, registry)
    res = ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    erp = next(f for f in res.files if f.source_system == "erp")
    assert (erp.rows_read, erp.rows_loaded, erp.rows_rejected, erp.rows_skipped) == (5, 4, 1, 0)
    assert mem_con.execute("SELECT reason FROM rejected_rows WHERE source_system = 'erp'").fetchall() == [
        ("line without an invoice number",)
    ]
    got = mem_con.execute(
        "SELECT invoice_key, line, amount, tax_amount, total_amount, tax_rate, lines, is_red, line_problem "
        "FROM staged_invoices WHERE source_system = 'erp' ORDER BY invoice_key"
    ).fetchall()
    assert [
        (k, ln, str(am), str(t), str(tt), None if r is None else str(r), n, red, p)
        for k, ln, am, t, tt, r, n, red, p in got
    ] == [
        (a, 2, "900.00", "103.00", "None", None, 3, False, None),  # no 价税合计 column: no total
        (b, 5, "500.00", "0.00", "None", "0.0000", 1, False, None),
    ]
    assert mem_con.execute("SELECT count(*) FROM staged_lines WHERE source_system = 'erp'").fetchone() == (4,)
    reconcile_night(mem_con, NIGHT, Config())
    assert findings(mem_con) == []  # lines add up, each line's rate rule holds, both sides agree


def test_line_rules(tmp_path, mem_con):
    a, b, c = "26110000000000000001", "26110000000000000002", "26110000000000000003"
    lines = [
        line("D1", a, "x", "100.00", "13%", "13.00"),
        line("D1", a, "y", "100.00", "13%", "10.00"),  # one line's tax is off by 3.00
        line("D2", b, "x", "100.00", "13%", "13.00"),
        line("D2", b, "y", "100.00", "13%", "13.00", buyer="别的公司"),  # the lines disagree on the buyer
        line("D3", c, "x", "100.00", "13%", "13.00"),
    ]
    registry = [
        invoice(a, amount="200.00", tax="23.00"),
        invoice(b, amount="200.00", tax="26.00"),
        invoice(c, amount="100.00", tax="13.00"),
    ]
    landing = line_file_night(tmp_path, lines, registry)
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    reconcile_night(mem_con, NIGHT, Config())
    got = findings(mem_con)
    assert ("INVALID_RECORD", a, "tax_amount", "erp") in got
    assert ("INVALID_RECORD", b, "lines", "erp") in got
    assert not [f for f in got if f[1] == c]
    detail = {
        r["invoice_key"]: r["detail"]
        for r in fetch_findings(mem_con, NIGHT).to_pylist()
        if r["field"] in ("lines", "tax_amount") and r["source_system"] == "erp"
    }
    assert "line 3" in detail[a] and "buyer_name" in detail[b]


def test_registry_lines_that_do_not_add_up(tmp_path, mem_con):
    import openpyxl

    a = "26110000000000000001"
    wb = openpyxl.Workbook()
    lines = wb.active
    lines.title = "信息汇总表"
    lines.append(["发票号码", "数电发票号码", "货物或应税劳务名称", "金额", "税率", "税额"])
    lines.append(["", a, "x", 100, "13%", 13])
    lines.append(["", a, "y", 50, "13%", 6.5])
    lines.append(["", a, "(详见销货清单)", 150, "13%", 19.5])  # a summary line beside its details: once
    inv = wb.create_sheet("发票基础信息")
    inv.append(
        [
            "序号",
            "发票代码",
            "发票号码",
            "数电发票号码",
            "开票日期",
            "销方识别号",
            "金额",
            "税额",
            "价税合计",
            "是否正数发票",
        ]
    )
    inv.append(["1", "", "", a, DAY, SELLER_A, 160, 20.8, 180.8, "是"])
    inv.append(["合计行", None, None, None, None, None, 160, 20.8, None, None])
    path = tmp_path / "landing" / NIGHT.isoformat() / "registry" / "全量发票查询导出结果.xlsx"
    path.parent.mkdir(parents=True)
    wb.save(path)
    write_csv(
        tmp_path / "landing" / NIGHT.isoformat() / "issuers" / "erp" / "erp.csv",
        [invoice(a, amount="160.00", tax="20.80")],
    )
    res = ingest_night(mem_con, tmp_path / "landing", NIGHT, Config(), tmp_path / "tmp")
    reg = next(f for f in res.files if f.source_system == "registry")
    assert (reg.rows_read, reg.rows_loaded, reg.rows_rejected, reg.rows_skipped) == (5, 4, 0, 1)
    assert mem_con.execute(
        "SELECT lines, lines_amount, lines_tax FROM staged_invoices WHERE source_system = 'registry'"
    ).fetchone() == (3, 150, 19.5)
    reconcile_night(mem_con, NIGHT, Config())
    assert findings(mem_con) == [("INVALID_RECORD", a, "lines", "registry")]


def test_lines_running_on_to_a_second_line_sheet(tmp_path, mem_con):
    import openpyxl

    a, b = "26110000000000000001", "26110000000000000002"
    wb = openpyxl.Workbook()
    first = wb.active
    first.title = "信息汇总表"
    header = ["数电发票号码", "货物或应税劳务名称", "金额", "税率", "税额"]
    first.append(header)
    first.append([a, "x", 100, "13%", 13])
    second = wb.create_sheet("信息汇总表1")  # a large export continues its lines here
    second.append(header)
    second.append([a, "y", 50, "13%", 6.5])
    second.append([b, "z", 10, "13%", 1.3])
    inv = wb.create_sheet("发票基础信息")
    inv.append(["数电发票号码", "开票日期", "销方识别号", "金额", "税额", "价税合计"])
    inv.append([a, DAY, SELLER_A, 150, 19.5, 169.5])
    inv.append([b, DAY, SELLER_A, 10, 1.3, 11.3])
    wb.create_sheet("机动车销售统一发票").append(
        ["数电发票号码", "车辆类型"]
    )  # other business sheets: not read
    path = tmp_path / "landing" / NIGHT.isoformat() / "registry" / "export.xlsx"
    path.parent.mkdir(parents=True)
    wb.save(path)
    write_csv(
        tmp_path / "landing" / NIGHT.isoformat() / "issuers" / "erp" / "erp.csv",
        [invoice(a, amount="150.00", tax="19.50"), invoice(b, amount="10.00", tax="1.30")],
    )
    res = ingest_night(mem_con, tmp_path / "landing", NIGHT, Config(), tmp_path / "tmp")
    reg = next(f for f in res.files if f.source_system == "registry")
    assert (reg.rows_read, reg.rows_loaded) == (5, 5)
    assert mem_con.execute(
        "SELECT invoice_key, lines, lines_amount FROM staged_invoices "
        "WHERE source_system = 'registry' ORDER BY 1"
    ).fetchall() == [(a, 2, 150), (b, 1, 10)]
    assert mem_con.execute("SELECT sheet, count(*) FROM staged_lines GROUP BY 1 ORDER BY 1").fetchall() == [
        ("信息汇总表", 1),
        ("信息汇总表1", 2),
    ]
    reconcile_night(mem_con, NIGHT, Config())
    assert findings(mem_con) == []


def test_dashes_in_amount_and_time_columns_are_missing_values(tmp_path, mem_con):
    header = ["发票号码", "开票日期", "销方识别号", "金额", "税额", "价税合计", "税率"]
    rows = [
        ["26110000000000000001", DAY, SELLER_A, "100.00", "--", "—", "-"],  # no tax, no total: loaded
        ["26110000000000000002", "--", SELLER_A, "100.00", "13.00", "113.00", "13%"],  # no time: rejected
        ["26110000000000000003", DAY, SELLER_A, "－－", "13.00", "113.00", "13%"],  # no amount: rejected
        ["26110000000000000004", DAY, SELLER_A, "-100.00", "-13.00", "-113.00", "13%"],
    ]  # negative: kept
    landing = tmp_path / "landing"
    write_rows(landing / NIGHT.isoformat() / "registry" / "r.csv", header, rows)
    write_csv(landing / NIGHT.isoformat() / "issuers" / "erp" / "erp.csv", [invoice("26110000000000000001")])
    ingest_night(mem_con, landing, NIGHT, Config(), tmp_path / "tmp")
    assert mem_con.execute(
        "SELECT invoice_key, amount, tax_amount, total_amount, tax_rate FROM staged_invoices "
        "WHERE source_system = 'registry' ORDER BY 1"
    ).fetchall() == [
        ("26110000000000000001", 100, None, None, None),
        ("26110000000000000004", -100, -13, -113, Decimal("0.13")),
    ]
    assert mem_con.execute("SELECT line, reason FROM rejected_rows ORDER BY line").fetchall() == [
        (3, "missing issue time"),
        (4, "missing amount"),
    ]
