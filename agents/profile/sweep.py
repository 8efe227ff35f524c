"""The clock path in slices: the customers whose wake time has come, stepped a few dozen at a
time, each slice its own unit under the keeper's lock, so event batches wait for one slice
(~50 ms), never for a whole sweep.

    total = await sweep_partition(keeper, partition, now)   # via ProfileKeeper.sweep

A pass over a partition reads its clock once (the wall clock live; while a backlog is read,
its event-time watermark) and steps everyone due by that clock, lowest wake time first, as
one unit would have: the slice size changes how many units, never which customers wake nor
what they decide (tests/unit/agents/profile/test_keeper.py). Between slices the lock is let
go and the event loop yielded; a batch applied meanwhile steps its own customers first
(`on_event` advances them to its events), and they are then no longer due. A slice that
conflicts is read again and redone; the slices committed before it stand.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
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


async def sweep_partition(keeper: ProfileKeeper, partition: int, now: datetime | None) -> int:
    """Step every customer of `partition` due by the clock, slice by slice; the segment changes
    time caused. `now`: the clock (the event-time clock is then not asked)."""
    changes = conflicts = 0
    clock: datetime | None = None
    live = True
    stuck: set[str] = set()
    generation = keeper.generation
    while keeper.generation == generation:  # a rebalance ends the pass: the partition moved
        async with keeper.lock:
            started = time.perf_counter()
            wall = now or keeper.clock()
            if clock is None:
                if now is None:
                    await keeper.positions.know([partition])
                    clock, live = keeper.positions.clock_for(partition, wall)
                    if clock is None:
                        return 0  # the partition's clock is not known yet: no one wakes
                else:
                    clock = now
            size = keeper.slices.size
            limit = size + len(stuck)
            listed = await waking(keeper, partition, clock, live, limit)
            fresh = [(c, at) for c, at in listed if c not in stuck]
            due = fresh[:size]
            last = len(listed) < limit and len(fresh) <= size  # everyone due is in this slice
            if not due:
                return changes
            try:
                done = await step_slice(keeper, partition, due, clock, live, wall)
            except (UnitConflict, BudgetRefused):
                done = None  # someone else touched these customers: read them again
            seconds = time.perf_counter() - started
        if done is None:
            conflicts += 1
            if conflicts > CONFLICTS_PER_PASS:
                return changes
            continue
        keeper.slices.measured(done.customers, seconds)
        if keeper.on_slice is not None:
            keeper.on_slice(seconds, done.customers)
        changes += done.changes
        stuck |= done.stuck
        if last:
            return changes
        await asyncio.sleep(0)  # a batch waiting for the lock goes first
    return changes


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
