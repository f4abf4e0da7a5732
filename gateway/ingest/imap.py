"""IMAP mode: watch staff mailboxes, store new mail through a port, and act on mailboxes in place.

Each mailbox has one connection, its watcher's, living in its own thread (imapclient is synchronous);
the event loop only awaits. The pipeline's moves for a mailbox run on that same connection between
IDLEs (DONE, one UID MOVE per destination, IDLE again), and before any further FETCH of a burst or a
backfill, so judged mail is moved first. Connections open a bounded number at a time (`connect_gate`)
and reconnect after exponential backoff with full jitter, longer when the server throttles.
Exactly-once bookkeeping is the port's job: it commits each batch of messages together with the
(UIDVALIDITY, last UID) checkpoint and skips messages it already holds (same Message-ID and content).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Any, Protocol, TypeVar

from gateway.act.mailbox import (
    FETCH_BATCH,
    FetchedMessage,
    ImapSession,
    MailboxError,
    MessageNotFoundError,
    MoveRequest,
    content_sha256,
    move_batch,
)
from gateway.config import MailboxConfig
from gateway.ingest.oauth import TokenError, TokenProvider, provider_for, xoauth2_string

__all__ = ["FetchedMessage", "ImapStorePort", "MailboxActions", "MailboxError", "MailboxWatcher",
           "MessageNotFoundError", "MoveRequest", "backfill", "open_session"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# After a UIDVALIDITY change every UID is new (RFC 3501 §2.3.1.1), so mail is
# matched again by Message-ID and content. Only this recent a window is
# re-offered, so that a recreated folder never turns years of old mail into
# "new" mail to acknowledge.
RESYNC_WINDOW = timedelta(days=7)
# A server that throttles us (BYE at connect, "too many connections", [UNAVAILABLE]) is left alone this
# many times longer than after an ordinary failure, and at least half of that (no near-zero jitter).
THROTTLE_FACTOR = 8.0
# A move waits this long at most for its mailbox's watcher to (re)connect; then it fails temporarily and
# the outbox retries it, so that one unreachable mailbox never holds the delivery worker's slots.
MOVE_WAIT_S = 30.0
# UIDs of recently fetched messages, by content hash, per watcher: a move of one of them needs no SEARCH.
KNOWN_UIDS = 5000
# Stack of each connection's thread: the IMAP work needs little, and a thousand mailboxes are a
# thousand threads (8 MiB each by default, reserved in address space).
THREAD_STACK = 512 * 1024
_stack_lock = threading.Lock()


class ImapStorePort(Protocol):
    """What the watcher needs from the store (implemented by the store layer)."""

    async def checkpoint(self, mailbox: str) -> tuple[int, int] | None:
        """(uidvalidity, last_uid) of the last committed batch, or None before the first sync."""

    async def store_fetched(self, mailbox: str, school: str, folder: str, uidvalidity: int,
                            messages: Sequence[FetchedMessage], last_uid: int) -> int:
        """Commit the messages and the checkpoint in one transaction; return how many were new.

        Messages already stored for this mailbox with the same Message-ID and
        content sha256 are skipped. For an unchanged uidvalidity the checkpoint
        never moves backwards (a backfill passes the current last_uid).
        """

    async def report(self, mailbox: str, ok: bool, detail: str) -> None:
        """Record the mailbox's status for `parentgate imap status`."""


def open_session(mailbox: MailboxConfig, provider: TokenProvider | None, *, timeout_s: float = 30.0,
                 disable: Sequence[str] = ()) -> ImapSession:
    """An unconnected session whose XOAUTH2 response comes from `provider`."""
    if provider is None:
        return ImapSession(mailbox, timeout_s=timeout_s, disable=disable)
    token_provider = provider

    def initial_response() -> bytes:
        try:
            return xoauth2_string(mailbox.credentials.username, token_provider.token())
        except TokenError as exc:
            raise MailboxError(exc.temporary, f"{mailbox.name}: {exc}") from None

    return ImapSession(mailbox, xoauth2=initial_response, timeout_s=timeout_s, disable=disable)


def _default_factory(mailbox: MailboxConfig) -> Callable[[], ImapSession]:
    try:
        provider = provider_for(mailbox)
    except TokenError as exc:
        raise MailboxError(False, str(exc)) from None
    return lambda: open_session(mailbox, provider)


class _Thread:
    """One dedicated thread for one connection.

    Not the default executor: an IDLE blocks its thread for up to 28 minutes,
    and a few mailboxes would otherwise starve every other `to_thread` caller.
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"imap-{name}")
        # The executor starts its one thread on the first submit: now, with a small stack
        # (threading.stack_size is process-wide, so it is set and put back under a lock).
        with _stack_lock:
            previous = threading.stack_size(THREAD_STACK)
            try:
                self._executor.submit(int).result()
            finally:
                threading.stack_size(previous)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=False)


class MailboxWatcher:
    """Watch one mailbox's folder until stopped or cancelled, on one connection; carry out the pipeline's
    moves on it (`move`); reconnect after exponential backoff with full jitter.

    `connect_gate` bounds how many watchers open connections at once (shared by all of them);
    `rng` supplies the jitter (tests pass a seeded one).
    """

    def __init__(self, mailbox: MailboxConfig, port: ImapStorePort, *, now: Callable[[], datetime],
                 on_stored: Callable[[], None] | None = None, idle_timeout_s: float = 28 * 60,
                 backoff: tuple[float, float] = (1.0, 300.0),
                 session_factory: Callable[[], ImapSession] | None = None,
                 connect_gate: asyncio.Semaphore | None = None, rng: random.Random | None = None) -> None:
        self.mailbox, self._port, self._now, self._on_stored = mailbox, port, now, on_stored
        self._idle_timeout, self._backoff = idle_timeout_s, backoff
        self._gate, self._rng = connect_gate, rng or random.Random()
        # Built on first use, then kept, so that the token cache outlives reconnects.
        self._factory = session_factory
        self._thread = _Thread(mailbox.name)
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()
        # Set while a session is connected with the watched folder selected (moves can run).
        self._ready = asyncio.Event()
        # Set by `move` and `stop`: ends a polling wait early.
        self._nudge = asyncio.Event()
        self._session: ImapSession | None = None
        self._moves: list[tuple[MoveRequest, asyncio.Future[None]]] = []
        self._known: OrderedDict[str, int] = OrderedDict()
        self._known_validity: int | None = None
        self._failures = 0
        self._folders_made = False
        self._retry_at = 0.0
        self._last_error: MailboxError | None = None
        self._started = False
        # "starting" until `run` begins: a move asked for meanwhile (the delivery worker starts first at
        # start-up) waits for the connection instead of failing.
        self.state = "starting"

    async def run(self) -> None:
        self._started = True
        self._done.clear()
        try:
            while not self._stopping.is_set():
                failure: MailboxError
                try:
                    await self._watch()
                    delay = 0.0
                except MailboxError as exc:
                    failure = exc
                    delay = self._retry_after(exc)
                    await self._fail(str(exc), delay)
                except Exception as exc:
                    # Not logged with its text: a store error may quote the message's bytes.
                    failure = MailboxError(True, f"{self.mailbox.name}: {type(exc).__name__} at {_origin(exc)}")
                    delay = self._retry_after(failure)
                    await self._fail(str(failure), delay)
                else:
                    failure = MailboxError(True, f"{self.mailbox.name}: the watcher is stopping")
                finally:
                    self._ready.clear()
                    await self._close_session()
                self._last_error = failure
                self._retry_at = time.monotonic() + delay
                self._fail_moves(failure)
                self.state = "backoff"
                await self._sleep(delay)
        finally:
            self.state = "stopped"
            self._fail_moves(MailboxError(True, f"{self.mailbox.name}: the watcher stopped"))
            self._thread.close()
            self._done.set()

    async def stop(self) -> None:
        """Ask `run` to finish (an IDLE in progress is cut short) and wait until it has."""
        self._stopping.set()
        self._nudge.set()
        if self._session is not None:
            self._session.wake()
        if self._started and not self._done.is_set():
            await self._done.wait()

    async def move(self, request: MoveRequest) -> None:
        """Move one message on this watcher's connection, batched with the other moves waiting.

        Returns once it is in `to_folder` (also when it already was); raises MessageNotFoundError when it
        is in neither folder, MailboxError(temporary) when the mailbox is not connected within
        MOVE_WAIT_S or the connection fails meanwhile.
        """
        if self._stopping.is_set() or (self._started and self._done.is_set()):
            raise MailboxError(True, f"{self.mailbox.name}: not watched (stopped); the move is retried later")
        if not self._ready.is_set():
            wait = self._retry_at - time.monotonic()
            if self.state == "backoff" and (wait > MOVE_WAIT_S or (self._last_error is not None
                                                                   and not self._last_error.temporary)):
                raise MailboxError(True, f"{self.mailbox.name}: not connected (next attempt in {max(wait, 0):.0f}s);"
                                         f" the move is retried later")
            try:
                await asyncio.wait_for(self._ready.wait(), MOVE_WAIT_S + max(wait, 0.0))
            except TimeoutError:
                raise MailboxError(True, f"{self.mailbox.name}: not connected; the move is retried later") from None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._moves.append((request, future))
        self._nudge.set()
        if self._session is not None:
            self._session.wake()
        await future

    def _fail_moves(self, error: MailboxError) -> None:
        moves, self._moves = self._moves, []
        for _request, future in moves:
            if not future.done():
                future.set_exception(MailboxError(True, f"{error}; the move is retried later"))

    async def _do_moves(self, session: ImapSession, uidvalidity: int) -> None:
        """Carry out every move waiting, in batches, then select the watched folder again."""
        while self._moves:
            batch, self._moves = [(r, f) for r, f in self._moves if not f.done()], []
            if not batch:
                continue
            state, self.state = self.state, "moving"
            requests = [r for r, _f in batch]
            hints = {r.sha256: uid for r in requests if r.from_folder == self.mailbox.folder
                     and self._known_validity == uidvalidity and (uid := self._known.get(r.sha256)) is not None}
            try:
                results = await self._thread.call(self._move_sync, session, requests, hints, uidvalidity)
            except MailboxError as exc:
                for _r, future in batch:
                    if not future.done():
                        future.set_exception(MailboxError(True, f"{exc}; the move is retried later"))
                raise
            except BaseException:
                for _r, future in batch:
                    if not future.done():
                        future.set_exception(MailboxError(True, f"{self.mailbox.name}: the move was interrupted"))
                raise
            for (request, future), result in zip(batch, results):
                self._known.pop(request.sha256, None)
                if future.done():
                    continue
                if result is None:
                    future.set_result(None)
                else:
                    future.set_exception(result)
            self.state = state

    def _move_sync(self, session: ImapSession, requests: list[MoveRequest], hints: dict[str, int],
                   uidvalidity: int) -> list[MailboxError | None]:
        """Runs on the connection's thread."""
        box = self.mailbox
        try:
            return move_batch(session, requests, hints, uidvalidity)
        finally:
            if session.selected != box.folder:
                if session.select(box.folder) != uidvalidity:
                    raise MailboxError(True, f"{session.where}: UIDVALIDITY of {box.folder!r} changed")

    def _retry_after(self, error: MailboxError) -> float:
        """Capped exponential backoff with full jitter (a uniform draw below the exponential ceiling), so
        that a thousand watchers cut off together do not come back together. A throttling server gets
        THROTTLE_FACTOR times longer, and at least half of it; a wrong password or a refused token will
        not fix itself soon, so those wait about the cap."""
        self._failures += 1
        first, cap = self._backoff
        if not error.temporary:
            return self._rng.uniform(cap / 2, cap)
        if error.throttled:
            ceiling = min(first * THROTTLE_FACTOR * 2 ** (self._failures - 1), cap)
            return self._rng.uniform(ceiling / 2, ceiling)
        return self._rng.uniform(0, min(first * 2 ** (self._failures - 1), cap))

    async def _fail(self, detail: str, delay: float) -> None:
        # Session errors already name the mailbox as user@host, usually the same as its name.
        if not detail.startswith(self.mailbox.name) and self.mailbox.name not in detail:
            detail = f"{self.mailbox.name}: {detail}"
        log.warning("%s; retrying in %.3gs", detail, delay)
        await self._report(False, f"{detail}; retrying in {delay:.3g}s")

    async def _report(self, ok: bool, detail: str) -> None:
        try:
            await self._port.report(self.mailbox.name, ok, detail)
        except Exception as exc:
            log.error("%s: could not record status (%s)", self.mailbox.name, type(exc).__name__)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _poll_wait(self, seconds: float) -> None:
        """Wait for the next poll, cut short by a move or a stop."""
        try:
            await asyncio.wait_for(self._nudge.wait(), seconds)
        except TimeoutError:
            pass
        self._nudge.clear()

    async def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            # Wake a running IDLE first; the logout then runs on the same thread after it.
            session.wake()
            await self._thread.call(session.logout)

    @contextlib.asynccontextmanager
    async def _opening(self) -> AsyncIterator[None]:
        if self._gate is None:
            yield
            return
        async with self._gate:
            yield

    async def _watch(self) -> None:
        box = self.mailbox
        self.state = "connecting"
        if self._factory is None:
            self._factory = _default_factory(box)
        self._session = session = self._factory()
        # The gate covers opening the connection (TCP, greeting, login): what a server counts as a
        # connection attempt and what overflows its listen backlog when a thousand come at once.
        async with self._opening():
            await self._thread.call(session.connect)
        # The held and review folders are made sure of on the first connection; a reconnect (a thousand
        # of them after a server restart) skips that LIST, and a move into a folder deleted meanwhile
        # recreates it ([TRYCREATE], see move_batch).
        folders = [box.folder] if self._folders_made else [box.folder, box.held_folder, box.review_folder]
        await self._thread.call(session.ensure_folders, folders)
        uidvalidity = await self._thread.call(session.select, box.folder)
        self._folders_made = True
        if self._known_validity != uidvalidity:
            self._known.clear()
            self._known_validity = uidvalidity
        self._ready.set()
        self.state = "syncing"
        last_uid = await self._first_sync(session, uidvalidity, await self._port.checkpoint(box.name))
        self._failures = 0
        idle = session.has("IDLE")
        how = "IDLE" if idle else f"polling every {box.poll_interval.total_seconds():.0f}s"
        await self._report(True, f"connected to {box.host}:{box.port}; watching {box.folder!r} ({how})")
        while not self._stopping.is_set():
            await self._do_moves(session, uidvalidity)
            if idle:
                self.state = "idle"
                await self._thread.call(session.idle_wait, self._idle_timeout)
            else:
                self.state = "polling"
                await self._poll_wait(box.poll_interval.total_seconds())
                await self._thread.call(session.noop)
            if self._stopping.is_set():
                break
            # Moves first: judged mail is moved before anything newer is fetched.
            await self._do_moves(session, uidvalidity)
            # Sync even after an IDLE timeout: it is cheap and covers a missed notification.
            self.state = "syncing"
            last_uid = await self._sync(session, uidvalidity, last_uid, last_uid, box.backfill_since, False)

    async def _first_sync(self, session: ImapSession, uidvalidity: int,
                          checkpoint: tuple[int, int] | None) -> int:
        box = self.mailbox
        baseline = (session.uidnext or 1) - 1
        since = box.backfill_since
        if checkpoint is None:
            log.info("%s: first sync of %r (UIDVALIDITY %d, UIDNEXT-1 %d, backfill since %s)",
                     box.name, box.folder, uidvalidity, baseline, since)
            if since is None:
                # Adding a mailbox never acknowledges the mail already in it.
                return await self._sync(session, uidvalidity, baseline, baseline, None, True)
            return await self._sync(session, uidvalidity, 0, baseline, since, True)
        if checkpoint[0] != uidvalidity:
            window = (self._now() - RESYNC_WINDOW).date()
            since = max(since, window) if since else window
            log.warning("%s: UIDVALIDITY of %r changed (%d -> %d); re-offering mail since %s",
                        box.name, box.folder, checkpoint[0], uidvalidity, since)
            return await self._sync(session, uidvalidity, 0, baseline, since, True)
        return await self._sync(session, uidvalidity, checkpoint[1], checkpoint[1], since, False)

    async def _sync(self, session: ImapSession, uidvalidity: int, after: int, floor: int,
                    since: date | None, commit: bool) -> int:
        """Store mail above UID `after` in batches; the checkpoint ends at least at `floor`.

        Each batch commits with its own highest UID, so a reconnect mid-sync
        resumes after the last committed batch and processes nothing twice.
        """
        uids = await self._thread.call(session.uids_after, after, since)
        target = max(floor, uids[-1] if uids else after)
        for start in range(0, len(uids), FETCH_BATCH):
            chunk = uids[start:start + FETCH_BATCH]
            # Mail judged meanwhile is moved before the next batch of a burst or a backfill is fetched.
            await self._do_moves(session, uidvalidity)
            messages = await self._thread.call(session.fetch, chunk)
            last = target if start + FETCH_BATCH >= len(uids) else chunk[-1]
            await self._store(uidvalidity, messages, last)
        if not uids and (commit or target > after):
            await self._store(uidvalidity, [], target)
        return target

    async def _store(self, uidvalidity: int, messages: Sequence[FetchedMessage], last_uid: int) -> None:
        box = self.mailbox
        new = await self._port.store_fetched(box.name, box.school, box.folder, uidvalidity, messages, last_uid)
        if self._known_validity == uidvalidity:
            for message in messages:
                self._known[content_sha256(message.raw)] = message.uid
            while len(self._known) > KNOWN_UIDS:
                self._known.popitem(last=False)
        if messages:
            log.info("%s: fetched UIDs %d-%d (%d), %d new; checkpoint %d/%d", box.name, messages[0].uid,
                     messages[-1].uid, len(messages), new, uidvalidity, last_uid)
        if new and self._on_stored is not None:
            self._on_stored()


def _origin(exc: BaseException) -> str:
    """Where an exception was raised (file:line), to log instead of its possibly personal text."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else "unknown"


async def backfill(mailbox: MailboxConfig, port: ImapStorePort, since: date,
                   progress: Callable[[int, int], None], *,
                   session_factory: Callable[[], ImapSession] | None = None) -> int:
    """Deliberately process the watched folder's mail with INTERNALDATE on/after `since`.

    Only mail at or below the current checkpoint is offered (the watcher
    handles newer mail); the port skips what it already has. Returns how many
    messages were new.
    """
    thread = _Thread(f"{mailbox.name}-backfill")
    session = (session_factory or _default_factory(mailbox))()
    try:
        await thread.call(session.connect)
        uidvalidity = await thread.call(session.select, mailbox.folder)
        checkpoint = await port.checkpoint(mailbox.name)
        if checkpoint is None:
            last = (session.uidnext or 1) - 1
            await port.store_fetched(mailbox.name, mailbox.school, mailbox.folder, uidvalidity, [], last)
        elif checkpoint[0] != uidvalidity:
            raise MailboxError(False, f"{mailbox.name}: UIDVALIDITY of {mailbox.folder!r} changed since the "
                                      f"last sync; start the daemon to re-sync it, then backfill")
        else:
            last = checkpoint[1]
        uids = [uid for uid in await thread.call(session.uids_since, since) if uid <= last]
        new, done = 0, 0
        progress(0, len(uids))
        for start in range(0, len(uids), FETCH_BATCH):
            messages = await thread.call(session.fetch, uids[start:start + FETCH_BATCH])
            new += await port.store_fetched(mailbox.name, mailbox.school, mailbox.folder, uidvalidity,
                                            messages, last)
            done = min(start + FETCH_BATCH, len(uids))
            progress(done, len(uids))
        log.info("%s: backfill since %s offered %d messages, %d new", mailbox.name, since, done, new)
        return new
    finally:
        await thread.call(session.logout)
        thread.close()


class MailboxActions:
    """In-place actions for the pipeline.

    A mailbox with a watcher (`attach`) is acted on over the watcher's own connection, between its
    IDLEs and in batches: the server sees one connection per mailbox. Without one (a command run by
    hand, a test) an action opens a connection of its own and closes it when done.
    """

    def __init__(self, *, session_factory: Callable[[MailboxConfig], ImapSession] | None = None) -> None:
        self._factory = session_factory
        self._providers: dict[str, TokenProvider | None] = {}
        self._watchers: dict[str, MailboxWatcher] = {}

    def attach(self, watcher: MailboxWatcher) -> None:
        self._watchers[watcher.mailbox.name] = watcher

    def _session(self, mailbox: MailboxConfig) -> ImapSession:
        if self._factory is not None:
            return self._factory(mailbox)
        if mailbox.name not in self._providers:
            try:
                self._providers[mailbox.name] = provider_for(mailbox)
            except TokenError as exc:
                raise MailboxError(False, str(exc)) from None
        return open_session(mailbox, self._providers[mailbox.name])

    async def move_message(self, mailbox: MailboxConfig, message_id: str | None, sha256: str,
                           from_folder: str, to_folder: str, *, unseen: bool) -> None:
        """Move one message; succeeds without acting when it is already in `to_folder`.

        Raises MessageNotFoundError when it is in neither folder, and
        MailboxError(temporary=True) when the server cannot be reached.
        """
        request = MoveRequest(message_id, sha256, from_folder, to_folder, unseen)
        watcher = self._watchers.get(mailbox.name)
        if watcher is not None:
            await watcher.move(request)
            return
        await asyncio.to_thread(self._move_alone, mailbox, request)

    def _move_alone(self, mailbox: MailboxConfig, request: MoveRequest) -> None:
        with self._session(mailbox) as session:
            session.connect()
            [result] = move_batch(session, [request])
        if result is not None:
            raise result

    async def probe(self, mailbox: MailboxConfig) -> str:
        """A report for `parentgate imap test`; raises MailboxError saying what is wrong."""
        session = self._session(mailbox)
        return await asyncio.to_thread(_probe, session)

    async def close(self) -> None:
        self._watchers.clear()


def _probe(session: ImapSession) -> str:
    box = session.mailbox
    auth = f"OAuth2 ({box.credentials.oauth2.provider})" if box.credentials.oauth2 else "password"
    with session:
        session.connect()
        caps = session.capabilities()
        folders = session.list_folders()
    lines = [f"{box.name}: connected to {box.host}:{box.port} (tls {box.tls}), "
             f"authenticated as {box.credentials.username} with {auth}",
             "capabilities: " + " ".join(sorted(caps))]
    notes = {"IDLE": ("new mail is noticed at once",
                      f"new mail is polled every {box.poll_interval.total_seconds():.0f}s"),
             "MOVE": ("moves are atomic", "moves use COPY + \\Deleted + UID EXPUNGE"),
             "UIDPLUS": ("single messages can be expunged",
                         "moved messages are left flagged \\Deleted in the source folder")}
    for cap, (yes, no) in notes.items():
        lines.append(f"  {cap}: yes, {yes}" if cap in caps else f"  {cap}: no, {no}")
    shown = ", ".join(repr(f) for f in folders[:30]) + (" …" if len(folders) > 30 else "")
    lines.append(f"folders ({len(folders)}): {shown}")
    for role, folder in (("watched", box.folder), ("held", box.held_folder), ("review", box.review_folder)):
        state = "present" if folder in folders or folder.upper() == "INBOX" else "missing (created at start)"
        lines.append(f"  {role} folder {folder!r}: {state}")
    return "\n".join(lines)
