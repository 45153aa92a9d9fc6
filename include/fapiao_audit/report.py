"""The auditors' nightly quality report: one self-contained HTML page.

The page has to open from an e-mail attachment or an archive share years later, on a
machine without network access, and must never run or load anything that came in with the
data. Hence:

- one file: CSS, JavaScript and SVG charts are inline; a Content-Security-Policy forbids every
  fetch and allows only the page's own script (by hash), so even a rendering bug cannot make
  the page call out or run injected script;
- Jinja2 with autoescape for everything on the page, and data for the findings tables
  embedded as JSON in ``<script type="application/json">`` with ``<``, ``>``, ``&``, U+2028
  and U+2029 escaped, then drawn with DOM APIs and ``textContent`` only;
- deterministic: the same inputs give the same bytes (no clock is read here; every time on
  the page comes from ``summary``), so a rerun can be compared with ``diff``.

The page embeds at most ``max_rows`` findings. When it has to leave rows out it keeps every
category represented (a fair share each, in list order) rather than the first ``max_rows``
rows of the sorted list, which would show the first category only; the page says how many
rows it shows and that the full list is in ``exceptions.csv``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
import pyarrow as pa
import pyarrow.compute as pc
from markupsafe import Markup, escape

from fapiao_audit import masking
from fapiao_audit.model import (
    AGING_BUCKETS,
    CARRIED_STATUSES,
    CATEGORIES,
    CATEGORY_BY_CODE,
    DECISIONS,
    FIELD_LABELS,
    FINDING_STATUSES,
    GONE_STATUSES,
    MISSING_CAUSES,
    REOPENED,
    REPORT_COLUMNS,
    REPORT_DETAIL_COLUMNS,
    REPORT_RESOLVED_COLUMNS,
    NightSummary,
    category_order,
    columns,
)

__all__ = [
    "fair_quotas",
    "json_for_script",
    "render_report_html",
    "select_embedded_rows",
    "trend_svg",
]


# Column specs of the client-side tables: (key, Chinese label, English label, kind).
_REPORT_KIND = {"id": "mono", "source": "mono", "value": "text", "int": "num"}
#: Status and decision words of the client-side tables (code -> "中文 English").
_STATUS_LABELS = {
    k: f"{zh} {en}" for k, (zh, en) in {**FINDING_STATUSES, **GONE_STATUSES, **CARRIED_STATUSES}.items()
}
_DECISION_LABELS = {
    **{k: f"{zh} {en}" for k, (zh, en, _c) in DECISIONS.items()},
    "reopened": f"{REOPENED[0]} re-opened",
}


def _view(names: Sequence[str]) -> tuple[tuple[str, str, str, str], ...]:
    return tuple((c.name, c.zh, c.en, _REPORT_KIND.get(c.kind, c.kind)) for c in columns(names))


_FINDINGS_VIEW = _view(REPORT_COLUMNS)
_DETAIL_VIEW = _view(REPORT_DETAIL_COLUMNS)
_RESOLVED_VIEW = _view(REPORT_RESOLVED_COLUMNS)
_REJECTED_VIEW: tuple[tuple[str, str, str, str], ...] = (
    ("source_system", "来源系统", "Source", "mono"),
    ("file", "文件", "File", "mono"),
    ("sheet", "工作表", "Sheet", "mono"),
    ("line", "行号", "Line", "num"),
    ("raw", "原始内容", "Raw row", "raw"),
    ("reason", "拒绝原因", "Reason", "long"),
)

_HTML_JSON_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def json_for_script(obj: Any) -> Markup:
    """JSON text that is safe inside ``<script type="application/json">`` and parses back to ``obj``.

    ``<``, ``>`` and ``&`` become ``\\u003c`` … so no ``</script>`` or ``<!--`` can appear;
    U+2028/2029 are escaped for old JavaScript parsers. Chinese stays as UTF-8 (a third of the
    size of ``\\uXXXX`` escapes).
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default)
    return Markup(text.translate(_HTML_JSON_ESCAPES))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------- row selection


def fair_quotas(counts: Sequence[int], cap: int) -> list[int]:
    """Split ``cap`` rows over groups of ``counts`` rows: small groups whole, large ones equal shares.

    Water-filling: every group gets the same share until it is exhausted; what is left over
    goes to the remaining groups in order. ``sum(result) == min(cap, sum(counts))``.
    """
    counts = [max(0, int(c)) for c in counts]
    if sum(counts) <= cap:
        return counts
    quotas = [0] * len(counts)
    remaining = max(0, cap)
    active = [i for i, c in enumerate(counts) if c > 0]
    while active and remaining > 0:
        share = remaining // len(active)
        if share == 0:
            for i in active[:remaining]:
                quotas[i] += 1
            break
        still = []
        for i in active:
            give = min(share, counts[i] - quotas[i])
            quotas[i] += give
            remaining -= give
            if quotas[i] < counts[i]:
                still.append(i)
        active = still
    return quotas


def select_embedded_rows(findings: pa.Table, max_rows: int) -> pa.Table:
    """At most ``max_rows`` rows of ``findings``, every category represented, list order kept."""
    if findings.num_rows <= max_rows:
        return findings
    if max_rows <= 0:
        return findings.slice(0, 0)
    cat = findings.column("category")
    counts = {row["values"]: row["counts"] for row in pc.value_counts(cat).to_pylist()}
    order = category_order(counts)
    quotas = fair_quotas([counts[c] for c in order], max_rows)
    parts = []
    for code, quota in zip(order, quotas, strict=True):
        if quota <= 0:
            continue
        mask = pc.is_null(cat) if code is None else pc.fill_null(pc.equal(cat, code), False)
        parts.append(pc.indices_nonzero(mask).slice(0, quota))
    indices = pa.concat_arrays([p.cast(pa.uint64()) for p in parts])
    indices = pc.take(indices, pc.array_sort_indices(indices))
    return findings.take(indices)


# --------------------------------------------------------------------------- table helpers


def _columns(table: pa.Table | None, names: Sequence[str]) -> list[list[Any]]:
    """Python lists of the named columns; a column the table lacks is all ``None``."""
    n = table.num_rows if table is not None else 0
    out = []
    for name in names:
        if table is not None and name in table.column_names:
            values = table.column(name).to_pylist()
            out.append([v.isoformat() if isinstance(v, date | datetime) else v for v in values])
        else:
            out.append([None] * n)
    return out


def _records(table: pa.Table | None, names: Sequence[str]) -> Iterator[dict[str, Any]]:
    cols = _columns(table, names)
    for values in zip(*cols, strict=True):
        yield dict(zip(names, values, strict=True))


def _table_payload(
    table: pa.Table | None,
    view: Sequence[tuple[str, str, str, str]],
    *,
    total: int,
    mask: bool,
    extra_mask_columns: Sequence[str] = (),
    detail: Sequence[tuple[str, str, str, str]] = (),
) -> dict[str, Any]:
    """The JSON a client-side table reads: column specs, rows as arrays (compact), totals. ``detail``
    columns are not shown in the table, only under a clicked row."""
    keys = [k for k, *_ in view] + [k for k, *_ in detail]
    read = list(dict.fromkeys([*keys, *extra_mask_columns]))
    rows = []
    for record in _records(table, read):
        if mask:
            record = masking.mask_record(record)
        rows.append([masking.mark_bidi(v) if isinstance(v, str) else v for v in (record[k] for k in keys)])
    return {
        "columns": [{"key": k, "zh": zh, "en": en, "kind": kind} for k, zh, en, kind in view]
        + [{"key": k, "zh": zh, "en": en, "kind": kind, "detail": True} for k, zh, en, kind in detail],
        "rows": rows,
        "total": total,
        "statuses": _STATUS_LABELS,
        "decisions": _DECISION_LABELS,
    }


#: The columns of an invoice's lines shown under a finding: (key, Chinese label, English label).
LINE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("source_system", "来源", "Source"),
    ("line", "行号", "Line"),
    ("item_name", "项目名称", "Item"),
    ("quantity", "数量", "Qty"),
    ("unit_price", "单价", "Unit price"),
    ("amount", "金额", "Amount"),
    ("tax_rate", "税率", "Rate"),
    ("tax_amount", "税额", "Tax"),
)


def _lines_payload(lines: pa.Table | None, shown: pa.Table) -> dict[str, Any]:
    """The lines of the invoices the page shows (the evidence under a finding), by invoice key."""
    by_key: dict[str, list[list[Any]]] = {}
    keys = set(shown.column("invoice_key").to_pylist()) if "invoice_key" in shown.column_names else set()
    if lines is not None and lines.num_rows and keys:
        names = [k for k, _zh, _en in LINE_COLUMNS]
        for record in _records(lines, ["invoice_key", *names]):
            if record["invoice_key"] in keys:
                by_key.setdefault(record["invoice_key"], []).append(
                    [None if record[k] is None else str(record[k]) for k in names]
                )
    return {"columns": [{"key": k, "zh": zh, "en": en} for k, zh, en in LINE_COLUMNS], "by_key": by_key}


def _count_by(table: pa.Table, keys: Sequence[str]) -> list[dict[str, Any]]:
    present = [k for k in keys if k in table.column_names]
    if table.num_rows == 0 or len(present) != len(keys):
        return []
    return table.group_by(list(keys)).aggregate([([], "count_all")]).to_pylist()


# --------------------------------------------------------------------------- charts


def _nice_ceiling(value: float) -> tuple[float, float]:
    """A round axis maximum >= value and its tick step (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0, 1.0
    raw_step = value / 4
    power = 10 ** math.floor(math.log10(raw_step))
    for m in (1, 2, 5, 10):
        step = m * power
        if step >= raw_step:
            break
    step = max(step, 1.0)
    return step * math.ceil(value / step), step


def _fmt_int(n: Any) -> str:
    try:
        return f"{int(n):,}"
    except (TypeError, ValueError):
        return "—"


def trend_svg(history: Sequence[Mapping[str, Any]], *, width: int = 1240, height: int = 300) -> Markup:
    """Stacked bars per published night and category, drawn here so the page needs no chart library.

    Every text that comes from data (nights, outcome) is escaped; numbers are formatted from
    ints. Failed nights get a red marker under their bar; tonight's label is bold.
    """
    nights = [h for h in history if isinstance(h, Mapping)]
    if not nights:
        return Markup("")
    left, right, top, bottom = 64, 16, 18, 52
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = []
    for h in nights:
        counts = h.get("counts") or {}
        totals.append(sum(int(counts.get(c.code) or 0) for c in CATEGORIES))
    y_max, step = _nice_ceiling(max(totals))
    band = plot_w / len(nights)
    bar_w = min(40.0, band * 0.72)
    scale = plot_h / y_max

    def y(v: float) -> float:
        return top + plot_h - v * scale

    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="trend-title"><title id="trend-title">'
        f"{escape('每晚发现数量趋势 / Findings per published night')}</title>",
    ]
    tick = 0.0
    while tick <= y_max + 1e-9:
        ty = y(tick)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}"/>'
            f'<text class="ylab" x="{left - 8}" y="{ty + 4:.1f}" text-anchor="end">{_fmt_int(tick)}</text>'
        )
        tick += step
    label_every = max(1, math.ceil(len(nights) / 16))
    for i, h in enumerate(nights):
        counts = h.get("counts") or {}
        night = str(h.get("night") or "")
        cx = left + band * i + band / 2
        x = cx - bar_w / 2
        acc = 0
        for c in CATEGORIES:
            v = int(counts.get(c.code) or 0)
            if v <= 0:
                continue
            y0, y1 = y(acc), y(acc + v)
            acc += v
            tip = f"{night} · {c.zh} / {c.en}: {v:,}"
            parts.append(
                f'<rect x="{x:.1f}" y="{y1:.1f}" width="{bar_w:.1f}" height="{max(y0 - y1, 0.5):.1f}" '
                f'fill="{c.colour}"><title>{escape(tip)}</title></rect>'
            )
        is_last = i == len(nights) - 1
        if len(nights) <= 31 and totals[i] > 0:
            parts.append(
                f'<text class="total" x="{cx:.1f}" y="{y(totals[i]) - 4:.1f}" text-anchor="middle">'
                f"{_fmt_int(totals[i])}</text>"
            )
        if i % label_every == 0 or is_last:
            label = night[5:] if len(night) == 10 else night
            cls = "xlab tonight" if is_last else "xlab"
            parts.append(
                f'<text class="{cls}" x="{cx:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
        outcome = str(h.get("outcome") or "")
        if outcome == "failed":
            parts.append(
                f'<circle class="failed" cx="{cx:.1f}" cy="{top + plot_h + 30}" r="4">'
                f"<title>{escape(f'{night} · 未通过 / failed')}</title></circle>"
            )
    parts.append(
        f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/></svg>'
    )
    return Markup("".join(parts))


def _sparkline(values: Sequence[int], colour: str, *, width: int = 96, height: int = 22) -> Markup:
    if len(values) < 2:
        return Markup("")
    hi = max(values) or 1
    pts = " ".join(
        f"{i * (width - 4) / (len(values) - 1) + 2:.1f},{height - 2 - v * (height - 4) / hi:.1f}"
        for i, v in enumerate(values)
    )
    last_x = width - 2
    last_y = height - 2 - values[-1] * (height - 4) / hi
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="spark" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-hidden="true"><polyline points="{pts}" fill="none" '
        f'stroke="{colour}" stroke-width="1.5"/><circle cx="{last_x}" cy="{last_y:.1f}" r="2" '
        f'fill="{colour}"/></svg>'
    )


def _text_colour(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5))

    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    lum = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
    return "#111827" if lum > 0.35 else "#ffffff"


# --------------------------------------------------------------------------- sections


def _short_json(value: Any, limit: int = 400) -> str:
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, ensure_ascii=False, sort_keys=True, default=_json_default)
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, name)
        else:
            yield name, value


def _cause_rows(summary: NightSummary) -> list[dict[str, Any]]:
    """Missing invoices per cause (MISSING_IN_REGISTRY, and PENDING_SYNC beside), the most serious first."""
    causes = list(MISSING_CAUSES) + sorted(
        c for c in {*summary.missing_by_cause, *summary.pending_by_cause} if c not in MISSING_CAUSES
    )
    rows = []
    for code in causes:
        missing, pending = summary.missing_by_cause.get(code, 0), summary.pending_by_cause.get(code, 0)
        if missing or pending:
            zh, en = MISSING_CAUSES.get(code, (code, code))
            rows.append(
                {
                    "code": code,
                    "zh": zh,
                    "en": en,
                    "missing": missing,
                    "pending": pending,
                    "serious": code == "uploaded_but_absent" and missing > 0,
                }
            )
    return rows


def _category_rows(summary: NightSummary, findings: pa.Table) -> list[dict[str, Any]]:
    counts = summary.counts
    previous = summary.counts_previous
    history = _history(summary)
    new_by_cat: dict[Any, int] = {}
    for row in _count_by(findings, ["category", "finding_status"]):
        if row["finding_status"] == "new":
            new_by_cat[row["category"]] = row["count_all"]
    table_counts = {r["category"]: r["count_all"] for r in _count_by(findings, ["category"])}
    codes = [c.code for c in CATEGORIES] + sorted(
        k for k in set(counts) | {k for k in table_counts if k is not None} if k not in CATEGORY_BY_CODE
    )
    top = max([counts.get(code, 0) for code in codes] + [1])
    rows = []
    for idx, code in enumerate(codes):
        cat = CATEGORY_BY_CODE.get(code)
        n = counts.get(code, 0)
        prev = None if previous is None else previous.get(code, 0)
        rows.append(
            {
                "code": code,
                "zh": cat.zh if cat else code,
                "en": cat.en if cat else code,
                "css": f"c{idx}" if cat else "cx",
                "count": n,
                "previous": prev,
                "delta": None if prev is None else n - prev,
                "new": new_by_cat.get(code, 0),
                "not_checked": code in summary.not_checked,
                "share": round(100 * n / top, 1),
                "spark": _sparkline(
                    [h["counts"].get(code, 0) for h in history], cat.colour if cat else "#6b7280"
                ),
                "table_count": table_counts.get(code, 0),
            }
        )
    return rows


def _source_breakdown(summary: NightSummary, findings: pa.Table) -> list[dict[str, Any]]:
    per: dict[Any, dict[str, int]] = {}
    for row in _count_by(findings, ["source_system", "category"]):
        per.setdefault(row["source_system"], {})[row["category"]] = row["count_all"]
    loaded: dict[Any, int] = {}
    kinds: dict[Any, str] = {}
    for src in summary.sources:
        name = src.source_system
        loaded[name] = src.rows_loaded
        kinds[name] = src.source_kind
        per.setdefault(name, {})
    rows = []
    for name, cats in per.items():
        total = sum(cats.values())
        rows.append(
            {
                "source": name,
                "kind": kinds.get(name, ""),
                "cells": [cats.get(c.code, 0) for c in CATEGORIES],
                "other": sum(v for k, v in cats.items() if k not in CATEGORY_BY_CODE),
                "total": total,
                "loaded": loaded.get(name),
                "rate": (f"{1000 * total / loaded[name]:.1f}" if loaded.get(name) else None),
            }
        )
    rows.sort(key=lambda r: (-r["total"], r["source"] is None, str(r["source"])))
    return rows


def _sources(summary: NightSummary) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    out = []
    grand = {"read": 0, "loaded": 0, "rejected": 0, "skipped": 0, "files": 0, "balanced": True}
    for src in summary.sources:
        files = [
            {
                **f.to_dict(),
                "read": f.rows_read,
                "loaded": f.rows_loaded,
                "rejected": f.rows_rejected,
                "skipped": f.rows_skipped,
                "balanced": f.balanced,
            }
            for f in src.files
        ]
        sums = [sum(f[k] for f in files) for k in ("read", "loaded", "rejected", "skipped")]
        files_match = not files or sums == [
            src.rows_read,
            src.rows_loaded,
            src.rows_rejected,
            src.rows_skipped,
        ]
        out.append(
            {
                "name": src.source_system,
                "kind": src.source_kind,
                "read": src.rows_read,
                "loaded": src.rows_loaded,
                "rejected": src.rows_rejected,
                "skipped": src.rows_skipped,
                "balanced": src.balanced,
                "files_match": files_match,
                "files": files,
            }
        )
        grand["read"] += src.rows_read
        grand["loaded"] += src.rows_loaded
        grand["rejected"] += src.rows_rejected
        grand["skipped"] += src.rows_skipped
        grand["files"] += len(files)
        grand["balanced"] = grand["balanced"] and src.balanced
    return out, grand


def _expectations(summary: NightSummary, mask: bool) -> tuple[list[dict[str, Any]], dict[str, int]]:
    exp = summary.expectations
    tally = {"total": 0, "passed": 0, "failed": 0, "error": 0}
    suites = []
    for suite in exp.get("suites") or []:
        results = []
        for r in suite.get("results") or []:
            state = "error" if r.get("error") else ("passed" if r.get("success") else "failed")
            tally["total"] += 1
            tally[state] += 1
            column = r.get("column")
            sample = [str(s) for s in (r.get("unexpected_sample") or [])[:20]]
            if mask:
                if column in masking.BUYER_FIELDS:
                    sample = [
                        str(masking.mask_record({"field": column, "issuer_value": s})["issuer_value"])
                        for s in sample
                    ]
                else:
                    sample = [masking.mask_free_text(s) or "" for s in sample]
            observed = r.get("observed_value")
            results.append(
                {
                    "expectation": r.get("expectation"),
                    "type": r.get("type"),
                    "column": column,
                    "state": state,
                    "error": r.get("error"),
                    "observed": None if observed is None else _short_json(observed),
                    "unexpected_count": r.get("unexpected_count"),
                    "sample": [s if len(s) <= 120 else s[:119] + "…" for s in sample],
                    "sample_more": max(0, len(r.get("unexpected_sample") or []) - 20),
                    "description": r.get("description"),
                }
            )
        parameters = suite.get("parameters") if isinstance(suite.get("parameters"), Mapping) else {}
        suites.append(
            {
                "suite": suite.get("suite"),
                "target": suite.get("target"),
                "success": bool(suite.get("success")),
                "results": results,
                "parameters": [(str(k), _short_json(v, 120)) for k, v in parameters.items()],
            }
        )
    return suites, tally


# --------------------------------------------------------------------------- rendering


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fapiao_audit", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["n"] = _fmt_int
    return env


@lru_cache(maxsize=4)
def _asset(name: str) -> str:
    return resources.files("fapiao_audit").joinpath("templates", name).read_text(encoding="utf-8")


def _csp(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    script_hash = base64.b64encode(digest).decode("ascii")
    return (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{script_hash}'; base-uri 'none'; form-action 'none'"
    )


def render_report_html(
    summary: NightSummary,
    findings: pa.Table,
    rejected: pa.Table,
    resolved: pa.Table,
    *,
    mask: bool = True,
    max_rows: int = 20000,
    lines: pa.Table | None = None,
    carried: pa.Table | None = None,
    gx_results: Mapping[str, Any] | None = None,
) -> str:
    """The night's report page as one HTML string (UTF-8 when written; no external resources).

    ``gx_results`` (publish.gx_results_digest) names the file beside the report holding GX's own
    validation results, with its counts; the report says where they are.

    ``findings`` / ``resolved`` / ``rejected`` are embedded up to ``max_rows`` rows each; the
    counts, breakdowns and charts always use all rows and ``summary``. With ``mask`` (the
    default), buyer names and individuals' tax ids are masked (see :mod:`fapiao_audit.masking`).
    """
    max_rows = max(0, int(max_rows))
    total = findings.num_rows
    shown = select_embedded_rows(findings, max_rows)
    resolved_shown = resolved.slice(0, max_rows)
    rejected_shown = rejected.slice(0, max_rows)

    category_rows = _category_rows(summary, findings)
    sources, grand = _sources(summary)
    suites, tally = _expectations(summary, mask)
    summary_total = summary.total_findings
    embedded_per_cat = {r["category"]: r["count_all"] for r in _count_by(shown, ["category"])}

    findings_payload = _table_payload(shown, _FINDINGS_VIEW, total=total, mask=mask, detail=_DETAIL_VIEW)
    findings_payload["categories"] = [
        {"code": r["code"], "css": r["css"], "zh": r["zh"], "en": r["en"]} for r in category_rows
    ]
    findings_payload["fields"] = FIELD_LABELS
    findings_payload["lines"] = _lines_payload(lines, shown)
    findings_payload["causes"] = {k: f"{zh} {en}" for k, (zh, en) in MISSING_CAUSES.items()}
    resolved_payload = _table_payload(
        resolved_shown, _RESOLVED_VIEW, total=resolved.num_rows, mask=mask, detail=_DETAIL_VIEW
    )
    resolved_payload["categories"] = findings_payload["categories"]
    resolved_payload["fields"] = FIELD_LABELS
    resolved_payload["causes"] = findings_payload["causes"]
    carried = carried if carried is not None else resolved.slice(0, 0)
    carried_shown = carried.slice(0, max_rows)
    carried_payload = _table_payload(
        carried_shown, _FINDINGS_VIEW, total=carried.num_rows, mask=mask, detail=_DETAIL_VIEW
    )
    for key in ("categories", "fields", "causes"):
        carried_payload[key] = resolved_payload[key]
    rejected_payload = _table_payload(rejected_shown, _REJECTED_VIEW, total=rejected.num_rows, mask=mask)

    by_source = _source_breakdown(summary, findings)
    source_names = sorted({r["source"] for r in by_source}, key=lambda s: (s is None, str(s)))
    config = summary.config
    config_rows = [
        {
            "key": k,
            "value": v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=_json_default),
        }
        for k, v in _flatten(config)
    ]
    r = summary.run
    run = {
        "run_id": r.run_id,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "duration_s": r.duration_s,
    }
    window = {"start": summary.window_start, "end": summary.window_end}
    outcome = summary.outcome
    history = _history(summary)
    out_of_scope = {"registry_other_sellers": summary.registry_other_sellers}
    scope = {
        "key_counts": list(summary.keys.items()),
        "out_of_window": summary.out_of_window,
    }
    script = _asset("report.js")

    context = {
        "as_of": summary.as_of,
        "night": summary.night,
        "outcome": outcome if outcome in ("passed", "failed") else "unknown",
        "outcome_raw": outcome,
        "run": run,
        "window": window,
        "previous_night": summary.previous_night,
        "total": summary_total,
        "table_total": total,
        "counts_consistent": summary_total == total
        and all(r["count"] == r["table_count"] for r in category_rows),
        "new": summary.new,
        "open": summary.open,
        "resolved_count": summary.resolved,
        "categories": category_rows,
        "causes": _cause_rows(summary),
        "warnings": list(summary.warnings),
        "unread_files": [replace(u, path=masking.mark_bidi(u.path)) for u in summary.unread_files],
        "category_defs": CATEGORIES,
        "category_css": [
            {"css": f"c{i}", "bg": c.colour, "fg": _text_colour(c.colour)} for i, c in enumerate(CATEGORIES)
        ],
        "history": history,
        "trend_svg": trend_svg(history),
        "by_source": by_source,
        "by_seller": _sellers(summary),
        "sources": sources,
        "grand": grand,
        "out_of_scope": out_of_scope,
        "scope": scope,
        "version": r.version,
        "suites": suites,
        "tally": tally,
        "gx_results": gx_results,
        "config_rows": config_rows,
        "field_labels": FIELD_LABELS,
        "mask": mask,
        "shown": shown.num_rows,
        "capped": shown.num_rows < total,
        "embedded_per_cat": embedded_per_cat,
        "resolved_shown": resolved_shown.num_rows,
        "resolved_total": resolved.num_rows,
        "rejected_shown": rejected_shown.num_rows,
        "rejected_total": rejected.num_rows,
        "source_names": source_names,
        "findings_view": _FINDINGS_VIEW,
        "resolved_view": _RESOLVED_VIEW,
        "rejected_view": _REJECTED_VIEW,
        "findings_json": json_for_script(findings_payload),
        "resolved_json": json_for_script(resolved_payload),
        "carried_json": json_for_script(carried_payload),
        "carried_shown": carried_shown.num_rows,
        "carried_total": carried.num_rows,
        "money": _money(summary),
        "open_items": _open_items_view(summary),
        "decision_problems": [
            {k: masking.mark_bidi(v) if isinstance(v, str) else v for k, v in p.items()}
            for p in (summary.decisions or {}).get("problems") or []
            if isinstance(p, dict)
        ],
        "decision_files": list((summary.decisions or {}).get("files_read") or []),
        "headline": _headline(summary),
        "rejected_json": json_for_script(rejected_payload),
        "css": Markup(_asset("report.css")),
        "script": Markup(script),
        "csp": _csp(script),
    }
    return _environment().get_template("report.html.j2").render(context)


def _yuan(value: Any) -> str:
    """Yuan with thousands separators and the fen: 12,345.60."""
    try:
        return f"{float(value):,.2f}"
    except (TypeError, ValueError):
        return "—"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _money(summary: NightSummary) -> dict[str, Any]:
    m = summary.amount_at_risk or {}
    by_cat = _dict(m.get("by_category"))
    by_source = _dict(m.get("by_source"))
    return {
        "total": _yuan(m.get("total")),
        "known": bool(m),
        "by_category": {str(k): _yuan(v) for k, v in by_cat.items()},
        "by_source": [(str(k), _yuan(v)) for k, v in by_source.items()],
    }


def _open_items_view(summary: NightSummary) -> dict[str, Any]:
    items = summary.open_items or {}
    aging = _dict(items.get("aging"))
    return {
        "known": bool(items),
        "total": int(items.get("total") or 0),
        "left_window": int(items.get("left_window") or 0),
        "not_checked": int(items.get("not_checked") or 0),
        "decided": int(items.get("decided") or 0),
        "reopened": int(items.get("reopened") or 0),
        "aging": [
            (
                name,
                int((aging.get(name) or {}).get("count") or 0),
                _yuan((aging.get(name) or {}).get("amount")),
            )
            for name, _lo, _hi in AGING_BUCKETS
        ],
    }


def _headline(summary: NightSummary) -> str:
    """The one line a reader needs first, in Chinese: new findings, the amount at risk, the worst source."""
    m = summary.amount_at_risk or {}
    by_source = _dict(m.get("by_source"))
    worst = next(iter(by_source.items()), None)
    items = summary.open_items or {}
    text = f"今晚新增 {summary.new:,} 项发现（共 {summary.total_findings:,} 项），涉及金额 {_yuan(m.get('total'))} 元"
    if worst:
        text += f"；涉及金额最大的来源：{worst[0]}（{_yuan(worst[1])} 元）"
    left = int(items.get("left_window") or 0)
    if left:
        text += f"；{left:,} 项离开窗口仍未解决"
    return text + "。"


def _history(summary: NightSummary) -> list[dict[str, Any]]:
    return [
        {"night": h.night, "outcome": h.outcome, "counts": dict(h.counts), "total": h.total}
        for h in summary.history
    ][-30:]


def _sellers(summary: NightSummary) -> list[dict[str, Any]]:
    top = max([s.findings for s in summary.by_seller] + [1])
    return [
        {
            "tax_id": s.seller_tax_id,
            "name": s.seller_name,
            "findings": s.findings,
            "amount": _yuan(s.amount_at_risk),
            "share": round(100 * s.findings / top, 1),
        }
        for s in summary.by_seller
    ]
