"""Redis clients for one server or for a Redis Cluster, as the settings say.

`ECRM_REDIS_CLUSTER=true`, or a `redis+cluster://host:port/0` URL naming any node, switches
to a cluster. Every multi-key step ecrm takes — a batch unit, an erasure, the sink's
acknowledgement of an insert — touches the keys of one Kafka partition only, and those share
the partition's hash tag (`ecrm:{p3}:…`, streams/keyspace.py), so they live in one slot and
one MULTI/EXEC holds them. Three kinds of client follow from that:

- `sync_client` / `async_client`: for single-key commands and SCANs; on a cluster redis-py's
  RedisCluster, which sends each command to the node owning its key and scans every master.
- `PartitionClients.get(p)`: a plain client on the master that owns partition `p`'s slot, for
  WATCH/MGET/MULTI/EXEC units (redis-py's async cluster pipeline cannot WATCH and MGET in a
  transaction). After a failover the old master answers MOVED or is gone: `forget()` drops
  what was learnt and the next `get` asks the cluster again.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.cluster import key_slot

from streams.settings import CLUSTER_SCHEMES

#: URL schemes that name one node of a cluster (the rest are found from it).

SyncRedis = redis.Redis | redis.RedisCluster
AsyncRedis = aioredis.Redis | aioredis.RedisCluster


def is_cluster(url: str, cluster: bool = False) -> bool:
    return cluster or url.startswith(CLUSTER_SCHEMES)


def node_url(url: str) -> str:
    """The plain redis:// (rediss://) URL of the node a cluster URL names."""
    for scheme in CLUSTER_SCHEMES:
        if url.startswith(scheme):
            return scheme.replace("+cluster", "") + url[len(scheme) :]
    return url


def at_node(url: str, host: str, port: int) -> str:
    """`url` (credentials, db, options kept) pointing at another node."""
    parts = urlsplit(url)
    auth, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{auth}{at}{host}:{port}"))


def sync_client(url: str, cluster: bool = False, **options: Any) -> SyncRedis:
    if is_cluster(url, cluster):
        return redis.RedisCluster.from_url(node_url(url), **options)
    return redis.Redis.from_url(url, **options)


def async_client(url: str, cluster: bool = False, **options: Any) -> AsyncRedis:
    if is_cluster(url, cluster):
        return aioredis.RedisCluster.from_url(node_url(url), **options)
    return aioredis.Redis.from_url(url, **options)


class PartitionClients:
    """Async clients able to run one partition's WATCH/MULTI/EXEC units (see module docstring).
    On one server every partition gets the same client."""

    def __init__(self, url: str, cluster: bool = False) -> None:
        self.url = node_url(url)
        self.cluster = is_cluster(url, cluster)
        self._single: aioredis.Redis | None = None
        self._by_node: dict[tuple[str, int], aioredis.Redis] = {}
        self._slots: list[tuple[int, int, tuple[str, int]]] = []

    async def get(self, partition: int) -> aioredis.Redis:
        if not self.cluster:
            if self._single is None:
                self._single = aioredis.Redis.from_url(self.url)
            return self._single
        if not self._slots:
            await self._learn_slots()
        slot = key_slot(f"{{p{partition}}}".encode())
        for first, last, node in self._slots:
            if first <= slot <= last:
                if node not in self._by_node:
                    # from_url lets the URL's host and port win over keyword arguments
                    self._by_node[node] = aioredis.Redis.from_url(at_node(self.url, *node))
                return self._by_node[node]
        raise redis.exceptions.ClusterDownError(
            f"no master serves slot {slot} (partition {partition})"
        )

    async def _learn_slots(self) -> None:
        """Ask the seed node, or any node known before, which master serves which slots."""
        seeds = [aioredis.Redis.from_url(self.url)] + list(self._by_node.values())
        last_error: Exception | None = None
        for seed in seeds:
            try:
                rows = await seed.execute_command("CLUSTER SLOTS")
            except redis.RedisError as exc:
                last_error = exc
                continue
            finally:
                if seed is seeds[0]:
                    await seed.aclose()
            self._slots = [(int(r[0]), int(r[1]), (_text(r[2][0]), int(r[2][1]))) for r in rows]
            return
        raise redis.exceptions.ConnectionError(
            f"no cluster node answered CLUSTER SLOTS: {last_error}"
        )

    def forget(self) -> None:
        """A failover or a resharding moved slots: ask the cluster again at the next `get`."""
        self._slots = []

    async def aclose(self) -> None:
        clients = list(self._by_node.values()) + ([self._single] if self._single else [])
        self._by_node.clear()
        self._single = None
        for client in clients:
            await client.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def mget(client: SyncRedis, keys: list[str]) -> list[Any]:
    """Values of keys in any slots (a cluster client splits the read by slot)."""
    if isinstance(client, redis.RedisCluster):
        return list(client.mget_nonatomic(keys))
    return list(client.mget(keys))
