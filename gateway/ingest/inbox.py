"""Store first, then answer: incoming messages are committed (in small groups) before the sender hears 250.

Group commit: messages arriving together share one transaction, so commit-before-250 with a synced
SQLite costs one disk flush per group rather than per message. The group is taken on the database
thread when the transaction starts, not when it is queued, so everything that arrived while the thread
was busy (the previous commit, a triage or delivery batch) joins it; and the intake's commits go before
other work waiting for that thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy.exc import DataError, IntegrityError, StatementError
from sqlalchemy.orm import Session

from gateway.clock import Clock
from gateway.store.database import URGENT, Database
from gateway.store.queue import add_received

log = logging.getLogger("parentgate.inbox")
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]{1,900}>)", re.IGNORECASE | re.MULTILINE)
MAX_GROUP = 256
LARGE = 1024 * 1024
MAX_GROUP_BYTES = 16 * 1024 * 1024


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


def new_message(item: Incoming, clock: Clock) -> dict[str, Any]:
    return dict(
        school=item.school, source=item.source, mailbox=item.mailbox, folder=item.folder,
        mail_from=item.mail_from, rcpt_tos=list(item.rcpt_tos), peer=item.peer, helo=item.helo,
        raw=item.raw, size=len(item.raw), sha256=hashlib.sha256(item.raw).hexdigest(),
        message_id=header_message_id(item.raw), received_at=clock.now())


def insert_received(session: Session, items: list[Incoming], clock: Clock, actor: str) -> list[int]:
    return add_received(session, [new_message(item, clock) for item in items], actor=actor)


InsertFn = Callable[[Session, list[Incoming], Clock, str], list[int]]


class Unstorable(Exception):
    """One message that could not be stored. `permanent`: storing it again would fail the same way
    (the database refused its values), so its sender is told 5xx rather than to try again."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(cause.__class__.__name__)
        self.permanent = is_permanent(cause)


def is_permanent(exc: BaseException) -> bool:
    """A failure caused by the values themselves (a value the database refuses, or that cannot be
    encoded for it), as opposed to the database being unreachable, busy or locked."""
    if isinstance(exc, (DataError, IntegrityError)):
        return True
    if isinstance(exc, StatementError) and isinstance(exc.orig, (ValueError, TypeError, UnicodeError)):
        return True
    return isinstance(exc, (ValueError, TypeError, UnicodeError))


class Inbox:
    """Durable intake shared by SMTP and IMAP ingest."""

    def __init__(self, db: Database, clock: Clock, *, on_stored: Callable[[], None] = lambda: None,
                 insert: InsertFn = insert_received, on_large: Callable[[], None] = lambda: None) -> None:
        self._db, self._clock, self._on_stored = db, clock, on_stored
        self._insert = insert
        # Told of every large message taken in (the daemon then gives freed memory back to the system).
        self._on_large = on_large
        # Appended on the event loop, taken on the database thread (deque appends and pops are atomic).
        self._waiting: deque[tuple[Incoming, asyncio.Future[int]]] = deque()
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._commit_groups(), name="inbox")

    async def stop(self, timeout: float = 10.0) -> None:
        """Commit what is already waiting (its senders are owed an answer), then stop."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("stopping with %d message(s) not stored; their senders get no 250", len(self._waiting))
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def receive(self, item: Incoming) -> int:
        """Returns the stored message's id once it is committed; raises if it could not be stored."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if len(item.raw) >= LARGE:
            self._on_large()
        self._waiting.append((item, future))
        self._idle.clear()
        self._arrived.set()
        return await future

    def _take(self) -> list[tuple[Incoming, asyncio.Future[int]]]:
        group: list[tuple[Incoming, asyncio.Future[int]]] = []
        size = 0
        # Bounded in bytes too: the driver copies a group's parameters at once (PostgreSQL's
        # multi-row INSERT), so large messages are committed a few at a time.
        while len(group) < MAX_GROUP and size < MAX_GROUP_BYTES:
            try:
                group.append(self._waiting.popleft())
            except IndexError:
                break
            size += len(group[-1][0].raw)
        return group

    def _store(self) -> tuple[list[tuple[Incoming, asyncio.Future[int]]], list[int | BaseException]]:
        """On the database thread: take the group waiting now and commit it. Each item's id, or the
        reason it could not be stored.

        Should the group's transaction fail, each message is stored again in a transaction of its own,
        so that one unstorable row fails only its own sender and never the others of its group."""
        group = self._take()
        if not group:
            return group, []
        items = [item for item, _ in group]
        try:
            return group, list(self._db.transact(lambda s: self._insert(s, items, self._clock, "smtp")))
        except Exception as exc:  # noqa: BLE001 - retried one by one below
            if len(items) == 1:
                return group, [Unstorable(exc)]
            log.warning("a group of %d incoming messages could not be stored (%s); storing each alone",
                        len(items), exc.__class__.__name__)
        results: list[int | BaseException] = []
        for item in items:
            try:
                results.append(self._db.transact(lambda s: self._insert(s, [item], self._clock, "smtp"))[0])
            except Exception as exc:  # noqa: BLE001 - this item's own failure, for its own sender
                results.append(Unstorable(exc))
        return group, results

    async def _commit_groups(self) -> None:
        while True:
            if not self._waiting:
                self._idle.set()
                await self._arrived.wait()
            self._arrived.clear()
            if not self._waiting:
                continue
            try:
                group, results = await self._db.call(self._store, priority=URGENT)
            except Exception as exc:  # noqa: BLE001 - the executor itself failed: nothing was taken
                log.error("could not store incoming messages: %s", exc.__class__.__name__)
                await asyncio.sleep(0.1)
                continue
            stored = False
            for (_, future), result in zip(group, results):
                if isinstance(result, BaseException):
                    log.error("could not store an incoming message (%s, %s)", result,
                              "permanent" if getattr(result, "permanent", False) else "temporary")
                    if not future.done():
                        future.set_exception(result)
                    continue
                stored = True
                if not future.done():
                    future.set_result(result)
            if stored:
                self._on_stored()
