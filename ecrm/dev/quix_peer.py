"""The quixstreams peer of `ecrm bench`: what a Python team would write instead of ecrm for
the profile fold alone, measured on the same topics in the same run.

A quixstreams 3.28 `Application` reads the storefront topics, validates each message with
ecrm's own event models (schemas/events.py, the contract's pydantic models: the same decode
every consumer of the bench pays), and folds it into the customer's profile kept in
quixstreams' RocksDB state (with its changelog topic, quixstreams' default):

- dedupe by event id (the customer's latest 64 ids), a paid order counted once per order id
  and a refund once per refund event id;
- order count and monetary (paid orders net of their refunds), first and last order time;
- the cart (a paid order takes its items out, all of them when it lists none);
- favourites (the latest 50), the latest 20 products viewed with their counts, page views.

quixstreams 3.28 pins pydantic below 2.14, which ecrm's own environment is past, so this file
runs as a script with the Python of a venv of its own (ecrm/dev/quix_bench.py builds it), and
imports only the standard library, quixstreams and schemas/events.py (pydantic alone):

    QUIX_VENV/bin/python ecrm/dev/quix_peer.py --bootstrap 127.0.0.1:9092 --group g \\
        --events 392610 --state-dir /tmp/state ecrm.orders ecrm.cart ecrm.favorites ecrm.browse

It stops after `--events` messages and prints one JSON line: events/s and the process's CPU
seconds (all its threads, librdkafka's included) per event, both from the first message
processed to the last, so start-up and the final commit are not counted — like the bench's
other consumers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: schemas/

from schemas.events import (  # noqa: E402 - after the path above
    EVENT_BY_TOPIC,
    BrowseEvent,
    CartEvent,
    Event,
    FavoriteEvent,
    OrderEvent,
)

if TYPE_CHECKING:
    from quixstreams.state import State

IDS_KEPT = 64
REFUND_IDS_KEPT = 32
VIEWS_KEPT = 20
FAVORITES_KEPT = 50
CART_KEPT = 200


def ms(event: Event) -> int:
    return int(event.ts.timestamp() * 1000)


def new_profile() -> dict[str, Any]:
    return {
        "ids": [],
        "orders": {},  # order id -> [paid at ms or None, amount, refunded, refund ids]
        "frequency": 0,
        "monetary": "0",
        "first_order_at": None,
        "last_order_at": None,
        "cart": {},  # sku -> [qty, price, added at ms]
        "favorites": {},  # sku -> at ms
        "views": {},  # sku -> [count, last at ms, category]
        "page_views": 0,
        "events_seen": 0,
        "first_seen_at": None,
        "last_seen_at": None,
    }


def fold(p: dict[str, Any], event: Event) -> bool:
    """Fold one event into the profile in place; False when it was seen before."""
    at = ms(event)
    if isinstance(event, OrderEvent):
        if not _order(p, event, at):
            return False
    else:
        if event.event_id in p["ids"]:
            return False
        p["ids"].append(event.event_id)
        del p["ids"][:-IDS_KEPT]
        if isinstance(event, CartEvent):
            _cart(p, event, at)
        elif isinstance(event, FavoriteEvent):
            p["favorites"][event.sku] = max(p["favorites"].get(event.sku, at), at)
            _bound(p["favorites"], FAVORITES_KEPT, lambda v: v)
        elif isinstance(event, BrowseEvent):
            _view(p, event, at)
    p["events_seen"] += 1
    p["first_seen_at"] = at if p["first_seen_at"] is None else min(p["first_seen_at"], at)
    p["last_seen_at"] = at if p["last_seen_at"] is None else max(p["last_seen_at"], at)
    return True


def _order(p: dict[str, Any], event: OrderEvent, at: int) -> bool:
    line = p["orders"].get(event.order_id) or [None, "0", "0", []]
    if event.status == "paid":
        if line[0] is not None:
            return False
        line[0], line[1] = at, str(event.amount)
        p["first_order_at"] = at if p["first_order_at"] is None else min(p["first_order_at"], at)
        p["last_order_at"] = at if p["last_order_at"] is None else max(p["last_order_at"], at)
        bought = {item.sku for item in event.items} if event.items else set(p["cart"])
        for sku in bought:
            cart_line = p["cart"].get(sku)
            if cart_line is not None and cart_line[2] <= at:
                del p["cart"][sku]
    else:
        if event.event_id in line[3]:
            return False
        line[3].append(event.event_id)
        del line[3][:-REFUND_IDS_KEPT]
        line[2] = str(Decimal(line[2]) + event.amount)
    p["orders"][event.order_id] = line
    nets = [
        net
        for paid_at, amount, refunded, _ in p["orders"].values()
        if paid_at is not None and (net := Decimal(amount) - Decimal(refunded)) > 0
    ]
    p["frequency"] = len(nets)
    p["monetary"] = str(sum(nets, Decimal(0)))
    return True


def _cart(p: dict[str, Any], event: CartEvent, at: int) -> None:
    line = p["cart"].get(event.sku)
    if line is None:
        p["cart"][event.sku] = [event.qty, str(event.price), at]
        _bound(p["cart"], CART_KEPT, lambda v: v[2])
    else:
        line[0] += event.qty
        line[1] = str(event.price)
        line[2] = max(line[2], at)


def _view(p: dict[str, Any], event: BrowseEvent, at: int) -> None:
    if not event.sku:
        p["page_views"] += 1
        return
    stat = p["views"].get(event.sku)
    if stat is None:
        p["views"][event.sku] = [1, at, event.category]
        _bound(p["views"], VIEWS_KEPT, lambda v: v[1])
    else:
        stat[0] += 1
        stat[1] = max(stat[1], at)
        stat[2] = event.category or stat[2]


def _bound(kept: dict[str, Any], limit: int, age: Any) -> None:
    if len(kept) > limit:
        del kept[min(kept, key=lambda k: age(kept[k]))]


def main() -> int:
    # here, not at the top: the fold above is unit-tested from ecrm's environment, without it
    from quixstreams import Application

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--events", type=int, required=True, help="stop after this many")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--exactly-once", action="store_true")
    parser.add_argument(
        "topics", nargs="+", help="full names; the part after the last dot is the kind"
    )
    args = parser.parse_args()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        processing_guarantee="exactly-once" if args.exactly_once else "at-least-once",
        loglevel="WARNING",
        # Tansu lets a group's first member in only after half the session timeout: quick
        # start-up (not measured either way: the clocks start at the first message)
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
    )
    frames = []
    for name in args.topics:
        model = EVENT_BY_TOPIC[name.rsplit(".", 1)[1]]
        topic = app.topic(name, key_deserializer="str", value_deserializer="bytes")
        frames.append(app.dataframe(topic).apply(model.model_validate_json))
    sdf = frames[0]
    for other in frames[1:]:
        sdf = sdf.concat(other)  # one state store keyed by customer across the topics

    seen = {"n": 0, "new": 0}
    clock: dict[str, float] = {}

    def step(event: Event, state: State) -> None:
        if not seen["n"]:
            clock["t0"], clock["cpu0"] = time.monotonic(), time.process_time()
        profile = state.get("profile") or new_profile()
        if fold(profile, event):
            state.set("profile", profile)
            seen["new"] += 1
        seen["n"] += 1
        if seen["n"] >= args.events:
            clock["t1"], clock["cpu1"] = time.monotonic(), time.process_time()
            app.stop()

    sdf.update(step, stateful=True)
    app.run()
    n = seen["n"]
    if n < args.events or "t1" not in clock:
        print(json.dumps({"error": f"stopped after {n} of {args.events} events"}), flush=True)
        return 1
    # the first message started the clocks: n - 1 events were processed between them
    elapsed, cpu = clock["t1"] - clock["t0"], clock["cpu1"] - clock["cpu0"]
    result = {
        "events": n,
        "new_events": seen["new"],
        "events_per_s": (n - 1) / elapsed if elapsed > 0 else 0.0,
        "cpu_s_per_event": cpu / (n - 1) if n > 1 else 0.0,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
