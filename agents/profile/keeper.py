"""The profile agent: storefront events in, live profiles in Redis, segment changes out.

A thin loop around the pure fold. Each batch is one atomic step in Redis (see
streams/redis_store.py): profiles, the source offsets, the ClickHouse outbox and the Kafka
outbox move together, so a killed worker neither loses nor double-applies an event. A batch
that raises is split until the event that makes it raise is alone, and that event is
dead-lettered (agents/profile/poison.py); an outage is waited out (streams/outages.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from agents.customer_step import Customer, Step, StepContext, on_clock, on_event
from agents.profile.fold import RfmPolicy
from agents.profile.poison import apply_or_split, reason
from agents.profile.rows import event_row, profile_row, segment_change_row
from agents.rules.book import RulesBook
from agents.rules.contact_policy import BudgetBook
from agents.rules.shell import MarketingStep
from agents.rules.state import CustomerRuleState
from schemas.events import EVENT_BY_TOPIC, Event
from schemas.outputs import DeadLetter, SegmentChange
from schemas.profile import Profile, empty_profile
from streams import keyspace
from streams.app import INPUT_TOPICS, EcrmApp
from streams.outages import until_committed
from streams.outbox import clickhouse_entry, kafka_message
from streams.redis_store import Unit, UnitConflict
from streams.settings import Settings

log = logging.getLogger(__name__)


def messages_handled(client: Any) -> int:
    """Input messages the workers have dealt with: applied, duplicate or dead-lettered
    (`client` is a synchronous Redis client; for progress bars and tests)."""
    counts = client.hmget(keyspace.STATS, ["events", "duplicates", "dead_letters"])
    return sum(int(v or 0) for v in counts)


def rfm_policy(settings: Settings) -> RfmPolicy:
    """The shop's RFM policy as the operator configured it."""
    return RfmPolicy(
        window_days=settings.rfm_window_days,
        r_high_days=settings.r_high_days,
        f_high_orders=settings.f_high_orders,
        m_high_amount=settings.m_high_amount,
    )


@dataclass
class Incoming:
    """One consumed message, decoded or refused."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    event: Event | None = None
    error: str | None = None


def decode(topic: str, kind: str, partition: int, offset: int, key: Any, value: Any) -> Incoming:
    raw = value if isinstance(value, bytes) else (b"" if value is None else str(value).encode())
    item = Incoming(topic, partition, offset, key if isinstance(key, bytes) else None, raw)
    model = EVENT_BY_TOPIC.get(kind)
    if model is None:
        item.error = f"no event is defined for topic {topic!r}"
        return item
    try:
        item.event = model.model_validate_json(raw)
    except ValidationError as exc:
        item.error = _reason(exc)
    return item


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


@dataclass
class ProfileKeeper:
    """Applies batches of events and clock sweeps to the profiles, one Redis step each."""

    app: EcrmApp
    rules: RulesBook | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: partition -> latest event time applied, and when (monotonic) events last arrived
    stream_time: dict[int, datetime] = field(default_factory=dict)
    last_seen: dict[int, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    #: (topic, partition) -> the highest offset this worker has been handed
    read: dict[tuple[str, int], int] = field(default_factory=dict)
    #: (topic, partition) -> the broker's end offset as the consumer last saw it (None when
    #: unknown); set by the worker. Without it, a partition counts as caught up once no
    #: event has come for a second.
    highwater: Callable[[str, int], int | None] | None = None

    def clock_for(self, partition: int, now: datetime, idle_s: float = 1.0) -> datetime:
        """The time timers of a partition may act on. Live, that is the wall clock; while
        a backlog is being read it is the backlog's event time, so a cart added an hour ago
        is not declared abandoned before the order that followed it has been read."""
        if not self._behind(partition, idle_s):
            return now
        seen = self.stream_time.get(partition)
        return now if seen is None or seen >= now else seen

    def _behind(self, partition: int, idle_s: float) -> bool:
        if self.highwater is None:
            return time.monotonic() - self.last_seen.get(partition, self.started) < idle_s
        for name in INPUT_TOPICS:
            topic = self.app.settings.topic(name)
            read, end = self.read.get((topic, partition)), self.highwater(topic, partition)
            if read is not None and end is not None and read + 1 < end:
                return True
        return False

    def _saw(self, partition: int, when: datetime) -> None:
        self.last_seen[partition] = time.monotonic()
        if when > self.stream_time.get(partition, when - timedelta(seconds=1)):
            self.stream_time[partition] = when

    @cached_property
    def policy(self) -> RfmPolicy:
        """Built once: the settings are frozen, and this is read for every event."""
        return rfm_policy(self.app.settings)

    async def apply(self, items: Sequence[Incoming], now: datetime | None = None) -> None:
        """Apply a batch exactly once. An event that makes it raise is dead-lettered and the
        rest applied (agents/profile/poison.py); an outage or a conflict is waited out and
        the same work redone, so this returns only once every item is applied or refused."""
        async with self.lock:

            async def apply_part(part: Sequence[Incoming]) -> None:
                await until_committed(lambda: self._apply_once(part, now or datetime.now(UTC)))

            async def refuse(item: Incoming, exc: Exception) -> None:
                log.error(
                    "dead-lettering %s[%d]@%d: applying it raised %s",
                    item.topic,
                    item.partition,
                    item.offset,
                    reason(exc),
                    exc_info=exc,
                )
                await until_committed(
                    lambda: self._dead_letter_poison(item, reason(exc), now or datetime.now(UTC))
                )

            await apply_or_split(items, apply_part, refuse)

    async def _dead_letter_poison(self, item: Incoming, error: str, now: datetime) -> None:
        """The event's dead letter and its partition's watermark, in one unit of their own."""
        async with self.app.store.unit([], [(item.topic, item.partition)]) as unit:
            if unit.applied(item.topic, item.partition, item.offset):
                return  # committed before a crash or a conflict: once is enough
            unit.advance(item.topic, item.partition, item.offset)
            batch = _Batch(self, unit, None)
            batch.dead_letter(item, now, error=error)
            batch.stats["poison"] += 1
            batch.finish()

    async def _apply_once(self, items: Sequence[Incoming], now: datetime) -> None:
        store = self.app.store
        by_customer: dict[str, list[Incoming]] = defaultdict(list)
        for item in items:
            if item.event is not None:
                by_customer[item.event.customer_id].append(item)
        sources = {(i.topic, i.partition) for i in items}
        rules = self.rules.rules if self.rules is not None else None
        raw_keys = MarketingStep.keys(rules, list(by_customer), now) if rules else []
        async with store.unit([c.encode() for c in by_customer], sources, raw_keys) as unit:
            batch = _Batch(self, unit, MarketingStep.begin(rules, unit, now) if rules else None)
            fresh = [i for i in items if not unit.applied(i.topic, i.partition, i.offset)]
            batch.stats["batches"] = 1 if fresh else 0
            for item in items:
                key = (item.topic, item.partition)
                self.read[key] = max(item.offset, self.read.get(key, -1))
            for item in fresh:
                unit.advance(item.topic, item.partition, item.offset)
                if item.event is not None:
                    self._saw(item.partition, item.event.ts)
                if item.error is not None:
                    batch.dead_letter(item, now)
            fresh_ids = {id(i) for i in fresh}
            for customer_id, mine in by_customer.items():
                mine = [i for i in mine if id(i) in fresh_ids]
                if not mine:
                    continue
                where = {id(i.event): i for i in mine}
                customer = batch.customer(customer_id)
                step = on_event(customer, [i.event for i in mine if i.event], now, batch.ctx)
                batch.took(step, mine[0].partition)
                for event in step.applied:
                    item = where[id(event)]
                    batch.event_rows.append(
                        event_row(
                            event,
                            topic=item.topic,
                            partition=item.partition,
                            offset=item.offset,
                            now=now,
                        )
                    )
            batch.finish()

    async def sweep(self, partitions: Iterable[int], now: datetime | None = None) -> int:
        """Re-rate due customers (time moved their segment, a rule's timer or a deferred
        action is due); returns how many segment changes time caused."""
        total = 0
        for partition in partitions:
            async with self.lock:
                wall = now or datetime.now(UTC)
                clock = now or self.clock_for(partition, wall)
                total += await self._sweep_partition(partition, wall, clock)
        return total

    async def _sweep_partition(
        self, partition: int, now: datetime, clock: datetime, limit: int = 1000
    ) -> int:
        """`now` (wall) rates R, F and M; `clock` (held back while a backlog is read, see
        `clock_for`) decides which customers are due and what the rules' timers see."""
        store = self.app.store
        due = await store.client.zrangebyscore(
            keyspace.due(partition), "-inf", _ms(clock), start=0, num=limit
        )
        if not due:
            return 0
        customers = [raw.decode() for raw in due]
        rules = self.rules.rules if self.rules is not None else None
        raw_keys = MarketingStep.keys(rules, customers, clock) if rules else []
        try:
            async with store.unit(due, (), raw_keys) as unit:
                batch = _Batch(
                    self, unit, MarketingStep.begin(rules, unit, clock) if rules else None
                )
                for customer_id in customers:
                    step = on_clock(batch.customer(customer_id), clock, batch.ctx, rated_at=now)
                    batch.took(step, partition)
                batch.finish()
        except UnitConflict:
            return 0  # someone else touched these customers; the next sweep sees fresh data
        return len(batch.changes)

    def load(self, customer_id: str) -> Profile:
        """The customer's profile as the open unit read it (a new one if none is stored)."""
        raw = self.app.profiles.get(customer_id.encode())
        return Profile.model_validate_json(raw) if raw else empty_profile(customer_id)


@dataclass
class _Batch:
    """What one unit (a batch of events or a sweep) collects for its commit."""

    keeper: ProfileKeeper
    unit: Unit
    marketing: MarketingStep | None
    stats: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    event_rows: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    changes: list[SegmentChange] = field(default_factory=list)

    @cached_property
    def ctx(self) -> StepContext:
        m = self.marketing
        return StepContext(
            self.keeper.policy, m.rules if m else None, m.budget if m else BudgetBook()
        )

    def customer(self, customer_id: str) -> Customer:
        m = self.marketing
        rules = m.state(customer_id) if m else CustomerRuleState(customer_id=customer_id)
        return Customer(self.keeper.load(customer_id), rules)

    def took(self, step: Step, partition: int) -> None:
        """Keep what a customer step did: the profile, rule state, changes, wake-up."""
        profile = step.customer.profile
        self.stats["duplicates"] += len(step.duplicates)
        self.stats["events"] += len(step.applied)
        self.changes.extend(step.changes)
        if self.marketing is not None:
            self.marketing.took(step.customer.rules, step.rules_changed, step.decisions)
        self.keeper.app.profiles[profile.customer_id.encode()] = profile.model_dump_json().encode()
        self.snapshots.append(profile_row(profile))
        due = keyspace.due(partition)
        if step.wake is None:
            self.unit.zrem(due, profile.customer_id)
        else:
            self.unit.zadd(due, profile.customer_id, _ms(step.wake))

    def dead_letter(self, item: Incoming, now: datetime, error: str | None = None) -> None:
        letter = DeadLetter.of(
            topic=item.topic,
            partition=item.partition,
            offset=item.offset,
            key=item.key,
            value=item.value,
            error=error or item.error or "invalid",
            at=now,
        )
        topic = self.keeper.app.settings.topic("dead-letter")
        self.unit.add(kafka_message(topic, item.key, letter.model_dump_json().encode()))
        self.stats["dead_letters"] += 1

    def finish(self) -> None:
        """Queue the rules' effects, the ClickHouse rows, the Kafka messages and counters."""
        settings = self.keeper.app.settings
        unit = self.unit
        if self.marketing is not None:
            self.marketing.finish(settings.topic("actions"))
        if self.snapshots:
            unit.add(clickhouse_entry("profile_snapshots", self.snapshots))
        if self.event_rows:
            unit.add(clickhouse_entry("events", self.event_rows))
        if self.changes:
            unit.add(
                clickhouse_entry("segment_changes", [segment_change_row(c) for c in self.changes])
            )
            topic = settings.topic("segment-changes")
            for change in self.changes:
                unit.add(kafka_message(topic, change.customer_id, change.to_json()))
            self.stats["segment_changes"] = len(self.changes)
        for name, n in self.stats.items():
            if n:
                unit.hincrby(keyspace.STATS, name, n)
        if self.stats.get("events"):
            unit.hincrby(keyspace.worker_stats(os.getpid()), "events", self.stats["events"])


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
