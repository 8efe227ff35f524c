"""The membership side of one customer's step: an event or the clock in, the member state
and the profile's member fields changed, movements out. The customer step
(agents/customer_step.py) calls these around the fold and the rules:

    moves = on_event(member, prog, profile, event, now)   # orders earn, refunds reverse,
                                                          # points and tag requests apply
    moves = on_time(member, prog, now)                    # unlocks, expiries, term ends
    moves += finish(member, prog, profile, now)           # totals into the profile, rule tags
    when = next_change(member, prog, profile)             # for the due set

A customer becomes a member (the lowest level) with their first paid order or points credit.
History (imported events, a backlog) builds the ledger like live traffic; whether a movement
markets is for the rules to judge (agents/rules/member_triggers.py).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from agents.membership import ledger, levels, tags
from agents.membership.state import MemberState, Movement
from schemas.events import CartEvent, Event, OrderEvent, PointsEvent, TagEvent
from schemas.membership import Programme
from schemas.profile import PointsExpiry, Profile


def on_event(
    st: MemberState, prog: Programme, profile: Profile, event: Event, now: datetime
) -> list[Movement]:
    """An event the profile fold has applied (a paid order or refund), or a membership request
    (`PointsEvent`, `TagEvent`; the caller checks `is_duplicate` first)."""
    moves = on_time(st, prog, now)
    if isinstance(event, OrderEvent):
        moves += _order(st, prog, event, now)
    elif isinstance(event, PointsEvent):
        levels.join(st, prog, now)
        if event.request == "level":
            st.saw(f"request:{event.event_id}")
            if event.level is None or event.level in prog.levels.ids:
                moves += levels.pin(st, prog, event.level, now)
            else:
                why = f'no level "{event.level}" in the programme'
                moves.append(
                    Movement("refused", st.customer_id, now, reason=why, source=event.event_id)
                )
        elif event.request == "redeem":
            moves += ledger.redeem(
                st,
                prog,
                event.event_id,
                event.points,
                now,
                order_id=event.order_id,
                reason=event.reason,
            )
        else:
            moves += ledger.adjust(st, prog, event.event_id, event.points, now, event.reason)
        moves += levels.upgrade(st, prog, now)
    elif isinstance(event, TagEvent):
        st.saw(f"request:{event.event_id}")
        moves += tags.manual(st, profile, event.tag, event.op == "add", now)
    return moves


def is_duplicate(st: MemberState, event: Event) -> bool:
    """A membership request seen before (its `event_id` is the idempotency key)."""
    return st.has_seen(f"request:{event.event_id}")


def _order(st: MemberState, prog: Programme, event: OrderEvent, now: datetime) -> list[Movement]:
    metric = prog.levels.metric
    if event.status == "paid":
        levels.join(st, prog, now)
        multiplier = prog.levels.get(st.level).multiplier
        moves = ledger.earn_order(st, prog, event.order_id, event.amount, now, multiplier)
        if metric == "spend":
            moves += levels.qualify(st, prog, f"order:{event.order_id}", now, event.amount)
        elif metric == "orders":
            moves += levels.qualify(st, prog, f"order:{event.order_id}", now, Decimal(1))
        else:
            moves += levels.upgrade(st, prog, now)
        return moves
    moves = ledger.refund_order(st, prog, event.order_id, event.event_id, event.amount, now)
    earning = st.earned.get(event.order_id)
    q = st.qualifying.get(f"order:{event.order_id}")
    if q is not None and earning is not None and metric in ("spend", "orders"):
        net = max(earning.amount - earning.refunded, Decimal(0))
        q.value = net if metric == "spend" else Decimal(1 if net > 0 else 0)
    return moves


def credit_action(
    st: MemberState, prog: Programme, action_id: str, points: int, at: datetime
) -> list[Movement]:
    """A rule's `kind: points` action, credited once however often it is decided again."""
    levels.join(st, prog, at)
    moves = ledger.credit(st, prog, f"action:{action_id}", points, at)
    return moves + levels.upgrade(st, prog, at)


def tag_action(
    st: MemberState, profile: Profile, action_id: str, tag: str, add: bool, at: datetime
) -> list[Movement]:
    """A rule's `kind: tag` action: the tag set (or, `op: remove`, taken off) as a manual tag,
    once however often the action is decided again."""
    if st.has_seen(f"action:{action_id}"):
        return []
    st.saw(f"action:{action_id}")
    return tags.manual(st, profile, tag, add, at)


def on_time(st: MemberState, prog: Programme, now: datetime) -> list[Movement]:
    """Unlocks, expiries, term ends and grace ends up to `now`, in time order."""
    if st.is_empty():
        return []
    moves: list[Movement] = []
    while True:
        lot = ledger.next_lot_change(st, prog)
        level = levels.next_level_change(st, prog)
        moments = [m for m in (lot, level) if m is not None and m <= now]
        if not moments:
            break
        first = min(moments)
        moves += ledger.settle(st, prog, first)
        moves += levels.settle_levels(st, prog, first)
    levels.prune(st, prog, now)
    return moves


#: events that can change what a rule tag tests (carts only when a tag tests the cart)
_RETAG = (OrderEvent, PointsEvent, TagEvent)
_CART_FIELDS = frozenset(("cart_items", "cart_value"))


def concerns(prog: Programme, event: Event | None) -> bool:
    """Whether the clock or this event can move the member (or a rule tag): views,
    favourites and campaigns cannot, nor a cart add unless a tag tests the cart."""
    if event is None or isinstance(event, _RETAG):
        return True
    return isinstance(event, CartEvent) and bool(prog.tag_fields & _CART_FIELDS)


def finish(
    st: MemberState, prog: Programme, profile: Profile, now: datetime, event: Event | None = None
) -> list[Movement]:
    """The member totals into the profile, then the rule tags on the finished profile (after
    the clock, or an event that can change what they test)."""
    if st.is_member:
        profile.level = st.level
        profile.points = st.balance
        profile.points_pending = st.pending
        profile.points_expiring = [
            PointsExpiry(at=at, points=n) for at, n in ledger.soonest_expiries(st)
        ]
        profile.level_until = st.term_end
        profile.benefits = dict(prog.levels.get(st.level).benefits)
    if not prog.tags and not st.manual_tags and not profile.tags:
        return []
    if not concerns(prog, event):
        return []
    return tags.retag(st, prog, profile, now)


def next_change(st: MemberState, prog: Programme, profile: Profile) -> datetime | None:
    """The next instant time alone changes the member: a lot, the level, a rule tag."""
    moments = [
        ledger.next_lot_change(st, prog),
        levels.next_level_change(st, prog),
        tags.next_tag_change(prog, profile) if prog.tags else None,
    ]
    return min((m for m in moments if m is not None), default=None)
