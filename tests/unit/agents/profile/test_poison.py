"""A batch that raises is split until the poison event is alone: exactly once, in offset order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis
from aiokafka import errors as kafka_errors
from faust.exceptions import ProducerSendError
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.profile.poison import REASON_MAX, apply_or_split, reason
from streams.outages import Backoff, outage_of


@dataclass(frozen=True)
class Msg:
    source: str
    offset: int
    poison: bool = False


class Killed(BaseException):
    """The worker died here (not an Exception: nothing in the worker catches it)."""


@dataclass
class FakeRedis:
    """What the keeper's units do to Redis, reduced to watermarks: a unit commits all or nothing
    and skips what its source's watermark already covers."""

    watermark: dict[str, int] = field(default_factory=dict)
    applied: list[Msg] = field(default_factory=list)
    dead: list[Msg] = field(default_factory=list)
    units_left: int | None = None  # the worker is killed before this many more commits

    def _commit(self) -> None:
        if self.units_left is not None:
            if self.units_left == 0:
                raise Killed
            self.units_left -= 1

    def _fresh(self, m: Msg) -> bool:
        return m.offset > self.watermark.get(m.source, -1)

    async def apply(self, part: Sequence[Msg]) -> None:
        fresh = [m for m in part if self._fresh(m)]
        if any(m.poison for m in fresh):
            raise OverflowError("date value out of range")
        self._commit()
        for m in fresh:
            self.applied.append(m)
            self.watermark[m.source] = max(m.offset, self.watermark.get(m.source, -1))

    async def dead_letter(self, m: Msg, exc: Exception) -> None:
        assert isinstance(exc, OverflowError)
        if not self._fresh(m):
            return
        self._commit()
        self.dead.append(m)
        self.watermark[m.source] = m.offset


@st.composite
def batches(draw: st.DrawFn) -> list[Msg]:
    """Messages from up to three sources, interleaved, each source in offset order."""
    sources = draw(st.lists(st.sampled_from("abc"), min_size=0, max_size=60))
    poison = draw(st.lists(st.booleans(), min_size=len(sources), max_size=len(sources)))
    next_offset: dict[str, int] = {}
    out = []
    for source, bad in zip(sources, poison, strict=True):
        offset = next_offset.get(source, 0) + draw(st.integers(0, 2))  # gaps happen in Kafka
        next_offset[source] = offset + 1
        out.append(Msg(source, offset, bad and draw(st.integers(0, 3)) == 0))
    return out


@given(batches())
def test_every_good_event_is_applied_once_in_order_and_every_poison_dead_lettered_once(batch):
    store = FakeRedis()
    poisoned = asyncio.run(apply_or_split(batch, store.apply, store.dead_letter))
    assert store.applied == [m for m in batch if not m.poison]
    assert store.dead == poisoned == [m for m in batch if m.poison]


@settings(max_examples=300)
@given(batches(), st.integers(0, 40))
def test_a_worker_killed_during_the_split_loses_nothing_and_does_nothing_twice(batch, kill_after):
    store = FakeRedis(units_left=kill_after)
    try:
        asyncio.run(apply_or_split(batch, store.apply, store.dead_letter))
    except Killed:
        pass
    store.units_left = None
    asyncio.run(apply_or_split(batch, store.apply, store.dead_letter))  # the batch read again
    assert store.applied == [m for m in batch if not m.poison]
    assert store.dead == [m for m in batch if m.poison]


def test_a_batch_without_poison_is_one_unit():
    units: list[list[int]] = []

    async def apply(part: Sequence[int]) -> None:
        units.append(list(part))

    async def dead_letter(item: int, exc: Exception) -> None:
        raise AssertionError("nothing to dead-letter")

    assert asyncio.run(apply_or_split(range(100), apply, dead_letter)) == []
    assert units == [list(range(100))]


def test_one_poison_among_a_thousand_costs_a_logarithmic_number_of_units():
    tries: list[int] = []

    async def apply(part: Sequence[int]) -> None:
        tries.append(len(part))
        if 997 in part:
            raise ValueError("bad")

    async def dead_letter(item: int, exc: Exception) -> None:
        assert str(exc) == "bad"

    assert asyncio.run(apply_or_split(range(1000), apply, dead_letter)) == [997]
    assert len(tries) <= 2 * 11


def test_the_reason_names_the_exception_on_one_bounded_line():
    assert reason(OverflowError("date value out of range")) == (
        "OverflowError: date value out of range"
    )
    long = reason(ValueError("x\n" * 5000))
    assert len(long) == REASON_MAX and "\n" not in long and long.startswith("ValueError: x")


def test_an_unreachable_redis_or_broker_is_an_outage_and_a_bug_is_not():
    assert outage_of(redis.ConnectionError("refused")) == "Redis"
    assert outage_of(redis.exceptions.BusyLoadingError("loading")) == "Redis"
    assert outage_of(redis.exceptions.ReadOnlyError("READONLY")) == "Redis"
    assert outage_of(redis.ResponseError("WRONGTYPE")) is None
    try:
        raise ProducerSendError("Error while sending") from kafka_errors.KafkaConnectionError()
    except ProducerSendError as wrapped:
        assert outage_of(wrapped) == "Kafka"
    assert outage_of(kafka_errors.MessageSizeTooLargeError()) is None
    assert outage_of(OverflowError("date value out of range")) is None


def test_waits_double_up_to_the_cap_and_start_over_after_a_success():
    backoff = Backoff(first=0.1, cap=0.5)
    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next() == 0.1
