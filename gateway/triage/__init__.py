"""Triage: facts and context in, findings out. Pure: no database, network, asyncio or clock.

This is the same code behind the daemon's triage worker and the `triage` command.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.domain.facts import Facts
from gateway.domain.findings import ContentFindings, Findings
from gateway.triage.content import classify
from gateway.triage.limits import Limits, limit_reasons, word_count
from gateway.triage.rules import RuleSet


@dataclass(frozen=True)
class Context:
    """What triage knows beyond the message: the family, its count this half-term, the thread.

    Counts include the message being triaged (the 6th message has family_count == 6).
    """

    family: str | None
    family_label: str
    family_count: int
    half_term: str | None
    thread_count: int
    limits: Limits


def triage(facts: Facts, context: Context, rules: RuleSet) -> Findings:
    return combine(facts, classify(facts, rules), context)


def combine(facts: Facts, content: ContentFindings, context: Context) -> Findings:
    """The content judgement plus the limits that depend on the family's and the thread's counts."""
    words = word_count(facts.new_text)
    reasons = content.reasons + limit_reasons(
        limits=context.limits, family_label=context.family_label, family_count=context.family_count,
        half_term=context.half_term, thread_count=context.thread_count, words=words)
    return Findings(tone=content.tone, reasons=reasons, language=content.language, family=context.family,
                    family_count=context.family_count, half_term=context.half_term,
                    thread_count=context.thread_count, words=words)
