"""The DSL's digest and the office's interpreter copy as bytes: what they say, and what a parent's
words cannot do to them (add a header, a line of their own, or more of the message than the evidence)."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as default_policy
from zoneinfo import ZoneInfo

from gateway.act.concerns import DigestEntry, compose_dsl_digest, compose_interpreter_copy
from gateway.triage.rules import default_rules_dir

TEMPLATES = default_rules_dir() / "templates"
LONDON = ZoneInfo("Europe/London")
NOW = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
HOSTILE = "reads every text\r\nBcc: someone@evil.example\r\n\r\nfake line"


def entry(**changes: object) -> DigestEntry:
    values: dict[str, object] = dict(
        ref="41", received=datetime(2026, 11, 23, 10, 0, tzinfo=LONDON), sender="mum@example.com",
        family="the Patel family", children=("Maya Patel",), recipients=("j.smith@school.example",),
        reasons=(("model:safeguarding", "he reads every text she sends"),), link="https://console.test/messages/41")
    values.update(changes)
    return DigestEntry(**values)  # type: ignore[arg-type]


def digest(entries: list[DigestEntry]) -> object:
    data = compose_dsl_digest(entries=entries, school_name="Oakfield Primary School", from_addr="pm@school.example",
                              to_addr="dsl@school.example", now=NOW, message_id="<d1@gateway.test>",
                              templates_dir=TEMPLATES, safeguarding_url="https://console.test/safeguarding")
    return message_from_bytes(data, policy=default_policy)


def test_each_entry_names_family_child_staff_time_evidence_and_link() -> None:
    m = digest([entry(), entry(ref="42", family=None, children=(), link="https://console.test/messages/42")])
    assert m["To"] == "dsl@school.example" and m["Auto-Submitted"] == "auto-generated"
    assert m["Subject"] == "Possible safeguarding concerns: 2 messages"
    text = m.get_content()
    assert "the Patel family (child: Maya Patel)" in text
    assert 'model:safeguarding: "he reads every text she sends"' in text
    assert "Received Monday 23 November 2026, 10:00" in text and "Sent to:   j.smith@school.example" in text
    assert "https://console.test/messages/41" in text and "https://console.test/messages/42" in text
    assert "Family:    not in the family directory" in text


def test_a_parents_words_in_the_evidence_or_sender_stay_on_one_line() -> None:
    m = digest([entry(sender="x@example.com\r\nBcc: a@evil.example", reasons=(("rule", HOSTILE),))])
    assert m["Bcc"] is None
    text = m.get_content()
    assert '"reads every text Bcc: someone@evil.example fake line"' in text
    assert not any(line.startswith(("Bcc", "fake")) for line in text.splitlines())


def test_the_interpreter_copy_carries_a_note_and_the_original_as_received() -> None:
    original = b"From: p@example.com\r\nSubject: Selam\r\n\r\nsalam\r\n"
    data = compose_interpreter_copy(
        original_raw=original, subject="Selam\r\nBcc: a@evil.example", sender="p@example.com",
        recipients=["j.smith@school.example"], received=datetime(2026, 11, 23, 10, 0, tzinfo=LONDON),
        route="head_of_school", reasons=[("needs-interpreter", "written in Tigrinya")],
        school_name="Oakfield Primary School", from_addr="pm@school.example", to_addr="office@school.example",
        message_ref="7", now=NOW, message_id="<i1@gateway.test>", templates_dir=TEMPLATES)
    m = message_from_bytes(data, policy=default_policy)
    assert m["Bcc"] is None and m["Subject"] == "Interpreter needed: Selam Bcc: a@evil.example"
    note, attached = list(m.iter_parts())
    assert "to the Head of School for review" in note.get_content()
    assert "needs-interpreter: written in Tigrinya" in note.get_content()
    assert original in data and attached.get_content_type() == "message/rfc822"
