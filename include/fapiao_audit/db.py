"""The DuckDB side: one writer connection, the schema, and SQL files run with bound parameters.

DuckDB allows one writing process per database file. A second run on the same file would
fail deep inside DuckDB with a lock error; instead an advisory lock file beside the database
makes it wait (``lock_timeout_s``) and then refuse with a clear message.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from .config import Config
from .errors import LockError

_NAME_RE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_PARAM_RE = re.compile(r"\$([A-Za-z_]\w*)")


@cache
def sql_text(filename: str) -> str:
    """Text of a packaged .sql file."""
    return resources.files("fapiao_audit").joinpath("sql", filename).read_text(encoding="utf-8")


@cache
def sql_statements(filename: str) -> list[tuple[str, str]]:
    """Split a .sql file into ``-- name: x`` sections, in file order."""
    text = sql_text(filename)
    marks = list(_NAME_RE.finditer(text))
    if not marks:
        return [(filename, text)]
    out = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out.append((m.group(1), text[m.end() : end].strip()))
    return out


def execute_sql(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any]) -> duckdb.DuckDBPyConnection:
    """Run one statement, binding only the ``$named`` parameters it uses."""
    used = {p: params[p] for p in dict.fromkeys(_PARAM_RE.findall(sql))}
    return con.execute(sql, used) if used else con.execute(sql)


def named_sql(filename: str, name: str) -> str:
    """One named statement of a .sql file."""
    for n, sql in sql_statements(filename):
        if n == name:
            return sql
    raise KeyError(f"{filename}: no statement named {name}")


def run_sql_file(con: duckdb.DuckDBPyConnection, filename: str, params: Mapping[str, Any]) -> None:
    for _name, sql in sql_statements(filename):
        if sql:
            execute_sql(con, sql, params)


def quote_ident(name: str) -> str:
    """Quote an identifier for DuckDB. Callers still check names against an allowlist."""
    return '"' + name.replace('"', '""') + '"'


def connect(db_path: Path | str, cfg: Config) -> duckdb.DuckDBPyConnection:
    """Open the job's DuckDB database with the configured resources and the schema in place."""
    config: dict[str, Any] = {
        "memory_limit": cfg.duckdb_memory_limit,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    if cfg.duckdb_threads:
        config["threads"] = cfg.duckdb_threads
    if cfg.duckdb_temp_directory:
        config["temp_directory"] = cfg.duckdb_temp_directory
    try:
        con = duckdb.connect(str(db_path), config=config)
    except duckdb.IOException as e:
        if "lock" in str(e).lower():
            raise LockError(f"{db_path}: the database is in use by another process") from None
        raise LockError(f"{db_path}: cannot open the database: {e}") from None
    # icu is built in; the session time zone makes tz-aware values render in Beijing time.
    con.execute("SET TimeZone = 'Asia/Shanghai'")
    run_sql_file(con, "schema.sql", {})
    return con


@contextmanager
def exclusive(db_path: Path | str, timeout_s: float) -> Iterator[None]:
    """Hold the advisory lock of a database file for the duration of a run."""
    db_path = Path(db_path)
    if str(db_path) == ":memory:":
        yield
        return
    lock_path = db_path.with_name(db_path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another run"
                    raise LockError(
                        f"{db_path}: another fapiao-audit run is using this database ({holder}); "
                        f"waited {timeout_s:g} s. Retry when it has finished."
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)
