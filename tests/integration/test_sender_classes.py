"""Mail that is not from parents passes through untouched; strangers are not assumed to be parents."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.clock import FixedClock
from gateway.store.models import EventRow, MessageRow
from tests.conftest import utc
from tests.integration.dovecot import Dovecot, dovecot  # noqa: F401 - a fixture
from tests.support import DOMAIN, HEAD, OFFICE, STAFF, InProcessGateway, Sink, message, school_calendar, wait_for, \
    wire, write_config

FINANCE = f"finance@{DOMAIN}"
TRUST = "ceo@oakfield-trust.example.org"
SUPPLIER = "invoices@supplier.example"
FAMILIES = ("family_id,email,parent_name,child_name,year_group,school\n"
            "F-KHAN,amina.khan@example.com,Amina Khan,Zara Khan,Year 2,oakfield\n")
PASSTHROUGH = ('[schools.passthrough]\ndomains = ["oakfield-trust.example.org"]\n'
               f'recipients = ["{FINANCE}"]\n')
# Saturday 28 November 2026, 10:00: a weekend in term, so a parent's mail waits for Monday 08:00.
SATURDAY = utc(2026, 11, 28, 10, 0)
MONDAY_8AM = utc(2026, 11, 30, 8, 0)
HELD = "Held until school opens"


def import_families(cfg: Path) -> None:
    csv = cfg.parent / "families.csv"
    csv.write_text(FAMILIES)
    out = subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), "families", "import", str(csv)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


async def school(tmp_path: Path, sink: Sink, *, school_extra: str, database: str | None = None,
                 extra: str = "", at=SATURDAY) -> InProcessGateway:
    cfg = write_config(tmp_path, sink_port=sink.port, calendar=school_calendar(), database=database,
                       school_extra=school_extra, extra=extra)
    import_families(cfg)
    return await InProcessGateway(cfg, FixedClock(at)).start()


def rows(gw: InProcessGateway) -> dict[str, MessageRow]:
    """The stored messages by their first recipient's sender, for reading their standing."""
    return {r.mail_from: r for r in gw.messages()}


def event_reasons(gw: InProcessGateway, message_id: int) -> list[str]:
    return gw.rt.db.transact(lambda s: [e.reason for e in s.scalars(
        select(EventRow).where(EventRow.message == message_id).order_by(EventRow.id))])


PASSED = [(None, "received"), ("received", "triaged"), ("triaged", "queued"), ("queued", "delivered")]


async def test_staff_trust_and_supplier_mail_pass_through_untouched_at_the_weekend(tmp_path: Path, sink: Sink,
                                                                                 database_url: str) -> None:
    gw = await school(tmp_path, sink, school_extra='unknown_senders = "pass"\n' + PASSTHROUGH, database=database_url)
    try:
        staff = message(f"Mrs Palmer <{HEAD}>", STAFF, "Staff meeting", "Staff meeting moved to Thursday.\n")
        trust = message(f"Trust CEO <{TRUST}>", STAFF, "Visit", "I will visit on Tuesday.\n")
        supplier = message(f"Supplies Ltd <{SUPPLIER}>", OFFICE, "Invoice 1234", "Please find our invoice.\n")
        # A known family writing at the same moment is held: the school really is closed.
        family = message("amina.khan@example.com", STAFF, "Reading", "Could Zara have a new reading book?\n")
        for m, sender, rcpt in ((staff, HEAD, STAFF), (trust, TRUST, STAFF), (supplier, SUPPLIER, OFFICE),
                                (family, "amina.khan@example.com", STAFF)):
            assert (await gw.send(m, mail_from=sender, rcpts=[rcpt]))[0] == 250
        await gw.settle()

        # Delivered at once, exactly as sent apart from our trace header, and nobody acknowledged.
        for m, rcpt in ((staff, STAFF), (trust, STAFF), (supplier, OFFICE)):
            [got] = [r for r in sink.to(rcpt) if r.message["Message-ID"] == m["Message-ID"]]
            assert got.data.startswith(b"Received: from client.test") and got.data.endswith(wire(m))
        for sender in (HEAD, TRUST, SUPPLIER):
            assert sink.to(sender) == []

        stored = rows(gw)
        expect = {HEAD: ("internal", "internal-sender"), TRUST: ("internal", "internal-sender"),
                  SUPPLIER: ("unknown", "unknown-sender")}
        for sender, (sender_class, rule) in expect.items():
            row = stored[sender]
            assert row.state == "delivered" and row.route == "staff" and row.release_at is None
            assert row.sender_class == sender_class and row.flags == ["passthrough"]
            assert [r["rule"] for r in row.reasons or []] == [rule]
            # Not counted against anyone, and no thread kept.
            assert row.counted == 0 and row.thread_id is None
            assert gw.events(row.id) == PASSED
            triaged, queued = event_reasons(gw, row.id)[1:3]
            assert f"sender {sender_class}" in triaged and rule in triaged
            assert queued == "passed through untouched"

        # The operator sees why: `parentgate show` names the class and the passthrough reason.
        shown = subprocess.run([sys.executable, "-m", "gateway", "--config", str(gw.config_path), "show",
                                str(stored[HEAD].id)], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert "route staff, sender internal" in shown.stdout and "reason internal-sender" in shown.stdout

        held = stored["amina.khan@example.com"]
        assert held.state == "held" and held.release_at == MONDAY_8AM and held.sender_class == "family"
        assert held.counted == 1 and sink.to(STAFF) and len(sink.to("amina.khan@example.com")) == 1
        assert "Dear parent or carer," in sink.to("amina.khan@example.com")[0].message.get_body(
            ("plain",)).get_content()
    finally:
        await gw.stop()


async def test_colleagues_and_the_trusts_mail_is_never_counted_towards_the_head(tmp_path: Path, sink: Sink) -> None:
    # Tuesday 24 November 2026, 10:00: open, so only the counts could send anything to the Head.
    gw = await school(tmp_path, sink, school_extra=PASSTHROUGH, at=utc(2026, 11, 24, 10, 0),
                      extra="[limits]\nfamily_messages_per_half_term = 2\nthread_messages = 2\n")
    try:
        for sender in (HEAD, TRUST):
            for i in range(4):
                m = message(sender, STAFF, "Rota", f"Rota change number {i}.\n")
                assert (await gw.send(m, mail_from=sender))[0] == 250
                await gw.settle()
        assert len(sink.to(STAFF)) == 8
        # No review summary to the Head: the limits (2 a half-term, 2 a thread) never applied.
        assert sink.to(HEAD) == []
        assert all(r.state == "delivered" and r.counted == 0 for r in gw.messages())
        # A parent's third message in the same half-term does reach the limit: the limits are live.
        for i in range(3):
            m = message("amina.khan@example.com", STAFF, f"Question {i}", f"Question number {i}.\n")
            assert (await gw.send(m, mail_from="amina.khan@example.com"))[0] == 250
            await gw.settle()
        assert len(sink.to(STAFF)) == 10 and len(sink.to(HEAD)) == 1
    finally:
        await gw.stop()


async def test_mail_to_a_passthrough_recipient_is_delivered_at_once_and_a_stranger_is_dear_sender(
        tmp_path: Path, sink: Sink) -> None:
    gw = await school(tmp_path, sink, school_extra=PASSTHROUGH)
    try:
        stranger = "someone@example.net"
        invoice = message(stranger, FINANCE, "Dinner money", "Paid by bank transfer.\n")
        assert (await gw.send(invoice, mail_from=stranger, rcpts=[FINANCE]))[0] == 250
        await gw.settle()
        assert len(sink.to(FINANCE)) == 1 and sink.to(stranger) == []
        [row] = gw.messages()
        assert row.state == "delivered" and row.sender_class == "unknown" and row.counted == 0
        assert [r["rule"] for r in row.reasons or []] == ["passthrough-recipient"]

        # The same stranger to a teacher is treated as a parent (the default), held, and acknowledged
        # without being assumed to be one.
        note = message(stranger, STAFF, "Maya", "Is Maya's PE kit needed on Monday?\n")
        assert (await gw.send(note, mail_from=stranger))[0] == 250
        await gw.settle()
        assert sink.to(STAFF) == []
        [ack] = sink.to(stranger)
        body = ack.message.get_body(("plain",)).get_content()
        assert body.startswith("Dear sender,")
        assert "parent or carer" not in body and "your child" not in body
        second = gw.messages()[1]
        assert second.state == "held" and second.sender_class == "unknown" and second.counted == 1
        gw.clock.advance(MONDAY_8AM - SATURDAY + timedelta(minutes=1))
        await gw.settle()
        assert len(sink.to(STAFF)) == 1
    finally:
        await gw.stop()


def test_triage_json_says_which_sender_class_applied(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, calendar=school_calendar(), school_extra=PASSTHROUGH)
    import_families(cfg)
    files = {
        "internal": message(f"Mrs Palmer <{HEAD}>", STAFF, "Rota", "Rota change.\n"),
        "trust": message(f"<{TRUST}>", STAFF, "Visit", "Visit on Tuesday.\n"),
        "family": message("Amina Khan <amina.khan@example.com>", STAFF, "Reading", "A new book please.\n"),
        "unknown": message("someone@example.net", STAFF, "PE", "Is PE kit needed?\n"),
    }
    paths = []
    for name, m in files.items():
        path = tmp_path / f"{name}.eml"
        path.write_bytes(wire(m))
        paths.append(str(path))
    out = subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), "triage", "--at",
                          SATURDAY.isoformat(), "--json", *paths], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = {Path(row["file"]).stem: row for row in map(json.loads, out.stdout.splitlines())}
    contract = {"file", "route", "deliver_at", "tone", "flags", "reasons", "acknowledge", "family"}
    assert all(contract <= set(row) for row in got.values())
    assert {name: row["sender_class"] for name, row in got.items()} == {
        "internal": "internal", "trust": "internal", "family": "family", "unknown": "unknown"}
    for name in ("internal", "trust"):
        assert got[name]["deliver_at"] is None and got[name]["acknowledge"] is False
        assert got[name]["flags"] == ["passthrough"] and got[name]["route"] == "staff"
    for name in ("family", "unknown"):
        assert got[name]["deliver_at"] == MONDAY_8AM.isoformat() and got[name]["acknowledge"] is True
    assert got["family"]["family"] == "F-KHAN"


@pytest.mark.dovecot
@pytest.mark.timeout(120)
async def test_in_imap_mode_a_colleagues_mail_stays_in_the_inbox_while_a_parents_is_held(tmp_path: Path, sink: Sink,
                                                                                         dovecot: Dovecot) -> None:
    from imapclient import IMAPClient

    def exists(folder: str) -> int:
        with IMAPClient("127.0.0.1", port=dovecot.port, ssl=False, timeout=10) as c:
            c.login("alice", dovecot.users["alice"])
            return int(c.select_folder(folder, readonly=True)[b"EXISTS"]) if c.folder_exists(folder) else -1

    mailbox = (f'[[imap.mailboxes]]\nname = "alice"\nschool = "oakfield"\nhost = "127.0.0.1"\n'
               f'port = {dovecot.port}\ntls = "none"\nusername = "alice"\npassword = "{dovecot.users["alice"]}"\n'
               f'backfill_since = 2020-01-01\n')
    cfg = write_config(tmp_path, sink_port=sink.port, calendar=school_calendar(), extra=mailbox)
    gw = await InProcessGateway(cfg, FixedClock(SATURDAY), imap=True).start()
    try:
        assert await wait_for(lambda: exists(HELD) == 0, 10), "the held folder is created on connect"
        with IMAPClient("127.0.0.1", port=dovecot.port, ssl=False, timeout=10) as c:
            c.login("alice", dovecot.users["alice"])
            c.append("INBOX", wire(message(f"Mrs Palmer <{HEAD}>", f"alice@{DOMAIN}", "Rota", "Rota change.\n")))
            c.append("INBOX", wire(message("someone@example.net", f"alice@{DOMAIN}", "PE kit", "PE on Monday?\n")))

        async def both_done() -> bool:
            await gw.settle()
            return len(gw.messages()) == 2 and exists(HELD) == 1

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not await both_done():
            assert loop.time() < deadline, "the two messages were not triaged and placed"
            await asyncio.sleep(0.1)
        assert exists("INBOX") == 1
        by_class = {r.sender_class: r for r in gw.messages()}
        assert by_class["internal"].state == "delivered" and by_class["unknown"].state == "held"
        # Only the stranger is acknowledged, as a sender, not as a parent.
        assert sink.to(HEAD) == [] and len(sink.to("someone@example.net")) == 1
        assert "Dear sender," in sink.to("someone@example.net")[0].message.get_body(("plain",)).get_content()
    finally:
        await gw.stop()
