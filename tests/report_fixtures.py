"""Inputs for the report and Excel renderers, built here so their tests need no pipeline.

Deterministic (no randomness, no clock) so that rendered output can be snapshot-tested.
The values are hostile on purpose: markup, script breakers, spreadsheet formulas, control
characters, line separators, personal data that must be masked, identifiers with leading
zeros that must stay text.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from fapiao_audit.model import NightSummary, action_for

CATEGORY_CODES = (
    "MISSING_IN_REGISTRY",
    "PENDING_SYNC",
    "MISSING_IN_ISSUER",
    "DUPLICATE_IN_SOURCE",
    "DUPLICATE_ACROSS_ISSUERS",
    "FIELD_MISMATCH",
    "STATUS_MISMATCH",
    "REGISTRY_RISK",
    "INVALID_RECORD",
    "ORPHAN_RED_INVOICE",
)

HOSTILE = (
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "</script><script>alert(2)</script>",
    '=HYPERLINK("http://x","y")',
    "+cmd|' /C calc'!A0",
    "@SUM(A1)",
    "-2+3",
    '"><svg onload=alert(3)>',
    "<!-- comment",
    "line\u2028separator\u2029paragraph",
    "tab\tnew\nline",
    "&amp;&lt;already escaped&gt;",
    "{{ 7*7 }} {% raw %}",
    "\x01control\x07chars",
)

#: A private buyer: the name and the resident id must never show unmasked in report.html.
PERSON_NAME = "张三丰"
PERSON_ID = "110101199003071234"
COMPANY_NAME = "北京某某科技有限公司"
COMPANY_ID = "91110108MA01ABCD2X"

FINDING_TYPES = {
    "category": pa.string(),
    "invoice_key": pa.string(),
    "invoice_code": pa.string(),
    "invoice_number": pa.string(),
    "field": pa.string(),
    "source_system": pa.string(),
    "issuer_value": pa.string(),
    "registry_value": pa.string(),
    "seller_tax_id": pa.string(),
    "issue_date": pa.date32(),
    "detail": pa.string(),
    "suggested_match": pa.string(),
    "finding_status": pa.string(),
    "first_seen": pa.date32(),
    "age_days": pa.int32(),
    "amount_at_risk": pa.decimal128(18, 2),
    "action": pa.string(),
    "owner_role": pa.string(),
    "case_id": pa.string(),
    "decision": pa.string(),
    "finding_id": pa.string(),
}
FINDINGS_SCHEMA = pa.schema(list(FINDING_TYPES.items()))
REJECTED_SCHEMA = pa.schema(
    [
        ("source_system", pa.string()),
        ("file", pa.string()),
        ("line", pa.int64()),
        ("raw", pa.string()),
        ("reason", pa.string()),
    ]
)
NIGHT = date(2026, 11, 21)
SOURCES = ("erp", "pos", "webshop", "<b>thirdparty</b>")


def _finding(i: int, category: str) -> dict[str, Any]:
    digital = i % 2 == 0
    number = f"{26110000000000000000 + i:020d}" if digital else f"{i:08d}"
    code = "" if digital else f"0{11001900000 + i}"
    key = number if digital else f"{code}-{number}"
    source = "registry" if category == "MISSING_IN_ISSUER" else SOURCES[i % len(SOURCES)]
    row: dict[str, Any] = {
        "category": category,
        "invoice_key": key,
        "invoice_code": code,
        "invoice_number": number,
        "field": None,
        "source_system": source,
        "issuer_value": None,
        "registry_value": None,
        "seller_tax_id": "91110000000000001" + "0123456789"[i % 10] if i % 7 else "011000000000000000",
        "issue_date": NIGHT - timedelta(days=i % 7),
        "detail": HOSTILE[i % len(HOSTILE)],
        "suggested_match": None,
        "finding_status": ("new", "open", None)[i % 3],
        "first_seen": NIGHT - timedelta(days=i % 5),
        "age_days": i % 5,
        "amount_at_risk": Decimal(i * 137 % 100_000) + Decimal("0.50"),
        "action": action_for(category).text,
        "owner_role": action_for(category).role_label,
        "case_id": "C-" + key,
        "decision": ("handled", None, "reopened", None)[i % 4],
        "finding_id": f"F{i:012X}",
    }
    if category == "FIELD_MISMATCH":
        kind = (i // len(CATEGORY_CODES)) % 4
        if kind == 0:
            row.update(
                field="buyer_name",
                issuer_value=PERSON_NAME,
                registry_value=HOSTILE[i % len(HOSTILE)],
                detail=f"购方名称不一致: {PERSON_NAME} ≠ registry",
            )
        elif kind == 1:
            row.update(
                field="buyer_tax_id",
                issuer_value=PERSON_ID,
                registry_value="",
                detail=f"buyer_tax_id {PERSON_ID} missing in registry",
            )
        elif kind == 2:
            row.update(
                field="buyer_name", issuer_value=COMPANY_NAME, registry_value=COMPANY_NAME + "（北京）"
            )
        else:
            row.update(field="amount", issuer_value="001234.50", registry_value="=1234.5+0")
    elif category in ("STATUS_MISMATCH", "REGISTRY_RISK"):
        row.update(field="status", issuer_value="normal", registry_value="out_of_control")
    elif category == "INVALID_RECORD":
        row.update(field="invoice_number", issuer_value=HOSTILE[(i + 3) % len(HOSTILE)])
    elif category == "MISSING_IN_REGISTRY":
        row.update(suggested_match="0" + number[1:])
    return row


def build_findings(n: int = 60) -> pa.Table:
    """``n`` findings over all ten categories, sorted by category display order then key."""
    rows = [_finding(i, CATEGORY_CODES[i % len(CATEGORY_CODES)]) for i in range(n)]
    rows.sort(key=lambda r: (CATEGORY_CODES.index(r["category"]), r["invoice_key"]))
    return pa.Table.from_pylist(rows, schema=FINDINGS_SCHEMA)


def build_resolved(n: int = 5) -> pa.Table:
    rows = [_finding(1000 + i, CATEGORY_CODES[(i * 3) % len(CATEGORY_CODES)]) for i in range(n)]
    for r in rows:
        r["finding_status"] = None
    return pa.Table.from_pylist(rows, schema=FINDINGS_SCHEMA)


def build_rejected(n: int = 6) -> pa.Table:
    rows = [
        {
            "source_system": SOURCES[i % len(SOURCES)],
            "file": f"issuers/{SOURCES[i % len(SOURCES)]}/batch <{i}>.csv",
            "line": i + 2,
            "raw": f"{i:08d},{PERSON_NAME},{PERSON_ID},{HOSTILE[i % len(HOSTILE)]}",
            "reason": "bad amount: " + HOSTILE[(i + 1) % len(HOSTILE)],
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=REJECTED_SCHEMA)


def _counts(table: pa.Table) -> dict[str, int]:
    got = {r["values"]: r["counts"] for r in pc.value_counts(table.column("category")).to_pylist()}
    return {c: int(got.get(c, 0)) for c in CATEGORY_CODES}


def build_summary(
    findings: pa.Table,
    rejected: pa.Table,
    resolved: pa.Table,
    *,
    outcome: str = "failed",
    history_nights: int = 30,
    previous: bool = True,
) -> NightSummary:
    counts = _counts(findings)
    statuses = findings.column("finding_status").to_pylist()
    history = []
    for k in range(history_nights - 1, 0, -1):
        night = NIGHT - timedelta(days=k)
        hc = {c: (k * 3 + j * 5) % 11 for j, c in enumerate(CATEGORY_CODES)}
        history.append(
            {
                "night": night.isoformat(),
                "counts": hc,
                "total": sum(hc.values()),
                "outcome": "failed" if k % 4 == 0 else "passed",
            }
        )
    if history_nights:
        history.append(
            {"night": NIGHT.isoformat(), "counts": counts, "total": sum(counts.values()), "outcome": outcome}
        )
    rej_by_source: dict[str, int] = {}
    for s in rejected.column("source_system").to_pylist():
        rej_by_source[s] = rej_by_source.get(s, 0) + 1
    sources = []
    for name in (*SOURCES, "registry"):
        rj = rej_by_source.get(name, 0)
        files = [
            {
                "file": f"issuers/{name}/part-0001.parquet"
                if name != "registry"
                else "registry/全量导出.xlsx",
                "sha256": f"{abs(hash_name(name)):064x}"[-64:],
                "format": "parquet" if name != "registry" else "xlsx",
                "encoding": None,
                "bytes": 123456,
                "rows_read": 1000 + rj,
                "rows_loaded": 1000,
                "rows_rejected": rj,
                "duplicate_of": None,
            },
        ]
        if name == "erp":
            files.append(
                {
                    "file": "issuers/erp/part-0001 copy.parquet",
                    "sha256": files[0]["sha256"],
                    "format": "parquet",
                    "encoding": None,
                    "bytes": 123456,
                    "rows_read": 0,
                    "rows_loaded": 0,
                    "rows_rejected": 0,
                    "duplicate_of": "issuers/erp/part-0001.parquet",
                }
            )
        sources.append(
            {
                "source_system": name,
                "source_kind": "registry" if name == "registry" else "issuer",
                "rows_read": sum(f["rows_read"] for f in files),
                "rows_loaded": sum(f["rows_loaded"] for f in files),
                "rows_rejected": sum(f["rows_rejected"] for f in files),
                "files": files,
            }
        )
    return NightSummary.from_dict(
        {
            "night": NIGHT.isoformat(),
            "outcome": outcome,
            "run": {
                "run_id": "manual__2026-11-22T01:00:00+08:00",
                "started_at": "2026-11-22T01:00:00+08:00",
                "finished_at": "2026-11-22T01:03:12+08:00",
                "duration_s": 192.4,
                "version": "0.1.0",
            },
            "as_of": "2026-11-22T00:00:00+08:00",
            "window": {"start": "2026-11-15", "end": NIGHT.isoformat()},
            "counts": counts,
            "total_findings": findings.num_rows,
            "previous_night": "2026-11-20" if previous else None,
            "counts_previous": {c: (i * 2) % 5 for i, c in enumerate(CATEGORY_CODES)} if previous else None,
            "new": statuses.count("new"),
            "open": statuses.count("open"),
            "resolved": resolved.num_rows,
            "sources": sources,
            "by_seller": [
                {"seller_tax_id": "911100000000000010", "seller_name": COMPANY_NAME, "findings": 12},
                {
                    "seller_tax_id": "011000000000000000",
                    "seller_name": "<script>alert(1)</script>",
                    "findings": 5,
                },
                {"seller_tax_id": "91110000000000001X", "seller_name": None, "findings": 1},
            ],
            "out_of_scope": {"registry_other_sellers": 42},
            "out_of_window": 3,
            "keys": {"issuer": 5000, "registry": 5100, "matched": 4900},
            "expectations": {
                "success": False,
                "suites": [
                    {
                        "suite": "staged_invoices",
                        "target": "staged_invoices[erp]",
                        "success": False,
                        "parameters": {"window_start": "2026-11-15", "max_rate": 0.01, "<p>": "<script>"},
                        "results": [
                            {
                                "expectation": "invoice_number present",
                                "type": "expect_column_values_to_not_be_null",
                                "column": "invoice_number",
                                "success": True,
                                "error": None,
                                "observed_value": {"element_count": 1000, "unexpected_count": 0},
                                "unexpected_count": 0,
                                "unexpected_sample": [],
                            },
                            {
                                "expectation": "status in enum",
                                "type": "expect_column_values_to_be_in_set",
                                "column": "status",
                                "success": False,
                                "error": None,
                                "observed_value": None,
                                "unexpected_count": 3,
                                "unexpected_sample": ["<script>alert(1)</script>", "=cmd|'/C calc'!A0"],
                                "description": "Statuses are in the enum <normal, voided, …>.",
                            },
                            {
                                "expectation": "buyer names",
                                "type": "unexpected_rows_expectation",
                                "column": "buyer_name",
                                "success": False,
                                "error": None,
                                "observed_value": 2,
                                "unexpected_count": 2,
                                "unexpected_sample": [PERSON_NAME, COMPANY_NAME],
                            },
                            {
                                "expectation": "amount regex",
                                "type": "unexpected_rows_expectation",
                                "column": "amount",
                                "success": False,
                                "error": "Binder Error: <b>no such column</b>",
                                "observed_value": None,
                                "unexpected_count": None,
                                "unexpected_sample": [],
                            },
                        ],
                    },
                    {
                        "suite": "reconciliation",
                        "target": "findings",
                        "success": True,
                        "results": [
                            {
                                "expectation": "missing in registry rate under 1%",
                                "type": "unexpected_rows_expectation",
                                "column": None,
                                "success": True,
                                "error": None,
                                "observed_value": 0.004,
                                "unexpected_count": 0,
                                "unexpected_sample": [],
                            },
                        ],
                    },
                ],
            },
            "config": {
                "window_days": 7,
                "sync_grace_hours": 48.0,
                "amount_tolerance": "0.00",
                "monitored_sellers": ["911100000000000010"],
                "mask_html": True,
                "thresholds": {"max_missing_in_registry_rate": 0.01, "max_duplicate_across_issuers": 0},
                "column_mappings": {"pos": {"<票号>": "invoice_number"}},
            },
            "history": history,
        }
    )


def hash_name(name: str) -> int:
    """A stable stand-in for a checksum (``hash()`` of str is salted per process)."""
    h = 0
    for ch in name:
        h = (h * 1_000_003 + ord(ch)) % (1 << 256)
    return h


def build_inputs(n: int = 60) -> tuple[NightSummary, pa.Table, pa.Table, pa.Table]:
    """``(summary, findings, rejected, resolved)`` consistent with each other."""
    findings, rejected, resolved = build_findings(n), build_rejected(), build_resolved()
    return build_summary(findings, rejected, resolved), findings, rejected, resolved


def big_findings(n: int) -> pa.Table:
    """``n`` findings built column-wise (a million rows in about a second), sorted by category."""
    idx = pa.array(range(n), pa.int64())
    per = -(-n // len(CATEGORY_CODES))
    cat_idx = pc.divide(idx, per)
    categories = pc.take(pa.array(CATEGORY_CODES), cat_idx)
    number = pc.utf8_lpad(pc.cast(pc.add(idx, 10**15), pa.string()), 20, "2")
    dates = pc.cast(
        pc.add(pc.multiply(pc.bit_wise_and(idx, 3), -1), (NIGHT - date(1970, 1, 1)).days), pa.int32()
    )
    dates = dates.cast(pa.date32())
    sources = pc.take(pa.array(SOURCES[:3]), pc.bit_wise_and(idx, 1))
    detail = pc.binary_join_element_wise(pa.scalar("detail <b>"), pc.cast(idx, pa.string()), "")
    nulls = pa.nulls(n, pa.string())
    cols = {
        "category": categories,
        "invoice_key": number,
        "invoice_code": pa.array([""] * n, pa.string()),
        "invoice_number": number,
        "field": nulls,
        "source_system": sources,
        "issuer_value": nulls,
        "registry_value": nulls,
        "seller_tax_id": pa.array(["911100000000000010"] * n, pa.string()),
        "issue_date": dates,
        "detail": detail,
        "suggested_match": nulls,
        "finding_status": pc.take(pa.array(["new", "open"]), pc.bit_wise_and(idx, 1)),
        "first_seen": dates,
        "age_days": pc.cast(pc.bit_wise_and(idx, 3), pa.int32()),
        "amount_at_risk": pa.nulls(n, pa.decimal128(18, 2)),
        "action": nulls,
        "owner_role": nulls,
        "case_id": nulls,
        "decision": nulls,
        "finding_id": nulls,
    }
    return pa.table(cols, schema=FINDINGS_SCHEMA)
