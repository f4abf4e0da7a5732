"""The listening socket's accept loop: bounded connections, and accept errors that never flood the log.

asyncio's own server is not used because of how it fails when the process runs out of file
descriptors: on EMFILE it logs a traceback through the loop's exception handler and schedules a
retry, once for every connection still waiting (up to the backlog) and again on every retry, which
wrote hundreds of megabytes of "socket.accept() out of system resource" in minutes (issue 12). Here,
a connection over the caps is told 421 and closed before a session is built, and an accept error
pauses accepting briefly and is counted, to be logged at most once a second.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("parentgate.smtp")

TOO_MANY_421 = b"421 4.7.0 Too many connections, try again later\r\n"
# File descriptors kept for everything but SMTP sessions: the database, delivery connections, the
# judge processes' pipes, log files.
FD_RESERVE = 128
# How long accepting pauses after the process ran out of descriptors (or the kernel of memory).
ACCEPT_PAUSE = 0.25
# How many waiting connections one readiness of the listening socket accepts (as asyncio does).
ACCEPT_BATCH = 100
BACKLOG = 511
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def effective_max_connections(configured: int, reserve: int = FD_RESERVE) -> int:
    """`configured`, lowered so that SMTP sessions cannot use up the process's open-file limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - reserve))


@dataclass
class ConnectionGate:
    """Counts open sessions, in all and per client address, against their caps."""

    max_total: int
    max_per_client: int
    total: int = 0
    per_client: dict[str, int] = field(default_factory=dict)

    def admit(self, client: str) -> bool:
        if self.total >= self.max_total or self.per_client.get(client, 0) >= self.max_per_client:
            return False
        self.total += 1
        self.per_client[client] = self.per_client.get(client, 0) + 1
        return True

    def release(self, client: str) -> None:
        self.total -= 1
        left = self.per_client.get(client, 0) - 1
        if left > 0:
            self.per_client[client] = left
        else:
            self.per_client.pop(client, None)


class RateLimitedLog:
    """Counts repeated events and logs them at most once per `interval`, with the count."""

    def __init__(self, what: str, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._what, self._interval, self._clock = what, interval, clock
        self._count = 0
        self._last = float("-inf")
        self._kinds: dict[str, int] = {}

    def note(self, kind: str) -> None:
        self._count += 1
        self._kinds[kind] = self._kinds.get(kind, 0) + 1
        now = self._clock()
        if now - self._last >= self._interval:
            kinds = ", ".join(f"{k} x{n}" for k, n in sorted(self._kinds.items()))
            log.warning("%s: %d since the last report (%s)", self._what, self._count, kinds)
            self._count, self._kinds, self._last = 0, {}, now


def _bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address `host` resolves to (as asyncio's create_server binds)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys((i[0], i[1], i[2], "", i[4]) for i in infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                # Worded as asyncio's create_server words it, which the start-up error repeats.
                raise OSError(exc.errno, f"error while attempting to bind on address {address!r}: "
                                         f"{(exc.strerror or '').lower()}") from None
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """Accepts connections and hands each admitted one to a protocol from `factory`.

    `factory(release)` builds the session's protocol; the protocol calls `release()` once, when its
    connection is lost, to give its place back to the gate."""

    def __init__(self, host: str, port: int, factory: Callable[[Callable[[], None]], asyncio.Protocol],
                 gate: ConnectionGate) -> None:
        self._loop = asyncio.get_running_loop()
        self._factory, self._gate = factory, gate
        self.sockets = _bind(host, port)
        self._errors = RateLimitedLog("SMTP connections not accepted")
        self._refused = RateLimitedLog("SMTP connections refused over the connection caps")
        self._paused: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._errors.note(errno.errorcode.get(exc.errno or 0, "error"))
                if exc.errno in _RESOURCE_ERRORS:
                    # The descriptor stays readable while the connection waits: stop watching it for
                    # a moment instead of spinning, as the connection cannot be taken now anyway.
                    self._pause()
                return
            client = str(address[0]) if isinstance(address, tuple) else str(address)
            if not self._gate.admit(client):
                self._refused.note(client if self._gate.total < self._gate.max_total else "all clients")
                _refuse(conn)
                continue
            conn.setblocking(False)
            task = self._loop.create_task(self._start(conn, client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start(self, conn: socket.socket, client: str) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._gate.release(client)
        try:
            await self._loop.connect_accepted_socket(lambda: self._factory(release), conn)
        except Exception as exc:  # noqa: BLE001 - one connection that fails to start must not stop others
            log.warning("an SMTP connection could not be started: %s", exc.__class__.__name__)
            conn.close()
            release()

    def _pause(self) -> None:
        if self._paused is not None or self._closed:
            return
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
        self._paused = self._loop.call_later(ACCEPT_PAUSE, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if not self._closed:
            for sock in self.sockets:
                self._loop.add_reader(sock.fileno(), self._accept, sock)

    def is_serving(self) -> bool:
        return not self._closed

    def close(self) -> None:
        """Stop accepting; sessions already open carry on (as asyncio's Server.close does)."""
        if self._closed:
            return
        self._closed = True
        if self._paused is not None:
            self._paused.cancel()
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _refuse(conn: socket.socket) -> None:
    """Tell a connection over the caps to come back later, and close it at once (RFC 5321 §3.1)."""
    try:
        conn.setblocking(False)
        conn.send(TOO_MANY_421)
    except OSError:
        pass
    finally:
        conn.close()
