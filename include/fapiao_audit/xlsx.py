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

import re
import xml.parsers.expat
import zipfile
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import IO

__all__ = ["Workbook", "XlsxError"]

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


def _parse(stream: IO[bytes], start: object, end: object = None, chars: object = None) -> None:
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


class Workbook:
    """An open workbook: its sheet names, and its sheets' rows streamed one at a time."""

    def __init__(self, path: Path) -> None:
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise XlsxError(f"not a zip package ({e})") from None
        try:
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

            def start(name: str, attrs: dict[str, str]) -> None:
                nonlocal depth_rph, in_t
                local = _local(name)
                if local == "si":
                    buf.clear()
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
                        raise XlsxError(f"a shared string of {len(text):,} characters (a cell holds at most "
                                        f"{CELL_MAX:,})")
                    strings.append(text)
                elif local == "rPh":
                    depth_rph -= 1
                elif local == "t":
                    in_t = False

            def chars(data: str) -> None:
                if in_t:
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
        dates = {i for i, fmt in enumerate(xfs)
                 if (is_date_format(custom[fmt]) if fmt in custom else fmt in _BUILTIN_DATE_FORMATS)}
        self._date_styles = frozenset(dates)
        return self._date_styles

    # ---------------------------------------------------------------- rows

    def rows(self, sheet: str) -> Iterator[tuple[int, list[str | None]]]:
        """(row number, cell texts by column, None for an empty cell) for every row that has a cell."""
        try:
            part = self._sheets[sheet]
        except KeyError:
            raise XlsxError(f"no sheet named '{sheet}'") from None
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
                name = name[name.rfind(":") + 1:]
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
                name = name[name.rfind(":") + 1:]
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


def _value(raw: str, kind: str | None, style: int, shared: list[str], dates: frozenset[int], date1904: bool,
           row: int, col: int) -> str | None:
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
        raise XlsxError(f"row {row}, column {col + 1}: cannot read the value {raw[:40]!r} (type {kind or 'n'})") from None
    return raw
