"""`ecrm api` over real HTTP (uvicorn on a free port) against the embedded stack: Segment
calls become events the worker folds into the profile the API then reads; every refusal
says why; keys are checked; an unavailable broker is a 503 the client can retry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from kafka import KafkaConsumer

from ecrm.api.keys import ApiKey, key_hash
from streams.topics import partition_for
from tests.integration.api_server import KEYS, READ_KEY, WRITE_KEY, free_port, serving
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

W = (WRITE_KEY, "")
R = (READ_KEY, "")


def order_completed(user: str, order: str, total: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": user,
        "messageId": f"msg-{order}",
        "timestamp": datetime.now(UTC).isoformat(),
        "properties": {
            "order_id": order,
            "total": total,
            "currency": "cny",
            "products": [{"product_id": "sku-1", "quantity": 2, "price": total}],
        },
        **extra,
    }


def product(event: str, user: str, sku: str, n: int, **props: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": event,
        "anonymousId": user,
        "messageId": f"{user}-{event}-{sku}-{n}",
        "timestamp": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "properties": {"sku": sku, **props},
    }


def test_a_segment_order_reaches_the_profile_the_api_and_the_cli_read_alike(settings, start_worker):
    start_worker()
    with serving(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        answer = http.post("/v1/track", json=order_completed("alice", "o-1", "188.00"), auth=W)
        assert answer.status_code == 200, answer.text
        assert answer.json()["topic"] == "orders" and answer.json()["event_id"] == "msg-o-1"

        def profile() -> dict[str, Any] | None:
            got = http.get("/v1/profiles/alice", auth=R)
            return got.json() if got.status_code == 200 else None

        seen = wait_for(lambda: (p := profile()) and p["frequency"] == 1 and p, what="profile")
        assert seen["monetary"] == "188.00" and seen["segment"] != "prospect"
        cli = subprocess.run(
            [sys.executable, "-m", "ecrm", "profile", "alice", "--json"],
            env={**os.environ, **settings.as_env()},
            capture_output=True,
            text=True,
            check=True,
        )
        printed = json.loads(cli.stdout)
        again = profile()
        assert again is not None
        for view in (printed, again):
            view.pop("as_of")
            view.pop("recency_days")  # both re-rated as of their own now
        assert again == printed
        assert http.get("/v1/profiles/nobody", auth=R).status_code == 404


def test_a_batch_answers_each_event_and_sends_only_the_valid_ones(settings):
    batch = [
        product("Product Added", "anon-1", "sku-9", 1, price="59.00", quantity=1),
        {"type": "track", "event": "Coupon Entered", "userId": "bob", "properties": {}},
        product("Product Added", "anon-1", "sku-9", 2, price="-3", quantity=1),
        {"type": "screen", "userId": "bob"},
        product("Product Viewed", "anon-1", "sku-7", 1, category="shoes"),
    ]
    with serving(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        answer = http.post("/v1/batch", json={"batch": batch}, auth=W)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["accepted"], body["refused"]) == (2, 3)
    results = body["results"]
    assert [r["status"] for r in results] == [
        "accepted",
        "refused",
        "refused",
        "refused",
        "accepted",
    ]
    assert "Coupon Entered" in results[1]["reason"] and "Order Completed" in results[1]["reason"]
    assert "price" in results[2]["reason"]
    assert "screen" in results[3]["reason"]
    consumer = KafkaConsumer(
        settings.topic("cart"),
        settings.topic("browse"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    got = [orjson.loads(m.value) for m in consumer]
    consumer.close()
    assert sorted((e["sku"], e["customer_id"], e["source"]) for e in got) == [
        ("sku-7", "anon-1", "web-shop"),
        ("sku-9", "anon-1", "web-shop"),
    ]


def test_refusals_say_why(settings):
    slow = "s" * 64
    keys = [*KEYS, ApiKey(name="slow", kind="write", sha256=key_hash(slow), rate_per_s=1)]
    with serving(settings, keys=keys) as url, httpx.Client(base_url=url, timeout=30) as http:
        order = order_completed("carol", "o-2", "10.00")
        assert http.post("/v1/track", json=order).status_code == 401
        unknown = http.post("/v1/track", json=order, auth=("x" * 64, ""))
        assert unknown.status_code == 401 and "unknown key" in unknown.json()["detail"]
        wrong = http.post("/v1/track", json=order, auth=R)
        assert wrong.status_code == 403 and "read key" in wrong.json()["detail"]
        reading = http.get("/v1/profiles/carol", auth=W)
        assert reading.status_code == 403 and "needs a read key" in reading.json()["detail"]

        odd = http.post("/v1/track", json={**order, "event": "Checkout Started"}, auth=W).json()[
            "detail"
        ]
        assert "Checkout Started" in odd and "Product Viewed" in odd
        naive = {**order, "timestamp": "2026-01-01T10:00:00"}
        assert "UTC offset" in http.post("/v1/track", json=naive, auth=W).json()["detail"]

        big = {**order, "properties": {**order["properties"], "note": "x" * 33_000}}
        assert http.post("/v1/track", json=big, auth=W).status_code == 413
        many = {"batch": [product("Product Viewed", "dan", "sku", i) for i in range(5000)]}
        assert http.post("/v1/batch", json=many, auth=W).status_code == 413

        contract = {"event_id": "e-1", "customer_id": "carol", "ts": 1_700_000_000_000}
        bad = http.post("/v1/events/cart", json={**contract, "sku": "a", "qty": 0}, auth=W)
        assert bad.status_code == 400 and "qty" in bad.json()["detail"]
        good = http.post(
            "/v1/events/cart", json={**contract, "sku": "a", "qty": 1, "price": 5}, auth=W
        )
        assert good.status_code == 200, good.text
        assert http.post("/v1/events/points", json=contract, auth=W).status_code == 404

        views = [product("Product Viewed", "erin", "sku", i) for i in range(100)]
        answers = [http.post("/v1/batch", json={"batch": views}, auth=(slow, "")) for _ in range(6)]
        assert [a.status_code for a in answers[:5]] == [200] * 5
        assert answers[5].status_code == 429 and int(answers[5].headers["retry-after"]) >= 1


def test_an_unavailable_broker_is_a_503_to_retry_never_a_silent_drop(settings):
    away = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    with serving(away) as url, httpx.Client(base_url=url, timeout=60) as http:
        answer = http.post("/v1/track", json=order_completed("fred", "o-3", "20.00"), auth=W)
        assert answer.status_code == 503
        assert int(answer.headers["retry-after"]) >= 1
        assert http.get("/healthz").status_code == 200  # alive, serving
        ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["broker"].startswith("unavailable")
        assert ready.json()["redis"] == "ok"
        assert (
            answer.json()["code"] == "unavailable"
            and "send the same request" in (answer.json()["message"])
        )
        metrics = http.get("/metrics").text
        assert 'ecrm_api_events_refused_total{reason="broker_unavailable"} 1.0' in metrics


WAIT_RULES = """
rules:
  - id: abandoned-cart
    when:
      event: cart
      not_followed_by: {event: orders, where: {status: paid}}
      within: 12s
    action: {kind: coupon, channel: sms, params: {value: 10, valid_for: 48h}}
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_identify_merges_the_anonymous_session_and_its_wait_into_the_customer(
    settings, start_worker, tmp_path, workers
):
    rules = tmp_path / "rules.yaml"
    rules.write_text(WAIT_RULES, encoding="utf-8")
    s = settings.model_copy(update={"rules_file": rules})
    # the two ids live on different partitions: with two workers, each may own one of them
    assert partition_for("anon-7", s.partitions) != partition_for("u-7", s.partitions)
    for _ in range(workers):
        start_worker(s)
    now = datetime.now(UTC)
    session = [
        product("Product Viewed", "anon-7", "sku-1", 1, category="tea"),
        product("Product Viewed", "anon-7", "sku-1", 2, category="tea"),
        product("Product Added to Wishlist", "anon-7", "sku-2", 1),
        {**product("Product Added", "anon-7", "sku-1", 1, price="88.00"), "timestamp": None},
    ]
    known = {
        **order_completed("u-7", "o-70", "300.00"),
        "timestamp": (now - timedelta(days=3)).isoformat(),
    }
    with serving(s) as url, httpx.Client(base_url=url, timeout=30) as http:

        def profile(cid: str) -> dict[str, Any] | None:
            got = http.get(f"/v1/profiles/{cid}", auth=R)
            return got.json() if got.status_code == 200 else None

        assert http.post("/v1/track", json=known, auth=W).status_code == 200
        wait_for(lambda: (p := profile("u-7")) and p["frequency"] == 1, what="u-7's order")
        answer = http.post("/v1/batch", json={"batch": session}, auth=W).json()
        assert answer["accepted"] == 4, answer
        wait_for(lambda: (p := profile("anon-7")) and p["cart"], what="the anonymous cart")
        linked = http.post(
            "/v1/identify",
            json={"userId": "u-7", "anonymousId": "anon-7", "traits": {"email": "x@y.z"}},
            auth=W,
        )
        assert linked.status_code == 200 and linked.json()["topic"] == "identities"
        merged = wait_for(
            lambda: (p := profile("anon-7")) and p["customer_id"] == "u-7" and p,
            what="anon-7 redirected to u-7",
        )
        assert set(merged["cart"]) == {"sku-1"} and set(merged["favorites"]) == {"sku-2"}
        assert merged["views"]["sku-1"]["count"] == 2 and merged["frequency"] == 1
        later = product("Product Viewed", "anon-7", "sku-3", 1)
        assert http.post("/v1/track", json=later, auth=W).status_code == 200
        wait_for(
            lambda: "sku-3" in (profile("u-7") or {}).get("views", {}),
            what="a later anonymous view folded into u-7",
        )
        again = http.post("/v1/alias", json={"userId": "u-7", "previousId": "anon-7"}, auth=W)
        assert again.status_code == 200

    consumer = KafkaConsumer(
        settings.topic("actions"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    actions: list[dict[str, Any]] = []
    wait_for(
        lambda: actions.extend(orjson.loads(m.value) for m in consumer) or actions,
        timeout=60,
        what="the carried-over wait's coupon",
    )
    consumer.close()
    assert [(a["rule_id"], a["customer_id"]) for a in actions] == [("abandoned-cart", "u-7")]

    from tests.integration.test_pipeline import sink_all

    ch = sink_all(settings)
    try:
        rows = ch.query(
            "SELECT merged_id, customer_id, outcome, cart_items, favorites, views, waits "
            "FROM identity_merges ORDER BY merged_at, outcome DESC"
        )
        with serving(settings, clickhouse=ch) as url, httpx.Client(base_url=url) as http:
            decided = http.get("/v1/profiles/u-7/decisions", auth=R).json()["decisions"]
            carts = http.get("/v1/audiences", params={"where": "cart_items >= 1"}, auth=R)
            refused = http.get("/v1/audiences", params={"where": "1; DROP TABLE x"}, auth=R)
            ready = http.get("/readyz")
    finally:
        ch.close()
    # `ecrm api` beside no other holder of the embedded chdb opens it per request, as `ecrm sql`
    with serving(settings) as url, httpx.Client(base_url=url) as http:
        for _ in range(2):
            again = http.get("/v1/profiles/u-7/decisions", auth=R)
            assert again.status_code == 200 and again.json()["decisions"] == decided
    assert rows[0] == {
        "merged_id": "anon-7",
        "customer_id": "u-7",
        "outcome": "merged",
        "cart_items": 1,
        "favorites": 1,
        "views": 2,
        "waits": 1,
    }
    assert [r["outcome"] for r in rows[1:]] == ["already_linked"]
    assert [(d["rule_id"], d["outcome"]) for d in decided] == [("abandoned-cart", "fired")]
    # the cart moved to u-7: the anonymous id's last snapshot no longer holds it
    assert carts.status_code == 200 and carts.headers["content-type"].startswith("text/csv")
    lines = carts.text.splitlines()
    assert lines[0].startswith("customer_id,") and [ln.split(",")[0] for ln in lines[1:]] == ["u-7"]
    assert refused.status_code == 400
    assert ready.status_code == 200 and ready.json() | {"at": 0} == {
        "status": "ready",
        "broker": "ok",
        "redis": "ok",
        "at": 0,
    }
