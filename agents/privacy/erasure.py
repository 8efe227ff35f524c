"""Erasure (PIPL art. 47, GDPR art. 17) and access (art. 45 / art. 15) for one customer.

`erase_customer` removes everything Redis holds of the customer in one MULTI — every key
`streams/keyspace.py` lists for a customer, their place in their home partition's due set;
all of it carries the home partition's hash tag, so on a Redis Cluster it is one slot — and
in the same MULTI puts them on the erasure list (keyed hash of the id, `schemas/privacy.py`) and queues
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

from schemas.privacy import erasure_token
from schemas.profile import Profile
from streams import keyspace
from streams.clickhouse import ClickHouse
from streams.customer_data import customer_rows
from streams.outbox import ErasureRequest, erasure_entry
from streams.redis_client import SyncRedis
from streams.settings import Settings


@dataclass(frozen=True)
class Erasure:
    """What `erase_customer` did in Redis; the ClickHouse part follows through the sink."""

    erasure_id: str
    requested_at: datetime
    keys_removed: int
    #: the customer's home partition: where the sink reports the erasure done
    partition: int = 0


def erase_customer(
    client: SyncRedis, settings: Settings, customer_id: str, operator: str, now: datetime
) -> Erasure:
    """Remove the customer from Redis and keep them erased, in one MULTI (module docstring)."""
    token = erasure_token(customer_id, settings.privacy_key())
    erasure_id = uuid.uuid4().hex
    home = keyspace.home(customer_id, settings.partitions)
    keys = keyspace.customer_keys(customer_id, settings.partitions)
    marker = json.dumps({"erasure_id": erasure_id, "at": now.astimezone(UTC).isoformat()})
    entry = erasure_entry(ErasureRequest(customer_id, erasure_id, operator, now))
    with client.pipeline(transaction=True) as tx:
        tx.set(keyspace.erased(token, home), marker)
        for key in keys:
            tx.delete(key)
        tx.zrem(keyspace.wakes(home), customer_id)
        tx.xadd(entry.stream(home), entry.fields)
        tx.hincrby(keyspace.stats(home), "erasures", 1)
        results = tx.execute()
    if not settings.redis_is_cluster:
        # events keyed otherwise than by the id (a storefront's own partitioner) can have
        # put them in another partition's due set; a sweep there finds the erasure anyway
        others = [keyspace.wakes(p) for p in range(settings.partitions) if p != home]
        with client.pipeline(transaction=False) as pipe:
            for zset in others:
                pipe.zrem(zset, customer_id)
            pipe.execute()
    removed = sum(int(n) for n in results[1 : 1 + len(keys)])
    return Erasure(erasure_id, now, removed, home)


def is_erased(client: SyncRedis, settings: Settings, customer_id: str) -> bool:
    token = erasure_token(customer_id, settings.privacy_key())
    return bool(
        client.exists(keyspace.erased(token, keyspace.home(customer_id, settings.partitions)))
    )


def erasure_done(client: SyncRedis, erasure: Erasure) -> dict[str, Any] | None:
    """What the sink deleted for an erasure (rows per table, when), once it has."""
    raw = client.hget(keyspace.erasures_done(erasure.partition), erasure.erasure_id)
    return None if raw is None else dict(json.loads(raw))


def wait_done(client: SyncRedis, erasure: Erasure, timeout_s: float) -> dict[str, Any] | None:
    """`erasure_done`, waiting for it up to `timeout_s` (a sink must be running)."""
    deadline = time.monotonic() + timeout_s
    while (done := erasure_done(client, erasure)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return done


def export_customer(
    client: SyncRedis, settings: Settings, customer_id: str, ch: ClickHouse | None
) -> dict[str, Any]:
    """Everything ecrm holds of the customer: the live profile and rule state from Redis, and
    (with `ch`) their rows in every ClickHouse table."""
    profile = client.get(keyspace.profile(customer_id, settings.partitions))
    rules = client.get(keyspace.rule_state(customer_id, settings.partitions))
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
