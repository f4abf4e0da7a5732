"""Store first, then answer: incoming messages are committed (in small groups) before the sender hears 250.

Group commit: messages arriving together share one transaction, so commit-before-250 with a synced
SQLite costs one disk flush per group rather than per message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Callable

from sqlalchemy.orm import Session

from gateway.clock import Clock
from gateway.domain.states import State
from gateway.store.database import Database
from gateway.store.models import MessageRow
from gateway.store.queue import record_received

log = logging.getLogger("parentgate.inbox")
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]{1,900}>)", re.IGNORECASE | re.MULTILINE)
MAX_GROUP = 256


@dataclass(frozen=True)
class Incoming:
    raw: bytes
    mail_from: str
    rcpt_tos: tuple[str, ...]
    school: str
    source: str = "smtp"
    peer: str | None = None
    helo: str | None = None
    mailbox: str | None = None
    folder: str | None = None


def header_message_id(raw: bytes) -> str | None:
    """The Message-ID from the header block only, without a full parse (triage parses later)."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    match = _MESSAGE_ID.search(raw[: end if end >= 0 else len(raw)])
    return match.group(1).decode("ascii", "replace") if match else None


def new_row(item: Incoming, clock: Clock) -> MessageRow:
    now = clock.now()
    return MessageRow(
        school=item.school, source=item.source, mailbox=item.mailbox, folder=item.folder,
        mail_from=item.mail_from, rcpt_tos=list(item.rcpt_tos), peer=item.peer, helo=item.helo,
        raw=item.raw, size=len(item.raw), sha256=hashlib.sha256(item.raw).hexdigest(),
        message_id=header_message_id(item.raw), state=State.RECEIVED.value, received_at=now, updated_at=now,
        counted=0, claims=0)


def insert_received(session: Session, items: list[Incoming], clock: Clock, actor: str) -> list[int]:
    rows = [new_row(item, clock) for item in items]
    session.add_all(rows)
    session.flush()
    for row in rows:
        record_received(session, row, actor=actor, now=row.received_at)
    return [row.id for row in rows]


class Inbox:
    """Durable intake shared by SMTP and IMAP ingest."""

    def __init__(self, db: Database, clock: Clock, *, on_stored: Callable[[], None] = lambda: None) -> None:
        self._db, self._clock, self._on_stored = db, clock, on_stored
        self._queue: asyncio.Queue[tuple[Incoming, asyncio.Future[int]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._commit_groups(), name="inbox")

    async def stop(self, timeout: float = 10.0) -> None:
        """Commit what is already waiting (its senders are owed an answer), then stop."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except asyncio.TimeoutError:
            log.warning("stopping with %d message(s) not stored; their senders get no 250", self._queue.qsize())
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def receive(self, item: Incoming) -> int:
        """Returns the stored message's id once it is committed; raises if it could not be stored."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _commit_groups(self) -> None:
        while True:
            group = [await self._queue.get()]
            while len(group) < MAX_GROUP and not self._queue.empty():
                group.append(self._queue.get_nowait())
            items = [item for item, _ in group]
            try:
                ids = await self._db.run(lambda s: insert_received(s, items, self._clock, "smtp"))
            except Exception as exc:  # noqa: BLE001 - every waiter gets the failure, the loop goes on
                log.error("could not store %d incoming message(s): %s", len(group), exc.__class__.__name__)
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                    self._queue.task_done()
                continue
            for (_, future), message_id in zip(group, ids):
                if not future.done():
                    future.set_result(message_id)
                self._queue.task_done()
            self._on_stored()
