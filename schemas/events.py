"""The storefront events of the contract, validated at the door (unknown fields are kept):
orders, cart adds, favourites, views and member attributes (`customers`: joining date,
birthday, consent per channel), and the campaign event `ecrm campaign send` emits onto
ecrm's own `campaigns` input topic.

What is refused here is what could not be stored or evaluated faithfully further on: a qty
or amount its ClickHouse column cannot hold, a NaN or infinite number among the unknown
fields (JSON has neither), and, when the caller passes a `TimeWindow` in the validation
context, an event time outside it. An integer beyond 64 bits in an unknown field is data,
and is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The largest qty the `events.qty` column (UInt32) holds; a larger one would wrap silently.
MAX_QTY = 2**32 - 1
#: The largest amount a `Decimal(18, 2)` column holds (events.amount, profile cart_value).
MAX_AMOUNT = Decimal("9999999999999999.99")
#: The key of the `TimeWindow` in a validation context: `model_validate_json(raw,
#: context={TIME_WINDOW: window})`.
TIME_WINDOW = "time_window"


def _shown(value: Any, limit: int = 60) -> str:
    """A value as it may appear in an error: a huge one must not make a huge dead letter."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _moment(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _span(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class TimeWindow:
    """When an event can have happened, as the worker receiving it sees things: not before
    `earliest` (no shop sold online before it; an epoch 0 is a default, not a date), nor more
    than `max_future` after the worker's clock `now` (device clocks drift, not by years).

    The caller owns the clock: build one per batch and pass it as the validation context."""

    earliest: datetime
    now: datetime
    max_future: timedelta

    @property
    def latest(self) -> datetime:
        """`now` + `max_future`; a window wider than the calendar ends where it ends."""
        try:
            return self.now + self.max_future
        except OverflowError:
            return datetime.max.replace(tzinfo=UTC)

    def problem(self, raw: Any, ts: datetime) -> str | None:
        """Why `ts` (read from `raw`) is outside the window, or None when it is inside."""
        if ts < self.earliest:
            seconds = _as_epoch_seconds(raw)
            if seconds is not None and self.earliest <= seconds <= self.latest:
                return (
                    f"ts {raw} read as epoch milliseconds is {_moment(ts)}; it looks like epoch "
                    f"seconds ({_moment(seconds)}): send milliseconds (seconds × 1000)"
                )
            return (
                f"ts {_moment(ts)} is before {_moment(self.earliest)}, the earliest event "
                "time accepted (ECRM_TS_MIN)"
            )
        if ts > self.latest:
            return (
                f"ts {_moment(ts)} is more than {_span(self.max_future)} after this worker's "
                f"clock ({_moment(self.now)}), the latest event time accepted "
                "(ECRM_TS_MAX_FUTURE_S)"
            )
        return None


def _as_epoch_seconds(raw: Any) -> datetime | None:
    """The moment an integer `ts` would be if it were epoch seconds."""
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if isinstance(raw, bool) or not isinstance(raw, int):
        return None
    try:
        return _EPOCH + timedelta(seconds=raw)
    except OverflowError:
        return None


def _from_epoch_ms(millis: int) -> datetime:
    # timedelta arithmetic is exact and raises only OverflowError, which pydantic would not
    # turn into a validation error (fromtimestamp also raises OSError): say it as a ValueError
    try:
        return _EPOCH + timedelta(milliseconds=millis)
    except OverflowError as exc:
        raise ValueError(f"ts {millis} epoch milliseconds is out of range") from exc


def _event_time(value: Any, info: ValidationInfo) -> datetime:
    """`_to_utc`, then inside the caller's TimeWindow when the validation context has one."""
    ts = _to_utc(value)
    window = info.context.get(TIME_WINDOW) if info.context else None
    if window is not None and (problem := window.problem(value, ts)):
        raise ValueError(problem)
    return ts


def _to_utc(value: Any) -> datetime:
    """ISO-8601 with an offset, or integer epoch milliseconds; never a naive time."""
    if isinstance(value, bool):
        raise ValueError("ts must be ISO-8601 with an offset or epoch milliseconds, not a boolean")
    if isinstance(value, int):
        return _from_epoch_ms(value)
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return _from_epoch_ms(int(text))
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"ts {_shown(value)} is not ISO-8601") from exc
    else:
        raise ValueError("ts must be ISO-8601 with an offset or epoch milliseconds")
    if parsed.tzinfo is None:
        raise ValueError(f"ts {_shown(value)} has no UTC offset; say +08:00 or Z")
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00+08:00 is before year 1 in UTC
        raise ValueError(f"ts {_shown(value)} is out of range") from exc


#: what the JSON Schema tells producers (fromisoformat accepts a little more)
_ISO_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$"
EventTime = Annotated[
    datetime,
    BeforeValidator(_event_time),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time", "pattern": _ISO_WITH_OFFSET},
                {
                    "type": "integer",
                    "description": "epoch milliseconds",
                    "minimum": -62135596800000,  # 0001-01-01T00:00:00Z
                    "maximum": 253402300799999,  # 9999-12-31T23:59:59.999Z
                },
            ],
            "description": "ISO-8601 with an offset, or integer epoch milliseconds; the "
            "worker accepts times from ECRM_TS_MIN (default 2000-01-01) to ECRM_TS_MAX_FUTURE_S "
            "(default 24 h) after its clock",
        }
    ),
]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2)]
Qty = Annotated[int, Field(ge=1, le=MAX_QTY)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=256)]

#: `origin` of the events `ecrm import` writes: history, which updates state but never markets
IMPORT_ORIGIN = "import"


def _non_finite_in(extra: dict[str, Any]) -> tuple[str, float] | None:
    """The path and value of the first NaN or infinite number among unknown fields. The JSON
    reader accepts NaN, Infinity and 1e400 (as inf); no JSON writer can give them back."""
    if not extra or not _holds_non_finite(extra):
        return None
    stack: list[tuple[str, Any]] = list(extra.items())
    while stack:  # the slow search, only to name the one found
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path, value
        if isinstance(value, dict):
            stack.extend((f"{path}.{k}", v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
    return None


def _holds_non_finite(extra: dict[str, Any]) -> bool:
    # on every event: no paths, no recursion (nesting as deep as the JSON reader allows)
    stack: list[dict[str, Any] | list[Any]] = [extra]
    while stack:
        node = stack.pop()
        for value in node.values() if isinstance(node, dict) else node:
            kind = type(value)
            if kind is float:
                if not math.isfinite(value):
                    return True
            elif kind is dict or kind is list:
                stack.append(value)
    return False


def _finite_extra(model: BaseModel) -> None:
    found = _non_finite_in(model.__pydantic_extra__ or {})
    if found is not None:
        path, value = found
        raise ValueError(
            f"unknown field {path} is {value}, not a finite number (NaN, Infinity, or beyond "
            "±1.8e308): JSON has no such numbers; send null or a string"
        )


class Event(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: ClassVar[str] = ""

    event_id: NonEmpty
    customer_id: NonEmpty
    ts: EventTime
    shop_id: NonEmpty = "default"
    origin: Annotated[
        str | None,
        Field(
            max_length=64,
            description="`import` for history written by `ecrm import` (it updates profiles "
            "and rule state but never fires an action); absent or anything else: live",
        ),
    ] = None

    @property
    def imported(self) -> bool:
        """Written by `ecrm import`: history, however recent its `ts`."""
        return self.origin == IMPORT_ORIGIN

    @model_validator(mode="after")
    def _unknown_fields_are_json(self) -> Event:
        _finite_extra(self)
        return self

    @property
    def extra(self) -> dict[str, Any]:
        """Fields the contract does not name, kept as the storefront sent them."""
        return dict(self.__pydantic_extra__ or {})


class OrderItem(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    sku: NonEmpty
    qty: Qty
    price: Money
    category: str | None = None

    @model_validator(mode="after")
    def _unknown_fields_are_json(self) -> OrderItem:
        _finite_extra(self)
        return self


class OrderEvent(Event):
    """A paid order, or a refund of (part of) one."""

    kind: ClassVar[str] = "order"

    order_id: NonEmpty
    status: Literal["paid", "refunded"]
    amount: Money
    currency: str = "CNY"
    items: list[OrderItem] | None = None


class CartEvent(Event):
    """A product put in the cart."""

    kind: ClassVar[str] = "cart"

    sku: NonEmpty
    qty: Qty
    price: Money

    @model_validator(mode="after")
    def _amount_fits(self) -> CartEvent:
        # rules test a cart add's `amount` and profiles sum it into cart_value: Decimal(18, 2)
        if self.price * self.qty > MAX_AMOUNT:
            raise ValueError(
                f"price × qty = {self.price * self.qty} is above {MAX_AMOUNT}, the largest "
                "amount ecrm stores"
            )
        return self


class FavoriteEvent(Event):
    """A product favourited."""

    kind: ClassVar[str] = "favorite"

    sku: NonEmpty


class BrowseEvent(Event):
    """A product or page viewed."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "string", "minLength": 1}}}
                for name in ("sku", "url")
            ]
        }
    )
    kind: ClassVar[str] = "browse"

    sku: str | None = None
    url: str | None = None
    category: str | None = None

    @model_validator(mode="after")
    def _names_what_was_viewed(self) -> BrowseEvent:
        if not self.sku and not self.url:
            raise ValueError("a browse event needs a sku or a url")
        return self


class CampaignEvent(Event):
    """A customer selected for a batch campaign (`ecrm campaign send`). Not something the
    customer did: it moves no RFM and no behaviour; rules on `event: campaigns` act on it."""

    kind: ClassVar[str] = "campaign"

    campaign: NonEmpty


class Handover(BaseModel):
    """ecrm's own step of a link between ids whose keys live in different slots of a Redis
    Cluster (agents/identity_handover.py): `release` asks the previous id's partition to hand
    its state over; `absorb` carries that state to the customer's partition. Signed with the
    shop's privacy key: one a storefront writes is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: Literal["release", "absorb"]
    #: absorb: the previous id's profile and rule state as stored (None: nothing to merge)
    profile: str | None = None
    rules: str | None = None
    #: absorb: `already_linked` when the previous id was this customer's already
    outcome: Literal["merged", "already_linked"] = "merged"
    signature: str = ""


class IdentityEvent(Event):
    """An anonymous id (a browsing session before login) or an old id is the customer
    `customer_id` from now on: the worker merges `previous_id`'s profile and rule state into
    the customer's and redirects `previous_id` there (`ecrm api` writes it for Segment's
    identify/alias; docs/api.md, "Identity"). Keyed by `customer_id`. `handover` is ecrm's
    own (a link across Redis Cluster slots), never a storefront's."""

    kind: ClassVar[str] = "identity"

    previous_id: NonEmpty
    handover: Handover | None = None

    @model_validator(mode="after")
    def _two_ids(self) -> IdentityEvent:
        if self.previous_id == self.customer_id:
            raise ValueError("previous_id is the customer_id: there is nothing to link")
        return self


#: The channels a customer consents to (or refuses) one by one (CONTRACT.md "Output topics").
CHANNELS = ("sms", "push", "wechat", "email", "inbox")
Channel = Literal["sms", "push", "wechat", "email", "inbox"]
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _month_day(value: Any) -> Any:
    """A birthday as "MM-DD" (29 February allowed): no year, so no age is stored."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    parts = text.split("-")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ValueError(f"birthday {_shown(value)} is not MM-DD (e.g. 03-21; no year)")
    month, day = int(parts[0]), int(parts[1])
    if not 1 <= month <= 12 or not 1 <= day <= _MONTH_DAYS[month - 1]:
        raise ValueError(f"birthday {_shown(value)} is not a day of the year")
    return text


MonthDay = Annotated[
    str,
    BeforeValidator(_month_day),
    WithJsonSchema({"type": "string", "pattern": r"^\d{2}-\d{2}$", "description": "MM-DD"}),
]


class CustomerEvent(Event):
    """Member attributes a storefront reports (`ecrm.customers`): when the customer joined,
    their birthday (month and day only), and consent per channel (true: may be contacted on
    it). Each field is optional; one that is absent leaves what is known. No names, phones or
    addresses: those are not ecrm's to keep. It moves no RFM and no behaviour."""

    kind: ClassVar[str] = "customer"

    joined_at: EventTime | None = None
    birthday: MonthDay | None = None
    consent: dict[Channel, bool] | None = None


class PointsEvent(Event):
    """A points request from the shop (`ecrm.points`): spend points (`redeem`), correct the
    balance by hand (`adjust`, ±), or set the level by hand (`level`: pinned there, never
    moved automatically; `level: null` unpins). `event_id` is the idempotency key: the same
    request redelivered applies once. The JSON field is `kind`; in Python it is `request`."""

    model_config = ConfigDict(populate_by_name=True)
    kind: ClassVar[str] = "points"

    request: Literal["redeem", "adjust", "level"] = Field(alias="kind")
    points: int = Field(ge=-(10**12), le=10**12)  # 0 for a level request
    level: Annotated[str | None, Field(max_length=64)] = None
    reason: str = Field(default="", max_length=256)
    order_id: NonEmpty | None = None


class TagEvent(Event):
    """A manual tag set or taken off by another system or `ecrm tags` (`ecrm.tags`). Manual
    tags are kept apart from the programme's rule tags: a rule never removes one."""

    kind: ClassVar[str] = "tag"

    tag: Annotated[str, Field(min_length=1, max_length=64)]
    op: Literal["add", "remove"] = "add"


#: Events that are requests to the membership programme, not something the customer did.
MEMBER_REQUESTS = (PointsEvent, TagEvent)


def campaign_event_id(campaign: str, customer_id: str) -> str:
    """The one event id of a campaign for a customer: sending a campaign again repeats it,
    so the worker counts it once and the rules decide it once."""
    return f"campaign:{campaign}:{customer_id}"


AnyEvent = (
    OrderEvent
    | CartEvent
    | FavoriteEvent
    | BrowseEvent
    | CustomerEvent
    | CampaignEvent
    | IdentityEvent
    | PointsEvent
    | TagEvent
)

#: Input topic name (without prefix) -> the event it carries: the contract's storefront
#: topics, `campaigns`, ecrm's extension that `ecrm campaign send` writes, and `identities`,
#: the identity links `ecrm api` writes for Segment's identify and alias.
EVENT_BY_TOPIC: dict[str, type[Event]] = {
    "orders": OrderEvent,
    "cart": CartEvent,
    "favorites": FavoriteEvent,
    "browse": BrowseEvent,
    "customers": CustomerEvent,
    "campaigns": CampaignEvent,
    "identities": IdentityEvent,
    # membership requests (docs/membership.md)
    "points": PointsEvent,
    "tags": TagEvent,
}
