"""Consent per channel: a rule never reaches a customer on a channel they refused (suppressed,
`no_consent`), a channel they never spoke of follows ECRM_CONSENT_DEFAULT, an action on no
channel needs no consent, and an opt-out overnight withdraws the coupon waiting for morning."""

from __future__ import annotations

from datetime import datetime

from agents.customer_step import Customer as Stepped
from agents.customer_step import StepContext, on_event
from agents.profile.fold import RfmPolicy
from agents.rules.contact_policy import BudgetBook, Consent, consent_of
from schemas.events import CustomerEvent
from schemas.profile import ConsentMark, empty_profile
from tests.unit.agents.rules.rule_driver import (
    ABANDONED_CART,
    HOUR,
    MIN,
    NOON,
    QUIET_POLICY,
    THANKS,
    WELCOME,
    Customer,
    cart,
    outcomes,
    paid,
    ruleset,
)


def consent(event_id: str, at: datetime, **said: bool) -> CustomerEvent:
    return CustomerEvent(event_id=event_id, customer_id="c1", ts=at, consent=said)


def test_an_opted_out_channel_gets_nothing_and_the_decision_says_why() -> None:
    c = Customer(ruleset(WELCOME, THANKS))
    c.does(consent("m1", NOON - HOUR, sms=False))
    assert outcomes(c.does(paid("o1", NOON, amount="800"))) == [
        ("welcome", "suppressed", "no_consent"),  # sms, refused
        ("thanks", "fired", None),  # inbox, never refused: the default lets it through
    ]


def test_consent_given_again_lets_the_rule_act_again() -> None:
    c = Customer(ruleset(WELCOME, THANKS))
    c.does(consent("m1", NOON - 2 * HOUR, sms=False, inbox=False))
    c.does(consent("m2", NOON - HOUR, sms=True))
    assert outcomes(c.does(paid("o1", NOON, amount="800"))) == [
        ("welcome", "fired", None),
        ("thanks", "suppressed", "no_consent"),
    ]


def test_a_suppressed_contact_uses_no_cooldown_and_no_contact() -> None:
    c = Customer(ruleset(ABANDONED_CART, policy="contact_cap: {per_day: 1}"))
    c.does(consent("m1", NOON - HOUR, sms=False))
    c.does(cart("e1", NOON))
    assert outcomes(c.clock(NOON + 30 * MIN)) == [("abandoned-cart", "suppressed", "no_consent")]
    assert c.state.last_fired == {} and sum(c.state.contacts.values()) == 0


def test_an_opt_out_while_a_coupon_waits_for_morning_withdraws_it() -> None:
    c = Customer(ruleset(ABANDONED_CART, policy=QUIET_POLICY))
    late = NOON + 10 * HOUR  # 22:00 in Shanghai: quiet
    c.does(cart("e1", late))
    assert outcomes(c.clock(late + 30 * MIN)) == [("abandoned-cart", "deferred", "quiet_hours")]
    c.does(consent("m1", late + HOUR, sms=False))
    assert outcomes(c.clock(late + 12 * HOUR)) == [("abandoned-cart", "suppressed", "no_consent")]


def test_with_consent_denied_by_default_only_a_granted_channel_is_used() -> None:
    ctx = StepContext(RfmPolicy(), ruleset(WELCOME, THANKS), BudgetBook(), consent_default=False)
    customer = Stepped.new("c1")
    step = on_event(customer, [consent("m1", NOON - HOUR, inbox=True)], ctx)
    step = on_event(step.customer, [paid("o1", NOON, amount="800")], ctx)
    assert outcomes(step.decisions) == [
        ("welcome", "suppressed", "no_consent"),
        ("thanks", "fired", None),
    ]


def test_an_action_on_no_channel_needs_no_consent() -> None:
    refused = Consent({"sms": False}, default=False)
    assert refused.allows(None)
    assert not refused.allows("sms") and not refused.allows("push")
    profile = empty_profile("c1")
    profile.consent["push"] = ConsentMark(granted=True, at=NOON)
    assert consent_of(profile, default=False).allows("push")
    assert not consent_of(profile, default=False).allows("email")
    assert consent_of(profile, default=True).allows("email")
