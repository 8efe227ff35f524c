"""How the demo's synthetic shoppers answer a coupon: the stated model its measured uplift
rests on (`ecrm demo` prints it, docs/zh/快速开始.md explains it).

The traffic is generated ahead of time while the coupon is decided by the live worker; the
generator still knows who got it, because the rule's holdout is a deterministic hash of rule
and customer (agents/rules/contact_policy.py `holdout`) and the rule's wait and cooldown can
be replayed here. Draws come from a random stream of their own (`Answers.rng`), so the shop
is the same with or without the effect.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from agents.rules.contact_policy import holdout
from schemas.rule_values import parse_duration
from schemas.rules import Policy, Rule


@dataclass(frozen=True)
class CouponResponse:
    """How shoppers answer an abandoned-cart coupon: the model the demo's uplift measures.

    A session that leaves items in the cart without a paid order is an abandoned cart; the
    rule decides `wait` after the last cart add (unless the customer's previous decision is
    less than `cooldown` old). Then, within `window` of the decision, the shopper buys that
    cart with probability `base` — or `base + lift` when they are not in the rule's holdout
    (they got the coupon, and use it: `value` off when the cart reaches `threshold`)."""

    rule_id: str = "abandoned-cart"
    holdout: float = 0.10
    wait: timedelta = timedelta(minutes=30)
    cooldown: timedelta | None = timedelta(days=7)
    window: timedelta = timedelta(hours=48)
    base: float = 0.10
    lift: float = 0.20
    value: Decimal = Decimal(10)
    threshold: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if not (0 <= self.base <= 1 and 0 <= self.base + self.lift <= 1):
            raise ValueError("need 0 <= base <= 1 and 0 <= base + lift <= 1")

    @classmethod
    def for_rule(cls, rule: Rule, policy: Policy, *, base: float, lift: float) -> CouponResponse:
        """The model for a "cart not followed by a paid order" coupon rule of a rules file:
        its holdout, wait and cooldown, its coupon, and a return within both the coupon's
        validity and the attribution window (so the purchase is the rule's to measure)."""
        if rule.when.within is None or rule.action.kind != "coupon":
            raise ValueError(f"rule {rule.id} is not a coupon after a wait")
        params = rule.action.params
        valid = params.get("valid_for")
        valid_for = parse_duration(valid) if valid is not None else policy.attribution_window
        return cls(
            rule_id=rule.id,
            holdout=rule.holdout,
            wait=rule.when.within,
            cooldown=rule.cooldown,
            window=min(valid_for, policy.attribution_window),
            base=base,
            lift=lift,
            value=Decimal(str(params.get("value", 0))),
            threshold=Decimal(str(params.get("threshold", 0))),
        )

    def coupon_reaches(self, customer_id: str) -> bool:
        """Not held out: the rules engine's own assignment (a hash of rule and customer)."""
        return not holdout(self.rule_id, customer_id, self.holdout)

    def describe(self) -> str:
        cooldown = f", at most once per {_span(self.cooldown)}" if self.cooldown else ""
        return (
            f"a shopper who leaves a cart ({self.rule_id}: no paid order within "
            f"{_span(self.wait)}{cooldown}) buys it within {_span(self.window)} with "
            f"probability {self.base:.0%} without the coupon ({self.holdout:.0%} held out), "
            f"{self.base + self.lift:.0%} with it (+{self.lift:.0%} points)"
        )


def _span(span: timedelta) -> str:
    for unit, size in (("d", timedelta(days=1)), ("h", timedelta(hours=1))):
        if span % size == timedelta(0) and span >= 3 * size:
            return f"{span // size}{unit}"
    return f"{span // timedelta(minutes=1)}m"


class Answers:
    """The response model's own state: each customer's last decision, for the cooldown."""

    def __init__(self, model: CouponResponse, rng: random.Random) -> None:
        self.model = model
        self.rng = rng
        self.decided: dict[str, int] = {}  # customer -> epoch ms of their last decision
        self.sent: set[str] = set()  # event_ids of the comeback orders (sent as they are)

    def comeback(self, customer_id: str, last_cart_at: int) -> int | None:
        """When the shopper comes back for an abandoned cart, or None when they don't."""
        m = self.model
        decided_at = last_cart_at + m.wait // timedelta(milliseconds=1)
        last = self.decided.get(customer_id)
        cooldown = m.cooldown // timedelta(milliseconds=1) if m.cooldown else 0
        if last is not None and decided_at - last < cooldown:
            return None  # suppressed by the cooldown: no coupon, no control group either
        self.decided[customer_id] = decided_at
        chance = m.base + (m.lift if m.coupon_reaches(customer_id) else 0.0)
        if self.rng.random() >= chance:
            return None
        window_ms = m.window // timedelta(milliseconds=1)
        return decided_at + self.rng.randrange(60_000, max(window_ms - 60_000, 60_001))


__all__ = ["Answers", "CouponResponse"]
