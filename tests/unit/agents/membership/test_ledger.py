"""The points ledger: what a member earns, spends, loses to a refund or to time — each at its
exact instant, each request once, and never below zero unless the shop allows it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.membership import ledger
from agents.membership.state import MemberState, Movement
from schemas.membership import Programme
from tests.unit.agents.membership.programme import DAY, ROLLING, T0, programme

Op = tuple[str, int, int, int]  # kind, day, number, id


def _member() -> MemberState:
    return MemberState(customer_id="c1", level="member")


def _apply(st_: MemberState, prog: Programme, op: Op) -> list[Movement]:
    kind, day, n, ident = op
    at = T0 + day * DAY
    if kind == "paid":
        return ledger.earn_order(st_, prog, f"O{ident}", Decimal(n), at)
    if kind == "refund":
        return ledger.refund_order(st_, prog, f"O{ident}", f"R{ident}-{n}", Decimal(n), at)
    if kind == "redeem":
        order = f"O{ident}" if ident % 2 else None
        return ledger.redeem(st_, prog, f"q{ident}", n, at, order_id=order)
    if kind == "adjust":
        return ledger.adjust(st_, prog, f"a{ident}", n - 150, at)
    if kind == "credit":
        return ledger.credit(st_, prog, f"action:{ident}", n, at)
    return ledger.settle(st_, prog, at)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["paid", "refund", "redeem", "adjust", "credit", "clock"]),
        st.integers(0, 800),
        st.integers(0, 600),
        st.integers(0, 5),
    ),
    max_size=25,
).map(lambda ops: sorted(ops, key=lambda op: op[1]))  # a member's clock never goes back

POLICIES = {
    policy: programme(
        f"pending: 15d\nexpiry: {{mode: {mode}{', after: 200d' if mode != 'calendar' else ''}}}"
        f"\nrefund: {policy}"
    )
    for policy, mode in (
        ("only_pending", "rolling"),
        ("within_balance", "calendar"),
        ("unlimited", "inactivity"),
    )
}


@settings(max_examples=150, deadline=None)
@given(OPS, st.sampled_from(sorted(POLICIES)))
def test_the_balance_is_the_active_lots_and_never_negative_unless_unlimited(
    ops: list[Op], policy: str
) -> None:
    prog = POLICIES[policy]
    member = _member()
    for op in ops:
        _apply(member, prog, op)
        active = sum(lot.remaining for lot in member.lots if lot.state == "active")
        assert member.balance == active - member.debt
        assert all(lot.remaining > 0 for lot in member.lots)
        if policy != "unlimited":
            assert member.debt == 0 and member.balance >= 0


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_every_request_order_and_action_redelivered_applies_once(ops: list[Op]) -> None:
    once, twice = _member(), _member()
    moves_once = [m for op in ops for m in _apply(once, ROLLING, op)]
    moves_twice = [m for op in ops for m in _apply(twice, ROLLING, op) + _apply(twice, ROLLING, op)]
    assert twice == once
    assert moves_twice == moves_once


@settings(max_examples=100, deadline=None)
@given(OPS)
def test_movements_add_up_to_the_balance(ops: list[Op]) -> None:
    member = _member()
    moves = [m for op in ops for m in _apply(member, ROLLING, op)]
    assert sum(_to_balance(m) for m in moves) == member.balance


@settings(max_examples=150, deadline=None)
@given(OPS, st.sampled_from(sorted(POLICIES)))
def test_every_movement_has_its_own_id(ops: list[Op], policy: str) -> None:
    member = _member()
    moves = [m for op in ops for m in _apply(member, POLICIES[policy], op)]
    assert len({m.movement_id for m in moves}) == len(moves)


def _to_balance(m: Movement) -> int:
    """What a movement did to the balance: nothing while pending, nothing when refused."""
    return 0 if m.pending or m.kind == "refused" else m.points


def test_order_points_unlock_at_the_exact_end_of_the_pending_period() -> None:
    member = _member()
    ledger.earn_order(member, ROLLING, "O1", Decimal("299.90"), T0)
    assert (member.balance, member.pending) == (0, 299)
    assert ledger.settle(member, ROLLING, T0 + 15 * DAY - timedelta(milliseconds=1)) == []
    [unlocked] = ledger.settle(member, ROLLING, T0 + 15 * DAY)
    assert (unlocked.kind, unlocked.at, unlocked.points) == ("unlocked", T0 + 15 * DAY, 299)
    assert (member.balance, member.pending) == (299, 0)


def test_rolling_lots_expire_at_their_instant_even_when_the_clock_comes_late() -> None:
    member = _member()
    ledger.credit(member, ROLLING, "action:a", 100, T0)
    ledger.credit(member, ROLLING, "action:b", 50, T0 + 10 * DAY)
    moves = ledger.settle(member, ROLLING, T0 + 400 * DAY)
    assert [(m.kind, m.at, m.points) for m in moves] == [
        ("expired", T0 + 365 * DAY, -100),
        ("expired", T0 + 375 * DAY, -50),
    ]
    assert member.balance == 0


def test_calendar_expiry_is_the_end_of_the_year_after_the_one_earned_in_the_shops_zone() -> None:
    prog = programme("expiry: {mode: calendar}")
    member = _member()
    # 2026-12-31 20:00 UTC is already 2027-01-01 in Shanghai
    ledger.credit(member, prog, "action:a", 10, datetime(2026, 12, 31, 20, tzinfo=UTC))
    ledger.credit(member, prog, "action:b", 20, datetime(2026, 6, 1, tzinfo=UTC))
    expiries = ledger.soonest_expiries(member)
    shanghai_new_year_2028 = datetime(2027, 12, 31, 16, tzinfo=UTC)
    assert expiries == [(shanghai_new_year_2028, 20), (datetime(2028, 12, 31, 16, tzinfo=UTC), 10)]


def test_inactivity_takes_the_whole_balance_n_days_after_the_last_order() -> None:
    prog = programme("pending: 1d\nexpiry: {mode: inactivity, after: 180d}")
    member = _member()
    ledger.earn_order(member, prog, "O1", Decimal(100), T0)
    ledger.earn_order(member, prog, "O2", Decimal(50), T0 + 100 * DAY)
    assert ledger.next_lot_change(member, prog) == T0 + 101 * DAY  # O2 unlocks
    moves = ledger.settle(member, prog, T0 + 300 * DAY)
    expired = [m for m in moves if m.kind == "expired"]
    assert {m.at for m in expired} == {T0 + 280 * DAY}
    assert sum(m.points for m in expired) == -150 and member.balance == 0


def test_never_expiring_points_stay() -> None:
    prog = programme("expiry: {mode: never}\npending: 1d")
    member = _member()
    ledger.earn_order(member, prog, "O1", Decimal(100), T0)
    ledger.settle(member, prog, T0 + 5000 * DAY)
    assert member.balance == 100 and ledger.next_lot_change(member, prog) is None


def test_redemption_spends_the_points_that_expire_first() -> None:
    member = _member()
    ledger.credit(member, ROLLING, "action:late", 100, T0 + 30 * DAY)
    ledger.credit(member, ROLLING, "action:early", 100, T0)
    ledger.redeem(member, ROLLING, "q1", 150, T0 + 31 * DAY)
    assert [(lot.id, lot.remaining) for lot in member.lots] == [("action:late", 50)]


def test_a_redemption_beyond_the_balance_is_refused_with_the_reason() -> None:
    member = _member()
    ledger.credit(member, ROLLING, "action:a", 100, T0)
    [refused] = ledger.redeem(member, ROLLING, "q1", 101, T0)
    assert (refused.kind, refused.points, refused.reason) == (
        "refused",
        101,
        "balance 100 is below 101",
    )
    assert member.balance == 100
    assert ledger.redeem(member, ROLLING, "q1", 50, T0) == []  # the same request: refused once


def _redeem_then_refund(policy: str) -> MemberState:
    prog = programme(f"pending: 15d\nrefund: {policy}")
    member = _member()
    ledger.earn_order(member, prog, "O1", Decimal(100), T0)  # 100 points, pending
    ledger.settle(member, prog, T0 + 15 * DAY)  # unlocked
    ledger.redeem(member, prog, "q1", 80, T0 + 16 * DAY)  # spent on another order
    ledger.refund_order(member, prog, "O1", "R1", Decimal(100), T0 + 17 * DAY)
    return member


@pytest.mark.parametrize(
    ("policy", "balance"), [("only_pending", 20), ("within_balance", 0), ("unlimited", -80)]
)
def test_redeem_then_refund_takes_back_what_the_policy_allows(policy: str, balance: int) -> None:
    assert _redeem_then_refund(policy).balance == balance


def test_a_refund_taking_back_part_of_a_spent_lot_records_the_shortfall_as_its_own_movement() -> (
    None
):
    prog = programme("pending: 15d\nrefund: within_balance")
    member = _member()
    ledger.earn_order(member, prog, "O1", Decimal(100), T0)
    ledger.settle(member, prog, T0 + 15 * DAY)
    ledger.redeem(member, prog, "q1", 80, T0 + 16 * DAY)
    moves = ledger.refund_order(member, prog, "O1", "R1", Decimal(100), T0 + 17 * DAY)
    assert [(m.kind, m.lot, m.points) for m in moves] == [
        ("reversed", "order:O1", -20),
        ("reversed", "order:O1", 0),
    ]
    assert moves[1].reason == "80 not taken back (policy within_balance)"
    assert moves[0].movement_id != moves[1].movement_id


def test_refund_then_redeem_refuses_the_points_the_refund_took() -> None:
    member = _member()
    ledger.earn_order(member, ROLLING, "O1", Decimal(100), T0)
    ledger.settle(member, ROLLING, T0 + 15 * DAY)
    ledger.refund_order(member, ROLLING, "O1", "R1", Decimal(100), T0 + 16 * DAY)
    [refused] = ledger.redeem(member, ROLLING, "q1", 80, T0 + 17 * DAY)
    assert refused.kind == "refused" and member.balance == 0


def test_a_refund_inside_the_pending_period_cancels_the_pending_points_in_proportion() -> None:
    member = _member()
    ledger.earn_order(member, ROLLING, "O1", Decimal(300), T0)
    [reversed_] = ledger.refund_order(member, ROLLING, "O1", "R1", Decimal(100), T0 + DAY)
    assert (reversed_.kind, reversed_.points) == ("reversed", -100)
    assert (member.pending, member.balance) == (200, 0)


def test_points_redeemed_on_a_refunded_order_come_back_before_its_own_are_taken() -> None:
    member = _member()
    ledger.credit(member, ROLLING, "action:a", 100, T0)
    ledger.earn_order(member, ROLLING, "O1", Decimal(200), T0)
    ledger.settle(member, ROLLING, T0 + 15 * DAY)  # balance 300
    ledger.redeem(member, ROLLING, "q1", 100, T0 + 16 * DAY, order_id="O1")  # 200
    moves = ledger.refund_order(member, ROLLING, "O1", "R1", Decimal(200), T0 + 17 * DAY)
    assert [(m.kind, m.points) for m in moves] == [
        ("returned", 100),
        ("reversed", -200),  # from the order's own lot
    ]
    assert member.balance == 100


def test_unlimited_debt_is_paid_from_the_next_points() -> None:
    member = _redeem_then_refund("unlimited")
    prog = programme("pending: 15d\nrefund: unlimited")
    ledger.credit(member, prog, "action:x", 100, T0 + 20 * DAY)
    assert (member.balance, member.debt) == (20, 0)
    assert [lot.remaining for lot in member.lots] == [20]


def test_a_negative_adjustment_beyond_the_balance_is_refused() -> None:
    member = _member()
    ledger.adjust(member, ROLLING, "a1", 50, T0, "welcome")
    [refused] = ledger.adjust(member, ROLLING, "a2", -60, T0)
    assert refused.kind == "refused" and member.balance == 50
    [taken] = ledger.adjust(member, ROLLING, "a3", -20, T0, "correction")
    assert (taken.kind, taken.points, taken.balance) == ("adjusted", -20, 30)
