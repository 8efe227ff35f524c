"""What the Kafka relay does with a send error: reject the message, or wait and try again.

A message the broker or the producer will never take (too large) is no reason to stop the
relay: it is set aside with its reason (`streams/relay_rejects.py`) and the entries after it
go out. Anything else may pass — a broker restarting, a leader moving, Redis failing over —
or may be a bug; either way the relay keeps its entries, waits (`next_delay`) and tries
again, saying in the log what it waits for. Nothing is dropped on an error it does not know.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import errors as kafka_errors

from schemas.errors import KafkaError
from streams.outages import REDIS_AWAY

#: Kafka's error codes for a record or batch larger than the broker accepts
#: (MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE), whatever client raised them.
TOO_LARGE_CODES = frozenset({10, 18})
TOO_LARGE = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.RecordTooLargeError,
)

log = logging.getLogger("streams.relay")

#: An outbox entry as read from Redis: its id and fields.
Entry = tuple[bytes, dict[bytes, bytes]]

#: The first wait after a failure; each further failure doubles it, up to the relay's ceiling.
FIRST_DELAY_S = 0.1


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it: Faust wraps the producer's errors in its own."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def refusal(exc: BaseException) -> str | None:
    """Why the message can never be sent (too large for the producer or the broker), or None."""
    for error in _chain(exc):
        if isinstance(error, TOO_LARGE) or getattr(error, "errno", None) in TOO_LARGE_CODES:
            return f"refused by Kafka: {type(error).__name__}: {error}"
    return None


def waits_for(exc: BaseException) -> str | None:
    """What a failure waits for ("the broker", "Redis"), or None for an unexpected error."""
    for error in _chain(exc):
        if isinstance(error, REDIS_AWAY):  # down, or a failover moved the slot (MOVED)
            return "Redis"
        if isinstance(error, kafka_errors.KafkaError | TimeoutError | ConnectionError):
            return "the broker"
    return None


def raise_if_cancelled() -> None:
    """Delivers a cancellation a library swallowed: on Python 3.11 `asyncio.wait_for` (used
    inside redis-py and aiokafka) can lose one that arrives as its request completes, and the
    relay would then run, or wait on a send, forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def next_delay(previous: float, ceiling: float) -> float:
    """The wait after one more failure in a row: 0.1 s, 0.2 s, 0.4 s … up to `ceiling`."""
    if previous <= 0:
        return min(FIRST_DELAY_S, ceiling)
    return min(previous * 2, ceiling)


class UnsentEntries(KafkaError):
    """Some entries of a batch were not (surely) sent; they stay pending and are retried."""

    def __init__(self, failed: list[tuple[Entry, BaseException]], of: int) -> None:
        (entry_id, fields), first = failed[0]
        topic = (fields or {}).get(b"topic", b"?").decode(errors="replace")
        error = str(first)
        if not error.startswith(type(first).__name__):
            error = f"{type(first).__name__}: {error}"
        first_id = entry_id.decode()
        super().__init__(
            f"{len(failed)} of {of} entries not sent; first {first_id} to {topic}: {error}"
        )
        self.failed = failed
        self.first = first


def log_failure(relay: str, exc: Exception, delay: float) -> None:
    """One line saying what failed, for which entry, what the relay waits for and how long."""
    cause = exc.first if isinstance(exc, UnsentEntries) else exc
    waiting = waits_for(cause)
    if waiting is None:
        log.error(
            "relay %s: unexpected error (%s); retrying in %.1f s", relay, exc, delay, exc_info=cause
        )
    else:
        log.warning("relay %s: %s; waiting for %s, retrying in %.1f s", relay, exc, waiting, delay)
