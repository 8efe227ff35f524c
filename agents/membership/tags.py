"""Tags: rule tags from the programme file (the rules' `if:` grammar on the profile), kept
apart from manual tags; re-evaluated on every step, and at the instants time alone can change
their truth (a recency threshold crossed), so a tag also falls off when its reason goes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from agents.membership.state import MemberState, Movement
from agents.rules.conditions import profile_matches
from schemas.membership import Programme
from schemas.profile import Profile

DAY = timedelta(days=1)


def rule_tags(prog: Programme, profile: Profile) -> set[str]:
    """The programme's tags whose conditions the profile meets now."""
    return {tag for tag, conditions in prog.tags.items() if profile_matches(conditions, profile)}


def retag(st: MemberState, prog: Programme, profile: Profile, at: datetime) -> list[Movement]:
    """Set `profile.tags` to the manual tags and the rule tags that hold; the changes. The
    rule tags the profile carried are what it has beyond the manual ones."""
    manual = set(st.manual_tags)
    had = set(profile.tags) - manual
    now = rule_tags(prog, profile) - manual
    moves = [_tag(st, at, "tag_added", tag, "rule") for tag in sorted(now - had)]
    moves += [_tag(st, at, "tag_removed", tag, "rule") for tag in sorted(had - now)]
    tags = sorted(manual | now)
    if tags != profile.tags:
        profile.tags = tags
    return moves


def manual(st: MemberState, profile: Profile, tag: str, add: bool, at: datetime) -> list[Movement]:
    """A manual tag set or taken off; a rule tag of the same name stays (it is the rule's)."""
    if add == (tag in st.manual_tags):
        return []
    if add:
        st.manual_tags = sorted({*st.manual_tags, tag})
        shown = tag in profile.tags
        profile.tags = sorted({*profile.tags, tag})
        return [] if shown else [_tag(st, at, "tag_added", tag, "manual")]
    st.manual_tags = [t for t in st.manual_tags if t != tag]
    profile.tags = [t for t in profile.tags if t != tag]
    return [_tag(st, at, "tag_removed", tag, "manual")]


def _tag(st: MemberState, at: datetime, kind: str, tag: str, source: str) -> Movement:
    return Movement(kind, st.customer_id, at, tag=tag, tag_source=source)  # type: ignore[arg-type]


def next_tag_change(prog: Programme, profile: Profile) -> datetime | None:
    """The next instant a rule tag's recency test can change its answer (whole days since the
    last paid order crossing a number the test names); other fields change only with events
    or at the instants the profile and the ledger already wake up for."""
    if profile.last_order_at is None or profile.as_of is None:
        return None
    days: set[int] = set()
    for conditions in prog.tags.values():
        test = conditions.get("recency_days")
        if test is None:
            continue
        for value in test.operators().values():
            for x in value if isinstance(value, list) else [value]:
                n = int(Decimal(str(x)).to_integral_value(rounding="ROUND_FLOOR"))
                days.update((n, n + 1))
    moments = [profile.last_order_at + d * DAY for d in days if d >= 0]
    return min((m for m in moments if m > profile.as_of), default=None)
