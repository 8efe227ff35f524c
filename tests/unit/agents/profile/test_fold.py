"""The pure fold: redeliveries count once, segments split where the policy says, time moves R."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import reduce
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agents.profile.fold import (
    VIEWS_KEPT,
    RfmPolicy,
    fold,
    fold_many,
    fold_new,
    next_time_change,
    refresh,
)
from schemas.events import (
    BrowseEvent,
    CartEvent,
    Event,
    FavoriteEvent,
    OrderEvent,
    OrderItem,
)
from schemas.profile import Profile, empty_profile

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
MS = timedelta(milliseconds=1)
POLICY = RfmPolicy()  # 365-day window, R high up to 30 days, F high from 2, M high from 500
SKUS = [f"sku-{i}" for i in range(VIEWS_KEPT + 5)]  # more than the views kept
ORDER_IDS = [f"o-{i}" for i in range(6)]
CUSTOMER = "c-1"

_ids = iter(range(10**9))


def _eid() -> str:
    return f"e-{next(_ids)}"


def paid(
    order_id: str,
    at: datetime,
    amount: str | Decimal,
    skus: list[str] | None = None,
    *,
    event_id: str | None = None,
) -> OrderEvent:
    items = None if skus is None else [OrderItem(sku=s, qty=1, price=Decimal("1")) for s in skus]
    return OrderEvent(
        event_id=event_id or _eid(),
        customer_id=CUSTOMER,
        ts=at,
        order_id=order_id,
        status="paid",
        amount=Decimal(amount),
        items=items,
    )


def refund(
    order_id: str, at: datetime, amount: str | Decimal, *, event_id: str | None = None
) -> OrderEvent:
    return OrderEvent(
        event_id=event_id or _eid(),
        customer_id=CUSTOMER,
        ts=at,
        order_id=order_id,
        status="refunded",
        amount=Decimal(amount),
    )


def cart(sku: str, at: datetime, qty: int = 1, *, event_id: str | None = None) -> CartEvent:
    return CartEvent(
        event_id=event_id or _eid(),
        customer_id=CUSTOMER,
        ts=at,
        sku=sku,
        qty=qty,
        price=Decimal("9.90"),
    )


def favorite(sku: str, at: datetime, *, event_id: str | None = None) -> FavoriteEvent:
    return FavoriteEvent(event_id=event_id or _eid(), customer_id=CUSTOMER, ts=at, sku=sku)


def view(
    sku: str | None, at: datetime, *, url: str | None = None, event_id: str | None = None
) -> BrowseEvent:
    return BrowseEvent(event_id=event_id or _eid(), customer_id=CUSTOMER, ts=at, sku=sku, url=url)


def profile_after(events: list[Event], now: datetime, policy: RfmPolicy = POLICY) -> Profile:
    return refresh(fold_many(empty_profile(CUSTOMER), events), now, policy)


def redelivered(event: Event) -> Event:
    """The same event as it comes off the wire a second time: equal, but a new object."""
    return type(event).model_validate_json(event.model_dump_json())


# --- generated histories -------------------------------------------------------------------

minutes = st.integers(0, 400 * 24 * 60)  # longer than the window, so some orders age out
money = st.integers(0, 150_000).map(lambda cents: Decimal(cents) / 100)
skus = st.sampled_from(SKUS)
order_ids = st.sampled_from(ORDER_IDS)


def _at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


@st.composite
def one_event(draw: st.DrawFn, event_id: str) -> Event:
    kind = draw(st.sampled_from(["paid", "refund", "cart", "favorite", "browse", "page"]))
    at = _at(draw(minutes))
    if kind == "paid":
        items = draw(st.none() | st.lists(skus, min_size=1, max_size=3, unique=True))
        return paid(draw(order_ids), at, draw(money), items, event_id=event_id)
    if kind == "refund":
        return refund(draw(order_ids), at, draw(money), event_id=event_id)
    if kind == "cart":
        return cart(draw(skus), at, draw(st.integers(1, 3)), event_id=event_id)
    if kind == "favorite":
        return favorite(draw(skus), at, event_id=event_id)
    if kind == "browse":
        return view(draw(skus), at, event_id=event_id)
    return view(None, at, url=draw(st.sampled_from(["/", "/search", "/promo"])), event_id=event_id)


@st.composite
def histories(draw: st.DrawFn, max_unique: int = 40) -> list[Event]:
    """Distinct events of one customer; each order is paid at most once (refunds may repeat)."""
    size = draw(st.integers(0, max_unique))
    events: list[Event] = []
    paid_orders: set[str] = set()
    for i in range(size):
        event = draw(one_event(f"e-{i}"))
        if isinstance(event, OrderEvent) and event.status == "paid":
            if event.order_id in paid_orders:
                continue
            paid_orders.add(event.order_id)
        events.append(event)
    return events


@st.composite
def with_redeliveries(draw: st.DrawFn) -> tuple[list[Event], list[Event]]:
    """(unique events, the stream as delivered: each copy somewhere after its first delivery)."""
    unique = draw(histories())
    stream = list(unique)
    if unique:
        copies = draw(
            st.lists(st.tuples(st.integers(0, len(unique) - 1), st.integers(0)), max_size=19)
        )
        for which, where in copies:
            first = next(i for i, e in enumerate(stream) if e.event_id == unique[which].event_id)
            slot = first + 1 + where % (len(stream) - first)
            stream.insert(slot, redelivered(unique[which]))
    assert len(stream) < 60
    return unique, stream


NOW = T0 + 400 * DAY
#: no deadline: a loaded CI machine must not turn a slow example into a failure
PROPERTY = settings(deadline=None)


@PROPERTY
@given(with_redeliveries())
def test_redelivered_events_count_once(case: tuple[list[Event], list[Event]]) -> None:
    unique, stream = case
    assert profile_after(stream, NOW) == profile_after(unique, NOW)


@PROPERTY
@given(with_redeliveries())
def test_fold_new_names_each_event_once_in_first_delivery_order(
    case: tuple[list[Event], list[Event]],
) -> None:
    unique, stream = case
    after, new = fold_new(empty_profile(CUSTOMER), stream)
    assert [e.event_id for e in new] == [e.event_id for e in unique]
    assert after == fold_many(empty_profile(CUSTOMER), unique)


@PROPERTY
@given(histories())
def test_folding_one_at_a_time_equals_folding_the_list(events: list[Event]) -> None:
    start = empty_profile(CUSTOMER)
    assert reduce(fold, events, start) == fold_many(start, events)


@PROPERTY
@given(histories(), histories())
def test_fold_and_refresh_leave_their_input_alone(before: list[Event], more: list[Event]) -> None:
    profile = profile_after(before, NOW)
    snapshot = profile.model_dump()
    for event in more:
        fold(profile, event)
    fold_many(profile, more)
    fold_new(profile, more)
    refresh(profile, NOW + DAY, POLICY)
    assert profile.model_dump() == snapshot


@PROPERTY
@given(histories(), st.randoms(use_true_random=False))
def test_rfm_does_not_depend_on_arrival_order(events: list[Event], rnd: random.Random) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    in_order, out_of_order = profile_after(events, NOW), profile_after(shuffled, NOW)
    rfm = ("recency_days", "frequency", "monetary", "segment", "last_order_at", "first_order_at")
    assert {f: getattr(in_order, f) for f in rfm} == {f: getattr(out_of_order, f) for f in rfm}


@PROPERTY
@given(histories(), minutes, st.floats(0, 1, exclude_max=True))
def test_nothing_changes_before_next_time_change(
    events: list[Event], at: int, fraction: float
) -> None:
    profile = profile_after(events, _at(at))
    until = next_time_change(profile, POLICY)
    assert until is None or until > _at(at)
    horizon = until if until is not None else _at(at) + 3 * 365 * DAY
    span_us = (horizon - _at(at)) // timedelta(microseconds=1)
    before_horizon = timedelta(microseconds=min(int(span_us * fraction), span_us - 1))
    later = refresh(profile, _at(at) + before_horizon, POLICY)
    assert (later.segment, later.frequency, later.monetary) == (
        profile.segment,
        profile.frequency,
        profile.monetary,
    )
    assert later.segment_since == profile.segment_since


# --- segment boundaries ----------------------------------------------------------------------


def test_r_is_high_up_to_exactly_r_high_days_and_low_the_day_after() -> None:
    events = [paid("o-1", T0, "600"), paid("o-2", T0, "10")]
    on_the_day = profile_after(events, T0 + POLICY.r_high_days * DAY)
    assert (on_the_day.recency_days, on_the_day.segment) == (30, "important_value")
    just_before = profile_after(events, T0 + (POLICY.r_high_days + 1) * DAY - MS)
    assert (just_before.recency_days, just_before.segment) == (30, "important_value")
    day_after = profile_after(events, T0 + (POLICY.r_high_days + 1) * DAY)
    assert (day_after.recency_days, day_after.segment) == (31, "important_keep")


def test_f_is_high_from_the_threshold_number_of_orders() -> None:
    one = [paid("o-1", T0, "10")]
    assert profile_after(one, T0).segment == "general_develop"
    two = [*one, paid("o-2", T0 + DAY, "10")]
    assert (profile_after(two, T0 + DAY).frequency, profile_after(two, T0 + DAY).segment) == (
        2,
        "general_value",
    )


def test_m_is_high_exactly_at_the_threshold() -> None:
    assert profile_after([paid("o-1", T0, "500.00")], T0).segment == "important_develop"
    assert profile_after([paid("o-1", T0, "499.99")], T0).segment == "general_develop"


def test_a_customer_is_a_prospect_until_the_first_paid_order() -> None:
    events: list[Event] = [view("sku-1", T0), cart("sku-1", T0), favorite("sku-1", T0)]
    events.append(refund("o-1", T0 + DAY, "5"))  # a refund seen before its order
    before = profile_after(events, T0 + DAY)
    assert (before.segment, before.recency_days, before.frequency) == ("prospect", None, 0)
    after = profile_after([*events, paid("o-1", T0 + DAY, "100")], T0 + DAY)
    assert (after.segment, after.frequency, after.monetary) == (
        "general_develop",
        1,
        Decimal("95"),
    )


def test_a_fully_refunded_order_does_not_count_and_takes_its_money_back() -> None:
    events = [
        paid("o-1", T0, "300"),
        paid("o-2", T0 + DAY, "300"),
        refund("o-2", T0 + 2 * DAY, "300"),
    ]
    profile = profile_after(events, T0 + 2 * DAY)
    assert (profile.frequency, profile.monetary, profile.segment) == (
        1,
        Decimal("300"),
        "general_develop",
    )


def test_a_partial_refund_lowers_m() -> None:
    events = [paid("o-1", T0, "600"), refund("o-1", T0 + DAY, "150.50")]
    profile = profile_after(events, T0 + DAY)
    assert (profile.frequency, profile.monetary, profile.segment) == (
        1,
        Decimal("449.50"),
        "general_develop",
    )


def test_two_refunds_of_one_order_both_count_but_a_redelivered_one_does_not() -> None:
    first = refund("o-1", T0 + DAY, "100")
    events = [paid("o-1", T0, "600"), first, refund("o-1", T0 + DAY, "50"), redelivered(first)]
    assert profile_after(events, T0 + DAY).monetary == Decimal("450")


def test_a_repeated_paid_message_for_one_order_counts_once() -> None:
    events = [paid("o-1", T0, "300"), paid("o-1", T0, "300")]  # two event ids, one order
    assert (profile_after(events, T0).frequency, profile_after(events, T0).monetary) == (
        1,
        Decimal("300"),
    )


# --- the time sweep --------------------------------------------------------------------------


def test_an_important_value_customer_who_stops_buying_becomes_important_keep_on_time() -> None:
    profile = profile_after([paid("o-1", T0, "300"), paid("o-2", T0 + 10 * DAY, "300")], T0)
    profile = refresh(profile, T0 + 10 * DAY, POLICY)
    assert profile.segment == "important_value"

    slips_at = next_time_change(profile, POLICY)
    assert slips_at == T0 + 10 * DAY + (POLICY.r_high_days + 1) * DAY
    for day in range(10, 41):  # a daily sweep sees no change before then
        assert refresh(profile, T0 + day * DAY, POLICY).segment == "important_value"
    assert refresh(profile, slips_at - MS, POLICY).segment == "important_value"
    slipped = refresh(profile, slips_at, POLICY)
    assert (slipped.segment, slipped.segment_since) == ("important_keep", slips_at)


def test_orders_leaving_the_window_lower_f_and_m() -> None:
    orders = [paid("o-1", T0, "300"), paid("o-2", T0 + 10 * DAY, "300")]
    profile = profile_after(orders, T0 + 10 * DAY)
    assert profile.segment == "important_value"
    seen: list[tuple[datetime, str, int, Decimal]] = []
    at = next_time_change(profile, POLICY)
    while at is not None:
        assert refresh(profile, at - MS, POLICY).frequency == profile.frequency
        profile = refresh(profile, at, POLICY)
        seen.append((at, profile.segment, profile.frequency, profile.monetary))
        at = next_time_change(profile, POLICY)
    window = POLICY.window_days * DAY
    assert seen == [
        (T0 + 41 * DAY, "important_keep", 2, Decimal("600")),
        (T0 + window, "general_retain", 1, Decimal("300")),
        (T0 + 10 * DAY + window, "general_retain", 0, Decimal("0")),
    ]


def test_a_profile_with_no_orders_never_changes_with_time() -> None:
    profile = profile_after([view("sku-1", T0)], T0)
    assert next_time_change(profile, POLICY) is None


def test_a_policy_with_other_thresholds_moves_the_boundaries() -> None:
    policy = RfmPolicy(window_days=90, r_high_days=7, f_high_orders=3, m_high_amount=Decimal("50"))
    events = [paid(f"o-{i}", T0 + i * DAY, "20") for i in range(3)]
    assert profile_after(events, T0 + 9 * DAY, policy).segment == "important_value"
    assert profile_after(events, T0 + 10 * DAY, policy).segment == "important_keep"
    assert profile_after(events, T0 + 90 * DAY, policy).segment == "general_retain"


# --- behaviour -------------------------------------------------------------------------------


def test_a_paid_order_takes_what_it_bought_out_of_the_cart() -> None:
    events: list[Event] = [cart("sku-1", T0), cart("sku-2", T0), cart("sku-1", T0, qty=2)]
    profile = fold_many(empty_profile(CUSTOMER), events)
    assert {sku: line.qty for sku, line in profile.cart.items()} == {"sku-1": 3, "sku-2": 1}
    profile = fold(profile, paid("o-1", T0 + DAY, "30", ["sku-1"]))
    assert set(profile.cart) == {"sku-2"}


def test_a_cart_add_after_the_order_stays_in_the_cart() -> None:
    profile = fold_many(
        empty_profile(CUSTOMER),
        [cart("sku-1", T0), paid("o-1", T0 + DAY, "30", ["sku-1"]), cart("sku-1", T0 + 2 * DAY)],
    )
    assert profile.cart["sku-1"].added_at == T0 + 2 * DAY
    assert profile.cart["sku-1"].qty == 1


def test_an_order_without_items_empties_the_cart() -> None:
    profile = fold_many(
        empty_profile(CUSTOMER), [cart("sku-1", T0), cart("sku-2", T0), paid("o-1", T0, "30")]
    )
    assert profile.cart == {}


def test_views_count_per_sku_and_keep_the_latest_skus_only() -> None:
    events: list[Event] = [view("sku-0", T0 + i * MS) for i in range(3)]
    events += [view(sku, T0 + (i + 1) * DAY) for i, sku in enumerate(SKUS[1:])]
    events.append(view(None, T0, url="/promo"))
    profile = fold_many(empty_profile(CUSTOMER), events)
    assert len(profile.views) == VIEWS_KEPT
    assert set(profile.views) == set(SKUS[-VIEWS_KEPT:])  # the oldest viewed went first
    assert profile.page_views == 1

    again = fold_many(empty_profile(CUSTOMER), events[:3])
    assert again.views["sku-0"].count == 3
    assert again.views["sku-0"].last_at == T0 + 2 * MS


def test_a_favourite_is_kept_with_its_latest_time() -> None:
    first = favorite("sku-1", T0)
    profile = fold_many(
        empty_profile(CUSTOMER), [first, favorite("sku-1", T0 + DAY), redelivered(first)]
    )
    assert profile.favorites == {"sku-1": T0 + DAY}
    assert profile.events_seen == 2


# --- parsing events at the door --------------------------------------------------------------

ORDER: dict[str, Any] = {
    "event_id": "e-1",
    "customer_id": "c-1",
    "ts": "2024-06-18T20:00:00+08:00",
    "order_id": "o-1",
    "status": "paid",
    "amount": "199.90",
}
NOON_UTC = datetime(2024, 6, 18, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "ts",
    ["2024-06-18T20:00:00+08:00", "2024-06-18T12:00:00Z", 1718712000000, "1718712000000"],
)
def test_ts_is_iso_with_an_offset_or_epoch_millis(ts: object) -> None:
    event = OrderEvent.model_validate({**ORDER, "ts": ts})
    assert event.ts == NOON_UTC
    assert event.ts.tzinfo is UTC


def test_epoch_millis_keep_their_milliseconds() -> None:
    assert OrderEvent.model_validate({**ORDER, "ts": 1718712000123}).ts == NOON_UTC + 123 * MS


@pytest.mark.parametrize("ts", ["2024-06-18T20:00:00", "2024-06-18 20:00:00"])
def test_a_naive_ts_is_rejected_saying_why(ts: str) -> None:
    with pytest.raises(ValidationError, match="no UTC offset"):
        OrderEvent.model_validate({**ORDER, "ts": ts})


@pytest.mark.parametrize(
    "ts",
    ["yesterday", True, 1.5e12, None, 10**18, "9" * 30, "0001-01-01T00:00:00+08:00"],
)
def test_a_ts_that_is_not_a_time_is_a_validation_error(ts: object) -> None:
    with pytest.raises(ValidationError, match="ts"):
        OrderEvent.model_validate({**ORDER, "ts": ts})


@pytest.mark.parametrize(
    ("amount", "expected"),
    [("199.90", Decimal("199.90")), (199.9, Decimal("199.9")), (200, Decimal("200"))],
)
def test_amount_is_a_number_or_a_decimal_string(amount: object, expected: Decimal) -> None:
    parsed = OrderEvent.model_validate({**ORDER, "amount": amount}).amount
    assert isinstance(parsed, Decimal)
    assert parsed == expected


@pytest.mark.parametrize("amount", ["-1", "1.234", "NaN", "cheap"])
def test_amount_must_be_a_non_negative_sum_of_cents(amount: str) -> None:
    with pytest.raises(ValidationError, match="amount"):
        OrderEvent.model_validate({**ORDER, "amount": amount})


def test_unknown_fields_are_kept() -> None:
    event = OrderEvent.model_validate({**ORDER, "coupon": "618", "channel": {"app": "tmall"}})
    assert event.extra == {"coupon": "618", "channel": {"app": "tmall"}}
    assert event.shop_id == "default"
    assert event.currency == "CNY"


@pytest.mark.parametrize("field", ["event_id", "customer_id", "ts", "order_id", "status", "amount"])
def test_a_missing_required_field_is_rejected(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        OrderEvent.model_validate({k: v for k, v in ORDER.items() if k != field})


def test_a_cart_add_needs_a_positive_quantity() -> None:
    fields = {"event_id": "e", "customer_id": "c", "ts": 0, "sku": "s", "price": "1"}
    assert CartEvent.model_validate({**fields, "qty": 2}).qty == 2
    with pytest.raises(ValidationError, match="qty"):
        CartEvent.model_validate({**fields, "qty": 0})


def test_a_browse_event_names_a_sku_or_a_url() -> None:
    fields = {"event_id": "e", "customer_id": "c", "ts": 0}
    assert BrowseEvent.model_validate({**fields, "url": "/"}).url == "/"
    assert BrowseEvent.model_validate({**fields, "sku": "s", "category": "tea"}).sku == "s"
    with pytest.raises(ValidationError, match="sku or a url"):
        BrowseEvent.model_validate(fields)
    with pytest.raises(ValidationError, match="sku or a url"):
        BrowseEvent.model_validate({**fields, "sku": "", "url": ""})


def test_a_cart_keeps_its_200_latest_lines_whatever_a_bot_adds() -> None:
    from agents.profile.fold import CART_KEPT

    adds = [
        CartEvent(
            event_id=f"c{i}",
            customer_id="bot",
            ts=T0 + timedelta(seconds=i),
            sku=f"S{i}",
            qty=1,
            price="1",
        )
        for i in range(CART_KEPT + 50)
    ]
    p = fold_many(empty_profile("bot"), adds)
    assert len(p.cart) == CART_KEPT
    assert "S0" not in p.cart and "S49" not in p.cart  # the oldest went first
    assert "S50" in p.cart and f"S{CART_KEPT + 49}" in p.cart


def test_refunds_whose_order_never_comes_are_bounded_and_refund_ids_too() -> None:
    from agents.profile.fold import ORPHAN_REFUNDS_KEPT, REFUND_IDS_KEPT

    def refund(n: int, order: str) -> OrderEvent:
        return OrderEvent(
            event_id=f"r{n}",
            customer_id="c",
            ts=T0 + timedelta(minutes=n),
            order_id=order,
            status="refunded",
            amount="1",
        )

    p = fold_many(empty_profile("c"), [refund(i, f"O{i}") for i in range(ORPHAN_REFUNDS_KEPT + 10)])
    assert len(p.orders) == ORPHAN_REFUNDS_KEPT
    assert "O0" not in p.orders and f"O{ORPHAN_REFUNDS_KEPT + 9}" in p.orders

    paid = OrderEvent(
        event_id="p", customer_id="c", ts=T0, order_id="A", status="paid", amount="100"
    )
    many = [refund(i, "A") for i in range(REFUND_IDS_KEPT + 5)]
    p = fold_many(empty_profile("c"), [paid, *many])
    assert p.orders["A"].refunded == Decimal(REFUND_IDS_KEPT + 5)
    assert len(p.orders["A"].refund_ids) == REFUND_IDS_KEPT
    # a recent refund redelivered still counts once
    assert fold_many(p, [many[-1]]).orders["A"].refunded == Decimal(REFUND_IDS_KEPT + 5)
