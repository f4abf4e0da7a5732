"""Parsing raw bytes into Facts: never raises, and names what it could not read."""

from __future__ import annotations

import base64
import os
from datetime import datetime, timezone

import pytest

from gateway.triage import facts as facts_module
from gateway.triage.facts import parse_message


def message(*headers: str, body: str = "Hello Mrs Khan,\r\nCould Sam bring his recorder on Friday?\r\n",
            content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = "\r\n".join(headers + (f"Content-Type: {content_type}", "MIME-Version: 1.0"))
    return (head + "\r\n\r\n" + body).encode("utf-8")


PLAIN = message(
    "From: \"Dawson, Amy\" <Amy.Dawson@Example.COM>",
    "To: Mrs Khan <R.Khan@Oakfield.sch.example>, office@oakfield.sch.example",
    "Cc: Dad <dad@example.net>",
    "Subject: Recorder =?utf-8?q?=E2=80=93_Friday?=",
    "Date: Tue, 10 Nov 2026 20:14:00 +0100",
    "Message-ID: <abc.123@example.com>",
    "In-Reply-To: <prev.1@oakfield.sch.example>",
    "References: <first.0@oakfield.sch.example>\r\n <prev.1@oakfield.sch.example>",
    "Auto-Submitted: no",
    "List-Id: <parents.oakfield>",
)


def test_plain_message_headers_addresses_and_ids() -> None:
    f = parse_message(PLAIN)
    assert f.from_addr == "amy.dawson@example.com"
    assert f.from_name == "Dawson, Amy"
    assert f.to == ("r.khan@oakfield.sch.example", "office@oakfield.sch.example")
    assert f.cc == ("dad@example.net",)
    assert f.subject == "Recorder – Friday"
    assert f.message_id == "<abc.123@example.com>"
    assert f.in_reply_to == "<prev.1@oakfield.sch.example>"
    assert f.references == ("<first.0@oakfield.sch.example>", "<prev.1@oakfield.sch.example>")
    assert f.header("Auto-Submitted") == "no"
    assert f.headers["list-id"] == ("<parents.oakfield>",)
    assert "content-type" in f.headers
    assert f.size == len(PLAIN)
    assert f.defects == ()


def test_date_is_aware_utc() -> None:
    assert parse_message(PLAIN).date == datetime(2026, 11, 10, 19, 14, tzinfo=timezone.utc)


def test_unknown_zone_date_is_read_as_utc() -> None:
    f = parse_message(message("From: a@example.com", "Date: Tue, 10 Nov 2026 20:14:00 -0000"))
    assert f.date == datetime(2026, 11, 10, 20, 14, tzinfo=timezone.utc)


def test_body_text_and_new_text() -> None:
    f = parse_message(PLAIN)
    assert f.text == "Hello Mrs Khan,\nCould Sam bring his recorder on Friday?"
    assert f.new_text == f.text
    assert not f.html_only


def test_html_only_body_is_converted_to_text() -> None:
    raw = message("From: a@example.com", "Date: Tue, 10 Nov 2026 20:14:00 +0000",
                  body="<html><body><p>Dear Miss,</p><p>Can Ava <b>swap</b> her book?</p></body></html>",
                  content_type="text/html; charset=utf-8")
    f = parse_message(raw)
    assert f.html_only
    assert f.text == "Dear Miss,\nCan Ava swap her book?"


def test_alternative_prefers_the_plain_part() -> None:
    body = ("--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain words.\r\n"
            "--B\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>HTML words.</p>\r\n--B--\r\n")
    f = parse_message(message("From: a@example.com", "Date: Tue, 10 Nov 2026 20:14:00 +0000", body=body,
                              content_type='multipart/alternative; boundary="B"'))
    assert f.text == "Plain words."
    assert not f.html_only


def test_missing_from_and_date_are_recorded_not_fatal() -> None:
    f = parse_message(b"Subject: hi\r\n\r\nJust a note.\r\n")
    assert f.from_addr == ""
    assert f.date is None
    assert "missing-date" in f.defects
    assert f.text == "Just a note."


def test_unreadable_date_is_a_defect() -> None:
    f = parse_message(message("From: a@example.com", "Date: sometime last Tuesday"))
    assert f.date is None
    assert "bad-date" in f.defects


@pytest.mark.parametrize("raw", [b"", b"\x00\xff\xfe" * 500, os.urandom(4096), b"\r\n\r\n\r\n",
                                 b"no headers at all, just words", b"From: <<<@@@>>>\r\n\r\n"])
def test_junk_never_raises(raw: bytes) -> None:
    f = parse_message(raw)
    assert f.size == len(raw)
    f.text.encode("utf-8")


def test_empty_body_gives_empty_text() -> None:
    f = parse_message(message("From: a@example.com", "Date: Tue, 10 Nov 2026 20:14:00 +0000", body=""))
    assert f.text == "" and f.new_text == ""


def test_bogus_charset_label_is_read_as_windows_1252() -> None:
    raw = (b"From: a@example.com\r\nDate: Tue, 10 Nov 2026 20:14:00 +0000\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=\"x-unknown\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           b"Le caf\xe9 est ferm\xe9 aujourd'hui.\r\n")
    f = parse_message(raw)
    assert f.text == "Le café est fermé aujourd'hui."
    assert "bad-charset" in f.defects


def test_undecodable_body_is_a_defect() -> None:
    raw = (b"From: a@example.com\r\nDate: Tue, 10 Nov 2026 20:14:00 +0000\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           b"Broken \xff\xfe bytes here.\r\n")
    f = parse_message(raw)
    assert "undecodable-body" in f.defects
    assert "Broken" in f.text and "bytes here." in f.text


def test_raw_8bit_headers_are_decoded_and_recorded() -> None:
    raw = (b"From: J\xc3\xa9r\xc3\xb4me <jerome@example.com>\r\nSubject: Caf\xc3\xa9 \xe2\x80\x93 menu\r\n"
           b"Date: Tue, 10 Nov 2026 20:14:00 +0000\r\n\r\nHello.\r\n")
    f = parse_message(raw)
    assert f.subject == "Café – menu"
    assert f.from_name == "Jérôme"
    assert "raw-8bit-header" in f.defects


def test_raw_8bit_text_next_to_an_encoded_word_keeps_its_accents() -> None:
    f = parse_message(b"From: a@example.com\r\nSubject: Caf\xc3\xa9 =?utf-8?q?men=C3=BA?=\r\n\r\nHi\r\n")
    assert f.subject == "Café menú"


def test_latin1_raw_header_falls_back_to_windows_1252() -> None:
    f = parse_message(b"From: a@example.com\r\nSubject: Cr\xe8che\r\n\r\nHello.\r\n")
    assert f.subject == "Crèche"


def test_encoded_word_with_unknown_charset_does_not_raise() -> None:
    f = parse_message(b"From: a@example.com\r\nSubject: =?x-klingon?q?Hello?= there\r\n\r\nHi\r\n")
    assert "Hello" in f.subject
    assert "bad-charset" in f.defects


def test_twenty_megabyte_attachment_is_sized_not_decoded() -> None:
    payload = base64.encodebytes(os.urandom(20 * 1024 * 1024)).replace(b"\n", b"\r\n")
    raw = (b"From: a@example.com\r\nDate: Tue, 10 Nov 2026 20:14:00 +0000\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n"
           b"The scan of his report is attached.\r\n--XX\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n"
           b"Content-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + payload + b"--XX--\r\n")
    f = parse_message(raw)
    assert f.text == "The scan of his report is attached."
    assert len(f.attachments) == 1
    attachment = f.attachments[0]
    assert (attachment.filename, attachment.content_type) == ("report.pdf", "application/pdf")
    assert attachment.size == 20 * 1024 * 1024
    assert f.size == len(raw)


def test_quoted_reply_is_removed_from_new_text() -> None:
    body = "Thank you!\r\n\r\nOn Mon, 9 Nov 2026 at 10:00, Mrs Khan <r.khan@oakfield.sch.example> wrote:\r\n> Hi\r\n"
    f = parse_message(message("From: a@example.com", "Date: Tue, 10 Nov 2026 20:14:00 +0000", body=body))
    assert f.new_text == "Thank you!"
    assert "wrote:" in f.text


def test_falls_back_to_the_stdlib_when_mail_parser_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(raw: bytes) -> None:
        raise RuntimeError("parser bug")
    monkeypatch.setattr(facts_module.mailparser, "parse_from_bytes", broken)
    f = parse_message(PLAIN)
    assert f.from_addr == "amy.dawson@example.com"
    assert f.text.startswith("Hello Mrs Khan")


def test_unparseable_when_every_parser_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("parser bug")
    monkeypatch.setattr(facts_module.mailparser, "parse_from_bytes", broken)
    monkeypatch.setattr(facts_module.email, "message_from_bytes", broken)
    f = parse_message(b"Subject: x\r\n\r\nPlease call me today.")
    assert f.defects == ("unparseable",)
    assert "Please call me today." in f.text
