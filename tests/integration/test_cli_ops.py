"""The operator's CLI: help for every command, outbox attempts in `queue` and `show`, real states only,
and actions recorded against the person who ran them."""

from __future__ import annotations

import argparse
import getpass
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from gateway.cli import _parser
from gateway.clock import FixedClock
from tests.conftest import utc
from tests.support import InProcessGateway, free_port, message, school_calendar, write_config

OPEN_TUESDAY = utc(2026, 11, 24, 10, 0)
SATURDAY = utc(2026, 11, 28, 10, 0)


def cli(cfg: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), *args], capture_output=True,
                          text=True, timeout=60, env=env)


def subcommands(parser: argparse.ArgumentParser, path: str = "") -> list[tuple[str, str | None]]:
    """Every (sub)command with its help text, walking nested sub-parsers."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((f"{path}{name}", helps.get(name)))
                found += subcommands(sub, f"{path}{name} ")
    return found


def test_every_subcommand_has_a_help_text():
    found = subcommands(_parser())
    assert len(found) >= 20
    assert [name for name, text in found if not text] == []


def test_queue_state_accepts_only_real_states(tmp_path: Path):
    cfg = write_config(tmp_path)
    bad = cli(cfg, "queue", "--state", "bogus")
    assert bad.returncode == 2 and "invalid choice: 'bogus'" in bad.stderr and bad.stdout == ""
    good = cli(cfg, "queue", "--state", "held")
    assert good.returncode == 0 and good.stderr == ""


class GreylistingSink:
    """A next hop that defers every message, with control characters in its reply."""

    REPLY = "451 4.7.1 greylisted\x1b[2J, come back later"

    def __init__(self) -> None:
        reply = self.REPLY

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                return reply

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)


@pytest.fixture
def greylisting() -> Any:
    s = GreylistingSink()
    s.controller.start()
    yield s
    s.controller.stop()


async def test_queue_and_show_list_each_outbox_row_with_attempts_last_reply_and_next_try(tmp_path: Path,
                                                                                       greylisting: Any):
    cfg = write_config(tmp_path, sink_port=greylisting.port, retry_first="60s",
                       extra="[acknowledge]\nenabled = false\n")
    gw = await InProcessGateway(cfg, FixedClock(OPEN_TUESDAY)).start()
    try:
        assert (await gw.send(message()))[0] == 250
        await gw.settle()
        [row] = gw.messages()
    finally:
        await gw.stop()
    assert row.state == "queued"
    # 10:00 GMT plus the first retry delay of 60 s.
    next_try = "Tue 24 Nov 2026 10:01 GMT"
    out = cli(cfg, "queue")
    assert out.returncode == 0, out.stderr
    [line] = [line for line in out.stdout.splitlines() if "outbox" in line]
    assert "deliver" in line and "deferred" in line and "attempts 1" in line
    assert f"next {next_try}" in line
    assert "last reply: 451 4.7.1 greylisted\\x1b[2J, come back later" in line
    assert "\x1b" not in out.stdout
    shown = cli(cfg, "show", str(row.id))
    assert shown.returncode == 0, shown.stderr
    [line] = [line for line in shown.stdout.splitlines() if "outbox" in line]
    assert "deferred" in line and "attempts 1" in line and f"next {next_try}" in line and "greylisted" in line
    assert "\x1b" not in shown.stdout
    assert cli(cfg, "show", "999").returncode == 2


async def test_actions_record_the_actor_else_the_sudo_user_else_the_login_name(tmp_path: Path):
    cfg = write_config(tmp_path, calendar=school_calendar(), extra="[acknowledge]\nenabled = false\n")
    gw = await InProcessGateway(cfg, FixedClock(SATURDAY)).start()
    try:
        for _ in range(3):
            assert (await gw.send(message()))[0] == 250
        await gw.settle()
        ids = [m.id for m in gw.messages()]
    finally:
        await gw.stop()
    base = {k: v for k, v in os.environ.items() if k != "SUDO_USER"}
    assert cli(cfg, "release", str(ids[0]), "--actor", "bob", env={**base, "SUDO_USER": "alice"}).returncode == 0
    assert cli(cfg, "release", str(ids[1]), env={**base, "SUDO_USER": "alice"}).returncode == 0
    assert cli(cfg, "release", str(ids[2]), env=base).returncode == 0
    for message_id, who in zip(ids, ["bob", "alice", getpass.getuser()]):
        shown = cli(cfg, "show", str(message_id)).stdout
        assert f"held -> queued  by {who}  released early by {who}" in shown, shown
