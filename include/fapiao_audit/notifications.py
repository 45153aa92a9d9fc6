"""How a night's outcome reaches people: Airflow notifiers, once per DAG run.

- ``NightMailNotifier``: Airflow's ``SmtpNotifier`` (the SMTP provider), through Airflow's SMTP connection
  (``smtp_default`` unless told otherwise: host, port, login, STARTTLS/SSL, ``from_email`` in its extra).
- ``ChatWebhookNotifier``: a DingTalk (钉钉) or WeCom (企业微信) group robot, through an Airflow connection
  whose host is the robot's webhook URL (and, for a DingTalk robot with 加签, whose password is the secret).

Both are DAG-level ``on_failure_callback`` / ``on_success_callback``: one message per run, never one per
mapped task. Each renders the night's one-line summary (``{{ fapiao.line }}``) and the report's path.
Recipients come from the Variable or environment variable ``FAPIAO_ALERT_EMAIL`` (comma-separated).
A notifier whose connection (or recipient list) is not configured logs one line and sends nothing, so a
fresh ``airflow dags test`` is not buried under tracebacks; a configured one that fails raises.

``night_not_published`` is the deadline alert's callback: the night was not published by the hour set.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import logging
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseNotifier

log = logging.getLogger("fapiao_audit")

DEFAULT_CHAT_CONN_ID = "fapiao_chat"
DAG_ID = "fapiao_nightly"

SUBJECT = "{{ fapiao.subject }}"
HTML = (
    "<p>{{ fapiao.line | e }}</p>"
    "<p>Report: <code>{{ fapiao.report | e }}</code></p>"
    "{% if fapiao.counts %}<table>{% for k, v in fapiao.counts.items() %}"
    "<tr><td>{{ k | e }}</td><td style='text-align:right'>{{ v }}</td></tr>{% endfor %}</table>{% endif %}"
    "<p>DAG run <code>{{ fapiao.run_id | e }}</code></p>"
)
CHAT_TEXT = "{{ fapiao.line }}"


@dataclass(frozen=True)
class NightOutcome:
    """What a run did to its night, for people: ``line`` is the one-line summary."""

    night: str
    state: str  # success | failed | not published (deadline)
    outcome: str  # passed | failed | not published
    report: str
    run_id: str
    failed_task: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def line(self) -> str:
        if self.outcome in ("passed", "failed"):
            what = f"published, {self.total} findings, expectations {self.outcome}"
        else:
            what = "not published"
        where = f" at {self.failed_task}" if self.failed_task else ""
        return f"{DAG_ID} night {self.night}: run {self.state}{where}; {what}; report {self.report}"

    @property
    def subject(self) -> str:
        return f"[fapiao] night {self.night}: run {self.state}, expectations {self.outcome}"


def _publish_result(context: dict[str, Any]) -> dict[str, Any] | None:
    """The publish task's result in this run (its XCom), or None when it did not publish.

    A callback run by the DAG processor reads it through the task SDK; ``dag.test()`` runs callbacks in
    its own process, where XComs cannot be read: then the published night on disk tells, if this run
    published it (its summary's start is not older than the run).
    """
    ti = context.get("ti") or context.get("task_instance")
    if ti is not None:
        try:
            result = ti.xcom_pull(task_ids="publish", key="return_value")
        except Exception as e:  # noqa: BLE001 - fall back to what the disk says
            log.debug("publish's XCom not readable here (%s); reading the published night", e)
        else:
            return result if isinstance(result, dict) else None
    return _published_on_disk(context)


def _published_on_disk(context: dict[str, Any]) -> dict[str, Any] | None:
    from datetime import datetime

    from .orchestration import night_for, report_dir

    dag_run = context.get("dag_run")
    try:
        params = context.get("params") or getattr(dag_run, "conf", None) or {}
        night = night_for(params, getattr(dag_run, "data_interval_start", None)).isoformat()
        folder = report_dir(night)
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        started = datetime.fromisoformat(summary["run"]["started_at"])
    except Exception as e:  # noqa: BLE001 - no night, nothing published, unreadable: not published
        log.debug("no published night found for the notification: %s", e)
        return None
    run_start = getattr(dag_run, "start_date", None)
    if run_start is not None and started < run_start.replace(microsecond=0):
        return None  # an earlier run's report, not this run's
    return {
        "night": night,
        "outcome": summary["outcome"],
        "published": str(folder),
        "counts": summary.get("counts") or {},
    }


def _report_path(night: str) -> str:
    """Where the night's report is (or would be); a message must go out even if the settings cannot be read."""
    from .orchestration import report_dir

    if night == "?":
        return "-"
    try:
        return f"{report_dir(night)}/report.html"
    except Exception as e:  # noqa: BLE001
        return f"<reports>/{night}/report.html (settings unreadable: {e})"


def night_outcome(context: dict[str, Any]) -> NightOutcome:
    """The run's night, state and published report, from a DAG callback's context."""
    from .orchestration import night_for

    dag_run = context.get("dag_run")
    ti = context.get("ti") or context.get("task_instance")
    # A DAG callback's reason: "success", "task_failure", "all_tasks_deadlocked", "timed_out" (the run's
    # own state in the context may still read "running").
    reason = context.get("reason")
    if reason is None and dag_run is not None:
        reason = str(getattr(getattr(dag_run, "state", None), "value", getattr(dag_run, "state", "")))
    state = "success" if reason == "success" else "failed"
    if reason not in ("success", "task_failure", "failed", None):
        state = f"failed ({reason})"
    published = _publish_result(context)
    night = ""
    if published:
        night = str(published["night"])
    else:
        try:
            params = context.get("params") or getattr(dag_run, "conf", None) or {}
            night = night_for(params, getattr(dag_run, "data_interval_start", None)).isoformat()
        except Exception:  # noqa: BLE001 - a run without interval nor param: say so, do not fail the alert
            night = "?"
    failed_task = ""
    if state == "failed" and ti is not None:
        failed_task = str(getattr(ti, "task_id", "") or "")
    if published:
        report = f"{published['published']}/report.html"
        outcome = str(published["outcome"])
        counts = {str(k): int(v) for k, v in (published.get("counts") or {}).items()}
    else:
        report = f"{_report_path(night)} (not published by this run)"
        outcome, counts = "not published", {}
    return NightOutcome(
        night=night,
        state=state,
        outcome=outcome,
        report=report,
        run_id=str(getattr(dag_run, "run_id", None) or context.get("run_id") or "?"),
        failed_task=failed_task,
        counts=counts,
    )


class _NightContext:
    """Adds ``fapiao`` (a NightOutcome) to the context before the templates render.

    A notifier renders its template fields in place (irreversibly); a DAG object outlives one run (the
    DAG processor, ``dag.test()``), so each call renders a copy and the next run starts from the templates.
    """

    def __call__(self, *args: Any) -> None:
        context = args[0] if len(args) == 1 else {}
        if "fapiao" not in context:
            context["fapiao"] = night_outcome(context)
        fresh = copy.copy(self)
        fresh.__dict__.pop("hook", None)  # SmtpNotifier caches its hook; each message opens its own
        super(_NightContext, fresh).__call__(context)  # type: ignore[misc]

    def get_template_env(self, dag: Any = None) -> Any:
        # dag.test() hands DAG callbacks the serialized DAG, which has no template environment: use the
        # notifier's own (sandboxed) one then; the templates here need no DAG macros.
        if dag is not None and not hasattr(dag, "get_template_env"):
            dag = None
        return super().get_template_env(dag=dag)  # type: ignore[misc]


def _connection(conn_id: str) -> Any | None:
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


class NightMailNotifier(_NightContext, SmtpNotifier):
    """``SmtpNotifier`` with the night's summary as subject and body; recipients from FAPIAO_ALERT_EMAIL."""

    def __init__(
        self, to: str | list[str] | None = None, smtp_conn_id: str | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("subject", SUBJECT)
        kwargs.setdefault("html_content", HTML)
        super().__init__(to=to or "", smtp_conn_id=smtp_conn_id, **kwargs)

    def notify(self, context: Any) -> None:
        if not self.to:
            from .orchestration import setting

            self.to = [a.strip() for a in (setting("FAPIAO_ALERT_EMAIL", None) or "").split(",") if a.strip()]
        if not self.to:
            log.warning("e-mail not sent: no recipients (set the Variable FAPIAO_ALERT_EMAIL)")
            return
        if _connection(self.smtp_conn_id) is None:
            log.warning("e-mail not sent: no Airflow connection %r (an SMTP connection)", self.smtp_conn_id)
            return
        super().notify(context)
        log.info(
            "e-mail sent to %s: %s",
            ", ".join([self.to] if isinstance(self.to, str) else list(self.to)),
            self.subject,
        )


def webhook_url(conn: Any) -> str:
    """The robot's URL: the connection's host, with DingTalk's signature added when it has a secret."""
    url = str(conn.host or "")
    if not url.startswith(("http://", "https://")):
        raise ValueError(
            f"connection {conn.conn_id!r}: its host must be the robot's webhook URL "
            "(https://oapi.dingtalk.com/robot/send?access_token=... or "
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...)"
        )
    if conn.port and "://" in url and ":" not in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        host, _, path = rest.partition("/")
        url = f"{scheme}://{host}:{conn.port}/{path}"
    if conn.password:  # DingTalk 加签: timestamp and HMAC-SHA256 of "timestamp\nsecret", base64, URL-quoted
        ts = str(round(time.time() * 1000))
        digest = hmac.new(conn.password.encode(), f"{ts}\n{conn.password}".encode(), hashlib.sha256).digest()
        sign = urllib.parse.quote_plus(base64.b64encode(digest))
        url += ("&" if "?" in url else "?") + f"timestamp={ts}&sign={sign}"
    return url


def post_text(url: str, text: str, timeout: float = 10.0) -> None:
    """Post a text message the way DingTalk and WeCom robots both take it; their errcode is checked."""
    body = json.dumps({"msgtype": "text", "text": {"content": text}}, ensure_ascii=False).encode("utf-8")
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json; charset=utf-8"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the URL is the operator's
        reply = resp.read().decode("utf-8", "replace")
    try:
        errcode = json.loads(reply).get("errcode", 0)
    except (ValueError, AttributeError):
        errcode = 0
    if errcode:
        raise RuntimeError(f"chat robot refused the message: {reply[:200]}")


class ChatWebhookNotifier(_NightContext, BaseNotifier):
    """A DingTalk or WeCom group robot, configured by an Airflow connection (host = webhook URL)."""

    template_fields = ("text", "conn_id")

    def __init__(self, conn_id: str = DEFAULT_CHAT_CONN_ID, text: str = CHAT_TEXT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.text = text

    def notify(self, context: Any) -> None:
        conn = _connection(self.conn_id)
        if conn is None:
            log.warning(
                "chat message not sent: no Airflow connection %r (host = the robot's webhook URL)",
                self.conn_id,
            )
            return
        post_text(webhook_url(conn), self.text)
        log.info("chat message sent through %s", self.conn_id)


def night_notifiers(smtp_conn_id: str | None = None, chat_conn_id: str = DEFAULT_CHAT_CONN_ID) -> list[Any]:
    """The DAG's outcome notifiers: e-mail and chat."""
    return [NightMailNotifier(smtp_conn_id=smtp_conn_id), ChatWebhookNotifier(conn_id=chat_conn_id)]


def _late_context(context: dict[str, Any] | None, publish_by: str) -> dict[str, Any]:
    from .orchestration import night_for

    run = dict((context or {}).get("dag_run") or {})
    try:
        night = night_for(run.get("conf") or {}, _as_datetime(run.get("data_interval_start"))).isoformat()
    except Exception:  # noqa: BLE001
        night = "?"
    outcome = NightOutcome(
        night=night,
        state=str(run.get("state") or "running"),
        outcome="not published",
        report=_report_path(night),
        run_id=str(run.get("dag_run_id") or run.get("run_id") or "?"),
    )
    return {"fapiao": _Late(outcome, publish_by), "dag_run": run}


def _as_datetime(value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class _Late:
    outcome: NightOutcome
    publish_by: str

    def __getattr__(self, name: str) -> Any:
        return getattr(self.outcome, name)

    @property
    def line(self) -> str:
        o = self.outcome
        return (
            f"{DAG_ID} night {o.night}: not published by {self.publish_by} (run {o.run_id}, "
            f"{o.state}); report expected at {o.report}"
        )

    @property
    def subject(self) -> str:
        return f"[fapiao] night {self.outcome.night}: not published by {self.publish_by}"


def send_late_alert(
    context: dict[str, Any] | None = None,
    publish_by: str = "?",
    smtp_conn_id: str | None = None,
    chat_conn_id: str = DEFAULT_CHAT_CONN_ID,
) -> None:
    """The deadline was missed: tell the same people, through the same notifiers.

    Only the scheduled night is due by the morning: a backfill or a manual rerun of an old night passed its
    deadline before it started. A run that published its night and then failed (the quality gate) keeps
    its deadline in Airflow; the night is published, so no alert either.
    """
    run = dict((context or {}).get("dag_run") or {})
    if run.get("run_type") != "scheduled":
        log.info("deadline of a %s run passed: no alert (only scheduled nights are due)", run.get("run_type"))
        return
    from types import SimpleNamespace

    as_run = SimpleNamespace(
        conf=run.get("conf") or {},
        data_interval_start=_as_datetime(run.get("data_interval_start")),
        start_date=_as_datetime(run.get("start_date")),
    )
    published = _published_on_disk({"dag_run": as_run})
    if published:
        log.info(
            "night %s was published (expectations %s): no deadline alert",
            published["night"],
            published["outcome"],
        )
        return
    ctx = _late_context(context, publish_by)
    for notifier in night_notifiers(smtp_conn_id, chat_conn_id):
        notifier(dict(ctx))


async def night_not_published(
    context: dict[str, Any] | None = None,
    publish_by: str = "?",
    smtp_conn_id: str | None = None,
    chat_conn_id: str = DEFAULT_CHAT_CONN_ID,
) -> None:
    """The deadline alert's callback (run by the triggerer): the notifiers are synchronous, so a thread."""
    import asyncio

    await asyncio.to_thread(send_late_alert, context, publish_by, smtp_conn_id, chat_conn_id)
