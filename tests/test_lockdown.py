"""Nothing let in, nothing let out: the DuckDB connection is confined, identifiers never come
from data, secrets stay out of DuckDB and the outputs, personal data is masked where configured."""

from __future__ import annotations

import csv
import json
import os
import zipfile
from datetime import date
from pathlib import Path

import duckdb
import pytest

from factories import NIGHT, SELLER_A, invoice, write_csv
from fapiao_audit.cli import main
from fapiao_audit.config import Config, build_config
from fapiao_audit.errors import InputError
from fapiao_audit.ingest import discover
from fapiao_audit.pipeline import Paths, open_db, stage_ingest, stage_publish, stage_reconcile, stage_validate

N = NIGHT.isoformat()


def small_night(landing: Path) -> Path:
    write_csv(
        landing / N / "registry" / "registry.csv",
        [invoice("26110000000000000001"), invoice("26110000000000000002")],
    )
    write_csv(
        landing / N / "issuers" / "erp" / "erp.csv",
        [invoice("26110000000000000001"), invoice("26110000000000000003")],
    )
    return landing


@pytest.fixture
def locked(tmp_path):
    paths = Paths(small_night(tmp_path / "landing"), tmp_path / "reports", tmp_path / "db" / "fapiao.duckdb")
    with open_db(paths, Config()) as con:
        yield con, paths, tmp_path


def refused(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> str:
    with pytest.raises(duckdb.Error) as e:
        con.execute(sql, params or {}).fetchall()
    return str(e.value)


# ------------------------------------------------------------------ the connection is confined


def test_landing_and_scratch_are_reachable(locked):
    con, paths, _ = locked
    rows = con.execute(
        "SELECT count(*) FROM read_csv($p)", {"p": str(paths.landing / N / "registry" / "registry.csv")}
    )
    assert rows.fetchone()[0] == 2
    paths.tmp_dir.mkdir(parents=True, exist_ok=True)
    target = paths.tmp_dir / "scratch.csv"
    con.execute(f"COPY (SELECT 1 AS x) TO '{target}'")
    assert target.is_file()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM read_blob('/proc/self/environ')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_parquet('/etc/passwd')",
    ],
)
def test_reading_outside_is_refused(locked, sql):
    con, _, _ = locked
    assert "Permission Error" in refused(con, sql)


@pytest.mark.parametrize("where", ["elsewhere", "reports", "landing-sibling"])
def test_copy_to_outside_is_refused(locked, where):
    con, paths, tmp_path = locked
    target = {
        "elsewhere": tmp_path / "elsewhere.csv",
        "reports": paths.reports / "x.csv",
        "landing-sibling": tmp_path / "landing2" / "x.csv",
    }[where]
    assert "Permission Error" in refused(con, f"COPY (SELECT 1 AS x) TO '{target}'")
    assert not target.exists()


def test_export_database_is_refused(locked):
    con, _, tmp_path = locked
    assert "Permission Error" in refused(con, f"EXPORT DATABASE '{tmp_path / 'dump'}'")
    assert not list(tmp_path.glob("dump/*.csv"))


def test_attach_is_refused(locked):
    con, _, tmp_path = locked
    assert "Permission Error" in refused(con, f"ATTACH '{tmp_path / 'other.duckdb'}' AS other")
    assert not (tmp_path / "other.duckdb").exists()


@pytest.mark.parametrize("sql", ["INSTALL httpfs", "LOAD httpfs", "INSTALL spatial FROM community"])
def test_extensions_cannot_be_installed_or_loaded(locked, sql):
    con, _, _ = locked
    refused(con, sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "SET allowed_directories = ['/']",
        "SET autoload_known_extensions = true",
        "SET temp_directory = '/tmp'",
        "RESET enable_external_access",
    ],
)
def test_configuration_is_locked(locked, sql):
    con, _, _ = locked
    assert "locked" in refused(con, sql)
    assert con.execute("SELECT current_setting('enable_external_access')").fetchone()[0] is False


def test_python_variables_are_not_scanned(locked):
    con, _, _ = locked
    secret_table = {"x": [1]}  # noqa: F841  (a replacement scan would find it by name)
    refused(con, "SELECT * FROM secret_table")


def test_link_out_of_the_landing_is_refused(tmp_path):
    landing = small_night(tmp_path / "landing")
    outside = tmp_path / "outside.csv"
    write_csv(outside, [invoice("26110000000000000009")])
    os.symlink(outside, landing / N / "issuers" / "erp" / "extra.csv")
    with pytest.raises(InputError, match="outside the night's landing folder"):
        discover(landing, NIGHT)
    os.unlink(landing / N / "issuers" / "erp" / "extra.csv")
    os.symlink(tmp_path, landing / N / "issuers" / "pos")
    with pytest.raises(InputError, match="outside the night's landing folder"):
        discover(landing, NIGHT)


def test_whole_run_works_on_the_locked_connection(tmp_path, capsys):
    """Ingest (incl. a GB18030 file transcoded into the scratch folder), reconcile, GX validation, publish."""
    landing = small_night(tmp_path / "landing")
    write_csv(
        landing / N / "issuers" / "pos" / "pos.csv", [invoice("26110000000000000002")], encoding="gb18030"
    )
    code = main(
        [
            "run",
            "--night",
            N,
            "--landing",
            str(landing),
            "--reports",
            str(tmp_path / "reports"),
            "--db",
            str(tmp_path / "db" / "f.duckdb"),
        ]
    )
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    summary = json.loads((tmp_path / "reports" / N / "summary.json").read_text(encoding="utf-8"))
    assert summary["expectations"]["suites"], "the expectation suites ran"
    assert not any(r.get("error") for s in summary["expectations"]["suites"] for r in s["results"])
    assert [f["encoding"] for s in summary["sources"] for f in s["files"] if s["source_system"] == "pos"] == [
        "gb18030"
    ]


# ------------------------------------------------------------------ identifiers come from an allowlist


def test_hostile_headers_and_mappings_are_data_not_sql(tmp_path, capsys):
    """Header names and configured mappings never become SQL: the night loads, the tables survive."""
    landing = tmp_path / "landing"
    evil = 'no"; DROP TABLE staged_invoices; --'
    cols = [
        "invoice_code",
        evil,
        "issue_time",
        "seller_tax_id",
        "amount",
        "tax_amount",
        "tax_rate",
        "total_amount",
        "x'); COPY (SELECT 1) TO '/tmp/pwned.csv'; --",
    ]
    rows = [{**invoice("26110000000000000001"), evil: "26110000000000000001"}]
    write_csv(landing / N / "registry" / "r.csv", [invoice("26110000000000000001")])
    write_csv(landing / N / "issuers" / "erp" / "e.csv", rows, columns=cols)
    cfg_file = tmp_path / "cfg.toml"
    cfg_file.write_text(f'[sources.erp.columns]\n{json.dumps(evil)} = "invoice_number"\n', encoding="utf-8")
    code = main(
        [
            "run",
            "--night",
            N,
            "--landing",
            str(landing),
            "--reports",
            str(tmp_path / "reports"),
            "--db",
            str(tmp_path / "f.duckdb"),
            "--config",
            str(cfg_file),
        ]
    )
    assert code in (0, 1), capsys.readouterr().err
    assert not Path("/tmp/pwned.csv").exists()
    con = duckdb.connect(str(tmp_path / "f.duckdb"), read_only=True)
    try:
        assert (
            con.execute("SELECT count(*) FROM staged_invoices WHERE source_system = 'erp'").fetchone()[0] == 1
        )
    finally:
        con.close()


@pytest.mark.parametrize(
    "mapping", ['"FP" = "invoice_number; DROP TABLE findings"', '"FP" = "invoice_number\\""']
)
def test_mapping_to_a_non_canonical_column_is_refused(mapping):
    import tomllib

    from fapiao_audit.errors import ConfigError

    with pytest.raises(ConfigError, match="not a canonical column"):
        build_config(tomllib.loads(f"[sources.erp.columns]\n{mapping}\n"))


# ------------------------------------------------------------------ secrets and personal data


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://audit:{pw}@db.internal/erp",
        "postgresql://audit@db.internal/erp?sslmode=require&password={pw}",
    ],
)
def test_connection_secrets_reach_neither_duckdb_nor_outputs(tmp_path, url):
    password = "pa55-W0rd-7f3c"
    try:
        cfg = build_config(
            {"database_sources": {"crm": {"url": url.format(pw=password), "table": "public.invoices"}}}
        )
    except Exception as e:  # configuration without database sources: nothing to leak
        pytest.skip(f"database sources not configurable here: {e}")
    paths = Paths(small_night(tmp_path / "landing"), tmp_path / "reports", tmp_path / "db" / "f.duckdb")
    with open_db(paths, cfg) as con:  # the stages only: no server to extract from
        stage_ingest(con, paths, NIGHT, cfg)
        stage_reconcile(con, NIGHT, cfg)
        stage_validate(con, NIGHT, cfg)
        stage_publish(con, paths, NIGHT, cfg)
    for f in (tmp_path / "reports" / N).iterdir():
        data = f.read_bytes()
        if f.suffix == ".xlsx":
            data = b"".join(zipfile.ZipFile(f).read(n) for n in zipfile.ZipFile(f).namelist())
        assert password.encode() not in data, f.name
    for f in paths.db.parent.rglob("*"):
        if f.is_file():
            assert password.encode() not in f.read_bytes(), f.name


PERSON_A, PERSON_B = "欧阳小明", "欧阳晓明"  # one buyer, spelled differently on the two sides
PERSON_ID_A, PERSON_ID_B = "110101199003071234", "110101199003074321"  # resident ids (not companies)
PERSON_REJECTED = "司马相如"  # only in a rejected row


def privacy_night(landing: Path) -> Path:
    reg = [
        invoice("26110000000000000001", buyer_name=PERSON_A, buyer_tax_id=PERSON_ID_A),
        invoice("26110000000000000002"),
    ]
    iss = [
        invoice("26110000000000000001", buyer_name=PERSON_B, buyer_tax_id=PERSON_ID_B),
        invoice("26110000000000000002"),
        invoice("26110000000000000005", buyer_name=PERSON_REJECTED, amount="1000.00", seller=SELLER_A)
        | {"amount": "n/a"},
    ]
    write_csv(landing / N / "registry" / "registry.csv", reg)
    write_csv(landing / N / "issuers" / "erp" / "erp.csv", iss)
    return landing


def published_text(night_dir: Path) -> dict[str, str]:
    out = {}
    for name in ("exceptions.csv", "summary.json", "gx_results.json", "report.html", "manifest.json"):
        out[name] = (night_dir / name).read_text(encoding="utf-8-sig")
    z = zipfile.ZipFile(night_dir / "exceptions.xlsx")
    out["exceptions.xlsx"] = "".join(z.read(n).decode("utf-8") for n in z.namelist() if n.endswith(".xml"))
    return out


def run_with(tmp_path: Path, name: str, toml: str) -> dict[str, str]:
    landing = privacy_night(tmp_path / "landing")
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(toml, encoding="utf-8")
    reports = tmp_path / f"reports-{name}"
    code = main(
        [
            "run",
            "--night",
            N,
            "--landing",
            str(landing),
            "--reports",
            str(reports),
            "--db",
            str(tmp_path / f"{name}.duckdb"),
            "--config",
            str(cfg),
        ]
    )
    assert code in (0, 1)
    return published_text(reports / N)


SECRETS = (PERSON_A, PERSON_B, PERSON_ID_A, PERSON_ID_B, PERSON_REJECTED)


def test_masking_on_hides_individuals_in_every_output(tmp_path):
    texts = run_with(tmp_path, "masked", "mask_html = true\nmask_excel = true\nmask_csv = true\n")
    for name, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} in {name}"
    assert "欧***" in texts["exceptions.csv"] and "1101**********1234" in texts["exceptions.csv"]


def test_masking_off_shows_them_and_html_is_masked_by_default(tmp_path):
    texts = run_with(tmp_path, "default", "")
    with open(tmp_path / "reports-default" / N / "exceptions.csv", encoding="utf-8-sig", newline="") as f:
        values = {v for r in csv.DictReader(f) for v in (r["issuer_value"], r["registry_value"])}
    assert {PERSON_A, PERSON_B, PERSON_ID_A, PERSON_ID_B} <= values  # finance sees what to fix
    for secret in SECRETS:
        assert secret not in texts["report.html"], f"{secret} in report.html with the default configuration"


def test_mask_all_switch(tmp_path):
    texts = run_with(tmp_path, "all", "mask_all = true\nmask_html = false\n")
    for name, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} in {name}"


def test_night_names_the_only_output_folder(tmp_path, capsys):
    """Paths come from the validated night only: a night like '../x' is refused before anything is written."""
    landing = small_night(tmp_path / "landing")
    for night in ("../2026-11-21", "2026-11-21/../../x", "2026-11-2\x00", "2026-13-01"):
        assert (
            main(
                [
                    "run",
                    "--night",
                    night,
                    "--landing",
                    str(landing),
                    "--reports",
                    str(tmp_path / "r"),
                    "--db",
                    str(tmp_path / "d" / "f.duckdb"),
                ]
            )
            == 2
        )
    assert not (tmp_path / "r").exists() and not (tmp_path / "d").exists()
    assert "Traceback" not in capsys.readouterr().err
    assert date.fromisoformat(N)
