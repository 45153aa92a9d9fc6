"""Tests of the synthetic night generator.

Besides layout and determinism, these re-derive some expected findings independently from the written
files (plain pandas, no generator internals), so a generator bug cannot hide behind its own logic.
"""

from __future__ import annotations

import csv
import hashlib
import json
import unicodedata
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from stdnum.cn import uscc

from fapiao_audit.generate import (
    EXPECTED_COLUMNS,
    ISSUER_COLUMNS,
    ISSUER_SYSTEMS,
    REGISTRY_COLUMNS,
    GenerateResult,
    generate_night,
)
from fapiao_audit.model import CATEGORY_CODES

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
    return generate_night(tmp_path_factory.mktemp("land"), NIGHT, rows=ROWS, seed=SEED)


@pytest.fixture(scope="module")
def next_night(night: GenerateResult) -> GenerateResult:
    return generate_night(night.night_dir.parent, NIGHT + timedelta(days=1), rows=ROWS, seed=SEED)


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
    df: pd.DataFrame, category: str, columns: tuple[str, ...] = EXPECTED_COLUMNS
) -> set[tuple[str, ...]]:
    sub = df[df["category"] == category]
    return set(map(tuple, sub[list(columns)].itertuples(index=False, name=None)))


# ---------------------------------------------------------------------------------------------
# determinism and replacement
# ---------------------------------------------------------------------------------------------


def test_same_arguments_give_byte_identical_files(night: GenerateResult, tmp_path: Path) -> None:
    again = generate_night(tmp_path, NIGHT, rows=ROWS, seed=SEED)
    assert _sha256_tree(again.night_dir) == _sha256_tree(night.night_dir)
    assert again.counts == night.counts and again.rows_per_source == night.rows_per_source


def test_rerun_replaces_the_night_folder(tmp_path: Path) -> None:
    first = generate_night(tmp_path, NIGHT, rows=ROWS, seed=3)
    (first.night_dir / "stray.txt").write_text("left over", encoding="utf-8")
    second = generate_night(tmp_path, NIGHT, rows=ROWS, seed=4)
    assert second.night_dir == first.night_dir
    assert not (second.night_dir / "stray.txt").exists()
    assert json.loads((second.night_dir / "generation.json").read_text(encoding="utf-8"))["seed"] == 4
    assert [p.name for p in tmp_path.iterdir()] == [NIGHT.isoformat()]  # no temp folders left behind


def test_other_seed_gives_other_data(night: GenerateResult, tmp_path: Path) -> None:
    other = generate_night(tmp_path, NIGHT, rows=ROWS, seed=SEED + 1)
    assert _sha256_tree(other.night_dir) != _sha256_tree(night.night_dir)


def test_too_few_rows_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too small"):
        generate_night(tmp_path, NIGHT, rows=50)
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
    assert counts == {s: night.rows_per_source[s] for s in ISSUER_SYSTEMS}
    share = {s: counts[s] / len(issuers) for s in ISSUER_SYSTEMS}
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
    for system in ISSUER_SYSTEMS:
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
    assert rows[0] == list(EXPECTED_COLUMNS)
    body = [tuple(r) for r in rows[1:]]
    assert body == sorted(body)
    assert len(set(body)) == len(body)
    assert Counter(r[0] for r in body) == {k: v for k, v in night.counts.items() if v}
    for category in CATEGORY_CODES:
        assert night.counts[category] > 0, category
    assert {r[0] for r in body} == set(CATEGORY_CODES)
    legacy = [r for r in body if r[1]]
    assert all(len(r[1]) == 12 for r in legacy)
    assert all(len(r[2]) == 20 and r[1] == "" for r in body if not r[1])


def test_finding_conventions(night: GenerateResult) -> None:
    e = read_expected(night.expected_path)
    k = max(3, ROWS // 2000)
    for category in CATEGORY_CODES:
        assert night.counts[category] >= (k if category != "PENDING_SYNC" else 2), category
    systems = set(ISSUER_SYSTEMS)

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
    later = generate_night(tmp_path, NIGHT + timedelta(days=3), rows=ROWS, seed=SEED)
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
