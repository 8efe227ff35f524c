"""A rules file replayed over history: the live worker's fold and rules engine, driven by a
simulated clock instead of Kafka and Redis, to tell a marketer what the rules would have done.

    replay = Replay(rules, RfmPolicy())
    for event in events_in_time_order:
        replay.feed(event)      # the clock first reaches event.ts, then the event is applied
    replay.advance(end)         # waits, deferred deliveries and R ageing up to `end`
    report = summarize(rules, replay.decisions)      # agents/backtest/report.py (or a Tally)

Nothing here decides anything: each step is the customer step the worker runs
(agents/customer_step.py: `on_event` for an event; `on_clock` at a customer's wake time),
with one in-memory `BudgetBook` in place of the Redis budget counters. The worker's wake
sorted set becomes a heap of (wake time, customer): a customer is stepped at the very
instant time matters to them, as a worker sweeping without pause would, and in the same order
(by time, then customer id, like the sorted set).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from agents.backtest.report import Tally
from agents.customer_step import Customer, Step, StepContext, on_clock, on_event
from agents.membership.state import MemberState
from agents.profile.fold import RfmPolicy
from agents.rules.contact_policy import BudgetBook
from agents.rules.state import CustomerRuleState, Decision
from schemas.events import Event
from schemas.membership import Programme
from schemas.profile import Profile
from schemas.rules import RuleSet

#: Stale heap entries (a customer re-scheduled) tolerated before the heap is rebuilt.
HEAP_SLACK = 4096


@dataclass
class WakeQueue:
    """The keeper's wake set kept in memory (the backtest, the golden replay): customers by
    their wake time, soonest first. A customer woken again leaves its old entry behind, skipped
    when it comes up; the heap is rebuilt when stale entries outnumber live ones."""

    _at: dict[str, datetime] = field(default_factory=dict)
    _heap: list[tuple[datetime, str]] = field(default_factory=list)

    def set(self, cid: str, wake: datetime | None) -> None:
        """When time next matters to `cid` (None: only an event will)."""
        if wake is None:
            self._at.pop(cid, None)
        elif self._at.get(cid) != wake:
            self._at[cid] = wake
            heapq.heappush(self._heap, (wake, cid))
            if len(self._heap) > 2 * len(self._at) + HEAP_SLACK:
                self._heap = [(w, c) for c, w in self._at.items()]
                heapq.heapify(self._heap)

    def soonest(self) -> datetime | None:
        return min(self._at.values(), default=None)

    def due(self, until: datetime, *, inclusive: bool) -> Iterator[tuple[str, datetime]]:
        """(customer, wake) of each wake before `until` (at it too, when `inclusive`), soonest
        first, each taken off as it is given; wakes set meanwhile come up in their turn."""
        while self._heap and (
            self._heap[0][0] < until or (inclusive and self._heap[0][0] == until)
        ):
            wake, cid = heapq.heappop(self._heap)
            if self._at.get(cid) != wake:
                continue  # woken again since this entry was pushed
            del self._at[cid]
            yield cid, wake


@dataclass
class ReplayStats:
    """What the replay went through."""

    events: int = 0  # applied
    duplicates: int = 0  # seen before (a producer retry stored twice), skipped like live
    segment_changes: int = 0
    wakeups: int = 0  # customers stepped by the clock (a timer, a delivery, R ageing)


@dataclass
class Replay:
    """Profiles, rule states and budgets of every customer, moved forward in event time."""

    rules: RuleSet
    policy: RfmPolicy
    #: decisions before this instant are made (they move state, cooldowns and budgets) but not
    #: kept: the replay's first stretch then only warms the profiles up
    report_from: datetime | None = None
    #: every reported decision is added here as it is made
    tally: Tally | None = None
    #: also keep the reported decisions in `decisions` (tests; a long replay need not)
    keep_decisions: bool = True
    #: ECRM_CONSENT_DEFAULT as the live worker has it: a channel the customer never spoke of
    consent_default: bool = True
    budget: BudgetBook = field(default_factory=BudgetBook)
    decisions: list[Decision] = field(default_factory=list)
    stats: ReplayStats = field(default_factory=ReplayStats)
    clock: datetime | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)
    states: dict[str, CustomerRuleState] = field(default_factory=dict)
    #: the membership programme (levels, points, tags move as live; its triggers fire)
    programme: Programme | None = None
    members: dict[str, MemberState] = field(default_factory=dict)
    _wakes: WakeQueue = field(default_factory=WakeQueue)

    def feed(self, event: Event, mark: datetime | None = None) -> None:
        """One historical event, in the order of decision. What fell due strictly before its
        time — or before its `mark`, the partition's clock as the keeper decides it
        (agents/profile/event_time.py) — happens first; then the event is applied at its own
        time (a B at the very deadline still cancels), or at its customer's last step if that
        was later (an event late in its topic changes nothing already decided)."""
        until = event.ts if mark is None else max(event.ts, mark)
        self._run_due(until, inclusive=False)
        now = until if self.clock is None else max(self.clock, until)
        self.clock = now
        self._event(event, now)

    def feed_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.feed(event)

    def feed_decided(self, decided: Iterable[tuple[Event, datetime | None]]) -> None:
        """(event, mark) pairs in the order of decision (`decision_order` of each partition,
        merged across partitions by mark: `history.in_decision_order`)."""
        for event, mark in decided:
            self.feed(event, mark)

    def advance(self, until: datetime) -> None:
        """The clock reaches `until`: everything due at or before it happens."""
        self._run_due(until, inclusive=True)
        self.clock = until if self.clock is None else max(self.clock, until)

    def next_due(self) -> datetime | None:
        """When the clock next has something to do."""
        return self._wakes.soonest()

    # -- the customer step, and the due heap ---------------------------------------------

    @property
    def ctx(self) -> StepContext:
        return StepContext(
            self.policy,
            self.rules,
            self.budget,
            consent_default=self.consent_default,
            programme=self.programme,
        )

    def _customer(self, cid: str) -> Customer:
        profile = self.profiles.get(cid)
        if profile is None:
            return Customer.new(cid)
        rules = self.states.get(cid) or CustomerRuleState(customer_id=cid)
        return Customer(profile, rules, self.members.get(cid))

    def _event(self, event: Event, now: datetime) -> None:
        """The keeper's batch step, for one customer's one event."""
        self._keep(on_event(self._customer(event.customer_id), [event], self.ctx))

    def _wake(self, cid: str, now: datetime) -> None:
        """The keeper's sweep step, for one due customer."""
        self.stats.wakeups += 1
        self._keep(on_clock(self._customer(cid), now, self.ctx))

    def _keep(self, step: Step) -> None:
        customer = step.customer
        cid = customer.customer_id
        self.profiles[cid] = customer.profile
        self.states[cid] = customer.rules
        if customer.member is not None and not customer.member.is_empty():
            self.members[cid] = customer.member
        self.stats.events += len(step.applied)
        self.stats.duplicates += len(step.duplicates)
        self.stats.segment_changes += len(step.changes)
        start = self.report_from
        for d in step.decisions:
            if start is not None and d.decided_at < start:
                continue
            if self.tally is not None:
                self.tally.add(d)
            if self.keep_decisions:
                self.decisions.append(d)
        self._wakes.set(cid, step.wake)

    def _run_due(self, until: datetime, *, inclusive: bool) -> None:
        for cid, wake in self._wakes.due(until, inclusive=inclusive):
            self.clock = wake if self.clock is None else max(self.clock, wake)
            self._wake(cid, wake)


def replay(
    rules: RuleSet,
    events: Iterable[Event],
    *,
    policy: RfmPolicy,
    end: datetime | None = None,
    report_from: datetime | None = None,
) -> Replay:
    """Replay time-ordered `events`, then run the clock to `end` (default: the last event)."""
    run = Replay(rules, policy, report_from=report_from)
    run.feed_all(events)
    last = end or run.clock
    if last is not None:
        run.advance(last)
    return run
