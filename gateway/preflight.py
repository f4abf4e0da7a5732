"""Checks `check-config` makes of the paths a configuration names: can the user running it write there?

A configuration can be valid and still unusable by the service's user: a state directory beside a
file in /etc, or a Maildir root owned by root. These checks say so before the daemon starts (the
unit runs `check-config` as ExecStartPre, as the service's user), naming the key, the path and the
user. They only look: nothing is created, except a probe file removed at once.
"""

from __future__ import annotations

import os
import pwd
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Config


@dataclass(frozen=True)
class PathCheck:
    """One directory the gateway writes to, and what stops the running user from doing so (if anything)."""

    key: str
    what: str
    path: Path
    problem: str | None
    note: str = ""


def running_user() -> str:
    """The effective user's name and uid, as an operator would look it up: `parentgate (uid 998)`."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = "(no name)"
    return f"{name} (uid {uid})"


def directory_problem(path: Path) -> tuple[str | None, str]:
    """Why the running user cannot use `path` as a directory to write in (or None), and "exists" or "missing"."""
    if path.exists():
        if not path.is_dir():
            return "exists and is not a directory", ""
        try:
            # A real write, not os.access(): it also sees read-only mounts (systemd's ProtectSystem=),
            # ACLs and full disks.
            with tempfile.NamedTemporaryFile(dir=path, prefix=".parentgate-check-"):
                pass
        except OSError as exc:
            return f"is not writable ({exc.strerror or exc.__class__.__name__})", ""
        return None, "exists"
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot be created: {ancestor} is not a directory", ""
    mode = os.W_OK | os.X_OK
    allowed = (os.access(ancestor, mode, effective_ids=True) if os.access in os.supports_effective_ids
               else os.access(ancestor, mode))
    if not allowed:
        return f"does not exist and cannot be created ({ancestor} is not writable)", ""
    return None, "missing"


def _sqlite_directory(url: str) -> Path | None:
    """The directory of a file-based SQLite database, which must be writable for its journal."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix):] in ("", ":memory:"):
        return None
    return Path(url[len(prefix):].split("?", 1)[0]).parent


def check_paths(config: Config) -> list[PathCheck]:
    """The state directory, the SQLite database's directory and (in maildir mode) the Maildir root."""
    wanted: list[tuple[str, str, Path]] = [("gateway.state_dir", "state directory", config.gateway.state_dir)]
    database_dir = _sqlite_directory(config.gateway.database)
    if database_dir is not None and database_dir != config.gateway.state_dir:
        wanted.append(("gateway.database", "database directory", database_dir))
    if config.delivery.mode == "maildir":
        wanted.append(("delivery.maildir_root", "Maildir root", config.delivery.maildir_root))
    checks = []
    for key, what, path in wanted:
        problem, note = directory_problem(path)
        checks.append(PathCheck(key=key, what=what, path=path, problem=problem, note=note))
    return checks


def report(config: Config) -> tuple[list[str], list[str]]:
    """Lines for check-config: the usable directories, and the problems (each naming file, key, path, user)."""
    user = running_user()
    fine, problems = [], []
    for check in check_paths(config):
        if check.problem is None:
            state = "exists and is writable by" if check.note == "exists" else "does not exist yet; it can be created by"
            fine.append(f"{check.what} {check.path}: {state} {user}")
        else:
            problems.append(f"{config.path}: {check.key}: {check.what} {check.path} {check.problem} "
                            f"for user {user}")
    return fine, problems
