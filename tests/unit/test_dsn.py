"""DSN composition (RFC 3464) and server-reply text: pure functions, no sockets."""

from __future__ import annotations

from datetime import datetime, timezone
from email import message_from_bytes
from email.policy import default as default_policy

import pytest

from gateway.act.dsn import FailedRecipient, compose_dsn, diagnostic_code, dsn_status
from gateway.act.transport import classify_reply, reply_text
from gateway.triage.facts import parse_message

NOW = datetime(2026, 11, 24, 10, 5, tzinfo=timezone.utc)
RAW = (b"From: Priya Patel <mum@example.com>\r\nTo: j.smyth@school.example\r\nSubject: Reading book\r\n"
       b"Message-ID: <orig@example.com>\r\n\r\nThe body is not returned.\r\n")


def dsn(raw: bytes = RAW, failures: list[FailedRecipient] | None = None, expired: bool = False) -> bytes:
    return compose_dsn(original_raw=raw, original=parse_message(raw), to_addr="mum@example.com",
                       from_addr="postmaster@school.example", school_name="Oakfield Primary School",
                       office_phone="0113 496 0000", reporting_mta="gateway.test",
                       arrival=datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc),
                       failures=failures or [FailedRecipient("j.smyth@school.example", "550 5.1.1 no such user")],
                       expired=expired, now=NOW, message_id="<dsn1@gateway.test>")


@pytest.mark.parametrize("reply, expired, status", [
    ("550 5.1.1 <a@b>: no such user", False, "5.1.1"),
    ("550-5.7.1 policy", False, "5.7.1"),
    ("550 no such user", False, "5.0.0"),
    ("connection: ConnectionRefusedError", True, "4.4.7"),
    ("451 4.2.1 mailbox busy", True, "4.2.1"),
    ("451 try later", True, "4.4.7"),
    ("550 5.1.1.1 odd", False, "5.0.0"),
])
def test_status_comes_from_the_enhanced_code_else_a_default(reply, expired, status):
    assert dsn_status(reply, expired=expired) == status


def test_diagnostic_code_is_smtp_for_a_reply_and_an_x_type_for_our_own_words():
    assert diagnostic_code("550 5.1.1 no such user") == "smtp; 550 5.1.1 no such user"
    assert diagnostic_code("connection: OSError") == "X-Parentgate; connection: OSError"


def test_reply_text_is_one_escaped_line_and_truncated():
    text = reply_text(550, "5.1.1 first line\r\n5.1.1 second\x1b[31m line é\\")
    assert text == "550 5.1.1 first line 5.1.1 second\\x1b[31m line \\xe9\\\\"
    assert len(reply_text(451, "x" * 1000)) == 300
    assert classify_reply(550, "5.1.1 no\nsuch user").detail == "550 5.1.1 no such user"


def test_the_report_has_three_parts_and_returns_headers_only():
    data = dsn()
    report = message_from_bytes(data, policy=default_policy)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["In-Reply-To"] == "<orig@example.com>"
    assert [p.get_content_type() for p in report.iter_parts()] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert b"The body is not returned" not in data
    # Every line is short enough for any SMTP server, and the whole report is ASCII.
    assert data.isascii() and max(len(line) for line in data.split(b"\r\n")) <= 998


def test_two_recipients_are_two_blocks_of_one_report():
    data = dsn(failures=[FailedRecipient("a@school.example", "550 5.1.1 no"),
                         FailedRecipient("b@school.example", "connection: TimeoutError")], expired=True)
    report = message_from_bytes(data, policy=default_policy)
    status = [p for p in report.iter_parts() if p.get_content_type() == "message/delivery-status"][0]
    blocks = status.get_payload()
    assert [b["Final-Recipient"] for b in blocks[1:]] == ["rfc822; a@school.example", "rfc822; b@school.example"]
    assert [b["Status"] for b in blocks[1:]] == ["5.1.1", "4.4.7"]


def test_a_hostile_subject_or_reply_cannot_add_a_header_field():
    raw = RAW.replace(b"Subject: Reading book", b"Subject: =?utf-8?q?hi=0D=0ABcc:_victim@example.com?=")
    data = dsn(raw, failures=[FailedRecipient("a@school.example", "550 ok\r\nBcc: x@example.com")])
    report = message_from_bytes(data, policy=default_policy)
    assert report["Bcc"] is None
    status = [p for p in report.iter_parts() if p.get_content_type() == "message/delivery-status"][0]
    assert status.get_payload()[1]["Bcc"] is None


def test_non_ascii_original_headers_are_labelled_8bit():
    raw = b"From: Zo\xc3\xab <zoe@example.com>\r\nSubject: caf\xc3\xa9\r\n\r\nbody\r\n"
    data = dsn(raw)
    assert b"Content-Transfer-Encoding: 8bit" in data
    assert b"From: Zo\xc3\xab <zoe@example.com>" in data


def test_an_enormous_header_section_is_cut_at_a_line():
    raw = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"y" * 100) for n in range(2000)) + b"\r\nbody\r\n"
    data = dsn(raw)
    assert len(data) < 80_000
    assert data.endswith(b"--\r\n")


def test_no_failures_is_a_programming_error():
    with pytest.raises(ValueError):
        compose_dsn(original_raw=RAW, original=None, to_addr="mum@example.com", from_addr="pm@school.example",
                    school_name="", office_phone="", reporting_mta="gw", arrival=NOW, failures=[], expired=False,
                    now=NOW, message_id="<x@gw>")
