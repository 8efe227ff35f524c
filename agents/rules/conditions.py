"""Whether an event or a profile meets a rule's conditions, and which product a rule keys on.

Pure: the checks `schemas.rule_fields` made when the file was read are relied on here.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
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
    kind = type(value)
    if kind is int:  # the common cases, without a round trip through text
        return Decimal(value)
    if kind is Decimal:
        return value if value.is_finite() else None
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


_ORDERINGS: dict[str, Callable[[Decimal, Decimal], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def _ordered(actual: Any, op: str, expected: Decimal | None) -> bool:
    """`actual op expected`, `expected` already a number (None: not one, nothing passes)."""
    a = _number(actual)
    if a is None or expected is None:
        return False
    return _ORDERINGS[op](a, expected)


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
    number = _number(expected)
    return any(_ordered(v, op, number) for v in values)


#: id(Comparison) -> (the Comparison, kept alive so that its id is not reused, and its
#: operators with an ordering's number worked out): a rules file or a programme is read once
#: and asked the same questions for every event
_COMPILED: dict[int, tuple[Comparison, tuple[tuple[str, Any, Decimal | None], ...]]] = {}
#: Comparisons compiled before the table starts again (a reload makes new ones)
COMPILED_KEPT = 4096


def _compiled(comparison: Comparison) -> tuple[tuple[str, Any, Decimal | None], ...]:
    kept = _COMPILED.get(id(comparison))
    if kept is not None and kept[0] is comparison:
        return kept[1]
    ops = tuple(
        (op, expected, _number(expected) if op in _ORDERINGS else None)
        for op, expected in comparison.operators().items()
    )
    if len(_COMPILED) >= COMPILED_KEPT:
        _COMPILED.clear()
    _COMPILED[id(comparison)] = (comparison, ops)
    return ops


def holds(comparison: Comparison, values: list[Any], kind: FieldType) -> bool:
    """Every operator of the comparison holds for these values."""
    for op, expected, number in _compiled(comparison):
        if number is not None and kind != "tags":
            if not any(_ordered(v, op, number) for v in values):
                return False
        elif not _operator_holds(op, expected, values, kind):
            return False
    return True


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
