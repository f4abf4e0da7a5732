"""A stand-in for the school's mail server that refuses chosen recipients, as a real one refuses unknown
users, and records every RCPT it is asked (so tests can count recipient probes)."""

from __future__ import annotations

import threading
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller

from tests.support import Received, free_port


class PickySink:
    """Answers `rcpt_replies[address]` at RCPT for the listed addresses (250 for others), and
    `data_replies[sender]` at DATA for mail from the listed envelope senders; keeps every accepted
    message and every RCPT asked."""

    def __init__(self, rcpt_replies: dict[str, str] | None = None,
                 data_replies: dict[str, str] | None = None) -> None:
        self.rcpt_replies = dict(rcpt_replies or {})
        self.data_replies = dict(data_replies or {})
        self.received: list[Received] = []
        self.rcpt_asked: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler:
            async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                                  options: list[str]) -> str:
                with outer.lock:
                    outer.rcpt_asked.append((_sender(envelope), address))
                reply = outer.rcpt_replies.get(address.lower())
                if reply is not None:
                    return reply
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                reply = outer.data_replies.get(_sender(envelope))
                if reply is not None:
                    return reply
                with outer.lock:
                    outer.received.append(Received(_sender(envelope), list(envelope.rcpt_tos),
                                                   bytes(envelope.original_content)))
                return "250 2.0.0 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, server_hostname="school-mx.test")

    def start(self) -> "PickySink":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if address in r.rcpts]

    def reports_to(self, address: str) -> list[Received]:
        """The delivery status notifications that reached `address`."""
        return [r for r in self.to(address)
                if message_from_bytes(r.data, policy=default_policy).get_content_type() == "multipart/report"]

    def probes_for(self, address: str) -> int:
        """How often `address` was asked at RCPT from the null sender (a recipient probe does that)."""
        with self.lock:
            return sum(1 for sender, rcpt in self.rcpt_asked if sender == "" and rcpt.lower() == address.lower())


def _sender(envelope: Any) -> str:
    """The envelope sender, with the null reverse-path (aiosmtpd gives "<>") as ""."""
    sender = envelope.mail_from or ""
    return "" if sender == "<>" else sender
