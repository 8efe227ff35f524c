"""The delivery part of `ecrm demo`: `ecrm deliver` (in this process) sends the actions the
worker fired through local receivers — the shop's webhook receiver for sms, push, inbox and
wechat (it stands in for the shop's own gateway: ecrm has no provider account here), and an
SMTP server with STARTTLS for e-mail — and prints what each channel did and one rendered
message in Chinese.

Called by ecrm/commands/demo.py once the worker has caught up:

    from ecrm.dev.delivery_demo import deliver_demo
    deliver_demo(s, data_dir, say)
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import yaml
from kafka import KafkaConsumer, TopicPartition

from agents.delivery.run import DeliverProcess
from ecrm.dev.delivery_receivers import ShopReceiver, SmtpReceiver
from streams import keyspace
from streams.settings import EXAMPLE_DELIVERY, Settings

SECRET_ENV = "ECRM_DEMO_SHOP_SECRET"  # noqa: S105 - the name of a variable
#: the longest the demo waits for the actions to be sent
DEMO_TIMEOUT_S = 90.0


def demo_delivery_file(data_dir: Path, shop: ShopReceiver, smtp: SmtpReceiver) -> Path:
    """The shipped delivery file's templates, with every channel pointed at the receivers."""
    shipped = yaml.safe_load(EXAMPLE_DELIVERY.read_text(encoding="utf-8"))["deliver"]
    secret = {"env": SECRET_ENV}
    deliver = {
        "channels": {c: "shop" for c in ("sms", "push", "inbox", "wechat", "webhook")}
        | {"email": "smtp"},
        "providers": {
            "shop": {"type": "webhook", "url": f"{shop.url}/ecrm/actions", "secret": secret},
            "smtp": {
                "type": "email",
                "host": smtp.host,
                "port": smtp.port,
                "ca_file": str(smtp.ca_file),
                "from": "示例商城 <crm@shop.example>",
                "unsubscribe_url": "https://shop.example/unsubscribe?token={token}",
            },
        },
        "contacts": {"url": f"{shop.url}/ecrm/contacts", "secret": secret},
        "coupons": {"url": f"{shop.url}/ecrm/coupons", "secret": secret},
        "retry": {"first": "1s", "max": "5s", "deadline": "30s"},
        "profile_fields": shipped["profile_fields"],
        "locale": shipped["locale"],
        "templates": shipped["templates"],
    }
    path = data_dir / "demo-delivery.yaml"
    path.write_text(
        yaml.safe_dump({"deliver": deliver}, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    return path


def actions_on_topic(s: Settings) -> int:
    consumer = KafkaConsumer(bootstrap_servers=s.kafka_bootstrap)
    try:
        parts = [TopicPartition(s.topic("actions"), p) for p in range(s.partitions)]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def deliver_demo(s: Settings, data_dir: Path, say: Callable[..., None]) -> Counter[tuple[str, str]]:
    """Run `ecrm deliver` until every fired action is sent or failed; print the outcome."""
    os.environ[SECRET_ENV] = secrets.token_hex(16)
    total = actions_on_topic(s)
    say(f"  delivery: `ecrm deliver` sends the {total:,} actions through local receivers ...")
    with ShopReceiver(os.environ[SECRET_ENV].encode()) as shop, SmtpReceiver(data_dir) as smtp:
        settings = s.model_copy(
            update={
                "delivery_file": demo_delivery_file(data_dir, shop, smtp),
                "app_id": "ecrm-demo",
            }
        )
        process = asyncio.run(_deliver_until_done(settings, total))
        counts = process.deliverer.counts
        channels = sorted({c for c, _ in counts} - {"-", "?"})
        say(f"    {'channel':<8} {'sent':>7} {'received':>9} {'failed':>7} {'retrying':>9}")
        received = Counter(body.get("channel") or "webhook" for body in shop.delivered.values())
        received["email"] += len(smtp.messages)
        for channel in channels:
            say(
                f"    {channel:<8} {counts[(channel, 'sent')]:>7,} {received[channel]:>9,} "
                f"{counts[(channel, 'failed')]:>7,} {counts[(channel, 'retry')]:>9,}"
            )
        if not channels:
            say("    (no action to deliver)")
        skipped = counts[("-", "skipped")]
        if skipped:
            say(f"    {skipped:,} actions on no channel (points, tags) were the worker's to apply")
        sample = _sample(process.deliverer.last_rendered)
        if sample:
            channel, text = sample
            say(f"  a rendered message ({channel}, zh-CN):")
            for line in text.strip().splitlines():
                say(f"    {line}")
    return counts


def _sample(rendered: dict[str, str]) -> tuple[str, str] | None:
    for channel in ("sms", "wechat", "email", "inbox", "push"):
        if rendered.get(channel):
            return channel, rendered[channel]
    return None


async def _deliver_until_done(settings: Settings, total: int) -> DeliverProcess:
    process = DeliverProcess(settings, poll_ms=100)
    runner = asyncio.create_task(process.run())
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    finished = ("sent", "failed", "skipped", "unreadable", "done")
    while time.monotonic() < deadline and not runner.done():
        counts = process.deliverer.counts
        settled = sum(n for (_, result), n in counts.items() if result in finished)
        if settled >= total and not await _retries_waiting(process, settings.partitions):
            break
        await asyncio.sleep(0.2)
    process.stop()
    await runner
    return process


async def _retries_waiting(process: DeliverProcess, partitions: int) -> int:
    return sum(
        [await process.client.zcard(keyspace.delivery_retries(p)) for p in range(partitions)]
    )
