"""Route quality on the held-out corpus: parent emails written blind, before the rules were tuned.

`tests/corpus/heldout` was composed and labelled before any rule was changed against it (see its
README), to measure how the rules do on wording they were not written for. The floors: every
safeguarding message reaches the DSL, no abusive message reaches staff, route accuracy at least
0.85. The confusion matrix is printed (run with -s to see it).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from gateway.decide.route import route_for
from gateway.triage import Context, triage
from gateway.triage.facts import parse_message
from gateway.triage.limits import Limits
from gateway.triage.rules import RuleSet, default_rules_dir, load_rules

HELDOUT = Path(__file__).resolve().parents[1] / "corpus" / "heldout"
ROUTES = ("staff", "office", "dsl", "head_of_school")
# One message per family and thread, limits out of reach: only the content decides the route.
CONTEXT = Context(family=None, family_label="the family", family_count=1, half_term=None, thread_count=1,
                  limits=Limits(family_messages_per_half_term=10_000, thread_messages=10_000,
                                long_message_words=1_000_000))


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules(default_rules_dir())


def _labels(folder: Path) -> dict[str, dict[str, object]]:
    rows = (json.loads(line) for line in (folder / "labels.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip())
    return {str(row["file"]): row for row in rows}


@pytest.mark.parametrize("folder,at_least", [(HELDOUT, 80), (HELDOUT.parent / "spotcheck", 40)],
                         ids=["heldout", "spotcheck"])
def test_heldout_corpus_route_quality(rules: RuleSet, folder: Path, at_least: int) -> None:
    labels = _labels(folder)
    assert len(labels) >= at_least
    assert all((folder / name).is_file() for name in labels)
    results: list[tuple[str, str, str, str]] = []
    for name, label in sorted(labels.items()):
        findings = triage(parse_message((folder / name).read_bytes()), CONTEXT, rules)
        results.append((name, str(label["route"]), route_for(findings).value, str(label["tone"])))
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    for _, want, got, _ in results:
        confusion[want][got] += 1
    print("\nheld-out confusion (rows labelled, columns routed):")
    print(" " * 16 + "".join(f"{route:>16}" for route in ROUTES))
    for want in ROUTES:
        print(f"{want:>16}" + "".join(f"{confusion[want][got]:>16}" for got in ROUTES))
    accuracy = sum(want == got for _, want, got, _ in results) / len(results)
    dsl = [(name, got) for name, want, got, _ in results if want == "dsl"]
    missed = [name for name, got in dsl if got != "dsl"]
    abusive_to_staff = [name for name, _, got, tone in results if tone == "abusive" and got == "staff"]
    wrong = [(name, want, got) for name, want, got, _ in results if want != got]
    print(f"accuracy {accuracy:.3f}; dsl recall {len(dsl) - len(missed)}/{len(dsl)}; misrouted {wrong}")
    assert missed == [], "every safeguarding message must reach the DSL"
    assert abusive_to_staff == []
    assert accuracy >= 0.85
