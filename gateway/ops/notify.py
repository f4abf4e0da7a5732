"""systemd service notifications (sd_notify(3)) over $NOTIFY_SOCKET: READY, WATCHDOG, STATUS and STOPPING.

A few datagrams on a Unix socket, so no library is needed. With `Type=notify` systemd counts the
service as started only on READY=1 (sent once the SMTP listener accepts), and with `WatchdogSec=`
it restarts a service whose WATCHDOG=1 pings stop. The pings are sent only while every worker loop
has gone round recently: a wedged loop (or a blocked event loop, which stops the pinging task
itself) is a hung gateway, and a restart is what the watchdog is for. Nothing here changes state;
a notification that cannot be sent is dropped, as sd_notify does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.workers.runtime import Runtime

log = logging.getLogger("parentgate.notify")

# The states a message waits in, in the order an operator reads them (DESIGN.md's state machine).
_WAITING = (("received", "received"), ("triaged", "triaged"), ("held", "held"), ("in_review", "in review"),
            ("queued", "queued"), ("failed", "failed"), ("quarantined", "quarantined"))


def socket_address(value: str) -> str | bytes | None:
    """The datagram address for a NOTIFY_SOCKET value: a path, or `@name` in the abstract namespace."""
    if value.startswith("@"):
        # Linux abstract namespace: a leading NUL byte instead of systemd's "@" (unix(7)).
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


class Notifier:
    """Sends notifications to the service manager; every method is a no-op outside systemd."""

    def __init__(self, notify_socket: str | None, watchdog_usec: int | None = None) -> None:
        self._address = socket_address(notify_socket) if notify_socket else None
        if notify_socket and self._address is None:
            log.warning("NOTIFY_SOCKET %r is not a Unix socket path; service notifications are off",
                        notify_socket[:80])
        self._socket: socket.socket | None = None
        self.watchdog_usec = watchdog_usec if self._address is not None else None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int | None = None) -> Notifier:
        """From systemd's variables: NOTIFY_SOCKET, and WATCHDOG_USEC when WATCHDOG_PID is unset or ours."""
        usec: int | None = None
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        if not watchdog_pid or watchdog_pid == str(pid if pid is not None else os.getpid()):
            try:
                usec = int(environ.get("WATCHDOG_USEC", "")) or None
            except ValueError:
                usec = None
        return cls(environ.get("NOTIFY_SOCKET") or None, usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half the watchdog timeout, as sd_watchdog_enabled(3) advises."""
        return self.watchdog_usec / 2_000_000 if self.watchdog_usec else None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` lines in one datagram; False when it could not be sent (never raises)."""
        if self._address is None:
            return False
        # A newline inside a value would start another assignment: the protocol has no quoting.
        payload = "\n".join(a.replace("\n", " ") for a in assignments).encode("utf-8", "replace")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)
            self._socket.sendto(payload, self._address)
        except OSError as exc:
            log.debug("service notification not sent: %s", exc.__class__.__name__)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "stopping: finishing work in progress") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def queue_status(counts: Mapping[str, int]) -> str:
    """A one-line STATUS= for `systemctl status`: how many messages wait in each state."""
    return "queue: " + ", ".join(f"{counts.get(state, 0)} {label}" for state, label in _WAITING)


def stale_loop(ticks: Mapping[str, float], limits: Mapping[str, float], now: float) -> str | None:
    """The first worker loop that has not gone round within its limit (monotonic seconds), or None."""
    for loop, limit in limits.items():
        if now - ticks.get(loop, float("-inf")) > limit:
            return loop
    return None


async def supervise(notifier: Notifier, *, stale: Callable[[], str | None],
                    summary: Callable[[], Awaitable[str]], stopping: asyncio.Event,
                    status_interval: float = 30.0) -> None:
    """Until stopping: WATCHDOG=1 while no loop is stale, and STATUS= with the queue every status_interval.

    The two run side by side, so that a slow database (a status line waiting on it) never delays a ping.
    """
    if not notifier.enabled:
        return
    await asyncio.gather(_pings(notifier, stale, stopping), _statuses(notifier, summary, stopping, status_interval))


async def _until(stopping: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass


async def _pings(notifier: Notifier, stale: Callable[[], str | None], stopping: asyncio.Event) -> None:
    interval = notifier.watchdog_interval
    if interval is None:
        return
    withheld: str | None = None
    while not stopping.is_set():
        hung = stale()
        if hung is None:
            notifier.watchdog()
        elif hung != withheld:
            log.error("%s loop is not going round: withholding the watchdog ping, so systemd restarts the gateway",
                      hung)
        withheld = hung
        await _until(stopping, interval)


async def _statuses(notifier: Notifier, summary: Callable[[], Awaitable[str]], stopping: asyncio.Event,
                    interval: float) -> None:
    while not stopping.is_set():
        try:
            text = await asyncio.wait_for(summary(), timeout=max(interval, 1.0))
        except Exception as exc:  # noqa: BLE001 - a status line must never stop the notifications
            text = f"queue: unknown ({exc.__class__.__name__})"
        if not stopping.is_set():
            notifier.status(text)
        await _until(stopping, interval)


async def watch_gateway(notifier: Notifier, rt: Runtime, stopping: asyncio.Event) -> None:
    """`supervise` for a running gateway: its loops' ticks against /healthz's limits, its queue from the database."""
    from gateway.ops.health import LoopLimits
    from gateway.services import state_counts
    limits = LoopLimits().seconds

    async def summary() -> str:
        return queue_status(await rt.db.call(lambda: state_counts(rt)))

    await supervise(notifier, stale=lambda: stale_loop(rt.metrics.ticks, limits, time.monotonic()),
                    summary=summary, stopping=stopping)
