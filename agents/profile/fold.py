"""Pure RFM and behaviour folding: events and the clock in, a profile out, no I/O.

`fold_many` is idempotent per event (a redelivered event changes nothing) and `refresh`
recomputes R, F, M and the segment as of a given instant, so time alone can move a customer.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from schemas.events import (
    BrowseEvent,
    CampaignEvent,
    CartEvent,
    CustomerEvent,
    Event,
    FavoriteEvent,
    OrderEvent,
)
from schemas.outputs import Segment
from schemas.profile import CartLine, ConsentMark, OrderLine, Profile, ViewStat

if TYPE_CHECKING:
    from streams.settings import Settings

RECENT_IDS_KEPT = 64
CAMPAIGN_IDS_KEPT = 64
VIEWS_KEPT = 20
FAVORITES_KEPT = 50
#: Bounds that keep a profile small whatever a customer (or a bot) does (docs/profile.md):
#: cart lines (the oldest added goes first), refunds seen before their order (the oldest
#: goes first: its order never came), and refund ids remembered per order (a refund
#: redelivered after 32 later refunds of the same order would count again).
CART_KEPT = 200
ORPHAN_REFUNDS_KEPT = 50
REFUND_IDS_KEPT = 32
DAY = timedelta(days=1)


@dataclass(frozen=True)
class RfmPolicy:
    """The shop's RFM window and the thresholds that split high from low."""

    window_days: int = 365
    r_high_days: int = 30
    f_high_orders: int = 2
    m_high_amount: Decimal = Decimal("500")

    @classmethod
    def of(cls, settings: Settings) -> RfmPolicy:
        """The shop's RFM policy as the operator configured it."""
        return cls(
            window_days=settings.rfm_window_days,
            r_high_days=settings.r_high_days,
            f_high_orders=settings.f_high_orders,
            m_high_amount=settings.m_high_amount,
        )


_SEGMENTS: dict[tuple[bool, bool, bool], Segment] = {
    (True, True, True): "important_value",
    (True, False, True): "important_develop",
    (False, True, True): "important_keep",
    (False, False, True): "important_retain",
    (True, True, False): "general_value",
    (True, False, False): "general_develop",
    (False, True, False): "general_keep",
    (False, False, False): "general_retain",
}


def segment_of(
    recency_days: int | None, frequency: int, monetary: Decimal, policy: RfmPolicy
) -> Segment:
    """The eight classic segments; `prospect` until the first paid order."""
    if recency_days is None:
        return "prospect"
    r_high = recency_days <= policy.r_high_days
    f_high = frequency >= policy.f_high_orders
    m_high = monetary >= policy.m_high_amount
    return _SEGMENTS[(r_high, f_high, m_high)]


def id_token(event_id: str) -> str:
    """A short, fixed-size stand-in for an event id in the profile's dedupe memory (64 bits:
    a collision among one customer's latest ids is out of reach), to keep profiles small."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def fold(profile: Profile, event: Event) -> Profile:
    """The profile after one more event; the input is not changed."""
    return fold_many(profile, (event,))


def fold_many(profile: Profile, events: Iterable[Event]) -> Profile:
    """The profile after these events, each counted once however often it is delivered."""
    p = profile.model_copy(deep=True)
    for event in events:
        _apply(p, event)
    return p


def refresh(profile: Profile, now: datetime, policy: RfmPolicy) -> Profile:
    """R, F, M and segment as of `now`: orders that left the window are forgotten."""
    p = profile.model_copy(deep=True)
    rerate(p, now, policy)
    return p


def rerate(p: Profile, now: datetime, policy: RfmPolicy) -> None:
    """`refresh` in place, for a caller that owns `p` (the worker, on a profile it just read)."""
    horizon = now - timedelta(days=policy.window_days)
    # a refund seen before its order (at is None) stays until the order arrives
    if any(line.at is not None and line.at <= horizon for line in p.orders.values()):
        p.orders = {
            oid: line for oid, line in p.orders.items() if line.at is None or line.at > horizon
        }
    nets = [net for line in p.orders.values() if line.paid and (net := line.net) > 0]
    p.frequency = len(nets)
    p.monetary = sum(nets, Decimal("0"))
    p.recency_days = None if p.last_order_at is None else max((now - p.last_order_at) // DAY, 0)
    segment = segment_of(p.recency_days, p.frequency, p.monetary, policy)
    if segment != p.segment or p.segment_since is None:
        p.segment_since = now
    p.segment = segment
    p.as_of = now


def next_time_change(profile: Profile, policy: RfmPolicy) -> datetime | None:
    """The next instant at which time alone could change this customer's segment."""
    if profile.last_order_at is None and not profile.orders:
        return None  # most customers: no order yet, so only an event changes the segment
    moments: list[datetime] = []
    if profile.last_order_at is not None:
        moments.append(profile.last_order_at + (policy.r_high_days + 1) * DAY)
    window = timedelta(days=policy.window_days)
    moments.extend(line.at + window for line in profile.orders.values() if line.at is not None)
    if profile.as_of is not None:
        moments = [m for m in moments if m > profile.as_of]
    return min(moments, default=None)


@dataclass(frozen=True)
class Applied:
    """What the rules need to know about an event just folded in, beyond the new profile."""

    #: the customer's first paid order ever seen
    first_order: bool
    #: the segment before the event (the fold does not re-rate; the caller compares after it)
    segment_before: str


def apply_event(p: Profile, event: Event) -> Applied | None:
    """`fold` in place, for a caller that owns `p`; None when the event was seen before."""
    had_ordered = p.first_order_at is not None
    segment = p.segment
    if not _apply(p, event):
        return None
    first = (
        isinstance(event, OrderEvent)
        and event.status == "paid"
        and not had_ordered
        and p.first_order_at is not None
    )
    return Applied(first_order=first, segment_before=segment)


def _apply(p: Profile, event: Event) -> bool:
    """Fold one event; False when it was seen before (and nothing changed)."""
    if isinstance(event, CampaignEvent):
        return _apply_campaign(p, event)
    if isinstance(event, CustomerEvent):
        return _apply_customer(p, event)
    if isinstance(event, OrderEvent):
        if not _apply_order(p, event):
            return False
    else:
        token = id_token(event.event_id)
        if token in p.recent_event_ids:
            return False
        p.recent_event_ids.append(token)
        del p.recent_event_ids[:-RECENT_IDS_KEPT]
        if isinstance(event, CartEvent):
            _apply_cart(p, event)
        elif isinstance(event, FavoriteEvent):
            _apply_favorite(p, event)
        elif isinstance(event, BrowseEvent):
            _apply_browse(p, event)
    p.events_seen += 1
    p.first_seen_at = event.ts if p.first_seen_at is None else min(p.first_seen_at, event.ts)
    p.last_seen_at = event.ts if p.last_seen_at is None else max(p.last_seen_at, event.ts)
    if p.shop_id == "default":
        p.shop_id = event.shop_id
    return True


def _apply_campaign(p: Profile, event: CampaignEvent) -> bool:
    """A campaign selected the customer: remembered, so a re-send counts once, and nothing
    else. It is the shop's doing, not the customer's, so RFM, behaviour, `events_seen`,
    `first_seen_at`/`last_seen_at` and the shop stay as the customer's own events left them."""
    if event.event_id in p.campaign_event_ids:
        return False
    p.campaign_event_ids.append(event.event_id)
    del p.campaign_event_ids[:-CAMPAIGN_IDS_KEPT]
    return True


def _apply_customer(p: Profile, event: CustomerEvent) -> bool:
    """Member attributes: what the event says replaces what was known; a channel's consent
    changes only when the event is later than the word already held (so a late or replayed
    opt-in cannot undo a newer opt-out). Like a campaign, it is no behaviour of the
    customer's: RFM, `events_seen` and the seen times stay as they were."""
    token = id_token(event.event_id)
    if token in p.recent_event_ids:
        return False
    p.recent_event_ids.append(token)
    del p.recent_event_ids[:-RECENT_IDS_KEPT]
    if event.joined_at is not None:
        p.joined_at = event.joined_at
    if event.birthday is not None:
        p.birthday = event.birthday
    for channel, granted in (event.consent or {}).items():
        held = p.consent.get(channel)
        if held is None or event.ts > held.at or (event.ts == held.at and not granted):
            p.consent[channel] = ConsentMark(granted=granted, at=event.ts)
    return True


def _apply_order(p: Profile, event: OrderEvent) -> bool:
    """Fold an order event; False when it was seen before."""
    line = p.orders.get(event.order_id) or OrderLine()
    if event.status == "paid":
        if line.at is not None:
            return False
        line.at = event.ts
        line.amount = event.amount
        p.first_order_at = event.ts if p.first_order_at is None else min(p.first_order_at, event.ts)
        p.last_order_at = event.ts if p.last_order_at is None else max(p.last_order_at, event.ts)
        _check_out_cart(p, event)
    else:
        if event.event_id in line.refund_ids:
            return False
        line.refund_ids.append(event.event_id)
        del line.refund_ids[:-REFUND_IDS_KEPT]
        line.refunded += event.amount
    p.orders[event.order_id] = line
    if line.at is None:
        _bound_orphan_refunds(p)
    return True


def _bound_orphan_refunds(p: Profile) -> None:
    orphans = [oid for oid, line in p.orders.items() if line.at is None]
    for oid in orphans[:-ORPHAN_REFUNDS_KEPT]:  # in the order they were first seen
        del p.orders[oid]


def _check_out_cart(p: Profile, order: OrderEvent) -> None:
    """A paid order takes its items out of the cart (all of it when items are not listed)."""
    bought = {item.sku for item in order.items} if order.items else set(p.cart)
    for sku in bought:
        line = p.cart.get(sku)
        if line is not None and line.added_at <= order.ts:
            del p.cart[sku]


def _apply_cart(p: Profile, event: CartEvent) -> None:
    line = p.cart.get(event.sku)
    if line is None:
        p.cart[event.sku] = CartLine(qty=event.qty, price=event.price, added_at=event.ts)
        if len(p.cart) > CART_KEPT:
            oldest = min(p.cart, key=lambda sku: p.cart[sku].added_at)
            del p.cart[oldest]
    else:
        line.qty += event.qty
        line.price = event.price
        line.added_at = max(line.added_at, event.ts)


def _apply_favorite(p: Profile, event: FavoriteEvent) -> None:
    p.favorites[event.sku] = max(p.favorites.get(event.sku, event.ts), event.ts)
    if len(p.favorites) > FAVORITES_KEPT:
        oldest = min(p.favorites, key=lambda sku: p.favorites[sku])
        del p.favorites[oldest]


def _apply_browse(p: Profile, event: BrowseEvent) -> None:
    if not event.sku:
        p.page_views += 1
        return
    stat = p.views.get(event.sku)
    if stat is None:
        p.views[event.sku] = ViewStat(count=1, last_at=event.ts, category=event.category)
        if len(p.views) > VIEWS_KEPT:
            oldest = min(p.views, key=lambda sku: p.views[sku].last_at)
            del p.views[oldest]
    else:
        stat.count += 1
        stat.last_at = max(stat.last_at, event.ts)
        stat.category = event.category or stat.category


def fold_new(profile: Profile, events: Iterable[Event]) -> tuple[Profile, list[Event]]:
    """Like `fold_many`, also telling which events were new (the ones worth recording)."""
    p = profile.model_copy(deep=True)
    new: list[Event] = []
    for event in events:
        if _apply(p, event):
            new.append(event)
    return p, new
