"""What every worker shares: the database, the clock, and the current configuration and rules.

`config` and `rules` are replaced together on a successful SIGHUP reload; workers read them per batch.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gateway.clock import Clock
from gateway.config import Config
from gateway.ops.metrics import Metrics
from gateway.store.database import Database
from gateway.workers.dispatch import Job
from gateway.triage.rules import RuleSet


def make_owner(identity: str = "") -> str:
    """A lease owner name: this host plus a stable identity for this gateway instance.

    Stable across restarts on purpose: a restarted gateway clears its own leases at start-up (its
    previous incarnation is dead), while other gateways sharing a PostgreSQL database keep theirs.
    """
    return f"{socket.gethostname()[:32]}:{identity or uuid.uuid4().hex[:8]}"


@dataclass
class Runtime:
    db: Database
    clock: Clock
    config: Config
    rules: RuleSet
    templates_dir: Path
    owner: str = field(default_factory=make_owner)
    # This gateway's counters and gauges: workers report into it, /metrics reads it.
    metrics: Metrics = field(default_factory=Metrics)
    wake_delivery: Callable[[], None] = lambda: None
    wake_triage: Callable[[], None] = lambda: None
    # Set when a delivery worker runs in this process: triage leases the rows it writes and hands
    # them over, instead of the delivery worker claiming them back from the database.
    hand_over: Callable[[list[Job]], None] | None = None


class Wakeup:
    """A level-triggered nudge for a worker loop: set by producers, cleared by the loop."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        self._event.clear()
