"""The learned component beside the rules: linear models over word and character n-grams. No I/O here
beyond reading the model file at load time.

The model file (`models/triage.json` in a rules directory) is plain JSON: a vocabulary of n-grams
with their idf, one weight per n-gram and per signal for each decision (safeguarding, abusive,
negative, personal, urgent), the thresholds, the training corpus summary, its cross-validated
figures and a sha256 digest of all of that. Nothing is unpickled; training (scikit-learn) lives in
`gateway.training`, and inference is the dot product below, in plain Python, the same on every
machine: features are counted in text order, weights are rounded when written, and scores are
rounded before they are compared with a threshold.

Features are the same code at training and at inference (`features`): lower-cased words with the
accents taken off (parents type "zle" for "źle"), word pairs, and character 3- to 5-grams within
words, weighted by sublinear tf-idf and normalised; plus binary signals that are not normalised:
which phrase rules fired (strong or weak), hostile sentiment aimed at staff, shouting, and whether
the text is English.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

MODEL_FORMAT = "parentgate-triage-model/1"
MODELS_DIR = "models"
MODEL_FILE = "triage.json"
DECISIONS = ("safeguarding", "abusive", "negative", "personal", "urgent")
# Enough of a message to judge it; bounds the work a long message costs.
MAX_CHARS = 4000
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")
_TOP_KEYS = frozenset({"format", "features", "terms", "idf", "signals", "decisions", "languages",
                       "corpus", "cross_validated", "digest"})
_DECISION_KEYS = frozenset({"bias", "weights", "signal_weights", "threshold", "possible"})
_ROUND = 6


class ModelError(Exception):
    """A model file that cannot be used: which file and what is wrong."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


def fold_token(token: str) -> str:
    """Lower case, accents off, curly apostrophe straight: "Źle" and "zle" are one feature."""
    lowered = token.lower().replace("’", "'")
    if lowered.isascii():
        return lowered
    decomposed = unicodedata.normalize("NFKD", lowered)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokens(text: str) -> list[tuple[str, int, int]]:
    """Words of `text` (folded) with where each one stands in `text`."""
    return [(fold_token(m.group(0)), m.start(), m.end()) for m in _WORD.finditer(text[:MAX_CHARS])]


@lru_cache(maxsize=65536)
def char_grams(word: str) -> tuple[str, ...]:
    """Character 3- to 5-grams of a word with a space either side ("c ...")."""
    padded = f" {word} "
    size = len(padded)
    return tuple("c " + padded[i:i + n] for n in (3, 4, 5) for i in range(size - n + 1))


def ngrams(words: list[str]) -> Counter[str]:
    """Word 1- and 2-grams ("w ...") and character 3- to 5-grams within words ("c ...")."""
    terms: list[str] = []
    previous = ""
    for word in words:
        terms.append("w " + word)
        if previous:
            terms.append("w " + previous + " " + word)
        previous = word
        terms.extend(char_grams(word))
    return Counter(terms)


def features(text: str) -> Counter[str]:
    return ngrams([t for t, _, _ in tokens(text)])


def digest_of(data: dict[str, Any]) -> str:
    """sha256 of the model's canonical JSON, everything but the digest itself."""
    body = {k: v for k, v in data.items() if k != "digest"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Decision:
    name: str
    bias: float
    weights: tuple[float, ...]
    signal_weights: dict[str, float]
    threshold: float
    possible: float | None = None


@dataclass(frozen=True)
class Vector:
    """A message as the model sees it: its words (folded, with where each stands in the text), the
    tf-idf value of each known n-gram before normalising, the norm, and the dot products."""

    words: list[tuple[str, int, int]]
    raw: dict[int, float]
    norm: float
    dots: tuple[float, ...]

    def normalised(self) -> dict[int, float]:
        return {i: v / self.norm for i, v in self.raw.items()}


@dataclass(frozen=True)
class TriageModel:
    digest: str
    path: str
    index: dict[str, int] = field(repr=False, compare=False, hash=False)
    idf: tuple[float, ...] = field(repr=False, compare=False, hash=False)
    decisions: dict[str, Decision] = field(repr=False, compare=False, hash=False)
    languages: frozenset[str] = frozenset()
    # term → (index, idf, its weight for each of DECISIONS in order): one look-up per n-gram.
    table: dict[str, tuple[Any, ...]] = field(default_factory=dict, repr=False, compare=False, hash=False)
    summary: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    def vector(self, text: str) -> Vector:
        """The message's words, its tf-idf vector and its dot product with each decision's weights,
        in one pass over the n-grams (in text order, so the same message sums in the same order on
        every run and machine)."""
        words = tokens(text)
        counts = ngrams([t for t, _, _ in words])
        table = self.table
        raw: dict[int, float] = {}
        squares = a = b = c = d = e = 0.0
        log = math.log
        for term, count in counts.items():
            entry = table.get(term)
            if entry is None:
                continue
            i, idf, w0, w1, w2, w3, w4 = entry
            v = idf if count == 1 else (1.0 + log(count)) * idf
            raw[i] = v
            squares += v * v
            a += v * w0
            b += v * w1
            c += v * w2
            d += v * w3
            e += v * w4
        norm = math.sqrt(squares) if squares > 0 else 1.0
        return Vector(words=words, raw=raw, norm=norm, dots=(a / norm, b / norm, c / norm, d / norm, e / norm))

    def known_share(self, words: list[tuple[str, int, int]]) -> float:
        """How many of the message's words the model has seen in training (0 to 1)."""
        if not words:
            return 1.0
        return sum(1 for w, _, _ in words if ("w " + w) in self.index) / len(words)

    def scores(self, vector: Vector, signals: frozenset[str]) -> dict[str, float]:
        """Every decision's probability, rounded before any comparison."""
        result: dict[str, float] = {}
        present = sorted(signals)
        for k, name in enumerate(DECISIONS):
            decision = self.decisions[name]
            total = decision.bias + vector.dots[k] + sum(decision.signal_weights.get(s, 0.0) for s in present)
            total = max(-50.0, min(50.0, total))
            result[name] = round(1.0 / (1.0 + math.exp(-total)), _ROUND)
        return result

    def evidence(self, decision: str, text: str, vector: Vector) -> str:
        """The run of up to eight words that weighed most for `decision`, quoted from the message.

        Each term's part of the score is shared among its occurrences, and each occurrence among
        the words it belongs to; the window of words with the largest sum is quoted.
        """
        words = vector.words
        if not words:
            return ""
        vec = vector.normalised()
        weights = self.decisions[decision].weights
        index = self.index
        terms_of = [self._word_terms(word, words[k - 1][0] if k else None) for k, (word, _, _) in enumerate(words)]
        seen: Counter[str] = Counter(t for terms in terms_of for t in terms)
        weight: list[float] = []
        for terms in terms_of:
            w = 0.0
            for term in terms:
                i = index.get(term)
                if i is not None and i in vec:
                    w += weights[i] * vec[i] / seen[term]
            weight.append(w)
        span = min(8, len(words))
        best, best_at = -math.inf, 0
        running = math.fsum(weight[:span])
        for start in range(0, len(words) - span + 1):
            if start:
                running += weight[start + span - 1] - weight[start - 1]
            if running > best + 1e-9:
                best, best_at = running, start
        first, last = words[best_at], words[best_at + span - 1]
        return "…" + " ".join(text[first[1]:last[2]].split()) + "…"

    @staticmethod
    def _word_terms(word: str, previous: str | None) -> list[str]:
        terms = ["w " + word]
        if previous:
            terms.append("w " + previous + " " + word)
        terms.extend(char_grams(word))
        return terms


def _fail(path: Path, problem: str) -> ModelError:
    return ModelError(path, problem)


def _number(path: Path, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, f"{where} must be a finite number")
    return float(value)


def parse_model(path: Path, raw: bytes) -> TriageModel:
    """Validate a model file's bytes: JSON, format, digest, shapes. `ModelError` names the file."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _fail(path, f"not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise _fail(path, "must be a JSON object")
    if data.get("format") != MODEL_FORMAT:
        raise _fail(path, f"'format' must be {MODEL_FORMAT!r}")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _fail(path, f"unknown key {sorted(unknown)[0]!r}")
    missing = {"terms", "idf", "signals", "decisions", "digest"} - set(data)
    if missing:
        raise _fail(path, f"missing {sorted(missing)[0]!r}")
    digest = data["digest"]
    if not isinstance(digest, str) or digest != digest_of(data):
        raise _fail(path, "digest does not match the contents (the file was changed or damaged)")
    terms, idf, signals = data["terms"], data["idf"], data["signals"]
    if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms) or not terms:
        raise _fail(path, "'terms' must be a non-empty list of strings")
    if len(set(terms)) != len(terms):
        raise _fail(path, "'terms' has duplicates")
    if not isinstance(idf, list) or len(idf) != len(terms):
        raise _fail(path, f"'idf' must have one number per term ({len(terms)})")
    idf_values = tuple(_number(path, "'idf'", v) for v in idf)
    if not isinstance(signals, list) or not all(isinstance(s, str) for s in signals):
        raise _fail(path, "'signals' must be a list of strings")
    decisions_raw = data["decisions"]
    if not isinstance(decisions_raw, dict) or set(decisions_raw) != set(DECISIONS):
        raise _fail(path, f"'decisions' must have exactly {', '.join(DECISIONS)}")
    decisions: dict[str, Decision] = {}
    for name in DECISIONS:
        d = decisions_raw[name]
        if not isinstance(d, dict) or set(d) - _DECISION_KEYS or {"bias", "weights", "signal_weights",
                                                                    "threshold"} - set(d):
            raise _fail(path, f"decision {name!r} must have bias, weights, signal_weights, threshold")
        weights = d["weights"]
        if not isinstance(weights, list) or len(weights) != len(terms):
            raise _fail(path, f"decision {name!r}: 'weights' must have one number per term ({len(terms)})")
        sw = d["signal_weights"]
        if not isinstance(sw, list) or len(sw) != len(signals):
            raise _fail(path, f"decision {name!r}: 'signal_weights' must have one number per signal")
        threshold = _number(path, f"decision {name!r}: 'threshold'", d["threshold"])
        possible = d.get("possible")
        if possible is not None:
            possible = _number(path, f"decision {name!r}: 'possible'", possible)
        if not 0 < threshold < 1 or (possible is not None and not 0 < possible <= threshold):
            raise _fail(path, f"decision {name!r}: thresholds must be between 0 and 1, possible below threshold")
        decisions[name] = Decision(
            name=name, bias=_number(path, f"decision {name!r}: 'bias'", d["bias"]),
            weights=tuple(_number(path, f"decision {name!r}: 'weights'", w) for w in weights),
            signal_weights={s: _number(path, f"decision {name!r}: 'signal_weights'", w)
                            for s, w in zip(signals, sw)},
            threshold=threshold, possible=possible)
    languages = data.get("languages", {})
    if not isinstance(languages, dict):
        raise _fail(path, "'languages' must map language codes to counts")
    table = {t: (i, idf_values[i], *(decisions[name].weights[i] for name in DECISIONS))
             for i, t in enumerate(terms)}
    return TriageModel(digest=digest, path=str(path), index={t: i for i, t in enumerate(terms)}, idf=idf_values,
                       decisions=decisions, table=table, languages=frozenset(languages),
                       summary={"corpus": data.get("corpus", {}), "cross_validated": data.get("cross_validated", {})})


def load_model(directory: Path) -> TriageModel:
    """`models/triage.json` under a rules directory, validated, or `ModelError` naming the file."""
    path = Path(directory) / MODELS_DIR / MODEL_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _fail(path, "model file not found (a rules directory needs models/triage.json; "
                          "copy the shipped one or run 'parentgate model train')") from None
    except OSError as error:
        raise _fail(path, f"cannot read: {error.strerror}") from None
    return parse_model(path, raw)
