"""Support for the crash tests: the daemon as a killable subprocess, its session's survivors, a timed
sink that can hold deliveries, senders that retry until 250, and what the database recorded."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, text

from tests.support import STAFF, free_port, message, wire

MSGID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)
# The trace header the gateway adds names its own message id: a sender that resends after losing the
# 250 (the daemon died before the reply reached it) makes a second message, not a duplicate delivery.
TRACE_ID = re.compile(rb" id pg(\d+)")
# Acknowledgements off and the family and thread limits out of reach, so that every message of a
# burst from one sender goes to the teacher.
CONFIG_EXTRA = ("[acknowledge]\nenabled = false\n[limits]\nfamily_messages_per_half_term = 1000000\n"
                "thread_messages = 1000000\n")


class Daemon:
    """`parentgate run` in its own session, as systemd would run it."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> "Daemon":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(self.config), "run"],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited: {self.log.read_text()[-2000:]}")
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("daemon did not listen")

    def kill_main(self, grace: float = 5.0) -> list[int]:
        """SIGKILL the daemon's own process only (as the OOM killer would); the processes of its session
        still alive `grace` seconds later (orphans) are returned, then killed."""
        assert self.proc is not None
        sid = os.getsid(self.proc.pid)
        self.proc.kill()
        self.proc.wait()
        deadline = time.monotonic() + grace
        while (left := session_members(sid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return None


def session_members(sid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


class TimedSink:
    """An aiosmtpd sink that notes when it said 250 to each Message-ID. While `hold` is set, deliveries
    wait in DATA and are then refused with 451, unrecorded (a downstream that has not yet answered)."""

    def __init__(self) -> None:
        self.accepted: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        self.hold = threading.Event()
        self.holding = 0
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                import asyncio
                if outer.hold.is_set():
                    with outer.lock:
                        outer.holding += 1
                    while outer.hold.is_set():
                        await asyncio.sleep(0.02)
                    with outer.lock:
                        outer.holding -= 1
                    return "451 4.3.0 held, try again"
                data = bytes(envelope.original_content)
                found, trace = MSGID.search(data), TRACE_ID.search(data)
                with outer.lock:
                    outer.accepted.append((found.group(1).decode() if found else "-",
                                           int(trace.group(1)) if trace else -1, time.monotonic()))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, server_hostname="sink.test")

    def start(self) -> "TimedSink":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.hold.clear()
        self.controller.stop()

    def snapshot(self) -> list[tuple[str, int, float]]:
        """(Message-ID, the gateway's message id, when the 250 was said) per delivery."""
        with self.lock:
            return list(self.accepted)

    def message_ids(self) -> set[str]:
        return {mid for mid, _, _ in self.snapshot()}

    def deliveries(self) -> dict[int, int]:
        """How many times each of the gateway's messages was delivered."""
        seen: dict[int, int] = {}
        for _, ref, _ in self.snapshot():
            seen[ref] = seen.get(ref, 0) + 1
        return seen


class Senders:
    """`threads` clients sending `total` distinct messages between them, one connection each, each
    message retried until it gets 250 (the daemon is down between a kill and its restart)."""

    def __init__(self, port: int, total: int, threads: int, label: str) -> None:
        self.port = port
        self.accepted: list[str] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k, range(k, total, threads), label), daemon=True)
                         for k in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, k: int, numbers: range, label: str) -> None:
        for i in numbers:
            mid = f"<{label}-{i}@parent.example>"
            data = wire(message(sender="Parent <parent@example.com>", subject=f"{label} {i}", body="x\n", msgid=mid))
            while not self.stopped.is_set():
                try:
                    client = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
                    client.sendmail("parent@example.com", [STAFF], data)
                except (OSError, smtplib.SMTPException):
                    time.sleep(0.05)
                    continue
                with self.lock:
                    self.accepted.append(mid)
                try:
                    client.quit()
                except (OSError, smtplib.SMTPException):
                    client.close()  # the 250 counts; the daemon may have died since
                break

    def count(self) -> int:
        with self.lock:
            return len(self.accepted)

    def wait_for(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.count() >= n, f"only {self.count()} of {n} messages accepted in time"

    def join(self, timeout: float = 120) -> list[str]:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.stopped.set()
        with self.lock:
            return list(self.accepted)


class Recorded:
    """What the gateway's database says, read from outside (the daemon may be dead)."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)

    def sent(self) -> set[int]:
        """The ids of messages whose delivery is recorded as sent."""
        with self.engine.connect() as conn:
            return set(conn.execute(text("SELECT message FROM outbox WHERE kind = 'deliver' AND state = 'sent'"))
                       .scalars())

    def leased_to(self, owner: str) -> int:
        """Rows (messages and outbox) with work in progress leased to `owner`."""
        with self.engine.connect() as conn:
            return sum(int(conn.execute(text(f"SELECT count(*) FROM {table} WHERE lease_owner = :o"),
                                        {"o": owner}).scalar()) for table in ("messages", "outbox"))

    def in_state(self, state: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM messages WHERE state = :s"), {"s": state}).scalar())

    def close(self) -> None:
        self.engine.dispose()


def wait_until(condition: Any, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())
