"""The domain's vocabulary, defined once: finding categories, finding columns, status words, and the
typed summary of a night.

Every stage speaks these words: reconcile runs one ``reconcile.sql`` section per category and binds
the status lists below as parameters; the report, the workbook and the CSV take their columns, labels
and colours from here; the expectation suites and the generator are checked against it by tests
(``tests/test_model.py``). Adding a finding category means one :class:`Category` here and the SQL
section it names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# --------------------------------------------------------------------------- finding categories


@dataclass(frozen=True)
class Category:
    """A finding category: its code (as in ``exceptions.csv``), where it is found, labels, colour and rule.

    ``family`` is the identity of a finding across nights: a PENDING_SYNC invoice that outlives the
    grace period becomes MISSING_IN_REGISTRY and keeps the night it was first seen. ``section`` is the
    ``reconcile.sql`` section that inserts the category's findings (one section may serve two
    categories of one family).
    """

    code: str
    family: str
    section: str
    zh: str
    en: str
    colour: str
    rule_zh: str
    rule_en: str
    field: str = ""

    @property
    def label(self) -> str:
        return f"{self.zh} / {self.en}"


#: The categories of DESIGN.md, in display (and publication) order.
CATEGORIES: tuple[Category, ...] = (
    Category(
        "MISSING_IN_REGISTRY",
        "MISSING_IN_REGISTRY",
        "missing_in_registry",
        "缺失于税务系统",
        "Missing in registry",
        "#d62728",
        "开票系统已开具，税务系统中不存在，且开票时间早于数据截至时间（as_of）前的同步宽限期（默认 48 小时）。",
        "Issued in an issuing system, absent from the registry, and issued longer ago than the sync "
        "grace period before as_of (default 48 h).",
    ),
    Category(
        "PENDING_SYNC",
        "MISSING_IN_REGISTRY",
        "missing_in_registry",
        "等待同步",
        "Pending sync",
        "#a3acb9",
        "开票系统已开具，税务系统中暂不存在，但仍在同步宽限期内（仅供参考）。",
        "Issued in an issuing system, absent from the registry, but still inside the sync grace period "
        "(informational).",
    ),
    Category(
        "NOT_ISSUED",
        "NOT_ISSUED",
        "not_issued",
        "开票失败未开具",
        "Not issued",
        "#7f7f7f",
        "开票系统记录开票失败或签章失败：发票从未开具，不应出现在税务系统中（不算缺失于税务系统）；"
        "若税务系统中存在该发票，则为状态不一致。",
        "The issuing system records a failed issuance (开票失败, 签章失败): the invoice was never issued and "
        "is not expected in the registry (not a missing invoice); if the registry holds it, that is a status "
        "mismatch.",
    ),
    Category(
        "MISSING_IN_ISSUER",
        "MISSING_IN_ISSUER",
        "missing_in_issuer",
        "缺失于开票系统",
        "Missing in issuer",
        "#ff7f0e",
        "税务系统中存在且属于受监控销方，但任何开票系统中都没有。",
        "In the registry under a monitored seller, in no issuing system.",
    ),
    Category(
        "DUPLICATE_IN_SOURCE",
        "DUPLICATE_IN_SOURCE",
        "duplicate_in_source",
        "同源重复",
        "Duplicate in source",
        "#8c564b",
        "同一发票键在同一来源的快照中出现多次。",
        "The same invoice key appears more than once in one source's snapshot.",
    ),
    Category(
        "DUPLICATE_ACROSS_ISSUERS",
        "DUPLICATE_ACROSS_ISSUERS",
        "duplicate_across_issuers",
        "跨开票系统重复",
        "Duplicate across issuers",
        "#e377c2",
        "同一发票键出现在两个或以上开票系统中。",
        "The same invoice key appears in two or more issuing systems.",
    ),
    Category(
        "FIELD_MISMATCH",
        "FIELD_MISMATCH",
        "field_mismatch",
        "字段不一致",
        "Field mismatch",
        "#1f77b4",
        "双方均有该发票，但规范化后某字段不一致；每个不一致字段一行（金额、税额、价税合计、开票日期、"
        "销方识别号、购方识别号、购方名称、发票票种）。",
        "Both sides have the invoice but a field differs after normalisation; one row per differing field "
        "(amount, tax_amount, total_amount, issue_date, seller_tax_id, buyer_tax_id, buyer_name, invoice_type).",
        "amount, tax_amount, total_amount, issue_date, seller_tax_id, buyer_tax_id, buyer_name, invoice_type",
    ),
    Category(
        "STATUS_MISMATCH",
        "STATUS_MISMATCH",
        "status_mismatch",
        "状态不一致",
        "Status mismatch",
        "#9467bd",
        "发票状态（正常 / 作废 / 红冲 / 部分红冲）在开票系统与税务系统之间不一致。",
        "The status (normal / voided / red_reversed / partly_red_reversed) disagrees between issuer and "
        "registry.",
        "status",
    ),
    Category(
        "REGISTRY_RISK",
        "REGISTRY_RISK",
        "registry_risk",
        "税务系统风险",
        "Registry risk",
        "#b8860b",
        "税务系统将该发票的发票状态标记为失控或异常（且不同时属于状态不一致），或其发票风险等级不是正常"
        "（疑点发票、异常凭证等）。",
        "The registry marks the invoice out_of_control or abnormal in 发票状态 (and it is not also a status "
        "mismatch), or gives it a risk level (发票风险等级) other than none (疑点发票, 异常凭证, …).",
        "status, risk_level",
    ),
    Category(
        "INVALID_RECORD",
        "INVALID_RECORD",
        "invalid_records",
        "无效记录",
        "Invalid record",
        "#17a2b8",
        "记录本身违反规则：发票代码/号码格式错误；18 位纳税人识别号未通过 GB 32100 校验；"
        "价税合计 ≠ 金额 + 税额；|金额 × 税率 − 税额| > 0.06（有明细行的发票逐行检查）；明细行合计与发票不符，"
        "或同一发票的明细行表头字段不一致。",
        "A record breaks a rule on its own: bad key format; an 18-character tax id failing the GB 32100 "
        "checksum; total ≠ amount + tax; |amount × rate − tax| > 0.06 (per line where the invoice has lines); "
        "lines that do not add up to the invoice, or lines of one invoice that disagree on its fields.",
        "invoice_code / invoice_number, the tax id's column, total_amount, tax_amount, lines",
    ),
    Category(
        "ORPHAN_RED_INVOICE",
        "ORPHAN_RED_INVOICE",
        "orphan_red_invoices",
        "孤立红字发票",
        "Orphan red invoice",
        "#2f4b7c",
        "红字（负数）发票找不到对应的蓝字原发票，或红冲金额合计超过蓝字发票；该发现指向红字发票。",
        "A red (negative) invoice whose original blue invoice is found nowhere, or whose red totals exceed "
        "the blue; the finding names the red invoice.",
    ),
)
CATEGORY_BY_CODE: dict[str, Category] = {c.code: c for c in CATEGORIES}
CATEGORY_CODES: tuple[str, ...] = tuple(c.code for c in CATEGORIES)
#: The reconcile.sql sections that insert findings, in the order they run.
FINDING_SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(c.section for c in CATEGORIES))


def category_order(present: Iterable[str | None]) -> list[str | None]:
    """Codes in display order: known categories first, then unknown codes sorted, then None."""
    values = set(present)
    others = sorted(v for v in values if v is not None and v not in CATEGORY_BY_CODE)
    return [c for c in CATEGORY_CODES if c in values] + others + ([None] if None in values else [])


def zero_counts() -> dict[str, int]:
    """Every category with 0 findings, in display order."""
    return dict.fromkeys(CATEGORY_CODES, 0)


# --------------------------------------------------------------------------- status words

#: Invoice statuses after normalisation, with the registry's Chinese word for each.
INVOICE_STATUSES: dict[str, str] = {
    "normal": "正常",
    "voided": "已作废",
    "red_reversed": "已红冲-全额",
    "partly_red_reversed": "已红冲-部分",
    "out_of_control": "失控",
    "abnormal": "异常",
    # An issuing system's issuance state (开票状态): still being issued or signed, or never issued.
    "issuing": "开票中",
    "failed": "开票失败",
}
#: Words that mean each status, compared after lower-casing and dropping white space, '_' and '-'
#: (so 已红冲-全额 and 已红冲全额 are one word). An empty status is normal; other text is kept as it is.
STATUS_WORDS: dict[str, tuple[str, ...]] = {
    "normal": ("正常", "normal", "有效", "正常发票", "开票完成", "开票成功", "已开具"),
    "voided": ("作废", "已作废", "voided", "void", "作废发票", "作废中"),
    "red_reversed": ("红冲", "已红冲", "全额红冲", "全部红冲", "已红冲全额", "已全额红冲", "redreversed"),
    "partly_red_reversed": (
        "部分红冲",
        "已红冲部分",
        "已部分红冲",
        "partlyredreversed",
        "partiallyredreversed",
    ),
    "out_of_control": ("失控", "失控发票", "outofcontrol"),
    "abnormal": ("异常", "异常发票", "abnormal"),
    "issuing": ("开票中", "签章中", "开票成功签章中", "issuing"),
    "failed": ("开票失败", "签章失败", "开票成功签章失败", "failed"),
}
#: The issuer's upload (报送) state: whether it sent the invoice to the tax registry.
UPLOAD_STATUSES: dict[str, tuple[str, str]] = {
    "uploaded": ("已报送", "uploaded"),
    "not_uploaded": ("未报送", "not uploaded"),
    "uploading": ("报送中", "uploading"),
    "failed": ("报送失败", "upload failed"),
    "signature_failed": ("验签失败", "signature check failed"),
}
#: Words that mean each upload state (compared like status words). Other text is kept as it is.
UPLOAD_WORDS: dict[str, tuple[str, ...]] = {
    "uploaded": ("已报送", "已上传", "uploaded"),
    "not_uploaded": ("未报送", "未上传", "待上传", "notuploaded"),
    "uploading": ("报送中", "上传中", "uploading"),
    "failed": ("报送失败", "上传失败", "failed", "uploadfailed"),
    "signature_failed": ("验签失败", "signaturefailed"),
}
#: Why an issued invoice is missing from the registry (the ``cause`` of MISSING_IN_REGISTRY and
#: PENDING_SYNC), from the issuer's issuance and upload states; the most serious first.
MISSING_CAUSES: dict[str, tuple[str, str]] = {
    "uploaded_but_absent": ("已报送但税务系统中没有", "uploaded, but absent from the registry"),
    "upload_failed": ("报送失败", "upload failed"),
    "signature_failed": ("验签失败", "signature check failed"),
    "stuck_issuing": ("开票中未完成", "stuck issuing"),
    "issuing": ("开票中", "still issuing"),
    "uploading": ("报送中", "still uploading"),
    "not_uploaded": ("未报送", "not uploaded"),
    "unknown": ("原因不明（开票系统未提供报送状态）", "unknown (the issuer gives no upload state)"),
}
#: The registry's risk level (发票风险等级): the words for none, suspicious, abnormal_voucher and
#: out_of_control. Empty or 正常 is no risk; any other text is kept as it is and counts as a risk.
RISK_WORDS: dict[str, tuple[str, ...]] = {
    "none": ("正常", "none", "无", "无风险"),
    "suspicious": ("疑点发票", "疑点", "suspicious"),
    "abnormal_voucher": ("异常凭证", "abnormalvoucher"),
    "out_of_control": ("失控", "失控发票", "outofcontrol"),
}
#: 是否正数发票: the words that say "no", a red invoice.
NOT_POSITIVE_WORDS: tuple[str, ...] = ("否", "n", "no", "false", "0")


def word_lists(words: Mapping[str, tuple[str, ...]]) -> tuple[list[str], list[str]]:
    """(words, values) as two lists of equal length, for SQL to look a word up by its position."""
    pairs = [(w, value) for value, ws in words.items() for w in ws]
    return [w for w, _ in pairs], [v for _, v in pairs]


#: Statuses both sides know; a disagreement between two of them is a STATUS_MISMATCH. An issuer's
#: failed issuance is compared too: the registry should not hold it.
COMPARABLE_STATUSES: tuple[str, ...] = ("normal", "voided", "red_reversed", "partly_red_reversed", "failed")
#: The recognised invoice kinds (medium x kind); invoice_type is compared only between two of them.
INVOICE_TYPES: tuple[str, ...] = (
    "digital_special",
    "digital_normal",
    "electronic_special",
    "electronic_normal",
    "paper_special",
    "paper_normal",
)
#: Statuses only an issuing system has (its issuance state); the registry holds issued invoices only.
ISSUER_ONLY_STATUSES: tuple[str, ...] = ("issuing", "failed")
#: Registry statuses that are a REGISTRY_RISK.
RISK_STATUSES: tuple[str, ...] = ("out_of_control", "abnormal")

#: A finding's status relative to the previous published night: (Chinese, English).
FINDING_STATUSES: dict[str, tuple[str, str]] = {"new": ("新增", "new"), "open": ("持续", "open")}
#: What became of a previous night's finding that is gone tonight.
GONE_STATUSES: dict[str, tuple[str, str]] = {
    "resolved": ("已解决", "resolved"),
    "out_of_window": ("已出窗口", "out_of_window"),
    "not_checked": ("今晚未检查", "not checked tonight"),
    "closed": ("已由财务关闭", "closed by finance"),
}

#: An open item that is no longer reconciled, and why it is still open (never counted as resolved).
CARRIED_STATUSES: dict[str, tuple[str, str]] = {
    "left_window": ("离开窗口仍未解决", "left the window unresolved"),
    "not_checked": ("今晚未检查", "not checked tonight"),
}
#: The aging buckets of open items (days since first seen, inclusive bounds; None: no upper bound).
AGING_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0-2", 0, 2),
    ("3-7", 3, 7),
    ("8-30", 8, 30),
    (">30", 31, None),
)


def aging_bucket(age_days: int | None) -> str:
    """The aging bucket of an age in days (a negative or missing age is 0-2)."""
    age = max(age_days or 0, 0)
    for name, low, high in AGING_BUCKETS:
        if age >= low and (high is None or age <= high):
            return name
    return AGING_BUCKETS[-1][0]


#: Finance's decisions on a finding (处理状态): code -> (Chinese, English, closes the item).
#: A closing decision ends an open item that left the window; every decision is shown with its finding.
DECISIONS: dict[str, tuple[str, str, bool]] = {
    "verified": ("已核实", "verified", False),
    "handled": ("已处理", "handled", True),
    "no_action": ("无需处理", "no action needed", True),
}
#: Words accepted in a decision file's status column (compared without spaces, case-insensitively).
DECISION_WORDS: dict[str, str] = {
    **{zh: code for code, (zh, _en, _c) in DECISIONS.items()},
    **{en.replace(" ", "").lower(): code for code, (_zh, en, _c) in DECISIONS.items()},
    "verified": "verified",
    "checked": "verified",
    "已确认": "verified",
    "核实": "verified",
    "done": "handled",
    "fixed": "handled",
    "resolved": "handled",
    "已解决": "handled",
    "已修正": "handled",
    "noaction": "no_action",
    "accepted": "no_action",
    "ignore": "no_action",
    "不处理": "no_action",
    "无需": "no_action",
}
#: The decision a finding shows when its values changed after finance decided on it.
REOPENED: tuple[str, str] = ("决定后数值已变，重新打开", "re-opened: its values changed after the decision")

#: Who usually acts on a finding.
ROLES: dict[str, tuple[str, str]] = {
    "finance": ("财务", "finance"),
    "it": ("信息技术", "IT"),
    "tax": ("税务", "tax affairs"),
}


@dataclass(frozen=True)
class Action:
    """What to do about a finding and who usually does it (Chinese and English)."""

    zh: str
    en: str
    role: str

    @property
    def text(self) -> str:
        return f"{self.zh} / {self.en}"

    @property
    def role_label(self) -> str:
        zh, en = ROLES[self.role]
        return f"{zh} / {en}"


#: The recommended action per category, and per field where the field changes what to do; the one
#: place the outputs (exceptions.csv, the workbook, the report) take it from.
ACTIONS: dict[tuple[str, str | None], Action] = {
    ("MISSING_IN_REGISTRY", None): Action(
        "检查报送状态，重新上传至税务系统；若发票未真正开具，在开票系统中作废",
        "Check the upload state and re-upload to the registry; if it was never really issued, void it in "
        "the issuing system",
        "it",
    ),
    ("PENDING_SYNC", None): Action(
        "暂不处理，等待同步；宽限期后仍缺失再处理",
        "Wait for the sync; act only if still missing after the grace period",
        "it",
    ),
    ("NOT_ISSUED", None): Action(
        "确认开票失败原因，需要时重新开具", "Find why issuance failed and issue again where needed", "finance"
    ),
    ("MISSING_IN_ISSUER", None): Action(
        "核实是否为本单位开具；是则补录开票系统，否则向税务机关反映",
        "Confirm it was issued by us: record it in the issuing system, or else report it to the tax bureau",
        "tax",
    ),
    ("DUPLICATE_IN_SOURCE", None): Action(
        "在来源系统中删除或合并重复记录", "Remove or merge the duplicate record in the source system", "it"
    ),
    ("DUPLICATE_ACROSS_ISSUERS", None): Action(
        "确定哪个开票系统为准，删除另一系统中的记录",
        "Decide which issuing system holds the invoice and remove it from the other",
        "it",
    ),
    ("FIELD_MISMATCH", None): Action(
        "以税务系统为准更正开票系统（ERP）中的记录",
        "Correct the issuing system's (ERP) record to match the registry",
        "finance",
    ),
    # An amount that differs: a wrong invoice is reversed and reissued, a wrong ERP entry corrected.
    **{
        ("FIELD_MISMATCH", field_name): Action(
            f"核对{zh}；开票有误则开具红字发票后重开，录入有误则更正 ERP",
            f"Check the {en}: if the invoice is wrong, issue a red invoice and reissue; if the ERP entry is "
            "wrong, correct it",
            "finance",
        )
        for field_name, zh, en in (
            ("amount", "金额", "amount"),
            ("tax_amount", "税额", "tax"),
            ("total_amount", "价税合计", "total"),
        )
    },
    # A wrong buyer cannot be corrected on an issued invoice.
    **{
        ("FIELD_MISMATCH", field_name): Action(
            "购方信息有误须开具红字发票后重开", "A wrong buyer needs a red invoice and a reissue", "finance"
        )
        for field_name in ("buyer_tax_id", "buyer_name")
    },
    ("STATUS_MISMATCH", None): Action(
        "在开票系统中同步作废/红冲状态，或向税务机关核实",
        "Bring the issuing system's void/red status in line, or check it with the tax bureau",
        "finance",
    ),
    ("REGISTRY_RISK", None): Action(
        "联系主管税务机关核实风险，暂停抵扣",
        "Ask the tax bureau about the risk; hold the input-tax credit",
        "tax",
    ),
    ("INVALID_RECORD", None): Action(
        "更正来源系统中的错误数据", "Correct the record in its source system", "it"
    ),
    ("INVALID_RECORD", "lines"): Action(
        "核对明细行与发票金额，更正来源数据",
        "Reconcile the lines with the invoice and correct the source",
        "finance",
    ),
    ("ORPHAN_RED_INVOICE", None): Action(
        "查找对应蓝字发票；红冲超额须向税务机关说明",
        "Find the blue invoice; red totals above it must be explained to the tax bureau",
        "tax",
    ),
}
_NO_ACTION = Action("人工核查", "Review by hand", "finance")


#: The Chinese sentence that starts a finding's detail (the English detail follows it): per category, and
#: per field where it reads better; {source}, {field}, {issuer} and {registry} are the finding's own.
DETAIL_ZH: dict[tuple[str, str | None], str] = {
    ("MISSING_IN_REGISTRY", None): "{source} 已开具，税务系统中没有（已超过同步宽限期）",
    ("PENDING_SYNC", None): "{source} 已开具，税务系统暂未同步（仍在宽限期内）",
    ("NOT_ISSUED", None): "{source} 记录开票失败，发票未开具",
    ("MISSING_IN_ISSUER", None): "税务系统中有该发票，任何开票系统中都没有",
    ("DUPLICATE_IN_SOURCE", None): "{source} 中同一发票出现多次",
    ("DUPLICATE_ACROSS_ISSUERS", None): "多个开票系统（{source}）中都有该发票",
    ("FIELD_MISMATCH", None): "{field}不一致：开票方 {issuer}，税务系统 {registry}",
    ("STATUS_MISMATCH", None): "发票状态不一致：开票方 {issuer}，税务系统 {registry}",
    ("REGISTRY_RISK", None): "税务系统标记风险：{registry}",
    ("INVALID_RECORD", None): "{source} 的记录不符合规则（{field}）",
    ("ORPHAN_RED_INVOICE", None): "红字发票找不到对应的蓝字发票，或红冲金额超过蓝字发票",
}


def action_for(category: str | None, field_name: str | None = None) -> Action:
    """The recommended action for a finding (its category and, where it matters, its field)."""
    return ACTIONS.get((category or "", field_name)) or ACTIONS.get((category or "", None)) or _NO_ACTION


#: Chinese names of the canonical fields (``field`` of a finding, expectation columns).
FIELD_LABELS: dict[str, str] = {
    "invoice_key": "发票键",
    "invoice_code": "发票代码",
    "invoice_number": "发票号码",
    "invoice_type": "发票票种",
    "issue_time": "开票时间",
    "issue_date": "开票日期",
    "seller_tax_id": "销方识别号",
    "seller_name": "销方名称",
    "buyer_tax_id": "购方识别号",
    "buyer_name": "购方名称",
    "amount": "金额",
    "tax_amount": "税额",
    "tax_rate": "税率",
    "total_amount": "价税合计",
    "status": "发票状态",
    "original_invoice_number": "原发票号码",
    "remark": "备注",
    "risk_level": "发票风险等级",
    "is_positive": "是否正数发票",
    "lines": "明细行",
}
#: The fields a FIELD_MISMATCH, STATUS_MISMATCH or REGISTRY_RISK can name.
COMPARED_FIELDS: tuple[str, ...] = (
    "invoice_type",
    "issue_date",
    "seller_tax_id",
    "buyer_tax_id",
    "buyer_name",
    "amount",
    "tax_amount",
    "total_amount",
    "status",
    "risk_level",
)


# --------------------------------------------------------------------------- finding columns


@dataclass(frozen=True)
class FindingColumn:
    """A column of a finding: its name (in DuckDB, exceptions.csv), headers, kind and width in Excel.

    ``kind``: category | status | id (identifiers, monospaced text) | source | field | value |
    long (free text) | date | int. ``shard`` columns are produced by reconcile.sql per shard; the
    others are added when the night's findings are stored.
    """

    name: str
    zh: str
    en: str
    kind: str
    excel_width: float
    shard: bool = True


#: Every column of a stored finding, in the order of the ``findings`` table (schema.sql, after ``night``).
FINDING_COLUMNS: tuple[FindingColumn, ...] = (
    FindingColumn("category", "类别", "Category", "category", 16),
    FindingColumn("invoice_key", "发票键", "Invoice key", "id", 23),
    FindingColumn("invoice_code", "发票代码", "Invoice code", "id", 14),
    FindingColumn("invoice_number", "发票号码", "Invoice number", "id", 23),
    FindingColumn("field", "字段", "Field", "field", 14),
    FindingColumn("source_system", "来源系统", "Source", "source", 12),
    FindingColumn("issuer_value", "开票方值", "Issuer value", "value", 24),
    FindingColumn("registry_value", "税务系统值", "Registry value", "value", 24),
    FindingColumn("seller_tax_id", "销方识别号", "Seller tax id", "id", 21),
    FindingColumn("issue_date", "开票日期", "Issue date", "date", 11),
    FindingColumn("detail", "说明", "Detail", "long", 48),
    FindingColumn("suggested_match", "疑似匹配", "Suggested match", "id", 23),
    FindingColumn("finding_status", "状态", "Status", "status", 8, shard=False),
    FindingColumn("first_seen", "首次发现", "First seen", "date", 11, shard=False),
    FindingColumn("age_days", "账龄(天)", "Age (days)", "int", 9, shard=False),
    # MISSING_IN_REGISTRY / PENDING_SYNC: why, from the issuer's issuance and upload states (MISSING_CAUSES).
    FindingColumn("cause", "原因", "Cause", "cause", 18, shard=False),
    # Stable across nights (category family, key, field, source): what decisions name.
    FindingColumn("finding_id", "编号", "Finding id", "id", 15, shard=False),
    # Findings that are one problem (a typo's pair, a red invoice and its blue, an invoice's rows).
    FindingColumn("case_id", "案件", "Case", "id", 23, shard=False),
    # 价税合计 of the invoice on each side; at risk: the larger absolute value.
    FindingColumn("issuer_total", "开票方价税合计", "Issuer total", "money", 14, shard=False),
    FindingColumn("registry_total", "税务系统价税合计", "Registry total", "money", 14, shard=False),
    FindingColumn("amount_at_risk", "涉及金额", "Amount at risk", "money", 14, shard=False),
    # Finance's decision in force for this finding (DECISIONS; 'reopened' when its values changed since).
    FindingColumn("decision", "处理状态", "Decision", "decision", 12, shard=False),
    FindingColumn("decision_note", "处理说明", "Decision note", "long", 30, shard=False),
    FindingColumn("decided_by", "处理人", "Decided by", "text", 14, shard=False),
    FindingColumn("decided_on", "处理日期", "Decided on", "date", 11, shard=False),
    # Not stored: from ACTIONS when published.
    FindingColumn("action", "建议处理", "Recommended action", "long", 40, shard=False),
    FindingColumn("owner_role", "处理角色", "Who", "text", 12, shard=False),
)
COLUMN_BY_NAME: dict[str, FindingColumn] = {c.name: c for c in FINDING_COLUMNS}

#: exceptions.csv, in this order (DESIGN.md's columns first; the key last, for joins).
CSV_COLUMNS: tuple[str, ...] = (
    "category",
    "invoice_code",
    "invoice_number",
    "field",
    "source_system",
    "issuer_value",
    "registry_value",
    "seller_tax_id",
    "issue_date",
    "detail",
    "amount_at_risk",
    "issuer_total",
    "registry_total",
    "action",
    "owner_role",
    "case_id",
    "cause",
    "suggested_match",
    "finding_status",
    "first_seen",
    "age_days",
    "decision",
    "decision_note",
    "decided_by",
    "decided_on",
    "finding_id",
    "invoice_key",
)
#: exceptions.xlsx's findings sheets: the CSV's columns without the key (code and number say it).
EXCEL_COLUMNS: tuple[str, ...] = CSV_COLUMNS[:-1]
#: report.html's findings table: what a clerk scans (the amount next to the category, the action, the case).
REPORT_COLUMNS: tuple[str, ...] = (
    "category",
    "finding_status",
    "amount_at_risk",
    "invoice_code",
    "invoice_number",
    "field",
    "source_system",
    "issuer_value",
    "registry_value",
    "detail",
    "action",
    "owner_role",
    "decision",
    "age_days",
    "case_id",
)
#: ... and what opens under a finding when it is clicked (with every column above).
REPORT_DETAIL_COLUMNS: tuple[str, ...] = (
    "cause",
    "seller_tax_id",
    "issue_date",
    "suggested_match",
    "first_seen",
    "issuer_total",
    "registry_total",
    "decision_note",
    "decided_by",
    "decided_on",
    "finding_id",
)
#: report.html's resolved table: what was found, when it was first seen.
REPORT_RESOLVED_COLUMNS: tuple[str, ...] = tuple(c for c in REPORT_COLUMNS if c not in ("age_days",))


def columns(names: Iterable[str]) -> tuple[FindingColumn, ...]:
    return tuple(COLUMN_BY_NAME[n] for n in names)


# --------------------------------------------------------------------------- accounting of input files


@dataclass(frozen=True)
class FileReport:
    """How one delivered file was read: the audit trail of the night's inputs."""

    source_kind: str
    source_system: str
    file: str
    sha256: str
    format: str
    encoding: str | None
    bytes: int
    rows_read: int
    rows_loaded: int
    rows_rejected: int
    rows_skipped: int = 0
    duplicate_of: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def balanced(self) -> bool:
        """Every row read is loaded, rejected or skipped."""
        return self.rows_read == self.rows_loaded + self.rows_rejected + self.rows_skipped


@dataclass(frozen=True)
class UnreadFile:
    """A file or folder under a night's delivery that the night does not read, and why."""

    path: str
    bytes: int | None
    why: str


@dataclass(frozen=True)
class SourceTotals:
    """One source's files and row counts for the night."""

    source_system: str
    source_kind: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_skipped: int = 0
    files: tuple[FileReport, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_system": self.source_system,
            "source_kind": self.source_kind,
            "rows_read": self.rows_read,
            "rows_loaded": self.rows_loaded,
            "rows_rejected": self.rows_rejected,
            "rows_skipped": self.rows_skipped,
            "files": [f.to_dict() for f in self.files],
        }

    @property
    def balanced(self) -> bool:
        """The source's rows add up, and so do its files, each on its own and together."""
        sums = [
            sum(getattr(f, k) for f in self.files)
            for k in ("rows_read", "rows_loaded", "rows_rejected", "rows_skipped")
        ]
        return (
            self.rows_read == self.rows_loaded + self.rows_rejected + self.rows_skipped
            and all(f.balanced for f in self.files)
            and (
                not self.files
                or sums == [self.rows_read, self.rows_loaded, self.rows_rejected, self.rows_skipped]
            )
        )


def source_totals(files: Iterable[FileReport]) -> tuple[SourceTotals, ...]:
    """Per-source totals with their files, registry first."""
    by_source: dict[str, list[FileReport]] = {}
    for f in files:
        by_source.setdefault(f.source_system, []).append(f)
    out = [
        SourceTotals(
            name,
            fs[0].source_kind,
            sum(f.rows_read for f in fs),
            sum(f.rows_loaded for f in fs),
            sum(f.rows_rejected for f in fs),
            sum(f.rows_skipped for f in fs),
            tuple(fs),
        )
        for name, fs in by_source.items()
    ]
    return tuple(sorted(out, key=lambda s: (s.source_kind != "registry", s.source_system)))


# --------------------------------------------------------------------------- the night's summary


@dataclass(frozen=True)
class RunInfo:
    run_id: str = ""
    started_at: str = ""
    finished_at: str = ""
    duration_s: float = 0.0
    version: str = ""


@dataclass(frozen=True)
class SellerCount:
    seller_tax_id: str | None
    seller_name: str | None
    findings: int
    amount_at_risk: float = 0.0


@dataclass(frozen=True)
class NightCounts:
    """One published night in the trend: its findings per category and its outcome."""

    night: str
    counts: Mapping[str, int]
    total: int
    outcome: str


@dataclass(frozen=True)
class NightSummary:
    """What ``summary.json`` says of a night; the report and the workbook are drawn from it.

    ``expectations`` is the validation result document and ``config`` the configuration's
    dictionary, both published as they are.
    """

    night: str
    outcome: str = "unknown"
    run: RunInfo = field(default_factory=RunInfo)
    as_of: str | None = None
    window_start: str | None = None
    window_end: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    total_findings: int = 0
    previous_night: str | None = None
    counts_previous: Mapping[str, int] | None = None
    new: int = 0
    open: int = 0
    resolved: int = 0
    out_of_window: int | None = None
    keys: Mapping[str, int] = field(default_factory=dict)
    sources: tuple[SourceTotals, ...] = ()
    by_seller: tuple[SellerCount, ...] = ()
    registry_other_sellers: int = 0
    expectations: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    history: tuple[NightCounts, ...] = ()
    #: MISSING_IN_REGISTRY and PENDING_SYNC findings per cause (MISSING_CAUSES), the most serious first.
    missing_by_cause: Mapping[str, int] = field(default_factory=dict)
    pending_by_cause: Mapping[str, int] = field(default_factory=dict)
    #: Where the monitored sellers came from (configured | issuers | none) and how many there are.
    monitored_from: str = "issuers"
    monitored_sellers: int = 0
    #: Categories that could not be checked tonight (their count is not a zero).
    not_checked: tuple[str, ...] = ()
    #: What the operator must know about the night (also printed on stderr).
    warnings: tuple[str, ...] = ()
    #: Files and folders under the night's delivery that were not read, and why.
    unread_files: tuple[UnreadFile, ...] = ()
    #: Yuan at risk (each invoice counted once per group): total (PENDING_SYNC apart), by category, by source.
    amount_at_risk: Mapping[str, Any] = field(default_factory=dict)
    #: The open-items ledger: tonight's findings and the carried items, by state and aging bucket.
    open_items: Mapping[str, Any] = field(default_factory=dict)
    #: Finance's decisions: the files read tonight, their problems, how many are in force.
    decisions: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The published document (summary.json), keys in their documented order."""
        return {
            "night": self.night,
            "outcome": self.outcome,
            "run": asdict(self.run),
            "as_of": self.as_of,
            "window": {"start": self.window_start, "end": self.window_end},
            "counts": dict(self.counts),
            "total_findings": self.total_findings,
            "previous_night": self.previous_night,
            "counts_previous": None if self.counts_previous is None else dict(self.counts_previous),
            "new": self.new,
            "open": self.open,
            "resolved": self.resolved,
            "out_of_window": self.out_of_window,
            "keys": dict(self.keys),
            "sources": [s.to_dict() for s in self.sources],
            "by_seller": [asdict(s) for s in self.by_seller],
            "out_of_scope": {"registry_other_sellers": self.registry_other_sellers},
            "expectations": self.expectations,
            "config": self.config,
            "history": [
                {"night": h.night, "counts": dict(h.counts), "total": h.total, "outcome": h.outcome}
                for h in self.history
            ],
            "missing_by_cause": dict(self.missing_by_cause),
            "pending_by_cause": dict(self.pending_by_cause),
            "monitored_sellers": {"from": self.monitored_from, "count": self.monitored_sellers},
            "not_checked": list(self.not_checked),
            "warnings": list(self.warnings),
            "unread_files": [asdict(u) for u in self.unread_files],
            "amount_at_risk": dict(self.amount_at_risk),
            "open_items": dict(self.open_items),
            "decisions": dict(self.decisions),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NightSummary:
        """A summary read back from its document (summary.json); missing or malformed parts are empty."""
        run = _mapping(d.get("run"))
        window = _mapping(d.get("window"))
        prev = d.get("counts_previous")
        return cls(
            night=str(d.get("night") or ""),
            outcome=str(d.get("outcome") or "unknown"),
            run=RunInfo(
                str(run.get("run_id") or ""),
                str(run.get("started_at") or ""),
                str(run.get("finished_at") or ""),
                _number(run.get("duration_s")),
                str(run.get("version") or ""),
            ),
            as_of=_str_or_none(d.get("as_of")),
            window_start=_str_or_none(window.get("start")),
            window_end=_str_or_none(window.get("end")),
            counts=_counts(d.get("counts")),
            total_findings=_int(d.get("total_findings", sum(_counts(d.get("counts")).values()))),
            previous_night=_str_or_none(d.get("previous_night")),
            counts_previous=None if prev is None else _counts(prev),
            new=_int(d.get("new")),
            open=_int(d.get("open")),
            resolved=_int(d.get("resolved")),
            out_of_window=None if d.get("out_of_window") is None else _int(d.get("out_of_window")),
            keys={str(k): _int(v) for k, v in _mapping(d.get("keys")).items()},
            sources=tuple(_source_from_dict(s) for s in _list(d.get("sources")) if isinstance(s, Mapping)),
            by_seller=tuple(
                SellerCount(
                    _str_or_none(s.get("seller_tax_id")),
                    _str_or_none(s.get("seller_name")),
                    _int(s.get("findings")),
                    float(_number(s.get("amount_at_risk"))),
                )
                for s in _list(d.get("by_seller"))
                if isinstance(s, Mapping)
            ),
            registry_other_sellers=_int(_mapping(d.get("out_of_scope")).get("registry_other_sellers")),
            expectations=_mapping(d.get("expectations")),
            config=_mapping(d.get("config")),
            history=tuple(
                NightCounts(
                    str(h.get("night") or ""),
                    _counts(h.get("counts")),
                    _int(h["total"])
                    if h.get("total") is not None
                    else sum(_counts(h.get("counts")).values()),
                    str(h.get("outcome") or ""),
                )
                for h in _list(d.get("history"))
                if isinstance(h, Mapping)
            ),
            missing_by_cause=_counts(d.get("missing_by_cause")),
            pending_by_cause=_counts(d.get("pending_by_cause")),
            monitored_from=str(_mapping(d.get("monitored_sellers")).get("from") or "issuers"),
            monitored_sellers=_int(_mapping(d.get("monitored_sellers")).get("count")),
            not_checked=tuple(str(x) for x in _list(d.get("not_checked"))),
            warnings=tuple(str(x) for x in _list(d.get("warnings"))),
            unread_files=tuple(
                UnreadFile(
                    str(u.get("path") or ""),
                    None if u.get("bytes") is None else _int(u.get("bytes")),
                    str(u.get("why") or ""),
                )
                for u in _list(d.get("unread_files"))
                if isinstance(u, Mapping)
            ),
            amount_at_risk=_mapping(d.get("amount_at_risk")),
            open_items=_mapping(d.get("open_items")),
            decisions=_mapping(d.get("decisions")),
        )


def _source_from_dict(s: Mapping[str, Any]) -> SourceTotals:
    files = tuple(
        FileReport(
            str(f.get("source_kind") or s.get("source_kind") or ""),
            str(f.get("source_system") or s.get("source_system")),
            str(f.get("file") or ""),
            str(f.get("sha256") or ""),
            str(f.get("format") or ""),
            _str_or_none(f.get("encoding")),
            _int(f.get("bytes")),
            _int(f.get("rows_read")),
            _int(f.get("rows_loaded")),
            _int(f.get("rows_rejected")),
            _int(f.get("rows_skipped")),
            _str_or_none(f.get("duplicate_of")),
        )
        for f in _list(s.get("files"))
        if isinstance(f, Mapping)
    )
    return SourceTotals(
        str(s.get("source_system")),
        str(s.get("source_kind") or ""),
        _int(s.get("rows_read")),
        _int(s.get("rows_loaded")),
        _int(s.get("rows_rejected")),
        _int(s.get("rows_skipped")),
        files,
    )


def _mapping(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list | tuple) else []


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _number(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


def _counts(v: Any) -> dict[str, int]:
    return {str(k): _int(n) for k, n in _mapping(v).items()}
