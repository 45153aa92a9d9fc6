"""Masking of buyers' personal data in published outputs.

Invoices to private persons carry a person's name and, where given, their resident identity
number in the buyer fields. Auditors reading ``report.html`` need to see that a buyer value
differs, not who the person is, so these values are masked there (``exceptions.xlsx`` for
finance is unmasked by default: finance has to fix the invoice). Company buyers are not
personal data and stay readable: an auditor must be able to tell *which* company is affected.

Every function here is pure and total: ``None`` and ``""`` pass through unchanged, any other
input yields a string of the same length, so column widths and lengths stay informative.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BUYER_FIELDS",
    "COMPANY_WORDS",
    "RESIDENT_ID_RE",
    "is_individual",
    "mark_bidi",
    "mask_free_text",
    "mask_name",
    "mask_raw_line",
    "mask_record",
    "mask_tax_id",
]

#: Unicode direction controls: shown as they are, they reorder what a reader sees (a name ending in
#: U+202E reads backwards); the published CSV and report show them as visible marks instead.
_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def mark_bidi(text: str) -> str:
    """Direction controls made visible: U+202E becomes '⟨U+202E⟩'. Other text is returned as it is."""
    return _BIDI.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", text) if _BIDI.search(text) else text


#: ``field`` values of a finding whose issuer/registry values are buyer data.
BUYER_FIELDS = frozenset({"buyer_name", "buyer_tax_id"})

#: Words that mark an organisation's name. A buyer name containing none of them is taken to
#: be a person. Erring towards "person" only costs readability; the opposite leaks a name.
COMPANY_WORDS = (
    "公司",
    "有限",
    "集团",
    "厂",
    "店",
    "中心",
    "院",
    "所",
    "局",
    "部",
    "合作社",
    "学校",
    "大学",
    "银行",
    "商行",
    "工作室",
    "协会",
    "委员会",
    "基金会",
    "事务",
    "办事处",
    "经营",
    "门市",
    "超市",
    "酒店",
    "宾馆",
    "医院",
    "诊所",
    "幼儿园",
    "政府",
    "街道",
    "居委会",
    "村委会",
)
_COMPANY_WORDS_LATIN = re.compile(
    r"\b(?:co|company|corp|corporation|inc|incorporated|ltd|limited|llc|llp|plc|gmbh|ag|sa|bv|group)\b",
    re.IGNORECASE,
)

#: Mainland resident identity number (GB 11643): region (first digit 1-8), birth date, sequence,
#: check character. Unified social credit codes of enterprises start with 9 and never match.
_RESIDENT_ID = r"[1-8]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx]"
RESIDENT_ID_RE = re.compile(_RESIDENT_ID)
_RESIDENT_ID_IN_TEXT = re.compile(r"(?<![0-9A-Za-z])" + _RESIDENT_ID + r"(?![0-9A-Za-z])")


def _clean(s: str | None) -> str:
    return unicodedata.normalize("NFKC", s).strip() if s else ""


def mask_tax_id(s: str | None) -> str | None:
    """Keep the first 4 and last 4 characters, star the rest; 8 characters or fewer: all stars.

    ``'110101199003071234'`` becomes ``'1101**********1234'``: enough to match a value against
    the source system by eye, not enough to identify the person.
    """
    if not s:
        return s
    if len(s) <= 8:
        return "*" * len(s)
    return s[:4] + "*" * (len(s) - 8) + s[-4:]


def mask_name(s: str | None) -> str | None:
    """Keep the first character (the family name), star the rest: ``张三丰`` becomes ``张**``.

    A one-character value is starred completely: keeping it would keep all of it.
    Leading spaces are kept as they are so that the first *visible* character is what stays.
    """
    if not s:
        return s
    stripped = s.lstrip()
    lead = len(s) - len(stripped)
    if len(stripped) <= 1:
        return s[:lead] + "*" * len(stripped)
    return s[:lead] + stripped[0] + "*" * (len(stripped) - 1)


def _has_company_word(name: str) -> bool:
    return any(w in name for w in COMPANY_WORDS) or bool(_COMPANY_WORDS_LATIN.search(name))


def is_individual(tax_id: str | None, name: str | None) -> bool:
    """Whether a buyer is (probably) a private person, judged from what an invoice carries.

    - a tax id shaped like a resident identity number: a person, whatever the name says;
    - otherwise a name decides: a person unless it holds an organisation word (公司, 有限, …);
    - with no name, an empty tax id means a person (organisations must give theirs).

    Deviation from the plain "empty id or person-like name" rule, on purpose: an empty tax id
    next to a company name is a company that omitted its id, and masking it would hide which
    company an auditor has to follow up.
    """
    tid = _clean(tax_id).upper()
    nm = _clean(name)
    if tid and RESIDENT_ID_RE.fullmatch(tid):
        return True
    if nm:
        return not _has_company_word(nm)
    return not tid


def mask_free_text(s: str | None) -> str | None:
    """Mask every resident identity number inside free text (details, raw rejected lines).

    Names inside free text cannot be recognised reliably; they are masked by
    :func:`mask_record` where the record says which value is a buyer's name.
    """
    if not s or not any(c.isdigit() for c in s):
        return s
    return _RESIDENT_ID_IN_TEXT.sub(lambda m: mask_tax_id(m.group(0)) or "", s)


#: Short Han words of an invoice row that are not names (statuses, types, yes/no, totals).
_NOT_NAMES = frozenset(
    {
        "正常",
        "作废",
        "已作废",
        "红冲",
        "已红冲",
        "全额红冲",
        "部分红冲",
        "失控",
        "异常",
        "是",
        "否",
        "合计",
        "小计",
        "总计",
        "数电票",
        "蓝字",
        "红字",
        "正数",
        "负数",
        "普通发票",
        "专用发票",
        "电子发票",
        "纸质发票",
        "增值税",
        "发票",
        "备注",
        "免税",
        "不征税",
        "开票人",
        "复核",
        "收款人",
        "销售方",
        "购买方",
        "个人",
        "北京",
        "上海",
    }
)
_HAN_RUN = re.compile(
    r"(?<![\u3400-\u9fff])[\u3400-\u9fff]{2,4}(?:·[\u3400-\u9fff]{1,6})?(?![\u3400-\u9fff])"
)


def mask_raw_line(s: str | None) -> str | None:
    """Mask what may be a person inside a raw input row (a rejected CSV line or JSON object).

    A raw row has no reliable columns (it was rejected for a reason), so: resident identity
    numbers, and every standalone run of 2-4 Han characters that is neither an organisation
    name nor a known invoice word, are masked like names. Over-masking a short word costs a
    little readability; the reason column still says why the row was rejected.
    """
    s = mask_free_text(s)
    if not s:
        return s

    def repl(m: re.Match[str]) -> str:
        word = m.group(0)
        if word in _NOT_NAMES or _has_company_word(word):
            return word
        return mask_name(word) or word

    return _HAN_RUN.sub(repl, s)


def _mask_buyer_value(field: str, value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return value
    if field == "buyer_name":
        return mask_name(value) if is_individual(None, value) else value
    return mask_tax_id(value) if is_individual(value, None) else value


def mask_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of one finding / rejected row / buyer record with personal data masked.

    - ``buyer_name`` / ``buyer_tax_id`` columns: both masked when the buyer is an individual;
    - a finding whose ``field`` is ``buyer_name`` or ``buyer_tax_id``: its ``issuer_value`` and
      ``registry_value`` are masked per value, and every occurrence of a masked value inside the
      record's other text (``detail``, ``suggested_match``, …) is replaced by its masked form;
    - ``raw`` (a rejected input row): see :func:`mask_raw_line`;
    - every other text value: resident identity numbers are masked.
    """
    out = dict(record)
    replacements: dict[str, str] = {}

    if "buyer_name" in out or "buyer_tax_id" in out:
        tid, nm = out.get("buyer_tax_id"), out.get("buyer_name")
        if is_individual(tid if isinstance(tid, str) else None, nm if isinstance(nm, str) else None):
            if isinstance(nm, str) and nm:
                out["buyer_name"] = mask_name(nm)
                replacements[nm] = out["buyer_name"]
            if isinstance(tid, str) and tid:
                out["buyer_tax_id"] = mask_tax_id(tid)
                replacements[tid] = out["buyer_tax_id"]

    field = out.get("field")
    if field in BUYER_FIELDS:
        for key in ("issuer_value", "registry_value"):
            value = out.get(key)
            masked = _mask_buyer_value(field, value)
            if masked != value and value is not None:
                out[key] = masked
                replacements[value] = masked

    # Longest first, so that a name contained in a longer name is not half-replaced.
    ordered = sorted((k for k in replacements if k.strip()), key=len, reverse=True)
    done = {"buyer_name", "buyer_tax_id"} | (
        {"issuer_value", "registry_value"} if field in BUYER_FIELDS else set()
    )
    for key, value in out.items():
        if key in done or key == "field" or not isinstance(value, str) or not value:
            continue
        for original in ordered:
            if original in value:
                value = value.replace(original, replacements[original])
        out[key] = mask_raw_line(value) if key == "raw" else mask_free_text(value)
    return out
