"""The notifiers and the deadline alert's callback against local receivers (no mock of a notifier)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import urllib.parse

import pytest

from fapiao_audit.notifications import night_not_published, send_late_alert

LATE_RUN = {  # the context the scheduler gives a deadline callback: the run as the REST API shows it
    "dag_run": {
        "dag_id": "fapiao_nightly",
        "dag_run_id": "scheduled__2026-11-20T16:00:00+00:00",
        "run_type": "scheduled",
        "state": "running",
        "conf": {},
        "data_interval_start": "2026-11-20T16:00:00Z",
        "data_interval_end": "2026-11-21T16:00:00Z",
    },
    "deadline": {"id": "0", "deadline_time": "2026-11-22T00:00:00Z"},
}


def test_deadline_callback_reaches_mail_and_chat(alert_receivers, monkeypatch, tmp_path):
    monkeypatch.setenv("FAPIAO_REPORTS", str(tmp_path / "reports"))
    alert_receivers.clear()
    asyncio.run(
        night_not_published(context=json.loads(json.dumps(LATE_RUN)), publish_by="08:00 Asia/Shanghai")
    )
    line = (
        f"fapiao_nightly night 2026-11-21: not published by 08:00 Asia/Shanghai "
        f"(run scheduled__2026-11-20T16:00:00+00:00, running); report expected at "
        f"{tmp_path / 'reports' / '2026-11-21' / 'report.html'}"
    )
    assert [m["Subject"] for m in alert_receivers.mails] == [
        "[fapiao] night 2026-11-21: not published by 08:00 Asia/Shanghai"
    ]
    assert line in alert_receivers.mails[0].get_body().get_content()
    assert [p["json"] for p in alert_receivers.posts] == [{"msgtype": "text", "text": {"content": line}}]


@pytest.mark.parametrize("run_type", ["backfill", "manual"])
def test_no_late_alert_for_a_rerun_of_a_past_night(alert_receivers, run_type):
    alert_receivers.clear()
    ctx = json.loads(json.dumps(LATE_RUN))
    ctx["dag_run"]["run_type"] = run_type
    send_late_alert(ctx, "08:00 Asia/Shanghai")
    assert alert_receivers.mails == [] and alert_receivers.posts == []


def test_no_late_alert_when_the_run_published_its_night_then_failed(alert_receivers, monkeypatch, tmp_path):
    night_dir = tmp_path / "reports" / "2026-11-21"
    night_dir.mkdir(parents=True)
    (night_dir / "summary.json").write_text(
        json.dumps(
            {
                "night": "2026-11-21",
                "outcome": "failed",
                "counts": {"MISSING_IN_REGISTRY": 3},
                "run": {"started_at": "2026-11-22T01:05:00+08:00"},
            }
        ),
        encoding="utf-8",
    )
    monkeypatch.setenv("FAPIAO_REPORTS", str(tmp_path / "reports"))
    ctx = json.loads(json.dumps(LATE_RUN))
    ctx["dag_run"]["start_date"] = "2026-11-21T17:00:00Z"  # 01:00 Beijing: the report is this run's
    alert_receivers.clear()
    send_late_alert(ctx, "08:00 Asia/Shanghai")
    assert alert_receivers.mails == [] and alert_receivers.posts == []
    ctx["dag_run"]["start_date"] = "2026-11-21T17:10:00Z"  # the report is older than the run: not this run's
    send_late_alert(ctx, "08:00 Asia/Shanghai")
    assert len(alert_receivers.mails) == 1 and len(alert_receivers.posts) == 1


def test_unconfigured_channels_are_skipped_with_one_line_each(alert_receivers, monkeypatch, caplog):
    alert_receivers.clear()
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT")
    monkeypatch.delenv("AIRFLOW_CONN_FAPIAO_CHAT")
    with caplog.at_level(logging.WARNING, logger="fapiao_audit"):
        send_late_alert(json.loads(json.dumps(LATE_RUN)), "08:00 Asia/Shanghai")
    assert alert_receivers.mails == [] and alert_receivers.posts == []
    assert [r.getMessage() for r in caplog.records if r.name == "fapiao_audit"] == [
        "e-mail not sent: no Airflow connection 'smtp_default' (an SMTP connection)",
        "chat message not sent: no Airflow connection 'fapiao_chat' (host = the robot's webhook URL)",
    ]


def test_no_recipients_no_mail(alert_receivers, monkeypatch):
    alert_receivers.clear()
    monkeypatch.delenv("FAPIAO_ALERT_EMAIL")
    send_late_alert(json.loads(json.dumps(LATE_RUN)), "08:00 Asia/Shanghai")
    assert alert_receivers.mails == [] and len(alert_receivers.posts) == 1


def test_dingtalk_signature_from_the_connection_password(alert_receivers, monkeypatch):
    conn = json.loads(os.environ["AIRFLOW_CONN_FAPIAO_CHAT"])
    conn["password"] = "SECxyz"  # a DingTalk robot with 加签
    monkeypatch.setenv("AIRFLOW_CONN_FAPIAO_CHAT", json.dumps(conn))
    alert_receivers.clear()
    send_late_alert(json.loads(json.dumps(LATE_RUN)), "08:00 Asia/Shanghai")
    [post] = alert_receivers.posts
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(post["path"]).query)
    assert q["access_token"] == ["test-token"]
    expected = base64.b64encode(
        hmac.new(b"SECxyz", f"{q['timestamp'][0]}\nSECxyz".encode(), hashlib.sha256).digest()
    )
    assert q["sign"] == [expected.decode()]


def test_a_robot_that_refuses_fails_the_notifier(monkeypatch):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from fapiao_audit.notifications import ChatWebhookNotifier

    class Refusing(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            reply = b'{"errcode":310000,"errmsg":"keywords not in content"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_FAPIAO_CHAT",
            json.dumps(
                {
                    "conn_type": "http",
                    "host": f"http://127.0.0.1:{server.server_address[1]}/robot/send?access_token=t",
                }
            ),
        )
        with pytest.raises(RuntimeError, match="keywords not in content"):
            ChatWebhookNotifier()({"fapiao": type("O", (), {"line": "x"})()})
    finally:
        server.shutdown()
