"""Member levels: upgrade the moment the metric crosses a threshold, hold for a term, keep
(保级) or drop at its end after an optional grace period; a pinned level never moves by itself.

Pure, like the ledger: the state and the instant in, movements out.

    moves = qualify(state, programme, "order:O1", at, Decimal("299"))  # and upgrade if reached
    moves = settle_levels(state, programme, now)   # term ends and grace ends up to now
    when = next_level_change(state, programme)     # for the due set
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from agents.membership.state import MemberState, Movement, Qualifying
from schemas.membership import Programme


def _in_window(at: datetime, now: datetime, prog: Programme) -> bool:
    window = prog.levels.window
    if at > now:
        return False
    if window == "calendar_year":
        return at.astimezone(prog.zone).year == now.astimezone(prog.zone).year
    return at > now - window


def metric(st: MemberState, prog: Programme, now: datetime) -> Decimal:
    """The level metric as of `now`: net spend, points earned or paid orders in the window."""
    return sum((q.value for q in st.qualifying.values() if _in_window(q.at, now, prog)), Decimal(0))


def join(st: MemberState, prog: Programme, at: datetime) -> None:
    """The customer becomes a member, on the lowest level (then upgraded at once if due)."""
    if st.level is None:
        st.level = prog.levels.ladder[0].id
        st.level_since = at


def _changed(st: MemberState, at: datetime, was: str | None, why: str) -> Movement:
    return Movement(
        "level_changed", st.customer_id, at, level_from=was, level_to=st.level, reason=why
    )


def _set(st: MemberState, prog: Programme, rank: int, at: datetime) -> None:
    levels = prog.levels
    st.level = levels.ladder[rank].id
    st.level_since = at
    st.term_end = at + levels.term if rank > 0 and levels.term is not None else None
    st.grace_until = None


def upgrade(st: MemberState, prog: Programme, at: datetime) -> list[Movement]:
    """Move up at once when the metric reaches a higher level's threshold; a member in grace
    whose metric reaches the keep threshold keeps the level for another term."""
    if st.level is None or st.pinned:
        return []
    levels = prog.levels
    value = metric(st, prog, at)
    rank = levels.rank(st.level)
    target = max(n for n, level in enumerate(levels.ladder) if level.upgrade <= value)
    if target > rank:
        was = st.level
        _set(st, prog, target, at)
        return [_changed(st, at, was, "upgrade")]
    if st.grace_until is not None and value >= levels.ladder[rank].keep_at:
        _renew(st, prog)
    return []


def _renew(st: MemberState, prog: Programme) -> None:
    assert st.term_end is not None and prog.levels.term is not None
    st.term_end = st.term_end + prog.levels.term
    st.grace_until = None


def qualify(
    st: MemberState, prog: Programme, key: str, at: datetime, value: Decimal
) -> list[Movement]:
    """Record (or correct, after a refund) one contribution to the metric, then upgrade."""
    st.qualifying[key] = Qualifying(at=at, value=value)
    return upgrade(st, prog, at)


def next_level_change(st: MemberState, prog: Programme) -> datetime | None:
    """The term's end, or the grace period's (None: lowest level, pinned, or no term)."""
    if st.pinned or st.level is None or prog.levels.rank(st.level) == 0:
        return None
    return st.grace_until or st.term_end


def downgrade_at(st: MemberState, prog: Programme, now: datetime) -> datetime | None:
    """When the level will drop if nothing more is bought (the metric at the term end will be
    below the keep threshold), for `level_expiring` reminders; None when it is kept or cannot
    drop."""
    end = next_level_change(st, prog)
    # judged on what will still count at the term end (the older spend leaves the window)
    if end is None or metric(st, prog, max(end, now)) >= prog.levels.get(st.level).keep_at:
        return None
    if st.grace_until is None and prog.levels.grace is not None:
        return end + prog.levels.grace
    return end


def settle_levels(st: MemberState, prog: Programme, until: datetime) -> list[Movement]:
    """Every term end and grace end at or before `until`, each judged at its own instant."""
    moves: list[Movement] = []
    levels = prog.levels
    while (moment := next_level_change(st, prog)) is not None and moment <= until:
        rank = levels.rank(st.level)
        value = metric(st, prog, moment)
        if value >= levels.ladder[rank].keep_at and levels.term is not None:
            _renew(st, prog)  # kept: another term from the end of this one
            continue
        if st.grace_until is None and levels.grace is not None:
            st.grace_until = moment + levels.grace
            continue
        new = rank - 1
        if levels.downgrade == "to_supported":
            new = max(
                (n for n, level in enumerate(levels.ladder[:rank]) if level.keep_at <= value),
                default=0,
            )
        was = st.level
        _set(st, prog, new, moment)
        moves.append(_changed(st, moment, was, "term_end"))
    return moves


def prune(st: MemberState, prog: Programme, now: datetime) -> None:
    """Forget contributions that left the window (the state stays small)."""
    if any(not _in_window(q.at, now, prog) and q.at <= now for q in st.qualifying.values()):
        st.qualifying = {
            k: q for k, q in st.qualifying.items() if q.at > now or _in_window(q.at, now, prog)
        }


def pin(st: MemberState, prog: Programme, level: str | None, at: datetime) -> list[Movement]:
    """Set a level by hand and keep it (None: unpin, and the metric decides again)."""
    if level is None:
        if st.pinned and prog.levels.rank(st.level) > 0 and prog.levels.term is not None:
            st.term_end = at + prog.levels.term  # judged again at the end of a new term
        st.pinned = False
        return upgrade(st, prog, at)
    was = st.level
    _set(st, prog, prog.levels.rank(level), at)
    st.term_end = None
    st.pinned = True
    return [] if was == st.level else [_changed(st, at, was, "pinned")]
