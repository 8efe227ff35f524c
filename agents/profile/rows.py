"""Pure mapping of events and segment changes to the rows the ClickHouse sink inserts."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from schemas.events import (
    BrowseEvent,
    CampaignEvent,
    CartEvent,
    CustomerEvent,
    Event,
    FavoriteEvent,
    OrderEvent,
    PointsEvent,
    TagEvent,
)
from schemas.outputs import SegmentChange
from schemas.profile import Profile

ZERO = Decimal("0")


def json_text(value: Any) -> str:
    """JSON text of values a storefront or a marketer chose (unknown event fields, action
    params), kept exactly: orjson stops at integers beyond 64 bits, the standard library
    writes any integer. (NaN and infinities are refused before they get here.)"""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return json.dumps(
            value, default=str, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )


def event_row(
    event: Event, *, topic: str, partition: int, offset: int, now: datetime
) -> dict[str, Any]:
    """One `events` row: the contract fields flattened, unknown fields kept as JSON."""
    row: dict[str, Any] = {
        "event_id": event.event_id,
        "kind": event.kind,
        "customer_id": event.customer_id,
        "shop_id": event.shop_id,
        "ts": event.ts,
        "order_id": "",
        "status": "",
        "amount": ZERO,
        "currency": "",
        "sku": "",
        "qty": 0,
        "price": ZERO,
        "category": "",
        "url": "",
        "campaign": "",
        "origin": event.origin or "",
        "attributes": "{}",
        "items": "[]",
        "extra": json_text(event.extra),
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "ingested_at": now,
    }
    if isinstance(event, OrderEvent):
        row.update(
            order_id=event.order_id,
            status=event.status,
            amount=event.amount,
            currency=event.currency,
            items=json_text([i.model_dump(mode="json") for i in event.items or []]),
        )
    elif isinstance(event, CartEvent):
        row.update(sku=event.sku, qty=event.qty, price=event.price)
    elif isinstance(event, FavoriteEvent):
        row.update(sku=event.sku)
    elif isinstance(event, BrowseEvent):
        row.update(sku=event.sku or "", url=event.url or "", category=event.category or "")
    elif isinstance(event, CampaignEvent):
        row.update(campaign=event.campaign)
    elif isinstance(event, CustomerEvent):
        row.update(attributes=json_text(customer_attributes(event)))
    elif isinstance(event, PointsEvent):
        # a request's own fields ride in `extra`, so the backtest reads the request back
        request = {"kind": event.request, "points": event.points, "reason": event.reason}
        if event.level is not None:
            request["level"] = event.level
        row.update(order_id=event.order_id or "", extra=json_text({**event.extra, **request}))
    elif isinstance(event, TagEvent):
        row.update(extra=json_text({**event.extra, "tag": event.tag, "op": event.op}))
    return row


def customer_attributes(event: CustomerEvent) -> dict[str, Any]:
    """What a member update said (`events.attributes`, 016), as JSON-ready values."""
    return event.model_dump(mode="json", include={"joined_at", "birthday", "consent"})


def segment_change_row(change: SegmentChange) -> dict[str, Any]:
    return {
        "customer_id": change.customer_id,
        "from_segment": change.from_,
        "to_segment": change.to,
        "at": change.at,
        "cause": change.cause,
        "event_id": change.event_id or "",
    }


def profile_row(profile: Profile, written_at: datetime) -> dict[str, Any]:
    """One `profile_snapshots` row: what an analyst selects audiences by (`written_at`, the
    wall clock, orders two snapshots as of the same event time)."""
    return {
        "customer_id": profile.customer_id,
        "shop_id": profile.shop_id,
        "segment": profile.segment,
        "recency_days": profile.recency_days,
        "frequency": profile.frequency,
        "monetary": profile.monetary,
        "first_order_at": profile.first_order_at,
        "last_order_at": profile.last_order_at,
        "level": profile.level or "",
        "points": profile.points,
        "tags": profile.tags,
        "cart_items": sum(line.qty for line in profile.cart.values()),
        "cart_value": sum((line.price * line.qty for line in profile.cart.values()), ZERO),
        "as_of": profile.as_of,
        "written_at": written_at,
    }
