"""The quixstreams peer of `ecrm bench` folds what ecrm's profile fold folds: over the same
synthetic shop traffic, both end with the same orders, money, cart, favourites and views.
(The peer itself runs in a venv of its own; its fold needs only schemas/events.py.)"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from agents.profile.fold import RfmPolicy, fold_many, refresh
from ecrm.dev.quix_peer import fold, new_profile
from ecrm.dev.traffic import synthetic_traffic
from schemas.events import EVENT_BY_TOPIC, OrderEvent
from schemas.profile import empty_profile

START = datetime(2026, 9, 1, tzinfo=UTC)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def test_the_peer_folds_shop_traffic_into_the_profiles_ecrm_folds() -> None:
    by_customer = defaultdict(list)
    retries = 0
    for e in synthetic_traffic(300, 1500, start=START, span=timedelta(days=30)):
        if e.raw is None and e.defect is None:
            by_customer[e.key].append(EVENT_BY_TOPIC[e.topic].model_validate(e.value))
            retries += e.retry
    assert retries > 0  # the traffic redelivers some events
    refunds = 0
    for customer, events in by_customer.items():
        ours = refresh(
            fold_many(empty_profile(customer), events), START + timedelta(days=31), RfmPolicy()
        )
        peer = new_profile()
        for event in events:
            fold(peer, event)
        refunds += sum(isinstance(e, OrderEvent) and e.status == "refunded" for e in events)
        assert peer["events_seen"] == ours.events_seen
        assert peer["frequency"] == ours.frequency
        assert Decimal(peer["monetary"]) == ours.monetary
        assert peer["last_order_at"] == (ours.last_order_at and _ms(ours.last_order_at))
        assert {sku: (q, Decimal(p)) for sku, (q, p, _) in peer["cart"].items()} == {
            sku: (line.qty, line.price) for sku, line in ours.cart.items()
        }
        assert set(peer["favorites"]) == set(ours.favorites)
        assert {sku: c for sku, (c, _, _) in peer["views"].items()} == {
            sku: stat.count for sku, stat in ours.views.items()
        }
        assert peer["page_views"] == ours.page_views
    assert refunds > 0  # the traffic exercised refunds


def test_a_redelivered_event_and_a_repeated_refund_count_once() -> None:
    paid = OrderEvent.model_validate(
        {
            "event_id": "e1",
            "customer_id": "c",
            "ts": 1_790_000_000_000,
            "order_id": "o1",
            "status": "paid",
            "amount": "100.00",
        }
    )
    refund = OrderEvent.model_validate(
        {
            "event_id": "e2",
            "customer_id": "c",
            "ts": 1_790_000_100_000,
            "order_id": "o1",
            "status": "refunded",
            "amount": "30.00",
        }
    )
    p = new_profile()
    assert [fold(p, e) for e in (paid, refund, paid, refund)] == [True, True, False, False]
    assert (p["frequency"], p["monetary"], p["events_seen"]) == (1, "70.00", 2)
