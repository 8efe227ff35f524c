"""Consent given or withdrawn outside the storefront (a CLI, a channel provider's unsubscribe):
written as a member update on `ecrm.customers`, so it reaches the profile down the same path
as the storefront's own, and the latest word per channel wins (agents/profile/fold.py)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.errors import KafkaError
from schemas.events import CustomerEvent
from streams.bulk_producer import BulkProducer
from streams.kafka_auth import KafkaAuth
from streams.settings import Settings
from streams.topics import ensure_topics


def consent_event(
    customer_id: str, consent: Mapping[str, bool], now: datetime, source: str
) -> dict[str, Any]:
    """A member update saying only this consent; validated as the worker will validate it."""
    event = {
        "event_id": f"{source}:{uuid.uuid4().hex}",
        "customer_id": customer_id,
        "ts": now.astimezone(UTC).isoformat(),
        "consent": dict(consent),
        "origin": source,
    }
    CustomerEvent.model_validate(event)
    return event


def send_member_update(settings: Settings, event: Mapping[str, Any]) -> None:
    """Produce one member update to `{prefix}customers`, keyed by the customer; KafkaError
    when the broker did not take it."""
    topic = settings.topic("customers")
    ensure_topics(
        settings.kafka_bootstrap, [topic], settings.partitions, auth=KafkaAuth.of(settings)
    )
    producer = BulkProducer(settings.kafka_bootstrap, topic, auth=KafkaAuth.of(settings))
    producer.send(str(event["customer_id"]).encode(), orjson.dumps(event))
    delivery = producer.close(timeout=30)
    if delivery.failed:
        raise KafkaError(f"the member update did not reach {topic}: {delivery.first_error}")
