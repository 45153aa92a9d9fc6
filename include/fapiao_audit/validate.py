"""Run the Great Expectations suites of ``expectations/`` on a night's staged data and findings.

The heavy row-level work stays in DuckDB: each batch is a temporary relation on the caller's
connection (views ``gx_registry`` and ``gx_issuer_<system>`` over the night's ``staged_invoices``, read
once into the temp table ``night_invoices`` (versions.night_table),
``gx_lines`` over ``staged_lines``, ``gx_findings`` over ``findings``, the one-row temp table ``gx_reconciliation_stats``,
``gx_finding_categories``, the model's category codes, and ``gx_thresholds``, the suite's thresholds), and
GX runs its metrics as SQL on that same connection through :mod:`fapiao_audit.gx_duckdb`.
GX only judges thresholds and shapes the results. The relations are dropped afterwards.

Suite files (``SUITE_FILES``): ``staged_registry.json`` runs on the registry's rows,
``staged_issuer.json`` once per issuing system, ``reconciliation.json`` on the stats row
(its queries also read ``gx_findings``).

Suites are GX 1.x JSON that stock GX runs as they are; nothing in them is rewritten here.
Thresholds are configuration through GX's own mechanism and through data:

* ``{"$PARAMETER": "name"}`` as a kwarg value is a GX suite parameter, passed to GX as
  ``expectation_parameters``;
* an ``unexpected_rows_query`` reads a number from ``gx_thresholds``, a one-row temp table with a
  column per numeric parameter of the suite (``(SELECT amount_tolerance FROM gx_thresholds)``),
  created with bound values before the suite runs. (GX substitutes parameters for whole kwarg
  values only, never inside a query's text.)

Values come from the ``thresholds`` argument, else from the suite's ``meta.parameters``
defaults; ``window_start``/``window_end`` default to the night's window.

Each suite run's result is also kept as GX wrote it (``ExpectationSuiteValidationResult``, as its
``to_json_dict()``), for publishing beside the report (``gx_results.json``).

The views are rendered only from the checked night (a ``date``) and from source names that
match the configured pattern; DuckDB cannot bind parameters inside a view definition.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from .config import SOURCE_NAME_RE
from .db import quote_ident
from .errors import SuiteError
from .model import CATEGORIES
from .versions import NIGHT_TABLE, night_table

# No usage statistics leave the job (read by GX when a context is created).
os.environ["GX_ANALYTICS_ENABLED"] = "false"

__all__ = [
    "DEFAULT_WINDOW_DAYS",
    "SUITE_FILES",
    "load_suite_counts",
    "run_expectations",
]

#: Suite file per stage.
SUITE_FILES = {
    "registry": "staged_registry.json",
    "issuer": "staged_issuer.json",
    "reconciliation": "reconciliation.json",
}
DEFAULT_WINDOW_DAYS = 7
#: Offending rows listed per expectation.
SAMPLE_SIZE = 5
_MAX_ERROR_CHARS = 2000

# A ``$name`` placeholder of the earlier suite format; GX would hand it to DuckDB as a bind parameter.
_QUERY_PARAM_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_GX_PARAM_KEY = "$PARAMETER"
_SQLALCHEMY_BACKGROUND_RE = re.compile(r"\s*\(Background on this error at: [^)]*\)")
_QUERY_TYPE = "unexpected_rows_expectation"
#: Where an expectation sat in its suite file, kept in its meta while GX runs it (removed from saved results).
_POSITION = "suite_position"

_REGISTRY_VIEW = "gx_registry"
_FINDINGS_VIEW = "gx_findings"
_STATS_VIEW = "gx_reconciliation_stats"
#: The model's finding categories, one row each (code, family): suites name it instead of listing codes.
_CATEGORIES_TABLE = "gx_finding_categories"
#: The suite's numeric thresholds, one row, one column each: what a query compares with.
_THRESHOLDS_TABLE = "gx_thresholds"
_TABLES = (_STATS_VIEW, _CATEGORIES_TABLE, _THRESHOLDS_TABLE)

# Rendered with {night} = DATE 'YYYY-MM-DD' from a checked date, {view} = a quoted identifier
# and {system_filter} holding a checked source name as a literal.
# The night's staged invoices are read from the temp table versions.night_table copies them into:
# staged_invoices is a view joining each night's seen rows to their versions, and GX asks its batches
# dozens of queries (each about 4x dearer on the join than on a table; the copy costs about as much as
# 6 of them).
_STAGED_VIEW_SQL = (
    "CREATE OR REPLACE TEMP VIEW {view} AS "
    f"SELECT * FROM {NIGHT_TABLE} WHERE night = {{night}} AND source_kind = {{kind}}{{system_filter}}"
)
_LINES_VIEW = "gx_lines"
_LINES_VIEW_SQL = (
    f"CREATE OR REPLACE TEMP VIEW {_LINES_VIEW} AS SELECT * FROM staged_lines WHERE night = {{night}}"
)
_FINDINGS_VIEW_SQL = (
    f"CREATE OR REPLACE TEMP VIEW {_FINDINGS_VIEW} AS SELECT * FROM findings WHERE night = {{night}}"
)
# One row of counts and rates the reconciliation suite judges. A TEMP TABLE, not a view: GX
# queries its batch several times, and each evaluation groups the night's staged rows by key.
# Rates are 0 when their denominator is empty (the *_keys_present expectations catch that).
# Monitored sellers: those seen in the issuers' snapshots, plus any a MISSING_IN_ISSUER finding
# names (configured sellers that issued nothing this night).
_STATS_TABLE_SQL = f"""
CREATE OR REPLACE TEMP TABLE {_STATS_VIEW} AS
WITH monitored_sellers AS (
    SELECT DISTINCT seller_tax_id FROM {NIGHT_TABLE}
    WHERE night = {{night}} AND source_kind = 'issuer' AND seller_tax_id IS NOT NULL
    UNION
    SELECT seller_tax_id FROM {_FINDINGS_VIEW}
    WHERE category = 'MISSING_IN_ISSUER' AND seller_tax_id IS NOT NULL
),
per_key AS (
    SELECT
        bool_or(source_kind = 'issuer') AS in_issuer,
        bool_or(source_kind = 'registry') AS in_registry,
        bool_or(source_kind = 'registry' AND seller_tax_id IN (SELECT seller_tax_id FROM monitored_sellers))
            AS in_monitored_registry
    FROM {NIGHT_TABLE}
    WHERE night = {{night}} AND invoice_key IS NOT NULL
    GROUP BY invoice_key
),
keys AS (
    SELECT
        count(*) FILTER (WHERE in_issuer) AS issuer_keys,
        count(*) FILTER (WHERE in_registry) AS registry_keys,
        count(*) FILTER (WHERE in_issuer AND in_registry) AS matched_keys,
        count(*) FILTER (WHERE in_monitored_registry) AS monitored_registry_keys
    FROM per_key
),
finding_keys AS (
    SELECT
        count(DISTINCT invoice_key) FILTER (WHERE category = 'MISSING_IN_REGISTRY') AS missing_in_registry,
        count(DISTINCT invoice_key) FILTER (WHERE category = 'PENDING_SYNC') AS pending_sync,
        count(DISTINCT invoice_key) FILTER (WHERE category = 'MISSING_IN_ISSUER') AS missing_in_issuer,
        count(DISTINCT invoice_key) FILTER (WHERE category = 'DUPLICATE_IN_SOURCE') AS duplicate_in_source,
        count(DISTINCT invoice_key) FILTER (WHERE category = 'DUPLICATE_ACROSS_ISSUERS') AS duplicate_across_issuers,
        count(DISTINCT invoice_key) FILTER (WHERE category = 'FIELD_MISMATCH') AS field_mismatch,
        count(*) AS findings
    FROM {_FINDINGS_VIEW}
),
files AS (
    SELECT coalesce(sum(rows_read), 0) AS rows_read, coalesce(sum(rows_rejected), 0) AS rows_rejected
    FROM ingested_files
    WHERE night = {{night}} AND duplicate_of IS NULL
)
SELECT
    keys.*,
    finding_keys.*,
    files.*,
    coalesce(missing_in_registry / nullif(issuer_keys, 0), 0)::DOUBLE AS missing_in_registry_rate,
    coalesce(missing_in_issuer / nullif(monitored_registry_keys, 0), 0)::DOUBLE AS missing_in_issuer_rate,
    coalesce(field_mismatch / nullif(matched_keys, 0), 0)::DOUBLE AS field_mismatch_rate,
    coalesce(rows_rejected / nullif(rows_read, 0), 0)::DOUBLE AS rejected_rate
FROM keys, finding_keys, files
"""

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- suites


class _SuiteFile:
    """A suite file as read: its raw expectations and metadata."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SuiteError(f"expectation suite {path}: cannot read the file: {e}") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise SuiteError(f"expectation suite {path}: not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise SuiteError(f"expectation suite {path}: expected a JSON object")
        name = doc.get("name")
        if not isinstance(name, str) or not name:
            raise SuiteError(f"expectation suite {path}: 'name' must be a non-empty string")
        expectations = doc.get("expectations")
        if not isinstance(expectations, list):
            raise SuiteError(f"expectation suite {path}: 'expectations' must be a list")
        meta = doc.get("meta") or {}
        if not isinstance(meta, dict):
            raise SuiteError(f"expectation suite {path}: 'meta' must be an object")
        names: set[str] = set()
        for i, exp in enumerate(expectations):
            if not isinstance(exp, dict) or not isinstance(exp.get("type"), str):
                raise SuiteError(f"expectation suite {path}: expectation #{i + 1} needs a 'type' string")
            if not isinstance(exp.get("kwargs") or {}, dict):
                raise SuiteError(
                    f"expectation suite {path}: expectation #{i + 1}: 'kwargs' must be an object"
                )
            query = (exp.get("kwargs") or {}).get("unexpected_rows_query")
            if isinstance(query, str) and "{batch}" not in query:
                # GX only prints a warning and then queries outside the batch
                raise SuiteError(
                    f"expectation suite {path}: expectation #{i + 1}: unexpected_rows_query must use {{batch}}"
                )
            if isinstance(query, str) and _QUERY_PARAM_RE.search(query):
                name = _QUERY_PARAM_RE.search(query).group(1)  # type: ignore[union-attr]
                raise SuiteError(
                    f"expectation suite {path}: expectation #{i + 1}: ${name} in unexpected_rows_query: a query "
                    f"reads its thresholds from the gx_thresholds table, write (SELECT {name} FROM gx_thresholds) "
                    "and declare it in meta.parameters"
                )
            exp_meta = exp.get("meta") or {}
            if not isinstance(exp_meta, dict):
                raise SuiteError(f"expectation suite {path}: expectation #{i + 1}: 'meta' must be an object")
            label = exp_meta.get("name")
            if label is not None:
                if label in names:
                    raise SuiteError(f"expectation suite {path}: expectation name {label!r} is used twice")
                names.add(label)
        parameters = meta.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise SuiteError(f"expectation suite {path}: 'meta.parameters' must be an object")
        sample_columns = meta.get("sample_columns") or []
        if not isinstance(sample_columns, list) or not all(isinstance(c, str) for c in sample_columns):
            raise SuiteError(
                f"expectation suite {path}: 'meta.sample_columns' must be a list of column names"
            )
        self.name: str = name
        self.expectations: list[dict[str, Any]] = expectations
        self.meta: dict[str, Any] = meta
        self.parameter_defaults: dict[str, Any] = {
            k: (v.get("default") if isinstance(v, dict) else v) for k, v in parameters.items()
        }
        self.sample_columns: list[str] = sample_columns

    def parameter_names(self) -> tuple[set[str], set[str]]:
        """(GX suite parameters the kwargs use, parameters declared in meta.parameters)."""
        gx_params: set[str] = set()
        for exp in self.expectations:
            for value in (exp.get("kwargs") or {}).values():
                if isinstance(value, dict) and _GX_PARAM_KEY in value:
                    gx_params.add(str(value[_GX_PARAM_KEY]))
        return gx_params, set(self.parameter_defaults)


def _label(exp: Mapping[str, Any]) -> str:
    meta = exp.get("meta") or {}
    return str(meta.get("name") or exp.get("type"))


@contextlib.contextmanager
def _gx_quiet() -> Iterator[None]:
    """Silence GX's logging (a traceback for every expectation it skips) and its warnings.

    GX also ``print``s when a query lacks ``{batch}``; such a suite is refused before GX sees it.
    """
    gx_logger = logging.getLogger("great_expectations")
    level = gx_logger.level
    gx_logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        gx_logger.setLevel(level)


def _gx_load(name: str, expectations: list[dict[str, Any]]) -> tuple[Any, int, list[str]]:
    """(ExpectationSuite or None, expectations GX kept, why it refused the others).

    GX skips an expectation of an unknown type with only a log line, and raises for one whose
    kwargs fail validation; either way the count it keeps tells.
    """
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    with _gx_quiet():
        try:
            suite = gx.ExpectationSuite(name=name, expectations=copy.deepcopy(expectations))
        except Exception:
            suite = None
        if suite is not None and len(suite.expectations) == len(expectations):
            return suite, len(expectations), []
        loaded = 0
        problems = []
        for i, exp in enumerate(expectations):
            try:
                ExpectationConfiguration(**copy.deepcopy(exp)).to_domain_obj()
                loaded += len(gx.ExpectationSuite(name=name, expectations=[copy.deepcopy(exp)]).expectations)
            except Exception as e:
                problems.append(
                    f"expectation #{i + 1} {_label(exp)}: {type(e).__name__}: {_one_line(str(e))}"
                )
    return None, loaded, problems


def _build_suite(suite_file: _SuiteFile, expectations: list[dict[str, Any]]) -> Any:
    """An ExpectationSuite with every expectation of the file, or SuiteError naming the file."""
    suite, loaded, problems = _gx_load(suite_file.name, expectations)
    if suite is not None:
        return suite
    raise SuiteError(
        f"expectation suite {suite_file.path}: GX accepted {loaded} of {len(expectations)} expectations: "
        + ("; ".join(problems) or "no reason given")
    )


def load_suite_counts(suites_dir: Path) -> dict[str, tuple[int, int]]:
    """For each ``*.json`` suite in ``suites_dir``: (expectations in the file, expectations GX loads)."""
    counts: dict[str, tuple[int, int]] = {}
    for path in sorted(Path(suites_dir).glob("*.json")):
        suite_file = _SuiteFile(path)
        _, loaded, _ = _gx_load(suite_file.name, suite_file.expectations)
        counts[path.name] = (len(suite_file.expectations), loaded)
    return counts


# --------------------------------------------------------------------------- parameters


def _check_number(name: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise SuiteError(f"threshold {name!r}: expected a number, got {value!r}")
    number = Decimal(str(value))
    if not number.is_finite() or number < 0:
        raise SuiteError(f"threshold {name!r}: must be a finite number >= 0, got {value!r}")
    if (name.endswith("_rate") or name.endswith("_ratio")) and number > 1:
        raise SuiteError(f"threshold {name!r}: must be a rate between 0 and 1, got {value!r}")
    return number


def _check_date(name: str, value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise SuiteError(f"threshold {name!r}: expected a date (YYYY-MM-DD), got {value!r}")


def _check_night(night: Any) -> date:
    if isinstance(night, datetime) or not isinstance(night, date):
        raise TypeError(f"night must be a datetime.date, got {night!r}")
    return date.fromisoformat(night.isoformat())


def _resolve_parameters(
    suite_file: _SuiteFile, night: date, thresholds: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Decimal], dict[str, Any]]:
    """(GX expectation_parameters, the numbers of gx_thresholds, values as JSON) of a suite."""
    window_days = thresholds.get("window_days", DEFAULT_WINDOW_DAYS)
    if isinstance(window_days, bool) or not isinstance(window_days, int) or not 1 <= window_days <= 366:
        raise SuiteError(
            f"threshold 'window_days': expected a whole number of days 1..366, got {window_days!r}"
        )
    computed = {"window_start": night - timedelta(days=window_days - 1), "window_end": night}

    gx_names, declared = suite_file.parameter_names()
    gx_params: dict[str, Any] = {}
    numbers: dict[str, Decimal] = {}
    used: dict[str, Any] = {}
    for name in sorted(gx_names | declared):
        if name in thresholds and thresholds[name] is not None:
            raw = thresholds[name]
        elif suite_file.parameter_defaults.get(name) is not None:
            raw = suite_file.parameter_defaults[name]
        elif name in computed:
            raw = computed[name]
        else:
            raise SuiteError(
                f"expectation suite {suite_file.path}: parameter {name!r} has no value "
                "(pass it in thresholds or give it a default in meta.parameters)"
            )
        if name.startswith("window_"):
            day = _check_date(name, raw)
            gx_params[name] = day.isoformat()
            used[name] = day.isoformat()
        else:
            number = _check_number(name, raw)
            as_json = raw if isinstance(raw, int) else float(number)
            gx_params[name] = as_json
            numbers[name] = number
            used[name] = as_json
    if "window_start" in used and "window_end" in used and used["window_start"] > used["window_end"]:
        raise SuiteError(f"window_start {used['window_start']} is after window_end {used['window_end']}")
    return {k: v for k, v in gx_params.items() if k in gx_names}, numbers, used


def _sql_type(number: Decimal) -> str:
    """The type DuckDB gives the number written as a literal (``0.01`` is DECIMAL(3,2), ``3`` INTEGER):
    a threshold compares exactly as it would written into the query."""
    text = format(number, "f")
    whole, _, fraction = text.partition(".")
    if not fraction:
        return "INTEGER" if abs(number) < 2**31 else "BIGINT"
    width = len(whole.lstrip("-")) + len(fraction)
    return f"DECIMAL({width}, {len(fraction)})" if width <= 38 else "DOUBLE"


def _create_thresholds(
    con: duckdb.DuckDBPyConnection, numbers: Mapping[str, Decimal], views: list[str]
) -> None:
    """(Re)create ``gx_thresholds``: one row, a column per number, values bound, never written into SQL."""
    names = sorted(numbers)
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise SuiteError(f"threshold {name!r}: not a column name")
    columns = ", ".join(f"CAST(? AS {_sql_type(numbers[n])}) AS {quote_ident(n)}" for n in names)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {_THRESHOLDS_TABLE} AS SELECT {columns or 'NULL AS none'}",
        [format(numbers[n], "f") for n in names],
    )
    if _THRESHOLDS_TABLE not in views:
        views.append(_THRESHOLDS_TABLE)


def _positioned(suite_file: _SuiteFile) -> list[dict[str, Any]]:
    """The suite's expectations as they are, each told its position (results come back per group)."""
    expectations = copy.deepcopy(suite_file.expectations)
    for i, exp in enumerate(expectations):
        meta = dict(exp.get("meta") or {})
        meta[_POSITION] = i
        exp["meta"] = meta
    return expectations


# --------------------------------------------------------------------------- batches


def _issuer_view(system: str) -> str:
    return f"gx_issuer_{system}"


def _create_views(con: duckdb.DuckDBPyConnection, night: date, sources: list[str], views: list[str]) -> None:
    """Create the batch views; ``views`` collects the names created, for dropping them later."""
    night_sql = f"DATE '{night.isoformat()}'"

    def create(view: str, sql: str) -> None:
        con.execute(sql)
        views.append(view)

    create(
        _REGISTRY_VIEW,
        _STAGED_VIEW_SQL.format(
            view=quote_ident(_REGISTRY_VIEW), night=night_sql, kind="'registry'", system_filter=""
        ),
    )
    for system in sources:
        view = _issuer_view(system)
        create(
            view,
            _STAGED_VIEW_SQL.format(
                view=quote_ident(view),
                night=night_sql,
                kind="'issuer'",
                system_filter=f" AND source_system = '{system}'",
            ),
        )
    create(_LINES_VIEW, _LINES_VIEW_SQL.format(night=night_sql))
    create(_FINDINGS_VIEW, _FINDINGS_VIEW_SQL.format(night=night_sql))
    create(_STATS_VIEW, _STATS_TABLE_SQL.format(night=night_sql))
    create(
        _CATEGORIES_TABLE, f"CREATE OR REPLACE TEMP TABLE {_CATEGORIES_TABLE} (code VARCHAR, family VARCHAR)"
    )
    con.executemany(
        f"INSERT INTO {_CATEGORIES_TABLE} VALUES (?, ?)", [[c.code, c.family] for c in CATEGORIES]
    )


def _drop_views(con: duckdb.DuckDBPyConnection, views: list[str]) -> None:
    for view in reversed(views):
        try:
            kind = "TABLE" if view in _TABLES else "VIEW"
            con.execute(f"DROP {kind} IF EXISTS temp.{quote_ident(view)}")
        except duckdb.Error as e:  # the caller's connection stays usable; a stale temp view is harmless
            log.warning("could not drop temporary view %s: %s", view, e)


# --------------------------------------------------------------------------- results


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    return str(value)


def _error_of(exception_info: Any) -> str | None:
    """The message of a crashed expectation. GX reports one dict, or one per failed metric."""
    if not isinstance(exception_info, Mapping):
        return None
    infos = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    messages = []
    for info in infos:
        if isinstance(info, Mapping) and info.get("raised_exception"):
            message = str(info.get("exception_message") or "expectation raised an exception")
            if message not in messages:
                messages.append(message)
    if not messages:
        return None
    text = _SQLALCHEMY_BACKGROUND_RE.sub("", messages[0]).strip()
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def _sample_of_row(row: Mapping[str, Any]) -> str | None:
    key = row.get("invoice_key")
    if key not in (None, ""):
        return str(key)
    if row.get("file") is not None and row.get("line") is not None:
        return f"{row['file']}:{row['line']}"
    values = [f"{k}={_jsonable(v)}" for k, v in row.items()]
    return ", ".join(values) if values else None


def _samples(result: Mapping[str, Any]) -> list[str]:
    rows = None
    details = result.get("details")
    if isinstance(details, Mapping) and isinstance(details.get("unexpected_rows"), list):
        rows = details["unexpected_rows"]
    elif isinstance(result.get("partial_unexpected_index_list"), list):
        rows = result["partial_unexpected_index_list"]
    out: list[str] = []
    if rows is not None:
        candidates = [_sample_of_row(r) if isinstance(r, Mapping) else str(r) for r in rows]
    else:
        candidates = [
            json.dumps(_jsonable(v), ensure_ascii=False) if not isinstance(v, str) else v
            for v in result.get("partial_unexpected_list") or []
        ]
    for c in candidates:
        if c is not None and c not in out:
            out.append(c)
        if len(out) == SAMPLE_SIZE:
            break
    return out


def _result_entry(exp: Mapping[str, Any], evr: Any) -> dict[str, Any]:
    kwargs = exp.get("kwargs") or {}
    meta = exp.get("meta") or {}
    column = kwargs.get("column")
    if column is None and isinstance(kwargs.get("column_list"), list):
        column = ",".join(str(c) for c in kwargs["column_list"])
    error = _error_of(getattr(evr, "exception_info", None)) if evr is not None else "no result from GX"
    result = dict(getattr(evr, "result", None) or {}) if evr is not None else {}
    is_query = exp.get("type") == _QUERY_TYPE
    observed = result.get("observed_value")
    unexpected_count = result.get("unexpected_count")
    if is_query and unexpected_count is None and isinstance(observed, int):
        unexpected_count = observed
    success = bool(getattr(evr, "success", False)) and error is None
    return {
        "expectation": _label(exp),
        "type": str(exp.get("type")),
        "column": column,
        "success": success,
        "error": error,
        "observed_value": _jsonable(observed),
        "unexpected_count": int(unexpected_count) if isinstance(unexpected_count, int | float) else None,
        "unexpected_sample": [] if error else _samples(result),
        "description": meta.get("description"),
    }


# --------------------------------------------------------------------------- running


def _make_context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _validate_suite(
    con: duckdb.DuckDBPyConnection,
    views: list[str],
    datasource: Any,
    view: str,
    suite_file: _SuiteFile,
    target: str,
    night: date,
    thresholds: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the suite's entry in run_expectations' result, GX's ExpectationSuiteValidationResult as JSON)."""
    gx_params, numbers, used = _resolve_parameters(suite_file, night, thresholds)
    _create_thresholds(con, numbers, views)
    expectations = _positioned(suite_file)

    import great_expectations as gx

    asset = datasource.add_table_asset(name=f"asset_{len(datasource.assets)}", table_name=view)
    batch = asset.add_batch_definition_whole_table("whole").get_batch()

    # Query expectations need COMPLETE to return their offending rows (GX fetches at most
    # 200); column-map expectations stay on SUMMARY, which caps them at a few values.
    groups = {
        "query": [e for e in expectations if e["type"] == _QUERY_TYPE],
        "other": [e for e in expectations if e["type"] != _QUERY_TYPE],
    }
    formats = {
        "query": {"result_format": "COMPLETE"},
        "other": {
            "result_format": "SUMMARY",
            "partial_unexpected_count": SAMPLE_SIZE,
            **(
                {"unexpected_index_column_names": suite_file.sample_columns}
                if suite_file.sample_columns
                else {}
            ),
        },
    }
    by_position: dict[int, Any] = {}
    outcomes: list[Any] = []
    for group, exps in groups.items():
        if not exps:
            continue
        with _gx_quiet():
            suite = gx.ExpectationSuite(name=suite_file.name, expectations=exps)
            if len(suite.expectations) != len(exps):  # pragma: no cover - _build_suite checked this
                raise SuiteError(f"expectation suite {suite_file.path}: GX dropped expectations")
            outcome = batch.validate(suite, result_format=formats[group], expectation_parameters=gx_params)
        outcomes.append(outcome)
        for evr in outcome.results:
            position = (evr.expectation_config.meta or {}).get(_POSITION)
            if isinstance(position, int):
                by_position[position] = evr

    results = [_result_entry(exp, by_position.get(i)) for i, exp in enumerate(suite_file.expectations)]
    entry = {
        "suite": suite_file.name,
        "target": target,
        "success": all(r["success"] for r in results),
        "parameters": used,
        "results": results,
    }
    return entry, _gx_result(suite_file, target, outcomes, by_position, gx_params, used)


def _gx_result(
    suite_file: _SuiteFile,
    target: str,
    outcomes: list[Any],
    by_position: Mapping[int, Any],
    gx_params: Mapping[str, Any],
    used: Mapping[str, Any],
) -> dict[str, Any]:
    """One ExpectationSuiteValidationResult for the whole suite, in the suite file's order, as JSON.

    The suite runs in two groups (each with its own result_format); their results are put back
    together as GX would report the suite validated at once: GX's statistics, GX's meta (with the
    target and the thresholds added), ``expectation_config`` exactly as in the suite file.
    """
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult

    evrs = [by_position[i] for i in sorted(by_position)]
    evaluated = len(evrs)
    successful = sum(1 for evr in evrs if evr.success)
    meta = dict(outcomes[0].meta or {}) if outcomes else {}
    meta.update({"fapiao_audit_target": target, "thresholds": dict(used)})
    result = ExpectationSuiteValidationResult(
        success=all(evr.success for evr in evrs),
        results=evrs,
        suite_name=suite_file.name,
        suite_parameters=dict(gx_params),
        statistics={
            "evaluated_expectations": evaluated,
            "successful_expectations": successful,
            "unsuccessful_expectations": evaluated - successful,
            "success_percent": 100.0 * successful / evaluated if evaluated else None,
        },
        meta=_jsonable(meta),
        batch_id=outcomes[0].batch_id if outcomes else None,
    )
    document: dict[str, Any] = result.to_json_dict()
    for evr_json in document.get("results") or []:
        config = evr_json.get("expectation_config") or {}
        if isinstance(config.get("meta"), dict):
            config["meta"].pop(_POSITION, None)
    return document


def run_expectations(
    con: duckdb.DuckDBPyConnection,
    night: date,
    *,
    sources: list[str],
    suites_dir: Path,
    thresholds: dict,
) -> dict:
    """Validate the night's staged rows (registry, each issuing system) and its reconciliation.

    ``con`` is the job's DuckDB connection: it stays open and usable, and must not be inside a
    transaction (DuckDB aborts an open transaction when a statement fails, and a crashing
    expectation is such a statement). ``sources`` are the issuing systems of the night.
    ``thresholds`` override the suites' parameter defaults (see the module docstring).

    Returns ``{"success", "suites": [{"suite", "target", "success", "parameters", "results"}],
    "gx_results": [...]}``; each result has ``expectation, type, column, success, error,
    observed_value, unexpected_count, unexpected_sample, description``. ``gx_results`` holds, per
    suite run and in the same order, GX's own ``ExpectationSuiteValidationResult.to_json_dict()``
    (``ExpectationSuiteValidationResult(**d)`` or GX's schema load it back). An expectation that crashed has
    ``success`` False and ``error`` set. Raises SuiteError for an unreadable suite file, one
    with expectations GX rejects, a bad threshold or a bad source name.
    """
    night = _check_night(night)
    thresholds = dict(thresholds or {})
    systems = list(dict.fromkeys(sources))
    for system in systems:
        if not isinstance(system, str) or not SOURCE_NAME_RE.fullmatch(system):
            raise SuiteError(f"not a valid issuing system name: {system!r}")
    suites_dir = Path(suites_dir)
    suite_files = {stage: _SuiteFile(suites_dir / filename) for stage, filename in SUITE_FILES.items()}
    for suite_file in suite_files.values():  # fail before touching the database
        _resolve_parameters(suite_file, night, thresholds)
        _build_suite(suite_file, suite_file.expectations)

    from . import gx_duckdb

    plan: list[tuple[str, _SuiteFile, str]] = [(_REGISTRY_VIEW, suite_files["registry"], "registry")]
    plan += [(_issuer_view(s), suite_files["issuer"], f"issuer:{s}") for s in systems]
    plan.append((_STATS_VIEW, suite_files["reconciliation"], "reconciliation"))

    views: list[str] = []
    suites: list[dict[str, Any]] = []
    gx_results: list[dict[str, Any]] = []
    try:
        with night_table(con, night), _gx_quiet(), gx_duckdb.borrowed_connection(con) as connection_id:
            _create_views(con, night, systems, views)
            context = _make_context()
            datasource = context.data_sources.add_duckdb(name="fapiao_audit", connection_id=connection_id)
            try:
                for view, suite_file, target in plan:
                    entry, gx_result = _validate_suite(
                        con, views, datasource, view, suite_file, target, night, thresholds
                    )
                    suites.append(entry)
                    gx_results.append(gx_result)
            finally:
                gx_duckdb.close_datasource(datasource)
    finally:
        _drop_views(con, views)
    return {"success": all(s["success"] for s in suites), "suites": suites, "gx_results": gx_results}
