"""The daemon under systemd's Type=notify: READY=1 once it accepts mail, watchdog pings, queue status, STOPPING=1.

The test plays systemd's part: a datagram socket named in NOTIFY_SOCKET (a path, or `@name` in the
abstract namespace), with SO_PASSCRED so that each notification's sender pid is known, as systemd's
NotifyAccess=main needs.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support import STAFF, free_port, message, wire, write_config

pytestmark = pytest.mark.timeout(120)


class FakeSystemd:
    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.1)
        self.got: list[tuple[int, float, str]] = []

    def _poll(self) -> None:
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (socket.timeout, BlockingIOError):
                return
            pid = next(struct.unpack("iII", payload[:12])[0] for level, kind, payload in ancillary
                       if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
            self.got.extend((pid, time.monotonic(), line) for line in data.decode().split("\n"))

    def wait(self, prefix: str, timeout: float, proc: subprocess.Popen[bytes]) -> tuple[int, float, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._poll()
            for item in self.got:
                if item[2].startswith(prefix):
                    return item
            assert proc.poll() is None, f"daemon exited {proc.returncode} before {prefix}"
        raise AssertionError(f"no {prefix} within {timeout} s; got {[line for _, _, line in self.got]}")

    def close(self) -> None:
        self.sock.close()


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_the_daemon_tells_systemd_it_is_ready_alive_busy_and_stopping(tmp_path: Path, kind: str):
    port = free_port()
    config = write_config(tmp_path, smtp_port=port)
    if kind == "path":
        name = str(tmp_path / "notify.sock")
        systemd = FakeSystemd(name)
    else:
        name = f"@parentgate-test-{uuid.uuid4().hex}"
        systemd = FakeSystemd(b"\0" + name[1:].encode())
    env = {k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "WATCHDOG_PID")}
    # A one-second watchdog: pings every half second.
    env |= {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "1000000"}
    log = tmp_path / "daemon.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config), "run"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        pid, _, _ = systemd.wait("READY=1", 90, proc)
        # Ready means accepting mail: a connection made the moment READY=1 arrives succeeds.
        assert accepts(port)
        assert pid == proc.pid
        systemd.wait("WATCHDOG=1", 10, proc)
        status = systemd.wait("STATUS=queue: ", 10, proc)[2]
        assert status == "STATUS=queue: 0 received, 0 triaged, 0 held, 0 in review, 0 queued, 0 failed, 0 quarantined"
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.sendmail("parent@example.com", [STAFF], wire(message()))
        # Pings keep coming while the loops go round (every 0.5 s here): three more after the message.
        sent = time.monotonic()
        deadline = sent + 30
        while len([at for _, at, line in systemd.got if line == "WATCHDOG=1" and at > sent]) < 3:
            assert time.monotonic() < deadline and proc.poll() is None, "watchdog pings stopped"
            systemd._poll()
        # Only the main process speaks (NotifyAccess=main would drop the judge processes' messages).
        assert {p for p, _, _ in systemd.got} == {proc.pid}
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
        systemd._poll()
        assert "STOPPING=1" in [line for _, _, line in systemd.got]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        systemd.close()


def test_without_notify_socket_the_daemon_runs_as_before(tmp_path: Path):
    port = free_port()
    config = write_config(tmp_path, smtp_port=port)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "STATE_DIRECTORY")}
    log = tmp_path / "daemon.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config), "run"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not accepts(port):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert "service notifications" not in log.read_text()
