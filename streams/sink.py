"""Drains the Redis outbox into ClickHouse, exactly once per entry, surviving a crashed drainer.

Workers append rows to a Redis Stream in the same MULTI as their state (``outbox_entry``),
so a row exists in the outbox iff the state change it records was committed. This sink
reads the stream through a consumer group and inserts each entry as one ClickHouse insert
whose deduplication token is the entry id, then acknowledges and deletes it. Entry ids
never change, so an entry inserted by a drainer that died before acknowledging is claimed
by another (XAUTOCLAIM) and re-inserted with the same token: ClickHouse drops the copy.

Entries are not merged into bigger inserts: a claimer cannot know how a dead drainer had
grouped them, and a different grouping would mean a different token and duplicate rows.
Workers already put a whole batch's rows for a table into one entry.

An entry that cannot be read (bad fields, bad JSON) is moved at once to the stream
``{stream}:rejects`` with the reason; one that a healthy ClickHouse keeps refusing is moved
there after ``max_deliveries`` attempts. Both are counted in ``rejected``; the rejects
stream is not trimmed, so nothing is lost silently. While ClickHouse is down (it fails even
``SELECT 1``) entries stay pending and the sink backs off.

Only ecrm's own tables are written (`CLICKHOUSE_TABLES`): an entry naming any other table is
rejected, whatever Redis says. A reject keeps an entry's rows whole only when they are small
and hold no phone number or e-mail address; otherwise their first bytes (masked), size and
SHA-256 (schemas/pii.py `withheld_fields`).

An erasure entry (`ecrm customer erase`) deletes the customer's rows from every table with a
`customer_id` (streams/customer_data.py) and writes the audit row. It waits until every
entry older than itself is in ClickHouse (none pending with any drainer): rows of the
customer queued before the erasure must not land after the delete. Entries queued after it
hold nothing of the customer: the workers drop an erased customer's events.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

import redis

from schemas.errors import ClickHouseError
from schemas.pii import withheld_fields
from streams import keyspace
from streams.clickhouse import ClickHouse
from streams.customer_data import audit_row, delete_customer
from streams.outbox import (
    CLICKHOUSE_OUTBOX,
    CLICKHOUSE_TABLES,
    ErasureRequest,
    MalformedEntry,
    entry_token,
    parse_entry,
    parse_erasure,
)

log = logging.getLogger(__name__)


class ClickHouseSink:
    """Moves outbox entries from a Redis Stream into ClickHouse; run one or several."""

    def __init__(
        self,
        redis_url: str,
        ch: ClickHouse,
        stream: str = CLICKHOUSE_OUTBOX,
        group: str = "clickhouse-sink",
        consumer: str | None = None,
        batch: int = 500,
        claim_idle_ms: int = 30000,
        max_deliveries: int = 5,
        tables: frozenset[str] = CLICKHOUSE_TABLES,
        erasure_wait_s: float = 10.0,
    ) -> None:
        self._redis = redis.Redis.from_url(redis_url)
        self._ch = ch
        self.stream = stream
        self.rejects_stream = keyspace.rejects(stream)
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.tables = tables
        #: how long an erasure waits for older entries held by other drainers before it is
        #: left pending (and claimed again after claim_idle_ms)
        self.erasure_wait_s = erasure_wait_s
        #: Counters for operators and tests.
        self.erasures = 0
        self.inserted_rows = 0
        self.rejected = 0
        self.failures = 0
        self._group_ready = False
        self._claim_cursor = "0-0"

    def drain_once(self, block_ms: int = 0) -> int:
        """Insert what is claimable or new (waiting up to block_ms for new); rows inserted.

        A row counts when ClickHouse accepted its insert, even if it dropped it as a retry.
        """
        self._ensure_group()
        entries = self._claim_stale()
        if len(entries) < self.batch:
            entries += self._read_new(self.batch - len(entries), block_ms if not entries else 0)
        done: list[bytes] = []
        rows_inserted = 0
        try:
            for entry_id, fields, deliveries in entries:
                rows_inserted += self._insert(entry_id, fields, deliveries, done)
        finally:  # even when ClickHouse went down midway, what is in is acknowledged
            self._acknowledge(done)
        self.inserted_rows += rows_inserted
        return rows_inserted

    def run(self, stop: threading.Event, block_ms: int = 200) -> None:
        """Drain until stop is set; an error is logged and retried with backoff, never fatal."""
        backoff = 0.1
        while not stop.is_set():
            try:
                self.drain_once(block_ms)
                backoff = 0.1
            except Exception:  # the loop boundary: keep draining whatever went wrong
                self.failures += 1
                self._group_ready = False  # in case Redis lost it (NOGROUP)
                log.exception("outbox sink %s failed; retrying in %.1fs", self.consumer, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def pending(self) -> int:
        """Entries not yet in ClickHouse (nor rejected): the stream holds nothing else."""
        return int(self._redis.xlen(self.stream))

    def close(self) -> None:
        """Leave the group if nothing is pending on this consumer, then disconnect."""
        try:
            mine = self._redis.xpending_range(
                self.stream, self.group, "-", "+", 1, consumername=self.consumer
            )
            if not mine:
                self._redis.xgroup_delconsumer(self.stream, self.group, self.consumer)
        except redis.ResponseError:
            pass  # no stream or group yet: nothing to leave
        self._redis.close()

    def _insert(
        self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int, done: list[bytes]
    ) -> int:
        try:
            erasure = parse_erasure(fields)
            if erasure is not None:
                self._erase(entry_id, erasure, done)
                return 0
            table, rows = parse_entry(fields)
        except MalformedEntry as e:
            self._reject(entry_id, fields, str(e))
            return 0
        if table not in self.tables:
            self._reject(entry_id, fields, f"table {table!r} is not one of ecrm's tables")
            return 0
        try:
            self._ch.insert(table, rows, token=entry_token(self.stream, entry_id.decode()))
        except ClickHouseError as e:
            # while ClickHouse is down this raises too: an outage is not this entry's fault
            self._ch.query("SELECT 1")
            self._failed(entry_id, fields, deliveries, e)
            return 0
        done.append(entry_id)
        return len(rows)

    def _erase(self, entry_id: bytes, erasure: ErasureRequest, done: list[bytes]) -> None:
        """Delete the customer's rows once every older entry is in; audit; acknowledge."""
        self._acknowledge(done)  # ours before it are in: let them stop counting as pending
        done.clear()
        deadline = time.monotonic() + self.erasure_wait_s
        while self._older_pending(entry_id):
            if time.monotonic() > deadline:
                log.warning("erasure %s waits for older outbox entries", erasure.erasure_id)
                return  # left pending: claimed again after claim_idle_ms
            time.sleep(0.05)
        try:
            rows = delete_customer(self._ch, erasure.customer_id)
            now = datetime.now(UTC)
            audit = audit_row(erasure.erasure_id, erasure.requested_at, now, erasure.operator, rows)
            self._ch.insert("erasures", [audit], token=f"erasure/{erasure.erasure_id}")
        except ClickHouseError as e:
            log.warning("erasure %s not carried out yet: %s", erasure.erasure_id, e)
            return  # left pending, tried again: an erasure is never given up
        report = json.dumps({"rows": rows, "done_at": now.isoformat()})
        with self._redis.pipeline(transaction=True) as tx:
            tx.hset(keyspace.ERASURES_DONE, erasure.erasure_id, report)
            tx.xack(self.stream, self.group, entry_id)
            tx.xdel(self.stream, entry_id)
            tx.execute()
        self.erasures += 1

    def _older_pending(self, entry_id: bytes) -> bool:
        older = self._redis.xpending_range(self.stream, self.group, "-", b"(" + entry_id, 1)
        return bool(older)

    def _acknowledge(self, ids: list[bytes]) -> None:
        if ids:
            with self._redis.pipeline(transaction=True) as tx:
                tx.xack(self.stream, self.group, *ids)
                tx.xdel(self.stream, *ids)
                tx.execute()

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # from id 0: entries written before any sink existed are drained too
            self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready = True

    def _claim_stale(self) -> list[tuple[bytes, dict[bytes, bytes], int]]:
        """Entries some drainer read but did not finish within claim_idle_ms, with attempt counts."""
        cursor, claimed, deleted = self._redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.batch,
        )
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if deleted:  # gone from the stream while pending: nothing left to insert
            self._redis.xack(self.stream, self.group, *deleted)
        claimed = [(entry_id, fields) for entry_id, fields in claimed if fields is not None]
        if not claimed:
            return []
        with self._redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in claimed:
                pipe.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
            details = pipe.execute()
        counts = [int(d[0]["times_delivered"]) if d else 1 for d in details]
        return [(eid, fields, n) for (eid, fields), n in zip(claimed, counts, strict=True)]

    def _read_new(self, count: int, block_ms: int) -> list[tuple[bytes, dict[bytes, bytes], int]]:
        # redis-py reads block=0 as "wait forever"; None means do not wait
        reply = self._redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms or None
        )
        return [
            (entry_id, fields, 1) for _, messages in reply or [] for entry_id, fields in messages
        ]

    def _failed(
        self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int, error: ClickHouseError
    ) -> None:
        if deliveries >= self.max_deliveries:
            self._reject(entry_id, fields, f"refused {deliveries} times: {error}")
            return
        # left pending: claimed again (by this or another sink) after claim_idle_ms
        log.warning("outbox entry %s not inserted (attempt %d): %s", entry_id, deliveries, error)

    def _reject(self, entry_id: bytes, fields: Mapping[bytes, bytes], reason: str) -> None:
        log.error("outbox entry %s rejected to %s: %s", entry_id, self.rejects_stream, reason)
        record = {**withheld_fields(fields), b"entry_id": entry_id, b"reason": reason.encode()}
        with self._redis.pipeline(transaction=True) as tx:
            tx.xadd(self.rejects_stream, record)
            tx.xack(self.stream, self.group, entry_id)
            tx.xdel(self.stream, entry_id)
            tx.execute()
        self.rejected += 1
