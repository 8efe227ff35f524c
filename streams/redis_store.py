"""A Faust table store whose durable copy is Redis, written in atomic batches with offsets.

Faust calls `_get/_set` synchronously, so a Redis round trip there would block the event
loop per access. Instead the agent opens a `Unit` per batch: it WATCHes and reads every
key the batch needs (profiles and the source partitions' offset watermarks) in one MGET,
serves the table from that working set, and commits the dirty values, the new watermarks
and any outbox entries in one MULTI/EXEC. A worker killed at any instant therefore leaves
Redis either before or after the whole batch; a replayed event is recognised by its
offset. If another worker wrote a watched key in between (a partition handed over), EXEC
fails with `UnitConflict` and the caller redoes the batch on fresh data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio as aioredis
from faust.stores.base import SerializedStore
from faust.types import TP
from redis.asyncio.client import Pipeline

from schemas.errors import RedisStoreError

#: Every key ecrm writes starts with this, so one Redis can be shared and inspected.
KEY_PREFIX = "ecrm:"

PipelineOp = Callable[[Pipeline], Any]


class UnitConflict(RedisStoreError):
    """Another writer changed a key this batch read; redo the batch on fresh data."""


def offset_key(cluster: str, topic: str, partition: int) -> str:
    """Watermark of one source partition. Keyed by the Kafka cluster id too: a broker that
    was recreated empty (the in-memory embedded one after a restart) counts offsets from 0
    again, and must not be mistaken for the one whose offsets Redis remembers."""
    return f"{KEY_PREFIX}offset:{cluster}:{topic}:{partition}"


class Unit:
    """One atomic read-modify-write step over Redis (see module docstring)."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self.offsets: dict[tuple[str, int], int] = {}
        self._new_offsets: dict[tuple[str, int], int] = {}
        self._ops: list[PipelineOp] = []
        self.raw: dict[str, bytes | None] = {}
        self._raw_dirty: set[str] = set()

    def applied(self, topic: str, partition: int, offset: int) -> bool:
        """True when an earlier batch already applied this source offset."""
        return offset <= self.offsets.get((topic, partition), -1)

    def advance(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        self._new_offsets[key] = max(offset, self._new_offsets.get(key, -1))

    def write_raw(self, key: str, value: bytes | None) -> None:
        """Write a Redis key that is not a table value (e.g. rule state), in the same step."""
        self.raw[key] = value
        self._raw_dirty.add(key)

    def later(self, op: PipelineOp) -> None:
        """Queue a command (XADD to an outbox, ZADD to a due set) for the commit."""
        self._ops.append(op)

    def _queue(self, pipe: Pipeline) -> None:
        for key, value in self._store.dirty_items():
            if value is None:
                pipe.delete(key)
            else:
                pipe.set(key, value)
        for key in self._raw_dirty:
            value = self.raw[key]
            if value is None:
                pipe.delete(key)
            else:
                pipe.set(key, value)
        for (topic, partition), offset in self._new_offsets.items():
            pipe.set(offset_key(self._store.cluster_id, topic, partition), offset)
        for op in self._ops:
            op(pipe)


class RedisStore(SerializedStore):
    """Faust Store for `redis://host:port/db` URLs (register with `register_redis_store`)."""

    def __init__(self, url: Any, app: Any, table: Any, **kwargs: Any) -> None:
        super().__init__(url, app, table, **kwargs)
        self.redis_url = str(url)
        self.key_prefix = f"{KEY_PREFIX}{self.table_name}:"
        #: id of the Kafka cluster the source offsets belong to (set by the worker at start)
        self.cluster_id = "kafka"
        self._working: dict[bytes, bytes | None] = {}
        self._dirty: set[bytes] = set()
        self._sync: redis.Redis | None = None
        self._async: aioredis.Redis | None = None

    # -- connections -------------------------------------------------------------------

    @property
    def sync_client(self) -> redis.Redis:
        if self._sync is None:
            self._sync = redis.Redis.from_url(self.redis_url)
        return self._sync

    @property
    def client(self) -> aioredis.Redis:
        if self._async is None:
            self._async = aioredis.Redis.from_url(self.redis_url)
        return self._async

    def redis_key(self, key: bytes) -> str:
        return self.key_prefix + key.decode()

    # -- the batch unit ----------------------------------------------------------------

    @asynccontextmanager
    async def unit(
        self,
        keys: Iterable[bytes],
        sources: Iterable[tuple[str, int]] = (),
        raw_keys: Iterable[str] = (),
    ) -> Any:
        """Read `keys` (table keys), source watermarks and `raw_keys` under WATCH; commit on exit."""
        table_keys = list(dict.fromkeys(keys))
        source_list = list(dict.fromkeys(sources))
        raw_list = list(dict.fromkeys(raw_keys))
        names = (
            [self.redis_key(k) for k in table_keys]
            + [offset_key(self.cluster_id, t, p) for t, p in source_list]
            + raw_list
        )
        unit = Unit(self)
        self._working.clear()
        self._dirty.clear()
        async with self.client.pipeline(transaction=True) as pipe:
            try:
                if names:
                    await pipe.watch(*names)
                    values = await pipe.mget(names)
                else:
                    values = []
                n, m = len(table_keys), len(source_list)
                self._working.update(zip(table_keys, values[:n], strict=True))
                for source, raw in zip(source_list, values[n : n + m], strict=True):
                    if raw is not None:
                        unit.offsets[source] = int(raw)
                unit.raw.update(zip(raw_list, values[n + m :], strict=True))
                yield unit
                pipe.multi()
                unit._queue(pipe)
                await pipe.execute()
            except redis.WatchError as exc:
                raise UnitConflict("a watched key changed under this batch") from exc
            finally:
                self._working.clear()
                self._dirty.clear()

    def dirty_items(self) -> Iterator[tuple[str, bytes | None]]:
        for key in self._dirty:
            yield self.redis_key(key), self._working[key]

    # -- SerializedStore ---------------------------------------------------------------

    def _get(self, key: bytes) -> bytes | None:
        if key in self._working:
            return self._working[key]
        # outside a unit (tests, tools): a plain blocking read
        value: bytes | None = self.sync_client.get(self.redis_key(key))
        return value

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._working[key] = value
        self._dirty.add(key)

    def _del(self, key: bytes) -> None:
        self._set(key, None)

    def _scan(self) -> Iterator[bytes]:
        for name in self.sync_client.scan_iter(match=self.key_prefix + "*", count=1000):
            yield name[len(self.key_prefix) :]

    def _iterkeys(self) -> Iterator[bytes]:
        yield from self._scan()

    def _itervalues(self) -> Iterator[bytes | None]:
        for _, value in self._iteritems():
            yield value

    def _iteritems(self) -> Iterator[tuple[bytes, bytes]]:
        for key in self._scan():
            value = self._get(key)
            if value is not None:
                yield key, value

    def _size(self) -> int:
        return sum(1 for _ in self._scan())

    def _contains(self, key: bytes) -> bool:
        if key in self._working:
            return self._working[key] is not None
        return bool(self.sync_client.exists(self.redis_key(key)))

    def _clear(self) -> None:
        names = [self.key_prefix + k.decode() for k in self._scan()]
        for i in range(0, len(names), 1000):
            self.sync_client.delete(*names[i : i + 1000])

    def apply_changelog_batch(self, batch: Iterable[Any], to_key: Any, to_value: Any) -> None:
        """Changelog records (if any table ever wrote them) go straight to Redis."""
        pipe = self.sync_client.pipeline(transaction=True)
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
        self._working.clear()
        self._dirty.clear()

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

    STORES.aliases["redis"] = "streams.redis_store:RedisStore"
    STORES.aliases["rediss"] = "streams.redis_store:RedisStore"
