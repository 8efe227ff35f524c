"""Membership through the real worker: orders, refunds and points requests build each
member's ledger exactly as the pure customer step does, even when the worker is killed
mid-batch; `ecrm.member-changes` carries every movement once."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaConsumer

from agents.customer_step import Customer, StepContext, advance, on_event
from agents.membership.state import MemberState
from agents.profile.policy import rfm_policy
from agents.rules.contact_policy import BudgetBook
from schemas.events import EVENT_BY_TOPIC, Event
from schemas.membership import load_programme
from schemas.profile import Profile
from streams import keyspace
from streams.settings import EXAMPLE_MEMBERSHIP, Settings
from tests.integration.conftest import consumed, wait_for

pytestmark = pytest.mark.integration

PROGRAMME = load_programme(EXAMPLE_MEMBERSHIP)


def shop_history(customers: int, n: int, seed: int = 7) -> list[tuple[str, dict[str, Any]]]:
    """Orders, refunds and points requests over the last 60 days, in time order (as a backlog
    holds them), with producer retries."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    times = sorted(now - timedelta(days=60) * rng.random() for _ in range(n))
    out: list[tuple[str, dict[str, Any]]] = []
    orders: list[tuple[str, str, str]] = []
    for i, ts in enumerate(times):
        cid = f"m{rng.randrange(customers)}"
        base = {"event_id": f"e{i}", "customer_id": cid, "ts": ts.isoformat()}
        r = rng.random()
        if r < 0.6 or not orders:
            oid = f"o{i}"
            amount = str(Decimal(rng.randint(5000, 300000)) / 100)
            out.append(("orders", {**base, "order_id": oid, "status": "paid", "amount": amount}))
            orders.append((cid, oid, amount))
        elif r < 0.75:
            cid, oid, amount = rng.choice(orders)
            part = (Decimal(amount) * rng.choice([Decimal("0.5"), Decimal(1)])).quantize(
                Decimal("0.01")
            )
            out.append(
                ("orders", {**base, "customer_id": cid, "order_id": oid, "status": "refunded"})
            )
            out[-1][1]["amount"] = str(part)
        elif r < 0.9:
            on = rng.choice([o for c, o, _ in orders if c == cid] or [None])
            request = {**base, "kind": "redeem", "points": rng.randint(1, 3000)}
            out.append(("points", request | ({"order_id": on} if on else {})))
        else:
            out.append(("points", {**base, "kind": "adjust", "points": rng.randint(-200, 500)}))
        if rng.random() < 0.05:  # a producer retry: the same event again
            out.append(out[-1])
    return out


def recomputed(events: list[tuple[str, dict[str, Any]]], settings: Settings, now: datetime):
    """Each customer's member state and movements, by the pure step, as of `now`."""
    per: dict[str, list[Event]] = {}
    for kind, value in events:
        per.setdefault(value["customer_id"], []).append(EVENT_BY_TOPIC[kind].model_validate(value))
    ctx = StepContext(rfm_policy(settings), None, BudgetBook(), programme=PROGRAMME)
    members: dict[str, MemberState | None] = {}
    moves: set[str] = set()
    for cid, evs in per.items():
        customer = Customer.new(cid)
        for event in sorted(evs, key=lambda e: e.ts):  # one step per event, as a backlog
            step = on_event(customer, [event], ctx, wall=now)
            moves |= {m.movement_id for m in step.movements}
        step = advance(customer, now, ctx, inclusive=True)
        moves |= {m.movement_id for m in step.movements}
        members[cid] = customer.member
    return members, moves


def stored_as_of(rds: redis.Redis, cid: str, settings: Settings, now: datetime) -> Any:
    """The worker's member state for `cid`, brought to `now` by the pure clock (the worker's
    sweep may be a moment behind)."""
    raw = rds.get(keyspace.member(cid, settings.partitions))
    if raw is None:
        return None
    profile = Profile.model_validate_json(
        rds.get(keyspace.profile(cid, settings.partitions)) or b""
    )
    customer = Customer(profile, Customer.new(cid).rules, MemberState.model_validate_json(raw))
    ctx = StepContext(rfm_policy(settings), None, BudgetBook(), programme=PROGRAMME)
    advance(customer, now, ctx, inclusive=True)
    return customer.member


class MemberChanges:
    """`ecrm.member-changes` as a consumer reads it from the beginning."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = KafkaConsumer(
            settings.topic("member-changes"),
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
        )
        self.got: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        for records in self.consumer.poll(timeout_ms=200).values():
            self.got += [orjson.loads(r.value) for r in records]
        return self.got


def test_a_worker_killed_mid_batch_leaves_every_ledger_as_a_recomputation_gives_it(
    settings: Settings, start_worker, produce, rds: redis.Redis, tmp_path: Path
) -> None:
    no_rules = tmp_path / "rules.yaml"
    no_rules.write_text("rules: []\n")
    settings = settings.model_copy(update={"rules_file": no_rules})
    events = shop_history(customers=300, n=12000)
    for kind, value in events:
        produce(kind, value)
    produce.flush()
    topic = MemberChanges(settings)
    first = start_worker(settings)
    wait_for(lambda: consumed(rds) > 1000, timeout=120, interval=0.01, what="a first part")
    first.kill()
    assert consumed(rds) < len(events), "the kill came too late to prove anything"
    start_worker(settings.model_copy(update={"app_id": f"{settings.app_id}-2"}))
    wait_for(lambda: consumed(rds) >= len(events), timeout=240, what="every event after restart")

    now = datetime.now(UTC)
    members, moves = recomputed(events, settings, now)
    for cid, want in members.items():
        got = stored_as_of(rds, cid, settings, now)
        assert got == want, cid
    assert sum(1 for m in members.values() if m and m.lots) > 200

    # every movement up to now reaches the topic, once (a later sweep may add newer ones)
    wait_for(lambda: moves <= {m["movement_id"] for m in topic.poll()}, timeout=60, what="all")
    ids = Counter(m["movement_id"] for m in topic.poll())
    assert [i for i, n in ids.items() if n > 1] == []
    kinds = Counter(m["kind"] for m in topic.got)
    assert {"earned", "unlocked", "redeemed", "refused", "reversed", "level_changed"} <= set(kinds)
    topic.consumer.close()


def ecrm(settings: Settings, *args: str, ok: tuple[int, ...] = (0,)) -> str:
    """Run an `ecrm` command against the test's services; its standard output."""
    import os
    import subprocess
    import sys

    env = {**os.environ, **settings.as_env()}
    done = subprocess.run(
        [sys.executable, "-m", "ecrm", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode in ok, done.stderr
    return done.stdout if done.returncode == 0 else ""


def member_json(settings: Settings, cid: str) -> dict[str, Any]:
    """The member view; {} while the worker has not seen the customer yet."""
    out = ecrm(settings, "member", "show", cid, "--json", ok=(0, 1))
    return orjson.loads(out) if out else {"points": {"pending": 0}, "manual_tags": []}


def test_adjustments_tags_and_a_reloaded_programme_reach_the_member_view(
    settings: Settings, start_worker, produce, rds: redis.Redis, tmp_path: Path
) -> None:
    programme = tmp_path / "membership.yaml"
    shipped = EXAMPLE_MEMBERSHIP.read_text(encoding="utf-8")
    programme.write_text(shipped, encoding="utf-8")
    no_rules = tmp_path / "rules.yaml"
    no_rules.write_text("rules: []\n")
    settings = settings.model_copy(
        update={"membership_file": programme, "rules_file": no_rules, "rules_reload_s": 0.2}
    )
    start_worker(settings)
    now = datetime.now(UTC)
    order = {"event_id": "p1", "customer_id": "vip-1", "ts": now.isoformat(), "order_id": "O1"}
    produce("orders", order | {"status": "paid", "amount": "1200.50"})
    produce.flush()
    view = wait_for(
        lambda: (v := member_json(settings, "vip-1"))["points"]["pending"] and v, timeout=60
    )
    assert view["level"] == "silver" and view["benefits"]["points_multiplier"] == 1.2
    assert view["points"] == {
        "balance": 0,
        "pending": 1200,  # 1 per yuan at the level the order found: 普通会员, ×1
        "expiring": [],
        "lots": view["points"]["lots"],
    }
    for _ in range(2):  # the same request twice: applied once
        ecrm(
            settings, "points", "adjust", "vip-1", "+100", "--reason", "sorry", "--request-id", "a1"
        )
    ecrm(settings, "tags", "add", "vip-1", "wholesale")
    view = wait_for(lambda: (v := member_json(settings, "vip-1"))["manual_tags"] and v, timeout=60)
    assert view["points"]["balance"] == 100 and view["manual_tags"] == ["wholesale"]
    ecrm(settings, "member", "pin", "vip-1", "diamond")
    view = wait_for(lambda: (v := member_json(settings, "vip-1")).get("pinned") and v, timeout=60)
    assert view["level"] == "diamond" and view["benefits"]["member_price"] == 0.95
    ecrm(settings, "member", "unpin", "vip-1")
    wait_for(lambda: member_json(settings, "vip-1").get("pinned") is False, timeout=60)

    log = tmp_path / "worker-1.log"
    programme.write_text("levels: {ladder: [{id: a, upgrade: 5}]}\n", encoding="utf-8")
    wait_for(lambda: b"refused" in log.read_bytes(), timeout=30, what="the bad file refused")
    programme.write_text(shipped.replace("per_yuan: 1,", "per_yuan: 2,"), encoding="utf-8")
    wait_for(lambda: b"reloaded" in log.read_bytes(), timeout=30, what="the good file taken")
    second = {"event_id": "p2", "customer_id": "vip-1", "ts": datetime.now(UTC).isoformat()}
    produce("orders", second | {"order_id": "O2", "status": "paid", "amount": "100"})
    produce.flush()
    view = wait_for(
        lambda: (v := member_json(settings, "vip-1"))["points"]["pending"] > 1200 and v, timeout=60
    )
    assert view["points"]["pending"] == 1200 + 400  # 2 per yuan × 2 (钻石, kept after unpinning)
