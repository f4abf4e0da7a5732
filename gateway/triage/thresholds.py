"""The numbers and word lists in rules/thresholds.toml, validated into a frozen object. No I/O here."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.domain.findings import Flag
from gateway.triage.matching import compile_phrases

THRESHOLDS_FILE = "thresholds.toml"

ErrorFactory = Callable[[Path | str, str, str], Exception]

_SIGN_KINDS = ("safeguarding", "urgent", "personal", "negative", "abusive", "worried")
_SECTIONS: dict[str, dict[str, type]] = {
    "signs_needed": {kind: int for kind in _SIGN_KINDS},
    "shouting": {"min_letters": int, "capitals_share": float, "capital_words": int,
                 "exclamation_marks": int, "usual_capitals": list},
    "sentiment": {"hostile_below": float, "staff_words": list, "not_about_staff": list},
    "language": {"min_letters": int, "english_below": float},
}
_NEVER = re.compile(r"(?!x)x")


@dataclass(frozen=True)
class Thresholds:
    """How many weak signs make a finding, when capitals are shouting, and the language settings."""

    signs_needed: dict[Flag, int] = field(default_factory=lambda: {Flag(k): 2 for k in _SIGN_KINDS},
                                          compare=False, hash=False)
    shouting_min_letters: int = 20
    shouting_capitals_share: float = 0.6
    shouting_capital_words: int = 3
    shouting_exclamation_marks: int = 3
    usual_capitals: frozenset[str] = frozenset()
    hostile_below: float = -0.5
    staff_words: re.Pattern[str] = _NEVER
    not_about_staff: re.Pattern[str] = _NEVER
    language_min_letters: int = 40
    english_below: float = 0.1


def _value(path: Path, section: str, key: str, value: Any, kind: type, error: ErrorFactory) -> Any:
    where = f"[{section}] {key}"
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is list:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise error(path, where, "must be a list of one or more non-empty strings")
        return value
    if not isinstance(value, kind) or isinstance(value, bool):
        raise error(path, where, f"must be {'a whole number' if kind is int else 'a number'}")
    if isinstance(value, int) and value < 1 and section != "language":
        raise error(path, where, "must be 1 or more")
    return value


def _pattern(path: Path, where: str, phrases: list[str], error: ErrorFactory) -> re.Pattern[str]:
    for phrase in phrases:
        try:
            re.compile(phrase)
        except re.error as problem:
            raise error(path, where, f"bad regular expression {phrase!r}: {problem}") from problem
    return compile_phrases(tuple(phrases))


def load_thresholds(path: Path, data: dict[str, Any], error: ErrorFactory) -> Thresholds:
    """Thresholds from the parsed TOML: every section and key must be known, every value typed."""
    values: dict[str, dict[str, Any]] = {}
    for section, content in data.items():
        if section not in _SECTIONS:
            raise error(path, f"[{section}]", f"unknown section; expected one of {', '.join(_SECTIONS)}")
        if not isinstance(content, dict):
            raise error(path, f"[{section}]", "must be a table")
        for key, value in content.items():
            if key not in _SECTIONS[section]:
                raise error(path, f"[{section}] {key}", "unknown key")
            values.setdefault(section, {})[key] = _value(path, section, key, value, _SECTIONS[section][key], error)
    for section, keys in _SECTIONS.items():
        for key in keys:
            if key not in values.get(section, {}):
                raise error(path, f"[{section}] {key}", "missing")
    shouting, sentiment, language = values["shouting"], values["sentiment"], values["language"]
    if not 0.0 < shouting["capitals_share"] <= 1.0:
        raise error(path, "[shouting] capitals_share", "must be between 0 and 1")
    if not -1.0 <= sentiment["hostile_below"] <= 0.0:
        raise error(path, "[sentiment] hostile_below", "must be between -1 and 0")
    if not 0.0 <= language["english_below"] <= 1.0:
        raise error(path, "[language] english_below", "must be between 0 and 1")
    return Thresholds(
        signs_needed={Flag(kind): values["signs_needed"][kind] for kind in _SIGN_KINDS},
        shouting_min_letters=shouting["min_letters"], shouting_capitals_share=shouting["capitals_share"],
        shouting_capital_words=shouting["capital_words"],
        shouting_exclamation_marks=shouting["exclamation_marks"],
        usual_capitals=frozenset(shouting["usual_capitals"]),
        hostile_below=sentiment["hostile_below"],
        staff_words=_pattern(path, "[sentiment] staff_words", sentiment["staff_words"], error),
        not_about_staff=_pattern(path, "[sentiment] not_about_staff", sentiment["not_about_staff"], error),
        language_min_letters=language["min_letters"], english_below=language["english_below"])
