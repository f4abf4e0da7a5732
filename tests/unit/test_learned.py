"""The learned triage model: loading and validation, evidence, determinism, the two flags, traps.

A small hand-written model (known weights) tests the mechanics exactly; the shipped model is
tested for what must hold whatever it was trained on (it loads, it is deterministic, the issue's
traps stay routine).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.decide.route import route_for
from gateway.domain.findings import Flag
from gateway.triage import Context, triage
from gateway.triage.facts import parse_message
from gateway.triage.learned import (DECISIONS, MODEL_FORMAT, ModelError, digest_of, features, load_model,
                                    parse_model)
from gateway.triage.limits import Limits
from gateway.triage.rules import RuleError, RuleSet, default_rules_dir, load_rules
from tests.support import message, wire

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = Context(family=None, family_label="the family", family_count=1, half_term=None, thread_count=1,
                  limits=Limits(family_messages_per_half_term=10_000, thread_messages=10_000,
                                long_message_words=1_000_000))


def tiny_model(**changes: object) -> dict:
    """A model with known weights: coercive-control words for safeguarding, "dentist" for urgent."""
    terms = ["w checks", "w every", "w phone", "w reads", "w text", "w dentist", "w football", "w sends"]
    weights = {
        "safeguarding": [1.5, 0.5, 1.5, 2.5, 1.5, 0.0, -1.0, 1.0],
        "abusive": [0.0] * 8, "negative": [0.0] * 8, "personal": [0.0] * 8,
        "urgent": [0.0, 0.0, 0.0, 0.0, 0.0, 6.0, 0.0, 0.0],
    }
    data = {
        "format": MODEL_FORMAT, "features": {}, "terms": terms, "idf": [1.0] * len(terms),
        "signals": ["time:before-school"],
        "decisions": {d: {"bias": -2.0, "weights": weights[d], "signal_weights": [0.0], "threshold": 0.75}
                      for d in DECISIONS},
        "languages": {"en": 100}, "corpus": {"messages": 1}, "cross_validated": {},
    }
    data["decisions"]["safeguarding"]["possible"] = 0.3
    data.update(changes)
    data["digest"] = digest_of(data)
    return data


def rules_with(tmp_path: Path, model: dict | bytes | None) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), target, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    path = target / "models" / "triage.json"
    if model is None:
        path.unlink()
    else:
        path.write_bytes(model if isinstance(model, bytes) else json.dumps(model).encode())
    return target


@pytest.fixture(scope="module")
def shipped() -> RuleSet:
    return load_rules(default_rules_dir())


@pytest.fixture(scope="module")
def tiny(shipped: RuleSet) -> RuleSet:
    return replace(shipped, model=parse_model(Path("tiny.json"), json.dumps(tiny_model()).encode()))


def judge(rules: RuleSet, body: str, subject: str = "Amelia") -> tuple[str, list[str], list[tuple[str, str]]]:
    findings = triage(parse_message(wire(message(subject=subject, body=body))), CONTEXT, rules)
    return route_for(findings).value, list(findings.flags), [(r.rule, r.evidence) for r in findings.reasons]


# ---------------------------------------------------------------- loading and validation


def test_shipped_model_loads_with_a_digest_thresholds_and_its_training_summary(shipped: RuleSet) -> None:
    model = shipped.model
    assert model is not None and len(model.digest) == 64
    assert set(model.decisions) == set(DECISIONS)
    sg = model.decisions["safeguarding"]
    assert sg.possible is not None and 0 < sg.possible < sg.threshold < 1
    assert model.summary["corpus"]["messages"] >= 400
    assert "route_accuracy" in model.summary["cross_validated"]
    assert model.path.endswith("models/triage.json")


def test_the_model_changes_the_rule_sets_digest(tmp_path: Path, shipped: RuleSet) -> None:
    assert load_rules(rules_with(tmp_path, tiny_model())).digest != shipped.digest


def test_a_school_rules_dir_carries_its_own_model(tmp_path: Path) -> None:
    rules = load_rules(rules_with(tmp_path, tiny_model()))
    assert rules.model is not None and rules.model.digest == tiny_model()["digest"]


@pytest.mark.parametrize("damage,problem", [
    (lambda m: m["decisions"]["urgent"]["weights"].__setitem__(5, 60.0), "digest does not match"),
    (lambda m: m.__setitem__("digest", "0" * 64), "digest does not match"),
])
def test_a_changed_or_damaged_model_is_refused_naming_the_file(tmp_path: Path, damage, problem: str) -> None:
    model = tiny_model()
    damage(model)
    with pytest.raises(RuleError) as caught:
        load_rules(rules_with(tmp_path, model))
    assert "models/triage.json" in str(caught.value) and problem in str(caught.value)


@pytest.mark.parametrize("changes,problem", [
    ({"idf": [1.0]}, "'idf' must have one number per term"),
    ({"terms": ["w a", "w a"], "idf": [1.0, 1.0]}, "duplicates"),
    ({"format": "pickle"}, "'format' must be"),
    ({"signals": "time"}, "'signals' must be a list"),
    ({"extra": 1}, "unknown key 'extra'"),
])
def test_a_model_of_the_wrong_shape_is_refused(tmp_path: Path, changes: dict, problem: str) -> None:
    with pytest.raises(RuleError) as caught:
        load_rules(rules_with(tmp_path, tiny_model(**changes)))
    assert "triage.json" in str(caught.value) and problem in str(caught.value)


def test_weights_of_the_wrong_length_and_bad_thresholds_are_refused() -> None:
    model = tiny_model()
    model["decisions"]["abusive"]["weights"] = [0.0]
    model["digest"] = digest_of(model)
    with pytest.raises(ModelError, match="'weights' must have one number per term"):
        parse_model(Path("m.json"), json.dumps(model).encode())
    model = tiny_model()
    model["decisions"]["safeguarding"]["possible"] = 0.95
    model["digest"] = digest_of(model)
    with pytest.raises(ModelError, match="possible below threshold"):
        parse_model(Path("m.json"), json.dumps(model).encode())
    model = tiny_model()
    model["decisions"]["urgent"]["bias"] = "NaN"
    model["digest"] = digest_of(model)
    with pytest.raises(ModelError, match="finite number"):
        parse_model(Path("m.json"), json.dumps(model).encode())


def test_a_missing_or_unreadable_model_is_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match=r"models/triage.json.*model file not found"):
        load_rules(rules_with(tmp_path, None))
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(rules_with(tmp_path / "b", b"\x80not json"))


def test_check_config_fails_on_a_damaged_model_naming_it(tmp_path: Path) -> None:
    model = tiny_model()
    model["decisions"]["safeguarding"]["bias"] = 3.0  # edited without a new digest
    rules = rules_with(tmp_path, model)
    config = tmp_path / "config.toml"
    config.write_text(f'[gateway]\nstate_dir = "var"\npostmaster = "pm@school.example"\nrules_dir = "{rules}"\n'
                      '[smtp]\nlisten = "127.0.0.1:2525"\nhostname = "gw.test"\n'
                      '[delivery]\nmode = "maildir"\nmaildir_root = "var/mail"\n'
                      '[[schools]]\nid = "s"\nname = "S"\ndomains = ["school.example"]\n'
                      'head_of_school = "head@school.example"\noffice = "office@school.example"\n'
                      'dsl = "dsl@school.example"\n')
    out = subprocess.run([sys.executable, "-m", "gateway", "--config", str(config), "check-config"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2
    assert "models/triage.json" in out.stderr and "digest does not match" in out.stderr


def test_the_model_file_is_never_unpickled() -> None:
    source = (ROOT / "gateway" / "triage" / "learned.py").read_text()
    assert not any(f"import {name}" in source for name in ("pickle", "joblib", "skops", "sklearn", "numpy"))


# ---------------------------------------------------------------- decisions and evidence


def test_the_model_routes_what_the_rules_miss_with_the_words_that_weighed_most(tiny: RuleSet) -> None:
    route, flags, reasons = judge(tiny, "Hi Mrs Hill, quick one about the trip form. He reads every text she "
                                        "sends and checks her phone at night. Thanks, Jo")
    assert route == "dsl" and "safeguarding" in flags
    rule, evidence = next(r for r in reasons if r[0] == "model:safeguarding")
    assert "reads every text she sends and checks" in evidence
    assert evidence.startswith("…") and "(model " in evidence


def test_below_the_route_threshold_the_message_is_flagged_possible_and_delivered_as_usual(tiny: RuleSet) -> None:
    route, flags, reasons = judge(tiny, "Could you let me know what the reading scheme is? He checks his phone "
                                        "a lot in the evenings.")
    assert route == "staff"
    assert "possible-safeguarding" in flags and "safeguarding" not in flags
    assert any(rule == "model:safeguarding" and "checks his phone" in ev for rule, ev in reasons)


def test_routine_mail_gets_no_model_reason(tiny: RuleSet) -> None:
    route, flags, reasons = judge(tiny, "Could Maya have a new reading book please? She loved the last one.")
    assert route == "staff" and not any(rule.startswith("model:") for rule, _ in reasons)
    assert "possible-safeguarding" not in flags


def test_urgent_by_the_model_goes_to_the_office(tiny: RuleSet) -> None:
    route, flags, reasons = judge(tiny, "Sam has the dentist at eleven, I will sign him out at reception.")
    assert route == "office" and ("model:urgent" in [r for r, _ in reasons])


def test_the_rules_findings_stand_whatever_the_model_says(tiny: RuleSet) -> None:
    # A strong safeguarding rule fires: the model does not add a second safeguarding reason.
    route, _, reasons = judge(tiny, "I think her stepdad is hitting her, she has bruises on her arms.")
    assert route == "dsl"
    assert [r for r, _ in reasons if r == "model:safeguarding"] == []


# ---------------------------------------------------------------- languages


def test_a_language_nobody_covers_needs_an_interpreter_and_covered_ones_do_not(shipped: RuleSet) -> None:
    _, flags, _ = judge(shipped, "Hyvää huomenta opettaja. Poikani ei ole voinut hyvin viime viikkoina ja hän "
                                 "on ollut kotona paljon. Voisimmeko tavata ensi viikolla koulun jälkeen? Kiitos.")
    assert "needs-interpreter" in flags
    _, flags, _ = judge(shipped, "Dzień dobry, czy Zosia mogłaby dostać nową książkę do czytania? Bardzo "
                                 "lubi czytać w domu z babcią. Dziękuję bardzo, Agnieszka Nowak")
    assert "needs-interpreter" not in flags
    _, flags, _ = judge(shipped, "Hello, could Maya have a new reading book please? She has finished hers.")
    assert "needs-interpreter" not in flags and "non_english" not in flags


# ---------------------------------------------------------------- the shipped model: traps and determinism

TRAPS = [
    "Great match on Saturday! The under-11s absolutely murdered them 6-0, the kids were buzzing. Will the "
    "photos go on the website? Thanks, Dave",
    "Honestly what a week, the boiler died, the car failed its MOT and I've been working til 9 every night, "
    "bloody nightmare. Anyway just wanted to say thank you for all you've done with Jake's reading, he's "
    "really come on.",
    "Hi Miss, just to let you know Aisha had her tonsils out in the summer holidays and is fully recovered "
    "now, so she can do PE again from next week. Thanks",
    "My mum will kill me if I forget again, so could you remind Ellie to bring her PE kit home on Friday? "
    "Ta, Sarah",
    "Thanks for the newsletter. Please can you tell me what date the Year 4 trip to the museum is? Cheers",
]


@pytest.mark.parametrize("body", TRAPS, ids=["sport", "own-week", "past-medical", "idiom", "newsletter"])
def test_the_issues_traps_stay_routine(shipped: RuleSet, body: str) -> None:
    route, flags, _ = judge(shipped, body, subject="A quick one")
    assert route == "staff", flags
    assert "possible-safeguarding" not in flags and "needs-interpreter" not in flags


def test_safeguarding_words_only_in_a_quoted_newsletter_stay_routine(shipped: RuleSet) -> None:
    body = ("Thanks, we'll be there on the 14th.\n\nOn Tue, 1 Dec 2026 at 15:48, Mr Brennan "
            "<k.brennan@oakfield-primary.sch.example> wrote:\n> Our online safety workshop covers grooming, "
            "sexual exploitation, self-harm and abuse at home.\n> If your child has told you anything that "
            "worries you, please speak to the DSL.\n")
    route, flags, _ = judge(shipped, body, subject="Re: Online safety workshop")
    assert route == "staff" and "possible-safeguarding" not in flags


def _findings_of(rules: RuleSet, folder: Path) -> str:
    rows = []
    for path in sorted(folder.glob("*.eml")):
        f = triage(parse_message(path.read_bytes()), CONTEXT, rules)
        rows.append([path.name, route_for(f).value, f.tone.value, list(f.flags),
                     [[r.rule, r.evidence] for r in f.reasons], f.language])
    return json.dumps(rows, ensure_ascii=False, sort_keys=True)


def _scores_of(model_data: dict, folder: Path) -> str:
    """The tiny model's scores and evidence for every text in a folder, as canonical JSON."""
    model = parse_model(Path("tiny.json"), json.dumps(model_data).encode())
    rows = []
    for path in sorted(folder.glob("*.eml")):
        text = parse_message(path.read_bytes()).new_text
        vector = model.vector(text)
        scores = model.scores(vector, frozenset({"time:before-school"}))
        rows.append([path.name, scores, model.evidence("safeguarding", text, vector),
                     sorted((i, round(v, 9)) for i, v in vector.normalised().items())])
    return json.dumps(rows, ensure_ascii=False, sort_keys=True)


# sha256 of the n-gram features of a fixed text, and of the tiny model's scores and evidence over
# tests/corpus/spotcheck: any change to feature extraction, scoring or evidence shows here.
# Regenerate only for a deliberate change, and say why in the commit.
GOLDEN_FEATURES = "0527ad661263eb3965e375f81d1e28e21df791f8efb4e1d79b50eba7a0fffa54"
GOLDEN_SCORES = "53f84d12a413e12d2eb3cc44fb730d5bc6fe2dd8eb9680f5f9566bc929c1a871"


def test_features_are_a_fixed_function_of_the_text() -> None:
    counts = features("Źle się czuje, he's NOT well")
    assert counts["w zle"] == 1 and counts["w he's"] == 1 and counts["w not well"] == 1
    assert counts["c  zl"] == 1 and counts["c well "] == 1
    text = "He reads every text she sends, réveillé à 6h; ابني مريض"
    digest = hashlib.sha256(json.dumps(sorted(features(text).items()), ensure_ascii=False).encode()).hexdigest()
    assert digest == GOLDEN_FEATURES


def test_scores_and_evidence_match_the_golden_digest() -> None:
    digest = hashlib.sha256(_scores_of(tiny_model(), ROOT / "tests/corpus/spotcheck").encode()).hexdigest()
    assert digest == GOLDEN_SCORES


def test_same_message_same_findings_in_fresh_processes_with_different_hash_seeds(tmp_path: Path) -> None:
    script = ("import sys, json; sys.path.insert(0, %r)\n"
              "from tests.unit.test_learned import _findings_of\n"
              "from gateway.triage.rules import load_rules, default_rules_dir\n"
              "from pathlib import Path\n"
              "print(_findings_of(load_rules(default_rules_dir()), Path(%r)))\n") % (str(ROOT), str(ROOT / "tests/corpus/spotcheck"))
    outs = []
    for seed in ("1", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                             cwd=ROOT)
        assert out.returncode == 0, out.stderr[-2000:]
        outs.append(out.stdout)
    assert outs[0] == outs[1] and len(outs[0]) > 1000
