"""IMAP mode wiring: one watcher per mailbox, in-place moves for the delivery worker, the submission route."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from gateway.act.mailbox import MailboxError, MessageNotFoundError
from gateway.act.relay import RelayTarget, SmtpRelay
from gateway.act.transport import Outcome, Transport
from gateway.config import Config, Credentials
from gateway.ingest.imap import MailboxActions, MailboxWatcher, MoveRequest
from gateway.ingest.mailstore import StoreImapPort
from gateway.ingest.oauth import GoogleTokenProvider, MicrosoftTokenProvider, TokenProvider
from gateway.workers.delivery import MoveFn
from gateway.workers.dispatch import Job
from gateway.workers.runtime import Runtime

log = logging.getLogger("parentgate.imap")


def make_mover(rt: Runtime, actions: MailboxActions) -> MoveFn:
    async def move(job: Job) -> Outcome:
        mailbox = next((m for m in rt.config.mailboxes if m.name == job.params.get("mailbox")), None)
        if mailbox is None:
            return Outcome(ok=False, temporary=False, detail="mailbox no longer configured")
        to_folder = str(job.params["to"])
        try:
            await actions.move_message(mailbox, job.message_header_id, job.sha256, job.folder or mailbox.folder,
                                       to_folder, unseen=bool(job.params.get("unseen")))
        except MessageNotFoundError as exc:
            # Someone moved or deleted it by hand: nothing to retry; the postmaster is told.
            return Outcome(ok=False, temporary=False, detail=str(exc)[:200])
        except MailboxError as exc:
            # Authentication problems need a person but are retried (slowly) until the lifetime ends.
            return Outcome(ok=False, temporary=True, detail=str(exc)[:200])
        return Outcome.sent(f"moved to {to_folder}")
    return move


def token_provider(credentials: Credentials) -> TokenProvider | None:
    oauth = credentials.oauth2
    if oauth is None:
        return None
    if oauth.provider == "microsoft":
        return MicrosoftTokenProvider(oauth.tenant_id, oauth.client_id, oauth.client_secret)
    assert oauth.service_account_file is not None
    return GoogleTokenProvider(oauth.service_account_file, credentials.username)


def submission_transport(config: Config) -> Transport | None:
    sub = config.submission
    if sub is None:
        return None
    creds = sub.credentials
    provider = token_provider(creds) if creds else None
    return SmtpRelay(RelayTarget(host=sub.host, port=sub.port, hostname=config.smtp.hostname, starttls=sub.starttls,
                                 username=creds.username if creds else None,
                                 password=creds.password if creds else None,
                                 oauth2_token=provider.token if provider else None))


class ImapMode:
    """One watcher (one connection, one thread) per configured mailbox; the pipeline's moves run on it.

    Watchers open their connections at most `[imap] connect_concurrency` at a time per server, so a
    thousand mailboxes start in waves rather than all at once, and reconnect with jittered backoff.
    """

    def __init__(self, rt: Runtime, *, rng: random.Random | None = None) -> None:
        self.rt = rt
        self.actions = MailboxActions()
        self.port = StoreImapPort(rt.db, rt.clock, lambda: rt.config)
        self.watchers: list[MailboxWatcher] = []
        self.tasks: list[asyncio.Task[None]] = []
        self._rng = rng or random.Random()

    def start(self) -> None:
        settings = self.rt.config.imap
        # One gate per server: a server that does not answer (each attempt waiting out its timeout) holds
        # up only the mailboxes on it, never those on another server.
        gates: dict[tuple[str, int], asyncio.Semaphore] = {}
        began = time.monotonic()
        for mailbox in self.rt.config.mailboxes:
            gate = gates.setdefault((mailbox.host.lower(), mailbox.port),
                                    asyncio.Semaphore(settings.connect_concurrency))
            watcher = MailboxWatcher(mailbox, self.port, now=self.rt.clock.now, on_stored=self.rt.wake_triage,
                                     backoff=(1.0, float(settings.reconnect_max_seconds)), connect_gate=gate,
                                     rng=self._rng)
            self.actions.attach(watcher)
            self.watchers.append(watcher)
            self.tasks.append(asyncio.create_task(watcher.run(), name=f"imap:{mailbox.name}"))
        if self.watchers:
            log.info("watching %d IMAP mailbox(es) (their threads started in %.2fs; at most %d connecting at once)",
                     len(self.watchers), time.monotonic() - began, settings.connect_concurrency)

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.watchers), return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.actions.close()
