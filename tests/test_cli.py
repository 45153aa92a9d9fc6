"""The command as a user meets it: --version, usage slips, progress on stderr, messages that say the fix."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from factories import NIGHT, invoice, write_csv, write_rows
from fapiao_audit import __version__
from fapiao_audit.cli import main
from fapiao_audit.config import load_config
from fapiao_audit.errors import ConfigError

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
    write_csv(landing / N / "issuers" / "pos" / "pos.csv", [invoice("26110000000000000002")])
    return landing


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command's code in a child process: stderr is a pipe, not a terminal."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "fapiao_audit.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


# --------------------------------------------------------------------------- usage


def test_version_prints_the_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fapiao-audit {__version__}"


def test_no_subcommand_names_the_commands_once(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("fapiao-audit:") == 1 and err.count("\n") == 1, err
    assert err.startswith("fapiao-audit: error: no command given")
    assert "run, generate, demo" in err and "--help" in err


def test_a_subcommand_usage_error_names_the_subcommand_once(capsys):
    assert main(["run", "--night", N]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fapiao-audit: error: run: the following arguments are required: --landing")
    assert err.count("fapiao-audit") == 1


# --------------------------------------------------------------------------- progress


def _published(night_dir: Path) -> dict[str, str]:
    """Digest of the published files, those whose bytes do not hold run times."""
    out = {}
    for name in ("exceptions.csv",):
        out[name] = hashlib.sha256((night_dir / name).read_bytes()).hexdigest()
    summary = json.loads((night_dir / "summary.json").read_text(encoding="utf-8"))
    summary.pop("run")
    summary["history"] = [h for h in summary["history"] if h["night"] == N]
    out["summary.json"] = json.dumps(summary, sort_keys=True)
    out["files"] = json.dumps(sorted(p.name for p in night_dir.iterdir()))
    return out


def test_progress_lines_on_stderr_and_quiet_turns_them_off(tmp_path):
    landing = small_night(tmp_path / "landing")
    loud = cli(
        "run",
        "--night",
        N,
        "--landing",
        str(landing),
        "--reports",
        str(tmp_path / "r1"),
        "--db",
        str(tmp_path / "d1.duckdb"),
    )
    quiet = cli(
        "run",
        "--night",
        N,
        "--landing",
        str(landing),
        "--reports",
        str(tmp_path / "r2"),
        "--db",
        str(tmp_path / "d2.duckdb"),
        "--quiet",
    )
    assert loud.returncode == quiet.returncode == 1, loud.stderr  # a tiny night breaks the rate thresholds
    lines = loud.stderr.splitlines()
    assert "\r" not in loud.stderr and "\x1b" not in loud.stderr  # not a terminal: plain lines
    for file, rows in (("registry/registry.csv", 2), ("issuers/erp/erp.csv", 2), ("issuers/pos/pos.csv", 1)):
        assert f"fapiao-audit: ingest: {file}: {rows} rows read ({rows} loaded, 0 rejected)" in lines, lines
    for stage in ("ingest", "reconcile", "validate", "publish"):
        assert sum(line.startswith(f"fapiao-audit: {stage} done in ") for line in lines) == 1, lines
    assert any(line.endswith("(3 files, 5 rows read)") for line in lines), lines
    assert [line for line in lines if " done in " in line or " rows read (" in line] == [
        line for line in lines if line.startswith("fapiao-audit: ") and "warning" not in line
    ]
    # --quiet: none of it, and nothing else changes
    assert not any(" done in " in line or "rows read" in line for line in quiet.stderr.splitlines()), (
        quiet.stderr
    )
    assert quiet.stdout.replace("r2", "r1") == loud.stdout
    assert _published(tmp_path / "r1" / N) == _published(tmp_path / "r2" / N)
    assert "GX" not in loud.stderr and "INFO" not in loud.stderr  # GX's logging stays out of the job's stderr


def test_live_progress_on_a_terminal_rewrites_one_line():
    import io

    from fapiao_audit.model import FileReport
    from fapiao_audit.progress import Progress

    out = io.StringIO()
    progress = Progress(out, live=True)
    progress.stage_started("ingest")
    progress.file_read(
        FileReport("issuer", "erp", "issuers/erp/a.csv", "x", "csv", "utf-8", 10, 1200, 1199, 1)
    )
    progress.stage_done("ingest", 1.0)
    progress.stage_started("publish")
    progress.stage_done("publish", 0.5)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, rewritten in place, ended at the end
    assert "\r\x1b[K" in text and "1,200 rows read (1,199 loaded, 1 rejected)" in text
    assert "publish done in 0.5 s" in text


# --------------------------------------------------------------------------- messages that say the fix


def test_renamed_header_points_at_the_sources_columns_table(tmp_path, capsys):
    landing = small_night(tmp_path / "landing")
    write_rows(
        landing / N / "issuers" / "erp" / "erp.csv",
        ["invoice_number", "开票时间点", "seller_tax_id", "amount", "tax_amount", "total_amount"],
        [
            [
                "26110000000000000001",
                "2026-11-18 10:00:00",
                "91110108551385082Q",
                "1000.00",
                "130.00",
                "1130.00",
            ]
        ],
    )
    code = main(
        [
            "run",
            "--night",
            N,
            "--landing",
            str(landing),
            "--reports",
            str(tmp_path / "r"),
            "--db",
            str(tmp_path / "d.duckdb"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "missing required column(s): issue_time / 开票日期" in err
    assert '[sources.erp.columns] "<header as delivered>" = "issue_time"' in err
    assert "'开票时间点'" in err  # the headers found, to pick the one to map


@pytest.mark.parametrize(
    ("text", "suggestion", "where"),
    [
        ("window_dayz = 7", "did you mean 'window_days'?", "Valid keys at the top level: "),
        (
            "[thresholds]\nmax_rejected_rat = 0.1",
            "did you mean 'thresholds.max_rejected_rate'?",
            "Valid keys at [thresholds]: ",
        ),
        (
            "[sources.erp]\ncolumn = {}",
            "did you mean 'sources.erp.columns'?",
            "Valid keys at [sources.erp]: columns, ignore_columns, values",
        ),
    ],
)
def test_unknown_config_key_gets_did_you_mean_and_the_valid_keys(tmp_path, text, suggestion, where):
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert suggestion in message and where in message, message
    if "top level" in where:
        assert "amount_tolerance" in message and "sources" in message and "thresholds" in message


def test_unknown_config_key_without_a_close_match_lists_the_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[thresholds]\nzzz = 1", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "did you mean" not in str(e.value)
    assert "max_missing_in_registry_rate" in str(e.value)


@pytest.mark.parametrize("inside", [N, f"{N}/issuers/erp", f"{N}/registry"])
def test_landing_pointing_into_a_night_suggests_its_parent(tmp_path, capsys, inside):
    landing = small_night(tmp_path / "landing")
    code = main(
        [
            "run",
            "--night",
            N,
            "--landing",
            str(landing / inside),
            "--reports",
            str(tmp_path / "r"),
            "--db",
            str(tmp_path / "d.duckdb"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"--landing {landing}" in err and "looks like a night's folder" in err
    assert not (tmp_path / "r").exists()


def test_a_refused_night_ends_stderr_with_its_one_message_after_the_progress(tmp_path):
    landing = small_night(tmp_path / "landing")
    write_rows(
        landing / N / "issuers" / "pos" / "pos.csv",
        ["invoice_number", "when", "seller_tax_id", "amount"],
        [["26110000000000000002", "2026-11-18 10:00:00", "91110108551385082Q", "1000.00"]],
    )
    result = cli(
        "run",
        "--night",
        N,
        "--landing",
        str(landing),
        "--reports",
        str(tmp_path / "r"),
        "--db",
        str(tmp_path / "d.duckdb"),
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert "fapiao-audit: ingest: registry/registry.csv: 2 rows read (2 loaded, 0 rejected)" in lines
    assert [line for line in lines if line.startswith("fapiao-audit: error: ")] == [lines[-1]]
    assert "[sources.pos.columns]" in lines[-1] and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()
