"""The reconcile stage alone at sizes the whole night cannot reach here (50M invoices per side).

    .venv/bin/python bench/reconcile_scale.py --rows 1000000 10000000 50000000

Builds a staged night directly in a DuckDB file under --work (no landing files: the ingest stage
is what limits a whole 50M night on this machine), with about 1 % of keys missing from the
registry, 1 % only in the registry, 1 % differing in amount, 0.1 % duplicated in a source and a few
at registry risk, then runs ``reconcile_night`` (every shard, then the merge, as ``fapiao-audit
run`` does) in a process of its own under the configured DuckDB memory limit, and prints wall
time, CPU time, rows per second, peak RSS (VmHWM) and the findings per category. Results go to
bench/out/reconcile-<rows>-shards<n>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NIGHT = date(2026, 11, 21)
GiB = 1024**3
# Valid unified social credit codes (GB 32100), as in tests/factories.py.
SELLERS = ["91110108551385082Q", "91110105306438668F"]
BUYER = "91110105MA01R2QX0P"

_ROWS_SQL = """
SELECT DATE '2026-11-21' AS night, $kind AS source_kind,
       CASE WHEN $kind = 'registry' THEN 'registry' ELSE ['erp', 'pos', 'webshop'][1 + (i % 3)::INTEGER] END,
       'bench.parquet', i + 1,
       '2611' || lpad(i::VARCHAR, 16, '0'), '', '2611' || lpad(i::VARCHAR, 16, '0'),
       'digital_normal', '数电票（普通发票）',
       TIMESTAMP '2026-11-15 07:00:00' + to_seconds(i % 540000),
       (TIMESTAMP '2026-11-15 07:00:00' + to_seconds(i % 540000))::DATE,
       $sellers[1 + (i % 2)::INTEGER], '北京甲科技有限公司', $buyer, '北京丙贸易有限公司',
       amount, round(amount * 0.13, 2), 0.13, amount + round(amount * 0.13, 2),
       CASE WHEN $kind = 'registry' AND i % 5003 = 0 THEN 'out_of_control' ELSE 'normal' END,
       false, NULL, NULL
FROM (
    SELECT i, ((hash(i) % 1000000) / 100.0 + 1
               + CASE WHEN $kind = 'registry' AND i % 97 = 0 THEN 1 ELSE 0 END)::DECIMAL(18, 2) AS amount
    FROM range($lo, $hi) t(i)
    WHERE ($kind = 'issuer' AND i < $n) OR ($kind = 'registry' AND i % 100 <> 0)
)
"""


def build(db: Path, n: int) -> None:
    """A staged night of n invoices per side, written in chunks."""
    from fapiao_audit.config import Config
    from fapiao_audit.db import connect

    t0 = time.perf_counter()
    con = connect(db, Config())
    con.execute("SET enable_progress_bar = false")
    chunk = 5_000_000
    registry_hi = n + n // 100  # 1 % of keys only in the registry
    for kind, hi in (("issuer", n), ("registry", registry_hi)):
        for lo in range(0, hi, chunk):
            con.execute(
                f"INSERT INTO staged_invoices {_ROWS_SQL}",
                {
                    "kind": kind,
                    "lo": lo,
                    "hi": min(hi, lo + chunk),
                    "n": n,
                    "sellers": SELLERS,
                    "buyer": BUYER,
                },
            )
    # 0.1 % of issuer keys delivered twice by the same system.
    con.execute(
        "INSERT INTO staged_invoices SELECT * REPLACE (line + 100000000 AS line) FROM staged_invoices "
        "WHERE source_kind = 'issuer' AND line % 1000 = 1"
    )
    con.execute(
        "INSERT INTO ingested_files VALUES (DATE '2026-11-21', 'issuer', 'bench', 'bench.parquet', "
        "'synthetic', 'parquet', NULL, 0, 0, 0, 0, NULL)"
    )
    con.execute("CHECKPOINT")
    rows = con.execute("SELECT count(*) FROM staged_invoices").fetchone()[0]
    con.close()
    print(
        f"built {rows:,} staged rows ({n:,} invoices per side) in {time.perf_counter() - t0:.0f} s, "
        f"{db.stat().st_size / GiB:.2f} GiB",
        flush=True,
    )


def child(ns: argparse.Namespace) -> None:
    from dataclasses import replace

    from fapiao_audit.config import Config
    from fapiao_audit.pipeline import Paths, open_db, stage_reconcile

    cfg = replace(
        Config(),
        shards=ns.shards,
        duckdb_memory_limit=ns.memory_limit,
        duckdb_threads=ns.threads,
        duckdb_temp_directory=ns.temp_dir,
    )
    paths = Paths(Path(ns.db).parent, Path(ns.db).parent / "reports", Path(ns.db))
    with open_db(paths, cfg) as con:
        rows = con.execute("SELECT count(*) FROM staged_invoices WHERE night = ?", [NIGHT]).fetchone()[0]
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        result = stage_reconcile(con, NIGHT, cfg)
        seconds = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/self/status", encoding="ascii") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    out = {
        "rows": rows,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, 2),
        "peak_rss": hwm,
        "counts": result.counts,
        "issuer_keys": result.issuer_keys,
        "registry_keys": result.registry_keys,
        "matched_keys": result.matched_keys,
    }
    print("BENCH_JSON " + json.dumps(out), flush=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        p = argparse.ArgumentParser()
        p.add_argument("child")
        p.add_argument("--db")
        p.add_argument("--shards", type=int, default=1)
        p.add_argument("--memory-limit", default="3GB")
        p.add_argument("--threads", type=int, default=0)
        p.add_argument("--temp-dir")
        child(p.parse_args())
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--memory-limit", default="3GB")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "fapiao-bench")
    p.add_argument("--keep", action="store_true", help="keep the built databases for another run")
    ns = p.parse_args()
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    for n in ns.rows:
        folder = ns.work / f"staged-{n}"
        db = folder / "fapiao.duckdb"
        if not db.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            build(db, n)
        load = [round(x, 2) for x in os.getloadavg()]
        r = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "_child",
                "--db",
                str(db),
                "--shards",
                str(ns.shards),
                "--memory-limit",
                ns.memory_limit,
                "--threads",
                str(ns.threads),
                "--temp-dir",
                str(folder / "spill"),
            ],
            capture_output=True,
            text=True,
        )
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("BENCH_JSON ")]
        if r.returncode != 0 or not line:
            sys.exit(f"reconcile at {n:,} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
        res = json.loads(line[-1][len("BENCH_JSON ") :])
        res.update(
            rows_per_side=n,
            shards=ns.shards,
            memory_limit=ns.memory_limit,
            load_before=load,
            load_after=[round(x, 2) for x in os.getloadavg()],
        )
        print(
            f"reconcile {n:>12,} per side ({res['rows']:,} staged rows, {ns.shards} shard(s)): "
            f"{res['seconds']:8.1f} s wall, {res['cpu_seconds']:8.1f} s CPU, "
            f"{res['rows'] / res['seconds'] / 1e6:5.2f} M rows/s, peak RSS {res['peak_rss'] / GiB:.2f} GiB "
            f"(memory_limit {ns.memory_limit}); findings {sum(res['counts'].values()):,}; load {load}",
            flush=True,
        )
        (out_dir / f"reconcile-{n}-shards{ns.shards}.json").write_text(
            json.dumps(res, indent=1), encoding="utf-8"
        )
        if not ns.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
