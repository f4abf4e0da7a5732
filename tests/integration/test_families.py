"""Families, half-term counts and the Head of School's review queue, through real sockets."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.clock import FixedClock
from gateway.services import ServiceError, review_dismiss, review_release
from tests.conftest import utc
from tests.support import HEAD, STAFF, InProcessGateway, Sink, message, school_calendar, wire, write_config

FAMILIES = ("family_id,email,parent_name,child_name,year_group,school\n"
            "F-PATEL,mum.patel@example.com,Priya Patel,Maya Patel,Year 3,oakfield\n"
            "F-PATEL,Dad.Patel@Example.net,Raj Patel,Maya Patel,Year 3,oakfield\n")


@pytest.fixture
async def school(tmp_path: Path, sink: Sink):
    cfg = write_config(tmp_path, sink_port=sink.port, calendar=school_calendar())
    (tmp_path / "families.csv").write_text(FAMILIES)
    out = subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), "families", "import",
                          str(tmp_path / "families.csv")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "2 row(s)" in out.stdout
    # Tuesday 8 December 2026, 10:00: Autumn 2, school open.
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 12, 8, 10, 0))).start()
    yield gw
    await gw.stop()


def attached_ids(received) -> set[str]:
    ids = set()
    for part in received.message.walk():
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload(0) if part.is_multipart() else part.get_content()
            ids.add(inner["Message-ID"])
    return ids


async def send_from_family(gw: InProcessGateway, n: int, start: int = 0) -> list:
    sent = []
    for i in range(start, start + n):
        who, addr = [("Priya Patel", "mum.patel@example.com"), ("Raj Patel", "dad.patel+school@example.net")][i % 2]
        m = message(sender=f"{who} <{addr}>", subject=f"Question {i}", body=f"A quick question number {i}.\n")
        assert (await gw.send(m, mail_from=addr))[0] == 250
        await gw.settle()
        gw.clock.advance(timedelta(minutes=5))
        sent.append(m)
    return sent


async def test_sixth_family_message_of_a_half_term_goes_to_the_head_with_evidence_not_the_teacher(school, sink):
    sent = await send_from_family(school, 6)
    staff_ids = {r.message["Message-ID"] for r in sink.to(STAFF)}
    assert {m["Message-ID"] for m in sent[:5]} <= staff_ids
    sixth = sent[5]["Message-ID"]
    assert sixth not in staff_ids
    [summary] = sink.to(HEAD)
    assert attached_ids(summary) == {sixth}
    text = summary.message.get_body(("plain",)).get_content()
    assert "6th message from the Patel family this half-term (Autumn 2)" in text
    row = school.messages()[-1]
    assert row.state == "in_review"
    assert row.reasons[0]["rule"] == "family-half-term-limit"


async def test_the_first_message_of_the_next_half_term_is_delivered_normally(school, sink):
    await send_from_family(school, 5)
    school.clock.set(utc(2027, 1, 5, 9, 0))
    [m] = await send_from_family(school, 1, start=5)
    assert m["Message-ID"] in {r.message["Message-ID"] for r in sink.to(STAFF)}
    assert sink.to(HEAD) == []
    assert school.messages()[-1].half_term.endswith("Spring 1")


async def test_review_release_delivers_the_original_unchanged(school, sink):
    sent = await send_from_family(school, 6)
    row = school.messages()[-1]
    assert review_release(school.rt, row.id, "head") == "queued for delivery"
    await school.settle()
    delivered = [r for r in sink.to(STAFF) if r.message["Message-ID"] == sent[5]["Message-ID"]]
    assert len(delivered) == 1
    assert delivered[0].data.endswith(wire(sent[5]))
    assert school.state_of(row.id) == "delivered"
    assert ("in_review", "queued") in school.events(row.id)


async def test_review_release_while_the_school_is_closed_holds_until_opening(school, sink):
    await send_from_family(school, 6)
    row = school.messages()[-1]
    school.clock.set(utc(2026, 12, 12, 11, 0))
    assert review_release(school.rt, row.id, "head").startswith("held until 2026-12-14T08:00")
    await school.settle()
    assert school.state_of(row.id) == "held"


async def test_review_dismiss_keeps_the_message_with_the_note(school, sink):
    await send_from_family(school, 6)
    row = school.messages()[-1]
    with pytest.raises(ServiceError):
        review_dismiss(school.rt, row.id, "head", "")
    review_dismiss(school.rt, row.id, "head", "Spoke to parent by phone")
    await school.settle()
    kept = school.messages()[-1]
    assert kept.state == "dismissed" and kept.note == "Spoke to parent by phone"
    assert kept.raw
    assert row.id not in {r.message["Message-ID"] for r in sink.to(STAFF)}


async def test_unknown_sender_is_its_own_family_and_tags_and_case_are_ignored(school, sink):
    for addr in ("Someone@Example.org", "someone+x@example.org"):
        assert (await school.send(message(sender=addr), mail_from=addr))[0] == 250
        await school.settle()
    rows = school.messages()
    assert {r.family for r in rows} == {"someone@example.org"}


def test_families_show_and_import_errors(tmp_path):
    cfg = write_config(tmp_path)
    (tmp_path / "f.csv").write_text(FAMILIES)
    run = lambda *a: subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    assert run("families", "import", str(tmp_path / "f.csv")).returncode == 0
    shown = run("families", "show", "DAD.patel@example.net")
    assert shown.returncode == 0 and "F-PATEL" in shown.stdout and "Maya Patel" in shown.stdout
    (tmp_path / "bad.csv").write_text("family_id,email\nX,a@b.c\n")
    bad = run("families", "import", str(tmp_path / "bad.csv"))
    assert bad.returncode == 1 and "missing column" in bad.stderr


async def send_from_stranger(gw: InProcessGateway, n: int) -> list:
    sent = []
    for i in range(n):
        addr = "stranger@example.org"
        m = message(sender=f"A Stranger <{addr}>", subject=f"Form {i}", body=f"Reply slip number {i}.\n")
        assert (await gw.send(m, mail_from=addr))[0] == 250
        await gw.settle()
        gw.clock.advance(timedelta(minutes=5))
        sent.append(m)
    return sent


async def test_an_unknown_senders_sixth_message_reaches_the_teacher_by_default(school, sink):
    # Not in the family directory: no half-term family total (threads are still counted).
    sent = await send_from_stranger(school, 7)
    staff_ids = {r.message["Message-ID"] for r in sink.to(STAFF)}
    assert {m["Message-ID"] for m in sent} <= staff_ids
    assert not sink.to(HEAD)
    assert all("family-half-term-limit" not in str(r.reasons) for r in school.messages())


async def test_count_unknown_senders_makes_an_unknown_address_a_family_of_its_own(tmp_path: Path, sink: Sink):
    cfg = write_config(tmp_path, sink_port=sink.port, calendar=school_calendar(),
                       extra="[limits]\ncount_unknown_senders = true\n")
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 12, 8, 10, 0))).start()
    try:
        sent = await send_from_stranger(gw, 6)
        staff_ids = {r.message["Message-ID"] for r in sink.to(STAFF)}
        assert {m["Message-ID"] for m in sent[:5]} <= staff_ids
        assert sent[5]["Message-ID"] not in staff_ids
        assert any(sent[5]["Message-ID"] in attached_ids(r) for r in sink.to(HEAD))
    finally:
        await gw.stop()
