"""A PostgreSQL issuing system, against a real PostgreSQL server started for the test."""

from __future__ import annotations

import socket
from datetime import date

import pytest

from factories import NIGHT, SELLER_A, invoice, write_csv
from fapiao_audit.cli import main
from fapiao_audit.config import build_config
from fapiao_audit.errors import ConfigError, InputError
from fapiao_audit.extract import extract_all, redact_url


@pytest.fixture(scope="module")
def invoices_table(pg):
    import psycopg

    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.erp_invoices")
        conn.execute(
            "CREATE TABLE public.erp_invoices (invoice_code text, invoice_number text, issue_time timestamptz, "
            "seller_tax_id text, buyer_name text, amount numeric(18,2), tax_amount numeric(18,2), "
            "total_amount numeric(18,2), tax_rate numeric(6,4), status text)"
        )
        rows = [
            (
                "",
                "26110000000000000001",
                "2026-11-18 10:00:00+08",
                SELLER_A,
                "北京丙贸易有限公司",
                "1000.00",
                "130.00",
                "1130.00",
                "0.13",
                "正常",
            ),
            (
                "011002600111",
                "00012345",
                "2026-11-18 02:00:00+00",
                SELLER_A,
                "李四",
                "50.00",
                "1.50",
                "51.50",
                "0.03",
                "normal",
            ),
            (
                "",
                "26110000000000000002",
                "2026-11-10 10:00:00+08",
                SELLER_A,
                "x",
                "1.00",
                "0.13",
                "1.13",
                "0.13",
                "normal",
            ),
        ]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO public.erp_invoices VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", rows)
    return "public.erp_invoices"


def _cfg(url: str, **extra):
    spec = {"url": url, "table": "public.erp_invoices", **extra}
    return build_config({"database_sources": {"erp_db": spec}})


def test_extracts_the_window_into_the_landing_layout(pg, invoices_table, tmp_path):
    reports = extract_all(tmp_path / "landing", NIGHT, _cfg(pg))
    assert len(reports) == 1 and reports[0].rows == 2  # the 2026-11-10 invoice is outside the window
    assert (
        reports[0].file
        == tmp_path / "landing" / NIGHT.isoformat() / "issuers" / "erp_db" / "erp_db.db-extract.parquet"
    )
    assert "s3cret" not in reports[0].target


def test_database_source_reconciles_like_a_file(pg, invoices_table, tmp_path, capsys):
    landing = tmp_path / "landing"
    reg = [
        invoice("26110000000000000001", buyer_name="北京丙贸易有限公司"),
        invoice("00012345", code="011002600111", amount="50.00", rate="0.03", buyer_name="李四"),
    ]
    write_csv(landing / NIGHT.isoformat() / "registry" / "registry.csv", reg)
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(
        f'[database_sources.erp_db]\nurl = "{pg}"\ntable = "public.erp_invoices"\n', encoding="utf-8"
    )
    code = main(
        [
            "run",
            "--night",
            NIGHT.isoformat(),
            "--landing",
            str(landing),
            "--reports",
            str(tmp_path / "r"),
            "--config",
            str(cfg_file),
        ]
    )
    assert code in (0, 1), capsys.readouterr().err
    csv_text = (tmp_path / "r" / NIGHT.isoformat() / "exceptions.csv").read_text(encoding="utf-8-sig")
    assert csv_text.count("\n") == 1, csv_text  # header only: the database source matches the registry
    summary = (tmp_path / "r" / NIGHT.isoformat() / "summary.json").read_text(encoding="utf-8")
    assert "erp_db.db-extract.parquet" in summary and "s3cret" not in summary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_database_is_exit_2_without_password(tmp_path, capsys):
    landing = tmp_path / "landing"
    write_csv(landing / NIGHT.isoformat() / "registry" / "registry.csv", [invoice("26110000000000000001")])
    port = _free_port()
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(
        f'[database_sources.erp_db]\nurl = "postgresql://u:topsecret@127.0.0.1:{port}/db"\n'
        'table = "invoices"\n',
        encoding="utf-8",
    )
    code = main(
        [
            "run",
            "--night",
            NIGHT.isoformat(),
            "--landing",
            str(landing),
            "--reports",
            str(tmp_path / "r"),
            "--config",
            str(cfg_file),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "erp_db" in err and "topsecret" not in err and "***" in err
    assert not (tmp_path / "r" / NIGHT.isoformat()).exists()


@pytest.mark.parametrize(
    "spec, key",
    [
        ({"url": "postgresql://x/y", "table": "t; DROP TABLE x"}, "table"),
        ({"url": "mysql://x/y", "table": "t"}, "url"),
        ({"url": "postgresql://x/y"}, "database_sources.erp_db"),
        ({"table": "t"}, "database_sources.erp_db"),
        ({"url": "postgresql://x/y", "table": "t", "time_column": "a.b"}, "time_column"),
    ],
)
def test_bad_database_source_config(spec, key):
    with pytest.raises(ConfigError, match=key):
        build_config({"database_sources": {"erp_db": spec}})


def test_redact_url():
    assert redact_url("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact_url("postgresql://h/d") == "postgresql://h/d"


def test_query_source_with_parameters(pg, invoices_table, tmp_path):
    q = (
        "SELECT invoice_code, invoice_number, issue_time, seller_tax_id, amount FROM public.erp_invoices "
        "WHERE issue_time >= %(window_start)s AND issue_time < %(window_end_exclusive)s ORDER BY invoice_number"
    )
    cfg = build_config({"database_sources": {"erp_db": {"url": pg, "query": q}}})
    (rep,) = extract_all(tmp_path / "landing", date(2026, 11, 21), cfg)
    assert rep.rows == 2


def test_missing_table_is_input_error(pg, tmp_path):
    cfg = build_config({"database_sources": {"erp_db": {"url": pg, "table": "public.nope"}}})
    with pytest.raises(InputError, match="erp_db"):
        extract_all(tmp_path / "landing", NIGHT, cfg)
