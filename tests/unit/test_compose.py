"""The bytes of what parentgate sends: acknowledgements, review summaries and failure notices."""

from __future__ import annotations

import email
import os
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from jinja2 import TemplateNotFound, UndefinedError

from gateway.act.compose import (
    british_date,
    british_datetime,
    compose_acknowledgement,
    compose_failure_notice,
    compose_review_summary,
    one_line,
    render_acknowledgement,
)
from gateway.domain.facts import Facts

TEMPLATES = Path(__file__).parents[2] / "rules" / "templates"
LONDON = ZoneInfo("Europe/London")
NOW = datetime(2026, 11, 27, 17, 30, tzinfo=LONDON)
BODY_TEXT = "Please could you tell me whether Maya needs a packed lunch for the trip."

ORIGINAL_RAW = (
    b"Return-Path: <sarah.jones@example.com>\r\n"
    b"From: Sarah Jones <sarah.jones@example.com>\r\n"
    b"To: teacher@ashdown.sch.uk\r\n"
    b"Subject: Trip on Friday\r\n"
    b"Message-ID: <5678@parent.example.com>\r\n"
    b"References: <1234@local.machine.example> <3456@example.net>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n" + BODY_TEXT.encode() + b"\r\nZo\xc3\xab says hello.\r\n"
)


def facts(subject: str = "Trip on Friday", *, message_id: str | None = "<5678@parent.example.com>",
          references: tuple[str, ...] = ("<1234@local.machine.example>", "<3456@example.net>"),
          in_reply_to: str | None = "<3456@example.net>") -> Facts:
    return Facts(
        message_id=message_id,
        subject=subject,
        from_addr="sarah.jones@example.com",
        from_name="Sarah Jones",
        to=("teacher@ashdown.sch.uk",),
        cc=(),
        date=None,
        in_reply_to=in_reply_to,
        references=references,
        headers={},
        text=BODY_TEXT,
        new_text=BODY_TEXT,
    )


def acknowledgement(original: Facts | None = None, *, from_name: str = "Ashdown Primary School",
                    body: str = "Dear parent or carer,\n\nThank you.\n") -> bytes:
    return compose_acknowledgement(
        original=original or facts(),
        to_addr="sarah.jones@example.com",
        from_addr="office@ashdown.sch.uk",
        from_name=from_name,
        body=body,
        now=NOW,
        message_id="<pg.0f3c@gw.ashdown.sch.uk>",
    )


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def render(template: str, **overrides: object) -> str:
    values: dict[str, object] = {
        "school_name": "Ashdown Primary School",
        "parent_name": "Sarah Jones",
        "reply_by": date(2026, 12, 1),
        "reopen_date": None,
        "break_name": None,
        "office_phone": "01632 960123",
        "now": NOW,
    }
    values.update(overrides)
    return render_acknowledgement(TEMPLATES, template, **values)  # type: ignore[arg-type]


# Acknowledgement headers (RFC 3834 §3).

def test_acknowledgement_carries_the_rfc3834_headers() -> None:
    reply = parse(acknowledgement())
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["X-Auto-Response-Suppress"] == "All"
    assert reply["X-Parentgate"] == "acknowledgement"
    assert reply["To"] == "sarah.jones@example.com"
    assert reply["From"].addresses[0].addr_spec == "office@ashdown.sch.uk"
    assert reply["From"].addresses[0].display_name == "Ashdown Primary School"
    assert reply["Subject"] == "Auto: Trip on Friday"
    assert reply["Message-ID"] == "<pg.0f3c@gw.ashdown.sch.uk>"
    assert reply["Date"].datetime == NOW


def test_acknowledgement_threads_under_the_original() -> None:
    reply = parse(acknowledgement())
    assert reply["In-Reply-To"] == "<5678@parent.example.com>"
    assert reply["References"].split() == [
        "<1234@local.machine.example>", "<3456@example.net>", "<5678@parent.example.com>"
    ]


def test_references_fall_back_to_in_reply_to_when_the_original_has_none() -> None:
    reply = parse(acknowledgement(facts(references=())))
    assert reply["References"].split() == ["<3456@example.net>", "<5678@parent.example.com>"]


def test_original_without_message_id_gets_no_in_reply_to() -> None:
    reply = parse(acknowledgement(facts(message_id=None, references=(), in_reply_to=None)))
    assert reply["In-Reply-To"] is None
    assert reply["References"] is None


def test_a_very_long_references_chain_keeps_the_root_and_the_latest() -> None:
    chain = tuple(f"<{n}@example.net>" for n in range(100))
    refs = parse(acknowledgement(facts(references=chain)))["References"].split()
    assert len(refs) == 20
    assert refs[0] == "<0@example.net>"
    assert refs[-2:] == ["<99@example.net>", "<5678@parent.example.com>"]


def test_acknowledgement_uses_crlf_line_endings_only() -> None:
    data = acknowledgement()
    assert b"\r\n" in data
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_subject_with_crlf_cannot_inject_a_bcc_header() -> None:
    data = acknowledgement(facts("Hi\r\nBcc: victim@example.com"))
    reply = parse(data)
    assert reply["Bcc"] is None
    assert b"\r\nBcc:" not in data
    assert reply["Subject"] == "Auto: Hi Bcc: victim@example.com"


@pytest.mark.parametrize("subject", ["Hi\nBcc: v@example.com", "Hi\rBcc: v@example.com", "Hi\u2028Bcc: v@example.com",
                                     "Hi\x85Bcc: v@example.com", "Hi\x00\x1bBcc: v@example.com"])
def test_any_line_break_or_control_character_in_the_subject_is_neutralised(subject: str) -> None:
    reply = parse(acknowledgement(facts(subject)))
    assert reply["Bcc"] is None
    assert reply["Subject"].startswith("Auto: Hi")
    assert all(ch.isprintable() for ch in reply["Subject"])


def test_display_name_with_line_break_cannot_inject_a_header() -> None:
    reply = parse(acknowledgement(from_name="Ashdown\r\nBcc: victim@example.com"))
    assert reply["Bcc"] is None


def test_non_ascii_subject_and_school_name_round_trip() -> None:
    data = acknowledgement(facts("Réunion — Zoë's trip"), from_name="St Zoë's CofE Primary — Ashdown")
    assert data.isascii()
    reply = parse(data)
    assert reply["Subject"] == "Auto: Réunion — Zoë's trip"
    assert reply["From"].addresses[0].display_name == "St Zoë's CofE Primary — Ashdown"


def test_non_ascii_body_is_sent_as_quoted_printable_utf8() -> None:
    reply = parse(acknowledgement(body="Diolch — Zoë\n"))
    assert reply["Content-Transfer-Encoding"] == "quoted-printable"
    assert reply.get_content_charset() == "utf-8"
    assert reply.get_content().replace("\r\n", "\n") == "Diolch — Zoë\n"


def test_an_empty_subject_still_reads_sensibly() -> None:
    assert parse(acknowledgement(facts("")))["Subject"] == "Auto: (no subject)"


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError):
        compose_acknowledgement(original=facts(), to_addr="a@example.com", from_addr="b@ashdown.sch.uk",
                                from_name="x", body="x", now=datetime(2026, 1, 1), message_id="<pg.1@h>")


@pytest.mark.parametrize("to_addr", ["not an address", "a@b@c", ""])
def test_an_unusable_recipient_is_refused(to_addr: str) -> None:
    with pytest.raises(ValueError):
        compose_acknowledgement(original=facts(), to_addr=to_addr, from_addr="b@ashdown.sch.uk",
                                from_name="x", body="x", now=NOW, message_id="<pg.1@h>")


# Acknowledgement text.

def test_acknowledgement_never_contains_the_original_body() -> None:
    for template in ("ack_in_hours.txt.j2", "ack_out_of_hours.txt.j2", "ack_weekend.txt.j2",
                     "ack_holiday.txt.j2", "ack_urgent.txt.j2"):
        body = render(template, reopen_date=date(2026, 11, 30))
        data = acknowledgement(body=body)
        reply = parse(data)
        assert BODY_TEXT not in reply.get_content()
        assert b"packed lunch" not in data
        assert "Trip on Friday" not in reply.get_content()


@pytest.mark.parametrize("template", ["ack_in_hours.txt.j2", "ack_out_of_hours.txt.j2", "ack_weekend.txt.j2",
                                      "ack_holiday.txt.j2", "ack_urgent.txt.j2"])
def test_every_acknowledgement_states_the_reply_by_date(template: str) -> None:
    text = render(template, reopen_date=date(2026, 11, 30))
    assert "Tuesday 1 December" in text
    assert "2026" not in text
    assert "Ashdown Primary School" in text
    assert "Dear Sarah Jones," in text


@pytest.mark.parametrize("template", ["ack_in_hours.txt.j2", "ack_out_of_hours.txt.j2", "ack_weekend.txt.j2",
                                      "ack_holiday.txt.j2", "ack_urgent.txt.j2"])
def test_every_acknowledgement_renders_with_optional_values_missing(template: str) -> None:
    text = render(template, parent_name=None, reopen_date=None, break_name=None)
    assert text.startswith("Dear parent or carer,")
    assert "None" not in text
    assert text.endswith("\n") and not text.endswith("\n\n")


@pytest.mark.parametrize("template", ["ack_in_hours.txt.j2", "ack_out_of_hours.txt.j2", "ack_weekend.txt.j2",
                                      "ack_holiday.txt.j2", "ack_urgent.txt.j2"])
def test_no_acknowledgement_mentions_safeguarding_or_review(template: str) -> None:
    text = render(template, reopen_date=date(2026, 11, 30)).lower()
    for word in ("safeguard", "review", "head of school", "concern", "dsl"):
        assert word not in text


def test_holiday_acknowledgement_names_the_break_and_the_day_school_reopens() -> None:
    text = render(
        "ack_holiday.txt.j2",
        reply_by=date(2027, 1, 7),
        reopen_date=date(2027, 1, 5),
        break_name="Christmas holiday",
        now=datetime(2026, 12, 23, 11, 0, tzinfo=LONDON),
    )
    assert "Christmas holiday" in text
    assert "reopens on Tuesday 5 January 2027" in text
    assert "Thursday 7 January 2027" in text


def test_out_of_hours_acknowledgement_says_when_staff_will_see_it() -> None:
    text = render("ack_out_of_hours.txt.j2", reopen_date=date(2026, 11, 30))
    assert "Monday 30 November" in text


def test_weekend_acknowledgement_says_when_school_opens() -> None:
    text = render("ack_weekend.txt.j2", reopen_date=date(2026, 11, 30))
    assert "weekend" in text
    assert "Monday 30 November" in text


def test_urgent_acknowledgement_gives_the_office_phone_number() -> None:
    text = render("ack_urgent.txt.j2")
    assert "for anything that affects your child today please telephone the school" in " ".join(text.split()).lower()
    assert "01632 960123" in text


def test_rendered_values_are_stripped_of_control_characters() -> None:
    text = render("ack_in_hours.txt.j2", parent_name="Sarah\r\nJones\x1b[31m", school_name="Ash\x00down")
    assert "Dear Sarah Jones [31m," in text
    assert "Ash down" in text
    assert "\r" not in text and "\x1b" not in text and "\x00" not in text


def test_a_misspelt_template_variable_fails_instead_of_sending_a_blank(tmp_path: Path) -> None:
    (tmp_path / "bad.txt.j2").write_text("Dear {{ parent_nmae }}\n")
    with pytest.raises(UndefinedError):
        render_acknowledgement(tmp_path, "bad.txt.j2", school_name="A", parent_name="B", reply_by=date(2026, 12, 1),
                               reopen_date=None, break_name=None, office_phone="1", now=NOW)


def test_templates_run_in_a_sandbox(tmp_path: Path) -> None:
    (tmp_path / "evil.txt.j2").write_text("{{ school_name.__class__.__mro__[1].__subclasses__() }}\n")
    with pytest.raises(Exception, match="unsafe|access"):
        render_acknowledgement(tmp_path, "evil.txt.j2", school_name="A", parent_name=None, reply_by=date(2026, 12, 1),
                               reopen_date=None, break_name=None, office_phone="1", now=NOW)


def test_british_date_filter_is_available_to_templates(tmp_path: Path) -> None:
    (tmp_path / "f.txt.j2").write_text("{{ reply_by_date | british_date }}\n")
    text = render_acknowledgement(tmp_path, "f.txt.j2", school_name="A", parent_name=None, reply_by=date(2027, 1, 5),
                                  reopen_date=None, break_name=None, office_phone="1", now=NOW)
    assert text == "Tuesday 5 January 2027\n"


def test_a_template_compiled_once_still_follows_each_render_s_clock_and_the_school_s_edits(tmp_path: Path) -> None:
    """Templates are compiled once per directory: the british_date filter must use each render's own
    `now`, not the first one's, and a school's edit to the file must be picked up at the next render."""
    template = tmp_path / "f.txt.j2"
    template.write_text("{{ reply_by_date | british_date }}\n")

    def render(now: datetime) -> str:
        return render_acknowledgement(tmp_path, "f.txt.j2", school_name="A", parent_name=None,
                                      reply_by=date(2027, 1, 5), reopen_date=None, break_name=None,
                                      office_phone="1", now=now)

    assert render(NOW) == "Tuesday 5 January 2027\n"
    assert render(datetime(2027, 1, 4, 9, 0, tzinfo=UTC)) == "Tuesday 5 January\n"
    # Edited at once, twice: within one clock tick of the file system the modification time may not
    # change, and each edit must still be picked up.
    template.write_text("Reply by {{ reply_by_date | british_date }}\n")
    assert render(NOW) == "Reply by Tuesday 5 January 2027\n"
    first = template.stat()
    template.write_text("By {{ reply_by_date | british_date }}\n")
    os.utime(template, ns=(first.st_atime_ns, first.st_mtime_ns))  # the same tick as the edit before
    assert render(NOW) == "By Tuesday 5 January 2027\n"
    template.unlink()
    with pytest.raises(TemplateNotFound):
        render(NOW)


# Dates.

@pytest.mark.parametrize(
    "d,expected",
    [
        (date(2026, 12, 1), "Tuesday 1 December"),
        (date(2026, 11, 27), "Friday 27 November"),
        (date(2027, 1, 5), "Tuesday 5 January 2027"),
        (date(2025, 7, 18), "Friday 18 July 2025"),
    ],
)
def test_british_date_adds_the_year_only_when_it_differs(d: date, expected: str) -> None:
    assert british_date(d, NOW) == expected


def test_british_datetime_uses_the_timezone_it_is_given() -> None:
    received = datetime(2026, 11, 27, 17, 30, tzinfo=UTC)
    assert british_datetime(received) == "Friday 27 November 2026, 17:30"
    summer = datetime(2026, 6, 5, 16, 45, tzinfo=UTC).astimezone(LONDON)
    assert british_datetime(summer) == "Friday 5 June 2026, 17:45"


def test_one_line_collapses_breaks_and_limits_length() -> None:
    assert one_line("a\r\n\tb  c") == "a b c"
    assert one_line("\u202eevil") == "evil"
    assert one_line("x" * 50, 10) == "x" * 9 + "…"


# Review summary.

def review_summary(raw: bytes = ORIGINAL_RAW, subject: str = "Trip on Friday") -> bytes:
    return compose_review_summary(
        original_raw=raw,
        original=facts(subject),
        to_addr="head@ashdown.sch.uk",
        from_addr="parentgate@ashdown.sch.uk",
        school_name="Ashdown Primary School",
        reasons=[("negative-demanding", "I demand"), ("family-limit", "6 emails this half-term")],
        family="jones-family",
        family_count=6,
        half_term="Autumn 2 2026",
        thread_count=4,
        received_at=datetime(2026, 11, 27, 17, 30, tzinfo=LONDON),
        recipients=["teacher@ashdown.sch.uk"],
        message_ref="m-000042",
        now=NOW,
        message_id="<pg.77@gw.ashdown.sch.uk>",
        templates_dir=TEMPLATES,
    )


def test_review_summary_is_auto_generated_and_addressed_to_the_head() -> None:
    summary = parse(review_summary())
    assert summary.get_content_type() == "multipart/mixed"
    assert summary["Auto-Submitted"] == "auto-generated"
    assert summary["To"] == "head@ashdown.sch.uk"
    assert summary["Subject"] == "For review: Trip on Friday"
    assert summary["Message-ID"] == "<pg.77@gw.ashdown.sch.uk>"


def test_review_summary_states_the_reasons_family_count_thread_and_actions() -> None:
    text_part = next(p for p in parse(review_summary()).walk() if p.get_content_type() == "text/plain")
    text = text_part.get_content()
    assert "negative-demanding: I demand" in text
    assert "family-limit: 6 emails this half-term" in text
    assert "jones-family, 6 emails this half-term (Autumn 2 2026)" in text
    assert "4 messages" in text
    assert "Friday 27 November 2026, 17:30" in text
    assert "teacher@ashdown.sch.uk" in text
    assert "parentgate review release m-000042" in text
    assert "parentgate review dismiss m-000042 --note" in text


def test_review_summary_attaches_the_original_as_message_rfc822() -> None:
    attached = [p for p in parse(review_summary()).walk() if p.get_content_type() == "message/rfc822"]
    assert len(attached) == 1
    inner = attached[0].get_content()
    assert inner["Message-ID"] == "<5678@parent.example.com>"
    assert BODY_TEXT in inner.get_content()


def test_review_summary_keeps_the_original_bytes() -> None:
    assert ORIGINAL_RAW in review_summary()


def test_review_summary_converts_bare_lf_originals_to_crlf_only() -> None:
    data = review_summary(ORIGINAL_RAW.replace(b"\r\n", b"\n"))
    assert ORIGINAL_RAW in data
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_review_summary_labels_8bit_originals_as_8bit() -> None:
    summary = parse(review_summary())
    assert summary["Content-Transfer-Encoding"] == "8bit"
    attached = next(p for p in summary.walk() if p.get_content_type() == "message/rfc822")
    assert attached["Content-Transfer-Encoding"] == "8bit"


def test_review_summary_boundary_never_collides_with_the_original() -> None:
    first = review_summary()
    boundary = parse(first).get_boundary()
    assert boundary is not None
    hostile = ORIGINAL_RAW + b"--" + boundary.encode() + b"--\r\n"
    summary = parse(review_summary(hostile))
    assert summary.get_boundary() != boundary
    assert len(list(summary.iter_parts())) == 2


def test_review_summary_subject_cannot_inject_a_header() -> None:
    data = review_summary(subject="Hi\r\nBcc: victim@example.com")
    summary = parse(data)
    assert summary["Bcc"] is None
    assert summary["Subject"] == "For review: Hi Bcc: victim@example.com"


def test_review_summary_is_the_same_bytes_for_the_same_input() -> None:
    assert review_summary() == review_summary()


# Failure notice.

def failure_notice(original: Facts | None, error: str = "550 5.1.1 <teacher@ashdown.sch.uk>: user unknown") -> bytes:
    return compose_failure_notice(
        original=original,
        message_ref="m-000042",
        to_addr="postmaster@ashdown.sch.uk",
        from_addr="parentgate@ashdown.sch.uk",
        recipients=["teacher@ashdown.sch.uk", "office@ashdown.sch.uk"],
        error=error,
        attempts=17,
        now=NOW + timedelta(days=5),
        message_id="<pg.99@gw.ashdown.sch.uk>",
    )


def test_failure_notice_names_the_message_recipients_and_error() -> None:
    notice = parse(failure_notice(facts()))
    assert notice["Auto-Submitted"] == "auto-generated"
    assert notice["To"] == "postmaster@ashdown.sch.uk"
    assert "m-000042" in notice["Subject"]
    text = notice.get_content()
    assert "m-000042" in text
    assert "teacher@ashdown.sch.uk, office@ashdown.sch.uk" in text
    assert "550 5.1.1" in text
    assert "17" in text
    assert "<5678@parent.example.com>" in text


def test_failure_notice_carries_no_message_content() -> None:
    data = failure_notice(facts())
    assert b"packed lunch" not in data
    assert b"Trip on Friday" not in data


def test_failure_notice_works_without_parsed_facts() -> None:
    text = parse(failure_notice(None)).get_content()
    assert "m-000042" in text


def test_failure_notice_error_cannot_inject_a_header() -> None:
    notice = parse(failure_notice(None, error="421 try later\r\n\r\nBcc: x@example.com"))
    assert notice["Bcc"] is None
    assert "421 try later Bcc: x@example.com" in notice.get_content()
