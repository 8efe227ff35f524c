"""One odd but real event never stops the worker: each is applied faithfully or dead-lettered
with a reason naming the field and the limit, and the events produced after it, for the same
customer and for others, reach their profiles."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer

from ecrm.commands.profile import read_profile
from tests.integration.conftest import consumed, rule_stats, stats, wait_for
from tests.integration.test_pipeline import sink_all

pytestmark = pytest.mark.integration

RULES = """
rules:
  - id: high-score
    when: {event: cart, where: {extra.score: {gte: 10}}}
    action: {kind: tag, params: {tag: high-score}}
"""
NOW = datetime.now(UTC)
HUGE = 2**70 + 1


def cart(cid: str, event_id: str, **more: Any) -> dict[str, Any]:
    fields = {"sku": f"sku-{event_id}", "qty": 1, "price": "9.90", **more}
    return {"event_id": event_id, "customer_id": cid, "ts": NOW.isoformat(), **fields}


def as_json(value: dict[str, Any], splice: str = "") -> bytes:
    """The stdlib writes any integer; `splice` adds text JSON has no value for (NaN)."""
    text = json.dumps(value)
    return (text[:-1] + ", " + splice + "}" if splice else text).encode()


#: customer (also the message key) -> (topic, message, what the dead letter must say, or None
#: when the event is fine and must be applied)
ODD: dict[str, tuple[str, bytes, list[str] | None]] = {
    "big-int": ("cart", as_json(cart("big-int", "big", big=HUGE, deep={"x": [HUGE]})), None),
    "nan-text": ("cart", as_json(cart("nan-text", "nan-text", score="NaN")), None),
    "snan-text": ("cart", as_json(cart("snan-text", "snan-text", score="sNaN")), None),
    "inf-text": ("cart", as_json(cart("inf-text", "inf-text", score="Infinity")), None),
    "nan-json": (
        "cart",
        as_json(cart("nan-json", "nan-json"), '"score": NaN'),
        ["unknown field score is nan", "not a finite number"],
    ),
    "inf-json": (
        "cart",
        as_json(cart("inf-json", "inf-json"), '"score": {"v": [Infinity]}'),
        ["unknown field score.v[0] is inf"],
    ),
    "deep": (
        "cart",
        as_json(cart("deep", "deep"), '"d": ' + "[" * 10_000 + "]" * 10_000),
        ["recursion limit"],
    ),
    "qty": ("cart", as_json(cart("qty", "qty", qty=10**12)), ["qty", "4294967295"]),
    "amount": (
        "orders",
        as_json(
            {
                "event_id": "amount",
                "customer_id": "amount",
                "ts": NOW.isoformat(),
                "order_id": "o-amount",
                "status": "paid",
                "amount": 10**17,
            }
        ),
        ["amount", "16 digits"],
    ),
    "600k": ("cart", b'{"event_id": "600k", "note": "' + b"a" * 600_000, ["json"]),
    "year-9999": (
        "cart",
        as_json(cart("year-9999", "y9999", ts="9999-12-31T23:59:59Z")),
        ["ts", "more than 24h after this worker's clock", "ECRM_TS_MAX_FUTURE_S"],
    ),
    "ts-zero": (
        "cart",
        as_json(cart("ts-zero", "ts0", ts=0)),
        ["before 2000-01-01T00:00:00Z", "ECRM_TS_MIN"],
    ),
    "ts-seconds": (
        "cart",
        as_json(cart("ts-seconds", "ts-s", ts=int(NOW.timestamp()))),
        ["looks like epoch seconds", "send milliseconds"],
    ),
}
REFUSED = {cid for cid, (_, _, words) in ODD.items() if words is not None}
OTHERS = [f"n{i}" for i in range(6)]


def dead_letters(settings: Any, expected: int) -> dict[str, dict[str, Any]]:
    consumer = KafkaConsumer(
        settings.topic("dead-letter"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )
    letters: list[dict[str, Any]] = []
    try:
        wait_for(
            lambda: (
                letters.extend(orjson.loads(m.value) for m in consumer),
                len(letters) >= expected,
            )[1],
            what=f"{expected} dead letters",
        )
    finally:
        consumer.close()
    return {letter["key"]: letter for letter in letters}


def test_odd_inputs_are_applied_or_dead_lettered_and_the_worker_keeps_going(
    settings, start_worker, produce, rds, tmp_path: Path
):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    worker = start_worker(settings.model_copy(update={"rules_file": rules}))
    sent = 0

    def send(topic: str, value: dict[str, Any] | bytes, key: str) -> None:
        nonlocal sent
        produce(topic, value, key=key)
        sent += 1

    for i, (cid, (topic, raw, _)) in enumerate(ODD.items()):
        send("cart", cart(cid, f"{cid}-before"), cid)
        send("browse", {**cart(OTHERS[i % len(OTHERS)], f"other-{i}"), "category": "c"}, "x")
        send(topic, raw, cid)
    for cid in ODD:
        send("cart", cart(cid, f"{cid}-after"), cid)
    for i, cid in enumerate(OTHERS):
        order = {**cart(cid, f"{cid}-order"), "order_id": f"o-{cid}", "status": "paid"}
        send("orders", {**order, "amount": f"{100 + i}.50"}, cid)
    send("cart", cart("scorer", "scorer", score=11), "scorer")  # the rule still fires
    produce.flush()

    wait_for(
        lambda: consumed(rds) >= sent or worker.proc.poll() is not None,
        timeout=120,
        what=f"{sent} messages handled",
    )
    assert worker.proc.poll() is None, worker.log_tail()
    assert consumed(rds) == sent
    assert stats(rds)["dead_letters"] == len(REFUSED)

    letters = dead_letters(settings, len(REFUSED))
    assert letters.keys() == REFUSED
    for cid in REFUSED:
        topic, raw, words = ODD[cid]
        letter = letters[cid]
        assert letter["topic"] == settings.topic(topic)
        assert all(w.lower() in letter["error"].lower() for w in words or []), (cid, letter)
        assert letter["value_size"] == len(raw)
        assert letter["value_sha256"] == hashlib.sha256(raw).hexdigest()
        assert base64.b64decode(letter["value_b64"]) == raw[:4096]
        assert letter["value_truncated"] is (len(raw) > 4096)
    assert len(json.dumps(letters["600k"])) < 16_384

    for cid in ODD:  # the events after the odd one reached the same customer
        profile = read_profile(settings, cid)
        assert profile is not None, cid
        assert f"sku-{cid}-after" in profile.cart, cid
        assert f"sku-{cid}-before" in profile.cart, cid
        applied = ODD[cid][2] is None
        assert profile.events_seen == (3 if applied else 2), cid
    for i, cid in enumerate(OTHERS):
        profile = read_profile(settings, cid)
        assert profile is not None and profile.frequency == 1, cid
        assert str(profile.monetary) == f"{100 + i}.50"

    fired = rule_stats(rds)
    assert fired == {"high-score|fired": 1}  # "NaN", "sNaN", "Infinity" are not >= 10

    ch = sink_all(settings)
    rows = ch.query("SELECT event_id, extra FROM events WHERE event_id = 'big'")
    assert [json.loads(r["extra"]) for r in rows] == [{"big": HUGE, "deep": {"x": [HUGE]}}]
    ch.close()
    assert worker.proc.poll() is None, worker.log_tail()
