"""Audiences and campaigns: a where-clause or a named query selects the customers an
independent Python filter over the same profiles selects; and on the live pipeline a campaign
reaches each selected customer once — through the worker's rules, with the rule's holdout —
however often it is sent, while customers outside the audience get nothing.

The test process owns the embedded ClickHouse (the worker runs with sink=no): it drains the
outbox into it, closes it, and the `ecrm` commands run as child processes open it in turn.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaConsumer

from agents.audience import select_audience
from agents.profile.reads import read_profile
from agents.rules.contact_policy import holdout
from streams import keyspace
from streams.clickhouse import ClickHouse, connect, migrate
from streams.settings import Settings
from tests.integration.analytics_history import generate
from tests.integration.conftest import consumed, ecrm, rule_stats, stats, wait_for
from tests.integration.test_pipeline import sink_all

pytestmark = pytest.mark.integration

RULES = """
rules:
  - id: spring-campaign
    when: {event: campaigns, where: {campaign: spring-sale}}
    holdout: 20%
    action: {kind: coupon, channel: sms, params: {value: 20, valid_for: 7d, template: spring}}
"""
#: important_keep: two orders, 40 and 50 days ago, ¥600 in all (R low, F high, M high)
KEEP = [f"keep-{i:02d}" for i in range(30)]
#: general_retain: one ¥50 order 40 days ago
SMALL = [f"small-{i:02d}" for i in range(10)]
AUDIENCE_WHERE = "segment = 'important_keep' AND monetary >= 500"


def shop_history(now: datetime) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    for cid in KEEP + SMALL:
        orders = [(40, "300.00"), (50, "300.00")] if cid in KEEP else [(40, "50.00")]
        for n, (days, amount) in enumerate(orders):
            events.append(
                (
                    "orders",
                    {
                        "event_id": f"{cid}-o{n}",
                        "customer_id": cid,
                        "ts": (now - timedelta(days=days)).isoformat(),
                        "order_id": f"{cid}-o{n}",
                        "status": "paid",
                        "amount": amount,
                    },
                )
            )
    return events


def decisions_made(rds: redis.Redis) -> int:
    counts = rule_stats(rds)
    return sum(n for name, n in counts.items() if name.startswith("spring-campaign|"))


class Actions:
    """`ecrm.actions` read from the beginning, as a downstream consumer reads it."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = KafkaConsumer(
            settings.topic("actions"),
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
        )
        self.received: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        for records in self.consumer.poll(timeout_ms=100).values():
            self.received += [orjson.loads(r.value) for r in records]
        return self.received

    def settle(self, seconds: float) -> list[dict[str, Any]]:
        end = datetime.now(UTC) + timedelta(seconds=seconds)
        while datetime.now(UTC) < end:
            self.poll()
        return self.received

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def actions(settings: Settings):
    topic = Actions(settings)
    yield topic
    topic.close()


def test_a_campaign_reaches_its_audience_once_through_the_rules_and_their_holdout(
    settings: Settings, start_worker, produce, rds: redis.Redis, actions: Actions, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    s = settings.model_copy(update={"rules_file": rules})
    start_worker(s)
    history = shop_history(datetime.now(UTC))
    for kind, value in history:
        produce(kind, value)
    produce.flush()
    wait_for(lambda: consumed(rds) >= len(history), timeout=90, what="the shop's history")
    # the history is weeks old: its events are decided as of their own times, then the sweep
    # steps each customer through what time did since (R ageing moves the lapsed ones)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    due = [keyspace.wakes(p) for p in range(s.partitions)]
    wait_for(
        lambda: not any(rds.zrangebyscore(k, "-inf", now_ms, 0, 1) for k in due),
        timeout=60,
        what="time caught up with",
    )
    sink_all(s).close()  # profiles into ClickHouse; let go of it for the commands

    # 圈选: the valuable customers who stopped buying, from their profiles
    audience = tmp_path / "audience.csv"
    done = ecrm(s, "audience", "export", "--where", AUDIENCE_WHERE, "--out", str(audience))
    assert done.returncode == 0, done.stderr
    assert f"{len(KEEP)} customers selected" in done.stderr
    with audience.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["customer_id"] for r in rows] == KEEP
    assert {(r["segment"], r["monetary"], r["recency_days"]) for r in rows} == {
        ("important_keep", "600.00", "40")
    }

    held = {cid for cid in KEEP if holdout("spring-campaign", cid, 0.2)}
    assert 0 < len(held) < len(KEEP)  # the ids are fixed: both groups are there
    treated = sorted(set(KEEP) - held)

    done = ecrm(s, "campaign", "send", "spring-sale", "--audience", str(audience))
    assert done.returncode == 0, done.stderr
    assert f"{len(KEEP)} customers selected" in done.stdout
    assert f"{len(KEEP)} events sent to {s.topic('campaigns')}" in done.stdout
    assert "spring-campaign" in done.stdout
    wait_for(lambda: decisions_made(rds) >= len(KEEP), timeout=60, what="a decision each")
    wait_for(lambda: len(actions.poll()) >= len(treated), timeout=60, what="the coupons")

    # sent again, selected by the where-clause this time: the same events, counted once
    seen = consumed(rds)
    done = ecrm(s, "campaign", "send", "spring-sale", "--where", AUDIENCE_WHERE)
    assert done.returncode == 0, done.stderr
    assert f"{len(KEEP)} events sent" in done.stdout
    wait_for(lambda: consumed(rds) >= seen + len(KEEP), timeout=60, what="the second send")
    assert stats(rds)["duplicates"] >= len(KEEP)
    received = actions.settle(3.0)

    assert sorted(a["customer_id"] for a in received) == treated  # none for the held out
    assert len({a["action_id"] for a in received}) == len(treated)
    for action in received:
        assert action["rule_id"] == "spring-campaign" and action["kind"] == "coupon"
        assert action["trigger_event_id"] == f"campaign:spring-sale:{action['customer_id']}"
    assert decisions_made(rds) == len(KEEP)

    ch = sink_all(s)
    try:
        decided = ch.query(
            "SELECT customer_id, groupArray(outcome) AS outcomes FROM rule_decisions "
            "GROUP BY customer_id ORDER BY customer_id"
        )
        sent = ch.query(
            "SELECT count() AS n, uniqExact(event_id) AS ids FROM events WHERE kind = 'campaign'"
        )
        stored = ch.query(
            "SELECT DISTINCT campaign, source_topic FROM events WHERE kind = 'campaign'"
        )
    finally:
        ch.close()
    # one decision per selected customer, none for anybody else
    assert {row["customer_id"]: row["outcomes"] for row in decided} == {
        cid: ["held_out" if cid in held else "fired"] for cid in KEEP
    }
    assert sent == [{"n": len(KEEP), "ids": len(KEEP)}]  # recorded for audit, once
    assert stored == [{"campaign": "spring-sale", "source_topic": s.topic("campaigns")}]

    # a campaign is not something the customer did: their profile is as their orders left it
    profile = read_profile(s, KEEP[0])
    assert profile is not None
    assert (profile.events_seen, profile.frequency, str(profile.monetary)) == (2, 2, "600.00")
    assert profile.segment == "important_keep"


# --- selecting on a generated history ----------------------------------------------------------

NOW = datetime.now(UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def latest_profiles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A chdb folder with the analysts' generated profile snapshots (every customer ending in 7
    tagged vip), closed again; and each customer's latest snapshot, computed in Python."""
    snapshots = generate(20240501).profile_snapshots
    for row in snapshots:
        row["tags"] = ["vip"] if row["customer_id"].endswith("7") else []
    folder = tmp_path_factory.mktemp("audiences") / "clickhouse"
    ch = connect(f"chdb://{folder}")
    try:
        migrate(ch)
        ch.insert("profile_snapshots", snapshots, token="audience-snapshots")
    finally:
        ch.close()
    latest: dict[str, dict[str, Any]] = {}
    for row in snapshots:
        if row["customer_id"] not in latest or row["as_of"] > latest[row["customer_id"]]["as_of"]:
            latest[row["customer_id"]] = row
    return folder, sorted(latest.values(), key=lambda r: r["customer_id"])


@pytest.fixture
def profiles_ch(latest_profiles: tuple[Path, list[dict[str, Any]]]) -> Iterator[ClickHouse]:
    ch = connect(f"chdb://{latest_profiles[0]}")
    yield ch
    ch.close()


def days_since(moment: datetime | None) -> int | None:
    return None if moment is None else max((NOW - moment) // DAY, 0)


def test_a_where_clause_selects_what_a_python_filter_of_the_latest_profiles_selects(
    profiles_ch: ClickHouse, latest_profiles: tuple[Path, list[dict[str, Any]]]
) -> None:
    latest = latest_profiles[1]
    audience = select_audience(
        profiles_ch, where="segment IN ('important_keep') AND monetary >= 500"
    )
    wanted = [
        r["customer_id"]
        for r in latest
        if r["segment"] == "important_keep" and r["monetary"] >= Decimal(500)
    ]
    assert wanted and [r["customer_id"] for r in audience.rows] == wanted
    assert list(audience.rows[0]) == list(audience.columns)


def test_recency_days_is_counted_to_now_not_to_the_snapshot(
    profiles_ch: ClickHouse, latest_profiles: tuple[Path, list[dict[str, Any]]]
) -> None:
    latest = latest_profiles[1]
    cutoff = days_since(datetime(2024, 3, 1, tzinfo=UTC))
    assert cutoff is not None
    audience = select_audience(
        profiles_ch,
        where=f"has(tags, 'vip') AND (recency_days >= {cutoff} OR recency_days IS NULL)",
        now=NOW,
    )
    wanted = {
        r["customer_id"]: days_since(r["last_order_at"])
        for r in latest
        if "vip" in r["tags"]
        and (r["last_order_at"] is None or (days_since(r["last_order_at"]) or 0) >= cutoff)
    }
    assert wanted and {r["customer_id"]: r["recency_days"] for r in audience.rows} == wanted


def test_a_named_audience_query_selects_lapsed_customers(
    profiles_ch: ClickHouse, latest_profiles: tuple[Path, list[dict[str, Any]]]
) -> None:
    latest = latest_profiles[1]
    lapsed_since = datetime(2024, 3, 15, tzinfo=UTC)
    days = (NOW - lapsed_since).days
    audience = select_audience(
        profiles_ch, query="lapsed_customers", params=[f"days={days}", "min_monetary=800"]
    )
    horizon = datetime.now(UTC) - timedelta(days=days)
    wanted = {
        r["customer_id"]
        for r in latest
        if r["last_order_at"] is not None
        and r["last_order_at"] <= horizon
        and r["monetary"] >= Decimal(800)
    }
    assert wanted and {r["customer_id"] for r in audience.rows} == wanted
    assert all(r["days_since_last_order"] >= days for r in audience.rows)


def test_audience_export_from_the_command_line(
    latest_profiles: tuple[Path, list[dict[str, Any]]],
) -> None:
    s = Settings(clickhouse_url=f"chdb://{latest_profiles[0]}")
    done = ecrm(s, "audience", "export", "--query", "lapsed_customers", "--param", "days=30")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert rows and rows[0].keys() >= {"customer_id", "days_since_last_order"}
    assert "customers selected (--query lapsed_customers --param days=30)" in done.stderr

    refused = ecrm(s, "audience", "export", "--where", "1=1) UNION SELECT name FROM system.users")
    assert refused.returncode == 2
    assert '"UNION" is not a profile column' in refused.stderr

    wrong = ecrm(s, "audience", "export", "--query", "rfm_distribution")
    assert wrong.returncode == 2 and "no customer_id column" in wrong.stderr
