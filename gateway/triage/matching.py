"""Phrase rules and the text they read: sentences, whole-word phrase matching, evidence. No I/O here."""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field

from gateway.domain.findings import Flag
from gateway.triage.prefilter import LiteralIndex, Part, fast_parts, lowered

# Curly quotes and apostrophes are folded to straight ones so that a rule written with "won't"
# also matches "won’t" as phones type it.
_FOLD = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " ",
                       "\u2013": "-", "\u2014": "-"})
# A sentence ends at . ! ? followed by space, at the Urdu, Arabic, Chinese or Devanagari full
# stop or question mark, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|(?<=[\u06d4\u061f\u3002\u0964])\s*|\n+")
_EVIDENCE_CHARS = 80
# An apostrophe in a phrase is optional, because parents type "wont" and "dont" as often as not.
_APOSTROPHE = re.compile(r"'(?!\?)")


def fold(text: str) -> str:
    return text.translate(_FOLD)


def compile_phrases(phrases: tuple[str, ...], *, case_sensitive: bool = False) -> re.Pattern[str]:
    """One pattern for a list of phrases, each matching whole words only.

    A phrase must not start or end inside a word, so "hit" never hits "white"; a rule that wants
    word endings says so, as in "hit\\w*". An apostrophe may be left out: "won't" matches "wont".
    """
    for phrase in phrases:
        re.compile(phrase)
    body = "|".join("(?:" + _APOSTROPHE.sub("'?", fold(p)) + ")" for p in phrases)
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)", flags)


@dataclass(frozen=True)
class Passage:
    """Text to judge, folded, with a lower-cased copy and the offsets where its sentences start.

    `present` holds the rule set's prefilter literals found in the lower-cased text, when the
    passage was made with the rule set's index; otherwise each rule looks for its own.
    """

    text: str
    lower: str
    starts: tuple[int, ...]
    present: frozenset[str] | None = None

    @classmethod
    def of(cls, text: str, index: LiteralIndex | None = None) -> Passage:
        folded = fold(text)
        lower = folded.lower()
        starts = [0] + [m.end() for m in _SENTENCE_END.finditer(folded)]
        return cls(folded, lower, tuple(starts), index.present(lower) if index is not None else None)

    def sentence_span(self, position: int) -> tuple[int, int]:
        i = bisect_right(self.starts, position) - 1
        end = self.starts[i + 1] if i + 1 < len(self.starts) else len(self.text)
        return self.starts[i], end

    def sentences(self) -> list[str]:
        bounds = list(self.starts) + [len(self.text)]
        found = (self.text[a:b].strip() for a, b in zip(bounds, bounds[1:]))
        return [s for s in found if s]


def evidence(text: str) -> str:
    """Matched words for the Head of School to read: one line, cut to a readable length."""
    line = " ".join(text.split())
    return line if len(line) <= _EVIDENCE_CHARS else line[:_EVIDENCE_CHARS - 1].rstrip() + "…"


@dataclass(frozen=True)
class PhraseRule:
    """Hit when the text contains one of `phrases`, and one of `also` in the same sentence (or
    anywhere, when `also_in_message`), and none of `unless` in that sentence.

    A weak rule is one warning sign: it counts only when enough weak signs of the same kind are
    present (thresholds.toml), because each alone is too common in ordinary mail.
    """

    name: str
    flag: Flag
    weak: bool
    phrases: re.Pattern[str]
    also: re.Pattern[str] | None = None
    also_in_message: bool = False
    unless: re.Pattern[str] | None = None
    description: str = ""
    source: str = ""
    _parts: tuple[Part, ...] = field(default=(), init=False, compare=False, repr=False)
    _needs: frozenset[str] | None = field(default=None, init=False, compare=False, repr=False)
    _also_lower: re.Pattern[str] | None = field(default=None, init=False, compare=False, repr=False)
    _unless_lower: re.Pattern[str] | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Derived once at load: each phrase on its own with its prefilter literals, and the
        # lower-case patterns, so that mail is matched quickly (see triage.prefilter).
        parts = fast_parts(self.phrases)
        object.__setattr__(self, "_parts", parts)
        # When every phrase has literals, one check of them all rejects the rule in one go.
        if all(p.needs is not None and p.insensitive == parts[0].insensitive for p in parts):
            object.__setattr__(self, "_needs", frozenset().union(*(p.needs or () for p in parts)))
        if self.also is not None:
            object.__setattr__(self, "_also_lower", lowered(self.also))
        if self.unless is not None:
            object.__setattr__(self, "_unless_lower", lowered(self.unless))

    def literals(self) -> frozenset[str]:
        """The lower-case prefilter literals of this rule's case-insensitive phrases."""
        return frozenset().union(*(p.needs for p in self._parts if p.needs is not None and p.insensitive))

    def check(self, passage: Passage) -> str | None:
        """The evidence (the matched words), or None when the rule does not hit."""
        present = passage.present
        if self._needs is not None:
            if present is not None and self._parts[0].insensitive:
                if self._needs.isdisjoint(present):
                    return None
            elif not any(map((passage.lower if self._parts[0].insensitive else passage.text).__contains__,
                             self._needs)):
                return None
        same_length = len(passage.lower) == len(passage.text)
        for part in self._parts:
            if part.needs is not None:
                if present is not None and part.insensitive:
                    if part.needs.isdisjoint(present):
                        continue
                elif not any(map((passage.lower if part.insensitive else passage.text).__contains__, part.needs)):
                    continue
            text, pattern, also, unless = passage.text, part.pattern, self.also, self.unless
            if part.lower is not None and same_length and (also is None or self._also_lower is not None) \
                    and (unless is None or self._unless_lower is not None):
                text, pattern, also, unless = passage.lower, part.lower, self._also_lower, self._unless_lower
            found = self._first(passage, text, pattern, also, unless)
            if found is not None:
                return found
        return None

    def _first(self, passage: Passage, text: str, pattern: re.Pattern[str], also: re.Pattern[str] | None,
               unless: re.Pattern[str] | None) -> str | None:
        for match in pattern.finditer(text):
            start, end = passage.sentence_span(match.start())
            sentence = text[start:max(end, match.end())]
            if unless is not None and unless.search(sentence):
                continue
            words = passage.text[match.start():match.end()]
            if also is None:
                return evidence(words)
            scope = text if self.also_in_message else sentence
            other = also.search(scope)
            if other is None:
                continue
            offset = 0 if self.also_in_message else start
            other_words = passage.text[offset + other.start():offset + other.end()]
            if other_words.lower() in words.lower():
                return evidence(words)
            return evidence(f"{words} … {other_words}")
        return None
