"""Test support: configs, an aiosmtpd sink standing in for the real mail server, an in-process gateway.

Everything listens on 127.0.0.1 with free ports and lives in the test's own temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.controller import Controller

from gateway.act.probe import RecipientVerifier
from gateway.app import build_runtime, delivery_transport, load_all
from gateway.clock import FixedClock
from gateway.ingest.inbox import Inbox
from gateway.ingest.smtp import start_server
from gateway.workers.delivery import DeliveryWorker
from gateway.workers.release import release_due
from gateway.workers.runtime import Runtime
from gateway.workers.triage import TriageWorker

DOMAIN = "oakfield-primary.sch.example"
STAFF = f"j.smith@{DOMAIN}"
HEAD = f"head@{DOMAIN}"
OFFICE = f"office@{DOMAIN}"
DSL = f"dsl@{DOMAIN}"

HALF_TERMS = [("Autumn 1", "2026-09-03", "2026-10-23"), ("Autumn 2", "2026-11-02", "2026-12-18"),
              ("Spring 1", "2027-01-05", "2027-02-12"), ("Spring 2", "2027-02-22", "2027-03-25"),
              ("Summer 1", "2027-04-12", "2027-05-28"), ("Summer 2", "2027-06-07", "2027-07-21")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def school_calendar() -> str:
    terms = "".join(f'[[schools.half_terms]]\nname = "{n}"\nstart = {s}\nend = {e}\n\n' for n, s, e in HALF_TERMS)
    return ('[schools.hours]\nopen = "08:00"\nclose = "17:00"\ndays = ["mon", "tue", "wed", "thu", "fri"]\n\n'
            + terms + '[schools.closures]\ninset_days = [2026-09-01, 2026-09-02, 2026-11-02]\nbank_holidays = "ENG"\n')


def always_open() -> str:
    return ('[schools.hours]\nopen = "00:00"\nclose = "24:00"\n'
            'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n\n'
            '[schools.closures]\ninset_days = []\nbank_holidays = "none"\n')


def write_config(directory: Path, *, smtp_port: int | None = None, sink_port: int | None = None,
                 calendar: str | None = None, extra: str = "", database: str | None = None,
                 school_extra: str = "", max_size: int = 1048576, retry_first: str = "60s",
                 gateway_extra: str = os.environ.get("PG_TEST_GATEWAY_EXTRA", ""), smtp_extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    delivery = (f'mode = "smtp"\nsmarthost = "127.0.0.1:{sink_port}"\n' if sink_port
                else 'mode = "maildir"\nmaildir_root = "var/mail"\n')
    db = f'database = "{database}"\n' if database else ""
    text = (f'[gateway]\nstate_dir = "var"\n{db}timezone = "Europe/London"\npostmaster = "postmaster@{DOMAIN}"\n{gateway_extra}\n'
            f'[smtp]\nlisten = "127.0.0.1:{smtp_port or free_port()}"\nhostname = "gateway.test"\n'
            f'max_message_size = {max_size}\n{smtp_extra}\n'
            f'[delivery]\n{delivery}retry_first_delay = "{retry_first}"\nretry_max_delay = "10m"\nlifetime = "1h"\n\n'
            f'{extra}\n'
            f'[[schools]]\nid = "oakfield"\nname = "Oakfield Primary School"\ndomains = ["{DOMAIN}"]\n'
            f'head_of_school = "{HEAD}"\noffice = "{OFFICE}"\noffice_phone = "0113 496 0000"\ndsl = "{DSL}"\n'
            f'{school_extra}\n' + (calendar if calendar is not None else always_open()))
    path = directory / "config.toml"
    path.write_text(text)
    return path


def message(sender: str = "Priya Patel <mum.patel@example.com>", to: str = STAFF, subject: str = "Reading book",
            body: str = "Hello, could Maya have a new reading book please?\n", *, headers: dict[str, str] | None = None,
            date: datetime | None = None, msgid: str | None = None) -> EmailMessage:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = to
    m["Subject"] = subject
    m["Date"] = format_datetime(date) if date else "Tue, 24 Nov 2026 10:00:00 +0000"
    m["Message-ID"] = msgid or make_msgid(domain="parent.example")
    for key, value in (headers or {}).items():
        m[key] = value
    m.set_content(body)
    return m


def wire(m: EmailMessage | bytes) -> bytes:
    data = m if isinstance(m, bytes) else m.as_bytes(policy=default_policy.clone(linesep="\r\n"))
    return data


@dataclass
class Received:
    mail_from: str
    rcpts: list[str]
    data: bytes
    mail_options: list[str] = field(default_factory=list)

    @property
    def message(self) -> Any:
        return message_from_bytes(self.data, policy=default_policy)


class Sink:
    """An aiosmtpd server standing in for the school's real mail server; keeps every envelope."""

    def __init__(self, port: int | None = None, *, smtputf8: bool = False) -> None:
        self.received: list[Received] = []
        self.defer = False
        self.lock = threading.Lock()
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if outer.defer:
                    return "451 4.3.0 try again later"
                with outer.lock:
                    outer.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                                   bytes(envelope.original_content), list(envelope.mail_options)))
                return "250 OK"

        self.port = port or free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, server_hostname="sink.test",
                                     enable_SMTPUTF8=smtputf8)

    def start(self) -> "Sink":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if address in r.rcpts]

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)


@dataclass
class InProcessGateway:
    """The daemon's real parts (SMTP listener, inbox, workers) on the test's loop, with a fixed clock.

    Tests move mail through the pipeline with `settle()` instead of sleeping.
    """

    config_path: Path
    clock: FixedClock
    imap: bool = False
    rt: Runtime = field(init=False)
    port: int = field(init=False)

    async def start(self) -> "InProcessGateway":
        config, rules = load_all(self.config_path)
        self.rt = build_runtime(config, rules, clock=self.clock)
        self.port = config.smtp.port
        self.inbox = Inbox(self.rt.db, self.clock)
        self.inbox.start()
        self.verifier = RecipientVerifier(lambda: self.rt.config, self.clock)
        self.server = await start_server(lambda: self.rt.config, self.inbox, verifier=self.verifier)
        self.transport = delivery_transport(config)
        self.triage = TriageWorker(self.rt)
        self.imap_mode = None
        mover = None
        if self.imap:
            from gateway.imapmode import ImapMode, make_mover
            self.imap_mode = ImapMode(self.rt)
            mover = make_mover(self.rt, self.imap_mode.actions)
            self.imap_mode.start()
        self.delivery = DeliveryWorker(self.rt, self.transport, mover=mover)
        # As in the daemon: triage hands the rows it writes straight to delivery.
        self.rt.hand_over = self.delivery.hand_over
        self.rt.wake_delivery = self.delivery.wake
        return self

    async def settle(self) -> None:
        """Triage, release what is due, and attempt every due delivery, until nothing moves."""
        for _ in range(50):
            moved = await self.triage.run_until_idle()
            moved += await self.rt.db.run(lambda s: release_due(s, self.rt))
            moved += await self.delivery.run_until_idle()
            if not moved:
                return
        raise AssertionError("the pipeline did not settle")

    async def send(self, m: EmailMessage | bytes, *, mail_from: str = "mum.patel@example.com",
                   rcpts: list[str] | None = None) -> tuple[int, str]:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, timeout=30, start_tls=False,
                                 local_hostname="client.test")
        await client.connect()
        try:
            await client.mail(mail_from)
            for rcpt in rcpts or [STAFF]:
                await client.rcpt(rcpt)
            response = await client.data(wire(m))
            return response.code, response.message
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message
        finally:
            try:
                await client.quit()
            except aiosmtplib.SMTPException:
                client.close()

    def state_of(self, message_id: int) -> str:
        from gateway.store.models import MessageRow
        return str(self.rt.db.transact(lambda s: s.get(MessageRow, message_id).state))

    def messages(self) -> list[Any]:
        from sqlalchemy import select
        from gateway.store.models import MessageRow
        return self.rt.db.transact(lambda s: list(s.scalars(select(MessageRow).order_by(MessageRow.id))))

    def events(self, message_id: int) -> list[tuple[str | None, str]]:
        from sqlalchemy import select
        from gateway.store.models import EventRow
        return self.rt.db.transact(lambda s: [(e.from_state, e.to_state) for e in s.scalars(
            select(EventRow).where(EventRow.message == message_id).order_by(EventRow.id))])

    async def stop(self) -> None:
        if self.imap_mode is not None:
            await self.imap_mode.stop()
        self.server.close()
        await self.server.wait_closed()
        await self.inbox.stop()
        await self.transport.close()
        self.rt.db.close()


async def wait_for(predicate: Any, timeout: float = 10.0, step: float = 0.05) -> bool:
    """Poll a condition with a deadline (for work that crosses into another process or thread)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


def reply_json(handler: Any, status: int, body: object) -> None:
    """Answer an http.server request with a JSON body (the loopback token and introspection endpoints)."""
    payload = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)
