"""Raw message bytes to `Facts`: headers, addresses, readable body, attachments, defects. No I/O here.

Parsing never raises. mail-parser reads the MIME structure and reports MIME defects; when it
raises, the standard library's parser is used; when that fails too the message is "unparseable"
and its bytes are read as text so that triage can still route on whatever words are there.
Attachment content is never decoded: only its size is recorded, so a 20 MB attachment costs
no more than counting its characters.
"""

from __future__ import annotations

import codecs
import email
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from email.header import decode_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

import mailparser

from gateway.domain.facts import Attachment, Facts
from gateway.triage.text import html_to_text, new_text, normalise

# mail-parser warns on stderr about every MIME subtype it does not extract ("alternative not
# handled"). Those lines are noise to an operator; the defects that matter are in `Facts.defects`.
logging.getLogger("mailparser").addHandler(logging.NullHandler())
logging.getLogger("mailparser").propagate = False

# The most body text kept for triage, in characters.
MAX_TEXT = 1_000_000
_MSG_ID = re.compile(r"<[^<>\s]+>")
_FOLD = re.compile(r"\r?\n[ \t]*")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?")
# Defects the standard library records when a base64 body is damaged: the text is unreliable.
_BODY_DEFECTS = frozenset({"InvalidBase64PaddingDefect", "InvalidBase64CharactersDefect",
                           "InvalidBase64LengthDefect"})
# mail-parser's own categories that are not MIME defects of the body, or are reported by name
# below ("bad-charset", "missing-date").
_NOT_MIME_DEFECTS = frozenset({"CharsetDecodeDefect", "DateHeaderDefect", "ReceivedHeaderDefect"})


class _Defects:
    """An ordered set of defect names, so each appears once in the finding."""

    def __init__(self) -> None:
        self.names: dict[str, None] = {}

    def add(self, name: str) -> None:
        self.names.setdefault(name, None)


def _clean(text: str) -> str:
    """Text safe to store and print as UTF-8: escaped raw bytes re-read as UTF-8 or replaced."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _known_charset(charset: str | None) -> bool:
    if not charset:
        return True
    try:
        codecs.lookup(charset)
        return True
    except (LookupError, ValueError):
        return False


def _decode_bytes(data: bytes, charset: str | None, defects: _Defects) -> str:
    """Bytes in a declared charset; an unknown label falls back to UTF-8, then Windows-1252."""
    if charset and _known_charset(charset):
        try:
            return data.decode(charset)
        except (UnicodeDecodeError, LookupError):
            defects.add("undecodable-body")
            return data.decode(charset, "replace")
    if charset:
        defects.add("bad-charset")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _header_text(value: object, defects: _Defects) -> str:
    """A header value decoded: raw 8-bit bytes as UTF-8 (else Windows-1252), RFC 2047 words decoded."""
    text = str(value)
    try:
        text.encode("ascii")
    except UnicodeEncodeError:
        # The stdlib keeps raw 8-bit header bytes as surrogate escapes (RFC 6532 allows UTF-8 in
        # headers; older clients send Latin-1). Anything else non-ASCII was already text.
        data = text.encode("utf-8", "surrogateescape")
        if any("\udc80" <= char <= "\udcff" for char in text):
            defects.add("raw-8bit-header")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("cp1252", "replace")
    text = _FOLD.sub(" ", text).strip()
    if not _ENCODED_WORD.search(text):
        return text
    try:
        pieces: list[str] = []
        for chunk, charset in decode_header(text):
            if isinstance(chunk, str):
                pieces.append(chunk)
            elif charset is None:
                # decode_header returns the unencoded stretches as raw-unicode-escape bytes.
                pieces.append(chunk.decode("raw-unicode-escape", "replace"))
            elif charset == "unknown-8bit":
                pieces.append(chunk.decode("utf-8", "replace"))
            else:
                if not _known_charset(charset):
                    defects.add("bad-charset")
                    charset = "utf-8"
                pieces.append(chunk.decode(charset, "replace"))
        return "".join(pieces).strip()
    except Exception:
        # A damaged encoded word (bad base64, for example) is shown as sent rather than lost.
        return text


def _headers(message: Message, defects: _Defects) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for name, value in message.raw_items():
        found.setdefault(_clean(str(name)).lower().strip(), []).append(_header_text(value, defects))
    return {name: tuple(values) for name, values in found.items()}


def _addresses(values: tuple[str, ...]) -> list[tuple[str, str]]:
    try:
        pairs = getaddresses(list(values))
    except Exception:
        return []
    return [(name.strip(), addr.strip().lower()) for name, addr in pairs if addr.strip()]


def _date(values: tuple[str, ...], defects: _Defects) -> datetime | None:
    if not values or not values[0].strip():
        defects.add("missing-date")
        return None
    try:
        when = parsedate_to_datetime(values[0])
    except Exception:
        when = None
    if when is None:
        defects.add("bad-date")
        return None
    # RFC 5322 §3.3: "-0000" means the zone is unknown; the stdlib returns a naive time, read as UTC.
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        return when.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        defects.add("bad-date")
        return None


def _raw_size(part: Message) -> int:
    """The attachment's size without decoding it: base64 is four characters for three bytes."""
    payload = part.get_payload(decode=False)
    if not isinstance(payload, str):
        return 0
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    if encoding == "base64":
        chars = len(payload) - sum(payload.count(c) for c in "\r\n \t")
        return max(0, chars * 3 // 4 - payload.rstrip()[-2:].count("="))
    return len(payload)


def _is_attachment(part: Message) -> bool:
    disposition = (part.get_content_disposition() or "").lower()
    if disposition == "attachment" or part.get_filename():
        return True
    return part.get_content_maintype() not in ("text", "multipart", "message")


def _parts(message: Message) -> Iterator[tuple[Message, bool]]:
    """Every leaf part, with whether it sits inside an attached container (a forwarded .eml)."""
    stack: list[tuple[Message, bool]] = [(message, False)]
    while stack:
        part, inside = stack.pop()
        if part.is_multipart():
            payload = part.get_payload()
            children = payload if isinstance(payload, list) else []
            attached = inside or (part.get_content_disposition() or "") == "attachment"
            stack.extend((child, attached) for child in reversed(children) if isinstance(child, Message))
        else:
            yield part, inside


def _attachments(message: Message, defects: _Defects) -> tuple[Attachment, ...]:
    found: list[Attachment] = []
    for part, inside in _parts(message):
        if inside or _is_attachment(part):
            name = part.get_filename() or ""
            found.append(Attachment(filename=_header_text(name, defects) if name else "",
                                    content_type=part.get_content_type().lower(), size=_raw_size(part)))
    return tuple(found)


def _stdlib_bodies(message: Message, defects: _Defects) -> tuple[list[str], list[str]]:
    """Plain and HTML body parts, decoded without ever raising."""
    plain: list[str] = []
    html: list[str] = []
    for part, inside in _parts(message):
        if inside or _is_attachment(part) or part.get_content_maintype() != "text":
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes) or not data:
            continue
        text = _decode_bytes(data, part.get_content_charset(), defects)
        (html if part.get_content_subtype() == "html" else plain).append(text)
    return plain, html


def _body_defects(message: Message, defects: _Defects) -> None:
    """Defects the stdlib found in body parts, some recorded only while mail-parser decoded them."""
    for part in message.walk():
        for defect in getattr(part, "defects", ()):
            name = type(defect).__name__
            if name in _BODY_DEFECTS and part.get_content_maintype() == "text":
                defects.add("undecodable-body")
            defects.add(_mime_defect(name))
        if part.get_content_maintype() == "text" and not part.is_multipart() \
                and not _known_charset(part.get_content_charset()):
            defects.add("bad-charset")


def _unstructured_text(message: Message) -> str:
    """A multipart body whose boundary was never found is one block of text: read it as such."""
    if message.is_multipart() or message.get_content_maintype() != "multipart":
        return ""
    payload = message.get_payload()
    return _clean(payload[:MAX_TEXT]) if isinstance(payload, str) else ""


def _mime_defect(name: str) -> str:
    base = name[:-len("Defect")] if name.endswith("Defect") and name != "Defect" else name
    return "mime-defect:" + _CAMEL.sub("-", base).lower()


def _mailparser_bodies(raw: bytes, defects: _Defects) -> tuple[Message, list[str], list[str]]:
    """The MIME structure and defect report from mail-parser; body text decoded here.

    mail-parser decodes a body with an unknown charset as UTF-8 with replacement characters, which
    loses every accented letter of a Windows-1252 body; `_decode_bytes` tries Windows-1252 next.
    """
    parsed = mailparser.parse_from_bytes(raw)
    message = parsed.message
    if not isinstance(message, Message):
        raise ValueError("mail-parser returned no message")
    for category in sorted(parsed.defects_categories):
        if category not in _NOT_MIME_DEFECTS:
            defects.add(_mime_defect(str(category)))
    for entry in parsed.defects:
        for details in entry.values() if isinstance(entry, dict) else ():
            for detail in details if isinstance(details, list) else ():
                # mail-parser reports a failed charset as "CharsetDecodeDefect: … replacement …".
                if str(detail).startswith("CharsetDecodeDefect") and "replacement" in str(detail):
                    defects.add("undecodable-body")
    plain, html = _stdlib_bodies(message, defects)
    return message, plain, html


def _unparseable(raw: bytes) -> Facts:
    text = normalise(_clean(raw[:MAX_TEXT].decode("utf-8", "replace")))
    return Facts(message_id=None, subject="", from_addr="", from_name="", to=(), cc=(), date=None,
                 in_reply_to=None, references=(), headers={}, text=text, new_text=new_text(text),
                 defects=("unparseable",), size=len(raw))


def _first_id(values: tuple[str, ...]) -> str | None:
    if not values or not values[0].strip():
        return None
    found = _MSG_ID.search(values[0])
    return found.group(0) if found else values[0].strip()


def _build(raw: bytes) -> Facts:
    defects = _Defects()
    try:
        message, plain, html = _mailparser_bodies(raw, defects)
    except Exception:
        defects = _Defects()
        message = email.message_from_bytes(raw)
        plain, html = _stdlib_bodies(message, defects)
    _body_defects(message, defects)
    headers = _headers(message, defects)
    senders = _addresses(headers.get("from", ()))
    from_name, from_addr = senders[0] if senders else ("", "")
    subject = headers.get("subject", ("",))[0]
    plain_text = "\n\n".join(_clean(p) for p in plain if p.strip())
    html_text = "\n\n".join(html_to_text(_clean(h)) for h in html if h.strip())
    text = normalise(plain_text or html_text or _unstructured_text(message))
    if len(text) > MAX_TEXT:
        # No parent writes a megabyte; beyond that it is a pasted log or an attack on the rules.
        text = text[:MAX_TEXT]
        defects.add("truncated-body")
    if "\ufffd" in text:
        defects.add("undecodable-body")
    date = _date(headers.get("date", ()), defects)
    references = tuple(_MSG_ID.findall(" ".join(headers.get("references", ()))))
    return Facts(
        message_id=headers.get("message-id", ("",))[0].strip() or None,
        subject=subject, from_addr=from_addr, from_name=from_name,
        to=tuple(addr for _, addr in _addresses(headers.get("to", ())) if addr),
        cc=tuple(addr for _, addr in _addresses(headers.get("cc", ())) if addr),
        date=date, in_reply_to=_first_id(headers.get("in-reply-to", ())), references=references,
        headers=headers, text=text, new_text=new_text(text), html_only=bool(html_text and not plain_text),
        attachments=_attachments(message, defects), defects=tuple(defects.names), size=len(raw))


def parse_message(raw: bytes) -> Facts:
    """The facts of a message. Never raises: what cannot be read is named in `defects`."""
    try:
        return _build(bytes(raw))
    except Exception:
        return _unparseable(bytes(raw))
