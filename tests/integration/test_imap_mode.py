"""IMAP mode end to end against a real Dovecot: the daemon's watcher, store, triage and in-place moves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from imapclient import IMAPClient

from gateway.clock import FixedClock
from gateway.services import release, review_release
from tests.conftest import utc
from tests.integration.dovecot import Dovecot, dovecot  # noqa: F401  (fixture)
from tests.support import DOMAIN, HEAD, InProcessGateway, Sink, message, school_calendar, wait_for, wire, write_config

pytestmark = [pytest.mark.dovecot, pytest.mark.timeout(120)]
HELD, REVIEW = "Held until school opens", "With the Head of School"
SATURDAY = utc(2026, 11, 28, 11, 0)
TUESDAY = utc(2026, 11, 24, 10, 0)


def mailbox_toml(server: Dovecot, user: str, password: str, name: str | None = None) -> str:
    return (f'[[imap.mailboxes]]\nname = "{name or user}"\nschool = "oakfield"\nhost = "127.0.0.1"\n'
            f'port = {server.port}\ntls = "none"\nusername = "{user}"\npassword = "{password}"\n'
            f'backfill_since = 2020-01-01\n\n')


def imap(server: Dovecot, user: str = "alice") -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=10)
    client.login(user, server.users[user])
    return client


def count(server: Dovecot, folder: str, user: str = "alice") -> int:
    with imap(server, user) as c:
        if not c.folder_exists(folder):
            return -1
        return int(c.select_folder(folder, readonly=True)[b"EXISTS"])


def unseen(server: Dovecot, folder: str) -> list[int]:
    with imap(server) as c:
        c.select_folder(folder, readonly=True)
        return list(c.search(["UNSEEN"]))


async def settle_until(gw: InProcessGateway, predicate, timeout: float = 10.0) -> bool:
    async def step() -> bool:
        await gw.settle()
        return bool(predicate())

    import asyncio
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await step():
            return True
        await asyncio.sleep(0.1)
    return await step()


@pytest.fixture
async def closed_school(tmp_path: Path, sink: Sink, dovecot: Dovecot):
    cfg = write_config(tmp_path, sink_port=sink.port, calendar=school_calendar(),
                       extra=mailbox_toml(dovecot, "alice", "alicepass") + "[limits]\nlong_message_words = 60\n")
    gw = await InProcessGateway(cfg, FixedClock(SATURDAY), imap=True).start()
    yield gw
    await gw.stop()


async def test_mail_arriving_while_closed_moves_to_the_held_folder_and_back_unread_at_release(closed_school, dovecot):
    gw = closed_school
    assert await wait_for(lambda: count(dovecot, HELD) == 0, 10), "the held folder is created on connect"
    with imap(dovecot) as c:
        c.append("INBOX", wire(message(to=f"alice@{DOMAIN}", subject="PE kit")))
    assert await settle_until(gw, lambda: count(dovecot, HELD) == 1 and count(dovecot, "INBOX") == 0, 3.0)
    [row] = gw.messages()
    assert row.state == "held" and row.release_at == utc(2026, 11, 30, 8, 0)
    assert release(gw.rt, None) == [row.id]
    assert await settle_until(gw, lambda: count(dovecot, "INBOX") == 1 and count(dovecot, HELD) == 0)
    assert len(unseen(dovecot, "INBOX")) == 1
    assert gw.state_of(row.id) == "delivered"


@pytest.mark.parametrize("body", [
    "I am writing about several matters this term. " * 30,
    "You are a useless, incompetent excuse for a teacher. Sort it out by Friday or I go to the papers.",
], ids=["long", "hostile"])
async def test_long_or_hostile_message_moves_to_the_review_folder_and_the_head_gets_a_summary(closed_school, dovecot,
                                                                                           sink, body):
    gw = closed_school
    gw.clock.set(TUESDAY)
    assert await wait_for(lambda: count(dovecot, REVIEW) == 0, 10)
    with imap(dovecot) as c:
        c.append("INBOX", wire(message(sender="Parent <parent2@example.com>", to=f"alice@{DOMAIN}",
                                       subject="Several matters", body=body)))
    assert await settle_until(gw, lambda: count(dovecot, REVIEW) == 1 and count(dovecot, "INBOX") == 0, 5.0)
    assert await settle_until(gw, lambda: len(sink.to(HEAD)) == 1)
    # The parent is acknowledged through the outbound route too.
    assert len(sink.to("parent2@example.com")) == 1
    [row] = gw.messages()
    assert row.state == "in_review"
    review_release(gw.rt, row.id, "head")
    assert await settle_until(gw, lambda: count(dovecot, "INBOX") == 1 and count(dovecot, REVIEW) == 0)
    assert gw.state_of(row.id) == "delivered"


async def test_a_mailbox_with_a_wrong_password_never_stalls_the_others(tmp_path, sink, dovecot):
    cfg = write_config(tmp_path, sink_port=sink.port, calendar=school_calendar(),
                       extra=mailbox_toml(dovecot, "alice", "alicepass")
                       + mailbox_toml(dovecot, "bob", "wrong-password"))
    gw = await InProcessGateway(cfg, FixedClock(SATURDAY), imap=True).start()
    try:
        assert await wait_for(lambda: count(dovecot, HELD) == 0, 10)
        with imap(dovecot) as c:
            c.append("INBOX", wire(message(to=f"alice@{DOMAIN}")))
        assert await settle_until(gw, lambda: count(dovecot, HELD) == 1, 5.0)
        out = subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), "imap", "status"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1
        assert "alice: ok" in out.stdout
        assert "bob: FAILING" in out.stdout
    finally:
        await gw.stop()


@pytest.fixture
async def open_school(tmp_path: Path, sink: Sink, dovecot: Dovecot):
    box = mailbox_toml(dovecot, "alice", "alicepass").replace('backfill_since = 2020-01-01\n',
                                                              'backfill_since = 2020-01-01\nfolder = "Parents"\n')
    cfg = write_config(tmp_path, sink_port=sink.port, extra=box)
    with imap(dovecot) as c:
        c.create_folder("Parents")
    gw = await InProcessGateway(cfg, FixedClock(TUESDAY), imap=True).start()
    yield gw
    await gw.stop()


def append(server: Dovecot, folder: str, raw: bytes) -> None:
    with imap(server) as c:
        c.append(folder, raw)


async def test_dovecot_restart_during_idle_reconnects_and_processes_nothing_twice(open_school, dovecot, sink):
    gw = open_school
    first = wire(message(sender="P One <one@example.com>", to=f"alice@{DOMAIN}", subject="One"))
    assert await wait_for(lambda: count(dovecot, HELD) == 0, 10)
    append(dovecot, "Parents", first)
    assert await settle_until(gw, lambda: len(gw.messages()) == 1 and len(sink.to("one@example.com")) == 1)
    dovecot.restart()
    second = wire(message(sender="P Two <two@example.com>", to=f"alice@{DOMAIN}", subject="Two"))
    append(dovecot, "Parents", second)
    assert await settle_until(gw, lambda: len(gw.messages()) == 2 and len(sink.to("two@example.com")) == 1, 30)
    await gw.settle()
    assert len(gw.messages()) == 2
    assert len(sink.to("one@example.com")) == 1
    assert count(dovecot, "Parents") == 2


async def test_uidvalidity_change_resyncs_without_duplicates_or_second_acknowledgements(open_school, dovecot, sink):
    gw = open_school
    raws = [wire(message(sender=f"P{i} <p{i}@example.com>", to=f"alice@{DOMAIN}", subject=f"S{i}")) for i in range(3)]
    assert await wait_for(lambda: count(dovecot, HELD) == 0, 10)
    for raw in raws:
        append(dovecot, "Parents", raw)
    assert await settle_until(gw, lambda: len(gw.messages()) == 3 and all(sink.to(f"p{i}@example.com")
                                                                          for i in range(3)))
    with imap(dovecot) as c:
        before = c.select_folder("Parents")[b"UIDVALIDITY"]
        c.unselect_folder() if hasattr(c, "unselect_folder") else c.close_folder()
        c.delete_folder("Parents")
        c.create_folder("Parents")
        for raw in raws:
            c.append("Parents", raw)
        after = c.select_folder("Parents", readonly=True)[b"UIDVALIDITY"]
    assert before != after
    fresh = wire(message(sender="P9 <p9@example.com>", to=f"alice@{DOMAIN}", subject="After"))
    append(dovecot, "Parents", fresh)
    # The new message proves the watcher re-synced the recreated folder; the three old ones are
    # recognised by Message-ID and content, so they are neither stored again nor acknowledged again.
    assert await settle_until(gw, lambda: len(sink.to("p9@example.com")) == 1, 30)
    await gw.settle()
    assert len(gw.messages()) == 4
    assert [len(sink.to(f"p{i}@example.com")) for i in range(3)] == [1, 1, 1]


def parentgate(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), *args], capture_output=True,
                          text=True, timeout=60)


def test_imap_test_reports_capabilities_or_says_clearly_what_is_wrong(tmp_path, dovecot):
    cfg = write_config(tmp_path, extra=mailbox_toml(dovecot, "alice", "alicepass")
                       + mailbox_toml(dovecot, "bob", "not-his-password"))
    good = parentgate(cfg, "imap", "test", "alice")
    assert good.returncode == 0, good.stderr
    assert "IDLE" in good.stdout and "INBOX" in good.stdout
    bad = parentgate(cfg, "imap", "test", "bob")
    assert bad.returncode == 1
    assert "authentication failed" in bad.stderr.lower()
    assert "not-his-password" not in bad.stderr + bad.stdout
    unknown = parentgate(cfg, "imap", "test", "carol")
    assert unknown.returncode != 0 and "no IMAP mailbox 'carol'" in unknown.stderr


def test_backfill_processes_history_deliberately_and_only_once(tmp_path, dovecot):
    box = mailbox_toml(dovecot, "alice", "alicepass").replace("backfill_since = 2020-01-01\n", "")
    cfg = write_config(tmp_path, extra=box)
    for i in range(3):
        append(dovecot, "INBOX", wire(message(sender=f"old{i}@example.com", to=f"alice@{DOMAIN}", subject=f"Old {i}")))
    first = parentgate(cfg, "imap", "backfill", "alice", "--since", "2020-01-01")
    assert first.returncode == 0, first.stderr
    assert "3 message(s) stored" in first.stdout
    again = parentgate(cfg, "imap", "backfill", "alice", "--since", "2020-01-01")
    assert again.returncode == 0 and "0 message(s) stored" in again.stdout


async def test_outgoing_mail_in_imap_mode_leaves_through_the_submission_server(tmp_path, dovecot):
    submission = Sink().start()
    try:
        cfg = write_config(tmp_path, extra=mailbox_toml(dovecot, "alice", "alicepass")
                           + f'[submission]\nhost = "127.0.0.1"\nport = {submission.port}\nstarttls = false\n')
        gw = await InProcessGateway(cfg, FixedClock(TUESDAY), imap=True).start()
        try:
            from gateway.imapmode import submission_transport
            gw.delivery.outbound = submission_transport(gw.rt.config)
            assert await wait_for(lambda: count(dovecot, HELD) == 0, 10)
            append(dovecot, "INBOX", wire(message(sender="P <p@example.com>", to=f"alice@{DOMAIN}")))
            assert await settle_until(gw, lambda: len(submission.to("p@example.com")) == 1, 10)
            # Nothing went out of the Maildir route: the acknowledgement left via submission only.
            assert not (tmp_path / "var" / "mail" / "p@example.com").exists()
            assert count(dovecot, "INBOX") == 1
        finally:
            await gw.stop()
    finally:
        submission.stop()
