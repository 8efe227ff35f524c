"""The keeper on the in-memory store (streams/memory_store.py): what one unit commits for a
batch of events, for a sweep, for a bad message and for an identity link — the same keeper
code as the worker runs, in milliseconds. Against real Redis: tests/integration/."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from agents.profile.incoming import Incoming, decode
from agents.profile.keeper import ProfileKeeper
from schemas.profile import from_stored
from streams import keyspace
from streams.memory_store import MemoryStore
from streams.settings import Settings

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


@dataclass
class _App:
    settings: Settings
    store: MemoryStore


@pytest.fixture
def keeper() -> ProfileKeeper:
    settings = Settings(
        privacy_secret="k" * 32,
        topic_prefix="t.",
        partitions=1,
        redis_url="redis://localhost:1/0",
    )
    return ProfileKeeper(_App(settings, MemoryStore(settings.partitions)))  # type: ignore[arg-type]


def _store(keeper: ProfileKeeper) -> MemoryStore:
    return keeper.app.store  # type: ignore[return-value]


def message(kind: str, offset: int, value: dict[str, object] | bytes) -> Incoming:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return decode(f"t.{kind}", kind, 0, offset, b"k", raw)


def order(offset: int, customer: str, when: datetime, amount: str = "100") -> Incoming:
    return message(
        "orders",
        offset,
        {
            "event_id": f"o{offset}",
            "customer_id": customer,
            "ts": when.isoformat(),
            "order_id": f"order-{offset}",
            "status": "paid",
            "amount": amount,
        },
    )


def profile(keeper: ProfileKeeper, customer: str):  # type: ignore[no-untyped-def]
    raw = _store(keeper).values.get(keyspace.profile(customer, keeper.partitions))
    return from_stored(raw) if raw else None


def kafka(keeper: ProfileKeeper, topic: str) -> list[dict[str, object]]:
    entries = _store(keeper).streams[keyspace.kafka_outbox(0)]
    return [orjson.loads(e["value"]) for e in entries if e["topic"] == f"t.{topic}".encode()]


def tables(keeper: ProfileKeeper) -> list[str]:
    return [e["table"].decode() for e in _store(keeper).streams[keyspace.clickhouse_outbox(0)]]


def test_a_batch_commits_profiles_watermark_wake_time_and_outboxes_in_one_unit(
    keeper: ProfileKeeper,
) -> None:
    items = [order(0, "c1", NOW - timedelta(days=3)), order(1, "c1", NOW - timedelta(days=1))]
    applied = asyncio.run(keeper.apply(items, now=NOW))
    assert applied == items
    store = _store(keeper)
    p = profile(keeper, "c1")
    assert p is not None and p.frequency == 2 and p.monetary == 200
    assert store.values[keyspace.offset("kafka", "t.orders", 0)] == b"1"
    assert "c1" in store.zsets[keyspace.wakes(0)]  # R ageing will move them
    assert {"events", "profile_snapshots"} <= set(tables(keeper))
    assert store.hashes[keyspace.stats(0)]["events"] == 2


def test_a_batch_read_again_changes_nothing(keeper: ProfileKeeper) -> None:
    items = [order(0, "c1", NOW - timedelta(days=1))]
    asyncio.run(keeper.apply(items, now=NOW))
    before = dict(_store(keeper).values), len(tables(keeper))
    asyncio.run(keeper.apply(items, now=NOW))
    assert (dict(_store(keeper).values), len(tables(keeper))) == before
    assert _store(keeper).hashes[keyspace.stats(0)]["events"] == 1


def test_a_message_that_is_no_event_is_dead_lettered_and_its_offset_kept(
    keeper: ProfileKeeper,
) -> None:
    bad = message("orders", 0, b"{not json")
    asyncio.run(keeper.apply([bad, order(1, "c1", NOW)], now=NOW))
    letters = kafka(keeper, "dead-letter")
    assert [(d["topic"], d["offset"]) for d in letters] == [("t.orders", 0)]
    assert _store(keeper).values[keyspace.offset("kafka", "t.orders", 0)] == b"1"
    assert profile(keeper, "c1") is not None


def test_the_sweep_steps_a_customer_at_their_wake_time(keeper: ProfileKeeper) -> None:
    last = NOW - timedelta(days=2)
    items = [order(0, "vip", NOW - timedelta(days=20), "4000"), order(1, "vip", last, "3000")]
    asyncio.run(keeper.apply(items, now=NOW))
    was = profile(keeper, "vip").segment  # type: ignore[union-attr]
    wake = last + timedelta(days=keeper.app.settings.r_high_days + 1)
    assert _store(keeper).zsets[keyspace.wakes(0)]["vip"] == int(wake.timestamp() * 1000)
    assert asyncio.run(keeper.sweep([0], now=wake - timedelta(milliseconds=5))) == 0
    assert asyncio.run(keeper.sweep([0], now=wake)) == 1
    moved = kafka(keeper, "segment-changes")[-1]
    assert (moved["from"], moved["to"], moved["cause"]) == (
        was,
        profile(keeper, "vip").segment,  # type: ignore[union-attr]
        "time",
    )


def test_a_link_merges_the_anonymous_id_and_leaves_a_stub_its_later_events_follow(
    keeper: ProfileKeeper,
) -> None:
    link = message(
        "identities",
        0,
        {
            "event_id": "l1",
            "customer_id": "c1",
            "previous_id": "anon-1",
            "ts": (NOW - timedelta(hours=1)).isoformat(),
        },
    )
    asyncio.run(keeper.apply([order(0, "anon-1", NOW - timedelta(hours=2)), link], now=NOW))
    stub = profile(keeper, "anon-1")
    assert stub is not None and stub.merged_into == "c1"
    assert profile(keeper, "c1").frequency == 1  # type: ignore[union-attr]
    assert "anon-1" not in _store(keeper).zsets[keyspace.wakes(0)]
    assert "identity_merges" in tables(keeper)
    # a later event of the old id is the customer's: the stub is found, learnt, followed
    asyncio.run(keeper.apply([order(1, "anon-1", NOW - timedelta(minutes=5))], now=NOW))
    assert profile(keeper, "c1").frequency == 2  # type: ignore[union-attr]
    assert keeper.resolved("anon-1") == "c1"


def test_a_unit_whose_keys_changed_meanwhile_is_redone_on_fresh_data(
    keeper: ProfileKeeper,
) -> None:
    store = _store(keeper)
    key = keyspace.profile("c1", keeper.partitions)
    real_unit = store.unit
    opened = []

    @asynccontextmanager
    async def unit(*args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(1)
        async with real_unit(*args, **kwargs) as u:
            yield u
            if len(opened) == 1:  # another worker writes c1 while the first try decides
                store.write(key, b'{"customer_id":"c1"}')

    store.unit = unit  # type: ignore[method-assign]
    asyncio.run(keeper.apply([order(0, "c1", NOW - timedelta(days=1))], now=NOW))
    assert len(opened) == 2
    assert profile(keeper, "c1").frequency == 1  # type: ignore[union-attr]
