"""Segment calls become the contract's events; anything else is refused with the reason."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ecrm.api.segment import (
    TRACK_EVENTS,
    Refused,
    content_id,
    from_alias,
    from_identify,
    from_track,
    with_message_id,
)
from schemas.events import EVENT_BY_TOPIC

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def track(event: str, **props: object) -> dict[str, object]:
    return {
        "event": event,
        "userId": "u-1",
        "messageId": "m-1",
        "timestamp": "2026-05-01T11:00:00Z",
        "properties": props,
    }


def test_an_order_completed_is_a_paid_order_with_its_products_as_items():
    [(topic, event)] = from_track(
        track(
            "Order Completed",
            order_id="o-1",
            total=99.5,
            currency="usd",
            products=[{"product_id": "p-1", "quantity": 2, "price": 49.75, "category": "tea"}],
        ),
        NOW,
    )
    order = EVENT_BY_TOPIC[topic].model_validate(event)
    assert topic == "orders" and order.status == "paid" and order.amount == Decimal("99.5")
    assert order.event_id == "m-1" and order.currency == "USD"
    assert [(i.sku, i.qty, i.category) for i in order.items] == [("p-1", 2, "tea")]


@pytest.mark.parametrize(
    ("name", "topic"),
    [
        ("Order Refunded", "orders"),
        ("Product Added", "cart"),
        ("Product Added to Wishlist", "favorites"),
        ("Product Viewed", "browse"),
    ],
)
def test_each_ecommerce_name_has_its_topic(name, topic):
    mapped = from_track(
        track(name, order_id="o-1", total="10", sku="s-1", price="10", quantity=1), NOW
    )
    assert not isinstance(mapped, Refused) and mapped[0][0] == topic
    EVENT_BY_TOPIC[topic].model_validate(mapped[0][1])


def test_an_unknown_name_is_refused_naming_the_known_ones():
    refused = from_track(track("Checkout Started"), NOW)
    assert isinstance(refused, Refused)
    assert "Checkout Started" in refused.reason
    assert all(name in refused.reason for name in TRACK_EVENTS)


def test_anonymous_events_are_the_anonymous_ids_and_need_some_id():
    anon = {**track("Product Viewed", sku="s"), "userId": None, "anonymousId": "a-1"}
    assert from_track(anon, NOW)[0][1]["customer_id"] == "a-1"
    assert isinstance(from_track({**anon, "anonymousId": None}, NOW), Refused)


def test_identify_and_alias_are_links_and_a_link_to_itself_is_refused():
    [(topic, link)] = from_identify({"userId": "u-1", "anonymousId": "a-1", "messageId": "m"}, NOW)
    assert topic == "identities" and (link["customer_id"], link["previous_id"]) == ("u-1", "a-1")
    alias = from_alias({"userId": "u-1", "previousId": "a-9", "messageId": "m"}, NOW)
    assert alias[0][1]["previous_id"] == "a-9"
    assert isinstance(
        from_alias({"userId": "u-1", "previousId": "u-1", "messageId": "m"}, NOW), Refused
    )


def test_an_identify_with_nothing_to_record_is_accepted_as_doing_nothing():
    assert from_identify({"userId": "u-1", "messageId": "m"}, NOW) == []
    names_only = {"userId": "u-1", "messageId": "m", "traits": {"email": "a@b.c", "name": "A"}}
    assert from_identify(names_only, NOW) == []
    assert isinstance(from_identify({"messageId": "m", "traits": {}}, NOW), Refused)


def test_identify_traits_become_the_member_attributes_ecrm_keeps_and_nothing_else():
    message = {
        "userId": "u-1",
        "anonymousId": "a-1",
        "messageId": "m-7",
        "timestamp": "2026-05-01T11:00:00Z",
        "traits": {
            "email": "a@b.c",
            "phone": "+86 138",
            "birthday": "1990-03-21T00:00:00.000Z",
            "createdAt": "2025-01-02T03:04:05Z",
            "consent": {"sms": False, "newsletter": True},
        },
        "context": {"consent": {"categoryPreferences": {"email": True, "sms": True}}},
    }
    [(t1, link), (t2, member)] = from_identify(message, NOW)
    assert (t1, t2) == ("identities", "customers") and link["event_id"] == "m-7"
    parsed = EVENT_BY_TOPIC["customers"].model_validate(member)
    assert parsed.customer_id == "u-1" and member["event_id"] == "m-7:member"
    assert parsed.birthday == "03-21" and parsed.joined_at.year == 2025
    assert parsed.consent == {"email": True, "sms": False}  # the traits' own word wins
    assert "email" not in member and "phone" not in member and "traits" not in member


def test_a_call_without_a_message_id_gets_the_same_id_each_time_it_is_sent():
    call = {"type": "track", "event": "Product Viewed", "userId": "u", "properties": {"sku": "s"}}
    first = with_message_id({**call, "sentAt": "2026-05-01T11:00:00Z", "writeKey": "k"}, "web")
    again = with_message_id({**call, "sentAt": "2026-05-01T11:00:09Z"}, "web")
    assert first["messageId"] == again["messageId"] == content_id(call, "web")
    assert content_id(call, "other-key") != content_id(call, "web")
    assert content_id({**call, "properties": {"sku": "t"}}, "web") != content_id(call, "web")
    assert with_message_id({**call, "messageId": "m-1"}, "web")["messageId"] == "m-1"
