"""rows_read comes from the file, not from its reader: the two counts agree on whatever a file holds.

Hypothesis writes CSV and JSON Lines files from the shapes real deliveries have (quoted line breaks,
doubled quotes, a quote inside a field, blank and space-only lines, CRLF and mixed line ends, rows with
too few or too many cells, GBK) and checks that the independent count equals the rows DuckDB's reader
returned plus the lines it rejected: when they differ in a real night, the file shows unbalanced.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from fapiao_audit.ingest import _Reader
from fapiao_audit.rowcount import csv_records, jsonl_records, parquet_rows

CSV_LINES = st.sampled_from(
    [
        "1,2,3",
        '"a, b",2,3',
        '"two\nlines",2,3',
        '"two\r\nlines",2,3',
        '"say ""hi""",2,3',
        '1,ab"c,3',
        "",
        "   ",
        "\t",
        "1,2",
        "1,2,3,4",
        ",,",
        "北京,甲,乙",
        '"",,',
        '1,"",3',
    ]
)
JSONL_LINES = st.sampled_from(
    [
        '{"a": 1}',
        '{"a": "x\\ny"}',
        "",
        "  ",
        "[1]",
        "xx",
        '{"a": "北京"}',
        "{",
        "\t",
        '{"a": "say \\"hi\\""}',
    ]
)


def reader_count(path: Path, fmt: str) -> int:
    con = duckdb.connect()
    try:
        parts, _enc = _Reader(con, path.parent).read(path, fmt)
        return con.execute("SELECT count(*) FROM ing_raw").fetchone()[0] + len(parts[0].rejects)
    finally:
        con.close()


@settings(max_examples=120, deadline=None, derandomize=True, database=None)
@given(
    lines=st.lists(CSV_LINES, min_size=1, max_size=12),
    newline=st.sampled_from(["\n", "\r\n", "mixed"]),
    encoding=st.sampled_from(["utf-8", "gb18030"]),
    final_newline=st.booleans(),
)
def test_csv_count_equals_what_the_reader_accounts_for(lines, newline, encoding, final_newline):
    ends = [
        "\r\n" if (newline == "\r\n" or (newline == "mixed" and i % 2)) else "\n"
        for i in range(len(lines) + 1)
    ]
    text = "a,b,c" + ends[0] + "".join(line + ends[i + 1] for i, line in enumerate(lines))
    if not final_newline:
        text = text.rstrip("\r\n")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.csv"
        path.write_bytes(text.encode(encoding))
        assert csv_records(path, encoding, ",") - 1 == reader_count(path, "csv"), repr(text)


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(lines=st.lists(JSONL_LINES, min_size=1, max_size=12), crlf=st.booleans(), final_newline=st.booleans())
def test_jsonl_count_equals_what_the_reader_accounts_for(lines, crlf, final_newline):
    if not any(line.startswith('{"') for line in lines):
        lines = ['{"a": 1}', *lines]  # a file with no object at all is refused as a whole
    text = ("\r\n" if crlf else "\n").join(lines) + ("\n" if final_newline else "")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.jsonl"
        path.write_bytes(text.encode())
        assert jsonl_records(path) == reader_count(path, "jsonl"), repr(text)


def test_parquet_rows_come_from_the_footer(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"a": [str(i) for i in range(1234)]}), path, row_group_size=100)
    assert parquet_rows(path) == 1234 == reader_count(path, "parquet")


def test_a_large_file_is_counted_in_chunks(tmp_path: Path) -> None:
    """Records split across the counter's 16 MiB reads are counted once (with and without quotes)."""
    row = "26112000000000000001,北京甲科技有限公司,1234.56\n"
    n = (40 << 20) // len(row.encode()) + 7
    plain = tmp_path / "plain.csv"
    plain.write_text("a,b,c\n" + row * n, encoding="utf-8")
    assert csv_records(plain, "utf-8", ",") == n + 1
    quoted_csv = tmp_path / "quoted.csv"
    quoted_csv.write_bytes(
        ("a,b,c\r\n" + '26112000000000000001,"北\r\n京, ""甲""",1.00\r\n\r\n' * n).encode("gb18030")
    )
    assert csv_records(quoted_csv, "gb18030", ",") == n + 1
    quoted = tmp_path / "quoted.jsonl"
    quoted.write_text(
        json.dumps({"a": "x"}) + "\n" + (json.dumps({"a": "北\n京"}) + "\r\n") * n, encoding="utf-8"
    )
    assert jsonl_records(quoted) == n + 1
