"""The retry schedule and the claim decision: pure, the clock and the dice given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from agents.delivery.retry import GiveUp, RetryLater, after_failure, backoff, claim
from schemas.delivery import Retry

POLICY = Retry(first=timedelta(seconds=2), max=timedelta(minutes=5), deadline=timedelta(hours=1))
T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


def test_the_pause_doubles_with_each_attempt_up_to_the_cap() -> None:
    ceilings = [backoff(n, POLICY, 0.999999).total_seconds() for n in range(1, 12)]
    assert [round(c) for c in ceilings[:6]] == [2, 4, 8, 16, 32, 64]
    assert max(ceilings) <= 300 and round(ceilings[-1]) == 300


@given(st.integers(min_value=1, max_value=60), st.floats(min_value=0, max_value=0.999999))
def test_full_jitter_stays_between_nothing_and_the_ceiling(attempts: int, dice: float) -> None:
    pause = backoff(attempts, POLICY, dice)
    assert timedelta(0) <= pause <= min(POLICY.max, POLICY.first * 2 ** min(attempts - 1, 40))


def test_a_failure_before_the_deadline_is_tried_again_later() -> None:
    then = after_failure(3, T0, T0 + timedelta(minutes=1), "HTTP 503", POLICY, 0.5)
    assert isinstance(then, RetryLater)
    assert then.at == T0 + timedelta(minutes=1) + timedelta(seconds=4)


def test_a_retry_that_would_fall_past_the_deadline_gives_up_with_the_last_reason() -> None:
    then = after_failure(9, T0, T0 + timedelta(minutes=59), "HTTP 503: busy", POLICY, 0.99)
    assert isinstance(then, GiveUp)
    assert "9 attempts" in then.reason and then.reason.endswith("HTTP 503: busy")


def test_a_sent_or_failed_action_read_again_is_done() -> None:
    assert claim("sent", 0, 0, 1000, retry=False) == "done"
    assert claim("failed", 0, 0, 1000, retry=True) == "done"


def test_an_action_another_process_is_sending_is_left_to_it_until_its_lease_ends() -> None:
    assert claim("sending", 5000, 0, 1000, retry=False) == "busy"
    assert claim("sending", 5000, 0, 6000, retry=True) == "send"  # the sender died


def test_a_scheduled_retry_belongs_to_the_retry_queue_not_to_a_replay() -> None:
    assert claim("retry", 0, 9000, 1000, retry=False) == "later"
    assert claim("retry", 0, 9000, 9000, retry=True) == "send"
    assert claim("new", 0, 0, 1000, retry=False) == "send"
