"""Synthetic traffic looks like a shop's: skewed spending, abandoned carts, refunds, retries, junk."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from agents.profile.fold import RfmPolicy, fold_many, refresh
from ecrm.dev.traffic import MAX_LAG, CouponResponse, StoreEvent, synthetic_traffic
from schemas.events import EVENT_BY_TOPIC, CartEvent, Event, OrderEvent
from schemas.profile import empty_profile
from schemas.rules import load_rules

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


# The coupon response model (CouponResponse): what the demo's measured uplift rests on.

CART_MODEL = CouponResponse(
    holdout=0.5, base=0.0, lift=1.0, value=Decimal(10), threshold=Decimal(99)
)


def _answered(model: CouponResponse | None, seed: int = 3) -> list[StoreEvent]:
    return list(synthetic_traffic(400, 2400, seed=seed, start=START, span=SPAN, response=model))


def test_the_response_model_only_adds_comeback_orders_to_the_same_shop() -> None:
    plain = _answered(None)
    for model in (CART_MODEL, replace(CART_MODEL, lift=0.0, base=0.2)):
        answered = _answered(model)
        assert any(e.comeback for e in answered)
        assert [e for e in answered if not e.comeback] == plain


def test_only_customers_the_coupon_reaches_answer_it() -> None:
    """base 0, lift 1: every treated abandoned cart is bought, no held-out one."""
    comebacks = [e for e in _answered(CART_MODEL) if e.comeback]
    assert len(comebacks) > 20
    assert all(CART_MODEL.coupon_reaches(e.key) for e in comebacks)
    # base 1, lift 0: the held-out come back too, at the same rate
    held = [e for e in _answered(replace(CART_MODEL, base=1.0, lift=0.0)) if e.comeback]
    assert any(not CART_MODEL.coupon_reaches(e.key) for e in held)


def test_a_comeback_buys_the_abandoned_cart_within_the_window_after_the_decision() -> None:
    traffic = _answered(CART_MODEL)
    carts: defaultdict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for e in traffic:
        if e.topic == "cart" and e.defect is None:
            carts[e.key].append((_at(e.value["ts"]), e.value["sku"]))
    wait, window = CART_MODEL.wait, CART_MODEL.window
    for e in (e for e in traffic if e.comeback):
        at = _at(e.value["ts"])
        skus = {item["sku"] for item in e.value["items"]}
        added = [t for t, sku in carts[e.key] if sku in skus and t + wait < at <= t + wait + window]
        assert added, e.value
        full = sum(Decimal(i["price"]) * i["qty"] for i in e.value["items"])
        paid = Decimal(e.value["amount"])
        assert paid == (full - 10 if full >= 99 else full)  # the coupon, redeemed


def test_the_model_follows_the_rules_file_abandoned_cart_rule() -> None:
    rules = load_rules(Path("rules/example.yaml"))
    rule = next(r for r in rules.rules if r.id == "abandoned-cart")
    model = CouponResponse.for_rule(rule, rules.policy, base=0.1, lift=0.2)
    assert (model.holdout, model.wait, model.cooldown) == (
        0.1,
        timedelta(minutes=30),
        timedelta(days=7),
    )
    assert model.window == timedelta(hours=48)  # the coupon's validity, inside the 72 h window
    assert (model.value, model.threshold) == (Decimal(10), Decimal(99))
    assert "10% without the coupon" in model.describe() and "30% with it" in model.describe()
    with pytest.raises(ValueError, match="base"):
        CouponResponse(base=0.9, lift=0.2)


def _at(ts: str | int) -> datetime:
    if isinstance(ts, int):
        return datetime.fromtimestamp(ts / 1000, UTC)
    return datetime.fromisoformat(ts)
