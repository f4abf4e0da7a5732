"""The store's side of IMAP ingest: the watcher's port, implemented on the database."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Callable

from sqlalchemy.orm import Session

from gateway.act.mailbox import FetchedMessage
from gateway.clock import Clock
from gateway.config import Config, MailboxConfig
from gateway.ingest.inbox import Incoming, header_message_id, insert_received
from gateway.store import mailboxes
from gateway.store.database import Database

_RETURN_PATH = re.compile(rb"^return-path:[ \t]*<?([^<>\s]*)>?", re.IGNORECASE | re.MULTILINE)
_FROM = re.compile(rb"^from:[^\r\n]*?<?([\w.+'-]+@[\w.-]+)>?", re.IGNORECASE | re.MULTILINE)


def envelope_sender(raw: bytes) -> str:
    """An IMAP message has no envelope: Return-Path (written by the delivering MTA), else From."""
    head = raw[: raw.find(b"\r\n\r\n") if b"\r\n\r\n" in raw else 65536]
    match = _RETURN_PATH.search(head) or _FROM.search(head)
    return match.group(1).decode("ascii", "replace").lower() if match else ""


def mailbox_address(mailbox: MailboxConfig, config: Config) -> str:
    user = mailbox.credentials.username
    return user.lower() if "@" in user else f"{user}@{config.school(mailbox.school).domains[0]}"


class StoreImapPort:
    def __init__(self, db: Database, clock: Clock, config: Callable[[], Config]) -> None:
        self._db, self._clock, self._config = db, clock, config
        # Status reports waiting to be written, newest per mailbox, and the task writing them.
        self._reports: dict[str, tuple[bool, str, datetime]] = {}
        self._writing: asyncio.Task[None] | None = None

    async def checkpoint(self, mailbox: str) -> tuple[int, int] | None:
        return await self._db.run(lambda s: mailboxes.checkpoint(s, mailbox))

    async def store_fetched(self, mailbox: str, school: str, folder: str, uidvalidity: int,
                            messages: Sequence[FetchedMessage], last_uid: int) -> int:
        config = self._config()
        box = next(m for m in config.mailboxes if m.name == mailbox)
        rcpt = mailbox_address(box, config)

        def run(session: Session) -> int:
            items = []
            for m in messages:
                if mailboxes.already_stored(session, mailbox, header_message_id(m.raw),
                                            hashlib.sha256(m.raw).hexdigest()):
                    continue
                items.append(Incoming(raw=m.raw, mail_from=envelope_sender(m.raw), rcpt_tos=(rcpt,), school=school,
                                      source="imap", peer=box.host, helo=None, mailbox=mailbox, folder=folder))
            insert_received(session, items, self._clock, f"imap:{mailbox}")
            mailboxes.advance(session, mailbox, uidvalidity, last_uid, self._clock.now())
            return len(items)
        return await self._db.run(run)

    async def report(self, mailbox: str, ok: bool, detail: str) -> None:
        """Record a mailbox's status; reports that arrive together (a thousand watchers connecting or
        reconnecting) are written in one transaction, not one commit each."""
        self._reports[mailbox] = (ok, detail, self._clock.now())
        if self._writing is None or self._writing.done():
            self._writing = asyncio.ensure_future(self._write_reports())
        await asyncio.shield(self._writing)

    async def _write_reports(self) -> None:
        while self._reports:
            batch, self._reports = self._reports, {}

            def run(session: Session, batch: dict[str, tuple[bool, str, datetime]] = batch) -> None:
                for name, (ok, detail, at) in batch.items():
                    mailboxes.report(session, name, ok, detail, at)
            await self._db.run(run)
