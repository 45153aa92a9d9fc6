"""What the Airflow tasks call: settings from Variables or FAPIAO_* variables, the business
night from the data interval (never from "now"), and one function per task.

Nothing here runs at DAG parse time; each function is called inside a task.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from .config import SHANGHAI, Config, load_config
from .errors import ConfigError, InputError
from .pipeline import (
    Paths,
    list_sources,
    open_db,
    parse_night,
    stage_ingest_source,
    stage_merge_shards,
    stage_publish,
    stage_reconcile,
    stage_reconcile_shard,
    stage_retention,
    stage_validate,
)
from .storage import check_retained

log = logging.getLogger("fapiao_audit")

PROJECT_DATA = Path(__file__).resolve().parents[2] / "data"
#: Airflow tasks wait this long for another task holding the DuckDB file (the pool normally
#: serialises them already).
TASK_LOCK_TIMEOUT_S = 900.0


def setting(name: str, default: str | None) -> str | None:
    """An Airflow Variable where Airflow is installed and the Variable is set, else the environment, else
    the default.

    Only an absent Variable falls back: an error from the Variables backend (a secrets backend down, the
    API server unreachable) fails the task, naming the Variable. Falling back then could point the night
    at another landing folder or another DuckDB file without a word.
    """
    try:
        from airflow.sdk import Variable
    except ImportError:  # the library without Airflow (the CLI's own set-up)
        value = None
    else:
        try:
            value = Variable.get(name, default=None)
        except Exception as e:
            raise ConfigError(
                f"Airflow Variable {name}: the Variables backend failed ({type(e).__name__}: {e}); not "
                f"falling back to the environment or the default. Fix the backend, or retry the task"
            ) from e
    return value or os.environ.get(name) or default


def settings() -> tuple[Paths, Config]:
    landing = Path(setting("FAPIAO_LANDING", str(PROJECT_DATA / "landing")) or PROJECT_DATA / "landing")
    reports = Path(setting("FAPIAO_REPORTS", str(PROJECT_DATA / "reports")) or PROJECT_DATA / "reports")
    db = Path(setting("FAPIAO_DB", str(PROJECT_DATA / "fapiao.duckdb")) or PROJECT_DATA / "fapiao.duckdb")
    cfg_path = setting("FAPIAO_CONFIG", None)
    cfg = load_config(Path(cfg_path) if cfg_path else None)
    cfg = replace(cfg, lock_timeout_s=max(cfg.lock_timeout_s, TASK_LOCK_TIMEOUT_S))
    acks = setting("FAPIAO_ACKS", None)  # finance's decision files; overrides acknowledgements_dir
    if acks:
        cfg = replace(cfg, acknowledgements_dir=acks)
    paths = Paths(landing, reports, db)
    paths.check_overlap()
    return paths, cfg


def night_for(params: dict[str, Any] | None, data_interval_start: datetime | None) -> date:
    """The business night: the `night` param if given, else the Beijing date the interval starts on."""
    override = (params or {}).get("night")
    if override:
        return parse_night(str(override))
    if data_interval_start is None:
        raise ConfigError("no data interval and no 'night' param: cannot tell which night to run")
    return data_interval_start.astimezone(SHANGHAI).date()


def deliveries_ready(night: date) -> bool:
    """True when the night's registry and at least one issuing system have delivered files."""
    paths, _ = settings()
    try:
        return bool(list_sources(paths, night))
    except InputError as e:
        log.info("night %s not ready: %s", night, e)
        return False


def sources_of(night: date) -> list[str]:
    paths, _ = settings()
    return list_sources(paths, night)


def ingest_one(night: date, source: str) -> dict[str, Any]:
    paths, cfg = settings()
    with open_db(paths, cfg) as con:
        reports = stage_ingest_source(con, paths, night, cfg, source)
    return {
        "source": source,
        "files": len(reports),
        "rows_read": sum(r.rows_read for r in reports),
        "rows_loaded": sum(r.rows_loaded for r in reports),
        "rows_rejected": sum(r.rows_rejected for r in reports),
        "rows_skipped": sum(r.rows_skipped for r in reports),
    }


def prune(night: date, sources: list[str], allow_missing: list[str] | None = None) -> None:
    """Check that every expected issuing system delivered (``allow_missing``: the DAG's param, as the CLI's
    ``--allow-missing``), then drop staged rows of sources that no longer deliver."""
    from .config import source_names
    from .ingest import prune_sources
    from .pipeline import check_sources

    paths, cfg = settings()
    if allow_missing:
        cfg = replace(cfg, allow_missing=source_names("allow_missing", list(allow_missing)))
    with open_db(paths, cfg) as con:
        check_retained(con, night, cfg)
        check_sources(con, paths, night, cfg, sources)
        prune_sources(con, night, sources)


def reconcile(night: date, shards: int | None = None) -> dict[str, int]:
    """Without ``shards``: every shard in this task. With it: merge the results of the shard tasks."""
    paths, cfg = settings()
    with open_db(paths, cfg) as con:
        if shards is None:
            return stage_reconcile(con, night, cfg).counts
        return stage_merge_shards(con, paths, night, cfg, shards).counts


def shard_count(requested: Any = None) -> int:
    """The shard count of a run: the DAG's ``shards`` param if given, else the configuration's."""
    _, cfg = settings()
    n = cfg.shards if requested in (None, "") else requested
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise ConfigError(f"shards: {requested!r} is not a whole number") from None
    if not 1 <= n <= 1024:
        raise ConfigError(f"shards: must be between 1 and 1024, got {n}")
    return n


def plan_shards(night: date, shards: int) -> list[int]:
    """Forget the night's earlier shard results and name the shards to run (one task each)."""
    from .reconcile import clear_shards, shard_root

    paths, _ = settings()
    clear_shards(shard_root(paths.tmp_dir, night))
    return list(range(shards))


def reconcile_shard(night: date, shard: int, shards: int) -> dict[str, Any]:
    """One shard, read-only on the database: shards of a night run side by side, in any worker
    that sees the same database folder; the result goes to the shard's own folder beside the database.
    """
    from .db import shared_lock
    from .reconcile import connect_read_only

    paths, cfg = settings()
    with shared_lock(paths.db, cfg.lock_timeout_s):
        con = connect_read_only(paths.db, cfg, allowed_dirs=paths.allowed_dirs(cfg))
        try:
            res = stage_reconcile_shard(con, paths, night, cfg, shard, shards)
        finally:
            con.close()
    out = {
        "night": night.isoformat(),
        "shard": shard,
        "shards": shards,
        "findings": res.findings,
        "issuer_keys": res.issuer_keys,
        "registry_keys": res.registry_keys,
        "seconds": res.seconds,
        "host": os.uname().nodename,
        "pid": os.getpid(),
        "worker": os.environ.get("FAPIAO_WORKER_NAME"),
    }
    log.info(
        "shard %s/%s of %s: %s findings in %.1f s on %s (pid %s, worker %s)",
        shard + 1,
        shards,
        out["night"],
        res.findings,
        res.seconds,
        out["host"],
        out["pid"],
        out["worker"] or "-",
    )
    return out


def quiet_gx_logs() -> None:
    """GX logs about 220 INFO lines while it imports (its docs registry); a task log wants none of them.
    Called before anything imports great_expectations; warnings and errors still show."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def validate(night: date) -> bool:
    quiet_gx_logs()
    paths, cfg = settings()
    with open_db(paths, cfg) as con:
        return bool(stage_validate(con, night, cfg)["success"])


def publish(night: date) -> dict[str, Any]:
    paths, cfg = settings()
    with open_db(paths, cfg) as con:
        out = stage_retention(con, cfg, stage_publish(con, paths, night, cfg))
    for warning in out.warnings:  # in the task's log, as the CLI prints them on stderr
        log.warning("%s", warning)
    return {
        "night": night.isoformat(),
        "outcome": out.outcome,
        "published": str(out.published),
        "counts": out.counts,
        "warnings": list(out.warnings),
    }


def report_dir(night: str) -> Path:
    """Where a night is published (for messages about it)."""
    paths, _ = settings()
    return paths.reports / night


def extract_sources(night: date) -> list[dict[str, Any]]:
    """Extract the configured PostgreSQL sources into the landing layout (nothing when none)."""
    from .pipeline import stage_extract

    paths, cfg = settings()
    return [
        {"source": r.source_system, "rows": r.rows, "file": str(r.file), "target": r.target}
        for r in stage_extract(paths, night, cfg)
    ]


def compact_database() -> dict[str, Any]:
    """Retention, then the database rewritten into a smaller file (the monthly DAG's one task)."""
    from .storage import compact

    paths, cfg = settings()
    res = compact(paths.db, cfg)  # settings() gives tasks the longer lock wait
    log.info(
        "compacted %s: %.1f MB -> %.1f MB; staged rows of %d night(s) removed",
        res.db,
        res.bytes_before / 1e6,
        res.bytes_after / 1e6,
        len(res.sweep.nights),
    )
    return {
        "db": str(res.db),
        "bytes_before": res.bytes_before,
        "bytes_after": res.bytes_after,
        "nights_removed": [n.isoformat() for n in res.sweep.nights],
    }
