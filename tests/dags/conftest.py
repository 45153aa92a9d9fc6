"""Airflow for tests: a private AIRFLOW_HOME with a migrated SQLite metadata DB, set up once."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_HOME = tempfile.mkdtemp(prefix="fapiao-airflow-")
os.environ.setdefault("AIRFLOW_HOME", _HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")


@pytest.fixture(scope="session")
def airflow_db():
    from airflow.utils import db

    db.initdb()
    return os.environ["AIRFLOW_HOME"]


@pytest.fixture(scope="session")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


class AlertReceivers:
    """A local SMTP server and a local chat-robot endpoint; what they received, in order."""

    def __init__(self) -> None:
        self.mails: list = []  # email.message.EmailMessage
        self.posts: list[dict] = []  # JSON bodies

    def clear(self) -> None:
        self.mails.clear()
        self.posts.clear()


@pytest.fixture(scope="session")
def alert_receivers():
    """SMTP (aiosmtpd) and HTTP receivers, wired to Airflow through connections in the environment:
    `smtp_default` (the SMTP provider's default) and `fapiao_chat` (host = the robot's webhook URL)."""
    import email
    import email.policy
    import json
    import logging
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP line at INFO
    got = AlertReceivers()

    class Mailbox:
        async def handle_DATA(self, server, session, envelope):
            msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
            msg["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
            got.mails.append(msg)
            return "250 OK"

    class Robot(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.posts.append({"path": self.path, "json": json.loads(body.decode("utf-8"))})
            reply = b'{"errcode":0,"errmsg":"ok"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):  # keep the test output clean
            pass

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        smtp_port = s.getsockname()[1]
    smtp = Controller(Mailbox(), hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), Robot)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    mp = pytest.MonkeyPatch()
    mp.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": smtp_port,
                "extra": {
                    "disable_tls": True,
                    "disable_ssl": True,
                    "from_email": "fapiao-audit@example.test",
                    "timeout": 10,
                    "retry_limit": 0,
                },
            }
        ),
    )
    mp.setenv(
        "AIRFLOW_CONN_FAPIAO_CHAT",
        json.dumps(
            {
                "conn_type": "http",
                "host": f"http://127.0.0.1:{http.server_address[1]}/robot/send?access_token=test-token",
            }
        ),
    )
    mp.setenv("FAPIAO_ALERT_EMAIL", "finance-ops@example.test, data-eng@example.test")
    try:
        yield got
    finally:
        mp.undo()
        http.shutdown()
        smtp.stop()
