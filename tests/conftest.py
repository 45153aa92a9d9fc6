"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from factories import NIGHT, write_csv
from fapiao_audit.config import Config
from fapiao_audit.db import connect
from fapiao_audit.pipeline import Paths


@pytest.fixture
def make_night(tmp_path: Path) -> Callable[..., Path]:
    """make_night(registry=[...], issuers={"erp": [...]}) -> landing folder with that night."""

    def build(registry: list[dict[str, Any]], issuers: dict[str, list[dict[str, Any]]],
              night: date = NIGHT, landing: Path | None = None) -> Path:
        landing = landing or tmp_path / "landing"
        base = landing / night.isoformat()
        write_csv(base / "registry" / "registry.csv", registry)
        for system, rows in issuers.items():
            write_csv(base / "issuers" / system / f"{system}.csv", rows)
        return landing

    return build


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "landing", tmp_path / "reports", tmp_path / "db" / "fapiao.duckdb")


@pytest.fixture
def mem_con():
    con = connect(":memory:", Config())
    yield con
    con.close()
