"""Database sources: an issuing system that is a PostgreSQL table or query.

Its night's snapshot (issue times in the window) is extracted into the landing layout as a
Parquet file, ``<landing>/<D>/issuers/<system>/<system>.db-extract.parquet``, so ingestion,
the audit trail (file, line, checksum) and reruns are exactly those of a delivered file.

The connection comes from a URL in the configuration (command line) or an Airflow
connection id (DAG). Credentials never reach logs, DuckDB or the published summary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .config import SHANGHAI, Config, DatabaseSource, redact_url
from .errors import ConfigError, InputError

_BATCH = 50_000


@dataclass(frozen=True)
class ExtractReport:
    source_system: str
    file: Path
    rows: int
    target: str  # host/db and table or "query", no credentials


def resolve_url(src: DatabaseSource) -> str:
    """The source's URL: configured directly, or from the Airflow connection it names."""
    if src.url:
        return src.url
    if src.conn_id:
        try:
            from airflow.sdk import Connection

            return Connection.get(src.conn_id).get_uri()
        except Exception as e:  # no Airflow, or no such connection
            raise ConfigError(
                f"database source '{src.system}': Airflow connection '{src.conn_id}' is not available ({type(e).__name__})"
            ) from None
    raise ConfigError(f"database source '{src.system}': neither url nor conn_id is set")


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, date | time):
        return v.isoformat()
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).hex()
    return str(v)


def _query(src: DatabaseSource) -> Any:
    from psycopg import sql

    if src.query:
        return src.query
    schema_table = (src.table or "").split(".")
    return sql.SQL(
        "SELECT * FROM {t} WHERE {c} >= %(window_start)s AND {c} < %(window_end_exclusive)s ORDER BY {c}"
    ).format(t=sql.Identifier(*schema_table), c=sql.Identifier(src.time_column))


def extract_source(src: DatabaseSource, landing: Path, night: date, cfg: Config) -> ExtractReport:
    """Write one database source's snapshot of the night into the landing folder."""
    import psycopg

    url = resolve_url(src)
    start, end = cfg.window_for(night)
    params = {
        "night": night,
        "window_start": datetime.combine(start, time(0), tzinfo=SHANGHAI),
        "window_end_exclusive": datetime.combine(end + timedelta(days=1), time(0), tzinfo=SHANGHAI),
    }
    folder = landing / night.isoformat() / "issuers" / src.system
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{src.system}.db-extract.parquet"
    tmp = folder / f".{src.system}.db-extract.parquet.tmp-{os.getpid()}"
    target = f"{redact_url(url)} ({src.table or 'query'})"
    rows = 0
    try:
        with psycopg.connect(url, connect_timeout=15, options="-c TimeZone=Asia/Shanghai") as conn:
            conn.read_only = True
            with conn.cursor(name=f"fapiao_extract_{src.system}") as cur:
                cur.execute(_query(src), params)
                writer: pq.ParquetWriter | None = None
                names: list[str] = []
                try:
                    while True:
                        batch = cur.fetchmany(_BATCH)
                        if writer is None:
                            names = [d.name for d in cur.description or []]
                            schema = pa.schema([(n, pa.string()) for n in names])
                            writer = pq.ParquetWriter(tmp, schema)
                        if not batch:
                            break
                        cols = list(zip(*batch, strict=True))
                        writer.write_table(
                            pa.table(
                                [pa.array([_text(v) for v in c], pa.string()) for c in cols], names=names
                            )
                        )
                        rows += len(batch)
                finally:
                    if writer is not None:
                        writer.close()
    except psycopg.Error as e:
        tmp.unlink(missing_ok=True)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"database source '{src.system}' at {target}: {msg}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
    return ExtractReport(src.system, final, rows, target)


def extract_all(landing: Path, night: date, cfg: Config) -> list[ExtractReport]:
    return [extract_source(src, landing, night, cfg) for src in cfg.database_sources]
