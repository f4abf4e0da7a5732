"""The IMAP side against a real Dovecot: ImapSession, MailboxActions and MailboxWatcher with an in-memory port."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import urllib.parse
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from email.parser import BytesHeaderParser
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

from gateway.act.mailbox import ImapSession, MailboxError, MessageNotFoundError
from gateway.config import Credentials, MailboxConfig, OAuth2Config
from gateway.ingest.imap import FetchedMessage, MailboxActions, MailboxWatcher, backfill, open_session
from gateway.ingest.oauth import TokenError
from tests.integration.dovecot import Dovecot, dovecot, dovecot_binary, free_port  # noqa: F401  (fixture)
from tests.support import reply_json

pytestmark = pytest.mark.dovecot

HELD, REVIEW = "Held until school opens", "With the Head of School"
FAST = (0.05, 0.5)


def message(n: int, *, message_id: str | None = None, body: str = "body") -> bytes:
    mid = message_id if message_id is not None else f"<m{n}@parent.test>"
    header = f"Message-ID: {mid}\r\n" if mid else ""
    return (f"From: parent{n}@parent.test\r\nTo: teacher@school.test\r\nSubject: note {n}\r\n"
            f"{header}\r\n{body} {n}\r\n").encode()


def config(server: Dovecot, user: str = "alice", password: str | None = None, **changes: Any) -> MailboxConfig:
    box = MailboxConfig(
        name=f"{user}@{server.host}", school="st-marys", host=server.host, port=server.port, tls="none",
        credentials=Credentials(user, password or server.users[user], None), folder="INBOX",
        held_folder=HELD, review_folder=REVIEW, backfill_since=None, poll_interval=timedelta(seconds=60))
    return replace(box, **changes)


@contextmanager
def raw_client(server: Dovecot, user: str = "alice") -> Iterator[Any]:
    client = IMAPClient(server.host, port=server.port, ssl=False, timeout=10)
    client.login(user, server.users[user])
    try:
        yield client
    finally:
        client.logout()


def append(server: Dovecot, raw: bytes, folder: str = "INBOX", *, user: str = "alice",
           flags: Sequence[bytes] = (), when: datetime | None = None) -> None:
    with raw_client(server, user) as client:
        if not client.folder_exists(folder):
            # A watcher's ensure_folders may create it at the same moment.
            with suppress(IMAPClient.Error):
                client.create_folder(folder)
        client.append(folder, raw, flags=flags, msg_time=when)


def uids_in(server: Dovecot, folder: str, *criteria: str) -> list[int]:
    with raw_client(server) as client:
        client.select_folder(folder, readonly=True)
        return sorted(client.search(list(criteria) or ["ALL"]))


@pytest.fixture
def session(dovecot: Dovecot) -> Iterator[Callable[..., ImapSession]]:
    opened: list[ImapSession] = []

    def connect(**kwargs: Any) -> ImapSession:
        s = ImapSession(config(dovecot), **kwargs)
        opened.append(s)
        s.connect()
        return s

    yield connect
    for s in opened:
        s.logout()


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


# ---------------------------------------------------------------- ImapSession

def test_ensure_folders_creates_missing_folders_and_is_idempotent(session: Callable[..., ImapSession]) -> None:
    s = session()
    s.ensure_folders(["INBOX", HELD, REVIEW])
    s.ensure_folders([HELD, REVIEW])
    assert {"INBOX", HELD, REVIEW} <= set(s.list_folders())
    assert {"IDLE", "MOVE", "UIDPLUS"} <= s.capabilities()


def test_fetch_returns_raw_internaldate_and_flags_without_marking_seen(
        dovecot: Dovecot, session: Callable[..., ImapSession]) -> None:
    when = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
    append(dovecot, message(1), when=when)
    append(dovecot, message(2), flags=[b"\\Flagged"])
    s = session()
    s.select("INBOX")
    uids = s.uids_after(0)
    fetched = s.fetch(uids, batch=1)
    assert [m.raw for m in fetched] == [message(1), message(2)]
    assert fetched[0].internaldate == when
    assert fetched[1].flags == ("\\Flagged",)
    assert uids_in(dovecot, "INBOX", "SEEN") == []
    assert s.uids_after(uids[-1]) == []
    assert s.uids_since(date(2025, 3, 5)) == [uids[1]]


def test_idle_wait_sees_an_append_from_another_connection_within_3s(
        dovecot: Dovecot, session: Callable[..., ImapSession]) -> None:
    s = session()
    s.select("INBOX")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(s.idle_wait, 20.0)
        append(dovecot, message(1))
        appended = time.monotonic()
        assert waiting.result(timeout=3) is True
        assert time.monotonic() - appended < 3
    assert s.uids_after(0) == [1]


def test_idle_wait_reports_new_mail_announced_before_idle_began(
        dovecot: Dovecot, session: Callable[..., ImapSession]) -> None:
    s = session()
    s.select("INBOX")
    append(dovecot, message(1))
    # Dovecot answers this SEARCH from the old view and announces the new EXISTS
    # alongside; it does not repeat it when IDLE starts.
    s.uids_after(0)
    started = time.monotonic()
    assert s.idle_wait(20.0) is True
    assert time.monotonic() - started < 3
    assert s.uids_after(0) == [1]


def test_idle_wait_times_out_without_change_and_wake_cuts_it_short(session: Callable[..., ImapSession]) -> None:
    s = session()
    s.select("INBOX")
    assert s.idle_wait(0.2) is False
    threading.Timer(0.1, s.wake).start()
    started = time.monotonic()
    assert s.idle_wait(20.0) is False
    assert time.monotonic() - started < 5
    s.noop()


def test_move_uses_uid_move(dovecot: Dovecot, session: Callable[..., ImapSession]) -> None:
    append(dovecot, message(1))
    s = session()
    s.ensure_folders([HELD])
    s.select("INBOX")
    assert s.move(1, HELD) is True
    assert uids_in(dovecot, "INBOX") == [] and len(uids_in(dovecot, HELD)) == 1


def test_move_without_move_copies_then_expunges_only_that_uid(
        dovecot: Dovecot, session: Callable[..., ImapSession]) -> None:
    append(dovecot, message(1))
    append(dovecot, message(2), flags=[b"\\Deleted"])
    s = session(disable=["MOVE"])
    s.ensure_folders([HELD])
    s.select("INBOX")
    assert s.move(1, HELD) is True
    # The user's own \Deleted message is not expunged along with ours (RFC 4315 UID EXPUNGE).
    assert uids_in(dovecot, "INBOX") == [2]
    assert len(uids_in(dovecot, HELD, "UNDELETED")) == 1


def test_move_without_uidplus_leaves_the_source_flagged_deleted(
        dovecot: Dovecot, session: Callable[..., ImapSession]) -> None:
    append(dovecot, message(1))
    s = session(disable=["MOVE", "UIDPLUS"])
    s.ensure_folders([HELD])
    s.select("INBOX")
    assert s.move(1, HELD) is False
    assert uids_in(dovecot, "INBOX", "DELETED") == [1]
    assert s.find_uid("INBOX", "<m1@parent.test>", sha(message(1))) is None
    assert s.find_uid(HELD, "<m1@parent.test>", sha(message(1))) is not None


def test_move_to_a_missing_folder_fails_permanently_and_keeps_the_message(
        dovecot: Dovecot, session: Callable[..., ImapSession]) -> None:
    append(dovecot, message(1))
    s = session(disable=["MOVE"])
    s.select("INBOX")
    with pytest.raises(MailboxError) as failure:
        s.move(1, "No such folder")
    assert failure.value.temporary is False
    assert uids_in(dovecot, "INBOX", "UNDELETED") == [1]


def test_find_uid_uses_message_id_and_tells_duplicates_apart_by_hash(
        dovecot: Dovecot, session: Callable[..., ImapSession]) -> None:
    append(dovecot, message(1, message_id="<same@parent.test>", body="first"))
    append(dovecot, message(2, message_id="<same@parent.test>", body="second"))
    append(dovecot, message(3, message_id="<same@parent.test.extra>"))
    append(dovecot, message(4, message_id=""))
    s = session()
    assert s.find_uid("INBOX", "<m9@parent.test>", sha(b"x")) is None
    assert s.find_uid("INBOX", "<same@parent.test.extra>", "not-checked-when-unique") == 3
    second = message(2, message_id="<same@parent.test>", body="second")
    assert s.find_uid("INBOX", "<same@parent.test>", sha(second)) == 2
    assert s.find_uid("INBOX", None, sha(message(4, message_id=""))) == 4


def test_mark_unseen_clears_seen(dovecot: Dovecot, session: Callable[..., ImapSession]) -> None:
    append(dovecot, message(1), flags=[b"\\Seen"])
    s = session()
    uid = s.find_uid("INBOX", "<m1@parent.test>", sha(message(1)))
    assert uid is not None
    s.mark_unseen(uid)
    assert uids_in(dovecot, "INBOX", "UNSEEN") == [uid]


def test_wrong_password_is_a_permanent_authentication_error(dovecot: Dovecot) -> None:
    s = ImapSession(config(dovecot, password="wrong"))
    with pytest.raises(MailboxError) as failure:
        s.connect()
    s.logout()
    assert failure.value.temporary is False
    assert str(failure.value) == "authentication failed for alice@127.0.0.1: check password"


def test_unreachable_server_is_a_temporary_error() -> None:
    box = MailboxConfig("x", "s", "127.0.0.1", free_port(), "none", Credentials("u", "p", None),
                        "INBOX", HELD, REVIEW, None, timedelta(seconds=60))
    s = ImapSession(box, timeout_s=5)
    with pytest.raises(MailboxError) as failure:
        s.connect()
    s.logout()
    assert failure.value.temporary is True
    assert "connection refused" in str(failure.value)


class Introspection(BaseHTTPRequestHandler):
    """Dovecot's oauth2 passdb POSTs each token here; only "good-token" belongs to alice."""

    def do_POST(self) -> None:
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        good = form.get("token") == ["good-token"]
        reply_json(self, 200 if good else 401, {"active": True, "username": "alice"} if good else {"active": False})

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def oauth2_dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    if dovecot_binary() is None:
        pytest.skip("dovecot is not installed (apt-get install -y dovecot-imapd)")
    introspection = HTTPServer(("127.0.0.1", 0), Introspection)
    threading.Thread(target=introspection.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{introspection.server_address[1]}/introspect"
    server = Dovecot(tmp_path / "dovecot", free_port(), oauth2_introspection_url=url)
    server.start()
    yield server
    server.cleanup()
    introspection.shutdown()
    introspection.server_close()


class StaticToken:
    def __init__(self, token: str | TokenError) -> None:
        self.value = token

    def token(self) -> str:
        if isinstance(self.value, TokenError):
            raise self.value
        return self.value


def test_xoauth2_login_with_a_token_provider(oauth2_dovecot: Dovecot) -> None:
    box = config(oauth2_dovecot, credentials=Credentials(
        "alice", None, OAuth2Config("microsoft", "tenant", "client", "secret", None)))
    with open_session(box, StaticToken("good-token")) as s:
        s.connect()
        assert "INBOX" in s.list_folders()
    with pytest.raises(MailboxError) as refused, open_session(box, StaticToken("expired")) as s:
        s.connect()
    assert str(refused.value) == ("authentication failed for alice@127.0.0.1: "
                                  "check the OAuth2 app's permission on this mailbox")
    with pytest.raises(MailboxError) as no_token, open_session(box, StaticToken(TokenError(True, "down"))) as s:
        s.connect()
    assert no_token.value.temporary is True and "down" in str(no_token.value)


# ---------------------------------------------------------------- MailboxActions

async def test_move_message_is_idempotent_and_can_mark_unseen(dovecot: Dovecot) -> None:
    append(dovecot, message(1), flags=[b"\\Seen"])
    actions, box = MailboxActions(), config(dovecot)
    await actions.move_message(box, "<m1@parent.test>", sha(message(1)), "INBOX", HELD, unseen=False)
    await actions.move_message(box, "<m1@parent.test>", sha(message(1)), "INBOX", HELD, unseen=False)
    assert uids_in(dovecot, "INBOX") == [] and len(uids_in(dovecot, HELD)) == 1
    await actions.move_message(box, "<m1@parent.test>", sha(message(1)), HELD, "INBOX", unseen=True)
    assert uids_in(dovecot, HELD) == [] and len(uids_in(dovecot, "INBOX", "UNSEEN")) == 1
    with pytest.raises(MessageNotFoundError):
        await actions.move_message(box, "<gone@parent.test>", sha(b"gone"), "INBOX", HELD, unseen=False)


async def test_move_message_raises_temporary_when_the_server_is_down(dovecot: Dovecot) -> None:
    box = config(dovecot)
    dovecot.stop()
    with pytest.raises(MailboxError) as failure:
        await MailboxActions().move_message(box, "<m1@parent.test>", sha(b""), "INBOX", HELD, unseen=False)
    assert failure.value.temporary is True


async def test_probe_lists_capabilities_and_folders_or_says_what_is_wrong(dovecot: Dovecot) -> None:
    report = await MailboxActions().probe(config(dovecot))
    assert "authenticated as alice with password" in report
    assert "IDLE: yes" in report and "MOVE: yes" in report
    assert f"held folder {HELD!r}: missing" in report
    with pytest.raises(MailboxError, match="authentication failed for alice@127.0.0.1: check password"):
        await MailboxActions().probe(config(dovecot, password="wrong"))


# ---------------------------------------------------------------- MailboxWatcher

class MemoryPort:
    """The ImapStorePort contract in memory: dedupe by Message-ID + sha256, checkpoint with the batch."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.checkpoints: dict[str, tuple[int, int]] = {}
        self.stored: dict[str, list[tuple[str | None, str]]] = defaultdict(list)
        self.duplicates: dict[str, int] = defaultdict(int)
        self.reports: dict[str, list[tuple[bool, str]]] = defaultdict(list)

    async def checkpoint(self, mailbox: str) -> tuple[int, int] | None:
        return self.checkpoints.get(mailbox)

    async def store_fetched(self, mailbox: str, school: str, folder: str, uidvalidity: int,
                            messages: Sequence[FetchedMessage], last_uid: int) -> int:
        with self.lock:
            new = 0
            for m in messages:
                key = (BytesHeaderParser().parsebytes(m.raw).get("Message-ID"), sha(m.raw))
                if key in self.stored[mailbox]:
                    self.duplicates[mailbox] += 1
                    continue
                self.stored[mailbox].append(key)
                new += 1
            old = self.checkpoints.get(mailbox)
            if old is None or old[0] != uidvalidity or last_uid > old[1]:
                self.checkpoints[mailbox] = (uidvalidity, last_uid)
            return new

    async def report(self, mailbox: str, ok: bool, detail: str) -> None:
        self.reports[mailbox].append((ok, detail))

    def ids(self, mailbox: str) -> list[str | None]:
        return [mid for mid, _ in self.stored[mailbox]]


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def watching(*watchers: MailboxWatcher) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(w.run()) for w in watchers]
    try:
        yield
    finally:
        await asyncio.wait_for(asyncio.gather(*(w.stop() for w in watchers)), 15)
        await asyncio.gather(*tasks)


def watcher(box: MailboxConfig, port: MemoryPort, **kwargs: Any) -> MailboxWatcher:
    return MailboxWatcher(box, port, now=lambda: datetime.now(UTC), backoff=FAST, **kwargs)


async def test_watcher_skips_existing_mail_on_first_sync_and_stores_new_mail_once(dovecot: Dovecot) -> None:
    append(dovecot, message(1))
    port, box, woken = MemoryPort(), config(dovecot), []
    w = watcher(box, port, on_stored=lambda: woken.append(1))
    async with watching(w):
        await eventually(lambda: w.state == "idle", "IDLE")
        assert port.checkpoints[box.name][1] == 1 and port.ids(box.name) == []
        append(dovecot, message(2))
        await eventually(lambda: port.ids(box.name) == ["<m2@parent.test>"], "new mail stored")
    assert port.reports[box.name][0][0] is True and woken
    with raw_client(dovecot) as client:
        assert {HELD, REVIEW} <= {name for _flags, _sep, name in client.list_folders()}


async def test_first_sync_with_backfill_since_processes_only_mail_from_that_date(dovecot: Dovecot) -> None:
    append(dovecot, message(1), when=datetime(2020, 1, 6, tzinfo=UTC))
    append(dovecot, message(2), when=datetime(2025, 1, 6, tzinfo=UTC))
    port, box = MemoryPort(), config(dovecot, backfill_since=date(2024, 9, 1))
    w = watcher(box, port)
    async with watching(w):
        await eventually(lambda: w.state == "idle", "IDLE")
        assert port.ids(box.name) == ["<m2@parent.test>"]
        assert port.checkpoints[box.name][1] == 2


async def test_watcher_polls_when_the_server_has_no_idle(dovecot: Dovecot) -> None:
    port, box = MemoryPort(), config(dovecot, poll_interval=timedelta(seconds=0.2))
    w = watcher(box, port, session_factory=lambda: ImapSession(box, disable=["IDLE"]))
    async with watching(w):
        await eventually(lambda: w.state == "polling", "polling")
        append(dovecot, message(1))
        await eventually(lambda: port.ids(box.name) == ["<m1@parent.test>"], "polled mail stored")
    assert "polling every" in port.reports[box.name][0][1]


async def test_watcher_reconnects_after_dovecot_restart_during_idle(dovecot: Dovecot) -> None:
    port, box = MemoryPort(), config(dovecot)
    w = watcher(box, port)
    async with watching(w):
        await eventually(lambda: w.state == "idle", "IDLE")
        append(dovecot, message(1))
        await eventually(lambda: port.ids(box.name) == ["<m1@parent.test>"], "first message")
        await eventually(lambda: w.state == "idle", "IDLE again")
        await asyncio.to_thread(dovecot.restart)
        append(dovecot, message(2))
        await eventually(lambda: len(port.ids(box.name)) == 2, "mail after restart")
        await eventually(lambda: port.reports[box.name][-1][0], "reported healthy again")
    assert port.ids(box.name) == ["<m1@parent.test>", "<m2@parent.test>"]
    assert port.duplicates[box.name] == 0
    assert any(not ok for ok, _ in port.reports[box.name])


async def test_uidvalidity_change_resyncs_without_storing_duplicates(dovecot: Dovecot) -> None:
    port, box = MemoryPort(), config(dovecot, folder="Parents")
    w = watcher(box, port)
    async with watching(w):
        await eventually(lambda: w.state == "idle", "IDLE")
        for n in (1, 2):
            append(dovecot, message(n), folder="Parents")
        await eventually(lambda: len(port.ids(box.name)) == 2, "two messages")
        before = port.checkpoints[box.name][0]
        with raw_client(dovecot) as client:
            client.delete_folder("Parents")
        for n in (1, 2, 3):
            append(dovecot, message(n), folder="Parents")
        await eventually(lambda: len(port.ids(box.name)) == 3, "the new message after the re-sync")
        await eventually(lambda: port.checkpoints[box.name][0] != before, "new UIDVALIDITY checkpoint")
    assert port.ids(box.name) == ["<m1@parent.test>", "<m2@parent.test>", "<m3@parent.test>"]
    assert port.duplicates[box.name] >= 2


async def test_a_mailbox_with_a_wrong_password_does_not_stall_the_other(dovecot: Dovecot) -> None:
    port = MemoryPort()
    good, bad = config(dovecot, "alice"), config(dovecot, "bob", password="wrong")
    good_watcher, bad_watcher = watcher(good, port), watcher(bad, port)
    async with watching(good_watcher, bad_watcher):
        await eventually(lambda: any(not ok for ok, _ in port.reports[bad.name]), "bob reported failing")
        await eventually(lambda: good_watcher.state == "idle", "alice idle")
        append(dovecot, message(1), user="alice")
        await eventually(lambda: port.ids(good.name) == ["<m1@parent.test>"], "alice's mail stored")
    ok, detail = port.reports[bad.name][-1]
    assert not ok and detail.startswith("authentication failed for bob@127.0.0.1: check password")
    assert all(ok for ok, _ in port.reports[good.name])


async def test_backfill_offers_mail_since_the_date_with_progress(dovecot: Dovecot) -> None:
    append(dovecot, message(1), when=datetime(2020, 1, 6, tzinfo=UTC))
    append(dovecot, message(2), when=datetime(2025, 1, 6, tzinfo=UTC))
    append(dovecot, message(3), when=datetime(2025, 2, 6, tzinfo=UTC))
    port, box, progress = MemoryPort(), config(dovecot), []
    assert await backfill(box, port, date(2024, 9, 1), lambda done, total: progress.append((done, total))) == 2
    assert await backfill(box, port, date(2024, 9, 1), lambda done, total: None) == 0
    assert port.ids(box.name) == ["<m2@parent.test>", "<m3@parent.test>"]
    assert progress == [(0, 2), (2, 2)] and port.checkpoints[box.name][1] == 3


async def test_cancelling_a_watcher_during_idle_ends_it_promptly(dovecot: Dovecot) -> None:
    port, box = MemoryPort(), config(dovecot)
    w = watcher(box, port)
    task = asyncio.create_task(w.run())
    await eventually(lambda: w.state == "idle", "IDLE")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert w.state == "stopped"
