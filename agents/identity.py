"""Identity merge: an anonymous id (a browsing session before login) or an old id becomes a
known customer. Pure: two customers in, the merged customer and the redirect stub out.

What the anonymous id did carries over — views, cart, favourites, guest orders, and the
rules' waits (an abandoned-cart timer armed before login still fires, or is cancelled by the
customer's order, after it) — and its profile becomes a stub whose `merged_into` sends later
events, and readers, to the customer (agents/profile/routing.py `link` applies this in the
same Redis unit as the link's offset; docs/api.md, "Identity").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agents.profile.fold import (
    CAMPAIGN_IDS_KEPT,
    FAVORITES_KEPT,
    RECENT_IDS_KEPT,
    VIEWS_KEPT,
    RfmPolicy,
    rerate,
)
from agents.rules.state import SEEN_TRIGGERS_KEPT, CustomerRuleState
from schemas.profile import Profile, ViewStat

if TYPE_CHECKING:  # a reader of profiles (`ecrm profile`) needs no customer step
    from agents.customer_step import Customer

#: how many redirects a reader follows (a chain a -> b -> c is two)
MAX_REDIRECTS = 8


@dataclass
class Merge:
    """A merge's result: the customer with both histories, the stub left at the old id, and
    what moved (the row recorded in ClickHouse `identity_merges`)."""

    customer: Customer
    stub: Profile
    moved: dict[str, Any]


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def merged_profile(into: Profile, old: Profile, at: datetime, policy: RfmPolicy) -> Profile:
    """`into` with `old`'s behaviour and orders, re-rated as of `at` (or later: a customer's
    clock never goes back)."""
    p = into.model_copy(deep=True)
    if p.events_seen == 0 and p.first_seen_at is None:
        p.shop_id = old.shop_id
    p.first_seen_at = _earliest(p.first_seen_at, old.first_seen_at)
    p.last_seen_at = _latest(p.last_seen_at, old.last_seen_at)
    p.first_order_at = _earliest(p.first_order_at, old.first_order_at)
    p.last_order_at = _latest(p.last_order_at, old.last_order_at)
    for order_id, line in old.orders.items():
        p.orders.setdefault(order_id, line.model_copy())
    for sku, cart in old.cart.items():
        mine = p.cart.get(sku)
        if mine is None or cart.added_at > mine.added_at:
            p.cart[sku] = cart.model_copy()
    for sku, since in old.favorites.items():
        p.favorites[sku] = _earliest(p.favorites.get(sku), since) or since
    if len(p.favorites) > FAVORITES_KEPT:
        kept = sorted(p.favorites.items(), key=lambda kv: kv[1])[-FAVORITES_KEPT:]
        p.favorites = dict(kept)
    for sku, seen in old.views.items():
        mine_view = p.views.get(sku)
        if mine_view is None:
            p.views[sku] = seen.model_copy()
        else:
            later = seen if seen.last_at > mine_view.last_at else mine_view
            p.views[sku] = ViewStat(
                count=mine_view.count + seen.count,
                last_at=later.last_at,
                category=later.category or mine_view.category or seen.category,
            )
    if len(p.views) > VIEWS_KEPT:
        kept_views = sorted(p.views.items(), key=lambda kv: kv[1].last_at)[-VIEWS_KEPT:]
        p.views = dict(kept_views)
    p.page_views += old.page_views
    p.events_seen += old.events_seen
    p.recent_event_ids = _union(old.recent_event_ids, p.recent_event_ids, RECENT_IDS_KEPT)
    p.campaign_event_ids = _union(old.campaign_event_ids, p.campaign_event_ids, CAMPAIGN_IDS_KEPT)
    as_of = _latest(_latest(p.as_of, old.as_of), at)
    assert as_of is not None
    rerate(p, as_of, policy)
    return p


def merged_rules(into: CustomerRuleState, old: CustomerRuleState) -> CustomerRuleState:
    """`into`'s rule state with `old`'s waits, counts, cooldowns, contacts and deferred
    actions: a wait armed before login carries over (the customer's own wait for the same
    rule and product is kept when both have one)."""
    state = into.copied()
    mine = {(t.rule_id, t.key) for t in state.timers}
    state.timers.extend(t for t in old.timers if (t.rule_id, t.key) not in mine)
    for key, times in old.counts.items():
        state.counts[key] = sorted({*state.counts.get(key, []), *times})
    for rule_id, when in old.last_fired.items():
        state.last_fired[rule_id] = _latest(state.last_fired.get(rule_id), when) or when
    for day, n in old.contacts.items():
        state.contacts[day] = state.contacts.get(day, 0) + n
    known = {d.action_id for d in state.deferred}
    state.deferred.extend(d for d in old.deferred if d.action_id not in known)
    state.seen_triggers = _union(old.seen_triggers, state.seen_triggers, SEEN_TRIGGERS_KEPT)
    return state


def redirect_stub(old: Profile, into_id: str, at: datetime) -> Profile:
    """What stays at the old id: nothing but where it went."""
    return Profile(
        customer_id=old.customer_id,
        shop_id=old.shop_id,
        first_seen_at=old.first_seen_at,
        last_seen_at=old.last_seen_at,
        as_of=_latest(old.as_of, at),
        merged_into=into_id,
    )


def merge(into: Customer, old: Customer, at: datetime, policy: RfmPolicy, event_id: str) -> Merge:
    """`old` folded into `into` as of `at`."""
    profile = merged_profile(into.profile, old.profile, at, policy)
    rules = merged_rules(into.rules, old.rules)
    moved = {
        "customer_id": into.customer_id,
        "merged_id": old.customer_id,
        "event_id": event_id,
        "merged_at": at,
        "cart_items": len(old.profile.cart),
        "favorites": len(old.profile.favorites),
        "views": sum(v.count for v in old.profile.views.values()) + old.profile.page_views,
        "orders": len([o for o in old.profile.orders.values() if o.paid]),
        "waits": len(old.rules.timers),
        "segment_before": into.profile.segment,
        "segment_after": profile.segment,
    }
    stub = redirect_stub(old.profile, into.customer_id, at)
    from agents.customer_step import Customer

    return Merge(Customer(profile, rules), stub, moved)


def _union(first: list[str], second: list[str], keep: int) -> list[str]:
    """Both lists in order, each item once, the last `keep`."""
    seen = dict.fromkeys([*first, *second])
    return list(seen)[-keep:]
