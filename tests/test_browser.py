"""report.html in a real browser: Debian's headless Chromium over the DevTools protocol.

The protocol runs over ``--remote-debugging-pipe`` (file descriptors 3 and 4), so no port is
opened and nothing beyond the standard library is needed. The tests check what unit tests of
the HTML text cannot: the page's script runs without errors under its own
Content-Security-Policy, it makes no request besides loading itself, and filtering works.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

try:
    from report_fixtures import (
        CATEGORY_CODES,
        HOSTILE,
        big_findings,
        build_inputs,
        build_rejected,
        build_resolved,
        build_summary,
    )
except ImportError:  # tests/ imported as a package
    from tests.report_fixtures import (
        CATEGORY_CODES,
        HOSTILE,
        big_findings,
        build_inputs,
        build_rejected,
        build_resolved,
        build_summary,
    )

from fapiao_audit.model import REPORT_COLUMNS, REPORT_DETAIL_COLUMNS
from fapiao_audit.report import render_report_html

CHROMIUM = os.environ.get("FAPIAO_CHROMIUM", "/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-sync",
    "--mute-audio",
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)),
        reason=f"Chromium not found at {CHROMIUM} (CI installs Debian's 'chromium' package; "
        "set FAPIAO_CHROMIUM to use another binary)",
    ),
]


def _above_4(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    """A minimal Chrome DevTools Protocol client over the debugging pipe."""

    def __init__(self, user_data_dir: Path, *, width: int = 1366, height: int = 900) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Move the child's ends above 4 so that wiring them to 3 and 4 cannot clobber one another.
        to_chrome_r, from_chrome_w = _above_4(to_chrome_r), _above_4(from_chrome_w)

        def wire_pipes() -> None:  # runs in the child: the protocol reads fd 3 and writes fd 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={user_data_dir}",
                f"--window-size={width},{height}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes,
            close_fds=False,  # fds 3 and 4 made by dup2 must survive; Python's own fds are non-inheritable
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None
        target = self.call("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        self.session = self.call(
            "Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True
        )["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the debugging pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False, timeout: float = 60
    ) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session and not browser:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event["method"] == method:
                return event
        while True:
            event = self._read_message(deadline)
            if "method" in event:
                self.events.append(event)
                if event["method"] == method:
                    return event

    def open(self, url: str) -> float:
        """Navigate and wait for the load event; returns the seconds it took."""
        self.events.clear()
        started = time.monotonic()
        self.call("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired", timeout=120)
        return time.monotonic() - started

    def js(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.js("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", params)["data"]))
        return path

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions, CSP violations and failed loads seen so far."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append(json.dumps(p.get("exceptionDetails", {}))[:500])
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in (
                "error",
                "assert",
                "warning",
            ):
                out.append(json.dumps(p.get("args", []))[:500])
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                out.append(p["entry"].get("text", "")[:500])
            elif e["method"] == "Network.loadingFailed":
                out.append(f"loading failed: {p.get('errorText')}")
        return out

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"
        ]

    def close(self) -> None:
        try:
            self.call("Browser.close", browser=True, timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    summary, findings, rejected, resolved = build_inputs(250)
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_report_html(summary, findings, rejected, resolved), encoding="utf-8")
    return path


@pytest.fixture()
def browser(tmp_path: Path):
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def visible_rows(b: Browser) -> list[str]:
    """Category codes of the findings rows on the current page."""
    return b.js(
        "Array.from(document.querySelectorAll('#findings-table tbody tr.row td.k-category span'))"
        ".map(s => s.title.split(' ')[0])"
    )


def test_page_loads_without_errors_or_requests(browser: Browser, report_file: Path, tmp_path: Path) -> None:
    url = report_file.as_uri()
    browser.open(url)
    assert browser.js("document.documentElement.getAttribute('data-ready')") == "1"
    assert browser.errors() == []
    assert browser.requests() == [url], "the page must load nothing but itself"
    # The first page of findings is drawn from the embedded JSON, 100 rows a page.
    assert len(visible_rows(browser)) == 100
    assert browser.js("document.getElementById('findings-view').getAttribute('data-matching')") == "250"
    # Hostile data shows as text: no element came out of it, the text is there verbatim.
    assert browser.js("document.querySelectorAll('img, iframe, object, embed, svg[onload]').length") == 0
    assert browser.js("document.querySelectorAll('script').length") == 4
    assert browser.js("window.__xss === undefined")
    texts = browser.js("document.getElementById('findings-table').innerText")
    assert "<script>alert(1)</script>" in texts or HOSTILE[0] in json.dumps(texts)
    # Fits a 1366-wide window: only the wide tables scroll, inside their own box.
    assert browser.js("document.documentElement.scrollWidth") <= 1366
    shot = browser.screenshot(tmp_path / "report.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")


def test_filter_by_category_search_and_paging(browser: Browser, report_file: Path, tmp_path: Path) -> None:
    browser.open(report_file.as_uri())
    assert len(visible_rows(browser)) == 100
    browser.js("""(() => { const s = document.querySelector('#findings-view select[data-filter=category]');
                 s.value = 'REGISTRY_RISK'; s.dispatchEvent(new Event('change')); })()""")
    rows = visible_rows(browser)
    assert 0 < len(rows) < 100
    assert set(rows) == {"REGISTRY_RISK"}
    assert browser.js("location.hash") == "#cat=REGISTRY_RISK"

    # Free text narrows further; searching for a hostile string finds it as text.
    browser.js("""(() => { const s = document.querySelector('#findings-view select[data-filter=category]');
                 s.value = ''; s.dispatchEvent(new Event('change'));
                 const q = document.querySelector('#findings-view input[data-filter=q]');
                 q.value = 'onerror'; q.dispatchEvent(new Event('input')); })()""")
    time.sleep(0.4)
    matching = int(browser.js("document.getElementById('findings-view').getAttribute('data-matching')"))
    assert 0 < matching < 250
    cells = browser.js(
        "Array.from(document.querySelectorAll('#findings-table tbody tr.row')).map(r => r.textContent)"
    )
    assert all("onerror" in c for c in cells)

    # Paging.
    browser.js("document.querySelector('#findings-view [data-action=reset]').click()")
    browser.js("document.querySelector('#findings-view [data-action=next]').click()")
    assert browser.js("document.getElementById('findings-view').getAttribute('data-page')") == "2"
    assert len(visible_rows(browser)) == 100
    browser.js("document.querySelector('#findings-view [data-action=last]').click()")
    assert len(visible_rows(browser)) == 50

    # A row opens its details (as text).
    browser.js("document.querySelector('#findings-table tbody tr.row').click()")
    # every column of the finding, those of the table and those shown only here
    assert browser.js("document.querySelectorAll('#findings-table tr.detail dd').length") == len(
        REPORT_COLUMNS
    ) + len(REPORT_DETAIL_COLUMNS)
    assert browser.errors() == []
    browser.screenshot(tmp_path / "filtered.png")


def amounts_shown(b: Browser) -> list[float]:
    return b.js(
        "Array.from(document.querySelectorAll('#findings-table tbody tr.row td.k-money'))"
        ".map(td => parseFloat(td.textContent.replace(/,/g, '')))"
    )


def test_sort_by_amount_and_filter_by_amount_and_age(browser: Browser, report_file: Path) -> None:
    """A clerk puts the 50,000-yuan invoice before the 12-yuan one, and narrows to large or old items."""
    browser.open(report_file.as_uri())
    browser.js("""(() => { const s = document.querySelector('#findings-view select[data-sort]');
                 s.value = 'amount_at_risk'; s.dispatchEvent(new Event('change')); })()""")
    shown = amounts_shown(browser)
    assert len(shown) == 100 and shown == sorted(shown, reverse=True) and shown[0] > shown[-1]
    browser.js("""(() => { const s = document.querySelector('#findings-view select[data-filter=min_amount]');
                 s.value = '10000'; s.dispatchEvent(new Event('change')); })()""")
    assert all(a >= 10000 for a in amounts_shown(browser)) and amounts_shown(browser)
    assert browser.js("location.hash").startswith("#amt=10000")
    browser.js("""(() => { const s = document.querySelector('#findings-view select[data-filter=min_amount]');
                 s.value = ''; s.dispatchEvent(new Event('change'));
                 const a = document.querySelector('#findings-view select[data-filter=age]');
                 a.value = '3-7'; a.dispatchEvent(new Event('change')); })()""")
    ages = browser.js(
        "Array.from(document.querySelectorAll('#findings-table tbody tr.row td.k-num'))"
        ".map(td => parseInt(td.textContent, 10))"
    )
    assert ages and all(3 <= a <= 7 for a in ages)
    # A case id shows the case's findings together.
    browser.js("document.querySelector('#findings-view [data-action=reset]').click()")
    case = browser.js("document.querySelector('#findings-table button.case-link').textContent")
    browser.js("document.querySelector('#findings-table button.case-link').click()")
    cases = browser.js(
        "Array.from(document.querySelectorAll('#findings-table button.case-link')).map(b => b.textContent)"
    )
    assert cases and set(cases) == {case}
    assert browser.errors() == []


@pytest.mark.parametrize("width", [1400, 390])
def test_layout_puts_the_findings_first_at_desktop_and_phone_widths(tmp_path: Path, width: int) -> None:
    """The one-line summary and the figures on top, the findings right after; nothing wider than the screen."""
    summary, findings, rejected, resolved = build_inputs(250)
    path = tmp_path / "report.html"
    path.write_text(render_report_html(summary, findings, rejected, resolved), encoding="utf-8")
    b = Browser(tmp_path / "profile", width=width, height=900)
    try:
        b.open(path.as_uri())
        top = {
            s: b.js(f"document.getElementById('{s}').getBoundingClientRect().top + window.scrollY")
            for s in ("headline", "findings", "categories", "by-seller", "expectations")
        }
        assert top["headline"] < top["findings"] < top["categories"] < top["by-seller"] < top["expectations"]
        assert top["headline"] < 900, "the one-line summary is on the first screen"
        assert "涉及金额" in b.js("document.getElementById('headline').textContent")
        assert b.js("document.documentElement.scrollWidth") <= width, "no sideways scrolling of the page"
        # Long text wraps in the findings table instead of being cut.
        assert (
            b.js("getComputedStyle(document.querySelector('#findings-table td.k-long')).whiteSpace")
            == "normal"
        )
        b.screenshot(tmp_path / f"layout-{width}.png")
        assert b.errors() == []
    finally:
        b.close()


def test_a_finding_shows_its_invoice_lines(browser: Browser, tmp_path: Path) -> None:
    summary, findings, rejected, resolved = build_inputs(20)
    first = findings.slice(0, 1).to_pylist()[0]
    lines = pa.table(
        {
            "invoice_key": [first["invoice_key"]] * 2,
            "source_system": ["registry", "erp"],
            "line": [2, 3],
            "item_name": ["<b>鼠标</b>", "键盘"],
            "quantity": ["1", "2"],
            "unit_price": ["5", "6"],
            "amount": ["5.00", "12.00"],
            "tax_rate": ["0.1300", "0.1300"],
            "tax_amount": ["0.65", "1.56"],
        }
    )
    path = tmp_path / "lines.html"
    path.write_text(render_report_html(summary, findings, rejected, resolved, lines=lines), encoding="utf-8")
    browser.open(path.as_uri())
    browser.js("document.querySelector('#findings-table tbody tr.row').click()")
    assert (
        browser.js("document.querySelectorAll('#findings-table tr.detail table.lines tbody tr').length") == 2
    )
    assert "<b>鼠标</b>" in browser.js(
        "document.querySelector('#findings-table tr.detail table.lines').innerText"
    )
    assert browser.js("document.querySelectorAll('#findings-table tr.detail table.lines b').length") == 0
    assert browser.errors() == []


def test_url_hash_selects_category_on_open(browser: Browser, report_file: Path) -> None:
    browser.open(report_file.as_uri() + "#cat=MISSING_IN_REGISTRY&q=")
    rows = visible_rows(browser)
    assert rows and set(rows) == {"MISSING_IN_REGISTRY"}
    assert len(rows) == 25  # 250 fixture rows over 10 categories
    assert (
        browser.js("document.querySelector('#findings-view select[data-filter=category]').value")
        == "MISSING_IN_REGISTRY"
    )
    # Changing the hash later (a shared link, the category table) re-filters.
    browser.js("location.hash = 'cat=FIELD_MISMATCH'")
    time.sleep(0.3)
    assert set(visible_rows(browser)) == {"FIELD_MISMATCH"}
    assert browser.errors() == []


def test_dump_dom_honours_hash(report_file: Path, tmp_path: Path) -> None:
    """The same through plain ``--dump-dom``: the simplest check a CI job can also run by hand."""
    out = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            report_file.as_uri() + "#cat=ORPHAN_RED_INVOICE",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert 'data-matching="25"' in out
    table = out[out.index('id="findings-table"') :]
    table = table[: table.index("</table>")]
    assert table.count('class="row"') == 25
    for code in CATEGORY_CODES:
        assert (f'title="{code} ' in table) == (code == "ORPHAN_RED_INVOICE")


def test_million_findings_page_stays_small_and_opens_fast(browser: Browser, tmp_path: Path) -> None:
    """A night with 1,000,000 findings: the page embeds 20,000 and still opens in about a second."""
    findings = big_findings(1_000_000)
    rejected, resolved = build_rejected(200), build_resolved(50)
    started = time.perf_counter()
    html = render_report_html(build_summary(findings, rejected, resolved), findings, rejected, resolved)
    render_s = time.perf_counter() - started
    path = tmp_path / "report.html"
    path.write_text(html, encoding="utf-8")
    size = path.stat().st_size
    open_s = browser.open(path.as_uri())
    print(f"1,000,000 findings: render {render_s:.2f} s, page {size:,} bytes, open {open_s:.2f} s")
    assert "Showing 20,000 of 1,000,000 findings; the full list is in exceptions.csv" in html
    assert size < 8_000_000
    assert open_s < 15
    assert browser.js("document.getElementById('findings-view').getAttribute('data-matching')") == "20000"
    assert len(visible_rows(browser)) == 100
    assert browser.errors() == [] and browser.requests() == [path.as_uri()]
