"""How many rows a delivered file physically holds, counted without the reader that loads it.

The night accounts for every row: ``rows_read = rows_loaded + rows_rejected + rows_skipped``. If
``rows_read`` came from the reader itself, a row the reader lost would vanish from both sides and
the sum would still hold. These counts come from the file's bytes (text), its footer (Parquet) or
the rows the workbook reader met (spreadsheets), so a row lost on the way shows as an unbalanced file.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

_CHUNK = 1 << 24


def _has_quote(path: Path) -> bool:
    with path.open("rb") as f:
        return any(b'"' in chunk for chunk in iter(lambda: f.read(_CHUNK), b""))


def _nonblank_lines(path: Path, *, blank_chars: bytes, split_cr: bool) -> int:
    """Lines holding anything other than ``blank_chars``. Line ends are LF, CRLF and (with ``split_cr``,
    as a CSV parser reads them) a lone CR; GBK/GB18030 never use these bytes inside a character."""
    count = 0
    carry = b""
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            data = carry + chunk
            lines = data.splitlines() if split_cr else data.split(b"\n")
            carry = b""
            if lines and not data.endswith((b"\n", b"\r") if split_cr else b"\n"):
                carry = lines.pop()
            count += sum(1 for line in lines if line.strip(blank_chars))
    if carry.strip(blank_chars):
        count += 1
    return count


def _outside(positions: np.ndarray, quotes: np.ndarray, parity: int) -> np.ndarray:
    """The positions not inside quotes (an even number of quotes before them, counting the carried parity)."""
    return positions[((np.searchsorted(quotes, positions) + parity) & 1) == 0]


class _Irregular(Exception):
    """The file's quotes or line ends are not the regular kind the fast count reads."""


def _quoted_records(path: Path, delimiter: str) -> int:
    """Records of a CSV file whose quotes are all regular, counted on its bytes with numpy.

    A quote toggles "inside"; a line end outside quotes ends a record; a record of nothing (or a lone
    CR before its LF) is a blank line. Regular means every opening quote starts a field (after a
    delimiter, a line end, the start or another quote) and every closing quote ends one (before a
    delimiter, a line end, the end or another quote), there is no lone CR and the quotes pair up: then
    this count is the standard reading of the file. Anything else raises :class:`_Irregular`.
    GBK/GB18030 never use ``"``, CR, LF or ``,`` ``;`` TAB inside a character.
    """
    delim = ord(delimiter)
    starts_ok = np.zeros(256, dtype=bool)
    starts_ok[[delim, 10, 13, 34]] = True
    records = 0
    parity = 0  # inside quotes after the bytes processed so far
    prev = 10  # the byte before the chunk (start of file: as after a line end)
    pending = 0  # bytes of the current record since its last line end outside quotes
    pending_first = -1
    with path.open("rb") as f:
        data = f.read(_CHUNK)
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        while data:
            following = f.read(_CHUNK)
            arr = np.frombuffer(data, dtype=np.uint8)
            # Work on the positions of quotes, CRs and LFs only (a few per row), found in one pass.
            low = np.flatnonzero(arr < 35)  # one comparison; LF, CR and the quote are below 35
            low_kinds = arr[low]
            keep = (low_kinds == 34) | (low_kinds == 10) | (low_kinds == 13)
            special, kinds = low[keep], low_kinds[keep]
            quotes = special[kinds == 34]
            inside_before = (np.arange(quotes.size) + parity) & 1
            opening, closing = quotes[inside_before == 0], quotes[inside_before == 1]
            before = np.where(opening > 0, arr[np.maximum(opening - 1, 0)], prev)
            nxt = following[0] if following else 10
            after = np.where(closing < arr.size - 1, arr[np.minimum(closing + 1, arr.size - 1)], nxt)
            if not starts_ok[before].all() or not starts_ok[after].all():
                raise _Irregular

            cr = _outside(special[kinds == 13], quotes, parity)
            if cr.size:
                cr_next = np.where(cr < arr.size - 1, arr[np.minimum(cr + 1, arr.size - 1)], nxt)
                if not (cr_next == 10).all():
                    raise _Irregular  # a lone CR ends a line for a CSV parser: not read here
            ends = _outside(special[kinds == 10], quotes, parity)
            if ends.size:
                seg_start = np.empty_like(ends)
                seg_start[0] = 0
                seg_start[1:] = ends[:-1] + 1
                length = ends - seg_start
                first = arr[np.minimum(seg_start, arr.size - 1)]
                length[0] += pending
                if pending:
                    first[0] = pending_first
                blank = (length == 0) | ((length == 1) & (first == 13))
                records += int(ends.size - np.count_nonzero(blank))
                tail = arr[ends[-1] + 1 :]
                pending = int(tail.size)
                pending_first = int(tail[0]) if tail.size else -1
            else:
                if not pending and arr.size:
                    pending_first = int(arr[0])
                pending += int(arr.size)
            parity = (parity + int(quotes.size)) & 1
            prev = int(arr[-1])
            data = following
    if parity:
        raise _Irregular  # a quote never closed
    if pending and not (pending == 1 and pending_first == 13):
        records += 1
    return records


def csv_records(path: Path, encoding: str, delimiter: str) -> int:
    """Records of a CSV file, its header included; empty lines are not records.

    A file without a quote character is counted line by line on its bytes; one with quotes on its bytes
    too when they are regular (:func:`_quoted_records`), else by Python's own CSV parser (a quoted field
    may hold line breaks), which reads irregular quotes as DuckDB does.
    """
    if not _has_quote(path):
        return _nonblank_lines(path, blank_chars=b"\r", split_cr=True)
    if len(delimiter) == 1 and ord(delimiter) < 128:
        try:
            return _quoted_records(path, delimiter)
        except _Irregular:
            pass
    limit = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)
    try:
        codec = "utf-8-sig" if encoding in ("utf-8", "utf-8-sig") else encoding
        with path.open("r", encoding=codec, errors="replace", newline="") as f:
            return sum(1 for row in csv.reader(f, delimiter=delimiter) if row)
    finally:
        csv.field_size_limit(limit)


def jsonl_records(path: Path) -> int:
    """Lines of a JSON Lines file that hold anything but spaces (and a CRLF's CR)."""
    with path.open("rb") as f:
        head = f.read(_CHUNK)
    if b"\n" not in head and b"\r" in head:  # a file whose only line ends are CRs
        return _nonblank_lines(path, blank_chars=b" \r", split_cr=True)
    return _nonblank_lines(path, blank_chars=b" \r", split_cr=False)


def parquet_rows(path: Path) -> int:
    """Rows the Parquet file's footer declares."""
    return int(pq.ParquetFile(path).metadata.num_rows)
