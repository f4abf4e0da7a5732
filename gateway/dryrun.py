"""`parentgate triage`: the daemon's own judgement on files, without storing or sending anything."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from gateway.config import Config, SchoolConfig
from gateway.domain.facts import Facts
from gateway.store.database import Database
from gateway.triage.rules import RuleSet
from gateway.workers.evaluate import evaluate, judge


def school_for(config: Config, facts: Facts) -> tuple[SchoolConfig, tuple[str, ...]]:
    """The school the message is addressed to, and its recipients there (the first school otherwise)."""
    for address in facts.to + facts.cc:
        school = config.school_for_domain(address.rpartition("@")[2])
        if school is not None:
            rcpts = tuple(a for a in facts.to + facts.cc if a.rpartition("@")[2] in school.domains)
            return school, rcpts
    school = config.schools[0]
    return school, facts.to or (f"staff@{school.domains[0]}",)


def triage_files(config: Config, rules: RuleSet, files: list[Path], at: datetime | None, *,
                 as_json: bool) -> Iterator[str]:
    config.gateway.state_dir.mkdir(parents=True, exist_ok=True)
    db = Database(config.gateway.database)
    try:
        with db.session() as session:
            for path in files:
                raw = path.read_bytes()
                judged = judge(raw, rules)
                facts = judged.facts
                when = at or facts.date or datetime.now(timezone.utc)
                school, rcpts = school_for(config, facts)
                envelope = (facts.header("return-path") or facts.from_addr or "").strip().strip("<>")
                ev = evaluate(session, config=config, rules=rules, school=school, judged=judged,
                              mail_from=envelope, rcpts=rcpts, received_at=when, now=when, create_thread=False)
                f = ev.findings
                row = {
                    "file": str(path), "route": ev.route.value,
                    "deliver_at": ev.plan.deliver_at.isoformat() if ev.plan.deliver_at else None,
                    "tone": f.tone.value, "flags": list(f.flags),
                    "reasons": [{"rule": r.rule, "evidence": r.evidence} for r in f.reasons],
                    "acknowledge": ev.ack is not None, "family": ev.family.key,
                    "family_count": f.family_count, "thread_count": f.thread_count, "half_term": f.half_term,
                    "language": f.language, "school": school.id, "sender_class": ev.sender_class.value,
                }
                if as_json:
                    yield json.dumps(row, ensure_ascii=False)
                else:
                    when_text = row["deliver_at"] or "now"
                    why = "; ".join(f"{r.rule}: {r.evidence}" for r in f.reasons) or "no findings"
                    yield (f"{path}: sender {row['sender_class']}, route {row['route']}, deliver {when_text}, "
                           f"tone {row['tone']}, "
                           f"acknowledge {'yes' if row['acknowledge'] else 'no (' + str(ev.ack_block) + ')'}; {why}")
            session.rollback()
    finally:
        db.close()
