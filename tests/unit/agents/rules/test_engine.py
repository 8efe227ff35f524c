"""The rules engine decides what each rule does for a customer, with the clock passed in:
waits fire at their deadline and not before, guards suppress with the right reason, quiet
hours defer, and the same trigger always gives the same action_id."""

from __future__ import annotations

from datetime import timedelta, timezone
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.rules.engine import CustomerRuleState, action_id_for, holdout, next_wake
from schemas.events import FavoriteEvent
from tests.unit.agents.rules.rule_driver import (
    ABANDONED_CART,
    BROWSED,
    DAY,
    HOUR,
    MIN,
    NOON,
    QUIET_POLICY,
    SEC,
    THANKS,
    WELCOME,
    WIN_BACK,
    Customer,
    cart,
    example,
    outcomes,
    paid,
    ruleset,
    view,
)

# --- "A not followed by B within T" -----------------------------------------------------------


def test_an_abandoned_cart_earns_one_coupon_at_the_deadline_and_not_before() -> None:
    c = Customer(ruleset(ABANDONED_CART))
    assert c.does(cart("e1", NOON)) == []
    assert next_wake(c.state) == NOON + 30 * MIN
    assert c.clock(NOON + 30 * MIN - SEC) == []
    fired = c.clock(NOON + 30 * MIN)
    assert outcomes(fired) == [("abandoned-cart", "fired", None)]
    assert fired[0].trigger_event_id == "e1" and fired[0].coupon_value == Decimal("10")
    action = fired[0].to_action()
    assert action.kind == "coupon" and action.channel == "sms"
    assert action.params["valid_until"] == (NOON + 30 * MIN + 48 * HOUR).isoformat()
    assert c.clock(NOON + 31 * MIN) == [] and c.clock(NOON + 2 * DAY) == []
    assert next_wake(c.state) is None


def test_a_paid_order_one_second_before_the_deadline_cancels_the_coupon() -> None:
    c = Customer(ruleset(ABANDONED_CART))
    c.does(cart("e1", NOON))
    assert c.does(paid("o1", NOON + 30 * MIN - SEC)) == []
    assert c.state.timers == [] and next_wake(c.state) is None
    assert c.clock(NOON + 30 * MIN) == []


def test_an_unpaid_order_or_an_order_after_the_deadline_does_not_cancel() -> None:
    c = Customer(ruleset(ABANDONED_CART))
    c.does(cart("e1", NOON))
    refund = paid("r1", NOON + MIN).model_copy(update={"status": "refunded"})
    c.does(refund)
    c.does(paid("o1", NOON + 30 * MIN + SEC), now=NOON + 30 * MIN + SEC)  # before the sweep ran
    assert outcomes(c.clock(NOON + 30 * MIN + 2 * SEC)) == [("abandoned-cart", "fired", None)]


def test_a_new_cart_add_restarts_the_wait_with_a_new_action_id() -> None:
    c = Customer(ruleset(ABANDONED_CART))
    c.does(cart("e1", NOON))
    c.does(cart("e2", NOON + 20 * MIN, sku="s2"))
    assert c.clock(NOON + 30 * MIN) == []
    fired = c.clock(NOON + 50 * MIN)
    assert [d.trigger_event_id for d in fired] == ["e2"]
    assert fired[0].action_id == action_id_for("abandoned-cart", "c1", "timer::e2")


def test_rearm_keep_ignores_a_new_cart_add_while_waiting() -> None:
    c = Customer(ruleset(ABANDONED_CART.replace("within: 30m", "within: 30m, rearm: keep")))
    c.does(cart("e1", NOON))
    c.does(cart("e2", NOON + 20 * MIN))
    fired = c.clock(NOON + 30 * MIN)
    assert [d.trigger_event_id for d in fired] == ["e1"]


def test_per_product_waits_are_cancelled_only_by_buying_that_product() -> None:
    rule = ABANDONED_CART.replace("within: 30m", "within: 30m, per: sku").replace(
        "cooldown: 7d", "cooldown: 1s"
    )
    c = Customer(ruleset(rule))
    c.does(cart("e1", NOON, sku="shoes"))
    c.does(cart("e2", NOON + 10 * MIN, sku="bag"))
    c.does(paid("o1", NOON + 15 * MIN, skus=["shoes"]))
    fired = c.clock(NOON + 40 * MIN)
    assert [d.trigger_event_id for d in fired] == ["e2"]
    c.does(cart("e3", NOON + HOUR, sku="hat"))
    c.does(paid("o2", NOON + HOUR + MIN))  # no item list: the whole cart was bought
    assert c.clock(NOON + 2 * HOUR) == []


def test_a_favourite_not_bought_within_three_days() -> None:
    rules = example()
    c = Customer(rules, customer_id="fav-1")
    c.does(FavoriteEvent(event_id="f1", customer_id="fav-1", ts=NOON, sku="s1"))
    c.does(FavoriteEvent(event_id="f2", customer_id="fav-1", ts=NOON, sku="s2"))
    c.does(paid("o1", NOON + DAY, skus=["s2"], customer="fav-1"))
    fired = [d for d in c.clock(NOON + 3 * DAY) if d.rule_id == "favourite-not-bought"]
    assert [(d.outcome, d.trigger_event_id) for d in fired] == [("fired", "f1")]


# --- counts within a window -------------------------------------------------------------------


def test_the_third_view_of_a_product_within_a_day_fires() -> None:
    c = Customer(ruleset(BROWSED))
    assert c.does(view("v1", NOON)) == []
    assert c.does(view("v2", NOON + 5 * HOUR)) == []
    assert c.does(view("x1", NOON + 6 * HOUR, sku="other")) == []
    assert outcomes(c.does(view("v3", NOON + 23 * HOUR))) == [("browsed", "fired", None)]
    assert c.does(view("v4", NOON + 23 * HOUR + MIN)) == []  # counting starts again


def test_three_views_spread_over_two_days_do_not_fire() -> None:
    c = Customer(ruleset(BROWSED))
    c.does(view("v1", NOON))
    c.does(view("v2", NOON + 12 * HOUR))
    assert c.does(view("v3", NOON + 30 * HOUR)) == []
    assert outcomes(c.does(view("v4", NOON + 31 * HOUR))) == [("browsed", "fired", None)]


def test_a_cart_add_of_the_product_starts_the_count_again() -> None:
    c = Customer(ruleset(BROWSED))
    c.does(view("v1", NOON))
    c.does(view("v2", NOON + HOUR))
    c.does(cart("c1", NOON + 2 * HOUR, sku="s1"))
    assert c.does(view("v3", NOON + 3 * HOUR)) == []


def test_browse_abandonment_of_the_example_waits_an_hour_after_the_third_view() -> None:
    rules = example()
    customer = next(f"b{n}" for n in range(100) if not holdout("browse-abandonment", f"b{n}", 0.2))
    c = Customer(rules, customer_id=customer)
    for n in range(3):
        c.does(view(f"v{n}", NOON + n * HOUR).model_copy(update={"customer_id": customer}))
    assert c.clock(NOON + 3 * HOUR - SEC) == []
    assert outcomes(c.clock(NOON + 3 * HOUR)) == [("browse-abandonment", "fired", None)]


# --- segment transitions, first orders, event conditions --------------------------------------


def test_win_back_fires_only_for_the_transitions_it_names() -> None:
    c = Customer(ruleset(WIN_BACK))
    assert c.moves("important_develop", "important_keep", NOON) == []
    assert c.moves("important_value", "general_value", NOON) == []
    assert outcomes(c.moves("important_value", "important_retain", NOON)) == [
        ("win-back", "fired", None)
    ]
    assert c.moves("important_value", "important_retain", NOON) == []  # the same change again


def test_welcome_after_the_first_order_only_and_thanks_above_the_threshold() -> None:
    c = Customer(ruleset(WELCOME, THANKS))
    assert outcomes(c.does(paid("o1", NOON, amount="120"))) == [("welcome", "fired", None)]
    assert c.does(paid("o2", NOON + DAY, amount="499.99")) == []
    assert outcomes(c.does(paid("o3", NOON + 2 * DAY, amount="500"))) == [("thanks", "fired", None)]


def test_profile_conditions_are_read_after_the_event_is_folded_in() -> None:
    loyal = THANKS.replace("priority: 25", "priority: 25\n    if: {frequency: {gte: 2}}")
    c = Customer(ruleset(loyal))
    assert c.does(paid("o1", NOON, amount="600")) == []
    assert outcomes(c.does(paid("o2", NOON + DAY, amount="600"))) == [("thanks", "fired", None)]


# --- the same trigger, the same action_id; nothing fires twice --------------------------------


def test_the_same_trigger_decided_twice_gives_the_same_action_id() -> None:
    rules = ruleset(WELCOME)
    first, second = Customer(rules), Customer(rules)
    a = first.does(paid("o1", NOON))
    b = second.does(paid("o1", NOON), now=NOON + 5 * SEC)  # e.g. after a worker restart
    assert [d.action_id for d in a] == [d.action_id for d in b]
    assert a[0].action_id == action_id_for("welcome", "c1", "event:o1")


def test_a_redelivered_event_decides_nothing_more() -> None:
    c = Customer(ruleset(THANKS))
    event = paid("o1", NOON, amount="800")
    assert len(c.does(event)) == 1
    assert c.does(event) == []


def test_a_rerun_sweep_from_the_same_state_gives_the_same_decisions() -> None:
    c = Customer(ruleset(ABANDONED_CART))
    c.does(cart("e1", NOON))
    saved = c.state.model_copy(deep=True)
    first = c.clock(NOON + 31 * MIN)
    c.state = saved  # the worker died before saving the state
    again = c.clock(NOON + 31 * MIN)
    assert [d.action_id for d in first] == [d.action_id for d in again] and len(first) == 1
    assert c.clock(NOON + 31 * MIN) == []


def test_the_state_survives_a_round_trip_through_json() -> None:
    c = Customer(ruleset(ABANDONED_CART, BROWSED, policy=QUIET_POLICY))
    c.does(cart("e1", NOON + 10 * HOUR + 10 * MIN))  # 22:10 in Shanghai
    c.does(view("v1", NOON))
    c.clock(NOON + 11 * HOUR)
    text = c.state.model_dump_json()
    assert CustomerRuleState.model_validate_json(text) == c.state
    assert len(text) < 1024


def test_a_rule_switched_off_drops_its_waits_and_withdraws_its_deferred_actions() -> None:
    c = Customer(ruleset(ABANDONED_CART, WELCOME, policy=QUIET_POLICY))
    c.does(cart("e1", NOON + 10 * HOUR))  # 22:00 in Shanghai: deferred at the deadline
    assert outcomes(c.clock(NOON + 10 * HOUR + 30 * MIN)) == [
        ("abandoned-cart", "deferred", "quiet_hours")
    ]
    c.does(cart("e2", NOON + 10 * HOUR + 40 * MIN))  # arms again (cooldown is checked at firing)
    c.rules = ruleset(WELCOME, policy=QUIET_POLICY)  # the marketer removed the rule
    withdrawn = c.clock(NOON + 20 * HOUR)
    assert outcomes(withdrawn) == [("abandoned-cart", "suppressed", "rule_disabled")]
    assert withdrawn[0].budget_delta == -1
    assert c.state.timers == [] and c.state.deferred == [] and next_wake(c.state) is None


# --- properties -------------------------------------------------------------------------------

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@given(rule=ids, customer=ids, trigger=ids, other=ids)
def test_action_ids_depend_on_rule_customer_and_trigger_only(
    rule: str, customer: str, trigger: str, other: str
) -> None:
    assert action_id_for(rule, customer, trigger) == action_id_for(rule, customer, trigger)
    if other != trigger:
        assert action_id_for(rule, customer, trigger) != action_id_for(rule, customer, other)
    if other != customer:
        assert action_id_for(rule, customer, trigger) != action_id_for(rule, other, trigger)


steps = st.lists(
    st.tuples(
        st.sampled_from(["cart", "paid", "sweep", "sweep-twice"]),
        st.integers(min_value=0, max_value=40 * 60),  # seconds after the previous step
        st.sampled_from(["s1", "s2"]),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps, per_sku=st.booleans(), rearm=st.sampled_from(["restart", "keep"]))
def test_no_action_is_ever_decided_twice_however_events_and_sweeps_interleave(
    steps: list[tuple[str, int, str]], per_sku: bool, rearm: str
) -> None:
    rule = ABANDONED_CART.replace("cooldown: 7d", "cooldown: 1s").replace(
        "within: 30m", f"within: 30m, rearm: {rearm}" + (", per: sku" if per_sku else "")
    )
    c = Customer(ruleset(rule))
    now = NOON
    for n, (what, gap, sku) in enumerate(steps):
        now += timedelta(seconds=gap)
        if what == "cart":
            c.does(cart(f"e{n}", now, sku=sku))
        elif what == "paid":
            c.does(paid(f"o{n}", now, skus=[sku]))
        else:
            c.clock(now)
            if what == "sweep-twice":
                assert c.clock(now) == []
        wake = next_wake(c.state)
        assert wake is None or wake > now or what in ("cart", "paid")
    c.clock(now + DAY)
    decided = [d.action_id for d in c.decisions]
    assert len(decided) == len(set(decided))
    assert c.state.timers == []


def test_a_segment_change_told_twice_in_another_offset_is_the_same_trigger() -> None:
    c = Customer(ruleset(WIN_BACK))
    assert len(c.moves("important_value", "important_keep", NOON)) == 1
    shanghai = NOON.astimezone(timezone(timedelta(hours=8)))
    assert c.moves("important_value", "important_keep", shanghai) == []
