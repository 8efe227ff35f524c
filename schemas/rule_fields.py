"""What a rule's conditions can test — event fields (`where:`) and profile fields (`if:`) — and
the condition language itself: `amount: {gte: 299}`, `category: [shoes, bags]`, `status: paid`.

`agents.rules.conditions` evaluates what this module checks.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, PlainValidator, model_validator

from schemas.outputs import Segment
from schemas.rule_values import (
    FieldProblem,
    Number,
    Strict,
    as_list,
    did_you_mean,
    is_non_finite,
    one_of,
    parse_number,
)

SEGMENTS: tuple[str, ...] = get_args(Segment)


def _scalar(value: Any) -> str | int | float | Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError("should be a single value (a word or a number)")
    if is_non_finite(value):
        raise ValueError(f'"{value}" is not a finite number (NaN and infinity are not)')
    return value


Scalar = Annotated[str | int | float | Decimal, PlainValidator(_scalar)]
Scalars = Annotated[list[Scalar], BeforeValidator(as_list)]

FieldType = Literal["number", "text", "segment", "tags", "any"]
ORDERING = ("gt", "gte", "lt", "lte")


class Comparison(Strict):
    """One field's test. A bare value means `eq`, a list means `in`; several operators all hold."""

    eq: Scalar | None = None
    ne: Scalar | None = None
    gt: Number | None = None
    gte: Number | None = None
    lt: Number | None = None
    lte: Number | None = None
    in_: Scalars | None = Field(default=None, alias="in")
    not_in: Scalars | None = None
    has: Scalar | None = None
    has_not: Scalar | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return value
        return {"in": value} if isinstance(value, list | tuple) else {"eq": value}

    @model_validator(mode="after")
    def _says_something(self) -> Comparison:
        if not self.operators():
            raise ValueError("needs a test such as eq, in, gte (e.g. {gte: 299})")
        return self

    def operators(self) -> dict[str, Any]:
        """The operators given, by their YAML names."""
        fields = type(self).model_fields
        return {
            info.alias or name: getattr(self, name)
            for name, info in fields.items()
            if getattr(self, name) is not None
        }


Conditions = dict[str, Comparison]

#: What a condition may test on each event (the topic names of the contract).
EVENT_FIELDS: dict[str, dict[str, FieldType]] = {
    "orders": {
        "status": "text",
        "amount": "number",
        "currency": "text",
        "order_id": "text",
        "sku": "text",  # any item of the order
        "category": "text",  # any item of the order
        "shop_id": "text",
    },
    "cart": {
        "sku": "text",
        "qty": "number",
        "price": "number",
        "amount": "number",
        "shop_id": "text",
    },
    "favorites": {"sku": "text", "shop_id": "text"},
    "browse": {"sku": "text", "url": "text", "category": "text", "shop_id": "text"},
    "customers": {"birthday": "text", "shop_id": "text"},
    # not a storefront topic: `ecrm campaign send` puts each selected customer on it
    "campaigns": {"campaign": "text", "shop_id": "text"},
}

#: What a rule's `if:` may test on the customer's live profile.
PROFILE_FIELDS: dict[str, FieldType] = {
    "segment": "segment",
    "recency_days": "number",
    "frequency": "number",
    "monetary": "number",
    "points": "number",
    "level": "text",
    "tags": "tags",
    "cart_items": "number",
    "cart_value": "number",
}

_ALLOWED: dict[FieldType, tuple[str, ...]] = {
    "number": ("eq", "ne", *ORDERING, "in", "not_in"),
    "text": ("eq", "ne", "in", "not_in"),
    "segment": ("eq", "ne", "in", "not_in"),
    "tags": ("has", "has_not", "in", "not_in"),
    "any": ("eq", "ne", *ORDERING, "in", "not_in"),
}
_HINT: dict[FieldType, str] = {
    "number": "a number",
    "text": "text",
    "segment": "a segment",
    "tags": "a list of tags",
    "any": "a field",
}


def field_type(name: str, fields: dict[str, FieldType], extras: bool) -> FieldType | None:
    """The type of a testable field; `extra.NAME` reaches fields the storefront added."""
    if extras and name.startswith("extra.") and len(name) > len("extra."):
        return "any"
    return fields.get(name)


def check_conditions(
    conditions: Conditions, fields: dict[str, FieldType], what: str, *, extras: bool
) -> None:
    """Raise a FieldProblem for a field that does not exist or a test that cannot apply to it."""
    for name, comparison in conditions.items():
        kind = field_type(name, fields, extras)
        if kind is None:
            known = ", ".join(fields) + (", extra.<field>" if extras else "")
            raise FieldProblem(
                name, f'{what} has no "{name}"{did_you_mean(name, fields)}; it has: {known}'
            )
        for op, value in comparison.operators().items():
            if op not in _ALLOWED[kind]:
                allowed = ", ".join(_ALLOWED[kind])
                raise FieldProblem(
                    (name, op),
                    f'"{op}" does not apply to {name}, which is {_HINT[kind]} (use {allowed})',
                )
            for item in value if isinstance(value, list) else [value]:
                if kind == "number":
                    try:
                        parse_number(item)
                    except ValueError as exc:
                        raise FieldProblem((name, op), str(exc)) from None
                if kind == "segment" and item not in SEGMENTS:
                    raise FieldProblem(
                        (name, op),
                        f'"{item}" is not a segment{did_you_mean(str(item), SEGMENTS)} '
                        f"(segments: {', '.join(SEGMENTS)})",
                    )


EVENTS = tuple(EVENT_FIELDS)
#: How each event is named in a sentence.
EVENT_NOUN = {
    "orders": "an order",
    "cart": "a cart add",
    "favorites": "a favourite",
    "browse": "a view",
    "customers": "a member update",
    "campaigns": "a campaign send",
}
_EVENT_ALIASES = {
    "order": "orders",
    "favorite": "favorites",
    "favourite": "favorites",
    "favourites": "favorites",
    "view": "browse",
    "views": "browse",
    "customer": "customers",
    "member": "customers",
    "campaign": "campaigns",
}


def _event_name(value: Any) -> str:
    text = str(value).strip().lower()
    if text in ("segment_change", "segment"):
        raise ValueError(
            "a segment change is not an event: write segment_change: {from: [...], to: [...]} "
            "in place of event:"
        )
    return one_of(EVENTS, "an event")(_EVENT_ALIASES.get(text, text))


EventName = Annotated[str, PlainValidator(_event_name)]
SegmentName = Annotated[str, PlainValidator(one_of(SEGMENTS, "a segment"))]
SegmentList = Annotated[list[SegmentName], BeforeValidator(as_list)]
