"""Configuration: one place, documented defaults, refused loudly when wrong.

A run's behaviour depends only on the night, the landing files and this object, so the
object is frozen and its dictionary form is published in ``summary.json``: an auditor can
see which tolerances and thresholds a night was judged by.

The file format is TOML (see ``config.example.toml``). Every key is optional; an unknown
key is an error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from .errors import ConfigError

SHANGHAI = ZoneInfo("Asia/Shanghai")

#: Source (issuing system) names become DuckDB values and folder names: keep them tame.
SOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

#: Canonical column names a per-source mapping may target.
CANONICAL_COLUMNS = (
    "invoice_code",
    "invoice_number",
    "invoice_type",
    "issue_time",
    "seller_tax_id",
    "seller_name",
    "buyer_tax_id",
    "buyer_name",
    "amount",
    "tax_amount",
    "tax_rate",
    "total_amount",
    "status",
    "original_invoice_number",
    "remark",
    "is_positive",
    "risk_level",
    "upload_status",
    "source_document",
    "item_name",
    "tax_code",
    "spec",
    "unit",
    "quantity",
    "unit_price",
)


@dataclass(frozen=True)
class Thresholds:
    """Limits the reconciliation expectation suite judges a night by."""

    max_missing_in_registry_rate: float = 0.01
    max_missing_in_issuer_rate: float = 0.01
    max_duplicate_across_issuers: int = 0
    max_field_mismatch_rate: float = 0.01
    max_rejected_rate: float = 0.001


def redact_url(url: str) -> str:
    """The URL without its password (for messages and the published configuration)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    # libpq also takes the password as a query parameter (?password=...).
    query = re.sub(r"(?i)(^|&)(password|sslpassword)=[^&]*", r"\1\2=***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_identifier_path(value: str, key: str) -> str:
    """A table name like ``schema.table``: each part an identifier, nothing else."""
    parts = value.split(".")
    if not 1 <= len(parts) <= 2 or not all(_IDENT.fullmatch(p) for p in parts):
        raise ConfigError(f"config key '{key}': {value!r} is not a table name (schema.table)")
    return value


@dataclass(frozen=True)
class DatabaseSource:
    """An issuing system read from PostgreSQL (see extract.py)."""

    system: str
    url: str | None = None
    conn_id: str | None = None
    table: str | None = None
    query: str | None = None
    time_column: str = "issue_time"

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "url": redact_url(self.url) if self.url else None,
            "conn_id": self.conn_id,
            "table": self.table,
            "query": self.query,
            "time_column": self.time_column,
        }


@dataclass(frozen=True)
class Config:
    """Settings of one run. Defaults follow DESIGN.md."""

    #: Length of the trailing issue-date window a snapshot covers, in days (window = [D-(n-1), D]).
    window_days: int = 7
    #: Invoices issued less than this many hours before ``as_of`` and absent from the
    #: registry are PENDING_SYNC (offline-issued invoices may take up to 48 h to sync).
    sync_grace_hours: float = 48.0
    #: Snapshot time. None: the start of D+1 in Asia/Shanghai.
    as_of: datetime | None = None
    #: Two amounts are equal when they differ by at most this much after rounding to the fen.
    amount_tolerance: Decimal = Decimal("0.00")
    #: |amount x rate - tax| above this is an INVALID_RECORD (tax_amount).
    tax_tolerance: Decimal = Decimal("0.06")
    #: Seller tax ids whose registry records are reconciled. Empty: every seller id seen in
    #: the issuers' snapshots of the window.
    monitored_sellers: tuple[str, ...] = ()
    #: Mask buyer names and individuals' tax ids in report.html / exceptions.xlsx / exceptions.csv.
    mask_html: bool = True
    mask_excel: bool = False
    mask_csv: bool = False
    #: One switch for every published output (report, workbook, CSV, summary).
    mask_all: bool = False
    #: Findings embedded in report.html (the full list is always in exceptions.csv).
    report_max_rows: int = 20000
    #: Excel data rows per sheet before a category is split into a further sheet.
    excel_max_rows: int = 1_048_575
    #: DuckDB resources: spill beyond the limit into temp_directory.
    duckdb_memory_limit: str = "3GB"
    duckdb_threads: int = 0
    duckdb_temp_directory: str | None = None
    #: Finance's decision files (the workbook with 处理状态 filled in, or a CSV of finding id, status, note):
    #: each run reads those it has not read before. None: no decisions are read.
    acknowledgements_dir: str | None = None
    #: Seconds to wait for another run holding the same DuckDB file before refusing.
    lock_timeout_s: float = 0.0
    #: Workbooks are refused (exit 2, naming the file) beyond these, before memory or time run away.
    xlsx_max_uncompressed_mb: int = 8192
    xlsx_max_shared_strings: int = 20_000_000
    xlsx_max_columns: int = 1024
    #: Partitions of the reconciliation by a hash of the invoice key.
    shards: int = 1
    #: Source completeness: an issuing system that delivered in any of the previous ``source_lookback_nights``
    #: published nights (or is named in ``expected_sources``) must deliver tonight, unless it is retired or
    #: allowed to be missing for this run (``--allow-missing``); else the night is refused.
    source_lookback_nights: int = 7
    #: Nights whose staged rows (invoices, lines, rejected rows) are kept: the ``retain_nights`` newest
    #: nights run (counted in nights run, not calendar days). Older nights' staged rows are removed after
    #: each published night (findings, runs, summaries and the ingested files' audit trail are kept
    #: forever); such a night can no longer be rerun. 0 keeps every night.
    retain_nights: int = 35
    #: Stage every row as a new version, as if nothing had been staged before (by default only rows that
    #: changed are written; see versions.py). Publishes the same files; for checking and after a change
    #: to normalisation.
    restage_all: bool = False
    expected_sources: tuple[str, ...] = ()
    retired_sources: tuple[str, ...] = ()
    allow_missing: tuple[str, ...] = ()
    #: Per-source column mappings: {system: {their header: canonical name}}.
    column_mappings: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Per-source value codes: {system: {canonical column: {their value: our value}}}, applied to the
    #: trimmed cell before normalisation ("2" = "normal", "-1" = "不征税"); unmapped values stay as they are.
    value_maps: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    #: Per-source headers to drop before mapping (a column that would map to the wrong meaning).
    ignore_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Issuing systems extracted from PostgreSQL into the landing layout before ingest.
    database_sources: tuple[DatabaseSource, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)

    def as_of_for(self, night: date) -> datetime:
        """The snapshot time for ``night`` as an aware Asia/Shanghai datetime."""
        if self.as_of is not None:
            return self.as_of
        return datetime.combine(night + timedelta(days=1), time(0), tzinfo=SHANGHAI)

    def window_for(self, night: date) -> tuple[date, date]:
        return night - timedelta(days=self.window_days - 1), night

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["as_of"] = self.as_of.isoformat() if self.as_of else None
        d["amount_tolerance"] = str(self.amount_tolerance)
        d["tax_tolerance"] = str(self.tax_tolerance)
        d["monitored_sellers"] = list(self.monitored_sellers)
        d["database_sources"] = [s.to_dict() for s in self.database_sources]
        return d


_SCALARS: dict[str, type] = {
    "window_days": int,
    "sync_grace_hours": float,
    "as_of": datetime,
    "amount_tolerance": Decimal,
    "tax_tolerance": Decimal,
    "monitored_sellers": list,
    "source_lookback_nights": int,
    "retain_nights": int,
    "restage_all": bool,
    "xlsx_max_uncompressed_mb": int,
    "xlsx_max_shared_strings": int,
    "xlsx_max_columns": int,
    "mask_html": bool,
    "mask_excel": bool,
    "mask_csv": bool,
    "mask_all": bool,
    "report_max_rows": int,
    "excel_max_rows": int,
    "duckdb_memory_limit": str,
    "duckdb_threads": int,
    "duckdb_temp_directory": str,
    "acknowledgements_dir": str,
    "lock_timeout_s": float,
    "shards": int,
}


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Turn a TOML value into the typed setting, or say which key is wrong and why."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected a whole number, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if kind is Decimal:
        try:
            d = Decimal(str(value))
        except InvalidOperation:
            raise ConfigError(f"config key '{key}': expected a decimal amount, got {value!r}") from None
        if not d.is_finite() or d < 0:
            raise ConfigError(f"config key '{key}': must be a non-negative amount, got {value!r}")
        return d
    if kind is datetime:
        if isinstance(value, datetime):
            dt = value
        elif isinstance(value, str):
            try:
                dt = datetime.fromisoformat(value)
            except ValueError:
                raise ConfigError(f"config key '{key}': expected an ISO timestamp, got {value!r}") from None
        else:
            raise ConfigError(f"config key '{key}': expected an ISO timestamp, got {value!r}")
        return dt if dt.tzinfo else dt.replace(tzinfo=SHANGHAI)
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config key '{key}': expected a list of tax ids (strings)")
        return tuple(v.strip().upper() for v in value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise AssertionError(kind)  # pragma: no cover


def source_names(where: str, value: Any) -> tuple[str, ...]:
    """A list of issuing-system names (folder names under issuers/), checked."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of issuing-system names")
    for v in value:
        if not SOURCE_NAME_RE.fullmatch(v):
            raise ConfigError(f"{where}: {v!r} is not an issuing-system name (letters, digits, '_' and '-')")
    return tuple(value)


def _check(cfg: Config) -> Config:
    if not 1 <= cfg.window_days <= 366:
        raise ConfigError(f"config key 'window_days': must be between 1 and 366, got {cfg.window_days}")
    if not 0 <= cfg.sync_grace_hours <= 24 * 60:
        raise ConfigError(
            f"config key 'sync_grace_hours': must be between 0 and 1440, got {cfg.sync_grace_hours}"
        )
    for key in ("xlsx_max_uncompressed_mb", "xlsx_max_shared_strings", "xlsx_max_columns"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"config key '{key}': must be at least 1")
    if not 0 <= cfg.source_lookback_nights <= 366:
        raise ConfigError("config key 'source_lookback_nights': must be between 0 and 366")
    if not 0 <= cfg.retain_nights <= 3660:
        raise ConfigError(
            f"config key 'retain_nights': must be between 0 (keep every night) and 3660, got {cfg.retain_nights}"
        )
    if not 1 <= cfg.shards <= 1024:
        raise ConfigError(f"config key 'shards': must be between 1 and 1024, got {cfg.shards}")
    if cfg.report_max_rows < 0:
        raise ConfigError("config key 'report_max_rows': must not be negative")
    if not 1 <= cfg.excel_max_rows <= 1_048_575:
        raise ConfigError("config key 'excel_max_rows': must be between 1 and 1048575")
    if cfg.duckdb_threads < 0:
        raise ConfigError("config key 'duckdb_threads': must not be negative")
    if not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", cfg.duckdb_memory_limit.strip()):
        raise ConfigError(
            f"config key 'duckdb_memory_limit': expected a size like '4GB', got {cfg.duckdb_memory_limit!r}"
        )
    for tax_id in cfg.monitored_sellers:
        if not re.fullmatch(r"[0-9A-Z]{15,20}", tax_id):
            raise ConfigError(f"config key 'monitored_sellers': {tax_id!r} is not a tax id")
    t = cfg.thresholds
    for name in (
        "max_missing_in_registry_rate",
        "max_missing_in_issuer_rate",
        "max_field_mismatch_rate",
        "max_rejected_rate",
    ):
        v = getattr(t, name)
        if not 0 <= v <= 1:
            raise ConfigError(f"config key 'thresholds.{name}': must be a rate between 0 and 1, got {v}")
    if t.max_duplicate_across_issuers < 0:
        raise ConfigError("config key 'thresholds.max_duplicate_across_issuers': must not be negative")
    return cfg


def unknown_key(key: str, valid: Any) -> ConfigError:
    """The error for an unknown key: the closest valid spelling, if any, and every valid key."""
    prefix, _, name = key.rpartition(".")
    choices = sorted(str(v) for v in valid)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    hint = f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else ""
    where = f"[{prefix}]" if prefix else "the top level"
    return ConfigError(f"unknown config key '{key}'{hint} Valid keys at {where}: {', '.join(choices)}")


def build_config(data: dict[str, Any]) -> Config:
    """Build a checked Config from a parsed TOML document (or any such dict)."""
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "thresholds":
            if not isinstance(value, dict):
                raise ConfigError("config key 'thresholds': expected a table")
            tkw: dict[str, Any] = {}
            for tkey, tval in value.items():
                if tkey not in Thresholds.__dataclass_fields__:
                    raise unknown_key(f"thresholds.{tkey}", Thresholds.__dataclass_fields__)
                kind = int if tkey == "max_duplicate_across_issuers" else float
                tkw[tkey] = _coerce(f"thresholds.{tkey}", tval, kind)
            kwargs["thresholds"] = Thresholds(**tkw)
        elif key == "sources":
            kwargs["column_mappings"], kwargs["value_maps"], kwargs["ignore_columns"] = _sources(value)
        elif key == "database_sources":
            kwargs["database_sources"] = _database_sources(value)
        elif key in ("expected_sources", "retired_sources"):
            kwargs[key] = source_names(f"config key '{key}'", value)
        elif key in _SCALARS:
            kwargs[key] = _coerce(key, value, _SCALARS[key])
        else:
            raise unknown_key(key, _TOP_LEVEL_KEYS)
    return _check(Config(**kwargs))


#: The keys a configuration file may hold at its top level.
_TOP_LEVEL_KEYS = (
    "thresholds",
    "sources",
    "database_sources",
    "expected_sources",
    "retired_sources",
    *_SCALARS,
)


_SOURCE_KEYS = ("columns", "values", "ignore_columns")


def _sources(
    value: Any,
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, dict[str, str]]], dict[str, tuple[str, ...]]]:
    """[sources.<system>]: header mappings (columns), value codes (values.<column>), ignore_columns."""
    if not isinstance(value, dict):
        raise ConfigError("config key 'sources': expected a table of sources")
    columns: dict[str, dict[str, str]] = {}
    values: dict[str, dict[str, dict[str, str]]] = {}
    ignore: dict[str, tuple[str, ...]] = {}
    for system, spec in value.items():
        key = f"sources.{system}"
        if not SOURCE_NAME_RE.fullmatch(system):
            raise ConfigError(f"config key '{key}': not a valid source name")
        if not isinstance(spec, dict):
            raise ConfigError(f"config key '{key}': expected a table")
        unknown = sorted(set(spec) - set(_SOURCE_KEYS))
        if unknown:
            raise unknown_key(f"{key}.{unknown[0]}", _SOURCE_KEYS)
        cols = _table(f"{key}.columns", spec.get("columns", {}))
        mapping: dict[str, str] = {}
        for header, canonical in cols.items():
            if canonical not in CANONICAL_COLUMNS:
                raise ConfigError(
                    f"config key '{key}.columns.{header}': {canonical!r} is not a canonical column"
                )
            mapping[str(header)] = canonical
        columns[system] = mapping
        codes: dict[str, dict[str, str]] = {}
        for canonical, table in _table(f"{key}.values", spec.get("values", {})).items():
            if canonical not in CANONICAL_COLUMNS:
                raise ConfigError(f"config key '{key}.values.{canonical}': not a canonical column")
            codes[canonical] = {}
            for code, meaning in _table(f"{key}.values.{canonical}", table).items():
                if not isinstance(meaning, str | int | float) or isinstance(meaning, bool):
                    raise ConfigError(f"config key '{key}.values.{canonical}.{code}': expected a text value")
                codes[canonical][str(code).strip()] = str(meaning)
        if codes:
            values[system] = codes
        names = spec.get("ignore_columns", [])
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise ConfigError(f"config key '{key}.ignore_columns': expected a list of header names")
        if names:
            ignore[system] = tuple(names)
    return columns, values, ignore


def _table(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"config key '{key}': expected a table")
    return value


def _database_sources(value: Any) -> tuple[DatabaseSource, ...]:
    if not isinstance(value, dict):
        raise ConfigError("config key 'database_sources': expected a table of sources")
    out = []
    allowed = {"url", "conn_id", "table", "query", "time_column"}
    for system, spec in sorted(value.items()):
        key = f"database_sources.{system}"
        if not SOURCE_NAME_RE.fullmatch(system) or system.lower() == "registry":
            raise ConfigError(f"config key '{key}': not a valid source name")
        if not isinstance(spec, dict):
            raise ConfigError(f"config key '{key}': expected a table")
        unknown = set(spec) - allowed
        if unknown:
            raise unknown_key(f"{key}.{sorted(unknown)[0]}", allowed)
        for k, v in spec.items():
            if not isinstance(v, str) or not v.strip():
                raise ConfigError(f"config key '{key}.{k}': expected a non-empty string")
        if not (spec.get("url") or spec.get("conn_id")):
            raise ConfigError(f"config key '{key}': set url (command line) or conn_id (Airflow connection)")
        if bool(spec.get("table")) == bool(spec.get("query")):
            raise ConfigError(f"config key '{key}': set exactly one of table or query")
        if spec.get("url") and not spec["url"].startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"config key '{key}.url': only postgresql:// URLs are supported")
        if spec.get("table"):
            check_identifier_path(spec["table"], f"{key}.table")
        time_column = spec.get("time_column", "issue_time")
        check_identifier_path(time_column, f"{key}.time_column")
        if "." in time_column:
            raise ConfigError(f"config key '{key}.time_column': a column name, not a path")
        out.append(
            DatabaseSource(
                system,
                spec.get("url"),
                spec.get("conn_id"),
                spec.get("table"),
                spec.get("query"),
                time_column,
            )
        )
    return tuple(out)


def load_config(path: Path | None) -> Config:
    """Read a TOML configuration file; None gives the defaults."""
    if path is None:
        return Config()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read configuration: {e.strerror or e}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        return build_config(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
