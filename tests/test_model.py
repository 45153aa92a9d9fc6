"""The vocabulary is defined once: the model, the SQL, the shard sequence and the suites agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fapiao_audit import model, reconcile
from fapiao_audit.config import Config
from fapiao_audit.db import connect, sql_statements
from fapiao_audit.excel import HEADERS
from fapiao_audit.publish import EXCEPTIONS_COLUMNS

SUITES = Path(__file__).resolve().parents[1] / "expectations"


def _inserted_categories(sql: str) -> set[str]:
    """Category-like literals a reconcile.sql section writes ('MISSING_IN_REGISTRY', ...)."""
    return set(re.findall(r"'([A-Z]+(?:_[A-Z]+)+)'", sql))


def test_every_category_has_its_section_and_every_finding_section_a_category() -> None:
    sections = dict(sql_statements("reconcile.sql"))
    known = set(reconcile._PREPARE) | set(reconcile._SHARD_RESULT) | set(reconcile._MERGE)
    finding_sections = [
        name for name, sql in sections.items() if name not in known and "INSERT INTO rc_findings" in sql
    ]
    # no section inserts findings unless the model names it (else it would silently never run)
    assert sorted(finding_sections) == sorted(model.FINDING_SECTIONS)
    assert set(sections) == known | set(model.FINDING_SECTIONS)
    for section in model.FINDING_SECTIONS:
        written = _inserted_categories(sections[section])
        owners = {c.code for c in model.CATEGORIES if c.section == section}
        # a section writes exactly the categories that name it (PENDING_SYNC beside MISSING_IN_REGISTRY)
        assert written == owners, (section, written, owners)


def test_the_shard_runs_every_finding_section_once_in_model_order() -> None:
    per_shard = reconcile._PER_SHARD
    found = [s for s in per_shard if s in model.FINDING_SECTIONS]
    assert found == list(model.FINDING_SECTIONS)
    assert per_shard.index("create_findings") < per_shard.index(found[0])


def test_categories_are_unique_and_families_known() -> None:
    assert len(set(model.CATEGORY_CODES)) == len(model.CATEGORIES)
    assert {c.family for c in model.CATEGORIES} <= set(model.CATEGORY_CODES)
    assert len({c.colour for c in model.CATEGORIES}) == len(model.CATEGORIES)


def test_the_suite_checks_categories_against_the_model() -> None:
    suite = json.loads((SUITES / "reconciliation.json").read_text(encoding="utf-8"))
    (query,) = [
        e["kwargs"]["unexpected_rows_query"]
        for e in suite["expectations"]
        if e["meta"]["name"] == "finding_category_known"
    ]
    assert "NOT IN (SELECT code FROM gx_finding_categories)" in query  # the runner fills it from the model
    assert not re.findall(r"'([A-Z]+(?:_[A-Z]+)+)'", query)  # and the suite lists no code of its own


def test_the_staged_suites_allow_exactly_the_models_statuses() -> None:
    def value_set(name: str) -> list[str]:
        suite = json.loads((SUITES / name).read_text(encoding="utf-8"))
        (values,) = [
            e["kwargs"]["value_set"] for e in suite["expectations"] if e["meta"]["name"] == "status_in_enum"
        ]
        return values

    assert value_set("staged_issuer.json") == list(model.INVOICE_STATUSES)
    assert value_set("staged_registry.json") == [
        s for s in model.INVOICE_STATUSES if s not in model.ISSUER_ONLY_STATUSES
    ]
    known = set(model.COMPARABLE_STATUSES) | set(model.RISK_STATUSES) | set(model.ISSUER_ONLY_STATUSES)
    assert known == set(model.INVOICE_STATUSES)


def test_finding_columns_are_the_findings_table() -> None:
    con = connect(":memory:", Config())
    try:
        stored = [r[0] for r in con.execute("DESCRIBE findings").fetchall()]
        reconcile_sql = dict(sql_statements("reconcile.sql"))
        con.execute(reconcile_sql["create_findings"])
        shard = [r[0] for r in con.execute("DESCRIBE rc_findings").fetchall()]
    finally:
        con.close()
    assert stored == ["night"] + [c.name for c in model.FINDING_COLUMNS]
    assert shard == [c.name for c in model.FINDING_COLUMNS if c.shard]


def test_outputs_take_their_columns_from_the_model() -> None:
    assert EXCEPTIONS_COLUMNS == model.CSV_COLUMNS
    assert set(model.CSV_COLUMNS) == {c.name for c in model.FINDING_COLUMNS}
    assert [h[1] for h in HEADERS] == list(model.EXCEL_COLUMNS)
    assert [h[0] for h in HEADERS] == [model.COLUMN_BY_NAME[n].zh for n in model.EXCEL_COLUMNS]
    for names in (model.EXCEL_COLUMNS, model.REPORT_COLUMNS, model.REPORT_RESOLVED_COLUMNS):
        assert set(names) <= set(model.COLUMN_BY_NAME)


def test_summary_round_trips_through_its_document() -> None:
    files = (
        model.FileReport("registry", "registry", "registry/a.xlsx", "0" * 64, "xlsx", None, 10, 3, 2, 1),
        model.FileReport("issuer", "erp", "issuers/erp/a.csv", "1" * 64, "csv", "utf-8", 5, 2, 2, 0),
    )
    summary = model.NightSummary(
        night="2026-11-21",
        outcome="failed",
        run=model.RunInfo("r1", "s", "f", 1.5, "0.1.0"),
        as_of="a",
        window_start="2026-11-15",
        window_end="2026-11-21",
        counts=model.zero_counts(),
        total_findings=0,
        previous_night=None,
        counts_previous=None,
        new=0,
        open=0,
        resolved=0,
        out_of_window=0,
        keys={"issuer": 2, "registry": 2, "matched": 2},
        sources=model.source_totals(files),
        by_seller=(model.SellerCount("9111", "甲", 1, 12.5),),
        registry_other_sellers=4,
        expectations={"success": False, "suites": []},
        config={"window_days": 7},
        history=(model.NightCounts("2026-11-21", model.zero_counts(), 0, "failed"),),
        amount_at_risk={"total": 12.5, "currency": "CNY", "by_category": {}, "by_source": {}},
        open_items={"total": 1, "findings": 1, "left_window": 0},
        decisions={"files_read": [], "problems": []},
    )
    doc = summary.to_dict()
    assert list(doc) == [
        "night",
        "outcome",
        "run",
        "as_of",
        "window",
        "counts",
        "total_findings",
        "previous_night",
        "counts_previous",
        "new",
        "open",
        "resolved",
        "out_of_window",
        "keys",
        "sources",
        "by_seller",
        "out_of_scope",
        "expectations",
        "config",
        "history",
        "missing_by_cause",
        "pending_by_cause",
        "monitored_sellers",
        "not_checked",
        "warnings",
        "unread_files",
        "amount_at_risk",
        "open_items",
        "decisions",
    ]
    assert [s["source_system"] for s in doc["sources"]] == ["registry", "erp"]
    assert model.NightSummary.from_dict(json.loads(json.dumps(doc))) == summary
