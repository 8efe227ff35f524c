"""The Faust application: settings mapped to Faust's, the contract topics, the Redis table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP

from schemas.events import EVENT_BY_TOPIC
from streams.batches import MAX_PARTITION_FETCH_BYTES, SCHEME, register_batch_transport
from streams.kafka_auth import KafkaAuth
from streams.redis_store import RedisStore, register_redis_store
from streams.resume import SourcePositions
from streams.settings import Settings

#: the contract's storefront topics, `campaigns` (written by `ecrm campaign send`),
#: `identities` (written by `ecrm api`), and the membership requests: `points` (redeem,
#: adjust, level) and `tags` (manual tags)
INPUT_TOPICS = tuple(EVENT_BY_TOPIC)
OUTPUT_TOPICS = ("actions", "segment-changes", "dead-letter", "member-changes")
#: What a record adds to its key and value on the wire (batch and record headers), with room.
RECORD_OVERHEAD_BYTES = 1024


class DurableTable(faust.Table):
    """A table whose store is itself durable (Redis), so it keeps no Kafka changelog.

    Every value is already committed to Redis atomically with the source offsets that
    produced it; a changelog would write each change a second time and replay it on every
    rebalance for no gain. Any worker that takes over a partition reads Redis directly.
    """

    def on_key_set(self, key: Any, value: Any) -> None:
        self._sensor_on_set(self, key, value)

    def on_key_del(self, key: Any) -> None:
        self._sensor_on_del(self, key)


class StreamApp(faust.App):
    """A faust.App whose consumer resumes each input partition where Redis says
    (streams/resume.py reads `sources` after every assignment)."""

    sources: SourcePositions | None = None
    #: the settings, for the Redis store Faust builds (it keys values by partition)
    ecrm_settings: Settings | None = None


@dataclass
class EcrmApp:
    """The Faust app and the handles agents need, assembled once per process."""

    settings: Settings
    app: faust.App
    inputs: faust.TopicT
    profiles: DurableTable
    outputs: dict[str, faust.TopicT]

    @property
    def store(self) -> RedisStore:
        store = self.profiles.data
        assert isinstance(store, RedisStore)
        return store

    def owned_partitions(self) -> set[int]:
        """Partitions of the input topics this worker currently owns."""
        orders = self.settings.topic("orders")
        assigned: set[TP] = self.app.assignor.assigned_actives()
        return {tp.partition for tp in assigned if tp.topic == orders}


def create_app(settings: Settings) -> EcrmApp:
    register_redis_store()
    register_batch_transport()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    auth = KafkaAuth.of(settings)
    app = StreamApp(
        settings.app_id,
        # the input topics arrive a fetch at a time (streams/batches.py)
        broker=[f"{SCHEME}://{hostport}" for hostport in settings.kafka_bootstrap.split(",")],
        broker_credentials=auth.faust(),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        broker_commit_interval=1.0,
        broker_max_poll_records=settings.batch_max,
        consumer_max_fetch_size=MAX_PARTITION_FETCH_BYTES,
        producer_linger_ms=5,
        # the relay decides which messages are too large (ECRM_RELAY_MAX_MESSAGE_BYTES); the
        # producer's own limit (Faust's default is 1,000,000) must not undercut it
        producer_max_request_size=settings.relay_max_message_bytes + RECORD_OVERHEAD_BYTES,
        # a killed worker's partitions move on within seconds, not Faust's default minute
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=20.0,
        datadir=str(settings.data_dir / "faust"),
        autodiscover=False,
    )
    app.ecrm_settings = settings  # the Redis store keys by partition (streams/redis_store.py)
    inputs = app.topic(
        *(settings.topic(name) for name in INPUT_TOPICS),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    outputs = {
        name: app.topic(
            settings.topic(name),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )
        for name in OUTPUT_TOPICS
    }
    profiles = DurableTable(
        app=app,
        name="profiles",
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        store=settings.redis_url,
    )
    app.tables.add(profiles)
    ctx = EcrmApp(settings=settings, app=app, inputs=inputs, profiles=profiles, outputs=outputs)
    app.sources = SourcePositions(lambda: ctx.store, inputs.topics, settings.kafka_bootstrap, auth)
    return ctx
