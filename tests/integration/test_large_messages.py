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


def _relay(port: int):
    from gateway.act.relay import RelayTarget, SmtpRelay
    return SmtpRelay(RelayTarget(host="127.0.0.1", port=port, hostname="gateway.test",
                                 ascii_sender="postmaster@gateway.test"))


async def test_a_large_message_streamed_over_smtputf8_arrives_byte_for_byte() -> None:
    from tests.support import Sink
    sink = Sink(smtputf8=True).start()
    relay = _relay(sink.port)
    try:
        data = big(7).replace(b"Hello, the photos", "Hello, the photos of Zoë".encode(), 1)
        outcome = await relay.send("zoë@example.com", [STAFF], data)
        assert outcome.ok, outcome
        [got] = sink.snapshot()
        assert got.data == data and got.mail_from == "zoë@example.com" and "SMTPUTF8" in got.mail_options
    finally:
        await relay.close()
        sink.stop()


async def test_a_large_message_refused_for_one_recipient_or_at_data_is_reported_like_a_small_one() -> None:
    from tests.integration.picky_sink import PickySink
    other = f"other@{STAFF.rpartition('@')[2]}"
    picky = PickySink(rcpt_replies={other: "550 5.1.1 no such user"},
                      data_replies={"blocked@example.com": "554 5.7.1 refused"}).start()
    relay = _relay(picky.port)
    try:
        partly = await relay.send("p@example.com", [STAFF, other], big(8))
        assert partly.ok and partly.refused == (other,)
        refused = await relay.send("blocked@example.com", [STAFF], big(9))
        assert not refused.ok and not refused.temporary and "554" in refused.detail
        # The connection is still good for the next message.
        assert (await relay.send("p@example.com", [STAFF], big(10))).ok
        assert len(picky.received) == 2
    finally:
        await relay.close()
        picky.stop()
