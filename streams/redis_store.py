"""A Faust table store whose durable copy is Redis, written in atomic batches with offsets.

Faust calls `_get/_set` synchronously, so a Redis round trip there would block the event
loop per access. Instead the agent opens a `Unit` per partition of a batch: it WATCHes and
reads every key the batch needs (profiles and the source partitions' offset watermarks) in
one MGET, serves the table from that working set, and commits the dirty values, the new
watermarks and any outbox entries in one MULTI/EXEC. Every key of a unit carries its
partition's hash tag (streams/keyspace.py), so on a Redis Cluster the unit runs on the master
of that one slot (streams/redis_client.py). A worker killed at any instant therefore leaves
Redis either before or after the whole batch; a replayed event is recognised by its
offset. If another worker wrote a watched key in between (a partition handed over), EXEC
fails with `UnitConflict` and the caller redoes the batch on fresh data.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from faust.stores.base import SerializedStore
from faust.types import TP
from redis.asyncio.client import Pipeline

from schemas.errors import RedisStoreError
from streams import keyspace
from streams.outbox import QUEUED_ENTRIES, QUEUED_ROWS, OutboxEntry
from streams.redis_client import AsyncRedis, PartitionClients, SyncRedis, async_client, sync_client

log = logging.getLogger(__name__)


class UnitConflict(RedisStoreError):
    """Another writer changed a key this batch read; redo the batch on fresh data."""


class OutsideUnit(RedisStoreError):
    """A table value was read or written with no unit open: the write would be lost."""


# -- the operations a unit commits, as data a test can read ------------------------------------


@dataclass(frozen=True)
class Set:
    key: str
    value: bytes


@dataclass(frozen=True)
class Delete:
    key: str


@dataclass(frozen=True)
class Xadd:
    stream: str
    fields: dict[Any, Any]


@dataclass(frozen=True)
class Zadd:
    key: str
    member: str
    score: float


@dataclass(frozen=True)
class Zrem:
    key: str
    member: str


@dataclass(frozen=True)
class Hincrby:
    key: str
    field: str
    amount: int


Op = Set | Delete | Xadd | Zadd | Zrem | Hincrby


def queue(pipe: Pipeline, op: Op) -> None:
    """Put one operation on a MULTI pipeline."""
    match op:
        case Set(key, value):
            pipe.set(key, value)
        case Delete(key):
            pipe.delete(key)
        case Xadd(stream, fields):
            pipe.xadd(stream, fields)
        case Zadd(key, member, score):
            pipe.zadd(key, {member: score})
        case Zrem(key, member):
            pipe.zrem(key, member)
        case Hincrby(key, field, amount):
            pipe.hincrby(key, field, amount)


class Unit:
    """One atomic read-modify-write step over Redis (see module docstring).

    It owns its working set — every value it read, by Redis name — and records what it will
    write as plain operations (`ops()`), so a test can read what a batch commits before it is
    committed. Values are written once each at commit, whatever order they changed in.
    """

    def __init__(self, cluster_id: str, partition: int = 0) -> None:
        self.cluster_id = cluster_id
        #: the Kafka partition whose slot the unit's keys are in (its outboxes and counters)
        self.partition = partition
        #: run just before MULTI (e.g. booking budgets shared across slots); raising aborts
        self.before_commit: list[Callable[[], Awaitable[None]]] = []
        #: run when the unit did not commit after `before_commit` ran (give a booking back)
        self.on_abort: list[Callable[[], Awaitable[None]]] = []
        self.offsets: dict[tuple[str, int], int] = {}
        self._new_offsets: dict[tuple[str, int], int] = {}
        self.values: dict[str, bytes | None] = {}
        self._dirty: dict[str, None] = {}
        self._ops: list[Op] = []

    # -- the working set ----------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """A value read at the start of the unit (or written since); only keys it read."""
        try:
            return self.values[key]
        except KeyError:
            raise RedisStoreError(f"{key!r} was not read by this unit") from None

    def put(self, key: str, value: bytes | None) -> None:
        """Write (None: delete) a value in the same step."""
        self.values[key] = value
        self._dirty[key] = None

    # -- source offsets -----------------------------------------------------------------

    def applied(self, topic: str, partition: int, offset: int) -> bool:
        """True when an earlier batch already applied this source offset."""
        return offset <= self.offsets.get((topic, partition), -1)

    def advance(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        self._new_offsets[key] = max(offset, self._new_offsets.get(key, -1))

    # -- side effects -------------------------------------------------------------------

    def add(self, entry: OutboxEntry) -> None:
        """Append an entry to an outbox (streams/outbox.py); rows for ClickHouse are counted
        with it, for the outbox's depth (back-pressure)."""
        self._ops.append(Xadd(entry.stream(self.partition), entry.fields))
        if entry.rows:
            counters = keyspace.stats(self.partition)
            self._ops.append(Hincrby(counters, QUEUED_ENTRIES, 1))
            self._ops.append(Hincrby(counters, QUEUED_ROWS, entry.rows))

    def zadd(self, key: str, member: str, score: float) -> None:
        self._ops.append(Zadd(key, member, score))

    def zrem(self, key: str, member: str) -> None:
        self._ops.append(Zrem(key, member))

    def hincrby(self, key: str, field: str, amount: int) -> None:
        self._ops.append(Hincrby(key, field, amount))

    def count(self, field: str, amount: int = 1) -> None:
        """Add to one of the partition's counters (`keyspace.stats`) in the same commit."""
        self._ops.append(Hincrby(keyspace.stats(self.partition), field, amount))

    def ops(self) -> list[Op]:
        """Everything the commit will do, in order: values, watermarks, then side effects."""
        out: list[Op] = []
        for key in self._dirty:
            value = self.values[key]
            out.append(Delete(key) if value is None else Set(key, value))
        for (topic, partition), offset in self._new_offsets.items():
            out.append(
                Set(keyspace.offset(self.cluster_id, topic, partition), str(offset).encode())
            )
        out.extend(self._ops)
        return out


class RedisStore(SerializedStore):
    """Faust Store for `redis://host:port/db` URLs (register with `register_redis_store`)."""

    def __init__(self, url: Any, app: Any, table: Any, **kwargs: Any) -> None:
        super().__init__(url, app, table, **kwargs)
        self.redis_url = str(url)
        settings = getattr(app, "ecrm_settings", None)
        #: the input topics' partitions: a customer's keys carry their home partition's tag
        self.partitions: int = settings.partitions if settings is not None else 1
        self.cluster: bool = settings.redis_is_cluster if settings is not None else False
        #: replicas a unit's commit must reach before the worker moves on (Redis WAIT)
        self.wait_replicas = settings.redis_replicas_to_wait_for if settings is not None else 0
        self.wait_ms = settings.redis_wait_ms if settings is not None else 1000
        #: id of the Kafka cluster the source offsets belong to (set by the worker at start)
        self.cluster_id = "kafka"
        self._unit: Unit | None = None
        self._sync: SyncRedis | None = None
        self._async: AsyncRedis | None = None
        self.partition_clients = PartitionClients(self.redis_url, self.cluster)

    # -- connections -------------------------------------------------------------------

    @property
    def sync_client(self) -> SyncRedis:
        """For single-key commands and SCANs (a cluster client on a cluster)."""
        if self._sync is None:
            self._sync = sync_client(self.redis_url, self.cluster)
        return self._sync

    @property
    def client(self) -> AsyncRedis:
        """For single-key commands (a cluster client on a cluster); units use `for_partition`."""
        if self._async is None:
            self._async = async_client(self.redis_url, self.cluster)
        return self._async

    async def for_partition(self, partition: int) -> aioredis.Redis:
        """A client on the node that holds `partition`'s keys, for multi-key commands."""
        return await self.partition_clients.get(partition)

    def redis_key(self, key: bytes) -> str:
        return keyspace.table_key(self.table_name, key.decode(), self.partitions)

    # -- the batch unit ----------------------------------------------------------------

    @asynccontextmanager
    async def unit(
        self,
        keys: Iterable[bytes],
        sources: Iterable[tuple[str, int]] = (),
        raw_keys: Iterable[str] = (),
        partition: int = 0,
    ) -> Any:
        """Read `keys` (table keys), source watermarks and `raw_keys` under WATCH; commit on
        exit. Every key must carry `partition`'s tag (on a cluster, one slot)."""
        source_list = list(dict.fromkeys(sources))
        value_names = list(dict.fromkeys([self.redis_key(k) for k in keys] + list(raw_keys)))
        names = value_names + [keyspace.offset(self.cluster_id, t, p) for t, p in source_list]
        unit = Unit(self.cluster_id, partition)
        client = await self.for_partition(partition)
        hooked = False
        async with client.pipeline(transaction=True) as pipe:
            try:
                if names:
                    await pipe.watch(*names)
                    values = await pipe.mget(names)
                else:
                    values = []
                n = len(value_names)
                unit.values.update(zip(value_names, values[:n], strict=True))
                for source, raw in zip(source_list, values[n:], strict=True):
                    if raw is not None:
                        unit.offsets[source] = int(raw)
                self._unit = unit
                yield unit
                self._unit = None
                hooked = True
                for hook in unit.before_commit:
                    await hook()
                pipe.multi()
                for op in unit.ops():
                    queue(pipe, op)
                await pipe.execute()
                hooked = False
                if self.wait_replicas:
                    await self._replicated(client, partition)
            except redis.WatchError as exc:
                raise UnitConflict("a watched key changed under this batch") from exc
            except (redis.exceptions.MovedError, redis.ConnectionError):
                self.partition_clients.forget()  # a failover: ask the cluster where it went
                raise
            finally:
                self._unit = None
                if hooked:
                    for undo in unit.on_abort:
                        await undo()

    async def _replicated(self, client: aioredis.Redis, partition: int) -> None:
        """Wait until the unit just committed reached `wait_replicas` replicas. WAIT covers the
        writes of its own connection, so a fence write goes on one connection with it: the
        replication stream is in order, so the fence replicated means the unit did too."""
        async with client.pipeline(transaction=False) as fence:
            fence.incr(keyspace.replicated(partition))
            fence.execute_command("WAIT", self.wait_replicas, self.wait_ms)
            _, reached = await fence.execute()
        if int(reached) < self.wait_replicas:
            log.warning(
                "partition %d: a unit reached %d of %d replicas within %d ms; a failover now "
                "could lose it (the next unit would find the watermark behind and stop the "
                "worker, which resumes from the watermark)",
                partition,
                int(reached),
                self.wait_replicas,
                self.wait_ms,
            )

    def _open_unit(self, what: str) -> Unit:
        if self._unit is None:
            raise OutsideUnit(
                f"table {self.table_name!r} {what} outside a unit: open `store.unit(...)` "
                "for the keys first (a write here would never reach Redis)"
            )
        return self._unit

    # -- SerializedStore ---------------------------------------------------------------

    def _get(self, key: bytes) -> bytes | None:
        return self._open_unit("read").get(self.redis_key(key))

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._open_unit("write").put(self.redis_key(key), value)

    def _del(self, key: bytes) -> None:
        self._set(key, None)

    def _scan(self) -> Iterator[bytes]:
        marker = f"}}:{self.table_name}:".encode()
        pattern = f"{keyspace.PREFIX}{{p*}}:{self.table_name}:*"
        for name in self.sync_client.scan_iter(match=pattern, count=1000):
            yield name.split(marker, 1)[1]

    def _iterkeys(self) -> Iterator[bytes]:
        yield from self._scan()

    def _itervalues(self) -> Iterator[bytes | None]:
        for _, value in self._iteritems():
            yield value

    def _iteritems(self) -> Iterator[tuple[bytes, bytes]]:
        for key in self._scan():
            value: bytes | None = self.sync_client.get(self.redis_key(key))
            if value is not None:
                yield key, value

    def _size(self) -> int:
        return sum(1 for _ in self._scan())

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None

    def _clear(self) -> None:
        for key in list(self._scan()):
            self.sync_client.delete(self.redis_key(key))

    def apply_changelog_batch(self, batch: Iterable[Any], to_key: Any, to_value: Any) -> None:
        """Changelog records (if any table ever wrote them) go straight to Redis."""
        pipe = self.sync_client.pipeline(transaction=False)
        for event in batch:
            key: bytes = event.message.key
            value: bytes | None = event.message.value
            if value is None:
                pipe.delete(self.redis_key(key))
            else:
                pipe.set(self.redis_key(key), value)
        pipe.execute()

    # Redis is the durable copy: there is no local state to persist, back up or restore.
    def persisted_offset(self, tp: TP) -> int | None:
        return None

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        return None

    def reset_state(self) -> None:
        self._unit = None

    async def backup_partition(
        self, tp: Any, flush: bool = True, purge: bool = False, keep: int = 1
    ) -> None:
        return None

    def restore_backup(self, tp: Any, latest: bool = True, backup_id: int = 0) -> None:
        return None

    async def on_rebalance(
        self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0
    ) -> None:
        self.reset_state()

    async def stop(self) -> None:
        await self.partition_clients.aclose()
        if self._async is not None:
            await self._async.aclose()
            self._async = None
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        await super().stop()


def register_redis_store() -> None:
    """Teach Faust the redis:// store URL scheme; call before any table is created."""
    from faust.stores import STORES

    for scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        STORES.aliases[scheme] = "streams.redis_store:RedisStore"
