"""Paths for a real install: systemd's state directory, defaults under it, and check-config's path checks."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gateway.config import load
from gateway.preflight import check_paths, directory_problem, report, running_user

ROOT = Path(__file__).parents[2]


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """config.example.toml as an administrator installs it: copied, unchanged, into its own directory."""
    etc = tmp_path / "etc" / "parentgate"
    etc.mkdir(parents=True)
    shutil.copy(ROOT / "config.example.toml", etc / "config.toml")
    return etc / "config.toml"


def test_the_example_uses_systemds_state_directory_when_it_is_set(example: Path, tmp_path: Path):
    state = tmp_path / "var" / "lib" / "parentgate"
    config = load(example, environ={"STATE_DIRECTORY": str(state)})
    assert config.gateway.state_dir == state
    assert config.gateway.database == f"sqlite:///{state / 'parentgate.db'}"
    assert config.delivery.maildir_root == state / "mail"


def test_the_first_of_several_state_directories_is_used(example: Path, tmp_path: Path):
    config = load(example, environ={"STATE_DIRECTORY": f"{tmp_path}/one:{tmp_path}/two"})
    assert config.gateway.state_dir == tmp_path / "one"


def test_without_systemd_the_example_keeps_its_state_beside_the_file(example: Path):
    config = load(example, environ={})
    assert config.gateway.state_dir == example.parent / "var"
    assert config.gateway.database == f"sqlite:///{example.parent / 'var' / 'parentgate.db'}"
    assert config.delivery.maildir_root == example.parent / "var" / "mail"


def test_a_state_dir_written_in_the_file_wins_over_systemds(example: Path, tmp_path: Path):
    example.write_text(example.read_text().replace('[gateway]\n', '[gateway]\nstate_dir = "data"\n', 1))
    config = load(example, environ={"STATE_DIRECTORY": str(tmp_path / "systemd")})
    assert config.gateway.state_dir == example.parent / "data"
    assert config.delivery.maildir_root == example.parent / "data" / "mail"


def test_the_current_directory_does_not_matter(example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert load(example, environ={}).gateway.state_dir == example.parent / "var"


def test_check_config_names_each_directory_and_the_user_who_can_write_it(example: Path, tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"} | {"STATE_DIRECTORY": str(state)}
    out = subprocess.run([sys.executable, "-m", "gateway", "--config", str(example), "check-config"],
                         capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"state directory {state}: exists and is writable by {running_user()}" in out.stdout
    assert f"Maildir root {state / 'mail'}: does not exist yet; it can be created by {running_user()}" in out.stdout
    # check-config only looks: it creates nothing, and its write probe is gone.
    assert list(state.iterdir()) == []


def test_check_config_fails_with_the_file_key_path_and_user_when_state_cannot_be_written(example: Path, tmp_path: Path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"} | {"STATE_DIRECTORY": str(blocker / "state")}
    out = subprocess.run([sys.executable, "-m", "gateway", "--config", str(example), "check-config"],
                         capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert out.returncode == 2
    [line, *_] = out.stderr.splitlines()
    assert line.startswith(f"parentgate: {example}: gateway.state_dir: state directory {blocker / 'state'} ")
    assert f"{blocker} is not a directory" in line and f"for user {running_user()}" in line
    assert "Traceback" not in out.stderr


def test_a_file_where_the_maildir_root_should_be_is_reported(example: Path, tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "mail").write_text("")
    fine, problems = report(load(example, environ={"STATE_DIRECTORY": str(state)}))
    assert [p.split(": ")[1] for p in problems] == ["delivery.maildir_root"]
    assert "exists and is not a directory" in problems[0]
    assert len(fine) == 1


def test_smtp_delivery_needs_no_maildir_and_a_database_elsewhere_is_checked(example: Path, tmp_path: Path):
    text = example.read_text().replace('mode = "maildir"', 'mode = "smtp"')
    text = text.replace('[gateway]\n', f'[gateway]\ndatabase = "sqlite:///{tmp_path}/db/pg.db"\n', 1)
    example.write_text(text)
    checks = check_paths(load(example, environ={"STATE_DIRECTORY": str(tmp_path / "state")}))
    assert [(c.key, c.path) for c in checks] == [("gateway.state_dir", tmp_path / "state"),
                                                 ("gateway.database", tmp_path / "db")]


def _as_user(uid: int, gid: int, path: Path) -> str:
    """directory_problem(path) as another user, in a forked child (the modules are already loaded)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            problem, note = directory_problem(path)
            os.write(write, (problem or f"ok:{note}").encode())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            os.write(write, f"child failed: {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return answer


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_directory_the_service_user_cannot_write_is_refused():
    nobody = pwd.getpwnam("nobody")
    # pytest's own temporary directories are private to root: this one must be reachable by nobody.
    tmp_path = Path(tempfile.mkdtemp(prefix="pg-paths-"))
    tmp_path.chmod(0o755)
    try:
        _check_as_nobody(nobody, tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _check_as_nobody(nobody: pwd.struct_passwd, tmp_path: Path) -> None:
    owned_by_root = tmp_path / "root-only"
    owned_by_root.mkdir(mode=0o755)
    assert "is not writable" in _as_user(nobody.pw_uid, nobody.pw_gid, owned_by_root)
    assert "cannot be created" in _as_user(nobody.pw_uid, nobody.pw_gid, owned_by_root / "state" / "mail")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    assert _as_user(nobody.pw_uid, nobody.pw_gid, theirs) == "ok:exists"
    assert _as_user(nobody.pw_uid, nobody.pw_gid, theirs / "mail") == "ok:missing"
