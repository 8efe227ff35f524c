"""Privacy through the real worker: an erased customer stays erased when their events come
again (replayed or new) — nothing of them in Redis, ClickHouse or the output topics, and the
counters say what was dropped; a channel the customer refused gets no action, the decision
is recorded, and the unsubscribe token of an action opts its customer out; personal data
planted in the traffic is found nowhere after a run.

The test process owns the embedded ClickHouse (the worker runs with sink=no) and drains the
outbox into it, as the campaigns test does; `ecrm customer` runs as a child process.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaConsumer

from schemas.pii import looks_personal, personal_id
from schemas.privacy import erasure_token
from schemas.profile import Profile
from streams import keyspace
from streams.customer_data import customer_tables
from streams.settings import Settings
from tests.integration.conftest import consumed, ecrm, rule_stats, stats, wait_for
from tests.integration.test_pipeline import sink_all

pytestmark = pytest.mark.integration

RULES = """
rules:
  - id: welcome
    when: {event: orders, where: {status: paid}, first_order: true}
    action: {kind: message, channel: sms, params: {template: welcome}}
  - id: thanks
    when: {event: orders, where: {status: paid}}
    action: {kind: points, channel: inbox, params: {points: 10}}
"""


class Topic:
    """An output topic read from the beginning, as a downstream consumer reads it."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.consumer = KafkaConsumer(
            settings.topic(name),
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
        )
        self.received: list[tuple[bytes | None, bytes]] = []

    def poll(self) -> list[tuple[bytes | None, bytes]]:
        for records in self.consumer.poll(timeout_ms=100).values():
            self.received += [(r.key, r.value) for r in records]
        return self.received

    def settle(self, seconds: float) -> list[tuple[bytes | None, bytes]]:
        end = datetime.now(UTC) + timedelta(seconds=seconds)
        while datetime.now(UTC) < end:
            self.poll()
        return self.received

    def json(self) -> list[dict[str, Any]]:
        return [orjson.loads(v) for _, v in self.received]


@pytest.fixture
def outputs(settings: Settings) -> Iterator[dict[str, Topic]]:
    topics = {name: Topic(settings, name) for name in ("actions", "segment-changes", "dead-letter")}
    yield topics
    for topic in topics.values():
        topic.consumer.close()


def shopping(cid: str, tag: str, at: datetime) -> list[tuple[str, dict[str, Any]]]:
    base = {"customer_id": cid, "ts": at.isoformat()}
    return [
        ("browse", {**base, "event_id": f"{cid}-{tag}-v", "sku": "tea"}),
        ("cart", {**base, "event_id": f"{cid}-{tag}-c", "sku": "tea", "qty": 1, "price": "30"}),
        (
            "orders",
            {
                **base,
                "event_id": f"{cid}-{tag}-o",
                "order_id": f"{cid}-{tag}-o",
                "status": "paid",
                "amount": "30",
            },
        ),
    ]


def rows_of(settings: Settings, cid: str) -> dict[str, int]:
    ch = sink_all(settings)
    try:
        return {
            t: int(
                ch.query(
                    f"SELECT count() AS n FROM {t} WHERE customer_id = {{c:String}}", {"c": cid}
                )[  # noqa: S608
                    0
                ]["n"]
            )
            for t in customer_tables(ch)
        }
    finally:
        ch.close()


def worker_with_rules(settings: Settings, start_worker: Any, tmp_path: Path) -> Settings:
    """A worker running this file's RULES; the settings it runs with."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    s = settings.model_copy(update={"rules_file": rules})
    start_worker(s)
    return s


def test_an_erased_customer_stays_erased_when_their_events_come_again(
    settings: Settings, start_worker, produce, rds: redis.Redis, outputs, tmp_path: Path
) -> None:
    s = worker_with_rules(settings, start_worker, tmp_path)
    now = datetime.now(UTC)
    first = shopping("gone", "a", now - timedelta(minutes=5)) + shopping(
        "kept", "a", now - timedelta(minutes=5)
    )
    for kind, value in first:
        produce(kind, value)
    produce.flush()
    wait_for(lambda: consumed(rds) >= len(first), timeout=90, what="the first visits")
    wait_for(
        lambda: sum(1 for a in outputs["actions"].poll()) >= 4, timeout=60, what="four actions"
    )
    before = rows_of(s, "gone")
    assert before["events"] == 3 and before["rule_decisions"] == 2
    actions_before = [a for a in outputs["actions"].json() if a["customer_id"] == "gone"]
    assert len(actions_before) == 2

    done = ecrm(s, "customer", "erase", "gone", "--operator", "dpo@shop")
    assert done.returncode == 0, done.stderr
    # the profile, the rule state and the member state (the paid order made a member)
    assert "3 Redis keys removed" in done.stdout
    assert rds.get(keyspace.profile("gone", s.partitions)) is None
    assert rds.get(keyspace.rule_state("gone", s.partitions)) is None
    assert rds.get(keyspace.member("gone", s.partitions)) is None
    token = erasure_token("gone", s.privacy_key())
    assert rds.exists(keyspace.erased(token, keyspace.home("gone", s.partitions)))

    # the same events again (a replay of the topics), and new ones
    again = first[:3] + shopping("gone", "b", now) + shopping("kept", "b", now)
    seen = consumed(rds)
    for kind, value in again:
        produce(kind, value)
    produce.flush()
    wait_for(lambda: consumed(rds) >= seen + len(again), timeout=90, what="the events again")
    counters = stats(rds)
    assert counters["erased"] == 6  # the three replayed and the three new ones of `gone`
    assert counters["erasures"] == 1
    assert rds.get(keyspace.profile("gone", s.partitions)) is None
    assert rds.get(keyspace.rule_state("gone", s.partitions)) is None
    assert not any(rds.zscore(keyspace.wakes(p), "gone") for p in range(s.partitions))
    kept = Profile.model_validate_json(rds.get(keyspace.profile("kept", s.partitions)))
    assert kept.frequency == 2

    # ClickHouse: the sink deleted their rows and wrote the audit row, which names nobody
    assert set(rows_of(s, "gone").values()) == {0}
    ch = sink_all(s)
    try:
        audit = ch.query("SELECT * FROM erasures")
    finally:
        ch.close()
    assert len(audit) == 1 and audit[0]["operator"] == "dpo@shop"
    assert audit[0]["rows_deleted"] == sum(before.values())
    assert "gone" not in json.dumps(audit, default=str)

    # outputs: nothing new for them; the dropped events are dead letters without payload
    wait_for(lambda: len(outputs["actions"].poll()) >= 5, timeout=60, what="kept's second thanks")
    outputs["dead-letter"].settle(2.0)
    assert [a for a in outputs["actions"].json() if a["customer_id"] == "gone"] == actions_before
    letters = outputs["dead-letter"].json()
    assert [d["error"] for d in letters] == ["erased"] * 6
    assert all(d["value_b64"] == "" and d["key"] is None for d in letters)
    assert all(key is None for key, _ in outputs["dead-letter"].received)
    assert all(b"gone" not in value for _, value in outputs["dead-letter"].received)

    exported = ecrm(s, "customer", "export", "gone")
    assert exported.returncode == 0, exported.stderr
    data = json.loads(exported.stdout)
    assert data["erased"] and data["profile"] is None
    assert all(rows == [] for rows in data["clickhouse"].values())


def test_a_refused_channel_gets_no_action_and_an_unsubscribe_token_opts_out(
    settings: Settings, start_worker, produce, rds: redis.Redis, outputs, tmp_path: Path
) -> None:
    s = worker_with_rules(settings, start_worker, tmp_path)
    now = datetime.now(UTC)
    produce(
        "customers",
        {
            "event_id": "m-quiet",
            "customer_id": "quiet",
            "ts": (now - timedelta(minutes=10)).isoformat(),
            "consent": {"sms": False},
            "birthday": "03-21",
        },
    )
    events = shopping("quiet", "a", now - timedelta(minutes=5)) + shopping(
        "open", "a", now - timedelta(minutes=5)
    )
    for kind, value in events:
        produce(kind, value)
    produce.flush()
    wait_for(lambda: consumed(rds) >= len(events) + 1, timeout=90, what="the visits")
    wait_for(lambda: len(outputs["actions"].poll()) >= 3, timeout=60, what="three actions")
    outputs["actions"].settle(1.0)
    sent = {(a["customer_id"], a["rule_id"]): a for a in outputs["actions"].json()}
    assert set(sent) == {("open", "welcome"), ("open", "thanks"), ("quiet", "thanks")}
    assert all(a["params"]["unsubscribe_token"].startswith("u1.") for a in sent.values())
    decided = rule_stats(rds)
    assert decided["welcome|suppressed:no_consent"] == 1
    quiet = Profile.model_validate_json(rds.get(keyspace.profile("quiet", s.partitions)))
    assert quiet.birthday == "03-21" and quiet.consent["sms"].granted is False

    # the SMS provider hands back the token of `open`'s welcome: `open` is opted out of SMS
    token = sent[("open", "welcome")]["params"]["unsubscribe_token"]
    done = ecrm(s, "customer", "unsubscribe", token)
    assert done.returncode == 0, done.stderr
    wait_for(
        lambda: Profile.model_validate_json(
            rds.get(keyspace.profile("open", s.partitions))
        ).consent.get("sms"),
        timeout=60,
        what="open's opt-out",
    )
    opened = Profile.model_validate_json(rds.get(keyspace.profile("open", s.partitions)))
    assert opened.consent["sms"].granted is False
    assert ecrm(s, "customer", "unsubscribe", token[:-2] + "xx").returncode != 0

    ch = sink_all(s)
    try:
        rows = ch.query(
            "SELECT customer_id, outcome, reason FROM rule_decisions WHERE rule_id = 'welcome' "
            "ORDER BY customer_id"
        )
        stored = ch.query("SELECT attributes FROM events WHERE kind = 'customer'")
    finally:
        ch.close()
    assert [(r["customer_id"], r["outcome"], r["reason"]) for r in rows] == [
        ("open", "fired", ""),
        ("quiet", "suppressed", "no_consent"),
    ]
    assert any(json.loads(r["attributes"])["consent"] == {"sms": False} for r in stored)


HEX_ID = re.compile(r"[0-9a-f]{16,}")
PLANTED = ("13912345678", "amy.lee@example.com", "小鱼儿", "021-62345678")


def _texts(value: Any) -> Iterator[str]:
    """Every byte string and string inside a Redis reply, decoded."""
    if isinstance(value, bytes):
        yield value.decode("utf-8", "replace")
    elif isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _texts(k)
            yield from _texts(v)
    elif isinstance(value, list | tuple | set):
        for v in value:
            yield from _texts(v)


def _redis_text(client: redis.Redis) -> str:
    """Every key and value in the database, as one text."""
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        parts.append(key.decode("utf-8", "replace"))
        if kind == "string":
            value: Any = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "stream":
            value = client.xrange(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        else:
            value = client.lrange(key, 0, -1)
        parts.extend(_texts(value))
    return "\n".join(parts)


def test_personal_data_planted_in_the_traffic_is_found_nowhere_after_a_run(
    settings: Settings, start_worker, produce, rds: redis.Redis, outputs, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    s = settings.model_copy(update={"rules_file": rules, "pii_fields": "nickname"})
    start_worker(s)
    now = datetime.now(UTC)
    phone, email, nickname, landline = PLANTED
    events = shopping(phone, "a", now - timedelta(minutes=5))
    events[0][1].update(nickname=nickname, contact={"email": email, "tel": landline})
    events[2][1].update(note=f"deliver to {email}, or call {landline}")
    for kind, value in events:
        produce(kind, value)
    # refused messages that hold personal data: a bad amount, and not JSON at all
    bad = {**events[2][1], "event_id": "bad-1", "amount": "lots", "buyer_email": email}
    produce("orders", bad)
    produce("orders", f'{{"customer_id": "{phone}", "note": "{email}"'.encode(), key=phone)
    produce.flush()
    wait_for(lambda: consumed(rds) >= len(events) + 2, timeout=90, what="the traffic")
    wait_for(lambda: len(outputs["actions"].poll()) >= 2, timeout=60, what="the actions")
    wait_for(lambda: len(outputs["dead-letter"].poll()) >= 2, timeout=60, what="dead letters")
    for topic in outputs.values():
        topic.settle(1.0)

    hashed = personal_id(phone, s.privacy_key())
    assert {a["customer_id"] for a in outputs["actions"].json()} == {hashed}
    found: dict[str, str] = {"redis": _redis_text(rds)}
    for name, topic in outputs.items():
        found[name] = "\n".join(
            (k or b"").decode("utf-8", "replace") + " " + v.decode("utf-8", "replace")
            for k, v in topic.received
        )
        found[name] += "\n" + "\n".join(json.dumps(m, ensure_ascii=False) for m in topic.json())
    found["dead-letter"] += "\n".join(
        base64.b64decode(d["value_b64"]).decode("utf-8", "replace")
        for d in outputs["dead-letter"].json()
    )
    ch = sink_all(s)
    try:
        # every table (views only show what tables hold)
        tables = [
            r["name"]
            for r in ch.query(
                "SELECT name FROM system.tables "
                "WHERE database = currentDatabase() AND engine LIKE '%MergeTree'"
            )
        ]
        for table in tables:
            rows = ch.query(f"SELECT * FROM {table}")  # noqa: S608 - names ClickHouse listed
            found[f"clickhouse.{table}"] = json.dumps(rows, default=str, ensure_ascii=False)
    finally:
        ch.close()
    assert found["clickhouse.events"].count(hashed) == 3  # the data is there, pseudonymised
    for where, text in found.items():
        for planted in PLANTED:
            assert planted not in text, f"{planted!r} found in {where}"
        # hex ids (action ids, keyed hashes, tokens: 16+ hex digits) are ours, never personal,
        # and their digit runs can read as a landline: the wide net is cast over the rest
        assert not looks_personal(HEX_ID.sub("<id>", text)), f"personal data in {where}"
