"""The DuckDB side: one writer connection, the schema, and SQL files run with bound parameters.

DuckDB allows one writing process per database file. A second run on the same file would
fail deep inside DuckDB with a lock error; instead an advisory lock file beside the database
makes it wait (``lock_timeout_s``) and then refuse with a clear message.
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from . import carried
from .config import Config
from .errors import LockError, first_line
from .versions import migrate, set_aside_legacy

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


def execute_sql(
    con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any]
) -> duckdb.DuckDBPyConnection:
    """Run one statement, binding only the ``$named`` parameters it uses."""
    at = os.environ.get(PAUSE_ENV)
    if at and at.startswith("sql:") and at[4:] in sql:
        pause_point(at)  # test hook, see pause_point
    used = {p: params[p] for p in dict.fromkeys(_PARAM_RE.findall(sql))}
    return con.execute(sql, used) if used else con.execute(sql)


def named_sql(filename: str, name: str) -> str:
    """One named statement of a .sql file."""
    pause_point(f"{filename}:{name}")
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


def connect(
    db_path: Path | str,
    cfg: Config,
    *,
    allowed_dirs: Sequence[Path | str] | None = None,
    read_only: bool = False,
) -> duckdb.DuckDBPyConnection:
    """Open the job's DuckDB database with the configured resources and the schema in place.

    With ``allowed_dirs`` the connection is locked down once the schema is in place (see
    :func:`lock_down`): it can then read and write files only inside those folders (and its
    own database, WAL and spill files), and none of its settings can be changed any more.
    ``read_only`` opens an existing database for reading (several processes may), schema untouched.
    """
    config: dict[str, Any] = {
        "memory_limit": cfg.duckdb_memory_limit,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        # No CREATE PERSISTENT SECRET: nothing secret is ever written beside the database.
        "allow_persistent_secrets": False,
    }
    if cfg.duckdb_threads:
        config["threads"] = cfg.duckdb_threads
    if cfg.duckdb_temp_directory:
        config["temp_directory"] = cfg.duckdb_temp_directory
    try:
        con = duckdb.connect(str(db_path), read_only=read_only, config=config)
    except duckdb.IOException as e:
        if "lock" in str(e).lower():
            raise LockError(f"{db_path}: the database is in use by another process") from None
        raise LockError(f"{db_path}: cannot open the database: {first_line(e)}") from None
    except duckdb.Error as e:
        raise LockError(f"{db_path}: cannot open the database: {first_line(e)}") from None
    try:
        # icu is built in; the session time zone makes tz-aware values render in Beijing time.
        con.execute("SET TimeZone = 'Asia/Shanghai'")
        # Library code: no progress bars on the terminal or in task logs.
        con.execute("SET enable_progress_bar = false")
        if not read_only:
            set_aside_legacy(con)  # staged tables of a database written before versions
            carried.set_aside_legacy(con)  # ... and its carried items as one row per night
            run_sql_file(con, "schema.sql", {})
            migrate(con)
            carried.migrate(con)
        if allowed_dirs is not None:
            lock_down(con, allowed_dirs)
    except BaseException:
        con.close()
        raise
    return con


def lock_down(con: duckdb.DuckDBPyConnection, allowed_dirs: Sequence[Path | str]) -> None:
    """Confine a connection to ``allowed_dirs`` for good.

    After this, ``read_csv('/etc/passwd')``, ``COPY ... TO`` anywhere else, ``ATTACH``,
    ``INSTALL`` / ``LOAD`` and ``SET`` of any option (including switching this back off) fail with
    a permission or configuration error. DuckDB itself keeps access to its database file, WAL
    and spill folder. Python-side registrations (``con.register``) still work; replacement scans
    of Python variables do not.
    """
    dirs = sorted({os.path.join(os.path.realpath(d), "") for d in allowed_dirs})
    con.execute("SET allowed_directories = $d", {"d": dirs})
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _lock_file(db_path: Path) -> int:
    """The advisory lock file beside a database, opened (created when missing)."""
    lock_path = db_path.with_name(db_path.name + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise LockError(f"{lock_path}: cannot create the lock file: {e.strerror or e}") from None


def _flock(fd: int, mode: int, timeout_s: float, on_first_wait: Callable[[], None] | None = None) -> bool:
    """Take ``flock(mode)`` on ``fd``, polling for up to ``timeout_s``; False when it stayed busy."""
    deadline = time.monotonic() + timeout_s
    waited = False
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            if not waited and on_first_wait is not None:
                on_first_wait()
            waited = True
            time.sleep(0.2)


@contextmanager
def exclusive(db_path: Path | str, timeout_s: float) -> Iterator[None]:
    """Hold the advisory lock of a database file for the duration of a run.

    Another run holding it makes this one wait up to ``timeout_s`` seconds (saying so once on
    stderr), then refuse with :class:`LockError`. The lock is an ``flock`` on ``<db>.lock``: the
    kernel releases it when its holder exits, however it exits (a killed run leaves no stale lock).
    """
    db_path = Path(db_path)
    if str(db_path) == ":memory:":
        yield
        return
    fd = _lock_file(db_path)

    def holder() -> str:
        return os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another run"

    def say_waiting() -> None:
        print(
            f"fapiao-audit: waiting up to {timeout_s:g} s for another run ({holder()}) to release {db_path}",
            file=sys.stderr,
            flush=True,
        )

    try:
        if not _flock(fd, fcntl.LOCK_EX, timeout_s, say_waiting):
            raise LockError(
                f"{db_path}: another fapiao-audit run is using this database ({holder()}); "
                f"waited {timeout_s:g} s. Retry when it has finished."
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)


@contextmanager
def shared_lock(db_path: Path, timeout_s: float) -> Iterator[None]:
    """Share the advisory lock of a database file with other readers.

    The single writer (:func:`exclusive`) holds the same lock exclusively, so readers wait for a
    writer and a writer waits for every reader: shards of a night run at the same time, never
    beside an ingest or a merge.
    """
    fd = _lock_file(db_path)
    try:
        if not _flock(fd, fcntl.LOCK_SH, timeout_s):
            raise LockError(f"{db_path}: a writer is using this database; waited {timeout_s:g} s to read it")
        yield
    finally:
        os.close(fd)


#: Test-only fault injection (see :func:`pause_point`).
PAUSE_ENV = "FAPIAO_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "FAPIAO_TEST_PAUSE_FILE"


def pause_point(point: str) -> None:
    """Test hook: stop at a named point so a test can kill or hold the run there.

    Inert unless the environment has ``FAPIAO_TEST_PAUSE_AT=<point>`` and
    ``FAPIAO_TEST_PAUSE_FILE=<file>``. The run then writes ``pid <pid> at <point>`` to ``<file>``
    and waits until ``<file>.release`` exists (at most 120 s), then carries on. Points:
    ``ingest`` (inside the transaction that replaces a source's rows, after the DELETE);
    ``sql:<text>`` (just before the first statement run through :func:`execute_sql` that contains
    ``<text>``, e.g. ``sql:INSERT INTO findings``: inside the transaction that replaces the night's
    findings, after the DELETE); ``<file>.sql:<name>`` (when a named statement is looked up);
    ``publish`` (the night's files half written in the temp folder); ``commit`` (every file and
    the manifest written, just before the swap into place).
    """
    if os.environ.get(PAUSE_ENV) != point:
        return
    marker = os.environ.get(PAUSE_FILE_ENV)
    if not marker:
        return
    release = Path(marker + ".release")
    tmp = Path(marker + ".part")
    tmp.write_text(f"pid {os.getpid()} at {point}\n", encoding="ascii")
    os.replace(tmp, marker)
    deadline = time.monotonic() + 120
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
