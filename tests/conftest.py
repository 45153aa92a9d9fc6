"""Shared fixtures."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
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

    def build(
        registry: list[dict[str, Any]],
        issuers: dict[str, list[dict[str, Any]]],
        night: date = NIGHT,
        landing: Path | None = None,
    ) -> Path:
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


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg():
    """A throwaway PostgreSQL cluster on a Unix socket and a loopback port."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql; .ci/run does)")
    run_as: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="fapiao-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", _free_port()
    subprocess.run(
        [*run_as, initdb, "-D", str(data), "-U", "fapiao", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run_as,
            pg_ctl,
            "-D",
            str(data),
            "-w",
            "-l",
            str(base / "log"),
            "-o",
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://fapiao:s3cret@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
