"""Run fapiao_nightly on a local CeleryExecutor deployment and show which worker ran which shard.

Started by scripts/celery_demo.sh (which installs redis-server and the Celery provider). Everything
lives under --work (default /tmp/fapiao-celery): a Redis broker on a loopback port of its own, an
Airflow 3 home with a SQLite metadata database, the api-server (the workers' tasks report to its
execution API), the scheduler, the dag-processor and two Celery workers, ``worker-a`` and
``worker-b``, each with its own environment but the same landing, reports and database folders,
as two machines mounting one shared volume would have.

One night is generated and triggered with ``{"night": ..., "shards": N}``; when the run ends, the
script prints every task instance with the worker that ran it (Airflow's own record: the task
instance's hostname, here ``<worker>@<host>``), the shard results the tasks returned, and stops
every process it started (by process id).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    """Processes this script started; stopped by id, in reverse order."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        f = log.open("wb")
        p = subprocess.Popen(
            args, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        self.started.append((name, p))
        print(f"  started {name} (pid {p.pid}), log {log}", flush=True)
        return p

    def stop(self) -> None:
        for _name, p in reversed(self.started):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)  # its own session: the process and its children
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + 30
        for name, p in reversed(self.started):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            print(f"  stopped {name} (pid {p.pid})", flush=True)


def airflow(env: dict[str, str], *args: str, check: bool = True) -> str:
    r = subprocess.run([str(VENV_BIN / "airflow"), *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"airflow {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return r.stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/fapiao-celery"))
    p.add_argument("--night", default="2026-11-21")
    p.add_argument("--rows", type=int, default=int(os.environ.get("ROWS", "200000")))
    p.add_argument("--shards", type=int, default=int(os.environ.get("SHARDS", "4")))
    p.add_argument("--timeout", type=int, default=1500, help="seconds to wait for the run")
    ns = p.parse_args()
    work: Path = ns.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    shared = work / "shared"  # what every worker mounts: landing, reports, the DuckDB folder
    redis_port, api_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "FAPIAO_"))},
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{work / 'airflow' / 'airflow.db'}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"redis://127.0.0.1:{redis_port}/1",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "celery_hostname.hostname",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        # Only the night triggered below runs (no scheduled interval is created on unpause).
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "PYTHONPATH": str(ROOT / "scripts"),
        "FAPIAO_LANDING": str(shared / "landing"),
        "FAPIAO_REPORTS": str(shared / "reports"),
        "FAPIAO_DB": str(shared / "db" / "fapiao.duckdb"),
        "FAPIAO_WORKER_NAME": "control",
    }
    procs = Procs()
    try:
        print(f"1. Redis broker on 127.0.0.1:{redis_port}", flush=True)
        procs.start(
            "redis",
            [
                "redis-server",
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(work),
            ],
            env,
            work / "logs" / "redis.log",
        )
        print("2. Airflow metadata database and pool", flush=True)
        airflow(env, "db", "migrate")
        airflow(env, "pools", "set", "fapiao_duckdb", "1", "DuckDB has one writer")
        print(
            f"3. A synthetic night {ns.night}, {ns.rows:,} invoices per side, in the shared folder",
            flush=True,
        )
        subprocess.run(
            [
                str(VENV_BIN / "fapiao-audit"),
                "generate",
                "--night",
                ns.night,
                "--out",
                str(shared / "landing"),
                "--rows",
                str(ns.rows),
            ],
            check=True,
            env=env,
            cwd=ROOT,
        )
        print("4. Airflow components and two Celery workers", flush=True)
        af = str(VENV_BIN / "airflow")
        procs.start(
            "api-server",
            [af, "api-server", "--port", str(api_port), "--host", "127.0.0.1", "--workers", "1"],
            env,
            work / "logs" / "api-server.log",
        )
        procs.start("scheduler", [af, "scheduler"], env, work / "logs" / "scheduler.log")
        procs.start("dag-processor", [af, "dag-processor"], env, work / "logs" / "dag-processor.log")
        for name in ("worker-a", "worker-b"):
            procs.start(
                name,
                [
                    af,
                    "celery",
                    "worker",
                    "--celery-hostname",
                    f"{name}@%h",
                    "--concurrency",
                    "2",
                    "--skip-serve-logs",
                ],
                {**env, "FAPIAO_WORKER_NAME": name},
                work / "logs" / f"{name}.log",
            )
        print("5. Waiting for the DAG to be parsed", flush=True)
        deadline = time.monotonic() + 300
        while "fapiao_nightly" not in airflow(env, "dags", "list", "-o", "plain", check=False):
            if time.monotonic() > deadline:
                raise SystemExit(
                    "the dag-processor did not parse dags/fapiao_nightly.py in 300 s; see its log"
                )
            time.sleep(3)
        airflow(env, "dags", "unpause", "fapiao_nightly")
        conf = json.dumps({"night": ns.night, "shards": ns.shards})
        print(f"6. Triggering fapiao_nightly with {conf}", flush=True)
        run_id = f"celery_demo__{ns.night}__{ns.shards}_shards"
        airflow(env, "dags", "trigger", "fapiao_nightly", "--conf", conf, "--run-id", run_id)
        print(f"   run {run_id}", flush=True)
        db = work / "airflow" / "airflow.db"
        t0 = time.monotonic()
        state = None
        last = ""
        while time.monotonic() - t0 < ns.timeout:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
            try:
                state = con.execute("SELECT state FROM dag_run WHERE run_id = ?", [run_id]).fetchone()[0]
                tis = con.execute(
                    "SELECT task_id, map_index, state FROM task_instance WHERE run_id = ? "
                    "ORDER BY task_id, map_index",
                    [run_id],
                ).fetchall()
            finally:
                con.close()
            line = ", ".join(f"{t}{'' if m < 0 else f'[{m}]'}={s}" for t, m, s in tis)
            if line != last:
                print(f"   {time.monotonic() - t0:5.0f} s: {line}", flush=True)
                last = line
            if state in ("success", "failed"):
                break
            time.sleep(3)
        print(f"7. Run {run_id}: {state}", flush=True)
        if state == "failed":
            print(
                "   (quality_gate fails a night whose expectations failed, and the generator injects defects on "
                "purpose: the report is published; see the task states below)",
                flush=True,
            )
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            rows = con.execute(
                "SELECT task_id, map_index, state, hostname, queue, pid, start_date, end_date FROM task_instance "
                "WHERE run_id = ? ORDER BY start_date, task_id, map_index",
                [run_id],
            ).fetchall()
            xcoms = {
                (t, m): v
                for t, m, v in con.execute(
                    "SELECT task_id, map_index, value FROM xcom WHERE run_id = ? AND key = 'return_value'",
                    [run_id],
                ).fetchall()
            }
        finally:
            con.close()
        print(f"\n{'task':<22}{'shard':>6}  {'state':<9}{'worker (task instance hostname)':<40}{'pid':>8}")
        for task_id, map_index, st, host, _queue, pid, _s, _e in rows:
            print(
                f"{task_id:<22}{'' if map_index < 0 else map_index:>6}  {st or '-':<9}{host or '-':<40}{pid or '':>8}"
            )
        print("\nshard results returned by the tasks (XCom):")
        by_worker: dict[str, list[int]] = {}
        for (task_id, _m), value in sorted(xcoms.items()):
            if task_id != "reconcile_shard":
                continue
            v = json.loads(value) if isinstance(value, str | bytes) else value
            if isinstance(v, str):
                v = json.loads(v)
            by_worker.setdefault(v.get("worker") or "?", []).append(v["shard"])
            print(
                f"  shard {v['shard'] + 1} of {v['shards']}: {v['findings']} findings, {v['seconds']} s, "
                f"worker {v.get('worker')}, pid {v['pid']}"
            )
        print(
            "\nwhich worker ran which shard: "
            + "; ".join(
                f"{w}: shard(s) {', '.join(str(s + 1) for s in sorted(ss))}"
                for w, ss in sorted(by_worker.items())
            )
        )
        report = shared / "reports" / ns.night / "exceptions.csv"
        print(f"published: {report} ({report.stat().st_size if report.exists() else 0} bytes)")
        ok = state in ("success", "failed") and report.exists() and len(by_worker) >= 2
        # The quality gate fails a night whose expectations failed (the generator injects defects):
        # the run is then 'failed' although every other task succeeded.
        return 0 if ok else 1
    finally:
        print("8. Stopping what this script started", flush=True)
        procs.stop()


if __name__ == "__main__":
    sys.exit(main())
