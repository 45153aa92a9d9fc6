"""Benchmark: staging the registry's real export workbook (both sheets, lines kept) against staging the
same line rows the way the previous release read a workbook (openpyxl's read-only mode, first sheet,
every row an invoice).

    .venv/bin/python bench/workbook.py --invoices 300000      # about 1M lines, the issue's case
    .venv/bin/python bench/workbook.py --invoices 30000 --no-reference

Each measurement runs in its own process (peak RSS is per process). The night is generated once with
``fapiao-audit generate`` (real layout) and cached under /tmp/fapiao-bench.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

NIGHT = date(2026, 11, 21)
CACHE = Path("/tmp/fapiao-bench")


def generate(invoices: int, seed: int) -> Path:
    from fapiao_audit.generate import generate_night

    landing = CACHE / f"workbook-{invoices}-{seed}"
    if not (landing / NIGHT.isoformat() / "expected_findings.csv").is_file():
        t0 = time.perf_counter()
        generate_night(landing, NIGHT, rows=invoices, seed=seed)
        print(f"generated {invoices:,} invoices in {time.perf_counter() - t0:.1f} s -> {landing}", flush=True)
    return landing


def _openpyxl_first_sheet(self, path):  # the previous release's reader, for the reference
    import openpyxl
    import pyarrow as pa

    from fapiao_audit.ingest import _Part

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    sheet = wb.sheetnames[0]
    try:
        rows = wb.worksheets[0].iter_rows(values_only=True)
        headers = [str(v) if v is not None else "" for v in next(rows)]
        width, batches, buf, lines = len(headers), [], [], []

        def text(v):
            if v is None:
                return None
            if isinstance(v, float):
                return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
            return str(v)

        def flush():
            if buf:
                arrays = [
                    pa.array([r[i] if i < len(r) else None for r in buf], pa.string()) for i in range(width)
                ]
                arrays.append(pa.array(lines, pa.int64()))
                batches.append(
                    pa.RecordBatch.from_arrays(arrays, [f"c{i}" for i in range(width)] + ["__line"])
                )
                buf.clear()
                lines.clear()

        for n, values in enumerate(rows, start=2):
            cells = [text(v) for v in values]
            if any(c not in (None, "") for c in cells):
                buf.append(cells[:width])
                lines.append(n)
                if len(buf) >= 50_000:
                    flush()
        flush()
    finally:
        wb.close()
    schema = pa.schema([(f"c{i}", pa.string()) for i in range(width)] + [("__line", pa.int64())])
    self.con.register("ing_xlsx_arrow", pa.Table.from_batches(batches, schema=schema))
    self.con.execute("CREATE OR REPLACE TEMP TABLE ing_sheet_0 AS SELECT * FROM ing_xlsx_arrow")
    self.con.unregister("ing_xlsx_arrow")
    return [_Part(sheet, headers, "ing_sheet_0", "invoices")]


def _peak_rss_mib() -> int:
    """This process's peak RSS (VmHWM: ru_maxrss would carry the parent's peak over fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def measure(landing: Path, mode: str, out: Path) -> None:
    """One measurement (run in a child process): stage the night's registry delivery."""
    from fapiao_audit import ingest
    from fapiao_audit.config import Config
    from fapiao_audit.db import connect

    if mode == "reference":
        ingest._Reader._xlsx = _openpyxl_first_sheet
    work = out.parent / f"work-{mode}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    con = connect(work / "fapiao.duckdb", Config())
    files = tuple(sorted((landing / NIGHT.isoformat() / "registry").glob("*.xlsx")))
    t0 = time.perf_counter()
    reports = ingest.ingest_source(
        con, landing, NIGHT, ingest.Delivery("registry", "registry", files), Config(), work / "tmp"
    )
    seconds = time.perf_counter() - t0
    invoices, lines = con.execute(
        "SELECT (SELECT count(*) FROM staged_invoices), (SELECT count(*) FROM staged_lines)"
    ).fetchone()
    con.close()
    out.write_text(
        json.dumps(
            {
                "mode": mode,
                "seconds": round(seconds, 1),
                "files": len(files),
                "rows_read": sum(r.rows_read for r in reports),
                "rows_skipped": sum(r.rows_skipped for r in reports),
                "invoices_staged": invoices,
                "lines_staged": lines,
                "peak_rss_mib": _peak_rss_mib(),
            }
        )
    )
    shutil.rmtree(work, ignore_errors=True)


def run(landing: Path, mode: str) -> dict:
    out = CACHE / f"result-{mode}.json"
    out.unlink(missing_ok=True)
    subprocess.run([sys.executable, __file__, "--measure", mode, "--landing", str(landing)], check=True)
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--invoices", type=int, default=300_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-reference", action="store_true", help="skip the previous release's reader (slow)")
    p.add_argument("--measure", choices=["workbook", "reference"], help=argparse.SUPPRESS)
    p.add_argument("--landing", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        measure(args.landing, args.measure, CACHE / f"result-{args.measure}.json")
        return
    landing = generate(args.invoices, args.seed)
    new = run(landing, "workbook")
    print(
        f"real export workbook(s): {new['files']} file(s), {new['rows_read']:,} rows read "
        f"({new['invoices_staged']:,} invoices and {new['lines_staged']:,} lines staged, "
        f"{new['rows_skipped']} skipped) in {new['seconds']} s = "
        f"{new['rows_read'] / max(new['seconds'], 0.001):,.0f} rows/s, peak RSS {new['peak_rss_mib']:,} MiB"
    )
    if args.no_reference:
        return
    ref = run(landing, "reference")
    print(
        f"reference (previous release: openpyxl read-only, the first sheet, its {ref['rows_read']:,} line rows "
        f"staged as invoices): {ref['seconds']} s, peak RSS {ref['peak_rss_mib']:,} MiB"
    )
    print(
        f"ratio, real export / reference: {new['seconds'] / max(ref['seconds'], 0.001):.2f}x (target <= 1.5x)"
    )


if __name__ == "__main__":
    main()
