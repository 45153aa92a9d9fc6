"""Reading .xlsx workbooks as rows of text, streamed, with Python's expat parser.

The registry's 全量发票查询 download is a workbook of up to a million lines, written with inline
strings. openpyxl's read-only mode reads such a sheet at about 2,000 rows a second (ten minutes
for a million lines) and trusts the sheet's ``<dimension>`` tag; this reader parses the sheet XML
directly, a row at a time (about 8,000 rows of 27 cells a second), and reads every row the sheet
holds, whatever it declares.

Cells come back as the text ingest reads: strings as written, numbers as their shortest form
(``800``, ``1234.5``; an integral number below 1e15 without ``.0``, so ids typed as numbers keep
their digits), dates as ``YYYY-MM-DD HH:MM:SS`` (numbers in a date format, or ``t="d"``), booleans
as ``true`` / ``false``, errors as their code (``#N/A``). Only the parts a worksheet needs are read
(workbook, relationships, shared strings, styles); anything malformed raises :class:`XlsxError`.
"""

from __future__ import annotations

import codecs
import re
import xml.parsers.expat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import IO, Any

__all__ = ["DEFAULT_LIMITS", "Limits", "NotPlain", "Workbook", "XlsxError"]

#: Built-in number formats that show dates or times (ECMA-376 18.8.30, with the CJK ids 27-36, 50-58).
_BUILTIN_DATE_FORMATS = frozenset([*range(14, 23), *range(27, 37), *range(45, 48), *range(50, 59)])
#: Excel's cell limit; a longer shared string is not from a spreadsheet program.
CELL_MAX = 32_767
_SERIAL_MAX = 2_958_465  # 9999-12-31


#: What a truncated or corrupted zip member raises while it is read.
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


class XlsxError(Exception):
    """The workbook cannot be read: not a zip, a part missing or malformed."""


def _local(name: str) -> str:
    """An element's local name (``{ns}row`` and ``x:row`` alike are ``row``)."""
    return name.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def _parse(stream: IO[bytes], start: Any, end: Any = None, chars: Any = None) -> None:
    parser = xml.parsers.expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    parser.StartElementHandler = start
    if end is not None:
        parser.EndElementHandler = end
    if chars is not None:
        parser.CharacterDataHandler = chars
    try:
        parser.ParseFile(stream)
    except xml.parsers.expat.ExpatError as e:
        raise XlsxError(f"malformed XML ({e})") from None
    except _DAMAGED as e:
        raise XlsxError(f"damaged package ({type(e).__name__}: {e})") from None


def is_date_format(code: str) -> bool:
    """Whether a number format code shows a date or a time (quoted text and [colours] aside)."""
    code = re.sub(r'"[^"]*"|\\.|\[[^\]]*\]|_.|\*.', "", code.split(";")[0])
    return bool(re.search(r"[dmyhs]", code, re.IGNORECASE)) and not re.fullmatch(r"[#0.,%\sE+-]*", code)


def excel_datetime(serial: float, date1904: bool = False) -> str:
    """An Excel date serial as ``YYYY-MM-DD HH:MM:SS`` (``HH:MM:SS`` for a time of day alone)."""
    if not 0 <= serial <= _SERIAL_MAX:
        raise ValueError(serial)
    base = datetime(1904, 1, 1) if date1904 else datetime(1899, 12, 30)
    moment = base + timedelta(milliseconds=round(serial * 86_400_000))
    if moment.microsecond:
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    if serial < 1 and not date1904:
        return moment.time().isoformat()
    return moment.isoformat(sep=" ")


def number_text(v: str) -> str:
    """A numeric cell's value as ingest reads it: integral values below 1e15 without '.0'."""
    f = float(v)
    return str(int(f)) if f.is_integer() and abs(f) < 1e15 else repr(f)


@dataclass(frozen=True)
class Limits:
    """Bounds a workbook is read within, checked before memory or time can run away (a spreadsheet bomb:
    a tiny file declaring a huge sheet, one huge shared string, millions of them). The defaults pass a
    real registry export of a million lines (about 2 GB unpacked, 30 to 50 columns)."""

    uncompressed_bytes: int = 8 << 30
    shared_strings: int = 20_000_000
    shared_string_chars: int = 1 << 30
    columns: int = 1024


DEFAULT_LIMITS = Limits()


class Workbook:
    """An open workbook: its sheet names, and its sheets' rows streamed one at a time."""

    def __init__(self, path: Path, *, fast: bool = True, limits: Limits = DEFAULT_LIMITS) -> None:
        self.fast = fast
        self.limits = limits
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise XlsxError(f"not a zip package ({e})") from None
        try:
            unpacked = sum(i.file_size for i in self._zip.infolist())
            if unpacked > limits.uncompressed_bytes:
                raise XlsxError(
                    f"it unpacks to {unpacked:,} bytes, beyond the limit of {limits.uncompressed_bytes:,} "
                    "(xlsx_max_uncompressed_mb); refused before reading"
                )
            self._names = set(self._zip.namelist())
            self._sheets, self._date1904 = self._read_workbook()
            self._shared: list[str] | None = None
            self._date_styles: frozenset[int] | None = None
        except BaseException:
            self._zip.close()
            raise

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> Workbook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def sheet_names(self) -> list[str]:
        return list(self._sheets)

    # ---------------------------------------------------------------- parts

    def _open(self, part: str) -> IO[bytes]:
        try:
            return self._zip.open(part)
        except KeyError:
            raise XlsxError(f"the part {part} is missing") from None
        except (*_DAMAGED, RuntimeError) as e:  # RuntimeError: an encrypted member
            raise XlsxError(f"the part {part} cannot be opened ({type(e).__name__}: {e})") from None

    def _read_workbook(self) -> tuple[dict[str, str], bool]:
        workbook = self._find_workbook_part()
        sheets: list[tuple[str, str]] = []
        date1904 = [False]

        def start(name: str, attrs: dict[str, str]) -> None:
            local = _local(name)
            if local == "sheet":
                sheets.append((attrs.get("name", ""), _attr(attrs, "id") or ""))
            elif local == "workbookPr" and attrs.get("date1904") in ("1", "true"):
                date1904[0] = True

        with self._open(workbook) as f:
            _parse(f, start)
        targets = self._relationships(workbook)
        out: dict[str, str] = {}
        for name, rid in sheets:
            target = targets.get(rid)
            if target is None:
                raise XlsxError(f"sheet '{name}' has no part")
            out[name] = target
        return out, date1904[0]

    def _find_workbook_part(self) -> str:
        found: list[str] = []

        def start(name: str, attrs: dict[str, str]) -> None:
            if _local(name) == "Relationship" and attrs.get("Type", "").endswith("/officeDocument"):
                found.append(attrs.get("Target", ""))

        if "_rels/.rels" in self._names:
            with self._open("_rels/.rels") as f:
                _parse(f, start)
        part = found[0].lstrip("/") if found else "xl/workbook.xml"
        if part not in self._names:
            raise XlsxError("no workbook part (xl/workbook.xml)")
        return part

    def _relationships(self, part: str) -> dict[str, str]:
        folder = PurePosixPath(part).parent
        rels = str(folder / "_rels" / (PurePosixPath(part).name + ".rels"))
        out: dict[str, str] = {}

        def start(name: str, attrs: dict[str, str]) -> None:
            if _local(name) == "Relationship":
                target = attrs.get("Target", "")
                path = target.lstrip("/") if target.startswith("/") else str(_normalise(folder / target))
                out[attrs.get("Id", "")] = path

        if rels in self._names:
            with self._open(rels) as f:
                _parse(f, start)
        return out

    def _shared_strings(self) -> list[str]:
        if self._shared is not None:
            return self._shared
        strings: list[str] = []
        part = next((n for n in ("xl/sharedStrings.xml", "xl/sharedstrings.xml") if n in self._names), None)
        if part is not None:
            buf: list[str] = []
            depth_rph = 0
            in_t = False
            size = [0, 0]  # characters of the string being read, of every string
            limits = self.limits

            def start(name: str, attrs: dict[str, str]) -> None:
                nonlocal depth_rph, in_t
                local = _local(name)
                if local == "si":
                    buf.clear()
                    size[0] = 0
                    if len(strings) >= limits.shared_strings:
                        raise XlsxError(
                            f"more than {limits.shared_strings:,} shared strings "
                            "(xlsx_max_shared_strings); refused"
                        )
                elif local == "rPh":
                    depth_rph += 1
                elif local == "t" and not depth_rph:
                    in_t = True

            def end(name: str) -> None:
                nonlocal depth_rph, in_t
                local = _local(name)
                if local == "si":
                    text = "".join(buf)
                    if len(text) > CELL_MAX:
                        raise XlsxError(
                            f"a shared string of {len(text):,} characters (a cell holds at most {CELL_MAX:,})"
                        )
                    strings.append(text)
                elif local == "rPh":
                    depth_rph -= 1
                elif local == "t":
                    in_t = False

            def chars(data: str) -> None:
                if in_t:
                    size[0] += len(data)
                    size[1] += len(data)
                    if size[0] > CELL_MAX:  # said before the string is held whole
                        raise XlsxError(
                            f"a shared string of more than {CELL_MAX:,} characters (a cell holds at "
                            f"most {CELL_MAX:,})"
                        )
                    if size[1] > limits.shared_string_chars:
                        raise XlsxError(
                            f"shared strings of more than {limits.shared_string_chars:,} characters "
                            "in all; refused"
                        )
                    buf.append(data)

            with self._open(part) as f:
                _parse(f, start, end, chars)
        self._shared = strings
        return strings

    def _date_style_ids(self) -> frozenset[int]:
        """Indexes of the cell formats (``s`` of a cell) whose number format is a date or time."""
        if self._date_styles is not None:
            return self._date_styles
        custom: dict[int, str] = {}
        xfs: list[int] = []
        in_cell_xfs = False
        part = next((n for n in ("xl/styles.xml",) if n in self._names), None)

        def start(name: str, attrs: dict[str, str]) -> None:
            nonlocal in_cell_xfs
            local = _local(name)
            if local == "numFmt":
                try:
                    custom[int(attrs.get("numFmtId", "-1"))] = attrs.get("formatCode", "")
                except ValueError:
                    pass
            elif local == "cellXfs":
                in_cell_xfs = True
            elif local == "xf" and in_cell_xfs:
                try:
                    xfs.append(int(attrs.get("numFmtId", "0")))
                except ValueError:
                    xfs.append(0)

        def end(name: str) -> None:
            nonlocal in_cell_xfs
            if _local(name) == "cellXfs":
                in_cell_xfs = False

        if part is not None:
            with self._open(part) as f:
                _parse(f, start, end)
        dates = {
            i
            for i, fmt in enumerate(xfs)
            if (is_date_format(custom[fmt]) if fmt in custom else fmt in _BUILTIN_DATE_FORMATS)
        }
        self._date_styles = frozenset(dates)
        return self._date_styles

    # ---------------------------------------------------------------- rows

    def rows(self, sheet: str, fast: bool | None = None) -> Iterator[tuple[int, list[str | None]]]:
        """(row number, cell texts by column, None for an empty cell) for every row that has a cell.

        A sheet written the plain way (UTF-8, no CDATA, comments, DTD or prefixed elements: what
        spreadsheet programs and the platform write) is read by regular expressions over its text,
        about three times faster; any other sheet by expat. Both give the same rows. Where the plain
        reader meets a construct it does not read, it raises :class:`NotPlain` before guessing: read the
        sheet again with ``fast=False``.
        """
        try:
            part = self._sheets[sheet]
        except KeyError:
            raise XlsxError(f"no sheet named '{sheet}'") from None
        if (self.fast if fast is None else fast) and self._plain(part):
            return self._bounded(self._rows_plain(sheet, part))
        return self._bounded(self._rows_expat(sheet, part))

    def _bounded(
        self, rows: Iterator[tuple[int, list[str | None]]]
    ) -> Iterator[tuple[int, list[str | None]]]:
        """Rows no wider than the column limit: a cell in column XFD would widen every row of the sheet."""
        most = self.limits.columns
        for number, cells in rows:
            if len(cells) > most:
                raise XlsxError(
                    f"row {number} has a cell in column {len(cells):,}, beyond the limit of {most:,} "
                    "columns (xlsx_max_columns); refused"
                )
            yield number, cells

    def _plain(self, part: str) -> bool:
        """Whether a sheet part holds only what the plain reader understands (one pass over its bytes)."""
        tail = b""
        head = True
        try:
            with self._open(part) as f:
                while chunk := f.read(1 << 22):
                    if head:
                        head = False
                        prolog = chunk[:200].lower()
                        if chunk[:2] in (b"\xff\xfe", b"\xfe\xff") or (
                            b"encoding=" in prolog.split(b"?>")[0] and b"utf-8" not in prolog.split(b"?>")[0]
                        ):
                            return False
                    window = tail + chunk
                    if (
                        b"<![CDATA[" in window
                        or b"<!--" in window
                        or b"<!DOCTYPE" in window
                        or b"<!ENTITY" in window
                    ):
                        return False
                    if _PREFIXED.search(window):
                        return False
                    tail = chunk[-16:]
        except _DAMAGED as e:
            raise XlsxError(f"the part {part} is damaged ({type(e).__name__}: {e})") from None
        return True

    def _rows_plain(self, sheet: str, part: str) -> Iterator[tuple[int, list[str | None]]]:
        shared = self._shared_strings()
        dates = self._date_style_ids()
        date1904 = self._date1904
        decoder = codecs.getincrementaldecoder("utf-8")()
        carry = ""
        row_number = 0
        in_data = False
        done = False
        with self._open(part) as f:
            try:
                while not done:
                    chunk = f.read(1 << 22)
                    text = carry + decoder.decode(chunk, final=not chunk)
                    if not in_data:
                        opening = _SHEET_DATA.search(text)
                        if opening is None:
                            carry = text[-64:] if chunk else ""
                            if not chunk:
                                return
                            continue
                        if opening.group(1):  # <sheetData/>: an empty sheet
                            return
                        in_data = True
                        text = text[opening.end() :]
                    end = text.find("</sheetData>")
                    if end >= 0:
                        text, done = text[:end], True
                        cut = len(text)
                    else:
                        cut = text.rfind("</row>") + len("</row>") if "</row>" in text else 0
                        if not chunk:
                            raise XlsxError(f"sheet '{sheet}': the sheet data is not closed")
                    block, carry = text[:cut], text[cut:]
                    for attrs_text, content in _plain_rows(block):
                        r = _attrs(attrs_text).get("r")
                        row_number = int(r) if r and r.isdigit() else row_number + 1
                        cells = _plain_cells(content, shared, dates, date1904, row_number)
                        if cells:
                            yield row_number, cells
            except UnicodeDecodeError as e:
                raise XlsxError(f"sheet '{sheet}': not UTF-8 ({e})") from None
            except _DAMAGED as e:
                raise XlsxError(f"sheet '{sheet}': damaged package ({type(e).__name__}: {e})") from None

    def _rows_expat(self, sheet: str, part: str) -> Iterator[tuple[int, list[str | None]]]:
        shared = self._shared_strings()
        dates = self._date_style_ids()
        date1904 = self._date1904
        ready: list[tuple[int, list[str | None]]] = []
        cells: list[str | None] = []
        row_number = 0
        col = -1
        kind: str | None = None
        style = 0
        text: list[str] | None = None
        collecting = False
        in_rph = 0

        def start(name: str, attrs: dict[str, str]) -> None:
            nonlocal row_number, col, kind, style, text, collecting, in_rph
            if ":" in name:  # a prefixed element (x:c): the sheet's own namespace under a prefix
                name = name[name.rfind(":") + 1 :]
            if name == "c":
                ref = attrs.get("r")
                col = _column(ref) if ref else col + 1
                kind = attrs.get("t")
                s = attrs.get("s")
                style = int(s) if s and s.isdigit() else 0
                text = None
            elif name == "v" or (name == "t" and not in_rph):
                collecting = True
                if text is None:
                    text = []
            elif name == "row":
                cells.clear()
                col = -1
                r = attrs.get("r")
                row_number = int(r) if r and r.isdigit() else row_number + 1
            elif name == "rPh":
                in_rph += 1

        def end(name: str) -> None:
            nonlocal collecting, in_rph
            if ":" in name:
                name = name[name.rfind(":") + 1 :]
            if name == "c":
                if text is not None:
                    value = _value("".join(text), kind, style, shared, dates, date1904, row_number, col)
                    if col < len(cells):
                        cells[col] = value
                    else:
                        cells.extend([None] * (col - len(cells)))
                        cells.append(value)
            elif name == "v" or name == "t":
                collecting = False
            elif name == "row":
                if cells:
                    ready.append((row_number, cells.copy()))
            elif name == "rPh":
                in_rph -= 1

        def chars(data: str) -> None:
            if collecting:
                text.append(data)  # type: ignore[union-attr]

        parser = xml.parsers.expat.ParserCreate()
        parser.buffer_text = True
        parser.buffer_size = 1 << 16
        parser.StartElementHandler = start
        parser.EndElementHandler = end
        parser.CharacterDataHandler = chars
        with self._open(part) as f:
            try:
                while chunk := f.read(1 << 20):
                    parser.Parse(chunk, False)
                    yield from ready
                    ready.clear()
                parser.Parse(b"", True)
            except xml.parsers.expat.ExpatError as e:
                raise XlsxError(f"sheet '{sheet}': malformed XML ({e})") from None
            except _DAMAGED as e:
                raise XlsxError(f"sheet '{sheet}': damaged package ({type(e).__name__}: {e})") from None
        yield from ready


#: A row or cell element under a prefix (x:row, x:c, ...): the plain reader would not see it.
_PREFIXED = re.compile(rb"</?[A-Za-z_][\w.-]*:(?:row|c|v|is|t|f|r|rPh)[\s/>]")
_SHEET_DATA = re.compile(r"<sheetData\b[^>]*?(/?)>")
_ROW = re.compile(r"<row\b([^>]*?)(?:/>|>(.*?)</row>)", re.S)
_EMPTY_ROWS = re.compile(r"(?:\s*<row\b[^>]*/>)*\s*")
_CELL = re.compile(r"<c\b([^>]*?)(?:/>|>(.*?)</c>)", re.S)
_ATTR = re.compile(r"""([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
#: A value cell's content: an optional formula, an optional value (its text cannot hold '<').
_VALUE = re.compile(r"\s*(?:<f\b[^>]*?(?:/>|>[^<]*</f>)\s*)?(?:<v\b[^>]*?(?:/>|>([^<]*)</v>)\s*)?")
#: An inline string's content: text runs, rich-text runs and their properties, phonetic runs.
_INLINE = re.compile(r"\s*<is>(.*?)</is>\s*", re.S)
_RUN_NOISE = re.compile(r"<rPh\b.*?</rPh>|<rPr>.*?</rPr>|<rPr/>|<phoneticPr\b[^>]*/>|</?r>", re.S)
_RUN_TEXT = re.compile(r"\s*<t\b[^>]*?(?:/>|>([^<]*)</t>)")
_ENTITY = re.compile(r"&(#[0-9]+|#x[0-9A-Fa-f]+|[A-Za-z]+);|&")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


class NotPlain(XlsxError):
    """The plain reader met something it does not read (valid XML perhaps): read the sheet with expat."""


def _attrs(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) if m.group(2) is not None else m.group(3) for m in _ATTR.finditer(text)}


def _unescape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref is None:
            raise XlsxError("a bare '&' in the sheet's text")
        if ref[0] == "#":
            code = int(ref[2:], 16) if ref[1] in "xX" else int(ref[1:])
            try:
                return chr(code)
            except (ValueError, OverflowError):
                raise XlsxError(f"character reference &{ref}; is out of range") from None
        if ref not in _NAMED:
            raise XlsxError(f"unknown entity &{ref};")
        return _NAMED[ref]

    return _ENTITY.sub(one, text)


def _gaps(pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    """The matches of ``pattern`` in ``text``, which must hold nothing else but white space."""
    at = 0
    for m in pattern.finditer(text):
        if text[at : m.start()].strip():
            raise NotPlain(f"unexpected content {text[at : m.start()].strip()[:40]!r}")
        at = m.end()
        yield m
    if text[at:].strip():
        raise NotPlain(f"unexpected content {text[at:].strip()[:40]!r}")


def _plain_rows(block: str) -> Iterator[tuple[str, str]]:
    """(attributes, content) of each row of a block of whole rows; a row written ``<row .../>`` has none."""
    pieces = block.split("</row>")
    if pieces[-1].strip():
        # what follows the last </row> can only be empty rows (<row r="9"/>)
        pieces[-1] += "</row>"
    elif len(pieces) > 1:
        pieces.pop()
    for piece in pieces:
        start = piece.find("<row")
        if start < 0 or piece[:start].strip() and not _EMPTY_ROWS.fullmatch(piece[:start]):
            raise NotPlain(f"unexpected content {piece[:40]!r}")
        if piece.count("<row") > 1 or piece[:start].strip():
            # empty rows before this one (<row r="3"/>): read the piece the slow way
            for m in _gaps(_ROW, piece if piece.endswith("</row>") else piece + "</row>"):
                yield m.group(1), m.group(2) or ""
            continue
        end = piece.find(">", start)
        if end < 0:
            raise NotPlain("an unclosed row")
        if piece[end - 1] == "/":
            if piece[end + 1 :].replace("</row>", "").strip():
                raise NotPlain("content after an empty row")
            yield piece[start + 4 : end - 1], ""
            continue
        yield piece[start + 4 : end], piece[end + 1 :]


def _inline_text(inner: str) -> str | None:
    m = _INLINE.fullmatch(inner)
    if m is None:
        raise NotPlain("an inline string the plain reader does not read")
    runs = _RUN_NOISE.sub("", m.group(1))
    texts = [t.group(1) or "" for t in _gaps(_RUN_TEXT, runs)]
    return "".join(texts) if texts else None


#: The cells of the plain shape, whole: <c r="A1" s="1" t="inlineStr"><is><t>text</t></is></c>,
#: <c r="B1" s="2"><v>800</v></c>, <c r="C1" t="s"><f>..</f><v>3</v></c>, <c r="D1"/>. Groups: column
#: letters, row, style, type, style (either order), <v> and its text, <t> and its text.
_PLAIN_CELL = re.compile(
    r'<c r="([A-Z]{1,3})([0-9]+)"(?: s="([0-9]+)")?(?: t="([A-Za-z]+)")?(?: s="([0-9]+)")?'
    r'(?: ?/>| ?>(?:(?:<f>[^<]*</f>|<f ?/>)?(<v>([^<]*)</v>)|<is>(<t(?: xml:space="preserve")?>([^<]*)</t>)</is>)?</c>)'
)
_COLUMNS: dict[str, int] = {}


def _plain_cells(
    content: str, shared: list[str], dates: frozenset[int], date1904: bool, row: int
) -> list[str | None]:
    """The cells of one row's XML (the plain reader): one regular expression a cell. A row holding
    any other cell shape is declined (:class:`NotPlain`), never guessed."""
    found = _PLAIN_CELL.findall(content)
    if len(found) != content.count("<c ") + content.count("<c>") + content.count("<c/>"):
        raise NotPlain(f"row {row}: a cell the plain reader does not read")
    cells: list[str | None] = []
    for letters, _row, s1, kind, s2, v_element, v, t_element, t in found:
        if v_element:
            raw = v
        elif t_element:
            raw = t
        else:
            continue  # a cell without a value
        col = _COLUMNS.get(letters)
        if col is None:
            col = _COLUMNS[letters] = _column(letters)
        if "&" in raw:
            raw = _unescape(raw)
        style = s1 or s2
        if kind == "inlineStr":  # the commonest cells, read here without a call
            value: str | None = raw
        elif not kind and not style and raw:
            try:
                value = number_text(raw)
            except ValueError:
                raise XlsxError(f"row {row}, column {col + 1}: cannot read the number {raw[:40]!r}") from None
        else:
            value = _value(raw, kind or None, int(style) if style else 0, shared, dates, date1904, row, col)
        if col < len(cells):
            cells[col] = value
        else:
            cells.extend([None] * (col - len(cells)))
            cells.append(value)
    return cells


def _attr(attrs: dict[str, str], local: str) -> str | None:
    for k, v in attrs.items():
        if _local(k) == local:
            return v
    return None


def _normalise(path: PurePosixPath) -> PurePosixPath:
    parts: list[str] = []
    for p in path.parts:
        if p == "..":
            if parts:
                parts.pop()
        elif p not in (".", ""):
            parts.append(p)
    return PurePosixPath(*parts)


def _column(ref: str) -> int:
    """0-based column of a cell reference (``AA12`` -> 26)."""
    n = 0
    for ch in ref:
        o = ord(ch)
        if 65 <= o <= 90:
            n = n * 26 + o - 64
        elif 97 <= o <= 122:
            n = n * 26 + o - 96
        else:
            break
        if n > 16_384:
            raise XlsxError(f"cell reference {ref[:20]!r} is beyond Excel's last column")
    if n == 0:
        raise XlsxError(f"cell reference {ref[:20]!r} names no column")
    return n - 1


def _value(
    raw: str,
    kind: str | None,
    style: int,
    shared: list[str],
    dates: frozenset[int],
    date1904: bool,
    row: int,
    col: int,
) -> str | None:
    try:
        if kind is None or kind == "n":
            if raw == "":
                return None
            if style in dates:
                return excel_datetime(float(raw), date1904)
            return number_text(raw)
        if kind == "s":
            return shared[int(raw)]
        if kind in ("inlineStr", "str", "e"):
            return raw
        if kind == "b":
            return "true" if raw.strip() in ("1", "true") else "false"
        if kind == "d":
            return raw.replace("T", " ")
    except (ValueError, IndexError, OverflowError):
        raise XlsxError(
            f"row {row}, column {col + 1}: cannot read the value {raw[:40]!r} (type {kind or 'n'})"
        ) from None
    return raw
