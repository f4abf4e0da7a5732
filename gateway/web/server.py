"""Serving the console with uvicorn: on the daemon's own event loop, or alone (`parentgate console`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from typing import Iterator

import uvicorn

from gateway import services
from gateway.act.transport import Transport
from gateway.web.pages import Console
from gateway.workers.runtime import Runtime

log = logging.getLogger("parentgate.console")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM, SIGINT and SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ConsoleServer:
    """The console's HTTP listener; `start` binds (an address in use raises OSError), `close` stops."""

    def __init__(self, rt: Runtime, mailer: Transport) -> None:
        self.rt = rt
        self.mailer = mailer
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        console = self.rt.config.console
        assert console is not None
        sock = socket.socket(socket.AF_INET6 if ":" in console.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Answers are written in more than one piece (head, then body); without TCP_NODELAY (which
        # Linux passes on to accepted connections) Nagle's algorithm holds the body back until the
        # client's delayed ACK, some 40 ms on every keep-alive request.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((console.host, console.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        key = await self.rt.db.call(lambda: services.console_signing_key(self.rt))
        app = Console(self.rt, key, self.mailer).app
        # No access log: paths carry message ids only, but one line per request is noise in the journal.
        config = uvicorn.Config(app, lifespan="off", access_log=False, log_config=None, proxy_headers=False,
                                server_header=False, date_header=False)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="console")
        log.info("console listening on %s:%d (%s)", console.host, console.port, console.base_url)

    async def close(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)
        await self.mailer.close()


async def serve_alone(rt: Runtime, mailer: Transport) -> int:
    """`parentgate console`: the console only, until SIGTERM or SIGINT."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    server = ConsoleServer(rt, mailer)
    try:
        await server.start()
    except OSError:
        await mailer.close()
        rt.db.close()
        raise
    await stopping.wait()
    await server.close()
    rt.db.close()
    return 0
