"""The rules engine's shell: rule state and budgets read and written in the batch's Redis
unit, decisions turned into actions (Kafka outbox) and decision rows (ClickHouse outbox).

The engine itself (agents/rules_engine.py) is pure; this module only moves its inputs and
outputs, so an action is queued for delivery in the same MULTI as the state that decided it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from agents.contact_policy import BudgetBook, Spend, budget_spend, shop_day
from agents.event_rows import json_text
from agents.rule_state import CustomerRuleState, Decision
from agents.rules_engine import next_wakeup, on_clock, on_event, on_segment_change
from schemas.errors import RulesError
from schemas.events import Event
from schemas.outputs import SegmentChange
from schemas.profile import Profile
from schemas.rules import RuleSet, load_rules
from streams.outbox import clickhouse_entry
from streams.redis_store import KEY_PREFIX, Unit
from streams.relay import KAFKA_OUTBOX, kafka_entry

log = logging.getLogger(__name__)

RULE_STATS_KEY = f"{KEY_PREFIX}stats:rules"


def rule_state_key(customer_id: str) -> str:
    return f"{KEY_PREFIX}rules:{customer_id}"


def budget_key(rule_id: str, day: date) -> str:
    return f"{KEY_PREFIX}budget:{rule_id}:{day.isoformat()}"


class RulesBook:
    """The rules in force, re-read when the file changes; a bad new file is refused."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rules: RuleSet = load_rules(self.path)
        self._digest = self._read_digest()

    def _read_digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def reload_if_changed(self) -> bool:
        """True when new rules took effect. An invalid file leaves the old rules in force."""
        try:
            digest = self._read_digest()
        except OSError as exc:
            log.error("rules file %s unreadable (%s); keeping the rules in force", self.path, exc)
            return False
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            if not self.path.read_text(encoding="utf-8").strip():
                # an empty file is most likely one being rewritten in place, not "no rules"
                raise RulesError("the file is empty (write `rules: []` to switch every rule off)")
            self.rules = load_rules(self.path)
        except RulesError as exc:
            log.error("rules file %s refused, the previous rules stay in force: %s", self.path, exc)
            return False
        except (ValueError, ArithmeticError, TypeError, RecursionError):
            # whatever slipped past validation must not take the running rules down with it
            log.exception("rules file %s refused, the previous rules stay in force", self.path)
            return False
        log.warning("rules file %s reloaded: %d rules", self.path, len(self.rules.rules))
        return True


@dataclass
class MarketingStep:
    """Rules applied within one Redis unit (one batch or one sweep)."""

    rules: RuleSet
    unit: Unit
    now: datetime
    budget: BudgetBook
    decisions: list[Decision] = field(default_factory=list)
    _states: dict[str, CustomerRuleState] = field(default_factory=dict)
    _changed: set[str] = field(default_factory=set)

    @staticmethod
    def keys(rules: RuleSet, customers: list[str], now: datetime) -> list[str]:
        """Redis keys the unit must read: each customer's rule state, the budgets of the days
        a decision now can book (yesterday, today, tomorrow)."""
        keys = [rule_state_key(c) for c in customers]
        for day in _budget_days(rules, now):
            keys += [budget_key(r.id, day) for r in rules.rules if r.budget is not None]
        return keys

    @classmethod
    def begin(cls, rules: RuleSet, unit: Unit, now: datetime) -> MarketingStep:
        spent: dict[tuple[str, date], Spend] = {}
        for day in _budget_days(rules, now):
            for rule in rules.rules:
                raw = unit.raw.get(budget_key(rule.id, day))
                if raw:
                    data = orjson.loads(raw)
                    spent[(rule.id, day)] = Spend(int(data["count"]), Decimal(data["value"]))
        return cls(rules, unit, now, BudgetBook(spent))

    def state(self, customer_id: str) -> CustomerRuleState:
        if customer_id not in self._states:
            raw = self.unit.raw.get(rule_state_key(customer_id))
            self._states[customer_id] = (
                CustomerRuleState.model_validate_json(raw)
                if raw
                else CustomerRuleState(customer_id=customer_id)
            )
        return self._states[customer_id]

    def _take(self, customer_id: str, state: CustomerRuleState, found: list[Decision]) -> None:
        if state is not self._states.get(customer_id):
            self._states[customer_id] = state
            self._changed.add(customer_id)
        if found:
            self.budget.book(found)
            self.decisions.extend(found)

    def event(self, before: Profile, after: Profile, event: Event) -> None:
        cid = after.customer_id
        state, found = on_event(
            self.rules, self.state(cid), before, after, event, self.now, budget=self.budget
        )
        self._take(cid, state, found)

    def segment_changed(self, profile: Profile, change: SegmentChange) -> None:
        cid = profile.customer_id
        state, found = on_segment_change(
            self.rules, self.state(cid), profile, change, self.now, budget=self.budget
        )
        self._take(cid, state, found)

    def clock(self, profile: Profile) -> None:
        cid = profile.customer_id
        state, found = on_clock(self.rules, self.state(cid), profile, self.now, budget=self.budget)
        self._take(cid, state, found)

    def wakeup(self, customer_id: str) -> datetime | None:
        return next_wakeup(self.state(customer_id))

    def finish(self, actions_topic: str) -> None:
        """Queue the states, budgets, actions, decision rows and counters for the commit."""
        for cid in self._changed:
            self.unit.write_raw(rule_state_key(cid), self._states[cid].model_dump_json().encode())
        for rule_id, day in budget_spend(self.decisions):
            total = self.budget.spent(rule_id, day)
            self.unit.write_raw(
                budget_key(rule_id, day),
                orjson.dumps({"count": total.count, "value": str(total.value)}),
            )
        if not self.decisions:
            return
        rows = [decision_row(d) for d in self.decisions]
        entry = clickhouse_entry("rule_decisions", rows)
        self.unit.later(lambda pipe: pipe.xadd(entry.stream, entry.fields))
        counts: dict[str, int] = {}
        for d in self.decisions:
            if d.outcome == "fired":
                msg = kafka_entry(
                    actions_topic, d.customer_id, d.to_action().model_dump_json().encode()
                )
                self.unit.later(lambda pipe, msg=msg: pipe.xadd(KAFKA_OUTBOX, msg))
            name = f"{d.rule_id}|{d.outcome}" + (
                f":{d.reason}" if d.outcome == "suppressed" else ""
            )
            counts[name] = counts.get(name, 0) + 1
        for name, n in counts.items():
            self.unit.later(lambda pipe, name=name, n=n: pipe.hincrby(RULE_STATS_KEY, name, n))


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


def _budget_days(rules: RuleSet, now: datetime) -> list[date]:
    if not any(r.budget is not None for r in rules.rules):
        return []
    # a deferred action books the day it will be delivered (tomorrow, after the night's
    # quiet hours), and a withdrawn one gives back the day it had booked (up to yesterday's)
    today = shop_day(now, rules.policy.zone)
    return [today - timedelta(days=1), today, today + timedelta(days=1)]
