"""A rule's `action:` and `budget:` — what the customer gets, and how much of it a day — with
the params each kind of action needs checked."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, PlainValidator, model_validator

from schemas.rule_values import (
    FieldProblem,
    Money,
    Strict,
    non_finite_in,
    non_negative_money,
    one_of,
    parse_duration,
    positive_money,
    some_text,
    web_address,
    whole_points,
)

KINDS = ("coupon", "message", "points", "tag", "webhook")
CHANNELS = ("sms", "push", "inbox", "wechat", "miniprogram", "alibaba", "email", "app")


class Budget(Strict):
    """`budget: {per_day: 500, value_per_day: 5000}`: a rule's daily spend across all customers."""

    per_day: int | None = Field(default=None, ge=1)
    value_per_day: Money | None = None

    @model_validator(mode="after")
    def _names_a_limit(self) -> Budget:
        if self.per_day is None and self.value_per_day is None:
            raise ValueError("say per_day: (actions a day) and/or value_per_day: (coupon value)")
        return self


_REQUIRED_PARAMS = {
    "coupon": ("value", "valid_for"),
    "message": ("template",),
    "points": ("points",),
    "tag": ("tag",),
    "webhook": ("url",),
}
_PARAM_CHECKS: dict[tuple[str, str], Callable[[Any], object]] = {
    ("coupon", "value"): positive_money,
    ("coupon", "threshold"): non_negative_money,
    ("coupon", "valid_for"): parse_duration,
    ("message", "template"): some_text,
    ("points", "points"): whole_points,
    ("tag", "tag"): some_text,
    ("webhook", "url"): web_address,
}


class ActionSpec(Strict):
    """`action:` — what the customer gets, on which channel; params go out as the rule says."""

    kind: Annotated[str, PlainValidator(one_of(KINDS, "an action kind"))]
    channel: Annotated[str, PlainValidator(one_of(CHANNELS, "a channel"))] | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _params_fit_the_kind(self) -> ActionSpec:
        for name in _REQUIRED_PARAMS[self.kind]:
            if name not in self.params:
                raise FieldProblem(("params", name), f"a {self.kind} action needs params.{name}")
        for name, value in self.params.items():
            if found := non_finite_in(value):
                where, number = found
                raise FieldProblem(
                    ("params", name, *([where] if where else [])),
                    f'"{number}" is not a finite number (NaN and infinity cannot be sent as JSON)',
                )
        for (kind, name), check in _PARAM_CHECKS.items():
            if kind == self.kind and name in self.params:
                try:
                    check(self.params[name])
                except ValueError as exc:
                    raise FieldProblem(("params", name), str(exc)) from None
        if self.kind == "message" and self.channel is None:
            raise FieldProblem("channel", "a message needs a channel (e.g. channel: sms)")
        return self

    @property
    def coupon_value(self) -> Decimal | None:
        return positive_money(self.params["value"]) if self.kind == "coupon" else None

    @property
    def valid_for(self) -> timedelta | None:
        return parse_duration(self.params["valid_for"]) if self.kind == "coupon" else None

    @property
    def is_contact(self) -> bool:
        """Reaches the customer on a channel, so counts toward the cap and waits out quiet hours."""
        return self.channel is not None
