"""The judgement on what the parent wrote: tone, urgency, safeguarding, personal, language. No I/O here.

Only the sender's new text and their own subject are read: quoted replies, forwarded sections and
signatures were cut by `triage.text`, and a "Re:" subject is the earlier message's subject. Each
finding is a `Reason` naming the rule and quoting the words that decided it.

Tone comes from the phrase rules plus the target of the negativity: VADER sentiment is scored only
on sentences aimed at the school or staff, and counts only as one warning sign, so a parent upset
for their child reaches the teacher while a hostile email reaches the Head of School.
"""

from __future__ import annotations

import re

from gateway.domain.facts import Facts
from gateway.domain.findings import ContentFindings, Flag, Reason, Tone
from gateway.triage.matching import Passage
from gateway.triage.rules import RuleSet
from gateway.triage.signals import hostile_sentiment, language_reason, shouting_reasons, unreadable_reasons

# A subject starting with a reply or forward prefix was written for an earlier message, often by
# staff, so it does not count as the parent's words (RFC 5322 §3.6.5 and common translations).
_REPLY_SUBJECT = re.compile(r"^\s*(re|fwd?|aw|wg|sv|vs|tr|rv|odp|res|enc|r)\s*(\[\d+\])?\s*:", re.IGNORECASE)
MAX_JUDGED = 200_000
# Findings in the order a Head of School should read them.
_ORDER = (Flag.SAFEGUARDING, Flag.ABUSIVE, Flag.NEGATIVE, Flag.PERSONAL, Flag.URGENT, Flag.WORRIED,
          Flag.POSSIBLE_SAFEGUARDING, Flag.NEEDS_INTERPRETER)


def judged_text(facts: Facts) -> str:
    """The words that count: the parent's own subject, then the new text of the body.

    At most `MAX_JUDGED` characters are judged, which bounds the work a hostile message can cause;
    no parent's own words run to that length, and the limit on long messages still counts them all.
    """
    subject = "" if _REPLY_SUBJECT.match(facts.subject) else facts.subject.strip()
    text = f"{subject}\n{facts.new_text}" if subject else facts.new_text
    return text[:MAX_JUDGED]


def _signs(passage: Passage, rules: RuleSet) -> tuple[dict[Flag, list[Reason]], dict[Flag, list[Reason]]]:
    """Strong hits and weak hits (one per rule) from every phrase rule, by finding."""
    strong: dict[Flag, list[Reason]] = {}
    weak: dict[Flag, list[Reason]] = {}
    for rule in rules.rules:
        found = rule.check(passage)
        if found is not None:
            (weak if rule.weak else strong).setdefault(rule.flag, []).append(Reason(rule.name, rule.flag, found))
    return strong, weak


def classify(facts: Facts, rules: RuleSet) -> ContentFindings:
    """Tone and findings with evidence. Never raises on odd text; unreadable parts become findings."""
    passage = Passage.of(judged_text(facts), rules.index)
    strong, weak = _signs(passage, rules)
    thresholds = rules.thresholds
    shouting = shouting_reasons(passage, thresholds)
    # Shouting and hostile sentiment toward staff are each one more warning sign of a negative
    # email, never enough on their own (an all-capitals email may just be how someone types).
    negative_signs = list(weak.get(Flag.NEGATIVE, []))
    if shouting:
        negative_signs.append(Reason(shouting[0].rule, Flag.NEGATIVE, shouting[0].evidence))
    # The sentiment model only runs when its one sign would decide the matter.
    if rules.models is not None and not strong.get(Flag.ABUSIVE) and not strong.get(Flag.NEGATIVE) \
            and len(negative_signs) == thresholds.signs_needed[Flag.NEGATIVE] - 1:
        hostile = hostile_sentiment(passage, thresholds, rules.models)
        if hostile is not None:
            negative_signs.append(hostile)
    weak[Flag.NEGATIVE] = negative_signs

    reasons: list[Reason] = []
    found: set[Flag] = set()
    for flag in _ORDER:
        hits, signs = strong.get(flag, []), weak.get(flag, [])
        if hits or (signs and len(signs) >= thresholds.signs_needed[flag]):
            found.add(flag)
            reasons.extend(hits + signs)
    reasons.extend(shouting)

    language, foreign = (None, None)
    if rules.models is not None:
        language, foreign = language_reason(facts.new_text, thresholds, rules.models)
    if foreign is not None:
        reasons.append(foreign)
    reasons.extend(unreadable_reasons(facts))
    return ContentFindings(tone=_tone(found), reasons=tuple(reasons), language=language)


def _tone(found: set[Flag]) -> Tone:
    if Flag.ABUSIVE in found:
        return Tone.ABUSIVE
    if Flag.NEGATIVE in found:
        return Tone.NEGATIVE
    if Flag.WORRIED in found or Flag.SAFEGUARDING in found:
        return Tone.WORRIED
    return Tone.NEUTRAL
