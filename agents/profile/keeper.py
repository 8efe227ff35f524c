"""The keeper: storefront events in, live profiles in Redis, segment changes and actions out.

I/O around the customer step (agents/customer_step.py): events wait until their partition's
event-time clock reaches them (agents/profile/event_time.py), then each batch is one atomic
step in Redis (see
streams/redis_store.py): profiles, the source offsets, the ClickHouse outbox and the Kafka
outbox move together, so a killed worker neither loses nor double-applies an event. A batch
that raises is split until the event that makes it raise is alone, and that event is
dead-lettered (agents/profile/poison.py); an outage is waited out (streams/outages.py).
An identity link (`ecrm.identities`) merges an anonymous id into its customer in the same
unit (agents/identity.py); the id's later events are regrouped under the customer.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property, partial
from typing import Any, cast

import orjson
from pydantic import ValidationError

from agents.customer_step import Customer, Step, StepContext, advance, on_event, wake_of
from agents.identity import MAX_REDIRECTS, Merge, merge, redirect_stub
from agents.identity_handover import absorb as handover_absorb
from agents.identity_handover import as_message as handover_message
from agents.identity_handover import release as handover_release
from agents.identity_handover import verified as handover_verified
from agents.membership.book import ProgrammeBook
from agents.membership.rows import rows_by_table
from agents.membership.state import Movement, member_from_json, member_json, member_kept
from agents.profile.event_time import EventClock
from agents.profile.fold import RfmPolicy
from agents.profile.poison import apply_or_split, reason
from agents.profile.rows import event_row, profile_row, segment_change_row
from agents.rules.book import RulesBook
from agents.rules.budget_booking import BudgetRefused
from agents.rules.contact_policy import BudgetBook
from agents.rules.shell import MarketingStep
from agents.rules.state import CustomerRuleState
from schemas.events import EVENT_BY_TOPIC, TIME_WINDOW, Event, IdentityEvent, TimeWindow
from schemas.membership import Programme
from schemas.outputs import DeadLetter, SegmentChange, bounded_key
from schemas.pii import PiiGuard, looks_personal, scrub
from schemas.privacy import erasure_token
from schemas.profile import Profile, empty_profile, from_stored, stored
from streams import counters, keyspace
from streams.app import INPUT_TOPICS, EcrmApp
from streams.outages import REDIS_AWAY, Backoff, until_committed
from streams.outbox import clickhouse_entry, kafka_message
from streams.redis_store import Unit, UnitConflict
from streams.settings import Settings

log = logging.getLogger(__name__)


def messages_handled(client: Any, partitions: int) -> int:
    """Input messages the workers have dealt with: applied, duplicate, dead-lettered or
    forwarded to the customer's home partition (`client` is a synchronous Redis client; for
    progress bars and tests)."""
    counts = counters.stats(client, partitions)
    return sum(counts[name] for name in ("events", "duplicates", "dead_letters", "forwarded"))


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
    #: what the consumer acknowledges once this is applied (the worker's Faust event)
    source: Any = None

    @property
    def at(self) -> datetime | None:
        """When it happened (None for a message that is not a valid event)."""
        return self.event.ts if self.event is not None else None


def decode(
    topic: str,
    kind: str,
    partition: int,
    offset: int,
    key: Any,
    value: Any,
    window: TimeWindow | None = None,
    guard: PiiGuard | None = None,
) -> Incoming:
    """One message read and validated; `window` (from the caller's clock, see
    `Settings.time_window`) refuses event times that make no sense; `guard` replaces the
    personal data an event holds (schemas/pii.py) before anything stores or forwards it."""
    raw = value if isinstance(value, bytes) else (b"" if value is None else str(value).encode())
    item = Incoming(topic, partition, offset, key if isinstance(key, bytes) else None, raw)
    model = EVENT_BY_TOPIC.get(kind)
    if model is None:
        item.error = f"no event is defined for topic {topic!r}"
        return item
    try:
        event = model.model_validate_json(raw, context={TIME_WINDOW: window})
    except ValidationError as exc:
        item.error = _reason(exc)
        return item
    item.event = event if guard is None else guard.protect(event)
    return item


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


#: linked ids a worker remembers (the oldest are forgotten: found again from their stubs)
REDIRECTS_KEPT = 100_000


class WatermarkBehind(Exception):  # noqa: N818 - a state of Redis, not an error of the data
    """Redis's watermark of a source is behind what this worker read past: Redis lost units it
    had acknowledged (a failover to a replica they had not reached, an append-only file that
    lost its tail). Applying on would skip the events in between, so the worker stops; started
    again, it reads each partition from Redis's watermark + 1 (streams/resume.py)."""


class _Redirected(Exception):  # noqa: N818 - a signal inside the keeper, never raised out
    """Customers of a unit turned out to be redirects: read the batch again under their
    targets."""

    def __init__(self, redirects: dict[str, str]) -> None:
        super().__init__(redirects)
        self.redirects = redirects


@dataclass
class ProfileKeeper:
    """Applies batches of events and clock sweeps to the profiles, one Redis step each."""

    app: EcrmApp
    rules: RulesBook | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: (topic, partition) -> the broker's end offset as the consumer last saw it (None when
    #: unknown); set by the worker. Without it (tests driving the keeper with their own
    #: clock) events are applied as they come and timers follow the clock given.
    highwater: Callable[[str, int], int | None] | None = None
    #: the membership programme in force (None: no membership; levels, points, tags stay)
    membership: ProgrammeBook | None = None
    #: asks the broker for the end offsets of (topic, partition)s; set by the worker. A
    #: partition the consumer has not fetched from yet has no known end, and the event-time
    #: clock must hold everything until it has one: a rarely used topic (points, tags) would
    #: otherwise hold a whole backlog until the busy topics are drained
    end_offsets: Callable[[list[tuple[str, int]]], Awaitable[dict[tuple[str, int], int]]] | None = (
        None
    )
    #: asks the broker for the first offsets still held of (topic, partition)s; set by the
    #: worker, to tell events retention deleted from units Redis lost (`_contiguous`)
    start_offsets: (
        Callable[[list[tuple[str, int]]], Awaitable[dict[tuple[str, int], int]]] | None
    ) = None
    _event_clock: EventClock | None = None
    #: ids linked to another customer, as learnt from their redirect stubs in Redis (a link
    #: is never undone, so what is learnt stays true)
    redirects: dict[str, str] = field(default_factory=dict)
    _ends: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def programme(self) -> Programme | None:
        return self.membership.programme if self.membership is not None else None

    @property
    def partitions(self) -> int:
        return self.app.settings.partitions

    @property
    def cluster(self) -> bool:
        """Redis is a cluster: a unit may touch only its own partition's slot."""
        return self.app.settings.redis_is_cluster

    def member_keys(self, customers: Iterable[str]) -> list[str]:
        """The member states a unit reads beside the profiles (none without a programme)."""
        if self.membership is None:
            return []
        return [keyspace.member(c, self.partitions) for c in customers]

    @property
    def event_clock(self) -> EventClock | None:
        """The partitions' event-time clocks and held events (agents/profile/event_time.py)."""
        if self._event_clock is None and self.highwater is not None:
            topics = tuple(self.app.settings.topic(name) for name in INPUT_TOPICS)
            self._event_clock = EventClock(topics, self._end_of)
        return self._event_clock

    def _end_of(self, topic: str, partition: int) -> int | None:
        """The consumer's end offset; until it has fetched there, the broker's, if asked."""
        end = self.highwater(topic, partition) if self.highwater is not None else None
        return end if end is not None else self._ends.get((topic, partition))

    async def _know_ends(self, partitions: Iterable[int]) -> None:
        """Ask the broker once for the ends the consumer does not know yet."""
        clock = self.event_clock
        if clock is None or self.end_offsets is None:
            return
        unknown = [
            (t, p)
            for p in partitions
            for t in clock.topics
            if (t, p) not in self._ends and self._end_of(t, p) is None
        ]
        if unknown:
            try:
                self._ends.update(await self.end_offsets(unknown))
            except Exception as exc:  # noqa: BLE001 - the consumer's own fetch will tell later
                log.info("end offsets of %d partitions not known yet: %s", len(unknown), exc)

    def rebalanced(self) -> None:
        """Partitions moved: the consumer re-reads from the committed offsets, so whatever
        was held is read again, and each partition's clock starts over."""
        if self._event_clock is not None:
            self._event_clock.reset()
        self._ends.clear()

    def clock_for(self, partition: int, wall: datetime) -> tuple[datetime | None, bool]:
        """(the time a partition's timers may act on, live). Live, the wall clock; while a
        backlog is read, its event-time watermark (None: not known yet, nothing is due)."""
        clock = self.event_clock
        return (wall, True) if clock is None else clock.clock(partition, wall)

    @cached_property
    def privacy_key(self) -> bytes:
        """ECRM_PRIVACY_SECRET (streams/settings.py): erasure hashes, unsubscribe tokens."""
        return self.app.settings.privacy_key()

    @cached_property
    def guard(self) -> PiiGuard:
        """What personal data in events becomes (ECRM_PII_FIELDS, schemas/pii.py)."""
        return PiiGuard(self.privacy_key, self.app.settings.pii_field_names)

    @cached_property
    def policy(self) -> RfmPolicy:
        """Built once: the settings are frozen, and this is read for every event."""
        return rfm_policy(self.app.settings)

    async def apply(self, items: Sequence[Incoming], now: datetime | None = None) -> list[Incoming]:
        """Apply what the event-time clocks allow of `items` and of what was held before; the
        events returned are applied (or dead-lettered, or were replays) and may be acked.
        `now` (tests): the wall clock, and the clock every event is decided at."""
        async with self.lock:
            wall = now or datetime.now(UTC)
            clock = self.event_clock
            if clock is None or now is not None:
                ready = list(items)
            else:
                partitions = {i.partition for i in items}
                # waits an outage out (raising would end the profiles task)
                await self._know_positions(partitions)
                await self._know_ends(partitions)
                clock.read(items, wall)
                ready = self._release(clock, partitions, wall)
            if ready:
                await self._apply_retrying(ready, wall)
            return ready

    async def release_held(self, now: datetime | None = None) -> list[Incoming]:
        """Held events the clocks have reached since (an idle topic caught up), applied."""
        async with self.lock:
            clock = self.event_clock
            if clock is None or not clock.held():
                return []
            wall = now or datetime.now(UTC)
            ready = self._release(clock, clock.partitions(), wall)
            if ready:
                await self._apply_retrying(ready, wall)
            return ready

    def _release(
        self, clock: EventClock, partitions: Iterable[int], wall: datetime
    ) -> list[Incoming]:
        ready: list[Incoming] = []
        for partition in partitions:
            ready.extend(clock.release(partition, wall))  # type: ignore[arg-type]
        return ready

    async def _know_positions(self, partitions: Iterable[int]) -> None:
        """Where reading resumed for the sources of these partitions not read from yet:
        Redis's watermark + 1 (the worker seeks there on assignment)."""
        clock = self.event_clock
        if clock is None:
            return
        missing = [
            (topic, p) for p in partitions for topic in clock.topics if not clock.known(topic, p)
        ]
        if not missing:
            return
        store = self.app.store
        for p in sorted({p for _, p in missing}):  # one slot each
            mine = [(t, q) for t, q in missing if q == p]
            names = [keyspace.offset(store.cluster_id, t, q) for t, q in mine]
            backoff = Backoff()
            while True:  # the batch cannot be placed without them: wait Redis out
                try:
                    values = await (await store.for_partition(p)).mget(names)
                    break
                except REDIS_AWAY as exc:
                    store.partition_clients.forget()
                    wait = backoff.next()
                    log.warning(
                        "waiting for Redis to read watermarks (%s); again in %.1fs", exc, wait
                    )
                    await asyncio.sleep(wait)
            for (topic, q), raw in zip(mine, values, strict=True):
                clock.start_at(topic, q, int(raw) + 1 if raw is not None else 0)

    async def _apply_retrying(self, items: Sequence[Incoming], wall: datetime) -> None:
        """Apply exactly once. An event that makes it raise is dead-lettered and the rest
        applied (agents/profile/poison.py); an outage or a conflict is waited out and the same
        work redone, so this returns only once every item is applied or refused."""

        behind: list[WatermarkBehind] = []

        async def apply_part(part: Sequence[Incoming]) -> None:
            try:
                await until_committed(lambda: self._apply_once(part, wall))
            except WatermarkBehind as exc:  # no event's fault: never split nor dead-lettered
                behind.append(exc)

        by_partition: dict[int, list[Incoming]] = defaultdict(list)
        for item in items:  # one unit per partition: on a cluster, one slot each
            by_partition[item.partition].append(item)

        async def refuse(item: Incoming, exc: Exception) -> None:
            log.error(
                "dead-lettering %s[%d]@%d: applying it raised %s",
                item.topic,
                item.partition,
                item.offset,
                reason(exc),
                exc_info=exc,
            )
            await until_committed(lambda: self._dead_letter_poison(item, reason(exc), wall))

        for part in by_partition.values():
            await apply_or_split(part, apply_part, refuse)
            if behind:
                raise behind[0]

    async def _dead_letter_poison(self, item: Incoming, error: str, now: datetime) -> None:
        """The event's dead letter and its partition's watermark, in one unit of their own."""
        store = self.app.store
        async with store.unit([], [(item.topic, item.partition)], partition=item.partition) as unit:
            if unit.applied(item.topic, item.partition, item.offset):
                return  # committed before a crash or a conflict: once is enough
            unit.advance(item.topic, item.partition, item.offset)
            batch = _Batch(self, unit, None, wall=now)
            batch.dead_letter(item, now, error=error)
            batch.stats["poison"] += 1
            batch.finish()

    async def _apply_once(self, items: Sequence[Incoming], now: datetime) -> None:
        """`now` is the wall clock: no event is decided past it. A customer id found to be
        linked to another (its profile a redirect stub, agents/identity.py) is learnt and the
        batch read again with the events grouped under the customer it now is."""
        for _ in range(MAX_REDIRECTS + 1):
            try:
                await self._apply_unit(items, now)
                return
            except BudgetRefused as exc:
                raise UnitConflict(str(exc)) from exc  # redone on a fresh read of the budgets
            except _Redirected as found:
                self.redirects.update(found.redirects)
                while len(self.redirects) > REDIRECTS_KEPT:  # forgotten ones are found again
                    del self.redirects[next(iter(self.redirects))]
        raise RuntimeError(f"identity redirects do not settle: {self.redirects}")

    def resolved(self, customer_id: str) -> str:
        """The customer an id is now (itself unless it was linked to another)."""
        for _ in range(MAX_REDIRECTS):
            target = self.redirects.get(customer_id)
            if target is None:
                return customer_id
            customer_id = target
        return customer_id

    async def _apply_unit(self, items: Sequence[Incoming], now: datetime) -> None:
        """One unit for `items`, all of one partition."""
        store = self.app.store
        partition = items[0].partition
        by_customer: dict[str, list[Incoming]] = defaultdict(list)
        links: list[Incoming] = []
        # on a cluster: id(item) -> (key, message) of what goes to another partition's slot
        away: dict[int, tuple[str, bytes]] = {}
        refused: dict[int, str] = {}  # id(item) -> why it is dead-lettered
        for item in items:
            event = item.event
            if isinstance(event, IdentityEvent):
                route = self._route_link(item, event, partition) if self.cluster else None
                if route is None:
                    links.append(item)
                elif isinstance(route, str):
                    refused[id(item)] = route
                else:
                    away[id(item)] = route
            elif event is not None:
                customer_id = self.resolved(event.customer_id)
                if self.cluster and keyspace.home(customer_id, self.partitions) != partition:
                    away[id(item)] = (customer_id, _as_customers(item, customer_id))
                else:
                    by_customer[customer_id].append(item)
        parties = [
            self.resolved(cid)
            for i in links
            if isinstance(i.event, IdentityEvent)
            for cid in _link_parties(i.event)
        ]
        customers = list(dict.fromkeys([*by_customer, *parties]))
        sources = {(i.topic, i.partition) for i in items}
        rules = self.rules.rules if self.rules is not None else None
        times = [i.event.ts for i in items if i.event is not None]
        span = (min([*times, now]), now)  # events are decided at their own times, up to now
        raw_keys = MarketingStep.keys(rules, customers, self.partitions) if rules else []
        raw_keys += self.member_keys(customers)
        markers = self.erasure_markers(customers)
        raw_keys += markers.values()
        spent = await MarketingStep.spent(store.client, rules, span) if rules else {}
        keys = [c.encode() for c in customers]
        async with store.unit(keys, sources, raw_keys, partition=partition) as unit:
            found = self._stubs(unit, customers)
            if found:
                raise _Redirected(found)  # nothing was written: the unit is dropped
            erased = {c for c, key in markers.items() if unit.get(key) is not None}
            marketing = (
                MarketingStep.begin(rules, unit, span, spent, store.client, self.partitions)
                if rules
                else None
            )
            batch = _Batch(self, unit, marketing, wall=now)
            fresh = [i for i in items if not unit.applied(i.topic, i.partition, i.offset)]
            await self._contiguous(unit, fresh)
            batch.stats["batches"] = 1 if fresh else 0
            fresh_ids = {id(i) for i in fresh}
            for item in fresh:
                unit.advance(item.topic, item.partition, item.offset)
                if item.error is not None:
                    batch.dead_letter(item, now)
                elif id(item) in refused:
                    batch.dead_letter(item, now, error=refused[id(item)])
                elif id(item) in away:
                    batch.forward(item, *away[id(item)], now)
                elif item.event is not None and self.resolved(item.event.customer_id) in erased:
                    batch.withhold(item, now, "erased")
            for customer_id, mine in by_customer.items():
                mine = [i for i in mine if id(i) in fresh_ids]
                if not mine or customer_id in erased:
                    continue
                where = {id(i.event): i for i in mine}
                customer = batch.customer(customer_id)
                events = [i.event for i in mine if i.event]
                step = on_event(customer, events, batch.ctx, wall=now)
                batch.took(step, self._home(customer_id, mine[0]))
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
            for item in links:
                if id(item) in fresh_ids:
                    batch.link(item, now)
            batch.finish()
        await self._count_worker(batch)

    def _route_link(
        self, item: Incoming, event: IdentityEvent, partition: int
    ) -> tuple[str, bytes] | str | None:
        """On a cluster, where a link (or a step of its handover, agents/identity_handover.py)
        goes: None, applied in this unit; (key, message), sent on to another partition; a
        string, dead-lettered with that reason."""
        key = self.privacy_key
        handover = event.handover
        if handover is not None and not handover_verified(event, key):
            return "identity handover not signed by this shop's ecrm (storefronts may not send one)"
        into, old = self.resolved(event.customer_id), self.resolved(event.previous_id)
        here = partial(_is_home, partitions=self.partitions, partition=partition)
        if handover is None:
            if not here(into):
                return into, item.value  # the customer's partition starts it
            if here(old):
                return None  # both in this slot: merged here
            asked = handover_release(event.model_copy(update={"customer_id": into}), old, key)
            return old, handover_message(asked)
        if handover.stage == "release":
            if old == into:  # linked already (a repeated link, or a chain that came back)
                done = handover_absorb(event, into, None, None, key, "already_linked")
                return into, handover_message(done)
            if not here(old):
                return old, handover_message(handover_release(event, old, key))
            return None  # the previous id is handed over here
        if not here(into):  # absorb, for a customer linked on meanwhile
            moved = handover_absorb(
                event, into, _raw(handover.profile), _raw(handover.rules), key, handover.outcome
            )
            return into, handover_message(moved)
        return None

    async def _count_worker(self, batch: _Batch) -> None:
        """This process's share of the work, counted after the unit (a key of no partition:
        an observation, not state)."""
        if batch.stats.get("events"):
            key = keyspace.worker_stats(os.getpid())
            await self.app.store.client.hincrby(key, "events", batch.stats["events"])

    def _stubs(self, unit: Unit, customers: Iterable[str]) -> dict[str, str]:
        """The customers of the open unit that are redirects, not yet known as such."""
        found = {}
        for cid in customers:
            raw = unit.values.get(keyspace.profile(cid, self.partitions))
            if raw and b'"merged_into":"' in raw:
                target = from_stored(raw).merged_into
                if target is not None:
                    found[cid] = target
        return found

    def _home(self, customer_id: str, item: Incoming) -> int:
        """The partition whose due set holds the customer: the one its events come on, or,
        for a linked id's events, the customer's own (Kafka's default partitioner)."""
        if self.cluster or (item.event is not None and item.event.customer_id == customer_id):
            return item.partition  # on a cluster, only customers at home are stepped
        return keyspace.home(customer_id, self.partitions)

    async def sweep(self, partitions: Iterable[int], now: datetime | None = None) -> int:
        """Step the due customers (time moved their segment, a rule's timer or a deferred
        action is due); returns how many segment changes time caused. `now` (tests): the
        clock of every partition."""
        total = 0
        for partition in partitions:
            async with self.lock:
                wall = now or datetime.now(UTC)
                if now is not None:
                    clock: datetime | None = now
                    live = True
                else:
                    await self._know_positions([partition])
                    await self._know_ends([partition])
                    clock, live = self.clock_for(partition, wall)
                if clock is not None:
                    total += await self._sweep_partition(partition, clock, live, wall)
        return total

    async def _sweep_partition(
        self, partition: int, clock: datetime, live: bool, wall: datetime, limit: int = 1000
    ) -> int:
        """Each due customer steps through every moment it fell due up to the clock, at that
        very moment (a worker back after downtime decides what it missed as a worker that
        never stopped would have, and as the backtest does). Live, the clock is the wall
        clock; while a backlog is read, its event-time watermark, and then only moments
        strictly before it are due (an unread event at that very instant may still cancel)."""
        store = self.app.store
        upto = str(_ms(clock)) if live else f"({_ms(clock)}"
        client = await store.for_partition(partition)
        try:
            due_at = cast(
                list[tuple[bytes, float]],
                await client.zrangebyscore(
                    keyspace.due(partition), "-inf", upto, start=0, num=limit, withscores=True
                ),
            )
        except REDIS_AWAY:
            store.partition_clients.forget()  # after a failover: ask the cluster again
            raise
        if not due_at:
            return 0
        due = [raw for raw, _ in due_at]
        customers = [raw.decode() for raw in due]
        rules = self.rules.rules if self.rules is not None else None
        earliest = datetime.fromtimestamp(due_at[0][1] / 1000, UTC)
        span = (min(earliest, clock), clock)
        raw_keys = MarketingStep.keys(rules, customers, self.partitions) if rules else []
        raw_keys += self.member_keys(customers)
        markers = self.erasure_markers(customers)
        raw_keys += markers.values()
        spent = await MarketingStep.spent(store.client, rules, span) if rules else {}
        try:
            async with store.unit(due, (), raw_keys, partition=partition) as unit:
                marketing = (
                    MarketingStep.begin(rules, unit, span, spent, store.client, self.partitions)
                    if rules
                    else None
                )
                batch = _Batch(self, unit, marketing, wall=wall)
                for customer_id in customers:
                    if unit.get(markers[customer_id]) is not None:
                        # erased after this sweep listed them: nothing of theirs is rebuilt
                        unit.zrem(keyspace.due(partition), customer_id)
                        continue
                    step = advance(batch.customer(customer_id), clock, batch.ctx, inclusive=live)
                    batch.took(step, partition)
                batch.finish()
        except (UnitConflict, BudgetRefused):
            return 0  # someone else touched these customers; the next sweep sees fresh data
        return len(batch.changes)

    async def _contiguous(self, unit: Unit, fresh: Sequence[Incoming]) -> None:
        """WatermarkBehind if the first fresh event of a source does not follow Redis's
        watermark: what the consumer accounts for (`source.first`, which includes offsets the
        broker skipped) must start at watermark + 1, unless retention deleted the offsets in
        between (the partition now starts past the watermark)."""
        first: dict[tuple[str, int], int] = {}
        for item in fresh:
            source = item.source
            if self.start_offsets is None or not hasattr(source, "first"):
                continue  # driven without a consumer (tests, the backtest): offsets as given
            key = (item.topic, item.partition)
            first[key] = min(first.get(key, source.first), source.first)
        gaps = {
            key: (unit.offsets[key], start)
            for key, start in first.items()
            if key in unit.offsets and start > unit.offsets[key] + 1
        }
        if not gaps or self.start_offsets is None:
            return
        held = await self.start_offsets(list(gaps))
        for (topic, partition), (watermark, start) in gaps.items():
            if held.get((topic, partition), 0) <= watermark + 1:
                raise WatermarkBehind(
                    f"{topic}[{partition}]: Redis's watermark is {watermark} but this worker "
                    f"read on from {start}: Redis lost acknowledged units (a failover to a "
                    "replica they had not reached?). Stopping rather than skip events; "
                    "started again, the worker reads from the watermark"
                )

    def erasure_markers(self, customers: Iterable[str]) -> dict[str, str]:
        """customer id -> their key on the erasure list (read, and so watched, by the unit:
        an erasure committed while a batch was being decided makes it start over)."""
        key, n = self.privacy_key, self.partitions
        return {c: keyspace.erased(erasure_token(c, key), keyspace.home(c, n)) for c in customers}

    def load(self, customer_id: str) -> Profile:
        """The customer's profile as the open unit read it (a new one if none is stored)."""
        raw = self.app.profiles.get(customer_id.encode())
        return from_stored(raw) if raw else empty_profile(customer_id)


@dataclass
class _Batch:
    """What one unit (a batch of events or a sweep) collects for its commit."""

    keeper: ProfileKeeper
    unit: Unit
    marketing: MarketingStep | None
    #: the wall clock, against which history is judged (agents/rules/engine.py)
    wall: datetime
    #: orders this unit's snapshots after earlier ones as of the same event time
    written_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    stats: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    event_rows: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    changes: list[SegmentChange] = field(default_factory=list)
    #: identity links applied in this unit: old id -> the customer it is now
    linked: dict[str, str] = field(default_factory=dict)
    #: rows for ClickHouse `identity_merges`
    merges: list[dict[str, Any]] = field(default_factory=list)
    movements: list[Movement] = field(default_factory=list)

    @cached_property
    def programme(self) -> Programme | None:
        """Read once per unit: a reload takes effect at the next unit."""
        return self.keeper.programme

    @cached_property
    def ctx(self) -> StepContext:
        m = self.marketing
        return StepContext(
            self.keeper.policy,
            m.rules if m else None,
            m.budget if m else BudgetBook(),
            self.wall,
            consent_default=self.keeper.app.settings.consent_granted,
            programme=self.programme,
        )

    def customer(self, customer_id: str) -> Customer:
        m = self.marketing
        rules = m.state(customer_id) if m else CustomerRuleState(customer_id=customer_id)
        member = None
        if self.programme is not None:
            raw = self.unit.get(keyspace.member(customer_id, self.keeper.partitions))
            member = member_from_json(raw) if raw else None
        return Customer(self.keeper.load(customer_id), rules, member)

    def took(self, step: Step, partition: int) -> None:
        """Keep what a customer step did: the profile, rule state, changes, wake-up."""
        profile = step.customer.profile
        self.stats["duplicates"] += len(step.duplicates)
        self.stats["events"] += len(step.applied)
        self.changes.extend(step.changes)
        if self.marketing is not None:
            self.marketing.took(step.customer.rules, step.rules_changed, step.decisions)
        self.keeper.app.profiles[profile.customer_id.encode()] = stored(profile)
        member = step.customer.member
        if self.programme is not None and member is not None and not member.is_empty():
            key = keyspace.member(profile.customer_id, self.keeper.partitions)
            read = self.unit.get(key)
            value = (
                member_json(member)
                if step.member_touched or not read
                else member_kept(read, member)
            )
            if value != read:
                self.unit.put(key, value)
        self.movements.extend(step.movements)
        self.snapshots.append(profile_row(profile, self.written_at))
        due = keyspace.due(partition)
        if step.wake is None:
            self.unit.zrem(due, profile.customer_id)
        else:
            self.unit.zadd(due, profile.customer_id, _ms(step.wake))

    def link(self, item: Incoming, now: datetime) -> None:
        """An identity link: the previous id's customer merged into the customer's, the old
        id left as a redirect, the merge recorded (`identity_merges`). On a cluster, a step of
        a link across slots instead (`release`, `absorb`; agents/identity_handover.py)."""
        event = item.event
        assert isinstance(event, IdentityEvent)
        if event.handover is not None:
            if event.handover.stage == "release":
                self.release(item, event, now)
            else:
                self.absorb(item, event, now)
            return
        keeper = self.keeper
        old_id = self._resolved(event.previous_id)
        into_id = self._resolved(event.customer_id)
        at = min(event.ts, now)
        self.stats["events"] += 1
        if old_id == into_id:
            self._already_linked(into_id, event, at)
            return
        merged = merge(
            self.customer(into_id), self.customer(old_id), at, keeper.policy, event.event_id
        )
        self._leave_stub(old_id, merged.stub)
        home = (
            item.partition
            if event.customer_id == into_id
            else keyspace.home(into_id, keeper.partitions)
        )
        self._took_merge(merged, home, event, at)

    def release(self, item: Incoming, event: IdentityEvent, now: datetime) -> None:
        """The previous id's partition: its profile becomes a redirect to the customer, and
        what it held goes to the customer's partition to be merged there (`absorb`)."""
        keeper = self.keeper
        old_id, into_id = self._resolved(event.previous_id), event.customer_id
        at = min(event.ts, now)
        old = self.customer(old_id)
        state = (stored(old.profile), old.rules.model_dump_json().encode())
        self._leave_stub(old_id, redirect_stub(old.profile, into_id, at))
        moved = handover_absorb(event, into_id, *state, keeper.privacy_key)
        self.unit.add(kafka_message(item.topic, into_id, handover_message(moved)))
        self.stats["identity_handovers"] += 1

    def absorb(self, item: Incoming, event: IdentityEvent, now: datetime) -> None:
        """The customer's partition: the previous id's state, handed over, merged in as a
        local link merges it."""
        handover = event.handover
        assert handover is not None
        into_id = self._resolved(event.customer_id)
        at = min(event.ts, now)
        self.stats["events"] += 1
        if handover.outcome == "already_linked" or handover.profile is None:
            self._already_linked(into_id, event, at)
            return
        old_rules = (
            CustomerRuleState.model_validate_json(handover.rules)
            if handover.rules
            else CustomerRuleState(customer_id=event.previous_id)
        )
        old = Customer(from_stored(handover.profile.encode()), old_rules, None)
        merged = merge(self.customer(into_id), old, at, self.keeper.policy, event.event_id)
        self._took_merge(merged, item.partition, event, at)

    def _already_linked(self, into_id: str, event: IdentityEvent, at: datetime) -> None:
        self.merges.append(
            {
                "customer_id": into_id,
                "merged_id": event.previous_id,
                "event_id": event.event_id,
                "merged_at": at,
                "outcome": "already_linked",
            }
        )

    def _leave_stub(self, old_id: str, stub: Profile) -> None:
        """The old id becomes a redirect to `stub.merged_into`: no rule state, no wake-up."""
        assert stub.merged_into is not None
        self.keeper.app.profiles[old_id.encode()] = stored(stub)
        self.linked[old_id] = stub.merged_into
        if self.marketing is not None:
            self.marketing.took(CustomerRuleState(customer_id=old_id), True, [])
        self.unit.zrem(keyspace.due(keyspace.home(old_id, self.keeper.partitions)), old_id)
        # the old id's last snapshot would keep its cart and views in profiles_latest
        self.snapshots.append(profile_row(stub, self.written_at))

    def _took_merge(self, merged: Merge, home: int, event: IdentityEvent, at: datetime) -> None:
        """The customer with both histories kept, its segment move and the merge recorded."""
        into_id = merged.customer.customer_id
        step = Step(merged.customer, rules_changed=True)
        step.wake = wake_of(merged.customer, self.ctx)
        self.took(step, home)
        before, after = merged.moved["segment_before"], merged.moved["segment_after"]
        if before != after:  # e.g. a guest order came along
            self.changes.append(
                SegmentChange.of(into_id, before, after, at, "event", event.event_id)
            )
        self.merges.append({**merged.moved, "outcome": "merged"})
        self.stats["identity_merges"] += 1

    def _resolved(self, customer_id: str) -> str:
        for _ in range(MAX_REDIRECTS):
            target = self.linked.get(customer_id) or self.keeper.redirects.get(customer_id)
            if target is None:
                return customer_id
            customer_id = target
        return customer_id

    def forward(self, item: Incoming, customer_id: str, message: bytes, now: datetime) -> None:
        """On a cluster: a message for a customer whose keys live in another partition's slot
        (the storefront keyed it otherwise; a linked id's event, now the customer's; a step
        of a link across slots) goes to the same topic keyed by that customer, so Kafka's
        partitioner puts it on their home partition, whose worker applies it (once: the
        event id). A message keyed so already cannot be sent home: the topic's partitions
        are not ECRM_PARTITIONS."""
        if item.key == customer_id.encode() and message == item.value:
            self.dead_letter(
                item,
                now,
                error=(
                    f"partitions: the topic has not ECRM_PARTITIONS="
                    f"{self.keeper.partitions} partitions, so this customer's home partition "
                    "cannot be reached (set ECRM_PARTITIONS to the input topics' count)"
                ),
            )
            return
        self.unit.add(kafka_message(item.topic, customer_id, message))
        self.stats["forwarded"] += 1

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
        key = bounded_key(item.key)
        if key is not None and looks_personal(key.decode("utf-8", "replace")):
            key = scrub(key.decode("utf-8", "replace")).encode()  # as the letter shows it
        self.unit.add(kafka_message(topic, key, letter.model_dump_json().encode()))
        self.stats["dead_letters"] += 1

    def withhold(self, item: Incoming, now: datetime, reason: str) -> None:
        """A dead letter that says where the message was and why it was refused, but keeps
        nothing of it (an erased customer's event): no key, no bytes, only its size."""
        letter = DeadLetter.withheld(
            topic=item.topic,
            partition=item.partition,
            offset=item.offset,
            size=len(item.value),
            error=reason,
            at=now,
        )
        topic = self.keeper.app.settings.topic("dead-letter")
        self.unit.add(kafka_message(topic, None, letter.model_dump_json().encode()))
        self.stats["dead_letters"] += 1
        self.stats[reason] += 1

    def finish(self) -> None:
        """Queue the rules' effects, the ClickHouse rows, the Kafka messages and counters."""
        settings = self.keeper.app.settings
        unit = self.unit
        if self.marketing is not None:
            self.marketing.finish(settings.topic("actions"), self.keeper.privacy_key)
        if self.snapshots:
            unit.add(clickhouse_entry("profile_snapshots", self.snapshots))
        if self.event_rows:
            unit.add(clickhouse_entry("events", self.event_rows))
        if self.merges:
            unit.add(clickhouse_entry("identity_merges", self.merges))
        if self.changes:
            unit.add(
                clickhouse_entry("segment_changes", [segment_change_row(c) for c in self.changes])
            )
            topic = settings.topic("segment-changes")
            for change in self.changes:
                unit.add(kafka_message(topic, change.customer_id, change.to_json()))
            self.stats["segment_changes"] = len(self.changes)
        if self.movements:
            for table, rows in rows_by_table(self.movements).items():
                unit.add(clickhouse_entry(table, rows))
            topic = settings.topic("member-changes")
            for move in self.movements:
                message = orjson.dumps(move.as_message())
                unit.add(kafka_message(topic, move.customer_id, message))
            self.stats["member_changes"] = len(self.movements)
        for name, n in self.stats.items():
            if n:
                unit.count(name, n)


def _is_home(customer_id: str, *, partitions: int, partition: int) -> bool:
    return keyspace.home(customer_id, partitions) == partition


def _link_parties(event: IdentityEvent) -> tuple[str, ...]:
    """The customers a link's unit reads: both ids; one for a step of a handover."""
    if event.handover is None:
        return (event.previous_id, event.customer_id)
    return (event.previous_id,) if event.handover.stage == "release" else (event.customer_id,)


def _as_customers(item: Incoming, customer_id: str) -> bytes:
    """The message that brings an event to `customer_id`'s partition: as it came, or, for a
    linked id's event, as the customer's (their partition knows nothing of the link)."""
    event = item.event
    assert event is not None
    if event.customer_id == customer_id:
        return item.value
    return event.model_copy(update={"customer_id": customer_id}).model_dump_json().encode()


def _raw(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
