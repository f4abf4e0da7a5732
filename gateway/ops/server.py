"""A small HTTP/1.1 server on the daemon's own event loop for `/metrics` and `/healthz`. GET only.

It reads at most a request line and a few headers, answers, and closes the connection: nothing here
needs keep-alive, and a slow or hostile client is cut off after a few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CONTENT_TYPE_LATEST

from gateway.clock import Clock
from gateway.ops.health import Health
from gateway.ops.metrics import Metrics
from gateway.store.database import Database
from gateway.store.stats import snapshot

log = logging.getLogger("parentgate.metrics")
READ_TIMEOUT = 5.0
MAX_HEADERS = 100
# A scrape re-reads the queue gauges from the database unless they are fresher than this, so that
# frequent scrapers (or several Prometheus servers) cost at most one small query per interval.
REFRESH_EVERY = 2.0
REFRESH_TIMEOUT = 5.0
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class OpsServer:
    """Serves the metrics and the health check of one running gateway."""

    def __init__(self, metrics: Metrics, health: Health, db: Database, clock: Clock,
                 mailboxes: tuple[str, ...]) -> None:
        self._metrics = metrics
        self._health = health
        self._db = db
        self._clock = clock
        self._mailboxes = mailboxes
        self._refreshed = float("-inf")
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        """Bind and serve; an address in use raises OSError before anything is served."""
        self._server = await asyncio.start_server(self._handle, host=host, port=port, reuse_address=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def refresh(self) -> None:
        """The queue gauges from the database, unless read within REFRESH_EVERY seconds."""
        if time.monotonic() - self._refreshed < REFRESH_EVERY:
            return
        try:
            snap = await asyncio.wait_for(self._db.run(snapshot), REFRESH_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - the scrape still answers, with the last figures
            log.warning("metrics: could not read the queue figures (%s)", exc.__class__.__name__)
            return
        self._metrics.apply(snap, self._mailboxes)
        self._refreshed = time.monotonic()

    async def _answer(self, method: str, path: str) -> tuple[int, bytes, str]:
        if method not in ("GET", "HEAD"):
            return 405, b"GET only\n", "text/plain; charset=utf-8"
        if path == "/metrics":
            await self.refresh()
            return 200, self._metrics.exposition(self._clock.now()), CONTENT_TYPE_LATEST
        if path == "/healthz":
            problem = await self._health.problem()
            if problem is None:
                return 200, b"ok\n", "text/plain; charset=utf-8"
            return 503, problem.encode("utf-8", "replace") + b"\n", "text/plain; charset=utf-8"
        return 404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(self._read_request(reader), READ_TIMEOUT)
            if request is None:
                return
            method, path = request
            status, body, content_type = await self._answer(method, path)
            head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
            writer.write(head.encode("ascii") + (b"" if method == "HEAD" else body))
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
        except (asyncio.TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError):
            # A slow, vanished or over-long request (readline's limit raises ValueError): closed without
            # an answer, and without a log line.
            pass
        except Exception:  # noqa: BLE001 - one bad request must not end the server
            log.exception("metrics: request failed")
        finally:
            writer.close()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str] | None:
        parts = (await reader.readline()).decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return None
        # The headers are read and ignored: nothing here depends on them.
        for _ in range(MAX_HEADERS):
            if (await reader.readline()).strip() == b"":
                break
        return parts[0], parts[1].split("?", 1)[0]
