"""The keeper: storefront events in, live profiles in Redis, segment changes and actions out.

I/O around the customer step (agents/customer_step.py). Events wait until their partition's
event-time clock reaches them (agents/profile/positions.py), then each batch is one atomic
unit in Redis (streams/redis_store.py): profiles, the source offsets, the ClickHouse outbox
and the Kafka outbox move together, so a killed worker neither loses nor double-applies an
event. A batch that raises is split until the event that makes it raise is alone, and that
event is dead-lettered (agents/profile/poison.py); an outage is waited out
(streams/outages.py). An identity link (`ecrm.identities`) merges an anonymous id into its
customer in the same unit (agents/profile/routing.py); the id's later events are regrouped
under the customer. What a unit keeps and commits is collected in agents/profile/effects.py.

The two ways in (docs/design.md): `apply` (a batch of events) and `sweep` (the customers
whose wake time the clock has reached). Both open a unit with `_open` and end in
`Batch.finish`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from agents.customer_step import on_event
from agents.identity import MAX_REDIRECTS
from agents.membership.book import ProgrammeBook
from agents.profile.customers import Customers
from agents.profile.effects import Batch
from agents.profile.event_time import EventClock
from agents.profile.fold import RfmPolicy
from agents.profile.incoming import Incoming, decode
from agents.profile.poison import apply_or_split, reason
from agents.profile.policy import rfm_policy
from agents.profile.positions import BrokerView, Positions, WatermarkBehind, keep_clock
from agents.profile.routing import Redirected, Redirects, link, route, stubs
from agents.profile.rows import event_row
from agents.profile.sweep import SliceSize, sweep_partitions
from agents.rules.book import RulesBook
from agents.rules.budget_booking import BudgetRefused
from agents.rules.shell import MarketingStep
from schemas.membership import Programme
from schemas.pii import PiiGuard
from schemas.privacy import erasure_token
from streams import keyspace
from streams.app import EcrmApp
from streams.counters import messages_handled
from streams.outages import until_committed
from streams.redis_store import Unit, UnitConflict

# kept importable from here (older importers): their homes are named beside each
__all__ = [
    "BrokerView",
    "Incoming",
    "ProfileKeeper",
    "WatermarkBehind",
    "decode",
    "messages_handled",
    "rfm_policy",
]

log = logging.getLogger(__name__)


def _wall() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Opened:
    """A unit open for a partition, with what every step in it needs."""

    unit: Unit
    #: customer id -> their key on the erasure list (read, and so watched, by the unit)
    markers: dict[str, str]
    marketing: MarketingStep | None

    def erased(self, customer_id: str) -> bool:
        return self.unit.get(self.markers[customer_id]) is not None


@dataclass
class ProfileKeeper:
    """Applies batches of events and clock sweeps to the profiles, one Redis unit each.

    Everything it depends on is passed in: the app (settings, Redis store, profile table),
    the rules and the membership programme in force, the broker as the consumer sees it
    (`broker`; None: events are applied in the order given, as the tests and the backtest
    drive it) and the wall clock (`clock`)."""

    app: EcrmApp
    rules: RulesBook | None = None
    #: the membership programme in force (None: no membership; levels, points, tags stay)
    membership: ProgrammeBook | None = None
    broker: BrokerView | None = None
    clock: Callable[[], datetime] = _wall
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    redirects: Redirects = field(default_factory=Redirects)
    #: how many waking customers a sweep slice steps (agents/profile/sweep.py)
    slices: SliceSize = field(default_factory=SliceSize)
    #: told of each go of the sweep at the lock: the seconds it held it, the customers stepped
    on_slice: Callable[[float, int], None] | None = None
    #: counts rebalances: a sweep pass over a partition ends when it changes
    generation: int = 0

    @cached_property
    def positions(self) -> Positions:
        """The partitions' event-time clocks, the broker's ends, Redis's watermarks."""
        return Positions(self.app.settings, self.app.store, self.broker)

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

    @property
    def event_clock(self) -> EventClock | None:
        """The partitions' event-time clocks and held events (None without a broker)."""
        return self.positions.event_clock

    def rebalanced(self) -> None:
        """Partitions moved: whatever was held is read again, each clock starts over."""
        self.generation += 1
        self.positions.rebalanced()

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

    # -- the way in for events -------------------------------------------------------------

    async def apply(self, items: Sequence[Incoming], now: datetime | None = None) -> list[Incoming]:
        """Apply what the event-time clocks allow of `items` and of what was held before; the
        events returned are applied (or dead-lettered, or were replays) and may be acked.
        `now`: the wall clock, and the clock every event is decided at (the event-time clock
        is then not asked: a caller that says the time has ordered the events itself)."""
        async with self.lock:
            wall = now or self.clock()
            clock = self.event_clock
            if clock is None or now is not None:
                ready = list(items)
            else:
                partitions = {i.partition for i in items}
                # waits an outage out (raising would end the profiles task)
                await self.positions.know(partitions)
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
            wall = now or self.clock()
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
            keep_clock(unit, store.cluster_id, item.partition, [item])
            batch = Batch(self, unit, None, wall=now)
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
            except Redirected as found:
                self.redirects.learn(found.redirects)
        raise RuntimeError(f"identity redirects do not settle: {self.redirects.known}")

    def resolved(self, customer_id: str) -> str:
        """The customer an id is now (itself unless it was linked to another)."""
        return self.redirects.resolved(customer_id)

    @asynccontextmanager
    async def _open(
        self,
        partition: int,
        customers: list[str],
        sources: Iterable[tuple[str, int]],
        span: tuple[datetime, datetime],
    ) -> AsyncIterator[_Opened]:
        """The one way a unit is opened: the customers' keys (agents/profile/customers.py),
        their erasure markers, the sources' watermarks; the budgets the span may book read
        beforehand (agents/rules/budget_booking.py)."""
        store = self.app.store
        rules = self.rules.rules if self.rules is not None else None
        raw_keys = Customers.keys(
            customers, self.partitions, rules=bool(rules), members=self.membership is not None
        )
        markers = self.erasure_markers(customers)
        raw_keys += markers.values()
        spent = await MarketingStep.spent(store.client, rules, span) if rules else {}
        async with store.unit((), sources, raw_keys, partition=partition) as unit:
            marketing = (
                MarketingStep.begin(rules, unit, span, spent, store.client, self.partitions)
                if rules
                else None
            )
            yield _Opened(unit, markers, marketing)

    async def _apply_unit(self, items: Sequence[Incoming], now: datetime) -> None:
        """One unit for `items`, all of one partition."""
        partition = items[0].partition
        routes = route(items, partition, self, self.redirects)
        customers = routes.customers(self.redirects)
        sources = {(i.topic, i.partition) for i in items}
        times = [i.event.ts for i in items if i.event is not None]
        span = (min([*times, now]), now)  # events are decided at their own times, up to now
        async with self._open(partition, customers, sources, span) as opened:
            unit = opened.unit
            found = stubs(unit, customers, self.partitions)
            if found:
                raise Redirected(found)  # nothing was written: the unit is dropped
            erased = {c for c in customers if opened.erased(c)}
            batch = Batch(self, unit, opened.marketing, wall=now)
            fresh = [i for i in items if not unit.applied(i.topic, i.partition, i.offset)]
            await self.positions.contiguous(unit, fresh)
            batch.stats["batches"] = 1 if fresh else 0
            fresh_ids = {id(i) for i in fresh}
            for item in fresh:
                unit.advance(item.topic, item.partition, item.offset)
                if item.error is not None:
                    batch.dead_letter(item, now)
                elif id(item) in routes.refused:
                    batch.dead_letter(item, now, error=routes.refused[id(item)])
                elif id(item) in routes.away:
                    batch.forward(item, *routes.away[id(item)], now)
                elif item.event is not None and self.resolved(item.event.customer_id) in erased:
                    batch.withhold(item, now, "erased")
            for customer_id, mine in routes.by_customer.items():
                mine = [i for i in mine if id(i) in fresh_ids]
                if not mine or customer_id in erased:
                    continue
                where = {id(i.event): i for i in mine}
                customer = batch.customer(customer_id)
                events = [i.event for i in mine if i.event]
                marks = [i.mark for i in mine if i.event]
                step = on_event(customer, events, batch.ctx, wall=now, marks=marks)
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
            for item in routes.links:
                if id(item) in fresh_ids:
                    link(batch, item, now)
            keep_clock(unit, self.app.store.cluster_id, partition, fresh)
            batch.finish()
        await self._count_worker(batch)

    async def _count_worker(self, batch: Batch) -> None:
        """This process's share of the work, counted after the unit (a key of no partition:
        an observation, not state)."""
        if batch.stats.get("events"):
            key = keyspace.worker_stats(os.getpid())
            await self.app.store.client.hincrby(key, "events", batch.stats["events"])

    def _home(self, customer_id: str, item: Incoming) -> int:
        """The partition whose wake set holds the customer: the one its events come on, or,
        for a linked id's events, the customer's own (Kafka's default partitioner)."""
        if self.cluster or (item.event is not None and item.event.customer_id == customer_id):
            return item.partition  # on a cluster, only customers at home are stepped
        return keyspace.home(customer_id, self.partitions)

    # -- the way in for the clock ----------------------------------------------------------

    async def sweep(self, partitions: Iterable[int], now: datetime | None = None) -> int:
        """Step the customers whose wake time has come (time moved their segment, a rule's
        wait or a deferred action is over), in slices (agents/profile/sweep.py); returns how
        many segment changes time caused. `now`: the clock of every partition (the
        event-time clock is then not asked)."""
        return await sweep_partitions(self, list(partitions), now)

    # -- what a unit reads -----------------------------------------------------------------

    def erasure_markers(self, customers: Iterable[str]) -> dict[str, str]:
        """customer id -> their key on the erasure list (read, and so watched, by the unit:
        an erasure committed while a batch was being decided makes it start over)."""
        key, n = self.privacy_key, self.partitions
        return {c: keyspace.erased(erasure_token(c, key), keyspace.home(c, n)) for c in customers}
