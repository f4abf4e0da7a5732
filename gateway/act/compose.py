"""Build the messages parentgate itself sends: acknowledgements, review summaries, failure notices.

Everything here turns values into RFC 5322 bytes (CRLF line endings) and
nothing more: no network, no database, no clock (`now` is always passed in).
Every value that reaches a header is reduced to one line first, so text taken
from a parent's message can never add a header field.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from dataclasses import dataclass
from datetime import date, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from gateway.domain.addresses import reply_address
from gateway.domain.facts import Facts

# SMTP's CRLF line endings; RFC 2047 encoded words for non-ASCII header text.
_POLICY = SMTP

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July",
           "August", "September", "October", "November", "December")

# Long enough for any real subject or name; short enough that a hostile value
# cannot turn our reply into a vehicle for someone else's text.
SUBJECT_LIMIT = 200
NAME_LIMIT = 80
EVIDENCE_LIMIT = 200
ERROR_LIMIT = 500

# RFC 5322 §3.6.4 lets us trim a long References chain; keep the first (thread
# root) and the most recent ones, so threading still works in every client.
REFERENCES_LIMIT = 20

# Bidirectional embeddings, overrides and isolates can make a subject display
# differently from what it says; they are removed, other format characters kept.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")

# A msg-id (RFC 5322 §3.6.4) reduced to printable ASCII without spaces.
_MSG_ID = re.compile(r"^<[!-;=?-~]+@[!-;=?-~]+>$")

_LINE_ENDING = re.compile(rb"\r\n|\r|\n")


def one_line(value: str, limit: int | None = None) -> str:
    """`value` with control characters and line breaks turned into spaces, runs of space collapsed.

    Used for every header value and every value rendered into a template: a CR or
    LF in a parent's subject must never start a new header field (header injection).
    """
    chars: list[str] = []
    for char in value:
        if char in _BIDI_CONTROLS:
            continue
        category = unicodedata.category(char)
        # Cc covers C0, DEL and C1 (including NEL); Zl and Zp are U+2028 and U+2029.
        chars.append(" " if category in ("Cc", "Zl", "Zp") else char)
    text = " ".join("".join(chars).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def british_date(d: date, now: date) -> str:
    """"Tuesday 1 December", with the year added only when it is not the year of `now`.

    Names come from fixed English tables, not strftime, so the server's locale cannot change them.
    """
    text = f"{_WEEKDAYS[d.weekday()]} {d.day} {_MONTHS[d.month - 1]}"
    return text if d.year == now.year else f"{text} {d.year}"


def british_datetime(t: datetime) -> str:
    """"Friday 27 November 2026, 17:30" in the timezone `t` carries (which must be aware)."""
    _require_aware(t, "received_at")
    return f"{_WEEKDAYS[t.weekday()]} {t.day} {_MONTHS[t.month - 1]} {t.year}, {t:%H:%M}"


def render_acknowledgement(
    templates_dir: Path,
    template: str,
    *,
    school_name: str,
    parent_name: str | None,
    reply_by: date,
    family_known: bool = True,
    reopen_date: date | None,
    break_name: str | None,
    office_phone: str,
    now: datetime,
    extra: Mapping[str, object] | None = None,
) -> str:
    """The plain-text body of an acknowledgement, rendered from a school-editable template.

    Templates receive only the values below, never the parent's subject or body. `family_known` is
    false when the sender is not in the family directory: the wording must then not assume a parent.
    Dates are given both as British text (`reply_by`, `reopen`) and as dates
    (`reply_by_date`, `reopen_date`, usable with the `british_date` filter).
    """
    values: dict[str, object] = {
        "school_name": one_line(school_name, NAME_LIMIT),
        "parent_name": _optional(parent_name),
        "family_known": family_known,
        "reply_by": british_date(reply_by, now),
        "reply_by_date": reply_by,
        "reopen": british_date(reopen_date, now) if reopen_date else None,
        "reopen_date": reopen_date,
        "break_name": _optional(break_name),
        "office_phone": one_line(office_phone, NAME_LIMIT),
    }
    # A plan's acknowledgement names its reading window; a block notice names the channel instead.
    values.update({k: one_line(v, NAME_LIMIT) if isinstance(v, str) else v for k, v in (extra or {}).items()})
    return _render(templates_dir, template, now, values)


def compose_acknowledgement(
    *,
    original: Facts,
    to_addr: str,
    from_addr: str,
    from_name: str,
    body: str,
    now: datetime,
    message_id: str,
) -> bytes:
    """An RFC 3834 automatic response to `original`, addressed to its envelope sender `to_addr`."""
    msg = _headed_message(
        from_addr=from_addr,
        from_name=from_name,
        to_addr=to_addr,
        subject="Auto: " + (one_line(original.subject, SUBJECT_LIMIT) or "(no subject)"),
        now=now,
        message_id=message_id,
    )
    # RFC 3834 §3.1.5-3.1.7: mark the response as automatic so other responders stay quiet,
    # and thread it under the message it answers (RFC 5322 §3.6.4).
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    original_id = _clean_msg_id(original.message_id)
    if original_id:
        msg["In-Reply-To"] = original_id
    references = _references(original)
    if references:
        msg["References"] = " ".join(references)
    msg["X-Parentgate"] = "acknowledgement"
    _set_text(msg, body)
    return msg.as_bytes(policy=_policy_for(msg))


@dataclass(frozen=True)
class ReasonLine:
    """One finding as the review summary template sees it."""

    rule: str
    evidence: str


def compose_review_summary(
    *,
    original_raw: bytes,
    original: Facts,
    to_addr: str,
    from_addr: str,
    school_name: str,
    reasons: Sequence[tuple[str, str]],
    family: str | None,
    family_count: int,
    half_term: str | None,
    thread_count: int,
    received_at: datetime,
    recipients: Sequence[str],
    message_ref: str,
    now: datetime,
    message_id: str,
    templates_dir: Path,
    console_url: str | None = None,
    reply_to: str | None = None,
    template: str = "review_summary.txt.j2",
    subject_prefix: str = "For review: ",
    kind: str = "review-summary",
    extra: Mapping[str, object] | None = None,
) -> bytes:
    """A multipart/mixed note to the Head of School: why the message is held, with the original attached.

    The same note, from another `template`, takes a communication plan's mail to its reader.

    The original is attached as message/rfc822 from its raw bytes, not re-serialised,
    so it arrives as received apart from line endings, which SMTP requires to be CRLF.
    """
    ref = one_line(message_ref, NAME_LIMIT)
    subject = one_line(original.subject, SUBJECT_LIMIT)
    sender = one_line(original.from_addr, NAME_LIMIT)
    if original.from_name:
        sender = f"{one_line(original.from_name, NAME_LIMIT)} <{sender}>"
    values: dict[str, object] = {
        "school_name": one_line(school_name, NAME_LIMIT),
        "subject": subject or "(no subject)",
        "sender": sender or "(unknown sender)",
        "reasons": [ReasonLine(one_line(r, NAME_LIMIT), one_line(e, EVIDENCE_LIMIT)) for r, e in reasons],
        "family": _optional(family),
        "family_count": family_count,
        "half_term": _optional(half_term),
        "thread_count": thread_count,
        "received": british_datetime(received_at),
        "recipients": [one_line(r, NAME_LIMIT) for r in recipients],
        "message_ref": ref,
        "release_command": f"parentgate review release {ref}",
        "dismiss_command": f'parentgate review dismiss {ref} --note "..."',
        "console_url": console_url,
    }
    values.update({k: one_line(v, NAME_LIMIT) if isinstance(v, str) else v for k, v in (extra or {}).items()})
    summary = _render(templates_dir, template, now, values)

    outer = _headed_message(
        from_addr=from_addr,
        from_name=f"{one_line(school_name, NAME_LIMIT)} (parentgate)",
        to_addr=to_addr,
        subject=subject_prefix + (subject or "(no subject)"),
        now=now,
        message_id=message_id,
    )
    outer["Auto-Submitted"] = "auto-generated"
    outer["X-Auto-Response-Suppress"] = "All"
    outer["X-Parentgate"] = kind
    if reply_to:
        # Replies to the summary go to the Head's own address, not to the postmaster it comes from.
        outer["Reply-To"] = reply_to

    text_part = MIMEPart(policy=_POLICY)
    _set_text(text_part, summary, disposition="inline")
    text_bytes = text_part.as_bytes(policy=_POLICY)

    return with_original_attached(outer, text_bytes, original_raw, message_id)


def with_original_attached(outer: EmailMessage, text_bytes: bytes, original_raw: bytes, message_id: str) -> bytes:
    """`outer`'s headers over a multipart/mixed of a text part and the original message, attached
    from its raw bytes exactly as it was received (message/rfc822)."""
    attached = _LINE_ENDING.sub(b"\r\n", original_raw)
    if not attached.endswith(b"\r\n"):
        attached += b"\r\n"
    # RFC 2046 §5.2.1: message/rfc822 allows only 7bit, 8bit or binary, and RFC 2045 §6.4
    # requires the enclosing multipart to be labelled no less than its parts.
    cte = _identity_encoding(attached)
    boundary = _boundary(message_id, text_bytes, attached)
    outer["MIME-Version"] = "1.0"
    outer["Content-Type"] = f'multipart/mixed; boundary="{boundary}"'
    outer["Content-Transfer-Encoding"] = cte

    delimiter = b"--" + boundary.encode("ascii")
    rfc822_headers = (
        b"Content-Type: message/rfc822\r\n"
        b'Content-Disposition: attachment; filename="original.eml"\r\n'
        b"Content-Transfer-Encoding: " + cte.encode("ascii") + b"\r\n\r\n"
    )
    return b"".join(
        [
            _header_bytes(outer),
            b"\r\nThis is a multi-part message in MIME format.\r\n",
            delimiter + b"\r\n",
            text_bytes,
            b"\r\n" if not text_bytes.endswith(b"\r\n") else b"",
            delimiter + b"\r\n",
            rfc822_headers,
            # The CRLF before a delimiter belongs to the delimiter (RFC 2046 §5.1.1),
            # so one more keeps the original's own final line ending intact.
            attached,
            b"\r\n",
            delimiter + b"--\r\n",
        ]
    )


def compose_failure_notice(
    *,
    original: Facts | None,
    message_ref: str,
    to_addr: str,
    from_addr: str,
    recipients: Sequence[str],
    error: str,
    attempts: int,
    now: datetime,
    message_id: str,
) -> bytes:
    """A short notice to the postmaster that a message could not be delivered.

    It names the message by reference and envelope only; the subject and body
    are personal data and stay in the database, where the operator can look.
    """
    ref = one_line(message_ref, NAME_LIMIT)
    lines = [
        "parentgate could not deliver a message and has stopped retrying it.",
        "The message has not been deleted: it is kept in the failed state.",
        "",
        f"Message ref:  {ref}",
    ]
    if original is not None:
        if original.message_id:
            lines.append(f"Message-ID:   {one_line(original.message_id, SUBJECT_LIMIT)}")
        if original.from_addr:
            lines.append(f"From:         {one_line(original.from_addr, NAME_LIMIT)}")
    lines += [
        f"Recipients:   {', '.join(one_line(r, NAME_LIMIT) for r in recipients) or '(none)'}",
        f"Attempts:     {attempts}",
        f"Last error:   {one_line(error, ERROR_LIMIT) or '(none recorded)'}",
        "",
    ]
    msg = _headed_message(
        from_addr=from_addr,
        from_name="parentgate",
        to_addr=to_addr,
        subject=f"Undelivered message {ref}",
        now=now,
        message_id=message_id,
    )
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Parentgate"] = "failure-notice"
    _set_text(msg, "\n".join(lines))
    return msg.as_bytes(policy=_POLICY)


# The render's clock, passed to each template with its values, for the `british_date` filter.
_NOW = "_parentgate_now"


@pass_context
def _british_date_filter(context: Context, d: date) -> str:
    return british_date(d, context[_NOW])


class _SameTextLoader(FileSystemLoader):
    """A compiled template stays in use only while its file holds the same text. (Jinja's own check
    compares modification times, and two writes within one clock tick of the file system share one.)"""

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Callable[[], bool]]:
        source, filename, _ = super().get_source(environment, template)
        assert filename is not None

        def uptodate() -> bool:
            try:
                with open(filename, "rb") as f:
                    return f.read().decode(self.encoding) == source
            except (OSError, UnicodeError):
                return False

        return source, filename, uptodate


@functools.lru_cache(maxsize=32)
def _environment(templates_dir: str) -> SandboxedEnvironment:
    """One environment per templates directory, so each template is compiled once rather than for
    every reply (compiling was most of the cost of building one). Before each use the template's
    file is read again (`auto_reload`, `_SameTextLoader`), so a school's edit is picked up at once.
    Jinja's environments and their template caches are safe to share between threads."""
    # The sandbox matters because schools edit these files; StrictUndefined makes a
    # misspelt variable fail loudly (and in tests) instead of sending a blank.
    env = SandboxedEnvironment(
        loader=_SameTextLoader(templates_dir),
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=True,
    )
    env.filters["british_date"] = _british_date_filter
    return env


def _render(templates_dir: Path, template: str, now: datetime, values: Mapping[str, object]) -> str:
    text = _environment(str(templates_dir)).get_template(template).render({**values, _NOW: now})
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip("\n") + "\n"


def _optional(value: str | None) -> str | None:
    """A one-line value, or None when there is nothing left to show."""
    if not value:
        return None
    return one_line(value, NAME_LIMIT) or None


def _headed_message(
    *, from_addr: str, from_name: str, to_addr: str, subject: str, now: datetime, message_id: str
) -> EmailMessage:
    _require_aware(now, "now")
    msg_id = _clean_msg_id(message_id)
    if msg_id is None:
        raise ValueError("message_id must look like <left@right>")
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = _address(from_addr, one_line(from_name, NAME_LIMIT))
    msg["To"] = _address(to_addr)
    msg["Subject"] = one_line(subject)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = msg_id
    return msg


def _address(addr_spec: str, display_name: str = "") -> Address | str:
    """An address for a header; ValueError for anything that is not exactly one usable addr-spec.

    Quoted local parts are kept quoted. A non-ASCII address (RFC 6532) is returned as text, because
    `Address` refuses non-ASCII local parts; it then needs no display name to be written safely."""
    text = reply_address(addr_spec)
    if text is None:
        raise ValueError("not a usable email address")
    if not text.isascii():
        if display_name:
            raise ValueError("a display name with a non-ASCII address is not supported")
        return text
    try:
        return Address(display_name=display_name, addr_spec=text)
    except (ValueError, HeaderParseError) as exc:
        raise ValueError("not a usable email address") from exc


def _set_text(part: MIMEPart, body: str, disposition: str | None = None) -> None:
    # Quoted-printable for non-ASCII text: 8bit needs 8BITMIME on every hop, which
    # the downstream server may not offer; ASCII goes as 7bit when lines are short.
    cte = None if body.isascii() else "quoted-printable"
    part.set_content(body, charset="utf-8", cte=cte, disposition=disposition)


def _policy_for(msg: EmailMessage) -> Any:
    """RFC 6532 §3.2: a non-ASCII address is written as UTF-8 in the header (an encoded word is not
    allowed there), and the message then travels only with SMTPUTF8: the relay asks for it, or fails
    permanently with the reason."""
    return _POLICY if str(msg.get("To", "")).isascii() else SMTPUTF8


def _header_bytes(msg: EmailMessage) -> bytes:
    policy = _policy_for(msg)
    return b"".join(policy.fold_binary(name, value) for name, value in msg.items())


def _clean_msg_id(value: str | None) -> str | None:
    if not value:
        return None
    text = one_line(value)
    if not text.startswith("<"):
        text = f"<{text}>"
    return text if _MSG_ID.match(text) else None


def _references(original: Facts) -> list[str]:
    # RFC 5322 §3.6.4: the parent's References (or, failing that, its In-Reply-To)
    # followed by the parent's Message-ID.
    chain = [ref for ref in map(_clean_msg_id, original.references) if ref]
    if not chain:
        parent = _clean_msg_id(original.in_reply_to)
        chain = [parent] if parent else []
    own = _clean_msg_id(original.message_id)
    if own:
        chain.append(own)
    unique = list(dict.fromkeys(chain))
    if len(unique) > REFERENCES_LIMIT:
        unique = unique[:1] + unique[-(REFERENCES_LIMIT - 1):]
    return unique


def _identity_encoding(body: bytes) -> str:
    if b"\x00" in body or any(len(line) > 998 for line in body.split(b"\r\n")):
        return "binary"
    return "7bit" if body.isascii() else "8bit"


def _boundary(seed: str, *parts: bytes) -> str:
    # Derived from the Message-ID rather than random, so the same input gives the same
    # bytes; a counter moves it on in the unlikely event a part contains it.
    digest = hashlib.sha256(seed.encode("utf-8", "replace")).hexdigest()[:24]
    for n in range(1000):
        candidate = f"=_pg_{digest}_{n}"
        if not any(b"--" + candidate.encode("ascii") in part for part in parts):
            return candidate
    raise ValueError("could not find a MIME boundary absent from the message")


def _require_aware(t: datetime, name: str) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
