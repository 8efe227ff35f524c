"""What the ClickHouse sink set aside (`{outbox}:rejects`, one per partition's outbox): listed
with reasons, replayed after a fix.

A reject record has the outbox entry's fields (`table`, `rows` as a JSON array) plus
`entry_id` (the outbox entry the rows came from) and `reason`. The sink writes one record
per refused row (found by bisecting the insert) or, for an entry that cannot be read or a
table that keeps refusing the whole insert, one per entry. Records older than the sink's
`rejects_max_age_s` are trimmed (XTRIM MINID on the record ids, which are their times).

`list_rejects` and `retry` take every partition's outbox at once; a record is named by its id
in its own rejects stream (ids of two streams may coincide: `retry` then replays both).
`retry` re-inserts each record's rows with the token `{rejects stream}/{record id}`: running
it again after a crash, or twice, lands each row once. A record is deleted only after its
insert succeeded; one ClickHouse still refuses stays, with the new error reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.errors import ClickHouseError
from streams import keyspace
from streams.clickhouse import ClickHouse
from streams.outbox import MalformedEntry, parse_entry
from streams.sink_groups import id_key


@dataclass(frozen=True)
class Reject:
    """One record of the rejects stream."""

    reject_id: str
    #: the outbox the rows came from (one per partition)
    outbox: str
    table: str
    rows: list[dict[str, Any]]
    entry_id: str
    reason: str
    rejected_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "reject_id": self.reject_id,
            "rejected_at": self.rejected_at.isoformat(),
            "table": self.table,
            "entry_id": self.entry_id,
            "rows": len(self.rows),
            "reason": self.reason,
            "first_row": orjson.dumps(self.rows[0]).decode() if self.rows else "",
            "outbox": self.outbox,
        }


@dataclass(frozen=True)
class RetryResult:
    """What `retry` did: rows replayed, and the records still refused with the new reason."""

    replayed_rows: int
    replayed: list[str]
    still_refused: dict[str, str]


def reject_record(table: str, rows_json: bytes, entry_id: bytes, reason: str) -> dict[bytes, bytes]:
    """The fields of a reject record."""
    return {
        b"table": table.encode(),
        b"rows": rows_json,
        b"entry_id": entry_id,
        b"reason": reason.encode(),
    }


def min_id(max_age_s: float, now: float | None = None) -> str:
    """The oldest record id kept when records live max_age_s."""
    now = time.time() if now is None else now
    return f"{max(0, int((now - max_age_s) * 1000))}-0"


def list_rejects(r: Any, outboxes: Sequence[str], count: int | None = None) -> list[Reject]:
    """The oldest `count` reject records of these outboxes together (all when None), oldest
    first (`r`: a synchronous Redis or RedisCluster client)."""
    pipe = r.pipeline(transaction=False)
    for outbox in outboxes:
        pipe.xrange(keyspace.rejects(outbox), count=count)
    found = [
        (rid, outbox, fields)
        for outbox, records in zip(outboxes, pipe.execute(), strict=True)
        for rid, fields in records
    ]
    found.sort(key=lambda f: id_key(f[0]))
    return [_reject(outbox, rid, fields) for rid, outbox, fields in found[:count]]


def retry(
    r: Any, ch: ClickHouse, outboxes: Sequence[str], ids: Iterable[str] | None = None
) -> RetryResult:
    """Re-insert the reject records `ids` (all when None) of these outboxes; each lands once,
    however often run."""
    wanted = None if ids is None else list(ids)
    replayed: list[str] = []
    refused: dict[str, str] = {}
    rows_done = 0
    for outbox in outboxes:
        rejects_stream = keyspace.rejects(outbox)
        if wanted is None:
            records = r.xrange(rejects_stream)
        else:
            records = []
            for rid in wanted:
                records += r.xrange(rejects_stream, min=rid, max=rid)
        done, n = _replay(r, ch, rejects_stream, records, refused)
        replayed += done
        rows_done += n
    return RetryResult(rows_done, replayed, refused)


def _replay(
    r: Any, ch: ClickHouse, rejects_stream: str, records: list[Any], refused: dict[str, str]
) -> tuple[list[str], int]:
    replayed: list[str] = []
    rows_done = 0
    for rid, fields in records:
        reject_id = rid.decode() if isinstance(rid, bytes) else str(rid)
        try:
            table, rows = parse_entry(fields)
            ch.insert(table, rows, token=f"{rejects_stream}/{reject_id}")
        except (MalformedEntry, ClickHouseError) as e:
            refused[reject_id] = str(e)
            continue
        r.xdel(rejects_stream, rid)
        replayed.append(reject_id)
        rows_done += len(rows)
    return replayed, rows_done


def _reject(outbox: str, rid: bytes, fields: dict[bytes, bytes]) -> Reject:
    try:
        table, rows = parse_entry(fields)
    except MalformedEntry:
        table, rows = fields.get(b"table", b"").decode(errors="replace"), []
    ms = int(rid.split(b"-")[0])
    return Reject(
        reject_id=rid.decode(),
        outbox=outbox,
        table=table,
        rows=rows,
        entry_id=fields.get(b"entry_id", b"").decode(errors="replace"),
        reason=fields.get(b"reason", b"").decode(errors="replace"),
        rejected_at=datetime.fromtimestamp(ms / 1000, UTC),
    )
