"""`ecrm tags add|remove CUSTOMER TAG`: a manual tag, sent on `ecrm.tags` so the worker
applies it beside the rule tags (a rule never removes a manual tag)."""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.errors import KafkaError
from streams.settings import Settings
from streams.topics import ensure_topics


def send_request(settings: Settings, kind: str, request: dict[str, Any]) -> None:
    """One membership request onto its topic, keyed by customer, acknowledged by Kafka."""
    from kafka import KafkaProducer
    from kafka import errors as kafka_errors

    topic = settings.topic(kind)
    ensure_topics(settings.kafka_bootstrap, [topic], settings.partitions)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        key = request["customer_id"].encode()
        producer.send(topic, key=key, value=orjson.dumps(request)).get(timeout=30)
    except kafka_errors.KafkaError as exc:
        raise KafkaError(f"sending to {topic} failed: {exc}") from exc
    finally:
        producer.close()


def add_parser(sub: argparse._SubParsersAction) -> None:
    tags = sub.add_parser("tags", help="manual tags")
    tags_sub = tags.add_subparsers(dest="tags_command", required=True)
    for op in ("add", "remove"):
        one = tags_sub.add_parser(op, help=f"{op} a manual tag")
        one.add_argument("customer_id")
        one.add_argument("tag")
        one.add_argument("--request-id", default=None, help="idempotency key (default: new)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    request = {
        "event_id": args.request_id or f"tag-{uuid.uuid4()}",
        "customer_id": args.customer_id,
        "ts": datetime.now(UTC).isoformat(),
        "tag": args.tag,
        "op": args.tags_command,
    }
    send_request(settings, "tags", request)
    print(f"sent: {args.tags_command} tag {args.tag!r} for {args.customer_id}")
    return 0
