"""From a list to a workflow: money, actions, cases, the open-items ledger, finance's decisions, the index.

The three-night test is the issue's "done when": an invoice ages out of the window unresolved and stays
open; a decision file dropped after night 1 shows its finding as decided on night 2, and re-opened when
its values change on night 3.
"""

from __future__ import annotations

import csv
import json
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import openpyxl
import pytest

from factories import SELLER_A, invoice, write_csv
from fapiao_audit.cli import main
from fapiao_audit.model import ACTIONS, action_for

N1 = date(2026, 11, 21)
N2, N3 = N1 + timedelta(days=1), N1 + timedelta(days=2)


def night(landing: Path, n: date, registry: list[dict], erp: list[dict]) -> None:
    write_csv(landing / n.isoformat() / "registry" / "registry.csv", registry)
    write_csv(landing / n.isoformat() / "issuers" / "erp" / "erp.csv", erp)


def run(base: Path, n: date, acks: Path | None = None) -> int:
    args = [
        "run",
        "--night",
        n.isoformat(),
        "--landing",
        str(base / "landing"),
        "--reports",
        str(base / "reports"),
        "--db",
        str(base / "db" / "fapiao.duckdb"),
    ]
    return main([*args, "--acks", str(acks)] if acks else args)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def summary(base: Path, n: date) -> dict:
    return json.loads((base / "reports" / n.isoformat() / "summary.json").read_text(encoding="utf-8"))


def test_three_nights_ledger_and_decisions(tmp_path: Path) -> None:
    landing, acks = tmp_path / "landing", tmp_path / "acks"
    acks.mkdir()
    old = invoice("26112000000000000001", day="2026-11-15", amount="50000.00")  # never reaches the registry
    mism = invoice("26112000000000000002", day="2026-11-19", amount="1000.00")
    ok = invoice("26112000000000000003", day="2026-11-20", amount="12.00")
    registry = [dict(mism, amount="1100.00", total_amount="1230.00", tax_amount="130.00"), ok]
    for n in (N1, N2):
        night(landing, n, registry, [old, mism, ok])
    # Night 3: the registry's amount for the mismatched invoice changes again.
    night(
        landing,
        N3,
        [dict(mism, amount="1200.00", total_amount="1330.00", tax_amount="130.00"), ok],
        [old, mism, ok],
    )

    assert run(tmp_path, N1, acks) in (0, 1)
    rows1 = read_csv(tmp_path / "reports" / N1.isoformat() / "exceptions.csv")
    missing = [r for r in rows1 if r["category"] == "MISSING_IN_REGISTRY"]
    assert [r["invoice_number"] for r in missing] == ["26112000000000000001"]
    assert Decimal(missing[0]["amount_at_risk"]) == Decimal("56500.00")
    assert missing[0]["issuer_total"] == "56500.00" and missing[0]["registry_total"] == ""
    assert missing[0]["action"] == action_for("MISSING_IN_REGISTRY").text
    amount_row = next(r for r in rows1 if r["category"] == "FIELD_MISMATCH" and r["field"] == "amount")
    assert amount_row["action"] == ACTIONS[("FIELD_MISMATCH", "amount")].text
    assert amount_row["owner_role"] == "财务 / finance"
    # The invoice's mismatched fields are one case.
    mism_rows = [r for r in rows1 if r["invoice_number"] == "26112000000000000002"]
    assert len(mism_rows) >= 2 and len({r["case_id"] for r in mism_rows}) == 1

    # Finance decides on the amount mismatch after night 1 (a CSV in the acknowledgements folder).
    (acks / "decisions-1121.csv").write_text(
        "finding id,status,note,owner\n"
        f"{amount_row['finding_id']},已处理,ERP corrected,张会计\n"
        "FDEADBEEF0000,已处理,no such finding,张会计\n"
        f"{missing[0]['finding_id']},maybe,not a status,张会计\n",
        encoding="utf-8",
    )

    assert run(tmp_path, N2, acks) in (0, 1)
    s2 = summary(tmp_path, N2)
    rows2 = read_csv(tmp_path / "reports" / N2.isoformat() / "exceptions.csv")
    # The old invoice left the window (2026-11-16 .. 2026-11-22): not a finding tonight, not resolved, still open.
    assert not [r for r in rows2 if r["invoice_number"] == "26112000000000000001"]
    assert s2["resolved"] == 0
    assert s2["open_items"]["left_window"] == 1 and s2["out_of_window"] == 1
    con = duckdb.connect(str(tmp_path / "db" / "fapiao.duckdb"), read_only=True)
    try:
        carried = con.execute(
            "SELECT night, invoice_number, carried_as, age_days, first_seen, finding_id FROM carried_findings "
            "ORDER BY night"
        ).fetchall()
        decisions = con.execute(
            "SELECT finding_id, decision, note, decided_by, read_night, file, row_number FROM decisions"
        ).fetchall()
    finally:
        con.close()
    assert carried[0][:5] == (N2, "26112000000000000001", "left_window", 1, N1)
    # The decision is in force and shown; the two bad lines are listed with their line and reason.
    decided = next(r for r in rows2 if r["finding_id"] == amount_row["finding_id"])
    assert (decided["decision"], decided["decision_note"], decided["decided_by"]) == (
        "handled",
        "ERP corrected",
        "张会计",
    )
    assert decisions == [
        (amount_row["finding_id"], "handled", "ERP corrected", "张会计", N2, "decisions-1121.csv", 2)
    ]
    problems = s2["decisions"]["problems"]
    assert [(p["file"], p["row"]) for p in problems] == [("decisions-1121.csv", 3), ("decisions-1121.csv", 4)]
    assert "unknown finding id" in problems[0]["reason"] and "unknown status" in problems[1]["reason"]
    assert s2["open_items"]["decided"] == 1
    # The workbook shows the decision, the carried item, and amounts as numbers.
    wb = openpyxl.load_workbook(tmp_path / "reports" / N2.isoformat() / "exceptions.xlsx")
    assert "离开窗口 open items" in wb.sheetnames
    ws = wb["FIELD_MISMATCH"]
    header = [c.value for c in ws[1]]
    amount_cells = [
        r for r in ws.iter_rows(min_row=2, values_only=True) if r[header.index("字段")] == "amount"
    ]
    assert amount_cells[0][header.index("处理状态")] == "已处理"
    assert (
        amount_cells[0][header.index("开票方值")] == 1000
        and amount_cells[0][header.index("税务系统值")] == 1100
    )
    assert isinstance(amount_cells[0][header.index("涉及金额")], float | int)
    report2 = (tmp_path / "reports" / N2.isoformat() / "report.html").read_text(encoding="utf-8")
    assert "离开窗口仍未解决" in report2 and "decisions-1121.csv" in report2

    # A rerun of night 2 reads no file again and publishes the same list.
    before = (tmp_path / "reports" / N2.isoformat() / "exceptions.csv").read_bytes()
    assert run(tmp_path, N2, acks) in (0, 1)
    assert (tmp_path / "reports" / N2.isoformat() / "exceptions.csv").read_bytes() == before

    assert run(tmp_path, N3, acks) in (0, 1)
    s3 = summary(tmp_path, N3)
    rows3 = read_csv(tmp_path / "reports" / N3.isoformat() / "exceptions.csv")
    reopened = next(r for r in rows3 if r["finding_id"] == amount_row["finding_id"])
    assert reopened["decision"] == "reopened" and reopened["registry_value"] == "1200.00"
    assert s3["open_items"]["reopened"] == 1 and s3["open_items"]["left_window"] == 1
    assert s3["resolved"] == 0
    con = duckdb.connect(str(tmp_path / "db" / "fapiao.duckdb"), read_only=True)
    try:
        age3 = con.execute("SELECT age_days FROM carried_findings WHERE night = $n", {"n": N3}).fetchone()[0]
    finally:
        con.close()
    assert age3 == 2
    # The index lists the three nights, newest first, linking each report.
    index = (tmp_path / "reports" / "index.html").read_text(encoding="utf-8")
    assert index.index(N3.isoformat()) < index.index(N2.isoformat()) < index.index(N1.isoformat())
    assert f'href="{N1.isoformat()}/report.html"' in index


def test_closing_decision_ends_an_item_that_left_the_window(tmp_path: Path) -> None:
    """无需处理 on a carried item closes it: listed as closed by finance, no longer carried."""
    landing, acks = tmp_path / "landing", tmp_path / "acks"
    acks.mkdir()
    old = invoice("26112000000000000001", day="2026-11-15")
    ok = invoice("26112000000000000003", day="2026-11-20")
    for n in (N1, N2, N3):
        night(landing, n, [ok], [old, ok])
    assert run(tmp_path, N1, acks) in (0, 1)
    assert run(tmp_path, N2, acks) in (0, 1)
    fid = read_csv(tmp_path / "reports" / N1.isoformat() / "exceptions.csv")[0]["finding_id"]
    (acks / "closed.csv").write_text(
        f"编号,处理状态,处理说明\n{fid},无需处理,voided offline\n", encoding="utf-8"
    )
    assert run(tmp_path, N3, acks) in (0, 1)
    s3 = summary(tmp_path, N3)
    assert s3["open_items"]["left_window"] == 0 and s3["resolved"] == 0
    wb = openpyxl.load_workbook(tmp_path / "reports" / N3.isoformat() / "exceptions.xlsx")
    resolved = list(wb["已解决 resolved"].iter_rows(min_row=2, values_only=True))
    assert len(resolved) == 1 and "已由财务关闭" in resolved[0]


def test_the_edited_workbook_is_read_back(tmp_path: Path) -> None:
    """Finance fills 处理状态 in exceptions.xlsx itself and saves it into the folder."""
    landing, acks = tmp_path / "landing", tmp_path / "acks"
    acks.mkdir()
    mism = invoice("26112000000000000002", day="2026-11-19")
    for n in (N1, N2):
        night(landing, n, [dict(mism, buyer_name="北京丁有限公司")], [mism])
    assert run(tmp_path, N1, acks) in (0, 1)
    wb = openpyxl.load_workbook(tmp_path / "reports" / N1.isoformat() / "exceptions.xlsx")
    ws = wb["FIELD_MISMATCH"]
    header = [c.value for c in ws[1]]
    ws.cell(row=2, column=header.index("处理状态") + 1, value="已核实")
    note = ws.cell(row=2, column=header.index("处理说明") + 1, value='=HYPERLINK("x")')
    note.data_type = "s"  # typed as text, as a spreadsheet program saves a quoted entry
    fid = ws.cell(row=2, column=header.index("编号") + 1).value
    wb.save(acks / "exceptions-edited.xlsx")
    assert run(tmp_path, N2, acks) in (0, 1)
    rows = read_csv(tmp_path / "reports" / N2.isoformat() / "exceptions.csv")
    row = next(r for r in rows if r["finding_id"] == fid)
    assert row["decision"] == "verified" and row["decided_by"] == "exceptions-edited"
    # A note that looks like a formula stays text, neutralised in the CSV.
    assert row["decision_note"].startswith("'=")


def test_a_broken_decision_file_never_stops_the_night(tmp_path: Path) -> None:
    landing, acks = tmp_path / "landing", tmp_path / "acks"
    acks.mkdir()
    mism = invoice("26112000000000000002", day="2026-11-19")
    night(landing, N1, [dict(mism, buyer_name="x")], [mism])
    (acks / "broken.xlsx").write_bytes(b"PK\x03\x04 not a workbook")
    (acks / "no-header.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    assert run(tmp_path, N1, acks) in (0, 1)
    problems = summary(tmp_path, N1)["decisions"]["problems"]
    assert {p["file"] for p in problems} == {"broken.xlsx", "no-header.csv"}


def test_money_totals_count_each_invoice_once(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    mism = invoice("26112000000000000002", day="2026-11-19", amount="1000.00")
    night(landing, N1, [dict(mism, amount="1100.00", tax_amount="143.00", total_amount="1243.00")], [mism])
    assert run(tmp_path, N1) in (0, 1)
    s = summary(tmp_path, N1)
    # amount, tax_amount and total_amount differ: three findings, one invoice of 1,243.00 at risk.
    assert s["counts"]["FIELD_MISMATCH"] == 3
    assert s["amount_at_risk"]["total"] == 1243.0
    assert s["amount_at_risk"]["by_category"]["FIELD_MISMATCH"] == 1243.0
    assert s["by_seller"][0]["seller_tax_id"] == SELLER_A and s["by_seller"][0]["amount_at_risk"] == 1243.0


@pytest.mark.parametrize(
    "word, code",
    [
        ("已处理", "handled"),
        ("无需处理 / no action needed", "no_action"),
        ("Verified", "verified"),
        ("", None),
        ("重新打开", None),
    ],
)
def test_decision_words(word: str, code: str | None) -> None:
    from fapiao_audit.decisions import decision_code

    assert decision_code(word) == code
