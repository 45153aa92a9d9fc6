"""exceptions.xlsx: opened back with openpyxl, the way a reviewer's spreadsheet program reads it."""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import openpyxl
import pyarrow as pa
import pytest

try:
    from report_fixtures import CATEGORY_CODES, HOSTILE, PERSON_ID, PERSON_NAME, build_inputs, build_summary
except ImportError:  # tests/ imported as a package
    from tests.report_fixtures import (
        CATEGORY_CODES,
        HOSTILE,
        PERSON_ID,
        PERSON_NAME,
        build_inputs,
        build_summary,
    )

from fapiao_audit.excel import HEADERS, RESOLVED_SHEET, SUMMARY_SHEET, write_exceptions_xlsx
from fapiao_audit.model import CATEGORIES

CHINESE_HEADERS = [
    "类别",
    "发票代码",
    "发票号码",
    "字段",
    "来源系统",
    "开票方值",
    "税务系统值",
    "销方识别号",
    "开票日期",
    "说明",
    "涉及金额",
    "开票方价税合计",
    "税务系统价税合计",
    "建议处理",
    "处理角色",
    "案件",
    "原因",
    "疑似匹配",
    "状态",
    "首次发现",
    "账龄(天)",
    "处理状态",
    "处理说明",
    "处理人",
    "处理日期",
    "编号",
]
AGE = CHINESE_HEADERS.index("账龄(天)")


@pytest.fixture(scope="module")
def workbook_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    summary, findings, _rejected, resolved = build_inputs(60)
    path = tmp_path_factory.mktemp("xlsx") / "exceptions.xlsx"
    write_exceptions_xlsx(path, summary, findings, resolved)
    return path


@pytest.fixture(scope="module")
def wb(workbook_path: Path) -> openpyxl.Workbook:
    return openpyxl.load_workbook(workbook_path)


def all_cells(wb: openpyxl.Workbook):
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            yield from row


def test_sheets_summary_then_categories_then_resolved(wb: openpyxl.Workbook) -> None:
    assert wb.sheetnames == [SUMMARY_SHEET, *CATEGORY_CODES, RESOLVED_SHEET]
    assert all(len(name) <= 31 for name in wb.sheetnames)


def test_no_cell_is_a_formula(workbook_path: Path, wb: openpyxl.Workbook) -> None:
    for cell in all_cells(wb):
        assert cell.data_type != "f", f"{cell.parent.title}!{cell.coordinate} is a formula: {cell.value!r}"
    # The hostile values are there, as text.
    values = {c.value for c in all_cells(wb) if isinstance(c.value, str)}
    for hostile in ('=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "@SUM(A1)", "=1234.5+0", "-2+3"):
        assert hostile in values
    # And at the XML level there is no <f> element anywhere.
    with zipfile.ZipFile(workbook_path) as z:
        for name in z.namelist():
            if name.startswith("xl/worksheets/"):
                assert b"<f>" not in z.read(name) and b"<f " not in z.read(name), name


def test_headers_chinese_frozen_and_filtered(wb: openpyxl.Workbook) -> None:
    assert [h for h, *_ in HEADERS] == CHINESE_HEADERS
    for name in [*CATEGORY_CODES, RESOLVED_SHEET]:
        ws = wb[name]
        assert [c.value for c in ws[1]][: len(CHINESE_HEADERS)] == CHINESE_HEADERS
        assert ws.freeze_panes == "A2"
        assert ws.auto_filter.ref == f"A1:Z{max(ws.max_row, 2)}"
        assert ws.column_dimensions["J"].width > ws.column_dimensions["L"].width  # 说明 wider than 状态


def test_identifiers_are_text_dates_are_dates_ages_are_numbers(wb: openpyxl.Workbook) -> None:
    ws = wb["FIELD_MISMATCH"]
    rows = list(ws.iter_rows(min_row=2, values_only=False))
    assert len(rows) == 6
    for row in rows:
        code, number, seller = row[1], row[2], row[7]
        assert number.data_type == "s" and number.value.isdigit()
        assert seller.data_type == "s" and len(seller.value) == 18
        if code.value:
            assert code.data_type == "s" and code.value.startswith("0")
        assert isinstance(row[8].value, dt.datetime) and row[8].number_format == "yyyy-mm-dd"
        assert row[AGE].data_type == "n" and isinstance(row[AGE].value, int)
    legacy = [r for r in rows if r[1].value]
    assert legacy and all(r[2].value.startswith("000") for r in legacy), "leading zeros kept"
    tax_ids = [r[7].value for r in wb["MISSING_IN_REGISTRY"].iter_rows(min_row=2)]
    assert "011000000000000000" in tax_ids
    amounts = [r for r in rows if r[3].value == "amount"]
    # A mismatched amount is a number finance can sum (yuan format), whatever zeros it was written with.
    assert amounts and amounts[0][5].value == 1234.5 and amounts[0][5].data_type == "n"
    assert amounts[0][5].number_format == "#,##0.00"


def test_category_and_status_in_chinese(wb: openpyxl.Workbook) -> None:
    ws = wb["MISSING_IN_REGISTRY"]
    assert {r[0] for r in ws.iter_rows(min_row=2, values_only=True)} == {"缺失于税务系统"}
    assert {r[12] for r in ws.iter_rows(min_row=2, values_only=True)} <= {"新增", "持续", None}


def test_summary_sheet(wb: openpyxl.Workbook) -> None:
    ws = wb[SUMMARY_SHEET]
    values = [c.value for c in all_cells_of(ws)]
    assert "2026-11-21" in values
    assert "未通过 failed" in values
    for code in CATEGORY_CODES:
        assert code in values
    assert "缺失于税务系统" in values and "孤立红字发票" in values
    assert "issuers/erp/part-0001.parquet" in values
    assert "✓ 平衡 balanced" in values


def all_cells_of(ws):
    for row in ws.iter_rows():
        yield from row


def test_split_at_small_limit(tmp_path: Path) -> None:
    summary, findings, _rejected, resolved = build_inputs(60)  # 6 rows per category
    path = tmp_path / "split.xlsx"
    write_exceptions_xlsx(path, summary, findings, resolved, max_rows_per_sheet=4)
    wb = openpyxl.load_workbook(path)
    for code in CATEGORY_CODES:
        assert wb[code].max_row == 1 + 4
        assert wb[f"{code} (2)"].max_row == 1 + 2
        assert wb[f"{code} (2)"]["A1"].value == "类别"
    # Nothing lost, nothing doubled.
    numbers = [r[2] for name in wb.sheetnames[1:-1] for r in wb[name].iter_rows(min_row=2, values_only=True)]
    assert sorted(numbers) == sorted(findings.column("invoice_number").to_pylist())
    assert wb.sheetnames.index("MISSING_IN_REGISTRY (2)") == wb.sheetnames.index("MISSING_IN_REGISTRY") + 1


def test_only_categories_with_findings_get_a_sheet(tmp_path: Path) -> None:
    summary, findings, rejected, resolved = build_inputs(60)
    only = findings.filter(pa.compute.equal(findings.column("category"), "REGISTRY_RISK"))
    path = tmp_path / "one.xlsx"
    write_exceptions_xlsx(path, build_summary(only, rejected, resolved), only, resolved.slice(0, 0))
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == [SUMMARY_SHEET, "REGISTRY_RISK", RESOLVED_SHEET]
    assert wb[RESOLVED_SHEET].max_row == 1


def test_unknown_and_hostile_category_names_make_valid_sheets(tmp_path: Path) -> None:
    summary, findings, _rejected, resolved = build_inputs(10)
    cats = findings.column("category").to_pylist()
    cats[0] = "WEIRD/[CAT]:*?" + "X" * 40
    cats[1] = None
    table = findings.set_column(0, "category", pa.array(cats, pa.string()))
    path = tmp_path / "weird.xlsx"
    write_exceptions_xlsx(path, summary, table, resolved)
    wb = openpyxl.load_workbook(path)
    odd = [n for n in wb.sheetnames if n.startswith("WEIRD")]
    assert len(odd) == 1 and len(odd[0]) <= 31 and not set("[]:*?/\\") & set(odd[0])
    assert "UNCATEGORISED" in wb.sheetnames
    assert sum(wb[n].max_row - 1 for n in wb.sheetnames[1:-1]) == 10


def test_unmasked_by_default_masked_on_request(wb: openpyxl.Workbook, tmp_path: Path) -> None:
    values = {c.value for c in all_cells(wb) if isinstance(c.value, str)}
    assert PERSON_NAME in values and PERSON_ID in values
    summary, findings, _rejected, resolved = build_inputs(60)
    path = tmp_path / "masked.xlsx"
    write_exceptions_xlsx(path, summary, findings, resolved, mask=True)
    masked = openpyxl.load_workbook(path)
    text = "\n".join(str(c.value) for c in all_cells(masked) if c.value is not None)
    assert PERSON_NAME not in text and PERSON_ID not in text
    assert "张**" in text and "1101**********1234" in text
    assert "北京某某科技有限公司" in text  # a company is not personal data


def test_deterministic_bytes(tmp_path: Path) -> None:
    summary, findings, _rejected, resolved = build_inputs(60)
    a, b = tmp_path / "a.xlsx", tmp_path / "b.xlsx"
    write_exceptions_xlsx(a, summary, findings, resolved)
    write_exceptions_xlsx(b, summary, findings, resolved)
    assert a.read_bytes() == b.read_bytes()


def test_every_hostile_string_round_trips(wb: openpyxl.Workbook) -> None:
    values = {c.value for c in all_cells(wb) if isinstance(c.value, str)}
    for hostile in HOSTILE:
        if any(ord(ch) < 32 and ch not in "\t\n" for ch in hostile):
            continue  # control characters are stored escaped (_xHHHH_), as OOXML requires
        assert hostile in values, hostile


def test_rejects_bad_limit(tmp_path: Path) -> None:
    summary, findings, _rejected, resolved = build_inputs(5)
    with pytest.raises(ValueError):
        write_exceptions_xlsx(tmp_path / "x.xlsx", summary, findings, resolved, max_rows_per_sheet=0)


# ------------------------------------------------------------------ the streamed rows

#: Strings whose markup XlsxWriter treats specially: XML characters, control characters and
#: its own _xHHHH_ escape, white space at either end, non-characters, astral characters, and a
#: value over Excel's cell limit (in UTF-16 units).
TRICKY_TEXT = [
    "<b>&amp;</b> \"quoted\" 'single'",
    "tab\there",
    "line\nbreak\r\n",
    "bell\x07 and nul\x00",
    "_x0041_ literal",
    " leading",
    "trailing ",
    "\u3000ideographic\u3000",
    "\ufffe\uffff",
    "😀 astral 𠀀",
    "=1+1",
    "",
    "x" * 40_000,
    "😀" * 20_000,
    "\x1f" + "y" * 32_760,
]


def _api_rows(ws, fmt, table, *, mask):
    """The data rows through XlsxWriter's per-cell API: what the streamed rows must equal byte for byte."""
    from fapiao_audit import excel, masking

    zh = {c.code: c.zh for c in CATEGORIES}
    keys = [key for _h, key, _k, _w in HEADERS]
    for row, record in enumerate(excel._iter_records(table, keys), start=1):
        if mask:
            record = masking.mask_record(record)
        for col, (_h, key, kind, _w) in enumerate(HEADERS):
            value = record[key]
            if value is None or value == "":
                continue
            if kind == "date" and excel._as_date(value) is not None:
                ws.write_number(row, col, (excel._as_date(value) - excel._EXCEL_EPOCH).days, fmt["date"])
                continue
            if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
                ws.write_number(row, col, value, fmt["int"])
                continue
            if kind == "money" or (kind == "value" and record.get("field") in excel.MONEY_FIELDS):
                number = excel.money_number(value)
                if number is not None:
                    ws.write_number(row, col, float(number), fmt["money"])
                    continue
            value = (
                zh.get(value, value)
                if kind == "category"
                else excel._STATUS.get(value, value)
                if kind == "status"
                else excel._DECISION.get(value, value)
                if kind == "decision"
                else value
            )
            text = str(value).replace("\ufffe", "\ufffd").replace("\uffff", "\ufffd")
            if len(text) > 32_767 // 2 and len(text.encode("utf-16-le", "surrogatepass")) // 2 > 32_767:
                from xlsxwriter.utility import _utf16_truncate

                text = _utf16_truncate(text, 32_766) + "…"
            style = "edit" if key in excel.EDITABLE else "id" if kind == "id" else "text"
            ws.write_string(row, col, text, fmt[style])


@pytest.mark.parametrize("mask", [False, True])
def test_streamed_rows_equal_xlsxwriters_own_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mask: bool
) -> None:
    from fapiao_audit import excel

    summary, findings, _rejected, resolved = build_inputs(60)
    n = findings.num_rows
    tricky = [TRICKY_TEXT[i % len(TRICKY_TEXT)] for i in range(n)]
    findings = findings.set_column(
        findings.column_names.index("detail"), "detail", pa.array(tricky, pa.string())
    )
    findings = findings.set_column(
        findings.column_names.index("issuer_value"),
        "issuer_value",
        pa.array(list(reversed(tricky)), pa.string()),
    )
    streamed, api = tmp_path / "streamed.xlsx", tmp_path / "api.xlsx"
    write_exceptions_xlsx(streamed, summary, findings, resolved, mask=mask)
    monkeypatch.setattr(excel, "_stream_rows", _api_rows)
    write_exceptions_xlsx(api, summary, findings, resolved, mask=mask)
    with zipfile.ZipFile(streamed) as a, zipfile.ZipFile(api) as b:
        assert a.namelist() == b.namelist()
        for name in a.namelist():
            assert a.read(name) == b.read(name), name
    # And the hostile text reads back as written (XML escapes undone, nothing lost but the cut).
    ws = openpyxl.load_workbook(streamed, read_only=True).worksheets[1]
    assert any(
        row[9] == "<b>&amp;</b> \"quoted\" 'single'" for row in ws.iter_rows(min_row=2, values_only=True)
    )
