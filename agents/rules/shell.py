"""The rules engine's shell: rule state read and written in the batch's Redis unit, budgets
booked just before it commits (agents/rules/budget_booking.py), decisions turned into actions
(Kafka outbox) and decision rows (ClickHouse outbox).

The engine itself (agents/rules/engine.py) is pure, and the customer step
(agents/customer_step.py) calls it; this module only moves the step's rule inputs and
outputs, so an action is queued for delivery in the same MULTI as the state that decided it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from agents.profile.rows import json_text
from agents.rules.budget_booking import BudgetBooker, bookings, read_spent
from agents.rules.contact_policy import BudgetBook, Spend, shop_day
from agents.rules.state import CustomerRuleState, Decision, state_from_json, state_json
from schemas.outputs import Action
from schemas.privacy import unsubscribe_token
from schemas.rules import RuleSet
from streams import keyspace
from streams.outbox import clickhouse_entry, kafka_message
from streams.redis_store import Unit

log = logging.getLogger(__name__)


@dataclass
class MarketingStep:
    """The rules' side of one Redis unit (one batch or one sweep)."""

    rules: RuleSet
    unit: Unit
    #: the span of times decisions in this unit are made at (a backlog's batch spans days)
    span: tuple[datetime, datetime]
    budget: BudgetBook
    decisions: list[Decision] = field(default_factory=list)
    _changed: dict[str, CustomerRuleState] = field(default_factory=dict)

    #: the shared client the budgets are booked with (any slot of a cluster)
    client: Any = None
    #: the input topics' partitions (a customer's keys carry their home partition's tag)
    partitions: int = 1

    @staticmethod
    def keys(rules: RuleSet, customers: list[str], partitions: int) -> list[str]:
        """Redis keys the unit must read: each customer's rule state."""
        return [keyspace.rule_state(c, partitions) for c in customers]

    @staticmethod
    async def spent(
        client: Any, rules: RuleSet, span: tuple[datetime, datetime]
    ) -> dict[tuple[str, date], Spend]:
        """The budgets of the days a decision in the span can book (from the day before its
        start to the day after its end), read before the unit opens."""
        return await read_spent(client, rules, _budget_days(rules, span))

    @classmethod
    def begin(
        cls,
        rules: RuleSet,
        unit: Unit,
        span: tuple[datetime, datetime],
        spent: dict[tuple[str, date], Spend],
        client: Any,
        partitions: int,
    ) -> MarketingStep:
        return cls(rules, unit, span, BudgetBook(spent), client=client, partitions=partitions)

    def state(self, customer_id: str) -> CustomerRuleState:
        """The customer's rule state as this unit has it (read, or changed by a step)."""
        if customer_id in self._changed:
            return self._changed[customer_id]
        raw = self.unit.get(keyspace.rule_state(customer_id, self.partitions))
        if raw:
            return state_from_json(raw)
        return CustomerRuleState(customer_id=customer_id)

    def took(self, state: CustomerRuleState, changed: bool, decisions: list[Decision]) -> None:
        """What a customer step decided (the budget was booked as it decided)."""
        if changed:
            self._changed[state.customer_id] = state
        self.decisions.extend(decisions)

    def finish(self, actions_topic: str, privacy_key: bytes) -> None:
        """Queue the states, budgets, actions, decision rows and counters for the commit.
        Each action carries its customer's unsubscribe token (schemas/privacy.py) in
        `params.unsubscribe_token`; the decision rows do not (analysts need no token)."""
        for cid, state in self._changed.items():
            self.unit.put(keyspace.rule_state(cid, self.partitions), state_json(state))
        readable = set(_budget_days(self.rules, self.span))
        # a withdrawal giving back a day long over (a delivery overdue for days) is not booked:
        # that day's counter may be gone, and no one books it any more
        moves = {k: v for k, v in bookings(self.decisions).items() if k[1] in readable}
        if moves:
            booker = BudgetBooker(self.client, self.rules, moves, BUDGET_KEPT_S)
            self.unit.before_commit.append(booker.book)
            self.unit.on_abort.append(booker.unbook)
        if not self.decisions:
            return
        self.unit.add(clickhouse_entry("rule_decisions", [decision_row(d) for d in self.decisions]))
        counts: dict[str, int] = {}
        for d in self.decisions:
            if d.outcome == "fired":
                action = with_unsubscribe_token(d.to_action(), privacy_key)
                self.unit.add(
                    kafka_message(actions_topic, d.customer_id, action.model_dump_json().encode())
                )
            name = f"{d.rule_id}|{d.outcome}" + (
                f":{d.reason}" if d.outcome == "suppressed" else ""
            )
            counts[name] = counts.get(name, 0) + 1
        for name, n in counts.items():
            self.unit.hincrby(keyspace.rule_stats(self.unit.partition), name, n)


def with_unsubscribe_token(action: Action, privacy_key: bytes) -> Action:
    """The action with the token that opts its customer out of its channel, whatever a rule's
    params said under that name (a rule cannot hand out another customer's token)."""
    token = unsubscribe_token(action.customer_id, action.channel, privacy_key)
    return action.model_copy(update={"params": {**action.params, "unsubscribe_token": token}})


def decision_row(d: Decision) -> dict[str, Any]:
    return {
        "action_id": d.action_id,
        "rule_id": d.rule_id,
        "customer_id": d.customer_id,
        "outcome": d.outcome,
        "reason": d.reason or "",
        "kind": d.kind,
        "channel": d.channel or "",
        "params": json_text(d.params),
        "trigger_event_id": d.trigger_event_id or "",
        "decided_at": d.decided_at,
        "deliver_at": d.deliver_at,
        "priority": d.priority,
        "coupon_value": d.coupon_value,
        "released": int(d.released),
    }


#: Budget days one unit reads at most (a unit spanning more books only the latest ones).
MAX_BUDGET_DAYS = 62
#: A day's budget counter expires this long after its last booking: past the days any unit
#: reads (a decision that old is history, suppressed, and books nothing), so Redis does not
#: keep a key per rule per day forever.
BUDGET_KEPT_S = (MAX_BUDGET_DAYS + 8) * 86400


def _budget_days(rules: RuleSet, span: tuple[datetime, datetime]) -> list[date]:
    if not any(r.budget is not None for r in rules.rules):
        return []
    # a deferred action books the day it will be delivered (tomorrow, after the night's
    # quiet hours), and a withdrawn one gives back the day it had booked (up to yesterday's)
    first = shop_day(span[0], rules.policy.zone) - timedelta(days=1)
    last = shop_day(span[1], rules.policy.zone) + timedelta(days=1)
    first = max(first, last - timedelta(days=MAX_BUDGET_DAYS - 1))
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
