"""The daemon's log as journald and an operator's terminal see it: priorities, no raw control characters,
no third-party chatter."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_metrics import poll, stop
from tests.support import STAFF, free_port, write_config

pytestmark = pytest.mark.timeout(120)

TIMESTAMP = re.compile(rb"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")
RAW_CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")
EVIL = b"From: p@example.com\r\nTo: " + STAFF.encode() + \
    b"\r\nSubject: x\r\nMessage-ID: <evil\x1b[31m\x0b\x0cINFO parentgate.queue: fake@example.com>\r\n\r\nThanks!\r\n"


def start(cfg: Path, port: int, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # The test's own environment may come from a systemd unit: only `env` decides about journald.
    base = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(cfg), "run"], stdout=out,
                                stderr=out, start_new_session=True, env={**base, **env})

    def listening() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=2):
                return True
        except OSError:
            return False
    assert poll(listening, 60)
    return proc


def deliver_evil_and_stop(tmp_path: Path, env: dict[str, str]) -> bytes:
    port = free_port()
    cfg = write_config(tmp_path, smtp_port=port)
    log = tmp_path / "daemon.log"
    proc = start(cfg, port, log, env)
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.sendmail("p@example.com", [STAFF], EVIL)
        assert poll(lambda: b"-> delivered" in log.read_bytes())
        # A reload refused logs an error: a line at another priority.
        cfg.write_text(cfg.read_text().replace('mode = "maildir"', 'mode = "fax"'))
        os.kill(proc.pid, signal.SIGHUP)
        assert poll(lambda: b"reload refused" in log.read_bytes())
    finally:
        stop(proc)
    assert proc.returncode == 0
    return log.read_bytes()


def test_under_journald_every_line_carries_its_priority_and_no_timestamp(tmp_path: Path):
    text = deliver_evil_and_stop(tmp_path, {"JOURNAL_STREAM": "8:123456"})
    lines = text.splitlines()
    assert len(lines) >= 5
    for line in lines:
        # The priority, then the logger's name: no timestamp of our own (journald adds its own).
        assert re.match(rb"<[0-7]>(  |[a-z_.]+: )", line), line
        assert not TIMESTAMP.match(line[3:]), line
    assert any(line.startswith(b"<6>parentgate.queue: message 1 received via smtp") for line in lines)
    assert any(line.startswith(b"<3>") and b"reload refused" in line for line in lines)


def test_control_characters_from_a_message_id_never_reach_the_log_raw(tmp_path: Path):
    text = deliver_evil_and_stop(tmp_path, {})
    assert not RAW_CONTROL.search(text.replace(b"\n", b""))
    assert b"\x1b" not in text and b"\x0b" not in text and b"\x0c" not in text
    assert b"evil\\x1b[31m\\x0b\\x0cINFO" in text
    # The forged line is inside the real one, never a line of its own.
    assert not any(line.startswith(b"INFO parentgate.queue: fake") for line in text.splitlines())
    # Without journald, lines carry their own timestamps.
    assert all(TIMESTAMP.match(line) for line in text.splitlines() if not line.startswith(b"  "))


def test_an_operator_command_prints_no_third_party_info_lines(tmp_path: Path):
    cfg = write_config(tmp_path)
    # A fresh database: the command runs every migration first, which alembic would narrate.
    r = subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), "queue"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.strip() == "the queue is empty"
