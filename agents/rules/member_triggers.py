"""The rules that membership starts: a level change, a level about to drop (保级 reminder),
points about to lapse (积分即将过期), a birthday. Pure, like the engine:

    decisions = member_in_place(rules, state, profile, member, programme, moves, now,
                                budget=budget, wall=wall, origin=event.origin)
    when = member_wake(rules, member, programme, profile, now)   # for the wake set

A level change is decided once per change (its movement); a warning or a birthday once per
moment it concerns (the drop, the lapse, the birthday), the first time a step of the customer
falls inside its window — at the very instant, since that instant is a wake time. What history
causes is recorded, never acted on (`historical`, as for every rule).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from agents.membership.levels import downgrade_at
from agents.membership.state import MemberState, Movement
from agents.rules.conditions import profile_matches
from agents.rules.contact_policy import BudgetLedger, Candidate, decide, historical
from agents.rules.state import CustomerRuleState, Decision
from schemas.membership import Programme
from schemas.profile import Profile
from schemas.rules import Rule, RuleSet

DAY = timedelta(days=1)


def member_rules(rules: RuleSet) -> tuple[tuple[int, Rule], ...]:
    """The enabled rules membership starts, with their position in the file."""
    return rules.member_rules


def member_in_place(
    rules: RuleSet,
    st: CustomerRuleState,
    profile: Profile,
    member: MemberState,
    prog: Programme,
    moves: list[Movement],
    now: datetime,
    *,
    budget: BudgetLedger,
    wall: datetime | None,
    origin: str | None = None,
) -> list[Decision]:
    """Decide the membership rules for what this step did and for where time stands."""
    policy = rules.policy
    candidates: list[Candidate] = []
    for order, rule in member_rules(rules):
        found = _triggers(rule, member, prog, profile, moves, now, policy.zone)
        for identity, at in found:
            if identity in st.seen_triggers or not profile_matches(rule.if_, profile):
                continue
            st.saw(identity)
            past = historical(at, origin, wall, policy)
            candidates.append(Candidate(rule, order, identity, None, at, historical=past))
    return decide(candidates, st, rules, now, budget) if candidates else []


def _triggers(
    rule: Rule,
    member: MemberState,
    prog: Programme,
    profile: Profile,
    moves: list[Movement],
    now: datetime,
    zone: ZoneInfo,
) -> list[tuple[str, datetime]]:
    """(trigger identity, when it happened) of what starts this rule now."""
    when = rule.when
    if (move := when.level_change) is not None:
        found = []
        for m in moves:
            if m.kind != "level_changed" or m.level_to is None:
                continue
            up = prog.levels.rank(m.level_to) > prog.levels.rank(m.level_from)
            if (
                (move.from_ is None or m.level_from in move.from_)
                and (move.to is None or m.level_to in move.to)
                and (move.direction == "any" or (move.direction == "up") == up)
            ):
                found.append((f"level:{m.level_from}>{m.level_to}@{_iso(m.at)}", m.at))
        return found
    if (expiring := when.level_expiring) is not None:
        drop = downgrade_at(member, prog, now)
        if drop is not None and drop - expiring.within <= now < drop:
            return [(f"level_expiring:{member.level}@{_iso(drop)}", drop - expiring.within)]
        return []
    if (lapsing := when.points_expiring) is not None:
        soon = [
            lot
            for lot in member.lots
            if lot.state == "active"
            and lot.expires_at
            and now < lot.expires_at <= now + lapsing.within
        ]
        if sum(lot.remaining for lot in soon) >= lapsing.at_least:
            first = min(lot.expires_at for lot in soon if lot.expires_at)
            return [(f"points_expiring:{_iso(first)}", first - lapsing.within)]
        return []
    if when.birthday is not None and profile.birthday:
        for moment in _birthdays(profile.birthday, now, zone, when.birthday.before):
            if moment <= now < moment + DAY:
                return [(f"birthday:{moment.astimezone(zone).year}", moment)]
    return []


def member_wake(
    rules: RuleSet, member: MemberState, prog: Programme, profile: Profile, now: datetime
) -> datetime | None:
    """The next instant a membership rule's window opens for this customer."""
    moments: list[datetime] = []
    for _, rule in member_rules(rules):
        when = rule.when
        if when.level_expiring is not None:
            drop = downgrade_at(member, prog, now)
            if drop is not None:
                moments.append(drop - when.level_expiring.within)
        elif when.points_expiring is not None:
            moments += [
                lot.expires_at - when.points_expiring.within
                for lot in member.lots
                if lot.state == "active" and lot.expires_at
            ]
        elif when.birthday is not None and profile.birthday:
            moments += _birthdays(profile.birthday, now, rules.policy.zone, when.birthday.before)
    return min((m for m in moments if m > now), default=None)


def _birthdays(
    birthday: str, now: datetime, zone: ZoneInfo, before: timedelta | None
) -> list[datetime]:
    """The birthday's moments (the shop's midnight, less `before`) around `now`."""
    try:
        month, day = (int(part) for part in birthday.split("-"))
    except ValueError:
        return []
    year = now.astimezone(zone).year
    out = []
    for y in (year - 1, year, year + 1):
        try:
            d = date(y, month, day)
        except ValueError:
            if (month, day) != (2, 29):
                return []
            d = date(y, 2, 28)  # born on 29 February: the 28th in other years
        out.append(datetime(d.year, d.month, d.day, tzinfo=zone) - (before or timedelta(0)))
    return out


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()
