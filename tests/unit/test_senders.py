"""Sender classes and passthrough decisions (pure), their configuration, and the unknown-sender wording."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from gateway.act.compose import render_acknowledgement
from gateway.config import ConfigError, load
from gateway.decide.passthrough import passthrough_reason
from gateway.domain.findings import Flag
from gateway.domain.senders import SenderClass, classify_sender
from gateway.triage.rules import default_rules_dir
from tests.support import DOMAIN, write_config

INTERNAL = (DOMAIN, "oakfield-trust.example.org")
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


def cls(envelope: str, from_addr: str, known: bool = False) -> SenderClass:
    return classify_sender(envelope_sender=envelope, from_addr=from_addr, internal_domains=INTERNAL,
                           in_directory=known)


def test_a_colleague_writing_from_the_school_domain_is_internal() -> None:
    assert cls(f"head@{DOMAIN}", f"head@{DOMAIN}") is SenderClass.INTERNAL


def test_passthrough_domains_and_their_subdomains_are_internal_case_insensitively() -> None:
    assert cls("ceo@Oakfield-Trust.Example.ORG", "ceo@oakfield-trust.example.org") is SenderClass.INTERNAL
    assert cls("hr@mail.oakfield-trust.example.org", "") is SenderClass.INTERNAL


def test_a_school_address_in_from_alone_does_not_make_an_outsider_internal() -> None:
    assert cls("someone@example.com", f"head@{DOMAIN}") is SenderClass.UNKNOWN
    assert cls(f"head@{DOMAIN}", "someone@example.com") is SenderClass.UNKNOWN
    # A look-alike domain is not a subdomain.
    assert cls(f"x@evil{DOMAIN}", f"x@evil{DOMAIN}") is SenderClass.UNKNOWN


def test_a_null_envelope_sender_is_judged_by_from() -> None:
    assert cls("", f"mailer-daemon@{DOMAIN}") is SenderClass.INTERNAL
    assert cls("", "") is SenderClass.UNKNOWN


def test_directory_addresses_are_family_and_others_unknown() -> None:
    assert cls("mum@example.com", "mum@example.com", known=True) is SenderClass.FAMILY
    assert cls("mum@example.com", "mum@example.com") is SenderClass.UNKNOWN
    # A colleague who is also a parent, writing from work, is a colleague.
    assert cls(f"t@{DOMAIN}", f"t@{DOMAIN}", known=True) is SenderClass.INTERNAL


def reason(sender_class: SenderClass, rcpts: tuple[str, ...] = (f"j.smith@{DOMAIN}",), unknown: str = "parent",
           sender: str = "x@example.com"):
    return passthrough_reason(sender_class, sender=sender, rcpts=rcpts, own_domains=(DOMAIN,),
                              passthrough_recipients=frozenset({f"finance@{DOMAIN}"}), unknown_senders=unknown)


def test_internal_mail_passes_with_the_domain_as_evidence() -> None:
    own = reason(SenderClass.INTERNAL, sender=f"head@{DOMAIN}")
    trust = reason(SenderClass.INTERNAL, sender="ceo@oakfield-trust.example.org")
    assert own is not None and own.rule == "internal-sender" and own.flag is Flag.PASSTHROUGH
    assert "school's own domain" in own.evidence
    assert trust is not None and "passthrough domain" in trust.evidence
    portal = reason(SenderClass.INTERNAL, sender=f"noreply@portal.{DOMAIN}")
    assert portal is not None and "school's own domain" in portal.evidence


def test_mail_only_to_passthrough_recipients_passes_whoever_sent_it() -> None:
    for sender_class in SenderClass:
        got = reason(sender_class, rcpts=(f"Finance@{DOMAIN}",))
        assert got is not None and got.flag is Flag.PASSTHROUGH
    # Also addressed to a teacher: the teacher's mail, under the policy.
    assert reason(SenderClass.UNKNOWN, rcpts=(f"finance@{DOMAIN}", f"j.smith@{DOMAIN}")) is None


def test_unknown_senders_pass_only_when_configured_and_families_never() -> None:
    assert reason(SenderClass.UNKNOWN) is None
    passed = reason(SenderClass.UNKNOWN, unknown="pass")
    assert passed is not None and passed.rule == "unknown-sender"
    assert reason(SenderClass.FAMILY, unknown="pass") is None


def test_passthrough_configuration_is_read(tmp_path: Path) -> None:
    cfg = load(write_config(tmp_path, school_extra=(
        'unknown_senders = "pass"\n[schools.passthrough]\ndomains = ["Trust.Example.org"]\n'
        f'recipients = ["Finance@{DOMAIN}"]\n')))
    school = cfg.schools[0]
    assert school.unknown_senders == "pass"
    assert school.internal_domains == (DOMAIN, "trust.example.org")
    assert school.passthrough_recipients == frozenset({f"finance@{DOMAIN}"})
    default = load(write_config(tmp_path / "d")).schools[0]
    assert default.unknown_senders == "parent" and default.passthrough_domains == ()
    assert default.passthrough_recipients == frozenset()


@pytest.mark.parametrize("extra,key,words", [
    ('unknown_senders = "everyone"\n', "unknown_senders", '"parent" or "pass"'),
    ('unknown_senders = true\n', "unknown_senders", "a string"),
    ('[schools.passthrough]\ndomains = ["not a domain"]\n', "passthrough.domains", "domain names"),
    ('[schools.passthrough]\ndomains = "trust.example.org"\n', "passthrough.domains", "a list"),
    ('[schools.passthrough]\nrecipients = ["finance"]\n', "passthrough.recipients", "not an email address"),
    ('[schools.passthrough]\nrecipients = ["finance@elsewhere.example"]\n', "passthrough.recipients",
     "not in the school's domains"),
    ('[schools.passthrough]\ndomain = ["trust.example.org"]\n', "passthrough.domain", "unknown key"),
])
def test_bad_passthrough_settings_name_the_key(tmp_path: Path, extra: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write_config(tmp_path, school_extra=extra))
    text = str(caught.value)
    assert f"schools[0].{key}" in text and words in text


TEMPLATES = default_rules_dir() / "templates"
ALL_ACKS = ["ack_in_hours.txt.j2", "ack_out_of_hours.txt.j2", "ack_weekend.txt.j2", "ack_holiday.txt.j2",
            "ack_urgent.txt.j2"]


def render(template: str, *, family_known: bool, parent_name: str | None = None) -> str:
    return render_acknowledgement(TEMPLATES, template, school_name="Oakfield Primary School",
                                  parent_name=parent_name, family_known=family_known, reply_by=date(2026, 11, 26),
                                  reopen_date=None, break_name=None, office_phone="0113 496 0000", now=NOW)


@pytest.mark.parametrize("template", ALL_ACKS)
def test_an_unknown_sender_is_not_assumed_to_be_a_parent(template: str) -> None:
    text = render(template, family_known=False)
    assert text.startswith("Dear sender,")
    assert "parent or carer" not in text and "your child" not in text
    assert "0113 496 0000" in text or template == "ack_holiday.txt.j2"


@pytest.mark.parametrize("template", ALL_ACKS)
def test_a_known_family_keeps_the_parent_wording(template: str) -> None:
    assert render(template, family_known=True).startswith("Dear parent or carer,")
    assert render(template, family_known=False, parent_name="Priya Patel").startswith("Dear Priya Patel,")
