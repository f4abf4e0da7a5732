"""How an outbound message leaves: the result of one attempt, classified for retry. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


# Long enough for any real server's reply; short enough for outbox.last_error (512) and one log line.
REPLY_LIMIT = 300


@dataclass(frozen=True)
class Outcome:
    """One attempt's result. `detail` is the server's reply (escaped, truncated) or what went wrong;
    `refused` names recipients the server refused at RCPT while it took the message for others, and
    `replies` gives the server's reply for each refused recipient, as (recipient, reply) pairs."""

    ok: bool
    temporary: bool = False
    detail: str = ""
    refused: tuple[str, ...] = ()
    replies: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def sent(detail: str = "250", refused: tuple[str, ...] = (),
             replies: tuple[tuple[str, str], ...] = ()) -> "Outcome":
        return Outcome(ok=True, detail=detail, refused=refused, replies=replies)


def reply_text(code: int, text: str = "", limit: int = REPLY_LIMIT) -> str:
    """A server's reply as one printable ASCII line: "550 5.1.1 <a@b>: no such user".

    The lines of a multi-line reply are joined with spaces; every other control character, backslash
    and non-ASCII character is written as a backslash escape, so the text is safe in a log line, a
    database column and a DSN's Diagnostic-Code field (RFC 3464 §2.3.6) alike.
    """
    joined = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    escaped = "".join(c if " " <= c <= "~" and c != "\\" else _escape(c) for c in joined)
    detail = f"{code} {escaped}".strip() if code else escaped
    return detail if len(detail) <= limit else detail[: limit - 3] + "..."


def _escape(char: str) -> str:
    if char == "\\":
        return "\\\\"
    point = ord(char)
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}" if point < 0x10000 else f"\\U{point:08x}"


def classify_reply(code: int, text: str = "") -> Outcome:
    """4xx is temporary and 5xx permanent, except 552: RFC 5321 §4.5.3.1.10 says a client should
    treat 552 "too much mail data" as temporary, because recipients' quotas change."""
    detail = reply_text(code, text)
    if 200 <= code < 300:
        return Outcome.sent(detail)
    if 400 <= code < 500 or code == 552:
        return Outcome(ok=False, temporary=True, detail=detail)
    return Outcome(ok=False, temporary=False, detail=detail)


class Transport(Protocol):
    async def send(self, mail_from: str, rcpts: list[str], data: bytes) -> Outcome: ...

    async def close(self) -> None: ...
