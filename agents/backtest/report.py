"""What a backtest's decisions add up to, per rule: would-fire count, customers reached, coupon
cost, suppressions by reason, held out, and how many customers two rules would both reach.

Pure: decisions in (agents/backtest/replay.py makes them), a report out. A deferred action (quiet
hours) counts as fired once, when it is released; withdrawn before delivery, it counts under
its withdrawal reason (`cancelled`: its B came; `rule_disabled`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from itertools import combinations
from typing import Any

from agents.rules.state import Decision
from schemas.rules import RuleSet

#: How much history before `since` a backtest replays, unreported, unless told otherwise — the
#: same for `ecrm rules backtest` and the dashboard's editor, and said in every report.
#: Enough for carts, counts, cooldowns and segments (R ages out after ECRM_R_HIGH_DAYS);
#: `first_order` and F/M are exact only with a warm-up as long as the RFM window.
DEFAULT_WARM_UP = timedelta(days=90)


@dataclass(frozen=True)
class RuleOutcome:
    """One rule's totals over the replay."""

    rule_id: str
    enabled: bool
    fired: int  # actions that would have gone out (a deferred one once, when released)
    customers: int  # distinct customers reached by a fired action
    coupon_cost: Decimal  # coupons sent x value, as live (clickhouse/041_…coupon_cost.sql)
    held_out: int  # decisions for the rule's control group
    deferred: int  # decided in quiet hours and moved to their end
    pending: int  # deferred and still undelivered when the replay ended
    suppressed: dict[str, int] = field(default_factory=dict)  # reason -> decisions

    def as_json(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "enabled": self.enabled,
            "fired": self.fired,
            "customers": self.customers,
            "coupon_cost": str(self.coupon_cost),
            "held_out": self.held_out,
            "deferred": self.deferred,
            "pending": self.pending,
            "suppressed": dict(sorted(self.suppressed.items())),
        }


@dataclass(frozen=True)
class BacktestReport:
    """Per rule in file order, and the overlap of every pair of rules that share customers."""

    rules: list[RuleOutcome]
    #: (rule a, rule b) in file order -> customers reached by both; pairs sharing none left out
    overlap: dict[tuple[str, str], int]

    def outcome(self, rule_id: str) -> RuleOutcome:
        return next(r for r in self.rules if r.rule_id == rule_id)

    def as_json(self) -> dict[str, Any]:
        return {
            "rules": [r.as_json() for r in self.rules],
            "overlap": [{"rules": [a, b], "customers": n} for (a, b), n in self.overlap.items()],
        }


class Tally:
    """Decisions added up as they come, so a long replay need not keep them all: what it holds
    grows with customers reached and actions still deferred, not with the length of history."""

    def __init__(self, rules: RuleSet) -> None:
        self.order = [r.id for r in rules.rules]
        self.enabled = {r.id: r.enabled for r in rules.rules}
        self.fired: Counter[str] = Counter()
        self.held: Counter[str] = Counter()
        self.deferred: Counter[str] = Counter()
        self.cost: dict[str, Decimal] = defaultdict(Decimal)
        self.reached: dict[str, set[str]] = defaultdict(set)
        self.suppressed: dict[str, Counter[str]] = defaultdict(Counter)
        self.undelivered: dict[str, set[str]] = defaultdict(set)  # deferred, not yet settled

    def add(self, d: Decision) -> None:
        rule_id = d.rule_id
        if rule_id not in self.enabled:
            self.order.append(rule_id)
            self.enabled[rule_id] = False
        if d.outcome == "deferred":
            self.deferred[rule_id] += 1
            self.undelivered[rule_id].add(d.action_id)
            return
        self.undelivered[rule_id].discard(d.action_id)  # released or withdrawn
        if d.outcome == "fired":
            self.fired[rule_id] += 1
            self.reached[rule_id].add(d.customer_id)
            self.cost[rule_id] += d.coupon_value or Decimal(0)
        elif d.outcome == "held_out":
            self.held[rule_id] += 1
        else:
            self.suppressed[rule_id][d.reason or "unknown"] += 1

    def add_all(self, decisions: Iterable[Decision]) -> Tally:
        for d in decisions:
            self.add(d)
        return self

    def report(self) -> BacktestReport:
        outcomes = [
            RuleOutcome(
                rule_id=rule_id,
                enabled=self.enabled[rule_id],
                fired=self.fired[rule_id],
                customers=len(self.reached[rule_id]),
                coupon_cost=self.cost[rule_id],
                held_out=self.held[rule_id],
                deferred=self.deferred[rule_id],
                pending=len(self.undelivered[rule_id]),
                suppressed=dict(self.suppressed[rule_id]),
            )
            for rule_id in self.order
        ]
        overlap = {
            (a, b): shared
            for a, b in combinations(self.order, 2)
            if (shared := len(self.reached[a] & self.reached[b]))
        }
        return BacktestReport(outcomes, overlap)


def summarize(rules: RuleSet, decisions: Iterable[Decision]) -> BacktestReport:
    """Tally decisions per rule; rules without any decision are listed with zeros."""
    return Tally(rules).add_all(decisions).report()
