"""One customer's step: events or the clock in, the new customer and what follows out.

The per-customer sequence lives here once, and both the worker (agents/profile/keeper.py,
which reads customers from Redis and commits the step's results in the batch's unit) and
the backtest (agents/backtest/replay.py, which keeps customers in memory and runs a
simulated clock) are I/O around it:

    step = on_event(customer, events, ctx)        # fold, re-rate, rules, segment moves
    step = on_clock(customer, now, ctx)           # at step.wake: re-rate, segment moves, waits
    step = advance(customer, until, ctx, inclusive=False)  # every wake before `until`
    step.customer, step.decisions, step.changes, step.wake, step.applied, step.duplicates

An event: fold it in (a duplicate changes nothing), re-rate R/F/M, let the rules see it
(`on_event`, with what the fold says they need: was it the first order), then — when the
segment moved — the segment-change rules. The clock: re-rate, the segment-change rules when
time moved the segment, then the rules' waits and deferred deliveries (`on_clock`). A
customer's wake time is the soonest of "time alone changes the segment", the end of a rule's
wait or a deferred delivery, and (with a programme) the member's next change. Budgets are booked in `ctx.budget` as decisions are made, so the caller decides
how widely a budget is shared (one Redis unit, or one whole replay).

With a membership programme (`ctx.programme`), each event and each wake also moves the
member (agents/membership/step.py: points earned, unlocked, expired, levels, rule tags)
before the rules see the profile, so `if: points / level / tags` read what is true now; a
rule's `kind: points` action is credited to the ledger once per action id; and the
membership rules (agents/rules/member_triggers.py: level_change, level_expiring,
points_expiring, birthday) are decided on what moved. `step.movements` are the member's
movements, for `ecrm.member-changes` and ClickHouse.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import EllipsisType

from agents.membership import step as membership
from agents.membership.state import MemberState, Movement
from agents.profile.fold import RfmPolicy, apply_event, next_time_change, rerate
from agents.rules.contact_policy import BudgetBook
from agents.rules.engine import (
    clock_in_place,
    event_in_place,
    next_wake,
    segment_change_in_place,
)
from agents.rules.member_triggers import member_in_place, member_rules, member_wake
from agents.rules.state import CustomerRuleState, Decision
from schemas.events import MEMBER_REQUESTS, Event
from schemas.membership import Programme
from schemas.outputs import SegmentChange
from schemas.profile import Profile, empty_profile
from schemas.rules import RuleSet


@dataclass
class Customer:
    """What ecrm keeps about one customer: the profile, and the rule state and the member
    state beside it (None: not read, or nothing kept yet)."""

    profile: Profile
    rules: CustomerRuleState
    member: MemberState | None = None

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
    #: the membership programme (None: no membership — levels, points and tags stay as read)
    programme: Programme | None = None


@dataclass
class Step:
    """What one step did to one customer."""

    customer: Customer
    applied: list[Event] = field(default_factory=list)
    duplicates: list[Event] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    changes: list[SegmentChange] = field(default_factory=list)
    #: the member's movements (points, level, tags), in the order they happened
    movements: list[Movement] = field(default_factory=list)
    #: the rule state is a new object (it changed and must be written)
    rules_changed: bool = False
    #: the member state was handed to what may change it (`member()`); when not, it is the
    #: state as read, and needs no writing (nor encoding) again
    member_touched: bool = False
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

    def member(self) -> MemberState:
        """The customer's member state (a new one the first time), to change."""
        self.member_touched = True
        customer = self.customer
        if customer.member is None:
            customer.member = MemberState(customer_id=customer.customer_id)
        return customer.member

    def _done(self, ctx: StepContext, wake: datetime | None | EllipsisType = ...) -> Step:
        """The wake-up (`wake`: already worked out on the customer as the step leaves it); and
        the given rule state back when nothing changed it."""
        if self._given is not None and not self.rules_changed:
            self.customer.rules = self._given
        self.wake = wake_of(self.customer, ctx) if isinstance(wake, EllipsisType) else wake
        return self


def on_event(
    customer: Customer,
    events: Iterable[Event],
    ctx: StepContext,
    *,
    wall: datetime | None = None,
    marks: Sequence[datetime | None] | None = None,
) -> Step:
    """The customer's events, applied in the order given — the order of decision
    (agents/profile/event_time.py: offset order within a topic, merged across topics) — each
    decided at its own time (or at the customer's last step, if that was later: a customer's
    clock never goes back), never past `wall`. So a backlog read an hour late decides as the
    events did when they happened, and the worker and the backtest decide alike, however the
    batches fell. Whatever fell due for the customer strictly before an event's time, or
    before its `mark` (the partition's clock as it is decided), happens first (a B at the
    very deadline still cancels); so an event older than what was decided before it changes
    nothing that was decided."""
    step = Step(customer)
    for n, event in enumerate(events):
        mark = marks[n] if marks is not None else None
        if mark is not None and mark > event.ts:  # late in its topic: its turn is at the mark
            _advance(step, mark if wall is None else min(mark, wall), ctx, inclusive=False)
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
    woke (R ageing, a rule's wait, a delivery), as a clock stepping through history does."""
    step = Step(customer)
    wake = _advance(step, until, ctx, inclusive=inclusive)
    return step._done(ctx, wake)


def _advance(step: Step, until: datetime, ctx: StepContext, *, inclusive: bool) -> datetime | None:
    """Every wake-up before `until` (at it too, when `inclusive`); the customer's wake-up as
    this leaves them (worked out last, on the state as it is now)."""
    wake = wake_of(step.customer, ctx)
    while wake is not None and (wake < until or (inclusive and wake == until)):
        _clock(step, wake, ctx)
        after = wake_of(step.customer, ctx)
        if after is not None and after <= wake:
            return after  # nothing moved: never spin
        wake = after
    return wake


def _event(step: Step, event: Event, now: datetime, ctx: StepContext) -> None:
    customer = step.customer
    profile = customer.profile
    if isinstance(event, MEMBER_REQUESTS):
        _member_request(step, event, now, ctx)
        return
    applied = apply_event(profile, event)
    if applied is None:
        step.duplicates.append(event)
        return
    step.applied.append(event)
    rerate(profile, now, ctx.policy)
    mark = len(step.decisions)
    moves = _member_moves(step, event, now, ctx)
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
    relevant = ctx.programme is not None and membership.concerns(ctx.programme, event)
    _member_follows(step, moves, mark, now, ctx, event.origin, relevant)


def _member_request(step: Step, event: Event, now: datetime, ctx: StepContext) -> None:
    """A points or tag request: applied once (its event_id is the key); the profile's RFM and
    behaviour do not move, it is the shop's doing, not the customer's."""
    if ctx.programme is None or membership.is_duplicate(step.member(), event):
        step.duplicates.append(event)
        return
    step.applied.append(event)
    mark = len(step.decisions)
    moves = _member_moves(step, event, now, ctx)
    _member_follows(step, moves, mark, now, ctx, event.origin)


def _member_moves(
    step: Step, event: Event | None, now: datetime, ctx: StepContext
) -> list[Movement]:
    """The member side of an event (None: of the clock), and the profile's member fields."""
    prog = ctx.programme
    if prog is None or not membership.concerns(prog, event):
        return []
    member, profile = step.member(), step.customer.profile
    if event is None:
        moves = membership.on_time(member, prog, now)
    else:
        moves = membership.on_event(member, prog, profile, event, now)
    return moves + membership.finish(member, prog, profile, now, event)


#: rounds of "a membership rule credits points, which moves the level, which starts a rule"
MEMBER_ROUNDS = 4


def _member_follows(
    step: Step,
    moves: list[Movement],
    mark: int,
    now: datetime,
    ctx: StepContext,
    origin: str | None,
    relevant: bool = True,
) -> None:
    """After the rules: their points actions credited (once per action id), the membership
    rules decided on what moved, and the movements kept. `relevant`: the clock, or an event
    that can move the member (agents/membership/step.py `concerns`)."""
    prog = ctx.programme
    if prog is None:
        return
    if not moves and not _points_fired(step, mark):
        if not (ctx.rules and member_rules(ctx.rules)) or not relevant:
            # nothing moved and nothing to credit; a view cannot open a warning's window
            # (the window's opening is a wake of its own)
            return
    member, profile = step.member(), step.customer.profile
    new = moves
    for _ in range(MEMBER_ROUNDS):
        if ctx.rules is not None and member_rules(ctx.rules):
            found = member_in_place(
                ctx.rules,
                step.owned_rules(),
                profile,
                member,
                prog,
                new,
                now,
                budget=ctx.budget,
                wall=ctx.wall,
                origin=origin,
            )
            _take(step, bool(found), found, ctx)
        credited: list[Movement] = []
        for d in step.decisions[mark:]:
            if d.outcome == "fired" and d.kind == "points":
                points = int(d.params["points"])
                credited += membership.credit_action(member, prog, d.action_id, points, now)
            elif d.outcome == "fired" and d.kind == "tag":
                add = str(d.params.get("op", "add")) != "remove"
                tag = str(d.params["tag"])
                credited += membership.tag_action(member, profile, d.action_id, tag, add, now)
        mark = len(step.decisions)
        if not credited:
            break
        credited += membership.finish(member, prog, profile, now)
        moves = moves + credited
        new = credited
    step.movements.extend(moves)


def _points_fired(step: Step, mark: int) -> bool:
    """A rule fired an action the member state carries out (points credited, a tag set)."""
    return any(d.kind in ("points", "tag") and d.outcome == "fired" for d in step.decisions[mark:])


def _clock(step: Step, now: datetime, ctx: StepContext) -> None:
    customer = step.customer
    profile = customer.profile
    was = profile.segment
    rerate(profile, now, ctx.policy)
    mark = len(step.decisions)
    moves = _member_moves(step, None, now, ctx)
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
    _member_follows(step, moves, mark, now, ctx, None)


def wake_of(customer: Customer, ctx: StepContext) -> datetime | None:
    """The soonest of: time alone changes the segment; a rule's wait ends or a delivery is due;
    time alone moves the member (a lot, the level, a rule tag) or opens a membership rule's
    window (a warning, a birthday)."""
    profile = customer.profile
    moments = [next_time_change(profile, ctx.policy)]
    if ctx.rules is not None:
        moments.append(next_wake(customer.rules))
    prog = ctx.programme
    if prog is not None:
        member = customer.member or MemberState(customer_id=customer.customer_id)
        if not member.is_empty() or prog.tags:
            moments.append(membership.next_change(member, prog, profile))
        if ctx.rules is not None and profile.as_of is not None:
            if not member.is_empty() or profile.birthday:
                moments.append(member_wake(ctx.rules, member, prog, profile, profile.as_of))
    return min((m for m in moments if m is not None), default=None)


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
