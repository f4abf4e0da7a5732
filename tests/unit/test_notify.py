"""sd_notify client: datagrams on a real Unix socket (path and abstract), watchdog pings only while loops go round."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from pathlib import Path

import pytest

from gateway.ops.notify import Notifier, queue_status, socket_address, stale_loop, supervise


def _listener(tmp_path: Path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    return sock, path


def test_ready_and_status_reach_a_path_socket_in_one_datagram(tmp_path: Path):
    sock, path = _listener(tmp_path)
    with sock:
        notifier = Notifier(path)
        assert notifier.ready("listening")
        assert sock.recv(4096) == b"READY=1\nSTATUS=listening"
        # A newline in a value cannot smuggle in another assignment.
        assert notifier.status("a\nREADY=1")
        assert sock.recv(4096) == b"STATUS=a READY=1"
        notifier.close()


def test_an_abstract_namespace_socket_is_reached_through_its_at_sign_name():
    name = f"parentgate-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        notifier = Notifier(f"@{name}")
        assert notifier.stopping()
        assert sock.recv(4096).split(b"\n")[0] == b"STOPPING=1"
        notifier.close()
    assert socket_address(f"@{name}") == b"\0" + name.encode()


def test_outside_systemd_nothing_is_sent_and_nothing_fails(tmp_path: Path):
    assert not Notifier.from_environ({}).enabled
    assert Notifier.from_environ({}).ready() is False
    assert not Notifier("vsock:2:1234").enabled
    # A socket that is gone: the notification is dropped, the caller carries on.
    assert Notifier(str(tmp_path / "gone.sock")).watchdog() is False


def test_the_watchdog_is_ours_only_when_watchdog_pid_is_unset_or_our_pid():
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "60000000"}
    assert Notifier.from_environ(env).watchdog_interval == 30.0
    assert Notifier.from_environ(env | {"WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 30.0
    assert Notifier.from_environ(env | {"WATCHDOG_PID": "1"}, pid=2).watchdog_interval is None
    assert Notifier.from_environ(env | {"WATCHDOG_USEC": "soon"}).watchdog_interval is None
    assert Notifier.from_environ({"WATCHDOG_USEC": "60000000"}).watchdog_interval is None


def test_queue_status_lists_the_waiting_states():
    assert queue_status({"held": 3, "in_review": 1, "delivered": 99}) == \
        "queue: 0 received, 0 triaged, 3 held, 1 in review, 0 queued, 0 failed, 0 quarantined"


def test_a_loop_is_stale_once_its_last_tick_is_older_than_its_limit():
    limits = {"triage": 10.0, "delivery": 5.0}
    assert stale_loop({"triage": 100.0, "delivery": 100.0}, limits, now=104.0) is None
    assert stale_loop({"triage": 100.0, "delivery": 100.0}, limits, now=106.0) == "delivery"
    assert stale_loop({"triage": 100.0}, limits, now=101.0) == "delivery"


async def test_pings_stop_while_a_loop_is_stale_and_resume_when_it_ticks_again(tmp_path: Path):
    sock, path = _listener(tmp_path)
    sock.setblocking(False)
    notifier = Notifier(path, watchdog_usec=100_000)
    state: dict[str, str | None] = {"stale": None}
    summaries = 0

    async def summary() -> str:
        nonlocal summaries
        summaries += 1
        return f"queue: {summaries}"

    stopping = asyncio.Event()
    task = asyncio.create_task(supervise(notifier, stale=lambda: state["stale"], summary=summary,
                                         stopping=stopping, status_interval=0.2))
    loop = asyncio.get_running_loop()

    async def collect(seconds: float) -> list[bytes]:
        got: list[bytes] = []
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            try:
                got.append(await asyncio.wait_for(loop.sock_recv(sock, 4096), deadline - loop.time()))
            except asyncio.TimeoutError:
                break
        return got

    try:
        healthy = await collect(0.5)
        assert healthy.count(b"WATCHDOG=1") >= 3
        assert any(m.startswith(b"STATUS=queue: ") for m in healthy)
        state["stale"] = "delivery"
        await collect(0.1)
        hung = await collect(0.5)
        assert b"WATCHDOG=1" not in hung
        # STATUS= still flows: systemctl status keeps showing the queue while the watchdog runs out.
        assert any(m.startswith(b"STATUS=") for m in hung)
        state["stale"] = None
        assert b"WATCHDOG=1" in await collect(0.5)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 5)
        notifier.close()
        sock.close()


async def test_a_failing_summary_still_reports_a_status_and_keeps_pinging(tmp_path: Path):
    sock, path = _listener(tmp_path)
    sock.setblocking(False)
    notifier = Notifier(path, watchdog_usec=100_000)

    async def summary() -> str:
        raise ConnectionError("database down")

    stopping = asyncio.Event()
    task = asyncio.create_task(supervise(notifier, stale=lambda: None, summary=summary, stopping=stopping,
                                         status_interval=0.1))
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    deadline = loop.time() + 3
    try:
        while loop.time() < deadline and not (b"WATCHDOG=1" in got and b"STATUS=queue: unknown (ConnectionError)" in got):
            got.append(await asyncio.wait_for(loop.sock_recv(sock, 4096), deadline - loop.time()))
    finally:
        stopping.set()
        await asyncio.wait_for(task, 5)
        notifier.close()
        sock.close()
    assert b"WATCHDOG=1" in got and b"STATUS=queue: unknown (ConnectionError)" in got


@pytest.mark.parametrize("value", ["", "relative/path"])
def test_values_that_are_not_unix_sockets_are_refused(value: str):
    assert socket_address(value) is None
