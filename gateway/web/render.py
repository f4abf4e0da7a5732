"""A parent's message made safe to show: plain text with the evidence marked, or sanitised HTML.

Nothing a parent wrote may run or load anything in the Head's browser: text is escaped, HTML-only
mail goes through nh3 with a short list of harmless tags (no scripts, styles, images, frames or
forms; only http, https and mailto links). The page's Content-Security-Policy is the second wall.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage, MIMEPart
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from typing import Iterable

import nh3
from markupsafe import Markup, escape

SAFE_TAGS = {"p", "br", "div", "span", "b", "strong", "i", "em", "u", "ul", "ol", "li", "blockquote",
             "pre", "code", "h1", "h2", "h3", "h4", "table", "thead", "tbody", "tr", "td", "th", "a", "hr"}
SAFE_ATTRIBUTES = {"a": {"href", "title"}, "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}}
# Text longer than this is cut on the page (the original is kept whole and can be released as it is).
TEXT_LIMIT = 200_000


def headers(head: bytes) -> dict[str, str]:
    """Subject, From, To, Cc and Date of a message's header block, decoded (RFC 2047) and on one line.

    A plain scan of the header lines (RFC 5322 §2.2.3 unfolding), not the email package's header
    objects: the queue shows fifty messages at a time, and those cost a third of a millisecond each."""
    wanted = {"subject", "from", "to", "cc", "date"}
    out: dict[str, str] = {}
    name = ""
    for line in head.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            if name in out:
                out[name] += " " + line.strip().decode("utf-8", "replace")
            continue
        field, sep, value = line.partition(b":")
        name = field.strip().lower().decode("ascii", "replace") if sep else ""
        if name in wanted and name not in out:
            out[name] = value.strip().decode("utf-8", "replace")
    return {k: _decoded(v) for k, v in out.items()}


def _decoded(value: str) -> str:
    if "=?" in value:
        try:
            value = str(make_header(decode_header(value)))
        except (LookupError, ValueError, UnicodeError, HeaderParseError):
            pass
    return " ".join(value.split())


@dataclass(frozen=True)
class Attachment:
    index: int
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class Rendered:
    body: Markup
    is_html: bool
    attachments: tuple[Attachment, ...]


def parse(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _content(part: MIMEPart) -> str:
    try:
        value = part.get_content()
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        value = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return value if isinstance(value, str) else ""


def _leaves(msg: EmailMessage) -> list[EmailMessage]:
    return [p for p in msg.walk() if not p.is_multipart()]


def attachments(msg: EmailMessage) -> list[tuple[Attachment, EmailMessage]]:
    found = []
    for index, part in enumerate(_leaves(msg)):
        name = part.get_filename()
        if part.get_content_disposition() == "attachment" or name:
            payload = part.get_payload(decode=True)
            size = len(payload) if isinstance(payload, bytes) else 0
            found.append((Attachment(index, name or f"attachment-{index}", part.get_content_type(), size), part))
    return found


def render(raw: bytes, evidence: Iterable[str]) -> Rendered:
    """The message's own words for the page: text/plain preferred, else sanitised HTML."""
    msg = parse(raw)
    files = tuple(a for a, _ in attachments(msg))
    body = msg.get_body(preferencelist=("plain",))
    if body is not None:
        return Rendered(mark(_content(body)[:TEXT_LIMIT], evidence), False, files)
    html = msg.get_body(preferencelist=("html",))
    if html is not None:
        return Rendered(sanitise(_content(html)[:TEXT_LIMIT], evidence), True, files)
    return Rendered(Markup(""), False, files)


def _pattern(evidence: Iterable[str]) -> re.Pattern[str] | None:
    # Evidence is the phrase a rule matched; in the text it may be split across lines or spaces.
    pieces = sorted({e.strip() for e in evidence if len(e.strip()) >= 3}, key=len, reverse=True)
    alternatives = [r"\s+".join(re.escape(w) for w in p.split()) for p in pieces]
    return re.compile("|".join(alternatives), re.I) if alternatives else None


def mark(text: str, evidence: Iterable[str]) -> Markup:
    """Escaped text with each occurrence of a piece of evidence inside <mark>."""
    pattern = _pattern(evidence)
    if pattern is None:
        return Markup(escape(text))
    out: list[str] = []
    at = 0
    for m in pattern.finditer(text):
        out.append(str(escape(text[at:m.start()])))
        out.append(f"<mark>{escape(m.group(0))}</mark>")
        at = m.end()
    out.append(str(escape(text[at:])))
    return Markup("".join(out))


def sanitise(html: str, evidence: Iterable[str]) -> Markup:
    """HTML reduced to harmless tags; the text between tags has its evidence marked."""
    clean = nh3.clean(html, tags=SAFE_TAGS, attributes=SAFE_ATTRIBUTES, url_schemes={"http", "https", "mailto"},
                      link_rel="noopener noreferrer nofollow", strip_comments=True,
                      clean_content_tags={"script", "style", "iframe", "object", "embed", "noscript", "template"})
    pattern = _pattern(evidence)
    if pattern is None:
        return Markup(clean)
    # Only text outside tags is marked: split on tags and mark the text pieces (already escaped by nh3).
    pieces = re.split(r"(<[^>]*>)", clean)
    return Markup("".join(p if p.startswith("<") else pattern.sub(lambda m: f"<mark>{m.group(0)}</mark>", p)
                          for p in pieces))
