"""The profile agent: storefront events in, live profiles in Redis, segment changes out.

A thin loop around the pure fold. Each batch is one atomic step in Redis (see
streams/redis_store.py): profiles, the source offsets, the ClickHouse outbox and the Kafka
outbox move together, so a killed worker neither loses nor double-applies an event.
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

from agents.event_rows import event_row, profile_row, segment_change_row
from agents.marketing import MarketingStep, RulesBook
from agents.profile_fold import RfmPolicy, apply_event, next_time_change, rerate
from schemas.events import EVENT_BY_TOPIC, TIME_WINDOW, Event, TimeWindow
from schemas.outputs import DeadLetter, SegmentChange, bounded_key
from schemas.profile import Profile, empty_profile
from streams.app import INPUT_TOPICS, EcrmApp
from streams.outbox import clickhouse_entry
from streams.redis_store import KEY_PREFIX, Unit, UnitConflict
from streams.relay import KAFKA_OUTBOX, kafka_entry
from streams.settings import Settings

log = logging.getLogger(__name__)

STATS_KEY = f"{KEY_PREFIX}stats"
#: Per-process counters, so operators (and tests) see how work is shared between workers.
WORKER_STATS_KEY = f"{KEY_PREFIX}stats:worker:{os.getpid()}"
MAX_CONFLICT_RETRIES = 20


def messages_handled(client: Any) -> int:
    """Input messages the workers have dealt with: applied, duplicate or dead-lettered
    (`client` is a synchronous Redis client; for progress bars and tests)."""
    counts = client.hmget(STATS_KEY, ["events", "duplicates", "dead_letters"])
    return sum(int(v or 0) for v in counts)


def due_key(partition: int) -> str:
    """Sorted set of customers of one partition, scored by when time next matters to them."""
    return f"{KEY_PREFIX}due:{partition}"


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


def decode(
    topic: str,
    kind: str,
    partition: int,
    offset: int,
    key: Any,
    value: Any,
    window: TimeWindow | None = None,
) -> Incoming:
    """One message read and validated; `window` (from the caller's clock, see
    `Settings.time_window`) refuses event times that make no sense."""
    raw = value if isinstance(value, bytes) else (b"" if value is None else str(value).encode())
    item = Incoming(topic, partition, offset, key if isinstance(key, bytes) else None, raw)
    model = EVENT_BY_TOPIC.get(kind)
    if model is None:
        item.error = f"no event is defined for topic {topic!r}"
        return item
    try:
        item.event = model.model_validate_json(raw, context={TIME_WINDOW: window})
    except ValidationError as exc:
        item.error = _reason(exc)
    return item


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
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
    _snapshots: list[dict[str, Any]] = field(default_factory=list)

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
        async with self.lock:
            for attempt in range(MAX_CONFLICT_RETRIES):
                try:
                    await self._apply_once(items, now or datetime.now(UTC))
                    return
                except UnitConflict:
                    log.warning("batch conflicted with another writer; redoing (%d)", attempt + 1)
                    await asyncio.sleep(0.05 * (attempt + 1))
            raise UnitConflict("batch kept conflicting with another writer")

    async def _apply_once(self, items: Sequence[Incoming], now: datetime) -> None:
        store = self.app.store
        self._snapshots = []  # a conflicted attempt leaves nothing behind
        by_customer: dict[str, list[Incoming]] = defaultdict(list)
        for item in items:
            if item.event is not None:
                by_customer[item.event.customer_id].append(item)
        sources = {(i.topic, i.partition) for i in items}
        rules = self.rules.rules if self.rules is not None else None
        raw_keys = MarketingStep.keys(rules, list(by_customer), now) if rules else []
        async with store.unit([c.encode() for c in by_customer], sources, raw_keys) as unit:
            step = MarketingStep.begin(rules, unit, now) if rules else None
            fresh = [i for i in items if not unit.applied(i.topic, i.partition, i.offset)]
            stats: dict[str, int] = defaultdict(int)
            stats["batches"] = 1 if fresh else 0
            event_rows: list[dict[str, Any]] = []
            changes: list[SegmentChange] = []
            for item in items:
                key = (item.topic, item.partition)
                self.read[key] = max(item.offset, self.read.get(key, -1))
            for item in fresh:
                unit.advance(item.topic, item.partition, item.offset)
                if item.event is not None:
                    self._saw(item.partition, item.event.ts)
                if item.error is not None:
                    self._dead_letter(unit, item, now)
                    stats["dead_letters"] += 1
            fresh_ids = {id(i) for i in fresh}
            for customer_id, mine in by_customer.items():
                mine = [i for i in mine if id(i) in fresh_ids]
                if not mine:
                    continue
                mine.sort(key=lambda i: i.event.ts if i.event else now)
                profile = self._load(customer_id)
                for item in mine:
                    assert item.event is not None
                    # the profile was just read from Redis and is ours to change in place;
                    # the rules read only scalar fields of `before`, so a shallow copy does
                    before = profile.model_copy() if step is not None else profile
                    was = profile.segment
                    if not apply_event(profile, item.event):
                        stats["duplicates"] += 1
                        continue
                    stats["events"] += 1
                    rerate(profile, now, self.policy)
                    event_rows.append(
                        event_row(
                            item.event,
                            topic=item.topic,
                            partition=item.partition,
                            offset=item.offset,
                            now=now,
                        )
                    )
                    if step is not None:
                        step.event(before, profile, item.event)
                    if profile.segment != was:
                        change = _change(was, profile, now, "event", item.event.event_id)
                        changes.append(change)
                        if step is not None:
                            step.segment_changed(profile, change)
                self._save(unit, profile, mine[0].partition, step)
            self._finish(unit, step, event_rows, changes, stats)

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
            due_key(partition), "-inf", _ms(clock), start=0, num=limit
        )
        if not due:
            return 0
        customers = [raw.decode() for raw in due]
        self._snapshots = []
        rules = self.rules.rules if self.rules is not None else None
        raw_keys = MarketingStep.keys(rules, customers, clock) if rules else []
        try:
            async with store.unit(due, (), raw_keys) as unit:
                step = MarketingStep.begin(rules, unit, clock) if rules else None
                changes: list[SegmentChange] = []
                for customer_id in customers:
                    after = self._load(customer_id)
                    was = after.segment
                    rerate(after, now, self.policy)
                    if after.segment != was:
                        change = _change(was, after, now, "time", None)
                        changes.append(change)
                        if step is not None:
                            step.segment_changed(after, change)
                    if step is not None:
                        step.clock(after)
                    self._save(unit, after, partition, step)
                self._finish(unit, step, [], changes, {})
        except UnitConflict:
            return 0  # someone else touched these customers; the next sweep sees fresh data
        return len(changes)

    # -- helpers -------------------------------------------------------------------------

    def _load(self, customer_id: str) -> Profile:
        raw = self.app.profiles.get(customer_id.encode())
        return Profile.model_validate_json(raw) if raw else empty_profile(customer_id)

    def _save(
        self, unit: Unit, profile: Profile, partition: int, step: MarketingStep | None
    ) -> None:
        self.app.profiles[profile.customer_id.encode()] = profile.model_dump_json().encode()
        self._snapshots.append(profile_row(profile))
        moments = [next_time_change(profile, self.policy)]
        if step is not None:
            moments.append(step.wakeup(profile.customer_id))
        wake = min((m for m in moments if m is not None), default=None)
        member = profile.customer_id
        if wake is None:
            unit.later(lambda pipe: pipe.zrem(due_key(partition), member))
        else:
            unit.later(lambda pipe: pipe.zadd(due_key(partition), {member: _ms(wake)}))

    def _dead_letter(self, unit: Unit, item: Incoming, now: datetime) -> None:
        letter = DeadLetter.of(
            topic=item.topic,
            partition=item.partition,
            offset=item.offset,
            key=item.key,
            value=item.value,
            error=item.error or "invalid",
            at=now,
        )
        entry = kafka_entry(
            self.app.settings.topic("dead-letter"),
            bounded_key(item.key),
            letter.model_dump_json().encode(),
        )
        unit.later(lambda pipe: pipe.xadd(KAFKA_OUTBOX, entry))

    def _finish(
        self,
        unit: Unit,
        step: MarketingStep | None,
        rows: list[dict[str, Any]],
        changes: list[SegmentChange],
        stats: dict[str, int],
    ) -> None:
        if step is not None:
            step.finish(self.app.settings.topic("actions"))
        if self._snapshots:
            snapshots = clickhouse_entry("profile_snapshots", self._snapshots)
            unit.later(lambda pipe: pipe.xadd(snapshots.stream, snapshots.fields))
            self._snapshots = []
        self._record(unit, rows, changes, stats)

    def _record(
        self,
        unit: Unit,
        rows: list[dict[str, Any]],
        changes: list[SegmentChange],
        stats: dict[str, int],
    ) -> None:
        if rows:
            entry = clickhouse_entry("events", rows)
            unit.later(lambda pipe: pipe.xadd(entry.stream, entry.fields))
        if changes:
            ch = clickhouse_entry("segment_changes", [segment_change_row(c) for c in changes])
            unit.later(lambda pipe: pipe.xadd(ch.stream, ch.fields))
            topic = self.app.settings.topic("segment-changes")
            for change in changes:
                msg = kafka_entry(topic, change.customer_id, change.to_json())
                unit.later(lambda pipe, msg=msg: pipe.xadd(KAFKA_OUTBOX, msg))
        counts = {k: v for k, v in stats.items() if v}
        if changes:
            counts["segment_changes"] = len(changes)
        for name, n in counts.items():
            unit.later(lambda pipe, name=name, n=n: pipe.hincrby(STATS_KEY, name, n))
        if counts.get("events"):
            unit.later(lambda pipe: pipe.hincrby(WORKER_STATS_KEY, "events", counts["events"]))


def _change(
    was: str, after: Profile, now: datetime, cause: str, event_id: str | None
) -> SegmentChange:
    return SegmentChange.of(after.customer_id, was, after.segment, now, cause, event_id)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
