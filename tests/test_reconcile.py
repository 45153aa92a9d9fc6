"""Each finding category on a minimal night, and the cases that must not fire."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime

import pytest

from factories import BUYER_C, NIGHT, OUTSIDER, SELLER_A, SELLER_B, invoice
from fapiao_audit.config import SHANGHAI, Config
from fapiao_audit.ingest import ingest_night
from fapiao_audit.reconcile import fetch_findings, fetch_resolved, reconcile_night

D20 = "26110000000000000001"
D20B = "26110000000000000002"
CODE = "011002600111"


def findings(con, landing, tmp_path, cfg=None, night=NIGHT):
    cfg = cfg or Config()
    ingest_night(con, landing, night, cfg, tmp_path / "tmp")
    reconcile_night(con, night, cfg)
    rows = fetch_findings(con, night).to_pylist()
    return {
        (r["category"], r["invoice_code"], r["invoice_number"], r["field"], r["source_system"]) for r in rows
    }, rows


def test_clean_night_has_no_findings(make_night, mem_con, tmp_path):
    inv = [invoice(D20), invoice("00012345", code=CODE)]
    got, _ = findings(mem_con, make_night(inv, {"erp": inv}), tmp_path)
    assert got == set()


def test_missing_in_registry_versus_pending_sync(make_night, mem_con, tmp_path):
    old = invoice(D20, day="2026-11-19", time="23:59:59")  # 48 h + 1 s before as_of 2026-11-22 00:00
    fresh = invoice(D20B, day="2026-11-20", time="00:00:01")  # inside the grace period
    keep = invoice("00012345", code=CODE)
    got, rows = findings(mem_con, make_night([keep], {"erp": [old, fresh, keep]}), tmp_path)
    assert got == {
        ("MISSING_IN_REGISTRY", "", D20, "", "erp"),
        ("PENDING_SYNC", "", D20B, "", "erp"),
    }
    assert all(r["finding_status"] == "new" and r["age_days"] == 0 for r in rows)


def test_grace_period_is_configuration(make_night, mem_con, tmp_path):
    fresh = invoice(D20B, day="2026-11-20", time="00:00:01")
    keep = invoice("00012345", code=CODE)
    cfg = Config(sync_grace_hours=12)
    got, _ = findings(mem_con, make_night([keep], {"erp": [fresh, keep]}), tmp_path, cfg)
    assert got == {("MISSING_IN_REGISTRY", "", D20B, "", "erp")}


def test_missing_in_issuer_only_for_monitored_sellers(make_night, mem_con, tmp_path):
    ours = invoice(D20)
    purchase = invoice(D20B, seller=OUTSIDER)  # a purchase invoice of another seller: out of scope
    keep = invoice("00012345", code=CODE)
    got, _ = findings(mem_con, make_night([ours, purchase, keep], {"erp": [keep]}), tmp_path)
    assert got == {("MISSING_IN_ISSUER", "", D20, "", "registry")}
    # Configured monitored sellers replace the default.
    got, _ = findings(
        mem_con,
        make_night([ours, purchase, keep], {"erp": [keep]}),
        tmp_path,
        Config(monitored_sellers=(OUTSIDER,)),
    )
    assert got == {("MISSING_IN_ISSUER", "", D20B, "", "registry")}


def test_duplicates_in_source_and_across_issuers(make_night, mem_con, tmp_path):
    a, b = invoice(D20), invoice("00012345", code=CODE)
    landing = make_night([a, b, b], {"erp": [a, a, b], "pos": [a]})
    got, rows = findings(mem_con, landing, tmp_path)
    assert got == {
        ("DUPLICATE_IN_SOURCE", "", D20, "", "erp"),
        ("DUPLICATE_IN_SOURCE", CODE, "00012345", "", "registry"),
        ("DUPLICATE_ACROSS_ISSUERS", "", D20, "", "erp,pos"),
    }
    dup = next(r for r in rows if r["category"] == "DUPLICATE_IN_SOURCE" and r["source_system"] == "erp")
    assert "2 records" in dup["detail"] and "erp.csv:2" in dup["detail"] and "erp.csv:3" in dup["detail"]


def test_duplicates_do_not_multiply_rows(make_night, mem_con, tmp_path):
    a = invoice(D20)
    changed = invoice(D20, amount="1100.00")
    got, rows = findings(mem_con, make_night([changed] * 3, {"erp": [a] * 4}), tmp_path)
    mismatches = [r for r in rows if r["category"] == "FIELD_MISMATCH"]
    assert sorted(r["field"] for r in mismatches) == ["amount", "tax_amount", "total_amount"]


def test_field_mismatch_one_row_per_field(make_night, mem_con, tmp_path):
    issued = invoice(D20)
    registry = invoice(
        D20,
        amount="1100.00",
        day="2026-11-17",
        buyer_name="北京丁有限公司",
        buyer_tax_id=SELLER_B,
        seller=SELLER_A,
        invoice_type="数电票（增值税专用发票）",
    )
    got, rows = findings(mem_con, make_night([registry], {"erp": [issued]}), tmp_path)
    assert got == {
        ("FIELD_MISMATCH", "", D20, f, "erp")
        for f in (
            "amount",
            "tax_amount",
            "total_amount",
            "issue_date",
            "buyer_name",
            "buyer_tax_id",
            "invoice_type",
        )
    }
    amount = next(r for r in rows if r["field"] == "amount")
    assert (amount["issuer_value"], amount["registry_value"]) == ("1000.00", "1100.00")
    date_row = next(r for r in rows if r["field"] == "issue_date")
    assert (date_row["issuer_value"], date_row["registry_value"]) == ("2026-11-18", "2026-11-17")


def test_seller_tax_id_mismatch(make_night, mem_con, tmp_path):
    got, _ = findings(mem_con, make_night([invoice(D20, seller=SELLER_B)], {"erp": [invoice(D20)]}), tmp_path)
    assert got == {("FIELD_MISMATCH", "", D20, "seller_tax_id", "erp")}


def test_cosmetic_differences_are_equal(make_night, mem_con, tmp_path):
    issued = invoice(D20, buyer_name="北京丙贸易（中国）有限公司")
    registry = dict(issued)
    registry.update(
        invoice_number="２６１１０００００００００００００００１",  # full-width digits
        buyer_tax_id=" " + BUYER_C.lower() + " ",
        buyer_name="  北京丙贸易(中国)有限公司 ",
        amount="1,000.00",
        tax_amount="130.004",
        total_amount="1130",
        issue_time="2026/11/18 10:00",
        invoice_type="数电票(普通发票)",
        status="正常",
    )
    got, _ = findings(mem_con, make_night([registry], {"erp": [issued]}), tmp_path)
    assert got == set()


def test_amount_tolerance(make_night, mem_con, tmp_path):
    registry = invoice(D20, amount="1000.01", tax="130.00", total="1130.01")
    issued = invoice(D20, amount="1000.00", tax="130.00", total="1130.00")
    landing = make_night([registry], {"erp": [issued]})
    got, _ = findings(mem_con, landing, tmp_path)
    assert ("FIELD_MISMATCH", "", D20, "amount", "erp") in got
    got, _ = findings(
        mem_con, landing, tmp_path, Config(amount_tolerance=__import__("decimal").Decimal("0.01"))
    )
    assert got == set()


def test_status_mismatch_and_registry_risk(make_night, mem_con, tmp_path):
    a, b, c = invoice(D20), invoice(D20B), invoice("00012345", code=CODE)
    reg = [dict(a, status="作废"), dict(b, status="失控"), dict(c, status="异常")]
    got, rows = findings(mem_con, make_night(reg, {"erp": [a, b, c]}), tmp_path)
    assert got == {
        ("STATUS_MISMATCH", "", D20, "status", "erp"),
        ("REGISTRY_RISK", "", D20B, "status", "registry"),
        ("REGISTRY_RISK", CODE, "00012345", "status", "registry"),
    }
    sm = next(r for r in rows if r["category"] == "STATUS_MISMATCH")
    assert (sm["issuer_value"], sm["registry_value"]) == ("normal", "voided")


def test_invalid_records(make_night, mem_con, tmp_path):
    bad_sum = invoice(D20, total="1200.00")
    bad_rate = invoice(D20B, tax="140.00", total="1140.00")
    bad_buyer = invoice("26110000000000000003", buyer_tax_id=BUYER_C[:-1] + "1")
    short = invoice("0001234", code=CODE)  # a legacy number missing a digit
    bad_code = invoice("00012346", code="0110026")
    issuers = [bad_sum, bad_rate, bad_buyer, short, bad_code]
    registry = [bad_sum, bad_rate, bad_buyer, bad_code, invoice("00012345", code=CODE)]
    got, _ = findings(mem_con, make_night(registry, {"erp": issuers}), tmp_path)
    invalid = {g for g in got if g[0] == "INVALID_RECORD"}
    assert invalid == {
        ("INVALID_RECORD", "", D20, "total_amount", "erp"),
        ("INVALID_RECORD", "", D20, "total_amount", "registry"),
        ("INVALID_RECORD", "", D20B, "tax_amount", "erp"),
        ("INVALID_RECORD", "", D20B, "tax_amount", "registry"),
        ("INVALID_RECORD", "", "26110000000000000003", "buyer_tax_id", "erp"),
        ("INVALID_RECORD", "", "26110000000000000003", "buyer_tax_id", "registry"),
        ("INVALID_RECORD", CODE, "0001234", "invoice_number", "erp"),
        ("INVALID_RECORD", "0110026", "00012346", "invoice_code", "erp"),
        ("INVALID_RECORD", "0110026", "00012346", "invoice_code", "registry"),
    }
    # The typo also leaves the invoice missing on both sides, and the two are named as a probable match.
    _, rows = findings(mem_con, make_night(registry, {"erp": issuers}), tmp_path)
    missing = {r["category"]: r for r in rows if r["category"].startswith("MISSING")}
    assert missing["MISSING_IN_REGISTRY"]["suggested_match"] == f"{CODE}-00012345"
    assert missing["MISSING_IN_ISSUER"]["suggested_match"] == f"{CODE}-0001234"


def test_rate_rule_within_tolerance_does_not_fire(make_night, mem_con, tmp_path):
    inv = invoice(D20, amount="999.99", tax="130.05", total="1130.04")  # off by 0.0513 < 0.06
    got, _ = findings(mem_con, make_night([inv], {"erp": [inv]}), tmp_path)
    assert got == set()


def test_red_invoices(make_night, mem_con, tmp_path):
    blue = invoice(D20, status="red_reversed")
    red_ok = invoice("26110000000000000011", amount="-1000.00", remark=f"被红冲蓝字数电票号码：{D20}")
    red_orphan = invoice(
        "26110000000000000012", amount="-50.00", original_invoice_number="26119999999999999999"
    )
    blue2 = invoice("00012345", code=CODE, amount="100.00", status="partly_red_reversed")
    red_over = invoice(
        "00054321", code=CODE, amount="-120.00", remark=f"对应正数发票代码:{CODE}号码:00012345"
    )
    rows = [blue, red_ok, red_orphan, blue2, red_over]
    got, details = findings(mem_con, make_night(rows, {"erp": rows}), tmp_path)
    assert got == {
        ("ORPHAN_RED_INVOICE", "", "26110000000000000012", "", "erp"),
        ("ORPHAN_RED_INVOICE", CODE, "00054321", "", "erp"),
    }
    over = next(r for r in details if r["invoice_number"] == "00054321")
    assert "exceed" in over["detail"]


def test_window_excludes_old_invoices_from_missing(make_night, mem_con, tmp_path):
    old = invoice(D20, day="2026-11-10")  # before the 7-day window [11-15, 11-21]
    keep = invoice(D20B)
    got, _ = findings(mem_con, make_night([keep], {"erp": [old, keep]}), tmp_path)
    assert got == set()


def test_shards_give_identical_findings(make_night, mem_con, tmp_path):
    rows = [invoice(f"2611000000000000{i:04d}", amount=f"{100 + i}.00") for i in range(60)]
    registry = rows[5:] + [invoice("26110000000000009999")]
    registry[3] = dict(registry[3], amount="1.00")
    landing = make_night(registry, {"erp": rows[:40], "pos": rows[30:]})
    one, _ = findings(mem_con, landing, tmp_path, Config(shards=1))
    eight, _ = findings(mem_con, landing, tmp_path, Config(shards=8))
    assert one == eight and len(one) > 10


def test_new_open_resolved_across_nights(make_night, mem_con, tmp_path):
    landing = tmp_path / "landing"
    cfg = Config()
    a, b, c = invoice(D20, day="2026-11-19"), invoice(D20B, day="2026-11-19"), invoice("00012345", code=CODE)
    fresh = invoice("26110000000000000005", day="2026-11-21", time="08:00:00")
    # Night 1: a missing, fresh pending, b mismatched.
    make_night(
        [dict(b, buyer_name="X"), c], {"erp": [a, b, c, fresh]}, night=date(2026, 11, 21), landing=landing
    )
    # Night 2: a still missing, b fixed, fresh still pending -> missing on night 3.
    make_night([b, c], {"erp": [a, b, c, fresh]}, night=date(2026, 11, 22), landing=landing)
    make_night([b, c], {"erp": [a, b, c, fresh]}, night=date(2026, 11, 23), landing=landing)
    statuses = {}
    for n in (date(2026, 11, 21), date(2026, 11, 22), date(2026, 11, 23)):
        ingest_night(mem_con, landing, n, cfg, tmp_path / "tmp")
        reconcile_night(mem_con, n, cfg)
        mem_con.execute("INSERT INTO runs VALUES (?, 'r', now(), now(), 'passed', true, '{}')", [n])
        statuses[n] = {
            (r["category"], r["invoice_number"]): (r["finding_status"], r["first_seen"], r["age_days"])
            for r in fetch_findings(mem_con, n).to_pylist()
        }
        if n == date(2026, 11, 22):
            resolved = fetch_resolved(mem_con, n, cfg).to_pylist()
    n1, n2, n3 = statuses.values()
    assert n1[("MISSING_IN_REGISTRY", D20)][0] == "new"
    assert n2[("MISSING_IN_REGISTRY", D20)] == ("open", date(2026, 11, 21), 1)
    assert n3[("MISSING_IN_REGISTRY", D20)] == ("open", date(2026, 11, 21), 2)
    assert n1[("PENDING_SYNC", "26110000000000000005")][0] == "new"
    # The pending invoice outlived the grace period: now missing, first seen kept.
    assert n3[("MISSING_IN_REGISTRY", "26110000000000000005")] == ("open", date(2026, 11, 21), 2)
    assert [(r["category"], r["invoice_number"], r["finding_status"]) for r in resolved] == [
        ("FIELD_MISMATCH", D20B, "resolved")
    ]


@pytest.mark.parametrize("as_of", ["2026-11-21T12:00:00+08:00"])
def test_as_of_is_configuration(make_night, mem_con, tmp_path, as_of):
    inv = invoice(D20, day="2026-11-19", time="13:00:00")
    keep = invoice(D20B)
    cfg = replace(Config(), as_of=datetime.fromisoformat(as_of).astimezone(SHANGHAI))
    got, _ = findings(mem_con, make_night([keep], {"erp": [inv, keep]}), tmp_path, cfg)
    assert got == {("PENDING_SYNC", "", D20, "", "erp")}
