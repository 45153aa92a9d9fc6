"""generate + run, as a user would: the published findings equal the generator's expected findings.

The night is the generator's default layout: the registry's two-sheet workbook with invoice lines, the
ERP's line files, a third-party tool's GBK export, web-shop JSON Lines, a 税控 query export, a shop's
invoicing API and a batch-invoicing template; it runs with the configuration `generate` writes beside it
(taxctl's state codes, shopapi's ignored invoiceType). Findings are compared with their cause.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from datetime import date
from pathlib import Path

import pytest

from fapiao_audit.cli import main
from findings_compare import grace_boundary_keys, only, read_findings, without

NIGHT = "2026-11-21"


def read_keys(path: Path) -> list[tuple[str, ...]]:
    return read_findings(path)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    assert (
        main(["generate", "--night", NIGHT, "--out", str(base / "landing"), "--rows", "3000", "--seed", "11"])
        == 0
    )
    code = main(
        [
            "run",
            "--night",
            NIGHT,
            "--landing",
            str(base / "landing"),
            "--reports",
            str(base / "reports"),
            "--db",
            str(base / "fapiao.duckdb"),
            "--config",
            str(base / "landing" / "fapiao-audit.toml"),
        ]
    )
    return base, code


def test_findings_equal_expected(published):
    base, code = published
    meta = json.loads((base / "landing" / NIGHT / "generation.json").read_text(encoding="utf-8"))
    assert meta["layout"] == "real"
    assert meta["lines_per_source"]["registry"] > 2 * meta["rows_per_source"]["registry"]
    expected = read_keys(base / "landing" / NIGHT / "expected_findings.csv")
    got = read_keys(base / "reports" / NIGHT / "exceptions.csv")
    # no missing invoice on the grace-period boundary at this seed (findings_compare.GRACE_BOUNDARY): exact
    assert not only(expected, grace_boundary_keys(base / "landing" / NIGHT, date.fromisoformat(NIGHT)))
    assert got == expected
    assert {k[0] for k in expected} >= {
        "MISSING_IN_REGISTRY",
        "MISSING_IN_ISSUER",
        "DUPLICATE_IN_SOURCE",
        "FIELD_MISMATCH",
        "NOT_ISSUED",
        "PENDING_SYNC",
    }
    # every cause, the systems with an upload state and those without
    assert {k[5] for k in expected if k[0] == "MISSING_IN_REGISTRY"} == {
        "not_uploaded",
        "uploading",
        "upload_failed",
        "signature_failed",
        "stuck_issuing",
        "uploaded_but_absent",
        "unknown",
    }
    assert {k[4] for k in expected} >= {"erp", "pos", "webshop", "taxctl", "shopapi", "batch", "registry"}
    # the real layout's own defects, found from the lines and the registry's risk level
    assert {(k[0], k[3]) for k in expected} >= {
        ("INVALID_RECORD", "lines"),
        ("REGISTRY_RISK", "risk_level"),
        ("REGISTRY_RISK", "status"),
        ("INVALID_RECORD", "tax_amount"),
    }


def test_findings_equal_expected_at_100k_invoices(tmp_path):
    """The default layout at scale: about 300k invoice lines in the registry's workbook, 110k in the ERP's.

    Exact but for the grace-period boundary (findings_compare.GRACE_BOUNDARY: a date-only taxctl time of the
    night's previous day, which this night has), where the product and DESIGN.md disagree on the category
    only; test_issuer_exports_e2e holds that disagreement as an expected failure."""
    landing, reports = tmp_path / "landing", tmp_path / "reports"
    args = ["generate", "--night", NIGHT, "--out", str(landing), "--rows", "100000", "--seed", "11"]
    assert main(args) == 0
    code = main(
        [
            "run",
            "--night",
            NIGHT,
            "--landing",
            str(landing),
            "--reports",
            str(reports),
            "--db",
            str(tmp_path / "fapiao.duckdb"),
            "--config",
            str(landing / "fapiao-audit.toml"),
        ]
    )
    assert code in (0, 1)
    meta = json.loads((landing / NIGHT / "generation.json").read_text(encoding="utf-8"))
    assert meta["layout"] == "real" and meta["lines_per_source"]["registry"] > 250_000
    expected = read_keys(landing / NIGHT / "expected_findings.csv")
    got = read_keys(reports / NIGHT / "exceptions.csv")
    boundary = grace_boundary_keys(landing / NIGHT, date.fromisoformat(NIGHT))
    assert without(got, boundary) == without(expected, boundary)
    # at the boundary: the same invoices, sources and causes; only MISSING_IN_REGISTRY / PENDING_SYNC may differ
    assert only(expected, boundary) and {k[0] for k in only(expected, boundary)} == {"PENDING_SYNC"}
    assert [k[1:] for k in only(got, boundary)] == [k[1:] for k in only(expected, boundary)]
    summary = json.loads((reports / NIGHT / "summary.json").read_text(encoding="utf-8"))
    for source in summary["sources"]:
        assert source["rows_rejected"] == 0
        for f in source["files"]:
            assert f["rows_read"] == f["rows_loaded"] + f["rows_rejected"] + f["rows_skipped"]


def test_exit_code_and_published_files(published):
    base, code = published
    night_dir = base / "reports" / NIGHT
    assert sorted(p.name for p in night_dir.iterdir()) == sorted(
        [
            "exceptions.csv",
            "exceptions.xlsx",
            "summary.json",
            "gx_results.json",
            "report.html",
            "manifest.json",
        ]
    )
    summary = json.loads((night_dir / "summary.json").read_text(encoding="utf-8"))
    # Injected cross-issuer duplicates break a threshold of 0: published, exit 1.
    assert summary["outcome"] == "failed" and code == 1
    manifest = json.loads((night_dir / "manifest.json").read_text(encoding="utf-8"))
    for f in manifest["files"]:
        assert hashlib.sha256((night_dir / f["name"]).read_bytes()).hexdigest() == f["sha256"]
    assert (base / "reports" / "latest").resolve() == night_dir.resolve()


def test_csv_format(published):
    base, _ = published
    raw = (base / "reports" / NIGHT / "exceptions.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    header = raw[3:].split(b"\r\n", 1)[0].decode()
    assert header.startswith(
        "category,invoice_code,invoice_number,field,source_system,issuer_value,registry_value,"
        "seller_tax_id,issue_date,detail"
    )
    rows = list(csv.DictReader(raw[3:].decode().splitlines()))
    for r in rows:
        assert len(r["invoice_number"]) in (7, 8, 20) or r["category"] == "INVALID_RECORD"
        if len(r["invoice_number"]) == 20:
            assert r["invoice_code"] == ""


def test_accounting_in_summary(published):
    base, _ = published
    summary = json.loads((base / "reports" / NIGHT / "summary.json").read_text(encoding="utf-8"))
    for source in summary["sources"]:
        for f in source["files"]:
            assert f["rows_read"] == f["rows_loaded"] + f["rows_rejected"] + f["rows_skipped"]
            assert len(f["sha256"]) == 64
    assert summary["counts"] and sum(summary["counts"].values()) == summary["total_findings"]
    assert summary["config"]["window_days"] == 7
    # every row of the generated files is loaded; the registry workbook's 合计行 is skipped, not rejected
    (registry,) = [s for s in summary["sources"] if s["source_system"] == "registry"]
    workbooks = list((base / "landing" / NIGHT / "registry").glob("*.xlsx"))
    assert registry["rows_skipped"] == len(workbooks) == 1
    assert all(s["rows_rejected"] == 0 for s in summary["sources"])


def test_rerun_is_byte_identical_on_same_and_fresh_db(published, tmp_path):
    base, _ = published
    first = (base / "reports" / NIGHT / "exceptions.csv").read_bytes()
    args = [
        "run",
        "--night",
        NIGHT,
        "--landing",
        str(base / "landing"),
        "--config",
        str(base / "landing" / "fapiao-audit.toml"),
    ]
    assert main([*args, "--reports", str(base / "reports"), "--db", str(base / "fapiao.duckdb")]) == 1
    assert (base / "reports" / NIGHT / "exceptions.csv").read_bytes() == first
    assert main([*args, "--reports", str(tmp_path / "r"), "--db", str(tmp_path / "fresh.duckdb")]) == 1
    assert (tmp_path / "r" / NIGHT / "exceptions.csv").read_bytes() == first
    s1 = json.loads((base / "reports" / NIGHT / "summary.json").read_text(encoding="utf-8"))
    s2 = json.loads((tmp_path / "r" / NIGHT / "summary.json").read_text(encoding="utf-8"))
    for s in (s1, s2):
        s.pop("run")
    assert s1 == s2


def test_missing_registry_exits_2_and_publishes_nothing(tmp_path, capsys):
    landing = tmp_path / "landing"
    assert main(["generate", "--night", NIGHT, "--out", str(landing), "--rows", "500"]) == 0
    import shutil

    shutil.rmtree(landing / NIGHT / "registry")
    code = main(["run", "--night", NIGHT, "--landing", str(landing), "--reports", str(tmp_path / "reports")])
    err = capsys.readouterr().err
    assert code == 2 and "registry delivery is missing" in err and "Traceback" not in err
    assert not (tmp_path / "reports" / NIGHT).exists()


def test_corrupt_file_keeps_previous_night_intact(tmp_path, capsys):
    landing, reports = tmp_path / "landing", tmp_path / "reports"
    assert main(["generate", "--night", NIGHT, "--out", str(landing), "--rows", "500"]) == 0
    assert main(["run", "--night", NIGHT, "--landing", str(landing), "--reports", str(reports)]) in (0, 1)
    before = {p.name: p.read_bytes() for p in (reports / NIGHT).iterdir()}
    (victim,) = (landing / NIGHT / "registry").glob("*.xlsx")  # the registry's workbook, cut in half
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    code = main(["run", "--night", NIGHT, "--landing", str(landing), "--reports", str(reports)])
    err = capsys.readouterr().err
    assert code == 2 and victim.name in err
    assert {p.name: p.read_bytes() for p in (reports / NIGHT).iterdir()} == before


def test_generate_flat_layout_from_the_command_line(tmp_path, capsys):
    """--layout flat: one row per invoice everywhere (the benchmarks' night); an unknown layout is refused."""
    landing = tmp_path / "landing"
    args = ["generate", "--night", NIGHT, "--out", str(landing), "--rows", "500"]
    assert main([*args, "--layout", "flat"]) == 0
    files = sorted(p.relative_to(landing / NIGHT).as_posix() for p in (landing / NIGHT).rglob("*.*"))
    assert f"registry/registry_export_{NIGHT}.csv" in files and "issuers/erp/erp_part-0.parquet" in files
    capsys.readouterr()
    assert main([*args, "--layout", "wide"]) == 2
    assert "--layout" in capsys.readouterr().err


def test_demo_runs_and_points_at_the_report(tmp_path, capsys):
    code = main(
        [
            "demo",
            "--dir",
            str(tmp_path / "demo"),
            "--nights",
            "2",
            "--rows",
            "500",
            "--last-night",
            date(2026, 11, 22).isoformat(),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "report.html" in out and (tmp_path / "demo" / "reports" / "2026-11-22" / "report.html").is_file()
    # Each night says its money and open items; the index lists both nights.
    assert re.search(
        r"2026-11-22: \d+ findings, [\d,]+\.\d\d yuan at risk, \d+ open items \(\d+ left the window", out
    )
    index = tmp_path / "demo" / "reports" / "index.html"
    assert f"Every night: {index.resolve()}" in out
    assert "2026-11-21/report.html" in index.read_text(encoding="utf-8")
