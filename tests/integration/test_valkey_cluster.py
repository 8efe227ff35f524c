"""The test Valkey cluster (3 masters, 3 replicas): what ecrm's Redis Cluster mode relies on —
transactions within one slot, and writes that outlive a planned failover or a dead master."""

from __future__ import annotations

from collections import Counter

import pytest
import redis
from redis.cluster import key_slot
from redis.exceptions import (
    ClusterCrossSlotError,
    CrossSlotTransactionError,
    MovedError,
    WatchError,
)

from streams.embedded import HOST
from streams.valkey_cluster import ValkeyCluster

pytestmark = pytest.mark.integration


def cluster_client(cluster: ValkeyCluster) -> redis.RedisCluster:
    """A fresh client from the cluster's URL, as a worker starting now would build one."""
    url = cluster.url.replace("redis+cluster://", "redis://", 1)
    return redis.RedisCluster.from_url(url, decode_responses=True)


def node_client(port: int, *, replica: bool = False) -> redis.Redis:
    """A plain client of one node; `replica=True` lets it read a replica's copy."""
    node = redis.Redis(host=HOST, port=port, decode_responses=True, single_connection_client=True)
    if replica:
        node.execute_command("READONLY")
    return node


def key_off_the_seed(cluster: ValkeyCluster, name: str) -> str:
    """A key whose master is not the seed node: a fresh client must reach the seed to start,
    so killing the seed would test that, not the failover."""
    keys = (f"{{p{n}}}:{name}" for n in range(64))
    return next(k for k in keys if cluster.master_for(k) != cluster.seed_port)


def test_every_slot_is_served_by_one_of_three_masters_each_with_a_replica(
    valkey_cluster: ValkeyCluster,
) -> None:
    nodes = valkey_cluster.nodes
    assert Counter(n.role for n in nodes) == {"master": 3, "replica": 3}
    masters = {n.port for n in nodes if n.role == "master"}
    assert sorted(n.master_port for n in nodes if n.role == "replica") == sorted(masters)

    keys = [f"{{p{n}}}:vc:spread" for n in range(12)]
    assert {valkey_cluster.master_for(k) for k in keys} == masters  # partitions spread out
    with cluster_client(valkey_cluster) as client:
        for key in keys:
            client.set(key, key)
    for key in keys:
        owner = valkey_cluster.master_for(key)
        with node_client(owner) as node:
            assert node.get(key) == key
        with node_client(next(iter(masters - {owner}))) as elsewhere:
            with pytest.raises(MovedError, match=f":{owner}"):
                elsewhere.get(key)


def test_a_watched_transaction_on_one_slot_commits_unless_a_watched_key_changed(
    valkey_cluster: ValkeyCluster,
) -> None:
    offsets, profile = "{p1}:vc:offsets", "{p1}:vc:profile:c-1"
    with cluster_client(valkey_cluster) as client, cluster_client(valkey_cluster) as other:
        client.set(offsets, "10")
        client.delete(profile)
        with client.pipeline(transaction=True) as unit:
            unit.watch(offsets, profile)
            seen = int(unit.get(offsets))
            unit.multi()
            unit.set(offsets, seen + 1)
            unit.set(profile, "v1")
            unit.execute()
        assert (client.get(offsets), client.get(profile)) == ("11", "v1")

        with client.pipeline(transaction=True) as unit:
            unit.watch(offsets, profile)
            unit.get(offsets)
            other.set(offsets, "50")  # another worker wrote the partition meanwhile
            unit.multi()
            unit.set(offsets, "12")
            unit.set(profile, "v2")
            with pytest.raises(WatchError):
                unit.execute()
        assert (client.get(offsets), client.get(profile)) == ("50", "v1")


def test_a_transaction_across_two_slots_is_refused_and_writes_nothing(
    valkey_cluster: ValkeyCluster,
) -> None:
    first, second = "{p1}:vc:cross", "{p2}:vc:cross"
    assert key_slot(first.encode()) != key_slot(second.encode())
    with cluster_client(valkey_cluster) as client:
        client.delete(first)
        client.delete(second)
        with client.pipeline(transaction=True) as unit:
            unit.set(first, "1")
            unit.set(second, "1")
            with pytest.raises(CrossSlotTransactionError):
                unit.execute()
        assert (client.exists(first), client.exists(second)) == (0, 0)
    # the server refuses it too, whatever client sends it
    with node_client(valkey_cluster.master_for(first)) as node:
        with pytest.raises(ClusterCrossSlotError):
            node.mset({first: "1", second: "1"})
    with cluster_client(valkey_cluster) as client:
        assert (client.exists(first), client.exists(second)) == (0, 0)


def test_a_value_written_before_a_planned_failover_is_on_the_new_master(
    valkey_cluster: ValkeyCluster,
) -> None:
    key = "{p3}:vc:failover"
    old = valkey_cluster.master_for(key)
    with cluster_client(valkey_cluster) as client:
        client.set(key, "before")

        new = valkey_cluster.failover(key)

        assert new != old and valkey_cluster.master_for(key) == new
        with node_client(new) as node:
            assert node.get(key) == "before"
        assert {n.port: (n.role, n.master_port) for n in valkey_cluster.nodes}[old] == (
            "replica",
            new,
        )
        # a client built before the failover follows the MOVED to the new master
        client.set(key, "after")
    with node_client(new) as node:
        assert node.get(key) == "after"


def test_a_killed_master_is_replaced_by_its_replica_and_comes_back_as_its_replica(
    valkey_cluster: ValkeyCluster,
) -> None:
    key = key_off_the_seed(valkey_cluster, "vc:kill")
    old = valkey_cluster.master_for(key)
    with node_client(old) as node:
        node.set(key, "before")
        assert node.wait(1, 5000) == 1  # replication is asynchronous: wait until it is copied

    new = valkey_cluster.kill_master(key)
    try:
        assert new != old and valkey_cluster.master_for(key) == new
        with cluster_client(valkey_cluster) as client:
            assert client.get(key) == "before"
            client.set(key, "while it was down")
            assert client.get(key) == "while it was down"
    finally:
        valkey_cluster.restart_node(old)  # leave the session's cluster whole

    back = {n.port: n for n in valkey_cluster.nodes}[old]
    assert (back.role, back.master_port) == ("replica", new)
    with node_client(old, replica=True) as copy:
        assert copy.get(key) == "while it was down"
