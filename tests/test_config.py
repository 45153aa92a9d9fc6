"""Configuration: documented defaults, loud refusal naming the key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from fapiao_audit.cli import main
from fapiao_audit.config import Config, load_config
from fapiao_audit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_follow_the_contract():
    cfg = Config()
    assert (cfg.window_days, cfg.sync_grace_hours, cfg.amount_tolerance, cfg.tax_tolerance) == (
        7,
        48.0,
        Decimal("0.00"),
        Decimal("0.06"),
    )
    assert cfg.as_of_for(__import__("datetime").date(2026, 11, 21)).isoformat() == "2026-11-22T00:00:00+08:00"


def test_example_file_is_the_defaults():
    assert load_config(ROOT / "config.example.toml") == Config()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("window_days = 0", "window_days"),
        ("window_dayz = 7", "window_dayz"),
        ("amount_tolerance = 'abc'", "amount_tolerance"),
        ("tax_tolerance = -1", "tax_tolerance"),
        ("monitored_sellers = ['not a tax id']", "monitored_sellers"),
        ("as_of = 'tomorrow'", "as_of"),
        ("[thresholds]\nmax_missing_in_registry_rate = 2", "thresholds.max_missing_in_registry_rate"),
        ("[sources.erp.columns]\nX = 'nonsense'", "sources.erp.columns.X"),
        ("duckdb_memory_limit = 'lots'", "duckdb_memory_limit"),
    ],
)
def test_bad_config_is_refused_naming_the_key(tmp_path, text, key):
    p = tmp_path / "c.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(p)


def test_cli_refuses_bad_config_with_exit_2(tmp_path, capsys):
    (tmp_path / "landing").mkdir()
    p = tmp_path / "c.toml"
    p.write_text("window_days = 'seven'", encoding="utf-8")
    code = main(
        [
            "run",
            "--night",
            "2026-11-21",
            "--landing",
            str(tmp_path / "landing"),
            "--reports",
            str(tmp_path / "reports"),
            "--config",
            str(p),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "window_days" in err and "Traceback" not in err
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("night", ["2026-13-01", "../../etc", "2026-11-21/../x", "20261121", ""])
def test_cli_refuses_bad_night(tmp_path, capsys, night):
    (tmp_path / "landing").mkdir()
    code = main(
        ["run", "--night", night, "--landing", str(tmp_path / "landing"), "--reports", str(tmp_path / "r")]
    )
    assert code == 2 and "--night" in capsys.readouterr().err


def test_cli_usage_error_is_exit_2(capsys):
    assert main(["run"]) == 2
    assert "required" in capsys.readouterr().err
