"""Where outbox entries go: Redis streams written in the same MULTI as the state they follow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.sink import outbox_entry

#: The ClickHouse sink's stream (ClickHouseSink's default).
CLICKHOUSE_OUTBOX = "ecrm:outbox"


@dataclass(frozen=True)
class OutboxEntry:
    stream: str
    fields: dict[Any, Any]


def clickhouse_entry(table: str, rows: list[dict[str, Any]]) -> OutboxEntry:
    """Rows for one ClickHouse table, inserted later by the sink with a stable token."""
    return OutboxEntry(CLICKHOUSE_OUTBOX, outbox_entry(table, rows))
