"""Every Redis name ecrm uses, in one place.

Nothing else in the code writes `ecrm:`. Everything starts with `PREFIX`, so one Redis can be
shared with other programs and inspected with `SCAN MATCH ecrm:*`.

**Hash tags.** Every name a batch unit touches carries its Kafka partition's hash tag,
`ecrm:{p3}:…`, so on a Redis Cluster one unit's keys share a slot and one MULTI/EXEC holds
them (streams/redis_client.py); on one server the tag is only part of the name. A customer's
keys carry the tag of their *home* partition: the one Kafka's default partitioner puts
messages keyed by their id on (`home`). A partition's keys (wake set, watermarks, outboxes,
counters) carry its own. Names shared by all partitions (a rule's daily budget, a worker's
counters, the relay's bookkeeping of one outbox) are written only by single-key commands or
scripts, never inside a unit.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

PREFIX = "ecrm:"

#: Name of the Faust table holding the live profiles (its store writes `table_key`s).
PROFILES_TABLE = "profiles"


def tag(partition: int) -> str:
    """The start of every name that belongs to Kafka partition `partition`'s slot."""
    return f"{PREFIX}{{p{partition}}}:"


#: customers whose home is remembered: murmur2 is pure Python (~3 µs an id), and a unit
#: names each customer's home for every key it reads or writes
HOMES_KEPT = 65536


@lru_cache(maxsize=HOMES_KEPT)
def home(customer_id: str, partitions: int) -> int:
    """The partition whose tag a customer's keys carry: where Kafka's default partitioner
    (murmur2: the Java client, kafka-python, aiokafka, Faust) puts messages keyed by the id."""
    from kafka.partitioner.default import murmur2

    return (murmur2(customer_id.encode()) & 0x7FFFFFFF) % partitions


# -- per customer (tagged by the customer's home partition) ------------------------------------


def table_key(table: str, key: str, partitions: int) -> str:
    """A value of a Faust table kept in Redis (`streams/redis_store.py`), keyed by customer."""
    return f"{tag(home(key, partitions))}{table}:{key}"


def profile(customer_id: str, partitions: int) -> str:
    """A customer's live profile (JSON, schemas/profile.py)."""
    return table_key(PROFILES_TABLE, customer_id, partitions)


#: `SCAN MATCH` pattern over every live profile (a cluster client scans every master).
PROFILES_PATTERN = f"{PREFIX}{{p*}}:{PROFILES_TABLE}:*"


def customer_of(profile_key: bytes | str) -> str:
    """The customer id in a profile's name (as `SCAN MATCH PROFILES_PATTERN` yields them)."""
    name = profile_key.decode() if isinstance(profile_key, bytes) else profile_key
    return name.split(f"}}:{PROFILES_TABLE}:", 1)[1]


def rule_state(customer_id: str, partitions: int) -> str:
    """A customer's rule state: armed waits, count windows, cooldowns, deferred actions."""
    return f"{tag(home(customer_id, partitions))}rules:{customer_id}"


def member(customer_id: str, partitions: int) -> str:
    """A customer's member state: the points lots, the level and its term, manual tags
    (agents/membership/state.py); written only once the customer has one."""
    return f"{tag(home(customer_id, partitions))}member:{customer_id}"


def customer_keys(customer_id: str, partitions: int) -> list[str]:
    """Every key that holds one customer's data, all of which an erasure deletes in one unit.
    A new per-customer key (a membership ledger, tags) is added here, and only here."""
    return [
        profile(customer_id, partitions),
        rule_state(customer_id, partitions),
        member(customer_id, partitions),
    ]


def erased(token: str, partition: int) -> str:
    """The erasure list: one key per erased customer, named by the keyed hash of the id
    (schemas/privacy.py `erasure_token`), so the list names nobody, and tagged by the
    customer's home partition so the units that would rebuild them read it. The value says
    when and which erasure (no personal data). Never expires: a replay years later is still
    dropped."""
    return f"{tag(partition)}erased:{token}"


# -- per Kafka partition -----------------------------------------------------------------------


def wakes(partition: int) -> str:
    """The wake set: sorted set of one partition's customers, scored by their wake time
    (when time next matters to them, in ms). The key keeps its first name, `due`: data
    written by every earlier ecrm stays where it is."""
    return f"{tag(partition)}due"


def offset(cluster: str, topic: str, partition: int) -> str:
    """Watermark of one source partition. Keyed by the Kafka cluster id too: a broker that
    was recreated empty (the in-memory embedded one after a restart) counts offsets from 0
    again, and must not be mistaken for the one whose offsets Redis remembers."""
    return f"{tag(partition)}offset:{cluster}:{topic}"


def event_clock(cluster: str, partition: int) -> str:
    """The partition's event-time clock as of its watermarks (agents/profile/event_time.py),
    as ISO 8601: written by the unit that moves them, read where reading resumes.
    Keyed by the Kafka cluster id as the watermarks are."""
    return f"{tag(partition)}clock:{cluster}"


def replicated(partition: int) -> str:
    """A counter each unit of the partition bumps after its commit, on the same connection, so
    that a WAIT for it covers the commit too (streams/redis_store.py)."""
    return f"{tag(partition)}replicated"


def stats(partition: int) -> str:
    """Counters of one partition's input messages (events, duplicates, dead letters — `poison`
    of them raised when applied, `erased` of them were an erased customer's —, batches,
    segment changes), `watermark_resets` (streams/resume.py), `erasures` (`ecrm customer
    erase`) and the ClickHouse outbox's entries and rows (streams/outbox.py). Readers sum the
    partitions (streams/counters.py)."""
    return f"{tag(partition)}stats"


def rule_stats(partition: int) -> str:
    """Counters of rule decisions in one partition, `rule_id|outcome[:reason]`."""
    return f"{tag(partition)}stats:rules"


def clickhouse_outbox(partition: int) -> str:
    """Rows bound for ClickHouse from one partition's units (streams/outbox.py formats,
    streams/sink.py drains every partition's)."""
    return f"{tag(partition)}outbox"


def kafka_outbox(partition: int) -> str:
    """Messages bound for Kafka from one partition's units (streams/relay.py sends them)."""
    return f"{tag(partition)}outbox:kafka"


def erasures_done(partition: int) -> str:
    """erasure id -> what the ClickHouse sink deleted for it (JSON: rows per table, when), for
    the erasures of customers whose home is `partition`."""
    return f"{tag(partition)}erasures:done"


def rejects(stream: str) -> str:
    """Where a drainer moves the entries of `stream` it cannot deliver, with the reason (in
    the stream's slot)."""
    return f"{stream}:rejects"


def sink_groups(stream: str) -> str:
    """Hash of the merged inserts the sink is making from `stream`: member entry id -> the
    group's table and member ids, so a drainer that claims them re-forms the same insert."""
    return f"{stream}:groups"


# -- shared by all partitions (single-key commands only) ---------------------------------------


def budget(rule_id: str, day: date) -> str:
    """What a rule has spent on one day of the shop's calendar: a hash of the totals and of
    the bookings made (agents/rules/budget_booking.py); the coupon value in units of
    1/BUDGET_VALUE_SCALE (Lua, which books it, has no decimals)."""
    return f"{PREFIX}budget:{rule_id}:{day.isoformat()}"


BUDGET_VALUE_SCALE = 10_000


def worker_stats(pid: int) -> str:
    """Per-process counters, so operators (and tests) see how work is shared between workers."""
    return f"{PREFIX}stats:worker:{pid}"


# -- the Kafka relay (streams/relay*.py), in the slot of the outbox it drains -----------------


def relay_rejects(stream: str) -> str:
    """Messages the relay could not send from `stream` (too large, malformed), whole, with
    the reason."""
    return rejects(stream)


def relay_stats(stream: str) -> str:
    """The relay's counters for `stream`: sent, skipped, rejected, retries, taken_over."""
    return f"{stream}:relay:stats"


def relay_heartbeat(stream: str, consumer: str) -> str:
    """A relay's heartbeat (with a TTL): only a relay whose heartbeat stopped is taken over."""
    return f"{stream}:relay:heartbeat:{consumer}"


def relay_marks(stream: str, consumer: str) -> str:
    """Per-partition topic offsets from which a relay's unacknowledged sends are looked for."""
    return f"{stream}:relay:mark:{consumer}"


# -- the API (names of their own, written by single scripts, never inside a unit) ---------------


def api_rate(key_name: str) -> str:
    """An API key's token bucket (`ecrm/api/ratelimit.py`), shared by every API process."""
    return f"{PREFIX}api:rate:{key_name}"


# -- `ecrm deliver` (agents/delivery/), in the slot of the action id's partition ---------------


def delivery(action_id: str, partitions: int) -> str:
    """An action's delivery record (hash: status, attempts, first try, next try, lease, the
    action, provider id, reason; expires `DELIVERY_RECORD_TTL_S` after its last change). Tagged
    by the partition the action id hashes to, with that partition's retry queue and outboxes,
    so a receipt that knows only the action id finds it."""
    return f"{tag(home(action_id, partitions))}delivery:{action_id}"


#: How long a delivery record outlives its last change: replays of `ecrm.actions` older than
#: this would be sent again (Kafka's default retention is 7 days).
DELIVERY_RECORD_TTL_S = 30 * 86400


def delivery_retries(partition: int) -> str:
    """Sorted set of the action ids of one partition waiting to be (re)tried, scored by when
    (epoch ms): a retry's next try, or the end of a sender's lease."""
    return f"{tag(partition)}delivery:retries"


def delivery_outbox(partition: int) -> str:
    """Receipts and failures bound for `ecrm.deliveries` and `ecrm.delivery-failures`, written
    in the same MULTI as the record (streams/outbox.py format; `ecrm deliver` relays them)."""
    return f"{tag(partition)}outbox:deliveries"


def delivery_rate(provider: str) -> str:
    """A provider's token bucket, shared by every `ecrm deliver` (one script touches it)."""
    return f"{PREFIX}delivery:rate:{provider}"


def delivery_token(provider: str) -> str:
    """A provider's cached access token (WeChat), with its expiry as TTL."""
    return f"{PREFIX}delivery:token:{provider}"


def delivery_by_provider_id(provider: str, provider_id: str) -> str:
    """The action id a provider's message id stands for, for receipts naming only the
    provider's id (Tencent's `sid`); expires with the delivery record."""
    return f"{PREFIX}delivery:pid:{provider}:{provider_id}"
