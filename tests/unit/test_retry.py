"""Backoff for deferred deliveries: doubling delays, capped, until the lifetime is over. Pure."""

from __future__ import annotations

from datetime import timedelta

from gateway.decide.retry import RetryPolicy, next_attempt
from tests.conftest import utc

POLICY = RetryPolicy(first_delay=timedelta(minutes=5), max_delay=timedelta(hours=4), lifetime=timedelta(days=5))
T0 = utc(2026, 11, 24, 10, 0)


def test_delays_double_from_the_first_delay_up_to_the_cap():
    delays = [next_attempt(T0, n, T0, POLICY) - T0 for n in range(1, 9)]
    assert delays[:4] == [timedelta(minutes=5), timedelta(minutes=10), timedelta(minutes=20), timedelta(minutes=40)]
    assert delays[-1] == timedelta(hours=4)
    assert max(delays) == timedelta(hours=4)


def test_no_retry_once_the_lifetime_is_over_and_never_past_it():
    assert next_attempt(T0, 3, T0 + timedelta(days=5), POLICY) is None
    late = T0 + timedelta(days=4, hours=23)
    assert next_attempt(T0, 40, late, POLICY) == T0 + timedelta(days=5)


def test_huge_attempt_counts_do_not_overflow():
    assert next_attempt(T0, 10_000, T0, POLICY) == T0 + timedelta(hours=4)
