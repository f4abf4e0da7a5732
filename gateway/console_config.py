"""The [console] table: where the Head of School's web console listens, and who may sign in."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.config_reader import ADDRESS, Table, read_positive, split_hostport

ROLES = ("head", "dsl", "office", "trust")


@dataclass(frozen=True)
class ConsoleUser:
    """One `[[console.users]]` entry: a person, their role and the schools (ids) it applies to."""

    email: str
    role: str
    schools: tuple[str, ...]


@dataclass(frozen=True)
class ConsoleConfig:
    host: str
    port: int
    base_url: str
    session_hours: int
    link_minutes: int
    users: tuple[ConsoleUser, ...]

    @property
    def secure(self) -> bool:
        """Cookies are marked Secure when people reach the console over https."""
        return self.base_url.startswith("https://")


def read_console(t: Table, school_ids: set[str]) -> ConsoleConfig:
    """Validate [console]; a user naming a school that is not configured is an error, not a silent no-op."""
    host, port = t.convert("listen", t.get("listen", str, "127.0.0.1:8025"), split_hostport)
    base_url = t.get("base_url", str, f"http://{host}:{port}").rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise t.error("base_url", f"{base_url!r} is not an http:// or https:// address")
    users: list[ConsoleUser] = []
    for u in t.tables("users"):
        email = u.get("email", str, required=True)
        if not ADDRESS.match(email):
            raise u.error("email", f"{email!r} is not an email address")
        role = u.get("role", str, required=True)
        if role not in ROLES:
            raise u.error("role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        schools = u.get("schools", list, required=True)
        unknown = [s for s in schools if s not in school_ids]
        if unknown or not schools:
            raise u.error("schools", f"must list configured school ids; unknown: {unknown or 'none given'}")
        users.append(ConsoleUser(email=email.lower(), role=role, schools=tuple(schools)))
        u.finish()
    console = ConsoleConfig(host=host, port=port, base_url=base_url,
                            session_hours=read_positive(t, "session_hours", 8),
                            link_minutes=read_positive(t, "link_minutes", 15), users=tuple(users))
    t.finish()
    return console
