"""``[core] hostname_callable`` for the Celery demo: ``<worker name>@<host>``.

Two Celery workers on one machine share its host name; the name of the worker (set in its
environment as FAPIAO_WORKER_NAME) tells them apart in Airflow's record of who ran each task.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return f"{os.environ.get('FAPIAO_WORKER_NAME', 'worker')}@{socket.gethostname()}"
