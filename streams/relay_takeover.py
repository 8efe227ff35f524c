"""How a Kafka relay takes over the entries of a relay that is gone, and only of one that is.

Everything here is about one outbox stream: each partition's Kafka outbox has its own relay
group, and the heartbeats and marks below are named after the stream
(`keyspace.relay_heartbeat(stream, consumer)`, `keyspace.relay_marks(stream, consumer)`), so
they share its hash slot and the scripts below touch one slot on a Redis Cluster.

Liveness: every relay writes `{stream}:relay:heartbeat:<consumer>` with a TTL (default 10 s)
about ten times per TTL, from its own task, before it first reads the outbox. A relay whose
key has expired is gone (killed, or stalled longer than the TTL); a relay that is merely slow
— a broker taking its time, a batch waiting out a backoff — keeps its key, and its entries
stay its own however long they wait. `claim_from` moves a gone relay's pending entries in
one Lua script that first checks the heartbeat is still missing, so two heirs cannot both
take an entry and an heir cannot take one a live relay just claimed.

Where to look before sending them again: a relay that died may have sent some of its
entries without acknowledging them. Each relay keeps, in `{stream}:relay:mark:<consumer>`, a
*mark* per topic partition: an offset at or below every offset its unacknowledged messages
can have. It writes a topic's end offsets before its first send to that topic, and raises a
partition's mark past what it produced once a whole batch is acknowledged. An heir merges
the gone relay's marks into its own (the lower offset wins) before claiming, and searches
each topic from its marks to the end: the whole span since the entries were first read,
however much else was written since, without relying on ListOffsets by timestamp (wrong on
the embedded broker). A topic with no mark was never sent to: nothing to look for there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import redis.asyncio as aioredis

from streams import keyspace
from streams.relay_errors import raise_if_cancelled

#: topic -> partition -> first offset that may hold one of the relay's unacknowledged
#: messages. A topic absent: never sent to. A partition absent: from its beginning.
Marks = dict[str, dict[int, int]]


heartbeat_key = keyspace.relay_heartbeat
mark_key = keyspace.relay_marks


# KEYS: stream, the gone relay's heartbeat; ARGV: group, gone relay, heir, how many at most
_CLAIM = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[4]), ARGV[2])
if #pending == 0 then return 0 end
local ids = {}
for i, entry in ipairs(pending) do ids[i] = entry[1] end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, unpack(ids))
return #ids
"""

# KEYS: stream, the gone relay's heartbeat, its marks; ARGV: group, gone relay
_FORGET = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
redis.call('DEL', KEYS[3])
return 1
"""

log = logging.getLogger(__name__)

#: Entries moved per script call (Lua's unpack has a limit); `claim_from` loops.
CLAIM_CHUNK = 1000


class Heartbeat:
    """A relay's proof of life, rewritten ten times per TTL by `keep` (its own task)."""

    def __init__(self, client: aioredis.Redis, stream: str, consumer: str, ttl_s: float) -> None:
        self.client = client
        self.stream = stream
        self.consumer = consumer
        self.ttl_ms = max(int(ttl_s * 1000), 1)
        self.every_s = max(ttl_s / 10, 0.01)
        #: set when the key had expired between two beats (the relay stalled for over the
        #: TTL, or Redis lost it): others may have taken the relay's entries; it resets this
        self.lapsed = False
        self._last = 0.0

    async def beat(self, due_only: bool = False) -> None:
        now = time.monotonic()
        if due_only and now - self._last < self.every_s:
            return
        key = heartbeat_key(self.stream, self.consumer)
        before = await self.client.set(key, b"1", px=self.ttl_ms, get=True)
        if before is None and self._last:
            self.lapsed = True
            log.warning(
                "relay %s: its heartbeat lapsed for over %.1f s; other relays may have taken"
                " its entries, it looks on the topic for the ones left before sending them",
                self.consumer,
                self.ttl_ms / 1000,
            )
        self._last = now

    async def keep(self) -> None:
        """Beats until cancelled; a failed beat is logged once and tried again."""
        failing = False
        while True:
            raise_if_cancelled()
            try:
                await self.beat()
                if failing:
                    log.warning("relay %s: heartbeat written again", self.consumer)
                failing = False
            except Exception as exc:  # noqa: BLE001 - tried again on the next beat
                if not failing:
                    log.warning("relay %s: heartbeat failed (%s), retrying", self.consumer, exc)
                failing = True
            await asyncio.sleep(self.every_s)

    async def stop(self) -> None:
        """On a clean stop: what the relay leaves pending is taken over at once."""
        try:
            await self.client.delete(heartbeat_key(self.stream, self.consumer))
        except Exception as exc:  # noqa: BLE001 - it expires by itself
            log.warning("relay %s: heartbeat not removed (%s), it expires", self.consumer, exc)


async def gone_relays(client: aioredis.Redis, stream: str, group: str, me: str) -> list[str]:
    """The group's consumers other than `me` whose heartbeat has stopped."""
    consumers = await client.xinfo_consumers(stream, group)
    names = [_text(c["name"]) for c in consumers]
    names = [n for n in names if n != me]
    if not names:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.exists(heartbeat_key(stream, name))
        flags = await pipe.execute()
    return [n for n, flag in zip(names, flags, strict=True) if not flag]


async def take_over_gone(
    client: aioredis.Redis, stream: str, group: str, me: str, mine: Marks | None
) -> tuple[int, Marks | None]:
    """Takes every pending entry of the gone relays; returns how many, and `mine` merged with
    their marks (written before their entries move; None when `mine` is None: no searching)."""
    moved = 0
    for gone in await gone_relays(client, stream, group, me):
        if await forget(client, stream, group, gone):
            continue  # nothing was pending
        # their marks become ours before their entries do: whoever holds the entries next
        # must search from where the gone relay may have sent them
        theirs = await load_marks(client, stream, gone)
        if theirs and mine is not None:
            mine = merge_marks(mine, theirs)
            await client.hset(mark_key(stream, me), mapping=encode_marks(mine))
        n = await claim_from(client, stream, group, gone, me)
        if n:
            log.warning(
                "relay %s took over %d entries of relay %s, whose heartbeat stopped", me, n, gone
            )
        moved += n
    return moved, mine


async def claim_from(client: aioredis.Redis, stream: str, group: str, gone: str, heir: str) -> int:
    """Moves every pending entry of `gone` to `heir`, unless `gone` is heartbeating again."""
    total = 0
    while True:
        moved = int(
            await client.eval(
                _CLAIM, 2, stream, heartbeat_key(stream, gone), group, gone, heir, CLAIM_CHUNK
            )
        )
        total += moved
        if moved < CLAIM_CHUNK:
            return total


async def forget(client: aioredis.Redis, stream: str, group: str, gone: str) -> bool:
    """Removes a gone relay with nothing pending from the group, with its marks."""
    keys = (stream, heartbeat_key(stream, gone), mark_key(stream, gone))
    done = await client.eval(_FORGET, 3, *keys, group, gone)
    return bool(done)


async def load_marks(client: aioredis.Redis, stream: str, consumer: str) -> Marks:
    return decode_marks(await client.hgetall(mark_key(stream, consumer)))


def merge_marks(mine: Marks, theirs: Marks) -> Marks:
    """Marks covering both relays' unacknowledged messages: the lower offset wins."""
    merged: Marks = {topic: dict(parts) for topic, parts in mine.items()}
    for topic, parts in theirs.items():
        if topic not in merged:
            merged[topic] = dict(parts)
            continue
        ours = merged[topic]
        for p in set(ours) | set(parts):
            ours[p] = min(ours.get(p, 0), parts.get(p, 0))
    return merged


def advance_marks(marks: Marks, produced: Mapping[tuple[str, int], int]) -> Marks:
    """Marks once everything up to `produced` (highest offset per partition) is acknowledged."""
    advanced: Marks = {topic: dict(parts) for topic, parts in marks.items()}
    for (topic, p), offset in produced.items():
        parts = advanced.setdefault(topic, {})
        parts[p] = max(parts.get(p, 0), offset + 1)
    return advanced


def encode_marks(marks: Marks) -> dict[str, int]:
    """Hash fields `topic|partition` -> offset, and `topic|*` -> 0 so a topic is never lost."""
    fields: dict[str, int] = {}
    for topic, parts in marks.items():
        fields[f"{topic}|*"] = 0
        for p, offset in parts.items():
            fields[f"{topic}|{p}"] = offset
    return fields


def decode_marks(fields: Mapping[bytes | str, bytes | str]) -> Marks:
    marks: Marks = {}
    for name, value in fields.items():
        topic, _, part = _text(name).rpartition("|")
        parts = marks.setdefault(topic, {})
        if part != "*":
            parts[int(part)] = int(value)
    return marks


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
