"""Ingest: read a night's deliveries, map headers, normalise, stage, reject with a reason.

Every file becomes a DuckDB relation with positional columns ``c0..cN`` (headers are data,
never identifiers) plus ``__line``. A mapping chosen in Python turns those into canonical
columns, and ``sql/ingest.sql`` normalises them. Each row read is either staged or rejected
with file, line, raw text and reason, so ``rows_read = rows_loaded + rows_rejected`` per file.

A file that cannot be read at all stops the night (InputError -> exit 2): reconciling against a
partial snapshot would flood finance with false MISSING findings.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa

from .config import CANONICAL_COLUMNS, SOURCE_NAME_RE, Config
from .db import execute_sql, named_sql, pause_point, quote_ident, sql_statements
from .errors import FapiaoError, InputError, first_line
from .files import sha256_file
from .model import (
    NOT_POSITIVE_WORDS,
    RISK_WORDS,
    STATUS_WORDS,
    UPLOAD_WORDS,
    FileReport,
    SourceTotals,
    UnreadFile,
    source_totals,
    word_lists,
)
from .rowcount import csv_records, jsonl_records, parquet_rows
from .versions import INVOICES, LINES, forget, stage
from .xlsx import DEFAULT_LIMITS, Limits, NotPlain, Workbook, XlsxError

FORMATS = {".csv": "csv", ".xlsx": "xlsx", ".parquet": "parquet", ".jsonl": "jsonl"}
REGISTRY = "registry"
_CHUNK = 1 << 20

#: Headers of the fully digital (数电) 20-digit number: where a row has both it and a legacy 8-digit
#: number, the 20-digit one is the key.
_DIGITAL_NUMBER_HEADERS = (
    "数电发票号码",
    "数电票号码",
    "全电发票号码",
    "zzfphm",
    "allelectronicinvoicenumber",
    "qdinvoicenum",
)
#: Header aliases per canonical column, compared after `header_key` (NFKC, lower case, no
#: spaces, underscores, dashes, brackets or a trailing '*'). Order matters where several headers of
#: one file map to one column: the first non-empty value wins.
ALIASES: dict[str, tuple[str, ...]] = {
    "invoice_code": ("invoice_code", "invoicecode", "code", "发票代码", "fpdm"),
    "invoice_number": (
        "invoice_number",
        "invoicenumber",
        "invoiceno",
        "invoice_no",
        "number",
        "发票号码",
        "发票号",
        "金税发票号",
        "fphm",
        *_DIGITAL_NUMBER_HEADERS,
    ),
    "invoice_type": (
        "invoice_type",
        "invoicetype",
        "type",
        "发票票种",
        "票种",
        "发票类型",
        "发票种类",
        "票据类型",
    ),
    "issue_time": (
        "issue_time",
        "issuetime",
        "issuedate",
        "issue_date",
        "invoicedate",
        "invoicetime",
        "issuedat",
        "开票日期",
        "开票时间",
        "开具日期",
        "kprq",
    ),
    "seller_tax_id": (
        "seller_tax_id",
        "sellertaxid",
        "销方识别号",
        "销售方纳税人识别号",
        "销方纳税人识别号",
        "销售方识别号",
        "销方税号",
        "销售方税号",
        "xfsh",
        "salertaxnum",
        "payee_register_no",
        "salestaxno",
    ),
    "seller_name": ("seller_name", "sellername", "销方名称", "销售方名称"),
    "buyer_tax_id": (
        "buyer_tax_id",
        "buyertaxid",
        "购方识别号",
        "购买方纳税人识别号",
        "购方纳税人识别号",
        "购买方识别号",
        "购方税号",
        "购买方税号",
        "gfsh",
        "payertaxno",
        "payer_register_no",
        "customertaxno",
    ),
    "buyer_name": ("buyer_name", "buyername", "购买方名称", "购方名称", "payername"),
    "amount": ("amount", "金额", "合计金额", "不含税金额", "hjje", "extaxamount", "sum_price"),
    "tax_amount": ("tax_amount", "taxamount", "tax", "税额", "合计税额", "票面税额", "hjse", "sum_tax"),
    "tax_rate": ("tax_rate", "taxrate", "rate", "税率", "税率征收率"),
    "total_amount": (
        "total_amount",
        "totalamount",
        "total",
        "价税合计",
        "价税合计金额",
        "价税合计(小写)",
        "jshj",
        "orderamount",
        "invoice_amount",
    ),
    # The registry's 发票状态, or an issuer's issuance state (开票状态: 开票中, 开票失败, ...).
    "status": ("status", "invoice_status", "invoicestatus", "发票状态", "开票状态"),
    # An issuer's upload (报送) state. (An e-commerce platform's 上传 of the PDF to the shop is not this:
    # such a column goes to ignore_columns.)
    "upload_status": ("upload_status", "uploadstatus", "报送状态", "上传状态", "报送标志", "bszt", "bsbz"),
    # An issuing system's own document number: evidence, never the invoice number.
    "source_document": ("source_document", "sourcedocument", "单据编号", "单据号"),
    "risk_level": ("risk_level", "risklevel", "发票风险等级", "风险等级"),
    "original_invoice_number": (
        "original_invoice_number",
        "originalinvoicenumber",
        "originalinvoiceno",
        "blueinvoicenumber",
        "原发票号码",
        "蓝字发票号码",
        "对应蓝字发票号码",
    ),
    "remark": ("remark", "remarks", "note", "备注"),
    "is_positive": ("is_positive", "ispositive", "是否正数发票"),
    # Line columns: a table holding one of them is a list of invoice lines.
    "item_name": (
        "item_name",
        "itemname",
        "货物或应税劳务名称",
        "货物或应税劳务、服务名称",
        "项目名称",
        "商品名称",
    ),
    "tax_code": ("tax_code", "taxcode", "税收分类编码", "商品和服务税收分类编码"),
    "spec": ("spec", "规格型号"),
    "unit": ("unit", "单位"),
    "quantity": ("quantity", "数量"),
    "unit_price": ("unit_price", "unitprice", "单价"),
}
LINE_COLUMNS = ("item_name", "tax_code", "spec", "unit", "quantity", "unit_price")
REQUIRED = ("invoice_number", "issue_time", "amount")
#: Lines read beside their invoice sheet need only their invoice's number and their amount.
REQUIRED_LINES = ("invoice_number", "amount")
_REQUIRED_HINT = {
    "invoice_number": "invoice_number / 发票号码 / 数电发票号码",
    "issue_time": "issue_time / 开票日期",
    "seller_tax_id": "seller_tax_id / 销方识别号",
    "amount": "amount / 金额",
}
#: The registry export's sheets (全量发票查询): invoices, and their lines. Names are matched by prefix
#: (large exports continue a sheet as 信息汇总表1, ...).
INVOICE_SHEET = "发票基础信息"
LINE_SHEET = "信息汇总表"
#: Rows searched for the header row (templates start with instructions, 填表说明).
_HEADER_SEARCH_ROWS = 20
#: The model's words, bound into the normalisation (ingest.sql, normalize).
_VOCABULARY: dict[str, list[str]] = dict(
    zip(
        ("status_words", "status_values", "risk_words", "risk_values", "upload_words", "upload_values"),
        (*word_lists(STATUS_WORDS), *word_lists(RISK_WORDS), *word_lists(UPLOAD_WORDS)),
        strict=True,
    )
) | {"not_positive": list(NOT_POSITIVE_WORDS)}


def header_key(header: str) -> str:
    """Header comparison key: NFKC, lower case, without spaces, underscores, dashes, brackets and a
    trailing '*' (import templates mark required columns 开票日期*)."""
    h = unicodedata.normalize("NFKC", str(header)).lower().strip().rstrip("*")
    return re.sub(r"[\s_\-()\[\]/\\.:：\ufeff]", "", h)


_ALIAS_INDEX: dict[str, str] = {header_key(a): c for c, names in ALIASES.items() for a in names}
_DIGITAL_KEYS = frozenset(header_key(h) for h in _DIGITAL_NUMBER_HEADERS)


def _sheets_named(names: list[str], prefix: str) -> list[str]:
    """The sheets whose name starts with ``prefix`` (a large export continues a sheet as 信息汇总表1, ...)."""
    return [n for n in names if unicodedata.normalize("NFKC", n).strip().startswith(prefix)]


def has_required_columns(
    headers: list[str], overrides: dict[str, str], role: str | None, ignore: Iterable[str] = ()
) -> bool:
    """Whether a row of headers names every column the role needs."""
    mapping = map_headers(headers, overrides, ignore)
    return all(c in mapping for c in (REQUIRED_LINES if role == "lines" else REQUIRED))


@dataclass(frozen=True)
class IngestResult:
    night: date
    files: tuple[FileReport, ...]
    issuer_systems: tuple[str, ...]
    ignored_files: tuple[str, ...] = field(default=())

    def sources(self) -> tuple[SourceTotals, ...]:
        """Per-source totals with their files, registry first."""
        return source_totals(self.files)


@dataclass(frozen=True)
class Delivery:
    source_kind: str
    source_system: str
    files: tuple[Path, ...]


def unread_files(landing: Path, night: date) -> list[UnreadFile]:
    """Everything under ``<landing>/<night>/`` that no source reads (links are not followed): an operator
    must see a delivery that was not looked at, not hundreds of false missing invoices."""
    night_dir = landing / night.isoformat()
    try:
        deliveries, _ = discover(landing, night)
    except InputError:
        return []
    read = {os.path.realpath(f) for d in deliveries for f in d.files}
    out: list[UnreadFile] = []

    def entries(folder: Path) -> list[Path]:
        return sorted(folder.iterdir())

    def unread(p: Path, why: str) -> None:
        folder = p.is_dir() and not p.is_symlink()
        try:
            size = None if folder else p.lstat().st_size
        except OSError:
            size = None
        out.append(UnreadFile(_printable(str(p.relative_to(night_dir))) + ("/" if folder else ""), size, why))

    def why(p: Path) -> str:
        if p.is_symlink() and not p.exists():
            return "a broken link"
        if p.is_dir():
            return "a sub-folder (a source's files must sit directly in its folder)"
        if p.name.startswith("~$"):
            return "an Excel lock file (the workbook was open when delivered)"
        if p.name.startswith("."):
            return "a hidden file"
        if p.suffix.lower() not in FORMATS:
            return f"not a format the night reads ({', '.join(FORMATS)})" + (
                "; compressed files are not unpacked" if p.suffix.lower() in _COMPRESSED else ""
            )
        return "not read"

    def source(folder: Path) -> None:
        for p in entries(folder):
            if os.path.realpath(p) not in read or p.is_dir():
                unread(p, why(p))

    for p in entries(night_dir):
        if p.name == REGISTRY and p.is_dir():
            source(p)
        elif p.name == "issuers" and p.is_dir():
            for q in entries(p):
                if q.is_dir() and not q.name.startswith("."):
                    source(q)
                else:
                    unread(q, "outside any issuing system's folder (issuers/<system>/)")
        else:
            unread(p, "outside the delivery folders (only registry/ and issuers/<system>/ are read)")
    return out


_COMPRESSED = {".gz", ".zip", ".bz2", ".xz", ".7z", ".rar", ".zst"}


_NIGHT_FOLDER_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def landing_hint(landing: Path) -> str:
    """Where ``landing`` is itself a night's folder (or a folder inside one), the landing it belongs to.

    The landing is the folder that holds the nights (``<landing>/<night>/registry``); pointing it at
    ``landing/2026-11-20`` or ``landing/2026-11-20/issuers/erp`` is an easy slip.
    """
    parts = Path(landing).parts
    for i in range(len(parts) - 1, -1, -1):
        if _NIGHT_FOLDER_RE.fullmatch(parts[i]) and i > 0:
            parent = Path(*parts[:i])
            return (
                f"; {landing} looks like a night's folder (or a folder inside one): --landing takes the folder "
                f"that holds the nights, here --landing {parent}"
            )
    return ""


def discover(landing: Path, night: date) -> tuple[list[Delivery], list[str]]:
    """Find the night's deliveries; refuse a missing night, registry or issuer folder."""
    night_dir = landing / night.isoformat()
    if not night_dir.is_dir():
        raise InputError(
            f"{night_dir}: no delivery folder for night {night.isoformat()}" + landing_hint(landing)
        )
    root = os.path.realpath(night_dir)
    ignored: list[str] = []

    def files_in(folder: Path) -> list[Path]:
        out = []
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") or p.name.startswith("~$"):
                continue
            if p.is_file() and p.suffix.lower() in FORMATS:
                check_name(p)
                out.append(p)
            else:
                ignored.append(_printable(str(p.relative_to(night_dir))))
        return out

    def check_name(p: Path) -> None:
        """Names end up in DuckDB, reports and messages: printable UTF-8, and inside the night."""
        shown = _printable(str(p))
        try:
            p.name.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"{shown}: the file name is not valid UTF-8; rename the file") from None
        if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in p.name):
            raise InputError(f"{shown}: the file name contains control characters; rename the file")
        real = os.path.realpath(p)
        if os.path.commonpath([real, root]) != root:
            raise InputError(f"{shown}: links to a file outside the night's landing folder; refused")

    registry_dir = night_dir / REGISTRY
    if not registry_dir.is_dir():
        raise InputError(f"{registry_dir}: the registry delivery is missing for night {night.isoformat()}")
    if os.path.commonpath([os.path.realpath(registry_dir), root]) != root:
        raise InputError(f"{registry_dir}: links to a folder outside the night's landing folder; refused")
    registry_files = files_in(registry_dir)
    if not registry_files:
        raise InputError(
            f"{registry_dir}: the registry delivery is empty (no .csv, .xlsx, .parquet or .jsonl file)"
        )
    deliveries = [Delivery("registry", REGISTRY, tuple(registry_files))]
    issuers_dir = night_dir / "issuers"
    if not issuers_dir.is_dir():
        raise InputError(f"{issuers_dir}: no issuing system delivered for night {night.isoformat()}")
    for sys_dir in sorted(issuers_dir.iterdir()):
        if sys_dir.name.startswith("."):
            continue
        if not sys_dir.is_dir():
            ignored.append(_printable(str(sys_dir.relative_to(night_dir))))
            continue
        if not SOURCE_NAME_RE.fullmatch(sys_dir.name) or sys_dir.name.lower() == REGISTRY:
            raise InputError(
                f"{_printable(str(sys_dir))}: '{_printable(sys_dir.name)}' is not an accepted issuing-system name "
                "(letters, digits, '_' and '-', at most 64, not 'registry')"
            )
        if os.path.commonpath([os.path.realpath(sys_dir), root]) != root:
            raise InputError(f"{sys_dir}: links to a folder outside the night's landing folder; refused")
        files = files_in(sys_dir)
        if not files:
            raise InputError(f"{sys_dir}: issuing system '{sys_dir.name}' delivered no readable file")
        deliveries.append(Delivery("issuer", sys_dir.name, tuple(files)))
    if len(deliveries) == 1:
        raise InputError(f"{issuers_dir}: no issuing system delivered for night {night.isoformat()}")
    return deliveries, ignored


def _printable(text: str) -> str:
    """A name as it may be shown in a message: undecodable bytes and control characters escaped."""
    return "".join(c if c.isprintable() and not 0xDC80 <= ord(c) <= 0xDCFF else repr(c)[1:-1] for c in text)


def detect_encoding(path: Path, *, validate_gb18030: bool = True) -> str:
    """utf-8-sig, utf-8 or gb18030, read in chunks; anything else is refused.

    With ``validate_gb18030`` False, text that is not UTF-8 is taken for GB18030 without a second
    full pass: the caller transcodes it next (:func:`transcode_to_utf8`), which refuses it then.
    """
    with path.open("rb") as f:
        head = f.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise InputError(f"{path}: UTF-16 text is not accepted; deliver UTF-8 or GB18030")
    for enc in ("utf-8", "gb18030"):
        if enc == "gb18030" and not validate_gb18030:
            return enc
        dec = codecs.getincrementaldecoder(enc)()
        try:
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    if b"\x00" in chunk:
                        raise InputError(f"{path}: binary content (NUL bytes) in a text file")
                    dec.decode(chunk)
        except UnicodeDecodeError:
            continue
        try:
            dec.decode(b"", final=True)
        except UnicodeDecodeError:
            if enc == "utf-8":
                # Valid UTF-8 up to a character cut in half: a truncated delivery, not GB18030 (reading
                # it as GB18030 would garble every Chinese name instead of refusing the file).
                raise InputError(
                    f"{path}: ends in the middle of a UTF-8 character; the file looks truncated"
                ) from None
            continue
        return enc
    raise InputError(f"{path}: text is neither UTF-8 nor GBK/GB18030")


def transcode_to_utf8(path: Path, encoding: str, out: Path, *, unify_newlines: bool = False) -> None:
    """Stream a file into UTF-8, chunk by chunk (never the whole file in memory).

    With ``unify_newlines`` every CRLF or lone CR becomes LF: DuckDB's strict CSV parser refuses
    files whose line endings are mixed, which happens when exports are concatenated.
    """
    dec = codecs.getincrementaldecoder(encoding)()
    try:
        _transcode(path, dec, out, unify_newlines)
    except BaseException as e:
        out.unlink(missing_ok=True)
        if isinstance(e, UnicodeDecodeError):
            raise InputError(f"{path}: text is neither UTF-8 nor GBK/GB18030") from None
        raise


def _transcode(path: Path, dec: codecs.IncrementalDecoder, out: Path, unify_newlines: bool) -> None:
    pending_cr = False
    with path.open("rb") as src, out.open("wb") as dst:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            if b"\x00" in chunk:
                raise InputError(f"{path}: binary content (NUL bytes) in a text file")
            text = dec.decode(chunk)
            if unify_newlines:
                if pending_cr:
                    text = "\r" + text
                pending_cr = text.endswith("\r")
                if pending_cr:
                    text = text[:-1]
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            dst.write(text.encode("utf-8"))
        tail = dec.decode(b"", final=True) + ("\n" if pending_cr else "")
        dst.write(tail.encode("utf-8"))


@dataclass
class _Part:
    """One table of a file: the whole file, or one sheet of a workbook.

    ``relation`` holds its rows (c0..cN VARCHAR, __line); ``role`` is ``invoices`` (one row per
    invoice), ``lines`` (the invoice lines of the workbook's invoice sheet) or None (decided by its
    columns: a table with line columns and nothing beside it is a line file).
    """

    sheet: str | None
    headers: list[str]
    relation: str
    role: str | None = None
    rejects: list[tuple[int, str | None, str]] = field(default_factory=list)
    physical: int | None = None  # rows the file holds, counted apart from the reader (rowcount)


class _Reader:
    """Loads one file into temp relations (c0..cN VARCHAR, __line), one per part, with their headers."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        tmp_dir: Path,
        buffer_size: int = 32 << 20,
        overrides: dict[str, str] | None = None,
        ignore: Iterable[str] = (),
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.con = con
        self.limits = limits
        self.tmp_dir = tmp_dir
        self.buffer_size = buffer_size
        self.overrides = overrides or {}
        self.ignore = tuple(ignore)

    def read(self, path: Path, fmt: str) -> tuple[list[_Part], str | None]:
        """Returns (the file's parts, encoding)."""
        try:
            if fmt == "parquet":
                return [_Part(None, self._parquet(path), "ing_raw", physical=parquet_rows(path))], None
            if fmt == "csv":
                headers, enc, rejects, delim = self._csv(path)
                physical = csv_records(path, enc, delim) - 1  # the header is not a row
                return [_Part(None, headers, "ing_raw", rejects=rejects, physical=physical)], enc
            if fmt == "jsonl":
                headers, enc, rejects = self._jsonl(path)
                return [_Part(None, headers, "ing_raw", rejects=rejects, physical=jsonl_records(path))], enc
            return self._xlsx(path), None
        except InputError:
            raise
        except duckdb.OutOfMemoryException as e:
            raise _out_of_memory(path, e) from None
        except duckdb.Error as e:
            raise InputError(f"{path}: cannot read as {fmt}: {first_line(e)}") from None

    @staticmethod
    def _positional(
        n: int, float_cols: frozenset[int] = frozenset(), tz_cols: frozenset[int] = frozenset()
    ) -> str:
        """c0..cN as text from positional references; integral floats lose their '.0' (ids typed as numbers),
        and instants (TIMESTAMPTZ) become Beijing wall-clock text, which fa_time reads without parsing an offset."""
        cols = []
        for i in range(n):
            ref = f"#{i + 1}"
            if i in tz_cols:
                expr = f"CAST(timezone('Asia/Shanghai', {ref}) AS VARCHAR)"
            elif i in float_cols:
                expr = (
                    f"CASE WHEN {ref} = trunc({ref}) AND abs({ref}) < 1e15 "
                    f"THEN CAST(CAST({ref} AS BIGINT) AS VARCHAR) ELSE CAST({ref} AS VARCHAR) END"
                )
            else:
                expr = f"CAST({ref} AS VARCHAR)"
            cols.append(f"{expr} AS c{i}")
        return ", ".join(cols)

    def _parquet(self, path: Path) -> list[str]:
        desc = self.con.execute("DESCRIBE SELECT * FROM read_parquet($p)", {"p": str(path)}).fetchall()
        floats = frozenset(i for i, d in enumerate(desc) if str(d[1]).upper() in ("DOUBLE", "FLOAT", "REAL"))
        instants = frozenset(i for i, d in enumerate(desc) if str(d[1]).upper() == "TIMESTAMP WITH TIME ZONE")
        # A view (not a copy): the path goes in through the relational API, never into SQL text.
        self.con.read_parquet(str(path), file_row_number=True).create_view("ing_parquet", replace=True)
        self.con.execute(
            f"CREATE OR REPLACE TEMP VIEW ing_raw AS SELECT {self._positional(len(desc), floats, instants)}, "
            "file_row_number + 1 AS __line FROM ing_parquet"
        )
        # A parquet file whose footer is fine but data pages are corrupt fails on the scan: force it now.
        self.con.execute("SELECT count(*) FROM ing_raw").fetchone()
        return [d[0] for d in desc]

    def _text_source(self, path: Path, *, unify_newlines: bool = False) -> tuple[Path, str]:
        enc = detect_encoding(path, validate_gb18030=False)  # transcoding validates GB18030
        if enc == "gb18030" or unify_newlines:
            out = self.tmp_dir / (hashlib.sha1(str(path).encode()).hexdigest() + ".utf8")
            transcode_to_utf8(path, enc, out, unify_newlines=unify_newlines)
            return out, enc
        return path, enc

    def _csv(
        self, path: Path, unify_newlines: bool = False
    ) -> tuple[list[str], str, list[tuple[int, str | None, str]], str]:
        src, enc = self._text_source(path, unify_newlines=unify_newlines)
        # The header and the delimiter come from the first record, read here; DuckDB then parses
        # with a fixed dialect (no sniffing: the sniffer can be misled by the very rows we reject).
        with src.open("r", encoding="utf-8-sig", errors="replace", newline="") as f:
            first = f.readline(1 << 20)
        delim = max([",", "\t", ";", "|"], key=first.count)
        try:
            header_row = next(csv.reader([first], delimiter=delim), [])
        except csv.Error as e:  # a header cell over the csv module's field limit (128 KiB): no header of ours
            raise InputError(
                f"{path}: the header row cannot be read ({e}); is the first line a header?"
            ) from None
        headers = [h.strip() for h in header_row]
        if not any(headers):
            raise InputError(f"{path}: no header row")
        columns = {f"c{i}": "VARCHAR" for i in range(len(headers))}
        self._drop_rejects()
        try:
            self.con.execute(
                "CREATE OR REPLACE TEMP TABLE ing_csv AS SELECT * FROM read_csv($p, header = true, "
                "auto_detect = false, columns = $cols, delim = $d, quote = '\"', escape = '\"', null_padding = false, "
                "store_rejects = true, rejects_table = 'ing_rej', rejects_scan = 'ing_rej_scan', buffer_size = $bs)",
                {"p": str(src), "d": delim, "cols": columns, "bs": self.buffer_size},
            )
        except duckdb.InvalidInputException as e:
            if unify_newlines or "state machine" not in str(e):
                raise
            return self._csv(path, unify_newlines=True)
        # One reject row per bad column: keep one per line.
        rejects = self.con.execute(
            # (a line over the maximum size has no column: coalesce keeps it, arg_min would skip a NULL key)
            "SELECT line, arg_min(csv_line, coalesce(column_idx, -1)), arg_min(error_type, coalesce(column_idx, -1)), "
            "arg_min(error_message, coalesce(column_idx, -1)) FROM ing_rej GROUP BY line ORDER BY line"
        ).fetchall()
        # Physical line of the k-th accepted record (k from 0): header + k + 1, plus every rejected
        # line before it. Reject j (1-based, at line r_j) precedes accepted records with k >= r_j - j - 1.
        self.con.execute("CREATE OR REPLACE TEMP TABLE ing_rej_shift (t BIGINT)")
        if rejects:
            self.con.executemany(
                "INSERT INTO ing_rej_shift VALUES (?)",
                [[r[0] - j - 1] for j, r in enumerate(rejects, start=1)],
            )
        self.con.execute(
            "CREATE OR REPLACE TEMP VIEW ing_raw AS SELECT c.*, "
            "c.rowid + 2 + (SELECT count(*) FROM ing_rej_shift s WHERE s.t <= c.rowid) AS __line FROM ing_csv c"
        )
        reader_rejects = [(int(r[0]), r[1], f"malformed CSV row ({r[2].lower()}): {r[3]}") for r in rejects]
        return headers, enc, reader_rejects, delim

    def _drop_rejects(self) -> None:
        self.con.execute("DROP TABLE IF EXISTS ing_rej")
        self.con.execute("DROP TABLE IF EXISTS ing_rej_scan")

    def _jsonl(
        self, path: Path, unify_newlines: bool = False
    ) -> tuple[list[str], str, list[tuple[int, str | None, str]]]:
        src, enc = self._text_source(path, unify_newlines=unify_newlines)
        self._drop_rejects()
        try:
            self.con.execute(
                "CREATE OR REPLACE TEMP TABLE ing_lines0 AS SELECT j FROM read_csv($p, columns = {'j': 'VARCHAR'}, "
                "header = false, delim = chr(31), quote = '', escape = '', auto_detect = false, store_rejects = true, "
                "rejects_table = 'ing_rej', rejects_scan = 'ing_rej_scan', buffer_size = $bs)",
                {"p": str(src), "bs": self.buffer_size},
            )
        except duckdb.InvalidInputException as e:  # mixed line ends (\n and \r\n): read them unified
            if unify_newlines or "state machine" not in str(e):
                raise
            return self._jsonl(path, unify_newlines=True)
        self.con.execute(
            "CREATE OR REPLACE TEMP VIEW ing_lines AS SELECT rowid + 1 AS __line, "
            "CASE WHEN j IS NULL THEN NULL ELSE rtrim(j, chr(13)) END AS j FROM ing_lines0"
        )
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE ing_json AS SELECT __line, j, json_valid(j) AS ok, "
            "CASE WHEN json_valid(j) THEN json_type(j) = 'OBJECT' ELSE false END AS obj "
            "FROM ing_lines WHERE j IS NOT NULL AND trim(j) <> ''"
        )
        keys = [
            r[0]
            for r in self.con.execute(
                "SELECT k, min(__line) AS first FROM (SELECT unnest(json_keys(j)) AS k, __line FROM ing_json "
                "WHERE obj) GROUP BY k ORDER BY first, k"
            ).fetchall()
        ]
        valid = self.con.execute("SELECT count(*) FILTER (WHERE obj), count(*) FROM ing_json").fetchall()[0]
        if valid[1] and not valid[0]:
            raise InputError(f"{path}: no line is a JSON object; not a JSON Lines file")
        pointers = ["/" + k.replace("~", "~0").replace("/", "~1") for k in keys]
        cols = ", ".join(f"v[{i + 1}] AS c{i}" for i in range(len(keys)))
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE ing_jsonl AS SELECT "
            + (cols + ", " if cols else "")
            + "__line, j AS __text FROM (SELECT __line, j, json_extract_string(j, $ptr) AS v FROM ing_json WHERE obj)",
            {"ptr": pointers},
        )
        self.con.execute("CREATE OR REPLACE TEMP VIEW ing_raw AS SELECT * FROM ing_jsonl")
        bad = self.con.execute("SELECT __line, j, ok FROM ing_json WHERE NOT obj ORDER BY __line").fetchall()
        more = self.con.execute(
            "SELECT line, min(csv_line) FROM ing_rej GROUP BY line ORDER BY line"
        ).fetchall()
        reader_rejects = [
            (int(line), raw, "malformed JSON line" if not ok else "JSON line is not an object")
            for line, raw, ok in bad
        ] + [(int(line), raw, "malformed JSON line") for line, raw in more]
        return keys, enc, reader_rejects

    def _xlsx(self, path: Path) -> list[_Part]:
        """The workbook's invoice sheets (发票基础信息...) and its line sheets (信息汇总表...), else its first sheet."""
        try:
            with Workbook(path, limits=self.limits) as wb:
                names = wb.sheet_names
                if not names:
                    raise InputError(f"{path}: the workbook has no sheet")
                invoices = _sheets_named(names, INVOICE_SHEET)
                plan: list[tuple[str, str | None]] = [(names[0], None)]
                if invoices:
                    plan = [(n, "invoices") for n in invoices]
                    plan += [(n, "lines") for n in _sheets_named(names, LINE_SHEET)]
                parts = []
                for k, (name, role) in enumerate(plan):
                    relation = f"ing_sheet_{k}"
                    try:
                        headers, physical = self._sheet(path, wb.rows(name), name, relation, role)
                    except NotPlain:  # valid XML the fast reader does not read: the sheet again, with expat
                        headers, physical = self._sheet(path, wb.rows(name, fast=False), name, relation, role)
                    parts.append(_Part(name, headers, relation, role, physical=physical))
                return parts
        except XlsxError as e:
            raise InputError(f"{path}: not a readable .xlsx workbook ({e})") from None

    def _sheet(
        self,
        path: Path,
        rows: Iterator[tuple[int, list[str | None]]],
        name: str,
        relation: str,
        role: str | None,
    ) -> tuple[list[str], int]:
        """Load one sheet into ``relation``; the header is the first row, within the first 20 rows that
        hold anything, that has the required columns (templates start with instruction rows), else the
        first such row. Returns the header and how many rows below it hold anything (counted here, as
        the sheet's XML gives them, whatever its ``<dimension>`` says)."""
        headers: list[str] | None = None
        candidates: list[tuple[int, list[str | None]]] = []
        buf: list[list[str | None]] = []
        lines: list[int] = []
        width = 0
        created = False
        physical = 0

        def flush() -> None:
            """The buffered rows into the sheet's temp table (Python holds at most one batch)."""
            nonlocal created, physical
            physical += len(buf)
            if created and not buf:
                return
            arrays = [
                pa.array([r[i] if i < len(r) else None for r in buf], pa.string()) for i in range(width)
            ]
            arrays.append(pa.array(lines, pa.int64()))
            batch = pa.Table.from_arrays(arrays, [f"c{i}" for i in range(width)] + ["__line"])
            self.con.register("ing_xlsx_arrow", batch)
            try:
                if created:
                    self.con.execute(f"INSERT INTO {relation} SELECT * FROM ing_xlsx_arrow")
                else:
                    self.con.execute(
                        f"CREATE OR REPLACE TEMP TABLE {relation} AS SELECT * FROM ing_xlsx_arrow"
                    )
                    created = True
            finally:
                self.con.unregister("ing_xlsx_arrow")
            buf.clear()
            lines.clear()

        def take_header(at: int) -> None:
            nonlocal headers, width
            headers = [c or "" for c in candidates[at][1]]
            while headers and headers[-1] == "":
                headers.pop()
            width = len(headers)
            for excel_row, cells in candidates[at + 1 :]:
                buf.append(cells[:width])
                lines.append(excel_row)

        for excel_row, cells in rows:
            if not any(c not in (None, "") for c in cells):
                continue
            if headers is None:
                candidates.append((excel_row, cells))
                if has_required_columns([c or "" for c in cells], self.overrides, role, self.ignore):
                    take_header(len(candidates) - 1)
                elif len(candidates) == _HEADER_SEARCH_ROWS:
                    take_header(0)
                continue
            buf.append(cells[:width])
            lines.append(excel_row)
            if len(buf) >= 50_000:
                flush()
        if headers is None and candidates:
            take_header(0)
        if headers is None:
            raise InputError(f"{path}: the sheet '{name}' is empty")
        flush()
        return headers, physical


_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


def csv_buffer_size(memory_limit: str) -> int:
    """DuckDB's CSV read buffer for a memory limit: its default (32 MiB) unless the limit is small.

    The reader's buffers cannot spill; with a limit of 64 MB the default buffer alone fails with
    "could not allocate block". An eighth of the limit, at least 4 MiB (above the 2 MiB longest line).
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*", memory_limit or "")
    if not m or m.group(2).lower() not in _UNITS:
        return 32 << 20
    limit = float(m.group(1)) * _UNITS[m.group(2).lower()]
    return int(min(32 << 20, max(4 << 20, limit // 8)))


def _out_of_memory(path: Path, e: BaseException) -> FapiaoError:
    """Out of memory is the configuration's problem, not the file's: say so, and name the file."""
    return FapiaoError(
        f"{path}: out of memory while reading it ({first_line(e)}); raise duckdb_memory_limit or lower "
        "duckdb_threads in the configuration"
    )


def map_headers(
    headers: list[str], overrides: dict[str, str], ignore: Iterable[str] = ()
) -> dict[str, list[int]]:
    """Canonical column -> positions of the file's headers that feed it, in file order (a source's
    ignored headers feed nothing)."""
    over = {header_key(h): c for h, c in overrides.items()}
    dropped = {header_key(h) for h in ignore}
    out: dict[str, list[int]] = {}
    for i, h in enumerate(headers):
        k = header_key(h)
        canonical = None if k in dropped else over.get(k) or _ALIAS_INDEX.get(k)
        if canonical:
            out.setdefault(canonical, []).append(i)
    # Prefer the fully digital number column when a file has both 发票号码 and 数电发票号码 (or zzfphm, ...).
    if "invoice_number" in out and len(out["invoice_number"]) > 1:
        digital = [i for i in out["invoice_number"] if header_key(headers[i]) in _DIGITAL_KEYS]
        out["invoice_number"] = digital + [i for i in out["invoice_number"] if i not in digital]
    return out


def _mapped_view_sql(mapping: dict[str, list[int]], ncols: int, coded: Iterable[str] = ()) -> str:
    """SELECT list over ing_raw; only generated names (c<i>, canonical columns) appear in it. The
    ``coded`` columns go through the source's value codes (the temp table ing_value_map)."""
    coded = set(coded)
    cols = ["__line"]
    for canonical in ALIASES:
        # Column names come from the fixed canonical list only; positions are integers.
        if canonical not in CANONICAL_COLUMNS:
            raise AssertionError(canonical)
        name = quote_ident(canonical)
        pos = mapping.get(canonical)
        if not pos:
            cols.append(f"NULL::VARCHAR AS {name}")
        else:
            # Present column: an empty cell is '' (NULL means the file has no such column). A cell of
            # dashes only ('--') is empty: here where several headers feed one column (the first
            # non-empty wins), in the normalising macros otherwise (they ask only values starting with a dash).
            cell = "fa_cell(c{})" if len(pos) > 1 else "NULLIF(trim(c{}), '')"
            expr = "coalesce(" + ", ".join(cell.format(int(p)) for p in pos) + ", '')"
            if canonical in coded:
                expr = f"fa_code('{canonical}', {expr})"
            cols.append(f"{expr} AS {name}")
    # The first non-empty cell (a totals row says 合计 there), looked at only where a row has no number.
    first = (
        "coalesce(" + ", ".join(f"NULLIF(trim(c{i}), '')" for i in range(min(ncols, 64))) + ")"
        if ncols
        else "NULL"
    )
    cols.append(f"{first}::VARCHAR AS first_cell")
    return "CREATE OR REPLACE TEMP VIEW ing_mapped AS SELECT " + ", ".join(cols) + " FROM ing_raw"


def _raw_line_sql(ncols: int, raw_column: str | None = None) -> str:
    """The view ing_raw_rejected: the rejected rows' text as delivered (cells joined by commas, or the
    JSON line). The text is built after the join with the rejected lines, not for every row."""
    if raw_column:
        raw = f"r.{raw_column}"
    elif ncols:
        raw = "concat_ws(',', " + ", ".join(f"coalesce(r.c{i}, '')" for i in range(ncols)) + ")"
    else:
        raw = "''"
    return (
        "CREATE OR REPLACE TEMP VIEW ing_raw_rejected AS SELECT n.__line, n.reason, n.skipped, "
        f"left({raw}, 2000) AS raw FROM ing_raw r JOIN ing_norm n USING (__line) WHERE n.reason IS NOT NULL"
    )


def _install_macros(
    con: duckdb.DuckDBPyConnection, value_maps: dict[str, dict[str, str]] | None = None
) -> None:
    """The normalising macros, and a source's value codes ({canonical column: {code: value}})."""
    con.execute("CREATE OR REPLACE TEMP TABLE ing_value_map (col VARCHAR, k VARCHAR, v VARCHAR)")
    rows = [[col, k, v] for col, codes in (value_maps or {}).items() for k, v in codes.items()]
    if rows:
        con.executemany("INSERT INTO ing_value_map VALUES (?, ?, ?)", rows)
    for name, sql in sql_statements("ingest.sql"):
        if name.startswith("macro"):
            con.execute(sql)


def find_delivery(landing: Path, night: date, source_system: str) -> Delivery:
    """One source's delivery of the night (for a task that ingests a single source)."""
    deliveries, _ = discover(landing, night)
    for d in deliveries:
        if d.source_system == source_system:
            return d
    raise InputError(f"{landing / night.isoformat()}: no delivery from source '{source_system}'")


def _forget_rows(con: duckdb.DuckDBPyConnection, where: str, params: dict[str, object]) -> None:
    """Remove the staged rows (snapshots, rejected rows, ingested files) ``where`` says (over night and
    source_system), inside the caller's transaction."""
    forget(con, where, params)
    for table in ("rejected_rows", "ingested_files"):
        con.execute(f"DELETE FROM {table} WHERE {where}", params)


def prune_sources(con: duckdb.DuckDBPyConnection, night: date, systems: Iterable[str]) -> None:
    """Drop staged rows of sources that no longer deliver for this night (a rerun replaces the night)."""
    keep = sorted(systems)
    con.execute("BEGIN TRANSACTION")
    try:
        _forget_rows(
            con, "night = $night AND NOT list_contains($keep, source_system)", {"night": night, "keep": keep}
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def ingest_source(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    night: date,
    delivery: Delivery,
    cfg: Config,
    tmp_dir: Path,
    on_file: Callable[[FileReport], None] | None = None,
) -> tuple[FileReport, ...]:
    """Stage one source of a night, replacing its rows of that night in one transaction.

    ``on_file`` is told about each file as soon as it has been read (progress on long nights).
    """
    night_dir = landing / night.isoformat()
    _install_macros(con, cfg.value_maps.get(delivery.source_system))
    tmp_dir.mkdir(parents=True, exist_ok=True)
    reader = _Reader(
        con,
        tmp_dir,
        csv_buffer_size(cfg.duckdb_memory_limit),
        cfg.column_mappings.get(delivery.source_system, {}),
        cfg.ignore_columns.get(delivery.source_system, ()),
        Limits(cfg.xlsx_max_uncompressed_mb << 20, cfg.xlsx_max_shared_strings, columns=cfg.xlsx_max_columns),
    )
    reports: list[FileReport] = []
    seen: dict[str, str] = {}
    d = delivery
    # Files are read into temp tables outside any transaction (rowids of uncommitted rows do not
    # follow file order); the source's partition is then replaced in one transaction.
    # Each file's normalised rows stay in their own temp tables (ing_<file>_<part>) until the commit:
    # no copy of the whole source is made before the one into staged_invoices.
    con.execute("CREATE OR REPLACE TEMP TABLE ing_rejected AS FROM rejected_rows LIMIT 0")
    staged: list[tuple[str, _Staged]] = []
    try:
        for i, path in enumerate(d.files):
            rel = str(path.relative_to(night_dir))
            report, tables = _ingest_file(con, reader, path, rel, d, night, cfg, seen, i)
            staged.extend((rel, t) for t in tables)
            reports.append(report)
            if on_file is not None:
                on_file(report)
        if sum(r.rows_loaded for r in reports) == 0:
            where = night_dir / ("registry" if d.source_kind == "registry" else f"issuers/{d.source_system}")
            raise InputError(
                f"{where}: {d.source_system} delivered no loadable invoice rows; refusing to reconcile "
                "against an empty snapshot"
            )
        con.execute("BEGIN TRANSACTION")
        try:
            _forget_rows(
                con, "night = $night AND source_system = $system", {"night": night, "system": d.source_system}
            )
            pause_point("ingest")  # test hook: a kill here must leave the previous rows in place
            for rel, t in staged:
                store = INVOICES
                if t.kind == "lines":
                    con.execute(f"CREATE OR REPLACE TEMP VIEW ing_lines_file AS {_lines_view(t.table)}")
                    statement, store = "staged_lines", LINES
                elif t.groups:
                    con.execute(
                        "CREATE OR REPLACE TEMP VIEW ing_norm_file AS SELECT n.*, g.lines, g.lines_amount, "
                        "g.lines_tax, g.line_rate_gap, g.line_rate_line, NULL::VARCHAR AS line_problem "
                        f"FROM {t.table} n LEFT JOIN {t.groups} g ON g.invoice_key = n.invoice_key"
                    )
                    statement = "staged_rows"
                elif t.summed:
                    con.execute(f"CREATE OR REPLACE TEMP VIEW ing_norm_file AS FROM {t.table}")
                    statement = "staged_rows"
                else:
                    con.execute(
                        f"CREATE OR REPLACE TEMP VIEW ing_norm_file AS SELECT *, {_NO_LINES} FROM {t.table}"
                    )
                    statement = "staged_rows"
                try:
                    execute_sql(con, named_sql("ingest.sql", statement), {})
                    stage(
                        con,
                        store,
                        "ing_stage_rows",
                        night=night,
                        kind=d.source_kind,
                        system=d.source_system,
                        file=rel,
                        sheet=t.sheet,
                        restage_all=cfg.restage_all,
                    )
                except duckdb.OutOfMemoryException as e:
                    raise _out_of_memory(night_dir / rel, e) from None
            con.execute("INSERT INTO rejected_rows BY NAME FROM ing_rejected")
            con.executemany(
                "INSERT INTO ingested_files (night, source_kind, source_system, file, sha256, format, encoding, "
                "bytes, rows_read, rows_loaded, rows_rejected, rows_skipped, duplicate_of) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    [
                        night,
                        r.source_kind,
                        r.source_system,
                        r.file,
                        r.sha256,
                        r.format,
                        r.encoding,
                        r.bytes,
                        r.rows_read,
                        r.rows_loaded,
                        r.rows_rejected,
                        r.rows_skipped,
                        r.duplicate_of,
                    ]
                    for r in reports
                ],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        # The committed rows stay in memory until a checkpoint writes them into the file; under a
        # small duckdb_memory_limit they would crowd out the reconciliation.
        try:
            con.execute("CHECKPOINT")
        except duckdb.TransactionException:
            pass  # another transaction is open on this database: DuckDB checkpoints later itself
    finally:
        for p in tmp_dir.glob("*.utf8"):
            p.unlink(missing_ok=True)
        drop_scratch(con)
    return tuple(reports)


def drop_scratch(con: duckdb.DuckDBPyConnection) -> None:
    """Drop ingest's temp tables and views (``ing_*``): they hold whole files and would crowd the
    memory the reconciliation needs (spilled, but still counted against a small memory limit)."""
    for kind, catalog in (("VIEW", "duckdb_views()"), ("TABLE", "duckdb_tables()")):
        names = con.execute(
            f"SELECT view_name FROM {catalog} WHERE temporary AND starts_with(view_name, 'ing_')"
            if kind == "VIEW"
            else f"SELECT table_name FROM {catalog} WHERE temporary AND starts_with(table_name, 'ing_')"
        ).fetchall()
        for (name,) in names:
            con.execute(f"DROP {kind} IF EXISTS temp.main.{quote_ident(name)}")


def ingest_night(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    night: date,
    cfg: Config,
    tmp_dir: Path,
    on_file: Callable[[FileReport], None] | None = None,
) -> IngestResult:
    """Stage every source of a night (the command line's path; the DAG maps ingest_source)."""
    deliveries, ignored = discover(landing, night)
    prune_sources(con, night, [d.source_system for d in deliveries])
    reports: list[FileReport] = []
    for d in deliveries:
        reports.extend(ingest_source(con, landing, night, d, cfg, tmp_dir, on_file))
    systems = tuple(d.source_system for d in deliveries if d.source_kind == "issuer")
    return IngestResult(night, tuple(reports), systems, tuple(ignored))


def load_ingest_result(con: duckdb.DuckDBPyConnection, night: date) -> IngestResult:
    """The night's ingest audit trail as stored in DuckDB."""
    rows = con.execute(
        "SELECT source_kind, source_system, file, sha256, format, encoding, bytes, rows_read, rows_loaded, "
        "rows_rejected, coalesce(rows_skipped, 0), duplicate_of FROM ingested_files WHERE night = $n "
        "ORDER BY source_kind = 'issuer', source_system, file",
        {"n": night},
    ).fetchall()
    files = tuple(FileReport(*r) for r in rows)
    systems = tuple(sorted({f.source_system for f in files if f.source_kind == "issuer"}))
    return IngestResult(night, files, systems)


@dataclass(frozen=True)
class _Staged:
    """A normalised table of one file waiting for the commit: invoice rows or line rows.

    ``groups`` (invoices only) names the line sums of the same file's line sheets, joined on at the
    commit; ``summed`` invoices are a line file's, made of those sums.
    """

    kind: str
    table: str
    sheet: str | None
    groups: str | None = None
    summed: bool = False


def _lines_view(table: str) -> str:
    """The loaded lines of a normalised line table, with what only a line has (``<table>_details``)."""
    return (
        f"SELECT n.*, d.* EXCLUDE (__line) FROM {table} n JOIN {table}_details d USING (__line) "
        "WHERE n.reason IS NULL"
    )


_NO_LINES = (
    "NULL::INTEGER AS lines, NULL::DECIMAL(18, 2) AS lines_amount, NULL::DECIMAL(18, 2) AS lines_tax, "
    "NULL::DECIMAL(38, 6) AS line_rate_gap, NULL::BIGINT AS line_rate_line, NULL::VARCHAR AS line_problem"
)


def _sum_lines(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    index: int,
    staged: list[_Staged],
    line_parts: list[tuple[str, str]],
) -> list[_Staged]:
    """Sum the file's lines per invoice (all its line sheets together: an invoice's lines may run on from
    信息汇总表 to 信息汇总表1). A line file's invoices are those sums; a workbook's invoices take them."""
    groups = f"ing_{index}_groups"
    con.execute(
        "CREATE OR REPLACE TEMP VIEW ing_norm_lines AS "
        + " UNION ALL ".join(_lines_view(t) for t, _role in line_parts)
    )
    con.execute(f"DROP TABLE IF EXISTS {groups}")
    try:
        execute_sql(con, named_sql("ingest.sql", "line_groups"), {})
        if any(role == "line_file" for _t, role in line_parts):  # the invoices are the lines grouped
            execute_sql(con, named_sql("ingest.sql", "grouped_invoices"), {})
            con.execute(f"ALTER TABLE ing_norm RENAME TO {groups}")
            return [*staged, _Staged("invoices", groups, staged[-1].sheet, summed=True)]
        con.execute(f"ALTER TABLE ing_line_groups RENAME TO {groups}")
    except duckdb.OutOfMemoryException as e:
        raise _out_of_memory(path, e) from None
    except duckdb.Error as e:
        raise InputError(f"{path}: cannot sum the lines per invoice: {first_line(e)}") from None
    return [replace(t, groups=groups) if t.kind == "invoices" else t for t in staged]


def _ingest_file(
    con: duckdb.DuckDBPyConnection,
    reader: _Reader,
    path: Path,
    rel: str,
    d: Delivery,
    night: date,
    cfg: Config,
    seen: dict[str, str],
    index: int,
) -> tuple[FileReport, list[_Staged]]:
    """Read, normalise and account for one file; its tables wait for the commit (``_Staged``)."""
    fmt = FORMATS[path.suffix.lower()]
    size = path.stat().st_size
    sha = sha256_file(path)
    if sha in seen:
        return FileReport(
            d.source_kind, d.source_system, rel, sha, fmt, None, size, 0, 0, 0, duplicate_of=seen[sha]
        ), []
    seen[sha] = rel
    if size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    parts, encoding = reader.read(path, fmt)
    overrides = cfg.column_mappings.get(d.source_system, {})
    totals = [0, 0, 0, 0]  # read, loaded, rejected, skipped
    staged: list[_Staged] = []
    line_parts: list[tuple[str, str]] = []  # (table, role) of the parts that are lines
    for k, part in enumerate(parts):
        where = f"{path} (sheet '{part.sheet}')" if part.sheet is not None else str(path)
        mapping = map_headers(part.headers, overrides, cfg.ignore_columns.get(d.source_system, ()))
        role = part.role or ("line_file" if any(c in mapping for c in LINE_COLUMNS) else "invoices")
        missing = [c for c in (REQUIRED_LINES if role == "lines" else REQUIRED) if c not in mapping]
        if missing:
            shown = ", ".join(repr(h) for h in part.headers[:30]) or "none"
            raise InputError(
                f"{where}: missing required column(s): "
                + "; ".join(_REQUIRED_HINT[c] for c in missing)
                + f" (headers found: {shown}). If the export renamed a header, map it in the configuration "
                f'file (--config): [sources.{d.source_system}.columns] "<header as delivered>" = "{missing[0]}"'
            )
        if part.relation != "ing_raw":
            con.execute(f"CREATE OR REPLACE TEMP VIEW ing_raw AS SELECT * FROM {part.relation}")
        con.execute(_mapped_view_sql(mapping, len(part.headers), cfg.value_maps.get(d.source_system, {})))
        params = {
            "night": night,
            "kind": d.source_kind,
            "system": d.source_system,
            "file": rel,
            "sheet": part.sheet,
            "role": role,
            **_VOCABULARY,
        }
        try:
            execute_sql(con, named_sql("ingest.sql", "normalize"), params)
            con.execute(_raw_line_sql(len(part.headers), "__text" if fmt == "jsonl" else None))
            execute_sql(con, named_sql("ingest.sql", "insert_rejected"), params)
            normalised, loaded, skipped = execute_sql(
                con, named_sql("ingest.sql", "counts"), params
            ).fetchall()[0]
            if part.rejects:
                con.executemany(
                    "INSERT INTO ing_rejected (night, source_system, file, line, raw, reason, sheet) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        [night, d.source_system, rel, line, (raw or "")[:2000], reason, part.sheet]
                        for line, raw, reason in part.rejects
                    ],
                )
            rejected = normalised - loaded - skipped + len(part.rejects)
            # rows_read is what the file holds, not what the reader returned: a row lost between the
            # two leaves the file unbalanced (and the night failed), never silently balanced.
            read = part.physical if part.physical is not None else loaded + rejected + skipped
            if loaded == 0 and rejected > 0:
                sample = con.execute(
                    "SELECT reason FROM ing_rejected WHERE file = $f AND sheet IS NOT DISTINCT FROM $sh "
                    "AND NOT skipped GROUP BY reason ORDER BY count(*) DESC, reason LIMIT 1",
                    {"f": rel, "sh": part.sheet},
                ).fetchone()
                raise InputError(
                    f"{where}: none of its {read} rows could be loaded "
                    f"(most common problem: {sample[0] if sample else '?'})"
                )
            name = f"ing_{index}_{k}"
            con.execute(f"DROP TABLE IF EXISTS {name}")
            con.execute(f"ALTER TABLE ing_norm RENAME TO {name}")
            if role != "invoices":
                execute_sql(con, named_sql("ingest.sql", "line_details"), params)
                con.execute(f"DROP TABLE IF EXISTS {name}_details")
                con.execute(f"ALTER TABLE ing_line_details RENAME TO {name}_details")
            if part.relation.startswith("ing_sheet_"):  # a sheet's raw rows are done with: free their memory
                con.execute("DROP VIEW IF EXISTS ing_raw")
                con.execute(f"DROP TABLE IF EXISTS {part.relation}")
            if role == "invoices":
                staged.append(_Staged("invoices", name, part.sheet))
            else:
                staged.append(_Staged("lines", name, part.sheet))
                line_parts.append((name, role))
        except duckdb.OutOfMemoryException as e:
            raise _out_of_memory(path, e) from None
        except duckdb.Error as e:
            raise InputError(f"{where}: cannot read as {fmt}: {first_line(e)}") from None
        for i, n in enumerate((read, loaded, rejected, skipped)):
            totals[i] += n
    if line_parts:
        staged = _sum_lines(con, path, index, staged, line_parts)
    read, loaded, rejected, skipped = totals
    return FileReport(
        d.source_kind, d.source_system, rel, sha, fmt, encoding, size, read, loaded, rejected, skipped
    ), staged
