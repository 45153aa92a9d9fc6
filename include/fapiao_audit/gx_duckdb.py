"""A Great Expectations 1.x datasource for DuckDB that keeps one connection open.

GX's stock SQL datasource checks a connection out of the SQLAlchemy pool for every
metric and returns it before the rows are fetched. A DuckDB result dies with its
connection (or is discarded when the pool resets the connection on return), so every
metric fails with ``list index out of range`` (GX issues 10738 and 11579). GX already
keeps a single persistent connection for SQLite; :class:`DuckDBExecutionEngine` does the
same for DuckDB, on the ``duckdb-sqlalchemy`` dialect, so that metrics run as SQL inside
DuckDB.

Two ways to connect:

* ``connection_string="duckdb:///path/to/file.duckdb"``: the engine opens (and, on
  :func:`close_datasource`, closes) its own connection to the file. Only for a file nobody
  else in the process has open: DuckDB refuses a second open with a different configuration.
* ``connection_id=...`` from :func:`borrowed_connection`: the engines run on a
  ``duckdb.DuckDBPyConnection`` the caller owns. Temporary views the caller created on it are
  visible (a ``con.cursor()`` would be a separate connection and would not see them), the
  engines never close it, and they never begin, commit or roll back a transaction on it.
  Do not call this while the caller's connection has a transaction open: DuckDB aborts an
  open transaction when one of its statements fails.

Importing this module registers the ``"duckdb"`` datasource type, so
``context.data_sources.add_duckdb(...)`` becomes available.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import duckdb
import sqlalchemy as sa
from duckdb_sqlalchemy import ConnectionWrapper
from great_expectations.compatibility import pydantic
from great_expectations.datasource.fluent.sql_datasource import SQLDatasource
from great_expectations.execution_engine.sqlalchemy_execution_engine import (
    SqlAlchemyExecutionEngine,
)
from sqlalchemy.pool import StaticPool

__all__ = [
    "DuckDBDatasource",
    "DuckDBExecutionEngine",
    "borrowed_connection",
    "close_datasource",
]


class DuckDBExecutionEngine(SqlAlchemyExecutionEngine):
    """SQLAlchemy execution engine that runs every metric on one persistent connection."""

    @contextlib.contextmanager
    def get_connection(self) -> Generator[sa.Connection, None, None]:
        # Same as GX does for sqlite: keep a reference so the connection is never returned to
        # the pool (which would discard the unfetched DuckDB result).
        if self._connection is None or self._connection.closed:
            self._connection = self.engine.connect()
        yield self._connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        try:
            if connection is not None and not connection.closed:
                connection.close()
        finally:
            self.engine.dispose()


class _BorrowedConnectionWrapper(ConnectionWrapper):
    """DB-API wrapper around a caller-owned DuckDB connection.

    Closing only detaches the wrapper; transaction control is left to the caller, so a
    pool reset or a commit issued by SQLAlchemy cannot end the caller's transaction.
    """

    autocommit = True

    def begin(self) -> None:
        pass

    def _begin(self) -> None:
        pass

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pending = self._pending_cursor() if self._pending_cursor is not None else None
        self._pending_cursor = None
        if pending is not None:
            pending.close()

    def close(self) -> None:
        try:
            self.rollback()
        finally:
            self.closed = True


@dataclass
class _Borrowed:
    connection: duckdb.DuckDBPyConnection
    engines: list[sa.Engine] = field(default_factory=list)
    execution_engines: list[DuckDBExecutionEngine] = field(default_factory=list)


_BORROWED: dict[str, _Borrowed] = {}
_BORROWED_LOCK = threading.Lock()


def _borrowed(connection_id: str) -> _Borrowed:
    with _BORROWED_LOCK:
        try:
            return _BORROWED[connection_id]
        except KeyError:
            raise ValueError(
                f"DuckDB connection {connection_id!r} is not (or no longer) lent to GX; "
                "use gx_duckdb.borrowed_connection()"
            ) from None


@contextlib.contextmanager
def borrowed_connection(con: duckdb.DuckDBPyConnection) -> Iterator[str]:
    """Lend ``con`` to GX for the duration of the block; yields the ``connection_id``.

    On exit every engine built on it is closed and disposed; ``con`` stays open.
    """
    connection_id = uuid.uuid4().hex
    entry = _Borrowed(con)
    with _BORROWED_LOCK:
        _BORROWED[connection_id] = entry
    try:
        yield connection_id
    finally:
        with _BORROWED_LOCK:
            _BORROWED.pop(connection_id, None)
        _dispose(entry.execution_engines, entry.engines)


def _dispose(execution_engines: list[DuckDBExecutionEngine], engines: list[sa.Engine]) -> None:
    errors: list[BaseException] = []
    for execution_engine in execution_engines:
        try:
            execution_engine.close()
        except Exception as exc:  # keep disposing the others
            errors.append(exc)
    for engine in engines:
        try:
            engine.dispose()
        except Exception as exc:
            errors.append(exc)
    execution_engines.clear()
    engines.clear()
    if errors:
        raise errors[0]


def _borrowed_engine(connection_id: str) -> sa.Engine:
    entry = _borrowed(connection_id)

    def creator() -> _BorrowedConnectionWrapper:
        # Looked up at every (re)connect, so an engine kept past the loan cannot reach the
        # connection any more.
        return _BorrowedConnectionWrapper(_borrowed(connection_id).connection)

    engine = sa.create_engine(
        "duckdb:///:memory:",
        creator=creator,
        poolclass=StaticPool,
        pool_reset_on_return=None,
        isolation_level="AUTOCOMMIT",
    )
    entry.engines.append(engine)
    return engine


class DuckDBDatasource(SQLDatasource):
    """GX fluent datasource for DuckDB (``type: "duckdb"``).

    Args:
        connection_string: ``duckdb:///path/to/file.duckdb`` (or ``duckdb:///:memory:``);
            ignored when ``connection_id`` is set.
        connection_id: id yielded by :func:`borrowed_connection`: run on that connection.
    """

    type: Literal["duckdb"] = "duckdb"  # type: ignore[assignment]
    connection_string: str = "duckdb:///:memory:"
    connection_id: str | None = None

    _EXTRA_EXCLUDED_EXEC_ENG_ARGS: ClassVar[set[str]] = {"connection_id"}
    _own_engines: list[sa.Engine] = pydantic.PrivateAttr(default_factory=list)
    _own_execution_engines: list[DuckDBExecutionEngine] = pydantic.PrivateAttr(default_factory=list)

    @property
    def execution_engine_type(self) -> builtins.type[SqlAlchemyExecutionEngine]:
        return DuckDBExecutionEngine

    def _create_engine(self) -> sa.Engine:
        if self.connection_id is not None:
            engine = _borrowed_engine(self.connection_id)
        else:
            kwargs: dict[str, Any] = dict(self.kwargs)
            kwargs.setdefault("poolclass", StaticPool)
            engine = sa.create_engine(str(self.connection_string), **kwargs)
        self._own_engines.append(engine)
        return engine

    def get_engine(self) -> sa.Engine:
        key = repr((str(self.connection_string), self.connection_id))  # the parent caches a string
        if self._engine is None or self._cached_connection_string != key:
            self._engine = self._create_engine()
            self._cached_connection_string = key
        return self._engine

    def get_execution_engine(self) -> DuckDBExecutionEngine:
        if self.connection_id is not None:
            _borrowed(self.connection_id)  # refuse once the loan has ended
        engine = self.get_engine()
        current = self._execution_engine
        if isinstance(current, DuckDBExecutionEngine) and current.engine is engine:
            return current
        execution_engine = DuckDBExecutionEngine(
            name=self.name, engine=engine, create_temp_table=self.create_temp_table
        )
        if self.connection_id is not None:
            _borrowed(self.connection_id).execution_engines.append(execution_engine)
        self._own_execution_engines.append(execution_engine)
        self._execution_engine = execution_engine
        return execution_engine


def close_datasource(datasource: DuckDBDatasource) -> None:
    """Close the persistent connection and dispose the engines of this datasource.

    A file opened through ``connection_string`` is released; a borrowed connection stays open.
    Engines on a borrowed connection are also disposed when the :func:`borrowed_connection`
    block ends, so forgetting this call there leaks nothing.
    """
    try:
        _dispose(datasource._own_execution_engines, datasource._own_engines)
    finally:
        datasource._engine = None
        datasource._execution_engine = None
