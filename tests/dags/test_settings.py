"""Task settings: an Airflow Variable, else the environment, else the default; a backend error is no absence."""

from __future__ import annotations

import pytest

from fapiao_audit import orchestration
from fapiao_audit.errors import ConfigError


def test_variable_beats_environment_beats_default(monkeypatch, airflow_db):
    monkeypatch.delenv("AIRFLOW_VAR_FAPIAO_DB", raising=False)
    monkeypatch.delenv("FAPIAO_DB", raising=False)
    assert orchestration.setting("FAPIAO_DB", "/default.duckdb") == "/default.duckdb"
    monkeypatch.setenv("FAPIAO_DB", "/env.duckdb")
    assert orchestration.setting("FAPIAO_DB", "/default.duckdb") == "/env.duckdb"
    monkeypatch.setenv("AIRFLOW_VAR_FAPIAO_DB", "/variable.duckdb")  # a Variable, from the env backend
    assert orchestration.setting("FAPIAO_DB", "/default.duckdb") == "/variable.duckdb"


def test_a_variables_backend_error_fails_loudly(monkeypatch, airflow_db):
    from airflow.sdk import Variable

    def backend_down(key, default=None, **kwargs):
        raise ConnectionError("secrets backend unreachable")

    monkeypatch.setenv("FAPIAO_DB", "/env.duckdb")  # would have been used silently before
    monkeypatch.setattr(Variable, "get", staticmethod(backend_down))
    with pytest.raises(ConfigError) as e:
        orchestration.settings()
    assert str(e.value) == (
        "Airflow Variable FAPIAO_LANDING: the Variables backend failed (ConnectionError: secrets backend "
        "unreachable); not falling back to the environment or the default. Fix the backend, or retry the task"
    )
