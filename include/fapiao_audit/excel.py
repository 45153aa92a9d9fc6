"""``exceptions.xlsx``: the night's findings for finance, one sheet per category.

Finance opens this file in Excel or WPS and fixes invoices from it, so:

- every data value is a plain cell: strings through ``write_string`` (never ``write()``, which
  would turn ``=…`` into a formula, ``00012345`` into a number and ``http…`` into a link) and
  the workbook options that disable each of those conversions; identifiers stay text with
  their leading zeros, dates are real dates, ages are numbers;
- XlsxWriter's ``constant_memory`` mode keeps memory flat for a million findings: rows are
  streamed in order, one category (or one part of one) after the other;
- a category with more rows than a sheet holds continues on ``<name> (2)``, ``(3)`` …;
- the output is byte-for-byte reproducible for the same inputs (document times come from the
  night, XlsxWriter writes fixed zip timestamps), so a rerun's checksum in the manifest is stable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import xlsxwriter
from xlsxwriter.utility import _utf16_len, _utf16_truncate, xl_col_to_name
from xlsxwriter.worksheet import Worksheet

from fapiao_audit import masking
from fapiao_audit.model import (
    AGING_BUCKETS,
    CARRIED_STATUSES,
    CATEGORIES,
    CATEGORY_BY_CODE,
    COMPARED_FIELDS,
    DECISIONS,
    EXCEL_COLUMNS,
    FIELD_LABELS,
    FINDING_STATUSES,
    GONE_STATUSES,
    MISSING_CAUSES,
    REOPENED,
    NightSummary,
    category_order,
    columns,
)

__all__ = ["EXCEL_MAX_DATA_ROWS", "HEADERS", "SUMMARY_SHEET", "RESOLVED_SHEET", "write_exceptions_xlsx"]

#: Data rows a sheet holds below its header row (Excel's limit is 1,048,576 rows in all).
EXCEL_MAX_DATA_ROWS = 1_048_575
SUMMARY_SHEET = "汇总 summary"
RESOLVED_SHEET = "已解决 resolved"
CASES_SHEET = "案件 cases"
CARRIED_SHEET = "离开窗口 open items"
#: The amount fields whose issuer and registry values are written as numbers.
MONEY_FIELDS = frozenset({"amount", "tax_amount", "total_amount"})

# Cell kinds of the finding columns here: text | id | date | int | category | status.
_EXCEL_KIND = {"source": "text", "field": "text", "long": "text"}
#: The columns finance edits (处理状态, 处理说明): highlighted, 处理状态 with a list of the decision words.
EDITABLE = ("decision", "decision_note")
#: (header, source column, kind, width) of the findings sheets.
HEADERS: tuple[tuple[str, str, str, float], ...] = tuple(
    (c.zh, c.name, _EXCEL_KIND.get(c.kind, c.kind), c.excel_width) for c in columns(EXCEL_COLUMNS)
)
_STATUS = {code: zh for code, (zh, _en) in {**FINDING_STATUSES, **GONE_STATUSES, **CARRIED_STATUSES}.items()}
_DECISION = {**{code: zh for code, (zh, _en, _closes) in DECISIONS.items()}, "reopened": REOPENED[0]}
_CAUSE = {code: zh for code, (zh, _en) in MISSING_CAUSES.items()}
_OUTCOME = {"passed": "通过 passed", "failed": "未通过 failed"}
_SHEET_BAD = re.compile(r"[\[\]:*?/\\]")
_BATCH = 65_536
#: Day 0 of Excel's 1900 date system (for dates after 1900-03-01).
_EXCEL_EPOCH = date(1899, 12, 30)
_CELL_MAX = 32_767


def write_exceptions_xlsx(
    path: str | os.PathLike[str],
    summary: NightSummary,
    findings: pa.Table,
    resolved: pa.Table,
    *,
    mask: bool = False,
    max_rows_per_sheet: int = EXCEL_MAX_DATA_ROWS,
    carried: pa.Table | None = None,
) -> None:
    """Write the workbook: a summary sheet, one sheet per category with findings, the cases of more
    than one finding together, the open items carried (left the window unresolved), the resolved sheet.

    Finance fills 处理状态 (a list: 已核实 / 已处理 / 无需处理) and 处理说明 on any findings sheet and saves
    the workbook into the acknowledgements folder: the next run reads the decisions back by 编号.

    ``max_rows_per_sheet`` (data rows, header excluded) is Excel's limit by default; it is a
    parameter so the split into ``<name> (2)`` … can be tested on small inputs.
    """
    if not 1 <= max_rows_per_sheet <= EXCEL_MAX_DATA_ROWS:
        raise ValueError(f"max_rows_per_sheet must be between 1 and {EXCEL_MAX_DATA_ROWS}")
    workbook = xlsxwriter.Workbook(
        os.fspath(path),
        {
            "constant_memory": True,
            "strings_to_formulas": False,
            "strings_to_numbers": False,
            "strings_to_urls": False,
            "nan_inf_to_errors": False,
        },
    )
    try:
        fmt = _formats(workbook)
        created = _night_datetime(summary)
        workbook.set_properties(
            {
                "title": f"发票核对异常清单 Fapiao exceptions {summary.night}",
                "subject": "fapiao reconciliation",
                "author": "fapiao-audit",
                "created": created,
            }
        )
        # Worksheet names are fixed before any data is streamed: the summary links to them.
        plan = _sheet_plan(findings, max_rows_per_sheet)
        summary_ws = workbook.add_worksheet(SUMMARY_SHEET)
        sheets = []
        for code, start, length, name in plan:
            ws = workbook.add_worksheet(name)
            cat = CATEGORY_BY_CODE.get(code or "")
            if cat:
                ws.set_tab_color(cat.colour)
            sheets.append((ws, code, start, length))
        cases = _case_rows(findings).slice(0, max_rows_per_sheet)
        cases_ws = workbook.add_worksheet(CASES_SHEET) if cases.num_rows else None
        carried = carried if carried is not None and carried.num_rows else None
        carried_ws = workbook.add_worksheet(CARRIED_SHEET) if carried is not None else None
        resolved_ws = workbook.add_worksheet(RESOLVED_SHEET)

        _write_summary(summary_ws, fmt, summary, findings, plan)
        for ws, code, start, length in sheets:
            part = _category_rows(findings, code).slice(start, length)
            _write_findings_sheet(ws, fmt, part, mask=mask)
        if cases_ws is not None:
            _write_findings_sheet(cases_ws, fmt, cases, mask=mask)
        if carried_ws is not None and carried is not None:
            _write_findings_sheet(carried_ws, fmt, carried.slice(0, max_rows_per_sheet), mask=mask)
        note = None
        if resolved.num_rows > max_rows_per_sheet:
            note = f"仅列出前 {max_rows_per_sheet:,} / {resolved.num_rows:,} 行 · first rows only"
        _write_findings_sheet(resolved_ws, fmt, resolved.slice(0, max_rows_per_sheet), mask=mask, note=note)
        summary_ws.activate()
    finally:
        workbook.close()


# --------------------------------------------------------------------------- planning


def _category_order(findings: pa.Table) -> list[str | None]:
    if findings.num_rows == 0:
        return []
    return category_order(r["values"] for r in pc.value_counts(findings.column("category")).to_pylist())


def _case_rows(findings: pa.Table) -> pa.Table:
    """The findings of cases with more than one finding, a case's findings together (by case, then as
    published)."""
    if findings.num_rows == 0 or "case_id" not in findings.column_names:
        return findings.slice(0, 0)
    counts = pc.value_counts(findings.column("case_id"))
    multi = [v["values"] for v in counts.to_pylist() if v["values"] is not None and v["counts"] > 1]
    if not multi:
        return findings.slice(0, 0)
    picked = findings.filter(pc.fill_null(pc.is_in(findings.column("case_id"), pa.array(multi)), False))
    order = pa.array(range(picked.num_rows), pa.int64())
    picked = picked.append_column("__order", order)
    return picked.sort_by([("case_id", "ascending"), ("__order", "ascending")]).drop_columns(["__order"])


def _category_rows(findings: pa.Table, code: str | None) -> pa.Table:
    cat = findings.column("category")
    mask = pc.is_null(cat) if code is None else pc.fill_null(pc.equal(cat, code), False)
    return findings.filter(mask)


def _safe_sheet_name(raw: str, used: set[str], suffix: str = "") -> str:
    """A valid, unused sheet name: no ``[]:*?/\\``, no edge apostrophes, ≤ 31 characters."""
    base = _SHEET_BAD.sub("_", raw).strip("'") or "_"
    name = base[: 31 - len(suffix)] + suffix
    n = 2
    while name.lower() in used:
        tail = f"~{n}{suffix}"
        name = base[: 31 - len(tail)] + tail
        n += 1
    used.add(name.lower())
    return name


def _sheet_plan(findings: pa.Table, max_rows: int) -> list[tuple[str | None, int, int, str]]:
    """(category, first row, row count, sheet name) for every category sheet, in display order."""
    used = {SUMMARY_SHEET.lower(), RESOLVED_SHEET.lower(), CASES_SHEET.lower(), CARRIED_SHEET.lower()}
    plan = []
    for code in _category_order(findings):
        count = _category_rows(findings, code).num_rows
        base = code if code is not None else "UNCATEGORISED"
        for part, start in enumerate(range(0, count, max_rows), start=1):
            suffix = "" if part == 1 else f" ({part})"
            plan.append((code, start, min(max_rows, count - start), _safe_sheet_name(base, used, suffix)))
    return plan


# --------------------------------------------------------------------------- writing


def _formats(workbook: xlsxwriter.Workbook) -> dict[str, Any]:
    return {
        "header": workbook.add_format(
            {
                "bold": True,
                "bg_color": "#1F2937",
                "font_color": "#FFFFFF",
                "border": 1,
                "valign": "vcenter",
                "text_wrap": True,
            }
        ),
        "text": workbook.add_format({"num_format": "@", "valign": "top"}),
        "id": workbook.add_format({"num_format": "@", "valign": "top", "font_name": "Consolas"}),
        "date": workbook.add_format({"num_format": "yyyy-mm-dd", "valign": "top", "align": "left"}),
        "int": workbook.add_format({"num_format": "0", "valign": "top"}),
        "money": workbook.add_format({"num_format": "#,##0.00", "valign": "top"}),
        "money_bold": workbook.add_format({"num_format": "#,##0.00", "bold": True}),
        "edit": workbook.add_format({"num_format": "@", "valign": "top", "bg_color": "#FEF9C3"}),
        "title": workbook.add_format({"bold": True, "font_size": 16}),
        "label": workbook.add_format({"bold": True, "font_color": "#374151"}),
        "passed": workbook.add_format({"bold": True, "font_color": "#15803D", "font_size": 13}),
        "failed": workbook.add_format({"bold": True, "font_color": "#B91C1C", "font_size": 13}),
        "num": workbook.add_format({"num_format": "#,##0"}),
        "num_bold": workbook.add_format({"num_format": "#,##0", "bold": True}),
        "delta": workbook.add_format({"num_format": "+#,##0;-#,##0;0"}),
        "link": workbook.add_format({"font_color": "#1D4ED8", "underline": 1}),
        "mono": workbook.add_format({"font_name": "Consolas", "num_format": "@"}),
        "bad": workbook.add_format({"bold": True, "font_color": "#B91C1C"}),
        "ok": workbook.add_format({"font_color": "#15803D"}),
    }


def _night_datetime(summary: NightSummary) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(summary.night), time(0))
    except ValueError:
        return datetime(2000, 1, 1)


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


def _iter_records(table: pa.Table, columns: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Rows as dicts, a batch at a time (a million-row table never becomes one Python list)."""
    present = [c for c in columns if c in table.column_names]
    missing = [c for c in columns if c not in table.column_names]
    for batch in table.select(present).to_batches(max_chunksize=_BATCH):
        cols = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        for values in zip(*cols, strict=True):
            record = dict(zip(present, values, strict=True))
            for c in missing:
                record[c] = None
            yield record


def money_number(value: Any) -> str | None:
    """A yuan amount as the number text of a cell (Decimal, number or numeric text), else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal | int | float):
        d = Decimal(value) if not isinstance(value, float) else Decimal(repr(value))
    else:
        try:
            d = Decimal(str(value).strip().replace(",", ""))
        except InvalidOperation:
            return None
    if not d.is_finite() or abs(d) >= Decimal("1e15"):
        return None
    return f"{d:.2f}".rstrip("0").rstrip(".") if "." in f"{d:.2f}" else f"{d}"


def _write_text(ws: Worksheet, row: int, col: int, value: Any, cell_format: Any) -> None:
    if value is None:
        return
    ws.write_string(row, col, value if isinstance(value, str) else str(value), cell_format)


def _write_findings_sheet(
    ws: Worksheet, fmt: Mapping[str, Any], table: pa.Table, *, mask: bool, note: str | None = None
) -> None:
    # Cell formats get their index on first use: fix the order here, whatever writes the rows.
    for name in ("header", "text", "id", "date", "int", "money", "edit"):
        fmt[name]._get_xf_index()
    ws.freeze_panes(1, 0)
    ws.set_row(0, 20)
    for col, (_header, key, kind, width) in enumerate(HEADERS):
        style = (
            "edit"
            if key in EDITABLE
            else "id"
            if kind == "id"
            else "text"
            if kind in ("text", "value")
            else "money"
            if kind == "money"
            else None
        )
        ws.set_column(col, col, width, fmt[style] if style else None)
    ws.autofilter(0, 0, max(table.num_rows, 1), len(HEADERS) - 1)
    for col, (header, *_rest) in enumerate(HEADERS):
        ws.write_string(0, col, header, fmt["header"])
    if note:
        ws.write_string(0, len(HEADERS), note, fmt["bad"])
    decision_col = [key for _h, key, _k, _w in HEADERS].index("decision")
    ws.data_validation(
        1,
        decision_col,
        max(table.num_rows, 1),
        decision_col,
        {
            "validate": "list",
            "source": [zh for zh, _en, _c in DECISIONS.values()],
            "ignore_blank": True,
            "error_type": "warning",
            "input_title": "处理状态 Decision",
            "input_message": "已核实 verified / 已处理 handled / 无需处理 no action needed",
        },
    )

    if table.num_rows == 0:
        return
    _stream_rows(ws, fmt, table, mask=mask)


#: What XlsxWriter's control-character escape rewrites: control characters and literal _xHHHH_.
_NEEDS_CONTROL_ESCAPE = re.compile(r"[\x00-\x08\x0b-\x1f]|_x[0-9a-fA-F]{4}_")
#: Column letters of the findings sheets (A..N).
_COL_NAMES = tuple(xl_col_to_name(c) for c in range(len(HEADERS)))


def _stream_rows(ws: Worksheet, fmt: Mapping[str, Any], table: pa.Table, *, mask: bool) -> None:
    """The data rows of a findings sheet, written as worksheet XML in constant memory.

    XlsxWriter's per-cell API costs about 20 µs a cell, most of the publish stage at 100k+
    findings. Rows are built here with the same markup XlsxWriter writes in ``constant_memory``
    mode (inline strings, the same escaping of XML and control characters, the same cell
    formats) straight into the worksheet's row file, after its header row has been flushed.
    This reaches into XlsxWriter's private row file and escape helpers: it is pinned in
    requirements.txt, and tests/test_excel.py compares the result with its per-cell API byte for
    byte, so an upgrade that changes either fails there.
    """
    if len(HEADERS) > len(_COL_NAMES) or table.num_rows > EXCEL_MAX_DATA_ROWS:
        raise ValueError("a findings sheet holds at most 14 columns and 1,048,575 rows")
    xf = {
        kind: fmt[name]._get_xf_index()
        for kind, name in (
            ("text", "text"),
            ("id", "id"),
            ("date", "date"),
            ("int", "int"),
            ("money", "money"),
            ("edit", "edit"),
        )
    }
    text_s, id_s = f'" s="{xf["text"]}" t="inlineStr"><is><t', f'" s="{xf["id"]}" t="inlineStr"><is><t'
    edit_s = f'" s="{xf["edit"]}" t="inlineStr"><is><t'
    date_s, int_s, money_s = f'" s="{xf["date"]}"><v>', f'" s="{xf["int"]}"><v>', f'" s="{xf["money"]}"><v>'
    escape_control, escape_data = ws._escape_control_characters, ws._escape_data
    zh = {c.code: c.zh for c in CATEGORIES}
    plan = [(_COL_NAMES[col], key, kind) for col, (_h, key, kind, _w) in enumerate(HEADERS)]
    keys = [key for _c, key, _k in plan]
    if "field" not in keys:
        keys.append("field")

    ws._write_single_row(1)  # flush the header row (row 0) as XlsxWriter would before row 1
    if ws._check_dimensions(table.num_rows, len(HEADERS) - 1):
        raise ValueError("findings sheet out of Excel's bounds")
    write = ws.fh.write
    out: list[str] = []
    for row, record in enumerate(_iter_records(table, keys), start=1):
        if mask:
            record = masking.mask_record(record)
        r = str(row + 1)
        cells = []
        for name, key, kind in plan:
            value = record[key]
            # None and "" stay blank cells: an empty identifier is no value, not a zero-length text.
            if value is None or value == "":
                continue
            if kind == "date":
                d = _as_date(value)
                if d is not None:
                    # An Excel date is a day count; writing it directly skips a datetime round trip.
                    cells.append(f'<c r="{name}{r}{date_s}{(d - _EXCEL_EPOCH).days}</v></c>')
                    continue
            elif kind == "int":
                if isinstance(value, int) and not isinstance(value, bool):
                    cells.append(f'<c r="{name}{r}{int_s}{value:.16G}</v></c>')
                    continue
            elif kind == "money" or (kind == "value" and record.get("field") in MONEY_FIELDS):
                number = money_number(value)
                if number is not None:
                    cells.append(f'<c r="{name}{r}{money_s}{number}</v></c>')
                    continue
            elif kind == "decision":
                value = _DECISION.get(value, value)
            elif kind == "category":
                value = zh.get(value, value)
            elif kind == "status":
                value = _STATUS.get(value, value)
            elif kind == "cause":
                value = _CAUSE.get(value, value)
            text = value if isinstance(value, str) else str(value)
            if "\ufffe" in text or "\uffff" in text:  # not allowed in XML; Excel would call the file corrupt
                text = text.replace("\ufffe", "\ufffd").replace("\uffff", "\ufffd")
            if len(text) > _CELL_MAX // 2 and _utf16_len(text) > _CELL_MAX:
                # Excel's cell limit (UTF-16 units); say so rather than cut silently
                text = _utf16_truncate(text, _CELL_MAX - 1) + "…"
            if _NEEDS_CONTROL_ESCAPE.search(text):
                text = escape_control(text)
            # XlsxWriter's test (leading or trailing \s), without two regular expressions per cell.
            preserve = ' xml:space="preserve">' if text[:1].isspace() or text[-1:].isspace() else ">"
            style = edit_s if key in EDITABLE else id_s if kind == "id" else text_s
            cells.append(f'<c r="{name}{r}{style}{preserve}{escape_data(text)}</t></is></c>')
        if cells:
            out.append(f'<row r="{r}">' + "".join(cells) + "</row>")
        if len(out) >= 4096:
            write("".join(out))
            out.clear()
    write("".join(out))


def _write_summary(
    ws: Worksheet,
    fmt: Mapping[str, Any],
    summary: NightSummary,
    findings: pa.Table,
    plan: Sequence[tuple[str | None, int, int, str]],
) -> None:
    """The summary sheet, top to bottom (constant_memory: rows strictly in order)."""
    ws.set_column(0, 0, 28)
    ws.set_column(1, 1, 30)
    ws.set_column(2, 2, 26)
    ws.set_column(3, 6, 12)
    ws.set_column(7, 7, 26)  # the category table's sheet links; the files table's byte counts
    ws.set_column(8, 8, 30)
    ws.set_column(9, 9, 14)
    row = 0
    ws.write_string(row, 0, "发票核对异常清单 Fapiao reconciliation exceptions", fmt["title"])
    row += 2
    outcome = summary.outcome
    facts: list[tuple[str, Any, str]] = [
        ("业务日期 Night", summary.night, "mono"),
        ("结果 Outcome", _OUTCOME.get(outcome, outcome), outcome if outcome in _OUTCOME else "label"),
        ("运行编号 Run id", summary.run.run_id, "mono"),
        ("数据截至 As of", summary.as_of, "mono"),
        ("开票窗口 Window", f"{summary.window_start or ''} → {summary.window_end or ''}", "mono"),
        ("上一晚 Previous night", summary.previous_night or "—", "mono"),
        ("发现总数 Total findings", summary.total_findings, "num_bold"),
        ("新增 New", summary.new, "num"),
        ("持续 Open", summary.open, "num"),
        ("已解决 Resolved", summary.resolved, "num"),
    ]
    money = summary.amount_at_risk or {}
    items = summary.open_items or {}
    if money:
        facts.append(("涉及金额(元) Amount at risk (CNY)", float(money.get("total") or 0), "money_bold"))
    if items:
        facts += [
            ("未结事项 Open items", int(items.get("total") or 0), "num_bold"),
            ("离开窗口仍未解决 Left the window unresolved", int(items.get("left_window") or 0), "num"),
            ("今晚未检查 Not checked tonight", int(items.get("not_checked") or 0), "num"),
            ("财务已处理 Decided by finance", int(items.get("decided") or 0), "num"),
            ("决定后重新打开 Re-opened", int(items.get("reopened") or 0), "num"),
        ]
    for label, value, style in facts:
        ws.write_string(row, 0, label, fmt["label"])
        if isinstance(value, float):
            ws.write_number(row, 1, value, fmt[style])
        elif isinstance(value, int):
            ws.write_number(row, 1, value, fmt[style])
        elif value is not None:
            ws.write_string(row, 1, str(value), fmt[style])
        row += 1

    row += 1
    heads: tuple[str, ...] = (
        "类别代码 Code",
        "类别 Category (中文)",
        "Category (English)",
        "今晚 Tonight",
        "上一晚 Previous",
        "变化 Change",
        "新增 New",
        "工作表 Sheets",
        "涉及金额(元) At risk",
    )
    for col, head in enumerate(heads):
        ws.write_string(row, col, head, fmt["header"])
    row += 1
    counts = summary.counts
    previous = summary.counts_previous
    new_by_cat: dict[Any, int] = {}
    if findings.num_rows and "finding_status" in findings.column_names:
        for r in findings.group_by(["category", "finding_status"]).aggregate([([], "count_all")]).to_pylist():
            if r["finding_status"] == "new":
                new_by_cat[r["category"]] = r["count_all"]
    sheets_by_cat: dict[Any, list[str]] = {}
    for code, _start, _length, name in plan:
        sheets_by_cat.setdefault(code, []).append(name)
    codes = [c.code for c in CATEGORIES] + sorted(k for k in counts if k not in CATEGORY_BY_CODE)
    for code in codes:
        cat = CATEGORY_BY_CODE.get(code)
        n = counts.get(code, 0)
        ws.write_string(row, 0, code, fmt["mono"])
        ws.write_string(row, 1, cat.zh if cat else code)
        ws.write_string(row, 2, cat.en if cat else code)
        ws.write_number(row, 3, n, fmt["num_bold"])
        if previous is not None:
            p = previous.get(code, 0)
            ws.write_number(row, 4, p, fmt["num"])
            ws.write_number(row, 5, n - p, fmt["delta"])
        else:
            ws.write_string(row, 4, "—")
            ws.write_string(row, 5, "—")
        ws.write_number(row, 6, new_by_cat.get(code, 0), fmt["num"])
        names = sheets_by_cat.get(code, [])
        if names:
            target = "'" + names[0].replace("'", "''") + "'!A1"
            ws.write_url(row, 7, f"internal:{target}", fmt["link"], string=", ".join(names))
        by_category = money.get("by_category") or {}
        if code in by_category:
            ws.write_number(row, 8, float(by_category[code]), fmt["money"])
        row += 1

    if items.get("aging"):
        row += 1
        for col, head in enumerate(("账龄 Age (days)", "未结事项 Open items", "涉及金额(元) At risk")):
            ws.write_string(row, col, head, fmt["header"])
        row += 1
        for name, _low, _high in AGING_BUCKETS:
            bucket = items["aging"].get(name) or {}
            ws.write_string(row, 0, name)
            ws.write_number(row, 1, int(bucket.get("count") or 0), fmt["num"])
            ws.write_number(row, 2, float(bucket.get("amount") or 0), fmt["money"])
            row += 1

    by_source = money.get("by_source") or {}
    if by_source:
        row += 1
        for col, head in enumerate(("来源系统 Source", "涉及金额(元) At risk")):
            ws.write_string(row, col, head, fmt["header"])
        row += 1
        for source, amount in by_source.items():
            _write_text(ws, row, 0, source, fmt["mono"])
            ws.write_number(row, 1, float(amount), fmt["money"])
            row += 1

    problems = (summary.decisions or {}).get("problems") or []
    if problems:
        row += 1
        for col, head in enumerate(("处理文件 Decision file", "工作表 Sheet", "行 Row", "问题 Problem")):
            ws.write_string(row, col, head, fmt["header"])
        row += 1
        for problem in problems:
            _write_text(ws, row, 0, problem.get("file"), fmt["mono"])
            _write_text(ws, row, 1, problem.get("sheet"), None)
            if problem.get("row") is not None:
                ws.write_number(row, 2, int(problem["row"]), fmt["num"])
            _write_text(ws, row, 3, problem.get("reason"), fmt["bad"])
            row += 1

    row += 1
    heads = (
        "来源系统 Source",
        "文件 File",
        "SHA-256",
        "读取 Read",
        "载入 Loaded",
        "拒绝 Rejected",
        "跳过 Skipped",
        "字节 Bytes",
        "格式/编码 Format/encoding",
        "核对 Check",
    )
    for col, head in enumerate(heads):
        ws.write_string(row, col, head, fmt["header"])
    row += 1
    for src in summary.sources:
        for f in src.files:
            _write_text(ws, row, 0, src.source_system, fmt["mono"])
            _write_text(ws, row, 1, f.file, fmt["mono"])
            _write_text(ws, row, 2, f.sha256, fmt["mono"])
            ws.write_number(row, 3, f.rows_read, fmt["num"])
            ws.write_number(row, 4, f.rows_loaded, fmt["num"])
            ws.write_number(row, 5, f.rows_rejected, fmt["num"])
            ws.write_number(row, 6, f.rows_skipped, fmt["num"])
            ws.write_number(row, 7, f.bytes, fmt["num"])
            fe = " / ".join(str(v) for v in (f.format, f.encoding) if v)
            _write_text(
                ws, row, 8, fe + (f" (重复 duplicate of {f.duplicate_of})" if f.duplicate_of else ""), None
            )
            if f.balanced:
                ws.write_string(row, 9, "✓ 平衡 balanced", fmt["ok"])
            else:
                ws.write_string(row, 9, "✗ 不平衡 unbalanced", fmt["bad"])
            row += 1

    row += 1
    ws.write_string(row, 0, "说明 Notes", fmt["label"])
    row += 1
    for note in (
        "字段列使用规范英文字段名 / 字段 uses the canonical field names: "
        + ", ".join(f"{k} {v}" for k, v in FIELD_LABELS.items() if k in COMPARED_FIELDS),
        "所有单元格均为文本、日期或数字，不含公式 / No cell is a formula; identifiers are text.",
    ):
        ws.write_string(row, 0, note)
        row += 1
