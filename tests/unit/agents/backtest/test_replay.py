"""A backtest replays history through the live engine with a simulated clock: a cart abandoned
for 30 minutes earns its coupon at the deadline (not when the next event happens to come), an
order in time cancels it, quiet hours defer, caps and budgets suppress, and the report counts
what each rule would have done and which customers two rules would both reach."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from agents.backtest.history import event_from_row, in_decision_order
from agents.backtest.replay import Replay, replay
from agents.backtest.report import Tally, summarize
from agents.backtest.uplift import window_hours
from agents.profile.fold import RfmPolicy
from agents.profile.rows import event_row
from agents.rules.state import Decision
from ecrm.commands.backtest import parse_moment
from schemas.errors import ConfigError
from schemas.events import BrowseEvent, Event, FavoriteEvent, OrderEvent
from tests.unit.agents.rules.rule_driver import (
    ABANDONED_CART,
    BROWSED,
    DAY,
    HOUR,
    MIN,
    NOON,
    QUIET_POLICY,
    SEC,
    WELCOME,
    WIN_BACK,
    Customer,
    cart,
    paid,
    ruleset,
    view,
)

POLICY = RfmPolicy()
CART_30M = """
  - id: abandoned-cart
    when: {event: cart, not_followed_by: {event: orders, where: {status: paid}}, within: 30m}
    action: {kind: coupon, channel: sms, params: {value: 10, valid_for: 48h}}
"""


def run(rules_text: str, events: list[Event], end: datetime | None = None, **kw: object) -> Replay:
    return replay(ruleset(rules_text, **kw), events, policy=POLICY, end=end)  # type: ignore[arg-type]


def seen(decisions: list[Decision]) -> list[tuple[str, str, str, str | None, datetime]]:
    return [(d.rule_id, d.customer_id, d.outcome, d.reason, d.decided_at) for d in decisions]


# --- the clock ----------------------------------------------------------------------------------


def test_an_abandoned_cart_fires_at_its_deadline_not_at_the_next_event() -> None:
    events = [cart("e1", NOON, customer="ann"), cart("e2", NOON + 2 * HOUR, customer="bob")]
    r = run(CART_30M, events)
    assert seen(r.decisions) == [("abandoned-cart", "ann", "fired", None, NOON + 30 * MIN)]
    # bob's wait has not ended when the history does; running the clock on ends it
    r.advance(NOON + 2 * HOUR + 30 * MIN)
    assert seen(r.decisions)[-1] == ("abandoned-cart", "bob", "fired", None, NOON + 150 * MIN)


def test_a_wait_running_when_history_ends_fires_only_if_the_end_is_past_its_deadline() -> None:
    assert run(CART_30M, [cart("e1", NOON)], end=NOON + 30 * MIN - SEC).decisions == []
    assert len(run(CART_30M, [cart("e1", NOON)], end=NOON + 30 * MIN).decisions) == 1


def test_an_order_before_or_at_the_deadline_cancels_the_coupon() -> None:
    for paid_at in (NOON + 10 * MIN, NOON + 30 * MIN):
        r = run(CART_30M, [cart("e1", NOON), paid("o1", paid_at)], end=NOON + DAY)
        assert r.decisions == [], paid_at
    late = run(CART_30M, [cart("e1", NOON), paid("o1", NOON + 31 * MIN)], end=NOON + DAY)
    assert seen(late.decisions) == [("abandoned-cart", "c1", "fired", None, NOON + 30 * MIN)]


def test_quiet_hours_defer_to_eight_and_the_delivery_keeps_the_action_id() -> None:
    evening = NOON + 9 * HOUR + 50 * MIN  # 21:50 in Shanghai: the wait ends at 22:20
    r = run(CART_30M, [cart("e1", evening)], end=NOON + DAY, policy=QUIET_POLICY)
    eight = NOON + 20 * HOUR  # 08:00 next day in Shanghai
    assert [(d.outcome, d.reason, d.decided_at, d.released) for d in r.decisions] == [
        ("deferred", "quiet_hours", evening + 30 * MIN, False),
        ("fired", None, eight, True),
    ]
    assert r.decisions[0].action_id == r.decisions[1].action_id
    report = summarize(r.rules, r.decisions).outcome("abandoned-cart")
    assert (report.fired, report.deferred, report.pending) == (1, 1, 0)


def test_an_order_during_the_night_withdraws_the_deferred_coupon() -> None:
    evening = NOON + 9 * HOUR + 50 * MIN
    events = [cart("e1", evening), paid("o1", evening + 2 * HOUR)]
    r = run(CART_30M, events, end=NOON + DAY, policy=QUIET_POLICY)
    assert [(d.outcome, d.reason) for d in r.decisions] == [
        ("deferred", "quiet_hours"),
        ("suppressed", "cancelled"),
    ]
    report = summarize(r.rules, r.decisions).outcome("abandoned-cart")
    assert (report.fired, report.suppressed, report.pending) == (0, {"cancelled": 1}, 0)


def test_time_alone_moves_a_valuable_customer_and_the_win_back_fires_then() -> None:
    last = NOON + DAY
    events = [paid("o1", NOON, amount="400"), paid("o2", last, amount="300")]
    r = run(WIN_BACK, events, end=NOON + 60 * DAY)
    assert r.profiles["c1"].segment == "important_keep"
    assert seen(r.decisions) == [("win-back", "c1", "fired", None, last + 31 * DAY)]
    assert r.stats.segment_changes == 3  # prospect -> general_develop -> important_value -> keep


def test_the_replay_decides_what_driving_the_engine_by_hand_decides() -> None:
    rules = ruleset(ABANDONED_CART, WELCOME, BROWSED, policy=QUIET_POLICY)
    by_hand = Customer(rules)
    events: list[Event] = [view("v1", NOON), view("v2", NOON + HOUR), cart("e1", NOON + 2 * HOUR)]
    events += [view("v3", NOON + 3 * HOUR), paid("o1", NOON + 4 * HOUR)]
    events += [cart("e2", NOON + 9 * HOUR + 45 * MIN)]
    for event in events:
        by_hand.does(event)
        if event.event_id == "e1":
            by_hand.clock(NOON + 2 * HOUR + 30 * MIN)
    by_hand.clock(NOON + 10 * HOUR + 15 * MIN)
    by_hand.clock(NOON + 20 * HOUR)
    r = replay(rules, events, policy=POLICY, end=NOON + 2 * DAY)
    assert [(d.action_id, d.outcome) for d in r.decisions] == [
        (d.action_id, d.outcome) for d in by_hand.decisions
    ]


# --- guards and the report ----------------------------------------------------------------------


def test_a_daily_budget_suppresses_the_coupons_beyond_it() -> None:
    capped = CART_30M + "    budget: {per_day: 2}\n"
    events = [cart(f"e{i}", NOON + i * MIN, customer=f"c{i}") for i in range(4)]
    r = run(capped, events, end=NOON + DAY)
    assert [d.outcome for d in r.decisions] == ["fired", "fired", "suppressed", "suppressed"]
    report = summarize(r.rules, r.decisions).outcome("abandoned-cart")
    assert (report.fired, report.customers, report.suppressed) == (2, 2, {"budget": 2})
    assert report.coupon_cost == Decimal("20")


def test_the_contact_cap_and_cooldown_suppress_with_their_reasons() -> None:
    cooled = CART_30M + "    cooldown: 7d\n"
    events = [cart("e1", NOON), cart("e2", NOON + 2 * HOUR), paid("o1", NOON + 3 * HOUR)]
    r = run(cooled + WELCOME, events, end=NOON + DAY, policy="contact_cap: {per_day: 1}")
    assert [(d.rule_id, d.outcome, d.reason) for d in r.decisions] == [
        ("abandoned-cart", "fired", None),
        ("abandoned-cart", "suppressed", "cooldown"),
        ("welcome", "suppressed", "contact_cap"),
    ]
    report = summarize(r.rules, r.decisions)
    assert report.outcome("abandoned-cart").suppressed == {"cooldown": 1}
    assert report.outcome("welcome").suppressed == {"contact_cap": 1}


def test_overlap_counts_customers_reached_by_both_rules() -> None:
    # ann and bob abandon a cart; bob and cy order for the first time (welcome)
    events: list[Event] = [cart("a1", NOON, customer="ann"), cart("b1", NOON, customer="bob")]
    events += [paid("b2", NOON + 2 * HOUR, customer="bob"), paid("c2", NOON, customer="cy")]
    events.sort(key=lambda e: e.ts)
    r = run(CART_30M + WELCOME, events, end=NOON + DAY)
    report = summarize(r.rules, r.decisions)
    assert report.outcome("abandoned-cart").customers == 2
    assert report.outcome("welcome").customers == 2
    assert report.overlap == {("abandoned-cart", "welcome"): 1}


def test_held_out_customers_are_counted_and_get_nothing() -> None:
    dry = CART_30M + "    holdout: 100%\n"
    r = run(dry, [cart("e1", NOON)], end=NOON + DAY)
    report = summarize(r.rules, r.decisions).outcome("abandoned-cart")
    assert (report.fired, report.held_out, report.coupon_cost) == (0, 1, Decimal(0))


def test_a_warm_up_moves_state_but_its_decisions_are_not_reported() -> None:
    cooled = CART_30M + "    cooldown: 7d\n"
    start = NOON + DAY
    events = [cart("e1", NOON), cart("e2", start + HOUR)]
    r = Replay(ruleset(cooled), POLICY, report_from=start)
    r.feed_all(events)
    r.advance(start + DAY)
    # the warm-up's coupon is not reported, but its cooldown holds back the second one
    assert [(d.outcome, d.reason) for d in r.decisions] == [("suppressed", "cooldown")]


def test_a_long_replay_can_tally_as_it_goes_instead_of_keeping_every_decision() -> None:
    rules = ruleset(CART_30M, WELCOME, policy=QUIET_POLICY)
    events = [cart(f"e{i}", NOON + i * 37 * MIN, customer=f"c{i % 5}") for i in range(60)]
    events += [paid(f"o{i}", NOON + i * 41 * MIN, customer=f"c{i % 3}") for i in range(30)]
    events.sort(key=lambda e: e.ts)
    kept = replay(rules, events, policy=POLICY, end=NOON + 3 * DAY)
    tally = Tally(rules)
    lean = Replay(rules, POLICY, tally=tally, keep_decisions=False)
    lean.feed_all(events)
    lean.advance(NOON + 3 * DAY)
    assert lean.decisions == [] and len(kept.decisions) > 10
    assert tally.report() == summarize(rules, kept.decisions)


def test_a_duplicate_event_is_applied_once() -> None:
    r = run(CART_30M, [cart("e1", NOON), cart("e1", NOON)], end=NOON + DAY)
    assert (r.stats.events, r.stats.duplicates, len(r.decisions)) == (1, 1, 1)


# --- history rows and the command's arguments ---------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        OrderEvent.model_validate(
            {
                "event_id": "o1",
                "customer_id": "c1",
                "ts": "2024-05-01T12:00:00.123+08:00",
                "order_id": "1001",
                "status": "paid",
                "amount": "129.90",
                "items": [{"sku": "tea-01", "qty": 2, "price": "64.95", "category": "tea"}],
                "platform": "app",
            }
        ),
        paid("o2", NOON).model_copy(update={"status": "refunded"}),
        paid("o3", NOON).model_copy(update={"origin": "import"}),
        cart("c1", NOON, sku="bag"),
        FavoriteEvent(event_id="f1", customer_id="c1", ts=NOON, sku="bag", shop_id="s2"),
        BrowseEvent(event_id="b1", customer_id="c1", ts=NOON, url="/promo"),
        view("b2", NOON, sku="tea-01").model_copy(update={"category": "tea"}),
    ],
)
def test_an_events_row_gives_back_the_event_it_was_made_of(event: Event) -> None:
    row = event_row(event, topic="t", partition=0, offset=0, now=NOON)
    back = event_from_row(row)
    assert type(back) is type(event)
    assert back.model_dump() == event.model_dump() and back.extra == event.extra


def test_since_is_a_duration_a_shop_date_or_a_time_with_an_offset() -> None:
    now = datetime(2024, 6, 1, 4, 0, tzinfo=UTC)
    shanghai = ZoneInfo("Asia/Shanghai")
    assert parse_moment("30d", now, shanghai) == now - 30 * DAY
    assert parse_moment("12h", now, shanghai) == now - 12 * HOUR
    assert parse_moment("2024-05-01", now, shanghai) == datetime(2024, 4, 30, 16, tzinfo=UTC)
    assert parse_moment("2024-05-01T08:00+08:00", now, shanghai) == datetime(
        2024, 5, 1, 0, tzinfo=UTC
    )
    for bad in ("2024-05-01T08:00", "yesterday", "30 minuts"):
        with pytest.raises(ConfigError):
            parse_moment(bad, now, shanghai)


def test_the_attribution_window_is_passed_in_whole_hours_rounded_up() -> None:
    assert window_hours(72 * HOUR) == 72
    assert window_hours(90 * MIN) == 2
    assert window_hours(SEC) == 1


def test_stored_history_is_replayed_in_the_keepers_order_of_decision() -> None:
    """Rows of two Kafka partitions, a late order in one: each partition's topics merged by
    event time in offset order, the late order at its offset with the partition's clock as
    its mark, the partitions interleaved by their marks."""

    def rows(topic: str, partition: int, events: list[Event]) -> list[dict]:
        return [
            event_row(e, topic=topic, partition=partition, offset=n, now=NOON)
            for n, e in enumerate(events)
        ]

    runs = {
        ("ecrm.orders", 0): rows("ecrm.orders", 0, [paid("o1", NOON + HOUR), paid("o2", NOON)]),
        ("ecrm.cart", 0): rows("ecrm.cart", 0, [cart("c1", NOON + 30 * MIN)]),
        ("ecrm.orders", 1): rows("ecrm.orders", 1, [paid("o3", NOON + 45 * MIN)]),
    }
    order = [
        (e.event_id, mark) for e, mark in in_decision_order(runs, ("ecrm.orders", "ecrm.cart"))
    ]
    assert order == [
        ("c1", NOON + 30 * MIN),
        ("o3", NOON + 45 * MIN),
        ("o1", NOON + HOUR),
        ("o2", NOON + HOUR),  # late in its topic: decided after o1, at the clock
    ]
