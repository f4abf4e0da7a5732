"""Loads the school-editable rule files in `rules/`, validated and compiled once. No I/O but reading them.

A rule file is TOML with `[[rule]]` tables (phrase lists for one kind of finding, each with
examples that must hit and counter-examples that must not); `thresholds.toml` holds the numbers
and word lists the content classifier uses. Everything is checked here, when the rules are
loaded, never when mail arrives: a bad regular expression, an unknown key, a duplicate name or a
rule whose own examples fail raises `RuleError` naming the file and the rule, so that
`check-config` fails at once and a failed reload keeps the old rules running.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.domain.findings import Flag
from gateway.shipped import rules_directory
from gateway.triage.matching import Passage, PhraseRule, compile_phrases
from gateway.triage.learned import ModelError, TriageModel, load_model
from gateway.triage.models import Models
from gateway.triage.prefilter import LiteralIndex
from gateway.triage.thresholds import THRESHOLDS_FILE, Thresholds, load_thresholds

# The kinds of finding a phrase rule may report. Shouting, language and unreadable mail are
# measured, not matched, so they are set in thresholds.toml instead. `possible-safeguarding` and
# `needs-interpreter` rules flag without routing: the message goes where it would have gone, and
# is listed in the DSL's digest, or copied to the office to arrange an interpreter.
RULE_FINDINGS = {flag.value: flag for flag in (Flag.SAFEGUARDING, Flag.URGENT, Flag.PERSONAL,
                                               Flag.NEGATIVE, Flag.ABUSIVE, Flag.WORRIED,
                                               Flag.POSSIBLE_SAFEGUARDING, Flag.NEEDS_INTERPRETER)}
_RULE_KEYS = frozenset({"name", "finding", "strength", "description", "phrases", "with", "within",
                        "unless", "case_sensitive", "example", "counter_example"})
_FILE_KEYS = frozenset({"description", "rule"})
_EXAMPLE_KEYS = frozenset({"text", "expect"})
LANGUAGES_FILE = "languages.toml"
_KEBAB = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class RuleError(Exception):
    """A rule file that cannot be used: which file, which rule, and what is wrong."""

    def __init__(self, path: Path | str, rule: str, problem: str) -> None:
        self.path, self.rule, self.problem = str(path), rule, problem
        super().__init__(f"{path}: {rule}: {problem}")


@dataclass(frozen=True)
class RuleSet:
    """Every compiled rule plus the thresholds, and the sha256 digest of the files they came from.

    The sentiment analyser and language identifier are built once here, never per message.
    """

    digest: str
    rules: tuple[PhraseRule, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    directory: str = ""
    models: Models | None = field(default=None, compare=False, hash=False, repr=False)
    # Languages with phrase rules of their own (rules/languages.toml names end with the ISO code).
    languages: frozenset[str] = frozenset()
    # The learned model (models/triage.json), None only for rule sets built by hand in tests.
    model: TriageModel | None = field(default=None, compare=False, hash=False, repr=False)
    index: LiteralIndex | None = field(default=None, compare=False, hash=False, repr=False)


def default_rules_dir() -> Path:
    """The rules shipped with parentgate (`rules/`, installed as `gateway._rules`), as a directory."""
    return rules_directory()


def _strings(path: Path, rule: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise RuleError(path, rule, f"'{key}' must be a list of one or more non-empty phrases")
    return tuple(value)


def _examples(path: Path, rule: str, key: str, value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RuleError(path, rule, f"'{key}' must be a list of [[rule.{key}]] tables")
    found: list[tuple[str, str]] = []
    for entry in value:
        if not isinstance(entry, dict):
            raise RuleError(path, rule, f"each [[rule.{key}]] must be a table with 'text'")
        unknown = set(entry) - _EXAMPLE_KEYS
        if unknown:
            raise RuleError(path, rule, f"unknown key {sorted(unknown)[0]!r} in [[rule.{key}]]")
        text = entry.get("text")
        if not isinstance(text, str) or not text.strip():
            raise RuleError(path, rule, f"[[rule.{key}]] needs a non-empty 'text'")
        expect = entry.get("expect", "")
        if not isinstance(expect, str):
            raise RuleError(path, rule, f"'expect' in [[rule.{key}]] must be a string")
        found.append((text, expect))
    return tuple(found)


def _compile(path: Path, rule: str, key: str, phrases: tuple[str, ...], case_sensitive: bool) -> re.Pattern[str]:
    try:
        return compile_phrases(phrases, case_sensitive=case_sensitive)
    except re.error as error:
        bad = next((p for p in phrases if not _compiles(p)), "")
        raise RuleError(path, rule, f"bad regular expression in '{key}': {bad!r}: {error}") from error


def _compiles(phrase: str) -> bool:
    try:
        re.compile(phrase)
        return True
    except re.error:
        return False


def _rule(path: Path, raw: Any, index: int) -> PhraseRule:
    if not isinstance(raw, dict):
        raise RuleError(path, f"rule #{index}", "each [[rule]] must be a table")
    name = raw.get("name")
    label = name if isinstance(name, str) and name else f"rule #{index}"
    if not isinstance(name, str) or not _KEBAB.match(name):
        raise RuleError(path, label, "'name' must be kebab-case, like 'absence-today'")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise RuleError(path, name, f"unknown key {sorted(unknown)[0]!r}")
    finding = raw.get("finding")
    if finding not in RULE_FINDINGS:
        raise RuleError(path, name, f"'finding' must be one of {', '.join(sorted(RULE_FINDINGS))}")
    strength = raw.get("strength", "strong")
    if strength not in ("strong", "weak"):
        raise RuleError(path, name, "'strength' must be 'strong' or 'weak'")
    # Warning signs are counted per finding in thresholds.toml; a possible concern is already the
    # lower tier, so one match is enough and there is nothing to count.
    if strength == "weak" and finding in (Flag.POSSIBLE_SAFEGUARDING.value, Flag.NEEDS_INTERPRETER.value):
        raise RuleError(path, name, f"a {finding!r} rule cannot be weak: one match flags the message")
    within = raw.get("within", "sentence")
    if within not in ("sentence", "message"):
        raise RuleError(path, name, "'within' must be 'sentence' or 'message'")
    case_sensitive = raw.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        raise RuleError(path, name, "'case_sensitive' must be true or false")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise RuleError(path, name, "'description' must be a string")
    if "phrases" not in raw:
        raise RuleError(path, name, "missing 'phrases'")
    phrases = _compile(path, name, "phrases", _strings(path, name, "phrases", raw["phrases"]), case_sensitive)
    also = None
    if "with" in raw:
        also = _compile(path, name, "with", _strings(path, name, "with", raw["with"]), case_sensitive)
    unless = None
    if "unless" in raw:
        unless = _compile(path, name, "unless", _strings(path, name, "unless", raw["unless"]), case_sensitive)
    examples = _examples(path, name, "example", raw.get("example"))
    counters = _examples(path, name, "counter_example", raw.get("counter_example"))
    if not examples:
        raise RuleError(path, name, "missing examples: add at least one [[rule.example]] with text and expect")
    rule = PhraseRule(name=name, flag=RULE_FINDINGS[finding], weak=strength == "weak", phrases=phrases,
                      also=also, also_in_message=within == "message", unless=unless,
                      description=description, source=path.name)
    _check_examples(path, rule, examples, counters)
    return rule


def _check_examples(path: Path, rule: PhraseRule, examples: tuple[tuple[str, str], ...],
                    counters: tuple[tuple[str, str], ...]) -> None:
    """A rule's own examples must hit it and its counter-examples must not, or the file is refused."""
    for text, expect in examples:
        if expect != rule.flag.value:
            raise RuleError(path, rule.name, f"example expects {expect!r} but the rule's finding is "
                                             f"{rule.flag.value!r}: {text[:60]!r}")
        if rule.check(Passage.of(text)) is None:
            raise RuleError(path, rule.name, f"example does not match: {text[:60]!r}")
    for text, _ in counters:
        if rule.check(Passage.of(text)) is not None:
            raise RuleError(path, rule.name, f"counter-example matches but must not: {text[:60]!r}")


def _rule_file(path: Path, data: dict[str, Any]) -> list[PhraseRule]:
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise RuleError(path, "(file)", f"unknown key {sorted(unknown)[0]!r}; rules go in [[rule]] tables")
    entries = data.get("rule", [])
    if not isinstance(entries, list):
        raise RuleError(path, "(file)", "'rule' must be written as [[rule]] tables")
    return [_rule(path, raw, i + 1) for i, raw in enumerate(entries)]


def load_rules(directory: Path, *, with_model: bool = True) -> RuleSet:
    """Every `*.toml` in `directory` and its learned model (`models/triage.json`), validated and
    compiled, or `RuleError` naming file and rule. `with_model=False` is for training a model."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RuleError(directory, "(directory)", "rules directory not found")
    files = sorted(directory.glob("*.toml"))
    digest = hashlib.sha256()
    rules: list[PhraseRule] = []
    seen: dict[str, str] = {}
    thresholds: Thresholds | None = None
    for path in files:
        content = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + content + b"\0")
        try:
            data = tomllib.loads(content.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise RuleError(path, "(file)", f"not valid TOML: {error}") from error
        if path.name == THRESHOLDS_FILE:
            thresholds = load_thresholds(path, data, RuleError)
            continue
        for rule in _rule_file(path, data):
            if rule.name in seen:
                raise RuleError(path, rule.name, f"duplicate rule name (also in {seen[rule.name]})")
            seen[rule.name] = path.name
            rules.append(rule)
    if thresholds is None:
        raise RuleError(directory / THRESHOLDS_FILE, "(file)", "missing thresholds file")
    if not rules:
        raise RuleError(directory, "(directory)", "no rules found")
    model = None
    if with_model:
        try:
            model = load_model(directory)
        except ModelError as error:
            raise RuleError(error.path, "(model)", error.problem) from None
        digest.update(b"model\0" + model.digest.encode() + b"\0")
    languages = frozenset(r.name.rsplit("-", 1)[1] for r in rules
                          if r.source == LANGUAGES_FILE and re.fullmatch(r".+-[a-z]{2}", r.name))
    return RuleSet(digest=digest.hexdigest(), rules=tuple(rules), thresholds=thresholds, languages=languages,
                   directory=str(directory), models=Models(), model=model,
                   index=LiteralIndex(frozenset().union(*(rule.literals() for rule in rules))))
