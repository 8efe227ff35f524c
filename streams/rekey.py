"""Moves a Redis written by an ecrm before partition hash tags to today's names, once.

Up to this layout, keys had no hash tag (`ecrm:profiles:c1`, `ecrm:due:3`, `ecrm:stats`,
`ecrm:outbox`, a budget as a JSON string). A worker that starts on such a Redis renames
them before it reads anything (`upgrade`), so a shop upgrading keeps its profiles, rule
state, member ledgers, erasures, watermarks, counters and undelivered outbox entries (the
streams keep their consumer groups and pending entries through RENAME). One server only: a
Redis Cluster is new to ecrm, so nothing there predates the tags.

The erasure list was keyed by the keyed hash of an id, from which no partition can be told:
each marker is copied to every partition, so whichever partition a customer's events come
home to drops them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson

from streams import keyspace

log = logging.getLogger(__name__)

P = keyspace.PREFIX
#: Set once the layout is today's (the value: its version); nothing is scanned after.
LAYOUT = f"{P}layout"
VERSION = b"2"
#: Held while one process moves the keys; another waits for LAYOUT instead.
LOCK = f"{P}layout:lock"


def upgrade(client: Any, partitions: int) -> Counter[str]:
    """Rename every key of the untagged layout (a synchronous client of one server); returns
    how many of each kind moved. Idempotent, and a no-op once LAYOUT says so."""
    moved: Counter[str] = Counter()
    if client.get(LAYOUT) == VERSION:
        return moved
    if not client.set(LOCK, b"1", nx=True, ex=600):
        log.info("another process is moving the keys to the tagged layout")
        return moved
    try:
        for name in _legacy(client):
            kind = _move(client, name, partitions)
            if kind:
                moved[kind] += 1
        client.set(LAYOUT, VERSION)
    finally:
        client.delete(LOCK)
    if moved:
        log.warning(
            "moved Redis keys to the partition-tagged layout: %s",
            ", ".join(f"{n} {kind}" for kind, n in sorted(moved.items())),
        )
    return moved


def _legacy(client: Any) -> Iterator[str]:
    for raw in client.scan_iter(match=f"{P}*", count=1000):
        name = raw.decode()
        if not name.startswith(f"{P}{{") and name not in (LAYOUT, LOCK):
            yield name


def _move(client: Any, name: str, partitions: int) -> str | None:
    rest = name[len(P) :]
    head, _, tail = rest.partition(":")
    if head in ("profiles", "rules", "member") and tail:
        target = {
            "profiles": keyspace.profile,
            "rules": keyspace.rule_state,
            "member": keyspace.member,
        }[head](tail, partitions)
        return _rename(client, name, target, head)
    if head == "due" and tail.isdigit():
        return _rename(client, name, keyspace.wakes(int(tail)), "wake sets")
    if head == "offset":
        cluster, topic, partition = _offset_parts(tail)
        if partition is not None:
            return _rename(client, name, keyspace.offset(cluster, topic, partition), "watermarks")
        return None
    if head == "erased" and tail:
        value = client.get(name)
        if value is not None:
            for p in range(partitions):
                client.set(keyspace.erased(tail, p), value)
        client.delete(name)
        return "erasure markers"
    if rest == "erasures:done":
        done = client.hgetall(name)
        for p in range(partitions):
            if done:
                client.hset(keyspace.erasures_done(p), mapping=done)
        client.delete(name)
        return "erasure reports"
    if rest in ("stats", "stats:rules"):
        target = keyspace.stats(0) if rest == "stats" else keyspace.rule_stats(0)
        for field, value in client.hgetall(name).items():
            client.hincrby(target, field, int(value))
        client.delete(name)
        return "counters"
    if head == "budget":
        return _budget(client, name)
    streams = {
        "outbox": keyspace.clickhouse_outbox(0),
        "outbox:kafka": keyspace.kafka_outbox(0),
    }
    for old, new in streams.items():
        if rest == old:
            return _rename(client, name, new, "outbox streams")
        for suffix in (":rejects", ":groups"):
            if rest == old + suffix:
                return _rename(client, name, new + suffix, "outbox streams")
    if rest == "relay:rejects":
        return _rename(client, name, keyspace.relay_rejects(keyspace.kafka_outbox(0)), "relay")
    if rest == "relay:stats":
        target = keyspace.relay_stats(keyspace.kafka_outbox(0))
        for field, value in client.hgetall(name).items():
            client.hincrby(target, field, int(value))
        client.delete(name)
        return "relay"
    if rest.startswith(("relay:heartbeat:", "relay:mark:")):
        client.delete(name)  # a relay's own bookkeeping, started afresh
        return "relay"
    return None  # another program's, or a name that never needed a tag (worker counters)


def _offset_parts(tail: str) -> tuple[str, str, int | None]:
    cluster, _, rest = tail.partition(":")
    topic, _, partition = rest.rpartition(":")
    return cluster, topic, int(partition) if partition.isdigit() and topic else None


def _rename(client: Any, name: str, target: str, kind: str) -> str:
    if client.exists(target):
        log.error("not moving %s: %s exists already (left in place)", name, target)
        return f"{kind} left (target exists)"
    client.rename(name, target)
    return kind


def _budget(client: Any, name: str) -> str | None:
    """A budget written as JSON `{"count", "value"}` becomes the booking hash."""
    if client.type(name) != b"string":
        return None  # already a booking hash (same name)
    raw = client.get(name)
    ttl = client.pttl(name)
    data = orjson.loads(raw)
    scaled = Decimal(str(data.get("value", "0"))) * keyspace.BUDGET_VALUE_SCALE
    value = int(scaled.to_integral_value())
    with client.pipeline(transaction=True) as tx:
        tx.delete(name)
        tx.hset(name, mapping={"count": int(data.get("count", 0)), "value": value})
        if ttl and ttl > 0:
            tx.pexpire(name, ttl)
        tx.execute()
    return "budgets"
