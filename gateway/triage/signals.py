"""Measured signals: shouting, hostile sentiment aimed at staff, language, unreadable mail. No I/O here.

Unlike phrase rules these are measurements (a share of capitals, a sentiment score, a language
probability, a parse defect); each still becomes a `Reason` with a rule name and evidence.
"""

from __future__ import annotations

import re

from gateway.domain.facts import Facts
from gateway.domain.findings import Flag, Reason
from gateway.triage.matching import Passage, evidence
from gateway.triage.models import Models
from gateway.triage.thresholds import Thresholds

_NOT_LETTERS = re.compile(r"[\W\d_]+")
_WORD = re.compile(r"[^\W\d_][^\W\d_'&]*")
_EXCLAMATIONS = re.compile(r"!{2,}")
# Capital letters of the Latin, Greek and Cyrillic alphabets; other scripts have no capitals.
_CAPITALS = "A-Z\u00c0-\u00d6\u00d8-\u00de\u0391-\u03a9\u0400-\u042f"
_NOT_CAPITALS = re.compile(f"[^{_CAPITALS}]+")
_CAPITAL_WORD = re.compile(f"(?<![\\w'])[{_CAPITALS}][{_CAPITALS}'&]+(?![\\w'])")
# English function words that are not also common words in the languages families write in.
_ENGLISH_WORDS = frozenset("""the and is was you your my for it with this that are be have has had
    been will would could can just so of to she he her his they them we our not but what if at
    from there their about should which when were do does did i'm i've it's don't""".split())
_PUNCTUATION = ".,;:!?()[]\"'*-"
# Enough text to tell a language apart; the model's cost grows with the length.
_LANGUAGE_SAMPLE = 600

_LANGUAGE_NAMES = {
    "ar": "Arabic", "bg": "Bulgarian", "bn": "Bengali", "cs": "Czech", "de": "German", "es": "Spanish",
    "fa": "Persian", "fr": "French", "hi": "Hindi", "hu": "Hungarian", "it": "Italian", "lt": "Lithuanian",
    "lv": "Latvian", "nl": "Dutch", "pa": "Punjabi", "pl": "Polish", "ps": "Pashto", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "so": "Somali", "sq": "Albanian", "ta": "Tamil",
    "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "zh": "Chinese",
}

# What each defect from `triage.facts` means, in words for the Head of School and IT.
_DEFECTS = {
    "unparseable": "the message structure could not be read; its bytes were read as plain text",
    "bad-charset": "the body names a character set that does not exist; it was read as UTF-8 or Windows-1252",
    "undecodable-body": "part of the body could not be decoded; some characters are missing",
    "raw-8bit-header": "a header holds unencoded 8-bit characters; they were read as UTF-8 or Windows-1252",
    "missing-date": "the message has no Date header",
    "bad-date": "the Date header could not be read",
    "truncated-body": "the body is over a million characters; only the first million were read",
}


def shouting_reasons(passage: Passage, thresholds: Thresholds) -> list[Reason]:
    """Shouting: mostly capitals, several words in capitals, or a run of exclamation marks."""
    text = passage.text
    # Counted by deleting what is not counted (runs at a time), without a list of every letter.
    letters = len(_NOT_LETTERS.sub("", text))
    capitals = len(_NOT_CAPITALS.sub("", text))
    reasons: list[Reason] = []
    if letters >= thresholds.shouting_min_letters and capitals / letters >= thresholds.shouting_capitals_share:
        reasons.append(Reason("shouting-capitals", Flag.SHOUTING,
                              f"{round(100 * capitals / letters)}% of the letters are capitals"))
    else:
        loud = [w for w in _CAPITAL_WORD.findall(text) if w.upper() not in thresholds.usual_capitals]
        if len(loud) >= thresholds.shouting_capital_words:
            reasons.append(Reason("shouting-capitals", Flag.SHOUTING, evidence(" ".join(loud[:8]))))
    runs = [m.group(0) for m in _EXCLAMATIONS.finditer(text) if len(m.group(0)) >= thresholds.shouting_exclamation_marks]
    if runs:
        reasons.append(Reason("shouting-exclamations", Flag.SHOUTING, f"{len(runs)} run(s) of {max(map(len, runs))} '!'"))
    return reasons


def hostile_sentiment(passage: Passage, thresholds: Thresholds, models: Models) -> Reason | None:
    """The most hostile sentence aimed at the school or staff, if one is hostile enough.

    Only sentences that name the school or staff (or say "you") are scored, and never those about
    the child's feelings or another child: VADER alone reads "my son is so upset" as hostility.
    """
    worst: tuple[float, str] | None = None
    for sentence in passage.sentences():
        if not thresholds.staff_words.search(sentence) or thresholds.not_about_staff.search(sentence):
            continue
        score = models.sentiment(sentence)
        if score < thresholds.hostile_below and (worst is None or score < worst[0]):
            worst = (score, sentence)
    if worst is None:
        return None
    return Reason("hostile-sentiment-toward-staff", Flag.NEGATIVE, f"{evidence(worst[1])} (sentiment {worst[0]:.2f})")


def language_reason(text: str, thresholds: Thresholds, models: Models) -> tuple[str | None, Reason | None]:
    """The language of the new text when there is enough of it to tell, and a finding if not English."""
    sample = text[:_LANGUAGE_SAMPLE]
    if len(_NOT_LETTERS.sub("", sample)) < thresholds.language_min_letters:
        return None, None
    words = [w.strip(_PUNCTUATION) for w in sample.lower().split()]
    # Plain English is recognised from its commonest words without running the model, which
    # costs more than all the phrase rules together; anything else goes to the model.
    if len(words) >= 12 and sum(1 for w in words if w in _ENGLISH_WORDS) >= 0.25 * len(words):
        return "en", None
    guess = models.language(text[:_LANGUAGE_SAMPLE])
    if guess.english >= thresholds.english_below:
        # English, or too unsure to say otherwise: no finding, and a language only when it is English.
        return ("en" if guess.language == "en" else None), None
    name = _LANGUAGE_NAMES.get(guess.language, guess.language)
    return guess.language, Reason("non-english", Flag.NON_ENGLISH,
                                  f"written in {name} ({guess.language}, {guess.confidence:.0%} sure); "
                                  "an interpreter may be needed")


# Defects of the envelope of the text (headers, structure) rather than of the text itself: the
# content was read in full, so they are "malformed", not "unreadable".
_HEADER_DEFECTS = frozenset({"raw-8bit-header", "missing-date", "bad-date"})


def unreadable_reasons(facts: Facts) -> list[Reason]:
    """What could not be read, so staff know the message was triaged on part of its content."""
    reasons = [Reason(defect, Flag.MALFORMED if defect in _HEADER_DEFECTS else Flag.UNREADABLE, _DEFECTS[defect])
               for defect in facts.defects if defect in _DEFECTS]
    mime = [d.split(":", 1)[1] for d in facts.defects if d.startswith("mime-defect:")]
    if mime:
        reasons.append(Reason("mime-defect", Flag.MALFORMED, "malformed MIME: " + ", ".join(mime)))
    if not facts.text.strip():
        what = "only attachments, which are not read" if facts.attachments else "no readable text"
        reasons.append(Reason("empty-body", Flag.UNREADABLE, f"the message body has {what}"))
    return reasons
