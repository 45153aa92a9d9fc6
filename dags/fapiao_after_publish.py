"""
### fapiao_after_publish: what comes after a published night (an example to copy)

Scheduled on the asset `fapiao_published_night`, which `fapiao_nightly`'s `publish` task updates each
time a night is published (whatever its expectations said). The event's extra carries the night,
its `outcome` (`passed` / `failed`), the findings per category (`counts`), their total (`findings`) and
the published folder (`report`). Replace `hand_over` with what your team does next: load the
mismatch list into the finance system, open tickets, refresh a dashboard.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task

PUBLISHED_NIGHT = Asset("fapiao_published_night")


@dag(
    dag_id="fapiao_after_publish",
    schedule=[PUBLISHED_NIGHT],
    start_date=pendulum.datetime(2026, 11, 1, tz="Asia/Shanghai"),
    catchup=False,
    dagrun_timeout=timedelta(hours=1),
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(minutes=30),
    },
    tags=["fapiao", "example"],
    doc_md=__doc__,
)
def fapiao_after_publish():
    @task
    def hand_over() -> list[dict]:
        """One line per published night that triggered this run (events may be batched)."""
        import logging

        log = logging.getLogger("fapiao_audit")
        nights = []
        for event in get_current_context()["triggering_asset_events"][PUBLISHED_NIGHT]:
            extra = dict(event.extra or {})
            log.info(
                "night %s published (expectations %s, %s findings): %s",
                extra.get("night"),
                extra.get("outcome"),
                extra.get("findings"),
                extra.get("report"),
            )
            nights.append(extra)
        return nights

    hand_over()


fapiao_after_publish()
