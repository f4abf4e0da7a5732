"""The Head of School's own reply to a parent, written in the console: threaded to the parent's message."""

from __future__ import annotations

import re
from datetime import datetime
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, getaddresses

_MSG_ID = re.compile(r"<[^<>\s]+>")


def parent_address(raw: bytes, envelope_sender: str) -> str:
    """Where a reply goes: Reply-To, else From (RFC 5322 §3.6.2), else the envelope sender."""
    head = message_from_bytes(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", policy=policy.compat32)
    for name in ("Reply-To", "From"):
        for _, addr in getaddresses([str(v) for v in head.get_all(name, [])]):
            if "@" in addr:
                return addr
    return envelope_sender


def compose_reply(*, original_raw: bytes, from_addr: str, from_name: str, to_addr: str, body: str,
                  now: datetime, message_id: str) -> bytes:
    """A plain-text reply with In-Reply-To and References (RFC 5322 §3.6.4) to the parent's message."""
    head = message_from_bytes(original_raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", policy=policy.compat32)
    subject = " ".join(str(head.get("Subject", "")).split())[:200]
    original_id = _MSG_ID.search(str(head.get("Message-ID", "")))
    references = _MSG_ID.findall(str(head.get("References", "")))[-10:]
    msg = EmailMessage()
    msg["From"] = Address(from_name, addr_spec=from_addr)
    msg["To"] = to_addr
    msg["Subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}".strip()
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id
    if original_id:
        msg["In-Reply-To"] = original_id.group(0)
        msg["References"] = " ".join(references + [original_id.group(0)])
    msg["X-Parentgate"] = "head-reply"
    msg.set_content(body, charset="utf-8", cte=None if body.isascii() else "quoted-printable")
    return msg.as_bytes(policy=SMTP if to_addr.isascii() else SMTPUTF8)


def compose_forward(*, original_raw: bytes, from_addr: str, to_addr: str, note: str,
                    reasons: list[tuple[str, str]], now: datetime, message_id: str) -> bytes:
    """The Head's note to the DSL with the parent's message attached as it came (message/rfc822)."""
    head = message_from_bytes(original_raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", policy=policy.compat32)
    subject = " ".join(str(head.get("Subject", "")).split())[:200]
    msg = EmailMessage()
    msg["From"] = from_addr
    msg["To"] = to_addr
    msg["Subject"] = f"For the DSL: {subject}".strip()
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Parentgate"] = "dsl-forward"
    why = "\n".join(f"  - {rule}: {evidence}" for rule, evidence in reasons) or "  (no reasons recorded)"
    text = (f"{from_addr} has forwarded this message to you from the school's email console.\n\n"
            f"Their note:\n{note}\n\nWhy it was held:\n{why}\n\nThe original message is attached as it was received.\n")
    msg.set_content(text, charset="utf-8", cte=None if text.isascii() else "quoted-printable")
    msg.add_attachment(message_from_bytes(original_raw, policy=policy.SMTP), filename="original.eml")
    return msg.as_bytes(policy=SMTP)


def compose_dsl_copy(*, original_raw: bytes, from_addr: str, to_addr: str, reasons: list[tuple[str, str]],
                     safeguarding_url: str, now: datetime, message_id: str) -> bytes:
    """The DSL's copy of a safeguarding message: why it was sent (the evidence) above the original,
    which is attached from its raw bytes (message/rfc822, RFC 2046 §5.2.1), and a link to the
    console's Safeguarding page."""
    from gateway.act.compose import one_line, with_original_attached
    head = message_from_bytes(original_raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", policy=policy.compat32)
    subject = one_line(str(head.get("Subject", "")), 200)
    sender = one_line(str(head.get("From", "")), 200)
    outer = EmailMessage()
    outer["From"] = Address("School email gateway", addr_spec=from_addr)
    outer["To"] = to_addr
    outer["Subject"] = f"Safeguarding: {subject}".strip()
    outer["Date"] = format_datetime(now)
    outer["Message-ID"] = message_id
    outer["Auto-Submitted"] = "auto-generated"
    outer["X-Parentgate"] = "dsl-copy"
    why = "\n".join(f"  - {one_line(rule, 80)}: \"{one_line(evidence, 300)}\"" for rule, evidence in reasons)
    text = (f"This message from {sender} was sent to you at once as the\n"
            f"Designated Safeguarding Lead, because of these words in it:\n{why or '  (no reasons recorded)'}\n\n"
            f"The addressed member of staff also receives it in school hours.\n"
            f"To record that you have seen it, open the Safeguarding page:\n  {safeguarding_url}\n\n"
            f"The original message is attached exactly as it was received.\n")
    text_part = EmailMessage()
    text_part.set_content(text, charset="utf-8", cte=None if text.isascii() else "quoted-printable")
    text_bytes = text_part.as_bytes(policy=SMTP)
    return with_original_attached(outer, text_bytes, original_raw, message_id)
