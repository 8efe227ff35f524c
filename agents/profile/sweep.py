"""The clock path in slices: the customers whose wake time has come, stepped a few dozen at a
time, each slice its own unit (one partition's), so event batches wait for one go of the
sweep at the keeper's lock (~50 ms: a slice of each partition with customers due, in turn,
until the time is used), never for a whole sweep.

    total = await sweep_partitions(keeper, partitions, now)   # via ProfileKeeper.sweep

A round reads each partition's clock once, at its first slice (the wall clock live; while a
backlog is read, its event-time watermark), and steps everyone due by that clock, lowest wake
time first, as one unit would have: the slice size changes how many units, never which
customers wake nor what they decide (tests/unit/agents/profile/test_keeper.py). Between goes
the lock is let go and the event loop yielded; a batch applied meanwhile steps its own
customers first (`on_event` advances them to its events), and they are then no longer due. A
slice that conflicts is read again and redone; the slices committed before it stand.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from agents.customer_step import advance
from agents.profile.customers import ms
from agents.profile.effects import Batch
from agents.rules.budget_booking import BudgetRefused
from streams import keyspace
from streams.outages import REDIS_AWAY
from streams.redis_store import UnitConflict

if TYPE_CHECKING:
    from agents.profile.keeper import ProfileKeeper

#: a slice aims at this long under the lock (its Redis reads, the steps, the commit)
SLICE_AIM_S = 0.05
#: conflicting slices tolerated in one pass before the partition waits for the next round
CONFLICTS_PER_PASS = 3


@dataclass
class SliceSize:
    """How many waking customers the next slice steps: from the time per customer the last
    slice measured, so that a slice takes about `aim` seconds. It moves at most twofold a
    slice, either way: a slice's time includes whatever else ran on the event loop while it
    waited on Redis (the next batch being decoded), so one slow slice of a few customers
    says little about what a customer costs."""

    size: int = 32
    least: int = 1
    most: int = 1000
    aim: float = SLICE_AIM_S

    @classmethod
    def fixed(cls, size: int) -> SliceSize:
        """Always `size` customers (the tests compare slice sizes)."""
        return cls(size, size, size)

    def measured(self, customers: int, seconds: float) -> None:
        if customers <= 0:
            return
        fits = int(self.aim * customers / seconds) if seconds > 0 else self.most
        fits = max(self.size // 2, min(fits, 2 * self.size))
        self.size = max(self.least, min(self.most, fits))


@dataclass
class Slice:
    """What one slice did."""

    customers: int
    changes: int
    #: customers still due after their step (nothing moved their wake time): not retaken
    stuck: set[str]


@dataclass
class _Pass:
    """One partition's part of a round: its clock, read at its first slice, and how far it is."""

    partition: int
    clock: datetime | None = None
    live: bool = True
    #: customers still due after their step (nothing moved their wake time): not retaken
    stuck: set[str] = field(default_factory=set)
    conflicts: int = 0
    done: bool = False
    changes: int = 0

    async def slice(self, keeper: ProfileKeeper, now: datetime | None) -> int:
        """The next slice of this partition's due customers (under the keeper's lock); the
        customers it stepped. Sets `done` when no one is left due by the pass's clock."""
        wall = now or keeper.clock()
        if self.clock is None:
            if now is None:
                await keeper.positions.know([self.partition])
                self.clock, self.live = keeper.positions.clock_for(self.partition, wall)
            else:
                self.clock = now
            if self.clock is None:
                self.done = True  # the partition's clock is not known yet: no one wakes
                return 0
        size, stuck = keeper.slices.size, self.stuck
        limit = size + len(stuck)
        listed = await waking(keeper, self.partition, self.clock, self.live, limit)
        fresh = [(c, at) for c, at in listed if c not in stuck]
        due = fresh[:size]
        if not due:
            self.done = True
            return 0
        started = time.perf_counter()
        try:
            done = await step_slice(keeper, self.partition, due, self.clock, self.live, wall)
        except (UnitConflict, BudgetRefused):
            # someone else touched these customers: read again at the next go
            self.conflicts += 1
            self.done = self.conflicts > CONFLICTS_PER_PASS
            return 0
        keeper.slices.measured(done.customers, time.perf_counter() - started)
        self.changes += done.changes
        stuck |= done.stuck
        self.done = len(listed) < limit and len(fresh) <= size  # everyone due was in it
        return done.customers


async def sweep_partitions(
    keeper: ProfileKeeper, partitions: list[int], now: datetime | None
) -> int:
    """Step every customer due by its partition's clock, slice by slice; the segment changes
    time caused. Each go at the lock takes a slice of each partition in turn until ~`aim` is
    used (a partition with a few customers due costs a batch no wait of its own), then lets
    the batches waiting for the lock go. `now`: the clock (the event-time clock is then not
    asked)."""
    passes = [_Pass(p) for p in partitions]
    generation = keeper.generation
    while keeper.generation == generation:  # a rebalance ends the round: partitions moved
        active = [p for p in passes if not p.done]
        if not active:
            break
        stepped = 0
        async with keeper.lock:
            started = time.perf_counter()
            for one in active:
                if time.perf_counter() - started >= keeper.slices.aim:
                    break
                stepped += await one.slice(keeper, now)
            held = time.perf_counter() - started
        if keeper.on_slice is not None and stepped:
            keeper.on_slice(held, stepped)
        await asyncio.sleep(0)  # a batch waiting for the lock goes first
    return sum(p.changes for p in passes)


async def waking(
    keeper: ProfileKeeper, partition: int, clock: datetime, live: bool, limit: int
) -> list[tuple[str, float]]:
    """The customers due by `clock` (at it too, live), soonest first: (id, wake time in ms)."""
    store = keeper.app.store
    upto = str(ms(clock)) if live else f"({ms(clock)}"
    client = await store.for_partition(partition)
    try:
        found = cast(
            list[tuple[bytes, float]],
            await client.zrangebyscore(
                keyspace.wakes(partition), "-inf", upto, start=0, num=limit, withscores=True
            ),
        )
    except REDIS_AWAY:
        store.partition_clients.forget()  # after a failover: ask the cluster again
        raise
    return [(raw.decode(), score) for raw, score in found]


async def step_slice(
    keeper: ProfileKeeper,
    partition: int,
    due: list[tuple[str, float]],
    clock: datetime,
    live: bool,
    wall: datetime,
) -> Slice:
    """One unit: each customer steps through every moment it woke up to the clock, at that very
    moment (a worker back after downtime decides what it missed as a worker that never
    stopped would have, and as the backtest does). While a backlog is read, only moments
    strictly before the clock wake (an unread event at that very instant may still cancel)."""
    customers = [c for c, _ in due]
    earliest = datetime.fromtimestamp(due[0][1] / 1000, UTC)
    span = (min(earliest, clock), clock)
    stuck: set[str] = set()
    async with keeper._open(partition, customers, (), span) as opened:
        batch = Batch(keeper, opened.unit, opened.marketing, wall=wall)
        for customer_id in customers:
            if opened.erased(customer_id):
                # erased after this sweep listed them: nothing of theirs is rebuilt
                batch.customers.wake(customer_id, partition, None)
                continue
            step = advance(batch.customer(customer_id), clock, batch.ctx, inclusive=live)
            batch.took(step, partition)
            if step.wake is not None and (step.wake < clock or (live and step.wake == clock)):
                stuck.add(customer_id)
        batch.finish()
    return Slice(len(customers), len(batch.changes), stuck)
