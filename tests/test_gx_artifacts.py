"""The suites and the saved results are GX's own: plain Great Expectations loads and runs them.

No project code rewrites a suite before GX sees it: a threshold is a GX suite parameter
(``{"$PARAMETER": ...}``, given as ``expectation_parameters``) or a column of the one-row
``gx_thresholds`` table a query reads. What a night saves (gx_results.json) is a list of
``ExpectationSuiteValidationResult.to_json_dict()``.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import great_expectations as gx
import pytest
from great_expectations.core.expectation_validation_result import (
    ExpectationSuiteValidationResult,
    expectationSuiteValidationResultSchema,
)

from fapiao_audit import gx_duckdb
from fapiao_audit.publish import gx_results_digest
from test_validate import SCHEMA, SOURCES, SUITES, by_name, clean_night, insert_finding, run

SUITE_FILES = sorted(SUITES.glob("*.json"))


@pytest.fixture()
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "audit.duckdb"))
    connection.execute(SCHEMA.read_text(encoding="utf-8"))
    yield connection
    connection.close()


@pytest.mark.parametrize("path", SUITE_FILES, ids=lambda p: p.name)
def test_plain_gx_loads_every_suite_file_as_it_is(path):
    doc = json.loads(path.read_text(encoding="utf-8"))
    suite = gx.ExpectationSuite(**doc)
    assert suite.name == doc["name"]
    assert len(suite.expectations) == len(doc["expectations"])
    # no placeholder for project code to substitute: a query holds no $name, only GX's {batch}
    for exp in doc["expectations"]:
        assert "$" not in exp["kwargs"].get("unexpected_rows_query", "")


def _reconciliation_db(path: Path, missing_rate: float) -> None:
    """A database holding what the reconciliation suite reads, the way run_expectations lays it out."""
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE gx_reconciliation_stats AS SELECT 100 AS issuer_keys, 100 AS registry_keys, "
        "90 AS matched_keys, 100 AS monitored_registry_keys, 0 AS duplicate_across_issuers, "
        f"{missing_rate}::DOUBLE AS missing_in_registry_rate, 0.0::DOUBLE AS missing_in_issuer_rate, "
        "0.0::DOUBLE AS field_mismatch_rate, 0.0::DOUBLE AS rejected_rate"
    )
    con.execute("CREATE TABLE gx_findings (invoice_key VARCHAR, category VARCHAR)")
    con.execute("CREATE TABLE gx_finding_categories (code VARCHAR, family VARCHAR)")
    con.execute("INSERT INTO gx_finding_categories VALUES ('MISSING_IN_REGISTRY', 'missing')")
    con.execute("CREATE TABLE gx_thresholds AS SELECT 0 AS max_duplicate_across_issuers")
    con.close()


def test_stock_gx_runs_the_reconciliation_suite_with_expectation_parameters(tmp_path):
    db = tmp_path / "night.duckdb"
    _reconciliation_db(db, missing_rate=0.03)
    suite = gx.ExpectationSuite(**json.loads((SUITES / "reconciliation.json").read_text(encoding="utf-8")))
    context = gx.get_context(mode="ephemeral")
    source = context.data_sources.add_duckdb(name="night", connection_string=f"duckdb:///{db}")
    try:
        batch = (
            source.add_table_asset("stats", table_name="gx_reconciliation_stats")
            .add_batch_definition_whole_table("whole")
            .get_batch()
        )
        params = {
            "max_missing_in_registry_rate": 0.01,
            "max_missing_in_issuer_rate": 0.01,
            "max_field_mismatch_rate": 0.01,
            "max_rejected_rate": 0.001,
        }
        strict = batch.validate(suite, expectation_parameters=params)
        loose = batch.validate(suite, expectation_parameters={**params, "max_missing_in_registry_rate": 0.05})
    finally:
        gx_duckdb.close_datasource(source)

    def outcome(result):
        return {r.expectation_config.meta["name"]: r.success for r in result.results}

    assert len(strict.results) == len(suite.expectations)
    assert all(r.exception_info.get("raised_exception") is False for r in strict.results)
    assert outcome(strict)["missing_in_registry_rate"] is False
    assert outcome(loose)["missing_in_registry_rate"] is True
    assert [name for name, ok in outcome(loose).items() if not ok] == []


def test_saved_results_load_back_in_plain_gx(con):
    clean_night(con)
    for i in range(900, 905):  # five MISSING_IN_REGISTRY keys: the rate expectation fails
        insert_finding(con, "MISSING_IN_REGISTRY", f"2511200000000{i:07d}", "erp")
    report = run(con, amount_tolerance=0.01)
    saved = json.loads(json.dumps(report["gx_results"]))  # as gx_results.json holds them
    assert [r["meta"]["fapiao_audit_target"] for r in saved] == ["registry"] + [
        f"issuer:{s}" for s in SOURCES
    ] + ["reconciliation"]

    for doc, suite in zip(saved, report["suites"], strict=True):
        plain = ExpectationSuiteValidationResult(**doc)
        assert plain.suite_name == suite["suite"] and plain.success == suite["success"]
        loaded = expectationSuiteValidationResultSchema.load(doc)
        assert isinstance(loaded, ExpectationSuiteValidationResult)
        assert [r.expectation_config.meta["name"] for r in loaded.results] == [
            r["expectation"] for r in suite["results"]
        ]
        assert [r.success for r in loaded.results] == [r["success"] for r in suite["results"]]
        assert loaded.statistics["evaluated_expectations"] == len(suite["results"])
        # the expectations as the suite file has them (nothing the runner added or rewrote)
        file_doc = json.loads((SUITES / f"{suite['suite']}.json").read_text(encoding="utf-8"))
        assert [r.expectation_config.meta for r in loaded.results] == [
            e["meta"] for e in file_doc["expectations"]
        ]

    recon = ExpectationSuiteValidationResult(**saved[-1])
    assert recon.success is False
    assert recon.suite_parameters["max_missing_in_registry_rate"] == 0.01
    registry = expectationSuiteValidationResultSchema.load(saved[0])
    assert registry.meta["thresholds"]["amount_tolerance"] == 0.01
    assert by_name(report, "reconciliation")["missing_in_registry_rate"]["success"] is False

    digest = gx_results_digest(saved)
    assert digest["file"] == "gx_results.json" and digest["suite_runs"] == 4
    assert digest["evaluated"] == sum(len(s["results"]) for s in report["suites"])
    assert digest["failed"] == sum(1 for s in report["suites"] for r in s["results"] if not r["success"])


def test_a_query_placeholder_of_the_old_format_is_refused_with_the_fix(con, tmp_path):
    from fapiao_audit.errors import SuiteError

    suites = tmp_path / "suites"
    suites.mkdir()
    for path in SUITE_FILES:
        (suites / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    doc = json.loads((suites / "staged_issuer.json").read_text(encoding="utf-8"))
    for exp in doc["expectations"]:
        query = exp["kwargs"].get("unexpected_rows_query")
        if query and "(SELECT amount_tolerance FROM gx_thresholds)" in query:
            exp["kwargs"]["unexpected_rows_query"] = query.replace(
                "(SELECT amount_tolerance FROM gx_thresholds)", "$amount_tolerance"
            )
    (suites / "staged_issuer.json").write_text(json.dumps(doc), encoding="utf-8")
    clean_night(con)
    with pytest.raises(SuiteError, match=r"\(SELECT amount_tolerance FROM gx_thresholds\)"):
        run(con, suites_dir=suites)
