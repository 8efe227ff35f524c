"""Every Redis name ecrm uses, in one place.

Nothing else in the code writes `ecrm:`. Names that belong to a Kafka partition take the
partition, so that moving to Redis Cluster (every key of one batch unit in one hash slot,
`ecrm:{p3}:…`) is a change to this module alone. Everything starts with `PREFIX`, so one
Redis can be shared with other programs and inspected with `SCAN MATCH ecrm:*`.
"""

from __future__ import annotations

from datetime import date

PREFIX = "ecrm:"

#: Name of the Faust table holding the live profiles (its store writes `table_key`s).
PROFILES_TABLE = "profiles"

# -- per customer ----------------------------------------------------------------------------


def table_prefix(table: str) -> str:
    """Prefix of every value of a Faust table kept in Redis (`streams/redis_store.py`)."""
    return f"{PREFIX}{table}:"


def table_key(table: str, key: str) -> str:
    return table_prefix(table) + key


def profile(customer_id: str) -> str:
    """A customer's live profile (JSON, schemas/profile.py)."""
    return table_key(PROFILES_TABLE, customer_id)


#: `SCAN MATCH` pattern over every live profile.
PROFILES_PATTERN = table_prefix(PROFILES_TABLE) + "*"


def rule_state(customer_id: str) -> str:
    """A customer's rule state: armed waits, count windows, cooldowns, deferred actions."""
    return f"{PREFIX}rules:{customer_id}"


def member(customer_id: str) -> str:
    """A customer's member state: the points lots, the level and its term, manual tags
    (agents/membership/state.py); written only once the customer has one."""
    return f"{PREFIX}member:{customer_id}"


def customer_keys(customer_id: str) -> list[str]:
    """Every key that holds one customer's data, all of which an erasure deletes in one unit.
    A new per-customer key (a membership ledger, tags) is added here, and only here."""
    return [profile(customer_id), rule_state(customer_id), member(customer_id)]


def customer_members(customer_id: str, partitions: int) -> list[tuple[str, str]]:
    """(sorted set, member) of every shared set that names the customer: the due sets of all
    partitions (an erasure need not know which partition the customer's key hashes to)."""
    return [(due(p), customer_id) for p in range(partitions)]


def erased(token: str) -> str:
    """The erasure list: one key per erased customer, named by the keyed hash of the id
    (schemas/privacy.py `erasure_token`), so the list names nobody. The value says when and
    which erasure (no personal data). Never expires: a replay years later is still dropped."""
    return f"{PREFIX}erased:{token}"


#: erasure id -> what the ClickHouse sink deleted for it (JSON: rows per table, when).
ERASURES_DONE = f"{PREFIX}erasures:done"


# -- per Kafka partition -----------------------------------------------------------------------


def due(partition: int) -> str:
    """Sorted set of one partition's customers, scored by when time next matters to them."""
    return f"{PREFIX}due:{partition}"


def offset(cluster: str, topic: str, partition: int) -> str:
    """Watermark of one source partition. Keyed by the Kafka cluster id too: a broker that
    was recreated empty (the in-memory embedded one after a restart) counts offsets from 0
    again, and must not be mistaken for the one whose offsets Redis remembers."""
    return f"{PREFIX}offset:{cluster}:{topic}:{partition}"


# -- shared by all workers ---------------------------------------------------------------------


def budget(rule_id: str, day: date) -> str:
    """What a rule has spent on one day of the shop's calendar."""
    return f"{PREFIX}budget:{rule_id}:{day.isoformat()}"


#: Counters of input messages (events, duplicates, dead letters — `poison` of them raised when
#: applied, `erased` of them were an erased customer's —, batches, segment changes), of
#: `watermark_resets` (streams/resume.py) and of `erasures` (`ecrm customer erase`).
STATS = f"{PREFIX}stats"
#: Counters of rule decisions, `rule_id|outcome[:reason]`.
RULE_STATS = f"{PREFIX}stats:rules"


def worker_stats(pid: int) -> str:
    """Per-process counters, so operators (and tests) see how work is shared between workers."""
    return f"{PREFIX}stats:worker:{pid}"


#: Rows bound for ClickHouse (streams/outbox.py formats, streams/sink.py drains).
CLICKHOUSE_OUTBOX = f"{PREFIX}outbox"
#: Messages bound for Kafka (streams/outbox.py formats, streams/relay.py sends).
KAFKA_OUTBOX = f"{PREFIX}outbox:kafka"


def rejects(stream: str) -> str:
    """Where a drainer moves the entries of `stream` it cannot deliver, with the reason."""
    return f"{stream}:rejects"


def sink_groups(stream: str) -> str:
    """Hash of the merged inserts the sink is making from `stream`: member entry id -> the
    group's table and member ids, so a drainer that claims them re-forms the same insert."""
    return f"{stream}:groups"


# -- the Kafka relay (streams/relay*.py) ------------------------------------------------------

#: Messages the relay could not send (too large, malformed), whole, with the reason.
RELAY_REJECTS = f"{PREFIX}relay:rejects"
#: The relay's counters: sent, skipped, rejected, retries, taken_over.
RELAY_STATS = f"{PREFIX}relay:stats"


def relay_heartbeat(consumer: str) -> str:
    """A relay's heartbeat (with a TTL): only a relay whose heartbeat stopped is taken over."""
    return f"{PREFIX}relay:heartbeat:{consumer}"


def relay_marks(consumer: str) -> str:
    """Per-partition topic offsets from which a relay's unacknowledged sends are looked for."""
    return f"{PREFIX}relay:mark:{consumer}"
