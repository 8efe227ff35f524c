"""History never markets: a trigger that was imported (`origin: import`) or is older than the
policy's `max_event_age` by the wall clock moves profiles and rule state like any other, but
every decision it yields is suppressed with reason `historical`, spending no cooldown, contact
or budget. Without a wall clock (the backtest) nothing is history."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from agents.backtest.replay import replay
from agents.profile.fold import RfmPolicy
from agents.rules.engine import action_id_for, historical, next_wake
from ecrm.commands.bench import HISTORY as BENCH_HISTORY
from ecrm.commands.bench import history_as_live
from ecrm.commands.demo import HISTORY, _demo_rules
from schemas.events import Event, FavoriteEvent
from schemas.rules import RuleSet, load_rules
from tests.unit.agents.rules.rule_driver import (
    ABANDONED_CART,
    BROWSED,
    DAY,
    EXAMPLE,
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

SHANGHAI = timezone(timedelta(hours=8))
HISTORICAL = "suppressed", "historical"
MS = timedelta(milliseconds=1)


def imported(event: Event) -> Event:
    return event.model_copy(update={"origin": "import"})


def verdicts(decisions: list) -> list[tuple[str, str | None]]:
    return [(d.outcome, d.reason) for d in decisions]


# --- when a trigger is history ---------------------------------------------------------------


def test_an_order_exactly_max_event_age_old_is_live_and_a_millisecond_older_is_history() -> None:
    c = Customer(ruleset(THANKS))
    assert verdicts(c.does(paid("o1", NOON, "600"), wall=NOON + DAY)) == [("fired", None)]
    late = c.does(paid("o2", NOON, "600"), wall=NOON + DAY + MS)
    assert verdicts(late) == [HISTORICAL]
    assert late[0].action_id == action_id_for("thanks", "c1", "event:o2")  # still recorded


def test_max_event_age_is_the_policys_to_set() -> None:
    c = Customer(ruleset(THANKS, policy="max_event_age: 400d"))
    assert verdicts(c.does(paid("o1", NOON, "600"), wall=NOON + 399 * DAY)) == [("fired", None)]


def test_an_imported_order_is_history_however_recent() -> None:
    c = Customer(ruleset(THANKS))
    assert verdicts(c.does(imported(paid("o1", NOON, "600")), wall=NOON)) == [HISTORICAL]
    # an origin other than import is live
    other = paid("o2", NOON, "600").model_copy(update={"origin": "pos"})
    assert verdicts(c.does(other, wall=NOON)) == [("fired", None)]


@given(
    age_ms=st.integers(min_value=-HOUR // MS, max_value=3 * DAY // MS),
    origin=st.sampled_from([None, "import", "pos", ""]),
)
def test_a_trigger_is_history_exactly_when_imported_or_older_than_max_event_age(
    age_ms: int, origin: str | None
) -> None:
    rules = ruleset(THANKS)
    c = Customer(rules)
    event = paid("o1", NOON, "600").model_copy(update={"origin": origin})
    wall = NOON + age_ms * MS
    [decision] = c.does(event, wall=wall)
    expected = origin == "import" or age_ms * MS > rules.policy.max_event_age
    assert historical(event.ts, origin, wall, rules.policy) is expected
    assert (decision.outcome, decision.reason) == (HISTORICAL if expected else ("fired", None))
    assert decision.budget_delta == 0 or not expected


def test_without_a_wall_clock_nothing_is_history() -> None:
    c = Customer(ruleset(THANKS))
    assert verdicts(c.does(imported(paid("o1", NOON - 90 * DAY, "600")))) == [("fired", None)]


def test_a_redelivered_historical_event_is_not_recorded_twice() -> None:
    c = Customer(ruleset(THANKS))
    order = imported(paid("o1", NOON, "600"))
    assert len(c.does(order, wall=NOON)) == 1
    assert c.does(order, wall=NOON) == []


# --- history updates state but spends nothing ----------------------------------------------------


def test_a_historical_decision_spends_no_cooldown_contact_or_budget() -> None:
    rules = ruleset(
        """
  - id: thanks
    when: {event: orders, where: {status: paid, amount: {gte: 500}}}
    cooldown: 7d
    budget: {per_day: 1}
    action: {kind: coupon, channel: sms, params: {value: 20, valid_for: 7d}}
""",
        policy="contact_cap: {per_day: 1}",
    )
    c = Customer(rules)
    [old] = c.does(imported(paid("o1", NOON - HOUR, "600")), wall=NOON)
    assert (old.outcome, old.reason, old.budget_delta, old.budget_day) == (
        "suppressed",
        "historical",
        0,
        None,
    )
    assert c.state.last_fired == {} and c.state.contacts == {}
    # the same day, live: the cooldown, the cap of one and the budget of one are all unused
    assert verdicts(c.does(paid("o2", NOON, "700"), wall=NOON)) == [("fired", None)]


def test_history_is_suppressed_before_the_holdout_so_it_never_joins_a_control_group() -> None:
    rules = ruleset(THANKS.replace("priority: 25", "priority: 25\n    holdout: 100%"))
    c = Customer(rules)
    assert verdicts(c.does(imported(paid("o1", NOON, "600")), wall=NOON)) == [HISTORICAL]
    assert verdicts(c.does(paid("o2", NOON, "600"), wall=NOON)) == [("held_out", "holdout")]


def test_imported_views_count_toward_a_live_count() -> None:
    c = Customer(ruleset(BROWSED))
    assert c.does(imported(view("v1", NOON - 2 * HOUR)), wall=NOON) == []
    assert c.does(imported(view("v2", NOON - HOUR)), wall=NOON) == []
    assert verdicts(c.does(view("v3", NOON), wall=NOON)) == [("fired", None)]


def test_an_imported_order_cancels_a_wait_like_a_live_one() -> None:
    c = Customer(ruleset(ABANDONED_CART))
    c.does(cart("e1", NOON), wall=NOON)
    assert c.does(imported(paid("o1", NOON + MIN)), wall=NOON + MIN) == []
    assert c.state.timers == [] and c.clock(NOON + HOUR, wall=NOON + HOUR) == []


# --- the welcome -------------------------------------------------------------------------------


def test_a_customer_whose_first_order_is_imported_is_never_welcomed() -> None:
    c = Customer(ruleset(WELCOME, THANKS))
    first = c.does(imported(paid("o1", NOON - 30 * DAY, "600")), wall=NOON)
    assert outcomes(first) == [
        ("welcome", "suppressed", "historical"),
        ("thanks", "suppressed", "historical"),
    ]
    c.does(imported(paid("o2", NOON - 3 * DAY)), wall=NOON)
    # live, later: not a first order, so no welcome; the big-order thanks does go out
    live = c.does(paid("o3", NOON + DAY, "800"), wall=NOON + DAY)
    assert outcomes(live) == [("thanks", "fired", None)]


def test_the_example_rules_send_nothing_for_an_imported_history() -> None:
    c = Customer(example())
    found = []
    for n, days_ago in enumerate((200, 90, 30, 2, 0)):
        order = imported(paid(f"o{n}", NOON - days_ago * DAY, "650"))
        found += c.does(order, now=NOON, wall=NOON)
    found += c.clock(NOON + 30 * DAY, wall=NOON + 30 * DAY)
    assert found and all((d.outcome, d.reason) == HISTORICAL for d in found)


# --- waits -------------------------------------------------------------------------------------


def test_a_wait_armed_by_an_imported_cart_never_fires_an_action() -> None:
    c = Customer(ruleset(ABANDONED_CART))
    c.does(imported(cart("e1", NOON)), wall=NOON)
    assert [t.origin for t in c.state.timers] == ["import"]
    assert next_wake(c.state) == NOON + 30 * MIN
    due = c.clock(NOON + 30 * MIN, wall=NOON + 30 * MIN)  # on time: history all the same
    assert verdicts(due) == [HISTORICAL] and due[0].trigger_event_id == "e1"
    assert c.state.timers == [] and c.state.last_fired == {}
    # a live cart afterwards earns its coupon (the cooldown was not started)
    c.does(cart("e2", NOON + HOUR), wall=NOON + HOUR)
    assert verdicts(c.clock(NOON + 90 * MIN, wall=NOON + 90 * MIN)) == [("fired", None)]


def test_a_live_cart_during_an_imported_wait_restarts_it_live() -> None:
    c = Customer(ruleset(ABANDONED_CART))
    c.does(imported(cart("e1", NOON)), wall=NOON)
    c.does(cart("e2", NOON + 10 * MIN), wall=NOON + 10 * MIN)
    fired = c.clock(NOON + 40 * MIN, wall=NOON + 40 * MIN)
    assert verdicts(fired) == [("fired", None)] and fired[0].trigger_event_id == "e2"


def test_a_kept_wait_armed_by_history_is_live_once_a_live_favourite_confirms_it() -> None:
    rules = ruleset(
        """
  - id: favourite-not-bought
    when:
      event: favorites
      not_followed_by: {event: orders, where: {status: paid}}
      within: 3d
      per: sku
      rearm: keep
    action: {kind: message, channel: inbox, params: {template: reminder}}
"""
    )
    fav = FavoriteEvent(event_id="f1", customer_id="c1", ts=NOON, sku="s1")
    c = Customer(rules)
    c.does(imported(fav), wall=NOON + HOUR)
    c.does(fav.model_copy(update={"event_id": "f2", "ts": NOON + DAY}), wall=NOON + DAY)
    [timer] = c.state.timers
    assert (timer.armed_at, timer.trigger_event_id, timer.origin) == (NOON, "f1", None)
    assert verdicts(c.clock(NOON + 3 * DAY, wall=NOON + 3 * DAY)) == [("fired", None)]


def test_a_wait_that_fell_due_longer_ago_than_max_event_age_is_history() -> None:
    deadline = NOON + 30 * MIN
    on_time = Customer(ruleset(ABANDONED_CART))
    on_time.does(cart("e1", NOON), wall=NOON)
    # the worker was down: the sweep that runs the wait comes a day after its deadline
    assert verdicts(on_time.clock(deadline, wall=deadline + DAY)) == [("fired", None)]
    late = Customer(ruleset(ABANDONED_CART))
    late.does(cart("e1", NOON), wall=NOON)
    assert verdicts(late.clock(deadline, wall=deadline + DAY + MS)) == [HISTORICAL]


def test_a_wait_for_an_old_but_live_event_is_judged_by_its_deadline() -> None:
    # a favourite that reaches the worker two days late is history itself, but the 3-day
    # wait it starts ends tomorrow: "not bought within 3 days" is then news, and is acted on
    rules = ruleset(
        """
  - id: favourite-not-bought
    when: {event: favorites, not_followed_by: {event: orders}, within: 3d}
    action: {kind: message, channel: inbox, params: {template: reminder}}
"""
    )
    c = Customer(rules)
    c.does(FavoriteEvent(event_id="f1", customer_id="c1", ts=NOON, sku="s1"), wall=NOON + 2 * DAY)
    assert verdicts(c.clock(NOON + 3 * DAY, wall=NOON + 3 * DAY)) == [("fired", None)]


# --- deferred deliveries -------------------------------------------------------------------------


def night_cart(rules: RuleSet) -> tuple[Customer, datetime]:
    """A cart abandoned at 22:10 in Shanghai: its coupon is deferred to 08:00."""
    added = datetime(2024, 5, 1, 22, 10, tzinfo=SHANGHAI)
    c = Customer(rules)
    c.does(cart("e1", added), wall=added)
    [deferred] = c.clock(added + 30 * MIN, wall=added + 30 * MIN)
    assert (deferred.outcome, deferred.budget_delta) == ("deferred", 1)
    return c, deferred.deliver_at


def test_a_coupon_deferred_to_the_morning_is_delivered_in_the_morning() -> None:
    c, morning = night_cart(ruleset(ABANDONED_CART, policy=QUIET_POLICY))
    assert verdicts(c.clock(morning + SEC, wall=morning + SEC)) == [("fired", None)]


def test_a_deferred_coupon_whose_morning_is_long_past_is_withdrawn_and_gives_all_back() -> None:
    c, morning = night_cart(ruleset(ABANDONED_CART, policy=QUIET_POLICY))
    assert c.state.contacts and c.state.last_fired
    # the worker comes back two days later: the 08:00 delivery is history now
    [late] = c.clock(morning, wall=morning + 2 * DAY)
    assert (late.outcome, late.reason, late.released) == ("suppressed", "historical", False)
    assert (late.budget_delta, late.coupon_value) == (-1, Decimal("10"))
    assert c.state.deferred == [] and c.state.last_fired == {}
    assert all(n == 0 for n in c.state.contacts.values())


# --- segment changes ---------------------------------------------------------------------------


def test_a_segment_change_caused_by_an_imported_order_is_history_one_by_time_is_not() -> None:
    c = Customer(ruleset(WIN_BACK))
    order = imported(paid("o1", NOON - 40 * DAY, "600"))
    by_import = c.moves("important_value", "important_keep", NOON, wall=NOON, event=order)
    assert verdicts(by_import) == [HISTORICAL]
    by_time = c.moves("important_value", "important_retain", NOON + DAY, wall=NOON + DAY)
    assert verdicts(by_time) == [("fired", None)]


def test_a_segment_change_swept_long_after_it_happened_is_history() -> None:
    c = Customer(ruleset(WIN_BACK))
    assert verdicts(c.moves("important_value", "important_keep", NOON, wall=NOON + 2 * DAY)) == [
        HISTORICAL
    ]


# --- the backtest --------------------------------------------------------------------------------


def test_a_backtest_replays_imported_history_as_if_it_were_live() -> None:
    events = [
        imported(paid("o1", NOON - 60 * DAY, "600")),
        imported(cart("e1", NOON - 59 * DAY)),
    ]
    run = replay(ruleset(WELCOME, THANKS, ABANDONED_CART), events, policy=RfmPolicy(), end=NOON)
    assert sorted(outcomes(run.decisions)) == [
        ("abandoned-cart", "fired", None),
        ("thanks", "fired", None),
        ("welcome", "fired", None),
    ]


# --- the demo ----------------------------------------------------------------------------------


def test_the_demo_markets_the_history_it_replays_as_if_live(tmp_path) -> None:
    rules = load_rules(_demo_rules(EXAMPLE, tmp_path))
    assert rules.policy.quiet_hours is None and rules.policy.max_event_age > HISTORY
    c = Customer(rules)
    oldest = c.does(paid("o1", NOON - HISTORY, "600"), wall=NOON + HOUR)
    assert outcomes(oldest) == [("welcome", "fired", None), ("big-order-thanks", "fired", None)]


def test_the_bench_measures_a_pipeline_that_markets_the_history_it_replays(tmp_path) -> None:
    rules = load_rules(history_as_live(EXAMPLE, tmp_path))
    assert rules.policy.max_event_age > BENCH_HISTORY
    assert rules.policy.quiet_hours == example().policy.quiet_hours  # only the age changes
    c = Customer(rules)
    assert verdicts(c.does(paid("o1", NOON - BENCH_HISTORY, "600"), wall=NOON)) == [
        ("fired", None),
        ("fired", None),
    ]
