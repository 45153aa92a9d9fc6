"""Tests of the synthetic night generator, in both layouts.

The first part pins the flat layout (one row per invoice everywhere: what the benchmarks use); the
second checks the real layout (the default: the registry's two-sheet workbook with invoice lines, an
ERP line file, a third-party tool's GBK export). Besides layout and determinism, both re-derive
expected findings independently from the written files (plain pandas and openpyxl, no generator
internals), so a generator bug cannot hide behind its own logic.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import tomllib
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import openpyxl
import pandas as pd
import pyarrow.parquet as pq
import pytest
from stdnum.cn import uscc

from fapiao_audit import generate as generate_module
from fapiao_audit.generate import (
    ERP_LINE_COLUMNS,
    FLAT_EXPECTED_COLUMNS,
    FLAT_ISSUER_SYSTEMS,
    ISSUER_COLUMNS,
    ISSUER_SYSTEMS,
    LAYOUTS,
    POS_COLUMNS,
    REGISTRY_COLUMNS,
    REGISTRY_LINE_COLUMNS,
    GenerateResult,
    generate_night,
)
from fapiao_audit.model import CATEGORY_CODES

#: The flat layout's systems have no issuance state: a failed issuance (NOT_ISSUED) is the real layout's.
FLAT_CATEGORIES = tuple(c for c in CATEGORY_CODES if c != "NOT_ISSUED")

NIGHT = date(2026, 3, 10)
ROWS = 2000
SEED = 11
ISSUER_HEADER = [  # the contract's canonical names, in file order
    "invoice_code", "invoice_number", "invoice_type", "issue_time", "seller_tax_id", "seller_name",
    "buyer_tax_id", "buyer_name", "amount", "tax_amount", "tax_rate", "total_amount", "status",
    "original_invoice_number", "remark",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# fixtures and readers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> GenerateResult:
    return generate_night(tmp_path_factory.mktemp("land"), NIGHT, rows=ROWS, seed=SEED, layout="flat")


@pytest.fixture(scope="module")
def next_night(night: GenerateResult) -> GenerateResult:
    return generate_night(
        night.night_dir.parent, NIGHT + timedelta(days=1), rows=ROWS, seed=SEED, layout="flat"
    )


def _sha256_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return str(value)


def read_issuers(night_dir: Path) -> pd.DataFrame:
    """All issuer rows as text, issue_time as naive Asia/Shanghai ``YYYY-MM-DD HH:MM:SS``."""
    frames = []
    for path in sorted((night_dir / "issuers" / "erp").glob("*.parquet")):
        df = pq.read_table(path).to_pandas()
        df["issue_time"] = df["issue_time"].dt.tz_convert("Asia/Shanghai").dt.strftime("%Y-%m-%d %H:%M:%S")
        for col in ("amount", "tax_amount", "total_amount", "tax_rate"):
            df[col] = df[col].map(lambda x: f"{x:.2f}")
        frames.append(df.map(_text).assign(system="erp", file=path.name))
    for path in sorted((night_dir / "issuers" / "pos").glob("*.csv")):
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        frames.append(df.assign(system="pos", file=path.name))
    for path in sorted((night_dir / "issuers" / "webshop").glob("*.jsonl")):
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        df = pd.DataFrame.from_records(records).map(_text)
        df["issue_time"] = df["issue_time"].map(
            lambda s: datetime.fromisoformat(s).astimezone(_SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
        )
        frames.append(df.assign(system="webshop", file=path.name))
    return pd.concat(frames, ignore_index=True)


def read_registry(night_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """Registry data rows (as text) and the totals row."""
    (path,) = sorted((night_dir / "registry").glob("*.csv"))
    df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="gb18030")
    totals = df.iloc[-1].tolist()
    return df.iloc[:-1].reset_index(drop=True), totals


def registry_keys(reg: pd.DataFrame) -> pd.DataFrame:
    number = reg["发票号码"].where(reg["发票号码"] != "", reg["数电发票号码"])
    return pd.DataFrame({"invoice_code": reg["发票代码"], "invoice_number": number})


def read_expected(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


_SHANGHAI = timezone(timedelta(hours=8))  # Asia/Shanghai has had no DST since 1991


def _rows_of(
    df: pd.DataFrame, category: str, columns: tuple[str, ...] = FLAT_EXPECTED_COLUMNS
) -> set[tuple[str, ...]]:
    sub = df[df["category"] == category]
    return set(map(tuple, sub[list(columns)].itertuples(index=False, name=None)))


# ---------------------------------------------------------------------------------------------
# determinism and replacement
# ---------------------------------------------------------------------------------------------


def test_same_arguments_give_byte_identical_files(night: GenerateResult, tmp_path: Path) -> None:
    again = generate_night(tmp_path, NIGHT, rows=ROWS, seed=SEED, layout="flat")
    assert _sha256_tree(again.night_dir) == _sha256_tree(night.night_dir)
    assert again.counts == night.counts and again.rows_per_source == night.rows_per_source


def test_rerun_replaces_the_night_folder(tmp_path: Path) -> None:
    first = generate_night(tmp_path, NIGHT, rows=ROWS, seed=3, layout="flat")
    (first.night_dir / "stray.txt").write_text("left over", encoding="utf-8")
    second = generate_night(tmp_path, NIGHT, rows=ROWS, seed=4)  # the real layout replaces it just the same
    assert second.night_dir == first.night_dir
    assert not (second.night_dir / "stray.txt").exists()
    assert json.loads((second.night_dir / "generation.json").read_text(encoding="utf-8"))["seed"] == 4
    assert [p.name for p in tmp_path.iterdir()] == [NIGHT.isoformat()]  # no temp folders left behind


def test_other_seed_gives_other_data(night: GenerateResult, tmp_path: Path) -> None:
    other = generate_night(tmp_path, NIGHT, rows=ROWS, seed=SEED + 1, layout="flat")
    assert _sha256_tree(other.night_dir) != _sha256_tree(night.night_dir)


def test_too_few_rows_is_refused(tmp_path: Path) -> None:
    for layout in LAYOUTS:
        with pytest.raises(ValueError, match="too small"):
            generate_night(tmp_path, NIGHT, rows=50, layout=layout)
    assert list(tmp_path.iterdir()) == []


def test_unknown_layout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="layout"):
        generate_night(tmp_path, NIGHT, rows=ROWS, layout="wide")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# layout and formats
# ---------------------------------------------------------------------------------------------


def test_layout(night: GenerateResult) -> None:
    d = night.night_dir
    assert d.name == NIGHT.isoformat()
    rel = sorted(p.relative_to(d).as_posix() for p in night.files)
    assert rel == [
        "issuers/erp/erp_part-0.parquet",
        "issuers/erp/erp_part-1.parquet",
        "issuers/pos/pos_invoices.csv",
        "issuers/webshop/webshop_invoices.jsonl",
        f"registry/registry_export_{NIGHT.isoformat()}.csv",
    ]
    assert sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()) == sorted(
        [*rel, "expected_findings.csv", "generation.json"]
    )
    meta = json.loads((d / "generation.json").read_text(encoding="utf-8"))
    assert meta["seed"] == SEED and meta["rows"] == ROWS and meta["night"] == NIGHT.isoformat()
    assert meta["window"] == {"start": "2026-03-04", "end": "2026-03-10", "days": 7}
    assert meta["as_of"] == "2026-03-11T00:00:00+08:00"
    assert meta["counts"] == night.counts
    assert set(night.counts) == set(CATEGORY_CODES)


def test_issuer_formats(night: GenerateResult) -> None:
    d = night.night_dir
    for part in (0, 1):
        schema = pq.read_schema(d / "issuers" / "erp" / f"erp_part-{part}.parquet")
        assert schema.names == ISSUER_HEADER
        assert str(schema.field("issue_time").type).startswith("timestamp[us, tz=")
        for col in ("amount", "tax_amount", "tax_rate", "total_amount"):
            assert str(schema.field(col).type) == "double"
        assert str(schema.field("invoice_number").type) == "string"

    assert list(ISSUER_COLUMNS) == ISSUER_HEADER
    raw = (d / "issuers" / "pos" / "pos_invoices.csv").read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(raw.decode("utf-8").splitlines()))
    assert rows[0] == ISSUER_HEADER
    assert all(len(r) == len(ISSUER_HEADER) for r in rows)
    body = rows[1:]
    assert all(len(r[3]) == 19 and r[3][10] == " " for r in body)  # naive 'YYYY-MM-DD HH:MM:SS'
    assert {r[10] for r in body} <= {"0.13", "0.09", "0.06", "0.03", "0.01"}
    assert all("," not in r[8] and r[8].count(".") == 1 and len(r[8].split(".")[1]) == 2 for r in body)

    lines = (d / "issuers" / "webshop" / "webshop_invoices.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert all(list(r) == ISSUER_HEADER for r in records)
    assert all(isinstance(r["amount"], str) and isinstance(r["total_amount"], str) for r in records)
    assert all(r["issue_time"].endswith("+08:00") for r in records)
    assert {r["tax_rate"] for r in records} <= {"13%", "9%", "6%", "3%", "1%"}

    issuers = read_issuers(d)
    counts = issuers.groupby("system").size().to_dict()
    assert counts == {s: night.rows_per_source[s] for s in FLAT_ISSUER_SYSTEMS}
    share = {s: counts[s] / len(issuers) for s in FLAT_ISSUER_SYSTEMS}
    assert 0.4 < share["erp"] < 0.6 and 0.2 < share["pos"] < 0.4 and 0.1 < share["webshop"] < 0.3
    assert 0.9 * ROWS < len(issuers) < 1.1 * ROWS


def test_invoice_kinds_and_keys(night: GenerateResult) -> None:
    issuers = read_issuers(night.night_dir)
    digital = issuers[issuers["invoice_code"] == ""]
    legacy = issuers[issuers["invoice_code"] != ""]
    assert 0.6 < len(digital) / len(issuers) < 0.8
    assert digital["invoice_number"].str.fullmatch(r"\d{2}11\d{16}").all()
    assert legacy["invoice_code"].str.fullmatch(r"01100\d{7}").all()
    # legacy numbers are 8 digits (7 only for the injected key typos) and keep their leading zeros
    assert legacy["invoice_number"].str.fullmatch(r"\d{7,8}").all()
    for system in FLAT_ISSUER_SYSTEMS:
        mine = legacy[legacy["system"] == system]
        assert (mine["invoice_number"].str.len() == 8).any()
        assert mine["invoice_number"].str.startswith("0").any(), system
    assert set(digital["invoice_type"]) == {"数电票（增值税专用发票）", "数电票（普通发票）"}
    assert set(legacy["invoice_type"]) == {"增值税电子普通发票", "增值税专用发票"}

    # money: total = amount + tax except the injected rule violations (checked against expected below)
    for column in ("amount", "tax_amount", "total_amount"):
        assert issuers[column].str.fullmatch(r"-?\d+\.\d{2}").all()
    amount = issuers["amount"].astype(float)
    reds = issuers[amount < 0]
    assert 0.005 < len(reds) / len(issuers) < 0.03
    digital_reds = reds[reds["invoice_code"] == ""]
    assert (digital_reds["original_invoice_number"].str.fullmatch(r"\d{20}")).all()
    assert (
        digital_reds["remark"] == "被红冲蓝字数电票号码：" + digital_reds["original_invoice_number"]
    ).all()
    legacy_reds = reds[reds["invoice_code"] != ""]
    assert legacy_reds["remark"].str.fullmatch(r"对应正数发票代码:\d{12}号码:\d{8}").all()
    statuses = Counter(issuers["status"])
    assert statuses["normal"] / len(issuers) > 0.95
    assert {"red_reversed", "partly_red_reversed", "voided"} <= set(statuses)


def test_registry_format(night: GenerateResult) -> None:
    (path,) = sorted((night.night_dir / "registry").glob("*.csv"))
    raw = path.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = raw.decode("gb18030")
    rows = list(csv.reader(text.splitlines()))
    assert rows[0] == list(REGISTRY_COLUMNS)
    body, totals = rows[1:-1], rows[-1]
    assert all(len(r) == len(REGISTRY_COLUMNS) for r in rows)
    assert [r[0] for r in body] == [str(i) for i in range(1, len(body) + 1)]
    assert len(body) == night.rows_per_source["registry"]
    assert totals[0] == "合计"
    idx = {name: i for i, name in enumerate(REGISTRY_COLUMNS)}
    for column in ("金额", "税额", "价税合计"):
        total = sum(round(float(r[idx[column]].replace(",", "")) * 100) for r in body)
        assert round(float(totals[idx[column]].replace(",", "")) * 100) == total
    assert all(
        cell == ""
        for i, cell in enumerate(totals)
        if REGISTRY_COLUMNS[i] not in ("序号", "金额", "税额", "价税合计")
    )

    reg, _ = read_registry(night.night_dir)
    digital = reg[reg["数电发票号码"] != ""]
    legacy = reg[reg["数电发票号码"] == ""]
    assert (digital["发票代码"] == "").all() and (digital["发票号码"] == "").all()
    assert digital["数电发票号码"].str.fullmatch(r"\d{20}").all()
    assert (
        legacy["发票代码"].str.fullmatch(r"\d{12}").all() and legacy["发票号码"].str.fullmatch(r"\d{8}").all()
    )
    assert legacy["发票号码"].str.startswith("0").any()
    assert any("," in v for v in reg["金额"])  # thousands separators
    assert reg["开票日期"].str.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}").all()
    assert set(reg["发票状态"]) <= {"正常", "作废", "红冲", "部分红冲", "失控", "异常"}
    assert {"正常", "作废", "红冲", "部分红冲"} <= set(reg["发票状态"])
    assert set(reg["是否正数发票"]) == {"是", "否"}
    assert ((reg["是否正数发票"] == "否") == reg["金额"].str.startswith("-")).all()
    # cosmetic noise is present
    assert reg["购方识别号"].map(lambda s: any("０" <= c <= "９" for c in s)).any()
    assert (reg["购买方名称"] != reg["购买方名称"].str.strip()).any()
    # purchase invoices: sellers no issuer knows
    issuers = read_issuers(night.night_dir)
    outside = ~reg["销方识别号"].isin(set(issuers["seller_tax_id"]))
    assert 0.01 < outside.mean() < 0.06
    purchase_buyers = reg.loc[outside, "购方识别号"].map(lambda s: unicodedata.normalize("NFKC", s))
    assert purchase_buyers.str.startswith("9111").all()  # our Beijing companies buy from outside sellers
    assert not reg.loc[outside, "销方识别号"].str.startswith("9111").any()


def test_party_names_and_ids_look_real(night: GenerateResult) -> None:
    issuers = read_issuers(night.night_dir)
    sellers = issuers["seller_tax_id"].unique()
    assert all(s.startswith("9111") for s in sellers)
    assert issuers["seller_name"].str.startswith("北京").mean() > 0.9
    assert issuers["seller_name"].str.endswith("公司").all()
    people = issuers[issuers["buyer_tax_id"] == ""]
    assert 0.02 < len(people) / len(issuers) < 0.09
    assert people["buyer_name"].str.len().between(2, 3).all()
    assert issuers["seller_name"].str.contains("（").any() or issuers["buyer_name"].str.contains("（").any()


def test_every_tax_id_is_valid_except_the_injected_checksum_errors(night: GenerateResult) -> None:
    expected = read_expected(night.expected_path)
    bad_keys = _rows_of(
        expected, "INVALID_RECORD", ("invoice_code", "invoice_number", "field", "source_system")
    )
    bad_keys = {(c, n, s) for c, n, f, s in bad_keys if f == "buyer_tax_id"}
    assert bad_keys

    issuers = read_issuers(night.night_dir)
    reg, _ = read_registry(night.night_dir)
    rk = registry_keys(reg)
    seen_bad: set[tuple[str, str, str]] = set()
    sources = [
        (issuers["seller_tax_id"], issuers["buyer_tax_id"], issuers["invoice_code"], issuers["invoice_number"],
         issuers["system"]),
        (reg["销方识别号"], reg["购方识别号"], rk["invoice_code"], rk["invoice_number"],
         pd.Series("registry", index=reg.index)),
    ]  # fmt: skip
    for seller, buyer, code, number, system in sources:
        for value in seller:
            assert uscc.is_valid(unicodedata.normalize("NFKC", value)), value
        for value, c, n, s in zip(buyer, code, number, system, strict=True):
            value = unicodedata.normalize("NFKC", value).strip()
            if value == "":
                continue
            assert len(value) == 18
            if not uscc.is_valid(value):
                seen_bad.add((c, n, s))
    assert seen_bad == bad_keys


# ---------------------------------------------------------------------------------------------
# expected findings
# ---------------------------------------------------------------------------------------------


def test_expected_findings_file(night: GenerateResult) -> None:
    raw = night.expected_path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(raw.decode("utf-8").splitlines()))
    assert rows[0] == list(FLAT_EXPECTED_COLUMNS)  # as it always was (no cause column)
    body = [tuple(r) for r in rows[1:]]
    assert body == sorted(body)
    assert len(set(body)) == len(body)
    assert Counter(r[0] for r in body) == {k: v for k, v in night.counts.items() if v}
    for category in FLAT_CATEGORIES:
        assert night.counts[category] > 0, category
    assert {r[0] for r in body} == set(FLAT_CATEGORIES) and night.counts["NOT_ISSUED"] == 0
    legacy = [r for r in body if r[1]]
    assert all(len(r[1]) == 12 for r in legacy)
    assert all(len(r[2]) == 20 and r[1] == "" for r in body if not r[1])


def test_finding_conventions(night: GenerateResult) -> None:
    e = read_expected(night.expected_path)
    k = max(3, ROWS // 2000)
    for category in FLAT_CATEGORIES:
        assert night.counts[category] >= (k if category != "PENDING_SYNC" else 2), category
    systems = set(FLAT_ISSUER_SYSTEMS)

    across = e[e["category"] == "DUPLICATE_ACROSS_ISSUERS"]
    for value in across["source_system"]:
        names = value.split(",")
        assert len(names) == 2 and names == sorted(names) and set(names) <= systems

    assert set(e.loc[e["category"] == "MISSING_IN_ISSUER", "source_system"]) == {"registry"}
    assert set(e.loc[e["category"].isin(["MISSING_IN_REGISTRY", "PENDING_SYNC"]), "source_system"]) <= systems
    assert set(e.loc[e["category"] == "REGISTRY_RISK", "source_system"]) == {"registry"}
    assert set(e.loc[e["category"].isin(["STATUS_MISMATCH", "REGISTRY_RISK"]), "field"]) == {"status"}
    assert set(e.loc[e["category"] == "ORPHAN_RED_INVOICE", "source_system"]) <= systems
    assert set(e.loc[e["category"] == "FIELD_MISMATCH", "field"]) == {
        "amount", "tax_amount", "total_amount", "issue_date", "seller_tax_id", "buyer_tax_id", "buyer_name",
        "invoice_type",
    }  # fmt: skip
    assert set(e.loc[e["category"] == "INVALID_RECORD", "field"]) == {
        "total_amount", "tax_amount", "buyer_tax_id", "invoice_number",
    }  # fmt: skip
    invalid = e[e["category"] == "INVALID_RECORD"]
    assert set(invalid.loc[invalid["field"] == "tax_amount", "source_system"]) <= systems  # no rate column
    for field in ("total_amount", "buyer_tax_id"):
        sides = invalid[invalid["field"] == field].groupby(["invoice_code", "invoice_number"])[
            "source_system"
        ]
        assert all(len(v) == 2 and "registry" in set(v) for _, v in sides)

    # a registry risk is not also a status mismatch; an amount mismatch always moves the total too
    keys = ["invoice_code", "invoice_number"]
    risk = set(map(tuple, e.loc[e["category"] == "REGISTRY_RISK", keys].values))
    status = set(map(tuple, e.loc[e["category"] == "STATUS_MISMATCH", keys].values))
    assert not risk & status
    fm = e[e["category"] == "FIELD_MISMATCH"]
    amount_keys = set(map(tuple, fm.loc[fm["field"] == "amount", keys].values))
    total_keys = set(map(tuple, fm.loc[fm["field"] == "total_amount", keys].values))
    assert amount_keys and amount_keys <= total_keys

    # key typos: the 7-digit issuer number is invalid and missing/pending; the true number is missing in issuers
    typos = invalid[invalid["field"] == "invoice_number"]
    assert len(typos) > 0
    missing_issuer = e[e["category"] == "MISSING_IN_ISSUER"]
    absent = set(map(tuple, e.loc[e["category"].isin(["MISSING_IN_REGISTRY", "PENDING_SYNC"]), keys].values))
    for code, number in typos[keys].itertuples(index=False, name=None):
        assert len(code) == 12 and len(number) == 7
        assert (code, number) in absent
        candidates = missing_issuer.loc[missing_issuer["invoice_code"] == code, "invoice_number"]
        assert any(any(c[:i] + c[i + 1 :] == number for i in range(8)) for c in candidates)
    assert (e.loc[e["category"] == "MISSING_IN_REGISTRY", "invoice_number"].str.len() == 7).any()

    # orphan reds name red invoices (negative amounts) that exist in the issuer files
    issuers = read_issuers(night.night_dir)
    negative = set(
        map(
            tuple,
            issuers.loc[
                issuers["amount"].astype(float) < 0, ["invoice_code", "invoice_number", "system"]
            ].values,
        )
    )
    orphans = e[e["category"] == "ORPHAN_RED_INVOICE"]
    assert set(map(tuple, orphans[["invoice_code", "invoice_number", "source_system"]].values)) <= negative

    # every expected key belongs to exactly one defect family (no overlapping defects on one invoice)
    families = {
        "DUPLICATE_IN_SOURCE": "dup", "DUPLICATE_ACROSS_ISSUERS": "dup", "FIELD_MISMATCH": "fm",
        "STATUS_MISMATCH": "status", "REGISTRY_RISK": "risk", "ORPHAN_RED_INVOICE": "orphan",
    }  # fmt: skip
    seen: dict[tuple[str, str], set[str]] = {}
    for row in e.itertuples(index=False):
        family = families.get(row.category)
        if family:
            seen.setdefault((row.invoice_code, row.invoice_number), set()).add(family)
    assert all(len(v) == 1 for v in seen.values())


def test_missing_and_duplicates_match_an_independent_check(night: GenerateResult) -> None:
    """Re-derive MISSING_IN_REGISTRY, PENDING_SYNC, MISSING_IN_ISSUER and DUPLICATE_IN_SOURCE from the files."""
    expected = read_expected(night.expected_path)
    issuers = read_issuers(night.night_dir)
    reg, _ = read_registry(night.night_dir)
    rkeys = registry_keys(reg)
    reg_key_set = set(map(tuple, rkeys.values))
    as_of = datetime.combine(NIGHT + timedelta(days=1), datetime.min.time())
    cutoff = (as_of - timedelta(hours=48)).strftime("%Y-%m-%d %H:%M:%S")

    absent = issuers[
        [
            (c, n) not in reg_key_set
            for c, n in zip(issuers["invoice_code"], issuers["invoice_number"], strict=True)
        ]
    ]
    old = absent[absent["issue_time"] < cutoff]
    recent = absent[absent["issue_time"] >= cutoff]
    mine_missing = {(c, n, "", s) for c, n, s in old[["invoice_code", "invoice_number", "system"]].values}
    mine_pending = {(c, n, "", s) for c, n, s in recent[["invoice_code", "invoice_number", "system"]].values}
    cols = ("invoice_code", "invoice_number", "field", "source_system")
    assert mine_missing == _rows_of(expected, "MISSING_IN_REGISTRY", cols)
    assert mine_pending == _rows_of(expected, "PENDING_SYNC", cols)

    monitored = set(issuers["seller_tax_id"])
    in_scope = reg["销方识别号"].isin(monitored)
    issuer_keys = set(map(tuple, issuers[["invoice_code", "invoice_number"]].values))
    mine_mii = {(c, n, "", "registry") for c, n in rkeys[in_scope].values if (c, n) not in issuer_keys}
    assert mine_mii == _rows_of(expected, "MISSING_IN_ISSUER", cols)

    dup_issuer = issuers.groupby(["system", "invoice_code", "invoice_number"]).size()
    dup_registry = rkeys[in_scope].groupby(["invoice_code", "invoice_number"]).size()
    mine_dups = {(c, n, "", s) for (s, c, n), k in dup_issuer.items() if k > 1} | {
        (c, n, "", "registry") for (c, n), k in dup_registry.items() if k > 1
    }
    assert mine_dups == _rows_of(expected, "DUPLICATE_IN_SOURCE", cols)
    # a duplicated issuer row is an exact copy
    dup_rows = issuers[issuers.duplicated(["system", "invoice_code", "invoice_number"], keep=False)]
    assert (
        not dup_rows.drop(columns="file")
        .drop_duplicates()
        .duplicated(["system", "invoice_code", "invoice_number"])
        .any()
    )


def test_rule_violations_match_an_independent_check(night: GenerateResult) -> None:
    expected = read_expected(night.expected_path)
    issuers = read_issuers(night.night_dir)
    fen = {
        c: (issuers[c].astype(float) * 100).round().astype(int)
        for c in ("amount", "tax_amount", "total_amount")
    }
    rate = (issuers["tax_rate"].str.rstrip("%").astype(float)).map(lambda r: r if r < 1 else r / 100)
    bad_total = issuers[fen["total_amount"] != fen["amount"] + fen["tax_amount"]]
    bad_rate = issuers[(fen["amount"] * rate - fen["tax_amount"]).abs() > 6.0001]
    cols = ("invoice_code", "invoice_number", "field", "source_system")
    invalid = _rows_of(expected, "INVALID_RECORD", cols)
    mine = {
        (c, n, "total_amount", s)
        for c, n, s in bad_total[["invoice_code", "invoice_number", "system"]].values
    }
    assert mine == {r for r in invalid if r[2] == "total_amount" and r[3] != "registry"}
    mine = {
        (c, n, "tax_amount", s) for c, n, s in bad_rate[["invoice_code", "invoice_number", "system"]].values
    }
    assert mine == {r for r in invalid if r[2] == "tax_amount"}


# ---------------------------------------------------------------------------------------------
# consecutive nights overlap like real trailing-window snapshots
# ---------------------------------------------------------------------------------------------


def test_shared_days_are_identical_between_consecutive_nights(
    night: GenerateResult, next_night: GenerateResult
) -> None:
    shared = {(NIGHT - timedelta(days=i)).isoformat() for i in range(6)}  # D-5 .. D

    a = read_issuers(night.night_dir)
    b = read_issuers(next_night.night_dir)
    a = a[a["issue_time"].str[:10].isin(shared)].drop(columns="file")
    b = b[b["issue_time"].str[:10].isin(shared)].drop(columns="file")
    assert len(a) > 0.8 * ROWS
    assert Counter(map(tuple, a.values)) == Counter(map(tuple, b.values))

    ra, _ = read_registry(night.night_dir)
    rb, _ = read_registry(next_night.night_dir)
    ra = ra[ra["开票日期"].str[:10].isin(shared)].drop(columns="序号")
    rb = rb[rb["开票日期"].str[:10].isin(shared)].drop(columns="序号")
    ca, cb = Counter(map(tuple, ra.values)), Counter(map(tuple, rb.values))
    assert not ca - cb  # nothing disappears from the registry
    arrived = cb - ca  # late arrivals: exactly what night D reported as not (yet) in the registry
    assert arrived
    arrived_keys = {(row[0], row[1] or row[2]) for row in arrived}
    e = read_expected(night.expected_path)
    absent = set(
        map(
            tuple,
            e.loc[
                e["category"].isin(["PENDING_SYNC", "MISSING_IN_REGISTRY"]),
                ["invoice_code", "invoice_number"],
            ].values,
        )
    )
    # ... or an invoice issued on D+1 that the registry dates a day earlier (a FIELD_MISMATCH of night D+1)
    e_next = read_expected(next_night.expected_path)
    shifted = set(
        map(
            tuple,
            e_next.loc[
                (e_next["category"] == "FIELD_MISMATCH") & (e_next["field"] == "issue_date"),
                ["invoice_code", "invoice_number"],
            ].values,
        )
    )
    assert arrived_keys <= absent | shifted


def test_pending_invoices_arrive_in_a_later_snapshot(night: GenerateResult, tmp_path: Path) -> None:
    """Night D's PENDING_SYNC invoices either arrive by D+3 (delayed sync) or turn into MISSING_IN_REGISTRY (lost)."""
    later = generate_night(tmp_path, NIGHT + timedelta(days=3), rows=ROWS, seed=SEED, layout="flat")
    keys = ["invoice_code", "invoice_number"]
    e = read_expected(night.expected_path)
    pending = set(map(tuple, e.loc[e["category"] == "PENDING_SYNC", keys].values))
    reg, _ = read_registry(later.night_dir)
    arrived = pending & set(map(tuple, registry_keys(reg).values))
    e_later = read_expected(later.expected_path)
    still_missing = set(map(tuple, e_later.loc[e_later["category"] == "MISSING_IN_REGISTRY", keys].values))
    assert arrived, "delayed invoices must show up in a later registry snapshot"
    assert pending - arrived, "lost invoices never arrive"
    assert pending - arrived <= still_missing
    assert not arrived & still_missing


# =============================================================================================
# The real layout (the default)
# =============================================================================================

STATUSES = {"正常", "已作废", "已红冲-全额", "已红冲-部分", "失控", "异常"}
RISKS = {"正常", "疑点发票", "异常凭证"}
RATES = {"13%": 13, "9%": 9, "6%": 6, "3%": 3, "1%": 1, "0%": 0, "免税": 0, "不征税": 0}
RED_REMARKS = {  # every form the platform writes, and the key of the blue invoice it names
    "digital": r"被红冲蓝字数电发票号码：(\d{20}) 红字发票信息确认单编号：\d{20}",
    "digital_old": r"被红冲蓝字数电票号码：(\d{20})",
    "legacy": r"对应正数发票代码:(\d{10}|\d{12})号码:(\d{8})",
    "number_first": r"被红冲蓝字发票号码：(\d{8}) 被红冲蓝字发票代码：(\d{10}|\d{12})",
    "code_first": r"被红冲蓝字发票代码：(\d{10}|\d{12}) 被红冲蓝字发票号码：(\d{8})",
}
HEADER_FIELDS = (
    "发票代码",
    "发票号码",
    "发票票种",
    "开票日期",
    "销方识别号",
    "购方识别号",
    "购方名称",
    "发票状态",
)
#: The issuers' own state words (DESIGN.md, "Issuing systems as they really export"), written out here
#: rather than taken from the product, so that the check stays independent.
ISSUANCE_WORDS = {
    "开票完成": "normal", "开票成功": "normal", "已开具": "normal", "开票中": "issuing", "签章中": "issuing",
    "开票失败": "failed", "签章失败": "failed", "作废中": "voided",
}  # fmt: skip
UPLOAD_WORDS = {
    "已报送": "uploaded", "已上传": "uploaded", "未报送": "not_uploaded", "未上传": "not_uploaded",
    "报送中": "uploading", "报送失败": "failed", "上传失败": "failed", "验签失败": "signature_failed",
}  # fmt: skip
#: A missing invoice's cause by its issuer's upload state (the issuance state issuing comes first).
CAUSE_OF_UPLOAD = {
    "uploaded": "uploaded_but_absent", "failed": "upload_failed", "not_uploaded": "not_uploaded",
    "uploading": "uploading", "signature_failed": "signature_failed", "": "unknown",
}  # fmt: skip


@dataclass(frozen=True)
class RealNight:
    """The files of a real-layout night, read back: every value as written (text, or fen for amounts)."""

    result: GenerateResult
    invoices: pd.DataFrame  # 发票基础信息 of every workbook, without 合计行
    lines: pd.DataFrame  # 信息汇总表 of every workbook
    workbooks: list[dict[str, object]]  # per workbook: sheet names, headers, totals row, sizes
    erp: pd.DataFrame  # the ERP's line files
    pos: pd.DataFrame
    webshop: pd.DataFrame
    expected: pd.DataFrame
    # the issuers with issuance and upload states, as written, plus: key, issue_time (Beijing,
    # 'YYYY-MM-DD HH:MM:SS', midnight for a date only), state, upload (words mapped; '' where none), fen columns
    taxctl: pd.DataFrame
    shopapi: pd.DataFrame
    batch: pd.DataFrame
    batch_rows: list[tuple[object, ...]]  # the template's sheet as it is, instruction rows included


def _fen(value: object) -> int:
    """Yuan (a number, or text like '1,234.50') as integer fen."""
    return int((Decimal(str(value).replace(",", "")) * 100).to_integral_value())


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def read_workbook(path: Path) -> dict[str, object]:
    """One registry workbook: both sheets' rows as text (amounts in fen), headers, the totals row."""
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        out: dict[str, object] = {"file": path.name, "sheets": wb.sheetnames}
        for name, key in (("信息汇总表", "lines"), ("发票基础信息", "invoices")):
            rows = list(wb[name].iter_rows(values_only=True))
            out[f"{key}_header"] = list(rows[0])
            out[f"{key}_raw"] = rows[1:]
    finally:
        wb.close()
    inv_rows = out["invoices_raw"]
    out["totals"] = inv_rows[-1]
    out["invoices_raw"] = inv_rows[:-1]
    return out


def _frame(rows: list[tuple[object, ...]], header: list[str], money: tuple[str, ...]) -> pd.DataFrame:
    df = pd.DataFrame([[_cell(v) for v in r] for r in rows], columns=header)
    for column in money:
        df[column] = df[column].map(_fen)
    df["key"] = [
        (code, number if number else digital) if not digital or digital == "--" else ("", digital)
        for code, number, digital in zip(df["发票代码"], df["发票号码"], df["数电发票号码"], strict=True)
    ]
    return df


def read_real(result: GenerateResult) -> RealNight:
    d = result.night_dir
    workbooks = [read_workbook(p) for p in sorted((d / "registry").glob("*.xlsx"))]
    invoices = pd.concat(
        [_frame(w["invoices_raw"], w["invoices_header"], ("金额", "税额", "价税合计")).assign(workbook=w["file"])
         for w in workbooks], ignore_index=True)  # fmt: skip
    lines = pd.concat(
        [_frame(w["lines_raw"], w["lines_header"], ("金额", "税额", "价税合计")).assign(workbook=w["file"])
         for w in workbooks], ignore_index=True)  # fmt: skip
    erp_frames = []
    for path in sorted((d / "issuers" / "erp").glob("*.csv")):
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        erp_frames.append(df.assign(file=path.name))
    erp = pd.concat(erp_frames, ignore_index=True)
    for column in ("金额", "税额", "价税合计"):
        erp[column] = erp[column].map(_fen)
    erp["key"] = list(zip(erp["发票代码"], erp["发票号码"], strict=True))
    (pos_path,) = sorted((d / "issuers" / "pos").glob("*.csv"))
    pos = pd.read_csv(pos_path, dtype=str, keep_default_na=False, encoding="gbk")
    for column in ("金额", "税额", "价税合计金额"):
        pos[column] = pos[column].map(_fen)
    pos["key"] = list(zip(pos["发票代码"], pos["发票号码"], strict=True))
    (web_path,) = sorted((d / "issuers" / "webshop").glob("*.jsonl"))
    webshop = pd.DataFrame.from_records(
        [json.loads(line) for line in web_path.read_text(encoding="utf-8").splitlines() if line]
    )
    for column in ("amount", "tax_amount", "total_amount"):
        webshop[column] = webshop[column].map(_fen)
    webshop["key"] = list(zip(webshop["invoice_code"], webshop["invoice_number"], strict=True))
    expected = read_expected(result.expected_path)
    taxctl, shopapi, batch, batch_rows = read_state_issuers(d)
    return RealNight(
        result, invoices, lines, workbooks, erp, pos, webshop, expected, taxctl, shopapi, batch, batch_rows
    )


def taxctl_codes() -> tuple[dict[str, str], dict[str, str]]:
    """taxctl's state codes as the configuration the night needs maps them (to words)."""
    values = tomllib.loads(generate_module.SOURCES_TOML)["sources"]["taxctl"]["values"]
    return values["status"], values["upload_status"]


def read_state_issuers(d: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[tuple[object, ...]]]:
    """taxctl (GB18030 CSV), shopapi (JSON Lines) and batch (a template workbook), read back."""
    status_codes, upload_codes = taxctl_codes()
    (path,) = sorted((d / "issuers" / "taxctl").glob("*.csv"))
    taxctl = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="gb18030")
    taxctl["key"] = [("", z) if z else (c, n) for c, n, z in zip(taxctl["fpdm"], taxctl["fphm"], taxctl["zzfphm"],
                                                                  strict=True)]  # fmt: skip
    taxctl["issue_time"] = [
        (t.replace(".", "-") + ("" if len(t) > 10 else " 00:00:00")) for t in taxctl["kprq"]
    ]
    taxctl["state"] = taxctl["开票状态"].map(lambda c: ISSUANCE_WORDS[status_codes[c]])
    taxctl["upload"] = taxctl["bszt"].map(lambda c: UPLOAD_WORDS[upload_codes[c]])
    for column in ("hjje", "hjse", "jshj"):
        taxctl[column] = taxctl[column].map(_fen)

    (path,) = sorted((d / "issuers" / "shopapi").glob("*.jsonl"))
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    shopapi = pd.DataFrame.from_records(records)
    shopapi["key"] = [("", n) for n in shopapi["allElectronicInvoiceNumber"]]
    shopapi["issue_time"] = [
        datetime.fromtimestamp(ms / 1000, _SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
        for ms in shopapi["invoiceTime"]
    ]
    shopapi["state"] = shopapi["status"].map(ISSUANCE_WORDS)
    shopapi["upload"] = shopapi["上传状态"].map(UPLOAD_WORDS)
    for column in ("exTaxAmount", "taxAmount", "orderAmount"):
        shopapi[column + "_fen"] = shopapi[column].map(_fen)

    (path,) = sorted((d / "issuers" / "batch").glob("*.xlsx"))
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        (sheet,) = wb.worksheets
        batch_rows = list(sheet.iter_rows(values_only=True))
    finally:
        wb.close()
    h = next(i for i, r in enumerate(batch_rows) if r and r[0] == "单据编号*")
    batch = pd.DataFrame([[_cell(v) for v in r] for r in batch_rows[h + 1:]],
                         columns=[str(c) for c in batch_rows[h]])  # fmt: skip
    batch["key"] = list(zip(batch["发票代码"], batch["发票号码*"], strict=True))
    batch["key"] = [("", n) if len(n) == 20 else (c, n) for c, n in batch["key"]]
    batch["issue_time"] = batch["开票日期*"]
    batch["state"] = batch["发票状态"].map(ISSUANCE_WORDS)
    batch["upload"] = batch["报送状态"].map(UPLOAD_WORDS)
    for column in ("合计金额*", "合计税额*", "价税合计(小写)*"):
        batch[column] = batch[column].map(_fen)
    return taxctl, shopapi, batch, batch_rows


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> GenerateResult:
    return generate_night(tmp_path_factory.mktemp("real"), NIGHT, rows=ROWS, seed=SEED)


@pytest.fixture(scope="module")
def rn(real: GenerateResult) -> RealNight:
    return read_real(real)


def _expected_keys(
    e: pd.DataFrame, category: str, field: str | None = None, source: str | None = None
) -> set[tuple[str, str]]:
    sub = e[e["category"] == category]
    if field is not None:
        sub = sub[sub["field"] == field]
    if source is not None:
        sub = sub[sub["source_system"] == source]
    return set(zip(sub["invoice_code"], sub["invoice_number"], strict=True))


def _tax(fen: int, pct: int) -> int:
    """The tax of a line: amount x rate rounded half away from zero, in fen."""
    sign = -1 if fen < 0 else 1
    return sign * ((abs(fen) * pct + 50) // 100)


def test_real_is_the_default_and_byte_identical(real: GenerateResult, tmp_path: Path) -> None:
    assert real.layout == "real"
    again = generate_night(tmp_path, NIGHT, rows=ROWS, seed=SEED, layout="real")
    assert _sha256_tree(again.night_dir) == _sha256_tree(real.night_dir)  # the workbooks included
    assert again.counts == real.counts and again.lines_per_source == real.lines_per_source


def test_real_layout_files(real: GenerateResult) -> None:
    d = real.night_dir
    stamp = NIGHT.strftime("%Y%m%d")
    start = (NIGHT - timedelta(days=6)).strftime("%Y%m%d")
    rel = sorted(p.relative_to(d).as_posix() for p in real.files)
    assert rel == sorted([
        f"issuers/erp/erp_fapiao_lines_{stamp}_1.csv",
        f"issuers/erp/erp_fapiao_lines_{stamp}_2.csv",
        f"issuers/pos/开票记录导出_{stamp}.csv",
        "issuers/webshop/webshop_invoices.jsonl",
        f"issuers/taxctl/发票查询导出_{stamp}.csv",
        f"issuers/shopapi/invoices_{stamp}.jsonl",
        f"issuers/batch/批量开票结果_{stamp}.xlsx",
        f"registry/全量发票查询导出结果（{start}-{stamp}）.xlsx",
    ])  # fmt: skip
    assert sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()) == sorted(
        [*rel, "expected_findings.csv", "generation.json"]
    )
    meta = json.loads((d / "generation.json").read_text(encoding="utf-8"))
    assert meta["layout"] == "real" and meta["lines_per_source"] == real.lines_per_source
    assert meta["counts"] == real.counts and set(real.counts) == set(CATEGORY_CODES)
    assert {"risk_level", "reg_lines", "lines_header", "stale_blue", "red_pair"} <= set(meta["injected"])
    assert set(generate_module._STATE_KINDS) <= set(meta["injected"])
    assert meta["causes"] == real.causes and meta["config"] == generate_module.SOURCES_TOML
    assert set(real.rows_per_source) == {*ISSUER_SYSTEMS, "registry"}


def test_registry_workbook_as_the_platform_writes_it(real: GenerateResult, rn: RealNight) -> None:
    (path,) = sorted((real.night_dir / "registry").glob("*.xlsx"))
    (w,) = rn.workbooks
    assert w["sheets"] == ["信息汇总表", "发票基础信息"]  # lines first
    assert w["lines_header"] == list(REGISTRY_LINE_COLUMNS) and len(REGISTRY_LINE_COLUMNS) == 27
    assert w["invoices_header"] == list(REGISTRY_COLUMNS) and len(REGISTRY_COLUMNS) == 19
    # text cells for ids, dates, 税率, 数量 and 单价; numbers for amounts
    for key, text_columns, number_columns in (
        ("lines", ("序号", "数电发票号码", "销方识别号", "开票日期", "税率", "数量", "单价"), ("金额", "税额", "价税合计")),
        ("invoices", ("序号", "数电发票号码", "销方识别号", "开票日期"), ("金额", "税额", "价税合计")),
    ):  # fmt: skip
        header = w[f"{key}_header"]
        rows = w[f"{key}_raw"]
        for column in text_columns:
            i = header.index(column)
            assert all(r[i] is None or isinstance(r[i], str) for r in rows), column
        for column in number_columns:
            i = header.index(column)
            assert all(isinstance(r[i], int | float) for r in rows), column
    for key in ("lines", "invoices"):
        assert [r[0] for r in w[f"{key}_raw"]] == [str(i) for i in range(1, len(w[f"{key}_raw"]) + 1)]
    # the totals row: 序号 合计行, only 金额 and 税额, the sums of the sheet's rows
    totals = w["totals"]
    header = w["invoices_header"]
    assert totals[0] == "合计行"
    assert {header[i] for i, v in enumerate(totals) if v is not None} == {"序号", "金额", "税额"}
    assert _fen(totals[header.index("金额")]) == rn.invoices["金额"].sum()
    assert _fen(totals[header.index("税额")]) == rn.invoices["税额"].sum()
    assert len(rn.invoices) == real.rows_per_source["registry"]
    assert len(rn.lines) == real.lines_per_source["registry"]
    # identifiers: 数电票 with empty 发票代码 / 发票号码; legacy invoices with '--' as 数电发票号码
    for df in (rn.invoices, rn.lines):
        digital = df[df["数电发票号码"] != "--"]
        legacy = df[df["数电发票号码"] == "--"]
        assert digital["数电发票号码"].str.fullmatch(r"\d{20}").all()
        assert (digital["发票代码"] == "").all() and (digital["发票号码"] == "").all()
        assert legacy["发票代码"].str.fullmatch(r"\d{10}|\d{12}").all()
        assert legacy["发票号码"].str.fullmatch(r"\d{8}").all()
        assert {10, 12} <= set(legacy["发票代码"].str.len())
        assert 0.1 < len(legacy) / len(df) < 0.5
        assert df["开票日期"].str.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}").all()
    # '--' also stands for an individual buyer's missing tax id
    assert (rn.invoices["购方识别号"] == "--").any()
    openpyxl.load_workbook(path).close()  # the full reader opens it too


def test_registry_vocabulary(rn: RealNight) -> None:
    inv, lines = rn.invoices, rn.lines
    assert set(inv["发票状态"]) == STATUSES
    assert set(inv["发票风险等级"]) == RISKS
    assert set(inv["是否正数发票"]) == {"是", "否"}
    assert set(inv["发票来源"]) == {"电子发票服务平台", "增值税发票管理系统"}
    assert set(inv["发票票种"]) == {
        "数电发票（增值税专用发票）", "数电发票（普通发票）", "数电票（增值税专用发票）", "数电票（普通发票）",
        "增值税专用发票", "增值税电子普通发票", "增值税普通发票（卷式）",
    }  # fmt: skip
    assert set(lines["税率"]) == set(RATES)
    for rate in ("免税", "不征税", "0%"):
        assert (lines.loc[lines["税率"] == rate, "税额"] == 0).all()
    # red invoices: 是否正数发票 = 否, negative amounts, status 正常, their blue named in 备注
    reds = inv[inv["是否正数发票"] == "否"]
    assert (reds["金额"] < 0).all() and (reds["价税合计"] < 0).all() and (reds["发票状态"] == "正常").all()
    assert (inv.loc[inv["是否正数发票"] == "是", "金额"] >= 0).all()
    found = {name: 0 for name in RED_REMARKS}
    for remark in reds["备注"]:
        matches = [name for name, pattern in RED_REMARKS.items() if re.fullmatch(pattern, remark)]
        assert len(matches) == 1, remark
        found[matches[0]] += 1
    assert all(found.values()), found
    # the blue a red names exists, and turned 已红冲-全额 or 已红冲-部分 (unless the red is an orphan)
    blue_status = dict(zip(inv["key"], inv["发票状态"], strict=True))
    orphans = _expected_keys(rn.expected, "ORPHAN_RED_INVOICE")
    for key, remark in zip(reds["key"], reds["备注"], strict=True):
        m = next(re.fullmatch(p, remark) for p in RED_REMARKS.values() if re.fullmatch(p, remark))
        groups = m.groups()
        blue = (
            ("", groups[0])
            if len(groups) == 1
            else ((groups[0], groups[1]) if len(groups[0]) > 8 else (groups[1], groups[0]))
        )
        if key not in orphans:
            assert blue_status.get(blue) in ("已红冲-全额", "已红冲-部分"), (key, blue)


def test_registry_lines_add_up_except_where_injected(rn: RealNight) -> None:
    inv, lines, e = rn.invoices, rn.lines, rn.expected
    per_invoice = lines.groupby("key").agg(n=("金额", "size"), amount=("金额", "sum"), tax=("税额", "sum"))
    first = inv.drop_duplicates("key").set_index("key")
    assert set(per_invoice.index) == set(first.index)  # every invoice has lines, a duplicate row none extra
    differs = per_invoice[(per_invoice["amount"] != first.loc[per_invoice.index, "金额"])
                          | (per_invoice["tax"] != first.loc[per_invoice.index, "税额"])]  # fmt: skip
    in_scope = set(inv.loc[inv["销方识别号"].str.startswith("9111"), "key"])
    assert set(differs.index) == _expected_keys(e, "INVALID_RECORD", "lines", "registry")
    assert set(differs.index) <= in_scope
    # per line: tax = amount x rate, rounded to the fen, except the injected rate errors
    pct = lines["税率"].map(RATES)
    off = lines[(lines["金额"] * pct - lines["税额"] * 100).abs() > 600]
    assert set(off["key"]) == _expected_keys(e, "INVALID_RECORD", "tax_amount", "registry")
    clean = lines[~lines["key"].isin(set(off["key"]))]
    pairs = zip(clean["金额"], clean["税率"].map(RATES), clean["税额"], strict=True)
    assert all(_tax(f, p) == t for f, p, t in pairs)
    assert (lines["价税合计"] == lines["金额"] + lines["税额"]).all()
    # shapes: about 3 lines an invoice, up to dozens, mixed rates, discount lines in blue invoices
    assert 2.5 < per_invoice["n"].mean() < 3.5
    assert per_invoice["n"].max() > 12 and per_invoice["n"].max() <= 36
    assert (lines.groupby("key")["税率"].nunique() > 1).mean() > 0.05
    blue = set(inv.loc[inv["是否正数发票"] == "是", "key"])
    discounts = lines[(lines["金额"] < 0) & lines["key"].isin(blue)]
    assert len(discounts) > 0 and (discounts["数量"] == "").all()
    assert (first.loc[list(set(discounts["key"])), "金额"] > 0).all()  # a negative line alone is not red


def test_erp_line_file(real: GenerateResult, rn: RealNight) -> None:
    erp, e = rn.erp, rn.expected
    for path in sorted((real.night_dir / "issuers" / "erp").glob("*.csv")):
        raw = path.read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf")
        assert next(csv.reader([raw[3:].decode("utf-8").split("\n", 1)[0]])) == list(ERP_LINE_COLUMNS)
    assert len(erp) == real.rows_per_source["erp"] == real.lines_per_source["erp"]
    assert (
        erp["金额"].astype(str).str.len().max() > 0 and erp["单据编号"].str.fullmatch(r"XS\d{13}(-1)?").all()
    )
    raw_amounts = pd.concat(
        [pd.read_csv(p, dtype=str, keep_default_na=False, encoding="utf-8-sig")["金额"]
         for p in sorted((real.night_dir / "issuers" / "erp").glob("*.csv"))])  # fmt: skip
    assert raw_amounts.str.contains(",").any()  # 1,234.50
    # one record per invoice key and file: lines that disagree on a header field are the injected ones
    disagree = erp.groupby(["file", "key"])[list(HEADER_FIELDS)].nunique().max(axis=1) > 1
    bad = {k for (_f, k), v in disagree.items() if v}
    assert bad == _expected_keys(e, "INVALID_RECORD", "lines", "erp") and bad
    which = erp.groupby(["file", "key"])[["购方名称", "开票日期"]].nunique()
    assert {k for (_f, k), v in which.iterrows() if v.max() > 1} == bad  # a buyer name or an issue time
    # a duplicate in the ERP's export is the same invoice in both of its files
    files_per_key = erp.groupby("key")["file"].nunique()
    twice = set(files_per_key[files_per_key > 1].index)
    assert twice and twice == _expected_keys(e, "DUPLICATE_IN_SOURCE", None, "erp")
    # the rate rule applies per line
    pct = erp["税率"].map(RATES)
    off = set(erp.loc[(erp["金额"] * pct - erp["税额"] * 100).abs() > 600, "key"])
    assert off and off == _expected_keys(e, "INVALID_RECORD", "tax_amount", "erp")
    assert set(erp["发票状态"]) <= {"正常", "作废", "红冲", "部分红冲"}


def test_pos_is_a_third_party_gbk_export(real: GenerateResult, rn: RealNight) -> None:
    (path,) = sorted((real.night_dir / "issuers" / "pos").glob("*.csv"))
    raw = path.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert next(csv.reader([raw.decode("gbk").split("\n", 1)[0].rstrip("\r")])) == list(POS_COLUMNS)
    pos, e = rn.pos, rn.expected
    assert len(pos) == real.rows_per_source["pos"]
    assert set(pos["发票状态"]) <= {"正常", "已作废", "已红冲", "部分红冲"}
    assert set(pos["税率"]) - {""} <= set(RATES)
    # one rate per invoice: empty where the invoice's lines mix rates
    mixed = rn.lines.groupby("key")["税率"].nunique()
    mixed = set(mixed[mixed > 1].index)
    in_registry = pos[pos["key"].isin(set(rn.lines["key"]))]
    assert set(in_registry.loc[in_registry["税率"] == "", "key"]) == set(in_registry["key"]) & mixed
    rated = pos[pos["税率"] != ""]
    bad = rated[(rated["金额"] * rated["税率"].map(RATES) - rated["税额"] * 100).abs() > 600]
    assert len(bad) and set(bad["key"]) == _expected_keys(e, "INVALID_RECORD", "tax_amount", "pos")
    web = rn.webshop
    assert web["tax_rate"].isna().any() and set(web["tax_rate"].dropna()) <= set(RATES)


def test_real_finding_conventions(rn: RealNight) -> None:
    e = rn.expected
    k = max(3, ROWS // 2000)
    for category in CATEGORY_CODES:
        assert (e["category"] == category).sum() >= (k if category != "PENDING_SYNC" else 2), category
    invalid = e[e["category"] == "INVALID_RECORD"]
    assert set(invalid["field"]) == {"total_amount", "tax_amount", "buyer_tax_id", "invoice_number", "lines"}
    assert set(invalid.loc[invalid["field"] == "lines", "source_system"]) == {"erp", "registry"}
    assert "registry" in set(invalid.loc[invalid["field"] == "tax_amount", "source_system"])
    risk = e[e["category"] == "REGISTRY_RISK"]
    assert set(risk["field"]) == {"status", "risk_level"} and set(risk["source_system"]) == {"registry"}
    legacy = e[e["invoice_code"] != ""]
    assert legacy["invoice_code"].str.fullmatch(r"\d{10}|\d{12}").all()
    # the registry's risk levels and statuses are exactly the REGISTRY_RISK findings
    inv = rn.invoices
    assert set(inv.loc[inv["发票风险等级"] != "正常", "key"]) == _expected_keys(
        e, "REGISTRY_RISK", "risk_level"
    )
    assert set(inv.loc[inv["发票状态"].isin(["失控", "异常"]), "key"]) == _expected_keys(
        e, "REGISTRY_RISK", "status"
    )
    # a partial red issued, the issuer's blue still 正常: STATUS_MISMATCH
    partial = set(inv.loc[inv["发票状态"] == "已红冲-部分", "key"])
    issuer_normal = (
        set(rn.pos.loc[rn.pos["发票状态"] == "正常", "key"])
        | set(rn.webshop.loc[rn.webshop["status"] == "normal", "key"])
        | set(rn.erp.loc[rn.erp["发票状态"] == "正常", "key"])
    )
    stale = partial & issuer_normal
    assert stale and stale <= _expected_keys(e, "STATUS_MISMATCH", "status")


def _issuer_records(rn: RealNight) -> pd.DataFrame:
    """One record per invoice and file (the ERP's lines grouped, as the contract reads a line file)."""
    erp = rn.erp.groupby(["file", "key"], sort=False).agg(
        issue_time=("开票日期", "first"), seller=("销方识别号", "first"), amount=("金额", "sum"),
        tax=("税额", "sum"), total=("价税合计", "sum")).reset_index().assign(system="erp")  # fmt: skip
    pos = rn.pos.rename(columns={"开票时间": "issue_time", "销方税号": "seller", "金额": "amount", "税额": "tax",
                                 "价税合计金额": "total"}).assign(system="pos", file="pos")  # fmt: skip
    web = rn.webshop.assign(
        issue_time=rn.webshop["issue_time"].map(
            lambda s: datetime.fromisoformat(s).astimezone(_SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
        ),
        system="webshop",
        file="webshop",
    ).rename(
        columns={  # fmt: skip
            "seller_tax_id": "seller",
            "tax_amount": "tax",
            "total_amount": "total",
        }
    )
    taxctl = rn.taxctl.rename(columns={"xfsh": "seller", "hjje": "amount", "hjse": "tax", "jshj": "total"}).assign(
        system="taxctl", file="taxctl")  # fmt: skip
    shopapi = rn.shopapi.rename(columns={"salerTaxNum": "seller", "exTaxAmount_fen": "amount", "taxAmount_fen": "tax",
                                         "orderAmount_fen": "total"}).assign(system="shopapi", file="shopapi")  # fmt: skip
    batch = rn.batch.rename(columns={"销售方税号*": "seller", "合计金额*": "amount", "合计税额*": "tax",
                                     "价税合计(小写)*": "total"}).assign(system="batch", file="batch")  # fmt: skip
    cols = ["system", "file", "key", "issue_time", "seller", "amount", "tax", "total", "state", "upload"]
    old = [df.assign(state="", upload="")[cols] for df in (erp, pos, web)]  # no issuance or upload states
    return pd.concat([*old, taxctl[cols], shopapi[cols], batch[cols]], ignore_index=True)


def test_real_missing_duplicates_and_sums_match_an_independent_check(rn: RealNight) -> None:
    e = rn.expected
    issuers = _issuer_records(rn)
    reg = rn.invoices
    reg_keys = set(reg["key"])
    as_of = datetime.combine(NIGHT + timedelta(days=1), datetime.min.time())
    cutoff = (as_of - timedelta(hours=48)).strftime("%Y-%m-%d %H:%M:%S")
    absent = issuers[~issuers["key"].isin(reg_keys)]
    # a failed issuance was never issued: NOT_ISSUED; the others are missing once issued longer ago than
    # the grace period (as the issuer wrote the time: a date only is midnight), pending until then
    failed = absent[absent["state"] == "failed"]
    absent = absent[absent["state"] != "failed"]

    def cause(state: str, upload: str, late: bool) -> str:
        return ("stuck_issuing" if late else "issuing") if state == "issuing" else CAUSE_OF_UPLOAD[upload]

    rows = list(zip(absent["key"], absent["system"], absent["issue_time"], absent["state"], absent["upload"],
                    strict=True))  # fmt: skip
    missing = {(k, s, cause(st, u, True)) for k, s, t, st, u in rows if t < cutoff}
    pending = {(k, s, cause(st, u, False)) for k, s, t, st, u in rows if t >= cutoff}

    def keyed(category: str) -> set[tuple[tuple[str, str], str]]:
        sub = e[e["category"] == category]
        rows = zip(sub["invoice_code"], sub["invoice_number"], sub["source_system"], strict=True)
        return {((c, n), s) for c, n, s in rows}

    def with_cause(category: str) -> set[tuple[tuple[str, str], str, str]]:
        sub = e[e["category"] == category]
        rows = zip(
            sub["invoice_code"], sub["invoice_number"], sub["source_system"], sub["cause"], strict=True
        )
        return {((c, n), s, x) for c, n, s, x in rows}

    assert missing == with_cause("MISSING_IN_REGISTRY") and pending == with_cause("PENDING_SYNC")
    assert {(k, s) for k, s in zip(failed["key"], failed["system"], strict=True)} == keyed("NOT_ISSUED")
    assert (e.loc[~e["category"].isin(["MISSING_IN_REGISTRY", "PENDING_SYNC"]), "cause"] == "").all()
    monitored = set(issuers["seller"])
    scope = reg[reg["销方识别号"].isin(monitored)]
    assert {(k, "registry") for k in set(scope["key"]) - set(issuers["key"])} == keyed("MISSING_IN_ISSUER")
    dups = issuers.groupby(["system", "key"]).size()
    reg_dups = scope.groupby("key").size()
    mine = {(k, s) for (s, k), n in dups.items() if n > 1}
    mine |= {(k, "registry") for k, n in reg_dups.items() if n > 1}
    assert mine == keyed("DUPLICATE_IN_SOURCE")
    # a duplicated registry invoice repeats its 发票基础信息 row; its lines are there once
    for key in reg_dups[reg_dups > 1].index:
        lines = rn.lines[rn.lines["key"] == key]
        assert len(lines) == len(lines.drop_duplicates(["序号"])) and lines["序号"].is_unique
    # total = amount + tax on every record but the injected ones
    bad_total = issuers[issuers["total"] != issuers["amount"] + issuers["tax"]]
    reg_bad = scope[scope["价税合计"] != scope["金额"] + scope["税额"]]
    assert {(k, s) for k, s in zip(bad_total["key"], bad_total["system"], strict=True)} | {
        (k, "registry") for k in reg_bad["key"]
    } == {  # fmt: skip
        (k, s)
        for k, s in keyed("INVALID_RECORD")
        if k
        in set(
            e.loc[
                (e["category"] == "INVALID_RECORD") & (e["field"] == "total_amount"),
                ["invoice_code", "invoice_number"],
            ].itertuples(index=False, name=None)
        )
    }


def test_split_export_keeps_each_invoice_with_its_lines(
    real: GenerateResult, rn: RealNight, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past a sheet's row limit the export is several workbooks, each with both sheets and its 合计行."""
    limit = 1500
    monkeypatch.setattr(generate_module, "_SHEET_MAX_ROWS", limit)
    split = generate_night(tmp_path, NIGHT, rows=ROWS, seed=SEED)
    parts = read_real(split)
    start = (NIGHT - timedelta(days=6)).strftime("%Y%m%d")
    stem = f"全量发票查询导出结果（{start}-{NIGHT.strftime('%Y%m%d')}）"
    names = [w["file"] for w in parts.workbooks]
    assert names == [f"{stem}.xlsx"] + [f"{stem}_{i}.xlsx" for i in range(2, len(names) + 1)]
    assert len(names) >= 4
    for w in parts.workbooks:
        assert w["sheets"] == ["信息汇总表", "发票基础信息"]
        assert 0 < len(w["lines_raw"]) <= limit and w["totals"][0] == "合计行"
        mine = parts.invoices[parts.invoices["workbook"] == w["file"]]
        assert _fen(w["totals"][REGISTRY_COLUMNS.index("金额")]) == mine["金额"].sum()
        assert set(parts.lines.loc[parts.lines["workbook"] == w["file"], "key"]) == set(mine["key"])
    assert parts.invoices.groupby("key")["workbook"].nunique().max() == 1
    # the same night, only cut differently: the same rows, the same issuer files, the same findings
    columns = [c for c in rn.invoices.columns if c not in ("序号", "workbook")]
    assert sorted(map(tuple, parts.invoices[columns].astype(str).values)) == sorted(
        map(tuple, rn.invoices[columns].astype(str).values)
    )
    assert split.expected_path.read_bytes() == real.expected_path.read_bytes()
    for p in real.files:
        if "issuers" in p.parts:
            assert (split.night_dir / p.relative_to(real.night_dir)).read_bytes() == p.read_bytes()
