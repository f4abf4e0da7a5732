"""Route and tone quality of content triage on a labelled folder: precision, recall, F1, confusion.

usage: python bench/triage_quality.py [DIR] [--evidence]

DIR holds *.eml files and labels.jsonl (one {"file", "route", "tone", ...} per line); the default
is tests/corpus/dev. Each message is triaged exactly as the daemon does (parse, then
`gateway.triage.triage`, then `route_for`) with one message per family and thread and limits set
high, so that only the content decides the route. Misrouted files are listed with the rules that
fired; `--evidence` adds the matched words (corpus text, so never use it on real mail).
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.decide.route import route_for  # noqa: E402
from gateway.domain.findings import Findings  # noqa: E402
from gateway.triage import Context, triage  # noqa: E402
from gateway.triage.facts import parse_message  # noqa: E402
from gateway.triage.limits import Limits  # noqa: E402
from gateway.triage.rules import default_rules_dir, load_rules  # noqa: E402

ROUTES = ["staff", "office", "dsl", "head_of_school"]
TONES = ["neutral", "worried", "negative", "abusive"]
CONTEXT = Context(family=None, family_label="the family", family_count=1, half_term=None, thread_count=1,
                  limits=Limits(family_messages_per_half_term=10_000, thread_messages=10_000,
                                long_message_words=1_000_000))


def scores(pairs: list[tuple[str, str]], classes: list[str]) -> dict[str, tuple[float, float, float, int]]:
    """Precision, recall, F1 and support per class from (labelled, predicted) pairs."""
    result: dict[str, tuple[float, float, float, int]] = {}
    for c in classes:
        tp = sum(1 for w, g in pairs if w == c and g == c)
        fp = sum(1 for w, g in pairs if w != c and g == c)
        fn = sum(1 for w, g in pairs if w == c and g != c)
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        result[c] = (p, r, 2 * p * r / (p + r) if p + r else 0.0, tp + fn)
    return result


def confusion(pairs: list[tuple[str, str]], classes: list[str]) -> str:
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for want, got in pairs:
        table[want][got] += 1
    width = max(len(c) for c in classes) + 2
    lines = ["labelled \\ routed".ljust(width + 4) + "".join(c[:12].rjust(14) for c in classes)]
    for want in classes:
        lines.append(want.ljust(width + 4) + "".join(str(table[want][got]).rjust(14) for got in classes))
    return "\n".join(lines)


def report(title: str, pairs: list[tuple[str, str]], classes: list[str]) -> None:
    accuracy = sum(w == g for w, g in pairs) / len(pairs)
    per_class = scores(pairs, classes)
    macro = sum(v[2] for v in per_class.values()) / len(classes)
    print(f"\n{title}: n={len(pairs)} accuracy {accuracy:.3f} macro-F1 {macro:.3f}")
    print(confusion(pairs, classes))
    for c, (p, r, f, n) in per_class.items():
        print(f"  {c:>15}: precision {p:.2f} recall {r:.2f} F1 {f:.2f} (n={n})")


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    show_evidence = "--evidence" in argv
    folder = Path(args[0]) if args else ROOT / "tests" / "corpus" / "dev"
    labels = {}
    for line in (folder / "labels.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            labels[row["file"]] = row
    rules = load_rules(default_rules_dir())
    routes: list[tuple[str, str]] = []
    tones: list[tuple[str, str]] = []
    wrong: list[tuple[str, str, str, Findings]] = []
    for name in sorted(labels):
        findings = triage(parse_message((folder / name).read_bytes()), CONTEXT, rules)
        route = route_for(findings).value
        routes.append((labels[name]["route"], route))
        tones.append((labels[name]["tone"], findings.tone.value))
        if route != labels[name]["route"]:
            wrong.append((name, labels[name]["route"], route, findings))
    report("route", routes, ROUTES)
    report("tone", tones, TONES)
    abusive_to_staff = sum(1 for name, (w, g) in zip(sorted(labels), routes)
                           if labels[name]["tone"] == "abusive" and g == "staff")
    print(f"\nabusive routed to staff: {abusive_to_staff}")
    print(f"misrouted: {len(wrong)}")
    for name, want, got, findings in wrong:
        fired = ", ".join(f"{r.rule}={r.evidence!r}" if show_evidence else r.rule for r in findings.reasons)
        print(f"  {name}: labelled {want}, routed {got} [{fired}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
