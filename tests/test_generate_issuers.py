"""The generator's issuing systems with issuance and upload states, as they really export (DESIGN.md,
"Issuing systems as they really export"): a 税控 query export (taxctl), a shop's invoicing API (shopapi)
and a batch-invoicing template (batch), and the configuration a night of theirs needs.

The files are read back with plain pandas, json and openpyxl; the states are mapped with the words of the
contract written out in test_generate.py, not with the product's vocabulary (except where a test checks
that the two agree)."""

from __future__ import annotations

import json
import re
import tomllib
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest
from stdnum.cn import uscc

from fapiao_audit.config import load_config
from fapiao_audit.generate import (
    BATCH_COLUMNS,
    EXPECTED_COLUMNS,
    ISSUER_SYSTEMS,
    SHOPAPI_FIELDS,
    SOURCES_TOML,
    TAXCTL_COLUMNS,
    TAXCTL_STATUS_CODES,
    TAXCTL_UPLOAD_CODES,
    GenerateResult,
    generate_night,
)
from fapiao_audit.model import MISSING_CAUSES, STATUS_WORDS
from fapiao_audit.model import UPLOAD_WORDS as MODEL_UPLOAD_WORDS
from test_generate import (
    CAUSE_OF_UPLOAD,
    ISSUANCE_WORDS,
    UPLOAD_WORDS,
    RealNight,
    _expected_keys,
    _issuer_records,
    read_expected,
    read_real,
)

ROOT = Path(__file__).resolve().parents[1]
NIGHT = date(2026, 3, 10)
ROWS = 2000
SEED = 11
STATE_SYSTEMS = ("taxctl", "shopapi", "batch")


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> GenerateResult:
    return generate_night(tmp_path_factory.mktemp("issuers"), NIGHT, rows=ROWS, seed=SEED)


@pytest.fixture(scope="module")
def rn(real: GenerateResult) -> RealNight:
    return read_real(real)


def _window_times(times: list[str]) -> None:
    start = (NIGHT - timedelta(days=6)).isoformat()
    assert all(start <= t[:10] <= NIGHT.isoformat() for t in times)


# --------------------------------------------------------------------------- the configuration


def test_sources_toml_is_what_the_product_loads(tmp_path: Path) -> None:
    path = tmp_path / "fapiao-audit.toml"
    path.write_text(SOURCES_TOML, encoding="utf-8")
    cfg = load_config(path)
    assert cfg.value_maps == {"taxctl": {"status": TAXCTL_STATUS_CODES, "upload_status": TAXCTL_UPLOAD_CODES}}
    assert cfg.ignore_columns == {"shopapi": ("invoiceType",)}
    assert cfg.column_mappings == {"taxctl": {}, "shopapi": {}}


def test_the_codes_mean_what_the_contract_says() -> None:
    """Each code's word is a word of the contract, and the product's vocabulary reads it the same way."""
    assert {c: ISSUANCE_WORDS[w] for c, w in TAXCTL_STATUS_CODES.items()} == {
        "0": "normal", "1": "issuing", "2": "failed", "3": "voided"}  # fmt: skip
    assert {c: UPLOAD_WORDS[w] for c, w in TAXCTL_UPLOAD_CODES.items()} == {
        "0": "not_uploaded", "1": "uploaded", "2": "failed", "3": "signature_failed", "4": "uploading"}  # fmt: skip
    for word, state in ISSUANCE_WORDS.items():
        assert word in STATUS_WORDS[state], word
    for word, state in UPLOAD_WORDS.items():
        assert word in MODEL_UPLOAD_WORDS[state], word
    assert set(CAUSE_OF_UPLOAD.values()) | {"stuck_issuing", "issuing"} == set(MISSING_CAUSES)


def test_config_example_shows_the_same_tables() -> None:
    """config.example.toml carries SOURCES_TOML, commented out (the example file is the defaults)."""
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    first = "# " + SOURCES_TOML.splitlines()[0]
    lines = text.splitlines()
    start = lines.index(first)
    block = [
        line[2:] if line.startswith("# ") else line[1:]
        for line in lines[start : start + len(SOURCES_TOML.splitlines())]
    ]
    assert "\n".join(block) + "\n" == SOURCES_TOML
    assert tomllib.loads("\n".join(block)) == tomllib.loads(SOURCES_TOML)


# --------------------------------------------------------------------------- the three exports


def test_taxctl_is_a_gb18030_query_export_with_pinyin_headers(real: GenerateResult, rn: RealNight) -> None:
    (path,) = sorted((real.night_dir / "issuers" / "taxctl").glob("*.csv"))
    raw = path.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert raw.decode("gb18030").split("\n", 1)[0].rstrip("\r").split(",") == list(TAXCTL_COLUMNS)
    t = rn.taxctl
    assert len(t) == real.rows_per_source["taxctl"]
    legacy, digital = t[t["zzfphm"] == ""], t[t["zzfphm"] != ""]
    assert len(legacy) and len(digital)
    assert (
        legacy["fpdm"].str.fullmatch(r"\d{10}|\d{12}").all()
        and legacy["fphm"].str.fullmatch(r"\d{7,8}").all()
    )
    assert (legacy["fphm"].str.len() == 7).any()  # a key typo (INVALID_RECORD) also lands here
    assert digital["zzfphm"].str.fullmatch(r"\d{20}").all() and (digital["fpdm"] == "").all()
    # some 数电 rows carry an 8-digit number beside the 20-digit one (its last eight digits)
    both = digital[digital["fphm"] != ""]
    assert len(both) >= 7 and (both["fphm"] == both["zzfphm"].str[-8:]).all()
    # 2026.03.05 10:11:12, or a date only
    assert t["kprq"].str.fullmatch(r"\d{4}\.\d{2}\.\d{2}( \d{2}:\d{2}:\d{2})?").all()
    assert (t["kprq"].str.len() == 10).any() and (t["kprq"].str.len() == 19).any()
    _window_times(list(t["issue_time"]))
    assert set(t["开票状态"]) == set(TAXCTL_STATUS_CODES)  # 0..3, voided (作废中) included
    assert set(t["bszt"]) == set(TAXCTL_UPLOAD_CODES)
    for column in ("hjje", "hjse", "jshj"):
        raw_amounts = [
            r.split(",")[TAXCTL_COLUMNS.index(column)] for r in raw.decode("gb18030").splitlines()[1:]
        ]
        assert all(re.fullmatch(r"\d+\.\d{2}", a) for a in raw_amounts), column
    assert all(uscc.is_valid(s) for s in t["xfsh"])


def test_shopapi_is_api_style_json_lines(real: GenerateResult, rn: RealNight) -> None:
    (path,) = sorted((real.night_dir / "issuers" / "shopapi").glob("*.jsonl"))
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == real.rows_per_source["shopapi"]
    assert all(list(r) == list(SHOPAPI_FIELDS) for r in records)
    assert all(re.fullmatch(r"\d{20}", r["allElectronicInvoiceNumber"]) for r in records)
    # epoch milliseconds, an instant: in Beijing time, inside the window and the working day
    assert all(isinstance(r["invoiceTime"], int) and len(str(r["invoiceTime"])) == 13 for r in records)
    times = list(rn.shopapi["issue_time"])
    _window_times(times)
    assert all("07:00:00" <= t[11:] <= "23:00:00" for t in times)
    assert {r["invoiceType"] for r in records} == {"1"}  # a blue/red flag, not a kind
    assert all(isinstance(r[k], str) and re.fullmatch(r"\d+\.\d{2}", r[k])
               for r in records for k in ("exTaxAmount", "taxAmount", "orderAmount"))  # fmt: skip
    assert {r["status"] for r in records} == {"开票完成", "开票中", "开票失败", "签章失败"}
    assert {r["上传状态"] for r in records} == {"已上传", "未上传", "上传失败"}
    assert all(r["payerName"] for r in records)
    assert any(r["payerTaxNo"] == "" for r in records)  # an individual buyer


def test_batch_is_a_template_with_instruction_rows(real: GenerateResult, rn: RealNight) -> None:
    rows = rn.batch_rows
    h = next(i for i, r in enumerate(rows) if r[0] == "单据编号*")
    assert 2 <= h <= 4 and rows[0][0].startswith("填表说明：带*为必填项")
    assert (
        json.loads((real.night_dir / "generation.json").read_text(encoding="utf-8"))["batch_instruction_rows"]
        == h
    )
    assert list(rows[h]) == list(BATCH_COLUMNS)
    b = rn.batch
    assert len(b) == real.rows_per_source["batch"]
    assert b["单据编号*"].str.fullmatch(r"XS\d{13}(-1)?").all()
    assert not set(b["单据编号*"]) & set(b["发票号码*"])  # a document number, never the invoice number
    assert b["发票号码*"].str.fullmatch(r"\d{7,8}|\d{20}").all()
    assert ((b["发票代码"] == "") == (b["发票号码*"].str.len() == 20)).all()
    assert b["开票日期*"].str.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}").all()
    _window_times(list(b["issue_time"]))
    i = BATCH_COLUMNS.index("合计金额*")
    assert all(isinstance(r[i], int | float) for r in rows[h + 1 :])  # numbers, as a spreadsheet holds them
    assert set(b["发票状态"]) == {"开票成功", "已开具", "签章中", "签章失败", "开票失败"}
    assert set(b["报送状态"]) == {"已报送", "未报送", "报送中", "报送失败", "验签失败"}


def test_the_template_rows_vary_with_the_night(tmp_path: Path) -> None:
    counts = set()
    for day in range(3):
        res = generate_night(tmp_path / str(day), NIGHT + timedelta(days=day), rows=600, seed=SEED)
        counts.add(
            json.loads((res.night_dir / "generation.json").read_text(encoding="utf-8"))[
                "batch_instruction_rows"
            ]
        )
    assert counts == {2, 3, 4}


def test_shares_of_the_issuer_rows(real: GenerateResult, rn: RealNight) -> None:
    issuers = _issuer_records(rn)
    share = issuers.groupby("system").size() / len(issuers)
    assert set(share.index) == set(ISSUER_SYSTEMS)
    assert 0.08 < share["taxctl"] < 0.16 and 0.04 < share["shopapi"] < 0.1 and 0.05 < share["batch"] < 0.12
    assert 0.2 < share["taxctl"] + share["shopapi"] + share["batch"] < 0.35


# --------------------------------------------------------------------------- states and their findings


def test_expected_file_has_a_cause_on_missing_invoices_only(real: GenerateResult, rn: RealNight) -> None:
    header = real.expected_path.read_text(encoding="utf-8").split("\n", 1)[0]
    assert header.split(",") == list(EXPECTED_COLUMNS)
    e = rn.expected
    missing = e["category"].isin(["MISSING_IN_REGISTRY", "PENDING_SYNC"])
    assert (e.loc[missing, "cause"] != "").all() and (e.loc[~missing, "cause"] == "").all()
    assert set(e.loc[e["category"] == "MISSING_IN_REGISTRY", "cause"]) == {
        "not_uploaded", "uploading", "upload_failed", "signature_failed", "stuck_issuing", "uploaded_but_absent",
        "unknown"}  # fmt: skip
    assert "issuing" in set(e.loc[e["category"] == "PENDING_SYNC", "cause"])
    assert real.causes == dict(Counter(e.loc[missing, "cause"]))
    # unknown: the systems without an upload state; every other cause: the three with one
    assert set(e.loc[missing & (e["cause"] == "unknown"), "source_system"]) <= {"erp", "pos", "webshop"}
    assert set(e.loc[missing & (e["cause"] != "unknown"), "source_system"]) == set(STATE_SYSTEMS)
    # each cause from each system whose export has its word
    seen = set(zip(e.loc[missing, "cause"], e.loc[missing, "source_system"], strict=True))
    for system in STATE_SYSTEMS:
        assert {("not_uploaded", system), ("upload_failed", system), ("uploaded_but_absent", system)} <= seen
    assert {("uploading", "taxctl"), ("uploading", "batch"), ("signature_failed", "taxctl"),
            ("signature_failed", "batch")} <= seen  # fmt: skip


def test_failed_issuance_is_not_issued_or_a_status_mismatch(rn: RealNight) -> None:
    e = rn.expected
    issuers = _issuer_records(rn)
    registry = set(rn.invoices["key"])
    failed = issuers[issuers["state"] == "failed"]
    absent = failed[~failed["key"].isin(registry)]
    present = failed[failed["key"].isin(registry)]
    assert len(absent) >= 7 and len(present) >= 7
    assert set(absent["system"]) == set(present["system"]) == set(STATE_SYSTEMS)
    assert set(absent["key"]) == _expected_keys(e, "NOT_ISSUED")
    not_issued = e[e["category"] == "NOT_ISSUED"]
    assert (not_issued["field"] == "").all() and (not_issued["cause"] == "").all()
    keys = zip(not_issued["invoice_code"], not_issued["invoice_number"], strict=True)
    assert set(zip(keys, not_issued["source_system"], strict=True)) == set(
        zip(absent["key"], absent["system"], strict=True))  # fmt: skip
    # held by the registry (正常 there): a STATUS_MISMATCH, nothing else, and no NOT_ISSUED
    assert set(present["key"]) <= _expected_keys(e, "STATUS_MISMATCH", "status")
    reg_status = dict(zip(rn.invoices["key"], rn.invoices["发票状态"], strict=True))
    assert {reg_status[k] for k in present["key"]} == {"正常"}
    others = e[e[["invoice_code", "invoice_number"]].apply(tuple, axis=1).isin(set(present["key"]))]
    assert set(others["category"]) == {"STATUS_MISMATCH"}


def test_issuing_in_the_registry_is_no_finding_and_stuck_issuing_is_missing(rn: RealNight) -> None:
    e = rn.expected
    issuers = _issuer_records(rn)
    registry = set(rn.invoices["key"])
    issuing = issuers[issuers["state"] == "issuing"]
    present = issuing[issuing["key"].isin(registry)]
    assert len(present) >= 7 and set(present["system"]) == set(STATE_SYSTEMS)
    keys = set(zip(e["invoice_code"], e["invoice_number"], strict=True))
    assert not set(present["key"]) & keys
    stuck = issuing[~issuing["key"].isin(registry)]
    absent = _expected_keys(e, "MISSING_IN_REGISTRY") | _expected_keys(e, "PENDING_SYNC")
    assert len(stuck) >= 7 and set(stuck["key"]) <= absent
    causes = e[e[["invoice_code", "invoice_number"]].apply(tuple, axis=1).isin(set(stuck["key"]))]
    assert set(zip(causes["category"], causes["cause"], strict=True)) == {("MISSING_IN_REGISTRY", "stuck_issuing"),
                                                             ("PENDING_SYNC", "issuing")}  # fmt: skip


def test_clean_rows_of_each_system_and_both_numbers_make_no_finding(rn: RealNight) -> None:
    """Normal invoices are uploaded and in the registry; most rows of each system have no finding at all,
    the taxctl rows with two numbers included."""
    e = rn.expected
    keys = set(zip(e["invoice_code"], e["invoice_number"], strict=True))
    registry = set(rn.invoices["key"])
    issuers = _issuer_records(rn)
    for system in STATE_SYSTEMS:
        mine = issuers[issuers["system"] == system]
        clean = mine[~mine["key"].isin(keys)]
        assert len(clean) > 0.7 * len(mine), system
        assert clean["key"].isin(registry).all()
        # uploaded, but for an invoice still issuing that the registry holds already (no status to compare)
        issuing = clean["state"] == "issuing"
        assert issuing.any() and (clean.loc[~issuing, "upload"] == "uploaded").all()
        assert clean.loc[~issuing, "state"].isin(["normal", "voided"]).all()
        normal = mine[mine["state"] == "normal"]
        assert (normal.loc[normal["key"].isin(registry), "upload"] == "uploaded").mean() > 0.95
    t = rn.taxctl
    both = t[(t["fphm"] != "") & (t["zzfphm"] != "")]
    both_keys = set(both["key"])
    assert (
        both_keys & registry and both_keys - keys
    )  # clean ones, found in the registry under the 20-digit key
    assert (
        not {(c, n) for c, n in zip(both["fpdm"], both["fphm"], strict=True)} & keys
    )  # never the 8-digit one
    # every day has a clean invoice in each system (its first anchors)
    for system in STATE_SYSTEMS:
        mine = issuers[(issuers["system"] == system) & ~issuers["key"].isin(keys)]
        assert len({t[:10] for t in mine["issue_time"]}) == 7, system


def test_defects_reach_the_new_systems(rn: RealNight) -> None:
    e = rn.expected
    new = e[e["source_system"].isin(STATE_SYSTEMS)]
    found = set(zip(new["category"], new["field"], strict=True))
    assert {("FIELD_MISMATCH", "amount"), ("FIELD_MISMATCH", "issue_date"), ("INVALID_RECORD", "total_amount"),
            ("DUPLICATE_IN_SOURCE", ""), ("NOT_ISSUED", ""), ("STATUS_MISMATCH", "status"),
            ("MISSING_IN_REGISTRY", ""), ("PENDING_SYNC", "")} <= found  # fmt: skip
    # but never one a system cannot show: no type, rate or remark column; no buyer name in taxctl and batch
    assert ("FIELD_MISMATCH", "invoice_type") not in found and ("INVALID_RECORD", "tax_amount") not in found
    assert not set(new["category"]) & {"ORPHAN_RED_INVOICE", "DUPLICATE_ACROSS_ISSUERS"}
    assert set(new.loc[new["field"] == "buyer_name", "source_system"]) <= {"shopapi"}


def test_date_only_times_count_from_midnight(rn: RealNight) -> None:
    """taxctl's date-only kprq is midnight: an absent one is missing once midnight is longer ago than the
    grace period (48 h before as_of = the start of the night's previous day); midnight of that day itself
    is exactly 48 h ago, not longer: pending."""
    e = rn.expected
    t = rn.taxctl
    dated = t[t["kprq"].str.len() == 10]
    registry = set(rn.invoices["key"])
    absent = dated[~dated["key"].isin(registry) & (dated["state"] != "failed")]
    cutoff = (NIGHT - timedelta(days=1)).strftime("%Y.%m.%d")
    for key, kprq in zip(absent["key"], absent["kprq"], strict=True):
        category = "PENDING_SYNC" if kprq >= cutoff else "MISSING_IN_REGISTRY"
        assert key in _expected_keys(e, category, None, "taxctl"), (key, kprq)
    assert len(absent)


def test_flat_layout_has_none_of_it(tmp_path: Path) -> None:
    flat = generate_night(tmp_path, NIGHT, rows=ROWS, seed=SEED, layout="flat")
    assert sorted(p.name for p in (flat.night_dir / "issuers").iterdir()) == ["erp", "pos", "webshop"]
    assert read_expected(flat.expected_path).columns.tolist() == list(EXPECTED_COLUMNS[:5])
    assert flat.counts["NOT_ISSUED"] == 0 and flat.causes == {}


def test_same_arguments_same_bytes_for_the_new_files(real: GenerateResult, tmp_path: Path) -> None:
    again = generate_night(tmp_path, NIGHT, rows=ROWS, seed=SEED)
    for system in STATE_SYSTEMS:
        for p in (real.night_dir / "issuers" / system).iterdir():
            assert (again.night_dir / "issuers" / system / p.name).read_bytes() == p.read_bytes()


def test_smallest_night_still_has_every_state(tmp_path: Path) -> None:
    """At 500 invoices (about the smallest a 7-day window takes) every cause, NOT_ISSUED and the three
    systems are there."""
    res = generate_night(tmp_path, NIGHT, rows=500, seed=3)
    e = read_expected(res.expected_path)
    assert res.counts["NOT_ISSUED"] >= 3
    assert {"not_uploaded", "uploading", "upload_failed", "signature_failed", "stuck_issuing",
            "uploaded_but_absent", "unknown"} <= set(res.causes)  # fmt: skip
    assert all(res.rows_per_source[s] >= 7 for s in STATE_SYSTEMS)
    assert set(e.loc[e["category"] == "NOT_ISSUED", "source_system"]) <= set(STATE_SYSTEMS)
    with pytest.raises(ValueError, match="too small"):
        generate_night(tmp_path / "x", NIGHT, rows=480, seed=3)
