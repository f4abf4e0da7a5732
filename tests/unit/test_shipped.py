"""Shipped rules from a zip: unpacked once, by content, into a directory only this user can write."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from gateway import shipped


def _zip(path: Path, files: dict[str, bytes]) -> zipfile.Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, content in files.items():
            z.writestr(name, content)
    return zipfile.Path(zipfile.ZipFile(path), "pkg/_rules/")


def test_unpacking_copies_data_files_only_and_reuses_an_identical_copy(tmp_path: Path):
    root = _zip(tmp_path / "a.zip", {"pkg/_rules/__init__.py": b"", "pkg/_rules/a.toml": b"x = 1\n",
                                     "pkg/_rules/templates/t.j2": b"hello", "pkg/_rules/__pycache__/x.pyc": b"\0"})
    cache = tmp_path / "cache"
    cache.mkdir()
    first = shipped.unpack(root, cache)
    assert sorted(str(p.relative_to(first)) for p in first.rglob("*") if p.is_file()) == ["a.toml", "templates/t.j2"]
    assert shipped.unpack(root, cache) == first
    assert list(cache.iterdir()) == [first]


def test_different_contents_unpack_to_different_directories(tmp_path: Path):
    cache = tmp_path / "cache"
    cache.mkdir()
    one = shipped.unpack(_zip(tmp_path / "a.zip", {"pkg/_rules/a.toml": b"x = 1\n"}), cache)
    two = shipped.unpack(_zip(tmp_path / "b.zip", {"pkg/_rules/a.toml": b"x = 2\n"}), cache)
    assert one != two and (two / "a.toml").read_bytes() == b"x = 2\n"


def test_a_cache_directory_that_others_can_write_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    planted = tmp_path / f"parentgate-{os.geteuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    root = shipped._cache_root()
    assert root != planted and root.parent == tmp_path
    assert root.stat().st_mode & 0o077 == 0


def test_the_cache_directory_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    root = shipped._cache_root()
    assert root == tmp_path / f"parentgate-{os.geteuid()}"
    assert root.stat().st_mode & 0o777 == 0o700
