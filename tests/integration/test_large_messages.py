"""Large messages travel by reference: claims leave their bytes in the database, judges read them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.clock import FixedClock
from gateway.ingest.inbox import Incoming, insert_received
from gateway.store.database import Database
from gateway.store.raws import LARGE, StoredRaw
from gateway.triage.rules import default_rules_dir, load_rules
from gateway.workers.evaluate import judge
from gateway.workers.judging import JudgePool
from tests.conftest import utc
from tests.support import STAFF, InProcessGateway, message, wire, write_config

NOW = utc(2026, 11, 24, 10, 0)


def big(i: int) -> bytes:
    return wire(message(subject=f"Trip photos {i}", body="Hello, the photos from the trip.\n" + "x" * 76 * 20000,
                        msgid=f"<big-{i}@parent.example>"))


@pytest.mark.timeout(180)
def test_a_judge_process_reads_a_large_message_from_the_database(database_url: str) -> None:
    db = Database(database_url)
    rules = load_rules(default_rules_dir())
    pool = JudgePool(default_rules_dir(), workers=1, database_url=database_url)
    try:
        raw = big(0)
        assert len(raw) > LARGE
        [mid] = db.transact(lambda s: insert_received(s, [Incoming(raw=raw, mail_from="p@example.com",
                                                                   rcpt_tos=(STAFF,), school="oakfield")],
                                                      FixedClock(NOW), "test"))
        small = wire(message())
        results = asyncio.run(pool.judge_all([small, StoredRaw(mid)], rules))
        assert results == [judge(small, rules), judge(raw, rules)]
    finally:
        pool.close()
        db.close()


@pytest.mark.timeout(180)
async def test_large_messages_are_triaged_and_delivered_intact(tmp_path: Path, sink, database_url: str) -> None:
    cfg = write_config(tmp_path, sink_port=sink.port, database=database_url, max_size=4 * 1024 * 1024,
                       extra="[acknowledge]\nenabled = false\n")
    gw = await InProcessGateway(cfg, FixedClock(NOW)).start()
    try:
        raws = [big(i) for i in range(3)] + [wire(message(sender=f"P <p{i}@example.com>", subject=f"Note {i}"))
                                            for i in range(3)]
        codes = await asyncio.gather(*(gw.send(raw, mail_from=f"p{i}@example.com") for i, raw in enumerate(raws)))
        assert [code for code, _ in codes] == [250] * 6
        await gw.settle()
        assert {row.state for row in gw.messages()} == {"delivered"}
        delivered = sorted(r.data for r in sink.to(STAFF))
        assert len(delivered) == 6
        for raw in raws:
            assert any(d.endswith(raw) for d in delivered)
    finally:
        await gw.stop()
