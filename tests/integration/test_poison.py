"""An event that makes its batch raise is dead-lettered with the exception; the rest is applied
exactly once, and the worker keeps going (agents/profile/poison.py)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer

from agents.profile.incoming import Incoming, decode
from agents.profile.keeper import ProfileKeeper
from agents.profile.reads import read_profile
from agents.rules.book import RulesBook
from streams import keyspace
from streams.app import create_app
from streams.counters import kafka_outboxes
from tests.integration.conftest import consumed, stats, wait_for
from tests.integration.test_pipeline import assert_profiles_match, distinct_ids, storefront

pytestmark = pytest.mark.integration


#: a time window wide enough to let a year-9999 event reach the keeper
WIDE = {"ts_max_future_s": 1e12}  # past the end of the calendar


def poison(event_id: str, customer: str) -> dict[str, Any]:
    """A cart add whose abandoned-cart deadline (30 minutes later) is past year 9999: the rules'
    timer raises OverflowError on it. The default time window refuses such a date at the door
    (ECRM_TS_MAX_FUTURE_S, 24 h); a shop that widened the window lets it in (`WIDE`), and then
    it is a genuine poison, not a test hook. If the step learns to handle such a date, find
    another input that still raises."""
    return {
        "event_id": event_id,
        "customer_id": customer,
        "ts": "9999-12-31T23:59:00+00:00",
        "sku": "s",
        "qty": 1,
        "price": "1.00",
    }


def batch_with_poison(now: datetime) -> list[Incoming]:
    """40 cart adds of 5 customers on 2 partitions, a poison for c3 among them, and one more
    cart add of c3 after it; offsets in order within each partition, as Kafka hands them."""
    values = [
        {
            "event_id": f"e{i}",
            "customer_id": f"c{i % 5}",
            "ts": (now - timedelta(minutes=i)).isoformat(),
            "sku": f"s{i}",
            "qty": 1,
            "price": "9.90",
        }
        for i in range(41)
    ]
    values[40]["customer_id"] = "c3"
    values.insert(29, poison("bad", "c3"))  # c3 has good events before and after it
    offsets = [0, 0]
    items = []
    for n, value in enumerate(values):
        partition = n % 2
        offset, offsets[partition] = offsets[partition], offsets[partition] + 1
        raw = orjson.dumps(value)
        items.append(
            decode("t.cart", "cart", partition, offset, value["customer_id"].encode(), raw)
        )
    return items


def test_a_poison_event_is_dead_lettered_alone_and_its_batch_applied(settings, rds):
    keeper = ProfileKeeper(create_app(settings), rules=RulesBook(settings.rules_file))
    now = datetime.now(UTC)
    items = batch_with_poison(now)
    bad = items[29]

    async def scenario() -> None:
        await keeper.apply(items, now=now)
        await keeper.app.store.stop()

    asyncio.run(scenario())
    counts = stats(rds)
    assert (counts["events"], counts["dead_letters"], counts["poison"]) == (41, 1, 1)
    assert set(read_profile(settings, "c3").cart) == {f"s{i}" for i in range(41) if i % 5 == 3} | {
        "s40"
    }
    for partition in (0, 1):
        raw = rds.get(keyspace.offset(keeper.app.store.cluster_id, "t.cart", partition))
        assert int(raw) == max(i.offset for i in items if i.partition == partition)
    letters = [
        orjson.loads(f[b"value"])
        for outbox in kafka_outboxes(settings.partitions)
        for _, f in rds.xrange(outbox)
        if f[b"topic"] == settings.topic("dead-letter").encode()
    ]
    assert len(letters) == 1
    assert (letters[0]["partition"], letters[0]["offset"]) == (bad.partition, bad.offset)
    assert letters[0]["key"] == "c3"
    assert letters[0]["error"].startswith("OverflowError: ")
    assert orjson.loads(letters[0]["value_text"])["event_id"] == "bad"


def test_poison_events_among_many_do_not_stop_a_worker_killed_while_it_splits(
    settings, start_worker, produce, rds
):
    """Poison dense enough that most batches are being split when the worker is killed."""
    events = storefront(customers=300, n=20000, seed=4)
    rng = random.Random(4)
    poisons = 0
    for kind, value in events:
        produce(kind, value)
        if rng.random() < 0.004:
            poisons += 1
            produce("cart", poison(f"bad{poisons}", value["customer_id"]))
    produce.flush()
    wide = settings.model_copy(update=WIDE)
    first = start_worker(wide)
    wait_for(lambda: stats(rds).get("poison", 0) >= 3, timeout=120, what="a few poisons found")
    first.kill()
    assert stats(rds).get("poison", 0) < poisons, "the kill came too late to prove anything"
    worker = start_worker(wide)
    total = len(events) + poisons
    wait_for(lambda: consumed(rds) >= total, timeout=240, what="all events after restart")
    counts = stats(rds)
    assert (counts["events"], counts["poison"]) == (distinct_ids(events), poisons)
    assert counts["dead_letters"] == poisons
    assert_profiles_match(settings, events)
    assert worker.proc.poll() is None, worker.log_tail()
    assert "dead-lettering" in worker.log_path.read_text() + first.log_path.read_text()

    consumer = KafkaConsumer(
        settings.topic("dead-letter"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )
    letters: list[dict[str, Any]] = []
    wait_for(
        lambda: (letters.extend(orjson.loads(m.value) for m in consumer), len(letters) >= poisons)[
            1
        ],
        what="every poison on the dead-letter topic",
    )
    consumer.close()
    ids = sorted(orjson.loads(letter["value_text"])["event_id"] for letter in letters)
    assert ids == sorted(f"bad{i}" for i in range(1, poisons + 1))
    assert all(letter["error"].startswith("OverflowError") for letter in letters)
