"""Crash safety: the daemon as a subprocess, SIGKILLed mid-burst. Every 250 arrives, nothing twice."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from email import message_from_bytes
from email.policy import default as policy
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support import STAFF, Sink, free_port, message, wire, write_config

pytestmark = pytest.mark.timeout(240)


def start_daemon(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config), "run"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited: {log.read_text()[-2000:]}")
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=2):
                return proc
        except OSError:
            time.sleep(0.05)
    raise AssertionError("daemon did not listen")


def send(port: int, m: bytes) -> int:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.sendmail("parent@example.com", [STAFF], m)
            return 250
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code
    except (OSError, smtplib.SMTPException):
        return -1


CONFIG_EXTRA = ("[acknowledge]\nenabled = false\n[limits]\nfamily_messages_per_half_term = 100000\n"
                "thread_messages = 100000\n")


class Burst:
    """`sessions` threads each sending `each` messages one connection at a time; `accepted` holds the
    Message-IDs that got 250."""

    def __init__(self, port: int, sessions: int, each: int, label: str) -> None:
        self.accepted: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._send, args=(port, k, each, label)) for k in range(sessions)]
        for t in self._threads:
            t.start()

    def _send(self, port: int, k: int, each: int, label: str) -> None:
        for i in range(each):
            m = message(subject=f"{label} {k}-{i}", body="x\n")
            if send(port, wire(m)) == 250:
                with self._lock:
                    self.accepted.append(m["Message-ID"])

    def wait_for(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.accepted) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    def join(self) -> list[str]:
        for t in self._threads:
            t.join()
        return self.accepted


def all_arrive_once(sink: Sink, accepted: list[str]) -> None:
    deadline = time.monotonic() + 120
    while not set(accepted) <= set(ids_at(sink)) and time.monotonic() < deadline:
        time.sleep(0.1)
    ids = ids_at(sink)
    assert set(accepted) - set(ids) == set(), "messages that got 250 were lost"
    assert len(ids) == len(set(ids)), "a message was delivered twice"


def ids_at(sink: Sink) -> list[str]:
    return [message_from_bytes(r.data, policy=policy)["Message-ID"] for r in sink.snapshot()]


def test_sigkill_mid_burst_loses_nothing_accepted_and_delivers_nothing_twice(tmp_path, sink, database_url):
    port = free_port()
    cfg = write_config(tmp_path, smtp_port=port, sink_port=sink.port, database=database_url, retry_first="1s",
                       extra=CONFIG_EXTRA)
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, port, log)
    # The sink defers during the burst so nothing is in flight to it at the kill: a delivery cut between
    # the downstream 250 and our commit may legitimately repeat (at-least-once, like any MTA).
    sink.defer = True
    burst = Burst(port, sessions=6, each=50, label="burst")
    burst.wait_for(120)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    accepted = burst.join()
    assert 120 <= len(accepted) < 300, "the kill should land mid-burst"
    proc = start_daemon(cfg, port, log)
    try:
        sink.defer = False
        all_arrive_once(sink, accepted)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0, "SIGTERM should stop the daemon cleanly with exit 0"


def test_sigterm_mid_burst_stops_cleanly_gives_back_every_lease_and_loses_nothing(tmp_path, sink, database_url):
    port = free_port()
    cfg = write_config(tmp_path, smtp_port=port, sink_port=sink.port, database=database_url, retry_first="1s",
                       extra=CONFIG_EXTRA)
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, port, log)
    burst = Burst(port, sessions=5, each=40, label="term")
    burst.wait_for(60)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0, "SIGTERM should stop the daemon cleanly with exit 0"
    accepted = burst.join()
    assert 60 <= len(accepted) < 200, "the stop should land mid-burst"
    # A clean stop leaves no lease behind: batches claimed ahead and rows handed to delivery are given back.
    engine = create_engine(database_url)
    with engine.connect() as conn:
        leased = [conn.execute(text(f"SELECT count(*) FROM {t} WHERE lease_owner IS NOT NULL")).scalar()
                  for t in ("messages", "outbox")]
    engine.dispose()
    assert leased == [0, 0]
    proc = start_daemon(cfg, port, log)
    try:
        all_arrive_once(sink, accepted)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
