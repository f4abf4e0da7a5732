"""Sign-in links on both backends: stored as hashes, single use, valid for link_minutes; the signing key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from gateway import services
from gateway.app import build_runtime, load_config
from gateway.clock import FixedClock
from gateway.store.console import ConsoleLinkRow, peek_link
from gateway.web.security import new_token, token_hash
from tests.conftest import utc
from tests.support import HEAD, write_config


def runtime(tmp_path: Path, database_url: str, clock: FixedClock):  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path, database=database_url,
                       extra='[console]\nlisten = "127.0.0.1:8025"\nbase_url = "https://console.test"\nlink_minutes = 15\n')
    config, rules = load_config(cfg)
    return build_runtime(config, rules, clock=clock)


def test_a_link_is_kept_as_a_hash_works_once_and_expires_after_link_minutes(tmp_path: Path, database_url: str):
    clock = FixedClock(utc(2026, 12, 3, 10, 0))
    rt = runtime(tmp_path, database_url, clock)
    try:
        first, second = new_token(), new_token()
        services.console_add_link(rt, token_hash(first), HEAD, 15)
        services.console_add_link(rt, token_hash(second), HEAD, 15)
        stored = rt.db.transact(lambda s: list(s.scalars(select(ConsoleLinkRow.token_hash))))
        assert first not in " ".join(stored) and token_hash(first) in stored
        # Looking does not spend it; using it does, once.
        assert rt.db.transact(lambda s: peek_link(s, token_hash(first), clock.now())) == HEAD
        assert services.console_use_link(rt, token_hash(first)) == HEAD
        assert services.console_use_link(rt, token_hash(first)) is None
        assert services.console_use_link(rt, token_hash(new_token())) is None
        # Fifteen minutes on, the unused one has expired.
        clock.advance(timedelta(minutes=15))
        assert rt.db.transact(lambda s: peek_link(s, token_hash(second), clock.now())) is None
        assert services.console_use_link(rt, token_hash(second)) is None
    finally:
        rt.db.close()


def test_the_session_signing_key_is_made_once_and_shared(tmp_path: Path, database_url: str):
    clock = FixedClock(utc(2026, 12, 3, 10, 0))
    rt = runtime(tmp_path, database_url, clock)
    try:
        key = services.console_signing_key(rt)
        assert len(key) >= 48 and services.console_signing_key(rt) == key
    finally:
        rt.db.close()


def test_queries_are_scoped_to_the_schools_given_on_both_backends(tmp_path: Path, database_url: str):
    from sqlalchemy import insert

    from gateway.store.console import message_view, messages_in, related
    from gateway.store.models import MessageRow
    clock = FixedClock(utc(2026, 12, 3, 10, 0))
    rt = runtime(tmp_path, database_url, clock)
    try:
        def row(school: str, state: str, n: int) -> dict[str, object]:
            raw = f"Subject: s{n}\r\nFrom: p@parent.example\r\n\r\n{'x' * 20000}".encode()
            return dict(school=school, source="smtp", mail_from="p@parent.example", rcpt_tos=["t@x.example"],
                        raw=raw, size=len(raw), sha256="0" * 64, state=state, received_at=clock.now(),
                        updated_at=clock.now(), reasons=[{"rule": "insult-to-staff", "evidence": "e"}],
                        family="p@parent.example", half_term="h", counted=1, claims=0)
        rt.db.transact(lambda s: s.execute(insert(MessageRow), [
            row("oakfield", "in_review", 1), row("other", "in_review", 2), row("oakfield", "delivered", 3),
            row("oakfield", "in_review", 4)]))
        ours = frozenset({"oakfield"})
        items = rt.db.transact(lambda s: messages_in(s, ours, "in_review"))
        assert [i.head.decode()[:10] for i in items] == ["Subject: s", "Subject: s"]
        assert [i.id for i in items] == [4, 1] and all(len(i.head) <= 16384 for i in items)
        assert rt.db.transact(lambda s: messages_in(s, ours, "in_review", reason="insult-to-staff", before=4))[0].id == 1
        assert rt.db.transact(lambda s: messages_in(s, ours, "in_review", reason="threat")) == []
        assert rt.db.transact(lambda s: messages_in(s, ours, "in_review", school="other")) == []
        assert rt.db.transact(lambda s: message_view(s, ours, 2)) is None
        view = rt.db.transact(lambda s: message_view(s, ours, 1))
        assert view is not None and len(view.raw) > 20000
        family, _thread = rt.db.transact(lambda s: related(s, view))
        assert [r.id for r in family] == [1, 3, 4]
    finally:
        rt.db.close()
