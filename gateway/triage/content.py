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
from dataclasses import dataclass
from datetime import datetime

from gateway.domain.facts import Facts
from gateway.domain.findings import ContentFindings, Flag, Reason, Tone
from gateway.triage.matching import Passage
from gateway.triage.learned import TriageModel, Vector
from gateway.triage.rules import RuleSet
from gateway.triage.signals import hostile_sentiment, language_reason, shouting_reasons, unreadable_reasons

# A subject starting with a reply or forward prefix was written for an earlier message, often by
# staff, so it does not count as the parent's words (RFC 5322 §3.6.5 and common translations).
_REPLY_SUBJECT = re.compile(r"^\s*(re|fwd?|aw|wg|sv|vs|tr|rv|odp|res|enc|r)\s*(\[\d+\])?\s*:", re.IGNORECASE)
MAX_JUDGED = 200_000
# A message in a language the model was not trained on is still judged when at least this share
# of its words were seen in training (romanised Urdu or Punjabi, which identifiers often misname).
WELL_KNOWN_SHARE = 0.45
# Fewer words than this and the model's n-grams are too few to weigh: the rules judge alone.
MODEL_MIN_WORDS = 8
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


@dataclass(frozen=True)
class RuleView:
    """What the rules and measurements found in a message, before the learned model looks at it."""

    text: str
    passage: Passage
    strong: dict[Flag, list[Reason]]
    weak: dict[Flag, list[Reason]]
    shouting: list[Reason]
    hostile: Reason | None
    language: str | None
    foreign: Reason | None

    def signals(self, sent: datetime | None) -> frozenset[str]:
        """The rules' own signals as the learned model's binary features.

        The time of sending is not among them: the training batches are rendered with dates that
        do not depend on their labels (so a model cannot learn the renderer), which leaves only the
        small dev corpora to learn it from, and there it gave spurious weights (a weekend email
        counted against "negative"). `sent` stays in the signature for a model trained on real
        mail with real dates."""
        found = {f"rule:{r.rule}" for hits in (*self.strong.values(), *self.weak.values()) for r in hits}
        if self.shouting:
            found.add("shouting")
        if self.hostile is not None:
            found.add("hostile")
        found.add("lang:" + ("en" if self.language == "en" else "unknown" if self.language is None else "other"))
        return frozenset(found)


def rule_view(facts: Facts, rules: RuleSet) -> RuleView:
    """Every phrase rule and measurement on the parent's own words."""
    text = judged_text(facts)
    passage = Passage.of(text, rules.index)
    strong, weak = _signs(passage, rules)
    thresholds = rules.thresholds
    shouting = shouting_reasons(passage, thresholds)
    hostile = None
    # The sentiment model runs when its one sign would decide the matter, or as the learned
    # model's input when one is loaded.
    negative_weak = len(weak.get(Flag.NEGATIVE, [])) + (1 if shouting else 0)
    if rules.models is not None and not strong.get(Flag.ABUSIVE) and not strong.get(Flag.NEGATIVE) \
            and (rules.model is not None or negative_weak == thresholds.signs_needed[Flag.NEGATIVE] - 1):
        hostile = hostile_sentiment(passage, thresholds, rules.models)
    language, foreign = (None, None)
    if rules.models is not None:
        language, foreign = language_reason(facts.new_text, thresholds, rules.models)
    return RuleView(text=text, passage=passage, strong=strong, weak=weak, shouting=shouting, hostile=hostile,
                    language=language, foreign=foreign)


def classify(facts: Facts, rules: RuleSet) -> ContentFindings:
    """Tone and findings with evidence. Never raises on odd text; unreadable parts become findings."""
    view = rule_view(facts, rules)
    strong, weak, shouting = view.strong, dict(view.weak), view.shouting
    thresholds = rules.thresholds
    # Shouting and hostile sentiment toward staff are each one more warning sign of a negative
    # email, never enough on their own (an all-capitals email may just be how someone types).
    negative_signs = list(weak.get(Flag.NEGATIVE, []))
    if shouting:
        negative_signs.append(Reason(shouting[0].rule, Flag.NEGATIVE, shouting[0].evidence))
    if view.hostile is not None and len(negative_signs) == thresholds.signs_needed[Flag.NEGATIVE] - 1:
        negative_signs.append(view.hostile)
    weak[Flag.NEGATIVE] = negative_signs

    reasons: list[Reason] = []
    found: set[Flag] = set()
    for flag in _ORDER:
        hits, signs = strong.get(flag, []), weak.get(flag, [])
        if hits or (signs and len(signs) >= thresholds.signs_needed[flag]):
            found.add(flag)
            reasons.extend(hits + signs)
    vector = rules.model.vector(view.text) if rules.model is not None else None
    interpreter = None
    if view.foreign is not None and Flag.NEEDS_INTERPRETER not in found:
        interpreter = interpreter_reason(rules, view, vector.words if vector is not None else [])
    # The model judges only what it can read: not a message that needs an interpreter, nor one too
    # short for word statistics to mean anything ("PE on Monday?"), which the rules judge alone.
    if rules.model is not None and vector is not None and interpreter is None \
            and Flag.NEEDS_INTERPRETER not in found and len(vector.words) >= MODEL_MIN_WORDS:
        added = model_reasons(rules.model, view, vector, facts.date, found)
        found.update(r.flag for r in added)
        reasons.extend(added)
        reasons.sort(key=lambda r: _RANK.get(r.flag, len(_RANK)))
    reasons.extend(shouting)

    if view.foreign is not None:
        reasons.append(view.foreign)
        if interpreter is not None:
            reasons.append(interpreter)
    reasons.extend(unreadable_reasons(facts))
    return ContentFindings(tone=_tone(found), reasons=tuple(reasons), language=view.language)


_RANK = {flag: i for i, flag in enumerate(_ORDER)}
_DECIDES = {"safeguarding": Flag.SAFEGUARDING, "abusive": Flag.ABUSIVE, "negative": Flag.NEGATIVE,
            "personal": Flag.PERSONAL, "urgent": Flag.URGENT}


def model_reasons(model: TriageModel, view: RuleView, vector: Vector, sent: datetime | None,
                  found: set[Flag]) -> list[Reason]:
    """What the learned model adds to the rules: a finding the rules missed, with the words that
    weighed most; and, for safeguarding, the lower "possible concern" tier for the DSL's digest.

    The rules stay as they are (precise, explainable); the model only adds recall.
    """
    signals = view.signals(sent)
    added: list[Reason] = []
    scores = model.scores(vector, signals)
    for name, flag in _DECIDES.items():
        if flag in found:
            continue
        decision = model.decisions[name]
        p = scores[name]
        if p >= decision.threshold:
            added.append(Reason(f"model:{name}", flag, model.evidence(name, view.text, vector)
                                + f" (model {p:.2f})"))
        elif decision.possible is not None and p >= decision.possible and flag is Flag.SAFEGUARDING:
            added.append(Reason(f"model:{name}", Flag.POSSIBLE_SAFEGUARDING,
                                model.evidence(name, view.text, vector) + f" (model {p:.2f})"))
    return added


def interpreter_reason(rules: RuleSet, view: RuleView, words: list[tuple[str, int, int]]) -> Reason | None:
    """A message in a language neither the model nor the lexicons cover: an interpreter is needed.

    The model covers the languages it was trained on (enough messages in each); the lexicons cover
    the languages of rules/languages.toml.
    """
    language = view.language
    if language in rules.languages:
        return None
    model = rules.model
    # Trained on enough mail in the language; or (a language identified wrongly, as romanised
    # text often is) most of its words are words the model knows.
    if model is not None and (language in model.languages or model.known_share(words) >= WELL_KNOWN_SHARE):
        return None
    name = language or "an unidentified language"
    return Reason("needs-interpreter", Flag.NEEDS_INTERPRETER,
                  f"written in {name}, which parentgate cannot judge; the office arranges an interpreter")


def _tone(found: set[Flag]) -> Tone:
    if Flag.ABUSIVE in found:
        return Tone.ABUSIVE
    if Flag.NEGATIVE in found:
        return Tone.NEGATIVE
    if Flag.WORRIED in found or Flag.SAFEGUARDING in found:
        return Tone.WORRIED
    return Tone.NEUTRAL
