"""report.html and the masking rules behind it.

The structure of the page (sections, table headers, row counts, embedded data shape) is
compared with a JSON snapshot in ``tests/snapshots/``; regenerate it after an intended change
with ``FAPIAO_UPDATE_SNAPSHOTS=1 pytest tests/test_report.py`` and review the diff.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape

try:
    from report_fixtures import (
        CATEGORY_CODES,
        COMPANY_NAME,
        HOSTILE,
        PERSON_ID,
        PERSON_NAME,
        build_inputs,
        build_rejected,
        build_resolved,
        build_summary,
    )
except ImportError:  # tests/ imported as a package
    from tests.report_fixtures import (
        CATEGORY_CODES,
        COMPANY_NAME,
        HOSTILE,
        PERSON_ID,
        PERSON_NAME,
        build_inputs,
        build_rejected,
        build_resolved,
        build_summary,
    )

from fapiao_audit import masking
from fapiao_audit.model import CATEGORIES, NightSummary
from fapiao_audit.report import (
    fair_quotas,
    json_for_script,
    render_report_html,
    select_embedded_rows,
    trend_svg,
)

SNAPSHOT = Path(__file__).parent / "snapshots" / "report_structure.json"


class PageParser(HTMLParser):
    """Collects what the tests inspect: every tag's attributes, tables, sections, script blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.sections: list[str] = []
        self.headings: list[str] = []
        self.tables: list[dict[str, Any]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._stack: list[str] = []
        self._table: dict[str, Any] | None = None
        self._part = ""
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None
        self._script: tuple[dict[str, str | None], list[str]] | None = None
        self._section = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self._section = a.get("id") or ""
            self.sections.append(self._section)
        elif tag in ("h2", "h3"):
            self._heading = []
        elif tag == "table":
            self._table = {"id": a.get("id") or f"{self._section}/table", "headers": [], "rows": 0}
        elif tag in ("thead", "tbody", "tfoot"):
            self._part = tag
        elif tag == "tr" and self._table is not None and self._part == "tbody":
            self._table["rows"] += 1
        elif tag == "th" and self._table is not None and self._part == "thead":
            self._cell = []
        elif tag == "script":
            self._script = (a, [])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "h3") and self._heading is not None:
            self.headings.append(" ".join("".join(self._heading).split()))
            self._heading = None
        elif tag == "th" and self._cell is not None and self._table is not None:
            self._table["headers"].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table" and self._table is not None:
            self.tables.append(self._table)
            self._table = None
        elif tag == "script" and self._script is not None:
            self.scripts.append((self._script[0], "".join(self._script[1])))
            self._script = None

    def handle_data(self, data: str) -> None:
        for sink in (self._heading, self._cell):
            if sink is not None:
                sink.append(data)
        if self._script is not None:
            self._script[1].append(data)


def parse(html: str) -> PageParser:
    p = PageParser()
    p.feed(html)
    p.close()
    return p


def json_blocks(page: PageParser) -> dict[str, Any]:
    return {a["id"]: json.loads(body) for a, body in page.scripts if a.get("type") == "application/json"}


@pytest.fixture(scope="module")
def inputs():
    return build_inputs(60)


@pytest.fixture(scope="module")
def html(inputs) -> str:
    return render_report_html(*inputs)


@pytest.fixture(scope="module")
def page(html: str) -> PageParser:
    return parse(html)


# --------------------------------------------------------------------------- structure


def structure(page: PageParser) -> dict[str, Any]:
    blocks = json_blocks(page)
    return {
        "sections": page.sections,
        "headings": page.headings,
        "tables": page.tables,
        "data": {
            k: {"columns": [c["key"] for c in v["columns"]], "rows": len(v["rows"]), "total": v["total"]}
            for k, v in blocks.items()
        },
        "nav": [a.get("href") for tag, a in page.tags if tag == "a"],
    }


def test_structure_matches_snapshot(page: PageParser) -> None:
    got = structure(page)
    if os.environ.get("FAPIAO_UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(json.dumps(got, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        pytest.skip(f"snapshot written to {SNAPSHOT}; review and keep it")
    assert got == json.loads(SNAPSHOT.read_text(encoding="utf-8"))


def test_sections_and_counts(page: PageParser, html: str) -> None:
    assert page.sections == [
        "overview",
        "findings",
        "open-items",
        "resolved",
        "categories",
        "trend",
        "by-source",
        "by-seller",
        "inputs",
        "expectations",
        "rejected",
        "rules",
    ]
    tables = {t["id"]: t for t in page.tables}
    assert tables["categories-table"]["rows"] == len(CATEGORIES)
    assert tables["trend-table"]["rows"] == 30
    assert tables["rules-table"]["rows"] == len(CATEGORIES)
    assert "✗ 未通过 FAILED" in html
    for cat in CATEGORIES:
        assert f'{cat.zh}</span> <span class="en">{cat.en}' in html  # 缺失于税务系统 / Missing in registry
        assert str(escape(cat.rule_zh)) in html and str(escape(cat.rule_en)) in html
    blocks = json_blocks(page)
    assert len(blocks["findings-data"]["rows"]) == 60
    assert len(blocks["resolved-data"]["rows"]) == 5
    assert len(blocks["rejected-data"]["rows"]) == 6


def test_passed_banner_and_no_previous_night() -> None:
    summary, findings, rejected, resolved = build_inputs(20)
    summary = replace(summary, outcome="passed", previous_night=None, counts_previous=None)
    html = render_report_html(summary, findings, rejected, resolved)
    assert "✓ 通过 PASSED" in html and "outcome-passed" in html
    assert "No previous published night to compare with." in html


# --------------------------------------------------------------------------- safety


def test_hostile_values_never_appear_unescaped(html: str, page: PageParser) -> None:
    for hostile in HOSTILE:
        if any(ch in hostile for ch in "<>&"):
            assert hostile not in html, hostile
    assert "<script>alert" not in html and "<img" not in html and "<svg onload" not in html
    assert html.count("<script") == 4 and html.count("</script>") == 4
    assert "\u2028" not in html and "\u2029" not in html
    # Jinja syntax in data is data, not template code.
    assert "{{ 7*7 }}" in json.dumps(json_blocks(page)["findings-data"], ensure_ascii=False)
    # No event handler attribute anywhere, whatever the data held.
    for tag, attrs in page.tags:
        assert not [a for a in attrs if a.lower().startswith("on")], (tag, attrs)
        assert (
            tag not in ("img", "iframe", "object", "embed", "link")
            or tag == "link"
            and attrs.get("href") == "data:,"
        )


def test_hostile_values_survive_as_data(page: PageParser) -> None:
    """Escaping must not mangle: the JSON parses back to the exact hostile strings."""
    blocks = json_blocks(page)
    cells = {v for row in blocks["findings-data"]["rows"] for v in row if isinstance(v, str)}
    for hostile in HOSTILE:
        assert hostile in cells, hostile
    reasons = {row[5] for row in blocks["rejected-data"]["rows"]}
    assert "bad amount: <img src=x onerror=alert(1)>" in reasons


def test_no_external_urls(html: str, page: PageParser) -> None:
    for _tag, attrs in page.tags:
        for name in ("src", "href", "action", "formaction", "srcset", "poster", "data"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "ftp:", "file:")), (name, value)
            if name == "href" and value:
                assert value.startswith("#") or value == "data:,", value
            if name == "src":
                assert not value, "no element loads a source"
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//", html, re.I)
    assert "@import" not in html and not re.search(r"url\(\s*['\"]?(?!data:)", html)


def test_scripts_are_data_or_the_hashed_page_script(page: PageParser, html: str) -> None:
    code = [(a, body) for a, body in page.scripts if a.get("type") != "application/json"]
    assert len(code) == 1 and "src" not in code[0][0]
    digest = base64.b64encode(hashlib.sha256(code[0][1].encode()).digest()).decode()
    csp = next(
        a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    )
    assert f"script-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp
    assert (
        "innerHTML" not in code[0][1] and "insertAdjacentHTML" not in code[0][1] and "eval(" not in code[0][1]
    )


def test_masked_by_default(html: str, page: PageParser) -> None:
    assert PERSON_NAME not in html and PERSON_ID not in html
    blocks = json_blocks(page)
    text = json.dumps(blocks, ensure_ascii=False)
    assert "张**" in text and "1101**********1234" in text
    assert COMPANY_NAME in text, "company buyers stay readable"
    # The value inside the detail text is masked too.
    assert "购方名称不一致: 张** ≠ registry" in text
    # Expectation samples of buyer columns are masked, by column.
    assert '<code class="sample">张**</code>' in html


def test_unmasked_when_asked(inputs) -> None:
    html = render_report_html(*inputs, mask=False)
    assert PERSON_NAME in html and PERSON_ID in html
    assert "are masked on this page" not in html


def test_deterministic(inputs, html: str) -> None:
    assert render_report_html(*inputs) == html


# --------------------------------------------------------------------------- capping


def test_capped_page_says_so_and_keeps_every_category() -> None:
    summary, findings, rejected, resolved = build_inputs(200)
    html = render_report_html(summary, findings, rejected, resolved, max_rows=25)
    assert "Showing 25 of 200 findings; the full list is in exceptions.csv" in html
    assert "本页显示 25 / 200 条发现；完整清单见 exceptions.csv。" in html
    rows = json_blocks(parse(html))["findings-data"]["rows"]
    assert len(rows) == 25
    assert {r[0] for r in rows} == set(CATEGORY_CODES)


def test_not_capped_page_has_no_cap_message(html: str) -> None:
    assert "the full list is in exceptions.csv" not in html and 'id="findings-cap"' not in html


def test_select_embedded_rows_keeps_order_and_shares() -> None:
    cats = ["A"] * 100 + ["B"] * 3 + [None] * 2 + ["C"] * 50
    table = pa.table({"category": pa.array(cats, pa.string()), "n": pa.array(range(len(cats)))})
    got = select_embedded_rows(table, 20)
    assert got.num_rows == 20
    n = got.column("n").to_pylist()
    assert n == sorted(n)
    counts = {r["values"]: r["counts"] for r in pc.value_counts(got.column("category")).to_pylist()}
    assert counts == {"A": 8, "B": 3, None: 2, "C": 7}
    assert select_embedded_rows(table, 0).num_rows == 0
    assert select_embedded_rows(table, 10_000) is table


@given(
    st.lists(st.integers(min_value=0, max_value=500), max_size=12), st.integers(min_value=0, max_value=3000)
)
def test_fair_quotas_properties(counts: list[int], cap: int) -> None:
    q = fair_quotas(counts, cap)
    assert sum(q) == min(cap, sum(counts))
    assert all(0 <= qi <= ci for qi, ci in zip(q, counts, strict=True))
    # Max-min fair: a group that did not get all its rows got at least as many as any other, minus one.
    for qi, ci in zip(q, counts, strict=True):
        if qi < ci:
            assert all(qi >= qj - 1 for qj in q)


# --------------------------------------------------------------------------- edge inputs


def test_empty_night_renders() -> None:
    findings = build_inputs(0)[1]
    rejected, resolved = build_rejected(0), build_resolved(0)
    summary = build_summary(findings, rejected, resolved, history_nights=0, previous=False)
    summary = replace(summary, expectations={"success": True, "suites": []}, by_seller=(), config={})
    html = render_report_html(summary, findings, rejected, resolved)
    blocks = json_blocks(parse(html))
    assert blocks["findings-data"]["rows"] == [] and blocks["findings-data"]["total"] == 0
    assert "No history yet." in html and "No expectation results." in html


def test_minimal_summary_renders() -> None:
    findings = build_inputs(3)[1]
    html = render_report_html(
        NightSummary(night="2026-11-21"), findings, build_rejected(0), build_resolved(0)
    )
    assert "2026-11-21" in html and "? 未知" in html
    assert 'id="counts-warning"' in html  # summary holds no counts, the list holds 3


def test_count_mismatch_is_flagged(inputs) -> None:
    summary, findings, rejected, resolved = inputs
    assert 'id="counts-warning"' not in render_report_html(summary, findings, rejected, resolved)
    bad = replace(summary, total_findings=summary.total_findings + 1)
    assert 'id="counts-warning"' in render_report_html(bad, findings, rejected, resolved)


def test_unbalanced_file_is_flagged(inputs) -> None:
    summary, findings, rejected, resolved = inputs
    doc = json.loads(json.dumps(summary.to_dict()))
    doc["sources"][0]["files"][0]["rows_loaded"] -= 1
    bad = NightSummary.from_dict(doc)
    html = render_report_html(bad, findings, rejected, resolved)
    assert "✗ 不平衡 unbalanced" in html
    assert "✗ 不平衡 unbalanced" not in render_report_html(summary, findings, rejected, resolved)


def test_expectation_states_are_distinguished(html: str) -> None:
    assert html.count('<tr class="state-passed">') == 2
    assert html.count('<tr class="state-failed">') == 2
    assert html.count('<tr class="state-error">') == 1
    assert "Binder Error: &lt;b&gt;no such column&lt;/b&gt;" in html
    assert "&#34;element_count&#34;: 1000" in html  # observed value shown, escaped


def test_trend_svg_escapes_and_draws_every_night() -> None:
    history = [
        {
            "night": "<script>x</script>",
            "counts": {"MISSING_IN_REGISTRY": 3, "FIELD_MISMATCH": 2},
            "total": 5,
            "outcome": "failed",
        },
        {"night": "2026-11-21", "counts": {"MISSING_IN_REGISTRY": 1}, "total": 1, "outcome": "passed"},
    ]
    svg = str(trend_svg(history))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count("<rect") == 3 and svg.count('class="failed"') == 1
    assert str(trend_svg([])) == ""


# --------------------------------------------------------------------------- JSON embedding


@settings(max_examples=300)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_json_for_script_is_inert_and_round_trips(value: Any) -> None:
    text = str(json_for_script(value))
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    assert json.loads(text) == value


# --------------------------------------------------------------------------- masking


def test_mask_tax_id() -> None:
    assert masking.mask_tax_id("110101199003071234") == "1101**********1234"
    assert masking.mask_tax_id("911101080000000082Q") == "9111***********082Q"
    assert masking.mask_tax_id("12345678") == "********"
    assert masking.mask_tax_id("123456789") == "1234*6789"
    assert masking.mask_tax_id("") == "" and masking.mask_tax_id(None) is None


def test_mask_name() -> None:
    assert masking.mask_name("张三") == "张*"
    assert masking.mask_name("张三丰") == "张**"
    assert masking.mask_name("北京某某") == "北***"
    assert masking.mask_name("王") == "*"
    assert masking.mask_name(" 李四") == " 李*"
    assert masking.mask_name("") == "" and masking.mask_name(None) is None


@pytest.mark.parametrize(
    ("tax_id", "name", "expected"),
    [
        ("", "张三", True),
        (None, None, True),
        ("110101199003071234", None, True),
        ("11010119900307123X", "北京某某有限公司", True),  # a person's id wins over the name
        ("91110108MA01ABCD2X", None, False),
        ("91110108MA01ABCD2X", "北京某某科技有限公司", False),
        (None, "北京某某科技有限公司", False),
        ("", "海淀区某某小吃店", False),
        (None, "北京大学", False),
        (None, "Acme Trading Co., Ltd.", False),
        (None, "李雷", True),
        (None, "John Smith", True),
        ("９１１１０１０８ＭＡ０１ＡＢＣＤ２Ｘ", None, False),  # full-width is normalised first
    ],
)
def test_is_individual(tax_id: str | None, name: str | None, expected: bool) -> None:
    assert masking.is_individual(tax_id, name) is expected


def test_mask_record_rules() -> None:
    person = masking.mask_record(
        {
            "field": "buyer_name",
            "issuer_value": "张三丰",
            "registry_value": "北京某某有限公司",
            "detail": "张三丰 vs 北京某某有限公司",
        }
    )
    assert person == {
        "field": "buyer_name",
        "issuer_value": "张**",
        "registry_value": "北京某某有限公司",
        "detail": "张** vs 北京某某有限公司",
    }
    ids = masking.mask_record(
        {
            "field": "buyer_tax_id",
            "issuer_value": "110101199003071234",
            "registry_value": "91110108MA01ABCD2X",
        }
    )
    assert ids["issuer_value"] == "1101**********1234" and ids["registry_value"] == "91110108MA01ABCD2X"
    other = masking.mask_record(
        {"field": "amount", "issuer_value": "张三", "detail": "id 110101199003071234."}
    )
    assert other["issuer_value"] == "张三" and other["detail"] == "id 1101**********1234."
    buyer_cols = masking.mask_record({"buyer_name": "李四", "buyer_tax_id": "", "remark": "给李四"})
    assert buyer_cols == {"buyer_name": "李*", "buyer_tax_id": "", "remark": "给李*"}
    company = masking.mask_record({"buyer_name": "某某有限公司", "buyer_tax_id": "91110108MA01ABCD2X"})
    assert company == {"buyer_name": "某某有限公司", "buyer_tax_id": "91110108MA01ABCD2X"}


def test_mask_free_text_leaves_invoice_numbers_alone() -> None:
    text = "号码 26110000000012345678, 代码-号码 011001900001-00000001, USCC 911101080000000082"
    assert masking.mask_free_text(text) == text


def test_mask_raw_line() -> None:
    raw = "00000001,张三丰,110101199003071234,北京某某科技有限公司,正常,数电票（普通发票）"
    assert (
        masking.mask_raw_line(raw)
        == "00000001,张**,1101**********1234,北京某某科技有限公司,正常,数电票（普通发票）"
    )


@given(st.text(min_size=0, max_size=40))
def test_mask_tax_id_properties(s: str) -> None:
    m = masking.mask_tax_id(s)
    assert len(m) == len(s)
    if len(s) > 8:
        assert m[:4] == s[:4] and m[-4:] == s[-4:] and set(m[4:-4]) <= {"*"}
    else:
        assert set(m) <= {"*"}


@given(st.text(min_size=1, max_size=20))
def test_mask_name_properties(s: str) -> None:
    m = masking.mask_name(s)
    assert len(m) == len(s)
    visible = [c for c, o in zip(m, s, strict=True) if c == o and c != "*" and not c.isspace()]
    assert len(visible) <= 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=4))
def test_any_text_is_embedded_inertly(texts: list[str]) -> None:
    """Whatever the data holds, it comes back verbatim from the JSON and adds no markup."""
    summary, findings, rejected, resolved = build_inputs(len(texts))
    table = findings.set_column(findings.column_names.index("detail"), "detail", pa.array(texts, pa.string()))
    html = render_report_html(summary, table, rejected, resolved, mask=False)
    assert html.count("<script") == 4 and html.count("</script") == 4
    block = json_blocks(parse(html))["findings-data"]
    at = [c["key"] for c in block["columns"]].index("detail")
    assert sorted(r[at] for r in block["rows"]) == sorted(texts)


def test_lines_of_shown_invoices_are_embedded_as_evidence() -> None:
    summary, findings, rejected, resolved = build_inputs(30)
    keys = findings.column("invoice_key").to_pylist()
    lines = pa.table(
        {
            "invoice_key": [keys[0], keys[0], "not-a-finding"],
            "source_system": ["registry", "registry", "registry"],
            "line": [2, 3, 4],
            "item_name": ["*计算机*鼠标", "<img src=x onerror=alert(1)>", "x"],
            "quantity": ["10", None, "1"],
            "unit_price": ["80", None, "1"],
            "amount": ["800.00", "-200.00", "1.00"],
            "tax_rate": ["0.1300", "0.1300", "0.1300"],
            "tax_amount": ["104.00", "-26.00", "0.13"],
        }
    )
    html = render_report_html(summary, findings, rejected, resolved, lines=lines)
    spec = json_blocks(parse(html))["findings-data"]["lines"]
    assert [c["key"] for c in spec["columns"]][:3] == ["source_system", "line", "item_name"]
    assert spec["by_key"] == {
        keys[0]: [
            ["registry", "2", "*计算机*鼠标", "10", "80", "800.00", "0.1300", "104.00"],
            ["registry", "3", "<img src=x onerror=alert(1)>", None, None, "-200.00", "0.1300", "-26.00"],
        ]
    }
    assert "<img src=x" not in html  # the hostile item name is escaped inside the JSON block
    assert (
        json_blocks(parse(render_report_html(summary, findings, rejected, resolved)))["findings-data"][
            "lines"
        ]["by_key"]
        == {}
    )
