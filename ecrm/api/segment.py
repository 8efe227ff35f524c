"""Segment's HTTP tracking calls (track, page, identify, alias) turned into ecrm's contract
events.

Pure: a Segment message in, the `(topic, event)`s it makes out (none, one, or two for an
identify that links and carries traits) or a `Refused` saying why. The e-commerce names of
Segment's spec map onto ecrm's topics (docs/api.md, "Segment mapping"); any other name is
refused with the list of names ecrm knows, never dropped in silence.

    [(topic, event)] = from_track(message, now)   # [("orders", {"event_id": ..., ...})]
    from_identify(message, now)   # [("identities", link), ("customers", member attributes)]

A message without a `messageId` gets one made from its content and the key that sent it
(`content_id`), so the same call sent again (after a 503, a timeout) is the same event, which
the worker counts once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from schemas.events import CHANNELS

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


#: one event for a topic
Sent = tuple[str, dict[str, Any]]
Mapped = list[Sent] | Refused

#: fields a client sets per send, not per call: left out of a call's content id
PER_SEND = frozenset({"sentAt", "writeKey", "_metadata"})


def content_id(message: Mapping[str, Any], key_name: str) -> str:
    """The event id of a call without a messageId: a hash of the call as sent (less what
    a client changes on each send: `sentAt`, `writeKey`) and the sending key's name. Two
    identical calls from one key are one event: send a `timestamp` or a `messageId` to tell
    repeated identical actions apart."""
    content = {k: v for k, v in message.items() if k not in PER_SEND}
    canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS, default=str)
    digest = hashlib.sha256(key_name.encode() + b"\0" + canonical).hexdigest()
    return f"api:{digest[:32]}"


def with_message_id(message: Mapping[str, Any], key_name: str) -> dict[str, Any]:
    """`message` with its messageId, made by `content_id` when it has none."""
    if message.get("messageId"):
        return dict(message)
    return {**message, "messageId": content_id(message, key_name)}


def _customer(message: Mapping[str, Any]) -> str | None:
    """Segment's userId, else its anonymousId (ecrm keys both as customer_id)."""
    for name in ("userId", "anonymousId"):
        value = message.get(name)
        if value is not None and str(value) != "":
            return str(value)
    return None


def _common(message: Mapping[str, Any], customer_id: str, now: datetime) -> dict[str, Any]:
    """event_id (Segment's messageId: a retried send repeats it; `with_message_id` gives a
    call without one an id from its content), customer_id and ts."""
    event_id = message.get("messageId")
    if not event_id:
        raise ValueError("a message reaches the mapping with its messageId (with_message_id)")
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
    return [(topic, event)]


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
    return [("browse", event)]


def link(customer_id: Any, previous_id: Any, message: Mapping[str, Any], now: datetime) -> Sent:
    """An identity link: `previous_id` is `customer_id` from now on."""
    event = _common(message, str(customer_id), now)
    event["previous_id"] = str(previous_id)
    return "identities", event


def _given(value: Any) -> bool:
    return value is not None and str(value) != ""


def _birthday(value: Any) -> Any:
    """Segment's `birthday` trait (a date, often with a year or a time) as ecrm's MM-DD: the
    year is dropped, so no age is kept. Anything else is left for the schema to refuse."""
    if isinstance(value, str) and len(value) >= 10 and value[4] == "-" and value[7] == "-":
        return value[5:10]
    return value


def member_attributes(message: Mapping[str, Any]) -> dict[str, Any]:
    """What an identify's traits say that ecrm.customers holds (schemas/events.py
    CustomerEvent) — `traits`, or `context.traits` where RudderStack's library puts them —:
    `birthday`, when the customer joined (`createdAt`, Segment's reserved
    trait, or `joined_at`), and consent per channel (`traits.consent` as {channel: bool},
    and Segment's `context.consent.categoryPreferences` where a category is a channel).
    Names, e-mails, phones and addresses are not ecrm's to keep: never taken."""
    context = message.get("context")
    context = context if isinstance(context, Mapping) else {}
    traits: dict[str, Any] = {}
    for given in (context.get("traits"), message.get("traits")):  # RudderStack: context.traits
        if isinstance(given, Mapping):
            traits.update(given)
    out: dict[str, Any] = {}
    if _given(traits.get("birthday")):
        out["birthday"] = _birthday(traits["birthday"])
    joined = traits.get("createdAt") or traits.get("created_at") or traits.get("joined_at")
    if _given(joined):
        out["joined_at"] = joined
    consent: dict[str, Any] = {}
    preferences = context.get("consent")
    categories = (
        preferences.get("categoryPreferences") if isinstance(preferences, Mapping) else None
    )
    for given in (categories, traits.get("consent")):  # the traits' own word wins
        if isinstance(given, Mapping):
            consent.update({k: v for k, v in given.items() if k in CHANNELS})
    if consent:
        out["consent"] = consent
    return out


def from_identify(message: Mapping[str, Any], now: datetime) -> Mapped:
    """`identify`: a userId with an anonymousId links them; the traits ecrm.customers holds
    become a member update of the customer. An identify with neither (a userId alone, or
    traits ecrm does not keep) changes nothing and is accepted as such."""
    customer = _customer(message)
    if customer is None:
        return Refused("an identify call needs a userId or an anonymousId")
    user, anonymous = message.get("userId"), message.get("anonymousId")
    sent: list[Sent] = []
    if _given(user) and _given(anonymous) and str(user) != str(anonymous):
        sent.append(link(user, anonymous, message, now))
    attributes = member_attributes(message)
    if attributes:
        event = _common(message, customer, now)
        event["event_id"] = f"{event['event_id']}:member"
        event.update(attributes)
        sent.append(("customers", event))
    return sent


def from_alias(message: Mapping[str, Any], now: datetime) -> Mapped:
    """`alias`: previousId is userId from now on."""
    user, previous = message.get("userId"), message.get("previousId")
    if not _given(user):
        return Refused("an alias needs the customer's userId")
    if not _given(previous):
        return Refused("an alias needs the previousId")
    if str(previous) == str(user):
        return Refused("the previousId is the userId: there is nothing to link")
    return [link(user, previous, message, now)]


#: Segment batch item `type` -> its mapping
BY_TYPE: dict[str, Callable[[Mapping[str, Any], datetime], Mapped]] = {
    "track": from_track,
    "page": from_page,
    "identify": from_identify,
    "alias": from_alias,
}
