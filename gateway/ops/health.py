"""`/healthz`: is the database answering, the SMTP listener accepting, and every worker loop going round?

Each check is bounded by a timeout and runs off the event loop or as a short non-blocking connect, so a
stuck database makes the health check answer 503, never hang the daemon. It reads state; it never
changes it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from gateway.ops.metrics import Metrics
from gateway.store.database import URGENT, Database

DB_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0



class Serving(Protocol):
    """The SMTP listener as health sees it."""

    def is_serving(self) -> bool: ...


@dataclass(frozen=True)
class LoopLimits:
    """How long each worker loop may go without a tick before the gateway counts as unhealthy.

    The triage and delivery loops go round at least every second when idle; a batch in hand takes longer,
    so the limits leave room for a slow one. The jobs loop ticks with the 30-second release sweep."""

    seconds: dict[str, float] = field(default_factory=lambda: {"triage": 120.0, "delivery": 60.0, "jobs": 75.0})


def _connect_host(host: str) -> str:
    # A wildcard listener is reached through the loopback address of its family.
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


class Health:
    def __init__(self, db: Database, metrics: Metrics, listener: Callable[[], Serving | None],
                 listen: tuple[str, int], limits: LoopLimits | None = None) -> None:
        self._db = db
        self._metrics = metrics
        self._listener = listener
        self._listen = listen
        self._limits = limits or LoopLimits()

    async def problem(self) -> str | None:
        """None when healthy, else a short plain-text reason (the first problem found)."""
        try:
            await asyncio.wait_for(self._db.call(self._db.ping, priority=URGENT), DB_TIMEOUT)
        except asyncio.TimeoutError:
            return f"database did not answer within {DB_TIMEOUT:.0f} s"
        except Exception as exc:  # noqa: BLE001 - any failure means unreachable; its class says which kind
            return f"database unreachable ({exc.__class__.__name__})"
        server = self._listener()
        if server is None or not server.is_serving():
            return "SMTP listener is not serving"
        host, port = self._listen
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(_connect_host(host), port), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            return f"SMTP listener on {host}:{port} does not accept connections ({exc.__class__.__name__})"
        writer.close()
        if not self._metrics.running:
            # Listening already, but the workers are still being started: not ready to be counted on.
            return "starting: the worker loops are not running yet"
        now = time.monotonic()
        for loop, limit in self._limits.seconds.items():
            idle = now - self._metrics.ticks.get(loop, float("-inf"))
            if idle > limit:
                return f"{loop} loop has not run for {idle:.0f} s (limit {limit:.0f} s)"
        return None
