"""The Redis store's units kept in memory, for fast unit tests of the keeper.

Like quixstreams' memory store beside RocksDB: the same `unit(...)` contract as
`streams/redis_store.py` `RedisStore.unit` (read the keys and the sources' watermarks, yield a
`Unit`, run its `before_commit` hooks, commit its `ops()` or raise `UnitConflict` when a key it
read was written meanwhile), over dicts instead of Redis. Not for production: nothing
survives the process.

    store = MemoryStore(partitions=1)
    key = keyspace.profile("c1", 1)  # every name from streams/keyspace.py, as in Redis
    async with store.unit((), [("t.orders", 0)], [key]) as unit:
        unit.put(key, b"{...}")
    store.values[key]
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from streams import keyspace
from streams.redis_store import Delete, Hincrby, Op, Set, Unit, UnitConflict, Xadd, Zadd, Zrem


class MemoryStore:
    """What the keeper asks of its store, in memory."""

    def __init__(self, partitions: int = 1, cluster_id: str = "kafka") -> None:
        self.partitions = partitions
        self.cluster_id = cluster_id
        self.values: dict[str, bytes] = {}
        self.zsets: dict[str, dict[str, float]] = defaultdict(dict)
        self.streams: dict[str, list[dict[Any, Any]]] = defaultdict(list)
        self.hashes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        #: key -> how many commits wrote it (what WATCH notices)
        self.versions: dict[str, int] = defaultdict(int)
        self.client = _Client(self)
        self.partition_clients = _Clients()

    async def for_partition(self, partition: int) -> _Client:
        return self.client

    def write(self, key: str, value: bytes | None) -> None:
        """Another writer's change (what makes a unit that read `key` conflict)."""
        self._apply([Set(key, value) if value is not None else Delete(key)])

    @asynccontextmanager
    async def unit(
        self,
        keys: Iterable[bytes] = (),
        sources: Iterable[tuple[str, int]] = (),
        raw_keys: Iterable[str] = (),
        partition: int = 0,
    ) -> AsyncIterator[Unit]:
        """As `RedisStore.unit`; `keys` (table keys) are the profiles table's."""
        n = self.partitions
        names = [keyspace.table_key(keyspace.PROFILES_TABLE, k.decode(), n) for k in keys]
        names += list(raw_keys)
        offsets = [keyspace.offset(self.cluster_id, t, p) for t, p in dict.fromkeys(sources)]
        watched = {name: self.versions[name] for name in [*names, *offsets]}
        unit = Unit(self.cluster_id, partition)
        unit.values.update({name: self.values.get(name) for name in names})
        for (topic, p), name in zip(dict.fromkeys(sources), offsets, strict=True):
            if name in self.values:
                unit.offsets[(topic, p)] = int(self.values[name])
        yield unit
        hooked = True
        try:
            for hook in unit.before_commit:
                await hook()
            if any(self.versions[name] != seen for name, seen in watched.items()):
                raise UnitConflict("a watched key changed under this batch")
            self._apply(unit.ops())
            hooked = False
        finally:
            if hooked:
                for undo in unit.on_abort:
                    await undo()

    def _apply(self, ops: Iterable[Op]) -> None:
        for op in ops:
            match op:
                case Set(key, value):
                    self.values[key] = value
                    self.versions[key] += 1
                case Delete(key):
                    self.values.pop(key, None)
                    self.versions[key] += 1
                case Xadd(stream, fields):
                    self.streams[stream].append(fields)
                case Zadd(key, member, score):
                    self.zsets[key][member] = score
                case Zrem(key, member):
                    self.zsets[key].pop(member, None)
                case Hincrby(key, field, amount):
                    self.hashes[key][field] += amount


class _Client:
    """The few Redis commands the keeper sends outside a unit."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def zrangebyscore(
        self,
        key: str,
        low: str,
        high: str,
        start: int = 0,
        num: int | None = None,
        withscores: bool = False,
    ) -> list[Any]:
        top = float(high.lstrip("(")) if high not in ("+inf", "inf") else float("inf")
        bottom = float("-inf") if low == "-inf" else float(low)
        found = sorted(
            (score, member)
            for member, score in self.store.zsets.get(key, {}).items()
            if bottom <= score and (score < top if high.startswith("(") else score <= top)
        )
        page = found[start : start + num if num is not None else None]
        return [(m.encode(), s) if withscores else m.encode() for s, m in page]

    async def mget(self, names: list[str]) -> list[bytes | None]:
        return [self.store.values.get(name) for name in names]

    async def hincrby(self, key: str, field: str, amount: int) -> int:
        self.store.hashes[key][field] += amount
        return self.store.hashes[key][field]


class _Clients:
    def forget(self) -> None:
        """Nothing to forget: there is no cluster to ask again."""
