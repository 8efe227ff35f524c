"""A backtest of generated history decides exactly what the live engine decided for the same
events: the profile keeper runs them through Redis with the clock stepped through their times
(and through every moment a customer fell due), the sink lands events and decisions in
ClickHouse, and `ecrm rules backtest` over that history gives the same action ids, outcomes and
times; where a rule ran with a holdout it reports the analysts' measured uplift."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from agents.backtest.run import run_backtest
from agents.profile.incoming import Incoming, decode
from agents.profile.keeper import ProfileKeeper
from agents.profile.policy import rfm_policy
from agents.rules.book import RulesBook
from ecrm.dev.traffic import synthetic_traffic
from schemas.rules import load_rules
from streams import keyspace
from streams.app import create_app
from streams.clickhouse import ClickHouse, connect, migrate
from streams.settings import Settings
from streams.sink import ClickHouseSink
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

START = datetime(2024, 5, 1, tzinfo=UTC)
SPAN = timedelta(days=4)
END = START + SPAN + timedelta(days=1)  # the clock runs a day past the last event

#: an abandoned cart (30m), a count, time- and event-driven segment changes, a cap, quiet hours
RULES = """
policy:
  timezone: Asia/Shanghai
  contact_cap: {per_day: 2}
  quiet_hours: {start: "22:00", end: "08:00"}
  attribution_window: 24h
rules:
  - id: abandoned-cart
    when: {event: cart, not_followed_by: {event: orders, where: {status: paid}}, within: 30m}
    cooldown: 1d
    priority: 50
    holdout: 25%
    action: {kind: coupon, channel: sms, params: {value: 10, threshold: 99, valid_for: 48h}}
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
    holdout: 20%
    action: {kind: coupon, channel: wechat, params: {value: 30, valid_for: 7d}}
  - id: vip
    when: {segment_change: {to: [important_value, important_develop]}}
    priority: 30
    action: {kind: tag, params: {tag: vip}}
"""

Row = tuple[str, str, str, str, str, datetime, int]
HELD_OR_SENT = ("fired", "held_out")


def shop_history(settings: Settings) -> list[Incoming]:
    """A few hundred customers over a few days, decoded like the worker decodes them, in event
    time order (the order the backtest replays), with producer retries kept."""
    items: list[tuple[Any, str, bytes, bytes]] = []
    for e in synthetic_traffic(200, 600, start=START, span=SPAN, seed=11):
        if e.defect is not None:
            continue
        probe = decode("probe", e.topic, 0, 0, None, e.payload())
        assert probe.event is not None
        items.append((probe.event, e.topic, e.key.encode(), e.payload()))
    items.sort(key=lambda i: (i[0].ts, i[0].customer_id, i[0].event_id))
    offsets: Counter[str] = Counter()
    out = []
    for _, topic, key, payload in items:
        out.append(decode(settings.topic(topic), topic, 0, offsets[topic], key, payload))
        offsets[topic] += 1
    return out


async def run_live(keeper: ProfileKeeper, rds: redis.Redis, items: list[Incoming]) -> int:
    """Each event at its own time; before it, a sweep at every moment a customer fell due
    (the worker's sorted set says when), as a worker sweeping without pause would."""
    sweeps = 0

    async def sweep_due(until: datetime, inclusive: bool) -> None:
        nonlocal sweeps
        last: Any = None
        while first := rds.zrange(keyspace.wakes(0), 0, 0, withscores=True):
            at = datetime.fromtimestamp(first[0][1] / 1000, UTC)
            if at > until or (at == until and not inclusive):
                return
            assert first[0] != last, f"sweep at {at} left {first[0]} due: not ms-aligned?"
            last = first[0]
            await keeper.sweep([0], now=at)
            sweeps += 1

    for item in items:
        assert item.event is not None
        await sweep_due(item.event.ts, inclusive=False)
        await keeper.apply([item], now=item.event.ts)
    await sweep_due(END, inclusive=True)
    await keeper.app.store.stop()
    return sweeps


def drain(settings: Settings) -> ClickHouse:
    ch = connect(settings.clickhouse_url)
    migrate(ch)
    sink = ClickHouseSink.from_settings(settings, ch, claim_idle_ms=1000)
    drained = lambda: (sink.drain_once(block_ms=100), sink.pending() == 0)[1]  # noqa: E731
    wait_for(drained, timeout=240, interval=0, what="sink drained")
    return ch


def live_decisions(ch: ClickHouse) -> list[Row]:
    rows = ch.query(
        "SELECT action_id, rule_id, customer_id, outcome, reason, decided_at, released"
        " FROM rule_decisions"
    )
    return sorted(
        (
            r["action_id"],
            r["rule_id"],
            r["customer_id"],
            r["outcome"],
            r["reason"],
            r["decided_at"].astimezone(UTC),
            int(r["released"]),
        )
        for r in rows
    )


def test_a_backtest_of_the_live_history_makes_the_live_decisions(settings, rds, tmp_path: Path):
    settings = settings.model_copy(update={"r_high_days": 1})  # time moves segments within days
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(RULES)
    items = shop_history(settings)
    keeper = ProfileKeeper(create_app(settings), rules=RulesBook(rules_path))
    sweeps = asyncio.run(run_live(keeper, rds, items))

    ch = drain(settings)
    try:
        live = live_decisions(ch)
        rules = load_rules(rules_path)
        run, replay = run_backtest(
            ch,
            rules,
            rfm_policy(settings),
            since=START,
            until=END,
            page_rows=997,
            keep_decisions=True,
        )
        performance = ch.query(
            "SELECT * FROM rule_performance(since = {since:DateTime64(3, 'UTC')},"
            " until = {until:DateTime64(3, 'UTC')}, window_hours = 24)",
            {"since": START, "until": END},
        )
    finally:
        ch.close()
    backtest = sorted(
        (d.action_id, d.rule_id, d.customer_id, d.outcome, d.reason or "", d.decided_at, d.released)
        for d in replay.decisions
    )

    # the history is rich enough to mean something
    assert run.stats.events > 2000 and sweeps > 100
    retried = len(items) - len({i.event.event_id for i in items if i.event is not None})
    assert retried > 0  # the live keeper saw producer retries; ClickHouse holds each event once
    kinds = Counter((rule, outcome, reason) for _, rule, _, outcome, reason, _, _ in live)
    for expected in [
        ("abandoned-cart", "fired", ""),
        ("abandoned-cart", "held_out", "holdout"),
        ("abandoned-cart", "suppressed", "cooldown"),
        ("still-looking", "fired", ""),
        ("still-looking", "suppressed", "contact_cap"),
        ("win-back", "fired", ""),
        ("vip", "fired", ""),
    ]:
        assert kinds[expected] > 0, (expected, kinds)
    assert any(outcome == "deferred" for _, _, _, outcome, _, _, _ in live), kinds

    # the same decisions: ids, outcomes, reasons, times
    assert len(backtest) == len(live)
    assert backtest == live

    # the report adds them up
    report = run.report.outcome("abandoned-cart")
    assert report.fired == kinds[("abandoned-cart", "fired", "")]
    assert report.held_out == kinds[("abandoned-cart", "held_out", "holdout")]
    # where a rule ran with a holdout, the uplift is the analysts' rule_performance
    measured = {u.rule_id: u for u in run.uplift}
    assert set(measured) == {"abandoned-cart", "win-back"}
    for row in performance:
        if row["rule_id"] not in measured:
            continue
        u = measured[row["rule_id"]]
        assert (u.treated, u.treated_converted, u.held_out, u.held_out_converted, u.uplift) == (
            row["treated_customers"],
            row["treated_converted"],
            row["held_out_customers"],
            row["held_out_converted"],
            row["uplift"],
        )
        # every customer it touched in [START, END) is in one group (08:00 deliveries at END,
        # 00:00 UTC, fall outside)
        touched = {
            c for _, r, c, o, _, at, _ in live if r == u.rule_id and o in HELD_OR_SENT and at < END
        }
        assert u.treated + u.held_out == len(touched)

    # the command prints the same numbers (the test's ClickHouse session is closed by now)
    env = {**settings.as_env(), "ECRM_RULES_FILE": str(rules_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "ecrm", "rules", "backtest", str(rules_path), "--json"]
        + ["--since", START.isoformat(), "--until", END.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    printed = orjson.loads(out.stdout)
    assert printed["rules"] == run.report.as_json()["rules"]
    assert printed["uplift"] == [u.as_json() for u in run.uplift]
    table = subprocess.run(
        [sys.executable, "-m", "ecrm", "rules", "backtest", str(rules_path)]
        + ["--since", START.isoformat(), "--until", END.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert table.returncode == 0, table.stderr
    assert "abandoned-cart" in table.stdout and "measured uplift" in table.stdout
    print(table.stdout)
