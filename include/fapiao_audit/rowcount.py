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


def csv_records(path: Path, encoding: str, delimiter: str) -> int:
    """Records of a CSV file, its header included; empty lines are not records.

    A file without a quote character is counted line by line on its bytes; one with quotes by
    Python's own CSV parser (a quoted field may hold line breaks), which reads quotes as DuckDB does.
    """
    if not _has_quote(path):
        return _nonblank_lines(path, blank_chars=b"\r", split_cr=True)
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
