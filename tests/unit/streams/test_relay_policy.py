"""The Kafka relay's pure decisions: which send errors reject a message and which wait, how
long it waits, and the marks that tell an heir where a gone relay may have sent its entries."""

from __future__ import annotations

import redis
from aiokafka import errors as kafka_errors
from faust.exceptions import ProducerSendError
from hypothesis import given
from hypothesis import strategies as st

from streams.relay_errors import next_delay, refusal, waits_for
from streams.relay_takeover import advance_marks, decode_marks, encode_marks, merge_marks

topics = st.sampled_from(["ecrm.actions", "ecrm.segment-changes", "ecrm.dead-letter"])
offsets = st.integers(min_value=0, max_value=10**9)
marks = st.dictionaries(topics, st.dictionaries(st.integers(0, 7), offsets, max_size=4))


def start(m: dict[str, dict[int, int]], topic: str, partition: int) -> int | None:
    """Where a search for `topic`/`partition` begins: None = not searched (never sent there)."""
    if topic not in m:
        return None
    return m[topic].get(partition, 0)


def test_a_message_the_broker_finds_too_large_is_refused_not_retried():
    assert refusal(kafka_errors.MessageSizeTooLargeError()) is not None
    assert refusal(kafka_errors.RecordListTooLargeError()) is not None
    assert refusal(kafka_errors.KafkaConnectionError()) is None
    assert refusal(kafka_errors.NotLeaderForPartitionError()) is None


def test_a_too_large_message_is_recognised_behind_fausts_wrapper():
    try:
        try:
            raise kafka_errors.MessageSizeTooLargeError("The message is 2000000 bytes")
        except kafka_errors.KafkaError as exc:
            raise ProducerSendError(f"Error while sending: {exc!r}") from exc
    except ProducerSendError as wrapped:
        reason = refusal(wrapped)
    assert reason is not None and "MessageSizeTooLargeError" in reason


def test_transient_errors_say_what_the_relay_waits_for():
    assert waits_for(kafka_errors.KafkaConnectionError()) == "the broker"
    assert waits_for(kafka_errors.NotLeaderForPartitionError()) == "the broker"
    assert waits_for(kafka_errors.KafkaTimeoutError()) == "the broker"
    assert waits_for(TimeoutError()) == "the broker"
    assert waits_for(redis.ConnectionError("refused")) == "Redis"
    assert waits_for(ValueError("a bug")) is None


@given(st.integers(min_value=0, max_value=60), st.floats(min_value=0.1, max_value=120))
def test_waits_double_after_each_failure_and_never_pass_the_ceiling(failures, ceiling):
    delay, delays = 0.0, []
    for _ in range(failures):
        delay = next_delay(delay, ceiling)
        delays.append(delay)
    assert all(0 < d <= ceiling for d in delays)
    assert all(b == min(a * 2, ceiling) for a, b in zip(delays, delays[1:], strict=False))


@given(marks, marks, topics, st.integers(0, 7))
def test_merged_marks_search_from_the_lower_of_both_relays_marks(mine, theirs, topic, p):
    merged = merge_marks(mine, theirs)
    starts = [s for s in (start(mine, topic, p), start(theirs, topic, p)) if s is not None]
    assert start(merged, topic, p) == (min(starts) if starts else None)


@given(marks, st.dictionaries(st.tuples(topics, st.integers(0, 7)), offsets, max_size=6))
def test_advanced_marks_pass_what_was_produced_and_never_go_back(m, produced):
    advanced = advance_marks(m, produced)
    for (topic, p), offset in produced.items():
        assert start(advanced, topic, p) == max(offset + 1, start(m, topic, p) or 0)
    for topic, parts in m.items():
        for p in parts:
            assert start(advanced, topic, p) >= start(m, topic, p)


@given(marks)
def test_marks_survive_the_trip_through_a_redis_hash(m):
    stored = {k.encode(): str(v).encode() for k, v in encode_marks(m).items()}
    assert decode_marks(stored) == m
