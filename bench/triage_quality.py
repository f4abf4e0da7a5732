"""Route and tone quality of content triage on a labelled folder: precision, recall, F1, confusion.

usage: python bench/triage_quality.py [DIR...] [--evidence] [--quiet] [--rules RULES_DIR]

Each DIR holds *.eml files and labels.jsonl (one {"file", "route", "tone", ...} per line); the
default is tests/corpus/dev. Each folder is reported on its own, then all of them together when
there are several: per-class precision, recall and F1, route accuracy and macro-F1, the share of
safeguarding concerns that reach the DSL (routed there, or flagged `possible-safeguarding` for the
DSL's digest), abusive mail routed to staff, the share of routine mail routed to the Head and
flagged `possible-safeguarding`, and `needs-interpreter` counts. Each message is triaged exactly as the daemon does (parse, then
`gateway.triage.triage`, then `route_for`) with one message per family and thread and limits set
high, so that only the content decides the route. Misrouted files are listed with the rules that
fired; `--evidence` adds the matched words (corpus text, so never use it on real mail).
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.decide.route import route_for  # noqa: E402
from gateway.domain.findings import Findings, Flag  # noqa: E402
from gateway.triage import Context, triage  # noqa: E402
from gateway.triage.facts import parse_message  # noqa: E402
from gateway.triage.limits import Limits  # noqa: E402
from gateway.triage.rules import RuleSet, default_rules_dir, load_rules  # noqa: E402

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


def measure(folder: Path, rules: RuleSet, *, show_evidence: bool, quiet: bool) -> list[Row]:
    labels = {}
    for line in (folder / "labels.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            labels[row["file"]] = row
    rows: list[Row] = []
    for name in sorted(labels):
        findings = triage(parse_message((folder / name).read_bytes()), CONTEXT, rules)
        rows.append(Row(name, labels[name], route_for(findings).value, findings))
    summarise(str(folder), rows, show_evidence=show_evidence, quiet=quiet)
    return rows


@dataclass(frozen=True)
class Row:
    name: str
    label: dict
    route: str
    findings: Findings

    def flagged(self, flag: Flag) -> bool:
        return self.findings.has(flag)


def summarise(title: str, rows: list[Row], *, show_evidence: bool = False, quiet: bool = False) -> None:
    routes = [(r.label["route"], r.route) for r in rows]
    print(f"\n=== {title}")
    report("route", routes, ROUTES)
    if not quiet:
        report("tone", [(r.label["tone"], r.findings.tone.value) for r in rows], TONES)
    dsl = [r for r in rows if r.label["route"] == "dsl"]
    reached = [r for r in dsl if r.route == "dsl" or r.flagged(Flag.POSSIBLE_SAFEGUARDING)]
    staff = [r for r in rows if r.label["route"] == "staff"]
    to_head = [r for r in staff if r.route == "head_of_school"]
    flagged = [r for r in staff if r.flagged(Flag.POSSIBLE_SAFEGUARDING)]
    abusive = [r for r in rows if r.label["tone"] == "abusive" and r.route == "staff"]
    urgent = [r for r in rows if r.label["route"] == "office"]
    interp = [r for r in rows if r.flagged(Flag.NEEDS_INTERPRETER)]
    print(f"\nDSL reached (routed or flagged): {len(reached)}/{len(dsl)}"
          f" = {len(reached) / max(1, len(dsl)):.3f}; routed {sum(r.route == 'dsl' for r in dsl)}")
    print(f"abusive routed to staff: {len(abusive)}")
    print(f"routine to the Head: {len(to_head)}/{len(staff)} = {len(to_head) / max(1, len(staff)):.3f}")
    print(f"routine flagged possible-safeguarding: {len(flagged)}/{len(staff)} = "
          f"{len(flagged) / max(1, len(staff)):.3f}")
    print(f"same-day mail reaching the office: {sum(r.route == 'office' for r in urgent)}/{len(urgent)}")
    print(f"needs-interpreter: {len(interp)} ({', '.join(sorted({str(r.findings.language) for r in interp}))})")
    wrong = [r for r in rows if r.route != r.label["route"]]
    print(f"misrouted: {len(wrong)}")
    if quiet:
        return
    for r in wrong:
        fired = ", ".join(f"{x.rule}={x.evidence!r}" if show_evidence else x.rule for x in r.findings.reasons)
        print(f"  {r.name}: labelled {r.label['route']} ({r.label.get('category', '')}), routed {r.route} [{fired}]")


def main(argv: list[str]) -> int:
    rules_dir = default_rules_dir()
    if "--rules" in argv:
        at = argv.index("--rules")
        rules_dir = Path(argv[at + 1])
        argv = argv[:at] + argv[at + 2:]
    args = [a for a in argv if not a.startswith("--")]
    show_evidence = "--evidence" in argv
    quiet = "--quiet" in argv
    folders = [Path(a) for a in args] or [ROOT / "tests" / "corpus" / "dev"]
    rules = load_rules(rules_dir)
    print(f"rules {rules_dir} (digest {rules.digest[:12]}; model {rules.model.digest[:12] if rules.model else None})")
    every: list[Row] = []
    for folder in folders:
        every += measure(folder, rules, show_evidence=show_evidence, quiet=quiet)
    if len(folders) > 1:
        summarise(f"all {len(folders)} folders", every, quiet=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
