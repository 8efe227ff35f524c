"""The inverse of agents/profile/rows.py `event_row`: a stored `events` row back into the event
the storefront sent, so history can be replayed through the same code as the live stream; and
the stored rows put back in the order the live worker decided them (`in_decision_order`).

Pure. What the row cannot give back is what the rules cannot see either: the time beyond
milliseconds (ClickHouse keeps DateTime64(3)), and whether an order without items said
`items: []` or nothing (both mean "the whole cart" to the fold and the rules).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from agents.profile.event_time import decision_order
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

#: The `events` columns a replay reads (clickhouse/001_events.sql).
EVENT_COLUMNS = (
    "event_id",
    "kind",
    "customer_id",
    "shop_id",
    "ts",
    "order_id",
    "status",
    "amount",
    "currency",
    "sku",
    "qty",
    "price",
    "category",
    "url",
    "campaign",
    "attributes",
    "items",
    "extra",
)

#: (source topic, source partition) -> that topic-partition's rows in offset order
Runs = Mapping[tuple[str, int], Iterable[Mapping[str, Any]]]


def in_decision_order(runs: Runs, topics: Sequence[str]) -> Iterator[tuple[Event, datetime | None]]:
    """Stored events as (event, mark) in the order the live worker decided them: each Kafka
    partition's topics merged as agents/profile/event_time.py merges them (`topics` in the
    keeper's order; a topic not among them after those), the partitions interleaved by the
    marks (each partition's marks never go back, so this is their running clock)."""
    rank = {topic: n for n, topic in enumerate(topics)}
    partitions: dict[int, list[tuple[str, Iterable[Mapping[str, Any]]]]] = {}
    for (topic, partition), rows in runs.items():
        partitions.setdefault(partition, []).append((topic, rows))
    merged = []
    for _, sources in sorted(partitions.items()):
        sources.sort(key=lambda s: (rank.get(s[0], len(rank)), s[0]))
        events = [(event_from_row(row) for row in rows) for _, rows in sources]
        merged.append(decision_order(events, lambda e: e.ts))
    return heapq.merge(*merged, key=lambda pair: (pair[1] is not None, pair[1] or pair[0].ts))


def event_from_row(row: Mapping[str, Any]) -> Event:
    """The event model of one `events` row; ValueError for a kind no event has."""
    kind = row["kind"]
    # the standard library reads integers beyond 64 bits exactly (orjson makes them floats)
    extra = json.loads(row["extra"]) if row.get("extra") else {}
    fields: dict[str, Any] = {
        **(extra if isinstance(extra, dict) else {}),
        "event_id": row["event_id"],
        "customer_id": row["customer_id"],
        "shop_id": row["shop_id"],
        "ts": row["ts"],
    }
    if row.get("origin"):  # not in EVENT_COLUMNS: a backtest replays history as if live
        fields["origin"] = row["origin"]
    if kind == "order":
        items = json.loads(row["items"]) if row.get("items") else []
        fields.update(
            order_id=row["order_id"],
            status=row["status"],
            amount=row["amount"],
            currency=row["currency"],
            items=items or None,
        )
        return OrderEvent.model_validate(fields)
    if kind == "cart":
        fields.update(sku=row["sku"], qty=row["qty"], price=row["price"])
        return CartEvent.model_validate(fields)
    if kind == "favorite":
        return FavoriteEvent.model_validate({**fields, "sku": row["sku"]})
    if kind == "browse":
        fields.update(
            sku=row["sku"] or None, url=row["url"] or None, category=row["category"] or None
        )
        return BrowseEvent.model_validate(fields)
    if kind == "campaign":
        return CampaignEvent.model_validate({**fields, "campaign": row["campaign"]})
    if kind == "customer":
        attributes = json.loads(row["attributes"]) if row.get("attributes") else {}
        return CustomerEvent.model_validate({**fields, **attributes})
    if kind == "points":
        return PointsEvent.model_validate({**fields, "order_id": row.get("order_id") or None})
    if kind == "tag":
        return TagEvent.model_validate(fields)
    raise ValueError(f"events row {row.get('event_id')!r} has unknown kind {kind!r}")
