"""What triage concluded about a message, with the evidence for each conclusion. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Tone(str, Enum):
    NEUTRAL = "neutral"
    WORRIED = "worried"
    NEGATIVE = "negative"
    ABUSIVE = "abusive"


class Route(str, Enum):
    STAFF = "staff"
    OFFICE = "office"
    DSL = "dsl"
    HEAD_OF_SCHOOL = "head_of_school"
    BLOCKED = "blocked"


class Flag(str, Enum):
    """Kinds of finding. The value is what appears in `flags`, the database and the UI."""

    SAFEGUARDING = "safeguarding"
    URGENT = "urgent"
    PERSONAL = "personal"
    NEGATIVE = "negative"
    ABUSIVE = "abusive"
    WORRIED = "worried"
    SHOUTING = "shouting"
    NON_ENGLISH = "non_english"
    UNREADABLE = "unreadable"
    MALFORMED = "malformed"
    FAMILY_LIMIT = "family_limit"
    THREAD_LIMIT = "long_thread"
    LONG_MESSAGE = "long_message"
    AUTOMATED = "automated"
    # Not parents' mail (a colleague, a passthrough domain or recipient): delivered untouched.
    PASSTHROUGH = "passthrough"
    # Below the DSL route's threshold but above a lower one: delivered as usual, and listed in the
    # DSL's digest (08:00 and 13:00 on school days) with the evidence.
    POSSIBLE_SAFEGUARDING = "possible-safeguarding"
    # Written in a language triage cannot judge: never silently routine; the office gets a copy to
    # arrange interpretation (policy 001).
    NEEDS_INTERPRETER = "needs-interpreter"
    # The family is on a communication plan (policy 003): held for the reading window, then to the reader.
    COMMUNICATION_PLAN = "communication-plan"
    # The sender is blocked (policy 003): kept, delivered to nobody (the DSL still gets a disclosure).
    BLOCKED_SENDER = "blocked-sender"


@dataclass(frozen=True)
class Reason:
    """One rule's hit: the rule's stable kebab-case name, what it found, and the words or count."""

    rule: str
    flag: Flag
    evidence: str


@dataclass(frozen=True)
class ContentFindings:
    """The judgement on what the parent wrote (tone, urgency, safeguarding, personal, language)."""

    tone: Tone
    reasons: tuple[Reason, ...]
    language: str | None = None

    @property
    def flags(self) -> frozenset[Flag]:
        return frozenset(r.flag for r in self.reasons)


@dataclass(frozen=True)
class Findings:
    """Everything triage concluded: content judgement plus limits (counts, thread, length)."""

    tone: Tone
    reasons: tuple[Reason, ...]
    language: str | None
    family: str | None
    family_count: int
    half_term: str | None
    thread_count: int
    words: int

    @property
    def flags(self) -> tuple[str, ...]:
        seen: list[str] = []
        for reason in self.reasons:
            if reason.flag.value not in seen:
                seen.append(reason.flag.value)
        return tuple(seen)

    def has(self, flag: Flag) -> bool:
        return any(r.flag is flag for r in self.reasons)
