"""The points ledger: lots earned, unlocked, spent soonest-expiring first, reversed, expired.

Pure: every function takes the member state it changes and the instant it acts at, and
returns the movements it made. Each instant a lot unlocks or lapses is handled at that very
instant by `settle` (the customer step calls it at every wake-up, and before every change),
so a sweep that runs late records what happened when it happened.

    moves = settle(state, programme, now)                    # unlocks and expiries up to now
    moves = earn_order(state, programme, "O1", Decimal("299"), now, multiplier)
    moves = refund_order(state, programme, "O1", "r1", Decimal("100"), now)
    moves = redeem(state, programme, "req-1", 500, now)      # refused beyond the balance
    moves = adjust(state, programme, "req-2", -50, now, reason="goodwill")
    moves = credit(state, programme, "action:ab12", 100, now)  # a rule's points action

A request, an order or a rule action applies once however often it comes (`state.saw`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_FLOOR, Decimal

from agents.membership.state import (
    RECORDS_KEPT,
    Earning,
    Lot,
    MemberState,
    Movement,
    MovementKind,
    Qualifying,
    Redemption,
)
from schemas.membership import Programme

_FAR = datetime.max.replace(tzinfo=None)  # noqa: DTZ901 - a sort key, never a time


def _move(
    st: MemberState,
    kind: MovementKind,
    at: datetime,
    points: int,
    of: Lot | None = None,
    **kw: str,
) -> Movement:
    """A points movement, with the balance after it and the lot it concerns (`of`, or a
    `lot=` name)."""
    return Movement(
        kind,
        st.customer_id,
        at,
        points=points,
        balance=st.balance,
        lot=of.id if of else kw.pop("lot", ""),
        pending=of is not None and of.state == "pending",
        expires_at=of.expires_at if of else None,
        level=st.level,
        **kw,
    )


Taken = list[tuple[Lot, int]]


def _spent(
    st: MemberState, kind: MovementKind, at: datetime, taken: Taken, source: str, reason: str
) -> list[Movement]:
    """One movement per lot a spend took from, each with the balance after it."""
    balance = st.balance + sum(used for _, used in taken)
    moves = []
    for lot, used in taken:
        balance -= used
        moves.append(
            Movement(
                kind,
                st.customer_id,
                at,
                points=-used,
                balance=balance,
                lot=lot.id,
                source=source,
                reason=reason,
                expires_at=lot.expires_at,
                level=st.level,
            )
        )
    return moves


def _spend_order(lot: Lot) -> tuple[datetime, datetime, str]:
    """Lots that lapse first are spent first; then the oldest."""
    expires = lot.expires_at.replace(tzinfo=None) if lot.expires_at else _FAR
    return (expires, lot.earned_at.replace(tzinfo=None), lot.id)


def _trim(records: dict[str, object]) -> None:
    while len(records) > RECORDS_KEPT:
        records.pop(next(iter(records)))


def inactivity_deadline(st: MemberState, prog: Programme) -> datetime | None:
    """Expiry mode `inactivity`: when the whole balance lapses, if nothing happens before."""
    expiry = prog.points.expiry
    if expiry.mode != "inactivity" or st.last_active_at is None or not st.lots:
        return None
    assert expiry.after is not None
    return st.last_active_at + expiry.after


def next_lot_change(st: MemberState, prog: Programme) -> datetime | None:
    """The next instant a lot unlocks or lapses (None: only an event changes the ledger)."""
    soonest = inactivity_deadline(st, prog)
    for lot in st.lots:
        for moment in (lot.unlock_at if lot.state == "pending" else None, lot.expires_at):
            if moment is not None and (soonest is None or moment < soonest):
                soonest = moment
    return soonest


def settle(st: MemberState, prog: Programme, until: datetime) -> list[Movement]:
    """Every unlock and expiry at or before `until`, in time order, each at its own instant."""
    moves: list[Movement] = []
    while (moment := next_lot_change(st, prog)) is not None and moment <= until:
        if moment == inactivity_deadline(st, prog):
            for lot in list(st.lots):
                _expire(st, lot, moment, moves, "inactivity")
            continue
        for lot in sorted(st.lots, key=_spend_order):
            if lot.state == "pending" and lot.unlock_at == moment:
                _activate(st, lot)
                moves.append(_move(st, "unlocked", moment, lot.remaining, lot))
        for lot in list(st.lots):
            if lot.expires_at is not None and lot.expires_at <= moment:
                _expire(st, lot, moment, moves, "expiry")
    return moves


def _expire(st: MemberState, lot: Lot, at: datetime, moves: list[Movement], why: str) -> None:
    st.lots.remove(lot)
    if lot.remaining:
        moves.append(_move(st, "expired", at, -lot.remaining, lot, reason=why))


def _activate(st: MemberState, lot: Lot) -> None:
    """A lot becomes spendable; a debt left by a refund (`unlimited`) is paid from it first."""
    lot.state = "active"
    paid = min(st.debt, lot.remaining)
    lot.remaining -= paid
    st.debt -= paid
    if lot.remaining == 0:
        st.lots.remove(lot)


def _new_lot(
    st: MemberState, prog: Programme, lot_id: str, points: int, at: datetime, *, pending: bool
) -> Lot:
    wait = prog.points.pending if pending else None
    lot = Lot(
        id=lot_id,
        points=points,
        remaining=points,
        state="pending" if wait else "active",
        earned_at=at,
        unlock_at=at + wait if wait else None,
        expires_at=prog.expires_at(at),
    )
    st.lots.append(lot)
    st.last_active_at = at if st.last_active_at is None else max(st.last_active_at, at)
    if lot.state == "active":
        _activate(st, lot)
    if prog.levels.metric == "points":
        st.qualifying[lot_id] = Qualifying(at=at, value=Decimal(points))
    return lot


def credit(
    st: MemberState,
    prog: Programme,
    source: str,
    points: int,
    at: datetime,
    *,
    kind: MovementKind = "earned",
    reason: str = "",
) -> list[Movement]:
    """Points to spend at once (a rule's points action, a manual adjustment, a return)."""
    settle_moves = settle(st, prog, at)
    if points <= 0 or st.saw(f"lot:{source}"):
        return settle_moves
    lot = _new_lot(st, prog, source, points, at, pending=False)
    return [*settle_moves, _move(st, kind, at, points, lot, source=source, reason=reason)]


def earn_order(
    st: MemberState,
    prog: Programme,
    order_id: str,
    amount: Decimal,
    at: datetime,
    multiplier: Decimal = Decimal("1"),
) -> list[Movement]:
    """A paid order earns its points, pending until the return window closes."""
    moves = settle(st, prog, at)
    if order_id in st.earned or st.saw(f"order:{order_id}"):
        return moves
    st.last_active_at = at if st.last_active_at is None else max(st.last_active_at, at)
    points = prog.points.earn.points_for(amount, multiplier)
    st.earned[order_id] = Earning(amount=amount, points=points)
    _trim(st.earned)  # type: ignore[arg-type]
    if points > 0:
        lot = _new_lot(st, prog, f"order:{order_id}", points, at, pending=True)
        moves.append(_move(st, "earned", at, points, lot, source=f"order:{order_id}"))
    return moves


def _take(st: MemberState, points: int, first: Lot | None = None) -> Taken:
    """Spend up to `points` from active lots (`first`, then soonest-expiring); what was taken
    from which lot."""
    taken: Taken = []
    left = points
    active = sorted((lot for lot in st.lots if lot.state == "active"), key=_spend_order)
    if first is not None and first in active:
        active.remove(first)
        active.insert(0, first)
    for lot in active:
        if left <= 0:
            break
        used = min(lot.remaining, left)
        lot.remaining -= used
        left -= used
        taken.append((lot, used))
        if lot.remaining == 0:
            st.lots.remove(lot)
    return taken


def _share(points: int, refunded: Decimal, paid: Decimal) -> int:
    """The points of the refunded share of an order (rounded down: the member's favour)."""
    if paid <= 0 or refunded >= paid:
        return points
    return int((points * refunded / paid).to_integral_value(rounding=ROUND_FLOOR))


def refund_order(
    st: MemberState,
    prog: Programme,
    order_id: str,
    refund_id: str,
    amount: Decimal,
    at: datetime,
) -> list[Movement]:
    """A refund takes back the refunded share of the order's points, as the file's policy
    says, and gives back (as new lots) the refunded share of points redeemed on the order."""
    moves = settle(st, prog, at)
    if st.saw(f"refund:{refund_id}"):
        return moves
    earning = st.earned.get(order_id)
    if earning is not None:
        earning.refunded += amount
    # points redeemed on the order come back first, then its own points are taken back
    for request_id, redemption in st.redemptions.items():
        if redemption.order_id != order_id:
            continue
        target = redemption.points
        if earning is not None:
            target = _share(redemption.points, earning.refunded, earning.amount)
        back = target - redemption.returned
        if back > 0:
            redemption.returned = target
            moves += credit(st, prog, f"return:{request_id}:{refund_id}", back, at, kind="returned")
    if earning is not None:
        target = _share(earning.points, earning.refunded, earning.amount)
        due, earning.reversed = target - earning.reversed, max(target, earning.reversed)
        if due > 0:
            moves += _reverse(st, prog, order_id, refund_id, due, at)
    return moves


def _reverse(
    st: MemberState, prog: Programme, order_id: str, refund_id: str, due: int, at: datetime
) -> list[Movement]:
    """Take back `due` points of a refunded order: its pending lot first, then (policy
    permitting) active points, its own lot first; `unlimited` leaves the rest as a debt."""
    policy = prog.points.refund
    source = f"refund:{refund_id}"
    own = next((lot for lot in st.lots if lot.id == f"order:{order_id}"), None)
    moves: list[Movement] = []
    left = due
    if own is not None and own.state == "pending":
        used = min(own.remaining, due)
        own.remaining -= used
        left -= used
        if own.remaining == 0:
            st.lots.remove(own)
        # the pending total falls; the balance does not
        moves.append(_move(st, "reversed", at, -used, own, source=source))
    if left and policy != "only_pending":
        taken = _take(st, min(left, max(st.balance, 0)), first=own)
        left -= sum(used for _, used in taken)
        moves += _spent(st, "reversed", at, taken, source, "")
        if left and policy == "unlimited":
            st.debt += left
            moves.append(_move(st, "reversed", at, -left, lot="debt", source=source))
            left = 0
    if prog.levels.metric == "points" and (q := st.qualifying.get(f"order:{order_id}")):
        q.value = max(q.value - (due - left), Decimal(0))
    if left:
        why = f"{left} not taken back (policy {policy})"
        moves.append(
            _move(st, "reversed", at, 0, lot=f"order:{order_id}", source=source, reason=why)
        )
    return moves


def redeem(
    st: MemberState,
    prog: Programme,
    request_id: str,
    points: int,
    at: datetime,
    *,
    order_id: str | None = None,
    reason: str = "",
) -> list[Movement]:
    """Spend points, lots that lapse first first; a request beyond the balance is refused."""
    moves = settle(st, prog, at)
    if st.saw(f"request:{request_id}"):
        return moves
    source = f"request:{request_id}"
    if points <= 0:
        return [*moves, _move(st, "refused", at, points, source=source, reason="points ≤ 0")]
    if points > st.balance:
        why = f"balance {st.balance} is below {points}"
        return [*moves, _move(st, "refused", at, points, source=source, reason=why)]
    taken = _take(st, points)
    st.redemptions[request_id] = Redemption(points=points, order_id=order_id)
    _trim(st.redemptions)  # type: ignore[arg-type]
    return [*moves, *_spent(st, "redeemed", at, taken, source, reason)]


def adjust(
    st: MemberState, prog: Programme, request_id: str, points: int, at: datetime, reason: str = ""
) -> list[Movement]:
    """A manual adjustment: a credit (a new lot), or a debit within the balance."""
    source = f"adjust:{request_id}"
    moves = settle(st, prog, at)
    if st.saw(f"request:{request_id}"):
        return moves
    if points > 0:
        return moves + credit(st, prog, source, points, at, kind="adjusted", reason=reason)
    if points == 0 or -points > st.balance:
        why = "points = 0" if points == 0 else f"balance {st.balance} is below {-points}"
        return [*moves, _move(st, "refused", at, points, source=source, reason=why)]
    taken = _take(st, -points)
    return [*moves, *_spent(st, "adjusted", at, taken, source, reason)]


def soonest_expiries(st: MemberState, n: int = 2) -> list[tuple[datetime, int]]:
    """The next `n` expiry instants of active points, with how many lapse then."""
    by_moment: dict[datetime, int] = {}
    for lot in st.lots:
        if lot.state == "active" and lot.expires_at is not None and lot.remaining:
            by_moment[lot.expires_at] = by_moment.get(lot.expires_at, 0) + lot.remaining
    return sorted(by_moment.items())[:n]
