"""The customer step with a membership programme: orders earn points that unlock on the clock,
rules read level, points and tags as they are now, a rule's points are credited once, and
membership triggers fire at their instants — but never for history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.customer_step import Customer, Step, StepContext, advance, on_event, wake_of
from agents.profile.fold import RfmPolicy
from agents.rules.contact_policy import BudgetBook
from schemas.events import BrowseEvent, Event, OrderEvent, PointsEvent, TagEvent
from schemas.rules import RuleSet, parse_rules
from tests.unit.agents.membership.programme import programme

T0 = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)  # noon in Shanghai
DAY = timedelta(days=1)
PROG = programme(
    "pending: 15d\nexpiry: {mode: rolling, after: 365d}",
    tags="vip: {monetary: {gte: 1000}}\nlapsing: {recency_days: {gt: 30}}",
)
RULES = parse_rules(
    """
rules:
  - id: gold-gift
    when: {level_change: {to: [gold], direction: up}}
    action: {kind: points, params: {points: 500}}
  - id: first-order-bonus
    when: {event: orders, first_order: true}
    action: {kind: points, params: {points: 100}}
  - id: rich-thanks
    when: {event: orders}
    if: {points: {gte: 600}}
    action: {kind: message, channel: sms, params: {template: rich}}
  - id: points-lapse
    when: {points_expiring: {within: 7d, at_least: 100}}
    action: {kind: message, channel: sms, params: {template: lapse}}
"""
)


def _ctx(rules: RuleSet | None = RULES, wall: datetime | None = None) -> StepContext:
    return StepContext(RfmPolicy(), rules, BudgetBook(), wall=wall, programme=PROG)


def paid(n: int, at: datetime, amount: str, origin: str | None = None) -> OrderEvent:
    return OrderEvent.model_validate(
        {"event_id": f"e{n}", "customer_id": "c1", "ts": at, "order_id": f"O{n}"}
        | {"status": "paid", "amount": amount, "origin": origin}
    )


def redeem(request: str, at: datetime, points: int) -> PointsEvent:
    return PointsEvent.model_validate(
        {"event_id": request, "customer_id": "c1", "ts": at, "kind": "redeem", "points": points}
    )


def _fired(step: Step) -> list[str]:
    return [d.rule_id for d in step.decisions if d.outcome == "fired"]


def test_an_order_earns_pending_points_that_unlock_at_their_instant_through_the_clock() -> None:
    customer = Customer.new("c1")
    ctx = _ctx(rules=None)
    step = on_event(customer, [paid(1, T0, "299")], ctx)
    p = customer.profile
    assert (p.level, p.points, p.points_pending) == ("member", 0, 299)
    assert step.wake == T0 + 15 * DAY
    step = advance(customer, T0 + 15 * DAY, ctx, inclusive=True)
    assert [m.kind for m in step.movements] == ["unlocked"]
    assert (p.points, p.points_pending) == (299, 0)
    assert p.points_expiring[0].at == T0 + 365 * DAY


def test_a_rules_points_action_is_credited_once_and_rules_read_the_new_balance() -> None:
    customer = Customer.new("c1")
    ctx = _ctx()
    first = on_event(customer, [paid(1, T0, "50")], ctx)
    assert _fired(first) == ["first-order-bonus"]
    assert customer.profile.points == 100
    again = on_event(customer, [paid(1, T0, "50")], ctx)  # redelivered
    assert again.duplicates and customer.profile.points == 100


TAGGING = parse_rules(
    """
rules:
  - id: big-spender
    when: {event: orders, where: {status: paid, amount: {gte: 1000}}}
    action: {kind: tag, params: {tag: big_spender}}
  - id: refund-untag
    when: {event: orders, where: {status: refunded}}
    action: {kind: tag, params: {tag: big_spender, op: remove}}
  - id: big-spender-thanks
    when: {event: orders}
    if: {tags: {has: big_spender}}
    action: {kind: message, channel: sms, params: {template: thanks}}
"""
)


def test_a_rules_tag_action_sets_the_tag_once_and_rules_read_it() -> None:
    customer = Customer.new("c1")
    ctx = _ctx(rules=TAGGING)
    step = on_event(customer, [paid(1, T0, "1200")], ctx)
    assert "big_spender" in customer.profile.tags
    assert customer.member is not None and customer.member.manual_tags == ["big_spender"]
    added = [m for m in step.movements if m.kind == "tag_added" and m.tag == "big_spender"]
    assert [m.tag_source for m in added] == ["manual"]
    again = on_event(customer, [paid(1, T0, "1200")], ctx)  # redelivered
    assert again.duplicates and not [m for m in again.movements if m.kind == "tag_added"]
    later = on_event(customer, [paid(2, T0 + DAY, "80")], ctx)
    assert "big-spender-thanks" in _fired(later)  # a later order sees the tag


def test_a_rules_tag_action_can_take_a_tag_off() -> None:
    customer = Customer.new("c1")
    ctx = _ctx(rules=TAGGING)
    on_event(customer, [paid(1, T0, "1200")], ctx)
    refund = OrderEvent.model_validate(
        {"event_id": "r1", "customer_id": "c1", "ts": T0 + DAY, "order_id": "O1"}
        | {"status": "refunded", "amount": "1200"}
    )
    step = on_event(customer, [refund], ctx)
    assert "big_spender" not in customer.profile.tags
    assert [m.kind for m in step.movements if m.tag == "big_spender"] == ["tag_removed"]


def test_an_upgrade_starts_the_level_change_rule_whose_points_then_count() -> None:
    customer = Customer.new("c1")
    ctx = _ctx()
    on_event(customer, [paid(1, T0, "4000")], ctx)
    step = on_event(customer, [paid(2, T0 + DAY, "1500")], ctx)  # 5,500: gold
    assert customer.profile.level == "gold"
    assert "gold-gift" in _fired(step)
    assert customer.profile.points == 100 + 500
    changes = [m for m in step.movements if m.kind == "level_changed"]
    assert [(m.level_from, m.level_to) for m in changes] == [("silver", "gold")]


def test_an_imported_order_builds_the_ledger_and_the_level_but_never_markets() -> None:
    customer = Customer.new("c1")
    wall = T0 + 400 * DAY
    ctx = _ctx(wall=wall)
    step = on_event(customer, [paid(1, T0, "6000", origin="import")], ctx, wall=wall)
    assert customer.profile.level == "gold"
    assert not _fired(step)
    assert {d.reason for d in step.decisions} == {"historical"}


def test_points_about_to_lapse_start_their_rule_at_the_very_instant() -> None:
    customer = Customer.new("c1")
    ctx = _ctx()
    on_event(customer, [paid(1, T0, "150")], ctx)  # 150 + the 100 bonus, lapse at T0+365d
    step = advance(customer, T0 + 358 * DAY, ctx, inclusive=True)
    lapse = [d for d in step.decisions if d.rule_id == "points-lapse"]
    assert [d.decided_at for d in lapse] == [T0 + 358 * DAY]
    assert customer.profile.points == 250
    step = advance(customer, T0 + 366 * DAY, ctx, inclusive=True)
    assert [m.kind for m in step.movements if m.points] == ["expired", "expired"]
    assert customer.profile.points == 0


def test_a_redemption_is_refused_beyond_the_balance_and_applies_once() -> None:
    customer = Customer.new("c1")
    ctx = _ctx(rules=None)
    on_event(customer, [paid(1, T0, "300")], ctx)
    refused = on_event(customer, [redeem("q1", T0 + DAY, 100)], ctx)
    assert [m.kind for m in refused.movements] == ["refused"]
    again = on_event(customer, [redeem("q1", T0 + 20 * DAY, 100)], ctx)  # the same request
    assert again.duplicates and [m.kind for m in again.movements] == ["unlocked"]
    assert customer.profile.points == 300
    done = on_event(customer, [redeem("q2", T0 + 20 * DAY, 100)], ctx)
    assert [m.kind for m in done.movements] == ["redeemed"]
    assert customer.profile.points == 200
    assert customer.profile.frequency == 1  # a request is not the customer's doing


def test_rule_tags_come_and_go_with_spend_and_time_and_manual_tags_stay() -> None:
    customer = Customer.new("c1")
    ctx = _ctx(rules=None)
    tag = TagEvent(event_id="t1", customer_id="c1", ts=T0, tag="wholesale")
    step = on_event(customer, [paid(1, T0, "1200"), tag], ctx)
    assert customer.profile.tags == ["vip", "wholesale"]
    assert {(m.kind, m.tag, m.tag_source) for m in step.movements if m.tag} == {
        ("tag_added", "vip", "rule"),
        ("tag_added", "wholesale", "manual"),
    }
    step = advance(customer, T0 + 40 * DAY, ctx, inclusive=True)
    assert customer.profile.tags == ["lapsing", "vip", "wholesale"]
    assert [m.at for m in step.movements if m.tag == "lapsing"] == [T0 + 31 * DAY]
    step = advance(customer, T0 + 400 * DAY, ctx, inclusive=True)  # the order left the window
    assert customer.profile.tags == ["lapsing", "wholesale"]  # vip fell off


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 500), st.integers(1, 3000)), min_size=1, max_size=8),
    st.integers(0, 800),
)
def test_stepping_wake_by_wake_or_all_at_once_ends_alike(
    orders: list[tuple[int, int]], end: int
) -> None:
    events: list[Event] = [
        paid(n, T0 + day * DAY, str(amount)) for n, (day, amount) in enumerate(sorted(orders))
    ]
    lazy, eager = Customer.new("c1"), Customer.new("c1")
    ctx = _ctx(rules=None)
    on_event(lazy, events, ctx)
    advance(lazy, T0 + end * DAY + DAY * 600, ctx, inclusive=True)
    for event in events:
        while (wake := wake_of(eager, ctx)) is not None and wake < event.ts:
            advance(eager, wake, ctx, inclusive=True)
        on_event(eager, [event], ctx)
    advance(eager, T0 + end * DAY + DAY * 600, ctx, inclusive=True)
    assert lazy.member == eager.member
    assert lazy.profile.points == eager.profile.points
    assert lazy.profile.level == eager.profile.level
    assert Decimal(lazy.profile.points) >= 0


WARNINGS = parse_rules(
    """
rules:
  - id: keep-reminder
    when: {level_expiring: {within: 14d}}
    action: {kind: message, channel: sms, params: {template: keep}}
  - id: birthday-gift
    when: {birthday: {}}
    if: {level: [silver, gold]}
    action: {kind: coupon, params: {value: 20, valid_for: 7d}}
"""
)


def test_a_level_about_to_drop_starts_the_keep_reminder_14_days_before_the_term_end() -> None:
    customer = Customer.new("c1")
    ctx = _ctx(rules=WARNINGS)
    on_event(customer, [paid(1, T0, "1500")], ctx)  # silver until T0 + 365d, keep 800
    assert customer.member is not None and customer.member.term_end == T0 + 365 * DAY
    step = advance(customer, T0 + 360 * DAY, ctx, inclusive=True)
    [reminder] = [d for d in step.decisions if d.rule_id == "keep-reminder"]
    assert reminder.decided_at == T0 + 351 * DAY and reminder.outcome == "fired"
    step = advance(customer, T0 + 366 * DAY, ctx, inclusive=True)
    assert [(m.level_from, m.level_to, m.at) for m in step.movements if m.level_to] == [
        ("silver", "member", T0 + 365 * DAY)
    ]


def test_a_member_who_keeps_spending_gets_no_keep_reminder() -> None:
    customer = Customer.new("c1")
    ctx = _ctx(rules=WARNINGS)
    on_event(customer, [paid(1, T0, "1500"), paid(2, T0 + 300 * DAY, "900")], ctx)
    step = advance(customer, T0 + 366 * DAY, ctx, inclusive=True)
    assert not [d for d in step.decisions if d.rule_id == "keep-reminder"]
    assert customer.profile.level == "silver"


def test_the_birthday_rule_fires_at_the_shops_midnight_once_a_year_for_its_levels() -> None:
    customer = Customer.new("c1")
    ctx = _ctx(rules=WARNINGS)
    on_event(customer, [paid(1, T0, "1500")], ctx)
    customer.profile.birthday = "03-10"  # as `ecrm.customers` would have set it
    assert wake_of(customer, ctx) == datetime(2026, 3, 9, 16, tzinfo=UTC)  # 00:00 in Shanghai
    step = advance(customer, T0 + 30 * DAY, ctx, inclusive=True)
    gifts = [d for d in step.decisions if d.rule_id == "birthday-gift"]
    assert [(d.decided_at, d.outcome) for d in gifts] == [
        (datetime(2026, 3, 9, 16, tzinfo=UTC), "fired")
    ]
    step = advance(customer, T0 + 30 * DAY, ctx, inclusive=True)
    assert not [d for d in step.decisions if d.rule_id == "birthday-gift"]


def _level_request(request: str, at: datetime, level: str | None) -> PointsEvent:
    return PointsEvent.model_validate(
        {"event_id": request, "customer_id": "c1", "ts": at, "kind": "level"}
        | {"points": 0, "level": level}
    )


def test_a_level_set_by_hand_stays_until_unpinned_and_is_then_judged_after_a_new_term() -> None:
    customer = Customer.new("c1")
    ctx = _ctx(rules=None)
    on_event(customer, [paid(1, T0, "100")], ctx)
    step = on_event(customer, [_level_request("pin-1", T0 + DAY, "gold")], ctx)
    assert [(m.level_from, m.level_to, m.reason) for m in step.movements] == [
        ("member", "gold", "pinned")
    ]
    advance(customer, T0 + 800 * DAY, ctx, inclusive=True)
    assert customer.profile.level == "gold"  # pinned: no term, no drop
    on_event(customer, [_level_request("unpin-1", T0 + 800 * DAY, None)], ctx)
    assert customer.profile.level_until == T0 + 1165 * DAY
    step = advance(customer, T0 + 1200 * DAY, ctx, inclusive=True)
    assert [m.level_to for m in step.movements if m.level_to] == ["silver"]


def test_a_level_the_programme_does_not_have_is_refused() -> None:
    customer = Customer.new("c1")
    ctx = _ctx(rules=None)
    on_event(customer, [paid(1, T0, "100")], ctx)
    step = on_event(customer, [_level_request("pin-1", T0 + DAY, "platinum")], ctx)
    assert [(m.kind, m.reason) for m in step.movements] == [
        ("refused", 'no level "platinum" in the programme')
    ]
    assert customer.profile.level == "member"


def test_a_step_that_cannot_move_the_member_leaves_its_state_untouched() -> None:
    """A view moves no member: the step says so (the worker then neither encodes nor writes
    the member state again); an order does, and the state it changed is the one to write."""
    customer = on_event(Customer.new("c1"), [paid(1, T0, "299")], _ctx()).customer
    assert customer.member is not None
    before = customer.member.model_dump_json()
    view = BrowseEvent.model_validate(
        {"event_id": "v1", "customer_id": "c1", "ts": T0 + DAY, "sku": "S1"}
    )
    step = on_event(customer, [view], _ctx())
    assert not step.member_touched
    assert step.customer.member is not None
    assert step.customer.member.model_dump_json() == before
    order = on_event(step.customer, [paid(2, T0 + 2 * DAY, "120")], _ctx())
    assert order.member_touched
    assert order.customer.member is not None
    assert order.customer.member.model_dump_json() != before
