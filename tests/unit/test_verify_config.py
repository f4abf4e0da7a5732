"""[smtp] verify_recipients: the values it takes, and that it needs a smarthost to ask."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.act.probe import refusal_for
from gateway.config import ConfigError, load
from tests.unit.test_config import BASE


@pytest.mark.parametrize("smtp, delivery, expected", [
    ("", 'mode = "smtp"', "off"),
    ('verify_recipients = "downstream"', 'mode = "smtp"', "downstream"),
    ('verify_recipients = "off"', 'mode = "maildir"', "off"),
])
def test_verify_recipients_loads(tmp_path, smtp, delivery, expected):
    path = tmp_path / "c.toml"
    path.write_text(f"[smtp]\n{smtp}\n[delivery]\n{delivery}\n" + BASE)
    assert load(path).smtp.verify_recipients == expected


@pytest.mark.parametrize("smtp, delivery, problem", [
    ('verify_recipients = "yes"', 'mode = "smtp"', '"off" or "downstream"'),
    ('verify_recipients = "downstream"', 'mode = "maildir"', 'mode = "smtp"'),
])
def test_verify_recipients_mistakes_name_the_key(tmp_path, smtp, delivery, problem):
    path = tmp_path / "c.toml"
    path.write_text(f"[smtp]\n{smtp}\n[delivery]\n{delivery}\n" + BASE)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.key == "smtp.verify_recipients" and problem in err.value.problem


def test_check_config_refuses_downstream_verification_without_smtp_delivery(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[smtp]\nverify_recipients = "downstream"\n' + BASE)
    out = subprocess.run([sys.executable, "-m", "gateway", "--config", str(path), "check-config"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"{path}: smtp.verify_recipients:" in out.stderr


def test_the_refusal_names_the_address_and_cannot_carry_a_line_break():
    assert refusal_for("a@b.example") == "550 5.1.1 <a@b.example>: recipient rejected by the school's mail server"
    assert "\r" not in refusal_for("a\r\n250 ok@b.example") and "\n" not in refusal_for("a\r\n@b")
