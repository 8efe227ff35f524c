"""Levels: up the moment the spend crosses a threshold, held for a term, kept (保级) or dropped
at its end after the grace period, and never moved when pinned by hand."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.membership import levels
from agents.membership.state import MemberState
from schemas.membership import Programme
from tests.unit.agents.membership.programme import DAY, T0, programme

GRACE = programme(
    levels="""
levels:
  metric: spend
  window: 365d
  term: 365d
  grace: 30d
  ladder:
    - {id: member, upgrade: 0}
    - {id: silver, upgrade: 1000, keep: 800}
    - {id: gold, upgrade: 5000, keep: 4000}
"""
)
NO_GRACE = programme()


def _buy(st_: MemberState, prog: Programme, order: str, day: int, amount: int) -> list[str]:
    at = T0 + day * DAY
    levels.join(st_, prog, at)
    moves = levels.settle_levels(st_, prog, at)
    moves += levels.qualify(st_, prog, order, at, Decimal(amount))
    return [f"{m.level_from}>{m.level_to}" for m in moves]


def test_spend_crossing_a_threshold_upgrades_at_once_and_starts_the_term() -> None:
    member = MemberState(customer_id="c")
    assert _buy(member, NO_GRACE, "O1", 0, 600) == []
    assert member.level == "member"
    assert _buy(member, NO_GRACE, "O2", 10, 400) == ["member>silver"]
    assert member.term_end == T0 + 375 * DAY


def test_one_big_order_jumps_straight_to_the_level_it_reaches() -> None:
    member = MemberState(customer_id="c")
    assert _buy(member, NO_GRACE, "O1", 0, 6000) == ["member>gold"]


def test_at_the_term_end_the_keep_threshold_keeps_the_level_for_another_term() -> None:
    member = MemberState(customer_id="c")
    _buy(member, NO_GRACE, "O1", 0, 1000)  # silver until day 365
    _buy(member, NO_GRACE, "O2", 300, 800)  # in the window at day 365: 800 ≥ keep 800
    assert levels.settle_levels(member, NO_GRACE, T0 + 365 * DAY) == []
    assert member.level == "silver" and member.term_end == T0 + 730 * DAY


def test_below_the_keep_threshold_the_level_drops_one_step_at_the_very_term_end() -> None:
    member = MemberState(customer_id="c")
    _buy(member, NO_GRACE, "O1", 0, 6000)  # gold until day 365
    [drop] = levels.settle_levels(member, NO_GRACE, T0 + 500 * DAY)  # the sweep came late
    assert (drop.level_from, drop.level_to, drop.at) == ("gold", "silver", T0 + 365 * DAY)
    assert member.term_end == T0 + 730 * DAY


def test_to_supported_drops_to_the_level_the_metric_still_keeps() -> None:
    prog = programme(levels=NO_GRACE_LEVELS.replace("one_step", "to_supported"))
    member = MemberState(customer_id="c")
    _buy(member, prog, "O1", 0, 6000)
    levels.settle_levels(member, prog, T0 + 365 * DAY)
    assert member.level == "member"


NO_GRACE_LEVELS = """
levels:
  downgrade: one_step
  ladder:
    - {id: member, upgrade: 0}
    - {id: silver, upgrade: 1000, keep: 800}
    - {id: gold, upgrade: 5000, keep: 4000}
"""


def test_grace_gives_a_month_more_and_spending_in_it_keeps_the_level() -> None:
    member = MemberState(customer_id="c")
    _buy(member, GRACE, "O1", 0, 1000)
    assert levels.downgrade_at(member, GRACE, T0 + 300 * DAY) == T0 + 395 * DAY
    assert levels.settle_levels(member, GRACE, T0 + 370 * DAY) == []
    assert member.grace_until == T0 + 395 * DAY and member.level == "silver"
    _buy(member, GRACE, "O2", 380, 800)
    assert member.grace_until is None and member.term_end == T0 + 730 * DAY


def test_grace_without_spending_ends_in_the_drop() -> None:
    member = MemberState(customer_id="c")
    _buy(member, GRACE, "O1", 0, 1000)
    [drop] = levels.settle_levels(member, GRACE, T0 + 400 * DAY)
    assert (drop.level_to, drop.at) == ("member", T0 + 395 * DAY)


def test_a_pinned_level_is_never_changed_automatically() -> None:
    member = MemberState(customer_id="c")
    levels.join(member, NO_GRACE, T0)
    levels.pin(member, NO_GRACE, "gold", T0)
    assert _buy(member, NO_GRACE, "O1", 1, 30000) == []
    assert levels.settle_levels(member, NO_GRACE, T0 + 3000 * DAY) == []
    assert member.level == "gold" and levels.next_level_change(member, NO_GRACE) is None


def test_a_calendar_year_window_counts_only_this_years_spend() -> None:
    prog = programme(
        levels=NO_GRACE_LEVELS.replace("levels:\n", "levels:\n  window: calendar_year\n")
    )
    member = MemberState(customer_id="c")
    _buy(member, prog, "O1", 0, 900)  # 2026-03-01
    assert _buy(member, prog, "O2", 320, 200) == []  # 2027-01-15: a new year, 200 only


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1500), st.integers(0, 7000)), max_size=15))
def test_a_level_never_moves_between_its_events_and_instants(buys: list[tuple[int, int]]) -> None:
    """Settling at every day or only at the end gives the same level and history."""
    daily, lazy = MemberState(customer_id="c"), MemberState(customer_id="c")
    moves_daily: list[str] = []
    moves_lazy: list[str] = []
    last = 0
    for n, (day, amount) in enumerate(sorted(buys)):
        for d in range(last, day):
            moves_daily += [
                f"{m.level_to}@{m.at}" for m in levels.settle_levels(daily, GRACE, T0 + d * DAY)
            ]
        last = day
        for member, out in ((daily, moves_daily), (lazy, moves_lazy)):
            at = T0 + day * DAY
            levels.join(member, GRACE, at)
            moved = levels.settle_levels(member, GRACE, at)
            moved += levels.qualify(member, GRACE, f"O{n}", at, Decimal(amount))
            out += [f"{m.level_to}@{m.at}" for m in moved]
    assert moves_daily == moves_lazy
    assert daily == lazy
