"""The daemon as a system service: SIGHUP reloads a valid configuration and keeps the old one otherwise."""

from __future__ import annotations

import os
import signal
import smtplib
import time

import pytest

from tests.integration.test_crash import start_daemon
from tests.support import free_port, write_config

pytestmark = pytest.mark.timeout(120)


def rcpt_code(port: int, rcpt: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("parent@example.com")
        code, _ = s.rcpt(rcpt)
        s.rset()
        return code


def wait_code(port: int, rcpt: str, want: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    code = rcpt_code(port, rcpt)
    while code != want and time.monotonic() < deadline:
        time.sleep(0.1)
        code = rcpt_code(port, rcpt)
    return code


def test_sighup_reloads_a_valid_config_and_keeps_the_old_one_when_the_new_one_is_invalid(tmp_path):
    port = free_port()
    cfg = write_config(tmp_path, smtp_port=port)
    proc = start_daemon(cfg, port, tmp_path / "daemon.log")
    try:
        assert rcpt_code(port, "x@second.sch.example") == 550
        text = cfg.read_text()
        cfg.write_text(text.replace('domains = ["oakfield-primary.sch.example"]',
                                    'domains = ["oakfield-primary.sch.example", "second.sch.example"]'))
        os.kill(proc.pid, signal.SIGHUP)
        assert wait_code(port, "x@second.sch.example", 250) == 250
        cfg.write_text(cfg.read_text().replace('mode = "maildir"', 'mode = "fax"'))
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while b"reload refused" not in (tmp_path / "daemon.log").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b"reload refused" in (tmp_path / "daemon.log").read_bytes()
        assert proc.poll() is None
        assert rcpt_code(port, "x@second.sch.example") == 250
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0


def test_messages_and_subjects_never_appear_in_the_log(tmp_path):
    import smtplib as s2
    from tests.support import STAFF, message, wire
    port = free_port()
    cfg = write_config(tmp_path, smtp_port=port)
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, port, log)
    try:
        m = message(subject="Secret-subject-4711", body="Private-body-text-0815\n")
        with s2.SMTP("127.0.0.1", port, timeout=10) as c:
            c.sendmail("parent@example.com", [STAFF], wire(m))
        mail = tmp_path / "var" / "mail" / STAFF / "new"
        deadline = time.monotonic() + 20
        while not (mail.exists() and any(mail.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert mail.exists() and any(mail.iterdir())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
    text = log.read_bytes()
    assert b"received via smtp" in text and b"-> delivered" in text
    assert b"Secret-subject-4711" not in text and b"Private-body-text-0815" not in text
