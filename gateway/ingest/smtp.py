"""SMTP ingress (aiosmtpd): accept mail only for the schools' domains, store it, then say 250.

Never an open relay: RCPT is refused (550 5.7.1) for any domain that is not a configured school's.
Any failure answers a generic 451 4.3.0, never the exception text (STYLE §1). Bytes that are not
UTF-8, and control characters, are refused at the command that carries them (EHLO, MAIL, RCPT), so
they never reach a database row or the next hop.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Callable, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from gateway.act.probe import RecipientVerifier
from gateway.config import Config
from gateway.domain.addresses import envelope_problem, has_controls, has_domain, undecodable
from gateway.ingest.inbox import Inbox, Incoming, Unstorable
from gateway.ingest.listener import ConnectionGate, Listener, effective_max_connections
from gateway.ingest.spool import SpooledData

log = logging.getLogger("parentgate.smtp")

QUEUED_250 = "250 2.0.0 OK: queued as"
NOT_OURS_550 = "550 5.7.1 Relay access denied: this gateway accepts mail only for its schools"
BAD_ADDRESS_553 = "553 5.1.3 Bad recipient address syntax"
TOO_BIG_552 = "552 5.3.4 Message too big for this gateway"
TRY_LATER_451 = "451 4.3.0 Temporary local problem; please try again later"
TOO_MANY_452 = "452 4.5.3 Too many recipients"
UNSTORABLE_554 = "554 5.6.0 Message content could not be stored; not accepted"
MAX_RECIPIENTS = 100


_DISPATCH: dict[type, list[str]] = {}


def _dispatch_names(obj: object, prefixes: tuple[str, ...]) -> list[str]:
    """The attribute names of obj's class that start with one of `prefixes`, computed once per class."""
    names = _DISPATCH.get(type(obj))
    if names is None:
        names = _DISPATCH[type(obj)] = [n for n in dir(type(obj)) if n.startswith(prefixes)]
    return names


class GatewayHandler:
    def __init__(self, config: Callable[[], Config], inbox: Inbox, verifier: RecipientVerifier | None = None) -> None:
        self._config = config
        self._inbox = inbox
        self._verifier = verifier

    def __dir__(self) -> list[str]:
        # What aiosmtpd looks for on a handler, for every new session (see GatewaySMTP).
        return _dispatch_names(self, ("handle_",))

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if problem := envelope_problem(address, smtputf8=envelope.smtp_utf8):
            return _bad_address("553 5.1.7 Bad sender address", problem)
        if address != "<>" and not has_domain(address):
            return "553 5.1.7 Bad sender address: address has no domain"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if problem := envelope_problem(address, smtputf8=envelope.smtp_utf8):
            return _bad_address("553 5.1.3 Bad recipient address", problem)
        local, sep, domain = address.rpartition("@")
        if not sep or not local or not domain:
            return BAD_ADDRESS_553
        if self._config().school_for_domain(domain) is None:
            log.info("refused relay from %s to a foreign domain", session.peer)
            return NOT_OURS_550
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return TOO_MANY_452
        # [smtp] verify_recipients = "downstream": refuse now what the school's server would bounce.
        refusal = await self._verifier.refusal(address) if self._verifier is not None else None
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        config = self._config()
        raw = envelope.original_content or b""
        if len(raw) > config.smtp.max_message_size:
            return TOO_BIG_552
        groups: dict[str, list[str]] = {}
        for rcpt in envelope.rcpt_tos:
            school = config.school_for_domain(rcpt.rpartition("@")[2])
            if school is not None:
                groups.setdefault(school.id, []).append(rcpt.lower())
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        stored: list[int] = []
        try:
            for school_id, rcpts in groups.items():
                stored.append(await self._inbox.receive(Incoming(
                    raw=raw, mail_from=(envelope.mail_from or "").strip("<>"), rcpt_tos=tuple(rcpts),
                    school=school_id, peer=peer, helo=session.host_name)))
        except Unstorable as exc:
            # The database refused this message's own values: trying again would fail the same way.
            if exc.permanent:
                return UNSTORABLE_554
            log.error("could not store a message from %s: %s", peer, exc)
            return TRY_LATER_451
        except Exception:  # noqa: BLE001 - the client learns only that it should retry
            log.exception("could not store a message from %s", peer)
            return TRY_LATER_451
        # The stored ids, so that the sending MTA's log line ("queued as 12") leads to `parentgate show 12`.
        return f"{QUEUED_250} {' '.join(map(str, stored))}"

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %s", error.__class__.__name__)
        return "421 4.3.0 Temporary local problem; closing connection"


def _bad_address(reply: str, problem: str) -> str:
    if "non-ASCII" in problem:
        # RFC 6531 §3.7.4.2 names 5.6.7 for a non-ASCII address the transaction cannot carry.
        return f"553 5.6.7 {problem}"
    return f"{reply}: {problem}"


# `<local@domain>` with a dot-atom local part and a plain domain: what nearly every client sends.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(.*)", re.DOTALL)


class GatewaySMTP(SpooledData):
    """aiosmtpd's SMTP session, built without its per-connection introspection.

    aiosmtpd's constructor finds its command, AUTH and hook methods with `dir()` and
    `inspect.getmembers()` over the whole session object and the handler, on every connection: about a
    tenth of the daemon's time under load. Those names are the same for every session of this class,
    so `__dir__` answers them from a list computed once; the lookups then find the same methods.
    """

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """A plain `<local@domain>` path is read directly; anything else by aiosmtpd's RFC 5322 parser
        (which costs more than the rest of the MAIL or RCPT command). Both give the same answer for
        a plain path: a unit test compares them."""
        plain = _PLAIN_PATH.fullmatch(arg)
        if plain is None or any(c in plain.group(2) for c in "()\r\n\"\\"):
            return super()._getaddr(arg)
        # The parser takes the blanks after the path with it.
        address, rest = plain.group(1), plain.group(2).lstrip(" \t")
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    def __dir__(self) -> list[str]:
        return _dispatch_names(self, ("smtp_", "auth_"))

    def __init__(self, *args: Any, release: Callable[[], None] = lambda: None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release = release
        self._last_heard = self.loop.time()
        self._busy = False

    # aiosmtpd decodes arguments as UTF-8 with surrogateescape: bytes that are not UTF-8 arrive as lone
    # surrogates. They are refused here, at the command, with the reason (RFC 3463 5.5.2: syntax error).
    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        if problem := _name_problem(hostname):
            await self.push(f"501 5.5.2 Syntax error: the EHLO name {problem}")
            return
        await super().smtp_EHLO(hostname)

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        if problem := _name_problem(hostname):
            await self.push(f"501 5.5.2 Syntax error: the HELO name {problem}")
            return
        await super().smtp_HELO(hostname)

    def data_received(self, data: bytes) -> None:
        # The idle timeout counts from the last bytes heard, so a long DATA transfer is not cut off
        # (aiosmtpd's own timer restarts only at each command).
        self._last_heard = self.loop.time()
        super().data_received(data)

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        # While a hook works (storing a message can wait for a database commit) the client is waiting
        # for us, not idle: the timeout then counts from our answer.
        self._busy = True
        try:
            return await super()._call_handler_hook(command, *args)
        finally:
            self._busy = False
            self._last_heard = self.loop.time()

    def _timeout_cb(self) -> None:
        silent = 0.0 if self._busy else self.loop.time() - self._last_heard
        if silent < self._timeout_duration and self.transport is not None:
            self._reset_timeout(self._timeout_duration - silent)
            return
        # RFC 5321 §4.5.3.2: the server may close an idle connection; 421 tells the client why
        # (aiosmtpd would close it without a word).
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(f"421 4.4.2 {self.hostname} Error: timeout exceeded\r\n".encode("ascii", "replace"))
        super()._timeout_cb()

    def connection_lost(self, error: Exception | None) -> None:
        self._release()
        super().connection_lost(error)


def _name_problem(name: str | None) -> str | None:
    if name and undecodable(name):
        return "is not valid UTF-8"
    if name and has_controls(name):
        return "contains control characters"
    return None


class SessionCounter(Protocol):
    def session_opened(self) -> None: ...
    def session_closed(self) -> None: ...


class CountedSMTP(GatewaySMTP):
    """A session that reports its opening and closing (the open-sessions gauge)."""

    def __init__(self, sessions: SessionCounter, handler: GatewayHandler, **kwargs: Any) -> None:
        self.sessions = sessions
        super().__init__(handler, **kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sessions.session_opened()
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sessions.session_closed()
        super().connection_lost(exc)


async def start_server(config: Callable[[], Config], inbox: Inbox, metrics: SessionCounter | None = None,
                       verifier: RecipientVerifier | None = None) -> Listener:
    """The listener, on the daemon's own event loop (no Controller thread)."""
    cfg = config()
    handler = GatewayHandler(config, inbox, verifier)
    loop = asyncio.get_running_loop()
    smtp = cfg.smtp
    cap = effective_max_connections(smtp.max_connections)
    if cap < smtp.max_connections:
        log.warning("at most %d SMTP connections (not %d): the open-file limit allows no more; raise "
                    "LimitNOFILE to allow more", cap, smtp.max_connections)
    gate = ConnectionGate(max_total=cap, max_per_client=smtp.max_connections_per_client)

    def factory(release: Callable[[], None]) -> SMTP:
        options: dict[str, Any] = dict(hostname=smtp.hostname, ident="parentgate ESMTP",
                                       data_size_limit=smtp.max_message_size, decode_data=False,
                                       enable_SMTPUTF8=True, timeout=smtp.idle_timeout.total_seconds(),
                                       loop=loop, release=release)
        if metrics is None:
            return GatewaySMTP(handler, **options)
        return CountedSMTP(metrics, handler, **options)

    return Listener(smtp.host, smtp.port, factory, gate)
