"""One message's whole judgement: facts, counts, findings, route, plan and the acknowledgement decision.

Shared by the triage worker (which then writes the result) and the `triage` dry run (which prints it),
so the two can never disagree. Reads the store; never writes to it unless asked to create a thread.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from gateway.config import Config, SchoolConfig
from gateway.decide.acknowledge import AckKind, ack_kind, suppression
from gateway.decide.casework import PLAN_ROUTES, blocked_plan, window_plan
from gateway.decide.passthrough import passthrough_plan, passthrough_reason
from gateway.decide.plan import Plan, plan
from gateway.decide.route import route_for
from gateway.domain.casework import NO_CASEWORK, Casework
from gateway.domain.facts import Facts
from gateway.domain.findings import ContentFindings, Findings, Flag, Reason, Route, Tone
from gateway.domain.senders import SenderClass, classify_sender
from gateway.domain.states import State
from gateway.store import casework as casework_store, memory
from gateway.store.models import MessageRow
from gateway.triage import Context, combine
from gateway.triage.facts import parse_message
from gateway.triage.content import classify
from gateway.triage.limits import Limits, word_count
from gateway.triage.rules import RuleSet

# Suppression reasons that mean "a machine sent this": such mail is never counted against a family.
AUTOMATED = frozenset({"null-sender", "auto-submitted", "list-mail", "bulk-precedence", "system-sender",
                       "own-message", "delivery-report"})
# A blocked sender hears at most once a week which channel to use instead (policy 003).
BLOCK_NOTICE_PERIOD = timedelta(days=7)


@dataclass(frozen=True)
class Judged:
    """The context-free part of triage: parsing and the content rules (pure, CPU only)."""

    facts: Facts
    content: ContentFindings


def judge(raw: bytes, rules: RuleSet) -> Judged:
    facts = parse_message(raw)
    return Judged(facts, classify(facts, rules))


# What a message contributes to the family and thread counts: school, family, half-term, counted, thread.
Standing = tuple[str, "str | None", "str | None", int, "int | None"]


def standing(row: MessageRow) -> Standing:
    return (row.school, row.family, row.half_term, row.counted, row.thread_id)


@dataclass
class Batch:
    """One triage transaction's own messages, so that reading the counts per message needs no flush.

    The database counts leave the batch's messages out (`ids`); the tallies count them as they stand
    in this transaction, before or after their own triage, so every count is what a flushed query
    would return. The family directory and the messages outside the batch do not change during the
    batch (the transaction holds SQLite's write lock), so each is read once per sender, family or
    thread rather than once per message.
    """

    ids: frozenset[int]
    family_counts: Counter[tuple[str, str | None, str | None]] = field(default_factory=Counter)
    thread_counts: Counter[int] = field(default_factory=Counter)
    acks: set[tuple[str, str]] = field(default_factory=set)
    families: dict[tuple[str, str], memory.Family] = field(default_factory=dict)
    stored_family_counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    stored_thread_counts: dict[int, int] = field(default_factory=dict)
    # Read once per batch: the subject threads, and what the database says of each sender's acks.
    threads: dict[tuple[str, str, str], int | None] = field(default_factory=dict)
    acked_before: dict[tuple[str, str], bool] = field(default_factory=dict)
    acks_today: dict[str, int] = field(default_factory=dict)
    casework: dict[tuple[str, str, str], Casework] = field(default_factory=dict)

    @classmethod
    def of(cls, rows: dict[int, Standing]) -> Batch:
        batch = cls(ids=frozenset(rows))
        for before in rows.values():
            batch._add(before, 1)
        return batch

    def _add(self, st: Standing, sign: int) -> None:
        school, family, half_term, counted, thread_id = st
        if counted == 1:
            self.family_counts[(school, family, half_term)] += sign
            if thread_id is not None:
                self.thread_counts[thread_id] += sign

    def note(self, before: Standing, after: Standing, ack: tuple[str, str] | None) -> None:
        """A message of the batch was triaged: its counts move, and its acknowledgement is pending."""
        self._add(before, -1)
        self._add(after, 1)
        if ack is not None:
            self.acks.add(ack)
            if ack[0] in self.acks_today:
                self.acks_today[ack[0]] += 1

    def family_count(self, session: Session, school: str, family: str, half_term: str) -> int:
        key = (school, family, half_term)
        if key not in self.stored_family_counts:
            self.stored_family_counts[key] = memory.count_family(session, school, family, half_term, self.ids)
        return self.stored_family_counts[key] + self.family_counts[key]

    def thread_count(self, session: Session, thread_id: int) -> int:
        if thread_id not in self.stored_thread_counts:
            self.stored_thread_counts[thread_id] = memory.count_thread(session, thread_id, self.ids)
        return self.stored_thread_counts[thread_id] + self.thread_counts[thread_id]

    def forget_reads(self) -> None:
        """After a rolled-back savepoint: what was read or created inside it may be gone."""
        self.threads.clear()
        self.acked_before.clear()
        self.acks_today.clear()
        self.stored_family_counts.clear()
        self.stored_thread_counts.clear()
        self.families.clear()
        self.casework.clear()

    def thread_for(self, session: Session, *, school: str, family: str, subject: str, ref_ids: list[str],
                   now: datetime, create: bool) -> int | None:
        """Thread identity from References / In-Reply-To, else normalised subject + family + school."""
        if ref_ids:
            # A reply may quote a message triaged earlier in this batch: its thread must be in the database.
            session.flush()
            found = memory.thread_by_refs(session, school, ref_ids)
            if found is not None:
                return found
        key = (school, family, memory.subject_key(subject))
        if self.threads.get(key) is None:
            self.threads[key] = memory.thread_by_subject(session, school=school, family=family, key=key[2],
                                                         now=now, create=create)
        return self.threads[key]

    def acknowledged_recently(self, session: Session, sender: str, kind: str, since: datetime) -> bool:
        """Handed to the outbox earlier in this batch (maybe not flushed yet), or so the database says."""
        if (sender, kind) in self.acks:
            return True
        if (sender, kind) not in self.acked_before:
            self.acked_before[(sender, kind)] = memory.acknowledged_recently(session, sender, kind, since)
        return self.acked_before[(sender, kind)]

    def acknowledgements_today(self, session: Session, sender: str, now: datetime) -> int:
        """Every acknowledgement row to the sender in the last day, this batch's included."""
        if sender not in self.acks_today:
            session.flush()
            self.acks_today[sender] = memory.acknowledgements_today(session, sender, now)
        return self.acks_today[sender]

    def casework_for(self, session: Session, school: str, family: memory.Family, address: str,
                     now: datetime) -> Casework:
        """The plan and block that apply to the sender (read once per sender per batch)."""
        key = (school, family.key, memory.normalise_address(address))
        if key not in self.casework:
            self.casework[key] = casework_store.casework_for(session, school, family.key, family.known, address, now)
        return self.casework[key]

    def family_for(self, session: Session, school: str, address: str) -> memory.Family:
        key = (school, memory.normalise_address(address))
        if key not in self.families:
            self.families[key] = memory.family_for(session, school, address)
        return self.families[key]


@dataclass(frozen=True)
class Evaluation:
    school: SchoolConfig
    facts: Facts
    findings: Findings
    route: Route
    plan: Plan
    ack: AckKind | None
    ack_block: str | None
    sender: str
    family: memory.Family
    half_term_key: str
    thread_id: int | None
    counted: bool
    sender_class: SenderClass = SenderClass.UNKNOWN
    casework: Casework = NO_CASEWORK
    # The communication plan's reading window this message waits for (start, end), if any.
    window: tuple[datetime, datetime] | None = None


def half_term_key(school: SchoolConfig, at: datetime) -> tuple[str, str]:
    term = school.calendar.half_term(at)
    return f"{term.start.isoformat()} {term.name}", term.name


def evaluate(session: Session, *, config: Config, rules: RuleSet, school: SchoolConfig, judged: Judged,
             mail_from: str, rcpts: tuple[str, ...], received_at: datetime, now: datetime,
             create_thread: bool, batch: Batch | None = None) -> Evaluation:
    """With `batch`, the caller has autoflush off and the batch supplies what the database lacks;
    without one (the dry run), the message is a batch of its own."""
    batch = batch if batch is not None else Batch.of({})
    facts = judged.facts
    sender = memory.normalise_address(mail_from) if mail_from else ""
    blocked = suppression(facts, mail_from, config.own_domains)
    from_domain = (facts.from_addr or sender).rpartition("@")[2]
    counted = blocked not in AUTOMATED and from_domain not in config.own_domains
    address = facts.from_addr or sender
    family = batch.family_for(session, school.id, address)
    key, term_name = half_term_key(school, received_at)
    sender_class = classify_sender(envelope_sender=sender, from_addr=facts.from_addr,
                                   internal_domains=school.internal_domains, in_directory=family.known)
    passing = passthrough_reason(sender_class, sender=sender or facts.from_addr, rcpts=rcpts,
                                 own_domains=school.domains, passthrough_recipients=school.passthrough_recipients,
                                 unknown_senders=school.unknown_senders)
    if passing is not None:
        # Not parents' mail: no counts, no thread, no content rules, no acknowledgement, no hold.
        findings = Findings(tone=Tone.NEUTRAL, reasons=(passing,), language=judged.content.language,
                            family=family.key, family_count=0, half_term=term_name, thread_count=0,
                            words=word_count(facts.new_text))
        return Evaluation(school=school, facts=facts, findings=findings, route=Route.STAFF,
                          plan=passthrough_plan(calendar=school.calendar, now=now, staff=rcpts), ack=None,
                          ack_block="passthrough", sender=sender, family=family, half_term_key=key,
                          thread_id=None, counted=False, sender_class=sender_class)
    # The half-term count is a family's: an address in the directory, or (where the school asks for it)
    # an unknown sender's own address. Threads are counted for everyone.
    family_counted = counted and (sender_class is SenderClass.FAMILY or config.limits.count_unknown_senders)
    previous = batch.family_count(session, school.id, family.key, key) if family_counted else 0
    refs = list(facts.references) + ([facts.in_reply_to] if facts.in_reply_to else [])
    thread_id = batch.thread_for(session, school=school.id, family=family.key, subject=facts.subject,
                                 ref_ids=refs, now=now, create=create_thread)
    in_thread = batch.thread_count(session, thread_id) if thread_id is not None else 0
    limits = config.limits
    context = Context(
        family=family.key, family_label=family.label, family_count=previous + (1 if family_counted else 0),
        half_term=term_name, thread_count=in_thread + (1 if counted else 0),
        limits=Limits(limits.family_messages_per_half_term, limits.thread_messages, limits.long_message_words))
    if not counted:
        # Machines and colleagues are not a family writing too often; only content rules apply.
        context = Context(family.key, family.label, 0, term_name, 0, context.limits)
    findings = combine(facts, judged.content, context)
    route = route_for(findings)
    the_plan = plan(route, calendar=school.calendar, now=received_at, staff=rcpts, office=school.office,
                    dsl=school.dsl)
    if the_plan.state is State.HELD and the_plan.release_at is not None and the_plan.release_at <= now:
        # Received while closed but triaged after opening (a backlog, or downtime): deliver now.
        the_plan = plan(route, calendar=school.calendar, now=now, staff=rcpts, office=school.office,
                        dsl=school.dsl)
    kind = ack_kind(route)
    casework = batch.casework_for(session, school.id, family, address, now)
    window = None
    if casework.block is not None:
        findings = _with_reason(findings, "blocked-sender", Flag.BLOCKED_SENDER, f"block {casework.block.id}")
        the_plan = blocked_plan(route, closure=the_plan.closure, dsl=school.dsl)
        route, kind = the_plan.route, AckKind.BLOCKED
    elif casework.plan is not None and route in PLAN_ROUTES:
        try:
            the_plan, window = window_plan(route, window=casework.plan.window, calendar=school.calendar, now=now,
                                           dsl=school.dsl)
        except ValueError:
            # No open day for a year: the plan cannot apply; the message goes as it would without one.
            pass
        else:
            findings = _with_reason(findings, "communication-plan", Flag.COMMUNICATION_PLAN,
                                    f"plan {casework.plan.id}: {casework.plan.window.describe()}, "
                                    f"read by {casework.plan.reader}")
            kind = AckKind.PLAN
    block = _ack_block(session, config, school, kind, blocked, sender, now, batch)
    return Evaluation(school=school, facts=facts, findings=findings, route=route, plan=the_plan,
                      ack=kind if block is None else None, ack_block=block, sender=sender, family=family,
                      half_term_key=key, thread_id=thread_id, counted=counted, sender_class=sender_class,
                      casework=casework, window=window)


def _with_reason(findings: Findings, rule: str, flag: Flag, evidence: str) -> Findings:
    return replace(findings, reasons=findings.reasons + (Reason(rule, flag, evidence),))


def _ack_block(session: Session, config: Config, school: SchoolConfig, kind: AckKind | None,
               blocked: str | None, sender: str, now: datetime, batch: Batch) -> str | None:
    """Why no acknowledgement is sent, or None to send one (RFC 3834 §2 and the school's settings)."""
    if kind is None:
        return "route-blocked"
    if not school.acknowledge:
        return "disabled"
    if blocked is not None:
        return blocked
    period = BLOCK_NOTICE_PERIOD if kind is AckKind.BLOCKED else config.acknowledge.period
    if batch.acknowledged_recently(session, sender, kind.value, now - period):
        return "already-acknowledged"
    if batch.acknowledgements_today(session, sender, now) >= config.acknowledge.max_per_sender_per_day:
        return "sender-throttled"
    return None
