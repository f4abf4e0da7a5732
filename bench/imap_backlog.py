"""IMAP backlog throughput: a backfill of N messages, against a bare imapclient FETCH of the same mail.

Starts a private Dovecot on a free 127.0.0.1 port in a temp dir, appends N realistic parent emails
(default 2,000 of about 2 KB; not timed) to alice's INBOX, then in one run:
  (a) a bare imapclient session: LOGIN, SELECT INBOX, SEARCH, UID FETCH (BODY.PEEK[] INTERNALDATE
      FLAGS) in batches of FETCH_BATCH, exactly what the gateway's backfill asks Dovecot for (the best
      of three passes);
  (b) parentgate in this process: `backfill` from 1970-01-01 through a StoreImapPort (SQLite in the
      temp dir), TriageWorker.run_until_idle (judging in the daemon's JudgePool), then a
      DeliveryWorker with the IMAP mover run until idle, its moves made on the mailbox's watcher
      connection (started, as in the daemon, before the clock starts) in batches,
and prints messages/s for each and the ratio b/a. The school is closed at the benchmark's fixed clock
time (a Saturday), so every message is held: stored, triaged and moved to the held folder in place.
(b) is complete when every message is in state `held` and the held folder holds N.

    .venv/bin/python bench/imap_backlog.py [--n 2000] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imapclient import IMAPClient  # noqa: E402

from bench.machine import descendants_cpu, describe, interrupted, process_cpu  # noqa: E402
from gateway.act.mailbox import FETCH_BATCH  # noqa: E402
from tests.integration.dovecot import Dovecot as TestDovecot, dovecot_binary  # noqa: E402

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from gateway.workers.runtime import Runtime

DOMAIN = "oakfield-primary.sch.example"
USER, PASSWORD = "alice", "alicepass"
HELD = "Held until school opens"
# A Saturday inside the "Autumn 2" half-term: the school is closed, so every message is held until
# Monday 08:00 and moved to the held folder.
SATURDAY = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
APPEND_BATCH = 200
BARE_PASSES = 3


# --------------------------------------------------------------------------------------------- helpers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> dict[str, str]:
    info = describe("imapclient")
    r = subprocess.run([dovecot_binary() or "dovecot", "--version"], capture_output=True, text=True)
    if r.returncode == 0:
        info["dovecot"] = r.stdout.strip()
    return info


def own_cpu() -> float:
    """CPU seconds of this process (all threads) and its reaped children (the judge processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


# ------------------------------------------------------------------------------------------- Dovecot

class Dovecot(TestDovecot):
    """The test suite's private Dovecot (tests/integration/dovecot.py), plus CPU accounting."""

    def cpu(self) -> float:
        """CPU seconds used so far by this instance: the master with its reaped children (imap,
        imap-login) plus the live processes (auth, config, running imap sessions)."""
        if self._pid is None:
            return 0.0
        return process_cpu(self._pid, reaped_children=True) + sum(process_cpu(pid) for pid in self._instance_pids())


def imap(server: Dovecot) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=60)
    client.login(USER, PASSWORD)
    return client


def folder_count(server: Dovecot, folder: str) -> int:
    with imap(server) as c:
        if not c.folder_exists(folder):
            return -1
        return int(c.select_folder(folder, readonly=True)[b"EXISTS"])


# ------------------------------------------------------------------------------------------ the mail

PARENTS = ["Priya Patel", "Tom Hughes", "Aisha Rahman", "Gareth Evans", "Sophie Clarke", "Marek Nowak",
           "Funmi Adeyemi", "Claire O'Neill", "Daniel Wright", "Hannah Lewis", "Yusuf Ali", "Laura Bennett",
           "Chen Wei", "Rebecca Shaw", "Imran Hussain", "Kirsty MacDonald", "Oliver Green", "Zofia Kowalska"]
CHILDREN = ["Maya", "Leo", "Amira", "Jack", "Isla", "Kacper", "Tobi", "Niamh", "Freddie", "Ella", "Zayn",
            "Poppy", "Lily", "Ruby", "Adam", "Skye", "Noah", "Alicja"]
CLASSES = ["Year 1 (Robins)", "Year 2 (Owls)", "Year 3 (Kestrels)", "Year 4 (Herons)", "Year 5 (Falcons)",
           "Year 6 (Eagles)"]
# (weight, subject, body): routine questions (route staff) with a few that are worried but polite,
# and a few safeguarding concerns (route DSL: held too, with an immediate copy to the DSL).
TOPICS = [
    (12, "Reading book for {child}",
     "Could {child} have a new reading book please? She has finished the one she brought home on Monday and "
     "has read it twice now, once to me and once to her grandad, who was very impressed. We have written in "
     "her reading record as well. If there is a chance she could try the next colour band that would be "
     "lovely, but we are happy to go with whatever you think is best."),
    (10, "PE kit this week",
     "Just a quick one: is PE still on Thursday this half-term, or has it moved to Wednesday with the swimming "
     "lessons? {child} came home saying it had changed and I would like to make sure the kit goes in on the "
     "right day. Also, do they need trainers or plimsolls for the hall, and is a hoodie allowed now it is "
     "getting colder in the mornings?"),
    (10, "Trip consent form - {class_}",
     "I have filled in the consent form for the museum trip but I think I have left it in {child}'s coat "
     "pocket rather than the book bag. I have paid the voluntary contribution on the app this morning. "
     "Could you let me know if you need another copy of the form, or if the online payment is enough? "
     "{child} is really looking forward to it and has been talking about the dinosaurs all week."),
    (8, "Parents' evening appointment",
     "Thank you for the letter about parents' evening. The booking system only shows slots after 6pm and "
     "I finish work at 5, so that is fine, but my partner would also like to come and cannot get there "
     "before 6:30. Is there any chance of a later slot, or could one of us join by phone? We would "
     "particularly like to hear how {child} is getting on with times tables and handwriting."),
    (8, "Dinner money and packed lunch",
     "From next week {child} will be having packed lunches on Mondays and Fridays and school dinners on the "
     "other days. I have topped up the account on the app. Could you let the kitchen know, and is there "
     "anything we need to do to change the dinner register? We will also need the vegetarian option on the "
     "days she has school dinners please."),
    (6, "Homework question",
     "{child} was not sure what the homework this week was asking for. The sheet says to find three "
     "examples of persuasive writing at home, but we were not sure whether cereal boxes and adverts count, "
     "or whether it needs to be a letter or a leaflet. We had a go with a few examples and put them in the "
     "homework book. Thanks for all the work you put into the class, {child} is really enjoying it."),
    (5, "Christmas performance costume",
     "Could you let me know what {child} needs for the Christmas performance costume? The note in the book bag "
     "got a bit soggy on the way home and we cannot read the last part. I think it said a plain white "
     "t-shirt and something silver, but we are not sure if that is tinsel or a headband. Happy to help "
     "with making anything for the class too if that would be useful."),
    (3, "A bit worried about {child}",
     "I am a little worried about {child}. She has been quieter than usual after school and said she did not "
     "have anyone to play with at lunchtime for a couple of days. It is probably nothing and I do not want "
     "to make a fuss, but I would be grateful if you could keep an eye out and let me know if you notice "
     "anything. She does love the class and speaks very highly of you."),
    (2, "Something {child} told me",
     "{child} told me last night that a man at the after-school club hit him and said he must keep it a "
     "secret or he would be in trouble. He had a bruise on his arm. I did not know who else to tell and "
     "I am frightened. Please can someone call me."),
]


def make_messages(n: int, seed: int = 1) -> list[bytes]:
    """N parent emails of about 2 KB: multipart/alternative (text and HTML), Return-Path and Received
    headers as a delivering MTA writes them, a distinct Message-ID each."""
    rng = random.Random(seed)
    weights = [w for w, _s, _b in TOPICS]
    out = []
    for i in range(n):
        _w, subject, body = rng.choices(TOPICS, weights)[0]
        parent, child, class_ = rng.choice(PARENTS), rng.choice(CHILDREN), rng.choice(CLASSES)
        local = parent.lower().replace(" ", ".").replace("'", "")
        sender = f"{local}{i % 97}@parents.example"
        when = SATURDAY - timedelta(minutes=n - i)
        fill = {"child": child, "class_": class_}
        text = (f"Dear Mrs Smith,\n\n{body.format(**fill)}\n\nMany thanks,\n{parent}\n"
                f"({child}'s mum/dad, {class_})\n\nSent from my phone\n")
        m = EmailMessage()
        m["Return-Path"] = f"<{sender}>"
        m["Received"] = (f"from mx.parents.example (mx.parents.example [192.0.2.{i % 250 + 1}]) by "
                         f"mail.{DOMAIN} with ESMTPS id {i:08X}; {format_datetime(when)}")
        m["Received"] = f"by mx.parents.example with HTTP; {format_datetime(when - timedelta(seconds=2))}"
        m["From"] = f"{parent} <{sender}>"
        m["To"] = f"Mrs J Smith <{USER}@{DOMAIN}>"
        m["Subject"] = subject.format(**fill)
        m["Date"] = format_datetime(when)
        m["Message-ID"] = make_msgid(idstring=f"{i}", domain="parents.example")
        m.set_content(text)
        paragraphs = "".join(f"<p>{p}</p>" for p in text.split("\n\n"))
        m.add_alternative(f'<html><head><meta charset="utf-8"></head><body><div dir="ltr" '
                          f'style="font-family:Arial,sans-serif;font-size:14px">{paragraphs}</div></body></html>',
                          subtype="html")
        out.append(m.as_bytes(policy=default_policy.clone(linesep="\r\n")))
    return out


def append_all(server: Dovecot, messages: list[bytes]) -> None:
    """MULTIAPPEND (RFC 3502) in batches; not timed."""
    when = SATURDAY - timedelta(hours=1)
    with imap(server) as c:
        for start in range(0, len(messages), APPEND_BATCH):
            c.multiappend("INBOX", [{"msg": raw, "date": when} for raw in messages[start:start + APPEND_BATCH]])


# ------------------------------------------------------------------------------------------ the paths

@dataclass
class Phase:
    name: str
    seconds: float
    own_cpu: float  # this process (all threads) + the judge processes
    dovecot_cpu: float


@dataclass
class Result:
    path: str
    n: int
    processed: int = 0
    seconds: float = 0.0
    phases: list[Phase] = field(default_factory=list)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.processed >= self.n


class Meter:
    """Wall time and CPU (ours, the judge pool's, Dovecot's) between marks."""

    def __init__(self, server: Dovecot) -> None:
        self.server = server
        self.phases: list[Phase] = []
        self._start = self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        return time.monotonic(), own_cpu() + descendants_cpu(os.getpid()), self.server.cpu()

    def mark(self, name: str) -> None:
        now = self._sample()
        self.phases.append(Phase(name, *(b - a for a, b in zip(self._last, now))))
        self._last = now

    @property
    def total(self) -> float:
        return self._last[0] - self._start[0]


def run_bare(server: Dovecot, n: int, passes: int = BARE_PASSES) -> Result:
    """The best of `passes` runs of `bare_fetch`: one pass takes well under a second, so a single
    pass is at the mercy of whatever else the machine is doing."""
    runs = [bare_fetch(server, n) for _ in range(passes)]
    best = max(runs, key=lambda r: (r.processed, r.rate))
    best.path = f"(a) bare imapclient FETCH (best of {passes})"
    rates = ", ".join(f"{r.rate:.0f}" for r in runs)
    best.note = (best.note + "; " if best.note else "") + f"passes: {rates} msg/s"
    return best


def bare_fetch(server: Dovecot, n: int) -> Result:
    """What the backfill asks Dovecot for, with nothing done with the answer: LOGIN, SELECT, SEARCH
    SINCE, UID FETCH (BODY.PEEK[] INTERNALDATE FLAGS) of FETCH_BATCH UIDs at a time, LOGOUT."""
    result = Result("(a) bare imapclient FETCH", n)
    meter = Meter(server)
    got = 0
    with imap(server) as c:
        c.normalise_times = False
        c.select_folder("INBOX")
        uids = sorted(c.search(["SINCE", date(1970, 1, 1)]))
        for start in range(0, len(uids), FETCH_BATCH):
            response = c.fetch(uids[start:start + FETCH_BATCH], [b"BODY.PEEK[]", b"INTERNALDATE", b"FLAGS"])
            got += sum(1 for item in response.values() if b"BODY[]" in item)
    meter.mark("fetch")
    result.processed, result.seconds, result.phases = got, meter.total, meter.phases
    if got < n:
        result.note = f"fetched only {got}/{n}"
    return result


def gateway_config(directory: Path, server: Dovecot) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = (f'[gateway]\nstate_dir = "var"\ntimezone = "Europe/London"\npostmaster = "postmaster@{DOMAIN}"\n\n'
            '[smtp]\nlisten = "127.0.0.1:2525"\nhostname = "gateway.test"\n\n'
            '[delivery]\nmode = "maildir"\nmaildir_root = "var/mail"\n'
            'retry_first_delay = "1s"\nretry_max_delay = "2s"\nlifetime = "1h"\n\n'
            '[acknowledge]\nenabled = false\n\n'
            '[limits]\nfamily_messages_per_half_term = 1000000\nthread_messages = 1000000\n\n'
            f'[[imap.mailboxes]]\nname = "{USER}"\nschool = "oakfield"\nhost = "127.0.0.1"\n'
            f'port = {server.port}\ntls = "none"\nusername = "{USER}"\npassword = "{PASSWORD}"\n'
            f'held_folder = "{HELD}"\n\n'
            f'[[schools]]\nid = "oakfield"\nname = "Oakfield Primary School"\ndomains = ["{DOMAIN}"]\n'
            f'head_of_school = "head@{DOMAIN}"\noffice = "office@{DOMAIN}"\n'
            f'office_phone = "0113 496 0000"\ndsl = "dsl@{DOMAIN}"\n\n'
            '[schools.hours]\nopen = "08:00"\nclose = "17:00"\ndays = ["mon", "tue", "wed", "thu", "fri"]\n\n'
            '[[schools.half_terms]]\nname = "Autumn 2"\nstart = 2026-11-02\nend = 2026-12-18\n\n'
            '[[schools.half_terms]]\nname = "Spring 1"\nstart = 2027-01-05\nend = 2027-02-12\n\n'
            '[schools.closures]\ninset_days = []\nbank_holidays = "ENG"\n')
    path = directory / "config.toml"
    path.write_text(text)
    return path


def held_summary(rt: Runtime) -> tuple[int, dict[str, int], dict[str, int]]:
    """(messages held and in the held folder, messages by state, imap_move rows by state)."""
    from sqlalchemy import func, select

    from gateway.store.models import MessageRow, OutboxRow

    def run(s: Session) -> tuple[int, dict[str, int], dict[str, int]]:
        done = s.scalar(select(func.count()).select_from(MessageRow)
                        .where(MessageRow.state == "held", MessageRow.folder == HELD)) or 0
        states = {str(k): int(v) for k, v in
                  s.execute(select(MessageRow.state, func.count()).group_by(MessageRow.state)).all()}
        moves = {str(k): int(v) for k, v in s.execute(select(OutboxRow.state, func.count())
                                                      .where(OutboxRow.kind == "imap_move")
                                                      .group_by(OutboxRow.state)).all()}
        return int(done), states, moves
    return rt.db.transact(run)


async def _parentgate(work: Path, server: Dovecot, n: int, result: Result) -> None:
    from gateway.app import build_runtime, delivery_transport, load_all, rules_dir
    from gateway.clock import FixedClock
    from gateway.imapmode import make_mover
    from gateway.ingest.imap import MailboxActions, MailboxWatcher, backfill
    from gateway.ingest.mailstore import StoreImapPort
    from gateway.workers.delivery import DeliveryWorker
    from gateway.workers.judging import JudgePool
    from gateway.workers.triage import TriageWorker

    config, rules = load_all(gateway_config(work / "gateway", server))
    rt = build_runtime(config, rules, clock=FixedClock(SATURDAY))
    judges = JudgePool(rules_dir(config))
    transport = delivery_transport(config)
    try:
        # The judge processes start and load the rules before the clock starts, as in a running daemon.
        await judges.judge_all([make_messages(1)[0]], rules)
        [mailbox] = config.mailboxes
        port = StoreImapPort(rt.db, rt.clock, lambda: config)
        triage = TriageWorker(rt, pool=judges)
        # The daemon's arrangement: the mailbox's watcher (one connection) makes the moves between IDLEs.
        watcher = MailboxWatcher(mailbox, port, now=rt.clock.now)
        actions = MailboxActions()
        actions.attach(watcher)
        watching = asyncio.create_task(watcher.run())
        while watcher.state != "idle":
            await asyncio.sleep(0.01)
        delivery = DeliveryWorker(rt, transport, mover=make_mover(rt, actions))
        meter = Meter(server)
        stored = await backfill(mailbox, port, date(1970, 1, 1), lambda _done, _total: None)
        meter.mark(f"backfill (fetch + store {stored})")
        triaged = await triage.run_until_idle()
        meter.mark(f"triage ({triaged})")
        attempted = await delivery.run_until_idle()
        meter.mark(f"delivery: moves ({attempted} outbox rows)")
        result.phases, result.seconds = meter.phases, meter.total
        done, states, moves = held_summary(rt)
        in_folder = folder_count(server, HELD)
        result.processed = min(done, in_folder)
        if done < n or in_folder != n:
            result.note = (f"INCOMPLETE: {done}/{n} held and moved per the database, {in_folder} in {HELD!r}; "
                           f"message states {states}; imap_move rows {moves}")
    finally:
        if "watcher" in locals():
            await watcher.stop()
            await watching
        await asyncio.to_thread(judges.close)
        await transport.close()
        rt.db.close()


def run_parentgate(work: Path, server: Dovecot, n: int) -> Result:
    result = Result("(b) parentgate backfill + triage + move", n)
    asyncio.run(_parentgate(work, server, n, result))
    return result


# -------------------------------------------------------------------------------------------- report

def print_report(results: list[Result], n: int, size: int, info: dict[str, str]) -> None:
    print()
    print(f"IMAP backlog: {n} messages (mean {size} bytes) in {USER}'s INBOX on a private Dovecot; "
          f"fetched {FETCH_BATCH} per UID FETCH")
    print("  machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print()
    header = f"  {'path':<42} {'done':>11} {'seconds':>9} {'msg/s':>8}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for r in results:
        print(f"  {r.path:<42} {f'{r.processed}/{r.n}':>11} {r.seconds:>9.2f} {r.rate:>8.0f}"
              + ("" if r.complete else "  INCOMPLETE"))
    print()
    a, b = results
    if a.rate and b.rate:
        print(f"  ratio b/a (parentgate processed / bare FETCH) = {b.rate / a.rate:.3f}")
    else:
        print("  ratio b/a = n/a")
    print()
    print(f"  {'phase':<42} {'wall s':>9} {'msg/s':>8} {'our CPU s':>10} {'Dovecot CPU s':>14}")
    for r in results:
        for p in r.phases:
            rate = n / p.seconds if p.seconds > 0 else 0.0
            print(f"  {r.path[:3] + ' ' + p.name:<42} {p.seconds:>9.2f} {rate:>8.0f} {p.own_cpu:>10.2f} "
                  f"{p.dovecot_cpu:>14.2f}")
    print("  (our CPU = this process's threads and the judge processes; Dovecot CPU = every process of the"
          " private instance)")
    for r in results:
        if r.note:
            print(f"\n  note {r.path[:3]}: {r.note}")
    print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="IMAP backlog: parentgate backfill + triage + move vs a bare FETCH.")
    ap.add_argument("--n", type=int, default=2000, help="messages appended to the INBOX (default 2000)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (Dovecot log and mail, config, database)")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be >= 1")
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the `finally` below stops Dovecot and removes the temp dirs.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    work = Path(tempfile.mkdtemp(prefix="pg-bench-imap-"))
    server = Dovecot(work / "dovecot", free_port())
    try:
        info = machine()
        print(f"work dir {work}; starting Dovecot on 127.0.0.1:{server.port}", flush=True)
        server.start()
        messages = make_messages(args.n)
        size = sum(map(len, messages)) // len(messages)
        t = time.monotonic()
        append_all(server, messages)
        print(f"appended {args.n} messages (mean {size} bytes) in {time.monotonic() - t:.1f}s (not timed)",
              flush=True)
        print("running (a) bare FETCH ...", flush=True)
        a = run_bare(server, args.n)
        print(f"  (a) {a.processed}/{args.n} in {a.seconds:.2f}s, {a.rate:.0f} msg/s", flush=True)
        print("running (b) parentgate ...", flush=True)
        b = run_parentgate(work, server, args.n)
        print(f"  (b) {b.processed}/{args.n} in {b.seconds:.2f}s, {b.rate:.0f} msg/s", flush=True)
        print_report([a, b], args.n, size, info)
        if args.keep:
            print(f"kept {work} (dovecot/dovecot.log, dovecot/mail, gateway/config.toml, gateway/var)")
        return 0 if a.complete and b.complete else 1
    finally:
        server.cleanup()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; Dovecot stopped", file=sys.stderr)
        sys.exit(130)
