"""The marketers' rules, evaluated: pure functions from (rules, a customer's rule state, what
happened, the clock) to (new state, decisions). No I/O and no hidden clock — the worker
supplies `now`, stores the state beside the profile, books budgets and delivers the actions.

    state, decisions = on_event(rules, state, first_order, after, event, now, wall=wall)
    state, decisions = on_segment_change(rules, state, profile, change, now, wall=wall)
    state, decisions = on_clock(rules, state, profile, now, wall=wall)         # at next_wake

`now` is the decision time (the rule clock: it lags while a backlog is read); `wall` is the
wall clock, against which history is judged: a trigger that was imported (`origin: import`) or
is older than the policy's `max_event_age` updates the state like any other — waits armed,
counts counted, waits cancelled — but every decision it yields is `suppressed`, reason
`historical` (see agents/rules/contact_policy.py). `wall=None` judges nothing historical (the
backtest, agents/backtest/replay.py, replays history as if it were live).

Timers ("A not followed by B within T") are deadlines in the state; `next_wake(state)` is
when `on_clock` must next run for this customer. A trigger decided once is not decided again
(a redelivered event yields nothing), and the same trigger always yields the same action_id.

The three entry points never change the state they are given. A caller that owns a state and
feeds it many events in a row (the customer step, agents/customer_step.py) copies it once and
uses the `*_in_place` variants instead, which change it and say whether they did:

    changed, decisions = event_in_place(rules, owned, first_order, after, event, now, wall=wall)
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import repeat
from operator import attrgetter

from agents.rules.conditions import (
    concerns,
    follows,
    keys_of,
    profile_matches,
    skus_of,
    starts,
    topic_of,
)
from agents.rules.contact_policy import (
    BudgetBook,
    BudgetLedger,
    Candidate,
    Spend,
    budget_spend,
    consent_of,
    decide,
    historical,
    holdout,
    quiet_until,
    release,
    shop_day,
    withdraw,
)
from agents.rules.index import index_of
from agents.rules.state import CustomerRuleState, Decision, Deferred, Timer, action_id_for
from schemas.events import IMPORT_ORIGIN, Event
from schemas.outputs import SegmentChange
from schemas.profile import Profile
from schemas.rules import Rule, RuleSet

#: Armed timers and count windows kept per rule and customer (the oldest go first).
KEYS_KEPT_PER_RULE = 32

__all__ = [
    "BudgetBook",
    "BudgetLedger",
    "CustomerRuleState",
    "Decision",
    "Spend",
    "action_id_for",
    "budget_spend",
    "clock_in_place",
    "event_in_place",
    "historical",
    "holdout",
    "next_wake",
    "on_clock",
    "on_event",
    "on_segment_change",
    "quiet_until",
    "segment_change_in_place",
]


def on_event(
    rules: RuleSet,
    state: CustomerRuleState,
    first_order: bool,
    after: Profile,
    event: Event,
    now: datetime,
    *,
    budget: BudgetLedger | None = None,
    wall: datetime | None = None,
    consent_default: bool = True,
) -> tuple[CustomerRuleState, list[Decision]]:
    """One event: it cancels the waits it is the B of, resets the counts it is the `unless` of,
    arms waits and counts it is the A of, and fires the rules it triggers outright (their
    `if:` read on `after`, the profile with this event folded in; `first_order` is what the
    fold said of it, agents/profile/fold.py `Applied`) — unless it is history."""
    st = state.copied()
    changed, decisions = event_in_place(
        rules,
        st,
        first_order,
        after,
        event,
        now,
        budget=budget,
        wall=wall,
        consent_default=consent_default,
    )
    return (st if changed else state), decisions


def event_in_place(
    rules: RuleSet,
    st: CustomerRuleState,
    first_order: bool,
    after: Profile,
    event: Event,
    now: datetime,
    *,
    budget: BudgetLedger | None = None,
    wall: datetime | None = None,
    consent_default: bool = True,
) -> tuple[bool, list[Decision]]:
    """`on_event` on a state the caller owns; (False, []) when the event was decided before
    and `st` is untouched, else (True, decisions) with `st` changed."""
    trigger = f"event:{event.event_id}"
    if trigger in st.seen_triggers:
        return False, []
    _tidy(st, rules, now)
    st.saw(trigger)
    past = historical(event.ts, event.origin, wall, rules.policy)
    decisions: list[Decision] = []
    candidates: list[Candidate] = []
    topic = topic_of(event)
    # only the rules that name this topic can do anything with the event (file order kept)
    for order, rule in index_of(rules).by_topic.get(topic, ()):
        when = rule.when
        if when.not_followed_by is not None and follows(when.not_followed_by, event, topic):
            decisions += _cancel_waits(st, rule, event, rules, now)
        if when.unless is not None and follows(when.unless, event, topic):
            _reset_counts(st, rule, event)
        if not starts(when, event, first_order, topic):
            continue
        for key in keys_of(when, event):
            if when.count is not None and not _counted(st, rule, key, event.ts):
                continue
            if when.waits:
                _arm(st, rule, key, event)
            elif profile_matches(rule.if_, after):
                identity = f"{trigger}:{key}" if key else trigger
                candidates.append(
                    Candidate(rule, order, identity, event.event_id, event.ts, historical=past)
                )
    consent = consent_of(after, consent_default)
    decisions += decide(candidates, st, rules, now, budget or BudgetBook(), consent)
    return True, decisions


def on_segment_change(
    rules: RuleSet,
    state: CustomerRuleState,
    profile: Profile,
    change: SegmentChange,
    now: datetime,
    *,
    budget: BudgetLedger | None = None,
    wall: datetime | None = None,
    consent_default: bool = True,
    event: Event | None = None,
) -> tuple[CustomerRuleState, list[Decision]]:
    """A segment change (by an event or by time passing) fires the rules whose from/to match.
    One that `event` caused is history when that event is (an imported first order moves a
    prospect, and no rule may market on it)."""
    st = state.copied()
    changed, decisions = segment_change_in_place(
        rules,
        st,
        profile,
        change,
        now,
        budget=budget,
        wall=wall,
        event=event,
        consent_default=consent_default,
    )
    return (st if changed else state), decisions


def segment_change_in_place(
    rules: RuleSet,
    st: CustomerRuleState,
    profile: Profile,
    change: SegmentChange,
    now: datetime,
    *,
    budget: BudgetLedger | None = None,
    wall: datetime | None = None,
    consent_default: bool = True,
    event: Event | None = None,
) -> tuple[bool, list[Decision]]:
    """`on_segment_change` on a state the caller owns; (False, []) when the change was
    decided before and `st` is untouched."""
    trigger = f"segment:{change.from_}>{change.to}@{change.at.astimezone(UTC).isoformat()}"
    if trigger in st.seen_triggers:
        return False, []
    _tidy(st, rules, now)
    st.saw(trigger)
    past = historical(change.at, None, wall, rules.policy) or (
        event is not None and historical(event.ts, event.origin, wall, rules.policy)
    )
    candidates = [
        Candidate(rule, order, trigger, change.event_id, change.at, historical=past)
        for order, rule in enumerate(rules.rules)
        if rule.enabled
        and (move := rule.when.segment_change) is not None
        and (move.from_ is None or change.from_ in move.from_)
        and (move.to is None or change.to in move.to)
        and profile_matches(rule.if_, profile)
    ]
    consent = consent_of(profile, consent_default)
    return True, decide(candidates, st, rules, now, budget or BudgetBook(), consent)


def on_clock(
    rules: RuleSet,
    state: CustomerRuleState,
    profile: Profile,
    now: datetime,
    *,
    budget: BudgetLedger | None = None,
    wall: datetime | None = None,
    consent_default: bool = True,
) -> tuple[CustomerRuleState, list[Decision]]:
    """The clock reached `now`: deferred actions whose quiet hours ended are delivered (same
    action_id), and waits whose deadline passed fire if the rule's `if:` holds on `profile`.
    Either is history when it fell due more than `max_event_age` before `wall` (a worker that
    was down for days sends no stale coupon), and so is a wait an imported A armed."""
    st = state.copied()
    return st, clock_in_place(
        rules, st, profile, now, budget=budget, wall=wall, consent_default=consent_default
    )


def clock_in_place(
    rules: RuleSet,
    st: CustomerRuleState,
    profile: Profile,
    now: datetime,
    *,
    budget: BudgetLedger | None = None,
    wall: datetime | None = None,
    consent_default: bool = True,
) -> list[Decision]:
    """`on_clock` on a state the caller owns (always counted as changed: it is tidied)."""
    _tidy(st, rules, now)
    policy = rules.policy
    consent = consent_of(profile, consent_default)
    decisions: list[Decision] = []
    for deferred in sorted(st.deferred, key=lambda d: (d.deliver_at, d.action_id)):
        if deferred.deliver_at > now:
            continue
        if rules.get(deferred.rule_id) is None:
            decisions.append(withdraw(deferred, st, now, "rule_disabled", policy.zone))
        elif historical(deferred.deliver_at, None, wall, policy):
            decisions.append(withdraw(deferred, st, now, "historical", policy.zone))
        elif not consent.allows(deferred.channel):  # the customer said no while it waited
            decisions.append(withdraw(deferred, st, now, "no_consent", policy.zone))
        else:
            decisions.append(release(deferred, st, now))
    due = sorted(
        (t for t in st.timers if t.deadline <= now), key=lambda t: (t.deadline, t.rule_id, t.key)
    )
    st.timers = [t for t in st.timers if t.deadline > now]
    order_of = index_of(rules).order_of
    candidates: list[Candidate] = []
    for timer in due:
        rule = rules.get(timer.rule_id)
        if rule is None or not rule.when.waits or not profile_matches(rule.if_, profile):
            continue
        identity = f"timer:{timer.key}:{timer.trigger_event_id}"
        candidates.append(
            Candidate(
                rule,
                order_of[rule.id],
                identity,
                timer.trigger_event_id,
                timer.armed_at,
                key=timer.key,
                historical=historical(timer.deadline, timer.origin, wall, policy),
            )
        )
    decisions += decide(candidates, st, rules, now, budget or BudgetBook(), consent)
    return decisions


def next_wake(state: CustomerRuleState) -> datetime | None:
    """When `on_clock` must next run for this customer: the earliest deadline or delivery."""
    moments = [t.deadline for t in state.timers] + [d.deliver_at for d in state.deferred]
    return min(moments, default=None)


# --- the waits and counts ---------------------------------------------------------------------


def _arm(st: CustomerRuleState, rule: Rule, key: str, event: Event) -> None:
    """Start the wait for B; a new A while one is running restarts it or is ignored (`rearm`).
    A wait already past its deadline is left to fire, and the new A starts another."""
    assert rule.when.within is not None
    deadline = event.ts + rule.when.within
    running = next(
        (t for t in st.timers if t.rule_id == rule.id and t.key == key and t.deadline >= event.ts),
        None,
    )
    if running is not None:
        if event.ts < running.armed_at:
            return
        if rule.when.rearm == "keep":
            if running.origin == IMPORT_ORIGIN and not event.imported:
                # a live A during a wait that imported history armed: the wait (kept, as the
                # rule says) is live now, and may end in marketing
                live = running.model_copy(update={"origin": event.origin})
                st.timers[st.timers.index(running)] = live
            return
        st.timers.remove(running)
    st.timers.append(
        Timer(
            rule_id=rule.id,
            key=key,
            armed_at=event.ts,
            deadline=deadline,
            trigger_event_id=event.event_id,
            origin=event.origin,
        )
    )
    mine = [t for t in st.timers if t.rule_id == rule.id]
    if len(mine) > KEYS_KEPT_PER_RULE:
        mine.sort(key=lambda t: t.armed_at)
        for old in mine[:-KEYS_KEPT_PER_RULE]:
            st.timers.remove(old)


def _cancel_waits(
    st: CustomerRuleState, rule: Rule, event: Event, rules: RuleSet, now: datetime
) -> list[Decision]:
    """B came: waits it falls inside are cancelled, and so are their deliveries still held
    back by quiet hours (a coupon for a cart the customer has meanwhile bought is not sent)."""
    skus = skus_of(event)
    per = rule.when.per
    st.timers = [
        t
        for t in st.timers
        if not (
            t.rule_id == rule.id
            and concerns(per, t.key, skus)
            and t.armed_at <= event.ts <= t.deadline
        )
    ]
    cancelled: list[Deferred] = [
        d
        for d in st.deferred
        if d.rule_id == rule.id
        and d.key is not None
        and concerns(per, d.key, skus)
        and (d.trigger_at is None or d.trigger_at <= event.ts)
    ]
    return [withdraw(d, st, now, "cancelled", rules.policy.zone) for d in cancelled]


def _counted(st: CustomerRuleState, rule: Rule, key: str, at: datetime) -> bool:
    """Count one more matching event; True when it makes `at_least` within the window (the
    count then starts again from zero)."""
    count = rule.when.count
    assert count is not None
    slot = f"{rule.id}|{key}"
    stamps = sorted([*st.counts.get(slot, []), at])[-count.at_least :]
    if len(stamps) >= count.at_least and stamps[-1] - stamps[0] <= count.within:
        st.counts.pop(slot, None)
        return True
    st.counts[slot] = stamps
    prefix = f"{rule.id}|"
    mine = [s for s in st.counts if s.startswith(prefix)]
    if len(mine) > KEYS_KEPT_PER_RULE:
        mine.sort(key=st.counts.__getitem__)
        for old in mine[:-KEYS_KEPT_PER_RULE]:
            del st.counts[old]
    return False


def _reset_counts(st: CustomerRuleState, rule: Rule, event: Event) -> None:
    skus = skus_of(event)
    prefix = f"{rule.id}|"
    for slot in [s for s in st.counts if s.startswith(prefix)]:
        if concerns(rule.when.per, slot.removeprefix(prefix), skus):
            del st.counts[slot]


_RULE_ID = attrgetter("rule_id")


def _tidy(st: CustomerRuleState, rules: RuleSet, now: datetime) -> None:
    """Drop from an owned state what no rule can use any more, so the state stays small.
    (Each container is rebuilt only when something goes: this runs for every event.)"""
    index = index_of(rules)
    waiting, live = index.waiting, index.live
    if not waiting.issuperset(map(_RULE_ID, st.timers)):
        st.timers = [t for t in st.timers if t.rule_id in waiting]
    # counts go by event time, so a backlog still counts; each slot holds at most `at_least`
    # stamps and each rule at most KEYS_KEPT_PER_RULE slots, so no clock is needed to bound them
    # (a slot is "rule_id|key", and rule ids have no "|")
    counting = index.count_slot_prefixes
    if not all(map(str.startswith, st.counts, repeat(counting))):
        st.counts = {s: v for s, v in st.counts.items() if s.startswith(counting)}
    for rule_id, at in list(st.last_fired.items()):
        cooldown = live[rule_id].cooldown if rule_id in live else None
        if cooldown is None or now - at >= cooldown:
            del st.last_fired[rule_id]
    if st.contacts:
        yesterday: date = shop_day(now, rules.policy.zone) - timedelta(days=1)
        if any(day < yesterday or n <= 0 for day, n in st.contacts.items()):
            st.contacts = {day: n for day, n in st.contacts.items() if day >= yesterday and n > 0}
