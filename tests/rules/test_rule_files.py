"""Every shipped rule file loads and its examples pass; bad files fail naming the file and the rule."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from gateway.decide.route import route_for
from gateway.domain.findings import Flag
from gateway.triage import Context, triage
from gateway.triage.facts import parse_message
from gateway.triage.limits import Limits
from gateway.triage.matching import Passage
from gateway.triage.rules import RuleError, RuleSet, default_rules_dir, load_rules

SHIPPED = default_rules_dir()
RULE_FILES = sorted(p.name for p in SHIPPED.glob("*.toml") if p.name != "thresholds.toml")


@pytest.fixture(scope="module")
def shipped() -> RuleSet:
    return load_rules(SHIPPED)


def test_shipped_rules_load_with_a_digest(shipped: RuleSet) -> None:
    assert len(shipped.digest) == 64
    assert {rule.flag for rule in shipped.rules} >= {Flag.SAFEGUARDING, Flag.URGENT, Flag.PERSONAL,
                                                      Flag.NEGATIVE, Flag.ABUSIVE, Flag.WORRIED}


def test_default_rules_dir_is_the_repository_rules_folder() -> None:
    assert (SHIPPED / "thresholds.toml").is_file()


@pytest.mark.parametrize("name", RULE_FILES)
def test_every_example_hits_and_every_counter_example_misses(shipped: RuleSet, name: str) -> None:
    data = tomllib.loads((SHIPPED / name).read_text(encoding="utf-8"))
    by_name = {rule.name: rule for rule in shipped.rules}
    assert data["rule"], f"{name} has no rules"
    for raw in data["rule"]:
        rule = by_name[raw["name"]]
        assert raw.get("description") or raw["name"].endswith(tuple(f"-{c}" for c in
                                                                          ("pl", "ro", "pt", "es", "fr", "it", "lt",
                                                                           "ur", "ar", "bn")))
        for example in raw["example"]:
            assert example["expect"] == rule.flag.value
            assert rule.check(Passage.of(example["text"])) is not None, (name, rule.name, example["text"])
        for counter in raw.get("counter_example", []):
            assert rule.check(Passage.of(counter["text"])) is None, (name, rule.name, counter["text"])


def test_rule_names_are_unique_and_kebab_case(shipped: RuleSet) -> None:
    names = [rule.name for rule in shipped.rules]
    assert len(names) == len(set(names))
    assert all(name == name.lower() and " " not in name and "_" not in name for name in names)


def test_digest_changes_when_a_rule_file_changes(tmp_path: Path, shipped: RuleSet) -> None:
    copy = _copy(tmp_path)
    with (copy / "worried.toml").open("a", encoding="utf-8") as out:
        out.write("\n# a comment changes the digest too\n")
    assert load_rules(copy).digest != shipped.digest


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(SHIPPED, target)
    return target


def _broken(tmp_path: Path, text: str, name: str = "extra.toml") -> Path:
    target = _copy(tmp_path)
    (target / name).write_text(text, encoding="utf-8")
    return target


GOOD_RULE = '''
[[rule]]
name = "{name}"
finding = "urgent"
phrases = ['{phrase}']
{extra}
[[rule.example]]
text = "{example}"
expect = "urgent"
'''


def _rule(name: str = "test-rule", phrase: str = "fire drill", extra: str = "",
          example: str = "There is a fire drill today.") -> str:
    return GOOD_RULE.format(name=name, phrase=phrase, extra=extra, example=example)


def test_a_good_extra_file_loads(tmp_path: Path) -> None:
    loaded = load_rules(_broken(tmp_path, _rule()))
    assert "test-rule" in {rule.name for rule in loaded.rules}


def _fails(directory: Path, file: str, rule: str, words: str) -> None:
    with pytest.raises(RuleError) as caught:
        load_rules(directory)
    assert Path(caught.value.path).name == file
    assert caught.value.rule == rule
    assert words in caught.value.problem
    assert file in str(caught.value) and rule in str(caught.value)


def test_bad_regex_names_file_and_rule(tmp_path: Path) -> None:
    _fails(_broken(tmp_path, _rule(phrase="fire (drill")), "extra.toml", "test-rule", "bad regular expression")


def test_unknown_key_names_file_and_rule(tmp_path: Path) -> None:
    _fails(_broken(tmp_path, _rule(extra='colour = "red"')), "extra.toml", "test-rule", "unknown key 'colour'")


def test_duplicate_name_names_file_and_rule(tmp_path: Path) -> None:
    # Files load in name order, so the second file to define the name is the one refused.
    _fails(_broken(tmp_path, _rule(name="absence-today"), name="zz-extra.toml"), "zz-extra.toml", "absence-today",
           "duplicate rule name (also in urgent.toml)")


def test_missing_examples_names_file_and_rule(tmp_path: Path) -> None:
    text = '[[rule]]\nname = "no-examples"\nfinding = "urgent"\nphrases = ["fire drill"]\n'
    _fails(_broken(tmp_path, text), "extra.toml", "no-examples", "missing examples")


def test_example_that_does_not_match_names_file_and_rule(tmp_path: Path) -> None:
    _fails(_broken(tmp_path, _rule(example="Nothing to see here.")), "extra.toml", "test-rule",
           "example does not match")


def test_counter_example_that_matches_names_file_and_rule(tmp_path: Path) -> None:
    extra = '[[rule.counter_example]]\ntext = "The fire drill was fun."\n'
    _fails(_broken(tmp_path, _rule(extra=extra)), "extra.toml", "test-rule", "counter-example matches")


def test_unknown_finding_names_file_and_rule(tmp_path: Path) -> None:
    text = _rule().replace('finding = "urgent"', 'finding = "spicy"')
    _fails(_broken(tmp_path, text), "extra.toml", "test-rule", "'finding' must be one of")


def test_bad_name_is_refused(tmp_path: Path) -> None:
    _fails(_broken(tmp_path, _rule(name="Not Kebab")), "extra.toml", "Not Kebab", "kebab-case")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    _fails(_broken(tmp_path, "[[rule]\nname = "), "extra.toml", "(file)", "not valid TOML")


def test_unknown_threshold_key_names_the_section(tmp_path: Path) -> None:
    target = _copy(tmp_path)
    path = target / "thresholds.toml"
    path.write_text(path.read_text(encoding="utf-8").replace("[language]", "[language]\nloudness = 3"),
                    encoding="utf-8")
    _fails(target, "thresholds.toml", "[language] loudness", "unknown key")


def test_missing_thresholds_file_is_refused(tmp_path: Path) -> None:
    target = _copy(tmp_path)
    (target / "thresholds.toml").unlink()
    _fails(target, "thresholds.toml", "(file)", "missing thresholds file")


def test_fast_paths_agree_with_the_plain_patterns(shipped: RuleSet) -> None:
    """The prefilter, per-phrase split and lower-case patterns change speed, never the outcome."""
    from gateway.triage.content import judged_text
    from gateway.triage.facts import parse_message

    corpus = Path(__file__).resolve().parents[1] / "corpus" / "dev"
    texts = [judged_text(parse_message(path.read_bytes())) for path in sorted(corpus.glob("*.eml"))]
    texts += ["İstanbul'daki ÖĞRETMEN kurwa", "Ofsted!!! F***ING useless", "ﬁne ŉ ß ǅ"]
    for text in texts:
        indexed = Passage.of(text, shipped.index)
        plain = Passage.of(text)
        for rule in shipped.rules:
            reference = rule._first(plain, plain.text, rule.phrases, rule.also, rule.unless)
            assert (rule.check(indexed) is None) == (reference is None), (rule.name, text[:60])
            assert (rule.check(plain) is None) == (reference is None), (rule.name, text[:60])


POSSIBLE_RULE = '''
[[rule]]
name = "left-with-friends-abroad"
finding = "possible-safeguarding"
{extra}phrases = ['staying with (us|friends) while (his|her|their) parents are (abroad|away)']

[[rule.example]]
text = "Ali is staying with us while his parents are abroad for a few weeks."
expect = "possible-safeguarding"
'''


def test_a_possible_safeguarding_rule_flags_without_routing(tmp_path: Path) -> None:
    loaded = load_rules(_broken(tmp_path, POSSIBLE_RULE.format(extra="")))
    raw = (b"From: parent@example.com\r\nTo: t@school.example\r\nSubject: Ali\r\n\r\n"
           b"Hello, Ali is staying with us while his parents are away, could he join the reading club?\r\n")
    context = Context(family=None, family_label="the family", family_count=1, half_term=None, thread_count=1,
                      limits=Limits(family_messages_per_half_term=100, thread_messages=100,
                                    long_message_words=10_000))
    findings = triage(parse_message(raw), context, loaded)
    assert Flag.POSSIBLE_SAFEGUARDING.value in findings.flags
    assert [r.rule for r in findings.reasons if r.flag is Flag.POSSIBLE_SAFEGUARDING] == ["left-with-friends-abroad"]
    assert "staying with us while his parents are away" in findings.reasons[0].evidence
    assert route_for(findings).value == "staff"


def test_a_weak_possible_safeguarding_rule_is_refused(tmp_path: Path) -> None:
    _fails(_broken(tmp_path, POSSIBLE_RULE.format(extra='strength = "weak"\n')), "extra.toml",
           "left-with-friends-abroad", "cannot be weak")


INTERPRETER_RULE = '''
[[rule]]
name = "written-in-ethiopic-script"
finding = "needs-interpreter"
description = "Tigrinya or Amharic, which nobody at the school reads."
phrases = ['[\\u1200-\\u137f]{3,}']

[[rule.example]]
text = "ሰላም ሓፍተይ ኣብ ቤት ትምህርቲ"
expect = "needs-interpreter"

[[rule.counter_example]]
text = "Hello, could Maya have a new reading book please?"
'''


def test_a_needs_interpreter_rule_flags_without_routing(tmp_path: Path) -> None:
    loaded = load_rules(_broken(tmp_path, INTERPRETER_RULE))
    raw = ("From: parent@example.com\r\nTo: t@school.example\r\nSubject: Selam\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\nሰላም መምህር፣ ወደይ ሎሚ ሕማም ኣለዎ\r\n").encode()
    context = Context(family=None, family_label="the family", family_count=1, half_term=None, thread_count=1,
                      limits=Limits(family_messages_per_half_term=100, thread_messages=100,
                                    long_message_words=10_000))
    findings = triage(parse_message(raw), context, loaded)
    assert Flag.NEEDS_INTERPRETER.value in findings.flags
    assert route_for(findings).value == "staff"
