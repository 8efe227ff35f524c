"""One customer's step: events or the clock in, the new customer and what follows out.

The per-customer sequence lives here once, and both the worker (agents/profile/keeper.py,
which reads customers from Redis and commits the step's results in the batch's unit) and
the backtest (agents/backtest/replay.py, which keeps customers in memory and runs a
simulated clock) are I/O around it:

    step = on_event(customer, events, ctx)        # fold, re-rate, rules, segment moves
    step = on_clock(customer, now, ctx)           # at step.wake: re-rate, segment moves, timers
    step = advance(customer, until, ctx, inclusive=False)  # every wake-up before `until`
    step.customer, step.decisions, step.changes, step.wake, step.applied, step.duplicates

An event: fold it in (a duplicate changes nothing), re-rate R/F/M, let the rules see it
(`on_event`, with what the fold says they need: was it the first order), then — when the
segment moved — the segment-change rules. The clock: re-rate, the segment-change rules when
time moved the segment, then the rules' timers and deferred deliveries (`on_clock`). A
customer's next wake-up is the sooner of "time alone changes the segment" and the rules'
next timer. Budgets are booked in `ctx.budget` as decisions are made, so the caller decides
how widely a budget is shared (one Redis unit, or one whole replay).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from agents.profile.fold import RfmPolicy, apply_event, next_time_change, rerate
from agents.rules.contact_policy import BudgetBook
from agents.rules.engine import (
    clock_in_place,
    event_in_place,
    next_wakeup,
    segment_change_in_place,
)
from agents.rules.state import CustomerRuleState, Decision
from schemas.events import Event
from schemas.outputs import SegmentChange
from schemas.profile import Profile, empty_profile
from schemas.rules import RuleSet


@dataclass
class Customer:
    """What ecrm keeps about one customer: the profile and the rule state beside it."""

    profile: Profile
    rules: CustomerRuleState

    @classmethod
    def new(cls, customer_id: str) -> Customer:
        return cls(empty_profile(customer_id), CustomerRuleState(customer_id=customer_id))

    @property
    def customer_id(self) -> str:
        return self.profile.customer_id


@dataclass(frozen=True)
class StepContext:
    """What stays the same across customers: the RFM policy, the rules, the budget ledger,
    and the wall clock that history is judged by (None: nothing is history — the backtest
    replays history as if it were live)."""

    policy: RfmPolicy
    rules: RuleSet | None
    budget: BudgetBook
    wall: datetime | None = None
    #: whether a channel the customer never said anything about may be used
    #: (ECRM_CONSENT_DEFAULT; agents/rules/contact_policy.py)
    consent_default: bool = True


@dataclass
class Step:
    """What one step did to one customer."""

    customer: Customer
    applied: list[Event] = field(default_factory=list)
    duplicates: list[Event] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    changes: list[SegmentChange] = field(default_factory=list)
    #: the rule state is a new object (it changed and must be written)
    rules_changed: bool = False
    #: when time next matters to this customer (None: only a new event will)
    wake: datetime | None = None
    #: the rule state the step was given, once `customer.rules` is the step's own copy
    _given: CustomerRuleState | None = field(default=None, repr=False)

    def owned_rules(self) -> CustomerRuleState:
        """The customer's rule state, copied once per step so that the engine can change it in
        place for every event of the step (a copy per event cost more than the rules did).
        The state the step was given is never changed."""
        if self._given is None:
            self._given = self.customer.rules
            self.customer.rules = self._given.copied()
        return self.customer.rules

    def _done(self, ctx: StepContext) -> Step:
        """The wake-up; and the given rule state back when nothing changed it."""
        if self._given is not None and not self.rules_changed:
            self.customer.rules = self._given
        self.wake = wake_of(self.customer, ctx)
        return self


def on_event(
    customer: Customer, events: Iterable[Event], ctx: StepContext, *, wall: datetime | None = None
) -> Step:
    """The customer's events, applied in event-time order, each decided at its own time (or
    at the customer's last step, if that was later: a customer's clock never goes back), never
    past `wall`. So a backlog read an hour late decides as the events did when they happened,
    and the worker and the backtest decide alike. Whatever fell due for the customer strictly
    before an event's time happens first (a B at the very deadline still cancels)."""
    step = Step(customer)
    for event in sorted(events, key=lambda e: e.ts):
        as_of = customer.profile.as_of
        at = event.ts if as_of is None else max(event.ts, as_of)
        if wall is not None:
            at = min(at, wall)
        _advance(step, at, ctx, inclusive=False)
        _event(step, event, at, ctx)
    return step._done(ctx)


def on_clock(customer: Customer, now: datetime, ctx: StepContext) -> Step:
    """Time reached `now` for this customer, in one step."""
    step = Step(customer)
    _clock(step, now, ctx)
    return step._done(ctx)


def advance(customer: Customer, until: datetime, ctx: StepContext, *, inclusive: bool) -> Step:
    """Time reaches `until` for this customer moment by moment: a step at each instant it
    fell due (R ageing, a timer, a delivery), as a clock stepping through history does."""
    step = Step(customer)
    _advance(step, until, ctx, inclusive=inclusive)
    return step._done(ctx)


def _advance(step: Step, until: datetime, ctx: StepContext, *, inclusive: bool) -> None:
    wake = wake_of(step.customer, ctx)
    while wake is not None and (wake < until or (inclusive and wake == until)):
        _clock(step, wake, ctx)
        after = wake_of(step.customer, ctx)
        if after is not None and after <= wake:
            break  # nothing moved: never spin
        wake = after


def _event(step: Step, event: Event, now: datetime, ctx: StepContext) -> None:
    customer = step.customer
    profile = customer.profile
    applied = apply_event(profile, event)
    if applied is None:
        step.duplicates.append(event)
        return
    step.applied.append(event)
    rerate(profile, now, ctx.policy)
    if ctx.rules is not None:
        changed, found = event_in_place(
            ctx.rules,
            step.owned_rules(),
            applied.first_order,
            profile,
            event,
            now,
            budget=ctx.budget,
            wall=ctx.wall,
            consent_default=ctx.consent_default,
        )
        _take(step, changed, found, ctx)
    if profile.segment != applied.segment_before:
        change = SegmentChange.of(
            profile.customer_id,
            applied.segment_before,
            profile.segment,
            now,
            "event",
            event.event_id,
        )
        _segment_changed(step, change, now, ctx, event)


def _clock(step: Step, now: datetime, ctx: StepContext) -> None:
    customer = step.customer
    profile = customer.profile
    was = profile.segment
    rerate(profile, now, ctx.policy)
    if profile.segment != was:
        change = SegmentChange.of(profile.customer_id, was, profile.segment, now, "time", None)
        _segment_changed(step, change, now, ctx)
    if ctx.rules is not None:
        found = clock_in_place(
            ctx.rules,
            step.owned_rules(),
            profile,
            now,
            budget=ctx.budget,
            wall=ctx.wall,
            consent_default=ctx.consent_default,
        )
        _take(step, True, found, ctx)


def wake_of(customer: Customer, ctx: StepContext) -> datetime | None:
    """The sooner of: time alone changes the segment; a rule's timer or delivery is due."""
    segment = next_time_change(customer.profile, ctx.policy)
    if ctx.rules is None:
        return segment
    rules = next_wakeup(customer.rules)
    if segment is None or rules is None:
        return segment if rules is None else rules
    return min(segment, rules)


def _segment_changed(
    step: Step,
    change: SegmentChange,
    now: datetime,
    ctx: StepContext,
    event: Event | None = None,
) -> None:
    step.changes.append(change)
    if ctx.rules is None:
        return
    changed, found = segment_change_in_place(
        ctx.rules,
        step.owned_rules(),
        step.customer.profile,
        change,
        now,
        budget=ctx.budget,
        wall=ctx.wall,
        event=event,
        consent_default=ctx.consent_default,
    )
    _take(step, changed, found, ctx)


def _take(step: Step, changed: bool, found: list[Decision], ctx: StepContext) -> None:
    """The engine says whether it changed the step's rule state; what it decided is booked at
    once, so the next decision (this customer's or another's) sees the budget."""
    if changed:
        step.rules_changed = True
    if found:
        ctx.budget.book(found)
        step.decisions.extend(found)
