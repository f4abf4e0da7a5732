"""Packaging: a built wheel holds the whole package and its rules, which are found however it is installed.

The wheel is built once per module from this checkout (`pip wheel --no-deps`, a few seconds). A
regular install goes into a fresh venv that borrows the test environment's dependencies through a
.pth file; a zipped install is the wheel itself on PYTHONPATH (zipimport).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # The build runs in a copy, so that build/ and *.egg-info never appear in the checkout.
    src = out / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "var", "build", "*.egg-info",
                                                             "__pycache__", ".pytest_cache", "corpus"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=170)
    assert r.returncode == 0, r.stderr[-2000:]
    [built] = out.glob("parentgate-*.whl")
    return built


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STATE_DIRECTORY", "NOTIFY_SOCKET")}
    env.update(extra)
    return env


def _example_config(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.toml"
    shutil.copy(ROOT / "config.example.toml", config)
    return config


def test_the_wheel_holds_every_module_and_every_shipped_rule_file(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "gateway").rglob("*.py") if "__pycache__" not in p.parts}
    shipped = {"gateway/_rules/" + str(p.relative_to(ROOT / "rules")) for p in (ROOT / "rules").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert modules - names == set()
    assert shipped - names == set()
    assert "gateway/_rules/templates/ack_in_hours.txt.j2" in names


def test_the_build_is_free_of_deprecation_warnings(tmp_path: Path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "var", "build", "*.egg-info",
                                                             "__pycache__", ".pytest_cache", "corpus", "tests"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), str(src)],
                       capture_output=True, text=True, timeout=170)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout + r.stderr
    assert "Warning" not in out and "deprecated" not in out, out[-3000:]


def test_a_regular_install_finds_its_rules_and_passes_check_config_with_the_example(wheel: Path, tmp_path: Path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                        "--quiet", "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    purelib = Path(subprocess.check_output([str(venv / "bin" / "python"), "-c",
                                            "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                           text=True).strip())
    # The dependencies come from the test environment; parentgate itself only from the wheel.
    (purelib / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = _clean_env()
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import gateway; from gateway.triage.rules import default_rules_dir, load_rules; "
                            "d = default_rules_dir(); load_rules(d); print(gateway.__file__); print(d)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    module, rules = where.stdout.split()
    assert Path(module).is_relative_to(purelib)
    assert Path(rules) == purelib / "gateway" / "_rules"
    assert (Path(rules) / "templates" / "ack_in_hours.txt.j2").is_file()

    version = subprocess.run([str(venv / "bin" / "parentgate"), "--version"], capture_output=True, text=True,
                             cwd=tmp_path, env=env, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == "parentgate 0.1.0"

    config = _example_config(tmp_path / "etc")
    check = subprocess.run([str(venv / "bin" / "parentgate"), "--config", str(config), "check-config"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{config}: ok" in check.stdout


def test_a_zipped_package_unpacks_its_rules_once_into_a_private_directory(wheel: Path, tmp_path: Path):
    cache = tmp_path / "tmp"
    cache.mkdir()
    env = _clean_env(PYTHONPATH=str(wheel), TMPDIR=str(cache))
    probe = ("import gateway; from gateway.triage.rules import default_rules_dir, load_rules; "
             "a, b = default_rules_dir(), default_rules_dir(); load_rules(a); print(gateway.__file__); print(a); print(b)")
    first = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env,
                           timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    module, rules, again = first.stdout.split()
    assert module.startswith(str(wheel) + os.sep)
    assert rules == again and Path(rules).parent == cache / f"parentgate-{os.geteuid()}"
    assert (Path(rules) / "templates" / "ack_in_hours.txt.j2").read_bytes() == \
        (ROOT / "rules" / "templates" / "ack_in_hours.txt.j2").read_bytes()
    assert not (Path(rules) / "__init__.py").exists()
    assert oct(Path(rules).parent.stat().st_mode & 0o777) == oct(0o700)

    # A second process reuses the unpacked copy instead of making another.
    second = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=120)
    assert second.stdout.split()[1] == rules
    assert len(list(Path(rules).parent.iterdir())) == 1

    config = _example_config(tmp_path / "etc")
    check = subprocess.run([sys.executable, "-m", "gateway", "--config", str(config), "check-config"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
