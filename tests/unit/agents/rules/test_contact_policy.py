"""The guards between a rule and the customer: cooldown, holdout, the daily contact cap,
quiet hours that defer rather than drop, and the daily budget — each with its reason."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from agents.rules.contact_policy import Spend, quiet_until
from agents.rules.engine import BudgetBook, budget_spend, holdout, next_wake
from schemas.rules import parse_rules
from tests.unit.agents.rules.rule_driver import (
    ABANDONED_CART,
    DAY,
    HOUR,
    MIN,
    NOON,
    QUIET_POLICY,
    THANKS,
    WELCOME,
    WIN_BACK,
    Customer,
    cart,
    outcomes,
    paid,
    ruleset,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
TEN_PM = NOON + 10 * HOUR  # 22:00 in Shanghai
EIGHT_AM = datetime(2024, 5, 2, 0, 0, tzinfo=UTC)  # 08:00 the next morning in Shanghai


def test_cooldown_suppresses_a_second_coupon_within_the_week() -> None:
    c = Customer(ruleset(ABANDONED_CART))
    c.does(cart("e1", NOON))
    assert outcomes(c.clock(NOON + 30 * MIN)) == [("abandoned-cart", "fired", None)]
    c.does(cart("e2", NOON + DAY))
    assert outcomes(c.clock(NOON + DAY + 30 * MIN)) == [
        ("abandoned-cart", "suppressed", "cooldown")
    ]
    c.does(cart("e3", NOON + 8 * DAY))
    assert outcomes(c.clock(NOON + 8 * DAY + 30 * MIN)) == [("abandoned-cart", "fired", None)]


def test_the_contact_cap_lets_the_higher_priority_rule_through() -> None:
    c = Customer(ruleset(THANKS, WELCOME, policy="contact_cap: {per_day: 1}"))
    decided = c.does(paid("o1", NOON, amount="800"))
    assert outcomes(decided) == [
        ("welcome", "fired", None),
        ("thanks", "suppressed", "contact_cap"),
    ]


def test_the_contact_cap_counts_the_shop_day_in_shanghai() -> None:
    c = Customer(ruleset(THANKS, policy="contact_cap: {per_day: 1}"))
    late = datetime(2024, 5, 1, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai
    assert outcomes(c.does(paid("o1", late, amount="800"))) == [("thanks", "fired", None)]
    assert outcomes(c.does(paid("o2", late + 20 * MIN, amount="800"))) == [
        ("thanks", "suppressed", "contact_cap")
    ]
    after_midnight = late + 40 * MIN  # 00:10 the next day in Shanghai, still 16:10 UTC
    assert outcomes(c.does(paid("o3", after_midnight, amount="800"))) == [("thanks", "fired", None)]


def test_an_action_without_a_channel_is_not_a_contact() -> None:
    silent = THANKS.replace("channel: inbox, ", "")
    c = Customer(ruleset(WELCOME, silent, policy="contact_cap: {per_day: 1}"))
    assert outcomes(c.does(paid("o1", NOON, amount="800"))) == [
        ("welcome", "fired", None),
        ("thanks", "fired", None),
    ]


def test_quiet_hours_defer_to_eight_in_the_morning_and_then_deliver_with_the_same_id() -> None:
    c = Customer(ruleset(ABANDONED_CART, policy=QUIET_POLICY))
    c.does(cart("e1", TEN_PM + 10 * MIN))
    deferred = c.clock(TEN_PM + 40 * MIN)
    assert outcomes(deferred) == [("abandoned-cart", "deferred", "quiet_hours")]
    assert deferred[0].deliver_at == EIGHT_AM
    assert deferred[0].deliver_at.astimezone(SHANGHAI).hour == 8
    assert next_wake(c.state) == EIGHT_AM
    assert c.clock(EIGHT_AM - MIN) == []
    delivered = c.clock(EIGHT_AM)
    assert outcomes(delivered) == [("abandoned-cart", "fired", None)]
    assert delivered[0].action_id == deferred[0].action_id and delivered[0].released
    assert delivered[0].to_action().fired_at == EIGHT_AM
    assert c.clock(EIGHT_AM + MIN) == [] and next_wake(c.state) is None
    assert c.ledger.spent("abandoned-cart", date(2024, 5, 2)) == Spend(1, Decimal("10"))


def test_a_deferred_coupon_is_withdrawn_when_the_customer_buys_before_it_goes_out() -> None:
    c = Customer(ruleset(ABANDONED_CART, policy=QUIET_POLICY))
    c.does(cart("e1", TEN_PM + 10 * MIN))
    c.clock(TEN_PM + 40 * MIN)
    withdrawn = c.does(paid("o1", EIGHT_AM - HOUR))
    assert outcomes(withdrawn) == [("abandoned-cart", "suppressed", "cancelled")]
    assert c.clock(EIGHT_AM) == []
    assert c.ledger.spent("abandoned-cart", date(2024, 5, 2)) == Spend(0, Decimal("0"))
    assert c.state.last_fired == {}  # the cooldown was given back too


def test_quiet_hours_within_one_day_and_across_midnight() -> None:
    night = parse_rules(f"policy:\n  {QUIET_POLICY}\n").policy
    siesta = parse_rules('policy:\n  quiet_hours: {start: "12:00", end: "14:00"}\n').policy
    assert quiet_until(NOON - MIN, night) is None  # 11:59
    assert quiet_until(TEN_PM - MIN, night) is None
    assert quiet_until(TEN_PM, night) == EIGHT_AM
    assert quiet_until(EIGHT_AM - MIN, night) == EIGHT_AM  # 07:59
    assert quiet_until(EIGHT_AM, night) is None
    assert quiet_until(NOON, siesta) == NOON + 2 * HOUR
    assert quiet_until(NOON + 2 * HOUR, siesta) is None


def test_the_daily_budget_is_shared_by_all_customers() -> None:
    rules = ruleset(WIN_BACK.replace("action:", "budget: {per_day: 2}\n    action:"))
    ledger = BudgetBook()
    seen = []
    for n in range(3):
        c = Customer(rules, customer_id=f"c{n}", ledger=ledger)
        seen += outcomes(c.moves("important_value", "important_keep", NOON + n * MIN))
    assert seen == [("win-back", "fired", None)] * 2 + [("win-back", "suppressed", "budget")]
    tomorrow = Customer(rules, customer_id="c9", ledger=ledger)
    assert outcomes(tomorrow.moves("important_value", "important_keep", NOON + DAY)) == [
        ("win-back", "fired", None)
    ]


def test_the_daily_coupon_value_budget() -> None:
    rules = ruleset(WIN_BACK.replace("action:", "budget: {value_per_day: 70}\n    action:"))
    ledger = BudgetBook()
    decided = [
        Customer(rules, customer_id=f"c{n}", ledger=ledger).moves(
            "important_value", "important_keep", NOON
        )[0]
        for n in range(3)
    ]
    assert [(d.outcome, d.reason) for d in decided] == [
        ("fired", None),
        ("fired", None),
        ("suppressed", "budget"),
    ]
    assert budget_spend(decided) == {("win-back", date(2024, 5, 1)): Spend(2, Decimal("60"))}


def test_a_holdout_of_twenty_percent_over_two_thousand_customers() -> None:
    held = [holdout("win-back", f"customer-{n}", 0.2) for n in range(2000)]
    assert 0.17 <= sum(held) / 2000 <= 0.23
    assert held == [holdout("win-back", f"customer-{n}", 0.2) for n in range(2000)]
    other_rule = [holdout("welcome", f"customer-{n}", 0.2) for n in range(2000)]
    assert other_rule != held  # each rule draws its own control group


@given(customer=st.text(min_size=1, max_size=20), low=st.floats(0, 1), high=st.floats(0, 1))
def test_a_bigger_holdout_keeps_everyone_a_smaller_one_held_out(
    customer: str, low: float, high: float
) -> None:
    low, high = min(low, high), max(low, high)
    assert not holdout("r", customer, 0.0) and holdout("r", customer, 1.0)
    if holdout("r", customer, low):
        assert holdout("r", customer, high)


def test_held_out_customers_are_recorded_use_no_contact_and_start_the_cooldown() -> None:
    always = WELCOME.replace("id: welcome", "id: control").replace(
        "priority: 30", "priority: 99\n    holdout: 100%\n    cooldown: 1d"
    )
    c = Customer(ruleset(always, WELCOME, policy="contact_cap: {per_day: 1}"))
    assert outcomes(c.does(paid("o1", NOON))) == [
        ("control", "held_out", "holdout"),
        ("welcome", "fired", None),
    ]
    assert c.state.last_fired["control"] == NOON
    assert [d.to_action().rule_id for d in c.decisions if d.outcome == "fired"] == ["welcome"]


def test_the_shop_day_is_the_shops_not_utcs() -> None:
    c = Customer(ruleset(THANKS, policy="timezone: America/New_York\n  contact_cap: {per_day: 1}"))
    evening = datetime(2024, 5, 1, 23, 0, tzinfo=UTC)  # 19:00 in New York
    c.does(paid("o1", evening, amount="900"))
    assert list(c.state.contacts) == [date(2024, 5, 1)]
    assert outcomes(c.does(paid("o2", evening + 2 * HOUR, amount="900"))) == [
        ("thanks", "suppressed", "contact_cap")
    ]
