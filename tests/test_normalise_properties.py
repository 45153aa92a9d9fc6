"""Property tests: a value and its cosmetic variants normalise to the same thing.

Runs the real normalisation statement (sql/ingest.sql) on one-row inputs, so what is tested is
what ingest does.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fapiao_audit.config import Config
from fapiao_audit.db import connect, execute_sql, named_sql
from fapiao_audit.ingest import _VOCABULARY, ALIASES, _install_macros

COLUMNS = list(ALIASES)


@pytest.fixture(scope="module")
def norm():
    con = connect(":memory:", Config())
    _install_macros(con)

    def run_many(rows: list[dict[str, str | None]]) -> list[dict]:
        """Normalise several one-column rows in one statement; results in input order."""
        con.execute(
            "CREATE OR REPLACE TEMP TABLE prop_in (__line BIGINT, "
            + ", ".join(f"{c} VARCHAR" for c in COLUMNS)
            + ", first_cell VARCHAR)"
        )
        con.executemany(
            "INSERT INTO prop_in VALUES (?, " + ", ".join("?" for _ in COLUMNS) + ", NULL)",
            [[i, *(r.get(c) for c in COLUMNS)] for i, r in enumerate(rows)],
        )
        con.execute("CREATE OR REPLACE TEMP VIEW ing_mapped AS SELECT * FROM prop_in")
        execute_sql(con, named_sql("ingest.sql", "normalize"), {"role": "invoices", **_VOCABULARY})
        cur = con.execute("SELECT * FROM ing_norm ORDER BY __line")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def run(**values: str | None) -> dict:
        return run_many([values])[0]

    run.many = run_many
    yield run
    con.close()


FULLWIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)})
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

amounts = st.decimals(min_value=Decimal("-99999999.99"), max_value=Decimal("99999999.99"), places=2)


def grouped(d: Decimal) -> str:
    return f"{d:,.2f}"


@PROPS
@given(amount=amounts, pad=st.sampled_from(["", " ", "  ", "\u3000", "\t"]))
def test_amount_variants_are_equal(norm, amount, pad):
    plain = norm(amount=str(amount))["amount"]
    assert plain == amount
    variants = [
        grouped(amount),  # 1,234.50
        str(amount).translate(FULLWIDTH),  # full-width digits
        pad + str(amount) + pad,  # spaced
        repr(float(amount)),  # float noise: 1234.5 or 1234.4999999999998
        "¥" + grouped(amount) if amount >= 0 else grouped(amount),
    ]
    got = norm.many([{"amount": v} for v in variants])
    assert [g["amount"] for g in got] == [amount] * len(variants), variants


@PROPS
@given(digits=st.text(alphabet="0123456789", min_size=8, max_size=20))
def test_identifier_variants_keep_leading_zeros(norm, digits):
    base = norm(invoice_number=digits)["invoice_number"]
    assert base == digits  # text, leading zeros kept
    variants = [
        digits.translate(FULLWIDTH),
        f" {digits} ",
        f'="{digits}"',
        f"'{digits}",
        digits[:4] + " " + digits[4:],
    ]
    got = norm.many([{"invoice_number": v} for v in variants])
    assert [g["invoice_number"] for g in got] == [digits] * len(variants), variants


@PROPS
@given(
    rate=st.sampled_from(
        [Decimal("0.13"), Decimal("0.09"), Decimal("0.06"), Decimal("0.03"), Decimal("0.01")]
    )
)
def test_rate_spellings(norm, rate):
    pct = (rate * 100).normalize()
    variants = [str(rate), f"{pct}%", str(pct), f"{pct}％", repr(float(rate) + 1e-12)]
    got = norm.many([{"tax_rate": v} for v in variants])
    assert [g["tax_rate"] for g in got] == [rate] * len(variants), variants


@PROPS
@given(
    day=st.dates(
        min_value=__import__("datetime").date(2020, 1, 1), max_value=__import__("datetime").date(2030, 12, 31)
    ),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
)
def test_time_spellings_are_beijing_time(norm, day, hour, minute):
    from datetime import datetime, timedelta

    local = datetime(day.year, day.month, day.day, hour, minute)
    utc = local - timedelta(hours=8)
    variants = [
        local.strftime("%Y-%m-%d %H:%M:%S"),
        f"{local.year}/{local.month}/{local.day} {local.hour}:{local.minute:02d}",
        local.strftime("%Y-%m-%dT%H:%M:%S+08:00"),
        utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        utc.strftime("%Y-%m-%d %H:%M:%S+00:00"),
        local.strftime("%Y-%m-%d %H:%M:%S").translate(FULLWIDTH),
    ]
    got = norm.many([{"issue_time": v} for v in variants])
    assert [g["issue_time"] for g in got] == [local] * len(variants), variants


@PROPS
@given(
    name=st.text(alphabet="北京甲乙丙科技贸易有限公司ABC()", min_size=1, max_size=20)
    .map(str.strip)
    .filter(bool)
)
def test_name_variants(norm, name):
    base = norm(buyer_name=name)["buyer_name"]
    fw = name.replace("(", "（").replace(")", "）")
    variants = [fw, f"  {name} ", name.translate(FULLWIDTH)]
    got = norm.many([{"buyer_name": v} for v in variants])
    assert [g["buyer_name"] for g in got] == [base] * len(variants), variants


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("正常", "normal"),
        ("作废", "voided"),
        ("已作废", "voided"),
        ("红冲", "red_reversed"),
        ("已红冲", "red_reversed"),
        ("全额红冲", "red_reversed"),
        ("部分红冲", "partly_red_reversed"),
        ("失控", "out_of_control"),
        ("异常", "abnormal"),
        ("Voided", "voided"),
        (" out_of_control ", "out_of_control"),
        ("", "normal"),
        (None, "normal"),
    ],
)
def test_status_enum(norm, raw, status):
    assert norm(status=raw)["status"] == status


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("数电票（增值税专用发票）", "digital_special"),
        ("数电票(普通发票)", "digital_normal"),
        ("增值税电子普通发票", "electronic_normal"),
        ("增值税专用发票", "paper_special"),
        ("增值税电子专用发票", "electronic_special"),
        ("digital_normal", "digital_normal"),
    ],
)
def test_invoice_type_enum(norm, raw, kind):
    assert norm(invoice_type=raw)["invoice_type"] == kind


@pytest.mark.parametrize(
    ("remark", "original", "key"),
    [
        ("被红冲蓝字数电票号码：26110000000000000001", None, "26110000000000000001"),
        ("对应正数发票代码:011002600111号码:00012345", None, "011002600111-00012345"),
        ("对应正数发票代码：011002600111 号码：00012345", None, "011002600111-00012345"),
        ("", "26110000000000000009", "26110000000000000009"),
        ("", "011002600111-00012345", "011002600111-00012345"),
    ],
)
def test_blue_reference(norm, remark, original, key):
    assert norm(remark=remark, original_invoice_number=original)["original_invoice_key"] == key
