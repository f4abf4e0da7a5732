"""A synchronous IMAP session on one mailbox (imapclient), with errors mapped to MailboxError.

One `ImapSession` is one connection, used from one thread only; the one
exception is `wake()`, which any thread may call to end an IDLE early. Errors
never carry message content: they name the mailbox, the server and the command.
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime
from time import monotonic
from typing import Any

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import CapabilityError, IMAPClientAbortError, IMAPClientError, LoginError

from gateway.config import MailboxConfig

log = logging.getLogger(__name__)

FETCH_BATCH = 50

# RFC 5530 response codes that mean retrying the same command later may work.
_TEMPORARY_CODES = (b"[UNAVAILABLE]", b"[INUSE]", b"[SERVERBUG]", b"[LIMIT]", b"[OVERQUOTA]")
# Untagged responses during IDLE that say the selected folder changed (RFC 3501 §7.3, §7.4).
_CHANGES = frozenset({b"EXISTS", b"RECENT", b"EXPUNGE", b"FETCH"})


# Words with which servers say "not now, you are too many or too fast": Dovecot's and Exchange's
# "Too many connections", Gmail's "throttled", RFC 5530's [UNAVAILABLE] and [LIMIT]. A client told so
# backs off longer than after an ordinary failure.
_THROTTLE_MARKERS = ("[unavailable]", "[limit]", "too many", "throttl")


class MailboxError(Exception):
    """An IMAP failure. `temporary` errors are retried soon; others need a person (retried slowly).

    `throttled` errors are the server saying it is overloaded or limiting us (a BYE at connect, too many
    connections, a throttling response): retried, but later than other temporary errors.
    """

    def __init__(self, temporary: bool, message: str, *, throttled: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary or throttled
        self.throttled = throttled


def is_throttling(text: str) -> bool:
    """Whether a server's words ask us to slow down (see _THROTTLE_MARKERS)."""
    lowered = text.lower()
    return any(marker in lowered for marker in _THROTTLE_MARKERS)


def uid_set(uids: Iterable[int]) -> str:
    """An IMAP sequence set with runs collapsed (RFC 3501 §9 sequence-set): [4, 7, 9, 10, 11, 12] -> "4,7,9:12"."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("an empty UID set")
    parts: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:] + [0]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    return ",".join(parts)


class MessageNotFoundError(MailboxError):
    """The message is in neither folder of a move: someone moved or deleted it by hand."""

    def __init__(self, message: str) -> None:
        super().__init__(False, message)


@dataclass(frozen=True)
class FetchedMessage:
    uid: int
    raw: bytes
    internaldate: datetime | None
    flags: tuple[str, ...]


@dataclass(frozen=True)
class MoveRequest:
    """One message to move: found by Message-ID and content hash (or a known UID) in `from_folder`."""

    message_id: str | None
    sha256: str
    from_folder: str
    to_folder: str
    unseen: bool

    @property
    def label(self) -> str:
        return self.message_id or f"sha256:{self.sha256[:12]}"


def content_sha256(raw: bytes) -> str:
    """The content hash used to recognise a message across folders and UIDVALIDITY changes."""
    return hashlib.sha256(raw).hexdigest()


class ImapSession:
    """One IMAP connection to one mailbox.

    `xoauth2` returns the XOAUTH2 initial response for mailboxes configured with
    OAuth2 (the caller owns the token provider). `disable` names capabilities to
    ignore even when the server offers them (MOVE, UIDPLUS, IDLE): a workaround
    for broken servers, and how tests exercise the fallbacks.
    """

    def __init__(self, mailbox: MailboxConfig, *, xoauth2: Callable[[], bytes] | None = None,
                 timeout_s: float = 30.0, disable: Iterable[str] = (),
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.mailbox = mailbox
        self.where = f"{mailbox.credentials.username}@{mailbox.host}"
        # UIDNEXT reported by the last `select` (RFC 3501 §6.3.1), and the folder it selected.
        self.uidnext: int | None = None
        self.selected: str | None = None
        self.uidvalidity: int | None = None
        # Folders seen or created on this connection: `ensure_folders` lists the server's only for others.
        self._folders: set[str] = set()
        self._xoauth2, self._timeout, self._ssl_context = xoauth2, timeout_s, ssl_context
        self._disabled = frozenset(name.upper() for name in disable)
        self._client: Any = None
        self._caps: frozenset[str] = frozenset()
        self._broken = False
        self._wake_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def connect(self) -> None:
        """Connect (TLS as configured) and authenticate."""
        box = self.mailbox
        with self._errors("connect"):
            timeout = SocketTimeout(connect=self._timeout, read=self._timeout)
            # Loading the CA bundle costs ~40 ms of CPU: only when TLS is used at all.
            context = None if box.tls == "none" else (self._ssl_context or ssl.create_default_context())
            self._client = IMAPClient(box.host, port=box.port, ssl=box.tls == "ssl", ssl_context=context,
                                      timeout=timeout)
            # Keep INTERNALDATE timezone-aware instead of converting it to naive local time.
            self._client.normalise_times = False
            if box.tls == "starttls":
                try:
                    self._client.starttls(context)
                except CapabilityError:
                    raise MailboxError(False, f"{box.host}:{box.port} does not offer STARTTLS; "
                                              f"use tls = \"ssl\" or the right port") from None
        with self._errors("login"):
            if box.credentials.oauth2 is not None:
                self._oauth2_login()
            else:
                self._client.login(box.credentials.username, box.credentials.password or "")
            self._caps = frozenset(cap.decode("ascii", "replace").upper()
                                   for cap in self._client.capabilities())
        log.info("%s: connected to %s:%d", box.name, box.host, box.port)

    def _oauth2_login(self) -> None:
        if self._xoauth2 is None:
            raise MailboxError(False, f"{self.mailbox.name}: OAuth2 is configured but no token provider was given")
        # After a failed XOAUTH2 attempt the server sends a JSON error as a
        # challenge; an empty response makes it finish with a tagged NO.
        responses = [self._xoauth2()]
        self._client.sasl_login("XOAUTH2", lambda _challenge: responses.pop() if responses else b"")

    def capabilities(self) -> frozenset[str]:
        """The server's capabilities after login, minus the disabled ones."""
        return self._caps - self._disabled

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities()

    def list_folders(self) -> list[str]:
        with self._errors("LIST"):
            return [str(name) for _flags, _delimiter, name in self._client.list_folders()]

    def ensure_folders(self, names: Iterable[str]) -> None:
        """Create (and subscribe) each folder that does not exist yet (a LIST only for folders this
        connection has not seen yet)."""
        wanted = [name for name in dict.fromkeys(names) if name not in self._folders and name.upper() != "INBOX"]
        if not wanted:
            return
        existing = set(self.list_folders())
        self._folders |= existing
        for name in wanted:
            if name in existing or name.upper() == "INBOX":
                self._folders.add(name)
                continue
            with self._errors(f"CREATE {name!r}"):
                try:
                    self._client.create_folder(name)
                except IMAPClientError:
                    # Another connection may have created it meanwhile ([ALREADYEXISTS], RFC 5530).
                    if not self._client.folder_exists(name):
                        raise
                self._folders.add(name)
                log.info("%s: created folder %r", self.mailbox.name, name)
                # Many clients show only subscribed folders; subscribing is a courtesy.
                with suppress(IMAPClientError):
                    self._client.subscribe_folder(name)

    def select(self, folder: str) -> int:
        """Select a folder read-write; returns its UIDVALIDITY (RFC 3501 §2.3.1.1)."""
        self.selected = None
        with self._errors(f"SELECT {folder!r}"):
            response = self._client.select_folder(folder)
            self._announced_changes()
        self.selected = folder
        uidnext = response.get(b"UIDNEXT")
        self.uidnext = int(uidnext) if uidnext is not None else None
        uidvalidity = response.get(b"UIDVALIDITY")
        if uidvalidity is None:
            raise MailboxError(False, f"{self.where}: server sent no UIDVALIDITY for {folder!r}")
        self.uidvalidity = int(uidvalidity)
        return self.uidvalidity

    def uids_after(self, last_uid: int, since: date | None = None) -> list[int]:
        """UIDs above `last_uid` in the selected folder, optionally only INTERNALDATE on/after `since`."""
        criteria: list[Any] = ["UID", f"{last_uid + 1}:*"]
        if since is not None:
            criteria += ["SINCE", since]
        with self._errors("UID SEARCH"):
            found = self._client.search(criteria)
        # "n:*" always matches the highest UID, even when it is below n (RFC 3501 §6.4.8).
        return sorted(uid for uid in map(int, found) if uid > last_uid)

    def uids_since(self, day: date) -> list[int]:
        """UIDs whose INTERNALDATE falls on or after `day` (SEARCH SINCE, RFC 3501 §6.4.4)."""
        with self._errors("UID SEARCH"):
            return sorted(map(int, self._client.search(["SINCE", day])))

    def fetch(self, uids: Sequence[int], batch: int = FETCH_BATCH) -> list[FetchedMessage]:
        """Raw messages with INTERNALDATE and flags, without setting \\Seen (BODY.PEEK, RFC 3501 §6.4.5).

        UIDs expunged meanwhile are simply absent from the result.
        """
        out: list[FetchedMessage] = []
        for start in range(0, len(uids), batch):
            chunk = list(uids[start:start + batch])
            with self._errors("UID FETCH"):
                response = self._client.fetch(chunk, [b"BODY.PEEK[]", b"INTERNALDATE", b"FLAGS"])
            for uid in chunk:
                item = response.get(uid)
                if item is None or b"BODY[]" not in item:
                    continue
                # \Recent belongs to this session only (RFC 3501 §2.3.2), not to the message.
                flags = tuple(_text(f) for f in item.get(b"FLAGS", ()) if f.lower() != b"\\recent")
                out.append(FetchedMessage(uid=uid, raw=bytes(item[b"BODY[]"]),
                                          internaldate=_as_utc(item.get(b"INTERNALDATE")), flags=flags))
        return out

    def wake(self) -> None:
        """End the current (or the next) `idle_wait` early. Safe to call from any thread."""
        with self._wake_lock, suppress(OSError):
            if self._wake_w >= 0:
                os.write(self._wake_w, b"!")

    def idle_wait(self, timeout_s: float) -> bool:
        """IDLE (RFC 2177) until the folder changes, `timeout_s` passes or `wake()` is called.

        Returns True when the server reported a change. Servers may drop an IDLE
        after 30 minutes, so callers re-issue it with timeout_s below 29 minutes.
        """
        deadline = monotonic() + timeout_s
        changed = False
        with self._errors("IDLE"):
            if self._announced_changes():
                return True
            # Dovecot does not report, when IDLE starts, a change made after our last command (a
            # message appended between the SEARCH and now waits for its periodic check, 30 s by
            # default). A NOOP right before IDLE syncs the view and shrinks that window to one
            # round trip.
            _text_reply, noop = self._client.noop()
            if self._changes(noop, during_idle=False):
                return True
            self._client.idle()
            try:
                # A change that arrived while IDLE was being set up (before the server's "+ idling")
                # is filed with the other untagged responses, not returned by idle_check.
                changed = self._announced_changes()
                # Poll the socket and the wake pipe together, so wake() needs no socket tricks.
                poller = select.poll()
                poller.register(self._client.socket().fileno(), select.POLLIN)
                poller.register(self._wake_r, select.POLLIN)
                while not changed:
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        break
                    ready = {fd for fd, _event in poller.poll(remaining * 1000)}
                    if self._wake_r in ready:
                        os.read(self._wake_r, 4096)
                        break
                    if ready:
                        changed = self._changes(self._client.idle_check(timeout=0), during_idle=True)
                _text_reply, responses = self._client.idle_done()
            except BaseException:
                # Still in IDLE, or the connection is gone: only closing the socket is safe now.
                self._broken = True
                raise
        return changed or self._changes(responses, during_idle=False)

    def _announced_changes(self) -> bool:
        """Whether an earlier command's answer announced a change (then cleared, so it never grows).

        A server may report new mail with any command's response (RFC 3501 §7)
        and does not repeat it when IDLE starts: Dovecot answers a SEARCH from
        before a new message arrived and sends its EXISTS alongside. imapclient
        keeps such responses only in imaplib's `untagged_responses`.
        """
        pending = self._client._imap.untagged_responses
        changed = any(key in pending for key in ("EXISTS", "RECENT", "EXPUNGE", "FETCH"))
        pending.clear()
        return changed

    def _changes(self, responses: list[Any], *, during_idle: bool) -> bool:
        """Whether untagged responses report a change; raise if they say the session is unusable."""
        if during_idle and not responses:
            # The socket was readable yet nothing could be read: the server closed it.
            raise MailboxError(True, f"{self.where}: connection closed by the server")
        for response in responses:
            kind = response[0] if len(response) > 0 else None
            text = _text(response[1]) if len(response) > 1 else ""
            if kind == b"BYE":
                raise MailboxError(True, f"{self.where}: server ended the session (BYE {_short(text)})",
                                   throttled=is_throttling(text))
            # Dovecot answers an untagged NO when the selected folder was deleted
            # under us, then keeps serving the stale folder: reconnecting re-selects
            # it and notices the new UIDVALIDITY (RFC 3501 §7.1.2).
            if kind in (b"NO", b"BAD") and "[ALERT]" not in text.upper():
                raise MailboxError(True, f"{self.where}: server reported {kind.decode()} {_short(text)}")
            if kind == b"OK" and "[UIDVALIDITY" in text.upper():
                raise MailboxError(True, f"{self.where}: UIDVALIDITY changed while selected")
        return any(len(r) > 1 and r[1] in _CHANGES for r in responses)

    def move(self, uids: int | Sequence[int], dest: str) -> bool:
        """Move messages of the selected folder in one command; returns False when their source copies could
        only be flagged \\Deleted.

        With MOVE (RFC 6851) the server moves atomically (`UID MOVE 4,7,9:12 dest`). Otherwise COPY,
        then STORE \\Deleted and UID EXPUNGE of these UIDs only (RFC 4315 §2.1), and only after the COPY
        succeeded: nothing is expunged that is not already in `dest`. Without UIDPLUS a plain EXPUNGE
        would also remove other messages users flagged \\Deleted, so the source is left flagged
        \\Deleted for the user's client to expunge.
        """
        which = uid_set([uids] if isinstance(uids, int) else uids)
        if self.has("MOVE"):
            with self._errors(f"UID MOVE {which} to {dest!r}"):
                self._client.move(which, dest)
            return True
        with self._errors(f"UID COPY {which} to {dest!r}"):
            self._client.copy(which, dest)
        with self._errors(f"UID STORE {which} +FLAGS \\Deleted"):
            self._client.add_flags(which, [b"\\Deleted"], silent=True)
        if not self.has("UIDPLUS"):
            log.warning("%s: server lacks UIDPLUS; UID %s copied to %r and left flagged \\Deleted",
                        self.mailbox.name, which, dest)
            return False
        with self._errors(f"UID EXPUNGE {which}"):
            self._client.uid_expunge(which)
        return True

    def forget_folder(self, name: str) -> None:
        """A folder this connection knew of is gone (a MOVE into it answered [TRYCREATE])."""
        self._folders.discard(name)

    def present(self, uids: Sequence[int]) -> set[int]:
        """Which of these UIDs are still in the selected folder, not flagged \\Deleted (one UID SEARCH)."""
        if not uids:
            return set()
        with self._errors("UID SEARCH UID"):
            found = self._client.search(["UID", uid_set(uids), "UNDELETED"])
        return set(map(int, found)) & set(uids)

    def find_uid(self, folder: str | None, message_id: str | None, sha256: str) -> int | None:
        """Select `folder` (None: the folder already selected) and find the undeleted message with this
        Message-ID and content hash.

        One exact Message-ID match is taken as is (servers need not return
        byte-identical content after a move); several are told apart by hash.
        Without a Message-ID every undeleted message's content is hashed.
        """
        if folder is not None:
            self.select(folder)
        if message_id:
            try:
                message_id.encode("ascii")
                with self._errors("UID SEARCH HEADER Message-ID"):
                    found = self._client.search(["UNDELETED", "HEADER", "Message-ID", message_id])
            except UnicodeEncodeError:
                found = []
            candidates = self._exact_message_id(sorted(map(int, found)), message_id)
            if len(candidates) == 1:
                return candidates[0]
        else:
            with self._errors("UID SEARCH UNDELETED"):
                candidates = sorted(map(int, self._client.search(["UNDELETED"])))
        for start in range(0, len(candidates), FETCH_BATCH):
            for message in self.fetch(candidates[start:start + FETCH_BATCH]):
                if content_sha256(message.raw) == sha256:
                    return message.uid
        return None

    def _exact_message_id(self, uids: list[int], message_id: str) -> list[int]:
        # SEARCH HEADER is a substring match (RFC 3501 §6.4.4); keep exact matches only.
        if not uids:
            return []
        with self._errors("UID FETCH Message-ID"):
            response = self._client.fetch(uids, [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        wanted = _bare(message_id)
        exact = []
        for uid in uids:
            header = response.get(uid, {}).get(b"BODY[HEADER.FIELDS (MESSAGE-ID)]", b"")
            value = bytes(header).decode("ascii", "replace").partition(":")[2]
            if _bare(value) == wanted:
                exact.append(uid)
        return exact

    def noop(self) -> None:
        """NOOP: the RFC 3501 §6.1.2 way to let the server report new mail when polling."""
        with self._errors("NOOP"):
            _text_reply, responses = self._client.noop()
            self._changes(responses, during_idle=False)
            self._announced_changes()

    def mark_unseen(self, uids: int | Sequence[int]) -> None:
        """Remove \\Seen from messages in the selected folder (one UID STORE)."""
        which = uid_set([uids] if isinstance(uids, int) else uids)
        with self._errors(f"UID STORE {which} -FLAGS \\Seen"):
            self._client.remove_flags(which, [b"\\Seen"], silent=True)

    def logout(self) -> None:
        """Log out politely if possible; always release the socket and the wake pipe."""
        client, self._client = self._client, None
        if client is not None:
            try:
                if self._broken:
                    raise ConnectionError
                client.logout()
            except Exception:
                with suppress(Exception):
                    client.shutdown()
        with self._wake_lock:
            for fd in (self._wake_r, self._wake_w):
                with suppress(OSError):
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    def __enter__(self) -> ImapSession:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.logout()

    @contextmanager
    def _errors(self, command: str) -> Iterator[None]:
        """Translate imapclient/socket failures into MailboxError with a message fit for a log."""
        box = self.mailbox
        if self._client is None and command != "connect":
            raise MailboxError(True, f"{self.where}: not connected")
        try:
            yield
        except MailboxError:
            raise
        except (IMAPClientAbortError, OSError) as exc:
            self._broken = True
            raise self._connection_error(exc, command) from None
        except LoginError as exc:
            if is_throttling(str(exc)):
                # "NO [LIMIT] Maximum number of connections" (Dovecot) or [UNAVAILABLE] is not a wrong password.
                raise MailboxError(True, f"{self.where}: login refused for now: {_short(str(exc))}",
                                   throttled=True) from None
            how = "check the OAuth2 app's permission on this mailbox" if box.credentials.oauth2 else "check password"
            raise MailboxError(False, f"authentication failed for {self.where}: {how}") from None
        except IMAPClientError as exc:
            text = str(exc).encode("utf-8", "replace")
            if command == "connect":
                # A greeting other than OK/PREAUTH: a BYE ("too many connections", maintenance).
                raise MailboxError(True, f"{self.where}: server refused the connection: {_short(str(exc))}",
                                   throttled=True) from None
            temporary = any(code in text for code in _TEMPORARY_CODES)
            raise MailboxError(temporary, f"{self.where}: {command} failed: {_short(str(exc))}",
                               throttled=is_throttling(str(exc))) from None

    def _connection_error(self, exc: BaseException, command: str) -> MailboxError:
        box, at = self.mailbox, f"{self.mailbox.host}:{self.mailbox.port}"
        if isinstance(exc, socket.gaierror):
            return MailboxError(True, f"cannot resolve {box.host}: check host")
        if isinstance(exc, ssl.SSLError):
            return MailboxError(True, f"TLS with {at} failed ({exc.reason or type(exc).__name__}): "
                                      f"check tls and port")
        if isinstance(exc, TimeoutError):
            return MailboxError(True, f"no answer from {at} within {self._timeout:.0f}s ({command})")
        if isinstance(exc, ConnectionRefusedError):
            return MailboxError(True, f"cannot connect to {at} (connection refused): "
                                      f"is the server running and the port right?")
        # Abort errors may quote the unparsable line, which can be message content.
        return MailboxError(True, f"connection to {at} lost during {command} ({type(exc).__name__})")


def move_batch(session: ImapSession, requests: Sequence[MoveRequest], known: dict[str, int] | None = None,
               known_validity: int | None = None) -> list[MailboxError | None]:
    """Carry out moves on one connection: one UID MOVE (and one STORE -\\Seen) per source, destination
    and flag change, with a UID set (`UID MOVE 4,7,9:12 dest`). Returns, per request, None when the
    message is now in its destination (moved, or already there) or the MessageNotFoundError saying it is
    in neither folder. A connection failure raises: the requests not done are retried; those done are
    found in their destination next time.

    `known` maps content hashes to UIDs fetched earlier from the source folder under UIDVALIDITY
    `known_validity` (UIDs are never reused within one, RFC 3501 §2.3.1.1): such a message is moved if
    its UID is still present, without a search; under another UIDVALIDITY the hints are ignored. Leaves
    another folder than before selected.
    """
    known = known or {}
    results: list[MailboxError | None] = [None] * len(requests)
    name = session.mailbox.name
    # A user may have deleted a destination folder; recreate it rather than fail.
    session.ensure_folders(dict.fromkeys(r.to_folder for r in requests))
    groups: dict[tuple[str, str, bool], list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault((request.from_folder, request.to_folder, request.unseen), []).append(i)
    for (source, dest, unseen), members in groups.items():
        if session.selected != source:
            session.select(source)
        trusted = known_validity is not None and session.uidvalidity == known_validity
        hinted = {i: known.get(requests[i].sha256) if trusted else None for i in members}
        present = session.present([uid for uid in hinted.values() if uid is not None])
        uid_of: dict[int, int] = {}
        for i in members:
            uid = hinted[i]
            if uid is None or uid not in present:
                uid = session.find_uid(None, requests[i].message_id, requests[i].sha256)
            if uid is not None:
                uid_of[i] = uid
        if uid_of:
            uids = sorted(set(uid_of.values()))
            # Flags travel with the message on MOVE and COPY (RFC 6851 §3.3, RFC 3501 §6.4.7), so
            # clearing \Seen first needs no lookup of the new UIDs.
            if unseen:
                session.mark_unseen(uids)
            try:
                session.move(uids, dest)
            except MailboxError as exc:
                if "TRYCREATE" not in str(exc).upper():
                    raise
                # Someone deleted the destination folder since this connection last looked: recreate it.
                session.forget_folder(dest)
                session.ensure_folders([dest])
                session.move(uids, dest)
            log.info("%s: moved %d message(s) (UID %s) from %r to %r", name, len(uids), uid_set(uids), source, dest)
        missing = [i for i in members if i not in uid_of]
        if missing:
            session.select(dest)
            for i in missing:
                request = requests[i]
                if session.find_uid(None, request.message_id, request.sha256) is not None:
                    log.info("%s: %s already in %r; nothing to do", name, request.label, dest)
                else:
                    results[i] = MessageNotFoundError(f"{name}: {request.label} is in neither {source!r} "
                                                      f"nor {dest!r}")
    return results


def _as_utc(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _bare(message_id: str) -> str:
    return "".join(message_id.split()).strip("<>")


def _text(value: object) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
