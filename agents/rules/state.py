"""What the rules engine remembers per customer between events, and the verdicts it returns.

`CustomerRuleState` is stored as JSON beside the profile; `Decision` is one rule's verdict for
one customer at one trigger, with an `action_id` that is the same however often the same
trigger is decided, so every consumer can dedupe.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field

from schemas.outputs import Action
from schemas.rule_values import parse_duration
from schemas.written import Written

Outcome = Literal["fired", "held_out", "suppressed", "deferred"]

SEEN_TRIGGERS_KEPT = 64


class Timer(BaseModel):
    """An armed "not followed by" wait: fires at `deadline` unless its B comes first."""

    rule_id: str
    key: str = ""  # "" per customer, else the sku
    armed_at: AwareDatetime  # the A event's time
    deadline: AwareDatetime
    trigger_event_id: str
    #: the A event's origin: a wait armed by imported history never fires an action
    origin: str | None = None


class Deferred(BaseModel):
    """An action decided during quiet hours, to deliver at `deliver_at` exactly as decided."""

    action_id: str
    rule_id: str
    key: str | None = None  # the timer key, when its B may still cancel it
    trigger_event_id: str | None = None
    trigger_at: AwareDatetime | None = None
    decided_at: AwareDatetime
    deliver_at: AwareDatetime
    kind: str
    channel: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    priority: int = 0
    coupon_value: Decimal | None = None
    budget_day: date | None = None  # set when the rule has a budget and this action booked it


class CustomerRuleState(BaseModel):
    """Per customer: armed timers, count windows, cooldowns, contacts per day, deferred actions."""

    customer_id: str
    timers: list[Timer] = Field(default_factory=list)
    #: "rule_id|key" -> times of the latest matching events (at most `at_least` of them)
    counts: dict[str, list[AwareDatetime]] = Field(default_factory=dict)
    #: rule_id -> when it last fired, deferred or held the customer out (for cooldowns)
    last_fired: dict[str, AwareDatetime] = Field(default_factory=dict)
    #: shop-local day -> contacts booked for delivery that day (for the contact cap)
    contacts: dict[date, int] = Field(default_factory=dict)
    deferred: list[Deferred] = Field(default_factory=list)
    #: identities of the latest triggers decided, so a redelivered one decides nothing
    seen_triggers: list[str] = Field(default_factory=list)

    def copied(self) -> CustomerRuleState:
        """A copy safe to change: new containers, shared timers and deferred actions (which
        the engine replaces, never changes in place). Much cheaper than a deep copy."""
        # what `model_copy(update=...)` does, without its generic copies (this runs for every
        # event a rule may see: the copy cost more than deciding did)
        copy = object.__new__(CustomerRuleState)
        fields = self.__dict__
        set_ = object.__setattr__
        set_(
            copy,
            "__dict__",
            {
                **fields,
                "timers": list(fields["timers"]),
                "counts": dict(fields["counts"]),
                "last_fired": dict(fields["last_fired"]),
                "contacts": dict(fields["contacts"]),
                "deferred": list(fields["deferred"]),
                "seen_triggers": list(fields["seen_triggers"]),
            },
        )
        set_(copy, "__pydantic_extra__", None)
        set_(copy, "__pydantic_fields_set__", set(self.__pydantic_fields_set__))
        set_(copy, "__pydantic_private__", None)
        return copy

    def saw(self, trigger: str) -> None:
        self.seen_triggers.append(trigger)
        del self.seen_triggers[:-SEEN_TRIGGERS_KEPT]


#: rule states this process wrote lately (schemas/written.py): the engine never changes a
#: state it was given (it changes `copied()`), so one read back is shared
_WRITTEN: Written[CustomerRuleState] = Written(handed_over=False)


def state_json(state: CustomerRuleState) -> bytes:
    """The rule state as Redis keeps it (JSON)."""
    return _WRITTEN.remember(state.model_dump_json().encode(), state)


def state_from_json(raw: bytes | str) -> CustomerRuleState:
    """A rule state read back from Redis (bytes this process wrote lately: not validated
    again)."""
    return _WRITTEN.take(raw) or CustomerRuleState.model_validate_json(raw)


def action_id_for(rule_id: str, customer_id: str, trigger: str) -> str:
    """The same rule, customer and trigger always give the same id (128 bits of SHA-256)."""
    return hashlib.sha256(f"{rule_id}|{customer_id}|{trigger}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Decision:
    """One rule's verdict for one customer at one trigger; recorded whatever the outcome."""

    rule_id: str
    customer_id: str
    action_id: str
    outcome: Outcome
    reason: str | None  # holdout, cooldown, contact_cap, budget, quiet_hours, historical, ...
    kind: str
    channel: str | None
    params: dict[str, Any]
    trigger_event_id: str | None
    decided_at: datetime
    deliver_at: datetime | None = None  # for deferred ones, and released ones
    priority: int = 0
    coupon_value: Decimal | None = None
    #: the rule's budget moves by this many actions (and coupon value) on `budget_day`
    budget_delta: int = 0
    budget_day: date | None = None
    #: the delivery of an earlier deferred decision (same action_id; budget already booked)
    released: bool = False

    def to_action(self) -> Action:
        """The `ecrm.actions` message; coupons get `valid_until` counted from delivery."""
        if self.outcome != "fired":
            raise ValueError(f"only a fired decision is delivered, not a {self.outcome} one")
        params = dict(self.params)
        if self.kind == "coupon" and "valid_for" in params:
            until = self.decided_at + parse_duration(params["valid_for"])
            params.setdefault("valid_until", until.isoformat())
        return Action(
            action_id=self.action_id,
            rule_id=self.rule_id,
            customer_id=self.customer_id,
            kind=self.kind,
            channel=self.channel,
            params=params,
            trigger_event_id=self.trigger_event_id,
            fired_at=self.decided_at,
        )

    def as_record(self) -> dict[str, Any]:
        """A flat, JSON-friendly row for the decisions table."""
        return {
            "action_id": self.action_id,
            "rule_id": self.rule_id,
            "customer_id": self.customer_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "kind": self.kind,
            "channel": self.channel,
            "params": self.params,
            "trigger_event_id": self.trigger_event_id,
            "decided_at": self.decided_at.isoformat(),
            "deliver_at": self.deliver_at.isoformat() if self.deliver_at else None,
            "priority": self.priority,
            "coupon_value": str(self.coupon_value) if self.coupon_value is not None else None,
            "released": self.released,
        }
