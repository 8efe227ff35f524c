"""ecrm on a Redis Cluster (3 masters, a replica each): a worker applies a stream while a
master hands over to its replica and another is killed outright; no event is lost or
applied twice, and every profile equals what its events make. A link between ids whose keys
live in different slots merges them all the same."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agents.profile.reads import read_profile
from streams import counters, keyspace
from streams.settings import Settings
from tests.integration.conftest import SteadyBrowsing, wait_for
from tests.integration.test_campaigns import Actions

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


def test_a_link_between_ids_in_different_slots_merges_them_and_later_events_follow(
    on_cluster: Settings, start_worker: Any, produce: Any
) -> None:
    """An anonymous id and the customer it logs in as live in different slots: the link is
    handed over between their partitions (agents/identity_handover.py), the customer ends up
    with everything, and the anonymous id's later events reach the customer too."""
    s = on_cluster
    anon = next(f"anon-{i}" for i in range(100) if keyspace.home(f"anon-{i}", s.partitions) != 0)
    customer = next(
        f"cust-{i}"
        for i in range(100)
        if keyspace.home(f"cust-{i}", s.partitions) != keyspace.home(anon, s.partitions)
    )
    start_worker(s)
    now = datetime.now(UTC) - timedelta(minutes=10)

    def view(n: int, who: str) -> dict[str, Any]:
        at = now + timedelta(seconds=n)
        return {"event_id": f"v{n}", "customer_id": who, "ts": at.isoformat(), "sku": f"S{n}"}

    for n in range(3):
        produce("browse", view(n, anon))
    produce("browse", view(3, customer))
    link = {
        "event_id": "login-1",
        "customer_id": customer,
        "previous_id": anon,
        "ts": (now + timedelta(seconds=10)).isoformat(),
    }
    produce("identities", link)
    produce.flush()
    wait_for(
        lambda: (p := read_profile(s, customer)) is not None and p.events_seen == 4,
        timeout=60,
        what="the anonymous views merged into the customer",
    )
    produce("browse", view(20, anon))  # after the link: the customer's
    produce.flush()
    wait_for(
        lambda: (p := read_profile(s, customer)) is not None and p.events_seen == 5,
        timeout=60,
        what="a later view of the anonymous id applied to the customer",
    )
    merged = read_profile(s, customer)
    assert merged is not None and set(merged.views) == {"S0", "S1", "S2", "S3", "S20"}
    read_as = read_profile(s, anon)  # the anonymous id reads as the customer
    assert read_as is not None and (read_as.customer_id, read_as.events_seen) == (customer, 5)
    counts = applied(s)
    assert counts["identity_merges"] == 1 and counts["identity_handovers"] == 1
    assert counts["duplicates"] == 0 and counts["dead_letters"] == 0
    produce("identities", link)  # the same link again: nothing moves twice
    produce.flush()
    wait_for(lambda: applied(s)["duplicates"] + applied(s)["events"] >= 7, timeout=60)
    time.sleep(1)
    assert applied(s)["identity_merges"] == 1


WELCOME = """
policy: {max_event_age: 3650d}
rules:
  - id: welcome
    when: {event: orders, where: {status: paid}, first_order: true}
    action: {kind: message, channel: sms, params: {template: welcome}}
"""


def test_a_master_lost_behind_a_lagging_replica_is_replayed_to_the_same_actions(
    on_cluster: Settings, valkey_cluster: Any, start_worker: Any, produce: Any, tmp_path: Any
) -> None:
    """A master's replica lags (frozen, its link cut: every WAIT times out), the worker goes
    on, the relay sends the welcomes of units only the master has, then the master dies. The
    worker stops (`WatermarkBehind`) and, restarted, replays the lost units from Redis's
    watermark: each customer's first order was the October one in the lost pass (it came in a
    batch of its own) and is again in the replay (which reads it with the late June one), so
    every welcome comes again under the id it had — a consumer deduping by id sees one."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(WELCOME)
    s = on_cluster.model_copy(update={"rules_file": rules, "redis_wait_ms": 100})
    lost_partition, _ = _partitions_on_two_masters(s, valkey_cluster)
    key = keyspace.tag(lost_partition)
    here = [f"w{i}" for i in range(400) if keyspace.home(f"w{i}", s.partitions) == lost_partition]
    first, customers = here[0], here[1:26]
    october, june = datetime(2026, 10, 25, tzinfo=UTC), datetime(2026, 6, 2, tzinfo=UTC)

    def order(customer: str, n: int, at: datetime) -> dict[str, Any]:
        return {
            "event_id": f"{customer}-o{n}",
            "customer_id": customer,
            "ts": at.isoformat(),
            "order_id": f"{customer}-{n}",
            "status": "paid",
            "amount": "120",
        }

    def handled() -> int:
        with s.redis() as client:
            return counters.stats(client, s.partitions)["events"]

    actions = Actions(s)
    worker = start_worker(s)
    replica = 0
    try:
        produce("orders", order(first, 0, october))  # the partition's watermark is set
        produce.flush()
        wait_for(lambda: handled() >= 1, timeout=60, what="the worker running")
        replica = valkey_cluster.lag_replica(key)
        for c in customers:  # the lost pass: the October orders in batches of their own
            produce("orders", order(c, 1, october))
        produce.flush()
        wait_for(lambda: handled() >= 1 + len(customers), timeout=60, what="October applied")
        for c in customers:  # then each customer's late June order
            produce("orders", order(c, 2, june))
        produce.flush()
        wait_for(lambda: handled() >= 1 + 2 * len(customers), timeout=60, what="June applied")
        wait_for(
            lambda: len({a["customer_id"] for a in actions.poll()} & set(customers)) >= 5,
            timeout=60,
            what="welcomes of the lost units relayed",
        )
        valkey_cluster.kill_lagging_master(key, replica)
        produce("orders", order(customers[0], 3, october))  # the worker reads on: and stops
        produce.flush()
        try:
            wait_for(lambda: worker.proc.poll() is not None, timeout=60, what="it stopping")
        except AssertionError:
            raise AssertionError(f"{handled()} handled\n{worker.log_tail(80)}") from None
        assert "WatermarkBehind" in worker.log_tail(200)
        worker = start_worker(s)  # compose restarts it
        wait_for(lambda: handled() >= 2 + 2 * len(customers), timeout=90, what="the replay")
        received = actions.settle(3.0)
    finally:
        valkey_cluster.thaw(replica)
        actions.close()
        _make_whole(valkey_cluster)
    by_id: dict[str, dict[str, Any]] = {}
    welcomes: dict[str, set[str]] = {}
    for a in received:
        assert by_id.setdefault(a["action_id"], a) == a  # an id sent again is the same action
        welcomes.setdefault(a["customer_id"], set()).add(a["action_id"])
    assert set(customers) <= set(welcomes)
    twice = {c: ids for c, ids in welcomes.items() if len(ids) > 1}
    assert twice == {}, twice  # no customer welcomed twice under two ids
    for c in customers:
        (action,) = [a for a in by_id.values() if a["customer_id"] == c]
        assert action["trigger_event_id"] == f"{c}-o1"  # the October order, first by offset
