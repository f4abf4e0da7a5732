"""IMAP mode gentle with the server (issue #14), against a real Dovecot and a tiny fake server:

- moves run on the watcher's own connection, so the server sees one connection per mailbox;
- connections open a bounded number at a time;
- a server restart spreads the reconnects over time (full jitter from a seeded random source);
- a server that greets with BYE ("too many connections") is backed off from, longer than a plain failure.

The scale itself (hundreds of mailboxes) is bench/imap_scale.py's; these use a handful.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from imapclient import IMAPClient

from gateway.act.mailbox import ImapSession, MailboxError, MessageNotFoundError, MoveRequest, uid_set
from gateway.clock import FixedClock
from gateway.config import MailboxConfig
from gateway.ingest.imap import THROTTLE_FACTOR, MailboxWatcher
from tests.conftest import utc
from tests.integration.dovecot import Dovecot, dovecot_binary, free_port
from tests.integration.test_imap_session import HELD, REVIEW, MemoryPort, config, eventually, message, sha
from tests.support import DOMAIN, InProcessGateway, Sink, school_calendar, wait_for, wire, write_config
from tests.support import message as parent_message

pytestmark = [pytest.mark.dovecot, pytest.mark.timeout(120)]
SATURDAY = utc(2026, 11, 28, 11, 0)
USERS = {f"teacher{n}": f"pass{n}" for n in range(1, 5)}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Dovecot]:
    if dovecot_binary() is None:
        pytest.skip("dovecot is not installed (apt-get install -y dovecot-imapd)")
    dovecot = Dovecot(tmp_path / "dovecot", free_port(), users=dict(USERS))
    dovecot.start()
    try:
        yield dovecot
    finally:
        dovecot.cleanup()


def count(server: Dovecot, user: str, folder: str) -> int:
    with IMAPClient(server.host, port=server.port, ssl=False, timeout=10) as client:
        client.login(user, server.users[user])
        if not client.folder_exists(folder):
            return -1
        return int(client.select_folder(folder, readonly=True)[b"EXISTS"])


class Recorder:
    """A session factory that records when each connection attempt starts and how many are opening at once."""

    def __init__(self, box: MailboxConfig, log: list[tuple[str, float]], lock: threading.Lock,
                 opening: list[int]) -> None:
        self.box, self.log, self.lock, self.opening = box, log, lock, opening

    def __call__(self) -> ImapSession:
        recorder = self

        class Recorded(ImapSession):
            def connect(self) -> None:
                with recorder.lock:
                    recorder.log.append((recorder.box.name, time.monotonic()))
                    recorder.opening[0] += 1
                    recorder.opening[1] = max(recorder.opening[1], recorder.opening[0])
                try:
                    time.sleep(0.05)  # a slow server's greeting and login, so that openings overlap
                    super().connect()
                finally:
                    with recorder.lock:
                        recorder.opening[0] -= 1

        return Recorded(self.box)


@asynccontextmanager
async def watching(watchers: list[MailboxWatcher]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(w.run()) for w in watchers]
    try:
        yield
    finally:
        await asyncio.wait_for(asyncio.gather(*(w.stop() for w in watchers)), 15)
        await asyncio.gather(*tasks)


def test_uid_sets_collapse_runs() -> None:
    assert uid_set([12, 4, 9, 10, 7, 11]) == "4,7,9:12"
    assert uid_set([5]) == "5" and uid_set([1, 2, 3]) == "1:3" and uid_set([3, 3, 1]) == "1,3"


async def test_moves_run_on_the_watchers_connection_so_the_server_sees_one_connection_per_mailbox(
        tmp_path: Path, sink: Sink, server: Dovecot) -> None:
    mailboxes = "".join(
        f'[[imap.mailboxes]]\nname = "{user}"\nschool = "oakfield"\nhost = "127.0.0.1"\nport = {server.port}\n'
        f'tls = "none"\nusername = "{user}"\npassword = "{password}"\n\n' for user, password in USERS.items())
    cfg = write_config(tmp_path, sink_port=sink.port, calendar=school_calendar(),
                       extra="[imap]\nconnect_concurrency = 2\n\n" + mailboxes)
    gw = await InProcessGateway(cfg, FixedClock(SATURDAY), imap=True).start()
    try:
        assert gw.imap_mode is not None
        assert await wait_for(lambda: all(w.state == "idle" for w in gw.imap_mode.watchers), 20)
        for user, password in USERS.items():
            with IMAPClient(server.host, port=server.port, ssl=False, timeout=10) as client:
                client.login(user, password)
                for n in range(3):
                    client.append("INBOX", wire(parent_message(to=f"{user}@{DOMAIN}", subject=f"PE kit {n}")))

        async def all_held() -> bool:
            await gw.settle()
            return all(count(server, user, HELD) == 3 and count(server, user, "INBOX") == 0 for user in USERS)

        deadline = time.monotonic() + 30
        while not await all_held():
            assert time.monotonic() < deadline, "closed-school mail was not all moved to the held folder"
            await asyncio.sleep(0.1)
        assert {row.state for row in gw.messages()} == {"held"} and len(gw.messages()) == 3 * len(USERS)
        # Every move went over the watcher's connection: the server counts one connection per mailbox (our
        # own checks above have logged out; the server may take a moment to count them out).
        assert await wait_for(lambda: server.who() == {user: 1 for user in USERS}, 10), server.who()
    finally:
        await gw.stop()


async def test_connections_open_a_bounded_number_at_a_time(server: Dovecot) -> None:
    attempts: list[tuple[str, float]] = []
    lock, opening = threading.Lock(), [0, 0]
    gate = asyncio.Semaphore(2)
    port = MemoryPort()
    watchers = []
    for user in USERS:
        box = config(server, user)
        watchers.append(MailboxWatcher(box, port, now=lambda: SATURDAY, connect_gate=gate,
                                       session_factory=Recorder(box, attempts, lock, opening)))
    async with watching(watchers):
        await eventually(lambda: all(w.state == "idle" for w in watchers), "all idle")
    assert len(attempts) == len(USERS)
    assert opening[1] == 2, f"at most 2 connections open at once, and the gate was used: {opening[1]}"


async def test_a_server_restart_spreads_the_reconnects_over_time(server: Dovecot) -> None:
    attempts: list[tuple[str, float]] = []
    lock, opening = threading.Lock(), [0, 0]
    rng = random.Random(14)
    port = MemoryPort()
    watchers = []
    for user in USERS:
        box = config(server, user)
        watchers.append(MailboxWatcher(box, port, now=lambda: SATURDAY, backoff=(1.0, 4.0), rng=rng,
                                       session_factory=Recorder(box, attempts, lock, opening)))
    async with watching(watchers):
        await eventually(lambda: all(w.state == "idle" for w in watchers), "all idle")
        first = len(attempts)
        down = time.monotonic()
        await asyncio.to_thread(server.restart)
        up = time.monotonic()
        await eventually(lambda: all(ok for ok, _ in (port.reports[w.mailbox.name][-1] for w in watchers))
                         and all(w.state == "idle" for w in watchers), "every mailbox back", timeout=30)
        # Reconnected after the restart: the last successful attempt of each mailbox.
        back = {}
        for name, at in attempts[first:]:
            back[name] = at
    times = sorted(back.values())
    assert len(times) == len(USERS)
    print(f"restart took {up - down:.2f}s; reconnects at "
          + ", ".join(f"{t - down:+.2f}s" for t in times))
    # Not lockstep: the reconnections are spread over a good part of a second, not bunched together
    # (retrying on one schedule, they would all land within a few milliseconds of each other).
    assert times[-1] - times[0] >= 0.3, times
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) >= 0.1
    # And not much later than the backoff's cap after the server was back (slack for a loaded machine).
    assert times[-1] - up <= 4.0 + 10.0
    assert port.duplicates[watchers[0].mailbox.name] == 0


class ByeServer:
    """A fake IMAP server on 127.0.0.1 that answers every connection with `* BYE Too many connections`."""

    def __init__(self, greeting: bytes = b"* BYE Too many connections from this IP, try again later\r\n") -> None:
        self.greeting = greeting
        self.accepted: list[float] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.monotonic())
            with conn:
                conn.sendall(self.greeting)

    def close(self) -> None:
        self.sock.close()


async def test_a_mailbox_answering_bye_on_connect_backs_off_longer(server: Dovecot) -> None:
    bye = ByeServer()
    try:
        box = config(server, "teacher1", port=bye.port)
        port = MemoryPort()
        first, cap = 0.05, 5.0
        w = MailboxWatcher(box, port, now=lambda: SATURDAY, backoff=(first, cap), rng=random.Random(14))
        async with watching([w]):
            await eventually(lambda: len(bye.accepted) >= 3, "three attempts", timeout=10)
        ok, detail = port.reports[box.name][0]
        assert not ok and "refused the connection" in detail and "Too many connections" in detail
        gaps = [b - a for a, b in zip(bye.accepted, bye.accepted[1:])]
        print("BYE attempts' gaps: " + ", ".join(f"{g:.2f}s" for g in gaps))
        # Throttled: at least half of 8x the ordinary backoff, doubling: >= 0.2 s, then >= 0.4 s; an
        # ordinary failure would retry after at most 0.05 s, then 0.1 s.
        assert gaps[0] >= first * THROTTLE_FACTOR / 2 - 0.02
        assert gaps[1] >= first * THROTTLE_FACTOR - 0.02
        # Moves for it fail at once (temporarily, for the outbox to retry) instead of waiting for it.
        started = time.monotonic()
        with pytest.raises(MailboxError) as refused:
            await w.move(MoveRequest("<m1@parent.test>", sha(message(1)), "INBOX", HELD, False))
        assert refused.value.temporary and time.monotonic() - started < 1
    finally:
        bye.close()


def test_full_jitter_draws_below_the_ceiling_and_throttling_waits_longer(server: Dovecot) -> None:
    """The same seeded jitter: an ordinary failure waits a uniform draw in [0, ceiling) (full jitter) of a
    doubling ceiling; a throttled one at least half of 8x that ceiling."""
    box = config(server, "teacher1")
    w = MailboxWatcher(box, MemoryPort(), now=lambda: SATURDAY, backoff=(1.0, 300.0), rng=random.Random(14))
    delays = [w._retry_after(MailboxError(True, "refused")) for _ in range(6)]
    assert all(0 <= d < min(2 ** n, 300) for n, d in enumerate(delays)), delays
    assert len({round(d, 6) for d in delays}) == len(delays)
    w2 = MailboxWatcher(box, MemoryPort(), now=lambda: SATURDAY, backoff=(1.0, 300.0), rng=random.Random(14))
    throttled = [w2._retry_after(MailboxError(True, "BYE", throttled=True)) for _ in range(6)]
    assert all(min(8 * 2 ** n, 300) / 2 <= d <= min(8 * 2 ** n, 300) for n, d in enumerate(throttled)), throttled
    # A wrong password waits about the cap.
    assert 150 <= w2._retry_after(MailboxError(False, "authentication failed")) <= 300


async def test_moves_are_batched_into_one_uid_move_per_destination(server: Dovecot,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="gateway.act.mailbox")
    box = config(server, "teacher1")
    port = MemoryPort()
    w = MailboxWatcher(box, port, now=lambda: SATURDAY)
    async with watching([w]):
        await eventually(lambda: w.state == "idle", "idle")
        with IMAPClient(server.host, port=server.port, ssl=False, timeout=10) as client:
            client.login("teacher1", server.users["teacher1"])
            for n in range(1, 7):
                client.append("INBOX", message(n))
        await eventually(lambda: len(port.ids(box.name)) == 6, "six stored")
        await eventually(lambda: w.state == "idle", "idle again")
        requests = [MoveRequest(f"<m{n}@parent.test>", sha(message(n)), "INBOX", HELD, False) for n in (1, 2, 3, 5)]
        await asyncio.gather(*(w.move(r) for r in requests))
        assert "moved 4 message(s) (UID 1:3,5) from 'INBOX' to 'Held until school opens'" in caplog.text
        # Moving again is a no-op (already there); a message in neither folder is reported.
        await w.move(requests[0])
        with pytest.raises(MessageNotFoundError):
            await w.move(MoveRequest("<gone@parent.test>", sha(b"gone"), "INBOX", HELD, False))
        # A destination deleted by hand since the connection last listed it ([TRYCREATE]) is recreated.
        with IMAPClient(server.host, port=server.port, ssl=False, timeout=10) as client:
            client.login("teacher1", server.users["teacher1"])
            client.delete_folder(REVIEW)
        await w.move(MoveRequest("<m4@parent.test>", sha(message(4)), "INBOX", REVIEW, False))
    assert count(server, "teacher1", HELD) == 4 and count(server, "teacher1", REVIEW) == 1
    assert count(server, "teacher1", "INBOX") == 1
    assert server.who().get("teacher1", 0) == 0


class SlowPort(MemoryPort):
    """A store that takes a while per batch, as a busy database does during a large burst or backfill."""

    async def store_fetched(self, mailbox, school, folder, uidvalidity, messages, last_uid):  # noqa: ANN001,ANN201
        await asyncio.sleep(0.15)
        return await super().store_fetched(mailbox, school, folder, uidvalidity, messages, last_uid)


async def test_judged_mail_is_moved_before_the_rest_of_a_large_sync_is_fetched(server: Dovecot) -> None:
    """Fresh mail first: a move requested while the watcher is still fetching a backlog (here 400
    messages, 50 per FETCH, each batch slow to store) is made before the next FETCH, not after the sync."""
    from datetime import date
    total = 400
    with IMAPClient(server.host, port=server.port, ssl=False, timeout=30) as client:
        client.login("teacher1", server.users["teacher1"])
        client.multiappend("INBOX", [message(n) for n in range(1, total + 1)])
    box = config(server, "teacher1", backfill_since=date(2000, 1, 1))
    port = SlowPort()
    w = MailboxWatcher(box, port, now=lambda: SATURDAY)
    async with watching([w]):
        await eventually(lambda: len(port.ids(box.name)) >= 50, "the first batch stored")
        started = time.monotonic()
        await w.move(MoveRequest("<m1@parent.test>", sha(message(1)), "INBOX", HELD, False))
        waited = time.monotonic() - started
        stored_when_moved = len(port.ids(box.name))
        await eventually(lambda: len(port.ids(box.name)) == total and w.state == "idle", "the whole backlog",
                         timeout=60)
    print(f"moved after {waited:.2f}s with {stored_when_moved}/{total} stored")
    assert stored_when_moved <= 150, "the move waited for the backlog"
    assert count(server, "teacher1", HELD) == 1 and count(server, "teacher1", "INBOX") == total - 1
    assert port.duplicates[box.name] == 0


def test_imap_settings_have_defaults_and_are_checked(tmp_path: Path) -> None:
    from gateway.config import ConfigError, load
    base = ('[gateway]\npostmaster = "pm@school.example"\n[[schools]]\nid = "s"\ndomains = ["school.example"]\n'
            'head_of_school = "head@school.example"\noffice = "office@school.example"\ndsl = "dsl@school.example"\n')
    path = tmp_path / "c.toml"
    path.write_text(base)
    settings = load(path).imap
    assert (settings.connect_concurrency, settings.reconnect_max_seconds) == (20, 300)
    path.write_text("[imap]\nconnect_concurrency = 5\nreconnect_max_seconds = 60\n" + base)
    settings = load(path).imap
    assert (settings.connect_concurrency, settings.reconnect_max_seconds) == (5, 60)
    path.write_text("[imap]\nconnect_concurrency = 0\n" + base)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.key == "imap.connect_concurrency" and "at least 1" in err.value.problem


async def test_a_move_cuts_a_polling_wait_short_on_a_server_without_idle(server: Dovecot) -> None:
    from datetime import date, timedelta
    with IMAPClient(server.host, port=server.port, ssl=False, timeout=30) as client:
        client.login("teacher1", server.users["teacher1"])
        client.append("INBOX", message(1))
    box = config(server, "teacher1", backfill_since=date(2000, 1, 1), poll_interval=timedelta(seconds=30))
    port = MemoryPort()
    w = MailboxWatcher(box, port, now=lambda: SATURDAY, session_factory=lambda: ImapSession(box, disable=["IDLE"]))
    async with watching([w]):
        await eventually(lambda: w.state == "polling" and len(port.ids(box.name)) == 1, "polling")
        started = time.monotonic()
        await w.move(MoveRequest("<m1@parent.test>", sha(message(1)), "INBOX", HELD, False))
        assert time.monotonic() - started < 5, "the move waited for the next poll"
    assert count(server, "teacher1", HELD) == 1


async def test_a_move_asked_for_before_the_watcher_has_connected_waits_for_it(server: Dovecot) -> None:
    """At start-up the delivery worker runs before the watchers connect: moves pending from before a
    restart wait for their mailbox's connection rather than fail and wait for the outbox's retry."""
    with IMAPClient(server.host, port=server.port, ssl=False, timeout=30) as client:
        client.login("teacher1", server.users["teacher1"])
        client.append("INBOX", message(1))
    box = config(server, "teacher1")
    w = MailboxWatcher(box, MemoryPort(), now=lambda: SATURDAY)
    move = asyncio.create_task(w.move(MoveRequest("<m1@parent.test>", sha(message(1)), "INBOX", HELD, False)))
    await asyncio.sleep(0.2)
    assert not move.done()
    async with watching([w]):
        await asyncio.wait_for(move, 15)
    assert count(server, "teacher1", HELD) == 1
    # A watcher stopped before it ever ran stops at once.
    idle = MailboxWatcher(box, MemoryPort(), now=lambda: SATURDAY)
    await asyncio.wait_for(idle.stop(), 1)
