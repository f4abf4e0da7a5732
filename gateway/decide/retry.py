"""When to try a failed delivery again: capped exponential backoff until the lifetime is over. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: timedelta
    max_delay: timedelta
    lifetime: timedelta


def next_attempt(first_try: datetime, attempts: int, now: datetime, policy: RetryPolicy) -> datetime | None:
    """When to retry, or None once the message has outlived policy.lifetime (then it fails, with a notice)."""
    if now - first_try >= policy.lifetime:
        return None
    delay = min(policy.first_delay * (1 << min(max(attempts - 1, 0), 32)), policy.max_delay)
    return min(now + delay, first_try + policy.lifetime)
