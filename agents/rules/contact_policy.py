"""The guards between "a rule wants to act" and "the customer hears from us".

When rules want to act at the same trigger they are taken highest `priority` first (file order
breaks ties), each through, in order:

0. history — the trigger is history (`historical`: imported, or older than the policy's
   `max_event_age` by the wall clock) → suppressed; it touches no cooldown, contact or budget,
   since the customer hears nothing (and a held-out verdict would skew the measured uplift);
0. consent — the action reaches the customer on a channel they have not consented to (their
   latest word on it, `ecrm.customers`; ECRM_CONSENT_DEFAULT when they never said) →
   suppressed, reason `no_consent`; like history it touches nothing, and it comes before the
   holdout so that both groups hold only customers who may be contacted;
1. cooldown — the rule fired (or held the customer out) less than `cooldown` ago → suppressed;
2. holdout — the customer is in the rule's control group → held_out (starts the cooldown, so
   both groups are exposed alike; uses no contact and no budget);
3. contact cap — the customer already has `per_day` contacts on the day of delivery → suppressed;
4. quiet hours — delivery moves to the end of the quiet period (outcome deferred, not dropped);
5. budget — the rule's daily count or coupon value across all customers is spent → suppressed.

Only actions with a channel are contacts (count toward the cap, wait out quiet hours); a tag,
or a coupon put silently into the account, is not. Both the cap and the budget count on the
shop-local day of delivery. The budget is global, so it is an input (`BudgetLedger`), and every
Decision says how it moves it (`budget_delta`) for the caller to book.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

from agents.rules.state import CustomerRuleState, Decision, Deferred, Outcome, action_id_for
from schemas.events import IMPORT_ORIGIN
from schemas.profile import Profile
from schemas.rules import Policy, Rule, RuleSet


@dataclass(frozen=True)
class Consent:
    """The channels a customer may be contacted on: their latest word per channel, else the
    install's default (ECRM_CONSENT_DEFAULT, docs/privacy.md). An action with no channel
    contacts nobody and needs no consent."""

    said: Mapping[str, bool]
    default: bool = True

    def allows(self, channel: str | None) -> bool:
        return channel is None or self.said.get(channel, self.default)


#: Consent as ecrm had it before customers could give or refuse it: every channel.
ANY_CHANNEL = Consent({})


def consent_of(profile: Profile, default: bool) -> Consent:
    """What the profile's consent marks (schemas/profile.py) allow."""
    if not profile.consent:
        return ANY_CHANNEL if default else Consent({}, False)
    return Consent({channel: m.granted for channel, m in profile.consent.items()}, default)


def historical(at: datetime, origin: str | None, wall: datetime | None, policy: Policy) -> bool:
    """Whether a trigger is history, which updates state but never markets: it was imported
    (`origin: import`), or `at` (when it happened or fell due) is more than `max_event_age`
    before the wall clock (exactly that old is still live). `wall` None judges nothing
    historical: a backtest replays history as if it were live."""
    if wall is None:
        return False
    return origin == IMPORT_ORIGIN or wall - at > policy.max_event_age


def holdout(rule_id: str, customer_id: str, pct: float) -> bool:
    """Whether the customer is in the rule's control group: SHA-256 of "rule|customer" read as
    a number uniform in [0, 1), below `pct`. Deterministic across workers and restarts."""
    digest = hashlib.sha256(f"{rule_id}|{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < pct


def shop_day(at: datetime, zone: ZoneInfo) -> date:
    return at.astimezone(zone).date()


def quiet_until(now: datetime, policy: Policy) -> datetime | None:
    """The end of the quiet period `now` falls in (UTC), or None outside quiet hours."""
    quiet = policy.quiet_hours
    if quiet is None:
        return None
    zone = policy.quiet_zone
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        inside, end_day = quiet.start <= clock < quiet.end, local.date()
    else:  # spans midnight, e.g. 22:00-08:00
        inside = clock >= quiet.start or clock < quiet.end
        end_day = local.date() + timedelta(days=1) if clock >= quiet.start else local.date()
    if not inside:
        return None
    return datetime.combine(end_day, quiet.end, tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class Spend:
    """Actions and coupon value a rule has used on one day."""

    count: int = 0
    value: Decimal = Decimal(0)

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.count + other.count, self.value + other.value)


class BudgetLedger(Protocol):
    """What each rule has spent per shop day, across all customers (the worker: Redis)."""

    def spent(self, rule_id: str, day: date) -> Spend: ...


class BudgetBook:
    """An in-memory BudgetLedger: for tests and backtests, or a snapshot of the shared counters
    (e.g. read from Redis before deciding) so the deciding itself stays free of I/O."""

    def __init__(self, spent: Mapping[tuple[str, date], Spend] | None = None) -> None:
        self._spent: dict[tuple[str, date], Spend] = dict(spent or {})

    def spent(self, rule_id: str, day: date) -> Spend:
        return self._spent.get((rule_id, day), Spend())

    def book(self, decisions: Iterable[Decision]) -> None:
        for key, spend in budget_spend(decisions).items():
            self._spent[key] = self._spent.get(key, Spend()) + spend


def budget_spend(decisions: Iterable[Decision]) -> dict[tuple[str, date], Spend]:
    """How these decisions move the rules' budgets: (rule_id, day) -> count and value to add
    (negative when a deferred action is cancelled before delivery)."""
    moves: dict[tuple[str, date], Spend] = {}
    for d in decisions:
        if d.budget_delta and d.budget_day is not None:
            value = (d.coupon_value or Decimal(0)) * d.budget_delta
            key = (d.rule_id, d.budget_day)
            moves[key] = moves.get(key, Spend()) + Spend(d.budget_delta, value)
    return moves


@dataclass(frozen=True)
class Candidate:
    """A rule that wants to act for this customer now, and what made it want to."""

    rule: Rule
    order: int  # position in the file, to break priority ties
    trigger: str  # identity of the trigger, hashed into the action_id
    trigger_event_id: str | None
    trigger_at: datetime | None = None
    key: str | None = None  # the timer key whose B may still cancel a deferred delivery
    historical: bool = False  # the trigger is history: recorded, never acted on


def decide(
    candidates: Iterable[Candidate],
    state: CustomerRuleState,
    rules: RuleSet,
    now: datetime,
    ledger: BudgetLedger,
    consent: Consent = ANY_CHANNEL,
) -> list[Decision]:
    """Put each candidate through the guards, highest priority first; `state` is updated."""
    booked: dict[tuple[str, date], Spend] = {}  # spent by earlier candidates of this call
    ordered = sorted(candidates, key=lambda c: (-c.rule.priority, c.order, c.trigger))
    return [_decide_one(c, state, rules.policy, now, ledger, booked, consent) for c in ordered]


def _decide_one(
    c: Candidate,
    state: CustomerRuleState,
    policy: Policy,
    now: datetime,
    ledger: BudgetLedger,
    booked: dict[tuple[str, date], Spend],
    consent: Consent,
) -> Decision:
    rule, action = c.rule, c.rule.action
    if c.historical:
        return _verdict(c, state, now, "suppressed", "historical")
    if not consent.allows(action.channel):
        return _verdict(c, state, now, "suppressed", "no_consent")
    last = state.last_fired.get(rule.id)
    if rule.cooldown is not None and last is not None and now - last < rule.cooldown:
        return _verdict(c, state, now, "suppressed", "cooldown")
    if holdout(rule.id, state.customer_id, rule.holdout):
        state.last_fired[rule.id] = now
        return _verdict(c, state, now, "held_out", "holdout")
    deliver_at = (quiet_until(now, policy) if action.is_contact else None) or now
    day = shop_day(deliver_at, policy.zone)
    cap = policy.contact_cap
    if action.is_contact and cap is not None and state.contacts.get(day, 0) >= cap.per_day:
        return _verdict(c, state, now, "suppressed", "contact_cap")
    budget_day: date | None = None
    if rule.budget is not None:
        cost = Spend(1, action.coupon_value or Decimal(0))
        after = ledger.spent(rule.id, day) + booked.get((rule.id, day), Spend()) + cost
        over_count = rule.budget.per_day is not None and after.count > rule.budget.per_day
        limit = rule.budget.value_per_day
        if over_count or (limit is not None and after.value > limit):
            return _verdict(c, state, now, "suppressed", "budget")
        booked[(rule.id, day)] = booked.get((rule.id, day), Spend()) + cost
        budget_day = day
    state.last_fired[rule.id] = now
    if action.is_contact:
        state.contacts[day] = state.contacts.get(day, 0) + 1
    if deliver_at <= now:
        return _verdict(c, state, now, "fired", None, budget_day=budget_day)
    decision = _verdict(
        c, state, now, "deferred", "quiet_hours", deliver_at=deliver_at, budget_day=budget_day
    )
    state.deferred.append(
        Deferred(
            action_id=decision.action_id,
            rule_id=rule.id,
            key=c.key,
            trigger_event_id=c.trigger_event_id,
            trigger_at=c.trigger_at,
            decided_at=now,
            deliver_at=deliver_at,
            kind=action.kind,
            channel=action.channel,
            params=dict(action.params),
            priority=rule.priority,
            coupon_value=action.coupon_value,
            budget_day=budget_day,
        )
    )
    return decision


def _verdict(
    c: Candidate,
    state: CustomerRuleState,
    now: datetime,
    outcome: Outcome,
    reason: str | None,
    *,
    deliver_at: datetime | None = None,
    budget_day: date | None = None,
) -> Decision:
    rule, action = c.rule, c.rule.action
    return Decision(
        rule_id=rule.id,
        customer_id=state.customer_id,
        action_id=action_id_for(rule.id, state.customer_id, c.trigger),
        outcome=outcome,
        reason=reason,
        kind=action.kind,
        channel=action.channel,
        params=dict(action.params),
        trigger_event_id=c.trigger_event_id,
        decided_at=now,
        deliver_at=deliver_at,
        priority=rule.priority,
        coupon_value=action.coupon_value,
        budget_delta=1 if budget_day is not None else 0,
        budget_day=budget_day,
    )


def release(deferred: Deferred, state: CustomerRuleState, now: datetime) -> Decision:
    """A deferred action whose quiet hours ended: fired, with the id it was decided with."""
    return _from_deferred(deferred, state, now, "fired", None, budget_delta=0, released=True)


def withdraw(
    deferred: Deferred, state: CustomerRuleState, now: datetime, reason: str, zone: ZoneInfo
) -> Decision:
    """A deferred action that will not be delivered after all (its B came, or the rule was
    switched off): its contact, budget and cooldown are given back."""
    day = shop_day(deferred.deliver_at, zone)
    if state.contacts.get(day, 0) > 0 and deferred.channel is not None:
        state.contacts[day] -= 1
    if state.last_fired.get(deferred.rule_id) == deferred.decided_at:
        del state.last_fired[deferred.rule_id]
    delta = -1 if deferred.budget_day is not None else 0
    return _from_deferred(deferred, state, now, "suppressed", reason, budget_delta=delta)


def _from_deferred(
    d: Deferred,
    state: CustomerRuleState,
    now: datetime,
    outcome: Outcome,
    reason: str | None,
    *,
    budget_delta: int,
    released: bool = False,
) -> Decision:
    state.deferred = [x for x in state.deferred if x.action_id != d.action_id]
    return Decision(
        rule_id=d.rule_id,
        customer_id=state.customer_id,
        action_id=d.action_id,
        outcome=outcome,
        reason=reason,
        kind=d.kind,
        channel=d.channel,
        params=dict(d.params),
        trigger_event_id=d.trigger_event_id,
        decided_at=now,
        deliver_at=d.deliver_at,
        priority=d.priority,
        coupon_value=d.coupon_value,
        budget_delta=budget_delta,
        budget_day=d.budget_day,
        released=released,
    )
