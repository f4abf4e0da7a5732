"""Envelope address checks shared by the listener, triage and the relay (pure)."""

from __future__ import annotations

import pytest

from gateway.domain.addresses import envelope_problem, has_domain, reply_address
from gateway.ingest.listener import ConnectionGate, RateLimitedLog


@pytest.mark.parametrize("address, smtputf8, problem", [
    ("mum@example.com", False, None),
    ('"someone@example.com"@example.com', False, None),
    ("pärent@example.com", True, None),
    ("pärent@example.com", False, "non-ASCII address without SMTPUTF8"),
    ("p\udcff@example.com", True, "address is not valid UTF-8"),
    ("p\x00@example.com", False, "address contains control characters"),
    ("p\x1b[31m@example.com", False, "address contains control characters"),
    ("p\u2028@example.com", True, "address contains control characters"),
    ("l" * 250 + "@example.com", False, "address is too long"),
])
def test_envelope_problems_are_named_without_echoing_the_address(address, smtputf8, problem):
    assert envelope_problem(address, smtputf8=smtputf8) == problem


@pytest.mark.parametrize("sender, usable", [
    ("mum@example.com", "mum@example.com"),
    ("<mum@example.com>", "mum@example.com"),
    ("pärent@example.com", "pärent@example.com"),
    ('"someone@example.com"@example.com', '"someone@example.com"@example.com'),
    ('"a b"@example.com', '"a b"@example.com'),
    ("office@school.example.", "office@school.example"),
    ('"someone@example.com"', None),
    ("user", None),
    ("a..b@example.com", None),
    (".a@example.com", None),
    ('""@example.com', None),
    ("a@b@c.example", None),
    ("p\udcff@example.com", None),
    ("Mum <mum@example.com>", None),
    ("", None),
])
def test_a_reply_can_be_addressed_only_to_one_well_formed_mailbox(sender, usable):
    assert reply_address(sender) == usable


def test_a_quoted_at_sign_is_not_a_domain():
    assert not has_domain('"someone@example.com"')
    assert has_domain('"someone@example.com"@example.com') and has_domain("pärent@example.com")


def test_the_gate_counts_per_client_and_in_all_and_gives_places_back():
    gate = ConnectionGate(max_total=3, max_per_client=2)
    assert gate.admit("a") and gate.admit("a") and not gate.admit("a")
    assert gate.admit("b") and not gate.admit("c")
    gate.release("a")
    assert gate.admit("c") and not gate.admit("a")
    for client in ("a", "b", "c"):
        gate.release(client)
    assert gate.total == 0 and gate.per_client == {}


def test_repeated_errors_are_logged_at_most_once_per_interval_with_their_count(caplog):
    now = [100.0]
    limited = RateLimitedLog("SMTP connections not accepted", clock=lambda: now[0])
    caplog.set_level("WARNING", logger="parentgate.smtp")
    for _ in range(5000):
        limited.note("EMFILE")
        now[0] += 0.0005
    lines = [r.getMessage() for r in caplog.records]
    # 2.5 seconds of errors: the first at once, then one line a second carrying the count.
    assert len(lines) == 3
    assert lines[0] == "SMTP connections not accepted: 1 since the last report (EMFILE x1)"
    assert sum(int(line.split(": ")[1].split()[0]) for line in lines) <= 5000
    assert all(record.exc_info is None for record in caplog.records)
