"""Build delivery status notifications (RFC 3464 bounces) for mail that could not be delivered.

Pure: values in, RFC 5322 bytes out (CRLF line endings); no network, no database, no clock. It lives
beside `compose.py` (whose header helpers it shares) rather than inside it, because a DSN has its own
grammar (RFC 3464 §2) and `compose.py` is already the longest module of `act/`.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import MIMEPart
from email.utils import format_datetime

from gateway.act.compose import (_POLICY, NAME_LIMIT, SUBJECT_LIMIT, _boundary, _clean_msg_id, _header_bytes,
                                 _headed_message, _identity_encoding, _set_text, british_datetime,
                                 one_line)
from gateway.domain.facts import Facts

# The leading SMTP reply code and, when the server sent one, its enhanced status code (RFC 3463 §2,
# RFC 2034 §4): "550 5.1.1 <a@b>: no such user".
_REPLY = re.compile(r"^([2-5])\d\d(?:[ -]([245])\.(\d{1,3})\.(\d{1,3})(?![.\d]))?")

# The original's header block is returned, not its body (RFC 3462 text/rfc822-headers); a header
# section larger than this is cut at a line boundary, so a DSN stays small whatever it answers.
HEADERS_LIMIT = 64 * 1024
DIAGNOSTIC_LIMIT = 500

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LINE_ENDING = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class FailedRecipient:
    """One recipient the message could not reach, with what the server said (escaped, one line)."""

    address: str
    reply: str


def dsn_status(reply: str, *, expired: bool) -> str:
    """The RFC 3463 status for a failed recipient: the enhanced code the server gave, if any;
    otherwise 4.4.7 "delivery time expired" when the lifetime ran out, else 5.0.0."""
    match = _REPLY.match(reply)
    if match and match.group(2):
        return f"{match.group(2)}.{match.group(3)}.{match.group(4)}"
    return "4.4.7" if expired else "5.0.0"


def diagnostic_code(reply: str) -> str:
    """RFC 3464 §2.3.6: "smtp; <reply>" for a server's reply, an X- type for our own words
    (a refused connection has no SMTP reply to quote), as Postfix writes "X-Postfix;"."""
    text = one_line(reply, DIAGNOSTIC_LIMIT).encode("ascii", "replace").decode("ascii")
    if _REPLY.match(text):
        return f"smtp; {text}"
    return f"X-Parentgate; {text or 'no reply from the mail server'}"


def compose_dsn(
    *,
    original_raw: bytes,
    original: Facts | None,
    to_addr: str,
    from_addr: str,
    school_name: str,
    office_phone: str,
    reporting_mta: str,
    arrival: datetime,
    failures: Sequence[FailedRecipient],
    expired: bool,
    now: datetime,
    message_id: str,
) -> bytes:
    """A multipart/report; report-type=delivery-status (RFC 3464 §2, RFC 6522) to the envelope sender
    `to_addr`: a plain-English explanation, the machine-readable status of each failed recipient, and
    the original's header section (not its body: the sender has that, and it may be large).

    `arrival` is shown to the sender in the timezone it carries (give it the school's)."""
    if not failures:
        raise ValueError("a DSN needs at least one failed recipient")
    school = one_line(school_name, NAME_LIMIT)
    subject = one_line(original.subject, SUBJECT_LIMIT) if original is not None else ""
    outer = _headed_message(
        from_addr=from_addr,
        from_name=f"Mail Delivery System ({school})" if school else "Mail Delivery System",
        to_addr=to_addr,
        subject="Undelivered: " + (subject or "your message"),
        now=now,
        message_id=message_id,
    )
    # RFC 3834 §5 asks automatic responses to say so; the null reverse-path of the envelope (RFC 5321
    # §4.5.5) is what stops a DSN from ever being answered with another one.
    outer["Auto-Submitted"] = "auto-replied"
    outer["X-Auto-Response-Suppress"] = "All"
    original_id = _clean_msg_id(original.message_id) if original is not None else None
    if original_id:
        outer["In-Reply-To"] = original_id
        outer["References"] = original_id
    outer["X-Parentgate"] = "dsn"

    text_part = MIMEPart(policy=_POLICY)
    _set_text(text_part, _explanation(school, subject, arrival, failures, expired, office_phone))
    text_bytes = text_part.as_bytes(policy=_POLICY)
    status_bytes = _delivery_status(reporting_mta, arrival, failures, expired, now)
    headers = _original_headers(original_raw)
    cte = _identity_encoding(headers)
    boundary = _boundary(message_id, text_bytes, status_bytes, headers)
    outer["MIME-Version"] = "1.0"
    outer["Content-Type"] = f'multipart/report; report-type=delivery-status; boundary="{boundary}"'
    outer["Content-Transfer-Encoding"] = cte

    delimiter = b"--" + boundary.encode("ascii")
    return b"".join([
        _header_bytes(outer),
        b"\r\nThis is a delivery status notification in MIME format.\r\n",
        delimiter + b"\r\n",
        text_bytes,
        b"" if text_bytes.endswith(b"\r\n") else b"\r\n",
        delimiter + b"\r\n",
        b"Content-Type: message/delivery-status\r\n",
        b"Content-Description: Delivery report\r\n\r\n",
        status_bytes,
        delimiter + b"\r\n",
        b"Content-Type: text/rfc822-headers\r\n",
        b"Content-Description: Undelivered message headers\r\n",
        b"Content-Transfer-Encoding: " + cte.encode("ascii") + b"\r\n\r\n",
        headers,
        delimiter + b"--\r\n",
    ])


def _explanation(school: str, subject: str, arrival: datetime, failures: Sequence[FailedRecipient],
                 expired: bool, office_phone: str) -> str:
    """The part a parent reads: which address failed, what the server said, that nobody there has the
    message, and what to do. Wrapped to short lines, so it travels as plain 7bit text."""
    one = len(failures) == 1
    paragraphs = [
        f"This is an automatic message from the mail system of {school or 'the school'}.",
        "Your email" + (f' "{subject}"' if subject else "") + f" (received {british_datetime(arrival)}) "
        + "could NOT be delivered to " + ("this address:" if one else "these addresses:"),
    ]
    lines = _wrap(paragraphs)
    for failure in failures:
        lines.append("")
        lines += _wrap([one_line(failure.address, NAME_LIMIT)], indent="    ")
        said = one_line(failure.reply, DIAGNOSTIC_LIMIT)
        if said:
            label = "The school's mail server said:" if _REPLY.match(said) else "What went wrong:"
            lines += _wrap([label], indent="    ")
            lines += _wrap([said], indent="      ")
    after = []
    if expired:
        after.append("We kept trying to deliver it for as long as mail is kept for retries, but the school's "
                     "mail server did not accept it, so we have stopped trying.")
    after.append(f"Nobody at {'that address' if one else 'those addresses'} has received your message. If you had "
                 "an automatic acknowledgement promising a reply, it does not apply to "
                 + ("this address." if one else "these addresses."))
    after.append("Please check the address for mistakes and send your message again.")
    phone = one_line(office_phone, NAME_LIMIT)
    if phone:
        after.append(f"If it is urgent, please telephone the school office on {phone}.")
    after.append("The technical details below are for your email provider.")
    return "\n".join(lines + [""] + _wrap(after)) + "\n"


def _wrap(paragraphs: Sequence[str], indent: str = "") -> list[str]:
    lines: list[str] = []
    for n, paragraph in enumerate(paragraphs):
        if n and not indent:
            lines.append("")
        lines += textwrap.wrap(paragraph, width=76, initial_indent=indent, subsequent_indent=indent,
                               break_on_hyphens=False) or [""]
    return lines


def _delivery_status(reporting_mta: str, arrival: datetime, failures: Sequence[FailedRecipient],
                     expired: bool, now: datetime) -> bytes:
    """The message/delivery-status body: per-message fields, then one block per recipient, each
    block ended by a blank line (RFC 3464 §2.1). Every value is one line of ASCII."""
    mta = _ascii(reporting_mta, NAME_LIMIT) or "localhost"
    blocks = [[f"Reporting-MTA: dns; {mta}", f"Arrival-Date: {format_datetime(arrival)}"]]
    for failure in failures:
        blocks.append([
            f"Final-Recipient: rfc822; {_ascii(failure.address, 320)}",
            "Action: failed",
            f"Status: {dsn_status(failure.reply, expired=expired)}",
            f"Diagnostic-Code: {diagnostic_code(failure.reply)}",
            f"Last-Attempt-Date: {format_datetime(now)}",
        ])
    return b"".join(("\r\n".join(block) + "\r\n\r\n").encode("ascii") for block in blocks)


def _original_headers(raw: bytes) -> bytes:
    """The original's header section with CRLF line endings, ending in CRLF (no blank line)."""
    match = _HEADER_END.search(raw)
    head = raw[: match.start()] if match else raw
    if len(head) > HEADERS_LIMIT:
        head = head[:HEADERS_LIMIT].rsplit(b"\n", 1)[0]
    head = _LINE_ENDING.sub(b"\r\n", head).rstrip(b"\r\n")
    return head + b"\r\n" if head else b""


def _ascii(value: str, limit: int) -> str:
    return one_line(value, limit).encode("ascii", "replace").decode("ascii")
