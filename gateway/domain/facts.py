"""What a parsed message says, as plain frozen data. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class Facts:
    """Everything triage may look at. Built once from the raw bytes by `triage.facts.parse_message`.

    `headers` maps lower-cased header names to every value seen (decoded, unfolded).
    `text` is the readable body (plain part, or HTML converted to text); `new_text` is what the
    sender wrote in this message: quoted replies, forwarded sections and signatures removed.
    `defects` names what could not be read ("bad-charset", "undecodable-body", ...).
    """

    message_id: str | None
    subject: str
    from_addr: str
    from_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    date: datetime | None
    in_reply_to: str | None
    references: tuple[str, ...]
    headers: dict[str, tuple[str, ...]] = field(hash=False, compare=False)
    text: str = ""
    new_text: str = ""
    html_only: bool = False
    attachments: tuple[Attachment, ...] = ()
    defects: tuple[str, ...] = ()
    size: int = 0

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None
