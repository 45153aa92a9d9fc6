"""``<reports>/index.html``: every published night on one page, newest first, rewritten with each publish.

A night's row comes from its own ``summary.json`` (date, outcome, findings, new, resolved, open items,
amount at risk) and links to its report and workbook. The page is self-contained (no network fetch),
every value is escaped, and it is replaced atomically: a reader sees the old page or the new one.
"""

from __future__ import annotations

import json
import os
from datetime import date
from html import escape
from pathlib import Path
from typing import Any

INDEX_NAME = "index.html"

_CSS = """
body{font-family:system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;margin:0;padding:16px;
color:#111827;background:#f9fafb}
h1{font-size:1.3rem;margin:0 0 12px}
p.lead{margin:0 0 16px;color:#374151}
.wrap{overflow-x:auto;background:#fff;border:1px solid #e5e7eb;border-radius:8px}
table{border-collapse:collapse;width:100%;font-size:.92rem}
th,td{padding:8px 10px;border-bottom:1px solid #e5e7eb;text-align:left;white-space:nowrap}
th{background:#1f2937;color:#fff;font-weight:600;position:sticky;top:0}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.passed{color:#15803d;font-weight:600}.failed{color:#b91c1c;font-weight:600}.unknown{color:#6b7280}
a{color:#1d4ed8}
@media (max-width:600px){body{padding:8px}th,td{padding:6px}.opt{display:none}}
"""

_OUTCOME = {"passed": "通过 passed", "failed": "未通过 failed"}


def _summary(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _yuan(v: Any) -> str:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return f"{v:,.2f}"
    return "—"


def night_rows(reports: Path, nights: list[date]) -> list[dict[str, Any]]:
    """One row per night, newest first, from each night's summary.json."""
    rows = []
    for night in sorted(nights, reverse=True):
        s = _summary(reports / night.isoformat())
        money_value, items_value = s.get("amount_at_risk"), s.get("open_items")
        money: dict[str, Any] = money_value if isinstance(money_value, dict) else {}
        items: dict[str, Any] = items_value if isinstance(items_value, dict) else {}
        rows.append(
            {
                "night": night.isoformat(),
                "outcome": s.get("outcome") if s.get("outcome") in _OUTCOME else "unknown",
                "findings": _int(s.get("total_findings")),
                "new": _int(s.get("new")),
                "resolved": _int(s.get("resolved")),
                "open_items": _int(items.get("total")),
                "left_window": _int(items.get("left_window")),
                "amount_at_risk": money.get("total"),
            }
        )
    return rows


def render_index(rows: list[dict[str, Any]]) -> str:
    def num(v: int | None) -> str:
        return "—" if v is None else f"{v:,}"

    body = []
    for r in rows:
        n = escape(r["night"])
        outcome = r["outcome"]
        body.append(
            f'<tr><td><a href="{n}/report.html">{n}</a></td>'
            f'<td class="{outcome}">{escape(_OUTCOME.get(outcome, "未知 unknown"))}</td>'
            f'<td class="n">{num(r["findings"])}</td><td class="n">{num(r["new"])}</td>'
            f'<td class="n opt">{num(r["resolved"])}</td><td class="n">{num(r["open_items"])}</td>'
            f'<td class="n opt">{num(r["left_window"])}</td><td class="n">{_yuan(r["amount_at_risk"])}</td>'
            f'<td class="opt"><a href="{n}/exceptions.xlsx">xlsx</a> · <a href="{n}/exceptions.csv">csv</a></td></tr>'
        )
    latest = rows[0] if rows else None
    lead = (
        f"最新一晚 {escape(latest['night'])}：{num(latest['findings'])} 项发现，涉及金额 {_yuan(latest['amount_at_risk'])} 元"
        if latest
        else "尚无已发布的夜间结果 No night published yet"
    )
    return (
        '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>发票核对 · 各晚结果 Fapiao audit nights</title><style>{_CSS}</style></head><body>"
        "<h1>发票核对 · 各晚结果 <small>Fapiao audit nights</small></h1>"
        f'<p class="lead">{lead}</p><div class="wrap"><table><thead><tr>'
        "<th>业务日期 Night</th><th>结果 Outcome</th><th>发现 Findings</th><th>新增 New</th>"
        '<th class="opt">已解决 Resolved</th><th>未结 Open items</th><th class="opt">离开窗口 Left window</th>'
        '<th>涉及金额(元) At risk</th><th class="opt">清单 Lists</th></tr></thead><tbody>'
        + "".join(body)
        + "</tbody></table></div></body></html>\n"
    )


def write_index(reports: Path, nights: list[date]) -> Path:
    """Rewrite ``<reports>/index.html`` atomically (a temp file in the same folder, then a rename)."""
    final = reports / INDEX_NAME
    tmp = reports / f".{INDEX_NAME}.tmp-{os.getpid()}"
    with tmp.open("w", encoding="utf-8") as f:
        f.write(render_index(night_rows(reports, nights)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final
