"""Configuration: the contract keys load; every mistake names the file, the key and the problem."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.config import ConfigError, load, parse_duration

ROOT = Path(__file__).parents[2]


def test_the_example_config_documents_and_loads_every_contract_key():
    config = load(ROOT / "config.example.toml", environ={})
    assert config.gateway.state_dir == ROOT / "var"
    assert config.gateway.database == f"sqlite:///{ROOT / 'var' / 'parentgate.db'}"
    assert config.smtp.port == 2525 and config.smtp.max_message_size == 26214400
    assert config.delivery.mode == "maildir" and config.delivery.maildir_root == ROOT / "var" / "mail"
    assert config.delivery.retry_first_delay == timedelta(minutes=5)
    assert config.delivery.lifetime == timedelta(days=5)
    [school] = config.schools
    assert school.id == "oakfield" and school.domains == ("oakfield-primary.sch.example",)
    assert len(school.calendar.half_terms) == 6
    assert config.limits.family_messages_per_half_term == 5
    assert config.acknowledge.period == timedelta(days=7)


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("5m", 300), ("4h", 14400), ("5d", 432000)])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


BASE = """
[gateway]
postmaster = "pm@school.example"
[[schools]]
id = "s"
domains = ["school.example"]
head_of_school = "head@school.example"
office = "office@school.example"
dsl = "dsl@school.example"
"""


@pytest.mark.parametrize("change,key,problem", [
    ('[smtp]\nlisten = "nowhere"\n', "smtp.listen", "host:port"),
    ('[smtp]\nmax_message_size = "big"\n', "smtp.max_message_size", "must be an integer"),
    ('[delivery]\nmode = "carrier-pigeon"\n', "delivery.mode", "maildir"),
    ('[delivery]\nlifetime = "5 days"\n', "delivery.lifetime", "duration"),
    ('[delivery]\ncolour = "blue"\n', "delivery.colour", "unknown key"),
    ('[gateway2]\n', "gateway2", "unknown key"),
    ('[limits]\nthread_messages = 0\n', "limits.thread_messages", "at least 1"),
])
def test_mistakes_name_the_file_key_and_problem(tmp_path, change, key, problem):
    path = tmp_path / "c.toml"
    path.write_text(change + BASE)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.key == key and problem in err.value.problem and str(path) in str(err.value)


@pytest.mark.parametrize("school_text,key", [
    ('[schools.hours]\nclose = "07:00"\n', "schools[0].hours.close"),
    ('[schools.hours]\ndays = ["monday"]\n', "schools[0].hours.days"),
    ('[schools.closures]\nbank_holidays = "FRA"\n', "schools[0].closures.bank_holidays"),
    ('[[schools.half_terms]]\nname = "A"\nstart = 2026-09-10\nend = 2026-09-01\n', "schools[0].half_terms[0].end"),
])
def test_school_mistakes_are_located(tmp_path, school_text, key):
    path = tmp_path / "c.toml"
    path.write_text(BASE + school_text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.key == key


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "c.toml"
    path.write_text('[gateway]\nstate_dir = "state"\npostmaster = "pm@school.example"\n' + BASE.split("\n", 3)[3])
    config = load(path)
    assert config.gateway.state_dir == tmp_path / "etc" / "state"
    assert config.gateway.database == f"sqlite:///{tmp_path / 'etc' / 'state' / 'parentgate.db'}"


def test_check_config_exits_2_with_the_message(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[delivery]\nmode = "fax"\n' + BASE)
    out = subprocess.run([sys.executable, "-m", "gateway", "--config", str(path), "check-config"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"{path}: delivery.mode:" in out.stderr
    good = tmp_path / "g.toml"
    good.write_text(BASE)
    ok = subprocess.run([sys.executable, "-m", "gateway", "--config", str(good), "check-config"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr


def test_broken_rules_stop_the_commands_that_judge_mail_but_not_the_administrators_others(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.toml").write_text('[[rule]]\nname = "Not Kebab"\n')
    path = tmp_path / "c.toml"
    path.write_text(BASE.replace('postmaster = "pm@school.example"\n',
                                 f'postmaster = "pm@school.example"\nrules_dir = "{rules}"\nstate_dir = "var"\n'
                                 f'database = "sqlite:///{tmp_path}/var/pg.db"\n'))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", "--config", str(path), *args],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)

    bad = cli("check-config")
    assert bad.returncode == 2 and "broken.toml" in bad.stderr
    assert cli("run").returncode == 2
    held = cli("held")
    assert held.returncode == 0, held.stderr
    assert "no held mail" in held.stdout


def test_calendar_command_shows_closed_days_with_the_reason():
    out = subprocess.run([sys.executable, "-m", "gateway", "--config", str(ROOT / "config.example.toml"), "calendar",
                          "--from", "2026-12-17", "--days", "21"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any("2026-12-17" in line and "open" in line and "Autumn 2" in line for line in lines)
    assert any("2026-12-19" in line and "closed" in line and "Saturday" in line for line in lines)
    assert any("2026-12-21" in line and "closed" in line and "Christmas holiday" in line for line in lines)
