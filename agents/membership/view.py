"""The member view `ecrm member show` prints: level (since, term end, progress to the next
level and to keeping this one), points (balance, pending, soonest expiries, lots), benefits
and tags — as of now, without writing anything (time is applied to a copy)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agents.membership import ledger, levels
from agents.membership.state import MemberState
from agents.membership.step import on_time
from schemas.membership import Programme
from schemas.profile import Profile


def member_view(
    member: MemberState | None, profile: Profile | None, prog: Programme, now: datetime
) -> dict[str, Any]:
    """The member as of `now` (None: a customer who is not a member yet)."""
    known = member or profile
    customer_id = known.customer_id if known is not None else ""
    st = member.model_copy(deep=True) if member else MemberState(customer_id=customer_id)
    on_time(st, prog, now)
    ladder = prog.levels
    level = ladder.get(st.level) if st.level else None
    rank = ladder.rank(st.level)
    value = levels.metric(st, prog, now)
    nxt = ladder.ladder[rank + 1] if st.level and rank + 1 < len(ladder.ladder) else None
    manual = sorted(st.manual_tags)
    tags = sorted(set(profile.tags if profile else []) | set(manual))
    return {
        "customer_id": customer_id,
        "member": st.is_member,
        "level": st.level,
        "level_name": level.name if level else None,
        "level_since": _iso(st.level_since),
        "term_end": _iso(st.term_end),
        "grace_until": _iso(st.grace_until),
        "pinned": st.pinned,
        "progress": {
            "metric": ladder.metric,
            "value": str(value),
            "next_level": nxt.id if nxt else None,
            "to_next_level": str(max(nxt.upgrade - value, 0)) if nxt else None,
            "keep_at": str(level.keep_at) if level and rank > 0 else None,
            "to_keep": str(max(level.keep_at - value, 0)) if level and rank > 0 else None,
            "drops_at": _iso(levels.downgrade_at(st, prog, now)),
        },
        "points": {
            "balance": st.balance,
            "pending": st.pending,
            "expiring": [
                {"at": at.isoformat(), "points": n} for at, n in ledger.soonest_expiries(st, 3)
            ],
            "lots": [lot.model_dump(mode="json") for lot in st.lots],
        },
        "benefits": dict(level.benefits) if level else {},
        "tags": tags,
        "manual_tags": manual,
        "rule_tags": [t for t in tags if t not in manual],
    }


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None
