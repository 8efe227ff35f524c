"""The two outboxes: Redis streams written in the same MULTI as the state they follow.

An entry exists in an outbox if and only if the state change it records was committed, so
nothing is lost or sent for a change that never happened. Each Kafka partition has its own
pair of streams (`keyspace.clickhouse_outbox(p)`, `keyspace.kafka_outbox(p)`), in the slot of
the units that write them; this module owns the entry formats; streams/sink.py drains the
ClickHouse streams and streams/relay.py the Kafka ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from streams import keyspace
from streams.clickhouse import rows_json

#: The tables the workers fill (clickhouse/NNN_*.sql). The sink inserts into these and no
#: other, whatever an entry says: write access to Redis must not become write access to
#: every table the sink's ClickHouse user can reach. A new table is added here.
CLICKHOUSE_TABLES = frozenset(
    {
        "events",
        "segment_changes",
        "rule_decisions",
        "profile_snapshots",
        "identity_merges",
        "points_ledger",
        "tag_changes",
        "level_changes",
        "deliveries",
    }
)


@dataclass(frozen=True)
class OutboxEntry:
    """One XADD: which outbox and the fields; the partition of the unit that writes it picks
    the stream (`stream`)."""

    outbox: Literal["clickhouse", "kafka"]
    fields: dict[Any, Any]
    #: rows it carries for ClickHouse (0 for a Kafka message): counted into the outbox's
    #: depth estimate (`outbox_depth`)
    rows: int = 0

    def stream(self, partition: int) -> str:
        if self.outbox == "clickhouse":
            return keyspace.clickhouse_outbox(partition)
        return keyspace.kafka_outbox(partition)


# -- rows bound for ClickHouse -----------------------------------------------------------------


def outbox_entry(table: str, rows: list[dict[str, Any]]) -> dict[str, bytes]:
    """The XADD fields for rows bound for a ClickHouse table."""
    return {"table": table.encode(), "rows": rows_json(rows)}


def clickhouse_entry(table: str, rows: list[dict[str, Any]]) -> OutboxEntry:
    """Rows for one ClickHouse table, inserted later by the sink with a stable token."""
    return OutboxEntry("clickhouse", outbox_entry(table, rows), rows=len(rows))


#: Fields of `keyspace.stats(p)` counting every ClickHouse outbox entry ever written and the
#: rows in them, in the same commit as the entries (streams/redis_store.py `Unit.add`).
QUEUED_ENTRIES = "clickhouse_outbox_entries"
QUEUED_ROWS = "clickhouse_outbox_rows"


def depth_from(pending_entries: int, queued_entries: int, queued_rows: int) -> int:
    """Rows waiting in the ClickHouse outbox, estimated: the entries still there times the
    mean rows an entry has carried. Exact when entries are alike; no sink bookkeeping needed,
    so it holds whichever process drains and however it groups its inserts."""
    if pending_entries <= 0 or queued_entries <= 0:
        return 0
    return round(pending_entries * queued_rows / queued_entries)


def entry_token(stream: str, entry_id: str) -> str:
    """The insert_deduplication_token of an outbox entry: stable across retries and drainers."""
    return f"{stream}/{entry_id}"


class MalformedEntry(ValueError):
    """An outbox entry that no retry can insert."""


def parse_entry(fields: Mapping[bytes, bytes]) -> tuple[str, list[dict[str, Any]]]:
    """(table, rows) of an outbox entry, or MalformedEntry saying what is wrong."""
    table, data = fields.get(b"table"), fields.get(b"rows")
    if not table or data is None:
        raise MalformedEntry(f"fields {sorted(fields)} lack 'table' or 'rows'")
    try:
        rows = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise MalformedEntry(f"rows are not JSON: {e}") from e
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise MalformedEntry("rows are not a JSON array of objects")
    return table.decode(errors="replace"), rows


@dataclass(frozen=True)
class ErasureRequest:
    """An erasure for the sink to carry out in ClickHouse (`ecrm customer erase`). The id is
    in clear only here, and only until the sink has deleted the rows and the entry."""

    customer_id: str
    erasure_id: str
    operator: str
    requested_at: datetime


def erasure_entry(request: ErasureRequest) -> OutboxEntry:
    fields = {
        "erase": request.customer_id.encode(),
        "erasure_id": request.erasure_id.encode(),
        "operator": request.operator.encode(),
        "requested_at": request.requested_at.astimezone(UTC).isoformat().encode(),
    }
    return OutboxEntry("clickhouse", fields)


def parse_erasure(fields: Mapping[bytes, bytes]) -> ErasureRequest | None:
    """The erasure an entry asks for; None for an entry of rows."""
    if b"erase" not in fields:
        return None
    try:
        return ErasureRequest(
            customer_id=fields[b"erase"].decode(),
            erasure_id=fields[b"erasure_id"].decode(),
            operator=fields.get(b"operator", b"").decode(),
            requested_at=datetime.fromisoformat(fields[b"requested_at"].decode()),
        )
    except (KeyError, UnicodeDecodeError, ValueError) as e:
        raise MalformedEntry(f"erasure entry: {e}") from e


# -- messages bound for Kafka ------------------------------------------------------------------


def kafka_entry(topic: str, key: bytes | str | None, value: bytes) -> dict[str, bytes]:
    """The XADD fields of one message to send."""
    if isinstance(key, str):
        key = key.encode()
    entry = {"topic": topic.encode(), "value": value}
    if key is not None:
        entry["key"] = key
    return entry


def kafka_message(topic: str, key: bytes | str | None, value: bytes) -> OutboxEntry:
    """One message for the relay to send to `topic`."""
    return OutboxEntry("kafka", kafka_entry(topic, key, value))
