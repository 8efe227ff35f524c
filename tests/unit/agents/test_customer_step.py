"""One customer's step decides a batch of events as it decides them one step each, never
changes the rule state it was given, and asks for no rule-state write when nothing changed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.customer_step import Customer, StepContext, on_event
from agents.profile.fold import RfmPolicy
from agents.rules.contact_policy import BudgetBook
from agents.rules.state import Decision
from schemas.events import Event
from schemas.profile import empty_profile
from tests.unit.agents.rules.rule_driver import (
    ABANDONED_CART,
    BROWSED,
    MIN,
    NOON,
    WELCOME,
    cart,
    paid,
    ruleset,
    view,
)

RULES = ruleset(ABANDONED_CART, BROWSED, WELCOME)


def _events(moves: list[tuple[str, int, str]]) -> list[Event]:
    make = {"cart": cart, "view": view}
    out: list[Event] = []
    for n, (kind, minute, sku) in enumerate(moves):
        at = NOON + minute * MIN
        out.append(
            paid(f"e{n}", at, skus=[sku]) if kind == "paid" else make[kind](f"e{n}", at, sku)
        )
    return out


MOVES = st.lists(
    st.tuples(
        st.sampled_from(["cart", "view", "paid"]),
        st.integers(0, 120),
        st.sampled_from(["s1", "s2"]),
    ),
    max_size=12,
)


def _decided(decisions: list[Decision]) -> list[tuple[str, str, str, str]]:
    return [(d.rule_id, d.action_id, d.outcome, d.decided_at.isoformat()) for d in decisions]


@settings(max_examples=60, deadline=None)
@given(MOVES, st.integers(1, 4))
def test_a_batch_in_one_step_decides_as_one_step_per_event(
    moves: list[tuple[str, int, str]], cut: int
) -> None:
    events = sorted(_events(moves), key=lambda e: e.ts)
    ctx_all = StepContext(RfmPolicy(), RULES, BudgetBook())
    ctx_each = StepContext(RfmPolicy(), RULES, BudgetBook())
    together, alone = Customer.new("c1"), Customer.new("c1")
    decided_together: list[Decision] = []
    decided_alone: list[Decision] = []
    for start in range(0, len(events), cut):
        given_state = together.rules
        before = given_state.model_dump_json()
        step = on_event(together, events[start : start + cut], ctx_all)
        assert given_state.model_dump_json() == before  # the given state is never changed
        decided_together += step.decisions
    for event in events:
        decided_alone += on_event(alone, [event], ctx_each).decisions
    assert _decided(decided_together) == _decided(decided_alone)
    assert together.rules.model_dump_json() == alone.rules.model_dump_json()


def test_events_the_rules_decided_before_ask_for_no_rule_state_write() -> None:
    ctx = StepContext(RfmPolicy(), RULES, BudgetBook())
    customer = Customer.new("c1")
    events = [cart("e1", NOON), view("e2", NOON + MIN)]
    assert on_event(customer, events, ctx).rules_changed
    decided = customer.rules
    # the profile forgot them (a fresh one), the rule state still remembers them
    again = on_event(Customer(empty_profile("c1"), decided), events, ctx)
    assert not again.rules_changed
    assert again.customer.rules is decided
    assert again.decisions == []
