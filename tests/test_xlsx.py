"""The streaming workbook reader: cell types, dates, shared and inline strings, every row, damage refused."""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import openpyxl
import pytest

from fapiao_audit.xlsx import NotPlain, Workbook, XlsxError, excel_datetime, is_date_format, number_text

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
    'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships'
    '+xml"/><Default Extension="xml" ContentType="application/xml"/></Types>'
)
ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
    'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>'
)


def package(
    path: Path, sheets: dict[str, str], *, extra: dict[str, str] | None = None, date1904: bool = False
) -> Path:
    """A minimal workbook written by hand: sheet name -> the sheetData XML."""
    wb = (
        '<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/'
        '2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
        + ('<workbookPr date1904="1"/>' if date1904 else "")
        + "<sheets>"
        + "".join(f'<sheet name="{n}" sheetId="{i + 1}" r:id="rId{i + 1}"/>' for i, n in enumerate(sheets))
        + "</sheets></workbook>"
    )
    rels = (
        '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
        '2006/relationships">'
        + "".join(
            f'<Relationship Id="rId{i + 1}" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            f'relationships/worksheet" Target="worksheets/sheet{i + 1}.xml"/>'
            for i in range(len(sheets))
        )
        + "</Relationships>"
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("[Content_Types].xml", CONTENT_TYPES)
        z.writestr("_rels/.rels", ROOT_RELS)
        z.writestr("xl/workbook.xml", wb)
        z.writestr("xl/_rels/workbook.xml.rels", rels)
        for i, data in enumerate(sheets.values()):
            whole = data.startswith("<x:worksheet")  # a whole part, as written
            z.writestr(
                f"xl/worksheets/sheet{i + 1}.xml",
                data
                if whole
                else '<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/'
                f'spreadsheetml/2006/main">{data}</worksheet>',
            )
        for name, text in (extra or {}).items():
            z.writestr(name, text)
    return path


def rows(path: Path, sheet: str, *, may_decline: bool = False) -> list[tuple[int, list[str | None]]]:
    """The rows as both readers give them: they agree (or, for unusual sheets, the plain one declines)."""
    with Workbook(path, fast=False) as wb:
        by_expat = list(wb.rows(sheet))
    with Workbook(path) as wb:
        try:
            assert list(wb.rows(sheet)) == by_expat
        except NotPlain:
            assert may_decline, "the plain reader declined a plain sheet"
    return by_expat


def test_agrees_with_openpyxl_on_what_openpyxl_writes(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "发票基础信息"
    ws.append(["序号", "金额", "开票日期", "发票号码", "flag", "when"])
    ws.append(["1", 1234.5, "2026-11-18 10:00:00", "00012345", True, dt.datetime(2026, 11, 18, 10, 0, 1)])
    ws.append([None, 800, None, 25112000000100001101, False, dt.date(2026, 11, 19)])
    ws.cell(row=5, column=2).value = -0.1
    wb.create_sheet("第二页").append(["x"])
    path = tmp_path / "a.xlsx"
    wb.save(path)
    with Workbook(path) as book:
        assert book.sheet_names == ["发票基础信息", "第二页"]
    assert rows(path, "发票基础信息") == [
        (1, ["序号", "金额", "开票日期", "发票号码", "flag", "when"]),
        (2, ["1", "1234.5", "2026-11-18 10:00:00", "00012345", "true", "2026-11-18 10:00:01"]),
        (3, [None, "800", None, "2.51120000001e+19", "false", "2026-11-19 00:00:00"]),  # as openpyxl wrote it
        (5, [None, "-0.1"]),
    ]
    assert rows(path, "第二页") == [(1, ["x"])]


def test_inline_strings_rich_text_and_phonetics(tmp_path):
    data = (
        '<sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>北京</t></is></c>'
        '<c r="C1" t="inlineStr"><is><r><t>甲</t></r><r><rPr><b/></rPr><t xml:space="preserve"> 乙 </t></r>'
        '<rPh sb="0" eb="1"><t>ジア</t></rPh></is></c>'
        '<c r="D1" t="str"><f>A1</f><v>北京</v></c><c r="E1" t="e"><v>#N/A</v></c>'
        '<c r="F1" t="d"><v>2026-11-18T10:00:00</v></c><c r="G1" t="inlineStr"><is><t>a&amp;b&lt;c&#x4E2D;</t></is></c>'
        "</row></sheetData>"
    )
    path = package(tmp_path / "b.xlsx", {"s": data})
    assert rows(path, "s", may_decline=True) == [
        (1, ["北京", None, "甲 乙 ", "北京", "#N/A", "2026-11-18 10:00:00", "a&b<c中"])
    ]


def test_shared_strings_dates_by_style_and_1904(tmp_path):
    sst = (
        '<?xml version="1.0"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        "<si><t>正常</t></si><si><r><t>已红冲</t></r><r><t>-全额</t></r></si></sst>"
    )
    styles = (
        '<?xml version="1.0"?><styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        '<numFmts><numFmt numFmtId="164" formatCode="yyyy&quot;年&quot;m&quot;月&quot;d&quot;日&quot;"/>'
        '<numFmt numFmtId="165" formatCode="#,##0.00"/></numFmts>'
        '<cellXfs><xf numFmtId="0"/><xf numFmtId="164"/><xf numFmtId="165"/><xf numFmtId="31"/><xf numFmtId="14"/>'
        "</cellXfs></styleSheet>"
    )
    data = (
        '<sheetData><row r="2"><c r="A2" t="s"><v>0</v></c><c r="B2" t="s"><v>1</v></c>'
        '<c r="C2" s="1"><v>46344</v></c><c r="D2" s="2"><v>46344</v></c><c r="E2" s="3"><v>46344.5</v></c>'
        '<c r="F2" s="4"><v>0.75</v></c></row></sheetData>'
    )
    extra = {"xl/sharedStrings.xml": sst, "xl/styles.xml": styles}
    path = package(tmp_path / "c.xlsx", {"s": data}, extra=extra)
    assert rows(path, "s") == [
        (2, ["正常", "已红冲-全额", "2026-11-18 00:00:00", "46344", "2026-11-18 12:00:00", "18:00:00"])
    ]
    path1904 = package(tmp_path / "d.xlsx", {"s": data}, extra=extra, date1904=True)
    assert rows(path1904, "s")[0][1][2] == "2030-11-19 00:00:00"


def test_every_row_whatever_the_dimension_says_and_cells_without_references(tmp_path):
    data = (
        '<dimension ref="A1:B2"/><sheetData>'
        + "".join(
            f'<row r="{r}"><c r="A{r}" t="inlineStr"><is><t>{r}</t></is></c></row>' for r in range(1, 600)
        )
        + '<row><c t="inlineStr"><is><t>x</t></is></c><c><v>2</v></c></row><row r="700"/></sheetData>'
    )
    path = package(tmp_path / "e.xlsx", {"s": data})
    got = rows(path, "s", may_decline=True)  # cells without references: the plain reader declines
    assert len(got) == 600 and got[598] == (599, ["599"]) and got[599] == (600, ["x", "2"])


def test_prefixed_elements(tmp_path):
    path = package(
        tmp_path / "f.xlsx",
        {
            "s": (
                '<x:worksheet xmlns:x="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><x:sheetData>'
                '<x:row r="1"><x:c r="B1" t="inlineStr"><x:is><x:t>ok</x:t></x:is></x:c></x:row>'
                "</x:sheetData></x:worksheet>"
            )
        },
    )
    assert rows(path, "s") == [(1, [None, "ok"])]


@pytest.mark.parametrize(
    "damage", ["not_zip", "no_workbook", "bad_xml", "bad_number", "bad_shared_index", "truncated"]
)
def test_damage_is_an_error_not_a_guess(tmp_path, damage):
    path = tmp_path / "g.xlsx"
    good = '<sheetData><row r="1"><c r="A1"><v>1</v></c></row></sheetData>'
    if damage == "not_zip":
        path.write_bytes(b"PK\x03\x04 not really")
    elif damage == "no_workbook":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("hello.txt", "hi")
    elif damage == "bad_xml":
        package(path, {"s": '<sheetData><row r="1"><c r="A1"><v>1</v></row></sheetData>'})
    elif damage == "bad_number":
        package(path, {"s": '<sheetData><row r="1"><c r="A1"><v>1,5</v></c></row></sheetData>'})
    elif damage == "bad_shared_index":
        package(path, {"s": '<sheetData><row r="1"><c r="A1" t="s"><v>7</v></c></row></sheetData>'})
    else:
        package(path, {"s": good * 2000})
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    for fast in (True, False):
        with pytest.raises(XlsxError):
            with Workbook(path, fast=fast) as wb:
                for name in wb.sheet_names:
                    list(wb.rows(name))


def test_helpers():
    assert number_text("800") == "800" and number_text("1234.5") == "1234.5" and number_text("1E3") == "1000"
    assert number_text("1e20") == "1e+20"
    assert excel_datetime(46344.000011574) == "2026-11-18 00:00:01"
    assert is_date_format("yyyy-mm-dd hh:mm") and is_date_format('[$-804]yyyy"年"m"月"d"日"')
    assert (
        not is_date_format("#,##0.00") and not is_date_format('0.00"元"') and not is_date_format("[Red]0.0")
    )


@pytest.mark.parametrize(
    "xml",
    [
        "<sheetData/>",
        '<sheetData>\n  <row r="1" spans="1:2" x14ac:dyDescent="0.25">\n    <c r="A1" t="inlineStr"><is><t>a</t></is></c>\n'
        '    <c r="B1" s="0"><v>2</v></c>\n  </row>\n  <row r="3"/>\n</sheetData>',
        "<sheetData><row r='1'><c r='A1' t='inlineStr'><is><t xml:space='preserve'> a&#x20;b </t></is></c></row></sheetData>",
        '<sheetData><row r="1"><c r="A1" t="inlineStr"><is><t><![CDATA[x</c>y]]></t></is></c></row></sheetData>',
        '<sheetData><!-- a comment --><row r="1"><c r="A1"><v>1</v></c></row></sheetData>',
        '<sheetData><row r="1"><c r="A1" t="inlineStr"><is><t/></is></c><c r="B1"/><c r="C1"><v/></c></row></sheetData>',
        '<sheetData><row r="2"><c r="A2" t="inlineStr"><is><t>1</t></is></c><c r="B2" t="inlineStr" />'
        '<c r="C2" s="3" t="inlineStr" /><c r="D2" t="n"><v>5</v></c></row></sheetData>',
    ],
)
def test_both_readers_agree_on_unusual_but_valid_sheets(tmp_path, xml):
    path = package(tmp_path / "h.xlsx", {"s": xml})
    rows(path, "s", may_decline=True)  # the plain reader agrees with expat, or leaves the sheet to it


def test_unknown_entities_and_bare_ampersands_are_refused(tmp_path):
    for bad in ("&nbsp;", "a & b"):
        path = package(
            tmp_path / "i.xlsx",
            {
                "s": f'<sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>{bad}</t>'
                "</is></c></row></sheetData>"
            },
        )
        for fast in (True, False):
            with pytest.raises(XlsxError), Workbook(path, fast=fast) as wb:
                list(wb.rows("s"))


def test_the_platform_export_is_read_by_the_plain_reader():
    (path,) = (
        Path(__file__).parent / "data" / "registry-export" / "landing-erp" / "2025-03-10" / "registry"
    ).glob("*.xlsx")
    with Workbook(path) as wb:
        assert wb.sheet_names == ["信息汇总表", "发票基础信息"]
        for name in wb.sheet_names:
            assert len(rows(path, name)) > 10  # rows() fails if the plain reader declines
