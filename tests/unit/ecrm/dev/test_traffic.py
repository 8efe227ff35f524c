"""Synthetic traffic looks like a shop's: skewed spending, abandoned carts, refunds, retries, junk."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice

import orjson
import pytest
from pydantic import ValidationError

from agents.profile.fold import RfmPolicy, fold_many, refresh
from ecrm.dev.traffic import MAX_LAG, StoreEvent, synthetic_traffic
from schemas.events import EVENT_BY_TOPIC, CartEvent, Event, OrderEvent
from schemas.profile import empty_profile

START = datetime(2024, 6, 1, tzinfo=UTC)
SPAN = timedelta(days=30)


def _traffic(seed: int = 7) -> list[StoreEvent]:
    return list(synthetic_traffic(1000, 6000, seed=seed, start=START, span=SPAN))


@pytest.fixture(scope="module")
def traffic() -> list[StoreEvent]:
    return _traffic()


@pytest.fixture(scope="module")
def parsed(traffic: list[StoreEvent]) -> list[Event]:
    """Every message meant to be valid, as the worker would parse it (retries included)."""
    return [
        EVENT_BY_TOPIC[e.topic].model_validate(orjson.loads(e.payload()))
        for e in traffic
        if e.defect is None
    ]


def test_the_same_seed_gives_the_same_traffic_and_another_seed_other_traffic(
    traffic: list[StoreEvent],
) -> None:
    assert _traffic(seed=7) == traffic
    assert (
        list(islice(synthetic_traffic(1000, 6000, seed=8, start=START, span=SPAN), 50))
        != (traffic[:50])
    )


def test_every_valid_message_is_a_contract_event_keyed_by_its_customer(
    traffic: list[StoreEvent], parsed: list[Event]
) -> None:
    valid = [e for e in traffic if e.defect is None]
    assert len(parsed) == len(valid) > 20_000
    # every storefront topic of behaviour; `campaigns` is written by `ecrm campaign send`, not
    # a storefront, `identities` by `ecrm api`, `points` and `tags` by the shop's systems, and
    # the synthetic shop sends no member updates
    assert {e.topic for e in valid} == set(EVENT_BY_TOPIC) - {
        "campaigns",
        "customers",
        "identities",
        "points",
        "tags",
    }
    for message, event in zip(valid, parsed, strict=True):
        assert message.key == event.customer_id
        assert message.raw is None


def test_every_malformed_message_fails_validation(traffic: list[StoreEvent]) -> None:
    broken = [e for e in traffic if e.defect is not None]
    assert {e.defect for e in broken} == {"missing field", "bad ts", "negative qty", "not JSON"}
    assert 0.001 < len(broken) / len(traffic) < 0.015
    for message in broken:
        payload = message.payload()
        with pytest.raises((orjson.JSONDecodeError, ValidationError)):
            EVENT_BY_TOPIC[message.topic].model_validate(orjson.loads(payload))


def test_retries_repeat_the_event_just_sent_with_the_same_event_id(
    traffic: list[StoreEvent],
) -> None:
    last_of: dict[str, StoreEvent] = {}
    retries = 0
    for message in traffic:
        if message.retry:
            retries += 1
            assert last_of[message.key].value == message.value
            assert last_of[message.key].retry is False
        last_of[message.key] = message
    assert 0.003 < retries / len(traffic) < 0.03
    ids = Counter(e.value["event_id"] for e in traffic if e.defect is None)
    assert sum(n - 1 for n in ids.values()) == retries  # no other event shares an id


def test_events_are_in_time_order_per_customer_and_roughly_overall(parsed: list[Event]) -> None:
    last: dict[str, datetime] = {}
    latest = START
    for event in parsed:
        assert START <= event.ts <= START + SPAN
        assert event.ts >= last.get(event.customer_id, START)
        assert event.ts >= latest - MAX_LAG
        last[event.customer_id] = event.ts
        latest = max(latest, event.ts)


def test_timestamps_and_amounts_come_in_every_contract_format(traffic: list[StoreEvent]) -> None:
    valid = [e.value for e in traffic if e.defect is None]
    assert {type(v["ts"]) for v in valid} == {int, str}
    assert all(v["ts"].endswith("+08:00") for v in valid if isinstance(v["ts"], str))
    amounts = [v["amount"] for v in valid if "amount" in v]
    assert {type(a) for a in amounts} == {str, float}
    assert any("platform" in v for v in valid)  # unknown fields ride along


def test_a_few_customers_carry_most_of_the_spending(parsed: list[Event]) -> None:
    spent: Counter[str] = Counter()
    for event in parsed:
        if isinstance(event, OrderEvent) and event.status == "paid":
            spent[event.customer_id] += event.amount  # type: ignore[assignment]
    ranked = sorted(spent.values(), reverse=True)
    top_tenth = sum(ranked[: 1000 // 10], Decimal("0"))
    assert top_tenth / sum(ranked, Decimal("0")) > Decimal("0.4")
    assert len(spent) > 300  # and many customers buy a little


def test_refunds_full_and_partial_come_after_their_order(parsed: list[Event]) -> None:
    paid: dict[str, OrderEvent] = {}
    refunds: list[OrderEvent] = []
    for event in parsed:
        if isinstance(event, OrderEvent) and event.status == "paid":
            paid[event.order_id] = event
        elif isinstance(event, OrderEvent):
            refunds.append(event)
            order = paid.get(event.order_id)
            if order is not None:  # None only if the paid message was one of the broken ones
                assert order.ts < event.ts
                assert event.amount <= order.amount
    assert 0.01 < len({r.order_id for r in refunds}) / len(paid) < 0.06
    full = sum(1 for r in refunds if r.order_id in paid and r.amount == paid[r.order_id].amount)
    assert 0 < full < len(refunds)


def test_sessions_run_views_to_carts_to_orders_and_some_carts_are_abandoned(
    parsed: list[Event],
) -> None:
    topics = Counter(type(e).__name__ for e in parsed)
    assert topics["BrowseEvent"] > topics["CartEvent"] > topics["OrderEvent"] > 0
    assert topics["FavoriteEvent"] > 0
    carted: dict[str, set[str]] = defaultdict(set)
    bought: dict[str, set[str]] = defaultdict(set)
    for event in parsed:
        if isinstance(event, CartEvent):
            carted[event.customer_id].add(event.sku)
        elif isinstance(event, OrderEvent) and event.items:
            bought[event.customer_id].update(item.sku for item in event.items)
    in_cart_first = sum(len(bought[c] & carted[c]) for c in bought)
    assert in_cart_first > 0.8 * sum(len(skus) for skus in bought.values())
    abandoned = sum(len(carted[c] - bought[c]) for c in carted)
    assert abandoned > 0.2 * sum(len(skus) for skus in carted.values())


def test_folding_the_traffic_spreads_customers_over_the_segments(parsed: list[Event]) -> None:
    per_customer: dict[str, list[Event]] = defaultdict(list)
    for event in parsed:
        per_customer[event.customer_id].append(event)
    two_weeks_after = START + SPAN + timedelta(days=14)  # long enough for some to slip
    segments = Counter(
        refresh(fold_many(empty_profile(c), events), two_weeks_after, RfmPolicy()).segment
        for c, events in per_customer.items()
    )
    assert segments["prospect"] > 0
    assert segments["important_value"] > 0
    assert segments["important_keep"] + segments["general_keep"] > 0
    assert len(segments) >= 6, segments


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        synthetic_traffic(1, 1, start=datetime(2024, 1, 1), span=SPAN)
    with pytest.raises(ValueError, match="positive span"):
        synthetic_traffic(1, 1, start=START, span=timedelta(0))
    assert list(synthetic_traffic(5, 0, start=START, span=SPAN)) == []
