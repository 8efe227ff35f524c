"""The four storefront events of the contract, validated at the door (unknown fields are kept)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


def _to_utc(value: Any) -> datetime:
    """ISO-8601 with an offset, or integer epoch milliseconds; never a naive time."""
    if isinstance(value, bool):
        raise ValueError("ts must be ISO-8601 with an offset or epoch milliseconds, not a boolean")
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"ts {value!r} is not ISO-8601") from exc
    else:
        raise ValueError("ts must be ISO-8601 with an offset or epoch milliseconds")
    if parsed.tzinfo is None:
        raise ValueError(f"ts {value!r} has no UTC offset; say +08:00 or Z")
    return parsed.astimezone(UTC)


EventTime = Annotated[datetime, BeforeValidator(_to_utc)]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=256)]


class Event(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: ClassVar[str] = ""

    event_id: NonEmpty
    customer_id: NonEmpty
    ts: EventTime
    shop_id: NonEmpty = "default"

    @property
    def extra(self) -> dict[str, Any]:
        """Fields the contract does not name, kept as the storefront sent them."""
        return dict(self.__pydantic_extra__ or {})


class OrderItem(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    sku: NonEmpty
    qty: int = Field(ge=1)
    price: Money
    category: str | None = None


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
    qty: int = Field(ge=1)
    price: Money


class FavoriteEvent(Event):
    """A product favourited."""

    kind: ClassVar[str] = "favorite"

    sku: NonEmpty


class BrowseEvent(Event):
    """A product or page viewed."""

    kind: ClassVar[str] = "browse"

    sku: str | None = None
    url: str | None = None
    category: str | None = None

    @model_validator(mode="after")
    def _names_what_was_viewed(self) -> BrowseEvent:
        if not self.sku and not self.url:
            raise ValueError("a browse event needs a sku or a url")
        return self


AnyEvent = OrderEvent | CartEvent | FavoriteEvent | BrowseEvent

#: Contract topic name (without prefix) -> the event it carries.
EVENT_BY_TOPIC: dict[str, type[Event]] = {
    "orders": OrderEvent,
    "cart": CartEvent,
    "favorites": FavoriteEvent,
    "browse": BrowseEvent,
}
