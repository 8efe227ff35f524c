"""Erasure (PIPL art. 47, GDPR art. 17) and access (art. 45 / art. 15) for one customer.

`erase_customer` removes everything Redis holds of the customer in one MULTI — every key
`streams/keyspace.py` lists for a customer, their place in the due sets — and in the same
MULTI puts them on the erasure list (keyed hash of the id, `schemas/privacy.py`) and queues
the ClickHouse deletion on the outbox, where the sink carries it out after every row queued
before it (`streams/sink.py`). From that commit on, the workers drop the customer's events,
later or replayed, as dead letters with reason `erased` and no payload: a batch being decided
at that moment read the erasure key under WATCH, so it starts over and drops them too. The
relay drops messages for them still waiting in the Kafka outbox.

`export_customer` gathers what ecrm holds of a customer, for an access request.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from schemas.privacy import erasure_token
from schemas.profile import Profile
from streams import keyspace
from streams.clickhouse import ClickHouse
from streams.customer_data import customer_rows
from streams.outbox import ErasureRequest, erasure_entry
from streams.settings import Settings


@dataclass(frozen=True)
class Erasure:
    """What `erase_customer` did in Redis; the ClickHouse part follows through the sink."""

    erasure_id: str
    requested_at: datetime
    keys_removed: int


def erase_customer(
    client: redis.Redis, settings: Settings, customer_id: str, operator: str, now: datetime
) -> Erasure:
    """Remove the customer from Redis and keep them erased, in one MULTI (module docstring)."""
    token = erasure_token(customer_id, settings.privacy_key())
    erasure_id = uuid.uuid4().hex
    keys = keyspace.customer_keys(customer_id)
    marker = json.dumps({"erasure_id": erasure_id, "at": now.astimezone(UTC).isoformat()})
    entry = erasure_entry(ErasureRequest(customer_id, erasure_id, operator, now))
    with client.pipeline(transaction=True) as tx:
        tx.set(keyspace.erased(token), marker)
        for key in keys:
            tx.delete(key)
        for zset, member in keyspace.customer_members(customer_id, settings.partitions):
            tx.zrem(zset, member)
        tx.xadd(entry.stream, entry.fields)
        tx.hincrby(keyspace.STATS, "erasures", 1)
        results = tx.execute()
    removed = sum(int(n) for n in results[1 : 1 + len(keys)])
    return Erasure(erasure_id, now, removed)


def is_erased(client: redis.Redis, settings: Settings, customer_id: str) -> bool:
    return bool(client.exists(keyspace.erased(erasure_token(customer_id, settings.privacy_key()))))


def erasure_done(client: redis.Redis, erasure_id: str) -> dict[str, Any] | None:
    """What the sink deleted for an erasure (rows per table, when), once it has."""
    raw = client.hget(keyspace.ERASURES_DONE, erasure_id)
    return None if raw is None else dict(json.loads(raw))


def wait_done(client: redis.Redis, erasure_id: str, timeout_s: float) -> dict[str, Any] | None:
    """`erasure_done`, waiting for it up to `timeout_s` (a sink must be running)."""
    deadline = time.monotonic() + timeout_s
    while (done := erasure_done(client, erasure_id)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return done


def export_customer(
    client: redis.Redis, settings: Settings, customer_id: str, ch: ClickHouse | None
) -> dict[str, Any]:
    """Everything ecrm holds of the customer: the live profile and rule state from Redis, and
    (with `ch`) their rows in every ClickHouse table."""
    profile = client.get(keyspace.profile(customer_id))
    rules = client.get(keyspace.rule_state(customer_id))
    data: dict[str, Any] = {
        "customer_id": customer_id,
        "erased": is_erased(client, settings, customer_id),
        "profile": (
            Profile.model_validate_json(profile).model_dump(mode="json") if profile else None
        ),
        "rule_state": json.loads(rules) if rules else None,
    }
    if ch is not None:
        data["clickhouse"] = customer_rows(ch, customer_id)
    return data
