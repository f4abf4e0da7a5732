"""The shipped systemd unit agrees with the daemon and with README's install steps (the same paths and user)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).parents[2]


def settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    section = ""
    for line in (ROOT / "systemd" / "parentgate.service").read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def readme_steps() -> list[str]:
    match = re.search(r"<!-- install-steps[^>]*-->\s*```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert match, "README.md lost its install-steps block (.ci/install-smoke runs it)"
    return [line.strip() for line in match.group(1).splitlines() if line.strip()]


def test_the_unit_is_a_notify_service_with_a_watchdog_and_room_for_connections():
    s = settings()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert re.fullmatch(r"\d+s", s["WatchdogSec"][0])
    assert int(s["LimitNOFILE"][0]) >= 65536
    assert s["StateDirectory"] == ["parentgate"] and s["WorkingDirectory"] == ["/var/lib/parentgate"]


def test_check_config_runs_before_the_daemon_with_the_same_program_and_file():
    s = settings()
    pre, start = shlex.split(s["ExecStartPre"][0]), shlex.split(s["ExecStart"][0])
    assert pre[-1] == "check-config" and start[-1] == "run"
    assert pre[:-1] == start[:-1]


def test_readme_installs_what_the_unit_runs_as_the_user_it_names():
    s = settings()
    program, _, config = shlex.split(s["ExecStart"][0])[:3]
    steps = "\n".join(readme_steps())
    venv = str(Path(program).parent.parent)
    assert f"-m venv {venv}\n" in steps and f"{venv}/bin/pip install .\n" in steps
    assert f"config.example.toml {config}\n" in steps
    user = s["User"][0]
    assert re.search(rf"^useradd .* {user}$", steps, re.M)
    assert f"-g {user} " in steps
    assert "systemd/parentgate.service /etc/systemd/system/parentgate.service" in steps
    assert "systemctl enable --now parentgate" in steps
