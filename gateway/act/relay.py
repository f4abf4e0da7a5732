"""Delivery over SMTP (aiosmtplib) to the smarthost or submission server, reusing connections.

Connections are cached and reused for several messages, as Postfix's smtp client does, so a burst
does not pay a TCP and EHLO round trip per message.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass
from typing import Callable

import aiosmtplib

from gateway.act.stream import sendmail_streamed
from gateway.act.transport import REPLY_LIMIT, Outcome, classify_reply, reply_text
from gateway.domain.addresses import needs_smtputf8, undecodable

log = logging.getLogger("parentgate.relay")
# Messages from this size on are written in pieces (act.stream), not copied whole several times.
STREAM_FROM = 1024 * 1024


@dataclass(frozen=True)
class RelayTarget:
    host: str
    port: int
    hostname: str
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    oauth2_token: Callable[[], str] | None = None
    timeout: float = 30.0
    # The reverse-path used instead of a non-ASCII one when the next hop does not offer SMTPUTF8 (the
    # postmaster, so that a later bounce still reaches a person); "" is the null reverse-path.
    ascii_sender: str = ""


NO_SMTPUTF8 = ("the next hop does not offer SMTPUTF8, which this message's non-ASCII recipient address "
               "needs (RFC 6531 section 3.4)")


async def _envelope(client: aiosmtplib.SMTP, mail_from: str, rcpts: list[str], data: bytes,
                    ascii_sender: str) -> tuple[str, list[str]] | None:
    """The reverse-path and MAIL parameters for this message on this server, or None when it cannot go.

    RFC 6531 §3.4: non-ASCII addresses need SMTPUTF8. A non-ASCII recipient without it cannot be
    reached at all. A non-ASCII reverse-path is replaced by `ascii_sender`, as a forwarder may change
    the envelope sender: the message (and its From field) is unchanged, and only a bounce from the next
    hop goes to the postmaster instead of the parent. Non-ASCII header text (RFC 6532) asks for
    SMTPUTF8 when offered; when it is not, the message goes as before, with 8-bit headers, which is
    what mail servers have long accepted from each other.
    """
    if client.is_ehlo_or_helo_needed:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            # RFC 5321 §4.1.1.1: a server that does not know EHLO is spoken to with HELO (no extensions).
            await client.helo()
    if client.supports_extension("smtputf8"):
        end = data.find(b"\r\n\r\n")
        headers = data if end < 0 else data[:end]
        utf8 = any(needs_smtputf8(a) for a in [mail_from, *rcpts]) or not headers.isascii()
        return mail_from, ["SMTPUTF8"] if utf8 else []
    if any(needs_smtputf8(a) for a in rcpts):
        return None
    return (ascii_sender if needs_smtputf8(mail_from) else mail_from), []


class SmtpRelay:
    def __init__(self, target: RelayTarget, *, max_idle: int = 16) -> None:
        self.target = target
        self._idle: list[aiosmtplib.SMTP] = []
        self._max_idle = max_idle

    async def _connect(self) -> aiosmtplib.SMTP:
        t = self.target
        client = aiosmtplib.SMTP(hostname=t.host, port=t.port, local_hostname=t.hostname, timeout=t.timeout,
                                 start_tls=t.starttls, use_tls=False)
        await client.connect()
        if t.username and t.oauth2_token is not None:
            token = await asyncio.to_thread(t.oauth2_token)
            blob = base64.b64encode(f"user={t.username}\x01auth=Bearer {token}\x01\x01".encode()).decode()
            response = await client.execute_command(b"AUTH", b"XOAUTH2", blob.encode())
            if response.code != 235:
                raise aiosmtplib.SMTPAuthenticationError(response.code, response.message)
        elif t.username and t.password is not None:
            await client.login(t.username, t.password)
        return client

    async def send(self, mail_from: str, rcpts: list[str], data: bytes) -> Outcome:
        if any(undecodable(a) for a in [mail_from, *rcpts]):
            # Refused at the listener since; a row stored before that can never be sent.
            return Outcome(ok=False, temporary=False, detail="an envelope address is not valid UTF-8")
        client = self._idle.pop() if self._idle else None
        for attempt in range(2):
            fresh = client is None
            try:
                if client is None:
                    client = await self._connect()
                envelope = await _envelope(client, mail_from, rcpts, data, self.target.ascii_sender)
                if envelope is None:
                    await self._discard_or_keep(client, keep=True)
                    return Outcome(ok=False, temporary=False, detail=NO_SMTPUTF8)
                sender, options = envelope
                if len(data) >= STREAM_FROM:
                    errors, response = await sendmail_streamed(client, sender, rcpts, data, mail_options=options,
                                                               timeout=self.target.timeout)
                else:
                    errors, response = await client.sendmail(sender, rcpts, data, mail_options=options)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                await self._discard_or_keep(client, keep=True)
                return refused_outcome(exc.recipients)
            except aiosmtplib.SMTPResponseException as exc:
                await self._discard_or_keep(client, keep=exc.code < 500 or exc.code == 552)
                return classify_reply(exc.code, exc.message)
            except ValueError:
                # aiosmtplib refuses an address it cannot put on a command line safely; so would
                # every later attempt.
                await self._discard_or_keep(client, keep=True)
                return Outcome(ok=False, temporary=False, detail="an envelope address cannot be sent over SMTP")
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
                await self._discard_or_keep(client, keep=False)
                client = None
                if fresh or attempt == 1:
                    return Outcome(ok=False, temporary=True, detail=connection_detail(exc))
                # A cached connection may have been closed by the server while idle: retry once fresh.
                continue
            refused = tuple(sorted(errors))
            if len(self._idle) < self._max_idle:
                self._idle.append(client)
            else:
                await self._discard_or_keep(client, keep=False)
            replies = tuple((rcpt, reply_text(errors[rcpt].code, errors[rcpt].message)) for rcpt in refused)
            return Outcome.sent(reply_text(0, str(response)), refused=refused, replies=replies)
        return Outcome(ok=False, temporary=True, detail="connection failed")

    async def _discard_or_keep(self, client: aiosmtplib.SMTP | None, *, keep: bool) -> None:
        if client is None:
            return
        if keep and client.is_connected and len(self._idle) < self._max_idle:
            try:
                await client.rset()
                self._idle.append(client)
                return
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                pass
        try:
            client.close()
        except Exception:  # noqa: BLE001 - closing a broken connection must not raise
            pass

    async def close(self) -> None:
        while self._idle:
            client = self._idle.pop()
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                client.close()


def refused_outcome(refusals: list[aiosmtplib.SMTPRecipientRefused]) -> Outcome:
    """Every recipient refused at RCPT: temporary only if every refusal was (4xx, or 552 as in
    `classify_reply`); the detail and `replies` carry each recipient's own reply."""
    replies = tuple((e.recipient, reply_text(e.code, e.message)) for e in refusals)
    temporary = all(400 <= e.code < 500 or e.code == 552 for e in refusals)
    detail = "; ".join(f"<{rcpt}>: {text}" for rcpt, text in replies)
    if len(detail) > REPLY_LIMIT:
        detail = detail[: REPLY_LIMIT - 3] + "..."
    return Outcome(ok=False, temporary=temporary, detail=detail, replies=replies)


def connection_detail(exc: BaseException) -> str:
    """What went wrong when no server reply came: the error's class and its own words, escaped."""
    words = str(exc)
    return reply_text(0, f"connection: {exc.__class__.__name__}" + (f": {words}" if words else ""))
