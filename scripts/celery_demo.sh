#!/usr/bin/env bash
# Proof, on this machine, that fapiao_nightly runs on a CeleryExecutor deployment with its shards
# spread over two workers: Redis as broker, Airflow 3 (api-server, scheduler, dag-processor) and two
# Celery workers sharing the landing, reports and database folders.
#
#   bash scripts/celery_demo.sh            # installs what it needs, runs one night with 4 shards
#   ROWS=200000 SHARDS=4 bash scripts/celery_demo.sh
#
# What it installs (for this script only, not in requirements.txt): Debian's redis-server, and into
# .venv the Airflow Celery provider with celery[redis], pinned so that nothing the project pins moves.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "celery_demo: redis-server is missing (Debian: apt-get install -y redis-server)" >&2
    exit 2
  fi
fi
if ! "$PY" -c "import airflow.providers.celery, celery, redis" 2>/dev/null; then
  # celery 5.7 would pull python-dateutil back to 2.x; 5.6.3 works with the 4.0 the stack has.
  .venv/bin/pip install -q "apache-airflow==3.3.2" "apache-airflow-providers-celery==3.26.0" \
    "celery[redis]==5.6.3" "python-dateutil==$("$PY" -c 'import dateutil; print(dateutil.__version__)')"
fi
exec "$PY" scripts/celery_demo.py "$@"
