"""Marketers' rules on the live stream: abandoned carts earn one coupon at the deadline, a paid
order cancels it, a killed worker still sends each action once, a rules file is hot-reloaded
(and a bad one refused), quiet hours defer, cooldown and the daily cap suppress, a holdout
keeps its share, and a customer drifting out of important_value is won back.

Hours and days of shop time are driven through the profile keeper in-process, with the clock
passed in; what depends on the wall clock, the relay, a kill or a reload runs the real
`ecrm worker` as a child process against the embedded services, with windows of seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import redis
from kafka import KafkaConsumer

from agents.profile.incoming import Incoming, decode
from agents.profile.keeper import ProfileKeeper
from agents.profile.reads import read_profile
from agents.rules.book import RulesBook
from streams import keyspace
from streams.app import create_app
from streams.clickhouse import connect, migrate
from streams.counters import kafka_outboxes, stream_lengths
from streams.relay import RELAY_GROUP
from streams.settings import Settings
from streams.sink import ClickHouseSink
from tests.integration.conftest import consumed, rule_stats, wait_for

pytestmark = pytest.mark.integration

SHANGHAI = ZoneInfo("Asia/Shanghai")

ABANDONED_CART_3S = """
rules:
  - id: abandoned-cart
    when:
      event: cart
      not_followed_by: {event: orders, where: {status: paid}}
      within: 3s
    action:
      kind: coupon
      channel: sms
      params: {value: 10, threshold: 99, valid_for: 48h, template: cart_coupon}
"""
QUIET_NIGHTS = 'policy:\n  quiet_hours: {start: "22:00", end: "08:00"}\n'


# --- the shop's events and the rules file ------------------------------------------------------


def write_rules(path: Path, text: str) -> Path:
    """Put a rules file in place the way a deploy does: whole, in one rename."""
    draft = path.with_name(path.name + ".draft")
    draft.write_text(text)
    os.replace(draft, path)
    return path


def with_rules(settings: Settings, path: Path, **more: Any) -> Settings:
    return settings.model_copy(update={"rules_file": path, **more})


def cart_add(event_id: str, customer: str, ts: datetime, sku: str = "tea-01") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "customer_id": customer,
        "ts": ts.isoformat(),
        "sku": sku,
        "qty": 1,
        "price": "59.00",
    }


def paid_order(
    event_id: str, customer: str, ts: datetime, amount: str = "129.00"
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "customer_id": customer,
        "ts": ts.isoformat(),
        "order_id": f"o-{event_id}",
        "status": "paid",
        "amount": amount,
    }


def favourite(event_id: str, customer: str, ts: datetime, sku: str = "tea-01") -> dict[str, Any]:
    return {"event_id": event_id, "customer_id": customer, "ts": ts.isoformat(), "sku": sku}


def browse(event_id: str, customer: str, ts: datetime) -> dict[str, Any]:
    return {"event_id": event_id, "customer_id": customer, "ts": ts.isoformat(), "sku": "x"}


def expected_action_id(rule_id: str, customer_id: str, trigger: str) -> str:
    """docs/rules.md: the first 32 hex digits of SHA-256("rule_id|customer_id|trigger")."""
    return hashlib.sha256(f"{rule_id}|{customer_id}|{trigger}".encode()).hexdigest()[:32]


# --- what leaves ecrm ----------------------------------------------------------------------------


@dataclass
class Received:
    action: dict[str, Any]
    on_topic_at: float  # the record's Kafka timestamp (s)
    received_at: float  # when this test's consumer got it (s)


class ActionsTopic:
    """`ecrm.actions` as a downstream consumer sees it: from the beginning, no group."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = KafkaConsumer(
            settings.topic("actions"),
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
        )
        self.received: list[Received] = []

    def poll(self, timeout_ms: int = 50) -> list[dict[str, Any]]:
        """Read what has arrived; every action received so far."""
        for records in self.consumer.poll(timeout_ms=timeout_ms).values():
            now = time.time()
            for r in records:
                self.received.append(Received(orjson.loads(r.value), r.timestamp / 1000, now))
        return self.received_actions()

    def wait(
        self, condition: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str
    ) -> list[dict[str, Any]]:
        """Read until `condition(actions so far)` holds."""
        wait_for(lambda: condition(self.poll()), timeout, interval=0, what=what)
        return self.received_actions()

    def received_actions(self) -> list[dict[str, Any]]:
        return [r.action for r in self.received]

    def settle(self, seconds: float) -> list[dict[str, Any]]:
        """Keep reading for a bounded time, to see that nothing more arrives."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll(timeout_ms=100)
        return self.received_actions()

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def actions_topic(settings: Settings):
    topic = ActionsTopic(settings)
    yield topic
    topic.close()


def queued_actions(rds: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    """Actions the in-process keeper queued for the relay (the Redis Kafka outbox)."""
    topic = settings.topic("actions").encode()
    return [
        orjson.loads(f[b"value"])
        for outbox in kafka_outboxes(settings.partitions)
        for _, f in rds.xrange(outbox)
        if f[b"topic"] == topic
    ]


def recorded_decisions(settings: Settings) -> list[dict[str, Any]]:
    """Drain the ClickHouse outbox and read back every rule decision, in decision order."""
    ch = connect(settings.clickhouse_url)
    try:
        migrate(ch)
        sink = ClickHouseSink.from_settings(settings, ch, claim_idle_ms=1000)
        wait_for(
            lambda: (sink.drain_once(block_ms=100), sink.pending() == 0)[1], what="sink drained"
        )
        return ch.query(
            "SELECT action_id, rule_id, customer_id, outcome, reason, trigger_event_id,"
            " decided_at, deliver_at, released FROM rule_decisions"
            " ORDER BY decided_at, rule_id, customer_id"
        )
    finally:
        ch.close()


# --- the in-process shop: the profile keeper with the clock passed in ----------------------------


@dataclass
class Shop:
    """The profile keeper fed like the worker feeds it, with the clock in the test's hand."""

    keeper: ProfileKeeper
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    offsets: Counter[tuple[str, int]] = field(default_factory=Counter)

    def incoming(self, kind: str, value: dict[str, Any], partition: int = 0) -> Incoming:
        offset = self.offsets[(kind, partition)]
        self.offsets[(kind, partition)] += 1
        key = value["customer_id"].encode()
        return decode(f"t.{kind}", kind, partition, offset, key, orjson.dumps(value))

    def apply(self, kind: str, value: dict[str, Any]) -> None:
        """One event, applied when it happens."""
        when = datetime.fromisoformat(value["ts"])
        self.apply_many([self.incoming(kind, value)], now=when)

    def apply_many(self, items: list[Incoming], now: datetime) -> None:
        self.loop.run_until_complete(self.keeper.apply(items, now=now))

    def sweep(self, now: datetime, partitions: Iterable[int] = (0,)) -> int:
        return self.loop.run_until_complete(self.keeper.sweep(list(partitions), now=now))

    def close(self) -> None:
        self.loop.run_until_complete(self.keeper.app.store.stop())
        self.loop.close()


@pytest.fixture
def open_shop(settings: Settings, tmp_path: Path):
    """`open_shop(rules_yaml)` -> a Shop whose keeper runs those rules."""
    shops: list[Shop] = []

    def open_(rules_yaml: str) -> Shop:
        path = write_rules(tmp_path / "rules.yaml", rules_yaml)
        ctx = create_app(with_rules(settings, path))
        shops.append(Shop(ProfileKeeper(ctx, rules=RulesBook(path))))
        return shops[-1]

    yield open_
    for shop in shops:
        shop.close()


# --- in-process: quiet hours, cooldown and cap, holdout, win-back --------------------------------


def test_a_cart_abandoned_at_night_waits_for_the_morning_and_is_delivered_with_the_same_id(
    settings, open_shop, rds
):
    shop = open_shop(QUIET_NIGHTS + ABANDONED_CART_3S)
    added = datetime(2024, 5, 1, 23, 0, tzinfo=SHANGHAI).astimezone(UTC)
    deadline = added + timedelta(seconds=3)
    morning = datetime(2024, 5, 2, 8, 0, tzinfo=SHANGHAI).astimezone(UTC)
    shop.apply("cart", cart_add("night-cart", "owl", added))

    assert shop.sweep(deadline - timedelta(milliseconds=1)) == 0
    assert rule_stats(rds) == {}
    shop.sweep(deadline)
    assert rule_stats(rds) == {"abandoned-cart|deferred": 1}
    assert queued_actions(rds, settings) == []
    # the customer is due again at 08:00 Shanghai, not before
    assert rds.zscore(keyspace.wakes(0), "owl") == int(morning.timestamp() * 1000)
    shop.sweep(morning - timedelta(milliseconds=1))
    assert queued_actions(rds, settings) == []

    shop.sweep(morning)
    assert rule_stats(rds) == {"abandoned-cart|deferred": 1, "abandoned-cart|fired": 1}
    [action] = queued_actions(rds, settings)
    action_id = expected_action_id("abandoned-cart", "owl", "timer::night-cart")
    assert action["action_id"] == action_id
    assert action["trigger_event_id"] == "night-cart"
    assert datetime.fromisoformat(action["fired_at"]) == morning
    # the coupon's 48 hours count from delivery, not from the night
    assert datetime.fromisoformat(action["params"]["valid_until"]) == morning + timedelta(hours=48)

    rows = recorded_decisions(settings)
    assert [(r["action_id"], r["outcome"], r["reason"], r["released"]) for r in rows] == [
        (action_id, "deferred", "quiet_hours", 0),
        (action_id, "fired", "", 1),
    ]
    assert rows[0]["deliver_at"].astimezone(UTC) == morning


def test_a_coupon_held_back_for_the_night_is_withdrawn_when_the_customer_buys_before_morning(
    settings, open_shop, rds
):
    shop = open_shop(QUIET_NIGHTS + ABANDONED_CART_3S)
    added = datetime(2024, 5, 1, 23, 0, tzinfo=SHANGHAI).astimezone(UTC)
    morning = datetime(2024, 5, 2, 8, 0, tzinfo=SHANGHAI).astimezone(UTC)
    shop.apply("cart", cart_add("night-cart", "owl", added))
    shop.sweep(added + timedelta(seconds=3))
    shop.apply("orders", paid_order("dawn-order", "owl", morning - timedelta(hours=1)))
    shop.sweep(morning)

    assert rule_stats(rds) == {
        "abandoned-cart|deferred": 1,
        "abandoned-cart|suppressed:cancelled": 1,
    }
    assert queued_actions(rds, settings) == []
    assert [(r["outcome"], r["reason"]) for r in recorded_decisions(settings)] == [
        ("deferred", "quiet_hours"),
        ("suppressed", "cancelled"),
    ]


def test_a_coupon_held_back_for_the_night_is_not_sent_when_the_worker_returns_days_later(
    settings, open_shop, rds
):
    """The 08:00 delivery is more than a day (max_event_age) overdue by the time the clock
    gets to it: it is history, withdrawn, and the budget it booked for that morning is given
    back (the worker steps the customer at 08:00 itself, so that day's counter is read)."""
    budgeted = ABANDONED_CART_3S.replace("    action:", "    budget: {per_day: 5}\n    action:")
    shop = open_shop(QUIET_NIGHTS + budgeted)
    added = datetime(2024, 5, 1, 23, 0, tzinfo=SHANGHAI).astimezone(UTC)
    morning = datetime(2024, 5, 2, 8, 0, tzinfo=SHANGHAI).astimezone(UTC)
    shop.apply("cart", cart_add("night-cart", "owl", added))
    shop.sweep(added + timedelta(seconds=3))
    booked = keyspace.budget("abandoned-cart", morning.astimezone(SHANGHAI).date())
    assert int(rds.hget(booked, "count")) == 1

    shop.sweep(morning + timedelta(days=2))
    assert rule_stats(rds) == {
        "abandoned-cart|deferred": 1,
        "abandoned-cart|suppressed:historical": 1,
    }
    assert queued_actions(rds, settings) == []
    assert int(rds.hget(booked, "count")) == 0  # nothing went out that morning
    assert [(r["outcome"], r["reason"]) for r in recorded_decisions(settings)] == [
        ("deferred", "quiet_hours"),
        ("suppressed", "historical"),
    ]
    assert orjson.loads(rds.get(keyspace.rule_state("owl", settings.partitions)))["deferred"] == []


def test_a_coupon_held_back_for_the_night_is_withdrawn_when_its_rule_is_switched_off(
    settings, open_shop, rds
):
    shop = open_shop(QUIET_NIGHTS + ABANDONED_CART_3S)
    added = datetime(2024, 5, 1, 23, 0, tzinfo=SHANGHAI).astimezone(UTC)
    morning = datetime(2024, 5, 2, 8, 0, tzinfo=SHANGHAI).astimezone(UTC)
    shop.apply("cart", cart_add("night-cart", "owl", added))
    shop.sweep(added + timedelta(seconds=3))

    disabled = ABANDONED_CART_3S.replace("    when:", "    enabled: false\n    when:", 1)
    write_rules(shop.keeper.rules.path, QUIET_NIGHTS + disabled)
    assert shop.keeper.rules.reload_if_changed()
    shop.sweep(morning)

    assert rule_stats(rds) == {
        "abandoned-cart|deferred": 1,
        "abandoned-cart|suppressed:rule_disabled": 1,
    }
    assert queued_actions(rds, settings) == []


CONTACT_RULES = """
policy:
  contact_cap: {per_day: 2}
rules:
  - id: order-thanks
    when: {event: orders, where: {status: paid}}
    cooldown: 1d
    action: {kind: message, channel: sms, params: {template: thanks}}
  - id: big-cart
    when: {event: cart, where: {amount: {gte: 100}}}
    priority: 50
    action: {kind: message, channel: sms, params: {template: big_cart}}
  - id: cart-nudge
    when: {event: cart}
    priority: 10
    action: {kind: message, channel: push, params: {template: nudge}}
"""


def test_cooldown_and_the_daily_contact_cap_suppress_with_their_reason(settings, open_shop, rds):
    shop = open_shop(CONTACT_RULES)
    noon = datetime(2024, 5, 1, 12, 0, tzinfo=SHANGHAI).astimezone(UTC)
    minute, day = timedelta(minutes=1), timedelta(days=1)

    # a second order within the day's cooldown earns no second thank-you; a day later it does
    shop.apply("orders", paid_order("o1", "buyer", noon))
    shop.apply("orders", paid_order("o2", "buyer", noon + 30 * minute))
    shop.apply("orders", paid_order("o3", "buyer", noon + day))

    # two contacts a day: a small cart (nudge), then a big one that both cart rules want
    # (the higher priority takes the last contact), then a third cart; the next day is new
    big = {"price": "150.00"}
    shop.apply("cart", cart_add("k1", "browser", noon))
    shop.apply("cart", {**cart_add("k2", "browser", noon + minute), **big})
    shop.apply("cart", cart_add("k3", "browser", noon + 2 * minute))
    # 00:30 Shanghai is already the next shop day, though still the same day in UTC
    after_midnight = datetime(2024, 5, 2, 0, 30, tzinfo=SHANGHAI).astimezone(UTC)
    shop.apply("cart", cart_add("k4", "browser", after_midnight))

    assert rule_stats(rds) == {
        "order-thanks|fired": 2,
        "order-thanks|suppressed:cooldown": 1,
        "big-cart|fired": 1,
        "cart-nudge|fired": 2,
        "cart-nudge|suppressed:contact_cap": 2,
    }
    decided = {
        (r["rule_id"], r["trigger_event_id"]): (r["outcome"], r["reason"])
        for r in recorded_decisions(settings)
    }
    assert decided == {
        ("order-thanks", "o1"): ("fired", ""),
        ("order-thanks", "o2"): ("suppressed", "cooldown"),
        ("order-thanks", "o3"): ("fired", ""),
        ("cart-nudge", "k1"): ("fired", ""),
        ("big-cart", "k2"): ("fired", ""),
        ("cart-nudge", "k2"): ("suppressed", "contact_cap"),
        ("cart-nudge", "k3"): ("suppressed", "contact_cap"),
        ("cart-nudge", "k4"): ("fired", ""),
    }
    sent = sorted((a["rule_id"], a["trigger_event_id"]) for a in queued_actions(rds, settings))
    assert sent == sorted(k for k, (outcome, _) in decided.items() if outcome == "fired")


BUDGETED = """
rules:
  - id: cart-coupon
    when: {event: cart}
    budget: {value_per_day: 25}
    action: {kind: coupon, params: {value: 10, valid_for: 1d}}
  - id: cart-points
    when: {event: cart}
    budget: {per_day: 1}
    action: {kind: points, params: {points: 5}}
"""


def test_a_rules_daily_budget_is_shared_by_all_customers_and_renews_at_the_shops_midnight(
    settings, open_shop, rds
):
    shop = open_shop(BUDGETED)
    noon = datetime(2024, 5, 1, 12, 0, tzinfo=SHANGHAI).astimezone(UTC)
    shop.apply("cart", cart_add("k1", "c1", noon))
    # two customers in one batch, then one more in the next: the budget is kept in Redis
    shop.apply_many(
        [
            shop.incoming("cart", cart_add("k2", "c2", noon), partition=1),
            shop.incoming("cart", cart_add("k3", "c3", noon), partition=2),
        ],
        now=noon,
    )
    shop.apply("cart", cart_add("k4", "c4", noon + timedelta(hours=1)))
    shop.apply("cart", cart_add("k5", "c5", noon + timedelta(days=1)))

    assert rule_stats(rds) == {
        "cart-coupon|fired": 3,  # ¥10 + ¥10 on the first day (¥30 would pass ¥25), one on the next
        "cart-coupon|suppressed:budget": 2,
        "cart-points|fired": 2,  # one a day
        "cart-points|suppressed:budget": 3,
    }
    fired = {(a["rule_id"], a["customer_id"]) for a in queued_actions(rds, settings)}
    assert ("cart-coupon", "c5") in fired and ("cart-points", "c5") in fired
    assert ("cart-coupon", "c4") not in fired


def test_a_20_percent_holdout_over_2000_customers_keeps_about_a_fifth_and_sends_them_nothing(
    settings, open_shop, rds
):
    shop = open_shop(ABANDONED_CART_3S.replace("    action:", "    holdout: 20%\n    action:", 1))
    added = datetime(2024, 5, 1, 12, 0, tzinfo=SHANGHAI).astimezone(UTC)
    customers = [f"h{i}" for i in range(2000)]
    items = [
        shop.incoming("cart", cart_add(f"k-{c}", c, added), partition=i % 4)
        for i, c in enumerate(customers)
    ]
    shop.apply_many(items, now=added)
    shop.sweep(added + timedelta(seconds=3), partitions=range(4))

    counts = rule_stats(rds)
    held, fired = counts.get("abandoned-cart|held_out", 0), counts.get("abandoned-cart|fired", 0)
    assert held + fired == len(customers), counts
    share = held / (held + fired)
    print(f"holdout share over {len(customers)} customers: {share:.4f}")
    assert 0.17 <= share <= 0.23

    # the control group is the documented hash of (rule, customer), and hears nothing
    def in_control_group(customer: str) -> bool:
        digest = hashlib.sha256(f"abandoned-cart|{customer}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < 0.2

    control = {c for c in customers if in_control_group(c)}
    assert len(control) == held
    reached = Counter(a["customer_id"] for a in queued_actions(rds, settings))
    assert set(reached) == set(customers) - control
    assert set(reached.values()) == {1}


def test_a_valuable_customer_who_stops_buying_is_won_back_when_time_alone_moves_them(
    settings, open_shop, rds
):
    shop = open_shop(
        """
rules:
  - id: win-back
    when: {segment_change: {from: important_value, to: [important_keep, important_retain]}}
    action:
      kind: coupon
      channel: wechat
      params: {value: 30, threshold: 199, valid_for: 7d, template: we_miss_you}
"""
    )
    first = datetime(2024, 3, 1, 12, 0, tzinfo=SHANGHAI).astimezone(UTC)
    last = first + timedelta(days=18)
    shop.apply("orders", paid_order("o1", "vip", first, amount="400"))
    shop.apply("orders", paid_order("o2", "vip", last, amount="300"))
    assert read_profile(settings, "vip", last).segment == "important_value"

    # R = 30 days is still high, 31 is low: no event comes, the sweep finds the customer then
    wake = last + timedelta(days=settings.r_high_days + 1)
    assert shop.sweep(wake - timedelta(milliseconds=5)) == 0
    assert rule_stats(rds) == {}
    assert shop.sweep(wake) == 1
    assert read_profile(settings, "vip", wake).segment == "important_keep"

    assert rule_stats(rds) == {"win-back|fired": 1}
    [action] = queued_actions(rds, settings)
    trigger = f"segment:important_value>important_keep@{wake.isoformat()}"
    assert action["action_id"] == expected_action_id("win-back", "vip", trigger)
    assert (action["rule_id"], action["customer_id"], action["kind"], action["channel"]) == (
        "win-back",
        "vip",
        "coupon",
        "wechat",
    )
    assert action["params"]["value"] == 30
    assert action["trigger_event_id"] is None  # time moved the customer, not an event


# --- the real worker: deadlines on the wall clock, a kill, a hot reload ---------------------------


def now_utc() -> datetime:
    return datetime.now(UTC)


def start_live_worker(start_worker, settings: Settings, path: Path, produce, rds):
    """`ecrm worker` on these rules (sweeping every 0.25 s, the default), once it is reading:
    a view (which no rule acts on) has been consumed, so deadlines set from now on are not
    eaten by the worker's start-up."""
    worker = start_worker(with_rules(settings, path, sweep_interval_s=0.25))
    before = consumed(rds)
    produce("browse", browse(f"warm-up-{time.monotonic_ns()}", "window-shopper", now_utc()))
    produce.flush()
    wait_for(lambda: consumed(rds) > before, timeout=60, what="the worker reading events")
    return worker


def test_an_abandoned_cart_earns_one_coupon_on_the_wall_clock_soon_after_the_deadline(
    settings, start_worker, produce, rds, actions_topic, tmp_path
):
    rules = write_rules(tmp_path / "rules.yaml", ABANDONED_CART_3S)
    worker = start_live_worker(start_worker, settings, rules, produce, rds)

    added = now_utc()
    deadline = (added + timedelta(seconds=3)).timestamp()
    produce("cart", cart_add("cart-1", "ann", added))
    produce.flush()
    # nothing but the wall clock passing follows the cart add
    [action] = actions_topic.wait(lambda got: len(got) >= 1, timeout=15, what="the coupon")
    got = actions_topic.received[0]
    decided = datetime.fromisoformat(action["fired_at"]).timestamp()
    print(
        f"\nabandoned cart, 3 s window, sweep every 0.25 s: decided {decided - deadline:+.3f} s,"
        f" on the topic {got.on_topic_at - deadline:+.3f} s,"
        f" received {got.received_at - deadline:+.3f} s after the deadline"
    )
    assert decided >= deadline, "fired before the window was over"
    assert got.received_at - deadline < 3.0

    assert action["action_id"] == expected_action_id("abandoned-cart", "ann", "timer::cart-1")
    assert action["trigger_event_id"] == "cart-1"
    assert (action["rule_id"], action["customer_id"], action["kind"], action["channel"]) == (
        "abandoned-cart",
        "ann",
        "coupon",
        "sms",
    )
    params = action["params"]
    assert {k: params[k] for k in ("value", "threshold", "valid_for", "template")} == {
        "value": 10,
        "threshold": 99,
        "valid_for": "48h",
        "template": "cart_coupon",
    }
    valid_until = datetime.fromisoformat(params["valid_until"])
    assert valid_until == datetime.fromisoformat(action["fired_at"]) + timedelta(hours=48)

    # once: ten more sweeps later there is still one coupon, and one decision
    assert len(actions_topic.settle(2.5)) == 1
    assert rule_stats(rds) == {"abandoned-cart|fired": 1}
    assert worker.proc.poll() is None, worker.log_tail()


def test_a_paid_order_one_second_before_the_deadline_cancels_the_coupon(
    settings, start_worker, produce, rds, actions_topic, tmp_path
):
    rules = write_rules(tmp_path / "rules.yaml", ABANDONED_CART_3S)
    worker = start_live_worker(start_worker, settings, rules, produce, rds)

    added = now_utc()
    deadline = added + timedelta(seconds=3)
    produce("cart", cart_add("cart-bob", "bob", added))
    # another customer adds to the cart a little later and does not buy: the control
    produce("cart", cart_add("cart-cy", "cy", added + timedelta(milliseconds=200)))
    produce.flush()
    wait_for(lambda: now_utc() >= deadline - timedelta(seconds=1), what="1 s before the deadline")
    produce("orders", paid_order("order-bob", "bob", now_utc()))
    produce.flush()

    [action] = actions_topic.wait(lambda got: len(got) >= 1, timeout=15, what="cy's coupon")
    assert action["customer_id"] == "cy"
    # cy's deadline was later than bob's; to be sure every partition's sweep passed bob's
    # too, read on until a second has gone by since cy's coupon (four sweeps)
    actions = actions_topic.settle(1.0)
    assert [a["customer_id"] for a in actions] == ["cy"]
    assert rule_stats(rds) == {"abandoned-cart|fired": 1}
    state = orjson.loads(rds.get(keyspace.rule_state("bob", settings.partitions)))
    assert state["timers"] == [] and state["deferred"] == []
    assert worker.proc.poll() is None, worker.log_tail()


def test_a_worker_killed_between_deciding_and_sending_still_sends_each_coupon_once(
    settings, start_worker, produce, rds, actions_topic, tmp_path
):
    rules = write_rules(tmp_path / "rules.yaml", ABANDONED_CART_3S)
    first = start_live_worker(start_worker, settings, rules, produce, rds)
    added = now_utc()
    customers = [f"k{i}" for i in range(1000)]
    for c in customers:
        produce("cart", cart_add(f"cart-{c}", c, added))
    produce.flush()
    wait_for(lambda: consumed(rds) > len(customers), timeout=30, what="all cart adds read")

    # the moment the first decisions are committed, before the relay has sent them all
    wait_for(
        lambda: rule_stats(rds).get("abandoned-cart|fired", 0) > 0,
        timeout=15,
        interval=0.001,
        what="the first coupons decided",
    )
    first.kill()
    decided = rule_stats(rds).get("abandoned-cart|fired", 0)
    outboxes = kafka_outboxes(settings.partitions)
    unsent = stream_lengths(rds, outboxes)
    taken = sum(rds.xpending(o, RELAY_GROUP)["pending"] for o in outboxes if rds.xlen(o))
    on_topic = len(actions_topic.settle(0.5))
    print(
        f"\nkilled with {decided} coupons decided, {on_topic} on the topic,"
        f" {unsent} in the outbox ({taken} of them taken by the dead relay)"
    )
    assert on_topic < decided, "the kill came too late to prove anything"

    # The restarted worker joins a new consumer group: it need not wait out the dead one's
    # session (some 20 s with the embedded broker), and reads every topic again from the
    # start, which the offsets kept in Redis make harmless: a harsher restart than a real one.
    start_worker(with_rules(settings, rules, sweep_interval_s=0.25, app_id=f"{settings.app_id}-2"))
    wait_for(
        lambda: (
            rule_stats(rds).get("abandoned-cart|fired", 0) >= len(customers)
            and stream_lengths(rds, outboxes) == 0
        ),
        timeout=30,
        what="every coupon decided and relayed after the restart",
    )
    actions_topic.wait(
        lambda got: len(got) >= len(customers), timeout=15, what="every coupon on the topic"
    )
    actions = actions_topic.settle(0.5)
    ids = Counter(a["action_id"] for a in actions)
    assert [i for i, n in ids.items() if n > 1] == []
    assert set(ids) == {
        expected_action_id("abandoned-cart", c, f"timer::cart-{c}") for c in customers
    }
    assert len(actions) == rule_stats(rds)["abandoned-cart|fired"] == len(customers)


BIG_ORDER_THANKS = """
rules:
  - id: big-order-thanks
    when: {event: orders, where: {status: paid, amount: {gte: 500}}}
    action: {kind: points, channel: inbox, params: {points: 200, template: thanks}}
"""
FAVOURITE_HELLO = """
  - id: favourite-hello
    when: {event: favorites}
    action: {kind: message, channel: push, params: {template: glad_you_like_it}}
"""
MISSPELT = """
  - id: favourite-reminder
    when: {event: favorites, not_followed_by: {event: orders}, within: 3 dayz}
    action: {kind: message, channel: inbox, params: {template: still_there}}
"""


def test_a_rules_file_changed_under_a_running_worker_takes_effect_and_a_bad_one_is_refused(
    settings, start_worker, produce, rds, actions_topic, tmp_path
):
    rules = write_rules(tmp_path / "rules.yaml", BIG_ORDER_THANKS)
    worker = start_live_worker(start_worker, settings, rules, produce, rds)

    def fired(rule_id: str, customer: str, what: str) -> None:
        actions_topic.wait(
            lambda got: any((a["rule_id"], a["customer_id"]) == (rule_id, customer) for a in got),
            timeout=15,
            what=what,
        )

    produce("orders", paid_order("o-1", "ada", now_utc(), amount="600"))
    produce.flush()
    fired("big-order-thanks", "ada", "the thank-you of the rules the worker started with")

    # the marketer adds a rule; no restart
    write_rules(rules, BIG_ORDER_THANKS + FAVOURITE_HELLO)
    wait_for(lambda: "reloaded: 2 rules" in worker.log_tail(), timeout=10, what="the reload")
    produce("favorites", favourite("f-1", "ben", now_utc()))
    produce.flush()
    fired("favourite-hello", "ben", "the new rule acting on a favourite")

    # then saves a file with a mistake in it: refused, said why, and the rules in force stay
    write_rules(rules, BIG_ORDER_THANKS + FAVOURITE_HELLO + MISSPELT)
    wait_for(lambda: "refused" in worker.log_tail(), timeout=10, what="the refusal in the log")
    refusal = next(line for line in worker.log_tail().splitlines() if "refused" in line)
    print(f"\n{refusal}")
    assert "favourite-reminder" in refusal and "within" in refusal and "dayz" in refusal
    assert worker.proc.poll() is None, worker.log_tail()

    produce("favorites", favourite("f-2", "cal", now_utc()))
    produce("orders", paid_order("o-2", "cal", now_utc(), amount="800"))
    produce.flush()
    fired("favourite-hello", "cal", "the rule in force still acting after the refusal")
    fired("big-order-thanks", "cal", "the first rule still acting after the refusal")
    assert all(a["rule_id"] != "favourite-reminder" for a in actions_topic.received_actions())
    assert worker.proc.poll() is None, worker.log_tail()


# --- rules files a running worker must survive ----------------------------------------------------


def test_a_reloaded_file_with_a_duration_too_large_to_compute_is_refused_and_the_worker_lives(
    settings, start_worker, produce, rds, actions_topic, tmp_path
):
    rules = write_rules(tmp_path / "rules.yaml", BIG_ORDER_THANKS)
    worker = start_live_worker(start_worker, settings, rules, produce, rds)
    absurd = """
  - id: once-a-lifetime
    when: {event: favorites}
    cooldown: 99999999999999999999999d
    action: {kind: message, channel: push, params: {template: hello}}
"""
    write_rules(rules, BIG_ORDER_THANKS + absurd)
    wait_for(
        lambda: "refused" in worker.log_tail() or worker.proc.poll() is not None,
        timeout=10,
        what="the reload to be refused",
    )
    assert worker.proc.poll() is None, f"the worker died on a bad rules file:\n{worker.log_tail()}"
    assert "once-a-lifetime" in worker.log_tail() and "cooldown" in worker.log_tail()

    produce("orders", paid_order("o-1", "ada", now_utc(), amount="600"))
    produce.flush()
    actions_topic.wait(lambda got: len(got) >= 1, timeout=15, what="the rules in force acting")


def test_a_wait_too_long_to_compute_is_refused_rather_than_crashing_the_worker_at_the_first_cart(
    settings, start_worker, produce, rds, actions_topic, tmp_path
):
    rules = write_rules(tmp_path / "rules.yaml", BIG_ORDER_THANKS)
    worker = start_live_worker(start_worker, settings, rules, produce, rds)
    eternal = """
  - id: eternal-cart
    when: {event: cart, not_followed_by: {event: orders}, within: 100000000w}
    action: {kind: tag, params: {tag: undecided}}
"""
    write_rules(rules, BIG_ORDER_THANKS + eternal)
    wait_for(
        lambda: "refused" in worker.log_tail() or "reloaded" in worker.log_tail(),
        timeout=10,
        what="the reload to be decided",
    )
    assert "refused" in worker.log_tail(), "a wait of 1.9 billion years was taken into force"

    produce("cart", cart_add("cart-1", "ann", now_utc()))
    produce("orders", paid_order("o-1", "ann", now_utc(), amount="600"))
    produce.flush()
    wait_for(
        lambda: consumed(rds) >= 3 or "Crashed" in worker.log_tail(200),
        timeout=15,
        what="the cart and the order read",
    )
    assert "Crashed" not in worker.log_tail(200), worker.log_tail(200)
    [thanks] = actions_topic.wait(lambda got: len(got) >= 1, timeout=15, what="the thank-you")
    assert thanks["trigger_event_id"] == "o-1"


BUDGET_AT_NIGHT = """
policy:
  quiet_hours: {start: "22:00", end: "08:00"}
rules:
  - id: abandoned-cart
    when: {event: cart, not_followed_by: {event: orders, where: {status: paid}}, within: 30m}
    budget: {per_day: 1}
    action: {kind: coupon, channel: sms, params: {value: 10, valid_for: 48h}}
"""


def test_coupons_deferred_to_tomorrow_count_against_tomorrows_budget(settings, rds, tmp_path):
    """A budget of one coupon a day: two carts abandoned at night are both delivered in the
    morning, so the second one is over the morning's budget and suppressed, not sent."""
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(BUDGET_AT_NIGHT)
    night = datetime(2024, 5, 1, 14, 10, tzinfo=UTC)  # 22:10 in Shanghai
    items = [
        decode(
            "t.cart",
            "cart",
            0,
            i,
            c.encode(),
            orjson.dumps(
                {
                    "event_id": f"e{i}",
                    "customer_id": c,
                    "ts": (night + timedelta(minutes=i)).isoformat(),
                    "sku": "x",
                    "qty": 1,
                    "price": "50",
                }
            ),
        )
        for i, c in enumerate(["ann", "bob"])
    ]
    keeper = ProfileKeeper(create_app(settings), rules=RulesBook(rules_file))

    async def scenario() -> None:
        for item in items:
            await keeper.apply([item], now=item.event.ts)
        for minute in (30, 31):  # each cart's deadline, in a batch of its own
            await keeper.sweep([0], now=night + timedelta(minutes=minute))
        await keeper.app.store.stop()

    asyncio.run(scenario())
    stats = rule_stats(rds)
    assert stats == {"abandoned-cart|deferred": 1, "abandoned-cart|suppressed:budget": 1}
