"""`ecrm deliver` against real local receivers (a webhook receiver honouring the idempotency
key, an aiosmtpd server with STARTTLS), on the session's embedded broker and Valkey."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from kafka import KafkaConsumer

from ecrm.dev.delivery_receivers import ShopReceiver, SmtpReceiver
from schemas.delivery import Receipt
from schemas.privacy import read_unsubscribe_token, unsubscribe_token
from schemas.profile import ConsentMark, Profile
from streams import keyspace
from streams.settings import Settings
from tests.integration.api_server import serving
from tests.integration.conftest import WorkerProcess, wait_for

pytestmark = pytest.mark.integration

SECRET = "shop-webhook-secret-for-tests"  # noqa: S105


def delivery_file(
    folder: Path, shop: ShopReceiver, smtp: SmtpReceiver | None = None, click_base: str = ""
) -> Path:
    email = ""
    if smtp is not None:
        email = f"""
    smtp:
      type: email
      host: {smtp.host}
      port: {smtp.port}
      ca_file: {smtp.ca_file}
      from: "示例商城 <crm@shop.example>"
      unsubscribe_url: "https://shop.example/u?token={{token}}"
      timeout: 5s"""
    path = folder / "delivery.yaml"
    path.write_text(
        f"""
deliver:
  channels: {{inbox: shop, webhook: shop{", email: smtp" if smtp else ""}}}
  providers:
    shop:
      type: webhook
      url: {shop.url}/ecrm/actions
      secret: {{env: TEST_SHOP_SECRET}}
      timeout: 2s{email}
  contacts: {{url: "{shop.url}/ecrm/contacts", secret: {{env: TEST_SHOP_SECRET}}}}
  coupons: {{url: "{shop.url}/ecrm/coupons", secret: {{env: TEST_SHOP_SECRET}}}}
  retry: {{first: 1s, max: 2s, deadline: 20s}}
  {f"click_base: {click_base}" if click_base else ""}
  templates:
    cart_coupon:
      email:
        zh-CN:
          subject: "送您 {{{{ value }}}} 元优惠券"
          text: "券码 {{{{ coupon_code }}}}，满 {{{{ threshold }}}} 元可用"
      inbox:
        zh-CN: {{text: "您的购物车还在等您 {{{{ link('https://shop.example/cart') }}}}"}}
""",
        encoding="utf-8",
    )
    return path


class DeliverProcess(WorkerProcess):
    """`ecrm deliver` as a real child process, killable like in production."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        super().__init__(settings, log_path, ("deliver",), {"TEST_SHOP_SECRET": SECRET})


@pytest.fixture
def shop() -> Iterator[ShopReceiver]:
    with ShopReceiver(SECRET.encode()) as receiver:
        yield receiver


@pytest.fixture
def start_deliver(settings: Settings, tmp_path: Path) -> Iterator[Callable[[Path], DeliverProcess]]:
    started: list[DeliverProcess] = []

    def start(file: Path) -> DeliverProcess:
        s = settings.model_copy(update={"delivery_file": file, "rules_reload_s": 0.5})
        process = DeliverProcess(s, tmp_path / f"deliver-{len(started) + 1}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def action(n: int, **over: Any) -> dict[str, Any]:
    a = {
        "action_id": f"a{n}",
        "rule_id": "abandoned-cart",
        "customer_id": f"c{n}",
        "kind": "message",
        "channel": "inbox",
        "params": {"template": "cart_coupon"},
        "trigger_event_id": f"e{n}",
        "fired_at": datetime.now(UTC).isoformat(),
    }
    a.update(over)
    return a


def failures(settings: Settings, expect: int) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        settings.topic("delivery-failures"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    found: list[dict[str, Any]] = []
    try:

        def read() -> bool:
            found.extend(orjson.loads(m.value) for m in consumer)
            return len(found) >= expect

        wait_for(read, timeout=60, what=f"{expect} delivery failures")
    finally:
        consumer.close()
    return found


def test_a_receiver_answering_500_then_200_gets_the_action_once_after_the_retry(
    settings: Settings, shop: ShopReceiver, produce: Any, tmp_path: Path, start_deliver: Any
) -> None:
    shop.script["a1"] = [500]
    deliver = start_deliver(delivery_file(tmp_path, shop))
    produce("actions", action(1))
    produce.flush()
    wait_for(lambda: "a1" in shop.delivered, timeout=60, what="a1 delivered")
    assert shop.posts["a1"] == 2, deliver.log_tail()
    body = shop.delivered["a1"]
    assert body["action_id"] == "a1" and body["customer_id"] == "c1"
    record = redis.Redis.from_url(settings.redis_url).hgetall(
        keyspace.delivery("a1", settings.partitions)
    )
    assert record[b"status"] == b"sent" and record[b"attempts"] == b"2"
    assert SECRET not in deliver.log_path.read_text(errors="replace")  # never in a log


def test_a_4xx_lands_in_delivery_failures_with_the_reason_and_is_not_retried(
    settings: Settings, shop: ShopReceiver, produce: Any, tmp_path: Path, start_deliver: Any
) -> None:
    shop.script["a2"] = [422]
    start_deliver(delivery_file(tmp_path, shop))
    produce("actions", action(2))
    produce.flush()
    [failure] = failures(settings, 1)
    assert failure["action_id"] == "a2"
    assert failure["reason"].startswith("HTTP 422")
    assert failure["attempts"] == 1
    assert shop.posts["a2"] == 1 and "a2" not in shop.delivered


def test_a_consent_withdrawn_or_an_erasure_after_the_decision_stops_the_send(
    settings: Settings, shop: ShopReceiver, produce: Any, tmp_path: Path, start_deliver: Any
) -> None:
    now = datetime.now(UTC)
    withdrawn = Profile(customer_id="c3", consent={"inbox": ConsentMark(granted=False, at=now)})
    client = redis.Redis.from_url(settings.redis_url)
    client.set(keyspace.profile("c3", settings.partitions), withdrawn.model_dump_json())
    from agents.privacy.erasure import erase_customer

    erase_customer(client, settings, "c7", "test", now)  # erased after the decision too
    start_deliver(delivery_file(tmp_path, shop))
    produce("actions", action(3))
    produce("actions", action(4))  # consent never withdrawn: sent
    produce("actions", action(7))
    produce.flush()
    found = {f["action_id"]: f for f in failures(settings, 2)}
    assert found["a3"]["reason"] == "no_consent" and found["a3"]["customer_id"] == "c3"
    erased = found["a7"]
    assert (erased["reason"], erased["customer_id"], erased["action"]) == ("erased", "", None)
    wait_for(lambda: "a4" in shop.delivered, what="a4 delivered")
    assert "a3" not in shop.posts and "a7" not in shop.posts
    assert shop.asked == []  # nobody's address was even asked for
    record = client.hgetall(keyspace.delivery("a7", settings.partitions))
    assert record[b"status"] == b"failed" and b"action" not in record


def test_a_sigkilled_deliver_mid_stream_leaves_every_action_delivered_once_and_none_lost(
    settings: Settings, shop: ShopReceiver, produce: Any, tmp_path: Path, start_deliver: Any
) -> None:
    count = 120
    shop.delay_s = 0.1  # a slow shop: the kill finds sends in flight
    file = delivery_file(tmp_path, shop)
    first = start_deliver(file)
    for n in range(count):
        produce("actions", action(100 + n))
    produce.flush()
    wait_for(lambda: len(shop.delivered) >= 20, timeout=60, what="a first share delivered")
    first.kill()
    killed_at = len(shop.delivered)
    assert killed_at < count, "the first process delivered everything before the kill"
    second = start_deliver(file)
    wait_for(
        lambda: len(shop.delivered) == count,
        timeout=90,
        what=f"{count} delivered: {second.log_tail}",
    )
    assert set(shop.delivered) == {f"a{100 + n}" for n in range(count)}
    # the idempotency key made repeats harmless; only the actions in flight at the kill repeat
    assert sum(shop.posts.values()) - count <= 32


def test_a_coupon_email_carries_the_minted_code_and_one_click_unsubscribe(
    settings: Settings, shop: ShopReceiver, produce: Any, tmp_path: Path, start_deliver: Any
) -> None:
    token = unsubscribe_token("c5", "email", settings.privacy_key())
    coupon = action(
        5,
        kind="coupon",
        channel="email",
        params={
            "template": "cart_coupon",
            "value": 10,
            "threshold": 99,
            "valid_for": "48h",
            "unsubscribe_token": token,
        },
    )
    with SmtpReceiver(tmp_path) as smtp:
        start_deliver(delivery_file(tmp_path, shop, smtp))
        produce("actions", coupon)
        produce.flush()
        wait_for(lambda: smtp.messages, timeout=60, what="the e-mail")
        [mail] = smtp.messages
    assert mail["To"] == "c5@shop.example"
    assert ("c5", "email") in shop.asked
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = mail["List-Unsubscribe"].strip("<>")
    assert read_unsubscribe_token(link.split("token=", 1)[1], settings.privacy_key()) == (
        "c5",
        ["email"],
    )
    assert mail["Message-ID"] == "<a5@shop.example>"
    body = mail.get_payload(decode=True).decode()
    assert body.startswith("券码 CPN") and "满 99 元可用" in body


def test_the_funnel_from_decided_to_clicked_lands_in_rule_performance(
    settings: Settings,
    shop: ShopReceiver,
    produce: Any,
    tmp_path: Path,
    start_deliver: Any,
    ch: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agents.delivery.channels.webhook import signed_post_headers
    from streams.sink import ClickHouseSink

    monkeypatch.setenv("TEST_SHOP_SECRET", SECRET)
    fired = action(6)
    decided_at = datetime.now(UTC)
    # the worker's part: the decision row it writes when the rule fires
    ch.insert(
        "rule_decisions",
        [
            {
                "action_id": "a6", "rule_id": "abandoned-cart", "customer_id": "c6",
                "outcome": "fired", "reason": "", "kind": "message", "channel": "inbox",
                "params": "{}", "trigger_event_id": "e6", "decided_at": decided_at,
                "deliver_at": None, "priority": 50, "coupon_value": None, "released": 0,
            }
        ],
        token="decision-a6",
    )  # fmt: skip
    file = tmp_path / "delivery.yaml"
    with serving(settings.model_copy(update={"delivery_file": file})) as api:
        delivery_file(tmp_path, shop, click_base=api)
        start_deliver(file)
        produce("actions", fired)
        produce.flush()
        wait_for(lambda: "a6" in shop.delivered, timeout=60, what="a6 delivered")
        text = shop.delivered["a6"]["text"]
        link = text.split(" ", 1)[1]
        assert link.startswith(f"{api}/r/")
        with httpx.Client(timeout=30) as http:
            clicked = http.get(link, follow_redirects=False)
            assert clicked.status_code == 302
            assert clicked.headers["location"] == "https://shop.example/cart"
            forged = http.get(link[:-3] + "xyz", follow_redirects=False)
            assert forged.status_code == 404
            body = orjson.dumps({"action_id": "a6", "status": "delivered", "provider_id": "m-6"})
            unsigned = http.post(f"{api}/v1/receipts/shop", content=body)
            assert unsigned.status_code == 401
            signed = http.post(
                f"{api}/v1/receipts/shop",
                content=body,
                headers=signed_post_headers(SECRET.encode(), body, "a6"),
            )
            assert signed.status_code == 200 and signed.json() == {"accepted": 1}
    sink = ClickHouseSink.from_settings(settings, ch, min_interval_s=0)

    def sunk() -> bool:
        sink.drain_once()
        return ch.query("SELECT count() AS n FROM deliveries")[0]["n"] >= 3

    wait_for(sunk, timeout=60, what="three delivery steps in ClickHouse")
    sink.close()
    [row] = ch.query(
        "SELECT * FROM rule_performance(since = {s:DateTime64(3, 'UTC')}, "
        "until = {u:DateTime64(3, 'UTC')}, window_hours = 72)",
        {"s": "2000-01-01 00:00:00", "u": "2100-01-01 00:00:00"},
    )
    assert row["rule_id"] == "abandoned-cart"
    funnel = {k: row[k] for k in ("decided", "sent", "delivery_sent", "delivered", "clicked")}
    assert funnel == {"decided": 1, "sent": 1, "delivery_sent": 1, "delivered": 1, "clicked": 1}
    steps = ch.query("SELECT status, rule_id, customer_id FROM deliveries ORDER BY status")
    assert [(r["status"], r["rule_id"], r["customer_id"]) for r in steps] == [
        ("clicked", "abandoned-cart", "c6"),
        ("delivered", "abandoned-cart", "c6"),
        ("sent", "abandoned-cart", "c6"),
    ]


def test_a_providers_rate_limit_is_one_bucket_for_every_deliver_process(settings: Settings) -> None:
    import asyncio

    from agents.delivery.records import DeliveryRecords
    from streams.redis_client import async_client

    async def run() -> list[int]:
        a = async_client(settings.redis_url)
        b = async_client(settings.redis_url)
        try:
            one = DeliveryRecords(a, settings.partitions, settings.topic_prefix)
            two = DeliveryRecords(b, settings.partitions, settings.topic_prefix)
            now = 1_000_000
            waits = [await r.take_token("sms-gw", 5.0, 2, now) for r in (one, two, one, two)]
            waits.append(await one.take_token("sms-gw", 5.0, 2, now + 200))  # a token came back
            waits.append(await two.take_token("other", 5.0, 2, now))  # another provider's own
            return waits
        finally:
            await a.aclose()
            await b.aclose()

    waits = asyncio.run(run())
    assert waits[:2] == [0, 0]  # the burst, shared
    assert waits[2:4] == [200, 200]  # then 5 a second, whoever asks
    assert waits[4:] == [0, 0]


def test_a_tencent_status_report_finds_its_action_by_the_serial_number_and_needs_the_token(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from agents.delivery.records import DeliveryRecords
    from streams.outbox import parse_entry
    from streams.redis_client import async_client

    for name in ("TC_ID", "TC_KEY", "TC_RECEIPTS"):
        monkeypatch.setenv(name, f"{name.lower()}-value")
    file = tmp_path / "delivery.yaml"
    file.write_text(
        """
deliver:
  channels: {sms: tencent}
  providers:
    tencent:
      type: tencent_sms
      secret_id: {env: TC_ID}
      secret_key: {env: TC_KEY}
      sdk_app_id: "1400006666"
      sign_name: 示例商城
      receipt_token: {env: TC_RECEIPTS}
""",
        encoding="utf-8",
    )
    sent = Receipt(
        action_id="a9", rule_id="welcome", customer_id="c9", channel="sms", provider="tencent",
        status="sent", provider_id="5000:104571066915", attempts=1, at=datetime.now(UTC),
    )  # fmt: skip

    async def finish() -> None:
        client = async_client(settings.redis_url)
        try:
            records = DeliveryRecords(client, settings.partitions, settings.topic_prefix)
            await records.claim(
                "a9", orjson.dumps(action(9, rule_id="welcome", channel="sms")), 0, 1000, False
            )
            await records.finish(sent)
        finally:
            await client.aclose()

    asyncio.run(finish())
    report = orjson.dumps(
        [{"user_receive_time": "2026-05-01 08:03:04", "nationcode": "86", "mobile": "13800000000",
          "report_status": "SUCCESS", "errmsg": "DELIVRD", "description": "用户短信送达成功",
          "sid": "5000:104571066915"},
         {"report_status": "SUCCESS", "sid": "not-ours"}]
    )  # fmt: skip
    with (
        serving(settings.model_copy(update={"delivery_file": file})) as api,
        httpx.Client(timeout=30) as http,
    ):
        refused = http.post(f"{api}/v1/receipts/tencent?token=guess", content=report)
        assert refused.status_code == 401
        answer = http.post(f"{api}/v1/receipts/tencent?token=tc_receipts-value", content=report)
        assert answer.status_code == 200 and answer.json() == {"result": 0, "errmsg": "OK"}
    client = redis.Redis.from_url(settings.redis_url)
    p = keyspace.home("a9", settings.partitions)
    rows = [parse_entry(fields)[1][0] for _, fields in client.xrange(keyspace.clickhouse_outbox(p))]
    assert [(r["status"], r["rule_id"], r["customer_id"]) for r in rows] == [
        ("sent", "welcome", "c9"),
        ("delivered", "welcome", "c9"),
    ]


def test_one_click_unsubscribe_opts_the_customer_out_of_the_emails_channel(
    settings: Settings,
) -> None:
    token = unsubscribe_token("c8", "email", settings.privacy_key())
    with serving(settings) as api, httpx.Client(timeout=30) as http:
        forged = http.post(f"{api}/v1/unsubscribe", params={"token": token[:-2] + "xx"})
        assert forged.status_code == 404
        done = http.post(
            f"{api}/v1/unsubscribe",
            params={"token": token},
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 200 and done.json() == {"unsubscribed": ["email"]}
    consumer = KafkaConsumer(
        settings.topic("customers"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    seen: list[dict[str, Any]] = []
    try:
        wait_for(lambda: seen.extend(orjson.loads(m.value) for m in consumer) or seen, what="it")
    finally:
        consumer.close()
    [update] = seen
    assert (update["customer_id"], update["consent"], update["origin"]) == (
        "c8",
        {"email": False},
        "unsubscribe",
    )
