"""A backlog read late decides exactly what the events decided when they happened.

Topics that already hold history — a worker back after downtime, a shop connecting weeks of
traffic — are read at their own paces: a batch may hold the orders of tomorrow and the carts
of this morning; and a storefront writes some events late within a topic. Whatever the
interleaving across topics, wherever the batch boundaries fall, wherever the worker restarts
and whichever units Redis loses (the worker then replays them from its watermark), the live
keeper (against the real Valkey, its clocks fed the topics' end offsets) makes the decisions
`ecrm rules backtest` makes over the same events in the order of decision (docs/operations.md):
same actions, outcomes, trigger events, action ids and times.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from agents.backtest.replay import Replay
from agents.profile.event_time import decision_order
from agents.profile.incoming import Incoming, decode
from agents.profile.keeper import ProfileKeeper
from agents.profile.policy import rfm_policy
from agents.profile.positions import BrokerView
from agents.rules.book import RulesBook
from agents.rules.shell import decision_row
from ecrm.dev.traffic import synthetic_traffic
from schemas.rules import load_rules
from streams import keyspace
from streams.app import INPUT_TOPICS, create_app
from streams.clickhouse import rows_json
from streams.outbox import parse_entry
from streams.settings import Settings
from tests.integration.conftest import consumed, wait_for
from tests.integration.test_resume import restore, snapshot

pytestmark = pytest.mark.integration

# history is replayed as if live: nothing is old enough to be suppressed as historical
RULES = """
policy:
  max_event_age: 3650d
  timezone: Asia/Shanghai
  contact_cap: {per_day: 3}
  quiet_hours: {start: "22:00", end: "08:00"}
rules:
  - id: abandoned-cart
    when: {event: cart, not_followed_by: {event: orders, where: {status: paid}}, within: 30m}
    cooldown: 1d
    priority: 50
    holdout: 25%
    action: {kind: coupon, channel: sms, params: {value: 10, threshold: 99, valid_for: 48h}}
  - id: welcome
    when: {event: orders, where: {status: paid}, first_order: true}
    priority: 30
    action: {kind: message, channel: sms, params: {template: welcome}}
  - id: still-looking
    when: {event: browse, count: {at_least: 2, within: 24h}, per: sku, unless: {event: cart}}
    cooldown: 12h
    priority: 20
    action: {kind: message, channel: push, params: {template: still_looking}}
  - id: win-back
    when:
      segment_change:
        from: [important_value, general_value, important_develop, general_develop]
        to: [important_keep, general_keep, important_retain, general_retain]
    priority: 40
    action: {kind: coupon, channel: wechat, params: {value: 30, valid_for: 7d}}
"""

Key = tuple[str, str, str, str, str, str, str]


def history(seed: int, customers: int, sessions: int, end: datetime) -> dict[str, list[Any]]:
    """Each topic's messages in the order a storefront wrote them (event time per topic)."""
    span = timedelta(days=3)
    by_topic: dict[str, list[Any]] = {name: [] for name in INPUT_TOPICS}
    for e in synthetic_traffic(customers, sessions, start=end - span, span=span, seed=seed):
        if e.defect is None:
            by_topic[e.topic].append(e)
    for events in by_topic.values():
        events.sort(key=lambda e: decode("t", e.topic, 0, 0, None, e.payload()).at)
    return by_topic


def some_late(by_topic: dict[str, list[Any]], rng: random.Random, share: float) -> int:
    """Move `share` of each topic's events a few places later: written after events that
    happened after them (a phone that was offline, a retry). Returns how many were moved."""
    moved = 0
    for events in by_topic.values():
        for i in range(len(events) - 1, -1, -1):
            if rng.random() < share:
                event = events.pop(i)
                events.insert(min(len(events), i + rng.randint(1, 40)), event)
                moved += 1
    return moved


def arrivals(by_topic: dict[str, list[Any]], rng: random.Random) -> list[tuple[str, int]]:
    """(topic, offset) in a consumption order: topics read at very different paces."""
    pace = {name: rng.choice((1, 5, 50, 500)) for name in by_topic}
    left = {name: 0 for name in by_topic}
    order: list[tuple[str, int]] = []
    while any(left[n] < len(by_topic[n]) for n in by_topic):
        name = rng.choice([n for n in by_topic if left[n] < len(by_topic[n])])
        take = rng.randint(1, pace[name])
        for offset in range(left[name], min(left[name] + take, len(by_topic[name]))):
            order.append((name, offset))
        left[name] = min(left[name] + take, len(by_topic[name]))
    return order


def live_decisions(rds: redis.Redis, partitions: int) -> set[Key]:
    found: set[Key] = set()
    outboxes = [keyspace.clickhouse_outbox(p) for p in range(partitions)]
    for _, fields in (entry for outbox in outboxes for entry in rds.xrange(outbox)):
        table, rows = parse_entry(fields)
        if table == "rule_decisions":
            found |= {_key(r) for r in rows}
    return found


def _key(r: dict[str, Any]) -> Key:
    return (
        r["action_id"],
        r["rule_id"],
        r["customer_id"],
        r["outcome"],
        r["reason"],
        r["trigger_event_id"],
        r["decided_at"],
    )


def backtest_decisions(
    rules_path: Path, settings: Settings, by_topic: dict[str, list[Any]], end: datetime
) -> set[Key]:
    """`ecrm rules backtest` over the topics: each in offset order, merged as the keeper
    merges them (one partition here: with no budget, partitions only interleave customers)."""
    runs = [
        [decode("t", name, 0, 0, None, e.payload()).event for e in by_topic[name]]
        for name in INPUT_TOPICS
    ]
    run = Replay(load_rules(rules_path), rfm_policy(settings))
    run.feed_decided(decision_order(runs, lambda e: e.ts))
    run.advance(end)
    rows = orjson.loads(rows_json([decision_row(d) for d in run.decisions]))
    return {_key(r) for r in rows}


async def run_worker_over(
    settings: Settings,
    rules_path: Path,
    by_topic: dict[str, list[Any]],
    order: list[tuple[str, int]],
    rng: random.Random,
    restarts: int,
    rds: redis.Redis,
    lose: bool = False,
) -> tuple[int, datetime, set[Key]]:
    """The keeper consumes `order` in batches of random sizes, sweeping between them, and is
    restarted `restarts` times (held events lost, reading resumed at Redis's watermarks).
    With `lose`, each restart first puts Redis back as it was a few batches earlier (a
    failover to a replica those units had not reached); returns what was decided meanwhile."""
    ends = {settings.topic(n): len(v) for n, v in by_topic.items()}

    def keeper() -> ProfileKeeper:
        broker = BrokerView(lambda topic, partition: ends[topic])
        return ProfileKeeper(create_app(settings), rules=RulesBook(rules_path), broker=broker)

    current = keeper()
    restart_at = sorted(rng.sample(range(len(order)), restarts)) if order else []
    i = 0
    held_max = 0
    saved: dict[bytes, tuple[bytes, int]] = {}
    lost: set[Key] = set()
    while i < len(order):
        if restart_at and i >= restart_at[0]:
            restart_at.pop(0)
            await current.app.store.stop()
            if lose and saved:
                lost |= live_decisions(rds, settings.partitions)  # relayed, then lost
                restore(rds, saved)
            current = keeper()
            # a restarted worker reads each topic again from Redis's watermark + 1: what it
            # had applied stays applied, what it held is read again
            marks = {
                n: int(rds.get(keyspace.offset("kafka", settings.topic(n), 0)) or -1)
                for n in by_topic
            }
            order = [(n, o) for n, o in order if o > marks[n]]
            i = 0
            continue
        size = rng.choice((1, 7, 100, 1000))
        batch = order[i : i + size]
        i += size
        items: list[Incoming] = [
            decode(settings.topic(n), n, 0, o, None, by_topic[n][o].payload()) for n, o in batch
        ]
        await current.apply(items)
        held_max = max(held_max, current.event_clock.held() if current.event_clock else 0)
        if rng.random() < 0.5:
            await current.release_held()
            await current.sweep([0])
        if lose and rng.random() < 0.2:
            saved = snapshot(rds)
    while current.event_clock is not None and current.event_clock.held():
        await current.release_held()
    # live now: every moment that fell due up to the wall clock, at its own instant
    end = datetime.now(UTC)
    while rds.zrangebyscore(keyspace.wakes(0), "-inf", int(end.timestamp() * 1000), 0, 1):
        await current.sweep([0], now=end)
    await current.app.store.stop()
    return held_max, end, lost


@hsettings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 10_000),
    restarts=st.integers(0, 2),
    late=st.sampled_from([0, 8]),
    lose=st.booleans(),
)
def test_a_backlog_read_at_any_pace_decides_what_the_backtest_decides(
    settings, rds, tmp_path: Path, seed: int, restarts: int, late: int, lose: bool
) -> None:
    """`late`: one event in that many of each topic written some places after later ones;
    `lose`: each restart follows units Redis lost."""
    rds.flushdb()
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(RULES)
    s = settings.model_copy(update={"r_high_days": 1})  # time moves segments within days
    last = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    by_topic = history(seed, customers=60, sessions=250, end=last)
    rng = random.Random(seed)
    if late:
        some_late(by_topic, rng, 1 / late)
    order = arrivals(by_topic, rng)

    held, end, lost = asyncio.run(
        run_worker_over(s, rules_path, by_topic, order, rng, restarts, rds, lose)
    )

    live = live_decisions(rds, s.partitions)
    backtest = backtest_decisions(rules_path, s, by_topic, end)
    rules_seen = Counter(k[1] for k in backtest)
    assert rules_seen["abandoned-cart"] > 0 and rules_seen["welcome"] > 0, rules_seen
    assert held > 0  # the topics really were read at different paces
    assert live - backtest == set(), sorted(live - backtest)[:5]
    assert backtest - live == set(), sorted(backtest - live)[:5]
    # what lost units decided (and the relay sent) was decided again, under the same ids
    assert {k for k in lost if k[6] <= _text(end)} <= live


def backlog_through_the_worker(
    settings: Settings,
    start_worker: Any,
    produce: Any,
    rds: redis.Redis,
    tmp_path: Path,
    *,
    customers: int,
    sessions: int,
    seed: int,
) -> tuple[set[Key], set[Key], int]:
    """Topics already holding days of traffic, then a worker started on them: (the worker's
    decisions, the backtest's, events) up to the moment everything due had been decided."""
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(RULES)
    s = settings.model_copy(update={"r_high_days": 1, "rules_file": rules_path})
    last = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    by_topic = history(seed, customers=customers, sessions=sessions, end=last)
    # the storefront wrote each topic in its own order; Kafka holds them all before the start
    for name, events in by_topic.items():
        for e in events:
            produce(name, e.payload(), key=e.key)
    produce.flush()
    total = sum(len(v) for v in by_topic.values())
    start_worker(s)
    wait_for(lambda: consumed(rds) >= total, timeout=600, what=f"{total} events")
    end = datetime.now(UTC)
    end_ms = int(end.timestamp() * 1000)
    due_keys = [keyspace.wakes(p) for p in range(s.partitions)]
    wait_for(
        lambda: not any(rds.zrangebyscore(k, "-inf", end_ms, 0, 1) for k in due_keys),
        timeout=120,
        what="every moment due by the end decided",
    )
    live = {k for k in live_decisions(rds, s.partitions) if k[6] <= _text(end)}
    return live, backtest_decisions(rules_path, s, by_topic, end), total


def _text(moment: datetime) -> str:
    """A time as the decision rows hold it."""
    return orjson.loads(rows_json([{"t": moment}]))[0]["t"]


def test_a_worker_started_on_topics_holding_days_of_traffic_sends_what_live_traffic_would(
    settings, start_worker, produce, rds, tmp_path: Path
) -> None:
    # ECRM_TEST_BACKLOG_SESSIONS=6000 makes it a backlog of about 45k events
    sessions = int(os.environ.get("ECRM_TEST_BACKLOG_SESSIONS", "700"))
    live, backtest, total = backlog_through_the_worker(
        settings,
        start_worker,
        produce,
        rds,
        tmp_path,
        customers=max(150, sessions // 5),
        sessions=sessions,
        seed=5,
    )
    fired = Counter(k[1] for k in backtest if k[3] == "fired")
    print(f"backlog of {total} events: live {len(live)} decisions, backtest {len(backtest)};")
    print(f"fired: live {Counter(k[1] for k in live if k[3] == 'fired')}, backtest {fired}")
    assert total > 3000 and fired["abandoned-cart"] > 20, (total, fired)
    assert live - backtest == set(), sorted(live - backtest)[:5]
    assert backtest - live == set(), sorted(backtest - live)[:5]
