#!/usr/bin/env python3
"""Fault matrix: kill ``fapiao-audit run`` at every stage and show that nothing is lost or half-published.

Run it by hand (it takes a few minutes):

    .venv/bin/python scripts/fault_matrix.py [--rows 3000] [--work /tmp/fapiao-fault-matrix]

It generates one synthetic night, publishes it once (the baseline), then for each fault starts a
real ``fapiao-audit run`` subprocess on the same database and reports folder and kills it with
SIGKILL: at a precise point through the test hook ``FAPIAO_TEST_PAUSE_AT`` (see
``fapiao_audit.db.pause_point``), or blind, the moment a file appears (the publish temp folder, the
DuckDB WAL). For every fault it prints the published night's manifest checksums before and after
the kill (they must be equal: the reader still sees the previous complete version), then reruns
the night undisturbed and checks the result against the baseline: same exit code, byte-identical
exceptions.csv, the same rows in DuckDB (no duplicates), no leftovers in the reports folder.
A refused second run (database in use) and a full disk (a 1 MiB tmpfs, when run as root) are
shown the same way. Exit status 0 when every row passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

NIGHT = "2026-11-21"
TABLES = ("staged_invoices", "rejected_rows", "ingested_files", "findings", "run_state")


def manifest_sums(night_dir: Path) -> dict[str, str]:
    """The manifest's sha256 per file, after checking each against the file on disk."""
    if not (night_dir / "manifest.json").is_file():
        return {}
    manifest = json.loads((night_dir / "manifest.json").read_text(encoding="utf-8"))
    sums = {}
    for f in manifest["files"]:
        actual = hashlib.sha256((night_dir / f["name"]).read_bytes()).hexdigest()
        sums[f["name"]] = f["sha256"] if actual == f["sha256"] else f"MISMATCH:{actual}"
    sums["manifest.json"] = hashlib.sha256((night_dir / "manifest.json").read_bytes()).hexdigest()
    return sums


def short(sums: dict[str, str]) -> str:
    if not sums:
        return "(none)"
    return hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()[:12]


def db_rows(db: Path) -> dict[str, int]:
    import duckdb

    con = duckdb.connect(str(db))
    try:
        n = date.fromisoformat(NIGHT)
        out = {t: con.execute(f"SELECT count(*) FROM {t} WHERE night = ?", [n]).fetchone()[0] for t in TABLES}
        out["duplicated_lines"] = con.execute(
            "SELECT count(*) FROM (SELECT source_system, file, line FROM staged_invoices WHERE night = ? "
            "GROUP BY ALL HAVING count(*) > 1)",
            [n],
        ).fetchone()[0]
        return out
    finally:
        con.close()


class Matrix:
    def __init__(self, work: Path, rows: int) -> None:
        self.work = work
        self.landing = work / "landing"
        self.reports = work / "reports"
        self.db = work / "db" / "fapiao.duckdb"
        self.rows = rows
        self.results: list[dict[str, object]] = []

    def cmd(self, reports: Path | None = None, config: Path | None = None) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "fapiao_audit.cli",
            "run",
            "--night",
            NIGHT,
            "--landing",
            str(self.landing),
            "--reports",
            str(reports or self.reports),
            "--db",
            str(self.db),
        ]
        return [*args, "--config", str(config)] if config else args

    def run(self, **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(**kw), capture_output=True, text=True, timeout=1800)  # type: ignore[arg-type]

    def baseline(self) -> None:
        from fapiao_audit.generate import generate_night

        shutil.rmtree(self.work, ignore_errors=True)
        generate_night(self.landing, date.fromisoformat(NIGHT), rows=self.rows, seed=29)
        r = self.run()
        if r.returncode not in (0, 1):
            sys.exit(f"baseline run failed (exit {r.returncode}): {r.stderr}")
        self.code = r.returncode
        self.csv = (self.reports / NIGHT / "exceptions.csv").read_bytes()
        self.rows_in_db = db_rows(self.db)
        print(
            f"baseline: exit {self.code}, exceptions.csv sha256 {hashlib.sha256(self.csv).hexdigest()[:12]}, "
            f"manifest {short(manifest_sums(self.reports / NIGHT))}, rows {self.rows_in_db}\n"
        )

    # -------------------------------------------------------------- ways to stop a run

    def kill_at(self, point: str) -> tuple[str, str]:
        marker = self.work / "paused"
        marker.unlink(missing_ok=True)
        env = {**os.environ, "FAPIAO_TEST_PAUSE_AT": point, "FAPIAO_TEST_PAUSE_FILE": str(marker)}
        proc = subprocess.Popen(
            self.cmd(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        return self._kill_when(proc, marker.exists, f"pause point {point}")

    def kill_when_appears(self, what: str, found: Callable[[], bool]) -> tuple[str, str]:
        proc = subprocess.Popen(self.cmd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self._kill_when(proc, found, what)

    @staticmethod
    def _kill_when(proc: subprocess.Popen[str], ready: Callable[[], bool], what: str) -> tuple[str, str]:
        deadline = time.monotonic() + 600
        while not ready():
            if proc.poll() is not None:
                proc.communicate()
                return "not killed", f"the run finished (exit {proc.returncode}) before {what}"
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return "SIGKILL", what

    # -------------------------------------------------------------- one row of the matrix

    def fault(self, name: str, action: Callable[[], tuple[str, str]], reports: Path | None = None) -> None:
        reports = reports or self.reports
        before = manifest_sums(reports / NIGHT)
        latest_before = os.readlink(reports / "latest") if (reports / "latest").is_symlink() else None
        how, detail = action()
        after = manifest_sums(reports / NIGHT)
        latest_after = os.readlink(reports / "latest") if (reports / "latest").is_symlink() else None
        rows_after_kill = db_rows(self.db)
        r = self.run(reports=reports)
        rerun_csv = (reports / NIGHT / "exceptions.csv").read_bytes() if (reports / NIGHT).is_dir() else b""
        left = sorted(p.name for p in reports.iterdir() if p.name.startswith("."))
        row = {
            "fault": name,
            "how": how,
            "detail": detail,
            "before": short(before),
            "after": short(after),
            "intact": before == after
            and latest_before == latest_after
            and "MISMATCH" not in json.dumps(after),
            "rows_kept": rows_after_kill == self.rows_in_db,
            "rerun_exit": r.returncode,
            "csv_identical": rerun_csv == self.csv,
            "rows_equal": db_rows(self.db) == self.rows_in_db,
            "no_leftovers": not left,
        }
        row["ok"] = (
            all(row[k] for k in ("intact", "rows_kept", "csv_identical", "rows_equal", "no_leftovers"))
            and row["rerun_exit"] == self.code
        )
        self.results.append(row)
        print(
            f"{name}: {how} ({detail}); manifest {row['before']} -> {row['after']}; rerun exit {r.returncode}; "
            f"{'OK' if row['ok'] else 'FAILED'}"
        )

    def refused_second_run(self) -> None:
        """A second run while the first holds the database: refused with a message, no traceback."""
        marker = self.work / "paused"
        marker.unlink(missing_ok=True)
        env = {**os.environ, "FAPIAO_TEST_PAUSE_AT": "ingest", "FAPIAO_TEST_PAUSE_FILE": str(marker)}
        first = subprocess.Popen(
            self.cmd(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        while not marker.exists() and first.poll() is None:
            time.sleep(0.01)

        def second() -> tuple[str, str]:
            r = self.run()
            first.send_signal(signal.SIGKILL)
            first.communicate()
            ok = r.returncode == 2 and "another fapiao-audit run" in r.stderr and "Traceback" not in r.stderr
            return f"exit {r.returncode}", message(r.stderr) if ok else f"UNEXPECTED: {r.stderr.strip()}"

        self.fault("second run on the same DuckDB file", second)

    def disk_full(self) -> None:
        mnt = self.work / "tmpfs"
        mnt.mkdir(exist_ok=True)
        if (
            os.geteuid() != 0
            or subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
            ).returncode
            != 0
        ):
            print("disk full: skipped (needs root to mount a 1 MiB tmpfs)")
            return
        try:
            reports = mnt / "reports"
            shutil.copytree(self.reports, reports, symlinks=True)
            st = os.statvfs(mnt)
            filler = mnt / "filler"
            filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - 40_000))

            def full() -> tuple[str, str]:
                r = self.run(reports=reports)
                filler.unlink()
                return f"exit {r.returncode}", message(r.stderr)

            self.fault("disk full during publish (1 MiB tmpfs)", full, reports)
        finally:
            subprocess.run(["umount", str(mnt)], check=False)

    def table(self) -> bool:
        head = (
            "fault",
            "stopped by",
            "manifest before",
            "after",
            "intact",
            "rows kept",
            "rerun exit",
            "csv identical",
            "rows equal",
            "clean",
            "result",
        )
        lines = [head]
        for r in self.results:
            lines.append(
                (
                    str(r["fault"]),
                    str(r["how"]),
                    str(r["before"]),
                    str(r["after"]),
                    yes(r["intact"]),
                    yes(r["rows_kept"]),
                    str(r["rerun_exit"]),
                    yes(r["csv_identical"]),
                    yes(r["rows_equal"]),
                    yes(r["no_leftovers"]),
                    "PASS" if r["ok"] else "FAIL",
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        print()
        for i, line in enumerate(lines):
            print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
            if i == 0:
                print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return all(r["ok"] for r in self.results)


def message(stderr: str) -> str:
    """The refusal's message without its leading path, for the log."""
    line = (stderr.strip().splitlines() or ["(no message)"])[0].removeprefix("fapiao-audit: error: ")
    return line.split(": ", 1)[-1][:160]


def yes(v: object) -> str:
    return "yes" if v else "NO"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=3000, help="invoices per side of the generated night")
    ap.add_argument(
        "--work", type=Path, default=Path("/tmp/fapiao-fault-matrix"), help="scratch folder (replaced)"
    )
    args = ap.parse_args()
    m = Matrix(args.work, args.rows)
    m.baseline()
    tmp_prefix = f".{NIGHT}.tmp-"
    m.fault("kill during ingest (source rows half replaced)", lambda: m.kill_at("ingest"))
    m.fault(
        "kill during reconciliation (findings half replaced)", lambda: m.kill_at("sql:INSERT INTO findings")
    )
    m.fault("kill during publish (files half written)", lambda: m.kill_at("publish"))
    m.fault("kill during publish (all written, before the swap)", lambda: m.kill_at("commit"))
    m.fault(
        "kill when the DuckDB WAL appears",
        lambda: m.kill_when_appears("the WAL appeared", lambda: m.db.with_name(m.db.name + ".wal").exists()),
    )
    m.fault(
        "kill when the publish temp folder appears",
        lambda: m.kill_when_appears(
            "the temp folder appeared",
            lambda: any(p.name.startswith(tmp_prefix) for p in m.reports.iterdir()),
        ),
    )
    m.refused_second_run()
    m.disk_full()
    return 0 if m.table() else 1


if __name__ == "__main__":
    sys.exit(main())
