"""One message's whole judgement: facts, counts, findings, route, plan and the acknowledgement decision.

Shared by the triage worker (which then writes the result) and the `triage` dry run (which prints it),
so the two can never disagree. Reads the store; never writes to it unless asked to create a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from gateway.config import Config, SchoolConfig
from gateway.decide.acknowledge import AckKind, ack_kind, suppression
from gateway.decide.plan import Plan, plan
from gateway.decide.route import route_for
from gateway.domain.facts import Facts
from gateway.domain.findings import ContentFindings, Findings, Route
from gateway.domain.states import State
from gateway.store import memory
from gateway.triage import Context, combine
from gateway.triage.facts import parse_message
from gateway.triage.content import classify
from gateway.triage.limits import Limits
from gateway.triage.rules import RuleSet

# Suppression reasons that mean "a machine sent this": such mail is never counted against a family.
AUTOMATED = frozenset({"null-sender", "auto-submitted", "list-mail", "bulk-precedence", "system-sender",
                       "own-message", "delivery-report"})


@dataclass(frozen=True)
class Judged:
    """The context-free part of triage: parsing and the content rules (pure, CPU only)."""

    facts: Facts
    content: ContentFindings


def judge(raw: bytes, rules: RuleSet) -> Judged:
    facts = parse_message(raw)
    return Judged(facts, classify(facts, rules))


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


def half_term_key(school: SchoolConfig, at: datetime) -> tuple[str, str]:
    term = school.calendar.half_term(at)
    return f"{term.start.isoformat()} {term.name}", term.name


def evaluate(session: Session, *, config: Config, rules: RuleSet, school: SchoolConfig, judged: Judged,
             mail_from: str, rcpts: tuple[str, ...], received_at: datetime, now: datetime,
             create_thread: bool) -> Evaluation:
    facts = judged.facts
    sender = memory.normalise_address(mail_from) if mail_from else ""
    blocked = suppression(facts, mail_from, config.own_domains)
    from_domain = (facts.from_addr or sender).rpartition("@")[2]
    counted = blocked not in AUTOMATED and from_domain not in config.own_domains
    family = memory.family_for(session, school.id, facts.from_addr or sender)
    key, term_name = half_term_key(school, received_at)
    previous = memory.count_family(session, school.id, family.key, key) if counted else 0
    refs = list(facts.references) + ([facts.in_reply_to] if facts.in_reply_to else [])
    thread_id = memory.resolve_thread(session, school=school.id, family=family.key, subject=facts.subject,
                                      ref_ids=refs, now=now, create=create_thread)
    in_thread = memory.count_thread(session, thread_id) if thread_id is not None else 0
    limits = config.limits
    context = Context(
        family=family.key, family_label=family.label, family_count=previous + (1 if counted else 0),
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
    block = _ack_block(session, config, school, kind, blocked, sender, now)
    return Evaluation(school=school, facts=facts, findings=findings, route=route, plan=the_plan,
                      ack=kind if block is None else None, ack_block=block, sender=sender, family=family,
                      half_term_key=key, thread_id=thread_id, counted=counted)


def _ack_block(session: Session, config: Config, school: SchoolConfig, kind: AckKind | None,
               blocked: str | None, sender: str, now: datetime) -> str | None:
    """Why no acknowledgement is sent, or None to send one (RFC 3834 §2 and the school's settings)."""
    if kind is None:
        return "route-blocked"
    if not school.acknowledge:
        return "disabled"
    if blocked is not None:
        return blocked
    if memory.acknowledged_recently(session, sender, kind.value, now - config.acknowledge.period):
        return "already-acknowledged"
    if memory.acknowledgements_today(session, sender, now) >= config.acknowledge.max_per_sender_per_day:
        return "sender-throttled"
    return None
