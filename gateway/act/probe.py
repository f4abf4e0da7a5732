"""Recipient verification against the school's mail server: a cached RCPT probe, as Postfix's
reject_unverified_recipient does, so that mail to a mistyped address is refused before it is accepted.

The probe connects to the smarthost, says EHLO, MAIL FROM:<>, RCPT TO:<address>, then QUIT: no
message is ever sent. Only a permanent refusal (5xx at RCPT) refuses mail; anything else the probe
cannot settle (connection refused, a timeout, 4xx, a refused null sender) lets the mail in, because
parentgate stores, retries and, if need be, bounces it with a DSN: a school's mail server being down
must never turn parents' mail away.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Callable

import aiosmtplib

from gateway.act.transport import reply_text
from gateway.clock import Clock
from gateway.config import Config

log = logging.getLogger("parentgate.probe")

# Postfix's address_verify_positive_expire_time is 31 days and its negative one 3 days; a school's
# staff list changes more often than an ISP's, and a new teacher must not wait, so both are shorter.
POSITIVE_TTL = timedelta(days=1)
NEGATIVE_TTL = timedelta(hours=1)
# An answer the probe could not get is remembered briefly, so that an unreachable server costs one
# timeout a minute per address rather than one per RCPT.
UNKNOWN_TTL = timedelta(minutes=1)
PROBE_TIMEOUT = 5.0
CACHE_SIZE = 10_000


class Verdict(str, Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Answer:
    verdict: Verdict
    reply: str
    until: datetime


def refusal_for(address: str) -> str:
    """The reply to the sending client for a recipient the school's server refuses (RFC 3463 5.1.1)."""
    safe = "".join(c for c in address if " " < c < "\x7f" and c not in "<>")[:254]
    return f"550 5.1.1 <{safe}>: recipient rejected by the school's mail server"


class RecipientVerifier:
    """Answers whether the smarthost accepts a recipient, from a bounded cache or a fresh probe.

    Active only while the configuration says `[smtp] verify_recipients = "downstream"` (and
    `[delivery] mode = "smtp"`), read on every call so that a reload takes effect at once.
    """

    def __init__(self, config: Callable[[], Config], clock: Clock, *, timeout: float = PROBE_TIMEOUT,
                 max_entries: int = CACHE_SIZE) -> None:
        self._config = config
        self._clock = clock
        self._timeout = timeout
        self._max_entries = max_entries
        self._cache: OrderedDict[str, Answer] = OrderedDict()
        # Concurrent RCPTs for one address share one probe.
        self._pending: dict[str, asyncio.Task[Answer]] = {}
        self.probes = 0

    def active(self) -> bool:
        config = self._config()
        return config.smtp.verify_recipients == "downstream" and config.delivery.mode == "smtp"

    async def refusal(self, address: str) -> str | None:
        """The reply refusing `address`, or None to accept it (verified, unknown, or verification off)."""
        if not self.active():
            return None
        answer = await self.check(address)
        return refusal_for(address) if answer.verdict is Verdict.REJECTED else None

    async def check(self, address: str) -> Answer:
        key = address.lower()
        now = self._clock.now()
        cached = self._cache.get(key)
        if cached is not None and cached.until > now:
            self._cache.move_to_end(key)
            return cached
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._probe_and_remember(key, address))
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        # Shielded: a client that hangs up mid-probe must not cancel the probe others wait for.
        return await asyncio.shield(task)

    async def _probe_and_remember(self, key: str, address: str) -> Answer:
        verdict, reply = await self._probe(address)
        ttl = {Verdict.ACCEPTED: POSITIVE_TTL, Verdict.REJECTED: NEGATIVE_TTL, Verdict.UNKNOWN: UNKNOWN_TTL}[verdict]
        answer = Answer(verdict, reply, self._clock.now() + ttl)
        self._cache[key] = answer
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        if verdict is Verdict.REJECTED:
            log.info("recipient probe: the school's mail server refuses a recipient: %s", reply)
        elif verdict is Verdict.UNKNOWN:
            log.warning("recipient probe could not verify a recipient, accepting it: %s", reply)
        return answer

    async def _probe(self, address: str) -> tuple[Verdict, str]:
        config = self._config()
        self.probes += 1
        client = aiosmtplib.SMTP(hostname=config.delivery.smarthost_host, port=config.delivery.smarthost_port,
                                 local_hostname=config.smtp.hostname, timeout=self._timeout, start_tls=False,
                                 use_tls=False)
        try:
            await client.connect()
            await client.mail("")
            response = await client.rcpt(address)
            return Verdict.ACCEPTED, reply_text(response.code, response.message)
        except aiosmtplib.SMTPRecipientRefused as exc:
            # Only a permanent refusal of the recipient itself is an answer; 552 is treated as
            # temporary, as in delivery (RFC 5321 §4.5.3.1.10).
            rejected = 500 <= exc.code < 600 and exc.code != 552
            return (Verdict.REJECTED if rejected else Verdict.UNKNOWN), reply_text(exc.code, exc.message)
        except aiosmtplib.SMTPResponseException as exc:
            return Verdict.UNKNOWN, reply_text(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            return Verdict.UNKNOWN, reply_text(0, f"connection: {exc.__class__.__name__}")
        except Exception as exc:  # noqa: BLE001 - e.g. an address aiosmtplib cannot write: never refuse for it
            return Verdict.UNKNOWN, reply_text(0, f"probe: {exc.__class__.__name__}")
        finally:
            await _quit(client)


async def _quit(client: aiosmtplib.SMTP) -> None:
    if not client.is_connected:
        return
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
        client.close()
