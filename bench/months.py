"""Benchmark of months: consecutive generated nights on one database, then a compaction.

    .venv/bin/python bench/months.py --rows 200000 --nights 8 --retain 3
    .venv/bin/python bench/months.py --rows 1000000 --nights 30 --retain 7     # the issue's case (hours)

Consecutive nights overlap as real snapshots do (a 7-day window: each night repeats six days of the
one before). For every night, in a process of its own: ``pipeline.run_night`` (what ``fapiao-audit
run`` runs) with seconds and peak RSS by stage, the rows it staged, the database size after it, and the
persist floor of that night's files (DuckDB copying them as they are into a fresh database file: the
least staging must write; see bench/run.py). After the last night: ``fapiao-audit compact``.

Printed, and written to bench/out/months-<rows>-<nights>-r<retain>.json, with the ratios the months
targets are stated in: a steady-state night's time against the first night's and against its own persist
floor; database growth per steady-state night against the first night's database size; the size after
the last night and a compaction against the size after night ``retain``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # noqa: E402  (bench/run.py: the floor child, peak RSS sampling, machine description)

ROOT = base.ROOT
FIRST = date(2026, 11, 1)


def night_files(landing: Path, night: date) -> list[Path]:
    folder = landing / night.isoformat()
    return sorted(
        p
        for sub in ("registry", "issuers")
        for p in (folder / sub).rglob("*")
        if p.is_file() and p.suffix in (".csv", ".parquet", ".jsonl", ".xlsx")
    )


def generate(work: Path, rows: int, seed: int, nights: list[date]) -> Path:
    landing = work / f"landing-{rows}-{seed}"
    for n in nights:
        if not (landing / n.isoformat() / "generation.json").is_file():
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "fapiao_audit.cli",
                    "generate",
                    "--night",
                    n.isoformat(),
                    "--out",
                    str(landing),
                    "--rows",
                    str(rows),
                    "--seed",
                    str(seed),
                    "--layout",
                    "flat",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            print(f"generated {n} ({rows:,} a side) in {time.perf_counter() - t0:.0f} s", flush=True)
    return landing


def child_night(ns: argparse.Namespace) -> None:
    """One night on the shared database, stage by stage, with a peak RSS per stage."""
    from dataclasses import replace

    import duckdb

    from fapiao_audit.config import load_config
    from fapiao_audit.pipeline import Paths, run_night

    cfg = load_config(Path(ns.config) if ns.config else None)
    cfg = replace(
        cfg, duckdb_memory_limit=ns.memory_limit, retain_nights=ns.retain, restage_all=ns.restage_all
    )
    paths = Paths(Path(ns.landing), Path(ns.reports), Path(ns.db))
    stages: list[dict] = []
    base._reset_hwm()
    mark = {"cpu": base._cpu()}

    def log(msg: str) -> None:
        import re

        m = re.match(r"(\w+): ([\d.]+) s", msg)
        if m:
            cpu = base._cpu()
            stages.append(
                {
                    "stage": m.group(1),
                    "seconds": float(m.group(2)),
                    "cpu_seconds": round(cpu - mark["cpu"], 2),
                    "peak_rss": base._vm("VmHWM"),
                }
            )
            mark["cpu"] = cpu
            base._reset_hwm()

    night = date.fromisoformat(ns.night)
    t0 = time.perf_counter()
    outcome = run_night(paths, night, cfg, log=log)
    total = time.perf_counter() - t0
    summary = json.loads((outcome.published / "summary.json").read_text(encoding="utf-8"))
    con = duckdb.connect(ns.db, read_only=True)
    try:
        staged_total, nights_kept = con.execute(
            "SELECT count(*), count(DISTINCT night) FROM invoice_seen"
        ).fetchone()
        # what tonight wrote: new versions (invoices and lines) and one seen row per staged row
        written = con.execute(
            "SELECT (SELECT count(*) FROM invoice_versions WHERE first_night = $n) + "
            "(SELECT count(*) FROM line_versions WHERE first_night = $n), "
            "(SELECT count(*) FROM invoice_versions), "
            "(SELECT count(*) FROM invoice_seen WHERE night = $n) + (SELECT count(*) FROM line_seen WHERE night = $n)",
            {"n": date.fromisoformat(ns.night)},
        ).fetchone()
    finally:
        con.close()
    db = Path(ns.db)
    wal = db.with_name(db.name + ".wal")
    out = {
        "night": ns.night,
        "seconds": round(total, 3),
        "stages": stages,
        "findings": summary["total_findings"],
        "rows_read": sum(s["rows_read"] for s in summary["sources"]),
        "rows_staged": sum(s["rows_loaded"] for s in summary["sources"]),
        "staged_rows_in_db": staged_total,
        "staged_nights_in_db": nights_kept,
        "versions_written": written[0],
        "versions_in_db": written[1],
        "seen_rows_written": written[2],
        "db_bytes": db.stat().st_size + (wal.stat().st_size if wal.exists() else 0),
    }
    print("BENCH_JSON " + json.dumps(out), flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_month_night":
        p = argparse.ArgumentParser()
        p.add_argument("child")
        for opt in ("--landing", "--reports", "--db", "--config", "--night"):
            p.add_argument(opt)
        p.add_argument("--memory-limit", default="3GB")
        p.add_argument("--retain", type=int, default=35)
        p.add_argument("--restage-all", action="store_true")
        child_night(p.parse_args(argv))
        return 0
    p = argparse.ArgumentParser(description="Months of nights on one database (see bench/RESULTS.md).")
    p.add_argument("--rows", type=int, default=200_000, help="invoices per side (default 200000)")
    p.add_argument("--nights", type=int, default=8)
    p.add_argument("--retain", type=int, default=3, help="retain_nights for the runs (0: keep every night)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--memory-limit", default="3GB")
    p.add_argument("--no-floor", action="store_true", help="skip the per-night persist floor")
    p.add_argument(
        "--restage-all", action="store_true", help="write every staged row as a new version (restage_all)"
    )
    p.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "fapiao-months")
    ns = p.parse_args(argv)
    nights = [FIRST + timedelta(days=i) for i in range(ns.nights)]
    landing = generate(ns.work, ns.rows, ns.seed, nights)
    tag = f"{ns.rows}-{ns.nights}-r{ns.retain}" + ("-restage" if ns.restage_all else "")
    run_dir = ns.work / f"run-{tag}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    db = run_dir / "fapiao.duckdb"
    machine = base._machine()
    print(
        f"machine: {machine['cores']} cores, {machine['memory_gib']} GiB; duckdb {machine['duckdb']}; "
        f"load average {base._load()}",
        flush=True,
    )
    script = str(Path(__file__).resolve())
    results: list[dict] = []
    for n in nights:
        floor = None
        if not ns.no_floor:
            floor, _ = base._child(
                [
                    "_floor",
                    "--persist",
                    "--scratch",
                    str(run_dir / "floor"),
                    "--memory-limit",
                    ns.memory_limit,
                    *map(str, night_files(landing, n)),
                ]
            )
        proc_args = [
            "_month_night",
            "--landing",
            str(landing),
            "--reports",
            str(run_dir / "reports"),
            "--db",
            str(db),
            "--night",
            n.isoformat(),
            "--memory-limit",
            ns.memory_limit,
            "--retain",
            str(ns.retain),
            *(["--restage-all"] if ns.restage_all else []),
        ]
        night, peak = base._child(proc_args, script=script)
        night["peak_rss"] = peak
        night["load"] = base._load()
        if floor:
            night["persist_floor_s"] = floor["persist"]["seconds"]
            night["persist_floor_bytes"] = floor["persist"]["db_bytes"]
        results.append(night)
        st = {s["stage"]: s["seconds"] for s in night["stages"]}
        print(
            f"{n}: {night['seconds']:7.1f} s  ingest {st.get('ingest', 0):6.1f}  reconcile {st.get('reconcile', 0):5.1f}  "
            f"validate {st.get('validate', 0):5.1f}  publish {st.get('publish', 0):5.1f}  retention "
            f"{st.get('retention', 0):4.1f} | staged {night['rows_staged']:,} rows, "
            f"{night['versions_written']:,} new versions ({night['versions_in_db']:,} invoice versions, "
            f"{night['staged_rows_in_db']:,} seen in {night['staged_nights_in_db']} nights kept) | db "
            f"{night['db_bytes'] / 1e6:7.1f} MB | peak {peak / base.GiB:.2f} GiB"
            + (f" | persist floor {night['persist_floor_s']:.1f} s" if floor else ""),
            flush=True,
        )
    t0 = time.perf_counter()
    cfg = run_dir / "compact.toml"
    cfg.write_text(
        f'retain_nights = {ns.retain}\nduckdb_memory_limit = "{ns.memory_limit}"\n', encoding="utf-8"
    )
    out = subprocess.run(
        [sys.executable, "-m", "fapiao_audit.cli", "compact", "--db", str(db), "--config", str(cfg)],
        check=False,
        capture_output=True,
        text=True,
    )
    compact_s = time.perf_counter() - t0
    after = db.stat().st_size
    print(f"compact: {compact_s:.1f} s: {out.stdout.strip() or out.stderr.strip()}")
    ratios = _ratios(results, after, ns.retain)
    for k, v in ratios.items():
        print(f"{k}: {v}")
    doc = {
        "rows_per_side": ns.rows,
        "nights": results,
        "retain_nights": ns.retain,
        "restage_all": ns.restage_all,
        "compact_seconds": compact_s,
        "db_bytes_after_compact": after,
        "ratios": ratios,
        "machine": machine,
    }
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"months-{tag}.json"
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    print(f"written {path.relative_to(ROOT)}")
    return 0


def _ratios(nights: list[dict], compacted: int, retain: int) -> dict[str, str]:
    first = nights[0]
    out: dict[str, str] = {}
    steady = nights[1:]
    if steady:
        times = [n["seconds"] / first["seconds"] for n in steady]
        out["steady night / first night (target <= 0.4)"] = ", ".join(f"{t:.2f}" for t in times)
        growth = [
            (b["db_bytes"] - a["db_bytes"]) / first["db_bytes"]
            for a, b in zip(nights, nights[1:], strict=False)
        ]
        out["db growth per night / first night's db (target <= 0.20)"] = ", ".join(
            f"{g:+.2f}" for g in growth
        )
        if "persist_floor_s" in first:
            out["night / its persist floor (target <= 1.0)"] = ", ".join(
                f"{n['seconds'] / n['persist_floor_s']:.1f}" for n in nights
            )
    if retain and len(nights) >= retain:
        ref = nights[retain - 1]["db_bytes"]
        out[f"db after the last night / after night {retain} (retain_nights)"] = (
            f"{nights[-1]['db_bytes'] / ref:.2f}"
        )
        out[f"db after compaction / after night {retain} (target <= 1.5)"] = f"{compacted / ref:.2f}"
    return out


if __name__ == "__main__":
    sys.exit(main())
