"""The ``fapiao-audit`` command: run, generate, compact, demo.

Exit codes (DESIGN.md): 0 published and every expectation passed; 1 published but expectations
failed (the findings are the output, not an error); 2 could not run: nothing published, one
clear message on stderr, never a traceback (set FAPIAO_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import traceback
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import NoReturn

from . import __version__
from .config import load_config
from .errors import ConfigError, FapiaoError, first_line
from .progress import Progress

EXIT_OK, EXIT_EXPECTATIONS_FAILED, EXIT_CANNOT_RUN = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print usage and exit 2; keep it one line
        # main() prefixes "fapiao-audit: error: "; a subcommand's parser adds its own name only.
        command = self.prog.removeprefix(_PROG).strip()
        raise ConfigError(f"{command}: {message}" if command else message)


_PROG = "fapiao-audit"
_COMMANDS = ("run", "generate", "demo", "compact")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=_PROG, description="Nightly reconciliation of issued fapiao against the tax registry.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{" + ",".join(_COMMANDS) + "}", parser_class=_Parser)

    run = sub.add_parser("run", help="ingest, reconcile, validate and publish one night")
    run.add_argument("--night", required=True, help="business night, YYYY-MM-DD (Asia/Shanghai)")
    run.add_argument(
        "--landing",
        required=True,
        type=Path,
        help="landing folder holding <night>/registry and <night>/issuers",
    )
    run.add_argument(
        "--reports",
        required=True,
        type=Path,
        help="reports folder; the night is published into <reports>/<night>/",
    )
    run.add_argument(
        "--db", type=Path, default=None, help="DuckDB file (default: <reports>/../fapiao.duckdb)"
    )
    run.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    run.add_argument("--shards", type=int, default=None, help="partitions of the reconciliation by key hash")
    run.add_argument(
        "--allow-missing",
        action="append",
        default=[],
        metavar="SYSTEM",
        help="run although this issuing system, expected from earlier nights, delivered nothing "
        "(its open findings are carried as not checked); repeatable",
    )
    run.add_argument(
        "--acks",
        type=Path,
        default=None,
        metavar="DIR",
        help="acknowledgements folder: finance's decision files (the workbook with 处理状态 filled "
        "in, or a CSV of finding id, status, note); overrides acknowledgements_dir",
    )
    run.add_argument(
        "--restage-all",
        action="store_true",
        help="write every staged row as a new version, as if nothing had been staged before (by default a "
        "row identical to one staged on an earlier night is only marked as seen); the same files are published",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="print each stage's wall time on stderr")
    run.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress on stderr (by default: files read and stages done, one line each when "
        "stderr is not a terminal)",
    )

    gen = sub.add_parser("generate", help="write a synthetic landing night with known defects")
    gen.add_argument("--night", required=True)
    gen.add_argument("--out", required=True, type=Path)
    gen.add_argument("--rows", type=int, default=5000, help="invoices per side (default 5000)")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument(
        "--layout",
        choices=("real", "flat"),
        default="real",
        help="real: the registry's two-sheet workbook with invoice lines and the issuers' own "
        "exports (default); flat: one row per invoice everywhere (the benchmarks' layout)",
    )

    comp = sub.add_parser(
        "compact",
        help="remove staged rows outside retain_nights and rewrite the database "
        "file so that it shrinks (waits for, and blocks, any run)",
    )
    comp.add_argument("--db", required=True, type=Path, help="the DuckDB file the nights run on")
    comp.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML configuration file (retain_nights, lock_timeout_s, DuckDB resources)",
    )

    demo = sub.add_parser("demo", help="generate a few nights, run them, print where the report is")
    demo.add_argument(
        "--dir", type=Path, default=Path("data/demo"), help="working folder (default data/demo)"
    )
    demo.add_argument("--nights", type=int, default=3)
    demo.add_argument("--rows", type=int, default=5000)
    demo.add_argument("--last-night", default=None, help="last night of the demo (default: yesterday)")
    return p


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import Paths, parse_night, run_night

    night = parse_night(args.night)
    cfg = load_config(args.config)
    if args.shards is not None:
        if not 1 <= args.shards <= 1024:
            raise ConfigError("--shards: must be between 1 and 1024")
        cfg = replace(cfg, shards=args.shards)
    if args.allow_missing:
        from .config import source_names

        cfg = replace(cfg, allow_missing=source_names("--allow-missing", args.allow_missing))
    if args.acks is not None:
        cfg = replace(cfg, acknowledgements_dir=str(args.acks))
    if args.restage_all:
        cfg = replace(cfg, restage_all=True)
    if not args.landing.is_dir():
        raise ConfigError(f"--landing: {args.landing} is not a folder")
    db = args.db or (args.reports.resolve().parent / "fapiao.duckdb")
    log = (lambda msg: print(f"fapiao-audit: {msg}", file=sys.stderr, flush=True)) if args.verbose else None
    progress = None if args.quiet else Progress(sys.stderr)
    try:
        outcome = run_night(Paths(args.landing, args.reports, db), night, cfg, log=log, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    for warning in outcome.warnings:
        print(f"fapiao-audit: warning: {warning}", file=sys.stderr)
    total = sum(outcome.counts.values())
    print(
        f"{night.isoformat()}: published {outcome.published} ({total} findings; expectations {outcome.outcome})"
    )
    return EXIT_OK if outcome.exit_code == 0 else EXIT_EXPECTATIONS_FAILED


#: The configuration a generated night needs, written beside its night folders (never inside one: every
#: file of a night's delivery is input).
GENERATED_CONFIG = "fapiao-audit.toml"


def _write_generated_config(folder: Path) -> tuple[Path, bool]:
    """Write the generated nights' configuration (SOURCES_TOML) into ``folder``, replacing an earlier one
    the generator wrote; any other file already there (an operator's own) is left alone. Returns the path
    and whether it now holds SOURCES_TOML."""
    from .generate import SOURCES_TOML

    path = folder / GENERATED_CONFIG
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return path, False
        if text == SOURCES_TOML:
            return path, True
        if not text.startswith(SOURCES_TOML.splitlines()[0] + "\n"):
            return path, False
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(SOURCES_TOML, encoding="utf-8")
    tmp.replace(path)
    return path, True


def _cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate_night
    from .pipeline import parse_night

    night = parse_night(args.night)
    try:
        res = generate_night(args.out, night, rows=args.rows, seed=args.seed, layout=args.layout)
    except ValueError as e:
        raise ConfigError(f"--rows: {e}") from None
    total = sum(res.counts.values())
    print(f"{res.night_dir}: {len(res.files)} files, {total} expected findings in {res.expected_path.name}")
    if res.layout == "real":  # taxctl's state codes and shopapi's invoiceType need the sources' tables
        path, ours = _write_generated_config(args.out)
        if ours:
            print(
                f"configuration: run the night with --config {path} (taxctl's state codes, shopapi's ignored "
                "invoiceType)"
            )
        else:
            print(
                f"configuration: the night needs the [sources.taxctl.values.*] and [sources.shopapi] tables of "
                f"fapiao_audit.generate.SOURCES_TOML (config.example.toml shows them); {path} exists and was "
                "left as it is"
            )
    return EXIT_OK


def _cmd_compact(args: argparse.Namespace) -> int:
    from .storage import compact

    cfg = load_config(args.config)
    res = compact(args.db, cfg)
    nights = res.sweep.nights
    swept = (
        f"staged rows of {len(nights)} night(s) {nights[0].isoformat()}..{nights[-1].isoformat()} removed; "
        if nights
        else "no night outside retention; "
    )
    leftovers = (
        f"; removed {len(res.leftovers_removed)} file(s) a stopped compaction left"
        if res.leftovers_removed
        else ""
    )
    print(f"{res.db}: {swept}{res.bytes_before / 1e6:.1f} MB -> {res.bytes_after / 1e6:.1f} MB{leftovers}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from .generate import SOURCES_TOML, generate_night
    from .pipeline import Paths, parse_night, run_night

    last = parse_night(args.last_night) if args.last_night else date.today() - timedelta(days=1)
    if not 1 <= args.nights <= 31:
        raise ConfigError("--nights: between 1 and 31")
    base = args.dir
    landing, reports, db = base / "landing", base / "reports", base / "fapiao.duckdb"
    # The generated issuers' value codes and ignored columns: the demo's own configuration file.
    base.mkdir(parents=True, exist_ok=True)
    config_path = base / GENERATED_CONFIG
    config_path.write_text(SOURCES_TOML, encoding="utf-8")
    cfg = load_config(config_path)
    print(f"Configuration: {config_path.resolve()}")
    worst = EXIT_OK
    for i in range(args.nights - 1, -1, -1):
        night = last - timedelta(days=i)
        generate_night(landing, night, rows=args.rows, seed=7)
        out = run_night(Paths(landing, reports, db), night, cfg)
        total = sum(out.counts.values())
        print(
            f"{night.isoformat()}: {total} findings, {_open_items_line(out.published)}expectations {out.outcome} "
            f"-> {out.published}"
        )
        worst = max(worst, out.exit_code)
    report = (reports / last.isoformat() / "report.html").resolve()
    print(f"\nAudit report: {report}")
    print(f"Mismatch list: {report.with_name('exceptions.xlsx')} (and exceptions.csv)")
    print(f"Every night: {(reports / 'index.html').resolve()}")
    return EXIT_OK


def _quiet_libraries() -> None:
    """GX logs every datasource, asset and batch it builds at INFO (hundreds of lines a night); only its
    warnings are worth reading. Set before GX is first imported, so nothing slips out during import."""
    for name in ("great_expectations", "great_expectations.core", "great_expectations.datasource"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _open_items_line(night_dir: Path) -> str:
    """ "<yuan> at risk, <n> open items (<k> left the window), " from a published night's summary.json."""
    try:
        summary = json.loads((night_dir / "summary.json").read_text(encoding="utf-8"))
        money, items = summary["amount_at_risk"], summary["open_items"]
        return (
            f"{money['total']:,.2f} yuan at risk, {items['total']} open items "
            f"({items['left_window']} left the window unresolved), "
        )
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as e:  # --help, --version: argparse has printed them
            return e.code if isinstance(e.code, int) else EXIT_OK
        if args.command is None:
            raise ConfigError(f"no command given: use one of {', '.join(_COMMANDS)} (see {_PROG} --help)")
        handler = {"run": _cmd_run, "generate": _cmd_generate, "compact": _cmd_compact, "demo": _cmd_demo}[
            args.command
        ]
        return handler(args)
    except FapiaoError as e:
        print(f"fapiao-audit: error: {e}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        print("fapiao-audit: interrupted; nothing was published for the night in progress", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except Exception as e:  # never a traceback to the user
        if os.environ.get("FAPIAO_DEBUG"):
            traceback.print_exc()
        print(f"fapiao-audit: error: {_describe(e)}", file=sys.stderr)
        return EXIT_CANNOT_RUN


def _describe(e: Exception) -> str:
    """One line for an error no stage turned into a FapiaoError."""
    import duckdb

    if isinstance(e, duckdb.OutOfMemoryException | MemoryError):
        return (
            f"out of memory ({first_line(e, 500)}); raise duckdb_memory_limit or lower "
            "duckdb_threads in the configuration. Nothing was published for this night"
        )
    if isinstance(e, duckdb.FatalException):
        # DuckDB stops the database after a fatal error and repeats it as "database has been invalidated";
        # the cause is the original error it quotes (under a tight memory limit, a block it could not pin).
        text = str(e)
        original = text.split('Original error: "', 1)[1] if 'Original error: "' in text else text
        cause_lines = original.removeprefix("FATAL Error: ").strip().splitlines()
        cause = (cause_lines[0][:500] if cause_lines else type(e).__name__).rstrip('"')
        if re.search(r"pin block|could not allocate|out of memory|memory_limit", original, re.IGNORECASE):
            return (
                f"out of memory in the database ({cause}); raise duckdb_memory_limit or lower "
                "duckdb_threads in the configuration. Nothing was published for this night; the "
                "database keeps what the last finished night committed"
            )
        return (
            f"the database stopped on a fatal error ({cause}). Nothing was published for this night; "
            "the database keeps what the last finished night committed"
        )
    if isinstance(e, OSError):
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror or first_line(e, 500)}. Nothing was published for this night"
    if isinstance(e, duckdb.IOException):
        return f"database I/O error ({first_line(e, 500)}). Nothing was published for this night"
    return f"unexpected {type(e).__name__}: {first_line(e, 500)}"


if __name__ == "__main__":
    sys.exit(main())
