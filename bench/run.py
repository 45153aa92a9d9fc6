"""Scale benchmark of a whole night: ``fapiao-audit run`` stage by stage against the raw floor.

    .venv/bin/python bench/run.py --results                 # what bench/RESULTS.md reports (1M, 10M, 50M)
    .venv/bin/python bench/run.py --rows 1000000            # 1M invoices per side
    .venv/bin/python bench/run.py --rows 10000000 --no-mixed

For each size it generates a synthetic night (cached under --work, never in the repository), and
an all-Parquet copy of it (the CSV and JSONL files rewritten as Parquet with their text columns kept
as text; the ERP's typed Parquet copied as it is), then for each form of the night (``mixed``: ERP
Parquet, POS CSV, web-shop JSONL, GB18030 registry CSV as generated; ``parquet``: all Parquet):

* the floor: DuckDB reads every input file and hashes every row (a GB18030 file is transcoded
  first, as ingest must), in a process of its own with the same DuckDB settings;
* the night: ``pipeline.run_night`` (exactly what ``fapiao-audit run`` runs) in a process of its
  own, with wall time, CPU time and peak RSS (VmHWM, reset between stages) per stage;
* at most --datacompy-rows per side: datacompy comparing the same staged issuer and registry
  records on the invoice key, against the reconcile stage.

Every figure is printed and written to bench/out/<size>.json (git-ignored). The machine is
described in the output (cores, memory, load average before and after), since a shared machine
moves wall times; CPU seconds move less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NIGHT = "2026-11-21"
GiB = 1024**3


# ---------------------------------------------------------------- helpers


def _vm(field: str, pid: int | str = "self") -> int:
    """A /proc/<pid>/status field in bytes (VmHWM, VmRSS)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_hwm() -> bool:
    """Reset this process's peak RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _machine() -> dict:
    mem = 0
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import duckdb

    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem / GiB, 1),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _child(args: list[str], env: dict[str, str] | None = None, script: str | None = None) -> tuple[dict, int]:
    """Run a measuring child (this script, or ``script``); return its JSON result and the peak RSS sampled
    from outside."""
    proc = subprocess.Popen(
        [sys.executable, script or str(Path(__file__).resolve()), *args],
        stdout=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        text=True,
    )
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            try:
                peak = max(peak, _vm("VmRSS", proc.pid))
            except (OSError, ValueError):
                pass
            stop.wait(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    stop.set()
    th.join()
    lines = [ln for ln in out.splitlines() if ln.startswith("BENCH_JSON ")]
    if proc.returncode not in (0, 1) or not lines:
        sys.exit(
            f"bench: child {args[0] if args else script} failed (exit {proc.returncode}):\n{out[-3000:]}"
        )
    return json.loads(lines[-1][len("BENCH_JSON ") :]), peak


def _fmt_s(x: float) -> str:
    return f"{x:,.1f}" if x >= 10 else f"{x:,.2f}"


def _fmt_rate(rows: int, s: float) -> str:
    if s <= 0:
        return "-"
    r = rows / s
    return f"{r / 1e6:,.2f} M/s" if r >= 1e6 else f"{r / 1e3:,.0f} k/s"


def _gib(b: int) -> str:
    return f"{b / GiB:.2f} GiB"


# ---------------------------------------------------------------- data


def generate(work: Path, rows: int, seed: int) -> Path:
    """The generated (mixed-format) landing folder, made once per size and seed."""
    landing = work / f"landing-{rows}-{seed}"
    marker = landing / NIGHT / "generation.json"
    if not marker.is_file():
        shutil.rmtree(landing, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "fapiao_audit.cli",
                "generate",
                "--night",
                NIGHT,
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
        )
        print(
            f"generated {rows:,} invoices per side in {time.perf_counter() - t0:.0f} s -> {landing}",
            flush=True,
        )
    return landing


def to_parquet(src_landing: Path, work: Path, rows: int, seed: int) -> Path:
    """The same night with every input file rewritten as Parquet (text columns stay text)."""
    import duckdb

    from fapiao_audit.ingest import detect_encoding, transcode_to_utf8

    landing = work / f"landing-{rows}-{seed}-parquet"
    marker = landing / NIGHT / ".converted"
    if marker.is_file():
        return landing
    shutil.rmtree(landing, ignore_errors=True)
    t0 = time.perf_counter()
    con = duckdb.connect(config={"enable_progress_bar": False})
    con.execute("SET preserve_insertion_order = true")
    src_night = src_landing / NIGHT
    for f in sorted(p for p in src_night.rglob("*") if p.is_file()):
        rel = f.relative_to(src_night)
        if rel.parts[0] not in ("registry", "issuers"):
            continue
        dst = landing / NIGHT / rel.with_suffix(".parquet")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if f.suffix == ".parquet":
            shutil.copyfile(f, dst)
        elif f.suffix == ".csv":
            text = f
            enc = detect_encoding(f)
            if enc == "gb18030":
                text = work / (f.name + ".utf8")
                transcode_to_utf8(f, enc, text)
            con.read_csv(str(text), header=True, all_varchar=True).write_parquet(str(dst))
            if text != f:
                text.unlink()
        elif f.suffix == ".jsonl":
            keys = [
                r[0] for r in con.execute("DESCRIBE SELECT * FROM read_ndjson($p)", {"p": str(f)}).fetchall()
            ]
            con.read_json(
                str(f), format="newline_delimited", columns={k: "VARCHAR" for k in keys}
            ).write_parquet(str(dst))
    con.close()
    marker.write_text("converted\n", encoding="utf-8")
    print(f"converted to all-Parquet in {time.perf_counter() - t0:.0f} s -> {landing}", flush=True)
    return landing


def input_files(landing: Path) -> list[Path]:
    night = landing / NIGHT
    return sorted(
        p
        for sub in ("registry", "issuers")
        for p in (night / sub).rglob("*")
        if p.is_file() and p.suffix in (".csv", ".parquet", ".jsonl", ".xlsx")
    )


# ---------------------------------------------------------------- children (each in its own process)


def _floor_input(con, p: Path, scratch: Path) -> Path:
    """The view floor_input over one input file (a GB18030 CSV transcoded first, as ingest must);
    returns the file read, to delete afterwards if it is not the input itself."""
    from fapiao_audit.ingest import detect_encoding, transcode_to_utf8

    src = p
    if p.suffix == ".csv":
        enc = detect_encoding(p)
        if enc == "gb18030":
            src = scratch / (p.name + ".utf8")
            transcode_to_utf8(p, enc, src)
        rel = con.read_csv(str(src), header=True, all_varchar=True)
    elif p.suffix == ".jsonl":
        rel = con.read_json(str(p), format="newline_delimited")
    else:
        rel = con.read_parquet(str(p))
    rel.create_view("floor_input", replace=True)
    return src


def child_floor(ns: argparse.Namespace) -> None:
    """Read and hash every input file with DuckDB: the least any ingest must do."""
    import duckdb

    config = {"memory_limit": ns.memory_limit}
    if ns.threads:
        config["threads"] = ns.threads
    con = duckdb.connect(config=config)
    con.execute("SET enable_progress_bar = false")
    scratch = Path(ns.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), _cpu()
    files, rows = [], 0
    for p in map(Path, ns.files):
        t1 = time.perf_counter()
        src = _floor_input(con, p, scratch)
        n, _h = con.execute("SELECT count(*), bit_xor(hash(t)) FROM floor_input t").fetchone()
        if src != p:
            src.unlink()
        rows += n
        files.append({"file": p.name, "rows": n, "seconds": round(time.perf_counter() - t1, 3)})
    out = {
        "seconds": round(time.perf_counter() - t0, 3),
        "cpu_seconds": round(_cpu() - c0, 2),
        "rows": rows,
        "files": files,
        "peak_rss": _vm("VmHWM"),
    }
    if ns.persist:
        out["persist"] = _persist_floor(con, ns, scratch)
    print("BENCH_JSON " + json.dumps(out), flush=True)


def _persist_floor(con, ns: argparse.Namespace, scratch: Path) -> dict:
    """Copy every input file, as it is (no mapping, no normalisation), into a table of a DuckDB database
    file, and checkpoint: the least the staging the contract asks for (staged invoices in DuckDB)
    must write. DuckDB's storage compresses every column as it writes, which costs far more than a scan."""
    db = scratch / "persist-floor.duckdb"
    for f in scratch.glob("persist-floor.duckdb*"):
        f.unlink()
    con.execute("ATTACH '" + str(db).replace("'", "''") + "' AS persist_floor")
    t0, c0 = time.perf_counter(), _cpu()
    for i, p in enumerate(map(Path, ns.files)):
        src = _floor_input(con, p, scratch)
        con.execute(f"CREATE TABLE persist_floor.t{i} AS FROM floor_input")
        if src != p:
            src.unlink()
    con.execute("CHECKPOINT persist_floor")
    out = {
        "seconds": round(time.perf_counter() - t0, 3),
        "cpu_seconds": round(_cpu() - c0, 2),
        "db_bytes": db.stat().st_size,
    }
    con.execute("DETACH persist_floor")
    for f in scratch.glob("persist-floor.duckdb*"):
        f.unlink()
    return out


def child_night(ns: argparse.Namespace) -> None:
    """``fapiao-audit run`` for one night, stage by stage, with a peak RSS per stage."""
    from dataclasses import replace

    from fapiao_audit.config import load_config
    from fapiao_audit.pipeline import Paths, run_night

    cfg = load_config(Path(ns.config) if ns.config else None)
    cfg = replace(
        cfg,
        shards=ns.shards,
        duckdb_memory_limit=ns.memory_limit,
        duckdb_threads=ns.threads,
        duckdb_temp_directory=ns.temp_dir or cfg.duckdb_temp_directory,
    )
    paths = Paths(Path(ns.landing), Path(ns.reports), Path(ns.db))
    stages: list[dict] = []
    can_reset = _reset_hwm()
    mark = {"cpu": _cpu()}

    def log(msg: str) -> None:
        m = re.match(r"(\w+): ([\d.]+) s", msg)
        if not m:
            return
        cpu = _cpu()
        stages.append(
            {
                "stage": m.group(1),
                "seconds": float(m.group(2)),
                "cpu_seconds": round(cpu - mark["cpu"], 2),
                "peak_rss": _vm("VmHWM"),
            }
        )
        mark["cpu"] = cpu
        _reset_hwm()

    t0 = time.perf_counter()
    outcome = run_night(paths, date.fromisoformat(NIGHT), cfg, log=log)
    total = time.perf_counter() - t0
    summary = json.loads((outcome.published / "summary.json").read_text(encoding="utf-8"))
    sizes = {p.name: p.stat().st_size for p in outcome.published.iterdir()}
    out = {
        "seconds": round(total, 3),
        "stages": stages,
        "per_stage_peak": can_reset,
        "outcome": outcome.outcome,
        "findings": summary["total_findings"],
        "counts": summary["counts"],
        "keys": summary["keys"],
        "rows_read": sum(s["rows_read"] for s in summary["sources"]),
        "rows_loaded": sum(s["rows_loaded"] for s in summary["sources"]),
        "output_bytes": sizes,
        "db_bytes": Path(ns.db).stat().st_size,
        "config": {
            "shards": cfg.shards,
            "duckdb_memory_limit": cfg.duckdb_memory_limit,
            "duckdb_threads": cfg.duckdb_threads,
            "duckdb_temp_directory": cfg.duckdb_temp_directory,
        },
    }
    print("BENCH_JSON " + json.dumps(out), flush=True)


def child_datacompy(ns: argparse.Namespace) -> None:
    """datacompy on the same comparison: staged issuer records against registry records, by key."""
    try:
        from datacompy.pandas import PandasCompare
    except ImportError:
        try:
            from datacompy import Compare as PandasCompare  # datacompy < 1.0
        except ImportError:
            print("BENCH_JSON " + json.dumps({"skipped": "datacompy is not installed"}), flush=True)
            return
    import datacompy
    import duckdb

    cols = (
        "invoice_key, amount, tax_amount, total_amount, issue_date, seller_tax_id, buyer_tax_id, buyer_name, "
        "invoice_type, status"
    )
    con = duckdb.connect(ns.db, read_only=True)
    q = f"SELECT {cols} FROM staged_invoices WHERE night = $n AND source_kind = $k AND invoice_key IS NOT NULL"
    issuer = con.execute(q, {"n": date.fromisoformat(NIGHT), "k": "issuer"}).df()
    registry = con.execute(q, {"n": date.fromisoformat(NIGHT), "k": "registry"}).df()
    con.close()
    t0, c0 = time.perf_counter(), _cpu()
    cmp = PandasCompare(issuer, registry, join_columns="invoice_key", df1_name="issuer", df2_name="registry")
    mismatches = cmp.all_mismatch()
    only_issuer, only_registry = len(cmp.df1_unq_rows), len(cmp.df2_unq_rows)
    out = {
        "seconds": round(time.perf_counter() - t0, 3),
        "cpu_seconds": round(_cpu() - c0, 2),
        "rows": [len(issuer), len(registry)],
        "mismatched_rows": len(mismatches),
        "only_issuer": only_issuer,
        "only_registry": only_registry,
        "peak_rss": _vm("VmHWM"),
        "version": datacompy.__version__,
    }
    out["bare_join_seconds"] = _bare_join(issuer, registry, ns.memory_limit)
    print("BENCH_JSON " + json.dumps(out), flush=True)


def _bare_join(issuer, registry, memory_limit: str) -> float:
    """What datacompy computes, as one DuckDB query on the same records (in DuckDB tables first): a full
    outer join on the key keeping the keys found on one side only or differing in any of the compared
    fields, with a flag per field: a reference for the comparison alone, with none of the rest of the
    reconcile stage (duplicates, red invoices, invalid records, probable matches, history, storage).
    The median of three runs."""
    import duckdb

    con = duckdb.connect(config={"memory_limit": memory_limit})
    con.execute("SET enable_progress_bar = false")
    con.execute("CREATE TABLE i AS FROM issuer")
    con.execute("CREATE TABLE r AS FROM registry")
    fields = [c for c in issuer.columns if c != "invoice_key"]
    flags = ", ".join(f'i."{c}" IS DISTINCT FROM r."{c}" AS "{c}_differs"' for c in fields)
    differs = " OR ".join(f'i."{c}" IS DISTINCT FROM r."{c}"' for c in fields)
    sql = (
        "CREATE OR REPLACE TABLE d AS SELECT coalesce(i.invoice_key, r.invoice_key) AS invoice_key, "
        f"i.invoice_key IS NULL AS registry_only, r.invoice_key IS NULL AS issuer_only, {flags} "
        f"FROM i FULL OUTER JOIN r USING (invoice_key) WHERE i.invoice_key IS NULL OR r.invoice_key IS NULL OR {differs}"
    )
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        con.execute(sql)
        times.append(time.perf_counter() - t0)
    con.close()
    return round(sorted(times)[1], 3)


# ---------------------------------------------------------------- the benchmark


def measure(form: str, landing: Path, ns: argparse.Namespace, rows: int) -> dict:
    files = input_files(landing)
    print(
        f"\n== {rows:,} invoices per side, {form} night: {len(files)} files, "
        f"{sum(f.stat().st_size for f in files) / 1e6:,.0f} MB",
        flush=True,
    )
    scratch = ns.work / "scratch"
    common = ["--memory-limit", ns.memory_limit, "--threads", str(ns.threads)]
    load0 = _load()
    floor, floor_peak = _child(["_floor", "--persist", "--scratch", str(scratch), *common, *map(str, files)])
    out_dir = ns.work / f"run-{rows}-{form}-{ns.shards}"
    shutil.rmtree(out_dir, ignore_errors=True)
    night, night_peak = _child(
        [
            "_night",
            "--landing",
            str(landing),
            "--reports",
            str(out_dir / "reports"),
            "--db",
            str(out_dir / "fapiao.duckdb"),
            "--shards",
            str(ns.shards),
            "--temp-dir",
            ns.temp_dir or str(out_dir / "spill"),
            *common,
            *(["--config", str(ns.config)] if ns.config else []),
        ]
    )
    result = {
        "form": form,
        "files": [f.name for f in files],
        "input_bytes": sum(f.stat().st_size for f in files),
        "floor": {**floor, "sampled_peak_rss": floor_peak},
        "night": {**night, "sampled_peak_rss": night_peak},
        "load_before": load0,
        "load_after": _load(),
    }
    if ns.datacompy_rows and rows <= ns.datacompy_rows:
        dc, _ = _child(
            ["_datacompy", "--db", str(out_dir / "fapiao.duckdb"), "--memory-limit", ns.memory_limit]
        )
        result["datacompy"] = dc
    if not ns.keep:
        shutil.rmtree(out_dir, ignore_errors=True)
    report(result, rows)
    return result


def _ratio(night: dict, stage: str, seconds: float) -> str:
    s = next(x for x in night["stages"] if x["stage"] == stage)
    return f"{s['seconds'] / seconds:.1f}x"


def report(r: dict, rows: int) -> None:
    floor, night = r["floor"], r["night"]
    n_in = night["rows_read"]
    print(
        f"floor (DuckDB scan + hash of the input files): {_fmt_s(floor['seconds'])} s, "
        f"{_fmt_rate(floor['rows'], floor['seconds'])}, peak RSS {_gib(floor['peak_rss'])}"
    )
    persist = floor.get("persist")
    if persist:
        print(
            f"persist floor (DuckDB copies the input files as they are into a database file, the least staging "
            f"writes): {_fmt_s(persist['seconds'])} s ({_fmt_s(persist['cpu_seconds'])} cpu), "
            f"{persist['db_bytes'] / 1e6:,.0f} MB; ingest is {_ratio(night, 'ingest', persist['seconds'])} of it, "
            f"the night {night['seconds'] / persist['seconds']:.1f}x"
        )
    print(f"{'stage':<14}{'wall s':>9}{'cpu s':>9}{'rows/s':>13}{'peak RSS':>11}{'x floor':>9}")
    for s in night["stages"]:
        label = "expectations" if s["stage"] == "validate" else s["stage"]
        print(
            f"{label:<14}{_fmt_s(s['seconds']):>9}{_fmt_s(s['cpu_seconds']):>9}{_fmt_rate(n_in, s['seconds']):>13}"
            f"{_gib(s['peak_rss']):>11}{s['seconds'] / floor['seconds']:>8.1f}x"
        )
    peak = max(night["sampled_peak_rss"], *(s["peak_rss"] for s in night["stages"]))
    print(
        f"{'end to end':<14}{_fmt_s(night['seconds']):>9}{'':>9}{_fmt_rate(n_in, night['seconds']):>13}"
        f"{_gib(peak):>11}{night['seconds'] / floor['seconds']:>8.1f}x"
    )
    print(
        f"rows read {n_in:,}, findings {night['findings']:,}, outputs: "
        + ", ".join(f"{k} {v / 1e6:,.1f} MB" for k, v in sorted(night["output_bytes"].items()))
    )
    print(f"load average before {r['load_before']}, after {r['load_after']}")
    dc = r.get("datacompy")
    if dc and "skipped" in dc:
        print(f"datacompy: skipped ({dc['skipped']}; `.venv/bin/pip install datacompy` to include it)")
    elif dc:
        rec = next(s for s in night["stages"] if s["stage"] == "reconcile")
        print(
            f"datacompy {dc['version']} on the same comparison ({dc['rows'][0]:,} x {dc['rows'][1]:,} records): "
            f"{_fmt_s(dc['seconds'])} s, peak RSS {_gib(dc['peak_rss'])}; reconcile stage {_fmt_s(rec['seconds'])} s "
            f"-> datacompy / reconcile = {dc['seconds'] / rec['seconds']:.1f}x"
        )
        if dc.get("bare_join_seconds"):
            print(
                f"the same comparison as one DuckDB full outer join (records already in DuckDB tables): "
                f"{_fmt_s(dc['bare_join_seconds'])} s -> datacompy / bare join = "
                f"{dc['seconds'] / dc['bare_join_seconds']:.1f}x (the comparison alone)"
            )


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0].startswith("_"):
        p = argparse.ArgumentParser()
        p.add_argument("child")
        p.add_argument("files", nargs="*")
        for opt in ("--scratch", "--landing", "--reports", "--db", "--temp-dir", "--config"):
            p.add_argument(opt)
        p.add_argument("--memory-limit", default="3GB")
        p.add_argument("--threads", type=int, default=0)
        p.add_argument("--shards", type=int, default=1)
        p.add_argument("--persist", action="store_true")
        ns = p.parse_intermixed_args(argv)
        {"_floor": child_floor, "_night": child_night, "_datacompy": child_datacompy}[ns.child](ns)
        return 0
    p = argparse.ArgumentParser(description="Scale benchmark of fapiao-audit (see bench/RESULTS.md).")
    p.add_argument(
        "--rows", type=int, nargs="+", default=[1_000_000], help="invoices per side (default 1000000)"
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--work",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "fapiao-bench",
        help="generated nights and run folders (default /tmp/fapiao-bench; never the repository)",
    )
    p.add_argument("--shards", type=int, default=1)
    p.add_argument(
        "--memory-limit",
        default="3GB",
        help="DuckDB memory_limit (default 3GB: with Python, Arrow and GX on top, the process stays under 4 GiB)",
    )
    p.add_argument("--threads", type=int, default=0, help="DuckDB threads (default: all cores)")
    p.add_argument(
        "--temp-dir", default=None, help="DuckDB temp_directory for spilling (default: in the run folder)"
    )
    p.add_argument("--config", type=Path, default=None, help="TOML configuration for the runs")
    p.add_argument(
        "--no-mixed", action="store_true", help="skip the night as generated (GBK CSV, JSONL, ...)"
    )
    p.add_argument("--no-parquet", action="store_true", help="skip the all-Parquet night")
    p.add_argument(
        "--datacompy-rows",
        type=int,
        default=1_000_000,
        help="run datacompy for sizes up to this many rows per side (0: never)",
    )
    p.add_argument("--keep", action="store_true", help="keep the run folders (database, reports)")
    p.add_argument(
        "--results",
        action="store_true",
        help="what bench/RESULTS.md reports, in one command: 1M (mixed and Parquet nights, datacompy), "
        "10M (Parquet, datacompy) and 50M (Parquet) invoices per side",
    )
    ns = p.parse_args(argv)
    ns.work.mkdir(parents=True, exist_ok=True)
    if ROOT in ns.work.resolve().parents and "bench/out" not in str(ns.work):
        sys.exit("bench: --work must be outside the repository (or under bench/out/)")
    machine = _machine()
    print(
        f"machine: {machine['cores']} cores, {machine['memory_gib']} GiB, {machine['cpu']}; "
        f"duckdb {machine['duckdb']}, python {machine['python']}; load average {_load()}",
        flush=True,
    )
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    # (rows, mixed night too, datacompy) per size
    plan = [(rows, not ns.no_mixed, rows <= ns.datacompy_rows) for rows in ns.rows]
    if ns.results:
        plan = [(1_000_000, True, True), (10_000_000, False, True), (50_000_000, False, False)]
    for rows, with_mixed, with_datacompy in plan:
        ns.datacompy_rows = rows if with_datacompy else 0
        mixed = generate(ns.work, rows, ns.seed)
        results = {"rows_per_side": rows, "machine": machine, "runs": []}
        if with_mixed:
            results["runs"].append(measure("mixed", mixed, ns, rows))
        if not ns.no_parquet:
            results["runs"].append(measure("parquet", to_parquet(mixed, ns.work, rows, ns.seed), ns, rows))
        forms = "-".join(r["form"] for r in results["runs"])
        path = out_dir / f"{rows}-shards{ns.shards}-{forms}.json"
        path.write_text(json.dumps(results, indent=1), encoding="utf-8")
        print(f"\nwritten {path.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
