"""Relays Kafka-bound messages (segment changes, dead letters, actions) from a Redis outbox.

Agents never send to Kafka directly: a message is written to its partition's Kafka outbox
(`keyspace.kafka_outbox(p)`) in the same MULTI as the state that caused it, so it can neither
be lost nor sent for a change that was never committed. The relay sends and then acknowledges.

One `KafkaRelay` drains one outbox stream; a worker runs one per partition (`run_relays`).
Everything a relay writes — its group, heartbeats, marks, rejects and counters — is named
after its stream (streams/keyspace.py) and lives in the stream's slot, so each MULTI below
touches one slot on a Redis Cluster; there `client` must be a connection to the node that
serves the stream (`PartitionClients.get(p)`), and `reconnect` finds it again after a failover.

Each message reaches its topic once, with no idempotent or transactional producer: whenever
the relay holds entries that may already be on the topic — taken over from a relay that is
gone, or left unacknowledged by a send that failed (a timeout may hide a success) — it first
looks for them on the topic from its marks (`streams/relay_takeover.py`) and sends only the
ones not found. Entries are taken over only from a relay whose heartbeat stopped, never from
one that is merely slow.

The relay survives every error (`run`): a message too large for Kafka is moved to the
rejects stream with its reason (`streams/relay_rejects.py`), and anything else is logged
with the entry it concerns and tried again after a growing pause (`streams/relay_errors.py`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
import redis.asyncio as aioredis

from schemas.privacy import erasure_token
from streams import keyspace
from streams.relay_errors import (
    Entry,
    UnsentEntries,
    log_failure,
    next_delay,
    raise_if_cancelled,
    refusal,
    waits_for,
)
from streams.relay_rejects import reject_fields
from streams.relay_tail import Message
from streams.relay_takeover import (
    Heartbeat,
    Marks,
    advance_marks,
    encode_marks,
    load_marks,
    mark_key,
    take_over_gone,
)

RELAY_GROUP = "kafka-relay"
#: Kafka's default largest message (`max.message.bytes`, the producer's `max.request.size`).
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576

log = logging.getLogger(__name__)

Send = Callable[[str, bytes | None, bytes], Awaitable[Any]]


class Tail(Protocol):
    """What the relay needs to read of a topic (streams/relay_tail.py's TopicTail)."""

    async def end_offsets(self, topic: str) -> dict[int, int]: ...

    async def already_sent(self, messages: list[Message], since: Marks) -> set[Message]: ...

    async def close(self) -> None: ...


class KafkaRelay:
    """Drains the Kafka outbox through `send` (which returns once the broker has the message,
    or returns an awaitable that does). Without a `tail` it cannot look for messages already
    sent, and a message whose send failed may reach its topic twice."""

    def __init__(
        self,
        client: aioredis.Redis,
        send: Send,
        *,
        stream: str,
        tail: Tail | None = None,
        consumer: str | None = None,
        batch: int = 500,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        heartbeat_ttl_s: float = 10.0,
        retry_max_s: float = 30.0,
        topics: frozenset[str] | None = None,
        privacy_key: bytes | None = None,
        partitions: int = 1,
        lookup: Any = None,
        reconnect: Callable[[], Awaitable[aioredis.Redis]] | None = None,
    ) -> None:
        self.client = client
        self.send = send
        self.tail = tail
        self.stream = stream
        # unique per process and relay: a restarted relay must not inherit a dead one's entries
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.batch = batch
        self.max_message_bytes = max_message_bytes
        self.heartbeat = Heartbeat(client, stream, self.consumer, heartbeat_ttl_s)
        self.retry_max_s = retry_max_s
        self.rejects = keyspace.relay_rejects(stream)
        self.stats = keyspace.relay_stats(stream)
        #: the only topics it sends to (None: any), whatever an outbox entry names: write
        #: access to Redis must not become write access to every topic the worker can reach
        self.topics = topics
        #: with it, messages keyed by a customer erased since they were queued are dropped
        self.privacy_key = privacy_key
        #: the input topics' partitions, to find an erased customer's key (their home's slot)
        self.partitions = partitions
        #: client for those single-key lookups, in any slot (a cluster client on a cluster)
        self.lookup = lookup if lookup is not None else client
        #: a client on the node now serving the stream, after a failover moved it
        self.reconnect = reconnect
        self.sent = self.skipped = self.rejected = self.taken_over = self.erased = 0
        self._group_ready = False
        self._marks: Marks | None = None
        self._recheck_own = True  # entries of ours left pending (a failure, a takeover)
        self._next_scan = 0.0

    async def run(
        self, should_stop: Callable[[], bool] = lambda: False, block_ms: int = 100
    ) -> None:
        """Relays until `should_stop()`. Only cancellation ends it early: every error is
        logged, with the entry it concerns, and the work is tried again after a pause."""
        beating = asyncio.create_task(self.heartbeat.keep(), name=f"heartbeat {self.consumer}")
        delay = 0.0
        try:
            while not should_stop():
                raise_if_cancelled()
                try:
                    await self.relay_once(block_ms)
                except Exception as exc:  # noqa: BLE001 - the relay outlives every error
                    delay = next_delay(delay, self.retry_max_s)
                    log_failure(self.consumer, exc, delay)
                    await self._follow_failover(exc)
                    await self._count(retries=1)
                    await asyncio.sleep(delay)
                else:
                    delay = 0.0
        finally:
            beating.cancel()
            await asyncio.wait([beating])  # no beat may land after the key is removed
            await asyncio.shield(self._leave())

    async def relay_once(self, block_ms: int = 100) -> int:
        """Takes over gone relays' entries when due, then relays one batch; returns how many
        entries were acknowledged (sent, found already sent, or rejected)."""
        await self._ensure_group()
        await self.heartbeat.beat(due_only=True)  # before the first read creates this consumer
        if self.heartbeat.lapsed:
            await self._after_lapse()
        await self._take_over_gone()
        entries: list[Entry] = []
        if self._recheck_own:
            reply = await self.client.xreadgroup(
                RELAY_GROUP, self.consumer, {self.stream: "0"}, count=self.batch
            )
            entries = _entries(reply)
            self._recheck_own = bool(entries)
            uncertain = True
        if not entries:
            reply = await self.client.xreadgroup(
                RELAY_GROUP, self.consumer, {self.stream: ">"}, count=self.batch, block=block_ms
            )
            entries = _entries(reply)
            uncertain = False
        if not entries:
            return 0
        try:
            return await self._deliver(entries, uncertain)
        except BaseException as exc:
            self._recheck_own = True  # they stay pending: read them again, look before sending
            if isinstance(exc, Exception) and not isinstance(exc, UnsentEntries):
                raise UnsentEntries([(e, exc) for e in entries], of=len(entries)) from exc
            raise

    async def pending(self) -> int:
        return int(await self.client.xlen(self.stream))

    async def _deliver(self, entries: list[Entry], uncertain: bool) -> int:
        deleted = [e for e in entries if not e[1]]  # gone from the stream, still pending
        rejects: list[tuple[Entry, str]] = []
        to_send: list[tuple[Entry, Message]] = []
        for entry in entries:
            if not entry[1]:
                continue
            if b"topic" not in entry[1] or b"value" not in entry[1]:
                rejects.append((entry, "malformed outbox entry: no topic or no value"))
                continue
            message = _message(entry[1])
            size = len(message[2]) + len(message[1] or b"")
            if self.topics is not None and message[0] not in self.topics:
                rejects.append((entry, f"topic {message[0]!r} is not one of ecrm's outputs"))
            elif size > self.max_message_bytes:
                reason = (
                    f"message of {size} bytes is larger than the relay's limit of "
                    f"{self.max_message_bytes} bytes (ECRM_RELAY_MAX_MESSAGE_BYTES)"
                )
                rejects.append((entry, reason))
            else:
                to_send.append((entry, message))
        erased = await self._erased([m for _, m in to_send])
        dropped = [e for e, m in to_send if m[1] is not None and m[1] in erased]
        to_send = [(e, m) for e, m in to_send if m[1] is None or m[1] not in erased]
        skipped: list[Entry] = []
        if uncertain and to_send and self.tail is not None:
            marks = await self._own_marks()
            found = await self.tail.already_sent([m for _, m in to_send], marks)
            skipped = [e for e, m in to_send if m in found]
            to_send = [(e, m) for e, m in to_send if m not in found]
        await self._mark_topics({m[0] for _, m in to_send})
        sent, refused, failed = await self._send_all(to_send)
        rejects.extend(refused)
        produced: dict[tuple[str, int], int] = {}
        for _, meta in sent:
            where = _where(meta)
            if where is not None:
                produced[where[0]] = max(produced.get(where[0], -1), where[1])
        await self._acknowledge(
            done=deleted + [e for e, _ in sent] + skipped + dropped,
            rejects=rejects,
            # marks move only when nothing of ours can be left pending below them
            produced=None if failed or uncertain else produced,
            counts={
                "sent": len(sent),
                "skipped": len(skipped),
                "rejected": len(rejects),
                "erased": len(dropped),
            },
        )
        if failed:
            raise UnsentEntries(failed, of=len(entries))
        return len(entries)

    async def _send_all(
        self, to_send: list[tuple[Entry, Message]]
    ) -> tuple[list[tuple[Entry, Any]], list[tuple[Entry, str]], list[tuple[Entry, BaseException]]]:
        """Sends, then waits for the broker; stops handing over at the first failure."""
        handed: list[tuple[Entry, Any]] = []
        refused: list[tuple[Entry, str]] = []
        failed: list[tuple[Entry, BaseException]] = []
        for i, (entry, message) in enumerate(to_send):
            raise_if_cancelled()
            try:
                handed.append((entry, await self.send(*message)))
            except Exception as exc:  # noqa: BLE001 - classified: refused, or kept and retried
                reason = refusal(exc)
                if reason is not None:
                    refused.append((entry, reason))
                    continue
                failed.append((entry, exc))
                failed.extend((e, exc) for e, _ in to_send[i + 1 :])
                break
        waiting = [r for _, r in handed if asyncio.isfuture(r) or asyncio.iscoroutine(r)]
        outcomes = iter(await asyncio.gather(*waiting, return_exceptions=True))
        sent: list[tuple[Entry, Any]] = []
        for entry, result in handed:
            if asyncio.isfuture(result) or asyncio.iscoroutine(result):
                result = next(outcomes)
            if not isinstance(result, BaseException):
                sent.append((entry, result))
            elif (reason := refusal(result)) is not None:
                refused.append((entry, reason))
            else:
                failed.append((entry, result))
        return sent, refused, failed

    async def _acknowledge(
        self,
        done: list[Entry],
        rejects: list[tuple[Entry, str]],
        produced: dict[tuple[str, int], int] | None,
        counts: dict[str, int],
    ) -> None:
        """One MULTI: rejects moved aside, entries acknowledged, marks raised, counters."""
        ids = [eid for eid, _ in done] + [eid for (eid, _), _ in rejects]
        if not ids:
            return
        now = datetime.now(UTC)
        marks = None
        if produced:
            marks = advance_marks(await self._own_marks(), produced)
        async with self.client.pipeline(transaction=True) as pipe:
            for (eid, fields), reason in rejects:
                pipe.xadd(self.rejects, reject_fields(eid, fields, reason, self.consumer, now))
            pipe.xack(self.stream, RELAY_GROUP, *ids)
            pipe.xdel(self.stream, *ids)
            if marks is not None:
                pipe.hset(mark_key(self.stream, self.consumer), mapping=encode_marks(marks))
            for name, n in counts.items():
                if n:
                    pipe.hincrby(self.stats, name, n)
            await pipe.execute()
        if marks is not None:
            self._marks = marks
        self.sent += counts["sent"]
        self.skipped += counts["skipped"]
        self.rejected += counts["rejected"]
        self.erased += counts["erased"]
        for (eid, fields), reason in rejects:
            topic = fields.get(b"topic", b"?").decode(errors="replace")
            log.error("relay rejected entry %s for %s: %s", eid.decode(), topic, reason)

    async def _erased(self, messages: list[Message]) -> set[bytes]:
        """The keys among these messages' that name a customer on the erasure list."""
        if self.privacy_key is None:
            return set()
        keys = list({m[1] for m in messages if m[1] is not None})
        if not keys:
            return set()
        names = []
        for k in keys:
            customer = k.decode("utf-8", "replace")
            token = erasure_token(customer, self.privacy_key)
            names.append(keyspace.erased(token, keyspace.home(customer, self.partitions)))
        # on a cluster the names are in their customers' slots, not the stream's: the cluster
        # client reads them slot by slot (a GET each at once would exhaust its connections)
        if isinstance(self.lookup, aioredis.RedisCluster):
            found = await self.lookup.mget_nonatomic(names)
        else:
            found = await self.lookup.mget(names)
        return {k for k, v in zip(keys, found, strict=True) if v is not None}

    async def _after_lapse(self) -> None:
        """Our heartbeat expired: others may have taken our entries, and our marks too if
        we had nothing pending. Write the marks again and look at what is still ours."""
        self.heartbeat.lapsed = False
        self._recheck_own = True
        if self._marks:
            await self.client.hset(
                mark_key(self.stream, self.consumer), mapping=encode_marks(self._marks)
            )

    async def _mark_topics(self, topics: set[str]) -> None:
        """Before the first send to a topic: its end offsets, the floor of what we will send."""
        marks = await self._own_marks()
        new = sorted(t for t in topics if t not in marks)
        if not new or self.tail is None:
            return
        marked = {topic: dict(marks[topic]) for topic in marks}
        for topic in new:
            marked[topic] = await self.tail.end_offsets(topic)
        await self.client.hset(mark_key(self.stream, self.consumer), mapping=encode_marks(marked))
        self._marks = marked

    async def _own_marks(self) -> Marks:
        if self._marks is None:
            self._marks = await load_marks(self.client, self.stream, self.consumer)
        return self._marks

    async def _take_over_gone(self) -> None:
        now = time.monotonic()
        if now < self._next_scan:
            return
        self._next_scan = now + self.heartbeat.every_s
        mine = await self._own_marks() if self.tail is not None else None
        moved, self._marks = await take_over_gone(
            self.client, self.stream, RELAY_GROUP, self.consumer, mine
        )
        if moved:
            self._recheck_own = True
            self.taken_over += moved
            await self._count(taken_over=moved)

    async def _leave(self) -> None:
        """On a clean stop: our heartbeat goes, so what we leave pending is taken over at once."""
        await self.heartbeat.stop()
        if self.tail is not None:
            try:
                await self.tail.close()
            except Exception as exc:  # noqa: BLE001 - closing only
                log.warning("relay %s: topic reader not closed cleanly: %s", self.consumer, exc)

    async def _count(self, **counts: int) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for name, n in counts.items():
                    pipe.hincrby(self.stats, name, n)
                await pipe.execute()
        except redis.RedisError as exc:
            log.warning("relay %s: stats not counted: %s", self.consumer, exc)

    async def _follow_failover(self, exc: BaseException) -> None:
        """After a MOVED or a lost connection, ask where the stream's slot is served now."""
        if self.reconnect is None:
            return
        cause = exc.first if isinstance(exc, UnsentEntries) else exc
        if not isinstance(cause, redis.exceptions.MovedError) and waits_for(cause) != "Redis":
            return
        try:
            client = await self.reconnect()
        except Exception as err:  # noqa: BLE001 - tried again after the next failure
            log.warning("relay %s: cluster not reachable yet: %s", self.consumer, err)
            return
        self.client = self.heartbeat.client = client
        self._group_ready = False

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.client.xgroup_create(self.stream, RELAY_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True


def _entries(reply: Any) -> list[Entry]:
    return [(eid, fields) for _stream, items in reply or [] for eid, fields in items]


def _message(fields: dict[bytes, bytes]) -> Message:
    return fields[b"topic"].decode(), fields.get(b"key"), fields[b"value"]


def _where(meta: Any) -> tuple[tuple[str, int], int] | None:
    """(topic, partition), offset of a send's RecordMetadata, when the producer gives one."""
    topic, partition, offset = (getattr(meta, a, None) for a in ("topic", "partition", "offset"))
    if isinstance(topic, str) and isinstance(partition, int) and isinstance(offset, int):
        return (topic, partition), offset
    return None


async def run_relays(
    relays: list[KafkaRelay], should_stop: Callable[[], bool] = lambda: False, block_ms: int = 100
) -> None:
    """Runs the relays of every partition's outbox side by side until `should_stop()`; each
    outlives its own errors, so one partition's trouble (a Redis node failing over) does not
    hold up the others. Cancelling it stops them all."""
    await asyncio.gather(*(relay.run(should_stop, block_ms) for relay in relays))
