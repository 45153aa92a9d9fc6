"""The night, stage by stage: ingest -> reconcile -> validate -> publish.

The command line runs all stages on one connection; the Airflow DAG runs them as separate
tasks, each opening the database for itself. Stages hand results on through DuckDB
(``run_state``), never through memory, so any stage can be retried or rerun alone.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from . import __version__
from .config import SHANGHAI, Config
from .db import connect, exclusive, pause_point
from .decisions import night_decisions
from .errors import ConfigError, FapiaoError, InputError
from .ingest import (
    Delivery,
    FileReport,
    discover,
    find_delivery,
    ingest_night,
    ingest_source,
    load_ingest_result,
    unread_files,
)
from .model import (
    AGING_BUCKETS,
    CARRIED_STATUSES,
    MISSING_CAUSES,
    NightCounts,
    NightSummary,
    RunInfo,
    SellerCount,
    UnreadFile,
    aging_bucket,
    zero_counts,
)
from .progress import Progress
from .publish import (
    GX_RESULTS_FILE,
    NightWriter,
    gx_results_digest,
    masked_gx_results,
    masked_summary,
    write_exceptions_csv,
    write_json,
    write_text,
)
from .reconcile import ReconcileResult, fetch_carried, fetch_findings, fetch_resolved, reconcile_night
from .storage import check_retained, sweep
from .versions import night_table

EXPECTATIONS_DIR = Path(__file__).resolve().parents[2] / "expectations"
#: run_state's stage holding the night's ExpectationSuiteValidationResults, as GX wrote them.
GX_RESULTS_STATE = "gx_results"


@dataclass(frozen=True)
class Paths:
    landing: Path
    reports: Path
    db: Path

    @property
    def tmp_dir(self) -> Path:
        """Scratch files of ingest (transcoded CSV), one folder per database file."""
        if str(self.db) == ":memory:":
            return Path(tempfile.gettempdir()) / "fapiao-audit-tmp"
        return self.db.with_name(f".{self.db.name}.fapiao-tmp")

    def check_overlap(self) -> None:
        """Refuse paths that publishing could destroy: a night's publish replaces ``<reports>/<D>``
        whole, so the reports folder must not hold the landing or the database, nor sit inside the
        landing (it would be read as a delivery)."""
        landing, reports = self.landing.resolve(), self.reports.resolve()

        def inside(a: Path, b: Path) -> bool:
            return a == b or b in a.parents

        if inside(landing, reports) or inside(reports, landing):
            raise ConfigError(
                f"--reports {self.reports} and --landing {self.landing} overlap: publishing a night replaces "
                "<reports>/<night> whole and would delete deliveries (or read reports as deliveries); "
                "give them separate folders"
            )
        if str(self.db) != ":memory:":
            db = self.db.resolve()
            for name, folder in (("--reports", reports), ("--landing", landing)):
                if inside(db, folder):
                    raise ConfigError(
                        f"--db {self.db} is inside {name} {folder}: "
                        + (
                            "publishing a night would delete the database and its history"
                            if name == "--reports"
                            else "the database would sit among the deliveries"
                        )
                        + "; keep the database outside both folders"
                    )

    def allowed_dirs(self, cfg: Config) -> list[Path]:
        """The only folders the DuckDB connection may touch: the landing, scratch and spill folders.

        The reports are written by Python, never by DuckDB, so they are not among them.
        """
        dirs = [self.landing, self.tmp_dir]
        if cfg.duckdb_temp_directory:
            dirs.append(Path(cfg.duckdb_temp_directory))
        return dirs


@dataclass(frozen=True)
class RunOutcome:
    night: date
    published: Path
    outcome: str  # passed | failed
    counts: dict[str, int]
    exit_code: int
    warnings: tuple[str, ...] = ()


def parse_night(text: str) -> date:
    """A business night: exactly YYYY-MM-DD. It names folders, so nothing else gets through."""
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ConfigError(f"--night: {text!r} is not a date in the form YYYY-MM-DD") from None


def expectations_dir() -> Path:
    """Suites ship in the project's expectations/ folder."""
    if not EXPECTATIONS_DIR.is_dir():
        raise ConfigError(f"{EXPECTATIONS_DIR}: the expectation suites folder is missing")
    return EXPECTATIONS_DIR


@contextmanager
def open_db(paths: Paths, cfg: Config) -> Iterator[duckdb.DuckDBPyConnection]:
    """The single writer: advisory lock, then the DuckDB connection; both released at the end.

    The connection is locked down to ``paths.allowed_dirs``: it cannot read or write any other
    file, attach a database, install or load an extension, or change a setting.
    """
    if str(paths.db) != ":memory:":
        try:
            paths.db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"--db: cannot create the folder {paths.db.parent}: {e.strerror or e}"
            ) from None
    with exclusive(paths.db, cfg.lock_timeout_s):
        con = connect(paths.db, cfg, allowed_dirs=paths.allowed_dirs(cfg))
        try:
            yield con
        finally:
            con.close()


def _put_state(con: duckdb.DuckDBPyConnection, night: date, stage: str, payload: dict[str, Any]) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM run_state WHERE night = $n AND stage = $s", {"n": night, "s": stage})
        con.execute(
            "INSERT INTO run_state VALUES ($n, $s, $p)",
            {"n": night, "s": stage, "p": json.dumps(payload, ensure_ascii=False, default=str)},
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _get_state(con: duckdb.DuckDBPyConnection, night: date, stage: str) -> dict[str, Any]:
    row = con.execute(
        "SELECT payload FROM run_state WHERE night = $n AND stage = $s", {"n": night, "s": stage}
    ).fetchone()
    if row is None:
        raise FapiaoError(f"night {night.isoformat()}: stage '{stage}' has not run yet")
    return json.loads(row[0])


# ---------------------------------------------------------------- stages


def expected_sources(con: duckdb.DuckDBPyConnection, night: date, cfg: Config) -> dict[str, str]:
    """Issuing systems that must deliver tonight, each with why: named in expected_sources, or delivered
    in one of the previous ``source_lookback_nights`` published nights; retired systems are not expected."""
    out = {s: "named in expected_sources" for s in cfg.expected_sources}
    if cfg.source_lookback_nights:
        rows = con.execute(
            "SELECT f.source_system, max(f.night) FROM ingested_files f "
            "WHERE f.source_kind = 'issuer' AND f.night IN ("
            "  SELECT night FROM runs WHERE published AND night < $n GROUP BY night ORDER BY night DESC LIMIT $k) "
            "GROUP BY 1 ORDER BY 1",
            {"n": night, "k": cfg.source_lookback_nights},
        ).fetchall()
        for system, last in rows:
            out.setdefault(system, f"delivered on the published night {last.isoformat()}")
    return {s: why for s, why in sorted(out.items()) if s not in cfg.retired_sources}


def check_sources(
    con: duckdb.DuckDBPyConnection, paths: Paths, night: date, cfg: Config, delivered: list[str]
) -> None:
    """Refuse a night from which an expected issuing system is absent: its invoices would all turn up as
    MISSING_IN_ISSUER and its open findings as resolved. ``--allow-missing`` or retired_sources accept it."""
    missing = {
        s: why
        for s, why in expected_sources(con, night, cfg).items()
        if s not in delivered and s not in cfg.allow_missing
    }
    if missing:
        names = "; ".join(f"'{s}' ({why})" for s, why in missing.items())
        raise InputError(
            f"{paths.landing / night.isoformat() / 'issuers'}: no delivery from issuing system(s) {names}. "
            "Refusing to reconcile without them. If a system is known to be down tonight, run with "
            "--allow-missing <system> (its open findings are carried as not checked); if it was switched off, "
            "list it in retired_sources"
        )


def stage_ingest(
    con: duckdb.DuckDBPyConnection,
    paths: Paths,
    night: date,
    cfg: Config,
    on_file: Callable[[FileReport], None] | None = None,
) -> list[FileReport]:
    check_retained(con, night, cfg)
    check_sources(con, paths, night, cfg, list_sources(paths, night))
    return list(ingest_night(con, paths.landing, night, cfg, paths.tmp_dir, on_file).files)


def stage_ingest_source(
    con: duckdb.DuckDBPyConnection, paths: Paths, night: date, cfg: Config, source_system: str
) -> list[FileReport]:
    check_retained(con, night, cfg)
    delivery: Delivery = find_delivery(paths.landing, night, source_system)
    return list(ingest_source(con, paths.landing, night, delivery, cfg, paths.tmp_dir))


def list_sources(paths: Paths, night: date) -> list[str]:
    deliveries, _ = discover(paths.landing, night)
    return [d.source_system for d in deliveries]


def stage_reconcile(con: duckdb.DuckDBPyConnection, night: date, cfg: Config) -> ReconcileResult:
    """Every shard in this process, then the merge (the DAG runs shards as tasks instead)."""
    from .reconcile import database_path

    db = database_path(con)
    work_dir = Paths(Path(), Path(), db).tmp_dir if db else None
    result = reconcile_night(con, night, cfg, work_dir)
    payload = asdict(result)
    _put_state(con, night, "reconcile", payload)
    return result


def stage_validate(con: duckdb.DuckDBPyConnection, night: date, cfg: Config) -> dict[str, Any]:
    from .validate import run_expectations  # GX is heavy: import only when validating

    start, end = cfg.window_for(night)
    systems = list(load_ingest_result(con, night).issuer_systems)
    thresholds = {
        **asdict(cfg.thresholds),
        "window_start": start,
        "window_end": end,
        "amount_tolerance": cfg.amount_tolerance,
    }
    result = run_expectations(
        con, night, sources=systems, suites_dir=expectations_dir(), thresholds=thresholds
    )
    # GX's own results are published as they are (gx_results.json); summary.json keeps the digest.
    _put_state(con, night, GX_RESULTS_STATE, {"results": result.pop("gx_results", [])})
    _put_state(con, night, "validate", result)
    return result


def _by_seller(con: duckdb.DuckDBPyConnection, night: date, limit: int = 50) -> tuple[SellerCount, ...]:
    rows = con.execute(
        "WITH per AS (SELECT seller_tax_id, count(*) AS findings FROM findings WHERE night = $n GROUP BY 1), "
        "money AS (SELECT seller_tax_id, sum(a) AS amount FROM (SELECT seller_tax_id, invoice_key, "
        "max(amount_at_risk) AS a FROM findings WHERE night = $n AND category <> 'PENDING_SYNC' GROUP BY 1, 2) "
        "GROUP BY 1), "
        "names AS (SELECT seller_tax_id, min(seller_name) AS seller_name FROM staged_invoices "
        "WHERE night = $n AND seller_name IS NOT NULL GROUP BY 1) "
        "SELECT per.seller_tax_id, names.seller_name, per.findings, coalesce(money.amount, 0) "
        "FROM per LEFT JOIN money USING (seller_tax_id) LEFT JOIN names USING (seller_tax_id) "
        "ORDER BY per.findings DESC, per.seller_tax_id LIMIT $lim",
        {"n": night, "lim": limit},
    ).fetchall()
    return tuple(SellerCount(a, b, c, _yuan(d)) for a, b, c, d in rows)


def _yuan(value: Any) -> float:
    """A DECIMAL amount for JSON: a number with its fen (exact for any sum below 10^13 yuan)."""
    return float(round(Decimal(value or 0), 2))


def _amount_at_risk(con: duckdb.DuckDBPyConnection, night: date) -> dict[str, Any]:
    """Yuan at risk on the night: each invoice counted once per group (an invoice with three differing
    fields is one amount), by category and by source; the total leaves PENDING_SYNC out (informational)."""

    def grouped(column: str) -> dict[str, float]:
        rows = con.execute(
            f"SELECT {column}, sum(a) FROM (SELECT {column}, invoice_key, max(amount_at_risk) AS a FROM findings "
            f"WHERE night = $n GROUP BY 1, 2) GROUP BY 1 ORDER BY 2 DESC NULLS LAST, 1",
            {"n": night},
        ).fetchall()
        return {str(k): _yuan(v) for k, v in rows if k is not None}

    total = con.execute(
        "SELECT sum(a) FROM (SELECT invoice_key, max(amount_at_risk) AS a FROM findings WHERE night = $n "
        "AND category <> 'PENDING_SYNC' GROUP BY 1)",
        {"n": night},
    ).fetchall()[0][0]
    return {
        "total": _yuan(total),
        "currency": "CNY",
        "by_category": grouped("category"),
        "by_source": grouped("source_system"),
    }


def _open_items(con: duckdb.DuckDBPyConnection, night: date) -> dict[str, Any]:
    """The ledger of open items: tonight's findings and the items carried (left the window, not checked),
    by aging bucket (items, and yuan at risk with each invoice counted once, PENDING_SYNC apart, as in
    amount_at_risk), and how many carry a decision."""
    rows = con.execute(
        "SELECT 'finding' AS state, age_days, invoice_key, amount_at_risk, decision, category FROM findings "
        "WHERE night = $n UNION ALL SELECT carried_as, age_days, invoice_key, amount_at_risk, decision, category "
        "FROM carried_findings WHERE night = $n",
        {"n": night},
    ).fetchall()
    counts = {name: 0 for name, _lo, _hi in AGING_BUCKETS}
    money: dict[str, dict[Any, Decimal]] = {name: {} for name in counts}
    states: dict[str, int] = {"finding": 0, **{k: 0 for k in CARRIED_STATUSES}}
    decided = reopened = 0
    for state, age, key, amount, decision, category in rows:
        states[state] = states.get(state, 0) + 1
        bucket = aging_bucket(age)
        counts[bucket] += 1
        if category != "PENDING_SYNC" and amount is not None:
            per = money[bucket]
            per[key] = max(per.get(key, Decimal(0)), amount)
        decided += decision is not None and decision != "reopened"
        reopened += decision == "reopened"
    return {
        "total": len(rows),
        "findings": states.pop("finding"),
        **states,
        "decided": decided,
        "reopened": reopened,
        "aging": {
            k: {"count": counts[k], "amount": _yuan(sum(money[k].values(), Decimal(0)))} for k in counts
        },
    }


def _history(con: duckdb.DuckDBPyConnection, night: date, tonight: NightCounts) -> tuple[NightCounts, ...]:
    rows = con.execute(
        "SELECT night, counts, outcome FROM runs WHERE published AND night < $n "
        "QUALIFY row_number() OVER (PARTITION BY night ORDER BY started_at DESC) = 1 "
        "ORDER BY night DESC LIMIT 29",
        {"n": night},
    ).fetchall()
    out = []
    for n, counts, outcome in reversed(rows):
        c = json.loads(counts) if counts else {}
        out.append(NightCounts(n.isoformat(), c, sum(c.values()), outcome))
    out.append(tonight)
    return tuple(out)


def _counts_of(con: duckdb.DuckDBPyConnection, night: date) -> dict[str, int]:
    counts = zero_counts()
    for cat, n in con.execute(
        "SELECT category, count(*) FROM findings WHERE night = $n GROUP BY 1", {"n": night}
    ).fetchall():
        counts[cat] = n
    return counts


def _by_cause(con: duckdb.DuckDBPyConnection, night: date, category: str) -> dict[str, int]:
    """A missing category's findings per cause, the most serious cause first (model.MISSING_CAUSES)."""
    rows = dict(
        con.execute(
            "SELECT coalesce(cause, 'unknown'), count(*) FROM findings WHERE night = $n AND category = $c GROUP BY 1",
            {"n": night, "c": category},
        ).fetchall()
    )
    order = {c: i for i, c in enumerate(MISSING_CAUSES)}
    return {c: rows[c] for c in sorted(rows, key=lambda c: (order.get(c, len(order)), c))}


def _night_warnings(rec: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(warnings, categories not checked) from the reconciliation's account of the monitored sellers."""
    warnings: list[str] = []
    not_checked: list[str] = []
    if not rec.get("issuer_sellers", 1):
        if rec.get("monitored_from") == "configured":
            warnings.append(
                "no issuing system delivered a seller tax id tonight: MISSING_IN_ISSUER uses the "
                f"{rec.get('monitored_sellers', 0)} seller(s) of monitored_sellers in the configuration"
            )
        else:
            not_checked.append("MISSING_IN_ISSUER")
            warnings.append(
                "no issuing system delivered a seller tax id tonight and monitored_sellers is not configured: "
                "MISSING_IN_ISSUER was not checked (map the issuers' seller column, or set monitored_sellers)"
            )
    return tuple(warnings), tuple(not_checked)


def build_summary(
    con: duckdb.DuckDBPyConnection,
    night: date,
    cfg: Config,
    run_id: str,
    started: datetime,
    unread: tuple[UnreadFile, ...] = (),
) -> NightSummary:
    rec = _get_state(con, night, "reconcile")
    expectations = _get_state(con, night, "validate")
    ingest = load_ingest_result(con, night)
    counts = _counts_of(con, night)
    prev = rec.get("previous_night")
    counts_prev = _counts_of(con, date.fromisoformat(prev)) if prev else None
    outcome = "passed" if expectations.get("success") else "failed"
    start, end = cfg.window_for(night)
    finished = datetime.now(SHANGHAI)
    warnings, not_checked = _night_warnings(rec)
    unbalanced = [f for f in ingest.files if not f.balanced]
    if unbalanced:  # rows a file holds that were neither loaded, rejected nor skipped: the night cannot pass
        outcome = "failed"
        warnings += tuple(
            f"{f.source_system}/{f.file}: the file holds {f.rows_read} rows but {f.rows_loaded} were loaded, "
            f"{f.rows_rejected} rejected and {f.rows_skipped} skipped; "
            f"{f.rows_read - f.rows_loaded - f.rows_rejected - f.rows_skipped} row(s) are not accounted for"
            for f in unbalanced
        )
    if unread:
        shown = ", ".join(u.path for u in unread[:5]) + (
            f" and {len(unread) - 5} more" if len(unread) > 5 else ""
        )
        warnings += (
            f"{len(unread)} file(s) or folder(s) under the night's delivery were not read: {shown} "
            "(summary.json unread_files says why)",
        )
    tonight = NightCounts(night.isoformat(), counts, sum(counts.values()), outcome)
    return NightSummary(
        night=night.isoformat(),
        outcome=outcome,
        run=RunInfo(
            run_id=run_id,
            started_at=started.isoformat(timespec="seconds"),
            finished_at=finished.isoformat(timespec="seconds"),
            duration_s=round((finished - started).total_seconds(), 3),
            version=__version__,
        ),
        as_of=cfg.as_of_for(night).isoformat(),
        window_start=start.isoformat(),
        window_end=end.isoformat(),
        counts=counts,
        total_findings=sum(counts.values()),
        previous_night=prev,
        counts_previous=counts_prev,
        new=rec["new"],
        open=rec["open"],
        resolved=rec["resolved"],
        out_of_window=rec["out_of_window"],
        keys={"issuer": rec["issuer_keys"], "registry": rec["registry_keys"], "matched": rec["matched_keys"]},
        sources=ingest.sources(),
        by_seller=_by_seller(con, night),
        registry_other_sellers=rec["registry_other_sellers"],
        expectations=expectations,
        config=cfg.to_dict(),
        history=_history(con, night, tonight),
        missing_by_cause=_by_cause(con, night, "MISSING_IN_REGISTRY"),
        pending_by_cause=_by_cause(con, night, "PENDING_SYNC"),
        monitored_from=str(rec.get("monitored_from", "issuers")),
        monitored_sellers=int(rec.get("monitored_sellers", 0)),
        not_checked=not_checked,
        warnings=warnings,
        unread_files=unread,
        amount_at_risk=_amount_at_risk(con, night),
        open_items=_open_items(con, night),
        decisions=night_decisions(con, night),
    )


def _rejected_table(con: duckdb.DuckDBPyConnection, night: date) -> Any:
    return con.execute(
        "SELECT source_system, file, sheet, line, raw, reason FROM rejected_rows WHERE night = $n "
        "ORDER BY source_system, file, sheet NULLS FIRST, line",
        {"n": night},
    ).to_arrow_table()


def _evidence_lines(con: duckdb.DuckDBPyConnection, night: date, limit: int) -> Any:
    """The lines of the night's invoices with findings (both sides, at most 50 per invoice and source)."""
    return con.execute(
        "SELECT l.invoice_key, l.source_system, l.line, l.item_name, l.quantity, l.unit_price, l.amount, "
        "l.tax_rate, l.tax_amount FROM staged_lines l "
        "WHERE l.night = $n AND l.invoice_key IN (SELECT invoice_key FROM findings WHERE night = $n) "
        "QUALIFY row_number() OVER (PARTITION BY l.invoice_key, l.source_system ORDER BY l.file, l.line) <= 50 "
        "ORDER BY l.invoice_key, l.source_kind = 'issuer', l.source_system, l.file, l.line LIMIT $lim",
        {"n": night, "lim": limit},
    ).to_arrow_table()


def stage_publish(
    con: duckdb.DuckDBPyConnection, paths: Paths, night: date, cfg: Config, started: datetime | None = None
) -> RunOutcome:
    """Write the five files into a temp folder, swap it into place, then record the run."""
    from .excel import write_exceptions_xlsx
    from .masking import mask_record
    from .report import render_report_html

    started = started or datetime.now(SHANGHAI)
    run_id = started.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    summary = build_summary(con, night, cfg, run_id, started, tuple(unread_files(paths.landing, night)))
    findings = fetch_findings(con, night)
    resolved = fetch_resolved(con, night, cfg)
    carried = fetch_carried(con, night)
    rejected = _rejected_table(con, night)
    mask_csv, mask_excel, mask_html = (
        cfg.mask_csv or cfg.mask_all,
        cfg.mask_excel or cfg.mask_all,
        cfg.mask_html or cfg.mask_all,
    )
    with NightWriter(paths.reports, night, run_id) as w:
        write_exceptions_csv(
            w.path("exceptions.csv"),
            findings.to_batches(max_chunksize=50_000),
            mask_record if mask_csv else None,
        )
        pause_point("publish")
        write_exceptions_xlsx(
            w.path("exceptions.xlsx"),
            summary,
            findings,
            resolved,
            mask=mask_excel,
            max_rows_per_sheet=cfg.excel_max_rows,
            carried=carried,
        )
        document = summary.to_dict()
        write_json(w.path("summary.json"), masked_summary(document) if mask_csv else document)
        gx_results = _get_state(con, night, GX_RESULTS_STATE)["results"]
        write_json(w.path(GX_RESULTS_FILE), masked_gx_results(gx_results) if mask_csv else gx_results)
        html = render_report_html(
            summary,
            findings,
            rejected,
            resolved,
            mask=mask_html,
            max_rows=cfg.report_max_rows,
            lines=_evidence_lines(con, night, 5 * cfg.report_max_rows),
            carried=carried,
            gx_results=gx_results_digest(gx_results),
        )
        write_text(w.path("report.html"), html)
        w.write_manifest(
            {"run_id": run_id, "outcome": summary.outcome, "generator": f"fapiao-audit {__version__}"}
        )
        pause_point("commit")
        final = w.commit()
    con.execute(
        "INSERT INTO runs VALUES ($n, $id, $start, now(), $outcome, true, $counts)",
        {
            "n": night,
            "id": run_id,
            "start": started,
            "outcome": summary.outcome,
            "counts": json.dumps(summary.counts),
        },
    )
    return RunOutcome(
        night,
        final,
        summary.outcome,
        dict(summary.counts),
        0 if summary.outcome == "passed" else 1,
        summary.warnings,
    )


def stage_extract(paths: Paths, night: date, cfg: Config, system: str | None = None) -> list[Any]:
    """Extract database sources into the landing layout (before the readiness check and ingest)."""
    from .extract import extract_source

    return [
        extract_source(src, paths.landing, night, cfg)
        for src in cfg.database_sources
        if system is None or src.system == system
    ]


def run_night(
    paths: Paths, night: date, cfg: Config, *, log: Any = None, progress: Progress | None = None
) -> RunOutcome:
    """The whole night on one connection: what ``fapiao-audit run`` does.

    ``log`` gets each stage's wall time; ``progress`` is told of every file read and stage done.
    """
    paths.check_overlap()
    started = datetime.now(SHANGHAI)
    timings: dict[str, float] = {}

    def timed(name: str, fn: Any, *args: Any) -> Any:
        if progress:
            progress.stage_started(name)
        t0 = time.perf_counter()
        out = fn(*args)
        timings[name] = time.perf_counter() - t0
        if log:
            log(f"{name}: {timings[name]:.2f} s")
        if progress:
            progress.stage_done(name, timings[name])
        return out

    if cfg.database_sources:
        timed("extract", stage_extract, paths, night, cfg)
    with open_db(paths, cfg) as con:
        timed("ingest", stage_ingest, con, paths, night, cfg, progress.file_read if progress else None)
        with ExitStack() as held:

            def reconcile() -> ReconcileResult:
                # Tonight's snapshot copied once for the two stages that query it (timed with this one).
                held.enter_context(night_table(con, night))
                return stage_reconcile(con, night, cfg)

            timed("reconcile", reconcile)
            timed("validate", stage_validate, con, night, cfg)
        outcome = timed("publish", stage_publish, con, paths, night, cfg, started)
        return timed("retention", stage_retention, con, cfg, outcome)


def stage_retention(con: duckdb.DuckDBPyConnection, cfg: Config, outcome: RunOutcome) -> RunOutcome:
    """After a published night: remove the staged rows of nights outside ``retain_nights``. The night is
    published whatever happens here; a failure is a warning (the next night sweeps again)."""
    try:
        sweep(con, cfg)
    except duckdb.Error as e:
        return replace(
            outcome,
            warnings=(
                *outcome.warnings,
                f"retention of old nights' staged rows failed: "
                f"{str(e).splitlines()[0]}; the next night tries again",
            ),
        )
    return outcome


def stage_reconcile_shard(
    con: duckdb.DuckDBPyConnection, paths: Paths, night: date, cfg: Config, shard: int, shards: int
) -> Any:
    """One shard of the reconciliation as a unit of work (the connection may be read-only).

    The result goes into the shard's own folder under ``<tmp_dir>/shards/<night>/``; nothing is
    written into the database, so shards of a night can run at the same time in separate processes.
    """
    from .reconcile import reconcile_shard, shard_root

    return reconcile_shard(con, night, cfg, shard, shards, shard_root(paths.tmp_dir, night))


def stage_merge_shards(
    con: duckdb.DuckDBPyConnection, paths: Paths, night: date, cfg: Config, shards: int
) -> ReconcileResult:
    """Merge the night's shard results (the single writer): probable matches, statuses, stored findings."""
    from .reconcile import merge_shards, shard_root

    result = merge_shards(con, night, cfg, shards, shard_root(paths.tmp_dir, night))
    _put_state(con, night, "reconcile", asdict(result))
    return result
