"""Tags: rule tags from the programme file (the rules' `if:` grammar on the profile), kept
apart from manual tags; re-evaluated on every step, and at the instants time alone can change
their truth (a recency threshold crossed), so a tag also falls off when its reason goes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

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
    last, as_of = profile.last_order_at, profile.as_of
    if last is None or as_of is None or not prog.recency_marks:
        return None
    return next((m for d in prog.recency_marks if (m := last + d * DAY) > as_of), None)
