"""How an outbound message leaves: the result of one attempt, classified for retry. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Outcome:
    ok: bool
    temporary: bool = False
    detail: str = ""
    refused: tuple[str, ...] = ()

    @staticmethod
    def sent(detail: str = "250", refused: tuple[str, ...] = ()) -> "Outcome":
        return Outcome(ok=True, detail=detail, refused=refused)


def classify_reply(code: int, text: str = "") -> Outcome:
    """4xx is temporary and 5xx permanent, except 552: RFC 5321 §4.5.3.1.10 says a client should
    treat 552 "too much mail data" as temporary, because recipients' quotas change."""
    detail = f"{code} {text}".strip()[:300]
    if 200 <= code < 300:
        return Outcome.sent(detail)
    if 400 <= code < 500 or code == 552:
        return Outcome(ok=False, temporary=True, detail=detail)
    return Outcome(ok=False, temporary=False, detail=detail)


class Transport(Protocol):
    async def send(self, mail_from: str, rcpts: list[str], data: bytes) -> Outcome: ...

    async def close(self) -> None: ...
