"""Column types that store any text a sender can put in a header or an envelope, on every backend.

PostgreSQL refuses a NUL character in text and a value longer than its VARCHAR(n), and the driver
cannot encode a lone surrogate (what undecodable bytes become under `surrogateescape`); SQLite takes
all three. A message's raw bytes are kept untouched in a binary column; the text copied from its
headers and envelope into text columns (Message-ID, addresses, HELO name, family key, subject key)
is cleaned as it is written: control characters and surrogates become visible escapes (`\\x00`,
`\\udcff`) and the value is cut to the column's length. The same cleaning applies to the values a
query compares with these columns, so a lookup finds what was stored.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.types import TypeDecorator

# C0 and C1 controls, DEL, and surrogates. Text columns keep tab, line feed and carriage return.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_UNSAFE_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
# What PostgreSQL cannot hold inside JSON text it may be asked to read (`->>`): NUL and surrogates.
_UNSAFE_JSON = re.compile(r"[\x00\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean_text(value: str, length: int | None = None, *, pattern: re.Pattern[str] = _UNSAFE) -> str:
    """`value` with unsafe characters escaped, cut to `length` characters."""
    if pattern.search(value) is not None:
        value = pattern.sub(_escape, value)
    return value if length is None or len(value) <= length else value[:length]


def clean_json(value: Any) -> Any:
    """A JSON value with every string (keys included) free of NUL and surrogates."""
    if isinstance(value, str):
        return clean_text(value, pattern=_UNSAFE_JSON)
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    if isinstance(value, dict):
        return {clean_json(k) if isinstance(k, str) else k: clean_json(v) for k, v in value.items()}
    return value


class SafeString(TypeDecorator[str]):
    """VARCHAR(n) that accepts any str: escaped and cut to n on the way in (see the module's docstring)."""

    impl = String
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self._max = length

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else clean_text(str(value), self._max)


class SafeText(TypeDecorator[str]):
    """TEXT that accepts any str: control characters other than tab and line ends are escaped."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else clean_text(str(value), pattern=_UNSAFE_TEXT)


class SafeJSON(TypeDecorator[Any]):
    """JSON whose strings never hold NUL or lone surrogates."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return clean_json(value)
