"""Faults survived: a run killed in each stage, two runs on one database, a full disk, little memory.

A killed run is a real ``fapiao-audit run`` subprocess, stopped with SIGKILL at a precise point
through the test hook ``FAPIAO_TEST_PAUSE_AT`` (see ``fapiao_audit.db.pause_point``): the run
writes a marker file there and waits, the test kills it. After each kill the previously published
night must be untouched (same manifest, same bytes, ``latest`` unmoved), DuckDB must hold exactly
the rows it held before, and a rerun must give what an undisturbed run gives.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pytest

from fapiao_audit.cli import main
from fapiao_audit.generate import generate_night

NIGHT = "2026-11-21"
NEXT = "2026-11-22"
TABLES = ("staged_invoices", "rejected_rows", "ingested_files", "findings", "run_state")


# ------------------------------------------------------------------ helpers


def night_digest(night_dir: Path) -> dict[str, str]:
    """sha256 of every file of a published night, after checking them against its manifest."""
    manifest = json.loads((night_dir / "manifest.json").read_text(encoding="utf-8"))
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in night_dir.iterdir()}
    assert set(files) == {
        "exceptions.csv",
        "exceptions.xlsx",
        "summary.json",
        "gx_results.json",
        "report.html",
        "manifest.json",
    }
    for f in manifest["files"]:
        assert files[f["name"]] == f["sha256"], f"{night_dir.name}/{f['name']} does not match its manifest"
    return files


def reports_state(reports: Path) -> dict[str, object]:
    """What a reader of the reports folder sees: every night's checksums and where `latest` points."""
    state: dict[str, object] = {}
    for p in sorted(reports.iterdir()):
        if p.name == "latest":
            state["latest"] = os.readlink(p)
        elif p.name == "index.html":
            state["index.html"] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif not p.name.startswith("."):
            state[p.name] = night_digest(p)
    return state


def leftovers(reports: Path) -> list[str]:
    return sorted(p.name for p in reports.iterdir() if p.name.startswith("."))


def db_state(db: Path, night: str = NIGHT) -> dict[str, int]:
    """Rows per table for the night, published runs, and duplicated staged lines (must be 0)."""
    con = duckdb.connect(str(db))
    try:
        n = date.fromisoformat(night)
        out = {t: con.execute(f"SELECT count(*) FROM {t} WHERE night = ?", [n]).fetchone()[0] for t in TABLES}
        out["published_runs"] = con.execute(
            "SELECT count(*) FROM runs WHERE night = ? AND published", [n]
        ).fetchone()[0]
        out["duplicated_lines"] = con.execute(
            "SELECT count(*) FROM (SELECT source_system, file, line FROM staged_invoices WHERE night = ? "
            "GROUP BY ALL HAVING count(*) > 1)",
            [n],
        ).fetchone()[0]
        return out
    finally:
        con.close()


def run_args(base: Path, landing: Path, night: str = NIGHT, config: Path | None = None) -> list[str]:
    args = [
        "run",
        "--night",
        night,
        "--landing",
        str(landing),
        "--reports",
        str(base / "reports"),
        "--db",
        str(base / "db" / "fapiao.duckdb"),
        "--quiet",
    ]  # stderr: only the message (progress: test_cli)
    return [*args, "--config", str(config)] if config else args


class Paused:
    """``fapiao-audit run`` in a subprocess, held at a pause point until killed or released."""

    def __init__(self, args: list[str], point: str, marker: Path) -> None:
        self.marker = marker
        env = {**os.environ, "FAPIAO_TEST_PAUSE_AT": point, "FAPIAO_TEST_PAUSE_FILE": str(marker)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fapiao_audit.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120  # a safety net against a hang, not a timing assertion
        while not marker.exists():
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                pytest.fail(
                    f"the run ended (exit {self.proc.returncode}) before reaching {point!r}:\n{out}\n{err}"
                )
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the run never reached {point!r}")
            time.sleep(0.05)
        self.pid = self.proc.pid

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=60)
        assert self.proc.returncode == -signal.SIGKILL

    def release(self) -> tuple[int, str, str]:
        Path(str(self.marker) + ".release").touch()
        out, err = self.proc.communicate(timeout=300)
        return self.proc.returncode, out, err


@dataclass
class Reference:
    """One undisturbed run of a generated night on a fresh database."""

    base: Path
    landing: Path
    code: int
    exceptions: bytes
    reports: dict[str, object]
    db: dict[str, int]

    def copy(self, dest: Path) -> Path:
        """The reference's database and reports (the "previously published" state) in a new folder."""
        shutil.copytree(self.base / "db", dest / "db", symlinks=True)
        shutil.copytree(self.base / "reports", dest / "reports", symlinks=True)
        return dest


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    base = tmp_path_factory.mktemp("reference")
    landing = base / "landing"
    generate_night(landing, date.fromisoformat(NIGHT), rows=800, seed=23)
    code = main(run_args(base, landing))
    assert code in (0, 1)
    return Reference(
        base,
        landing,
        code,
        (base / "reports" / NIGHT / "exceptions.csv").read_bytes(),
        reports_state(base / "reports"),
        db_state(base / "db" / "fapiao.duckdb"),
    )


def assert_rerun_matches(ref: Reference, work: Path, landing: Path | None = None) -> None:
    """A rerun after the fault: same exit code, byte-identical CSV, same rows, no leftovers."""
    assert main(run_args(work, landing or ref.landing)) == ref.code
    assert (work / "reports" / NIGHT / "exceptions.csv").read_bytes() == ref.exceptions
    after = db_state(work / "db" / "fapiao.duckdb")
    assert after == {**ref.db, "published_runs": ref.db["published_runs"] + 1}
    assert after["duplicated_lines"] == 0
    assert leftovers(work / "reports") == []
    assert os.readlink(work / "reports" / "latest") == NIGHT


# ------------------------------------------------------------------ killed runs


KILL_POINTS = {
    # stage: pause point (where SIGKILL lands)
    "ingest": "ingest",  # inside the transaction replacing the registry's rows
    "reconcile": "sql:INSERT INTO findings",  # inside the transaction replacing the night's findings
    "publish": "publish",  # exceptions.csv written, the rest not yet
    "publish-commit": "commit",  # every file and the manifest written, not swapped in
}


@pytest.mark.parametrize("stage", list(KILL_POINTS))
def test_killed_run_leaves_previous_night_and_rows_intact(reference, tmp_path, stage):
    work = reference.copy(tmp_path)
    paused = Paused(run_args(work, reference.landing), KILL_POINTS[stage], tmp_path / "paused")
    paused.kill()
    # Nothing lost, nothing half-published: the reader sees exactly the previous version...
    assert reports_state(work / "reports") == reference.reports
    # ...and DuckDB holds exactly the rows it held before (the killed transaction is gone).
    assert db_state(work / "db" / "fapiao.duckdb") == reference.db
    assert_rerun_matches(reference, work)


def test_killed_first_publish_of_a_night_leaves_latest_alone(reference, tmp_path):
    """A night published for the first time and killed before its swap is simply absent."""
    work = reference.copy(tmp_path)
    landing = tmp_path / "landing"
    shutil.copytree(reference.landing / NIGHT, landing / NEXT)
    paused = Paused(run_args(work, landing, NEXT), "commit", tmp_path / "paused")
    assert any(p.name.startswith(f".{NEXT}.tmp-") for p in (work / "reports").iterdir())  # being written
    paused.kill()
    assert not (work / "reports" / NEXT).exists()
    assert reports_state(work / "reports") == reference.reports
    assert os.readlink(work / "reports" / "latest") == NIGHT
    assert main(run_args(work, landing, NEXT)) in (0, 1)
    assert os.readlink(work / "reports" / "latest") == NEXT
    night_digest(work / "reports" / NEXT)
    assert not any(p.name.startswith(f".{NEXT}.") for p in (work / "reports").iterdir())


# ------------------------------------------------------------------ two runs on one database


def test_second_run_is_refused_while_the_first_holds_the_database(reference, tmp_path, capsys):
    work = reference.copy(tmp_path)
    first = Paused(run_args(work, reference.landing), "ingest", tmp_path / "paused")
    try:
        code = main(run_args(work, reference.landing))
        err = capsys.readouterr().err
    finally:
        first.kill()
    assert code == 2
    assert f"another fapiao-audit run is using this database (pid {first.pid})" in err
    assert "Retry when it has finished" in err and "Traceback" not in err and err.count("\n") == 1
    assert reports_state(work / "reports") == reference.reports


def test_second_run_waits_for_the_first_then_runs(reference, tmp_path, capsys):
    work = reference.copy(tmp_path)
    cfg = tmp_path / "wait.toml"
    cfg.write_text("lock_timeout_s = 300\n", encoding="utf-8")
    first = Paused(run_args(work, reference.landing, config=cfg), "ingest", tmp_path / "paused")
    # Released from another thread while the second run (this thread) is waiting for the lock; the
    # first holds the lock until it exits, so the second waits however the threads are scheduled.
    outcome: dict[str, tuple[int, str, str]] = {}
    releaser = threading.Timer(0.5, lambda: outcome.setdefault("first", first.release()))
    releaser.start()
    try:
        second = main(run_args(work, reference.landing, config=cfg))
    finally:
        releaser.join()
    err = capsys.readouterr().err
    assert outcome["first"][0] == reference.code, outcome["first"][2]
    assert second == reference.code
    assert f"waiting up to 300 s for another run (pid {first.pid})" in err and "Traceback" not in err
    assert (work / "reports" / NIGHT / "exceptions.csv").read_bytes() == reference.exceptions
    state = db_state(work / "db" / "fapiao.duckdb")
    assert state == {**reference.db, "published_runs": reference.db["published_runs"] + 2}


def test_database_held_by_a_foreign_process_is_refused_cleanly(reference, tmp_path, capsys):
    """A DuckDB client outside fapiao-audit (no advisory lock) holding the file: a message, not DuckDB's error."""
    work = reference.copy(tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('open', flush=True); "
            "sys.stdin.read()",
            str(work / "db" / "fapiao.duckdb"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        code = main(run_args(work, reference.landing))
    finally:
        holder.communicate("", timeout=60)
    err = capsys.readouterr().err
    assert code == 2 and "in use by another process" in err and "Traceback" not in err


# ------------------------------------------------------------------ the disk fills up


def enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def xlsx_enospc(self, *_a, **_k):
    from xlsxwriter.exceptions import FileCreateError

    try:
        enospc()
    except OSError as e:
        raise FileCreateError(e) from None  # the way XlsxWriter reports it (the OSError is its context)


@pytest.mark.parametrize(
    "victim",
    ["exceptions.csv", "exceptions.xlsx", "summary.json", "gx_results.json", "report.html", "manifest.json"],
)
def test_disk_full_while_publishing_exits_2_and_keeps_previous_night(
    reference, tmp_path, capsys, monkeypatch, victim
):
    import xlsxwriter

    from fapiao_audit import pipeline, publish

    work = reference.copy(tmp_path)
    real_csv = publish.write_exceptions_csv
    if victim == "exceptions.csv":  # half the file written, then the disk is full

        def csv_then_full(path, batches, transform=None):
            real_csv(path, batches, transform)
            with path.open("ab") as f:
                f.write(b"x" * 1000)
            enospc()

        monkeypatch.setattr(pipeline, "write_exceptions_csv", csv_then_full)
    elif victim == "exceptions.xlsx":
        monkeypatch.setattr(xlsxwriter.Workbook, "_store_workbook", xlsx_enospc)
    elif victim == "summary.json":
        monkeypatch.setattr(pipeline, "write_json", enospc)
    elif victim == "gx_results.json":  # summary.json written, then the disk is full
        real_json = pipeline.write_json

        def json_then_full(path, data):
            if path.name == "gx_results.json":
                enospc()
            real_json(path, data)

        monkeypatch.setattr(pipeline, "write_json", json_then_full)
    elif victim == "report.html":
        monkeypatch.setattr(pipeline, "write_text", enospc)
    else:
        monkeypatch.setattr(publish, "write_json", enospc)  # NightWriter.write_manifest
    code = main(run_args(work, reference.landing))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "No space left on device" in err and "previously published version is intact" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert reports_state(work / "reports") == reference.reports
    assert leftovers(work / "reports") == []
    assert db_state(work / "db" / "fapiao.duckdb")["published_runs"] == reference.db["published_runs"]


@pytest.fixture
def small_tmpfs(tmp_path) -> Iterator[Path]:
    """A real 4 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_real_full_disk_during_publish(reference, tmp_path, small_tmpfs, capsys):
    shutil.copytree(reference.base / "db", tmp_path / "db")
    reports = small_tmpfs / "reports"
    shutil.copytree(reference.base / "reports", reports, symlinks=True)
    # Leave ~40 KB: the new night's first file fits, the rest does not.
    free = os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize
    filler = small_tmpfs / "filler"
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, free - 40_000))
    args = [
        "run",
        "--night",
        NIGHT,
        "--landing",
        str(reference.landing),
        "--reports",
        str(reports),
        "--db",
        str(tmp_path / "db" / "fapiao.duckdb"),
    ]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert reports_state(reports) == reference.reports
    assert leftovers(reports) == []
    filler.unlink()
    assert main(args) == reference.code
    assert (reports / NIGHT / "exceptions.csv").read_bytes() == reference.exceptions
    assert leftovers(reports) == []


# ------------------------------------------------------------------ little memory


def finding_keys(path: Path) -> list[tuple[str, ...]]:
    import csv

    with path.open(encoding="utf-8-sig", newline="") as f:
        return sorted(
            tuple(r[k] for k in ("category", "invoice_code", "invoice_number", "field", "source_system"))
            for r in csv.DictReader(f)
        )


def test_memory_limit_far_below_the_data_spills_and_completes(tmp_path, monkeypatch):
    """150k invoices a side (~190 MB of staged rows in memory) under a 120 MB limit: DuckDB spills
    into the configured temp folder and the night's findings are exactly the injected ones. (Reading a
    night's snapshot joins its seen rows to their versions, whose hash table needs room of its own:
    80 MB, enough before versions, runs out of memory in the reconciliation.)"""
    from fapiao_audit import ingest
    from fapiao_audit.generate import SOURCES_TOML
    from findings_compare import grace_boundary_keys, without

    landing, spill = tmp_path / "landing", tmp_path / "spill"
    generate_night(landing, date.fromisoformat(NIGHT), rows=150_000, seed=31)
    cfg = tmp_path / "small.toml"  # (with the tables the generated issuers' codes need)
    cfg.write_text(
        f'duckdb_memory_limit = "120MB"\nduckdb_threads = 1\nduckdb_temp_directory = "{spill}"\n'
        + SOURCES_TOML,
        encoding="utf-8",
    )
    spilled: list[int] = []
    real_drop = ingest.drop_scratch

    def measure_then_drop(con):  # what ingest's scratch tables had to write out to the temp folder
        spilled.append(con.execute("SELECT sum(temporary_storage_bytes) FROM duckdb_memory()").fetchone()[0])
        real_drop(con)

    monkeypatch.setattr(ingest, "drop_scratch", measure_then_drop)
    code = main(run_args(tmp_path, landing, config=cfg))
    assert code in (0, 1)
    # exact, but for the grace-period boundary where the product and DESIGN.md disagree (findings_compare)
    boundary = grace_boundary_keys(landing / NIGHT, date.fromisoformat(NIGHT))
    assert without(finding_keys(tmp_path / "reports" / NIGHT / "exceptions.csv"), boundary) == without(
        finding_keys(landing / NIGHT / "expected_findings.csv"), boundary
    )
    assert max(spilled) > 0, "nothing spilled: the limit is not below the data"
    con = duckdb.connect(str(tmp_path / "db" / "fapiao.duckdb"), read_only=True)
    try:  # the staged rows alone, held in memory, are well above the limit
        con.execute("CREATE TEMP TABLE everything AS FROM staged_invoices")
        in_memory = con.execute(
            "SELECT memory_usage_bytes FROM duckdb_memory() WHERE tag = 'IN_MEMORY_TABLE'"
        ).fetchone()[0]
    finally:
        con.close()
    assert in_memory > 1.5 * 120e6


# ------------------------------------------------------------------ the swap itself


def small_published_night(tmp_path: Path):
    from factories import invoice, write_csv
    from fapiao_audit.config import Config
    from fapiao_audit.pipeline import Paths

    landing = tmp_path / "landing"
    write_csv(
        landing / NIGHT / "registry" / "r.csv",
        [invoice("26110000000000000001"), invoice("26110000000000000002")],
    )
    write_csv(landing / NIGHT / "issuers" / "erp" / "e.csv", [invoice("26110000000000000001")])
    paths = Paths(landing, tmp_path / "reports", tmp_path / "db" / "fapiao.duckdb")
    assert main(run_args(tmp_path, landing)) in (0, 1)
    return paths, Config()


def test_reader_never_sees_a_half_written_night(tmp_path):
    """Republish a night again and again while reading it: every read is complete and consistent."""
    from fapiao_audit.pipeline import open_db, stage_publish

    paths, cfg = small_published_night(tmp_path)
    night_dir = paths.reports / NIGHT
    csv_bytes = (night_dir / "exceptions.csv").read_bytes()
    done, failures = threading.Event(), []

    def publish_repeatedly() -> None:
        try:
            with open_db(paths, cfg) as con:
                for _ in range(8):
                    stage_publish(con, paths, date.fromisoformat(NIGHT), cfg)
        except BaseException as e:  # reported by the main thread
            failures.append(e)
        finally:
            done.set()

    publisher = threading.Thread(target=publish_repeatedly)
    publisher.start()
    consistent = vanished = 0
    while not done.is_set() or consistent == 0:
        # A careful reader pins one version through a directory descriptor: after the swap it keeps
        # reading that version (or finds it removed), never a mix of two.
        fd = os.open(night_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:

            def read(name: str, fd: int = fd) -> bytes:
                f = os.open(name, os.O_RDONLY, dir_fd=fd)
                with os.fdopen(f, "rb") as fh:
                    return fh.read()

            manifest = json.loads(read("manifest.json"))
            for f in manifest["files"]:
                assert hashlib.sha256(read(f["name"])).hexdigest() == f["sha256"], f["name"]
            consistent += 1
        except FileNotFoundError:
            vanished += 1  # the old version was cleaned away under the reader: retry
        finally:
            os.close(fd)
        # A naive reader by path sees complete files, whichever version each comes from.
        assert (night_dir / "exceptions.csv").read_bytes() == csv_bytes
        json.loads((night_dir / "summary.json").read_text(encoding="utf-8"))
        assert (night_dir / "report.html").read_text(encoding="utf-8").rstrip().endswith("</html>")
    publisher.join()
    assert not failures, failures
    assert consistent > 0
    assert leftovers(paths.reports) == []


def test_publish_without_rename_exchange(tmp_path, monkeypatch):
    """Where the kernel lacks RENAME_EXCHANGE the two-rename fallback publishes the same way."""
    from fapiao_audit import publish

    paths, _ = small_published_night(tmp_path)
    monkeypatch.setattr(publish, "_renameat2_exchange", lambda a, b: False)
    assert main(run_args(tmp_path, paths.landing)) in (0, 1)
    night_digest(paths.reports / NIGHT)
    assert leftovers(paths.reports) == []


def test_crash_inside_the_fallback_swap_is_repaired(tmp_path):
    """Killed between the fallback's two renames: the night is absent, the old version parked aside.
    The next publish of that night first puts the old version back, then proceeds."""
    from fapiao_audit.publish import NightWriter, sweep

    paths, _ = small_published_night(tmp_path)
    reports = paths.reports
    before = reports_state(reports)
    os.rename(reports / NIGHT, reports / f".{NIGHT}.old-crashed")
    shutil.copytree(reports / f".{NIGHT}.old-crashed", reports / f".{NIGHT}.tmp-crashed")
    (reports / f".{NIGHT}.tmp-crashed" / "summary.json").write_text("{}", encoding="utf-8")
    sweep(reports, date.fromisoformat(NIGHT))
    assert reports_state(reports) == before and leftovers(reports) == []
    # and through the writer, which sweeps before it starts
    os.rename(reports / NIGHT, reports / f".{NIGHT}.old-again")
    with NightWriter(reports, date.fromisoformat(NIGHT), "next") as w:
        assert (reports / NIGHT).is_dir() and w.tmp.is_dir()
    assert reports_state(reports) == before and leftovers(reports) == []


def test_commit_refuses_a_night_without_manifest(tmp_path):
    from fapiao_audit.errors import PublishError
    from fapiao_audit.publish import NightWriter

    paths, _ = small_published_night(tmp_path)
    before = reports_state(paths.reports)
    with (
        pytest.raises(PublishError, match="without its manifest"),
        NightWriter(paths.reports, date.fromisoformat(NIGHT), "x") as w,
    ):
        w.path("exceptions.csv").write_text("partial", encoding="utf-8")
        w.commit()
    assert reports_state(paths.reports) == before and leftovers(paths.reports) == []


# ------------------------------------------------------------------ hostile paths and values


def tiny_night(
    landing: Path, issuer_rows: list[dict] | None = None, registry_rows: list[dict] | None = None
) -> None:
    from factories import invoice, write_csv

    day = "2026-11-18"
    write_csv(
        landing / NIGHT / "issuers" / "erp" / "e.csv",
        issuer_rows or [invoice("26112000000000000001", day=day), invoice("26112000000000000002", day=day)],
    )
    write_csv(
        landing / NIGHT / "registry" / "r.csv", registry_rows or [invoice("26112000000000000001", day=day)]
    )


def tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "layout",
    [
        "reports_is_landing",
        "reports_inside_landing",
        "landing_inside_reports",
        "db_inside_reports",
        "db_inside_the_night",
        "db_inside_landing",
    ],
)
def test_overlapping_paths_are_refused_before_anything_is_written(tmp_path, capsys, layout):
    landing = tmp_path / "in"
    tiny_night(landing)
    reports, db = tmp_path / "out", tmp_path / "fapiao.duckdb"
    if layout == "reports_is_landing":
        reports = landing
    elif layout == "reports_inside_landing":
        reports = landing / "reports"
    elif layout == "landing_inside_reports":
        reports = tmp_path / "out"
        reports.mkdir()
        landing = Path(shutil.move(landing, reports / "in"))
    elif layout == "db_inside_reports":
        db = reports / "fapiao.duckdb"
    elif layout == "db_inside_the_night":
        db = reports / NIGHT / "fapiao.duckdb"
    else:
        db = landing / "fapiao.duckdb"
    before = tree(landing)
    code = main(
        ["run", "--night", NIGHT, "--landing", str(landing), "--reports", str(reports), "--db", str(db)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert ("overlap" in err) or ("is inside" in err)
    assert tree(landing) == before  # the delivery is untouched
    assert not db.exists()
    assert not (reports / NIGHT / "summary.json").exists()


def test_an_amount_beyond_any_invoice_is_a_rejected_row_not_a_stopped_night(tmp_path, capsys):
    from factories import invoice

    day = "2026-11-18"
    landing = tmp_path / "landing"
    huge = invoice(
        "26112000000000000003", day=day, amount="9999999999999999.99", tax="0.00", total="9999999999999999.99"
    )
    tiny_night(
        landing,
        [invoice("26112000000000000001", day=day), huge],
        [invoice("26112000000000000001", day=day), huge],
    )
    code = main(run_args(tmp_path, landing))
    assert code in (0, 1), capsys.readouterr().err
    summary = json.loads((tmp_path / "reports" / NIGHT / "summary.json").read_text(encoding="utf-8"))
    rejected = {s["source_system"]: s["rows_rejected"] for s in summary["sources"]}
    assert rejected == {"erp": 1, "registry": 1}
    con = duckdb.connect(str(tmp_path / "db" / "fapiao.duckdb"), read_only=True)
    try:
        reasons = {r[0] for r in con.execute("SELECT reason FROM rejected_rows").fetchall()}
    finally:
        con.close()
    assert len(reasons) == 1 and reasons.pop().startswith("amount out of range")


def test_exceptions_csv_neutralises_formula_starts_but_keeps_numbers(tmp_path):
    import csv as csv_module

    from factories import invoice

    day = "2026-11-18"
    landing = tmp_path / "landing"
    hostile = ['=HYPERLINK("http://x","y")', "+1+1", "@SUM(A1)", "\t=1+1", " -2+3"]
    issuer = [invoice(f"2611200000000000001{i}", day=day, buyer_name=name) for i, name in enumerate(hostile)]
    issuer.append(
        invoice(
            "26112000000000000020",
            day=day,
            amount="-500.00",
            tax="-65.00",
            total="-565.00",
            remark="被红冲蓝字数电票号码：26112000000000000099",
        )
    )
    registry = [
        invoice(f"2611200000000000001{i}", day=day, buyer_name="北京丙贸易有限公司") for i in range(5)
    ]
    registry.append(
        invoice(
            "26112000000000000020",
            day=day,
            amount="-400.00",
            tax="-52.00",
            total="-452.00",
            remark="被红冲蓝字数电票号码：26112000000000000099",
        )
    )
    tiny_night(landing, issuer, registry)
    assert main(run_args(tmp_path, landing)) in (0, 1)
    with (tmp_path / "reports" / NIGHT / "exceptions.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv_module.DictReader(f))
    names = sorted(r["issuer_value"] for r in rows if r["field"] == "buyer_name")
    # each kept whole (as the normaliser left it, trimmed) behind one leading '
    assert names == sorted("'" + h.strip() for h in hostile)
    amounts = {r["issuer_value"] for r in rows if r["field"] == "amount"}
    assert amounts == {"-500.00"}  # a plain number stays a number
    for r in rows:
        for v in r.values():
            assert not v.lstrip().startswith(("=", "+", "@")), v


@pytest.mark.parametrize(
    "amount,loaded",
    [("12,5", None), ("1.234,56", None), ("1,234.50", "1234.50"), ("12,345,678.90", "12345678.90")],
)
def test_a_comma_that_cannot_be_a_thousands_separator_is_rejected(tmp_path, amount, loaded):
    from factories import invoice, write_csv
    from fapiao_audit.config import Config
    from fapiao_audit.db import connect
    from fapiao_audit.ingest import ingest_night

    landing = tmp_path / "landing"
    tiny_night(landing)
    write_csv(
        landing / NIGHT / "issuers" / "erp" / "e.csv",
        [
            invoice("26112000000000000001"),
            invoice("26112000000000000002", amount="1.00", total="1.13", tax="0.13") | {"amount": amount},
        ],
    )
    con = connect(":memory:", Config())
    try:
        ingest_night(con, landing, date.fromisoformat(NIGHT), Config(), tmp_path / "tmp")
        got = con.execute(
            "SELECT amount::VARCHAR FROM staged_invoices WHERE invoice_key = '26112000000000000002'"
        ).fetchall()
        reasons = [r[0] for r in con.execute("SELECT reason FROM rejected_rows").fetchall()]
    finally:
        con.close()
    if loaded is None:
        assert got == [] and reasons == [f"unparseable amount: {amount}"]
    else:
        assert got == [(loaded,)] and reasons == []


def test_an_offset_after_a_space_is_read(tmp_path):
    from factories import invoice, write_csv
    from fapiao_audit.config import Config
    from fapiao_audit.db import connect
    from fapiao_audit.ingest import ingest_night

    landing = tmp_path / "landing"
    tiny_night(landing)
    write_csv(
        landing / NIGHT / "issuers" / "erp" / "e.csv",
        [
            invoice("26112000000000000001", issue_time="2026-11-18 02:00:00 +0000"),
            invoice("26112000000000000002", issue_time="2026-11-18 10:00:00 +0800"),
        ],
    )
    con = connect(":memory:", Config())
    try:
        ingest_night(con, landing, date.fromisoformat(NIGHT), Config(), tmp_path / "tmp")
        times = {
            r[0]
            for r in con.execute(
                "SELECT issue_time::VARCHAR FROM staged_invoices WHERE source_system = 'erp'"
            ).fetchall()
        }
    finally:
        con.close()
    assert times == {"2026-11-18 10:00:00"}


def test_a_twenty_digit_number_saved_as_a_spreadsheet_number_is_rejected_clearly(tmp_path):
    import openpyxl

    from fapiao_audit.config import Config
    from fapiao_audit.db import connect
    from fapiao_audit.ingest import ingest_night

    landing = tmp_path / "landing"
    tiny_night(landing)
    (landing / NIGHT / "issuers" / "erp" / "e.csv").unlink()
    path = landing / NIGHT / "issuers" / "erp" / "e.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["发票号码", "开票日期", "销方识别号", "金额"])
    ws.append(["26112000000000000001", "2026-11-18", "91110108551385082Q", 1])
    ws.append([26113190187254550000, "2026-11-18", "91110108551385082Q", 1])
    wb.save(path)
    con = connect(":memory:", Config())
    try:
        ingest_night(con, landing, date.fromisoformat(NIGHT), Config(), tmp_path / "tmp")
        reasons = [r[0] for r in con.execute("SELECT reason FROM rejected_rows").fetchall()]
        keys = [
            r[0]
            for r in con.execute(
                "SELECT invoice_key FROM staged_invoices WHERE source_system = 'erp'"
            ).fetchall()
        ]
    finally:
        con.close()
    assert keys == ["26112000000000000001"]
    assert (
        len(reasons) == 1
        and "scientific notation" in reasons[0]
        and "format the column as text" in reasons[0]
    )


def test_direction_controls_are_shown_not_obeyed_in_the_csv_and_the_report(tmp_path):
    import csv as csv_module

    from factories import invoice

    day = "2026-11-18"
    landing = tmp_path / "landing"
    tiny_night(
        landing,
        [invoice("26112000000000000001", day=day, buyer_name="北京丙\u202e司公限有易贸")],
        [invoice("26112000000000000001", day=day)],
    )
    unmasked = tmp_path / "unmasked.toml"
    unmasked.write_text("mask_html = false\n", encoding="utf-8")
    assert main(run_args(tmp_path, landing, config=unmasked)) in (0, 1)
    night = tmp_path / "reports" / NIGHT
    with (night / "exceptions.csv").open(encoding="utf-8-sig", newline="") as f:
        (row,) = [r for r in csv_module.DictReader(f) if r["field"] == "buyer_name"]
    assert row["issuer_value"] == "北京丙⟨U+202E⟩司公限有易贸"
    html = (night / "report.html").read_text(encoding="utf-8")
    assert "\u202e" not in html and "U+202E" in html


def test_files_the_night_does_not_read_are_listed_and_said(tmp_path, capsys):
    landing = tmp_path / "landing"
    tiny_night(landing)
    night = landing / NIGHT
    (night / "issuers" / "erp" / "more.csv.gz").write_bytes(b"\x1f\x8b" + b"0" * 98)
    (night / "issuers" / "erp" / "notes.txt").write_text("x", encoding="utf-8")
    (night / "issuers" / "erp" / "2026-11").mkdir()
    (night / "issuers" / "erp" / "2026-11" / "e2.csv").write_text("x", encoding="utf-8")
    os.symlink(tmp_path / "nowhere.csv", night / "registry" / "r2.csv")
    code = main(run_args(tmp_path, landing))
    assert code in (0, 1)
    err = capsys.readouterr().err
    assert "4 file(s) or folder(s) under the night's delivery were not read" in err
    summary = json.loads((tmp_path / "reports" / NIGHT / "summary.json").read_text(encoding="utf-8"))
    got = {u["path"]: (u["bytes"], u["why"]) for u in summary["unread_files"]}
    assert got == {
        "issuers/erp/2026-11/": (None, "a sub-folder (a source's files must sit directly in its folder)"),
        "issuers/erp/more.csv.gz": (
            100,
            "not a format the night reads (.csv, .xlsx, .parquet, .jsonl); compressed files are not unpacked",
        ),
        "issuers/erp/notes.txt": (1, "not a format the night reads (.csv, .xlsx, .parquet, .jsonl)"),
        "registry/r2.csv": (len(str(tmp_path / "nowhere.csv")), "a broken link"),
    }
    html = (tmp_path / "reports" / NIGHT / "report.html").read_text(encoding="utf-8")
    assert 'id="unread-table"' in html and "more.csv.gz" in html


def two_nights(tmp_path: Path) -> tuple[Path, str]:
    """Night 1: erp and pos deliver (pos has a missing invoice); night 2: pos delivers nothing."""
    from factories import invoice, write_csv

    landing = tmp_path / "landing"
    first = "2026-11-20"
    for night in (first, NIGHT):
        write_csv(
            landing / night / "issuers" / "erp" / "e.csv", [invoice("26112000000000000001", day="2026-11-18")]
        )
        write_csv(landing / night / "registry" / "r.csv", [invoice("26112000000000000001", day="2026-11-18")])
    write_csv(
        landing / first / "issuers" / "pos" / "p.csv", [invoice("26112000000000000002", day="2026-11-18")]
    )
    assert main(run_args(tmp_path, landing, night=first)) in (0, 1)
    return landing, first


def test_an_issuing_system_that_stops_delivering_stops_the_night(tmp_path, capsys):
    landing, _ = two_nights(tmp_path)
    before = night_digest(tmp_path / "reports" / "2026-11-20")
    capsys.readouterr()
    code = main(run_args(tmp_path, landing))
    err = capsys.readouterr().err
    assert code == 2
    assert "'pos' (delivered on the published night 2026-11-20)" in err and "--allow-missing" in err
    assert not (tmp_path / "reports" / NIGHT).exists()
    assert night_digest(tmp_path / "reports" / "2026-11-20") == before


def test_an_allowed_missing_system_keeps_its_findings_open_as_not_checked(tmp_path):
    landing, _ = two_nights(tmp_path)
    assert main([*run_args(tmp_path, landing), "--allow-missing", "pos"]) in (0, 1)
    summary = json.loads((tmp_path / "reports" / NIGHT / "summary.json").read_text(encoding="utf-8"))
    assert summary["resolved"] == 0  # pos's MISSING_IN_REGISTRY is not resolved: pos was not checked
    con = duckdb.connect(str(tmp_path / "db" / "fapiao.duckdb"), read_only=True)
    try:
        from fapiao_audit.config import Config
        from fapiao_audit.reconcile import fetch_carried, fetch_resolved

        gone = fetch_resolved(con, date.fromisoformat(NIGHT), Config()).to_pylist()
        carried = fetch_carried(con, date.fromisoformat(NIGHT)).to_pylist()
    finally:
        con.close()
    assert gone == []  # nothing resolved: the finding is still open, carried as not checked tonight
    assert [(c["category"], c["source_system"], c["finding_status"]) for c in carried] == [
        ("MISSING_IN_REGISTRY", "pos", "not_checked")
    ]
    assert summary["open_items"]["not_checked"] == 1


@pytest.mark.parametrize("setting", ['retired_sources = ["pos"]\n', "source_lookback_nights = 0\n"])
def test_a_retired_system_may_stop_delivering(tmp_path, setting):
    landing, _ = two_nights(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(setting, encoding="utf-8")
    assert main(run_args(tmp_path, landing, config=cfg)) in (0, 1)


def test_expected_sources_are_required_from_the_first_night(tmp_path, capsys):
    from factories import invoice, write_csv

    landing = tmp_path / "landing"
    write_csv(landing / NIGHT / "issuers" / "erp" / "e.csv", [invoice("26112000000000000001")])
    write_csv(landing / NIGHT / "registry" / "r.csv", [invoice("26112000000000000001")])
    cfg = tmp_path / "c.toml"
    cfg.write_text('expected_sources = ["erp", "webshop"]\n', encoding="utf-8")
    assert main(run_args(tmp_path, landing, config=cfg)) == 2
    assert "'webshop' (named in expected_sources)" in capsys.readouterr().err


def bomb_night(tmp_path: Path, rows: list[list[str]], long_string: int = 0) -> Path:
    """A night whose erp delivery is a workbook with shared strings (as spreadsheet programs write them):
    a valid header and row, then ``rows``; ``long_string`` widens the shared string 'LONG' to that many
    characters, as no spreadsheet program would."""
    import zipfile

    import xlsxwriter

    landing = tmp_path / "landing"
    tiny_night(landing)
    (landing / NIGHT / "issuers" / "erp" / "e.csv").unlink()
    plain = tmp_path / "plain.xlsx"
    wb = xlsxwriter.Workbook(str(plain))
    ws = wb.add_worksheet()
    all_rows = [
        ["发票号码", "开票日期", "销方识别号", "金额"],
        ["26112000000000000001", "2026-11-18", "91110108551385082Q", "1.00"],
        *rows,
    ]
    for r, row in enumerate(all_rows):
        for c, value in enumerate(row):
            if value is not None:
                ws.write_string(r, c, value)
    wb.close()
    target = landing / NIGHT / "issuers" / "erp" / "e.xlsx"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item)
            if long_string and item.filename == "xl/sharedStrings.xml":
                data = data.replace(b">LONG<", (">" + "长" * long_string + "<").encode())
            dst.writestr(item, data)
    return landing


@pytest.mark.parametrize(
    "kind,config,message",
    [
        ("far_column", "", "beyond the limit of 1,024 columns (xlsx_max_columns)"),
        ("long_string", "", "a shared string of more than 32,767 characters"),
        (
            "many_strings",
            "xlsx_max_shared_strings = 100\n",
            "more than 100 shared strings (xlsx_max_shared_strings)",
        ),
        (
            "large",
            "xlsx_max_uncompressed_mb = 1\n",
            "beyond the limit of 1,048,576 (xlsx_max_uncompressed_mb)",
        ),
    ],
)
def test_spreadsheet_bombs_are_refused_naming_the_file(tmp_path, capsys, kind, config, message):
    rows: list[list[str | None]] = []
    if kind == "far_column":
        rows = [["26112000000000000002", *[None] * 16382, "x"]]
    elif kind == "long_string":
        rows = [["26112000000000000002", "2026-11-18", "91110108551385082Q", "1.00", "LONG"]]
    else:
        rows = [
            [f"261120000000{i:08d}", "2026-11-18", "91110108551385082Q", "1.00", f"备注 {i} " * 8]
            for i in range(200 if kind == "many_strings" else 20_000)
        ]
    landing = bomb_night(tmp_path, rows, long_string=40_000 if kind == "long_string" else 0)
    cfg = tmp_path / "c.toml"
    cfg.write_text(config, encoding="utf-8")
    code = main(run_args(tmp_path, landing, config=cfg))
    err = capsys.readouterr().err
    assert code == 2
    assert "issuers/erp/e.xlsx" in err and message in err
    assert not (tmp_path / "reports" / NIGHT).exists()


def test_a_workbook_declaring_fewer_rows_than_it_holds_is_read_whole(tmp_path):
    """<dimension ref="A1:D3"> on a sheet of 600 rows: every row is read and accounted for."""
    import re as re_module
    import zipfile

    rows = [[f"261120000000{i:08d}", "2026-11-18", "91110108551385082Q", "1.00"] for i in range(2, 600)]
    landing = bomb_night(tmp_path, rows)
    path = landing / NIGHT / "issuers" / "erp" / "e.xlsx"
    patched = tmp_path / "patched.xlsx"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(patched, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.startswith("xl/worksheets/"):
                data = re_module.sub(rb'<dimension ref="[^"]*"/>', b'<dimension ref="A1:D3"/>', data)
                assert b'<dimension ref="A1:D3"/>' in data
            dst.writestr(item, data)
    shutil.move(patched, path)
    assert main(run_args(tmp_path, landing)) in (0, 1)
    summary = json.loads((tmp_path / "reports" / NIGHT / "summary.json").read_text(encoding="utf-8"))
    (erp,) = [s for s in summary["sources"] if s["source_system"] == "erp"]
    assert (erp["rows_read"], erp["rows_loaded"], erp["rows_rejected"]) == (599, 599, 0)


def long_line_night(tmp_path: Path) -> Path:
    """A night whose erp file holds a 34 MB remark on its second row (beyond DuckDB's 32 MiB read buffer)."""
    from factories import invoice

    day = "2026-11-18"
    landing = tmp_path / "landing"
    rows = [
        invoice("26112000000000000001", day=day),
        invoice("26112000000000000002", day=day, remark="x" * (34 << 20)),
        invoice("26112000000000000003", day=day),
    ]
    tiny_night(landing, rows, rows[:1])
    return landing


def test_a_csv_line_longer_than_the_read_buffer_is_a_rejected_row(tmp_path):
    """A 34 MB remark (beyond DuckDB's 32 MiB buffer): the row is rejected with its reason, and the file's
    rows still add up (it neither vanishes nor stops the night)."""
    landing = long_line_night(tmp_path)
    assert main(run_args(tmp_path, landing)) in (0, 1)
    summary = json.loads((tmp_path / "reports" / NIGHT / "summary.json").read_text(encoding="utf-8"))
    (erp,) = [s for s in summary["sources"] if s["source_system"] == "erp"]
    assert (erp["rows_read"], erp["rows_loaded"], erp["rows_rejected"]) == (3, 2, 1)
    con = duckdb.connect(str(tmp_path / "db" / "fapiao.duckdb"), read_only=True)
    try:
        ((line, reason),) = con.execute("SELECT line, reason FROM rejected_rows").fetchall()
    finally:
        con.close()
    assert line == 3 and "line size over maximum" in reason


def test_a_huge_header_cell_names_the_file(tmp_path, capsys):
    from factories import CANONICAL, invoice, write_csv

    landing = tmp_path / "landing"
    tiny_night(landing)
    write_csv(
        landing / NIGHT / "issuers" / "erp" / "e.csv",
        [invoice("26112000000000000001")],
        columns=[*CANONICAL, "H" * 200_000],
    )
    assert main(run_args(tmp_path, landing)) == 2
    err = capsys.readouterr().err
    assert "issuers/erp/e.csv: the header row cannot be read" in err and "unexpected" not in err


def test_two_runs_publishing_into_one_reports_folder_take_turns(tmp_path):
    """Runs on different databases may share a reports folder: the second publisher waits for the first,
    so its sweep never removes the first's folder under construction."""
    from fapiao_audit.publish import NightWriter

    reports, night = tmp_path / "reports", date.fromisoformat(NIGHT)
    first = NightWriter(reports, night, "run-a").__enter__()
    entered = threading.Event()

    def second() -> None:
        with NightWriter(reports, night, "run-b"):
            entered.set()

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.8)
    assert not entered.is_set() and first.tmp.is_dir()  # waiting; the first's folder is intact
    first.__exit__(None, None, None)
    t.join(10)
    assert entered.is_set()


# ------------------------------------------------------------------ rows counted apart from the reader


def erp_counts(tmp_path: Path) -> tuple[int, int, int, int]:
    summary = json.loads((tmp_path / "reports" / NIGHT / "summary.json").read_text(encoding="utf-8"))
    (erp,) = [s for s in summary["sources"] if s["source_system"] == "erp"]
    return erp["rows_read"], erp["rows_loaded"], erp["rows_rejected"], erp["rows_skipped"]


def test_rows_read_counts_what_a_csv_holds_quoted_breaks_blank_lines_and_all(tmp_path):
    """Quoted line breaks are one row, empty lines are none, a line of spaces is a (rejected) row, a GBK
    file counts the same, and every row is accounted for."""
    from factories import CANONICAL, invoice

    landing = tmp_path / "landing"
    tiny_night(landing)
    header = ",".join(CANONICAL)
    good = [
        ",".join(f'"{v}"' if k == "remark" else str(v) for k, v in invoice(f"2611200000000000000{i}").items())
        for i in range(1, 4)
    ]
    good[1] = good[1].replace('"', '"第一行\n第二行', 1) if '"' in good[1] else good[1]
    body = (
        "\r\n".join([header, good[0], "", good[1], "   ", good[2], "," * (len(CANONICAL) - 1), ""]) + "\r\n"
    )
    (landing / NIGHT / "issuers" / "erp" / "e.csv").write_bytes(body.encode("gb18030"))
    assert main(run_args(tmp_path, landing)) in (0, 1)
    read, loaded, rejected, skipped = erp_counts(tmp_path)
    assert (read, loaded, rejected, skipped) == (5, 3, 1, 1)


def test_rows_read_of_jsonl_and_parquet_come_from_the_file(tmp_path):
    """JSON Lines with mixed line ends and blank lines; Parquet by its footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from factories import invoice

    landing = tmp_path / "landing"
    tiny_night(landing)
    erp = landing / NIGHT / "issuers" / "erp"
    (erp / "e.csv").unlink()
    rows = [invoice(f"2611200000000000000{i}") for i in range(1, 4)]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    (erp / "e.jsonl").write_bytes(("\r\n".join(lines[:2]) + "\n\n  \n[1]\n" + lines[2]).encode())
    assert main(run_args(tmp_path, landing)) in (0, 1)
    assert erp_counts(tmp_path) == (4, 3, 1, 0)

    (erp / "e.jsonl").unlink()
    pq.write_table(pa.Table.from_pylist([{k: str(v) for k, v in r.items()} for r in rows]), erp / "e.parquet")
    assert main(run_args(tmp_path, landing, night=NIGHT)) in (0, 1)
    assert erp_counts(tmp_path) == (3, 3, 0, 0)


def test_a_row_the_reader_loses_leaves_the_file_unbalanced_and_the_night_failed(
    tmp_path, monkeypatch, capsys
):
    """If the CSV reader ever drops a row, the count from the file's bytes no longer matches: the file
    is shown unbalanced, the night fails its gate and says which file, rather than balancing silently."""
    from fapiao_audit import ingest

    landing = tmp_path / "landing"
    tiny_night(landing)
    real_csv = ingest._Reader._csv

    def losing_csv(self, path, unify_newlines=False):
        out = real_csv(self, path, unify_newlines)
        if path.name == "e.csv":
            self.con.execute("DELETE FROM ing_csv WHERE rowid = (SELECT max(rowid) FROM ing_csv)")
        return out

    monkeypatch.setattr(ingest._Reader, "_csv", losing_csv)
    assert main(run_args(tmp_path, landing)) == 1
    assert erp_counts(tmp_path) == (2, 1, 0, 0)
    summary = json.loads((tmp_path / "reports" / NIGHT / "summary.json").read_text(encoding="utf-8"))
    assert summary["outcome"] == "failed"
    assert any(
        "e.csv: the file holds 2 rows" in w and "1 row(s) are not accounted for" in w
        for w in summary["warnings"]
    )
    assert "not accounted for" in capsys.readouterr().err


def test_a_long_line_under_a_tiny_memory_limit_says_out_of_memory_and_the_database_recovers(tmp_path, capsys):
    """A 34 MB line with duckdb_memory_limit = 32MB: DuckDB stops on a fatal error; the run says it is out of
    memory and what to change, publishes nothing, and the same database runs the night with a sane limit."""
    landing = long_line_night(tmp_path)
    tight = tmp_path / "tight.toml"
    tight.write_text('duckdb_memory_limit = "32MB"\n', encoding="utf-8")
    assert main(run_args(tmp_path, landing, config=tight)) == 2
    err = capsys.readouterr().err
    # Where DuckDB runs out (reading the file, or checkpointing after it) varies with the machine's load;
    # either way the message says it is memory and what to change.
    assert "out of memory" in err and "raise duckdb_memory_limit" in err
    assert "unexpected" not in err and "invalidated" not in err
    assert not (tmp_path / "reports" / NIGHT).exists()
    assert main(run_args(tmp_path, landing)) in (0, 1)
    assert erp_counts(tmp_path) == (3, 2, 1, 0)


def test_the_dags_allow_missing_param_accepts_a_missing_system(tmp_path, monkeypatch):
    """The DAG's `allow_missing` param does what `run --allow-missing` does, in the task that checks sources."""
    from fapiao_audit import orchestration
    from fapiao_audit.errors import FapiaoError

    landing, _ = two_nights(tmp_path)
    env = {
        "FAPIAO_LANDING": str(landing),
        "FAPIAO_REPORTS": str(tmp_path / "reports"),
        "FAPIAO_DB": str(tmp_path / "db" / "fapiao.duckdb"),
    }
    monkeypatch.setattr(orchestration, "setting", lambda name, default: env.get(name, default))
    night = date.fromisoformat(NIGHT)
    sources = orchestration.sources_of(night)
    with pytest.raises(FapiaoError, match="'pos'"):
        orchestration.prune(night, sources)
    orchestration.prune(night, sources, ["pos"])  # accepted: no error
    with pytest.raises(FapiaoError, match="allow_missing"):
        orchestration.prune(night, sources, ["../x"])
