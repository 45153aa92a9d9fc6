"""Expectation suites run through GX on DuckDB: clean night passes, each defect fails the right rule."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from factories import stage_rows
from fapiao_audit import gx_duckdb
from fapiao_audit.errors import SuiteError
from fapiao_audit.validate import SUITE_FILES, load_suite_counts, run_expectations

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "expectations"
SCHEMA = ROOT / "include" / "fapiao_audit" / "sql" / "schema.sql"
NIGHT = date(2025, 3, 14)
SOURCES = ["erp", "pos"]

STAGED_COLUMNS = (
    "night, source_kind, source_system, file, line, invoice_key, invoice_code, invoice_number, "
    "issue_date, seller_tax_id, amount, tax_amount, total_amount, status"
)


def digital(n: int) -> str:
    return f"2511200000000{n:07d}"


def staged_row(
    kind,
    system,
    line,
    code,
    number,
    *,
    day=NIGHT,
    amount="100.00",
    tax="13.00",
    total=None,
    status="normal",
    key=None,
    seller="91110000MA01ABCD1X",
):
    if key is None:
        key = number if not code else f"{code}-{number}"
    total = total if total is not None else str(Decimal(amount) + Decimal(tax))
    return (
        NIGHT,
        kind,
        system,
        f"{system}/export.csv",
        line,
        key,
        code,
        number,
        day,
        seller,
        Decimal(amount),
        Decimal(tax),
        Decimal(total),
        status,
    )


def insert_staged(con, rows):
    stage_rows(con, "staged_invoices", STAGED_COLUMNS, rows)


def insert_finding(con, category, key, source_system=None, seller="91110000MA01ABCD1X"):
    con.execute(
        "INSERT INTO findings (night, category, invoice_key, invoice_number, source_system, seller_tax_id) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [NIGHT, category, key, key, source_system, seller],
    )


def insert_files(con, rows_read, rows_rejected=0):
    con.execute(
        "INSERT INTO ingested_files VALUES (?, 'registry', 'registry', 'registry/export.csv', 'x', 'csv', "
        "'utf-8', 1, ?, ?, ?, NULL, 0)",
        [NIGHT, rows_read, rows_read - rows_rejected, rows_rejected],
    )


def clean_night(con):
    """A night where every suite passes: 100 issuer invoices, all in the registry."""
    registry, erp, pos = [], [], []
    for i in range(100):
        if i % 4 == 0:
            code, number = ("011002300111" if i % 8 == 0 else "1100231130"), f"{i:08d}"
        else:
            code, number = "", digital(i)
        day = NIGHT - timedelta(days=i % 7)
        status = ("normal", "voided", "red_reversed", "partly_red_reversed")[i % 4]
        registry.append(staged_row("registry", "registry", i + 2, code, number, day=day, status=status))
        system, rows = ("erp", erp) if i < 60 else ("pos", pos)
        rows.append(staged_row("issuer", system, len(rows) + 2, code, number, day=day, status=status))
    # registry-only statuses and a purchase invoice of another seller
    registry.append(
        staged_row(
            "registry",
            "registry",
            200,
            "",
            digital(500),
            status="out_of_control",
            seller="91310000XXXXXXXXXX",
        )
    )
    insert_staged(con, registry + erp + pos)
    insert_files(con, len(registry))


@pytest.fixture()
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "audit.duckdb"))
    connection.execute(SCHEMA.read_text(encoding="utf-8"))
    yield connection
    connection.close()


def gx_objects(con):
    """Temporary views and tables a run may create on the caller's connection."""
    return con.execute(
        "SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal "
        "UNION ALL SELECT table_name FROM duckdb_tables() WHERE temporary"
    ).fetchall()


def run(con, suites_dir=SUITES, **thresholds):
    return run_expectations(con, NIGHT, sources=SOURCES, suites_dir=suites_dir, thresholds=thresholds)


def by_name(report, target):
    (suite,) = [s for s in report["suites"] if s["target"] == target]
    return {r["expectation"]: r for r in suite["results"]}


def failed(report):
    return sorted(
        (s["target"], r["expectation"]) for s in report["suites"] for r in s["results"] if not r["success"]
    )


def test_clean_night_passes(con):
    clean_night(con)
    report = run(con)
    assert failed(report) == []
    assert report["success"] is True
    assert [s["target"] for s in report["suites"]] == [
        "registry",
        "issuer:erp",
        "issuer:pos",
        "reconciliation",
    ]
    stats = by_name(report, "reconciliation")
    assert stats["missing_in_registry_rate"]["observed_value"] == 0.0
    assert by_name(report, "registry")["rows_present"]["observed_value"] == 101
    assert by_name(report, "issuer:pos")["rows_present"]["observed_value"] == 40
    json.dumps(report)  # the report is JSON-able as it is
    # nothing is left behind on the caller's connection
    assert gx_objects(con) == []


def test_defects_fail_the_right_expectations(con):
    clean_night(con)
    bad = [
        staged_row("issuer", "erp", 90, "", "2511200000BAD", key="2511200000BAD"),  # malformed key
        staged_row("issuer", "erp", 91, "", digital(901), status="bogus"),
        staged_row("issuer", "erp", 92, "", digital(902), amount="100.00", tax="13.00", total="114.00"),
        staged_row("issuer", "erp", 93, "", digital(903), day=NIGHT - timedelta(days=7)),  # before the window
        staged_row("issuer", "erp", 94, "", digital(904), day=NIGHT + timedelta(days=1)),  # after the night
    ]
    insert_staged(con, bad)
    # 5 of the 105 issuer keys are missing in the registry: above the 1 % default
    for i in range(901, 905):
        insert_finding(con, "MISSING_IN_REGISTRY", digital(i), "erp")
    insert_finding(con, "MISSING_IN_REGISTRY", "2511200000BAD", "erp")
    insert_finding(con, "NOT_A_CATEGORY", digital(1), "erp")  # a code the model does not know

    report = run(con)
    assert report["success"] is False
    assert failed(report) == [
        ("issuer:erp", "invoice_key_well_formed"),
        ("issuer:erp", "issue_date_in_window"),
        ("issuer:erp", "status_in_enum"),
        ("issuer:erp", "total_equals_amount_plus_tax"),
        ("reconciliation", "finding_category_known"),
        ("reconciliation", "missing_in_registry_rate"),
    ]
    assert by_name(report, "reconciliation")["finding_category_known"]["unexpected_sample"] == [digital(1)]
    erp = by_name(report, "issuer:erp")
    assert erp["invoice_key_well_formed"]["unexpected_count"] == 1
    assert erp["invoice_key_well_formed"]["unexpected_sample"] == ["2511200000BAD"]
    assert erp["status_in_enum"]["unexpected_count"] == 1
    assert erp["status_in_enum"]["unexpected_sample"] == [digital(901)]
    assert erp["total_equals_amount_plus_tax"]["unexpected_count"] == 1
    assert erp["total_equals_amount_plus_tax"]["unexpected_sample"] == [digital(902)]
    assert erp["issue_date_in_window"]["unexpected_count"] == 2
    assert erp["issue_date_in_window"]["unexpected_sample"] == [digital(903), digital(904)]
    assert erp["issue_date_in_window"]["column"] == "issue_date"
    for r in erp.values():
        assert r["error"] is None
    missing = by_name(report, "reconciliation")["missing_in_registry_rate"]
    assert missing["observed_value"] == pytest.approx(5 / 105)
    assert missing["unexpected_count"] is None
    # the other sources are unaffected
    assert all(r["success"] for r in by_name(report, "issuer:pos").values())
    assert all(r["success"] for r in by_name(report, "registry").values())


def test_thresholds_are_configuration(con):
    clean_night(con)
    insert_staged(con, [staged_row("issuer", "erp", 95, "", digital(905), total="113.01")])
    for i in range(900, 905):
        insert_finding(con, "MISSING_IN_REGISTRY", digital(i), "erp")
    report = run(con, max_missing_in_registry_rate=0.05, amount_tolerance=Decimal("0.01"))
    assert failed(report) == []
    assert by_name(report, "reconciliation")["missing_in_registry_rate"]["success"] is True
    recon = [s for s in report["suites"] if s["target"] == "reconciliation"][0]
    assert recon["parameters"]["max_missing_in_registry_rate"] == 0.05
    registry = [s for s in report["suites"] if s["target"] == "registry"][0]
    assert registry["parameters"]["window_start"] == "2025-03-08"
    assert registry["parameters"]["window_end"] == "2025-03-14"
    # a wider window from configuration moves the date check
    insert_staged(con, [staged_row("issuer", "pos", 96, "", digital(906), day=NIGHT - timedelta(days=9))])
    report = run(con, max_missing_in_registry_rate=0.05, amount_tolerance=0.01, window_days=10)
    assert by_name(report, "issuer:pos")["issue_date_in_window"]["success"] is True
    report = run(
        con,
        max_missing_in_registry_rate=0.05,
        amount_tolerance=0.01,
        window_start=date(2025, 3, 8),
        window_end="2025-03-14",
    )
    assert by_name(report, "issuer:pos")["issue_date_in_window"]["success"] is False
    with pytest.raises(SuiteError, match="max_missing_in_registry_rate"):
        run(con, max_missing_in_registry_rate=2)
    with pytest.raises(SuiteError, match="window_start"):
        run(con, window_start="14 March")


def test_duplicates(con):
    clean_night(con)
    # the same key twice in the ERP snapshot, and once more in the POS snapshot
    dup = digital(1)
    insert_staged(con, [staged_row("issuer", "erp", 97, "", dup), staged_row("issuer", "pos", 98, "", dup)])
    insert_finding(con, "DUPLICATE_ACROSS_ISSUERS", dup, "erp")
    insert_finding(con, "DUPLICATE_ACROSS_ISSUERS", dup, "pos")
    report = run(con)
    assert failed(report) == [
        ("issuer:erp", "invoice_key_unique"),
        ("reconciliation", "duplicate_across_issuers"),
    ]
    across = by_name(report, "reconciliation")["duplicate_across_issuers"]
    assert (across["unexpected_count"], across["unexpected_sample"]) == (1, [dup])
    # 1 repeated row of 61 keyed ERP rows = 1.6 %, over the default 1 %; one repeated key
    unique = by_name(report, "issuer:erp")["invoice_key_unique"]
    assert (unique["unexpected_count"], unique["unexpected_sample"]) == (1, [dup])
    assert by_name(report, "issuer:pos")["invoice_key_unique"]["success"] is True

    report = run(con, max_duplicate_key_rate=0.02, max_duplicate_across_issuers=1)
    assert failed(report) == []


def test_registry_defects_and_null_keys(con):
    clean_night(con)
    insert_staged(
        con,
        [
            staged_row(
                "registry", "registry", 300, "1100231130", "1234567", key="1100231130-1234567"
            ),  # 7 digits
            staged_row("registry", "registry", 301, "", "12345678", key="12345678"),  # legacy number, no code
            staged_row("registry", "registry", 302, "", digital(302), key=None, amount="1.00", tax="0.13"),
        ],
    )
    con.execute(
        "UPDATE invoice_versions SET invoice_key = NULL, amount = NULL "
        "WHERE version_id IN (SELECT version_id FROM invoice_seen WHERE line = 302)"
    )
    report = run(con)
    reg = by_name(report, "registry")
    assert failed(report) == [
        ("registry", "amount_present"),
        ("registry", "invoice_key_present"),
        ("registry", "invoice_key_well_formed"),
    ]
    assert reg["invoice_key_well_formed"]["unexpected_count"] == 3
    assert reg["invoice_key_well_formed"]["unexpected_sample"] == [
        "1100231130-1234567",
        "12345678",
        "registry/export.csv:302",
    ]
    # a row without a key is pointed to by file and line
    assert reg["invoice_key_present"]["unexpected_count"] == 1
    assert reg["invoice_key_present"]["unexpected_sample"] == ["registry/export.csv:302"]
    assert reg["amount_present"]["unexpected_sample"] == ["registry/export.csv:302"]


def test_crashing_expectation_is_an_error_not_a_failure(con, tmp_path):
    clean_night(con)
    suites = tmp_path / "suites"
    shutil.copytree(SUITES, suites)
    path = suites / SUITE_FILES["issuer"]
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["expectations"].append(
        {
            "type": "unexpected_rows_expectation",
            "kwargs": {"unexpected_rows_query": "SELECT no_such_column FROM {batch}"},
            "meta": {"name": "broken_query"},
        }
    )
    doc["expectations"].append(
        {
            "type": "expect_column_values_to_not_be_null",
            "kwargs": {"column": "no_such_column"},
            "meta": {"name": "broken_column"},
        }
    )
    path.write_text(json.dumps(doc), encoding="utf-8")

    report = run(con, suites_dir=suites)
    assert report["success"] is False
    for target in ("issuer:erp", "issuer:pos"):
        results = by_name(report, target)
        for name in ("broken_query", "broken_column"):
            assert results[name]["success"] is False
            assert "no_such_column" in results[name]["error"]
            assert results[name]["unexpected_sample"] == []
        # the other expectations of the suite ran normally
        others = [r for n, r in results.items() if not n.startswith("broken_")]
        assert others and all(r["success"] and r["error"] is None for r in others)
    assert failed(report) == sorted(
        (t, n) for t in ("issuer:erp", "issuer:pos") for n in ("broken_column", "broken_query")
    )
    # the caller's connection survived the failing statements
    assert con.execute("SELECT count(*) FROM staged_invoices").fetchone() == (201,)
    con.execute("CREATE TABLE after_run AS SELECT 1 AS x")
    con.execute("INSERT INTO after_run VALUES (2)")
    assert con.execute("SELECT sum(x) FROM after_run").fetchone() == (3,)


def test_every_suite_file_loads_completely():
    counts = load_suite_counts(SUITES)
    assert set(counts) == set(SUITE_FILES.values())
    for name, (in_file, loaded) in counts.items():
        assert in_file == loaded, name
        assert in_file >= 5, name


def test_rejected_expectation_names_the_file(con, tmp_path):
    clean_night(con)
    suites = tmp_path / "suites"
    shutil.copytree(SUITES, suites)
    path = suites / SUITE_FILES["reconciliation"]
    doc = json.loads(path.read_text(encoding="utf-8"))
    # GX raises for an expectation missing a required kwarg, and silently skips an unknown type
    doc["expectations"].append(
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "category"},
            "meta": {"name": "no_value_set"},
        }
    )
    doc["expectations"].append({"type": "expect_this_to_be_fine", "kwargs": {}, "meta": {"name": "made_up"}})
    path.write_text(json.dumps(doc), encoding="utf-8")
    in_file, loaded = load_suite_counts(suites)[path.name]
    assert (in_file, loaded) == (len(doc["expectations"]), len(doc["expectations"]) - 2)
    with pytest.raises(SuiteError, match=r"reconciliation\.json.*accepted 8 of 10.*no_value_set.*made_up"):
        run(con, suites_dir=suites)

    # GX accepts a query that ignores the batch (it only prints a warning): refused here
    doc["expectations"][-2:] = [
        {"type": "unexpected_rows_expectation", "kwargs": {"unexpected_rows_query": "SELECT * FROM findings"}}
    ]
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(SuiteError, match=r"reconciliation\.json.*must use \{batch\}"):
        run(con, suites_dir=suites)

    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(SuiteError, match=r"reconciliation\.json.*not valid JSON"):
        run(con, suites_dir=suites)
    path.unlink()
    with pytest.raises(SuiteError, match=r"reconciliation\.json.*cannot read"):
        run(con, suites_dir=suites)
    # nothing was created on the connection before the suites were checked
    assert gx_objects(con) == []


def test_a_system_without_rows_fails_its_row_count(con):
    clean_night(con)
    report = run_expectations(con, NIGHT, sources=["erp", "pos", "web"], suites_dir=SUITES, thresholds={})
    assert failed(report) == [("issuer:web", "rows_present")]
    assert by_name(report, "issuer:web")["rows_present"]["observed_value"] == 0


def test_bad_arguments(con):
    clean_night(con)
    with pytest.raises(SuiteError, match="issuing system"):
        run_expectations(
            con, NIGHT, sources=["erp'; DROP TABLE findings; --"], suites_dir=SUITES, thresholds={}
        )
    with pytest.raises(TypeError, match="night"):
        run_expectations(con, "2025-03-14", sources=SOURCES, suites_dir=SUITES, thresholds={})
    assert con.execute("SELECT count(*) FROM findings").fetchone() == (0,)


def test_borrowed_connection_sees_temp_views_and_stays_open(con):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    con.execute("CREATE TEMP VIEW caller_view AS SELECT range AS x FROM range(10)")
    context = gx.get_context(mode="ephemeral")
    with gx_duckdb.borrowed_connection(con) as connection_id:
        datasource = context.data_sources.add_duckdb(name="borrowed", connection_id=connection_id)
        batch = (
            datasource.add_table_asset("caller_view", table_name="caller_view")
            .add_batch_definition_whole_table("all")
            .get_batch()
        )
        result = batch.validate(gxe.ExpectColumnMaxToBeBetween(column="x", min_value=9, max_value=9))
        assert result.success, result
        engine = datasource.get_execution_engine().engine
    # the engines are disposed; the caller's connection and its temp view are still there
    assert engine.pool.status().startswith("StaticPool")
    assert con.execute("SELECT count(*) FROM caller_view").fetchone() == (10,)
    with pytest.raises(ValueError, match="not .*lent"):
        datasource.get_execution_engine()


def test_own_connection_to_a_file_is_closed(tmp_path):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    db = tmp_path / "own.duckdb"
    with duckdb.connect(str(db)) as setup:
        setup.execute("CREATE TABLE t AS SELECT range AS x FROM range(1000)")
    context = gx.get_context(mode="ephemeral")
    datasource = context.data_sources.add_duckdb(name="own", connection_string=f"duckdb:///{db}")
    batch = (
        datasource.add_table_asset("t", table_name="t").add_batch_definition_whole_table("all").get_batch()
    )
    suite = gx.ExpectationSuite(
        name="own",
        expectations=[
            gxe.ExpectTableRowCountToEqual(value=1000),
            gxe.ExpectColumnValuesToBeBetween(column="x", min_value=0, max_value=999),
            gxe.ExpectColumnValuesToBeUnique(column="x"),
        ],
    )
    result = batch.validate(suite)
    assert result.success, [r.exception_info for r in result.results]
    gx_duckdb.close_datasource(datasource)
    # the file is free again: a writer with a different configuration can open it
    with duckdb.connect(str(db), config={"threads": 1}) as again:
        assert again.execute("SELECT count(*) FROM t").fetchone() == (1000,)


def test_lines_belong_to_invoices_and_add_up(con):
    clean_night(con)
    # a registry invoice whose 2 lines add up to 90 (the invoice says 100), and a line of no invoice
    con.execute(
        "UPDATE invoice_versions SET lines = 2, lines_amount = 90.00, lines_tax = 13.00 "
        "WHERE source_kind = 'registry' AND invoice_number = ?",
        [digital(1)],
    )
    stage_rows(
        con,
        "staged_lines",
        "night, source_kind, source_system, file, sheet, line, invoice_key, amount",
        [
            [NIGHT, "registry", "registry", "registry/export.xlsx", "信息汇总表", line, key, amount]
            for line, key, amount in ((2, digital(1), 50), (3, digital(1), 40), (4, digital(999), 10))
        ],
    )
    report = run(con, max_line_mismatch_rate=0)
    registry = by_name(report, "registry")
    assert registry["lines_belong_to_an_invoice"]["unexpected_sample"] == [digital(999)]
    assert registry["lines_add_up"]["unexpected_sample"] == [digital(1)]
    assert ("registry", "lines_add_up") in failed(report)
    # with the default share (1 %) too: the only invoice with lines is off
    assert not by_name(run(con), "registry")["lines_add_up"]["success"]
    assert all(r["success"] for r in by_name(report, "issuer:erp").values())
