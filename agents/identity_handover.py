"""A link between ids whose keys live in different slots of a Redis Cluster, in three units.

On a cluster a unit may touch one partition's slot only (streams/keyspace.py), and an
anonymous id's keys live in its home partition, the customer's in theirs. So a link
`previous_id → customer_id` whose ids have different homes is carried out as messages on
`ecrm.identities`, each applied exactly once by its partition's unit (the Kafka outbox, the
watermarks):

1. The link, at the customer's partition: a signed `release` goes to the previous id's.
2. `release`, at the previous id's partition: its profile becomes a redirect stub to the
   customer (later events of that id are forwarded to the customer), and a signed `absorb`
   carrying the profile and rule state it had goes to the customer's partition.
3. `absorb`, at the customer's partition: the state is merged in as a local link merges it
   (agents/identity.py), and the merge recorded.

Between 1 and 2 the previous id's events still fold into it, and are handed over at 2; after
2 they go to the customer. Both steps are signed with the shop's privacy key, so only ecrm's
own workers can hand state over: one a storefront forged is dead-lettered.
"""

from __future__ import annotations

import hashlib
import hmac

import orjson

from schemas.events import Handover, IdentityEvent


def _digest(event: IdentityEvent, handover: Handover, key: bytes) -> str:
    body = orjson.dumps(
        [
            event.event_id,
            event.customer_id,
            event.previous_id,
            handover.stage,
            handover.profile,
            handover.rules,
            handover.outcome,
        ]
    )
    return hmac.new(key, b"handover\x00" + body, hashlib.sha256).hexdigest()


def signed(event: IdentityEvent, handover: Handover, key: bytes) -> IdentityEvent:
    """`event` carrying `handover`, signed."""
    unsigned = event.model_copy(update={"handover": handover.model_copy(update={"signature": ""})})
    signature = _digest(unsigned, handover, key)
    return event.model_copy(
        update={"handover": handover.model_copy(update={"signature": signature})}
    )


def verified(event: IdentityEvent, key: bytes) -> bool:
    """The handover an event carries was signed by ecrm (with this shop's key)."""
    handover = event.handover
    if handover is None or not handover.signature:
        return False
    return hmac.compare_digest(handover.signature, _digest(event, handover, key))


def release(link: IdentityEvent, previous_id: str, key: bytes) -> IdentityEvent:
    """Step 1: the previous id's partition is asked to hand `previous_id` over."""
    moved = link.model_copy(update={"previous_id": previous_id})
    return signed(moved, Handover(stage="release"), key)


def absorb(
    link: IdentityEvent,
    customer_id: str,
    profile: bytes | None,
    rules: bytes | None,
    key: bytes,
    outcome: str = "merged",
) -> IdentityEvent:
    """Step 2's message: the previous id's state, for the customer's partition."""
    moved = link.model_copy(update={"customer_id": customer_id})
    handover = Handover(
        stage="absorb",
        profile=profile.decode() if profile is not None else None,
        rules=rules.decode() if rules is not None else None,
        outcome=outcome,  # type: ignore[arg-type]
    )
    return signed(moved, handover, key)


def as_message(event: IdentityEvent) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()
