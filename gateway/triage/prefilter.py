"""Fast paths for phrase patterns: literal prefilters, lower-case patterns, one pattern per phrase.

No I/O here. None of this changes what a rule matches; it only lets most rules be skipped without
running their regular expressions. Python's `re` tries every alternative of a pattern at every
word of the text, so a rule of forty phrases costs forty tries per word; checking first for a
few literals that any match must contain (the prefilter RE2 and Hyperscan use) skips nearly all
of that work on ordinary mail.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Iterator

# The regular-expression parser is private; the prefilter is an optimisation only, so a Python
# without it simply runs every phrase's pattern.
try:
    _sre: Any = importlib.import_module("re._constants")
    _sre_parse: Any = importlib.import_module("re._parser")
except ImportError:  # pragma: no cover - only on Pythons whose private layout differs
    _sre = _sre_parse = None

_WRAPPER = (r"(?<!\w)(?:", r")(?!\w)")


class LiteralIndex:
    """Which of many literals occur in a text, found in one pass.

    The literals form a trie written as one regular expression, tried at every position of the
    text; each hit also implies the literals that are its prefixes. The result is exactly the set
    of literals that `literal in text` would find, for a fraction of the cost of asking each.
    """

    def __init__(self, literals: frozenset[str]) -> None:
        self.literals = literals
        self._scan = re.compile("(?=(" + _trie(sorted(literals)) + "))") if literals else None
        self._prefixes = {lit: frozenset(lit[:k] for k in range(1, len(lit) + 1) if lit[:k] in literals)
                          for lit in literals}

    def present(self, text: str) -> frozenset[str]:
        if self._scan is None:
            return frozenset()
        found: set[str] = set()
        for match in self._scan.finditer(text):
            hit = match.group(1)
            if hit:
                found |= self._prefixes[hit]
        return frozenset(found)


def _trie(literals: list[str]) -> str:
    root: dict[str, Any] = {}
    for literal in literals:
        node = root
        for char in literal:
            node = node.setdefault(char, {})
        node[""] = {}
    return _emit(root)


def _emit(node: dict[str, Any]) -> str:
    # Children differ in their first character, so at most one branch can match, and the optional
    # tail after a literal's end is greedy: the longest literal at each position is found.
    branches = [re.escape(char) + _emit(node[char]) for char in sorted(k for k in node if k)]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return "(?:" + body + ")?" if "" in node else body


@dataclass(frozen=True)
class Part:
    """One phrase of a rule: its pattern, the same in lower case, and literals a match must contain."""

    pattern: re.Pattern[str]
    lower: re.Pattern[str] | None
    needs: frozenset[str] | None
    insensitive: bool


def fast_parts(pattern: re.Pattern[str]) -> tuple[Part, ...]:
    """The whole-word pattern built by `compile_phrases`, split into one `Part` per alternative."""
    source = pattern.pattern
    if not (source.startswith(_WRAPPER[0]) and source.endswith(_WRAPPER[1])):
        return (_part(pattern),)
    pieces = _alternatives(source[len(_WRAPPER[0]):-len(_WRAPPER[1])])
    try:
        return tuple(_part(re.compile(_WRAPPER[0] + piece + _WRAPPER[1], pattern.flags)) for piece in pieces)
    except re.error:
        return (_part(pattern),)


def _part(pattern: re.Pattern[str]) -> Part:
    return Part(pattern=pattern, lower=lowered(pattern), needs=required_strings(pattern),
                insensitive=bool(pattern.flags & re.IGNORECASE))


def _alternatives(source: str) -> list[str]:
    """Top-level alternatives of a pattern, unwrapping any "(?:...)" that spans a whole alternative."""
    found: list[str] = []
    for piece in _split_top(source):
        if piece.startswith("(?:") and piece.endswith(")") and _closes_at_end(piece):
            found.extend(_alternatives(piece[3:-1]))
        else:
            found.append(piece)
    return found


def _structure(source: str) -> Iterator[tuple[int, str, int]]:
    """(position, character, group depth after it) of each "(", ")" and "|" that is syntax: not
    escaped and not inside a character class (where a "]" right after the "[" is a member)."""
    depth, in_class, i = 0, False, 0
    while i < len(source):
        char = source[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if source[i + 1:i + 2] == "]":
                i += 1
        elif char in "()|":
            depth += {"(": 1, ")": -1, "|": 0}[char]
            yield i, char, depth
        i += 1


def _split_top(source: str) -> list[str]:
    pieces, start = [], 0
    for i, char, depth in _structure(source):
        if char == "|" and depth == 0:
            pieces.append(source[start:i])
            start = i + 1
    pieces.append(source[start:])
    return pieces


def _closes_at_end(piece: str) -> bool:
    """Whether the group opened at the start of `piece` closes only at its last character."""
    return all(i == len(piece) - 1 for i, char, depth in _structure(piece) if char == ")" and depth == 0)


def lowered(pattern: re.Pattern[str]) -> re.Pattern[str] | None:
    """The same case-insensitive pattern written in lower case, to run on lower-cased text.

    Python's IGNORECASE matching folds every character it compares; matching lower-case text
    with a lower-case pattern is about twice as fast. Escapes (\\W, \\S, \\D…) keep their case.
    """
    if not pattern.flags & re.IGNORECASE:
        return None
    source, out, i = pattern.pattern, [], 0
    while i < len(source):
        if source[i] == "\\" and i + 1 < len(source):
            out.append(source[i:i + 2])
            i += 2
            continue
        out.append(source[i].lower())
        i += 1
    try:
        return re.compile("".join(out))
    except re.error:
        return None


def required_strings(pattern: re.Pattern[str]) -> frozenset[str] | None:
    """Strings of which every match of `pattern` contains at least one, or None if none is known.

    This is the prefilter RE2 and Hyperscan use: `str.__contains__` on a few literals is far cheaper
    than running a pattern of many alternatives at every word of the text, and most rules cannot
    match most mail. Literals are lower-cased for case-insensitive patterns.
    """
    if _sre_parse is None:
        return None
    try:
        parsed = _sre_parse.parse(pattern.pattern, pattern.flags)
    except Exception:
        return None
    found = _required(list(parsed), bool(pattern.flags & re.IGNORECASE))
    return frozenset(found) if found else None


def _score(strings: frozenset[str] | None) -> float:
    """How selective a requirement is: its weakest string, where spaces are common and symbols rare."""
    if not strings:
        return 0.0
    return min(_weight(s) for s in strings)


def _weight(literal: str) -> float:
    # Words of three letters or fewer ("her", "you", "not") are in almost every email.
    weight = sum(0.3 if c.isspace() else 1.0 if c.isalnum() else 3.0 for c in literal)
    return weight / 2 if len(literal.strip()) <= 3 else weight


def _required(items: list[Any], fold_case: bool) -> frozenset[str] | None:
    """The best requirement of a sequence: its longest literal run or its most selective part."""
    best: frozenset[str] | None = None
    run: list[str] = []

    def offer(candidate: frozenset[str] | None) -> None:
        nonlocal best
        if candidate and _score(candidate) > _score(best):
            best = candidate

    for op, av in items:
        if op is _sre.LITERAL:
            char = chr(av)
            run.append(char.lower() if fold_case else char)
            continue
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) and av[0] >= 1 and len(av[2]) == 1 \
                and av[2][0][0] is _sre.LITERAL:
            # "fu+ck": "fu" is certain, and so is "uck" after the run of u's.
            char = chr(av[2][0][1])
            char = char.lower() if fold_case else char
            offer(frozenset(["".join(run) + char]))
            run = [char]
            continue
        offer(frozenset(["".join(run)]) if run else None)
        run = []
        offer(_required_item(op, av, fold_case))
    offer(frozenset(["".join(run)]) if run else None)
    return best


def _required_item(op: Any, av: Any, fold_case: bool) -> frozenset[str] | None:
    if op is _sre.SUBPATTERN:
        return _required(list(av[-1]), fold_case)
    if op is _sre.BRANCH:
        union: set[str] = set()
        for branch in av[1]:
            needed = _required(list(branch), fold_case)
            if not needed:
                return None
            union |= needed
        return frozenset(union)
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) and av[0] >= 1:
        return _required(list(av[2]), fold_case)
    if op is _sre.IN and av and all(kind is _sre.LITERAL for kind, _ in av):
        return frozenset(chr(c).lower() if fold_case else chr(c) for _, c in av)
    return None


