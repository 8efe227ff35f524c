"""Segment's HTTP tracking calls (track, identify, alias) turned into ecrm's contract events.

Pure: a Segment message in, `(topic, event)` out or a `Refused` saying why. The e-commerce
names of Segment's spec map onto ecrm's topics (docs/api.md, "Segment mapping"); any other
name is refused with the list of names ecrm knows, never dropped in silence.

    topic, event = from_track(message, now)       # ("orders", {"event_id": ..., ...})
    topic, event = from_identify(message, now)    # ("identities", {...}) or Refused
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

#: Segment event name -> (ecrm topic, order status if an order)
TRACK_EVENTS: dict[str, tuple[str, str | None]] = {
    "Order Completed": ("orders", "paid"),
    "Order Refunded": ("orders", "refunded"),
    "Product Added": ("cart", None),
    "Product Added to Wishlist": ("favorites", None),
    "Product Viewed": ("browse", None),
}


@dataclass(frozen=True)
class Refused:
    """A message ecrm will not take, and why (said to the sender)."""

    reason: str


Mapped = tuple[str, dict[str, Any]] | Refused


def _customer(message: Mapping[str, Any]) -> str | None:
    """Segment's userId, else its anonymousId (ecrm keys both as customer_id)."""
    for name in ("userId", "anonymousId"):
        value = message.get(name)
        if value is not None and str(value) != "":
            return str(value)
    return None


def _common(message: Mapping[str, Any], customer_id: str, now: datetime) -> dict[str, Any]:
    """event_id (Segment's messageId: a retried send repeats it), customer_id and ts."""
    event_id = message.get("messageId") or f"api:{uuid.uuid4()}"
    ts = message.get("timestamp") or message.get("originalTimestamp") or now.isoformat()
    event: dict[str, Any] = {"event_id": str(event_id), "customer_id": customer_id, "ts": ts}
    properties = message.get("properties") or {}
    shop = properties.get("shop_id") if isinstance(properties, Mapping) else None
    if shop is not None:
        event["shop_id"] = shop
    return event


def _sku(props: Mapping[str, Any]) -> Any:
    return props.get("sku") or props.get("product_id")


def _amount(props: Mapping[str, Any]) -> Any:
    """Segment's `total` (revenue + tax + shipping − discounts), else `revenue`, else `value`."""
    for name in ("total", "revenue", "value"):
        if props.get(name) is not None:
            return props[name]
    products = props.get("products")
    if isinstance(products, list) and products:
        try:
            return str(
                sum(
                    Decimal(str(p.get("price", 0))) * int(p.get("quantity", 1))
                    for p in products
                    if isinstance(p, Mapping)
                )
            )
        except (InvalidOperation, ValueError, TypeError):
            return None
    return None


def _items(props: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    products = props.get("products")
    if not isinstance(products, list):
        return None
    items = []
    for p in products:
        if not isinstance(p, Mapping):
            items.append(p)  # left for the schema to refuse, with its reason
            continue
        item = {"sku": _sku(p), "qty": p.get("quantity", 1), "price": p.get("price")}
        if p.get("category") is not None:
            item["category"] = p["category"]
        items.append(item)
    return items


def _order(props: Mapping[str, Any], status: str | None) -> dict[str, Any]:
    out = {"order_id": props.get("order_id"), "status": status, "amount": _amount(props)}
    if props.get("currency"):
        out["currency"] = str(props["currency"]).upper()
    items = _items(props)
    if items is not None:
        out["items"] = items
    return out


def _cart(props: Mapping[str, Any], status: str | None) -> dict[str, Any]:
    return {"sku": _sku(props), "qty": props.get("quantity", 1), "price": props.get("price")}


def _favorite(props: Mapping[str, Any], status: str | None) -> dict[str, Any]:
    return {"sku": _sku(props)}


def _browse(props: Mapping[str, Any], status: str | None) -> dict[str, Any]:
    out = {"sku": _sku(props), "url": props.get("url")}
    if props.get("category") is not None:
        out["category"] = props["category"]
    return {k: v for k, v in out.items() if v is not None}


_FIELDS: dict[str, Callable[[Mapping[str, Any], str | None], dict[str, Any]]] = {
    "orders": _order,
    "cart": _cart,
    "favorites": _favorite,
    "browse": _browse,
}


def from_track(message: Mapping[str, Any], now: datetime) -> Mapped:
    """A Segment `track` call as an ecrm event (validated later by the worker's schemas)."""
    name = message.get("event")
    if not isinstance(name, str) or name not in TRACK_EVENTS:
        known = ", ".join(repr(n) for n in TRACK_EVENTS)
        return Refused(f"event {name!r} has no ecrm topic; ecrm takes {known}")
    customer = _customer(message)
    if customer is None:
        return Refused("a track call needs a userId or an anonymousId")
    props = message.get("properties") or {}
    if not isinstance(props, Mapping):
        return Refused("properties must be an object")
    topic, status = TRACK_EVENTS[name]
    event = _common(message, customer, now)
    event.update(_FIELDS[topic](props, status))
    return topic, event


def from_page(message: Mapping[str, Any], now: datetime) -> Mapped:
    """A Segment `page` call as a browse event of its url."""
    customer = _customer(message)
    if customer is None:
        return Refused("a page call needs a userId or an anonymousId")
    props = message.get("properties") or {}
    context = message.get("context") or {}
    page = context.get("page") if isinstance(context, Mapping) else None
    url = (props.get("url") if isinstance(props, Mapping) else None) or (
        page.get("url") if isinstance(page, Mapping) else None
    )
    if not url:
        return Refused("a page call needs properties.url (or context.page.url)")
    event = _common(message, customer, now)
    event["url"] = url
    return "browse", event


def link(customer_id: Any, previous_id: Any, message: Mapping[str, Any], now: datetime) -> Mapped:
    """An identity link: `previous_id` is `customer_id` from now on."""
    if customer_id is None or str(customer_id) == "":
        return Refused("a link needs the customer's userId")
    if previous_id is None or str(previous_id) == "":
        return Refused("a link needs the previous id (anonymousId or previousId)")
    if str(previous_id) == str(customer_id):
        return Refused("the previous id is the userId: there is nothing to link")
    event = _common(message, str(customer_id), now)
    event["previous_id"] = str(previous_id)
    return "identities", event


def from_identify(message: Mapping[str, Any], now: datetime) -> Mapped:
    """`identify` with a userId and an anonymousId links them; traits are not stored (they
    are names, emails and phones, which ecrm keeps out of its profiles)."""
    return link(message.get("userId"), message.get("anonymousId"), message, now)


def from_alias(message: Mapping[str, Any], now: datetime) -> Mapped:
    """`alias`: previousId is userId from now on."""
    return link(message.get("userId"), message.get("previousId"), message, now)


#: Segment batch item `type` -> its mapping
BY_TYPE: dict[str, Callable[[Mapping[str, Any], datetime], Mapped]] = {
    "track": from_track,
    "page": from_page,
    "identify": from_identify,
    "alias": from_alias,
}
