"""Whether an event or a profile meets a rule's conditions, and which product a rule keys on.

Pure: the checks `schemas.rule_fields` made when the file was read are relied on here.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from schemas.events import BrowseEvent, CartEvent, Event, FavoriteEvent, OrderEvent
from schemas.profile import Profile
from schemas.rule_fields import (
    EVENT_FIELDS,
    PROFILE_FIELDS,
    Comparison,
    Conditions,
    FieldType,
    field_type,
)
from schemas.rules import Followup, Trigger

#: Event class kind -> the topic name rules use.
TOPIC_OF_KIND = {
    "order": "orders",
    "cart": "cart",
    "favorite": "favorites",
    "browse": "browse",
    "customer": "customers",
    "campaign": "campaigns",
}


def topic_of(event: Event) -> str:
    return TOPIC_OF_KIND.get(type(event).kind, "")


def event_values(event: Event, name: str) -> list[Any]:
    """The values a field has on an event; an order's sku and category are its items'."""
    if name.startswith("extra."):
        value = event.extra.get(name.removeprefix("extra."))
    elif isinstance(event, OrderEvent) and name in ("sku", "category"):
        return [getattr(item, name) for item in event.items or [] if getattr(item, name)]
    elif isinstance(event, CartEvent) and name == "amount":
        value = event.price * event.qty
    else:
        value = getattr(event, name, None)
    return [] if value is None else [value]


def profile_values(profile: Profile, name: str) -> list[Any]:
    if name == "tags":
        return list(profile.tags)
    if name == "cart_items":
        return [len(profile.cart)]
    if name == "cart_value":
        return [sum((line.price * line.qty for line in profile.cart.values()), Decimal(0))]
    value = getattr(profile, name, None)
    return [] if value is None else [value]


def _number(value: Any) -> Decimal | None:
    """The value as a finite number, else None: "NaN", "Infinity", true or a list compare as
    nothing (an ordering test on them is false), never as an error that stops the worker."""
    if isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):  # ValueError: an int too long to write as text
        return None
    return number if number.is_finite() else None


def _equal(actual: Any, expected: Any, kind: FieldType) -> bool:
    if kind in ("number", "any"):
        a, e = _number(actual), _number(expected)
        if a is not None and e is not None:
            return a == e
    return str(actual) == str(expected)


def _ordered(actual: Any, op: str, expected: Any) -> bool:
    a, e = _number(actual), _number(expected)
    if a is None or e is None:
        return False
    return {"gt": a > e, "gte": a >= e, "lt": a < e, "lte": a <= e}[op]


def _operator_holds(op: str, expected: Any, values: list[Any], kind: FieldType) -> bool:
    """Positive tests hold when any value passes (an order's items); negative ones when none do."""
    if kind == "tags":
        tags = {str(tag) for tag in values}
        wanted = {str(x) for x in (expected if isinstance(expected, list) else [expected])}
        return {
            "has": bool(wanted & tags),
            "in": bool(wanted & tags),
            "has_not": not wanted & tags,
            "not_in": not wanted & tags,
        }[op]
    if op == "eq":
        return any(_equal(v, expected, kind) for v in values)
    if op == "ne":
        return not any(_equal(v, expected, kind) for v in values)
    if op == "in":
        return any(_equal(v, e, kind) for v in values for e in expected)
    if op == "not_in":
        return not any(_equal(v, e, kind) for v in values for e in expected)
    return any(_ordered(v, op, expected) for v in values)


def holds(comparison: Comparison, values: list[Any], kind: FieldType) -> bool:
    """Every operator of the comparison holds for these values."""
    return all(
        _operator_holds(op, expected, values, kind)
        for op, expected in comparison.operators().items()
    )


def event_matches(conditions: Conditions, event: Event, topic: str) -> bool:
    fields = EVENT_FIELDS.get(topic, {})
    return all(
        holds(test, event_values(event, name), field_type(name, fields, extras=True) or "any")
        for name, test in conditions.items()
    )


def profile_matches(conditions: Conditions, profile: Profile) -> bool:
    return all(
        holds(test, profile_values(profile, name), PROFILE_FIELDS[name])
        for name, test in conditions.items()
    )


def starts(trigger: Trigger, event: Event, first_order: bool, topic: str | None = None) -> bool:
    """The event is the A of this trigger: right event, its `where:` holds, first order if asked
    (`first_order`: the fold found it the customer's first paid order, agents/profile/fold.py).
    `topic`: the event's `topic_of`, when the caller has it already."""
    topic = topic_of(event) if topic is None else topic
    if trigger.event != topic or not event_matches(trigger.where, event, topic):
        return False
    return not trigger.first_order or first_order


def follows(followup: Followup, event: Event, topic: str | None = None) -> bool:
    """The event is the B of a `not_followed_by:` or `unless:`."""
    topic = topic_of(event) if topic is None else topic
    return followup.event == topic and event_matches(followup.where, event, topic)


def skus_of(event: Event) -> list[str] | None:
    """The products an event concerns; None for an order that does not list its items (all)."""
    if isinstance(event, OrderEvent):
        return sorted({item.sku for item in event.items}) if event.items else None
    if isinstance(event, CartEvent | FavoriteEvent):
        return [event.sku]
    if isinstance(event, BrowseEvent):
        return [event.sku] if event.sku else []
    return []


def keys_of(trigger: Trigger, event: Event) -> list[str]:
    """The keys an A event arms or counts under: "" per customer, else each product it names."""
    if trigger.per == "customer":
        return [""]
    return skus_of(event) or []


def concerns(per: str, key: str, skus: list[str] | None) -> bool:
    """A B event with these products cancels or resets the A kept under `key`."""
    return per == "customer" or skus is None or key in skus
