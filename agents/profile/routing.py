"""Which customer each message of a batch is for, and where it is applied: an id linked to
another customer is regrouped under that customer (`Redirects`); on a Redis Cluster a
message for a customer of another partition's slot is forwarded there, and a link across
slots is a handover (agents/identity_handover.py). Then what a link does to the unit: the
old id left as a redirect stub, the two customers merged (agents/identity.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Protocol

from agents.customer_step import Customer, Step, wake_of
from agents.identity import MAX_REDIRECTS, Merge, merge, redirect_stub
from agents.identity_handover import absorb as handover_absorb
from agents.identity_handover import as_message as handover_message
from agents.identity_handover import release as handover_release
from agents.identity_handover import verified as handover_verified
from agents.profile.incoming import Incoming
from agents.profile.rows import profile_row
from agents.rules.state import CustomerRuleState
from schemas.events import IdentityEvent
from schemas.outputs import SegmentChange
from schemas.profile import Profile, from_stored, stored
from streams import keyspace
from streams.outbox import kafka_message
from streams.redis_store import Unit

if TYPE_CHECKING:
    from agents.profile.effects import Batch

#: linked ids a worker remembers (the oldest are forgotten: found again from their stubs)
REDIRECTS_KEPT = 100_000


class Shop(Protocol):
    """What routing a link needs to know of the shop."""

    @property
    def partitions(self) -> int: ...

    @property
    def privacy_key(self) -> bytes: ...

    @property
    def cluster(self) -> bool: ...


class Redirected(Exception):  # noqa: N818 - a signal inside the keeper, never raised out
    """Customers of a unit turned out to be redirects: read the batch again under their
    targets."""

    def __init__(self, redirects: dict[str, str]) -> None:
        super().__init__(redirects)
        self.redirects = redirects


@dataclass
class Redirects:
    """Ids linked to another customer, as learnt from their redirect stubs in Redis (a link
    is never undone, so what is learnt stays true)."""

    known: dict[str, str] = field(default_factory=dict)

    def resolved(self, customer_id: str) -> str:
        """The customer an id is now (itself unless it was linked to another)."""
        for _ in range(MAX_REDIRECTS):
            target = self.known.get(customer_id)
            if target is None:
                return customer_id
            customer_id = target
        return customer_id

    def learn(self, found: dict[str, str]) -> None:
        self.known.update(found)
        while len(self.known) > REDIRECTS_KEPT:  # forgotten ones are found again
            del self.known[next(iter(self.known))]


@dataclass
class Routes:
    """A batch sorted by where each message goes."""

    #: customer id -> their events, applied in this unit
    by_customer: dict[str, list[Incoming]] = field(default_factory=lambda: defaultdict(list))
    #: identity links (or steps of a handover) applied in this unit
    links: list[Incoming] = field(default_factory=list)
    #: on a cluster: id(item) -> (key, message) of what goes to another partition's slot
    away: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    #: id(item) -> why it is dead-lettered
    refused: dict[int, str] = field(default_factory=dict)

    def customers(self, redirects: Redirects) -> list[str]:
        """The customers the unit reads: those with events, and both parties of each link."""
        parties = [
            redirects.resolved(cid)
            for i in self.links
            if isinstance(i.event, IdentityEvent)
            for cid in link_parties(i.event)
        ]
        return list(dict.fromkeys([*self.by_customer, *parties]))


def route(items: Sequence[Incoming], partition: int, shop: Shop, redirects: Redirects) -> Routes:
    """Sort one partition's batch: by customer (as they are now), links, away, refused."""
    routes = Routes()
    for item in items:
        event = item.event
        if isinstance(event, IdentityEvent):
            found = route_link(item, event, partition, shop, redirects) if shop.cluster else None
            if found is None:
                routes.links.append(item)
            elif isinstance(found, str):
                routes.refused[id(item)] = found
            else:
                routes.away[id(item)] = found
        elif event is not None:
            customer_id = redirects.resolved(event.customer_id)
            if shop.cluster and keyspace.home(customer_id, shop.partitions) != partition:
                routes.away[id(item)] = (customer_id, as_customers(item, customer_id))
            else:
                routes.by_customer[customer_id].append(item)
    return routes


def stubs(unit: Unit, customers: Iterable[str], partitions: int) -> dict[str, str]:
    """The customers of the open unit that are redirects, not yet known as such."""
    found = {}
    for cid in customers:
        raw = unit.values.get(keyspace.profile(cid, partitions))
        if raw and b'"merged_into":"' in raw:
            target = from_stored(raw).merged_into
            if target is not None:
                found[cid] = target
    return found


def route_link(
    item: Incoming, event: IdentityEvent, partition: int, shop: Shop, redirects: Redirects
) -> tuple[str, bytes] | str | None:
    """On a cluster, where a link (or a step of its handover, agents/identity_handover.py)
    goes: None, applied in this unit; (key, message), sent on to another partition; a
    string, dead-lettered with that reason."""
    key = shop.privacy_key
    handover = event.handover
    if handover is not None and not handover_verified(event, key):
        return "identity handover not signed by this shop's ecrm (storefronts may not send one)"
    into, old = redirects.resolved(event.customer_id), redirects.resolved(event.previous_id)
    here = partial(_is_home, partitions=shop.partitions, partition=partition)
    if handover is None:
        if not here(into):
            return into, item.value  # the customer's partition starts it
        if here(old):
            return None  # both in this slot: merged here
        asked = handover_release(event.model_copy(update={"customer_id": into}), old, key)
        return old, handover_message(asked)
    if handover.stage == "release":
        if old == into:  # linked already (a repeated link, or a chain that came back)
            done = handover_absorb(event, into, None, None, key, "already_linked")
            return into, handover_message(done)
        if not here(old):
            return old, handover_message(handover_release(event, old, key))
        return None  # the previous id is handed over here
    if not here(into):  # absorb, for a customer linked on meanwhile
        moved = handover_absorb(
            event, into, _raw(handover.profile), _raw(handover.rules), key, handover.outcome
        )
        return into, handover_message(moved)
    return None


def link(batch: Batch, item: Incoming, now: datetime) -> None:
    """An identity link: the previous id's customer merged into the customer's, the old
    id left as a redirect, the merge recorded (`identity_merges`). On a cluster, a step of
    a link across slots instead (`release`, `absorb`; agents/identity_handover.py)."""
    event = item.event
    assert isinstance(event, IdentityEvent)
    if event.handover is not None:
        if event.handover.stage == "release":
            release(batch, item, event, now)
        else:
            absorb(batch, item, event, now)
        return
    keeper = batch.keeper
    old_id = resolved_in(batch, event.previous_id)
    into_id = resolved_in(batch, event.customer_id)
    at = min(event.ts, now)
    batch.stats["events"] += 1
    if old_id == into_id:
        already_linked(batch, into_id, event, at)
        return
    merged = merge(
        batch.customer(into_id), batch.customer(old_id), at, keeper.policy, event.event_id
    )
    leave_stub(batch, old_id, merged.stub)
    home = (
        item.partition
        if event.customer_id == into_id
        else keyspace.home(into_id, keeper.partitions)
    )
    took_merge(batch, merged, home, event, at)


def release(batch: Batch, item: Incoming, event: IdentityEvent, now: datetime) -> None:
    """The previous id's partition: its profile becomes a redirect to the customer, and
    what it held goes to the customer's partition to be merged there (`absorb`)."""
    keeper = batch.keeper
    old_id, into_id = resolved_in(batch, event.previous_id), event.customer_id
    at = min(event.ts, now)
    old = batch.customer(old_id)
    state = (stored(old.profile), old.rules.model_dump_json().encode())
    leave_stub(batch, old_id, redirect_stub(old.profile, into_id, at))
    moved = handover_absorb(event, into_id, *state, keeper.privacy_key)
    batch.unit.add(kafka_message(item.topic, into_id, handover_message(moved)))
    batch.stats["identity_handovers"] += 1


def absorb(batch: Batch, item: Incoming, event: IdentityEvent, now: datetime) -> None:
    """The customer's partition: the previous id's state, handed over, merged in as a
    local link merges it."""
    handover = event.handover
    assert handover is not None
    into_id = resolved_in(batch, event.customer_id)
    at = min(event.ts, now)
    batch.stats["events"] += 1
    if handover.outcome == "already_linked" or handover.profile is None:
        already_linked(batch, into_id, event, at)
        return
    old_rules = (
        CustomerRuleState.model_validate_json(handover.rules)
        if handover.rules
        else CustomerRuleState(customer_id=event.previous_id)
    )
    old = Customer(from_stored(handover.profile.encode()), old_rules, None)
    merged = merge(batch.customer(into_id), old, at, batch.keeper.policy, event.event_id)
    took_merge(batch, merged, item.partition, event, at)


def already_linked(batch: Batch, into_id: str, event: IdentityEvent, at: datetime) -> None:
    batch.merges.append(
        {
            "customer_id": into_id,
            "merged_id": event.previous_id,
            "event_id": event.event_id,
            "merged_at": at,
            "outcome": "already_linked",
        }
    )


def leave_stub(batch: Batch, old_id: str, stub: Profile) -> None:
    """The old id becomes a redirect to `stub.merged_into`: no rule state, no wake time."""
    assert stub.merged_into is not None
    batch.customers.write_stub(old_id, stub)
    batch.linked[old_id] = stub.merged_into
    # the old id's last snapshot would keep its cart and views in profiles_latest
    batch.snapshots.append(profile_row(stub, batch.written_at))


def took_merge(batch: Batch, merged: Merge, home: int, event: IdentityEvent, at: datetime) -> None:
    """The customer with both histories kept, its segment move and the merge recorded."""
    into_id = merged.customer.customer_id
    step = Step(merged.customer, rules_changed=True)
    step.wake = wake_of(merged.customer, batch.ctx)
    batch.took(step, home)
    before, after = merged.moved["segment_before"], merged.moved["segment_after"]
    if before != after:  # e.g. a guest order came along
        batch.changes.append(SegmentChange.of(into_id, before, after, at, "event", event.event_id))
    batch.merges.append({**merged.moved, "outcome": "merged"})
    batch.stats["identity_merges"] += 1


def resolved_in(batch: Batch, customer_id: str) -> str:
    for _ in range(MAX_REDIRECTS):
        target = batch.linked.get(customer_id) or batch.keeper.redirects.known.get(customer_id)
        if target is None:
            return customer_id
        customer_id = target
    return customer_id


def _is_home(customer_id: str, *, partitions: int, partition: int) -> bool:
    return keyspace.home(customer_id, partitions) == partition


def link_parties(event: IdentityEvent) -> tuple[str, ...]:
    """The customers a link's unit reads: both ids; one for a step of a handover."""
    if event.handover is None:
        return (event.previous_id, event.customer_id)
    return (event.previous_id,) if event.handover.stage == "release" else (event.customer_id,)


def as_customers(item: Incoming, customer_id: str) -> bytes:
    """The message that brings an event to `customer_id`'s partition: as it came, or, for a
    linked id's event, as the customer's (their partition knows nothing of the link)."""
    event = item.event
    assert event is not None
    if event.customer_id == customer_id:
        return item.value
    return event.model_copy(update={"customer_id": customer_id}).model_dump_json().encode()


def _raw(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None
