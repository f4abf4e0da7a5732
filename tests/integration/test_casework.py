"""Communication plans, blocked senders and the escalation ladder (issue #10), through the SMTP listener,
the workers and a sink, on a fixed clock."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from gateway.casework import (block, end_plan, escalate, list_blocks, list_plans, send_letter,
                              send_review_reminders, start_plan, unblock)
from gateway.clock import FixedClock
from gateway.services import ServiceError, list_messages
from gateway.store import records
from gateway.store.casework import notices_sent
from tests.conftest import utc
from tests.support import (DOMAIN, DSL, HEAD, OFFICE, STAFF, InProcessGateway, Sink, message, school_calendar,
                           wire, write_config)

PRIYA, RAJ, LEE = "priya.patel@parent.example", "raj.patel@parent.example", "lee.grant@parent.example"
READER = f"deputy@{DOMAIN}"
FAMILIES = ("family_id,email,parent_name,child_name,year_group,school\n"
            f"F-PATEL,{PRIYA},Priya Patel,Maya Patel,Year 4,oakfield\n"
            f"F-PATEL,{RAJ},Raj Patel,Maya Patel,Year 4,oakfield\n"
            f"F-GRANT,{LEE},Lee Grant,Mia Grant,Year 2,oakfield\n")
ROUTINE = "Could you send Maya's spelling list again please? marker-routine\n"
ABSENCE = "Maya has been sick in the night and won't be in today. marker-absence\n"
# Short lines, so that no transfer encoding splits the markers.
DISCLOSURE = "Maya told me her uncle hurts her when he babysits\nand she is scared of him.\nmarker-disclosure\n"


def _import(cfg: Path, tmp_path: Path) -> None:
    (tmp_path / "families.csv").write_text(FAMILIES)
    out = subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), "families", "import",
                          str(tmp_path / "families.csv")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.fixture
async def school(tmp_path: Path, sink: Sink, database_url: str):
    """On SQLite and on PostgreSQL (when reachable)."""
    cfg = write_config(tmp_path, sink_port=sink.port, calendar=school_calendar(), database=database_url)
    _import(cfg, tmp_path)
    # Wednesday 9 December 2026, 12:00 (Autumn 2, open).
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 12, 9, 12, 0))).start()
    yield gw
    await gw.stop()


def texts(received: list) -> list[str]:
    out = []
    for r in received:
        body = r.message.get_body(("plain",))
        out.append(str(r.message["Subject"]) + "\n" + (body.get_content() if body else ""))
    return out


def carrying(sink: Sink, rcpt: str, marker: bytes) -> list:
    return [r for r in sink.to(rcpt) if marker in r.data]


async def send(gw: InProcessGateway, sender: str, body: str, subject: str = "Maya", to: str = STAFF):
    m = message(sender=sender, to=to, subject=subject, body=body)
    addr = sender.rpartition("<")[2].rstrip(">")
    assert (await gw.send(m, mail_from=addr, rcpts=[to]))[0] == 250
    await gw.settle()
    return m


async def test_tuesday_plan_holds_thursday_mail_for_the_reader_with_the_window_named(school, sink):
    start_plan(school.rt, "F-PATEL", window="tue 09:00-10:00", reader=READER, note="Agreed at meeting", actor="head")
    school.clock.set(utc(2026, 12, 10, 10, 0))  # Thursday 10 December
    routine = await send(school, f"Raj Patel <{RAJ}>", ROUTINE, subject="Spelling list")
    await send(school, f"Priya Patel <{PRIYA}>", ABSENCE)
    await send(school, f"Priya Patel <{PRIYA}>", DISCLOSURE, subject="Worried")
    # Urgent operational mail and a disclosure go at once, plan or not.
    assert carrying(sink, OFFICE, b"marker-absence")
    assert carrying(sink, DSL, b"marker-disclosure")
    # The routine message waits, and its acknowledgement names Tuesday's window.
    assert not carrying(sink, STAFF, b"marker-routine") and not carrying(sink, READER, b"marker-routine")
    [ack] = texts(sink.to(RAJ))
    assert "Tuesday 15 December at 09:00" in ack and "every Tuesday, 09:00-10:00" in ack
    row = next(r for r in school.messages() if b"marker-routine" in r.raw)
    assert row.state == "held" and row.release_at == utc(2026, 12, 15, 9, 0)
    assert "communication-plan" in row.flags
    # Monday evening: still held.
    school.clock.set(utc(2026, 12, 14, 20, 0))
    await school.settle()
    assert not carrying(sink, READER, b"marker-routine")
    # Tuesday 09:00: to the reader with why, never to the teacher.
    school.clock.set(utc(2026, 12, 15, 9, 0))
    await school.settle()
    [reading] = carrying(sink, READER, b"marker-routine")
    assert reading.data.count(wire(routine).split(b"\r\n\r\n", 1)[1].strip()) == 1
    text = texts([reading])[0]
    assert "communication plan" in text.lower() and "every Tuesday, 09:00-10:00" in text
    assert not carrying(sink, STAFF, b"marker-routine")
    assert school.state_of(row.id) == "delivered"
    # The disclosure's teacher copy also waits for the reader (the DSL had it at once).
    assert not carrying(sink, STAFF, b"marker-disclosure")
    assert carrying(sink, READER, b"marker-disclosure")


async def test_mail_after_the_plan_ends_goes_to_the_teacher_again(school, sink):
    start_plan(school.rt, RAJ, window="tue 09:00-10:00", note="Agreed", actor="head")
    with pytest.raises(ServiceError):
        start_plan(school.rt, "F-PATEL", window="wed 09:00-10:00", note="again", actor="head")
    end_plan(school.rt, "F-PATEL", note="Reviewed: no longer needed", actor="head")
    await send(school, f"Raj Patel <{RAJ}>", ROUTINE)
    assert carrying(sink, STAFF, b"marker-routine")
    [plan] = list_plans(school.rt)
    assert plan.ended_by == "head" and plan.end_note == "Reviewed: no longer needed"


async def test_fortnightly_window_skips_a_week(school, sink):
    school.clock.set(utc(2027, 1, 11, 12, 0))  # Monday 11 January 2027: first window Tuesday 12th
    start_plan(school.rt, "F-PATEL", window="tue 09:00-10:00", fortnightly=True, note="Fortnightly", actor="head")
    school.clock.set(utc(2027, 1, 13, 10, 0))  # Wednesday 13th: next window is the 26th, not the 19th
    await send(school, f"Raj Patel <{RAJ}>", ROUTINE)
    row = next(r for r in school.messages() if b"marker-routine" in r.raw)
    assert row.release_at == utc(2027, 1, 26, 9, 0)
    school.clock.set(utc(2027, 1, 19, 9, 30))
    await school.settle()
    assert not carrying(sink, HEAD, b"marker-routine")
    school.clock.set(utc(2027, 1, 26, 9, 0))
    await school.settle()
    assert carrying(sink, HEAD, b"marker-routine") and not carrying(sink, STAFF, b"marker-routine")


async def test_a_window_on_a_closed_day_moves_to_the_next_open_day(school, sink):
    # Monday 2 November 2026 is an INSET day: Monday's window opens on Tuesday 3rd instead.
    school.clock.set(utc(2026, 10, 28, 12, 0))
    start_plan(school.rt, "F-PATEL", window="mon 09:00-10:00", note="Mondays", actor="head")
    await send(school, f"Raj Patel <{RAJ}>", ROUTINE)
    row = next(r for r in school.messages() if b"marker-routine" in r.raw)
    assert row.release_at == utc(2026, 11, 3, 9, 0)
    [ack] = texts(sink.to(RAJ))
    assert "Tuesday 3 November at 09:00" in ack
    school.clock.set(utc(2026, 11, 2, 9, 30))
    await school.settle()
    assert not carrying(sink, HEAD, b"marker-routine")
    school.clock.set(utc(2026, 11, 3, 9, 0))
    await school.settle()
    assert carrying(sink, HEAD, b"marker-routine")


async def test_review_reminders_14_days_before_and_on_the_day_and_the_plan_is_never_ended_silently(school, sink):
    start_plan(school.rt, "F-PATEL", window="tue 09:00-10:00", reader=READER, review=date(2027, 2, 10),
               note="Six weeks", actor="head")
    school.clock.set(utc(2027, 1, 26, 12, 0))  # 15 days before
    assert send_review_reminders(school.rt) == 0
    school.clock.set(utc(2027, 1, 27, 8, 0))  # 14 days before
    assert send_review_reminders(school.rt) == 2
    assert send_review_reminders(school.rt) == 0
    await school.settle()
    assert [len(sink.to(a)) for a in (READER, HEAD)] == [1, 1]
    assert "review on 2027-02-10" in texts(sink.to(HEAD))[0]
    school.clock.set(utc(2027, 2, 10, 8, 0))  # the review date
    assert send_review_reminders(school.rt) == 2
    await school.settle()
    assert "review due today" in texts(sink.to(READER))[1]
    school.clock.set(utc(2027, 3, 1, 8, 0))
    assert send_review_reminders(school.rt) == 0
    [plan] = list_plans(school.rt)
    assert plan.due_for_review and plan.ended_at is None
    # Still in force: a message after the review date is still held for the window.
    await send(school, f"Raj Patel <{RAJ}>", ROUTINE)
    assert next(r for r in school.messages() if b"marker-routine" in r.raw).state == "held"


async def test_blocked_address_mail_is_kept_with_one_notice_a_week_and_the_dsl_still_hears(school, sink):
    block(school.rt, "Angry.Sender@parent.example", note="Abusive emails to staff", actor="head")
    sender = "angry.sender@parent.example"
    for i in (1, 2):
        await send(school, sender, f"I am still waiting for an answer about the trip.\nmarker-blocked{i}\n")
    await send(school, sender, "Kai's stepdad hit him with a belt last night\nand he has marks on his legs.\n"
               "marker-bdsl\n")
    assert carrying(sink, DSL, b"marker-bdsl")
    for marker in (b"marker-blocked1", b"marker-blocked2", b"marker-bdsl"):
        assert not carrying(sink, STAFF, marker) and not carrying(sink, HEAD, marker)
    [notice] = texts(sink.to(sender))
    assert "0113 496 0000" in notice and "marker" not in notice
    kept = list_messages(school.rt, "blocked")
    assert len(kept) == 3 and all(r.route in ("blocked", "dsl") for r in kept)
    assert {r.counted for r in school.messages()} == {1}
    [shown] = list_blocks(school.rt)
    assert shown.blocked_messages == 3
    # Six days on: no second notice; eight days on: one more.
    school.clock.advance(timedelta(days=6))
    await send(school, sender, "Still waiting. marker-blocked3\n")
    assert len(sink.to(sender)) == 1
    school.clock.advance(timedelta(days=2))
    await send(school, sender, "Still waiting. marker-blocked4\n")
    assert len(sink.to(sender)) == 2
    assert not carrying(sink, STAFF, b"marker-blocked4")
    assert school.rt.db.transact(lambda s: notices_sent(s, sender, utc(2026, 12, 1))) == 2


async def test_a_block_ends_on_its_end_date_and_unblock_lifts_it(school, sink):
    block(school.rt, "F-PATEL", note="Cooling off", until=date(2026, 12, 11), actor="head")
    await send(school, f"Raj Patel <{RAJ}>", "Before the end date. marker-before\n")
    assert not carrying(sink, STAFF, b"marker-before")
    [notice] = texts(sink.to(RAJ))
    assert "telephone the school office" in notice
    school.clock.set(utc(2026, 12, 11, 10, 0))
    await send(school, f"Raj Patel <{RAJ}>", "After the end date. marker-after\n")
    assert carrying(sink, STAFF, b"marker-after")
    block(school.rt, PRIYA, note="Again", actor="head")
    await send(school, f"Priya Patel <{PRIYA}>", "Blocked again. marker-again\n")
    assert not carrying(sink, STAFF, b"marker-again")
    unblock(school.rt, PRIYA, note="Apologised", actor="head")
    await send(school, f"Priya Patel <{PRIYA}>", "Unblocked. marker-unblocked\n")
    assert carrying(sink, STAFF, b"marker-unblocked")


async def test_a_blocked_family_on_a_plan_is_told_to_write_to_the_reader(school, sink):
    start_plan(school.rt, "F-PATEL", window="tue 09:00-10:00", reader=READER, note="Plan", actor="head")
    block(school.rt, PRIYA, note="Abusive", actor="head")
    await send(school, f"Priya Patel <{PRIYA}>", "Blocked. marker-x\n")
    [notice] = texts(sink.to(PRIYA))
    assert READER in notice


async def test_warning_letter_names_parent_child_and_school_and_is_sent_from_the_head(school, sink):
    # An abusive message first: the letter names it among the incidents that led to it.
    await send(school, f"Lee Grant <{LEE}>", "You are useless and a disgrace, you idiots.\n", subject="Mia")
    done = escalate(school.rt, LEE, stage="warning", note="Second abusive email this term", actor="head")
    assert done.letter_id is not None and done.draft is not None
    for words in ("Lee Grant", "Mia Grant", "Year 2", "Oakfield Primary School", "Second abusive email this term"):
        assert words in done.draft
    assert sink.to(LEE) == [] or all("Formal warning" not in t for t in texts(sink.to(LEE)))
    edited = done.draft.replace("Dear Lee Grant", "Dear Mr Grant")
    assert send_letter(school.rt, done.letter_id, actor="head", text=edited) == (LEE,)
    await school.settle()
    [letter] = [r for r in sink.to(LEE) if b"Formal warning" in r.data]
    assert letter.mail_from == HEAD and HEAD in str(letter.message["From"])
    body = letter.message.get_body(("plain",)).get_content()
    assert "Dear Mr Grant" in body and "Mia Grant" in body
    with pytest.raises(ServiceError):
        send_letter(school.rt, done.letter_id, actor="head")


async def test_escalate_with_send_mails_every_guardian(school, sink):
    done = escalate(school.rt, "F-PATEL", stage="meeting", note="Let us talk", actor="head", send=True)
    assert set(done.sent_to) == {PRIYA, RAJ}
    await school.settle()
    assert all(any(b"Request for a meeting" in r.data for r in sink.to(a)) for a in (PRIYA, RAJ))


async def test_ban_until_blocks_the_family_until_that_date(school, sink):
    with pytest.raises(ServiceError):
        escalate(school.rt, "F-GRANT", stage="ban", note="no date", actor="head")
    done = escalate(school.rt, "F-GRANT", stage="ban", until=date(2027, 1, 8), note="Threats at the gate",
                    actor="head")
    assert done.block is not None and done.draft is not None and "Friday 8 January 2027" in done.draft
    [incident] = school.rt.db.transact(lambda s: records.incidents(s, family="F-GRANT"))
    assert incident.action == "escalated to banned until 2027-01-08" and incident.actor == "head"
    await send(school, f"Lee Grant <{LEE}>", "During the ban. marker-ban\n")
    assert not carrying(sink, STAFF, b"marker-ban")
    school.clock.set(utc(2027, 1, 8, 9, 0))
    await send(school, f"Lee Grant <{LEE}>", "After the ban. marker-after-ban\n")
    assert carrying(sink, STAFF, b"marker-after-ban")


def test_cli_plan_block_escalate_and_lists(tmp_path: Path):
    cfg = write_config(tmp_path, calendar=school_calendar())
    _import(cfg, tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), *args, "--actor", "head"]
                              if args[0] not in ("plans", "blocks") else
                              [sys.executable, "-m", "gateway", "--config", str(cfg), *args],
                              capture_output=True, text=True, timeout=60)
    r = cli("plan", "start", RAJ, "--window", "thu 14:00-15:00", "--note", "Agreed")
    assert r.returncode == 0 and "every Thursday, 14:00-15:00" in r.stdout, r.stderr
    assert cli("plan", "start", "F-NOBODY", "--window", "thu 14:00-15:00", "--note", "x").returncode == 1
    bad = cli("plan", "start", "F-GRANT", "--window", "someday", "--note", "x")
    assert bad.returncode == 1 and "tue 09:00-10:00" in bad.stderr
    assert "F-PATEL" in cli("plans").stdout
    assert cli("block", "someone@else.example", "--note", "Spam").returncode == 0
    assert "someone@else.example" in cli("blocks").stdout
    assert cli("unblock", "someone@else.example", "--note", "ok").returncode == 0
    assert "no blocks in force" in cli("blocks").stdout
    r = cli("escalate", "F-GRANT", "--stage", "warning", "--note", "Second abusive email")
    assert r.returncode == 0 and "Lee Grant" in r.stdout and "Mia" in r.stdout and "Oakfield" in r.stdout
    edited = subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), "escalate", "F-GRANT", "--stage",
                             "meeting", "--note", "Let us meet", "--edit", "--actor", "head"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "VISUAL": "", "EDITOR": "sed -i s/Dear/Hello/"})
    assert edited.returncode == 0 and "Hello Lee Grant" in edited.stdout and "Dear" not in edited.stdout
    r = cli("escalate", "F-GRANT", "--stage", "legal-advice", "--note", "LA legal team")
    assert r.returncode == 0 and "no letter" in r.stdout
