"""When to try an action again, and whether to try at all: pure, the clock and the dice passed in.

attempt 1 fails at t0 -> next try after uniform(0, first)            (full jitter)
attempt n fails       -> next try after uniform(0, min(max, first * 2^(n-1)))
past first_try + deadline -> give up: `ecrm.delivery-failures` with the last reason
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from schemas.delivery import Retry

#: what the delivery record says of an action (agents/delivery/records.py)
RecordStatus = Literal["new", "sending", "retry", "sent", "failed"]


def backoff(attempts: int, policy: Retry, dice: float) -> timedelta:
    """The pause after the `attempts`-th failed attempt; `dice` in [0, 1) draws the jitter
    (AWS's "full jitter": retries of many actions spread out instead of stampeding)."""
    doublings = min(max(attempts - 1, 0), 40)  # past 2^40 every ceiling is `max` anyway
    ceiling = min(policy.max, policy.first * (2**doublings))
    return ceiling * dice


@dataclass(frozen=True)
class RetryLater:
    at: datetime


@dataclass(frozen=True)
class GiveUp:
    reason: str


def after_failure(
    attempts: int, first_try: datetime, now: datetime, reason: str, policy: Retry, dice: float
) -> RetryLater | GiveUp:
    """What follows a retryable failure of attempt `attempts`: a later try before the
    deadline, or giving up with the reason."""
    at = now + backoff(attempts, policy, dice)
    if at > first_try + policy.deadline:
        return GiveUp(f"not sent after {attempts} attempts within {policy.deadline}: {reason}")
    return RetryLater(at)


Claim = Literal["send", "done", "busy", "later"]


def claim(
    status: RecordStatus, lease_until_ms: int, next_try_ms: int, now_ms: int, retry: bool
) -> Claim:
    """Whether this process may send an action now, from its delivery record (the same
    decision the claim script in records.py makes atomically in Redis):

    - `done`: sent or failed before (a replayed or duplicate action): nothing to do;
    - `busy`: another process holds the lease (sending it now, or died doing so: the retry
      queue gives it back when the lease ends);
    - `later`: a retry is scheduled and this is the action read again from Kafka: the
      retry queue owns it;
    - `send`: take the lease and send.
    """
    if status in ("sent", "failed"):
        return "done"
    if lease_until_ms > now_ms:
        return "busy"
    if not retry and status == "retry" and next_try_ms > now_ms:
        return "later"
    return "send"
