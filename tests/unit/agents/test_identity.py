"""Identity merge: what an anonymous session did carries over to the customer it logs in as."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from agents.customer_step import Customer, StepContext, on_clock, on_event
from agents.identity import merge
from agents.profile.fold import RfmPolicy
from agents.rules.contact_policy import BudgetBook
from schemas.events import BrowseEvent, CartEvent, FavoriteEvent, OrderEvent
from schemas.rules import parse_rules

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)
POLICY = RfmPolicy()
RULES = """
rules:
  - id: abandoned-cart
    when: {event: cart, not_followed_by: {event: orders, where: {status: paid}}, within: 30m}
    action: {kind: coupon, params: {value: 10, valid_for: 48h}}
"""


def ctx(rules: bool = False) -> StepContext:
    return StepContext(POLICY, parse_rules(RULES) if rules else None, BudgetBook())


def browse(cid: str, sku: str, n: int, at: datetime) -> BrowseEvent:
    return BrowseEvent(event_id=f"{cid}-v{sku}{n}", customer_id=cid, ts=at, sku=sku)


def cart(cid: str, sku: str, at: datetime) -> CartEvent:
    return CartEvent(
        event_id=f"{cid}-c{sku}", customer_id=cid, ts=at, sku=sku, qty=1, price=Decimal("88")
    )


def paid(cid: str, order: str, at: datetime, amount: str = "300") -> OrderEvent:
    return OrderEvent(
        event_id=order, customer_id=cid, ts=at, order_id=order, status="paid", amount=amount
    )


def test_the_sessions_views_cart_and_favourites_join_the_customers():
    anon = on_event(
        Customer.new("anon-1"),
        [
            browse("anon-1", "tea", 1, T0),
            browse("anon-1", "tea", 2, T0 + timedelta(minutes=1)),
            cart("anon-1", "tea", T0 + timedelta(minutes=2)),
            FavoriteEvent(event_id="f", customer_id="anon-1", ts=T0, sku="cup"),
        ],
        ctx(),
    ).customer
    known = on_event(
        Customer.new("u-1"),
        [paid("u-1", "o-1", T0 - timedelta(days=3)), browse("u-1", "tea", 1, T0)],
        ctx(),
    ).customer
    done = merge(known, anon, T0 + timedelta(minutes=5), POLICY, "link-1")
    p = done.customer.profile
    assert p.customer_id == "u-1" and set(p.cart) == {"tea"} and set(p.favorites) == {"cup"}
    assert p.views["tea"].count == 3 and p.frequency == 1 and p.monetary == Decimal("300")
    assert done.stub.customer_id == "anon-1" and done.stub.merged_into == "u-1"
    assert not done.stub.cart and not done.stub.views
    assert done.moved["cart_items"] == 1 and done.moved["views"] == 2


def test_a_guest_order_moves_the_customers_rfm():
    anon = on_event(Customer.new("anon-2"), [paid("anon-2", "g-1", T0, "900")], ctx()).customer
    known = on_event(Customer.new("u-2"), [paid("u-2", "o-1", T0, "100")], ctx()).customer
    done = merge(known, anon, T0 + timedelta(hours=1), POLICY, "link-2")
    assert done.customer.profile.frequency == 2
    assert done.customer.profile.monetary == Decimal("1000")
    assert done.moved["segment_before"] != done.moved["segment_after"] == "important_value"


def test_a_cart_wait_armed_before_login_fires_for_the_customer_after_it():
    c = ctx(rules=True)
    anon = on_event(Customer.new("anon-3"), [cart("anon-3", "tea", T0)], c).customer
    assert len(anon.rules.timers) == 1
    done = merge(Customer.new("u-3"), anon, T0 + timedelta(minutes=10), POLICY, "link-3")
    assert done.moved["waits"] == 1
    fired = on_clock(done.customer, T0 + timedelta(minutes=31), c).decisions
    assert [(d.rule_id, d.customer_id, d.outcome) for d in fired] == [
        ("abandoned-cart", "u-3", "fired")
    ]


def test_the_customers_order_after_login_cancels_the_sessions_wait():
    c = ctx(rules=True)
    anon = on_event(Customer.new("anon-4"), [cart("anon-4", "tea", T0)], c).customer
    done = merge(Customer.new("u-4"), anon, T0 + timedelta(minutes=10), POLICY, "link-4")
    after = on_event(done.customer, [paid("u-4", "o-9", T0 + timedelta(minutes=20))], c)
    assert not on_clock(after.customer, T0 + timedelta(hours=1), c).decisions


@given(st.integers(0, 5), st.integers(0, 5))
def test_view_counts_add_up_and_nothing_is_counted_twice(a_views: int, u_views: int):
    anon = on_event(
        Customer.new("a"),
        [browse("a", "sku", i, T0 + timedelta(seconds=i)) for i in range(a_views)],
        ctx(),
    ).customer
    known = on_event(
        Customer.new("u"),
        [browse("u", "sku", i, T0 + timedelta(seconds=i)) for i in range(u_views)],
        ctx(),
    ).customer
    p = merge(known, anon, T0 + timedelta(hours=1), POLICY, "l").customer.profile
    total = p.views["sku"].count if "sku" in p.views else 0
    assert total == a_views + u_views
    assert p.events_seen == a_views + u_views
    assert len(p.recent_event_ids) == len(set(p.recent_event_ids))
