"""The DSL's digest of possible safeguarding concerns and the office's interpreter copy, end to end:
mail through the SMTP listener, the real workers, delivery to an aiosmtpd sink, and a fixed clock.

Messages are flagged by a school's own phrase rules (`finding = "possible-safeguarding"` and
`finding = "needs-interpreter"`), the kinds a rule file may use for flags that do not route.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import pytest

from gateway.clock import FixedClock
from gateway.store import memory
from gateway.store.digests import digested_in
from gateway.triage.rules import default_rules_dir
from gateway.workers.digest import DigestWorker
from tests.conftest import utc
from tests.rules.test_rule_files import INTERPRETER_RULE, POSSIBLE_RULE
from tests.support import DSL, OFFICE, STAFF, InProcessGateway, Sink, message, school_calendar, wire, write_config

# A school's own flag rules: a possible concern (private fostering) and a script nobody reads.
FLAG_RULES = POSSIBLE_RULE.format(extra="") + INTERPRETER_RULE
FLAGGED = ("Hello Mr Smith, just to let you know Ali is staying with us while his parents are abroad for a few "
           "weeks. Could he join the chess club on Thursdays? Thanks, Priya\n")
ROUTINE = "Hello, could Maya have a new reading book please? Thanks\n"
ETHIOPIC = "ሰላም መምህር፣ ወደይ ብዛዕባ ናይ ገዛ ዕዮ ሕቶ ኣለዎ። የቐንየለይ\n"
FAMILIES = ("family_id,email,parent_name,child_name,year_group,school\n"
            "F17,mum.patel@example.com,Priya Patel,Maya Patel,Year 3,oakfield\n"
            "F17,mum.patel@example.com,Priya Patel,Ali Rahman,Year 3,oakfield\n")


def school_config(tmp_path: Path, sink: Sink, database: str | None = None) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), rules)
    (rules / "school-flags.toml").write_text(FLAG_RULES, encoding="utf-8")
    return write_config(tmp_path / "gw", sink_port=sink.port, calendar=school_calendar(), database=database,
                        gateway_extra=os.environ.get("PG_TEST_GATEWAY_EXTRA", "") + f'\nrules_dir = "{rules}"\n',
                        extra='[acknowledge]\nenabled = false\n\n'
                              '[console]\nlisten = "127.0.0.1:8025"\nbase_url = "https://console.test"\n')


async def started(cfg: Path, at: object) -> InProcessGateway:
    gw = await InProcessGateway(cfg, FixedClock(at)).start()  # type: ignore[arg-type]
    gw.rt.db.transact(lambda s: memory.import_families(s, FAMILIES, {"oakfield"}))
    return gw


@pytest.fixture
async def school(tmp_path: Path, sink: Sink):
    gw = await started(school_config(tmp_path, sink), utc(2026, 11, 23, 10, 0))
    yield gw
    await gw.stop()


async def digest_now(gw: InProcessGateway, worker: DigestWorker | None = None) -> int:
    written = await (worker or DigestWorker(gw.rt)).run_once()
    await gw.settle()
    return written


def digests(sink: Sink) -> list[str]:
    found = []
    for r in sink.to(DSL):
        m = message_from_bytes(r.data, policy=default_policy)
        assert m["X-Parentgate"] == "dsl-digest"
        found.append(m.get_content())
    return found


async def test_flagged_monday_10am_mail_reaches_the_teacher_now_and_the_1pm_digest_only(school, sink):
    assert (await school.send(message(subject="Ali", body=FLAGGED)))[0] == 250
    await school.settle()
    [row] = school.messages()
    assert row.route == "staff" and "possible-safeguarding" in row.flags
    assert len(sink.to(STAFF)) == 1 and school.state_of(row.id) == "delivered"
    worker = DigestWorker(school.rt)
    school.clock.set(utc(2026, 11, 23, 12, 59))
    assert await digest_now(school, worker) == 0
    assert sink.to(DSL) == []
    school.clock.set(utc(2026, 11, 23, 13, 0))
    assert await digest_now(school, worker) == 1
    [text] = digests(sink)
    assert f"https://console.test/messages/{row.id}" in text
    assert "left-with-friends-abroad" in text and "while his parents are abroad" in text
    assert "the Patel family (children: Maya Patel, Ali Rahman)" in text
    assert STAFF in text and "mum.patel@example.com" in text and "Monday 23 November 2026, 10:00" in text
    # Nothing of the message beyond the evidence: not its subject, not the rest of its body.
    assert "chess club" not in text and "Subject" not in text
    school.clock.set(utc(2026, 11, 24, 8, 0))
    assert await digest_now(school, worker) == 0
    assert len(sink.to(DSL)) == 1
    assert len(school.rt.db.transact(lambda s: digested_in(s, row.id))) == 1


async def test_on_a_saturday_the_digest_goes_at_once(school, sink):
    school.clock.set(utc(2026, 11, 28, 11, 0))
    assert (await school.send(message(subject="Ali", body=FLAGGED)))[0] == 250
    await school.settle()
    [row] = school.messages()
    assert school.state_of(row.id) == "held" and sink.to(STAFF) == []
    assert await digest_now(school) == 1
    [text] = digests(sink)
    assert f"/messages/{row.id}" in text and "Saturday 28 November 2026, 11:00" in text


async def test_two_flagged_messages_share_one_digest_and_routine_mail_is_not_listed(school, sink):
    school.clock.set(utc(2026, 11, 23, 9, 0))
    for body in (FLAGGED, ROUTINE, FLAGGED.replace("Ali", "Sami")):
        assert (await school.send(message(subject="Note", body=body)))[0] == 250
        school.clock.advance(timedelta(minutes=30))
    await school.settle()
    first, routine, second = school.messages()
    school.clock.set(utc(2026, 11, 23, 13, 0, 30))
    assert await digest_now(school) == 1
    [text] = digests(sink)
    assert f"/messages/{first.id}" in text and f"/messages/{second.id}" in text
    assert f"/messages/{routine.id}" not in text
    assert text.startswith("2 messages to Oakfield Primary School")


async def test_a_long_list_is_split_into_several_digests_each_message_in_one(tmp_path, sink):
    # Without the console, each entry says how to look at the message on the server.
    cfg = school_config(tmp_path, sink)
    cfg.write_text(cfg.read_text().replace('[console]\nlisten = "127.0.0.1:8025"\nbase_url = "https://console.test"\n', ""))
    gw = await started(cfg, utc(2026, 11, 28, 10, 0))
    try:
        for n in range(3):
            assert (await gw.send(message(subject=f"Note {n}", body=FLAGGED)))[0] == 250
        await gw.settle()
        ids = [row.id for row in gw.messages()]
        assert await digest_now(gw, DigestWorker(gw.rt, most=2)) == 2
        texts = digests(sink)
        assert sorted(sum(f"parentgate show {i}" in t for t in texts) for i in ids) == [1, 1, 1]
        assert texts[0].startswith("2 messages") and texts[1].startswith("1 message ")
        assert await digest_now(gw, DigestWorker(gw.rt, most=2)) == 0
    finally:
        await gw.stop()


async def test_unflagged_mail_makes_no_digest(school, sink):
    assert (await school.send(message(body=ROUTINE)))[0] == 250
    await school.settle()
    for at in (utc(2026, 11, 23, 13, 0), utc(2026, 11, 28, 9, 0), utc(2026, 11, 30, 8, 0)):
        school.clock.set(at)
        assert await digest_now(school) == 0
    assert sink.to(DSL) == [] and len(sink.to(STAFF)) == 1


async def test_a_restart_between_triage_and_the_digest_loses_nothing_and_lists_nothing_twice(tmp_path, sink,
                                                                                            database_url):
    cfg = school_config(tmp_path, sink, database_url)
    gw = await started(cfg, utc(2026, 11, 23, 10, 0))
    assert (await gw.send(message(subject="Ali", body=FLAGGED)))[0] == 250
    await gw.settle()
    [row] = gw.messages()
    await gw.stop()
    # A second incarnation after 13:00 writes the digest the first one never wrote ...
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 11, 23, 13, 5))).start()
    try:
        assert await digest_now(gw) == 1
        assert await digest_now(gw) == 0
    finally:
        await gw.stop()
    # ... and a third, restarted with a fresh worker, writes none.
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 11, 23, 13, 10))).start()
    try:
        assert await digest_now(gw) == 0
        assert len(digests(sink)) == 1 and f"/messages/{row.id}" in digests(sink)[0]
        assert len(gw.rt.db.transact(lambda s: digested_in(s, row.id))) == 1
    finally:
        await gw.stop()


async def test_a_digest_that_cannot_be_written_keeps_its_messages_for_the_next_sweep(tmp_path, sink):
    cfg = school_config(tmp_path, sink)
    template = tmp_path / "rules" / "templates" / "dsl_digest.txt.j2"
    good = template.read_text(encoding="utf-8")
    gw = await started(cfg, utc(2026, 11, 28, 10, 0))
    try:
        assert (await gw.send(message(subject="Ali", body=FLAGGED)))[0] == 250
        await gw.settle()
        [row] = gw.messages()
        worker = DigestWorker(gw.rt)
        template.write_text(good.replace("{{ count }}", "{{ count_of_nothing }}"), encoding="utf-8")
        assert await digest_now(gw, worker) == 0
        assert sink.to(DSL) == [] and gw.rt.db.transact(lambda s: digested_in(s, row.id)) == []
        template.write_text(good, encoding="utf-8")
        assert await digest_now(gw, worker) == 1
        assert await digest_now(gw, worker) == 0
        assert len(digests(sink)) == 1
    finally:
        await gw.stop()


async def test_mail_needing_an_interpreter_reaches_the_teacher_and_the_office_once(school, sink):
    assert (await school.send(message(subject="ሰላም", body=ETHIOPIC)))[0] == 250
    await school.settle()
    [row] = school.messages()
    assert row.route == "staff" and "needs-interpreter" in row.flags
    assert len(sink.to(STAFF)) == 1
    [copy] = sink.to(OFFICE)
    m = message_from_bytes(copy.data, policy=default_policy)
    assert m["X-Parentgate"] == "interpreter-copy" and m["Subject"] == "Interpreter needed: ሰላም"
    note, original = [part for part in m.iter_parts()]
    assert "arrange for it to be interpreted" in note.get_content()
    assert f"Reference: {row.id}" in note.get_content()
    assert original.get_content_type() == "message/rfc822"
    # Nothing sends it again: more sweeps, a digest, a restart of the workers.
    await school.settle()
    school.clock.set(utc(2026, 11, 23, 13, 0))
    await digest_now(school)
    assert len(sink.to(OFFICE)) == 1


async def test_urgent_mail_needing_an_interpreter_gives_the_office_one_copy_with_the_note(school, sink):
    body = "Maya won't be in today, she is ill.\n" + ETHIOPIC
    assert (await school.send(message(subject="Maya", body=body)))[0] == 250
    await school.settle()
    [row] = school.messages()
    assert row.route == "office" and "needs-interpreter" in row.flags
    [copy] = sink.to(OFFICE)
    assert message_from_bytes(copy.data, policy=default_policy)["X-Parentgate"] == "interpreter-copy"


def test_triage_json_carries_both_flags(tmp_path, sink):
    cfg = school_config(tmp_path, sink)
    eml = tmp_path / "both.eml"
    eml.write_bytes(wire(message(subject="Ali", body=FLAGGED + ETHIOPIC)))
    run = subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), "triage", "--json", str(eml)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert {"possible-safeguarding", "needs-interpreter"} <= set(result["flags"])
    assert result["route"] == "staff"
    assert any(r["rule"] == "left-with-friends-abroad" for r in result["reasons"])


async def test_two_gateways_sweeping_at_once_write_one_digest(tmp_path, sink, pg_url):
    from gateway.app import build_runtime, load_all
    cfg = school_config(tmp_path, sink, pg_url)
    gw = await started(cfg, utc(2026, 11, 28, 10, 0))
    config, rules = load_all(cfg)
    other = build_runtime(config, rules, clock=FixedClock(utc(2026, 11, 28, 10, 0)))
    try:
        for n in range(3):
            assert (await gw.send(message(subject=f"Note {n}", body=FLAGGED)))[0] == 250
        await gw.settle()
        ids = [row.id for row in gw.messages()]
        written = await asyncio.gather(DigestWorker(gw.rt).run_once(), DigestWorker(other).run_once())
        assert sorted(written) == [0, 1]
        await gw.settle()
        [text] = digests(sink)
        assert all(f"/messages/{i}" in text for i in ids)
        assert all(len(gw.rt.db.transact(lambda s, i=i: digested_in(s, i))) == 1 for i in ids)
    finally:
        other.db.close()
        await gw.stop()


CLOSED_FOR_YEARS = ('[schools.hours]\nopen = "08:00"\nclose = "17:00"\ndays = ["mon", "tue", "wed", "thu", "fri"]\n\n'
                    '[[schools.half_terms]]\nname = "Later"\nstart = 2034-01-02\nend = 2034-02-10\n\n'
                    '[schools.closures]\ninset_days = []\nbank_holidays = "ENG"\n')


@pytest.mark.timeout(240)
def test_the_daemon_sends_the_digest_by_itself_on_a_closed_day(tmp_path, sink):
    """The scheduler's own tick, in the real daemon: the school is closed today (its term is years
    away), so a flagged message is held for the teacher and in the DSL's digest within a tick."""
    from tests.integration.test_crash import start_daemon
    from tests.integration.test_metrics import stop
    from tests.support import free_port
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), rules)
    (rules / "school-flags.toml").write_text(FLAG_RULES, encoding="utf-8")
    port = free_port()
    cfg = write_config(tmp_path / "gw", smtp_port=port, sink_port=sink.port, calendar=CLOSED_FOR_YEARS,
                       gateway_extra=os.environ.get("PG_TEST_GATEWAY_EXTRA", "") + f'\nrules_dir = "{rules}"\n',
                       extra="[acknowledge]\nenabled = false\n")
    proc = start_daemon(cfg, port, tmp_path / "daemon.log")
    try:
        import smtplib
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.sendmail("mum.patel@example.com", [STAFF], wire(message(subject="Ali", body=FLAGGED)))
        deadline = time.monotonic() + 120
        while not sink.to(DSL) and time.monotonic() < deadline:
            time.sleep(0.2)
        [digest] = sink.to(DSL)
        text = digest.message.get_content()
        assert "left-with-friends-abroad" in text and "parentgate show 1" in text
        assert sink.to(STAFF) == []
    finally:
        stop(proc)
