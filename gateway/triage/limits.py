"""Findings from counts: the family's messages this half-term, the thread's length, the message's length.

No I/O here: the counts are gathered by the store and passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.domain.findings import Flag, Reason

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


@dataclass(frozen=True)
class Limits:
    family_messages_per_half_term: int
    thread_messages: int
    long_message_words: int


def word_count(text: str) -> int:
    return sum(1 for _ in _WORD.finditer(text))


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def limit_reasons(*, limits: Limits, family_label: str, family_count: int, half_term: str | None,
                  thread_count: int, words: int) -> tuple[Reason, ...]:
    """The policy's "over five emails in a half-term", "unmanageable trail" and "complicated" lines."""
    reasons: list[Reason] = []
    if family_count > limits.family_messages_per_half_term:
        period = f" ({half_term})" if half_term else ""
        reasons.append(Reason("family-half-term-limit", Flag.FAMILY_LIMIT,
                              f"{ordinal(family_count)} message from {family_label} this half-term{period}; "
                              f"the limit is {limits.family_messages_per_half_term}"))
    if thread_count > limits.thread_messages:
        reasons.append(Reason("long-thread", Flag.THREAD_LIMIT,
                              f"{ordinal(thread_count)} message in this thread; "
                              f"the limit is {limits.thread_messages}"))
    if words > limits.long_message_words:
        reasons.append(Reason("long-message", Flag.LONG_MESSAGE,
                              f"{words} words of new text; the limit is {limits.long_message_words}"))
    return tuple(reasons)
