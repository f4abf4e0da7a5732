"""Where the rules and templates shipped with parentgate are on disk, however parentgate was installed.

The shipped `rules/` folder is installed as the package `gateway._rules`. A regular wheel install
and an editable install keep it as files; a zipped package (zipimport) does not, and the rule
loader, the Jinja templates and the judge processes all read files by path. So a zipped copy is
unpacked once into a directory private to the user, named by the digest of its contents.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import Iterator

RULES_PACKAGE = "gateway._rules"
# Python files only mark the folder as a package; they are not rules, and caches are not shipped.
_SKIP_SUFFIXES = (".py", ".pyc")
_SKIP_DIRS = frozenset({"__pycache__"})


def rules_directory() -> Path:
    """The shipped rules as a directory: the installed files themselves, or an unpacked copy of a zip."""
    try:
        shipped = resources.files(RULES_PACKAGE)
    except ModuleNotFoundError:
        # A source tree used without installing (PYTHONPATH=.): `rules/` sits beside the package.
        return Path(__file__).resolve().parent.parent / "rules"
    if isinstance(shipped, Path):
        return shipped
    return unpack(shipped, _cache_root())


def shipped_files(root: Traversable) -> Iterator[tuple[PurePosixPath, Traversable]]:
    """Every data file under `root` with its path relative to `root`, in a stable order."""
    def walk(node: Traversable, prefix: PurePosixPath) -> Iterator[tuple[PurePosixPath, Traversable]]:
        for entry in sorted(node.iterdir(), key=lambda e: e.name):
            if entry.is_dir():
                if entry.name not in _SKIP_DIRS:
                    yield from walk(entry, prefix / entry.name)
            elif entry.is_file() and not entry.name.endswith(_SKIP_SUFFIXES):
                yield prefix / entry.name, entry
    return walk(root, PurePosixPath())


def unpack(root: Traversable, cache: Path) -> Path:
    """Copy the files under `root` into `cache/rules-<digest>` (once) and return that directory.

    The copy is written beside its final name and renamed into place, so that processes starting
    together (the daemon and its judge processes, or two commands) never see half a folder.
    """
    files = [(relative, entry.read_bytes()) for relative, entry in shipped_files(root)]
    digest = hashlib.sha256()
    for relative, content in files:
        digest.update(str(relative).encode() + b"\0" + content + b"\0")
    target = cache / f"rules-{digest.hexdigest()[:16]}"
    if target.is_dir():
        return target
    partial = Path(tempfile.mkdtemp(prefix=".rules-", dir=cache))
    try:
        for relative, content in files:
            destination = partial.joinpath(*relative.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(content)
        os.rename(partial, target)
    except OSError:
        # Another process renamed its identical copy into place first: use that one.
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _cache_root() -> Path:
    """A directory only this user can write, for unpacked rules: `<tmp>/parentgate-<uid>`.

    The name is predictable, so it is checked before use: another user could otherwise create it
    first and plant rules that decide where a parent's mail goes.
    """
    root = Path(tempfile.gettempdir()) / f"parentgate-{os.geteuid()}"
    try:
        root.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        # Not ours, or writable by others: fall back to a fresh private directory.
        return Path(tempfile.mkdtemp(prefix="parentgate-rules-"))
    return root
