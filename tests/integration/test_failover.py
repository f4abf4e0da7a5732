"""Two gateways share one PostgreSQL database; one is SIGKILLed and not restarted.

The survivor takes over the dead one's leased rows (triage batches claimed, outbox rows handed over
or in flight) once their short leases lapse: all the mail the dead one accepted is delivered within
30 s of the kill, and none twice.
"""

from __future__ import annotations

import time

import pytest

from gateway import config as config_mod
from gateway.app import lease_owner
from tests.integration.crashkit import CONFIG_EXTRA, Daemon, Recorded, Senders, TimedSink, wait_until
from tests.support import free_port, write_config

TAKEOVER = 30.0  # seconds, the bound


@pytest.mark.timeout(240)
def test_the_survivor_delivers_a_dead_gateways_mail_within_30_s_and_none_twice(tmp_path, pg_url):
    sink = TimedSink().start()
    ports = free_port(), free_port()
    daemons = [Daemon(write_config(tmp_path / name, smtp_port=port, sink_port=sink.port, database=pg_url,
                                   retry_first="1s", extra=CONFIG_EXTRA), port, tmp_path / f"{name}.log")
               for name, port in zip(("doomed", "survivor"), ports)]
    doomed, survivor = daemons
    recorded = Recorded(pg_url)
    doomed.start()
    survivor.start()
    senders = Senders(doomed.port, 400, threads=6, label="failover")
    try:
        senders.wait_for(150)
        # The downstream stops answering: the doomed gateway's deliveries stay in flight (leased to
        # it, the 250 never given), as do the rows it handed over and the batches it claimed. Then it
        # dies. The held deliveries are refused afterwards, so none of them reached the downstream.
        sink.hold.set()
        assert wait_until(lambda: sink.holding > 0, 30), "no delivery was in flight"
        time.sleep(0.5)
        orphans = doomed.kill_main()
        killed_at = time.monotonic()
        senders.stopped.set()
        accepted = senders.join()
        sink.hold.clear()
        leased = recorded.leased_to(lease_owner(config_mod.load(doomed.config)))
        assert wait_until(lambda: set(accepted) <= sink.message_ids(), TAKEOVER + 30, step=0.05)
        took = time.monotonic() - killed_at
        duplicates = sum(n - 1 for n in sink.deliveries().values() if n > 1)
        print(f"\nfailover: {len(accepted)} accepted by the gateway that died; {leased} rows leased to it at the "
              f"kill; all delivered by the survivor {took:.1f} s after the kill; duplicates {duplicates}")
        assert leased > 0, "the kill should leave rows leased to the dead gateway"
        assert took <= TAKEOVER
        assert duplicates == 0
        assert orphans == []
        assert wait_until(lambda: recorded.sent() >= set(sink.deliveries()), 10)
    finally:
        senders.stopped.set()
        sink.hold.clear()
        for daemon in daemons:
            daemon.stop()
        recorded.close()
        sink.stop()
