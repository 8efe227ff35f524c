"""The contract's topics by kind, and their idempotent creation on any Kafka-compatible broker."""

from __future__ import annotations

from collections.abc import Iterable

from kafka import KafkaAdminClient
from kafka import errors as kafka_errors
from kafka.admin import NewTopic

from schemas.errors import KafkaError
from schemas.events import EVENT_BY_TOPIC
from streams import keyspace
from streams.kafka_auth import PLAINTEXT, KafkaAuth
from streams.settings import Settings

#: Topics storefronts write to (CONTRACT.md "Input topics"), and `campaigns`, ecrm's own
#: input topic that `ecrm campaign send` writes (docs/campaigns.md).
INPUT_KINDS = tuple(EVENT_BY_TOPIC)
#: Topics ecrm writes to (CONTRACT.md "Output topics"); the last two `ecrm deliver` writes.
OUTPUT_KINDS = (
    "actions",
    "segment-changes",
    "dead-letter",
    "member-changes",
    "deliveries",
    "delivery-failures",
)
#: How long a topic ecrm creates keeps its messages: Kafka's own default (7 days;
#: docs/privacy.md counts on it), stated rather than left to the broker.
RETENTION_MS = 7 * 24 * 3600 * 1000
#: The settings every topic ecrm creates is created with. Said explicitly because a broker
#: that is not Kafka may keep nothing it was not told: Tansu describes a topic created
#: without settings as having none, and clients that read `retention.ms` (quixstreams, to
#: size its changelogs) then refuse the topic.
TOPIC_CONFIG = {"retention.ms": str(RETENTION_MS), "cleanup.policy": "delete"}


def contract_topics(settings: Settings) -> dict[str, str]:
    """Full topic name of every contract kind, e.g. {'orders': 'ecrm.orders', ...}."""
    return {kind: settings.topic(kind) for kind in INPUT_KINDS + OUTPUT_KINDS}


def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    *,
    replication_factor: int = 1,
    auth: KafkaAuth = PLAINTEXT,
) -> None:
    """Create the missing topics (with `TOPIC_CONFIG`); raise KafkaError if an existing one
    has other partitions. An existing topic's settings are the operator's and stay as they are.

    A mismatch is an error, not a warning: tables are co-partitioned with the input
    topics, so a worker reading 8 partitions into 4-partition state would be wrong.
    """
    wanted = list(dict.fromkeys(names))
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="ecrm-topics", **auth.kafka_python()
        )
    except kafka_errors.KafkaError as e:
        raise KafkaError(f"cannot reach Kafka at {bootstrap}: {e}") from e
    try:
        existing = set(admin.list_topics())
        for name in wanted:
            if name in existing:
                continue
            try:
                admin.create_topics(
                    [NewTopic(name, partitions, replication_factor, topic_configs=TOPIC_CONFIG)]
                )
            except kafka_errors.TopicAlreadyExistsError:
                pass  # another process created it between list and create
        counts = partition_counts(admin, wanted)
    except kafka_errors.KafkaError as e:
        raise KafkaError(f"creating topics {wanted} on {bootstrap} failed: {e}") from e
    finally:
        admin.close()
    wrong = {name: n for name, n in counts.items() if n != partitions}
    if wrong:
        raise KafkaError(
            f"topics exist with a partition count other than {partitions}: {wrong}; "
            "set ECRM_PARTITIONS to match or recreate the topics"
        )


def partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Number of partitions of each named topic, as the broker describes it."""
    return {topic["name"]: len(topic["partitions"]) for topic in admin.describe_topics(names)}


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2: the Java client, kafka-python,
    aiokafka, Faust) puts a message keyed `key` on (streams/keyspace.py `home`)."""
    return keyspace.home(key, partitions)
