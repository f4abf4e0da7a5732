"""Reading a TOML table with typed access, located errors and unknown-key detection. No I/O here."""

from __future__ import annotations

import re
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_DURATION = re.compile(r"^(\d+)([smhd])$")
ADDRESS = re.compile(r"^[^@\s<>]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+$")


class ConfigError(Exception):
    """A configuration problem, phrased for the person editing the file."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{path}: {key}: {problem}")


def parse_duration(text: str) -> timedelta:
    """"90s", "5m", "4h", "5d" -> timedelta; raises ValueError otherwise."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"expected a duration like 90s, 5m, 4h or 5d, got {text!r}")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


def parse_clock(text: str) -> time | None:
    """"08:00" -> time(8); "24:00" -> None (until midnight)."""
    match = re.match(r"^(\d{2}):(\d{2})$", text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"expected HH:MM, got {text!r}")
    hour, minute = int(match.group(1)), int(match.group(2))
    if (hour, minute) == (24, 0):
        return None
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r} is not a time of day")
    return time(hour, minute)


def split_hostport(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep:
        raise ValueError(f"expected host:port, got {text!r}")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"port {number} out of range")
    return (host.strip("[]") or default_host), number


class Table:
    """A TOML table being read: typed access, and unknown keys reported by name."""

    def __init__(self, path: Path, prefix: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, prefix, "must be a table")
        self.path, self.prefix, self.data = path, prefix, data
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.path, self.key(name), problem)

    def get(self, name: str, kind: type[T], default: T | None = None, *, required: bool = False) -> T:
        self.seen.add(name)
        if name not in self.data:
            if required or default is None:
                raise self.error(name, "is required")
            return default
        value = self.data[name]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            raise self.error(name, f"must be {_kind_name(kind)}, got {type(value).__name__} {value!r}")
        return value

    def optional(self, name: str, kind: type[T]) -> T | None:
        if name not in self.data:
            self.seen.add(name)
            return None
        return self.get(name, kind)

    def convert(self, name: str, raw: Any, fn: Callable[[Any], T]) -> T:
        try:
            return fn(raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise self.error(name, str(exc)) from None

    def table(self, name: str) -> Table:
        self.seen.add(name)
        return Table(self.path, self.key(name), self.data.get(name, {}))

    def tables(self, name: str) -> list[Table]:
        self.seen.add(name)
        items = self.data.get(name, [])
        if not isinstance(items, list):
            raise self.error(name, "must be an array of tables ([[...]])")
        return [Table(self.path, f"{self.key(name)}[{i}]", item) for i, item in enumerate(items)]

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.error(unknown[0], "unknown key")


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", list: "a list",
            dict: "a table", date: "a date (YYYY-MM-DD)", float: "a number"}.get(kind, kind.__name__)


def read_address(table: Table, name: str, default: str | None = None) -> str:
    value = table.get(name, str, default)
    if not ADDRESS.match(value):
        raise table.error(name, f"{value!r} is not an email address")
    return value.lower()


def read_positive(table: Table, name: str, default: int) -> int:
    value = table.get(name, int, default)
    if value < 1:
        raise table.error(name, f"must be at least 1, got {value}")
    return value


def read_duration(table: Table, name: str, default: str) -> timedelta:
    raw = table.get(name, str, default)
    value = table.convert(name, raw, parse_duration)
    if value <= timedelta(0):
        raise table.error(name, "must be longer than zero")
    return value


def resolve_path(base: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate)


