"""The keeper on the in-memory store (streams/memory_store.py): what one unit commits for a
batch of events, for a sweep, for a bad message and for an identity link — the same keeper
code as the worker runs, in milliseconds. Against real Redis: tests/integration/."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from agents.membership.book import ProgrammeBook
from agents.profile.incoming import Incoming, decode
from agents.profile.keeper import ProfileKeeper
from agents.profile.sweep import SliceSize
from agents.rules.book import RulesBook
from schemas.profile import from_stored
from streams import keyspace
from streams.memory_store import MemoryStore
from streams.settings import EXAMPLE_MEMBERSHIP, Settings

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


SWEEP_RULES = """\
policy:
  timezone: Asia/Shanghai
  contact_cap: {per_day: 2}
  quiet_hours: {start: "22:00", end: "08:00"}
rules:
  - id: abandoned-cart
    when:
      event: cart
      not_followed_by: {event: orders, where: {status: paid}}
      within: 30m
    cooldown: 1d
    action: {kind: coupon, channel: sms, params: {value: 10, threshold: 99, valid_for: 48h}}
  - id: win-back
    when: {segment_change: {from: [important_value, general_value], to: [important_keep, general_keep]}}
    action: {kind: message, channel: push, params: {template: we_miss_you}}
"""


def _shop_keeper(tmp_path: Path, size: int) -> ProfileKeeper:
    rules = tmp_path / "rules.yaml"
    rules.write_text(SWEEP_RULES)
    settings = Settings(privacy_secret="k" * 32, topic_prefix="t.", partitions=1)
    return ProfileKeeper(
        _App(settings, MemoryStore(settings.partitions)),  # type: ignore[arg-type]
        rules=RulesBook(rules),
        membership=ProgrammeBook(EXAMPLE_MEMBERSHIP),
        slices=SliceSize.fixed(size),
    )


def _cart(offset: int, customer: str, when: datetime) -> Incoming:
    return message(
        "cart",
        offset,
        {
            "event_id": f"c{offset}",
            "customer_id": customer,
            "ts": when.isoformat(),
            "sku": "s1",
            "qty": 1,
            "price": "120",
        },
    )


def _committed(keeper: ProfileKeeper) -> dict[str, object]:
    """What the units committed, less what tells units apart (their count, their write time)."""
    store = _store(keeper)
    rows: dict[str, list[object]] = {}
    for entry in store.streams[keyspace.clickhouse_outbox(0)]:
        for row in orjson.loads(entry["rows"]):
            row.pop("written_at", None)
            rows.setdefault(entry["table"].decode(), []).append(row)
    kafka: dict[bytes, list[object]] = {}  # by topic: a unit queues its actions first
    for entry in store.streams[keyspace.kafka_outbox(0)]:
        kafka.setdefault(entry["topic"], []).append(dict(entry))
    counts = {k: dict(v) for k, v in store.hashes.items()}
    for fields in counts.values():
        fields.pop("clickhouse_outbox_entries", None)
    return {
        "values": dict(store.values),
        "wakes": dict(store.zsets),
        "kafka": kafka,
        "rows": rows,
        "counts": counts,
    }


def test_the_sweep_decides_the_same_whatever_its_slice_size(tmp_path: Path) -> None:
    # 40 customers: big buyers whose R ages past the threshold (a win-back), members whose
    # points unlock, carts abandoned by day and by night (a coupon, or one deferred to 08:00)
    runs = []
    for size in (1, 7, 1000):
        keeper = _shop_keeper(tmp_path, size)
        items: list[Incoming] = []
        for n in range(40):
            cid = f"c{n:02d}"
            if n % 2 == 0:
                items.append(order(len(items), cid, NOW - timedelta(days=60 - n), "3000"))
                items.append(order(len(items), cid, NOW - timedelta(days=40 - n % 9), "2500"))
            items.append(_cart(len(items), cid, NOW + timedelta(hours=n % 24, minutes=n)))
        items.sort(key=lambda i: i.event.ts)  # type: ignore[union-attr]
        for offset, item in enumerate(items):
            item.offset = offset
        for item in items:  # each event at its own time, as the event-time clock releases them
            asyncio.run(keeper.apply([item], now=item.event.ts))  # type: ignore[union-attr]
        changes = [asyncio.run(keeper.sweep([0], now=NOW + timedelta(days=d))) for d in (1, 3, 20)]
        runs.append((changes, _committed(keeper)))
    changes, committed = runs[0]
    assert sum(changes) > 0  # time moved someone's segment
    kafka = committed["kafka"]
    assert isinstance(kafka, dict) and kafka[b"t.actions"] and kafka[b"t.member-changes"]
    assert runs[1] == runs[0]
    assert runs[2] == runs[0]
