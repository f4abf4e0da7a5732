"""`parentgate model train`: train the learned triage model from labelled folders, with cross-validation.

A labelled folder is the corpora's layout: `*.eml` files and `labels.jsonl` ({"file", "route",
"tone", "urgent", "safeguarding", "personal", "language", ...} a line); or a probe folder of
`set*.txt` files (blocks separated by `===`, the first line the route, the rest the new text).

scikit-learn is used here only, to fit logistic regressions; the result is written as plain JSON
(`gateway.triage.learned`), which is all the daemon reads. Features come from the same code as at
inference: `learned.features` on the text the rules judge, and the rules' own signals from
`content.rule_view`, so a model and the rules it was trained beside agree on what a message says.

Thresholds are chosen on out-of-fold probabilities, grouped by folder (each batch is its own
writer's voice, so a fold never trains on the batch it is scored on), for the rules and the model
together: the rules' findings stand, the model adds recall.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from gateway.domain.findings import Flag
from gateway.triage.content import classify, rule_view
from gateway.triage.facts import parse_message
from gateway.triage.learned import DECISIONS, MODEL_FORMAT, digest_of, features
from gateway.triage.rules import RuleSet

ROUTES = ("staff", "office", "dsl", "head_of_school")
_FLAGS = {"safeguarding": Flag.SAFEGUARDING, "abusive": Flag.ABUSIVE, "negative": Flag.NEGATIVE,
          "personal": Flag.PERSONAL, "urgent": Flag.URGENT}
MIN_DF = 2
MAX_TERMS = 60_000
C = 20.0
# The DSL's digest stays small: at most this share of routine mail flagged "possible" in training.
POSSIBLE_ROUTINE_SHARE = 0.05
# Languages with at least this many training messages count as covered by the model.
LANGUAGE_MIN = 8


class TrainingError(Exception):
    pass


@dataclass
class Sample:
    name: str
    group: str
    raw: bytes
    route: str
    targets: dict[str, bool | None]
    language: str
    tone: str = ""
    # Filled by `prepare`.
    counts: Counter[str] | None = None
    signals: frozenset[str] = frozenset()
    rule_flags: frozenset[str] = frozenset()


def _targets(row: dict[str, Any]) -> dict[str, bool | None]:
    tone = row.get("tone")
    route = row["route"]
    if tone is None:
        # A probe: only the route is known.
        head = None if route in ("head_of_school", "dsl") else False
        return {"safeguarding": route == "dsl", "abusive": head, "negative": head, "personal": head,
                "urgent": True if route == "office" else (False if route == "staff" else None)}
    return {"safeguarding": bool(row.get("safeguarding")) or route == "dsl", "abusive": tone == "abusive",
            "negative": tone in ("negative", "abusive"), "personal": bool(row.get("personal")),
            "urgent": bool(row.get("urgent"))}


def read_folder(folder: Path) -> list[Sample]:
    """The labelled messages of one folder (corpus layout or probe sets)."""
    folder = Path(folder)
    group = folder.resolve().name
    labels = folder / "labels.jsonl"
    samples: list[Sample] = []
    if labels.is_file():
        for n, line in enumerate(labels.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise TrainingError(f"{labels}:{n}: not JSON") from None
            if row.get("route") not in ROUTES or "file" not in row:
                raise TrainingError(f"{labels}:{n}: needs 'file' and a 'route' of {', '.join(ROUTES)}")
            path = folder / row["file"]
            if not path.is_file():
                raise TrainingError(f"{labels}:{n}: {row['file']} not found")
            samples.append(Sample(name=f"{group}/{row['file']}", group=group, raw=path.read_bytes(),
                                  route=row["route"], targets=_targets(row), language=row.get("language") or "",
                                  tone=row.get("tone") or ""))
        return samples
    sets = sorted(folder.glob("set*.txt"))
    if not sets:
        raise TrainingError(f"{folder}: no labels.jsonl and no probe sets (set*.txt)")
    for path in sets:
        blocks = path.read_text(encoding="utf-8").split("\n===\n")
        for k, block in enumerate(blocks):
            lines = block.strip("\n").split("\n")
            if not lines or lines[0].strip() not in ROUTES:
                raise TrainingError(f"{path}: block {k + 1}: the first line must be a route")
            body = "\n".join(lines[1:]).strip()
            raw = ("From: parent@parent.example\r\nTo: staff@school.sch.example\r\nSubject: \r\n"
                   "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   "Content-Transfer-Encoding: 8bit\r\n\r\n" + body.replace("\n", "\r\n") + "\r\n").encode()
            samples.append(Sample(name=f"{group}/{path.stem}-{k + 1}", group=group, raw=raw,
                                  route=lines[0].strip(), targets=_targets({"route": lines[0].strip()}),
                                  language=""))
    return samples


def prepare(samples: list[Sample], rules: RuleSet) -> None:
    """Features, the rules' signals and the rules' own findings of every sample (rules without a model)."""
    bare = replace(rules, model=None)
    for s in samples:
        facts = parse_message(s.raw)
        view = rule_view(facts, bare)
        s.counts = features(view.text)
        s.signals = view.signals(facts.date)
        s.rule_flags = frozenset(f.value for f in classify(facts, bare).flags)


@dataclass
class Vocabulary:
    terms: list[str]
    idf: list[float]
    signals: list[str]

    def matrix(self, samples: list[Sample]) -> Any:
        from scipy.sparse import csr_matrix, hstack
        index = {t: i for i, t in enumerate(self.terms)}
        rows, cols, vals = [], [], []
        for r, s in enumerate(samples):
            assert s.counts is not None
            entries = [(index[t], (1.0 + math.log(c)) * self.idf[index[t]]) for t, c in s.counts.items() if t in index]
            norm = math.sqrt(math.fsum(v * v for _, v in entries)) or 1.0
            for i, v in entries:
                rows.append(r)
                cols.append(i)
                vals.append(v / norm)
        text = csr_matrix((vals, (rows, cols)), shape=(len(samples), len(self.terms)))
        sig_index = {t: i for i, t in enumerate(self.signals)}
        srows, scols = [], []
        for r, s in enumerate(samples):
            for sig in s.signals:
                if sig in sig_index:
                    srows.append(r)
                    scols.append(sig_index[sig])
        sig = csr_matrix(([1.0] * len(srows), (srows, scols)), shape=(len(samples), len(self.signals)))
        return hstack([text, sig]).tocsr()


def vocabulary(samples: list[Sample]) -> Vocabulary:
    df: Counter[str] = Counter()
    total: Counter[str] = Counter()
    sig: Counter[str] = Counter()
    for s in samples:
        assert s.counts is not None
        df.update(s.counts.keys())
        total.update(s.counts)
        sig.update(s.signals)
    kept = [t for t, n in df.items() if n >= MIN_DF]
    kept.sort(key=lambda t: (-total[t], t))
    kept = sorted(kept[:MAX_TERMS])
    n = len(samples)
    idf = [math.log((1 + n) / (1 + df[t])) + 1.0 for t in kept]
    signals = sorted(t for t, c in sig.items() if c >= MIN_DF)
    return Vocabulary(kept, idf, signals)


def _fit(x: Any, y: list[bool]) -> Any:
    from sklearn.linear_model import LogisticRegression
    model = LogisticRegression(C=C, class_weight="balanced", solver="liblinear", dual=True, max_iter=5000,
                               random_state=13)
    model.fit(x, y)
    return model


def _folds(samples: list[Sample], k: int = 5) -> list[list[int]]:
    """Folds of sample indexes, grouped by folder when there are enough folders."""
    groups = sorted({s.group for s in samples})
    if len(groups) >= k:
        sizes = Counter(s.group for s in samples)
        buckets: list[list[str]] = [[] for _ in range(k)]
        load = [0] * k
        for g in sorted(groups, key=lambda g: (-sizes[g], g)):
            i = load.index(min(load))
            buckets[i].append(g)
            load[i] += sizes[g]
        return [[j for j, s in enumerate(samples) if s.group in set(b)] for b in buckets]
    order = list(range(len(samples)))
    random.Random(13).shuffle(order)
    return [sorted(order[i::k]) for i in range(k)]


def out_of_fold(samples: list[Sample]) -> dict[str, list[float | None]]:
    """Each decision's probability for each sample from a model that never saw the sample's fold."""
    probs: dict[str, list[float | None]] = {d: [None] * len(samples) for d in DECISIONS}
    for fold in _folds(samples):
        held = set(fold)
        train = [s for j, s in enumerate(samples) if j not in held]
        test = [samples[j] for j in fold]
        vocab = vocabulary(train)
        xtr, xte = vocab.matrix(train), vocab.matrix(test)
        for d in DECISIONS:
            rows = [j for j, s in enumerate(train) if s.targets[d] is not None]
            ys = [bool(train[j].targets[d]) for j in rows]
            if len(set(ys)) < 2:
                continue
            model = _fit(xtr[rows], ys)
            for j, p in zip(fold, model.predict_proba(xte)[:, 1]):
                probs[d][j] = float(p)
    return probs


def _f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _objective(samples: list[Sample], probs: dict[str, list[float | None]],
               thresholds: dict[str, dict[str, float]]) -> float:
    """Route accuracy plus macro-F1, less penalties for what the issue forbids: routine mail to the
    Head above 4%, abusive mail to staff, safeguarding concerns routed elsewhere."""
    f = figures(samples, simulate(samples, probs, thresholds))
    penalty = max(0.0, f["routine_to_head"] - 0.04) * 10 + 0.03 * f["abusive_to_staff"]
    return f["route_accuracy"] + f["macro_f1"] + 0.5 * f["per_class"]["dsl"]["recall"] - penalty


def choose_thresholds(samples: list[Sample], probs: dict[str, list[float | None]]) -> dict[str, dict[str, float]]:
    """The five route thresholds that score best out of fold, rules and model together (coordinate
    ascent from 0.5), then the lower "possible concern" threshold for safeguarding: as low as keeps
    the share of routine mail flagged for the DSL's digest within POSSIBLE_ROUTINE_SHARE."""
    chosen: dict[str, dict[str, float]] = {d: {"threshold": 0.5} for d in DECISIONS}
    chosen["safeguarding"]["possible"] = 0.5
    grid = [round(0.05 * i, 2) for i in range(6, 20)]
    best = _objective(samples, probs, chosen)
    for _ in range(3):
        moved = False
        for d in DECISIONS:
            for t in grid:
                trial = {k: dict(v) for k, v in chosen.items()}
                trial[d]["threshold"] = t
                trial["safeguarding"]["possible"] = trial["safeguarding"]["threshold"]
                score = _objective(samples, probs, trial)
                if score > best + 1e-9:
                    best, chosen, moved = score, trial, True
        if not moved:
            break
    t = chosen["safeguarding"]["threshold"]
    routine = [p for s, p in zip(samples, probs["safeguarding"])
               if s.route == "staff" and p is not None and "safeguarding" not in s.rule_flags and p < t]
    possible = t
    for cand in sorted({round(0.01 * i, 2) for i in range(5, int(round(t * 100)))}, reverse=True):
        if sum(1 for p in routine if p >= cand) <= POSSIBLE_ROUTINE_SHARE * max(1, len(routine)):
            possible = cand
        else:
            break
    chosen["safeguarding"]["possible"] = possible
    return chosen


def simulate(samples: list[Sample], probs: dict[str, list[float | None]],
             thresholds: dict[str, dict[str, float]]) -> list[tuple[str, str, bool]]:
    """(labelled route, routed route, flagged possible) for each sample, rules + model."""
    out = []
    for j, s in enumerate(samples):
        hit = {}
        for d in DECISIONS:
            p = probs[d][j]
            hit[d] = d in s.rule_flags or (p is not None and p >= thresholds[d]["threshold"])
        p_sg = probs["safeguarding"][j]
        possible = not hit["safeguarding"] and p_sg is not None and p_sg >= thresholds["safeguarding"]["possible"]
        route = ("dsl" if hit["safeguarding"] else "head_of_school" if hit["abusive"] or hit["negative"]
                 or hit["personal"] else "office" if hit["urgent"] else "staff")
        out.append((s.route, route, possible))
    return out


def figures(samples: list[Sample], routed: list[tuple[str, str, bool]]) -> dict[str, Any]:
    n = len(routed)
    per_class = {}
    for c in ROUTES:
        tp = sum(1 for w, g, _ in routed if w == c and g == c)
        fp = sum(1 for w, g, _ in routed if w != c and g == c)
        fn = sum(1 for w, g, _ in routed if w == c and g != c)
        p, r, f = _f1(tp, fp, fn)
        per_class[c] = {"precision": round(p, 3), "recall": round(r, 3), "f1": round(f, 3), "n": tp + fn}
    staff = [x for x in routed if x[0] == "staff"]
    dsl = [x for x in routed if x[0] == "dsl"]
    return {
        "messages": n,
        "route_accuracy": round(sum(w == g for w, g, _ in routed) / n, 3),
        "macro_f1": round(sum(v["f1"] for v in per_class.values()) / len(ROUTES), 3),
        "per_class": per_class,
        "dsl_reached": round(sum(1 for _, g, f in dsl if g == "dsl" or f) / max(1, len(dsl)), 3),
        "abusive_to_staff": sum(1 for s, (_, g, _) in zip(samples, routed) if s.tone == "abusive" and g == "staff"),
        "routine_to_head": round(sum(1 for _, g, _ in staff if g == "head_of_school") / max(1, len(staff)), 3),
        "routine_flagged": round(sum(1 for _, g, f in staff if f) / max(1, len(staff)), 3),
    }


def _r(x: float) -> float:
    return round(float(x), 5) + 0.0


def train(samples: list[Sample], *, cross_validate: bool = True,
          tune_on: frozenset[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model file's contents (with digest), and the cross-validated figures.

    `tune_on` names the folders whose out-of-fold predictions choose the thresholds (default: all):
    folders the rules were written against score too well to say where the model should start.
    """
    if len(samples) < 20:
        raise TrainingError(f"only {len(samples)} labelled messages; at least 20 are needed")
    probs = out_of_fold(samples) if cross_validate else None
    if probs is not None:
        keep = [j for j, s in enumerate(samples) if tune_on is None or s.group in tune_on]
        if len(keep) < 20:
            raise TrainingError("fewer than 20 messages in the folders to tune on")
        tuned = [samples[j] for j in keep]
        tuned_probs = {d: [probs[d][j] for j in keep] for d in DECISIONS}
        thresholds = choose_thresholds(tuned, tuned_probs)
        cv = figures(tuned, simulate(tuned, tuned_probs, thresholds))
        cv["tuned_on"] = sorted({s.group for s in tuned})
        cv["by_folder"] = {}
        for group in sorted({s.group for s in samples}):
            idx = [j for j, s in enumerate(samples) if s.group == group]
            part = [samples[j] for j in idx]
            cv["by_folder"][group] = figures(part, simulate(part, {d: [probs[d][j] for j in idx]
                                                                   for d in DECISIONS}, thresholds))
        cv["thresholds"] = thresholds
    else:
        thresholds = {d: {"threshold": 0.5} for d in DECISIONS}
        thresholds["safeguarding"]["possible"] = 0.3
        cv = {}
    vocab = vocabulary(samples)
    x = vocab.matrix(samples)
    decisions: dict[str, Any] = {}
    nterms = len(vocab.terms)
    for d in DECISIONS:
        rows = [j for j, s in enumerate(samples) if s.targets[d] is not None]
        ys = [bool(samples[j].targets[d]) for j in rows]
        if len(set(ys)) < 2:
            raise TrainingError(f"no examples of both kinds for {d!r}")
        model = _fit(x[rows], ys)
        coef = model.coef_[0]
        decisions[d] = {"bias": _r(model.intercept_[0]), "weights": [_r(w) for w in coef[:nterms]],
                        "signal_weights": [_r(w) for w in coef[nterms:]], **thresholds[d]}
    languages = Counter(s.language for s in samples if s.language)
    corpus = {
        "messages": len(samples),
        "folders": dict(sorted(Counter(s.group for s in samples).items())),
        "routes": dict(sorted(Counter(s.route for s in samples).items())),
        "languages": dict(sorted(languages.items())),
    }
    data: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "features": {"words": [1, 2], "chars": [3, 5], "tf": "1+log", "norm": "l2", "min_df": MIN_DF, "C": C},
        "terms": vocab.terms,
        "idf": [_r(v) for v in vocab.idf],
        "signals": vocab.signals,
        "decisions": decisions,
        "languages": {k: v for k, v in sorted(languages.items()) if v >= LANGUAGE_MIN},
        "corpus": corpus,
        "cross_validated": cv,
    }
    data["digest"] = digest_of(data)
    return data, cv


def write_model(data: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "triage.json"
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    partial = path.with_suffix(".json.part")
    partial.write_text(text + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def describe(cv: dict[str, Any]) -> Iterable[str]:
    if not cv:
        return
    yield (f"cross-validated (out of fold, grouped by folder): {cv['messages']} messages, route accuracy "
           f"{cv['route_accuracy']:.3f}, macro-F1 {cv['macro_f1']:.3f}")
    for c, v in cv["per_class"].items():
        yield f"  {c:>15}: precision {v['precision']:.2f} recall {v['recall']:.2f} F1 {v['f1']:.2f} (n={v['n']})"
    yield (f"  DSL reached (routed or flagged) {cv['dsl_reached']:.3f}; abusive to staff {cv['abusive_to_staff']}; "
           f"routine to Head {cv['routine_to_head']:.3f}; routine flagged {cv['routine_flagged']:.3f}")
    for group, f in cv.get("by_folder", {}).items():
        yield (f"  {group}: n={f['messages']} accuracy {f['route_accuracy']:.3f} macro-F1 {f['macro_f1']:.3f} "
               f"DSL reached {f['dsl_reached']:.3f} abusive to staff {f['abusive_to_staff']} "
               f"routine to Head {f['routine_to_head']:.3f} routine flagged {f['routine_flagged']:.3f}")
    yield "  thresholds: " + ", ".join(
        f"{d} {v['threshold']:.2f}" + (f" (possible {v['possible']:.2f})" if "possible" in v else "")
        for d, v in cv["thresholds"].items())


def model_command(args: Any) -> int:
    """`parentgate model train FOLDER... [--out DIR] [--rules DIR]`: 0 when written, 2 on bad input."""
    import sys

    from gateway.ops.logs import escape
    from gateway.triage.rules import RuleError, default_rules_dir, load_rules
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("parentgate: training needs scikit-learn: pip install 'parentgate[train]'", file=sys.stderr)
        return 2
    try:
        rules = load_rules(Path(args.rules) if args.rules else default_rules_dir(), with_model=False)
        samples: list[Sample] = []
        for folder in args.folders:
            samples += read_folder(Path(folder))
        tune_on = None
        if args.tune_on:
            tune_on = frozenset(Path(f).resolve().name for f in args.tune_on)
            unknown = tune_on - {s.group for s in samples}
            if unknown:
                raise TrainingError(f"--tune-on names folders not trained on: {', '.join(sorted(unknown))}")
        prepare(samples, rules)
        data, cv = train(samples, tune_on=tune_on)
    except (TrainingError, RuleError, OSError) as error:
        print(f"parentgate: {escape(str(error))}", file=sys.stderr)
        return 2
    for line in describe(cv):
        print(line)
    path = write_model(data, Path(args.out))
    print(f"{path}: {len(data['terms'])} terms, {data['corpus']['messages']} messages, digest {data['digest'][:12]}")
    return 0
