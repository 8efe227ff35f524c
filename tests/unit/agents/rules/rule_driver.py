"""Drives the pure rules engine the way the worker does — fold the event into the profile, then
decide — with the clock passed in; shared by the rules-engine and contact-policy tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from agents.profile.fold import RfmPolicy, apply_event, refresh
from agents.rules.engine import (
    BudgetBook,
    CustomerRuleState,
    Decision,
    on_clock,
    on_event,
    on_segment_change,
)
from schemas.events import BrowseEvent, CartEvent, Event, OrderEvent
from schemas.outputs import SegmentChange
from schemas.profile import empty_profile
from schemas.rules import RuleSet, load_rules, parse_rules

EXAMPLE = Path(__file__).resolve().parents[4] / "rules" / "example.yaml"

NOON = datetime(2024, 5, 1, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
MIN, SEC, HOUR, DAY = (
    timedelta(minutes=1),
    timedelta(seconds=1),
    timedelta(hours=1),
    timedelta(days=1),
)

ABANDONED_CART = """
  - id: abandoned-cart
    when: {event: cart, not_followed_by: {event: orders, where: {status: paid}}, within: 30m}
    cooldown: 7d
    priority: 50
    budget: {per_day: 500, value_per_day: 5000}
    action: {kind: coupon, channel: sms, params: {value: 10, threshold: 99, valid_for: 48h}}
"""
WELCOME = """
  - id: welcome
    when: {event: orders, where: {status: paid}, first_order: true}
    priority: 30
    action: {kind: message, channel: sms, params: {template: welcome}}
"""
THANKS = """
  - id: thanks
    when: {event: orders, where: {status: paid, amount: {gte: 500}}}
    priority: 25
    action: {kind: points, channel: inbox, params: {points: 200}}
"""
WIN_BACK = """
  - id: win-back
    when: {segment_change: {from: [important_value], to: [important_keep, important_retain]}}
    action: {kind: coupon, channel: wechat, params: {value: 30, valid_for: 7d}}
"""
BROWSED = """
  - id: browsed
    when:
      event: browse
      count: {at_least: 3, within: 24h}
      per: sku
      unless: {event: cart}
    action: {kind: message, channel: push, params: {template: still_looking}}
"""
QUIET_POLICY = 'quiet_hours: {start: "22:00", end: "08:00"}'


def example() -> RuleSet:
    return load_rules(EXAMPLE)


def ruleset(*rules: str, policy: str = "") -> RuleSet:
    return parse_rules("policy:\n  " + policy + "\nrules:\n" + "".join(rules))


@dataclass
class Customer:
    """One customer's profile and rule state, threaded through the engine like the worker does."""

    rules: RuleSet
    customer_id: str = "c1"
    ledger: BudgetBook = field(default_factory=BudgetBook)
    decisions: list[Decision] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.profile = empty_profile(self.customer_id)
        self.state = CustomerRuleState(customer_id=self.customer_id)

    def does(
        self, event: Event, now: datetime | None = None, wall: datetime | None = None
    ) -> list[Decision]:
        """`wall` None: nothing is judged history (as in a backtest)."""
        profile = self.profile.model_copy(deep=True)
        applied = apply_event(profile, event)
        self.profile = refresh(profile, now or event.ts, RfmPolicy())
        first_order = applied is not None and applied.first_order
        self.state, out = on_event(
            self.rules,
            self.state,
            first_order,
            self.profile,
            event,
            now or event.ts,
            budget=self.ledger,
            wall=wall,
        )
        return self._keep(out)

    def clock(self, now: datetime, wall: datetime | None = None) -> list[Decision]:
        self.state, out = on_clock(
            self.rules, self.state, self.profile, now, budget=self.ledger, wall=wall
        )
        return self._keep(out)

    def moves(
        self,
        before: str,
        after: str,
        at: datetime,
        wall: datetime | None = None,
        event: Event | None = None,
    ) -> list[Decision]:
        change = SegmentChange.model_validate(
            {
                "customer_id": self.customer_id,
                "from": before,
                "to": after,
                "at": at,
                "cause": "time" if event is None else "event",
                "event_id": None if event is None else event.event_id,
            }
        )
        self.state, out = on_segment_change(
            self.rules,
            self.state,
            self.profile,
            change,
            at,
            budget=self.ledger,
            wall=wall,
            event=event,
        )
        return self._keep(out)

    def _keep(self, out: list[Decision]) -> list[Decision]:
        self.ledger.book(out)
        self.decisions += out
        return out


def cart(event_id: str, at: datetime, sku: str = "s1", customer: str = "c1") -> CartEvent:
    return CartEvent(
        event_id=event_id, customer_id=customer, ts=at, sku=sku, qty=1, price=Decimal("50")
    )


def paid(
    event_id: str,
    at: datetime,
    amount: str = "120",
    skus: list[str] | None = None,
    customer: str = "c1",
) -> OrderEvent:
    items = [{"sku": s, "qty": 1, "price": amount} for s in skus] if skus else None
    return OrderEvent.model_validate(
        {"event_id": event_id, "customer_id": customer, "ts": at, "order_id": f"o-{event_id}"}
        | {"status": "paid", "amount": amount, "items": items}
    )


def view(event_id: str, at: datetime, sku: str = "s1") -> BrowseEvent:
    return BrowseEvent(event_id=event_id, customer_id="c1", ts=at, sku=sku)


def outcomes(decisions: list[Decision]) -> list[tuple[str, str, str | None]]:
    return [(d.rule_id, d.outcome, d.reason) for d in decisions]
