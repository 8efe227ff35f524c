"""ecrm on a Redis Cluster (3 masters, a replica each): a worker applies a stream while a
master hands over to its replica and another is killed outright; no event is lost or
applied twice, and every profile equals what its events make."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from agents.profile.reads import read_profile
from streams import counters, keyspace
from streams.settings import Settings
from tests.integration.conftest import SteadyBrowsing, wait_for

pytestmark = pytest.mark.integration

EVENTS = 3000
CUSTOMERS = 200


@pytest.fixture
def on_cluster(settings: Settings, valkey_cluster: Any) -> Iterator[Settings]:
    s = settings.model_copy(update={"redis_url": valkey_cluster.url})
    with s.redis() as client:
        client.flushall()  # every master
    yield s


def applied(s: Settings) -> Counter[str]:
    with s.redis() as client:
        return counters.stats(client, s.partitions)


def test_a_failover_and_a_killed_master_mid_stream_lose_nothing_and_apply_nothing_twice(
    on_cluster: Settings, valkey_cluster: Any, start_worker: Any
) -> None:
    s = on_cluster
    worker = start_worker(s)
    # the partitions whose slots move: one planned handover, one crash of another master
    handed, killed = _partitions_on_two_masters(s, valkey_cluster)
    traffic = SteadyBrowsing(s, EVENTS, CUSTOMERS)
    try:
        traffic.start()
        wait_for(lambda: applied(s)["events"] > 500, timeout=90, what="events applied")
        valkey_cluster.failover(keyspace.tag(handed))
        wait_for(lambda: applied(s)["events"] > 1200, timeout=90, what="progress after failover")
        gone = valkey_cluster.kill_master(keyspace.tag(killed))
        assert gone  # the replica took over
        wait_for(lambda: applied(s)["events"] > 2000, timeout=90, what="progress after a kill")
        traffic.join(timeout=120)
        assert traffic.done.is_set()
        try:
            wait_for(lambda: applied(s)["events"] >= EVENTS, timeout=120)
        except AssertionError:
            raise AssertionError(
                f"not every event applied: {applied(s)}\n{worker.log_tail()}"
            ) from None
        time.sleep(1)  # a late duplicate would show up here
        counts = applied(s)
        assert counts["events"] == EVENTS, worker.log_tail()
        assert counts["duplicates"] == 0
        for customer, n in traffic.sent.items():
            profile = read_profile(s, customer)
            assert profile is not None and profile.events_seen == n, customer
        assert worker.proc.poll() is None, worker.log_tail()
    finally:
        _make_whole(valkey_cluster)


def _partitions_on_two_masters(s: Settings, cluster: Any) -> tuple[int, int]:
    """Two partitions served by different masters, neither the seed node."""
    seed = int(cluster.url.rsplit(":", 1)[1].split("/")[0])
    by_master: dict[int, int] = {}
    for p in range(s.partitions):
        port = cluster.master_for(keyspace.tag(p))
        if port != seed:
            by_master.setdefault(port, p)
    assert len(by_master) >= 2, f"partitions {s.partitions} do not span two masters: {by_master}"
    first, second = list(by_master.values())[:2]
    return first, second


def _make_whole(cluster: Any) -> None:
    """Bring back any node the test killed, so the session's cluster is whole again."""
    for node in cluster.nodes:
        if node.role == "down":
            cluster.restart_node(node.port)
