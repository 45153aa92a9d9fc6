"""Deterministic synthetic landing nights with known injected defects and their expected findings.

``generate_night`` writes one business night the way the job receives it (``registry/`` plus
``issuers/<system>/``, see DESIGN.md "Input contract") together with ``expected_findings.csv``,
the findings a correct reconciler must report for exactly these files. It serves the demo, the
end-to-end tests and the benchmarks, so it has to be realistic, exact and fast.

Two layouts:

* ``real`` (the default), as the sources really deliver: the registry's 全量发票查询 download, one or
  more workbooks ``全量发票查询导出结果（<start>-<night>）[_k].xlsx`` with sheet 信息汇总表 (one row per
  invoice line, 27 columns) before sheet 发票基础信息 (one row per invoice, 19 columns, 合计行 last),
  split where the lines exceed a sheet's 1,048,575 rows; the ERP's export as two UTF-8-BOM line files
  (one row per invoice line, the invoice's fields repeated, 单据编号, amounts like ``1,234.50``); the
  point of sale's third-party invoicing tool as a GBK CSV (发票代码, 票据类型, 开票时间, 销方税号, ...,
  价税合计金额); the web shop as JSON Lines; and three issuing systems in their own vocabularies: a 税控
  query export (GB18030 CSV, pinyin headers, numeric state codes, dotted dates, some 数电 rows with both
  their 20-digit number and an 8-digit one), a shop's invoicing API (JSON Lines, epoch milliseconds, state
  words, a blue/red ``invoiceType`` flag) and a batch-invoicing template (a workbook with instruction rows
  above its header, ``*`` on required columns, an ERP document number). Invoices have lines (mixed rates,
  discount lines, 免税 and 不征税), and the kinds of defect that only lines, the registry's risk level and
  the issuers' issuance and upload states can carry. The state codes need the configuration
  ``SOURCES_TOML`` (``fapiao-audit generate`` writes it beside the night; the demo runs with it).
* ``flat``: one row per invoice everywhere (a GB18030 registry CSV with a 合计 row, ERP Parquet, POS
  CSV, web-shop JSON Lines), byte for byte what the benchmarks have always used, up to 50M rows.

The workbooks are written without a spreadsheet library: DuckDB writes each sheet's rows as XML
(inline strings, numbers as values) straight to a file, and a small zip writer packages them, its
deflate pieces compressed in parallel; the same arguments give the same bytes.

How it stays exact and fast at 10M rows per side:

* Every invoice is a pure function of ``(seed, issue day, per-day sequence number)``. The bulk rows
  are produced by DuckDB from ``range()`` and ``hash()`` (never ``random()``, which is not
  reproducible under parallelism); Python only builds small tables (party pools, per-day
  parameters, the sequence numbers that carry a defect).
* Because an invoice depends on its day and not on the night, night D and night D+1 contain the same
  invoices for their shared days, like real trailing-window snapshots. Only registry presence moves:
  a record is in night D's registry export when it arrived by ``as_of`` (late "pending" records show up
  in a later night, "lost" ones never).
* Defects are placed on reserved ranks of a per-day permutation of the sequence, so they are spread
  over the day, never overlap, and never touch red/blue pairs or purchase invoices.
* The expected findings are derived from what was actually written (presence, duplicates, field and
  status differences, rule violations), following DESIGN.md's categories, so time-dependent outcomes
  (pending vs. missing, a date shift pushing a registry record out of the window) are right for every
  night rather than assumed.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import math
import os
import shutil
import struct
import tempfile
import uuid
import zipfile
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
from stdnum.cn import uscc

from .model import zero_counts

__all__ = [
    "BATCH_COLUMNS",
    "ERP_LINE_COLUMNS",
    "EXPECTED_COLUMNS",
    "FLAT_EXPECTED_COLUMNS",
    "FLAT_ISSUER_SYSTEMS",
    "ISSUER_SYSTEMS",
    "LAYOUTS",
    "POS_COLUMNS",
    "REGISTRY_COLUMNS",
    "REGISTRY_LINE_COLUMNS",
    "ISSUER_COLUMNS",
    "SHOPAPI_FIELDS",
    "SOURCES_TOML",
    "TAXCTL_COLUMNS",
    "TAXCTL_STATUS_CODES",
    "TAXCTL_UPLOAD_CODES",
    "GenerateResult",
    "generate_night",
]

#: Layouts of a generated night: ``real`` (the default: the registry's workbook as the platform writes
#: it, invoice lines, the issuers' own formats) and ``flat`` (one row per invoice everywhere).
LAYOUTS: tuple[str, ...] = ("real", "flat")

#: Issuing systems of the flat layout (folder names): erp ~50 %, pos ~30 %, webshop ~20 % of issuer rows.
FLAT_ISSUER_SYSTEMS: tuple[str, ...] = ("erp", "pos", "webshop")
#: Issuing systems of the real layout: the flat layout's three (about 73 % of issuer rows between them),
#: then a 税控 query export (taxctl, ~12 %), a shop's invoicing API (shopapi, ~7 %, 数电 invoices only) and a
#: batch-invoicing template (batch, ~8 %).
ISSUER_SYSTEMS: tuple[str, ...] = (*FLAT_ISSUER_SYSTEMS, "taxctl", "shopapi", "batch")
#: The systems that deliver an issuance state beyond normal / voided and an upload (报送) state.
_STATE_SYSTEMS: tuple[str, ...] = ("taxctl", "shopapi", "batch")

#: Columns of expected_findings.csv (real layout). ``cause`` is set on MISSING_IN_REGISTRY and
#: PENDING_SYNC only: why the invoice is missing, from the issuer's issuance and upload states.
EXPECTED_COLUMNS: tuple[str, ...] = (
    "category",
    "invoice_code",
    "invoice_number",
    "field",
    "source_system",
    "cause",
)
#: The flat layout's expected_findings.csv keeps its earlier columns (byte for byte): its systems deliver no
#: upload state, so every MISSING_IN_REGISTRY / PENDING_SYNC there has the cause ``unknown``.
FLAT_EXPECTED_COLUMNS: tuple[str, ...] = EXPECTED_COLUMNS[:5]

#: The 税控 export's numeric codes (开票状态, bszt) and what they mean; a night needs them mapped
#: (SOURCES_TOML), since the same digits mean other things in other systems.
TAXCTL_STATUS_CODES: dict[str, str] = {"0": "开票成功", "1": "开票中", "2": "开票失败", "3": "作废中"}
TAXCTL_UPLOAD_CODES: dict[str, str] = {
    "0": "未报送",
    "1": "已报送",
    "2": "报送失败",
    "3": "验签失败",
    "4": "报送中",
}


def _toml_table(name: str, codes: dict[str, str]) -> str:
    return f"[{name}]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in codes.items())


#: The configuration a real-layout night needs (TOML): the 税控 export's state codes, and the shop API's
#: invoiceType (a blue/red flag, not a kind) dropped. The same tables, commented, are in config.example.toml.
SOURCES_TOML: str = (
    "# The issuing systems of a generated night (fapiao-audit generate): value codes and ignored columns.\n"
    "# taxctl (a 税控 query export) writes its issuance state (开票状态) and upload state (bszt) as codes.\n"
    + _toml_table("sources.taxctl.values.status", TAXCTL_STATUS_CODES)
    + "\n"
    + _toml_table("sources.taxctl.values.upload_status", TAXCTL_UPLOAD_CODES)
    + "\n# shopapi (a shop's invoicing API): invoiceType is 1 = blue, 2 = red, not an invoice kind.\n"
    + '[sources.shopapi]\nignore_columns = ["invoiceType"]\n'
)

#: The registry's Chinese export layout, in file order.
REGISTRY_COLUMNS: tuple[str, ...] = (
    "序号", "发票代码", "发票号码", "数电发票号码", "销方识别号", "销方名称", "购方识别号", "购买方名称",
    "开票日期", "金额", "税额", "价税合计", "发票来源", "发票票种", "发票状态", "是否正数发票",
    "发票风险等级", "开票人", "备注",
)  # fmt: skip

#: Canonical columns (keys) of the issuer files, in file order.
ISSUER_COLUMNS: tuple[str, ...] = (
    "invoice_code", "invoice_number", "invoice_type", "issue_time", "seller_tax_id", "seller_name",
    "buyer_tax_id", "buyer_name", "amount", "tax_amount", "tax_rate", "total_amount", "status",
    "original_invoice_number", "remark",
)  # fmt: skip

# Defect kinds placed on reserved per-day ranks (one slot each). "voided" is a consistent
# void on both sides (no finding): it makes the status column realistic, not a defect.
_SINGLE_KINDS: tuple[str, ...] = (
    "lost",
    "missing_in_issuer",
    "dup_issuer",
    "dup_registry",
    "dup_across",
    "fm_amount",
    "fm_date",
    "fm_buyer_name",
    "fm_buyer_tax_id",
    "fm_seller_tax_id",
    "fm_type",
    "status_voided",
    "registry_risk",
    "inv_total",
    "inv_rate",
    "inv_checksum",
    "inv_typo",
    "orphan_missing",
)

_ANCHOR_SELLERS = 10  # sellers guaranteed to issue every day, so defects needing a monitored seller use them
_N_SELLERS = 300
_N_BUYERS = 5000  # multiple of 20: index % 20 == 19 are individuals, (i + 20) % n keeps the class
_N_OUTSIDE = 200
_DAY_START_S = 7 * 3600  # invoices are issued 07:00..22:59:59, so normal arrivals never cross midnight
_DAY_SPAN_S = 16 * 3600
_PENDING_DELAY_S = 60 * 3600
_MAX_NORMAL_DELAY_S = 1800

_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_BEIJING_DISTRICTS = (
    "110101", "110102", "110105", "110106", "110107", "110108", "110109", "110111", "110112",
    "110113", "110114", "110115", "110116", "110117",
)  # fmt: skip
_BUYER_REGIONS: tuple[tuple[str, str], ...] = (
    ("110105", "北京"), ("110108", "北京"), ("110102", "北京"), ("110106", "北京"), ("310115", "上海"),
    ("310104", "上海"), ("120101", "天津"), ("440106", "广州"), ("440305", "深圳"), ("330106", "杭州"),
    ("320102", "南京"), ("510104", "成都"), ("420106", "武汉"), ("610113", "西安"),
)  # fmt: skip
_OUTSIDE_REGIONS: tuple[tuple[str, str], ...] = tuple(r for r in _BUYER_REGIONS if not r[0].startswith("11"))
_CORE_WORDS = (
    "华信", "中科", "博远", "天成", "瑞达", "金桥", "恒通", "宏图", "鼎盛", "汇智", "远景", "星辰", "京华",
    "正和", "安泰", "德润", "新元", "嘉禾", "卓越", "广源", "同创", "盛世", "联创", "长城", "东方", "万通",
    "海纳", "银河", "众诚", "立信", "明德", "凯旋", "永信", "启航", "云帆", "睿思", "清源", "朗润", "和光",
    "泰康", "百川", "君合", "思源", "华夏", "宏远", "信达", "易通", "锦程", "致远", "合力",
)  # fmt: skip
_INDUSTRIES = (
    "科技", "信息技术", "网络科技", "软件", "电子商务", "贸易", "商贸", "文化传媒", "广告", "餐饮管理",
    "酒店管理", "建筑工程", "装饰工程", "物业管理", "医药", "医疗器械", "教育科技", "企业管理咨询", "物流",
    "供应链管理", "新能源", "环保科技", "食品", "服饰", "印刷",
)  # fmt: skip
_SUFFIXES = ("有限公司", "有限责任公司", "股份有限公司")
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
)
_GIVEN = (
    "伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超",
    "秀兰", "霞", "平", "刚", "桂英", "建华", "文", "华", "建国", "红梅", "志强", "晓明", "海燕", "丹",
)  # fmt: skip


@dataclass(frozen=True)
class GenerateResult:
    """What ``generate_night`` wrote.

    ``files`` are the landing input files (registry and issuers) in sorted order; ``counts`` holds the
    expected findings per category (every category present, possibly 0); ``rows_per_source`` the data
    rows written per issuing system and for ``registry`` (its invoice rows; the totals row and the batch
    template's instruction rows not counted; in the real layout the ERP's rows are its invoice lines);
    ``lines_per_source`` (real layout) the invoice lines written by the ERP and in the registry's 信息汇总表.
    """

    night_dir: Path
    files: list[Path]
    expected_path: Path
    counts: dict[str, int]
    rows_per_source: dict[str, int]
    layout: str = "real"
    lines_per_source: dict[str, int] = field(default_factory=dict)
    #: (real layout) MISSING_IN_REGISTRY and PENDING_SYNC findings per cause.
    causes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Plan:
    """Per-day sizes, derived from ``rows`` and the window only (never from the night)."""

    per_day: int
    purchases_per_day: int
    k_night: int
    k_day: int
    pending_per_day: int
    red_pairs_per_day: int
    voided_per_day: int
    slots: tuple[tuple[str, str | None], ...]  # (kind, pair_kind) per reserved rank; pairs take two ranks


# --------------------------------------------------------------------------------------------------
# Deterministic helpers (Python side: small pools and per-day parameters)
# --------------------------------------------------------------------------------------------------


def _stable_int(*parts: object) -> int:
    """A 63-bit integer from the parts, identical on every platform and Python version."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _org_code(body8: str) -> str:
    """GB 11714 organisation code: 8 characters plus its check character.

    python-stdnum does not validate the embedded organisation code, but real USCCs carry a valid
    one, so it is computed anyway.
    """
    total = sum(
        (int(c) if c.isdigit() else ord(c) - 55) * w for c, w in zip(body8, _ORG_WEIGHTS, strict=True)
    )
    check = 11 - total % 11
    return body8 + ("X" if check == 10 else "0" if check == 11 else str(check))


def _make_uscc(region: str, body8: str) -> str:
    """A GB 32100 unified social credit code for an enterprise (``91``) registered in ``region``."""
    first17 = "91" + region + _org_code(body8)
    code = first17 + uscc.calc_check_digit(first17)
    if not uscc.is_valid(code):  # pragma: no cover - guards the construction above
        raise AssertionError(f"constructed an invalid USCC {code}")
    return code


def _uscc_pool(seed: int, label: str, regions: Sequence[str], count: int, used: set[str]) -> list[str]:
    """``count`` distinct valid USCCs, none of them in ``used`` (which is extended)."""
    letters = _USCC_ALPHABET
    ids: list[str] = []
    attempt = 0
    while len(ids) < count:
        h = _stable_int(seed, label, "uscc", attempt)
        attempt += 1
        if h % 10 < 3:  # newer codes: 'MA' + 6 alphanumerics
            body = "MA" + "".join(letters[(h >> (5 * i + 8)) % len(letters)] for i in range(6))
        else:
            body = f"{(h >> 8) % 100_000_000:08d}"
        code = _make_uscc(regions[(h >> 4) % len(regions)] if len(regions) > 1 else regions[0], body)
        if code not in used:
            used.add(code)
            ids.append(code)
    return ids


def _company_names(seed: int, label: str, city: Sequence[str], count: int, used: set[str]) -> list[str]:
    """Distinct realistic company names; about 6% carry full-width brackets."""
    names: list[str] = []
    attempt = 0
    while len(names) < count:
        h = _stable_int(seed, label, "name", attempt)
        c = city[len(names) % len(city)]
        core = _CORE_WORDS[h % len(_CORE_WORDS)]
        industry = _INDUSTRIES[(h >> 8) % len(_INDUSTRIES)]
        suffix = _SUFFIXES[(h >> 16) % len(_SUFFIXES)]
        variant = (h >> 24) % 100
        if variant < 3:
            name = f"{c}{core}（中国）有限公司"
        elif variant < 6:
            name = f"{core}{industry}（{c}）有限公司"
        else:
            name = f"{c}{core}{industry}{suffix}"
        attempt += 1
        if name not in used:
            used.add(name)
            names.append(name)
    return names


def _person_names(seed: int, count: int) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    attempt = 0
    while len(names) < count:
        h = _stable_int(seed, "person", attempt)
        attempt += 1
        name = _SURNAMES[h % len(_SURNAMES)] + _GIVEN[(h >> 8) % len(_GIVEN)]
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _pools(seed: int) -> dict[str, pa.Table]:
    """Seller, buyer, outside-seller and clerk pools (depend on the seed only)."""
    used_ids: set[str] = set()
    used_names: set[str] = set()
    seller_ids = _uscc_pool(seed, "seller", _BEIJING_DISTRICTS, _N_SELLERS, used_ids)
    seller_names = _company_names(seed, "seller", ("北京",), _N_SELLERS, used_names)

    n_people = _N_BUYERS // 20
    n_companies = _N_BUYERS - n_people
    buyer_regions = [r for r, _ in _BUYER_REGIONS]
    company_ids = _uscc_pool(seed, "buyer", buyer_regions, n_companies, used_ids)
    # a company's name names the city of its registration region
    company_names: list[str] = []
    for i, tax_id in enumerate(company_ids):
        city = dict(_BUYER_REGIONS)[tax_id[2:8]]
        company_names.extend(_company_names(seed, f"buyer-{i}", (city,), 1, used_names))
    people = _person_names(seed, n_people)
    buyer_ids: list[str] = []
    buyer_names: list[str] = []
    ci = pi = 0
    for idx in range(_N_BUYERS):
        if idx % 20 == 19:
            buyer_ids.append("")
            buyer_names.append(people[pi])
            pi += 1
        else:
            buyer_ids.append(company_ids[ci])
            buyer_names.append(company_names[ci])
            ci += 1

    outside_regions = [r for r, _ in _OUTSIDE_REGIONS]
    outside_ids = _uscc_pool(seed, "outside", outside_regions, _N_OUTSIDE, used_ids)
    outside_names = [
        _company_names(seed, f"outside-{i}", (dict(_OUTSIDE_REGIONS)[t[2:8]],), 1, used_names)[0]
        for i, t in enumerate(outside_ids)
    ]
    clerks = _person_names(seed + 1, 40)
    return {
        "sellers": pa.table({"idx": range(_N_SELLERS), "tax_id": seller_ids, "name": seller_names}),
        "buyers": pa.table({"idx": range(_N_BUYERS), "tax_id": buyer_ids, "name": buyer_names}),
        "outside": pa.table(
            {
                "idx": range(_N_OUTSIDE),
                "tax_id": outside_ids,
                "name": outside_names,
                "prov": [t[2:4] for t in outside_ids],
            }
        ),
        "clerks": pa.table({"idx": range(len(clerks)), "name": clerks}),
    }


def _coprime_multiplier(modulus: int, start: int) -> int:
    """A multiplier coprime with ``modulus`` (so ``s -> s*m + o (mod modulus)`` is a permutation)."""
    m = start % modulus or 1
    while math.gcd(m, modulus) != 1:
        m = m % modulus + 1
    return m


def _plan(rows: int, window_days: int, layout: str = "flat") -> _Plan:
    """How many invoices and defect slots each day gets.

    K = max(3, rows // 2000) cases per kind and night are spread over the window's days, rounded up to
    whole cases per day (so a night holds window_days * ceil(K / window_days) >= K of each kind).
    Pending invoices only surface as PENDING_SYNC on the last two days of a night, so each day gets
    ceil(K / 2) of them. The real layout adds its own kinds (lines, risk levels, a stale blue, the
    issuance and upload states) after the flat layout's slots, so the flat layout's ranks never move; a
    day then needs 1.5 invoices per slot instead of 2.
    """
    per_day = math.ceil(rows / window_days)
    k_night = max(3, rows // 2000)
    k_day = math.ceil(k_night / window_days)
    pending = math.ceil(k_night / 2)
    red_pairs = max(1, round(per_day / 100))
    voided = max(1, per_day // 1000)
    slots: list[tuple[str, str | None]] = [("anchor", None)] * _ANCHOR_SELLERS
    for kind in _SINGLE_KINDS:
        slots += [(kind, None)] * k_day
    slots += [("pending", None)] * pending
    slots += [("voided", None)] * voided
    # red/blue pairs: two ranks per pair; alternate full and partial reversals
    for p in range(red_pairs):
        kind = "full" if p % 2 == 0 else "partial"
        slots += [("pair", kind), ("pair", kind)]
    for _ in range(k_day):
        slots += [("pair", "exceeds"), ("pair", "exceeds")]
    if layout == "real":
        for kind in _REAL_KINDS:
            slots += [(kind, None)] * k_day
        for _ in range(k_day):  # partial red issued, the issuer's blue still says normal
            slots += [("pair", "stale"), ("pair", "stale")]
        for kind in _STATE_KINDS:
            slots += [(kind, None)] * k_day
    if per_day > 9_000_000:  # keeps s * multiplier inside BIGINT and s inside the 2^24 key space
        raise ValueError(f"rows={rows} exceeds {9_000_000 * window_days} for a {window_days}-day window")
    need = 2 * len(slots) if layout == "flat" else math.ceil(1.5 * len(slots))
    if per_day < need:
        minimum = need * window_days
        raise ValueError(
            f"rows={rows} is too small for a {window_days}-day window: every day needs at least "
            f"{need} invoices to hold its injected defects (use rows >= {minimum})"
        )
    return _Plan(
        per_day=per_day,
        purchases_per_day=max(1, round(per_day * 0.03)),
        k_night=k_night,
        k_day=k_day,
        pending_per_day=pending,
        red_pairs_per_day=red_pairs,
        voided_per_day=voided,
        slots=tuple(slots),
    )


_DAYS_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("dn", pa.int64()),
        ("ds", pa.int64()),
        ("yy", pa.string()),
        ("doy", pa.string()),
        ("m12", pa.int64()),
        ("off12", pa.int64()),
        ("m8", pa.int64()),
        ("off8", pa.int64()),
    ]
)
_ROLES_SCHEMA = pa.schema(
    [
        ("dn", pa.int64()),
        ("s", pa.int64()),
        ("kind", pa.string()),
        ("j", pa.int64()),
        ("pair_kind", pa.string()),
        ("role", pa.string()),
        ("partner_s", pa.int64()),
        ("typo_number", pa.string()),
    ]
)


def _day_tables(seed: int, days: Sequence[date], plan: _Plan) -> tuple[pa.Table, pa.Table]:
    """Per-day parameters and the per-day roles (defect slots, red/blue pairs, typo numbers).

    A day's rank permutation ``r = (s * mult + off) mod n`` is inverted here, so the SQL joins the few
    special sequence numbers by value instead of evaluating a rank for every row.
    """
    n = plan.per_day
    day_rows: list[dict[str, object]] = []
    role_rows: list[dict[str, object]] = []
    for day in days:
        dn = (day - date(1970, 1, 1)).days
        ds = _stable_int(seed, day.isoformat(), "day")
        # number scramblers: s -> (s * m + off) mod 10^k is a bijection, so numbers never collide
        m12 = _coprime_multiplier(10**12, 10**11 + _stable_int(ds, "m12") % (9 * 10**11))
        m8 = _coprime_multiplier(10**8, 10**7 + _stable_int(ds, "m8") % (9 * 10**7))
        off12 = _stable_int(ds, "off12") % 10**12
        off8 = _stable_int(ds, "off8") % 10**8
        day_rows.append(
            {
                "day": day,
                "dn": dn,
                "ds": ds,
                "yy": f"{day.year % 100:02d}",
                "doy": f"{day.timetuple().tm_yday:03d}",
                "m12": m12,
                "off12": off12,
                "m8": m8,
                "off8": off8,
            }
        )

        mult = _coprime_multiplier(n, _stable_int(ds, "mult") % n)
        off = _stable_int(ds, "off") % n
        inverse = pow(mult, -1, n)
        per_kind: dict[str, int] = {}
        typo_seen: set[str] = set()
        rank = 0
        while rank < len(plan.slots):
            kind, pair_kind = plan.slots[rank]
            j = per_kind.get(kind, 0)
            per_kind[kind] = j + 1
            base = {"dn": dn, "kind": kind, "j": j, "pair_kind": pair_kind, "role": None, "partner_s": None}
            if kind == "pair":
                a, b = (((r - off) * inverse) % n for r in (rank, rank + 1))
                blue, red = min(a, b), max(a, b)  # the blue is issued first
                role_rows.append({**base, "s": blue, "role": "blue", "partner_s": red, "typo_number": None})
                role_rows.append({**base, "s": red, "role": "red", "partner_s": blue, "typo_number": None})
                rank += 2
                continue
            s = ((rank - off) * inverse) % n
            typo: str | None = None
            if kind == "inv_typo":
                number8 = f"{(s * m8 + off8) % 10**8:08d}"  # as the SQL macro num8 formats it
                drop = 1 + _stable_int(ds, s, "typo") % 6  # a middle digit: leading zeros stay visible
                typo = number8[:drop] + number8[drop + 1 :]
                if typo in typo_seen:  # two typos collapsing to one number: keep the invoice clean
                    base["kind"], typo = "clean", None
                else:
                    typo_seen.add(typo)
            role_rows.append({**base, "s": s, "typo_number": typo})
            rank += 1
    return (
        pa.Table.from_pylist(day_rows, schema=_DAYS_SCHEMA),
        pa.Table.from_pylist(role_rows, schema=_ROLES_SCHEMA),
    )


# --------------------------------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------------------------------
# Big tables stay compact (integers, booleans, short codes): text is produced only while writing
# files and for the (small) expected findings. A key is identified by key_id = dn * 2^24 + s; a typo'd
# issuer key by -key_id; a phantom blue (orphan red) by 2^45 + key_id; purchase invoices by 2^46 + ...

_KEY_DAY = 1 << 24
_PHANTOM_BASE = 1 << 45
_PURCHASE_BASE = 1 << 46

_MACROS = r"""
-- hash() combines its arguments almost linearly, so values for different salts would be correlated;
-- hashing the combination again decorrelates them.
CREATE MACRO hr(ds, s, salt, m) AS CAST(hash(hash(ds, s, salt)) >> 1 AS BIGINT) % m;
CREATE MACRO tax_of(f, pct) AS sign(f) * ((abs(f) * pct + 50) // 100);
CREATE MACRO num20(yy, prov, doy, ch, s, m, o) AS
    yy || prov || doy || ch || lpad(CAST((s * m + o) % 1000000000000 AS VARCHAR), 12, '0');
CREATE MACRO num8(s, m, o) AS lpad(CAST((s * m + o) % 100000000 AS VARCHAR), 8, '0');
CREATE MACRO inv_code(is_digital, is_special, yy, doy) AS CASE WHEN is_digital THEN ''
    ELSE '01100' || yy || doy || CASE WHEN is_special THEN '13' ELSE '11' END END;
CREATE MACRO inv_number(is_digital, s, yy, doy, m12, off12, m8, off8) AS CASE WHEN is_digital
    THEN num20(yy, '11', doy, '0', s, m12, off12) ELSE num8(s, m8, off8) END;
CREATE MACRO fen_txt(f) AS
    (CASE WHEN f < 0 THEN '-' ELSE '' END) || CAST(abs(f) // 100 AS VARCHAR) || '.'
    || lpad(CAST(abs(f) % 100 AS VARCHAR), 2, '0');
CREATE MACRO fen_fmt(f) AS
    (CASE WHEN f < 0 THEN '-' ELSE '' END) || format('{:,}', abs(f) // 100) || '.'
    || lpad(CAST(abs(f) % 100 AS VARCHAR), 2, '0');
CREATE MACRO type_name(is_digital, is_special) AS CASE
    WHEN is_digital AND is_special THEN '数电票（增值税专用发票）'
    WHEN is_digital THEN '数电票（普通发票）'
    WHEN is_special THEN '增值税专用发票'
    ELSE '增值税电子普通发票' END;
CREATE MACRO break_check(x) AS left(x, 17) || CASE WHEN right(x, 1) = '0' THEN '1' ELSE '0' END;
CREATE MACRO fat_id(x) AS translate(x, '0123456789ABCDEFGHJKLMNPQRTUWXY',
    '０１２３４５６７８９ＡＢＣＤＥＦＧＨＪＫＬＭＮＰＱＲＴＵＷＸＹ');
"""

# One row per invoice of our sellers in the window: the issuer's truth plus the registry's version.
# A red invoice draws its party/type/amount attributes with its blue's sequence number (column a),
# which is how it inherits them without a self-join.
_INV_SQL = r"""
CREATE TABLE inv AS
WITH seq AS (
    SELECT d.day, d.dn, d.ds, t.s,
           coalesce(ro.kind, '') AS dk, ro.j, ro.pair_kind, ro.role, ro.partner_s, ro.typo_number,
           CASE WHEN ro.role = 'red' THEN ro.partner_s ELSE t.s END AS a
    FROM days AS d
    CROSS JOIN range($n) AS t(s)
    LEFT JOIN roles AS ro ON ro.dn = d.dn AND ro.s = t.s
), draw AS (
    SELECT *,
        CASE WHEN dk = 'inv_typo' THEN false WHEN dk = 'orphan_missing' THEN true
             ELSE hr(ds, a, 1, 100) < 70 END AS is_digital,
        CASE WHEN hr(ds, a, 2, 10) < 5 THEN 'erp' WHEN hr(ds, a, 2, 10) < 8 THEN 'pos' ELSE 'webshop' END
            AS system,
        CASE WHEN dk = 'anchor' THEN j
             WHEN dk = 'missing_in_issuer' THEN hr(ds, a, 3, $n_anchor)
             ELSE hr(ds, a, 3, $n_sellers) END AS seller_idx,
        hr(ds, a, 4, $n_buyers) AS buyer_draw,
        hr(ds, a, 5, 100) < 35 AS special_draw,
        CASE WHEN hr(ds, a, 8, 100) < 30 THEN 1000 + hr(ds, a, 9, 9000)
             WHEN hr(ds, a, 8, 100) < 65 THEN 10000 + hr(ds, a, 9, 90000)
             WHEN hr(ds, a, 8, 100) < 90 THEN 100000 + hr(ds, a, 9, 900000)
             ELSE 1000000 + hr(ds, a, 9, 19000000) END AS fen0,
        CASE WHEN hr(ds, a, 10, 100) < 45 THEN 13 WHEN hr(ds, a, 10, 100) < 70 THEN 6
             WHEN hr(ds, a, 10, 100) < 80 THEN 9 WHEN hr(ds, a, 10, 100) < 90 THEN 3 ELSE 1 END AS rate_pct,
        CAST(day AS TIMESTAMP)
            + to_seconds($day_start + s * $day_span // $n + hr(ds, s, 6, greatest(1, $day_span // $n)))
            AS issue_time
    FROM seq
), attrs AS (
    SELECT *,
        CASE WHEN dk IN ('fm_buyer_tax_id', 'inv_checksum', 'fm_type') AND buyer_draw % 20 = 19
             THEN buyer_draw - 1 ELSE buyer_draw END AS buyer_idx
    FROM draw
), money AS (
    SELECT *,
        buyer_idx % 20 <> 19 AND special_draw AS is_special,
        CASE WHEN role = 'red' AND pair_kind = 'full' THEN -fen0
             WHEN role = 'red' AND pair_kind = 'partial' THEN -(fen0 * (10 + hr(ds, s, 19, 81)) // 100)
             WHEN role = 'red' THEN -(fen0 * 3 // 2)
             WHEN dk = 'orphan_missing' THEN -fen0
             ELSE fen0 END AS fen
    FROM attrs
), taxed AS (
    SELECT *,
        tax_of(fen, rate_pct) + CASE WHEN dk = 'inv_rate' THEN 10 + hr(ds, s, 20, 990) ELSE 0 END AS tax,
        CASE WHEN dk = 'fm_amount' THEN (fen * 11 + 5) // 10 ELSE fen END AS reg_fen
    FROM money
)
SELECT
    CAST(dn AS INTEGER) AS dn,
    CAST(s AS INTEGER) AS s,
    dn * $key_day + s AS key_id,
    CASE WHEN dk = 'inv_typo' THEN -(dn * $key_day + s) ELSE dn * $key_day + s END AS iss_key_id,
    CASE WHEN role = 'red' THEN dn * $key_day + partner_s
         WHEN dk = 'orphan_missing' THEN $phantom + dn * $key_day + s END AS orig_key_id,
    CAST(CASE WHEN role = 'red' THEN partner_s END AS INTEGER) AS orig_s,
    dk,
    typo_number,
    is_digital,
    is_special,
    CASE WHEN dk = 'fm_type' THEN NOT is_special ELSE is_special END AS reg_is_special,
    system,
    CASE WHEN hr(ds, s, 12, 2) = 0 THEN
        CASE system WHEN 'erp' THEN 'pos' WHEN 'pos' THEN 'webshop' ELSE 'erp' END
    ELSE CASE system WHEN 'erp' THEN 'webshop' WHEN 'pos' THEN 'erp' ELSE 'pos' END END AS system2,
    CAST(hr(ds, s, 13, 2) AS TINYINT) AS part,
    CAST(hr(ds, s, 17, 2) AS TINYINT) AS dup_part,
    CAST(hr(ds, s, 11, 100) AS TINYINT) AS noise,
    CAST(seller_idx AS SMALLINT) AS seller_idx,
    CAST(CASE WHEN dk <> 'fm_seller_tax_id' THEN seller_idx
              WHEN hr(ds, s, 16, $n_anchor) = seller_idx THEN (seller_idx + 1) % $n_anchor
              ELSE hr(ds, s, 16, $n_anchor) END AS SMALLINT) AS reg_seller_idx,
    CAST(buyer_idx AS SMALLINT) AS buyer_idx,
    CAST(CASE WHEN dk = 'fm_buyer_tax_id' THEN (buyer_idx + 20) % $n_buyers ELSE buyer_idx END AS SMALLINT)
        AS reg_buyer_id_idx,
    CAST(CASE WHEN dk = 'fm_buyer_name' THEN (buyer_idx + 20) % $n_buyers ELSE buyer_idx END AS SMALLINT)
        AS reg_buyer_name_idx,
    dk = 'inv_checksum' AS bad_buyer_id,
    CAST(rate_pct AS TINYINT) AS rate_pct,
    fen,
    tax,
    fen + tax + CASE WHEN dk = 'inv_total' THEN 1 + hr(ds, s, 20, 500) ELSE 0 END AS total,
    reg_fen,
    CASE WHEN dk = 'fm_amount' THEN tax_of(reg_fen, rate_pct) ELSE tax END AS reg_tax,
    CASE WHEN dk = 'fm_amount' THEN reg_fen + tax_of(reg_fen, rate_pct)
         ELSE fen + tax + CASE WHEN dk = 'inv_total' THEN 1 + hr(ds, s, 20, 500) ELSE 0 END END AS reg_total,
    issue_time,
    CASE WHEN dk = 'fm_date' THEN issue_time - INTERVAL 1 DAY ELSE issue_time END AS reg_issue_time,
    CASE WHEN dk = 'lost' THEN NULL
         WHEN dk = 'pending' THEN issue_time + to_seconds($pending_delay)
         ELSE issue_time + to_seconds(60 + hr(ds, s, 7, $max_delay - 60)) END AS arrival,
    CASE WHEN role = 'blue' AND pair_kind = 'partial' THEN 'partly_red_reversed'
         WHEN role = 'blue' THEN 'red_reversed'
         WHEN dk = 'voided' THEN 'voided'
         ELSE 'normal' END AS status,
    CASE WHEN role = 'blue' AND pair_kind = 'partial' THEN 'partly_red_reversed'
         WHEN role = 'blue' THEN 'red_reversed'
         WHEN dk IN ('voided', 'status_voided') THEN 'voided'
         WHEN dk = 'registry_risk' AND hr(ds, s, 14, 2) = 0 THEN 'out_of_control'
         WHEN dk = 'registry_risk' THEN 'abnormal'
         ELSE 'normal' END AS reg_status,
    CAST((seller_idx * 7 + hr(ds, s, 18, 3)) % 40 AS TINYINT) AS clerk_idx,
    CASE WHEN role IS NULL AND dk <> 'orphan_missing' AND hr(ds, s, 21, 100) < 8
         THEN CAST(hr(ds, s, 22, 1000000) AS INTEGER) END AS contract_no
FROM taxed
"""

# Purchase invoices: outside sellers, our companies as buyers; registry only, out of scope.
_PUR_SQL = r"""
CREATE TABLE pur AS
WITH seq AS (
    SELECT d.dn, d.ds, d.day, t.s FROM days AS d CROSS JOIN range($np) AS t(s)
), draw AS (
    SELECT *,
        hr(ds, s, 101, 100) < 70 AS is_digital,
        hr(ds, s, 102, $n_outside) AS out_idx,
        hr(ds, s, 104, 100) < 40 AS is_special,
        CASE WHEN hr(ds, s, 105, 100) < 40 THEN 1000 + hr(ds, s, 106, 9000)
             WHEN hr(ds, s, 105, 100) < 80 THEN 10000 + hr(ds, s, 106, 90000)
             ELSE 100000 + hr(ds, s, 106, 2000000) END AS fen,
        CASE WHEN hr(ds, s, 107, 100) < 50 THEN 13 WHEN hr(ds, s, 107, 100) < 80 THEN 6 ELSE 9 END AS rate_pct
    FROM seq
)
SELECT
    CAST(dn AS INTEGER) AS dn, CAST(s AS INTEGER) AS s, $purchase + dn * $key_day + s AS key_id,
    is_digital, is_special,
    CAST(day AS TIMESTAMP)
        + to_seconds($day_start + s * $day_span // $np + hr(ds, s, 108, greatest(1, $day_span // $np)))
        AS issue_time,
    CAST(out_idx AS SMALLINT) AS out_idx,
    CAST(hr(ds, s, 103, $n_sellers) AS SMALLINT) AS buyer_idx,
    fen, tax_of(fen, rate_pct) AS tax, fen + tax_of(fen, rate_pct) AS total,
    CAST(hr(ds, s, 110, 100) AS TINYINT) AS noise,
    CAST((out_idx * 7 + hr(ds, s, 111, 3)) % 40 AS TINYINT) AS clerk_idx
FROM draw
"""

# Purchase invoices arrive within half an hour of issue; the snapshot holds those arrived by as_of.
_PUR_SNAP_SQL = r"""
CREATE TABLE pur_snap AS SELECT * FROM pur WHERE issue_time + INTERVAL 30 MINUTE <= $as_of
"""

# Issuer rows as exported: every invoice in its system (except those the issuer never exported),
# an exact second copy for dup_issuer, and a copy in a second system for dup_across.
_ISS_VIEW = r"""
CREATE VIEW iss AS
SELECT system AS src, part AS file_part, 0 AS copy_no, * EXCLUDE (system, system2, part, dup_part)
FROM inv WHERE dk <> 'missing_in_issuer'
UNION ALL
SELECT system AS src, dup_part AS file_part, 1 AS copy_no, * EXCLUDE (system, system2, part, dup_part)
FROM inv WHERE dk = 'dup_issuer'
UNION ALL
SELECT system2 AS src, part AS file_part, 0 AS copy_no, * EXCLUDE (system, system2, part, dup_part)
FROM inv WHERE dk = 'dup_across'
"""
# What the expected findings read besides: the issue time as written and the upload state (none here).
_ISS_VIEW_FLAT_STATES = r"""
CREATE VIEW iss_states AS SELECT *, issue_time AS written_time, CAST(NULL AS VARCHAR) AS upload FROM iss
"""

# The registry snapshot of our sellers' invoices: arrived by as_of and dated (by the registry) inside
# the window. code_special keeps the key's legacy code even when the registry's type differs.
_REG_SQL = r"""
CREATE TABLE reg AS
WITH snap AS (
    SELECT key_id, dn, CAST(dn - CASE WHEN dk = 'fm_date' THEN 1 ELSE 0 END AS INTEGER) AS reg_dn, s, dk,
           is_digital, is_special AS code_special, reg_is_special AS is_special,
           reg_issue_time AS issue_time, reg_seller_idx AS seller_idx, reg_buyer_id_idx AS buyer_id_idx,
           reg_buyer_name_idx AS buyer_name_idx, bad_buyer_id, reg_fen AS fen, reg_tax AS tax,
           reg_total AS total, reg_status AS status, orig_key_id, orig_s, typo_number, noise, clerk_idx,
           contract_no
    FROM inv
    WHERE arrival <= $as_of AND CAST(reg_issue_time AS DATE) BETWEEN $start AND $night
)
SELECT 0 AS copy_no, * FROM snap
UNION ALL
SELECT 1 AS copy_no, * FROM snap WHERE dk = 'dup_registry'
"""

# Expected findings by key id, derived from what is written (see the module docstring).
_EXPECTED_KEYS_SQL = r"""
CREATE TABLE expected_keys AS
WITH
monitored AS (SELECT DISTINCT seller_idx FROM iss),
scope AS (SELECT * FROM reg WHERE seller_idx IN (SELECT seller_idx FROM monitored)),
-- Absent from the registry: missing (or pending, by the issue time as the issuer wrote it), with its
-- cause from the issuer's states; a failed issuance was never issued: NOT_ISSUED, no cause.
missing AS (
    SELECT DISTINCT
           CASE WHEN i.status = 'failed' THEN 'NOT_ISSUED'
                WHEN i.written_time < $grace_cutoff THEN 'MISSING_IN_REGISTRY'
                ELSE 'PENDING_SYNC' END AS category,
           i.iss_key_id AS key_id, '' AS field, i.src AS source_system,
           CASE WHEN i.status = 'failed' THEN ''
                WHEN i.status = 'issuing' AND i.written_time < $grace_cutoff THEN 'stuck_issuing'
                WHEN i.status = 'issuing' THEN 'issuing'
                WHEN i.upload = 'uploaded' THEN 'uploaded_but_absent'
                WHEN i.upload = 'failed' THEN 'upload_failed'
                WHEN i.upload IN ('not_uploaded', 'uploading', 'signature_failed') THEN i.upload
                ELSE 'unknown' END AS cause
    FROM iss_states AS i ANTI JOIN reg AS r ON r.key_id = i.iss_key_id
),
missing_issuer AS (
    SELECT DISTINCT 'MISSING_IN_ISSUER', r.key_id, '', 'registry', ''
    FROM scope AS r ANTI JOIN iss AS i ON i.iss_key_id = r.key_id
),
repeated AS (SELECT iss_key_id FROM iss GROUP BY iss_key_id HAVING count(*) > 1),
repeated_rows AS (SELECT i.src, i.iss_key_id FROM iss AS i SEMI JOIN repeated AS k USING (iss_key_id)),
dup_source AS (
    SELECT 'DUPLICATE_IN_SOURCE', iss_key_id, '', src, '' FROM repeated_rows
    GROUP BY src, iss_key_id HAVING count(*) > 1
    UNION ALL
    SELECT 'DUPLICATE_IN_SOURCE', key_id, '', 'registry', '' FROM scope GROUP BY key_id HAVING count(*) > 1
),
dup_across AS (
    SELECT 'DUPLICATE_ACROSS_ISSUERS', iss_key_id, '', array_to_string(list_sort(list_distinct(list(src))), ','), ''
    FROM repeated_rows GROUP BY iss_key_id HAVING count(DISTINCT src) > 1
),
-- duplicates are exact copies (copy_no > 0): one row per key and source is compared; a column a system
-- does not export (buyer names in taxctl and batch, invoice types in the three with states) is NULL
both_sides AS (
    SELECT i.src, i.iss_key_id AS key_id,
           i.fen AS i_fen, r.fen AS r_fen, i.tax AS i_tax, r.tax AS r_tax, i.total AS i_total, r.total AS r_total,
           CAST(i.issue_time AS DATE) AS i_date, CAST(r.issue_time AS DATE) AS r_date,
           i.seller_idx AS i_seller, r.seller_idx AS r_seller,
           i.buyer_idx AS i_buyer_id, r.buyer_id_idx AS r_buyer_id,
           CASE WHEN i.src NOT IN ('taxctl', 'batch') THEN i.buyer_idx END AS i_buyer_name,
           r.buyer_name_idx AS r_buyer_name,
           CASE WHEN i.src NOT IN ('taxctl', 'shopapi', 'batch') THEN i.is_special END AS i_special,
           r.is_special AS r_special, i.status AS i_status, r.status AS r_status
    FROM iss AS i JOIN scope AS r ON r.key_id = i.iss_key_id
    WHERE i.copy_no = 0 AND r.copy_no = 0
),
field_mismatch AS (
    SELECT 'FIELD_MISMATCH', key_id, 'amount', src, '' FROM both_sides WHERE i_fen <> r_fen
    UNION ALL SELECT 'FIELD_MISMATCH', key_id, 'tax_amount', src, '' FROM both_sides WHERE i_tax <> r_tax
    UNION ALL SELECT 'FIELD_MISMATCH', key_id, 'total_amount', src, '' FROM both_sides WHERE i_total <> r_total
    UNION ALL SELECT 'FIELD_MISMATCH', key_id, 'issue_date', src, '' FROM both_sides WHERE i_date <> r_date
    UNION ALL SELECT 'FIELD_MISMATCH', key_id, 'seller_tax_id', src, '' FROM both_sides WHERE i_seller <> r_seller
    UNION ALL SELECT 'FIELD_MISMATCH', key_id, 'buyer_tax_id', src, '' FROM both_sides WHERE i_buyer_id <> r_buyer_id
    UNION ALL SELECT 'FIELD_MISMATCH', key_id, 'buyer_name', src, '' FROM both_sides WHERE i_buyer_name <> r_buyer_name
    UNION ALL SELECT 'FIELD_MISMATCH', key_id, 'invoice_type', src, '' FROM both_sides WHERE i_special <> r_special
),
-- an issuer still issuing has no status to compare (the registry may already hold the invoice); a failed
-- issuance the registry holds is a mismatch like any other
status_findings AS (
    SELECT CASE WHEN r_status IN ('out_of_control', 'abnormal') THEN 'REGISTRY_RISK' ELSE 'STATUS_MISMATCH' END,
           key_id, 'status',
           CASE WHEN r_status IN ('out_of_control', 'abnormal') THEN 'registry' ELSE src END, ''
    FROM both_sides
    WHERE i_status <> r_status AND (i_status <> 'issuing' OR r_status IN ('out_of_control', 'abnormal'))
),
sides AS ({sides}),
invalid AS (
    SELECT 'INVALID_RECORD', key_id, 'total_amount', src, '' FROM sides WHERE total <> fen + tax
    UNION ALL
    SELECT 'INVALID_RECORD', key_id, 'tax_amount', src, '' FROM sides WHERE rate_bad
    UNION ALL
    SELECT 'INVALID_RECORD', key_id, 'lines', src, '' FROM sides WHERE lines_bad
    UNION ALL
    SELECT 'INVALID_RECORD', key_id, 'invoice_number', src, '' FROM sides WHERE bad_number
    UNION ALL
    SELECT 'INVALID_RECORD', key_id, 'buyer_tax_id', src, '' FROM sides WHERE bad_buyer_id
),
reds AS (SELECT DISTINCT src, iss_key_id AS key_id, total, orig_key_id FROM iss WHERE fen < 0),
blues AS (
    SELECT x.key_id, max(x.total) AS total
    FROM (SELECT iss_key_id AS key_id, total FROM iss UNION ALL SELECT key_id, total FROM reg) AS x
    SEMI JOIN reds AS r ON r.orig_key_id = x.key_id
    GROUP BY x.key_id
),
red_sums AS (
    SELECT orig_key_id, sum(-total) AS red_total
    FROM (SELECT DISTINCT key_id, total, orig_key_id FROM reds)
    GROUP BY orig_key_id
),
orphans AS (
    SELECT 'ORPHAN_RED_INVOICE', r.key_id, '', r.src, ''
    FROM reds AS r
    LEFT JOIN blues AS b ON b.key_id = r.orig_key_id
    LEFT JOIN red_sums AS rs ON rs.orig_key_id = r.orig_key_id
    WHERE b.key_id IS NULL OR rs.red_total > b.total
)
SELECT DISTINCT * FROM (
    SELECT * FROM missing
    UNION ALL SELECT * FROM missing_issuer
    UNION ALL SELECT * FROM dup_source
    UNION ALL SELECT * FROM dup_across
    UNION ALL SELECT * FROM field_mismatch
    UNION ALL SELECT * FROM status_findings
    UNION ALL SELECT * FROM invalid
    UNION ALL SELECT * FROM orphans{extra}
)
"""

# The flat layout: the issuer files carry a rate per invoice, the registry export none; no lines.
_FLAT_SIDES = r"""
    SELECT src, iss_key_id AS key_id, fen, tax, total, bad_buyer_id,
           iss_key_id < 0 AND length(typo_number) <> 8 AS bad_number,
           abs(fen * rate_pct - tax * 100) > 600 AS rate_bad, false AS lines_bad
    FROM iss
    UNION ALL
    SELECT 'registry', key_id, fen, tax, total, bad_buyer_id, false, NULL, false FROM scope
"""

_EXPECTED_SQL = r"""
CREATE TABLE expected AS
SELECT e.category,
       {code} AS invoice_code,
       CASE WHEN e.key_id < 0 THEN i.typo_number
            ELSE inv_number(i.is_digital, i.s, d.yy, d.doy, d.m12, d.off12, d.m8, d.off8) END AS invoice_number,
       e.field, e.source_system, e.cause
FROM expected_keys AS e
JOIN inv AS i ON i.key_id = abs(e.key_id)
JOIN days AS d ON d.dn = i.dn
"""

# Issuer rows with their text, shared by the three issuer formats.
_ISS_TXT_VIEW = r"""
CREATE VIEW iss_txt AS
WITH t AS (
    SELECT i.src, i.file_part, i.copy_no, i.dn, i.iss_key_id, i.issue_time, i.is_digital, i.status,
           i.fen, i.tax, i.total, i.rate_pct,
           inv_code(i.is_digital, i.is_special, d.yy, d.doy) AS code,
           CASE WHEN i.iss_key_id < 0 THEN i.typo_number
                ELSE inv_number(i.is_digital, i.s, d.yy, d.doy, d.m12, d.off12, d.m8, d.off8) END AS number,
           type_name(i.is_digital, i.is_special) AS invoice_type,
           se.tax_id AS seller_tax_id, se.name AS seller_name,
           CASE WHEN i.bad_buyer_id THEN break_check(bu.tax_id) ELSE bu.tax_id END AS buyer_tax_id,
           bu.name AS buyer_name,
           CASE WHEN i.orig_s IS NOT NULL
                THEN inv_number(i.is_digital, i.orig_s, d.yy, d.doy, d.m12, d.off12, d.m8, d.off8)
                WHEN i.dk = 'orphan_missing' THEN num20(d.yy, '11', d.doy, '9', i.s, d.m12, d.off12)
                ELSE '' END AS orig_number,
           CASE WHEN i.contract_no IS NOT NULL
                THEN '合同编号：HT' || d.yy || lpad(CAST(i.contract_no AS VARCHAR), 6, '0') ELSE '' END AS contract
    FROM iss AS i
    JOIN days AS d ON d.dn = i.dn
    JOIN sellers AS se ON se.idx = i.seller_idx
    JOIN buyers AS bu ON bu.idx = i.buyer_idx
)
SELECT *,
       CASE WHEN orig_number <> '' AND is_digital THEN '被红冲蓝字数电票号码：' || orig_number
            WHEN orig_number <> '' THEN '对应正数发票代码:' || code || '号码:' || orig_number
            ELSE contract END AS remark
FROM t
"""

# Registry rows (ours and purchase invoices) with their text; cosmetic noise is added when writing.
_REG_TXT_VIEW = r"""
CREATE VIEW reg_txt AS
WITH ours AS (
    SELECT r.copy_no, r.key_id, r.reg_dn, r.issue_time, r.is_digital, r.status, r.fen, r.tax, r.total, r.noise,
           inv_code(r.is_digital, r.code_special, d.yy, d.doy) AS code,
           inv_number(r.is_digital, r.s, d.yy, d.doy, d.m12, d.off12, d.m8, d.off8) AS number,
           type_name(r.is_digital, r.is_special) AS invoice_type,
           se.tax_id AS seller_tax_id, se.name AS seller_name,
           CASE WHEN r.bad_buyer_id THEN break_check(bi.tax_id) ELSE bi.tax_id END AS buyer_tax_id,
           bn.name AS buyer_name, cl.name AS clerk,
           CASE WHEN r.orig_s IS NOT NULL
                THEN inv_number(r.is_digital, r.orig_s, d.yy, d.doy, d.m12, d.off12, d.m8, d.off8)
                WHEN r.dk = 'orphan_missing' THEN num20(d.yy, '11', d.doy, '9', r.s, d.m12, d.off12)
                ELSE '' END AS orig_number,
           CASE WHEN r.contract_no IS NOT NULL
                THEN '合同编号：HT' || d.yy || lpad(CAST(r.contract_no AS VARCHAR), 6, '0') ELSE '' END AS contract
    FROM reg AS r
    JOIN days AS d ON d.dn = r.dn
    JOIN sellers AS se ON se.idx = r.seller_idx
    JOIN buyers AS bi ON bi.idx = r.buyer_id_idx
    JOIN buyers AS bn ON bn.idx = r.buyer_name_idx
    JOIN clerks AS cl ON cl.idx = r.clerk_idx
), purchases AS (
    SELECT 0 AS copy_no, p.key_id, p.dn AS reg_dn, p.issue_time, p.is_digital, 'normal' AS status, p.fen, p.tax, p.total, p.noise,
           CASE WHEN p.is_digital THEN ''
                ELSE '0' || o.prov || '00' || d.yy || d.doy || CASE WHEN p.is_special THEN '13' ELSE '11' END
                END AS code,
           CASE WHEN p.is_digital THEN num20(d.yy, o.prov, d.doy, '5', p.s, d.m12, d.off12)
                ELSE num8(p.s, d.m8, d.off8) END AS number,
           type_name(p.is_digital, p.is_special) AS invoice_type,
           o.tax_id AS seller_tax_id, o.name AS seller_name, se.tax_id AS buyer_tax_id, se.name AS buyer_name,
           cl.name AS clerk, '' AS orig_number, '' AS contract
    FROM pur_snap AS p
    JOIN days AS d ON d.dn = p.dn
    JOIN outside AS o ON o.idx = p.out_idx
    JOIN sellers AS se ON se.idx = p.buyer_idx
    JOIN clerks AS cl ON cl.idx = p.clerk_idx
)
SELECT *,
       CASE WHEN orig_number <> '' AND is_digital THEN '被红冲蓝字数电票号码：' || orig_number
            WHEN orig_number <> '' THEN '对应正数发票代码:' || code || '号码:' || orig_number
            ELSE contract END AS remark
FROM (SELECT * FROM ours UNION ALL SELECT * FROM purchases)
"""

_ISSUER_ORDER = "ORDER BY issue_time, iss_key_id, copy_no"

_ERP_SELECT = r"""
SELECT NULLIF(code, '') AS invoice_code, number AS invoice_number, invoice_type,
       issue_time AT TIME ZONE 'Asia/Shanghai' AS issue_time,
       seller_tax_id, seller_name, NULLIF(buyer_tax_id, '') AS buyer_tax_id, buyer_name,
       CAST(fen AS DOUBLE) / 100 AS amount, CAST(tax AS DOUBLE) / 100 AS tax_amount,
       CAST(rate_pct AS DOUBLE) / 100 AS tax_rate, CAST(total AS DOUBLE) / 100 AS total_amount,
       status, CASE WHEN is_digital THEN NULLIF(orig_number, '') END AS original_invoice_number,
       NULLIF(remark, '') AS remark
FROM iss_txt WHERE src = 'erp' AND file_part = {part}
"""

_POS_SELECT = r"""
SELECT NULLIF(code, '') AS invoice_code, number AS invoice_number, invoice_type,
       strftime(issue_time, '%Y-%m-%d %H:%M:%S') AS issue_time,
       seller_tax_id, seller_name, NULLIF(buyer_tax_id, '') AS buyer_tax_id, buyer_name,
       fen_txt(fen) AS amount, fen_txt(tax) AS tax_amount, '0.' || lpad(CAST(rate_pct AS VARCHAR), 2, '0') AS tax_rate,
       fen_txt(total) AS total_amount, status,
       CASE WHEN is_digital THEN NULLIF(orig_number, '') END AS original_invoice_number,
       NULLIF(remark, '') AS remark
FROM iss_txt WHERE src = 'pos' AND dn = {dn}
"""

# The web shop writes names through a half-width form field: cosmetic, equal after NFKC.
_WEBSHOP_SELECT = r"""
SELECT code AS invoice_code, number AS invoice_number, invoice_type,
       strftime(issue_time, '%Y-%m-%dT%H:%M:%S') || '+08:00' AS issue_time,
       seller_tax_id, replace(replace(seller_name, '（', '('), '）', ')') AS seller_name,
       buyer_tax_id, replace(replace(buyer_name, '（', '('), '）', ')') AS buyer_name,
       fen_txt(fen) AS amount, fen_txt(tax) AS tax_amount, CAST(rate_pct AS VARCHAR) || '%' AS tax_rate,
       fen_txt(total) AS total_amount, status,
       CASE WHEN is_digital THEN NULLIF(orig_number, '') END AS original_invoice_number,
       NULLIF(remark, '') AS remark
FROM iss_txt WHERE src = 'webshop' AND dn = {dn}
"""

# Cosmetic registry noise (no finding): full-width buyer ids, stray spaces around names.
_REGISTRY_SELECT = r"""
SELECT CAST({offset} + row_number() OVER (ORDER BY issue_time, key_id, copy_no) AS VARCHAR) AS "序号",
       NULLIF(code, '') AS "发票代码",
       CASE WHEN is_digital THEN NULL ELSE number END AS "发票号码",
       CASE WHEN is_digital THEN number END AS "数电发票号码",
       seller_tax_id AS "销方识别号",
       CASE WHEN noise = 4 THEN ' ' || seller_name ELSE seller_name END AS "销方名称",
       NULLIF(CASE WHEN noise < 2 THEN fat_id(buyer_tax_id) ELSE buyer_tax_id END, '') AS "购方识别号",
       CASE WHEN noise IN (2, 3) THEN buyer_name || ' ' ELSE buyer_name END AS "购买方名称",
       strftime(issue_time, '%Y-%m-%d %H:%M:%S') AS "开票日期",
       fen_fmt(fen) AS "金额", fen_fmt(tax) AS "税额", fen_fmt(total) AS "价税合计",
       CASE WHEN is_digital THEN '电子发票服务平台' ELSE '增值税发票管理系统' END AS "发票来源",
       invoice_type AS "发票票种",
       CASE status WHEN 'normal' THEN '正常' WHEN 'voided' THEN '作废' WHEN 'red_reversed' THEN '红冲'
            WHEN 'partly_red_reversed' THEN '部分红冲' WHEN 'out_of_control' THEN '失控' ELSE '异常' END
           AS "发票状态",
       CASE WHEN fen < 0 THEN '否' ELSE '是' END AS "是否正数发票",
       '正常' AS "发票风险等级",
       clerk AS "开票人",
       NULLIF(remark, '') AS "备注"
FROM reg_txt WHERE reg_dn = {dn}
"""


# --------------------------------------------------------------------------------------------------
# The real layout: invoice lines, the registry's two-sheet workbook, an ERP line file, a GBK tool export
# --------------------------------------------------------------------------------------------------
# Every invoice gets lines (a pure function of its day and sequence number, like everything else):
# 1 to 36, about 3 on average, a main rate per invoice, sometimes a second rate on the last line,
# sometimes a discount line (line 2, negative, the item of line 1). An invoice's amount and tax are
# the sums of its lines. A red invoice mirrors its blue: a full reversal negates every line, a partial
# one is a single negative line on the blue's first item. Lines beyond the 12th are whole yuan, so
# that the per-line rounding of an invoice adds up to at most 0.06 (the rate rule of a file that only
# carries a rate per invoice stays quiet on a clean invoice).

#: Excel's last row is 1,048,576: one header row and this many data rows per sheet.
_SHEET_MAX_ROWS = 1_048_575
#: An invoice has at most this many lines; a split workbook stops this far below the limit.
_MAX_LINES = 36

#: The registry's 信息汇总表 (one row per invoice line), in file order.
REGISTRY_LINE_COLUMNS: tuple[str, ...] = (
    "序号", "发票代码", "发票号码", "数电发票号码", "销方识别号", "销方名称", "购方识别号", "购买方名称",
    "开票日期", "税收分类编码", "特定业务类型", "货物或应税劳务名称", "规格型号", "单位", "数量", "单价", "金额",
    "税率", "税额", "价税合计", "发票来源", "发票票种", "发票状态", "是否正数发票", "发票风险等级", "开票人", "备注",
)  # fmt: skip
#: The ERP's line file (one row per invoice line, the invoice's fields repeated on each line).
ERP_LINE_COLUMNS: tuple[str, ...] = (
    "单据编号", "发票代码", "发票号码", "发票票种", "开票日期", "销方识别号", "销方名称", "购方识别号",
    "购方名称", "行号", "项目名称", "规格型号", "单位", "数量", "单价", "金额", "税率", "税额", "价税合计",
    "发票状态", "备注",
)  # fmt: skip
#: The third-party invoicing tool's export (one row per invoice, GBK).
POS_COLUMNS: tuple[str, ...] = (
    "发票代码", "发票号码", "票据类型", "开票时间", "销方税号", "销方名称", "购方税号", "购方名称", "金额", "税率",
    "税额", "价税合计金额", "发票状态", "备注",
)  # fmt: skip

#: The 税控 query export (GB18030): pinyin headers, the issuance state (开票状态) and upload state (bszt) as codes.
TAXCTL_COLUMNS: tuple[str, ...] = (
    "fpdm", "fphm", "zzfphm", "kprq", "gfsh", "xfsh", "hjje", "hjse", "jshj", "开票状态", "bszt",
)  # fmt: skip
#: The shop's invoicing API (JSON Lines), field order; 数电 invoices only.
SHOPAPI_FIELDS: tuple[str, ...] = (
    "orderNo", "allElectronicInvoiceNumber", "invoiceTime", "invoiceType", "exTaxAmount", "taxAmount",
    "orderAmount", "salerTaxNum", "payerTaxNo", "payerName", "status", "上传状态",
)  # fmt: skip
#: The batch-invoicing template's header row (below its instruction rows; '*' marks required columns).
BATCH_COLUMNS: tuple[str, ...] = (
    "单据编号*", "发票代码", "发票号码*", "开票日期*", "销售方税号*", "购买方税号", "合计金额*", "合计税额*",
    "价税合计(小写)*", "发票状态", "报送状态",
)  # fmt: skip
#: The template's instruction rows (the night uses the first 2 to 4): cells by column letter.
_BATCH_INSTRUCTIONS: tuple[dict[str, str], ...] = (
    {"A": "填表说明：带*为必填项；发票号码为 8 位（税控发票）或 20 位（数电发票）数字；金额单位为元，保留两位小数"},
    {"A": "不超过 40 个字符", "B": "10 或 12 位数字", "C": "8 或 20 位数字", "D": "yyyy-mm-dd hh:mm:ss",
     "E": "15 至 20 位", "G": "最多两位小数", "H": "最多两位小数", "I": "合计金额与合计税额之和"},
    {"A": "发票状态：开票成功、已开具、签章中、签章失败、开票失败；报送状态：已报送、未报送、报送中、报送失败、验签失败"},
    {"A": "本模板由开票系统导出，请勿修改表头"},
)  # fmt: skip

# Kinds only the real layout has (one slot each, after the flat layout's slots).
_REAL_KINDS: tuple[str, ...] = ("risk_level", "reg_lines", "lines_header")
# Kinds of the issuing systems with issuance and upload states (taxctl, shopapi, batch), after those:
# absent from the registry with each upload state, stuck issuing, still issuing but already in the
# registry (no finding), a failed issuance absent (NOT_ISSUED) and one the registry holds (STATUS_MISMATCH).
_STATE_KINDS: tuple[str, ...] = (
    "not_uploaded", "uploading", "upload_failed", "signature_failed", "stuck_issuing", "issuing_present",
    "failed_absent", "failed_present",
)  # fmt: skip

#: Items by rate code (13, 9, 6, 免税 = -2, 不征税 = -1; 3 %, 1 % and 0 % sell the 13 % goods):
#: (name, 税收分类编码, unit, 规格型号). A unit of 项, 次 or 月 is a service: quantity 1.
_ITEMS: dict[int, tuple[tuple[str, str, str, str], ...]] = {
    13: (
        ("*计算机外部设备*鼠标", "1090511020000000000", "个", "M-120"),
        ("*计算机外部设备*键盘", "1090511030000000000", "个", "K-200"),
        ("*计算机外部设备*打印机", "1090511990000000000", "台", "LaserJet 1020"),
        ("*计算机配套产品*路由器", "1090512990000000000", "台", "AX3000"),
        ("*计算机配套产品*交换机", "1090512990000000000", "台", "24口千兆"),
        ("*纸制品*复印纸", "1060201020000000000", "箱", "A4 70g"),
        ("*文具*中性笔", "1060602010000000000", "盒", "0.5mm"),
        ("*日用杂品*保温杯", "1060599000000000000", "个", "500ml"),
        ("*电线电缆*网线", "1090409010000000000", "箱", "CAT6"),
        ("*办公设备*碎纸机", "1090513990000000000", "台", ""),
        ("*家具*办公椅", "1050201010000000000", "把", ""),
        ("*饮料*矿泉水", "1030307020000000000", "箱", "550ml*24"),
    ),
    9: (
        ("*谷物*大米", "1010101020000000000", "袋", "10kg"),
        ("*食用植物油*花生油", "1030205010000000000", "桶", "5L"),
        ("*运输服务*国内货物运输服务", "3010101010000000000", "次", ""),
        ("*建筑服务*工程服务", "3050100000000000000", "项", ""),
        ("*图书*技术图书", "1060101010000000000", "本", ""),
        ("*水冰雪*自来水", "1100301010000000000", "吨", ""),
    ),
    6: (
        ("*信息技术服务*软件开发服务", "3040201010000000000", "项", ""),
        ("*信息技术服务*运维服务", "3040201030000000000", "月", ""),
        ("*信息技术服务*系统集成服务", "3040203000000000000", "项", ""),
        ("*现代服务*技术培训费", "3049900000000000000", "次", ""),
        ("*鉴证咨询服务*咨询服务", "3040603000000000000", "次", ""),
        ("*餐饮服务*餐费", "3070401000000000000", "次", ""),
        ("*住宿服务*住宿费", "3070402000000000000", "次", ""),
        ("*广告服务*广告发布费", "3040502020000000000", "项", ""),
    ),
    -2: (
        ("*蔬菜*有机蔬菜礼盒", "1010112990000000000", "盒", ""),
        ("*水果*苹果", "1010115010000000000", "箱", "5kg"),
        ("*谷物*玉米", "1010101030000000000", "袋", "25kg"),
        ("*鲜蛋*鸡蛋", "1010305000000000000", "箱", "360枚"),
    ),
    -1: (
        ("*预付卡销售*预付卡", "6010000000000000000", "张", ""),
        ("*预付卡销售*储值卡充值", "6010000000000000000", "次", ""),
    ),
}
_SERVICE_UNITS = ("项", "次", "月")


def _items_tables() -> tuple[pa.Table, pa.Table]:
    """The item catalogue, and which catalogue (and how many items) each rate code draws from."""
    rows = [
        {"cat": cat, "idx": i, "name": name, "tax_code": code, "unit": unit, "spec": spec,
         "service": unit in _SERVICE_UNITS}
        for cat, items in _ITEMS.items()
        for i, (name, code, unit, spec) in enumerate(items)
    ]  # fmt: skip
    for row in rows:  # cells are written into XML unescaped
        if any(ch in str(value) for value in row.values() for ch in "<>&\"'"):
            raise AssertionError(f"item text needs escaping: {row}")
    cats = {13: 13, 9: 9, 6: 6, 3: 13, 1: 13, 0: 13, -1: -1, -2: -2}
    return (
        pa.Table.from_pylist(rows),
        pa.table({
            "code": list(cats), "cat": list(cats.values()), "cnt": [len(_ITEMS[c]) for c in cats.values()],
        }),
    )  # fmt: skip


_REAL_MACROS = r"""
CREATE MACRO fen0(ds, a) AS CASE WHEN hr(ds, a, 8, 100) < 30 THEN 1000 + hr(ds, a, 9, 9000)
     WHEN hr(ds, a, 8, 100) < 65 THEN 10000 + hr(ds, a, 9, 90000)
     WHEN hr(ds, a, 8, 100) < 90 THEN 100000 + hr(ds, a, 9, 900000)
     ELSE 1000000 + hr(ds, a, 9, 19000000) END;
CREATE MACRO code_r(is_digital, is_special, is_roll, yy, doy) AS CASE WHEN is_digital THEN ''
    WHEN is_special THEN '11' || yy || doy || '130'
    ELSE '01100' || yy || doy || CASE WHEN is_roll THEN '06' ELSE '11' END END;
CREATE MACRO type_r(is_digital, is_special, is_roll, long) AS CASE
    WHEN is_digital AND long AND is_special THEN '数电发票（增值税专用发票）'
    WHEN is_digital AND long THEN '数电发票（普通发票）'
    WHEN is_digital AND is_special THEN '数电票（增值税专用发票）'
    WHEN is_digital THEN '数电票（普通发票）'
    WHEN is_special THEN '增值税专用发票'
    WHEN is_roll THEN '增值税普通发票（卷式）'
    ELSE '增值税电子普通发票' END;
CREATE MACRO rate_txt(c) AS CASE c WHEN -2 THEN '免税' WHEN -1 THEN '不征税' ELSE CAST(c AS VARCHAR) || '%' END;
CREATE MACRO price_txt(p) AS
    CASE WHEN p % 100 = 0 THEN CAST(p // 100 AS VARCHAR) ELSE rtrim(fen_txt(p), '0') END;
CREATE MACRO lqty(ds, a, j, service) AS CASE WHEN service THEN 1 ELSE 1 + hr(ds, a * 64 + j, 39, 20) END;
CREATE MACRO lprice0(ds, a, j, n, budget, q) AS
    greatest(1, greatest(100, budget * (50 + hr(ds, a * 64 + j, 40, 101)) // (100 * n)) // q);
CREATE MACRO lprice(ds, a, j, n, budget, q) AS CASE WHEN j > 12
    THEN greatest(100, lprice0(ds, a, j, n, budget, q) // 100 * 100) ELSE lprice0(ds, a, j, n, budget, q) END;
CREATE MACRO xt(col, rn, v) AS CASE WHEN v IS NULL OR v = '' THEN ''
    ELSE concat('<c r="', col, rn, '" t="inlineStr"><is><t>', v, '</t></is></c>') END;
CREATE MACRO xts(col, rn, v) AS CASE WHEN v IS NULL OR v = '' THEN ''
    WHEN v <> trim(v)
        THEN concat('<c r="', col, rn, '" t="inlineStr"><is><t xml:space="preserve">', v, '</t></is></c>')
    ELSE concat('<c r="', col, rn, '" t="inlineStr"><is><t>', v, '</t></is></c>') END;
CREATE MACRO xn(col, rn, v) AS concat('<c r="', col, rn, '"><v>', v, '</v></c>');
"""

# The plan of each invoice's lines (ours and the purchase invoices of the snapshot). A red invoice
# plans with its blue's sequence number (a), so it sees its blue's lines.
_LINE_PLAN_SQL = r"""
CREATE TABLE lp AS
WITH base AS (
    SELECT i.key_id, i.dk, d.ds, CAST(i.s AS BIGINT) AS s, CAST(coalesce(i.orig_s, i.s) AS BIGINT) AS a,
           ro.role, ro.pair_kind, i.rate_pct, fen0(d.ds, CAST(coalesce(i.orig_s, i.s) AS BIGINT)) AS budget
    FROM inv AS i
    JOIN days AS d ON d.dn = i.dn
    LEFT JOIN roles AS ro ON ro.dn = i.dn AND ro.s = i.s
    UNION ALL
    SELECT p.key_id, '', d.ds, CAST(p.s AS BIGINT), CAST(p.s AS BIGINT) + 1073741824, NULL, NULL,
           CASE WHEN hr(d.ds, p.s, 107, 100) < 50 THEN 13 WHEN hr(d.ds, p.s, 107, 100) < 80 THEN 6 ELSE 9 END,
           p.fen
    FROM pur_snap AS p
    JOIN days AS d ON d.dn = p.dn
), sized AS (
    SELECT *,
        CASE WHEN dk IN ('lines_header', 'reg_lines') THEN greatest(n0, 2) ELSE n0 END AS n
    FROM (
        SELECT *,
            CASE WHEN h < 45 THEN 1 WHEN h < 65 THEN 2 WHEN h < 77 THEN 3
                 WHEN h < 92 THEN 4 + hr(ds, a, 38, 3) WHEN h < 98 THEN 7 + hr(ds, a, 38, 6)
                 ELSE 13 + hr(ds, a, 38, 24) END AS n0,
            CASE WHEN rate_pct = 1 AND hr(ds, a, 33, 100) < 30 THEN -2
                 WHEN rate_pct = 3 AND hr(ds, a, 33, 100) < 15 THEN 0 ELSE rate_pct END AS mc
        FROM (SELECT *, hr(ds, a, 30, 100) AS h FROM base)
    )
)
SELECT key_id, dk, ds, s, a, role, pair_kind, budget, CAST(mc AS INTEGER) AS mc, CAST(n AS INTEGER) AS n,
       n >= 2 AND mc IN (13, 9, 6) AND dk <> 'inv_rate' AND hr(ds, a, 31, 100) < 30 AS mixed,
       CAST(CASE mc WHEN 13 THEN CASE WHEN hr(ds, a, 35, 2) = 0 THEN 6 ELSE 9 END
                    WHEN 9 THEN -2
                    WHEN 6 THEN CASE WHEN hr(ds, a, 35, 2) = 0 THEN -1 ELSE 13 END END AS INTEGER) AS sc,
       n >= 3 AND hr(ds, a, 32, 100) < 15 AS discount
FROM sized
"""

# Each invoice's blue lines (for a red row: its blue's lines).
_BLUE_LINES_SQL = r"""
CREATE TABLE bl AS
WITH x AS (
    SELECT key_id, ds, a, n, mc, mixed, sc, discount, budget, unnest(range(1, n + 1)) AS j FROM lp
), c AS (
    SELECT *, CASE WHEN mixed AND j = n THEN sc ELSE mc END AS code, discount AND j = 2 AS is_discount FROM x
), pick AS (
    SELECT c.*, ic.cat,
           hr(c.ds, c.a * 64 + CASE WHEN c.is_discount THEN 1 ELSE c.j END, 37, ic.cnt) AS item_idx
    FROM c JOIN item_cat AS ic ON ic.code = c.code
), svc AS (
    SELECT p.*, it.service FROM pick AS p JOIN items AS it ON it.cat = p.cat AND it.idx = p.item_idx
)
SELECT key_id, CAST(j AS INTEGER) AS j, CAST(code AS INTEGER) AS code, CAST(cat AS INTEGER) AS cat,
       CAST(item_idx AS INTEGER) AS item_idx,
       CASE WHEN NOT is_discount THEN lqty(ds, a, j, service) END AS qty,
       CASE WHEN NOT is_discount THEN lprice(ds, a, j, n, budget, lqty(ds, a, j, service)) END AS price,
       CASE WHEN is_discount
            THEN -(lqty(ds, a, 1, service) * lprice(ds, a, 1, n, budget, lqty(ds, a, 1, service))
                   * (3 + hr(ds, a, 36, 8)) // 100)
            ELSE lqty(ds, a, j, service) * lprice(ds, a, j, n, budget, lqty(ds, a, j, service)) END AS amount
FROM svc
"""

# The lines as issued (amount, tax, the issuer's line total) and as the registry holds them.
_LINES_SQL = r"""
CREATE TABLE ln AS
WITH mirrored AS (
    SELECT b.key_id, b.j, b.code, b.cat, b.item_idx,
           CASE WHEN m.neg THEN -b.qty ELSE b.qty END AS qty, b.price,
           CASE WHEN m.neg THEN -b.amount ELSE b.amount END AS amount
    FROM bl AS b
    JOIN (SELECT key_id, coalesce(role = 'red', false) OR dk = 'orphan_missing' AS neg FROM lp
          WHERE role IS DISTINCT FROM 'red' OR pair_kind = 'full') AS m USING (key_id)
    UNION ALL
    SELECT b.key_id, b.j, b.code, b.cat, b.item_idx, NULL, NULL,
           CASE WHEN l.pair_kind = 'exceeds' THEN -(t.blue_amount * 3 // 2)
                ELSE -(b.amount * (10 + hr(l.ds, l.s, 19, 71)) // 100) END
    FROM bl AS b
    JOIN lp AS l USING (key_id)
    JOIN (SELECT key_id, sum(amount) AS blue_amount FROM bl GROUP BY key_id) AS t USING (key_id)
    WHERE l.role = 'red' AND l.pair_kind <> 'full' AND b.j = 1
), taxed AS (
    SELECT x.*, l.dk, l.n,
           CASE WHEN l.dk = 'inv_rate' AND x.j = l.n THEN 20 + hr(l.ds, l.s, 20, 980) ELSE 0 END
               AS tax_extra,
           CASE WHEN l.dk = 'inv_total' AND x.j = l.n THEN 1 + hr(l.ds, l.s, 20, 500) ELSE 0 END
               AS total_extra,
           x.amount + CASE WHEN l.dk = 'fm_amount' AND x.j = l.n THEN greatest(100, l.budget // 10)
                           WHEN l.dk = 'reg_lines' AND x.j = l.n THEN 100 * (1 + hr(l.ds, l.s, 42, 99))
                           ELSE 0 END AS reg_amount
    FROM mirrored AS x
    JOIN lp AS l USING (key_id)
)
SELECT key_id, CAST(j AS SMALLINT) AS j, CAST(code AS TINYINT) AS code, CAST(cat AS TINYINT) AS cat,
       CAST(item_idx AS SMALLINT) AS item_idx, qty, price, amount,
       tax_of(amount, greatest(code, 0)) + tax_extra AS tax,
       amount + tax_of(amount, greatest(code, 0)) + tax_extra + total_extra AS total,
       reg_amount,
       tax_of(reg_amount, greatest(code, 0)) + tax_extra AS reg_tax
FROM taxed
"""

# Per invoice: the sums of its lines, the per-line rate rule on each side, its single rate (if any).
_LINE_SUMS_SQL = r"""
CREATE TABLE la AS
SELECT key_id, CAST(count(*) AS INTEGER) AS n_lines, sum(amount) AS fen, sum(tax) AS tax, sum(total) AS total,
       sum(reg_amount) AS reg_fen, sum(reg_tax) AS reg_tax,
       max(abs(amount * greatest(code, 0) - tax * 100)) > 600 AS i_line_bad,
       max(abs(reg_amount * greatest(code, 0) - reg_tax * 100)) > 600 AS r_line_bad,
       CAST(CASE WHEN min(code) = max(code) THEN min(code) END AS TINYINT) AS single_code
FROM ln
GROUP BY key_id
"""

# Which issuing system exports each invoice, and the states of the systems that have them. The flat
# layout's draw (erp / pos / webshop) stands, then about a quarter of the clean invoices move to taxctl,
# shopapi (数电 only: it has no 发票代码; an invoice sent there is a 数电 one) and batch, and so does every
# third case of the defects they can carry (by day, rotating over the three, so the first three keep
# most). The state kinds rotate over the systems that have the state's word, day by day, so a night has
# each in each system; the first three anchors of a day are clean invoices of the three. An invoice the
# registry has not got (lost, pending) goes to a new system every other day: uploaded but absent there,
# unknown elsewhere. None of the three has an invoice type, a rate or a remark column, and taxctl and
# batch no buyer name: the defects that need those (and red invoices, cross-issuer copies) stay put.
_ROUTE_SQL = r"""
CREATE OR REPLACE TABLE inv AS
WITH r AS (
    SELECT i.*, coalesce(ro.j, 0) AS kind_j, hr(d.ds, i.s, 47, 100) AS route_h, d.ds AS route_ds
    FROM inv AS i
    JOIN days AS d ON d.dn = i.dn
    LEFT JOIN roles AS ro ON ro.dn = i.dn AND ro.s = i.s
), routed AS (
    SELECT *,
        CASE WHEN dk = 'lines_header' THEN 'erp'
             WHEN dk = 'anchor' AND kind_j < 3 THEN ['taxctl', 'shopapi', 'batch'][kind_j + 1]
             WHEN dk IN ('not_uploaded', 'upload_failed', 'stuck_issuing', 'issuing_present', 'failed_absent',
                         'failed_present')
                 THEN ['taxctl', 'shopapi', 'batch'][(dn + kind_j) % 3 + 1]
             WHEN dk IN ('uploading', 'signature_failed') THEN ['taxctl', 'batch'][(dn + kind_j) % 2 + 1]
             WHEN dk IN ('lost', 'pending') AND (dn + kind_j) % 2 = 1
                 THEN ['taxctl', 'shopapi', 'batch'][(dn + kind_j) // 2 % 3 + 1]
             WHEN dk = 'voided' AND (dn + kind_j) % 3 = 0 THEN 'taxctl'
             WHEN dk = 'inv_typo' AND (dn + kind_j) % 3 = 0 THEN ['taxctl', 'batch'][(dn + kind_j) // 3 % 2 + 1]
             WHEN dk IN ('dup_issuer', 'dup_registry', 'fm_amount', 'fm_date', 'fm_buyer_tax_id',
                         'fm_seller_tax_id', 'status_voided', 'registry_risk', 'inv_total', 'inv_checksum',
                         'risk_level', 'reg_lines') AND (dn + kind_j) % 3 = 0
                 THEN ['taxctl', 'shopapi', 'batch'][(dn + kind_j) // 3 % 3 + 1]
             WHEN dk IN ('', 'anchor', 'clean')
                 THEN CASE WHEN route_h < 12 THEN 'taxctl'
                           WHEN route_h < 22 AND is_digital THEN 'shopapi'
                           WHEN route_h BETWEEN 22 AND 29 THEN 'batch'
                           ELSE system END
             ELSE system END AS routed_system
    FROM r
)
SELECT * EXCLUDE (kind_j, route_h, route_ds, routed_system) REPLACE (
           routed_system AS system,
           is_digital OR routed_system = 'shopapi' AS is_digital,
           CASE WHEN dk IN ('stuck_issuing', 'issuing_present') THEN 'issuing'
                WHEN dk IN ('failed_absent', 'failed_present') THEN 'failed'
                ELSE status END AS status,
           CASE WHEN dk IN ('not_uploaded', 'uploading', 'upload_failed', 'signature_failed', 'stuck_issuing',
                            'failed_absent') THEN NULL
                ELSE arrival END AS arrival),
       CASE WHEN routed_system NOT IN ('taxctl', 'shopapi', 'batch') THEN NULL
            WHEN dk IN ('not_uploaded', 'stuck_issuing', 'failed_absent', 'failed_present') THEN 'not_uploaded'
            WHEN dk = 'uploading' THEN 'uploading'
            WHEN dk = 'upload_failed' THEN 'failed'
            WHEN dk = 'signature_failed' THEN 'signature_failed'
            WHEN dk = 'issuing_present' THEN CASE WHEN routed_system = 'shopapi' THEN 'not_uploaded' ELSE 'uploading' END
            ELSE 'uploaded' END AS upload,
       routed_system = 'taxctl' AND hr(route_ds, s, 48, 100) < 25 AS date_only,
       routed_system = 'taxctl' AND (is_digital OR routed_system = 'shopapi')
           AND ((dk = 'anchor' AND kind_j = 0) OR hr(route_ds, s, 49, 100) < 30) AS both_numbers,
       CAST(hr(route_ds, s, 50, 100) AS TINYINT) AS word_h
FROM routed
"""

# The invoices' money becomes their lines' sums; the real layout's kinds set their columns.
_REAL_INV_SQL = r"""
CREATE OR REPLACE TABLE inv AS
SELECT i.* REPLACE (
           CASE WHEN i.dk = 'lines_header' THEN 'erp' ELSE i.system END AS system,
           la.fen AS fen, la.tax AS tax, la.total AS total,
           CASE WHEN i.dk = 'fm_amount' THEN la.reg_fen ELSE la.fen END AS reg_fen,
           CASE WHEN i.dk = 'fm_amount' THEN la.reg_tax ELSE la.tax END AS reg_tax,
           CASE WHEN i.dk = 'fm_amount' THEN la.reg_fen + la.reg_tax ELSE la.total END AS reg_total,
           CASE WHEN l.role = 'blue' AND l.pair_kind = 'stale' THEN 'normal' ELSE i.status END AS status,
           CASE WHEN l.role = 'blue' AND l.pair_kind = 'stale' THEN 'partly_red_reversed'
                ELSE i.reg_status END AS reg_status),
       l.ds, l.a, l.role, l.pair_kind, l.n, la.n_lines, la.single_code, la.i_line_bad, la.r_line_bad,
       la.reg_fen AS reg_lines_fen, la.reg_tax AS reg_lines_tax,
       NOT i.is_digital AND NOT i.is_special AND hr(l.ds, l.a, 34, 100) < 30 AS is_roll,
       CASE WHEN i.dk <> 'risk_level' THEN '正常' WHEN hr(l.ds, l.s, 43, 2) = 0 THEN '疑点发票'
            ELSE '异常凭证' END AS reg_risk,
       CASE WHEN i.dk <> 'lines_header' THEN '' WHEN hr(l.ds, l.s, 45, 2) = 0 THEN 'buyer_name'
            ELSE 'issue_time' END AS line_defect
FROM inv AS i
JOIN lp AS l USING (key_id)
JOIN la USING (key_id);
CREATE OR REPLACE TABLE pur_snap AS
SELECT p.* REPLACE (la.fen AS fen, la.tax AS tax, la.total AS total), la.n_lines
FROM pur_snap AS p JOIN la USING (key_id)
"""

# Issuer rows as exported. A duplicate in the ERP's line file goes into its other file: the lines of
# one invoice in one file make one record, so a second copy there would merely double its lines.
_ISS_VIEW_REAL = r"""
CREATE VIEW iss AS
SELECT system AS src, CAST(part AS INTEGER) AS file_part, 0 AS copy_no,
       * EXCLUDE (system, system2, part, dup_part)
FROM inv WHERE dk <> 'missing_in_issuer'
UNION ALL
SELECT system AS src, CAST(CASE WHEN system = 'erp' THEN 1 - part ELSE dup_part END AS INTEGER) AS file_part,
       1 AS copy_no, * EXCLUDE (system, system2, part, dup_part)
FROM inv WHERE dk = 'dup_issuer'
UNION ALL
SELECT system2 AS src, CAST(part AS INTEGER) AS file_part, 0 AS copy_no,
       * EXCLUDE (system, system2, part, dup_part)
FROM inv WHERE dk = 'dup_across'
"""
# The issue time as the issuer wrote it: taxctl writes some as a date only (2026.03.05), which is midnight.
_ISS_VIEW_REAL_STATES = r"""
CREATE VIEW iss_states AS
SELECT *, CASE WHEN date_only THEN CAST(CAST(issue_time AS DATE) AS TIMESTAMP) ELSE issue_time END AS written_time
FROM iss
"""

_REG_SQL_REAL = r"""
CREATE TABLE reg AS
WITH snap AS (
    SELECT key_id, dn, CAST(dn - CASE WHEN dk = 'fm_date' THEN 1 ELSE 0 END AS INTEGER) AS reg_dn, s, dk,
           is_digital, is_special AS code_special, reg_is_special AS is_special, is_roll,
           reg_issue_time AS issue_time, reg_seller_idx AS seller_idx, reg_buyer_id_idx AS buyer_id_idx,
           reg_buyer_name_idx AS buyer_name_idx, bad_buyer_id, reg_fen AS fen, reg_tax AS tax,
           reg_total AS total, reg_status AS status, orig_key_id, orig_s, typo_number, noise, clerk_idx,
           contract_no, reg_risk, reg_lines_fen, reg_lines_tax, r_line_bad, n_lines, ds
    FROM inv
    WHERE arrival <= $as_of AND CAST(reg_issue_time AS DATE) BETWEEN $start AND $night
)
SELECT 0 AS copy_no, * FROM snap
UNION ALL
SELECT 1 AS copy_no, * FROM snap WHERE dk = 'dup_registry'
"""

# Where an invoice has lines the rate rule is per line; a file with a rate per invoice is checked on
# the invoice, and says nothing where an invoice mixes rates (its 税率 is empty). The registry's lines
# must add up to its invoice, and the lines of one invoice in the ERP's line file must agree.
_REAL_SIDES = r"""
    SELECT src, iss_key_id AS key_id, fen, tax, total, bad_buyer_id,
           iss_key_id < 0 AND length(typo_number) <> 8 AS bad_number,
           CASE WHEN src = 'erp' THEN i_line_bad
                WHEN src IN ('taxctl', 'shopapi', 'batch') THEN false  -- no rate column
                ELSE single_code IS NOT NULL AND abs(fen * greatest(single_code, 0) - tax * 100) > 600
           END AS rate_bad,
           src = 'erp' AND line_defect <> '' AS lines_bad
    FROM iss
    UNION ALL
    SELECT 'registry', key_id, fen, tax, total, bad_buyer_id, false, r_line_bad,
           reg_lines_fen <> fen OR reg_lines_tax <> tax
    FROM scope
"""
_REAL_EXTRA = r"""
    UNION ALL
    SELECT 'REGISTRY_RISK', key_id, 'risk_level', 'registry', '' FROM reg
    WHERE reg_risk <> '正常'
      AND (seller_idx IN (SELECT seller_idx FROM monitored) OR key_id IN (SELECT iss_key_id FROM iss))"""

# Text of each of our invoices, shared by both sides (the registry's fields may differ, see below).
# Red invoices name their blue in 备注 in every form the platform has written.
_ITX_SQL = r"""
CREATE TABLE itx AS
WITH t AS (
    SELECT i.key_id, i.is_digital,
           code_r(i.is_digital, i.is_special, i.is_roll, d.yy, d.doy) AS code,
           inv_number(i.is_digital, i.s, d.yy, d.doy, d.m12, d.off12, d.m8, d.off8) AS number,
           CASE WHEN i.orig_s IS NOT NULL
                THEN inv_number(i.is_digital, i.orig_s, d.yy, d.doy, d.m12, d.off12, d.m8, d.off8)
                WHEN i.dk = 'orphan_missing' THEN num20(d.yy, '11', d.doy, '9', i.s, d.m12, d.off12)
                ELSE '' END AS orig_number,
           '110' || d.yy || d.doy || lpad(CAST(hr(i.ds, i.s, 46, 1000000000000) AS VARCHAR), 12, '0')
               AS confirmation,
           hr(i.ds, i.s, 41, 100) AS form,
           CASE WHEN i.contract_no IS NOT NULL
                THEN '合同编号：HT' || d.yy || lpad(CAST(i.contract_no AS VARCHAR), 6, '0') ELSE '' END
               AS contract,
           'XS' || strftime(d.day, '%y%m%d') || lpad(CAST(i.s AS VARCHAR), 7, '0') AS doc
    FROM inv AS i
    JOIN days AS d ON d.dn = i.dn
)
SELECT key_id, code, number, orig_number, doc,
       CASE WHEN orig_number = '' THEN contract
            WHEN is_digital AND form < 70
                THEN '被红冲蓝字数电发票号码：' || orig_number || ' 红字发票信息确认单编号：' || confirmation
            WHEN is_digital THEN '被红冲蓝字数电票号码：' || orig_number
            WHEN form < 40 THEN '对应正数发票代码:' || code || '号码:' || orig_number
            WHEN form < 70 THEN '被红冲蓝字发票号码：' || orig_number || ' 被红冲蓝字发票代码：' || code
            ELSE '被红冲蓝字发票代码：' || code || ' 被红冲蓝字发票号码：' || orig_number END AS remark
FROM t
"""

# Issuer rows with their text (all three systems), made once: every file's chunks read it.
_ISS_TXT_REAL = r"""
CREATE TABLE iss_txt AS
SELECT i.src, i.file_part, i.copy_no, i.dn, i.key_id, i.iss_key_id, i.issue_time, i.is_digital, i.status,
       i.fen, i.tax, i.total, i.single_code, i.noise, i.line_defect, i.n_lines,
       x.code, CASE WHEN i.iss_key_id < 0 THEN i.typo_number ELSE x.number END AS number,
       type_r(i.is_digital, i.is_special, i.is_roll, false) AS invoice_type,
       se.tax_id AS seller_tax_id, se.name AS seller_name,
       CASE WHEN i.bad_buyer_id THEN break_check(bu.tax_id) ELSE bu.tax_id END AS buyer_tax_id,
       bu.name AS buyer_name, other.name AS other_buyer_name,
       CASE WHEN i.is_digital THEN NULLIF(x.orig_number, '') END AS orig_number, x.remark,
       x.doc || CASE WHEN i.copy_no = 1 THEN '-1' ELSE '' END AS doc,
       i.upload, i.date_only, i.both_numbers, i.word_h
FROM iss AS i
JOIN itx AS x ON x.key_id = i.key_id
JOIN sellers AS se ON se.idx = i.seller_idx
JOIN buyers AS bu ON bu.idx = i.buyer_idx
JOIN buyers AS other ON other.idx = (i.buyer_idx + 20) % {n_buyers}
"""

_ISSUER_ORDER_REAL = "ORDER BY issue_time, iss_key_id, copy_no"

# The ERP's line file: one row per line, header fields repeated; buyer names typed with half-width
# brackets for some invoices (cosmetic). An injected line disagrees with its invoice's first line.
_ERP_LINES_SELECT = r"""
SELECT i.doc AS "单据编号", NULLIF(i.code, '') AS "发票代码", i.number AS "发票号码", i.invoice_type AS "发票票种",
       strftime(CASE WHEN i.line_defect = 'issue_time' AND l.j = i.n_lines THEN i.issue_time + INTERVAL 1 HOUR
                     ELSE i.issue_time END, '%Y-%m-%d %H:%M:%S') AS "开票日期",
       i.seller_tax_id AS "销方识别号", i.seller_name AS "销方名称", NULLIF(i.buyer_tax_id, '') AS "购方识别号",
       CASE WHEN i.line_defect = 'buyer_name' AND l.j = i.n_lines THEN i.other_buyer_name
            WHEN i.noise BETWEEN 5 AND 19 THEN replace(replace(i.buyer_name, '（', '('), '）', ')')
            ELSE i.buyer_name END AS "购方名称",
       l.j AS "行号", it.name AS "项目名称", NULLIF(it.spec, '') AS "规格型号", it.unit AS "单位",
       CAST(l.qty AS VARCHAR) AS "数量", price_txt(l.price) AS "单价", fen_fmt(l.amount) AS "金额",
       rate_txt(l.code) AS "税率", fen_fmt(l.tax) AS "税额", fen_fmt(l.total) AS "价税合计",
       CASE i.status WHEN 'normal' THEN '正常' WHEN 'voided' THEN '作废' WHEN 'red_reversed' THEN '红冲'
            ELSE '部分红冲' END AS "发票状态",
       NULLIF(i.remark, '') AS "备注"
FROM iss_txt AS i
JOIN ln AS l ON l.key_id = i.key_id
JOIN items AS it ON it.cat = l.cat AND it.idx = l.item_idx
WHERE i.src = 'erp' AND i.file_part = {part} AND i.dn = {dn}
ORDER BY i.issue_time, i.iss_key_id, i.copy_no, l.j
"""

# The third-party tool: one row per invoice; 税率 empty where the invoice mixes rates.
_POS_SELECT_REAL = r"""
SELECT NULLIF(code, '') AS "发票代码", number AS "发票号码", invoice_type AS "票据类型",
       strftime(issue_time, '%Y-%m-%d %H:%M:%S') AS "开票时间",
       seller_tax_id AS "销方税号", seller_name AS "销方名称", NULLIF(buyer_tax_id, '') AS "购方税号",
       buyer_name AS "购方名称",
       fen_fmt(fen) AS "金额", CASE WHEN single_code IS NOT NULL THEN rate_txt(single_code) END AS "税率",
       fen_fmt(tax) AS "税额", fen_fmt(total) AS "价税合计金额",
       CASE status WHEN 'normal' THEN '正常' WHEN 'voided' THEN '已作废' WHEN 'red_reversed' THEN '已红冲'
            ELSE '部分红冲' END AS "发票状态",
       NULLIF(remark, '') AS "备注"
FROM iss_txt WHERE src = 'pos' AND dn = {dn}
ORDER BY issue_time, iss_key_id, copy_no
"""

_WEBSHOP_SELECT_REAL = r"""
SELECT code AS invoice_code, number AS invoice_number, invoice_type,
       strftime(issue_time, '%Y-%m-%dT%H:%M:%S') || '+08:00' AS issue_time,
       seller_tax_id, replace(replace(seller_name, '（', '('), '）', ')') AS seller_name,
       NULLIF(buyer_tax_id, '') AS buyer_tax_id,
       replace(replace(buyer_name, '（', '('), '）', ')') AS buyer_name,
       fen_txt(fen) AS amount, fen_txt(tax) AS tax_amount,
       CASE WHEN single_code IS NOT NULL THEN rate_txt(single_code) END AS tax_rate,
       fen_txt(total) AS total_amount, status, orig_number AS original_invoice_number,
       NULLIF(remark, '') AS remark
FROM iss_txt WHERE src = 'webshop' AND dn = {dn}
ORDER BY issue_time, iss_key_id, copy_no
"""

# The 税控 query export: pinyin headers, state codes (TAXCTL_STATUS_CODES, TAXCTL_UPLOAD_CODES), times as
# 2026.03.05 10:11:12 or a date only; a 数电 invoice's 20-digit number in zzfphm, and on some rows its last
# eight digits in fphm too (the 20-digit one is the key). No names, types, rates or remarks.
_TAXCTL_SELECT = r"""
SELECT NULLIF(code, '') AS fpdm,
       CASE WHEN NOT is_digital THEN number WHEN both_numbers THEN right(number, 8) END AS fphm,
       CASE WHEN is_digital THEN number END AS zzfphm,
       CASE WHEN date_only THEN strftime(issue_time, '%Y.%m.%d') ELSE strftime(issue_time, '%Y.%m.%d %H:%M:%S') END
           AS kprq,
       NULLIF(buyer_tax_id, '') AS gfsh, seller_tax_id AS xfsh,
       fen_txt(fen) AS hjje, fen_txt(tax) AS hjse, fen_txt(total) AS jshj,
       CASE status WHEN 'normal' THEN '0' WHEN 'issuing' THEN '1' WHEN 'failed' THEN '2' WHEN 'voided' THEN '3' END
           AS "开票状态",
       CASE upload WHEN 'not_uploaded' THEN '0' WHEN 'uploaded' THEN '1' WHEN 'failed' THEN '2'
            WHEN 'signature_failed' THEN '3' WHEN 'uploading' THEN '4' END AS bszt
FROM iss_txt WHERE src = 'taxctl' AND dn = {dn}
ORDER BY issue_time, iss_key_id, copy_no
"""

# The shop's invoicing API, one JSON object a line: the instant in epoch milliseconds (UTC; the night's
# times are Beijing wall-clock, 8 hours ahead), amounts as strings, invoiceType 1 = blue (a flag, not a
# kind), the states as words. 数电 invoices only.
_SHOPAPI_SELECT = r"""
SELECT 'DD' || substr(doc, 3) AS "orderNo", number AS "allElectronicInvoiceNumber",
       epoch_ms(issue_time) - 28800000 AS "invoiceTime", '1' AS "invoiceType",
       fen_txt(fen) AS "exTaxAmount", fen_txt(tax) AS "taxAmount", fen_txt(total) AS "orderAmount",
       seller_tax_id AS "salerTaxNum", buyer_tax_id AS "payerTaxNo", buyer_name AS "payerName",
       CASE status WHEN 'normal' THEN '开票完成' WHEN 'issuing' THEN '开票中'
            WHEN 'failed' THEN CASE WHEN word_h < 50 THEN '开票失败' ELSE '签章失败' END END AS status,
       CASE upload WHEN 'uploaded' THEN '已上传' WHEN 'not_uploaded' THEN '未上传' WHEN 'failed' THEN '上传失败' END
           AS "上传状态"
FROM iss_txt WHERE src = 'shopapi' AND dn = {dn}
ORDER BY issue_time, iss_key_id, copy_no
"""

# The batch-invoicing template's rows as sheet XML (below the instruction and header rows): the ERP's
# document number, 发票代码 / 发票号码 (8 or 20 digits), amounts as numbers, the states as words.
_BATCH_XML = r"""
SELECT concat('<row r="', rn, '">', xt('A', rn, doc), xt('B', rn, code), xt('C', rn, number),
              xt('D', rn, strftime(issue_time, '%Y-%m-%d %H:%M:%S')), xt('E', rn, seller_tax_id),
              xt('F', rn, buyer_tax_id), xn('G', rn, fen_txt(fen)), xn('H', rn, fen_txt(tax)),
              xn('I', rn, fen_txt(total)),
              xt('J', rn, CASE status WHEN 'normal' THEN CASE WHEN word_h < 60 THEN '开票成功' ELSE '已开具' END
                                      WHEN 'issuing' THEN '签章中'
                                      WHEN 'failed' THEN CASE WHEN word_h < 50 THEN '签章失败' ELSE '开票失败' END END),
              xt('K', rn, CASE upload WHEN 'uploaded' THEN '已报送' WHEN 'not_uploaded' THEN '未报送'
                                      WHEN 'uploading' THEN '报送中' WHEN 'failed' THEN '报送失败'
                                      WHEN 'signature_failed' THEN '验签失败' END),
              '</row>')
FROM (
    SELECT *, CAST(row_number() OVER (ORDER BY issue_time, iss_key_id, copy_no) + {first_row} - 1 AS VARCHAR) AS rn
    FROM iss_txt WHERE src = 'batch'
)
ORDER BY issue_time, iss_key_id, copy_no
"""

# The registry's invoices (ours and purchase invoices) with their text as the export shows it, cosmetic
# noise included: full-width buyer ids, stray spaces around names, '--' for an individual's tax id.
_RR_SQL = r"""
CREATE TABLE rr AS
WITH ours AS (
    SELECT r.copy_no, r.key_id, r.issue_time, r.is_digital, r.fen, r.tax, r.total, r.noise, r.n_lines,
           x.code, x.number,
           type_r(r.is_digital, r.is_special, r.is_roll AND NOT r.is_special, hr(r.ds, r.s, 44, 100) < 70)
               AS invoice_type,
           se.tax_id AS seller_tax_id, se.name AS seller_name,
           CASE WHEN r.bad_buyer_id THEN break_check(bi.tax_id) ELSE bi.tax_id END AS buyer_tax_id,
           bn.name AS buyer_name, cl.name AS clerk, x.remark, r.status, r.reg_risk AS risk
    FROM reg AS r
    JOIN itx AS x ON x.key_id = r.key_id
    JOIN sellers AS se ON se.idx = r.seller_idx
    JOIN buyers AS bi ON bi.idx = r.buyer_id_idx
    JOIN buyers AS bn ON bn.idx = r.buyer_name_idx
    JOIN clerks AS cl ON cl.idx = r.clerk_idx
), purchases AS (
    SELECT 0 AS copy_no, p.key_id, p.issue_time, p.is_digital, p.fen, p.tax, p.total, p.noise, p.n_lines,
           CASE WHEN p.is_digital THEN ''
                ELSE '0' || o.prov || '00' || d.yy || d.doy || CASE WHEN p.is_special THEN '13' ELSE '11' END
                END AS code,
           CASE WHEN p.is_digital THEN num20(d.yy, o.prov, d.doy, '5', p.s, d.m12, d.off12)
                ELSE num8(p.s, d.m8, d.off8) END AS number,
           type_r(p.is_digital, p.is_special, false, p.noise < 70) AS invoice_type,
           o.tax_id AS seller_tax_id, o.name AS seller_name, se.tax_id AS buyer_tax_id, se.name AS buyer_name,
           cl.name AS clerk, '' AS remark, 'normal' AS status, '正常' AS risk
    FROM pur_snap AS p
    JOIN days AS d ON d.dn = p.dn
    JOIN outside AS o ON o.idx = p.out_idx
    JOIN sellers AS se ON se.idx = p.buyer_idx
    JOIN clerks AS cl ON cl.idx = p.clerk_idx
)
SELECT copy_no, key_id, issue_time, fen, tax, total, n_lines,
       CASE WHEN is_digital THEN NULL ELSE code END AS code,
       CASE WHEN is_digital THEN NULL ELSE number END AS number,
       CASE WHEN is_digital THEN number ELSE '--' END AS digital_number,
       seller_tax_id,
       CASE WHEN noise = 4 THEN ' ' || seller_name ELSE seller_name END AS seller_name,
       CASE WHEN buyer_tax_id = '' AND noise % 2 = 0 THEN '--'
            WHEN noise < 2 THEN fat_id(buyer_tax_id) ELSE buyer_tax_id END AS buyer_tax_id,
       CASE WHEN noise IN (2, 3) THEN buyer_name || ' ' ELSE buyer_name END AS buyer_name,
       strftime(issue_time, '%Y-%m-%d %H:%M:%S') AS issued,
       CASE WHEN is_digital THEN '电子发票服务平台' ELSE '增值税发票管理系统' END AS origin,
       invoice_type,
       CASE status WHEN 'normal' THEN '正常' WHEN 'voided' THEN '已作废' WHEN 'red_reversed' THEN '已红冲-全额'
            WHEN 'partly_red_reversed' THEN '已红冲-部分' WHEN 'out_of_control' THEN '失控' ELSE '异常' END AS status,
       CASE WHEN fen < 0 THEN '否' ELSE '是' END AS positive,
       risk, clerk, NULLIF(remark, '') AS remark
FROM (SELECT * FROM ours UNION ALL SELECT * FROM purchases)
"""

# Which workbook each registry invoice goes into (its lines go with it), and its rows' numbers there.
_REG_UNITS_SQL = r"""
CREATE TABLE reg_units AS
WITH u AS (
    SELECT key_id, n_lines, sum(n_lines) OVER (ORDER BY issue_time, key_id ROWS UNBOUNDED PRECEDING) AS cum
    FROM rr WHERE copy_no = 0
), w AS (
    SELECT *, CAST(CASE WHEN $total <= $max_rows THEN 0 ELSE (cum - 1) // $cap END AS INTEGER) AS wb FROM u
)
SELECT key_id, wb, cum - n_lines - min(cum - n_lines) OVER (PARTITION BY wb) AS line_start
FROM w
"""

_X2_SQL = r"""
CREATE TABLE x2 AS
SELECT u.wb,
       CAST(row_number() OVER (PARTITION BY u.wb ORDER BY r.issue_time, r.key_id, r.copy_no) AS BIGINT)
           AS seq,
       r.*
FROM rr AS r JOIN reg_units AS u USING (key_id)
ORDER BY u.wb, seq
"""

_X1_SQL = r"""
CREATE TABLE x1 AS
SELECT u.wb, u.line_start + l.j AS seq,
       r.code, r.number, r.digital_number, r.seller_tax_id, r.seller_name, r.buyer_tax_id, r.buyer_name,
       r.issued, it.tax_code, it.name AS item, NULLIF(it.spec, '') AS spec, it.unit,
       CAST(l.qty AS VARCHAR) AS qty,
       price_txt(l.price) AS price, fen_txt(l.reg_amount) AS amount, rate_txt(l.code) AS rate,
       fen_txt(l.reg_tax) AS tax, fen_txt(l.reg_amount + l.reg_tax) AS total,
       r.origin, r.invoice_type, r.status, r.positive, r.risk, r.clerk, r.remark
FROM rr AS r
JOIN reg_units AS u USING (key_id)
JOIN ln AS l ON l.key_id = r.key_id
JOIN items AS it ON it.cat = l.cat AND it.idx = l.item_idx
WHERE r.copy_no = 0
ORDER BY u.wb, seq
"""

# Sheet rows as XML (inline strings; numbers as <v>); the tables are already in row order.
_X1_XML = r"""
SELECT concat('<row r="', rn, '">', xt('A', rn, CAST(seq AS VARCHAR)), xt('B', rn, code), xt('C', rn, number),
              xt('D', rn, digital_number), xt('E', rn, seller_tax_id), xts('F', rn, seller_name),
              xt('G', rn, buyer_tax_id), xts('H', rn, buyer_name), xt('I', rn, issued), xt('J', rn, tax_code),
              xt('L', rn, item), xt('M', rn, spec), xt('N', rn, unit), xt('O', rn, qty), xt('P', rn, price),
              xn('Q', rn, amount), xt('R', rn, rate), xn('S', rn, tax), xn('T', rn, total),
              xt('U', rn, origin),
              xt('V', rn, invoice_type), xt('W', rn, status), xt('X', rn, positive), xt('Y', rn, risk),
              xt('Z', rn, clerk), xt('AA', rn, remark), '</row>')
FROM (SELECT *, CAST(seq + 1 AS VARCHAR) AS rn FROM x1 WHERE wb = {wb})
"""

_X2_XML = r"""
SELECT concat('<row r="', rn, '">', xt('A', rn, CAST(seq AS VARCHAR)), xt('B', rn, code), xt('C', rn, number),
              xt('D', rn, digital_number), xt('E', rn, seller_tax_id), xts('F', rn, seller_name),
              xt('G', rn, buyer_tax_id), xts('H', rn, buyer_name), xt('I', rn, issued),
              xn('J', rn, fen_txt(fen)), xn('K', rn, fen_txt(tax)), xn('L', rn, fen_txt(total)),
              xt('M', rn, origin), xt('N', rn, invoice_type), xt('O', rn, status), xt('P', rn, positive),
              xt('Q', rn, risk), xt('R', rn, clerk), xt('S', rn, remark), '</row>')
FROM (SELECT *, CAST(seq + 1 AS VARCHAR) AS rn FROM x2 WHERE wb = {wb})
"""


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _sql_path(path: Path) -> str:
    """A file path as a SQL string literal (COPY targets cannot be bound as parameters)."""
    return "'" + str(path).replace("'", "''") + "'"


def _copy(con: duckdb.DuckDBPyConnection, select: str, order: str, target: Path, options: str) -> None:
    con.execute(f"COPY ({select} {order}) TO {_sql_path(target)} ({options})")


def _concat(
    parts: Sequence[Path],
    target: Path,
    *,
    encoding: str | None = None,
    trailer: str = "",
    prefix: bytes = b"",
) -> None:
    """Join per-day chunk files into ``target`` in streaming fashion, optionally re-encoding them.

    Chunks keep DuckDB's sorts small (a day at a time); re-encoding reads fixed-size pieces of
    text, so a 10M-row registry export is never held in memory. ``prefix`` (a byte order mark) is
    written first.
    """
    with target.open("wb") as out:
        out.write(prefix)
        for part in parts:
            if encoding is None:
                with part.open("rb") as fin:
                    shutil.copyfileobj(fin, out, 1 << 22)
            else:
                with part.open("r", encoding="utf-8", newline="") as fin:
                    while chunk := fin.read(1 << 22):
                        out.write(chunk.encode(encoding))
            part.unlink()
        if trailer:
            out.write(trailer.encode(encoding or "utf-8"))


def _csv_line(values: Iterable[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(list(values))
    return buf.getvalue()


def _fen_fmt(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100:,}.{abs(fen) % 100:02d}"


def _write_chunked(
    con: duckdb.DuckDBPyConnection,
    selects: Sequence[str],
    order: str,
    target: Path,
    options: str,
    *,
    header: bool,
    encoding: str | None = None,
    trailer: str = "",
    prefix: bytes = b"",
) -> None:
    """COPY each select (one day each, in order) to a chunk file, then join the chunks into ``target``."""
    parts: list[Path] = []
    for i, select in enumerate(selects):
        part = target.with_name(f".{target.name}.part{i:03d}")
        opts = options + (f", HEADER {'true' if header and i == 0 else 'false'}" if header else "")
        _copy(con, select, order, part, opts)
        parts.append(part)
    _concat(parts, target, encoding=encoding, trailer=trailer, prefix=prefix)


def _write_night(
    con: duckdb.DuckDBPyConnection, root: Path, night: date, days: Sequence[date]
) -> tuple[list[Path], dict[str, int]]:
    """Write the landing files of the prepared tables into ``root``; returns files and row counts."""
    for system in FLAT_ISSUER_SYSTEMS:
        (root / "issuers" / system).mkdir(parents=True)
    (root / "registry").mkdir(parents=True)
    dns = [(d - date(1970, 1, 1)).days for d in days]
    files: list[Path] = []

    for part in (0, 1):
        target = root / "issuers" / "erp" / f"erp_part-{part}.parquet"
        _copy(
            con, _ERP_SELECT.format(part=int(part)), _ISSUER_ORDER, target, "FORMAT parquet, COMPRESSION zstd"
        )
        files.append(target)
    target = root / "issuers" / "pos" / "pos_invoices.csv"
    pos = [_POS_SELECT.format(dn=int(dn)) for dn in dns]
    _write_chunked(con, pos, _ISSUER_ORDER, target, "FORMAT csv", header=True)
    files.append(target)
    target = root / "issuers" / "webshop" / "webshop_invoices.jsonl"
    webshop = [_WEBSHOP_SELECT.format(dn=int(dn)) for dn in dns]
    _write_chunked(con, webshop, _ISSUER_ORDER, target, "FORMAT json", header=False)
    files.append(target)

    # registry: one chunk per registry date, numbered continuously, totals row appended
    registry_rows = (
        "SELECT reg_dn, fen, tax, total FROM reg UNION ALL SELECT dn, fen, tax, total FROM pur_snap"
    )
    per_day = dict(con.execute(f"SELECT reg_dn, count(*) FROM ({registry_rows}) GROUP BY reg_dn").fetchall())
    selects: list[str] = []
    offset = 0
    for dn in dns:
        selects.append(_REGISTRY_SELECT.format(offset=int(offset), dn=int(dn)))
        offset += int(per_day.get(dn, 0))
    sums = con.execute(f"SELECT sum(fen), sum(tax), sum(total) FROM ({registry_rows})").fetchone() or ()
    totals = ["合计"] + [""] * (len(REGISTRY_COLUMNS) - 1)
    for column, value in zip(("金额", "税额", "价税合计"), sums, strict=True):
        totals[REGISTRY_COLUMNS.index(column)] = _fen_fmt(int(value or 0))
    target = root / "registry" / f"registry_export_{night.isoformat()}.csv"
    order = "ORDER BY issue_time, key_id, copy_no"
    trailer = _csv_line(totals)
    _write_chunked(
        con, selects, order, target, "FORMAT csv", header=True, encoding="gb18030", trailer=trailer
    )
    files.append(target)

    rows: dict[str, int] = dict.fromkeys(FLAT_ISSUER_SYSTEMS, 0)
    for src, count in con.execute("SELECT src, count(*) FROM iss GROUP BY src").fetchall():
        rows[str(src)] = int(count)
    rows["registry"] = offset
    return sorted(files), rows


# --------------------------------------------------------------------------------------------------
# Writing the real layout
# --------------------------------------------------------------------------------------------------

_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
#: zlib level and piece size of the workbooks' deflate streams (fixed: the same arguments give the
#: same bytes). Level 1: the sheets are highly repetitive XML, and time matters more than 10 % of size.
_ZIP_LEVEL = 1
_ZIP_PIECE = 16 << 20


def _column_letters(index: int) -> str:
    """0 -> A, 26 -> AA."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _workbook_parts(sheet_names: Sequence[str]) -> list[tuple[str, bytes]]:
    """The package's small parts: content types, relationships, workbook, styles."""
    overrides = "".join(
        f'<Override PartName="/xl/worksheets/sheet{i}.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        for i in range(1, len(sheet_names) + 1)
    )
    content_types = (
        f'{_XML_DECL}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        f"{overrides}"
        '<Override PartName="/xl/styles.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/></Types>'
    )
    root_rels = (
        f'{_XML_DECL}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{_REL_NS}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
    )
    sheets = "".join(
        f'<sheet name="{name}" sheetId="{i}" r:id="rId{i}"/>' for i, name in enumerate(sheet_names, start=1)
    )
    workbook = (
        f'{_XML_DECL}<workbook xmlns="{_MAIN_NS}" xmlns:r="{_REL_NS}"><bookViews><workbookView/></bookViews>'
        f"<sheets>{sheets}</sheets></workbook>"
    )
    n = len(sheet_names)
    workbook_rels = (
        f'{_XML_DECL}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        + "".join(
            f'<Relationship Id="rId{i}" Type="{_REL_NS}/worksheet" Target="worksheets/sheet{i}.xml"/>'
            for i in range(1, n + 1)
        )
        + f'<Relationship Id="rId{n + 1}" Type="{_REL_NS}/styles" Target="styles.xml"/></Relationships>'
    )
    styles = (
        f'{_XML_DECL}<styleSheet xmlns="{_MAIN_NS}"><fonts count="1"><font><sz val="11"/><name val="宋体"/>'
        '</font></fonts><fills count="2"><fill><patternFill patternType="none"/></fill><fill>'
        '<patternFill patternType="gray125"/></fill></fills><borders count="1"><border><left/><right/><top/>'
        '<bottom/><diagonal/></border></borders><cellStyleXfs count="1"><xf numFmtId="0" fontId="0" '
        'fillId="0" borderId="0"/></cellStyleXfs><cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" '
        'borderId="0" xfId="0"/></cellXfs><cellStyles count="1"><cellStyle name="Normal" xfId="0" '
        'builtinId="0"/></cellStyles></styleSheet>'
    )
    return [
        ("[Content_Types].xml", content_types.encode()),
        ("_rels/.rels", root_rels.encode()),
        ("xl/workbook.xml", workbook.encode()),
        ("xl/_rels/workbook.xml.rels", workbook_rels.encode()),
        ("xl/styles.xml", styles.encode()),
    ]


@dataclass(frozen=True)
class _Sheet:
    """A worksheet to package: its name, XML before and after its rows, and the file of its rows."""

    name: str
    head: bytes
    rows: Path
    tail: bytes


def _deflate(data: bytes, final: bool) -> bytes:
    """One piece of a raw deflate stream, compressed on its own and ended on a byte boundary.

    Pieces compressed this way and concatenated in order are one valid stream (as pigz writes it):
    only the last one carries the final block. zlib releases the GIL, so pieces compress in parallel.
    """
    c = zlib.compressobj(_ZIP_LEVEL, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)


def _pieces(head: bytes, rows: Path | None, tail: bytes) -> Iterator[bytes]:
    """An entry's bytes in fixed-size pieces (the same pieces for the same bytes: deterministic)."""
    buf = bytearray(head)
    if rows is not None:
        with rows.open("rb") as f:
            while data := f.read(_ZIP_PIECE - len(buf)):
                buf += data
                if len(buf) >= _ZIP_PIECE:
                    yield bytes(buf)
                    buf = bytearray()
    buf += tail
    yield bytes(buf)


class _ZipWriter:
    """A minimal zip writer: deflated entries, fixed timestamps, pieces compressed on a thread pool.

    Entries stay below 4 GiB (a sheet holds at most 1,048,576 rows), so no zip64 record is needed;
    a larger entry is refused rather than written wrong.
    """

    _DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01
    _DOS_TIME = 0

    def __init__(self, path: Path, pool: ThreadPoolExecutor, workers: int) -> None:
        self._f = path.open("wb")
        self._pool = pool
        self._inflight = 2 * workers
        self._central: list[bytes] = []

    def add(self, name: str, pieces: Iterable[bytes]) -> None:
        raw_name = name.encode("ascii")
        offset = self._f.tell()
        self._f.write(b"\0" * (30 + len(raw_name)))  # the local header, written once the sizes are known
        crc = size = compressed = 0
        pending: deque[Future[bytes]] = deque()
        it = iter(pieces)
        nxt = next(it, None)
        while nxt is not None:
            piece, nxt = nxt, next(it, None)
            crc = zlib.crc32(piece, crc)
            size += len(piece)
            pending.append(self._pool.submit(_deflate, piece, nxt is None))
            while pending and (len(pending) > self._inflight or nxt is None):
                data = pending.popleft().result()
                compressed += len(data)
                self._f.write(data)
        if max(size, compressed, offset) >= 0xFFFFFFFF:  # pragma: no cover - a sheet cannot be that large
            raise ValueError(f"{name}: {size:,} bytes need zip64, which this writer does not write")
        end = self._f.tell()
        fields = struct.pack(
            "<HHHHHIII", 20, 0, zipfile.ZIP_DEFLATED, self._DOS_TIME, self._DOS_DATE, crc, compressed, size
        )
        self._f.seek(offset)
        self._f.write(
            struct.pack("<I", 0x04034B50) + fields + struct.pack("<HH", len(raw_name), 0) + raw_name
        )
        self._f.seek(end)
        self._central.append(
            struct.pack("<IH", 0x02014B50, (3 << 8) | 20)
            + fields
            + struct.pack("<HHHHHII", len(raw_name), 0, 0, 0, 0, 0o100644 << 16, offset)
            + raw_name
        )

    def close(self) -> None:
        start = self._f.tell()
        for entry in self._central:
            self._f.write(entry)
        size = self._f.tell() - start
        n = len(self._central)
        self._f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, size, start, 0))
        self._f.close()


def _write_xlsx(target: Path, sheets: Sequence[_Sheet], pool: ThreadPoolExecutor, workers: int) -> None:
    """Zip a minimal workbook package: its small parts, then each sheet streamed from its rows file."""
    writer = _ZipWriter(target, pool, workers)
    try:
        for name, data in _workbook_parts([s.name for s in sheets]):
            writer.add(name, [data])
        for i, sheet in enumerate(sheets, start=1):
            writer.add(f"xl/worksheets/sheet{i}.xml", _pieces(sheet.head, sheet.rows, sheet.tail))
    finally:
        writer.close()


def _sheet_xml(columns: Sequence[str], rows: int, totals: str = "") -> tuple[bytes, bytes]:
    """A worksheet's XML around its data rows: the header row first, an optional totals row last."""
    last = _column_letters(len(columns) - 1)
    header = "".join(
        f'<c r="{_column_letters(i)}1" t="inlineStr"><is><t>{name}</t></is></c>'
        for i, name in enumerate(columns)
    )
    head = (
        f'{_XML_DECL}<worksheet xmlns="{_MAIN_NS}"><dimension ref="A1:{last}{rows + 1}"/><sheetViews>'
        '<sheetView workbookViewId="0"/></sheetViews><sheetFormatPr defaultRowHeight="15"/><sheetData>'
        f'<row r="1">{header}</row>\n'
    )
    return head.encode(), f"{totals}</sheetData></worksheet>".encode()


def _template_sheet_xml(
    columns: Sequence[str], instructions: Sequence[dict[str, str]], rows: int
) -> tuple[bytes, bytes]:
    """A template's worksheet XML around its data rows: instruction rows (a one-cell row merged across
    the table, as templates do), then the header row, then the data rows (numbered from below it)."""
    last = _column_letters(len(columns) - 1)
    h = len(instructions) + 1
    body = []
    merges = []
    for r, cells in enumerate(instructions, start=1):
        body.append(f'<row r="{r}">' + "".join(
            f'<c r="{col}{r}" t="inlineStr"><is><t>{text}</t></is></c>' for col, text in cells.items()
        ) + "</row>")  # fmt: skip
        if list(cells) == ["A"]:
            merges.append(f'<mergeCell ref="A{r}:{last}{r}"/>')
    header = "".join(
        f'<c r="{_column_letters(i)}{h}" t="inlineStr"><is><t>{name}</t></is></c>'
        for i, name in enumerate(columns)
    )
    head = (
        f'{_XML_DECL}<worksheet xmlns="{_MAIN_NS}"><dimension ref="A1:{last}{h + rows}"/><sheetViews>'
        '<sheetView workbookViewId="0"/></sheetViews><sheetFormatPr defaultRowHeight="15"/><sheetData>'
        + "".join(body)
        + f'<row r="{h}">{header}</row>\n'
    )
    merged = f'<mergeCells count="{len(merges)}">{"".join(merges)}</mergeCells>' if merges else ""
    return head.encode(), f"</sheetData>{merged}</worksheet>".encode()


def _fen_txt(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def _copy_rows(con: duckdb.DuckDBPyConnection, select: str, target: Path) -> None:
    """One XML row per line, written as they come (the tables are in row order; no quoting)."""
    con.execute(
        f"COPY ({select}) TO {_sql_path(target)} "
        f"(FORMAT csv, HEADER false, DELIM '{chr(1)}', QUOTE '{chr(2)}', ESCAPE '{chr(2)}')"
    )


def _registry_names(start: date, night: date, count: int) -> list[str]:
    """全量发票查询导出结果（YYYYMMDD-YYYYMMDD）.xlsx, then …_2.xlsx, … for a split export."""
    base = f"全量发票查询导出结果（{start:%Y%m%d}-{night:%Y%m%d}）"
    return [f"{base}.xlsx" if k == 0 else f"{base}_{k + 1}.xlsx" for k in range(count)]


def _write_registry_real(
    con: duckdb.DuckDBPyConnection,
    folder: Path,
    scratch: Path,
    start: date,
    night: date,
) -> tuple[list[Path], int, int]:
    """The registry export: one or more two-sheet workbooks (lines first, then invoices with 合计行).

    DuckDB writes each sheet's rows as XML (no XML library, no per-cell Python); Python zips them.
    """
    total_lines = int(
        con.execute("SELECT coalesce(sum(n_lines), 0) FROM rr WHERE copy_no = 0").fetchall()[0][0]
    )
    con.execute(
        _REG_UNITS_SQL,
        {"total": total_lines, "max_rows": _SHEET_MAX_ROWS, "cap": _SHEET_MAX_ROWS - _MAX_LINES},
    )
    con.execute(_X2_SQL)
    con.execute(_X1_SQL)
    per_wb = {
        int(wb): (int(n_inv), int(fen), int(tax))
        for wb, n_inv, fen, tax in con.execute(
            "SELECT wb, count(*), sum(fen), sum(tax) FROM x2 GROUP BY wb ORDER BY wb"
        ).fetchall()
    }
    lines_wb = dict(con.execute("SELECT wb, count(*) FROM x1 GROUP BY wb").fetchall())
    files: list[Path] = []
    workers = max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for wb, name in enumerate(_registry_names(start, night, len(per_wb))):
            n_inv, fen, tax = per_wb[wb]
            n_lines = int(lines_wb.get(wb, 0))
            if n_lines > _SHEET_MAX_ROWS or n_inv + 1 > _SHEET_MAX_ROWS:  # pragma: no cover - the split
                raise AssertionError(f"workbook {wb} exceeds a sheet's rows")
            rows1, rows2 = scratch / f"wb{wb}-lines.xml", scratch / f"wb{wb}-invoices.xml"
            _copy_rows(con, _X1_XML.format(wb=wb), rows1)
            _copy_rows(con, _X2_XML.format(wb=wb), rows2)
            r = n_inv + 2
            totals = (
                f'<row r="{r}"><c r="A{r}" t="inlineStr"><is><t>合计行</t></is></c>'
                f'<c r="J{r}"><v>{_fen_txt(fen)}</v></c><c r="K{r}"><v>{_fen_txt(tax)}</v></c></row>'
            )
            head1, tail1 = _sheet_xml(REGISTRY_LINE_COLUMNS, n_lines)
            head2, tail2 = _sheet_xml(REGISTRY_COLUMNS, n_inv + 1, totals)
            target = folder / name
            sheets = [_Sheet("信息汇总表", head1, rows1, tail1), _Sheet("发票基础信息", head2, rows2, tail2)]
            try:
                _write_xlsx(target, sheets, pool, workers)
            finally:
                rows1.unlink(missing_ok=True)
                rows2.unlink(missing_ok=True)
            files.append(target)
    invoices = sum(v[0] for v in per_wb.values())
    lines = int(sum(lines_wb.values()))
    return files, invoices, lines


def _write_batch_real(con: duckdb.DuckDBPyConnection, target: Path, scratch: Path, instructions: int) -> None:
    """The batch-invoicing template: ``instructions`` instruction rows, the header row, one row an invoice."""
    rows = int(con.execute("SELECT count(*) FROM iss_txt WHERE src = 'batch'").fetchall()[0][0])
    rows_path = scratch / "batch-rows.xml"
    _copy_rows(con, _BATCH_XML.format(first_row=int(instructions) + 2), rows_path)
    head, tail = _template_sheet_xml(BATCH_COLUMNS, _BATCH_INSTRUCTIONS[:instructions], rows)
    workers = max(1, os.cpu_count() or 1)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            _write_xlsx(target, [_Sheet("开票信息", head, rows_path, tail)], pool, workers)
    finally:
        rows_path.unlink(missing_ok=True)


def _write_night_real(
    con: duckdb.DuckDBPyConnection,
    root: Path,
    scratch: Path,
    night: date,
    days: Sequence[date],
    batch_instructions: int,
) -> tuple[list[Path], dict[str, int], dict[str, int]]:
    """Write the real layout's landing files; returns files, data rows per source, lines per source."""
    for system in ISSUER_SYSTEMS:
        (root / "issuers" / system).mkdir(parents=True)
    (root / "registry").mkdir(parents=True)
    dns = [(d - date(1970, 1, 1)).days for d in days]
    stamp = f"{night:%Y%m%d}"
    files: list[Path] = []
    for part in (0, 1):
        target = root / "issuers" / "erp" / f"erp_fapiao_lines_{stamp}_{part + 1}.csv"
        erp = [_ERP_LINES_SELECT.format(part=int(part), dn=int(dn)) for dn in dns]
        _write_chunked(con, erp, "", target, "FORMAT csv", header=True, prefix=codecs.BOM_UTF8)
        files.append(target)
    target = root / "issuers" / "pos" / f"开票记录导出_{stamp}.csv"
    pos = [_POS_SELECT_REAL.format(dn=int(dn)) for dn in dns]
    _write_chunked(con, pos, "", target, "FORMAT csv", header=True, encoding="gbk")
    files.append(target)
    target = root / "issuers" / "webshop" / "webshop_invoices.jsonl"
    webshop = [_WEBSHOP_SELECT_REAL.format(dn=int(dn)) for dn in dns]
    _write_chunked(con, webshop, "", target, "FORMAT json", header=False)
    files.append(target)
    target = root / "issuers" / "taxctl" / f"发票查询导出_{stamp}.csv"
    taxctl = [_TAXCTL_SELECT.format(dn=int(dn)) for dn in dns]
    _write_chunked(con, taxctl, "", target, "FORMAT csv", header=True, encoding="gb18030")
    files.append(target)
    target = root / "issuers" / "shopapi" / f"invoices_{stamp}.jsonl"
    shopapi = [_SHOPAPI_SELECT.format(dn=int(dn)) for dn in dns]
    _write_chunked(con, shopapi, "", target, "FORMAT json", header=False)
    files.append(target)
    target = root / "issuers" / "batch" / f"批量开票结果_{stamp}.xlsx"
    _write_batch_real(con, target, scratch, batch_instructions)
    files.append(target)

    registry, invoices, lines = _write_registry_real(con, root / "registry", scratch, days[0], night)
    files.extend(registry)

    rows: dict[str, int] = dict.fromkeys(ISSUER_SYSTEMS, 0)
    for src, count, n_lines in con.execute(
        "SELECT src, count(*), sum(n_lines) FROM iss GROUP BY src"
    ).fetchall():
        rows[str(src)] = int(n_lines if src == "erp" else count)
    erp_lines = rows["erp"]
    rows["registry"] = invoices
    return sorted(files), rows, {"erp": erp_lines, "registry": lines}


def _check_states(con: duckdb.DuckDBPyConnection) -> None:
    """Every issuer row's states have a word (or code) in its system's export: a routing slip would
    otherwise write an empty cell the expected findings do not foresee."""
    bad = con.execute(
        "SELECT src, status, upload, count(*) FROM iss WHERE "
        "(src IN ('erp', 'pos', 'webshop') AND (upload IS NOT NULL OR status IN ('issuing', 'failed'))) "
        "OR (src IN ('taxctl', 'shopapi', 'batch') AND (upload IS NULL OR status NOT IN ('normal', 'issuing', 'failed', 'voided'))) "
        "OR (src IN ('shopapi', 'batch') AND status = 'voided') "
        "OR (src = 'shopapi' AND (upload NOT IN ('uploaded', 'not_uploaded', 'failed') OR NOT is_digital)) "
        "GROUP BY ALL"
    ).fetchall()
    if bad:  # pragma: no cover - guards the routing
        raise AssertionError(f"issuer states a system cannot write: {bad}")


def _replace_dir(tmp: Path, final: Path) -> None:
    """Swap ``tmp`` into place as ``final``, replacing an earlier generation of the same night."""
    old: Path | None = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old)


def _memory_limit() -> str:
    """Half the machine's memory, capped at 8 GB: DuckDB spills the rest to its temp directory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return "4GB"
    return f"{max(1, min(8, total // 2 // 2**30))}GB"


def _load(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    con.register(f"{name}_arrow", table)
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_arrow")
    con.unregister(f"{name}_arrow")


def generate_night(
    out_dir: Path,
    night: date,
    rows: int = 5000,
    seed: int = 7,
    *,
    window_days: int = 7,
    grace_hours: int = 48,
    layout: str = "real",
) -> GenerateResult:
    """Write a synthetic landing night ``out_dir/<night>/`` and its expected findings.

    ``rows`` is the number of invoices per side for the whole window (issuers together about
    ``rows``, registry about ``rows`` plus 3 % purchase invoices). ``layout`` is ``real`` (the
    registry's two-sheet workbook with invoice lines, an ERP line file, a third-party tool's GBK
    export, web-shop JSON Lines, a 税控 query export, a shop's invoicing API, a batch-invoicing
    template; the night must be run with the configuration ``SOURCES_TOML``, which this function does
    not write: only the night's folder is written) or ``flat`` (one row per invoice everywhere: a
    GB18030 registry CSV, ERP Parquet, POS CSV, web-shop JSON Lines; no configuration needed). Same
    arguments give byte-identical files. An existing night folder is replaced (built beside it, then
    renamed into place).
    """
    if isinstance(night, datetime) or not isinstance(night, date):
        raise TypeError("night must be a datetime.date")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    rows, seed, window_days, grace_hours = int(rows), int(seed), int(window_days), int(grace_hours)
    if rows <= 0 or window_days <= 0 or grace_hours < 0:
        raise ValueError("rows and window_days must be positive, grace_hours not negative")
    real = layout == "real"
    plan = _plan(rows, window_days, layout)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = night - timedelta(days=window_days - 1)
    as_of = datetime.combine(night + timedelta(days=1), datetime.min.time())
    grace_cutoff = as_of - timedelta(hours=grace_hours)
    days = [start + timedelta(days=i) for i in range(window_days)]

    final = out_dir / night.isoformat()
    tmp = out_dir / f".{night.isoformat()}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()  # not mkdtemp: the published folder keeps the umask's permissions
    spill = Path(tempfile.mkdtemp(prefix="fapiao-generate-"))
    lines_per_source: dict[str, int] = {}
    try:
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET preserve_insertion_order = true")
            con.execute("SET enable_progress_bar = false")  # library code: no terminal output
            con.execute("SET TimeZone = 'UTC'")
            con.execute(f"SET temp_directory = {_sql_path(spill / 'duckdb')}")
            con.execute(f"SET memory_limit = '{_memory_limit()}'")
            for statement in (_MACROS + (_REAL_MACROS if real else "")).split(";"):
                if statement.strip():
                    con.execute(statement)
            for name, table in _pools(seed).items():
                _load(con, name, table)
            days_table, roles_table = _day_tables(seed, days, plan)
            _load(con, "days", days_table)
            _load(con, "roles", roles_table)
            con.execute(
                _INV_SQL,
                {
                    "n": plan.per_day,
                    "n_anchor": _ANCHOR_SELLERS,
                    "n_sellers": _N_SELLERS,
                    "n_buyers": _N_BUYERS,
                    "day_start": _DAY_START_S,
                    "day_span": _DAY_SPAN_S,
                    "pending_delay": _PENDING_DELAY_S,
                    "max_delay": _MAX_NORMAL_DELAY_S,
                    "key_day": _KEY_DAY,
                    "phantom": _PHANTOM_BASE,
                },
            )
            con.execute(
                _PUR_SQL,
                {
                    "np": plan.purchases_per_day,
                    "n_outside": _N_OUTSIDE,
                    "n_sellers": _N_SELLERS,
                    "day_start": _DAY_START_S,
                    "day_span": _DAY_SPAN_S,
                    "key_day": _KEY_DAY,
                    "purchase": _PURCHASE_BASE,
                },
            )
            con.execute(_PUR_SNAP_SQL, {"as_of": as_of})
            reg_params = {"as_of": as_of, "start": start, "night": night}
            if real:
                items, item_cat = _items_tables()
                _load(con, "items", items)
                _load(con, "item_cat", item_cat)
                for statement in (
                    _LINE_PLAN_SQL,
                    _BLUE_LINES_SQL,
                    _LINES_SQL,
                    _LINE_SUMS_SQL,
                    _ROUTE_SQL,
                    *_REAL_INV_SQL.split(";"),
                ):
                    con.execute(statement)
                con.execute(_ISS_VIEW_REAL)
                con.execute(_ISS_VIEW_REAL_STATES)
                _check_states(con)
                con.execute(_REG_SQL_REAL, reg_params)
                sides, extra = _REAL_SIDES, _REAL_EXTRA
                code = "code_r(i.is_digital, i.is_special, i.is_roll, d.yy, d.doy)"
            else:
                con.execute(_ISS_VIEW)
                con.execute(_ISS_VIEW_FLAT_STATES)
                con.execute(_REG_SQL, reg_params)
                sides, extra = _FLAT_SIDES, ""
                code = "inv_code(i.is_digital, i.is_special, d.yy, d.doy)"
            con.execute(
                _EXPECTED_KEYS_SQL.replace("{sides}", sides).replace("{extra}", extra),
                {"grace_cutoff": grace_cutoff},
            )
            con.execute(_EXPECTED_SQL.replace("{code}", code))
            if real:
                for statement in (_ITX_SQL, _ISS_TXT_REAL.replace("{n_buyers}", str(_N_BUYERS)), _RR_SQL):
                    con.execute(statement)
            else:
                for statement in (_ISS_TXT_VIEW, _REG_TXT_VIEW):
                    con.execute(statement)
            kind = (
                "CASE WHEN dk = 'pair' AND pair_kind = 'stale' THEN 'stale_blue' "
                "WHEN dk = 'pair' THEN 'red_pair' ELSE dk END"
                if real
                else "CASE WHEN dk = 'pair' THEN 'red_pair' ELSE dk END"
            )
            injected = {
                str(kind): int(count)
                for kind, count in con.execute(
                    f"SELECT {kind}, count(*) FROM inv "
                    "WHERE dk NOT IN ('', 'anchor', 'clean') AND orig_s IS NULL GROUP BY ALL ORDER BY 1"
                ).fetchall()
            }

            if real:
                instructions = 2 + (night.toordinal() + seed) % 3  # the template's instruction rows: 2 to 4
                files, rows_per_source, lines_per_source = _write_night_real(
                    con, tmp, spill, night, days, instructions
                )
            else:
                files, rows_per_source = _write_night(con, tmp, night, days)
            _copy(
                con,
                "SELECT category, NULLIF(invoice_code, '') AS invoice_code, invoice_number, "
                "NULLIF(field, '') AS field, source_system"
                + (", NULLIF(cause, '') AS cause" if real else "")
                + " FROM expected",
                "ORDER BY category, coalesce(invoice_code, ''), invoice_number, coalesce(field, ''), source_system"
                + (", coalesce(cause, '')" if real else ""),
                tmp / "expected_findings.csv",
                "FORMAT csv, HEADER true",
            )
            counts = zero_counts()
            for category, count in con.execute(
                "SELECT category, count(*) FROM expected GROUP BY ALL"
            ).fetchall():
                counts[str(category)] = int(count)
            causes = {
                str(cause): int(count)
                for cause, count in con.execute(
                    "SELECT cause, count(*) FROM expected "
                    "WHERE category IN ('MISSING_IN_REGISTRY', 'PENDING_SYNC') GROUP BY ALL ORDER BY 1"
                ).fetchall()
            }
        finally:
            con.close()

        meta = {
            "generator": "fapiao_audit.generate",
            "seed": seed,
            "rows": rows,
            "night": night.isoformat(),
            "window": {"start": start.isoformat(), "end": night.isoformat(), "days": window_days},
            "as_of": as_of.isoformat() + "+08:00",
            "grace_hours": grace_hours,
            "timezone": "Asia/Shanghai",
            "invoices_per_day": plan.per_day,
            "purchase_invoices_per_day": plan.purchases_per_day,
            "cases_per_kind_per_night": plan.k_night,
            "cases_per_kind_per_day": plan.k_day,
            "pending_per_day": plan.pending_per_day,
            "red_pairs_per_day": plan.red_pairs_per_day,
            "voided_per_day": plan.voided_per_day,
            "injected": injected,
            "rows_per_source": rows_per_source,
            "counts": counts,
            "files": [p.relative_to(tmp).as_posix() for p in files],
        }
        if real:  # (the flat layout's file stays as it always was)
            meta["layout"] = layout
            meta["lines_per_source"] = lines_per_source
            meta["causes"] = causes
            meta["batch_instruction_rows"] = instructions
            meta["config"] = SOURCES_TOML
        (tmp / "generation.json").write_text(
            json.dumps(meta, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(spill, ignore_errors=True)

    return GenerateResult(
        night_dir=final,
        files=[final / p.relative_to(tmp) for p in files],
        expected_path=final / "expected_findings.csv",
        counts=counts,
        rows_per_source=rows_per_source,
        layout=layout,
        lines_per_source=lines_per_source,
        causes=causes if real else {},
    )
