"""Drains the Redis outboxes into ClickHouse, exactly once per row, surviving a crashed drainer.

Workers append rows to their partition's Redis Stream (``keyspace.clickhouse_outbox(p)``) in
the same MULTI as their state (``outbox_entry``), so a row exists in an outbox iff the state
change it records was committed. `ClickHouseSink` drains every partition's outbox, one
`StreamSink` each, in turn; everything a `StreamSink` writes in one MULTI (acknowledgements,
rejects, its group records, the erasure report) is named after its stream or partition and
shares its slot on a Redis Cluster. A `StreamSink` reads its stream through a consumer group, merges entries of one table into inserts of up
to ``max_rows`` rows (streams/sink_groups.py: how a merged insert keeps its members and
token after a crash), inserts each with its deduplication token, then acknowledges and
deletes the members. An entry inserted by a drainer that died before acknowledging is
claimed by another (XAUTOCLAIM) and re-inserted with the same token: ClickHouse drops the
copy. The run loop inserts at most about once per ``min_interval_s`` per table unless
there is a full insert's worth waiting, so ClickHouse sees few, large parts.

When ClickHouse refuses an insert, what happens depends on why (streams/clickhouse.py
classifies its error codes):

- *not now* (down, too many parts, memory limit, timeouts): nothing is blamed; the same
  inserts are retried, first of all and unchanged, with backoff, for as long as it takes
  (the worker's outbox back-pressure bounds how much waits meanwhile);
- *bad rows* (a qty past UInt32, a sum past Decimal(18, 2)): the insert is bisected, the
  halves inserted with tokens derived from the parent's, until the refused rows are alone;
  each goes to ``{stream}:rejects`` with its reason and the others are inserted;
- anything else (e.g. the table does not exist): the insert is retried after
  ``claim_idle_ms`` and its entries set aside whole after ``max_deliveries`` attempts.

An entry that cannot be read (bad fields, bad JSON) is set aside at once. Rejects are kept
``rejects_max_age_s`` and listed or replayed with `ecrm sink rejects` / `ecrm sink retry`
(streams/sink_rejects.py).

Only ecrm's own tables are written (`CLICKHOUSE_TABLES`): an entry naming any other table is
set aside, whatever Redis says. A reject keeps its rows whole only when they hold no phone
number or e-mail address; otherwise their first bytes (masked), size and SHA-256
(schemas/pii.py `withheld_fields`).

An erasure entry (`ecrm customer erase`, written to the customer's home partition's outbox)
deletes the customer's rows from every table with a `customer_id` (streams/customer_data.py),
writes the audit row and reports to `keyspace.erasures_done(p)`. Rows of the customer queued
before the erasure must not land after the delete, in whichever outbox they wait: entries
before it in its own stream are inserted and acknowledged first (inserts are merged only
between erasures), and it is carried out only once *no outbox* holds an entry older than it
(stream ids are the time of the XADD, an entry of another stream in the same millisecond
counts as older, and an entry leaves its stream only once inserted or set aside). Until then it is postponed, and the sink drains the other outboxes meanwhile and
tries again on its next pass. Erasures cannot wait on each other in a circle: each waits only
for older entries (two of one millisecond in two streams: the lower partition's goes first). Entries queued after it hold nothing of the customer: the workers drop an
erased customer's events. On a Redis Cluster the ids come from several servers' clocks, so
"older" holds up to their skew: keep the nodes' clocks in sync (NTP).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis

from schemas.errors import ClickHouseError
from schemas.pii import withheld_fields
from streams import keyspace
from streams.clickhouse import ClickHouse, refuses_rows
from streams.counters import clickhouse_outboxes, stream_lengths
from streams.customer_data import audit_row, delete_customer
from streams.outbox import (
    CLICKHOUSE_TABLES,
    ErasureRequest,
    MalformedEntry,
    parse_entry,
    parse_erasure,
)
from streams.redis_client import SyncRedis, sync_client
from streams.settings import Settings
from streams.sink_groups import (
    Group,
    Parsed,
    group_of,
    id_key,
    members_of,
    merged_token,
    plan,
    record,
)
from streams.sink_rejects import min_id, reject_record

log = logging.getLogger(__name__)

Read = tuple[bytes, dict[bytes, bytes], int]


@dataclass(frozen=True)
class Erasure:
    """An erasure entry read from the outbox, carried out in stream order."""

    entry_id: bytes
    request: ErasureRequest


#: what one read yields, in stream order: inserts to make and erasures to carry out
Item = Group | Erasure


class StreamSink:
    """Moves the entries of one partition's outbox into ClickHouse (`ClickHouseSink` runs one
    per partition); several processes may drain the same stream."""

    def __init__(
        self,
        client: SyncRedis,
        ch: ClickHouse,
        partition: int,
        outboxes: Sequence[str],
        group: str = "clickhouse-sink",
        consumer: str | None = None,
        batch: int = 500,
        claim_idle_ms: int = 30000,
        max_deliveries: int = 5,
        max_rows: int = 100_000,
        rejects_max_age_s: float = 30 * 86400,
        tables: frozenset[str] = CLICKHOUSE_TABLES,
    ) -> None:
        self._redis = client
        self._ch = ch
        self.stream = keyspace.clickhouse_outbox(partition)
        #: every partition's outbox: an erasure waits until none holds an older entry
        self.outboxes = list(outboxes)
        self.rejects_stream = keyspace.rejects(self.stream)
        self.groups_key = keyspace.sink_groups(self.stream)
        self.erasures_done = keyspace.erasures_done(partition)
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.max_rows = max_rows
        self.rejects_max_age_s = rejects_max_age_s
        self.tables = tables
        #: Counters for operators and tests: rows in, reject records written, erasures
        #: carried out.
        self.erasures = 0
        self.inserted_rows = 0
        self.rejected = 0
        #: whether the last `drain_once` had anything to do
        self.busy = False
        self._group_ready = False
        self._claim_cursor = "0-0"
        self._held: list[Item] = []  # refused for now (transient): retried first, unchanged
        #: erasures waiting for older entries (of any outbox) to be in: tried on every pass
        self._postponed: dict[bytes, Erasure] = {}
        self._full = False
        self._trimmed_at = 0.0

    def drain_once(self, block_ms: int = 0) -> int:
        """Insert what is held, claimable or new (waiting up to block_ms for new); rows inserted.

        A row counts when ClickHouse accepted its insert, even if it dropped it as a retry.
        Raises ClickHouseError while ClickHouse is down or refuses for now; what was read is
        then held and retried first by the next call.
        """
        self._ensure_group()
        self._trim_rejects()
        for erasure in sorted(self._postponed.values(), key=lambda e: id_key(e.entry_id)):
            self._erase(erasure)
        items, self._held = (self._held, []) if self._held else (self._read(block_ms), [])
        self.busy = bool(items or self._postponed)
        done: list[Group] = []
        rows = 0
        try:
            for i, item in enumerate(items):
                if isinstance(item, Erasure):
                    rows += self._finish(done)  # everything before it is in and acknowledged
                    done = []
                    self._erase(item)  # now, or postponed until older entries are in
                    continue
                try:
                    if self._deliver(item):
                        done.append(item)
                except ClickHouseError:
                    self._held = items[i:]
                    raise
        finally:  # even when ClickHouse went down midway, what is in is acknowledged
            rows += self._finish(done)
        self.inserted_rows += rows
        return rows

    def pending(self) -> int:
        """Entries not yet in ClickHouse (nor rejected): the stream holds nothing else."""
        return int(self._redis.xlen(self.stream))

    def close(self) -> None:
        """Leave the group if nothing is pending on this consumer."""
        try:
            mine = self._redis.xpending_range(
                self.stream, self.group, "-", "+", 1, consumername=self.consumer
            )
            if not mine:
                self._redis.xgroup_delconsumer(self.stream, self.group, self.consumer)
        except redis.ResponseError:
            pass  # no stream or group yet: nothing to leave

    # -- inserting -----------------------------------------------------------------------------

    def _deliver(self, group: Group) -> bool:
        """Insert a group; True when it is finished (in, or its refused rows set aside)."""
        try:
            self._ch.insert(group.table, group.rows, token=group.token)
            return True
        except ClickHouseError as e:
            if e.transient:
                raise
            self._ch.query("SELECT 1")  # while ClickHouse is down this raises: not the rows' fault
            if refuses_rows(e):
                group.refused = self._bisect(group, 0, len(group.rows), group.token, e)
                return True
            if group.attempts >= self.max_deliveries:
                group.set_aside = f"refused {group.attempts} times: {e}"
                return True
            # left pending: claimed again (by this or another sink) after claim_idle_ms
            log.warning(
                "outbox insert %s not done (attempt %d): %s", group.token, group.attempts, e
            )
            return False

    def _bisect(
        self, group: Group, lo: int, hi: int, token: str, error: ClickHouseError
    ) -> list[tuple[int, str]]:
        """Rows in [lo, hi) ClickHouse refuses (it refused them together with `error`), with
        reasons; the others inserted, each half under a token derived from its parent's."""
        if hi - lo == 1:
            return [(lo, str(error))]
        refused: list[tuple[int, str]] = []
        mid = (lo + hi) // 2
        for a, b in ((lo, mid), (mid, hi)):
            part = f"{token}/{a}-{b}"
            try:
                self._ch.insert(group.table, group.rows[a:b], token=part)
            except ClickHouseError as e:
                if not refuses_rows(e):
                    raise  # down, or the table went away: retry the whole group later
                refused += self._bisect(group, a, b, part, e)
        return refused

    def _finish(self, done: list[Group]) -> int:
        """Set refused rows aside, acknowledge and delete the groups' entries, in one MULTI;
        the rows that went in."""
        if not done:
            return 0
        with self._redis.pipeline(transaction=True) as tx:
            for group in done:
                for record_fields in self._reject_records(group):
                    tx.xadd(self.rejects_stream, record_fields)
                    self.rejected += 1
                tx.xack(self.stream, self.group, *group.entry_ids)
                tx.xdel(self.stream, *group.entry_ids)
                if group.recorded:
                    tx.hdel(self.groups_key, *group.entry_ids)
            tx.execute()
        return sum(len(g.rows) - len(g.refused) for g in done if g.set_aside is None)

    # -- erasures ------------------------------------------------------------------------------

    def _erase(self, erasure: Erasure) -> None:
        """Delete the customer's rows once no outbox holds an older entry; audit; acknowledge.
        Postponed (tried again on the next pass) while one does, or while ClickHouse fails."""
        entry_id, request = erasure.entry_id, erasure.request
        if not self._mine(entry_id):  # claimed by another sink while postponed: theirs now
            self._postponed.pop(entry_id, None)
            return
        if self._older_anywhere(entry_id):
            if entry_id not in self._postponed:
                log.info("erasure %s waits for older outbox entries", request.erasure_id)
            self._postponed[entry_id] = erasure
            return
        try:
            rows = delete_customer(self._ch, request.customer_id)
            now = datetime.now(UTC)
            audit = audit_row(request.erasure_id, request.requested_at, now, request.operator, rows)
            self._ch.insert("erasures", [audit], token=f"erasure/{request.erasure_id}")
        except ClickHouseError as e:
            log.warning("erasure %s not carried out yet: %s", request.erasure_id, e)
            self._postponed[entry_id] = erasure  # tried again: an erasure is never given up
            return
        report = json.dumps({"rows": rows, "done_at": now.isoformat()})
        with self._redis.pipeline(transaction=True) as tx:
            tx.hset(self.erasures_done, request.erasure_id, report)
            tx.xack(self.stream, self.group, entry_id)
            tx.xdel(self.stream, entry_id)
            tx.execute()
        self._postponed.pop(entry_id, None)
        self.erasures += 1

    def _mine(self, entry_id: bytes) -> bool:
        """Whether the entry is still pending with this sink (not done, nor claimed away)."""
        found = self._redis.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
        return bool(found) and _text(found[0]["consumer"]) == self.consumer

    def _older_anywhere(self, entry_id: bytes) -> bool:
        """Whether any outbox still holds an entry older than `entry_id` (not yet inserted,
        nor set aside: both delete the entry).

        The sequence part of an id counts within its own stream only, so an entry of another
        stream in the same millisecond counts as older too — unless it is an erasure of a
        stream after this one: two erasures of one millisecond must not wait for each other."""
        ms = int(entry_id.split(b"-", 1)[0])
        others = [s for s in self.outboxes if s != self.stream]
        pipe = self._redis.pipeline(transaction=False)
        pipe.xrange(self.stream, "-", b"(" + entry_id, count=1)
        for stream in others:
            pipe.xrange(stream, "-", f"({ms}-0", count=1)
            pipe.xrange(stream, f"{ms}-0", str(ms))  # a bare millisecond: all of it
        found = pipe.execute()
        if found[0]:
            return True
        mine = self.outboxes.index(self.stream) if self.stream in self.outboxes else -1
        for i, stream in enumerate(others):
            earlier, same = found[1 + 2 * i], found[2 + 2 * i]
            if earlier:
                return True
            first = self.outboxes.index(stream) < mine
            if any(first or b"erase" not in fields for _, fields in same):
                return True
        return False

    def _reject_records(self, group: Group) -> list[dict[bytes, bytes]]:
        if group.set_aside is not None:  # the whole insert refused: each entry as it was
            reason = group.set_aside
            log.error(
                "outbox insert %s set aside to %s: %s", group.token, self.rejects_stream, reason
            )
            return [
                {**withheld_fields(fields), b"entry_id": eid, b"reason": reason.encode()}
                for eid, fields in zip(group.entry_ids, group.fields, strict=True)
            ]
        if group.refused:
            log.error(
                "%d rows of insert %s set aside to %s: %s",
                len(group.refused),
                group.token,
                self.rejects_stream,
                group.refused[0][1],
            )
        return [
            withheld_fields(
                reject_record(group.table, orjson.dumps([group.rows[i]]), group.origin(i), reason)
            )
            for i, reason in group.refused
        ]

    # -- reading -------------------------------------------------------------------------------

    def _read(self, block_ms: int) -> list[Item]:
        claimed = self._claim_stale()
        fresh: list[Read] = []
        if len(claimed) < self.batch:
            fresh = self._read_new(self.batch - len(claimed), block_ms if not claimed else 0)
        self._full = len(claimed) + len(fresh) >= self.batch
        items = self._regroup(claimed)
        new: list[Item] = []
        segment: list[Parsed] = []  # entries are merged between erasures, never across one
        for parsed in map(self._parse, fresh):
            if isinstance(parsed, Erasure):
                new += [group_of(self.stream, m) for m in plan(segment, self.max_rows)]
                new.append(parsed)
                segment = []
            elif parsed is not None:
                segment.append(parsed)
        new += [group_of(self.stream, m) for m in plan(segment, self.max_rows)]
        merged = [g for g in new if isinstance(g, Group) and g.recorded]
        if merged:  # written down before inserting: a claimer re-forms exactly these
            self._redis.hset(
                self.groups_key,
                mapping={eid: record(g) for g in merged for eid in g.entry_ids},
            )
        self._full = self._full or any(
            isinstance(g, Group) and len(g.rows) >= self.max_rows for g in new
        )
        return items + new

    def _regroup(self, claimed: list[Read]) -> list[Item]:
        """Claimed entries as the groups they were inserted in: recorded ones re-formed, the
        rest alone (an unrecorded entry was only ever inserted alone)."""
        if not claimed:
            return []
        records = self._redis.hmget(self.groups_key, [eid for eid, _, _ in claimed])
        by_id = {eid: (fields, n) for eid, fields, n in claimed}
        groups: list[Item] = []
        seen: set[bytes] = set()
        for (eid, fields, n), recorded in zip(claimed, records, strict=True):
            if eid in seen:
                continue
            if recorded is None:
                parsed = self._parse((eid, fields, n))
                if isinstance(parsed, Erasure):
                    groups.append(parsed)
                elif parsed is not None:
                    groups.append(group_of(self.stream, [parsed]))
                seen.add(eid)
                continue
            members = members_of(recorded)
            missing = [m for m in members if m not in by_id]
            if missing:  # got some members only: take the rest (same token, so harmless)
                for mid, mfields in self._redis.xclaim(
                    self.stream, self.group, self.consumer, min_idle_time=0, message_ids=missing
                ):
                    if mfields is not None:
                        by_id[bytes(mid)] = (mfields, n)
            parts = [
                Parsed(m, by_id[m][0], *parse_entry(by_id[m][0]), by_id[m][1])
                for m in members
                if m in by_id
            ]
            seen.update(members)
            if len(parts) < len(members):
                log.warning("merged insert of %s lost members; inserting the rest", members[0])
            group = group_of(self.stream, parts)
            group.token = merged_token(self.stream, members[0], members[-1])
            group.recorded = True
            groups.append(group)
        return groups

    def _parse(self, read: Read) -> Parsed | Erasure | None:
        """An entry as rows to insert or an erasure; None when it was set aside (unreadable,
        or naming a table that is not ecrm's)."""
        entry_id, fields, deliveries = read
        try:
            erasure = parse_erasure(fields)
            if erasure is not None:
                return Erasure(entry_id, erasure)
            table, rows = parse_entry(fields)
        except MalformedEntry as e:
            self._reject(entry_id, fields, str(e))
            return None
        if table not in self.tables:
            self._reject(entry_id, fields, f"table {table!r} is not one of ecrm's tables")
            return None
        return Parsed(entry_id, fields, table, rows, deliveries)

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

    def _claim_stale(self) -> list[Read]:
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

    def _read_new(self, count: int, block_ms: int) -> list[Read]:
        # redis-py reads block=0 as "wait forever"; None means do not wait
        reply = self._redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms or None
        )
        return [
            (entry_id, fields, 1) for _, messages in reply or [] for entry_id, fields in messages
        ]

    def _reject(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> None:
        log.error("outbox entry %s rejected to %s: %s", entry_id, self.rejects_stream, reason)
        record_fields = {
            **withheld_fields(fields),
            b"entry_id": entry_id,
            b"reason": reason.encode(),
        }
        with self._redis.pipeline(transaction=True) as tx:
            tx.xadd(self.rejects_stream, record_fields)
            tx.xack(self.stream, self.group, entry_id)
            tx.xdel(self.stream, entry_id)
            tx.execute()
        self.rejected += 1

    def _trim_rejects(self) -> None:
        """Drop reject records older than rejects_max_age_s (checked at most once a minute)."""
        now = time.time()
        if now - self._trimmed_at < 60:
            return
        self._trimmed_at = now
        self._redis.xtrim(
            self.rejects_stream, minid=min_id(self.rejects_max_age_s, now), approximate=False
        )


class ClickHouseSink:
    """Drains every partition's ClickHouse outbox, one `StreamSink` each; run one or several
    (each process drains every stream, sharing the entries through the streams' groups)."""

    def __init__(
        self,
        redis_url: str,
        ch: ClickHouse,
        *,
        partitions: int,
        cluster: bool = False,
        min_interval_s: float = 1.0,
        consumer: str | None = None,
        **options: Any,
    ) -> None:
        self._redis = sync_client(redis_url, cluster)
        self.outboxes = clickhouse_outboxes(partitions)
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.min_interval_s = min_interval_s
        #: one per partition; `options` are StreamSink's (group, batch, claim_idle_ms, ...)
        self.streams = [
            StreamSink(self._redis, ch, p, self.outboxes, consumer=self.consumer, **options)
            for p in range(partitions)
        ]
        #: errors the run loop survived
        self.failures = 0

    @classmethod
    def from_settings(cls, settings: Settings, ch: ClickHouse, **options: Any) -> ClickHouseSink:
        """A sink of the settings' partitions on their Redis, with their merge, pacing and
        rejects-age policy."""
        options.setdefault("max_rows", settings.sink_max_rows)
        options.setdefault("min_interval_s", settings.sink_min_interval_s)
        options.setdefault("rejects_max_age_s", settings.sink_rejects_max_age_days * 86400)
        return cls(
            settings.redis_url,
            ch,
            partitions=settings.partitions,
            cluster=settings.redis_cluster,
            **options,
        )

    @property
    def inserted_rows(self) -> int:
        return sum(s.inserted_rows for s in self.streams)

    @property
    def rejected(self) -> int:
        return sum(s.rejected for s in self.streams)

    @property
    def erasures(self) -> int:
        return sum(s.erasures for s in self.streams)

    def drain_once(self, block_ms: int = 0) -> int:
        """One pass over every outbox: what is held, claimable or new in each; rows inserted.
        With nothing to do anywhere, waits up to block_ms (for new entries, or before the
        next pass). Raises ClickHouseError while ClickHouse is down or refuses for now (what
        was read is held and retried first); another error once every stream had its turn."""
        if len(self.streams) == 1:
            return self.streams[0].drain_once(block_ms)
        rows = 0
        failed: Exception | None = None
        for stream in self.streams:
            try:
                rows += stream.drain_once(0)
            except ClickHouseError:
                raise  # one ClickHouse for every stream: no use trying the others now
            except Exception as exc:  # noqa: BLE001 - raised below, after the other streams
                failed = failed or exc
        if failed is not None:
            raise failed
        if block_ms and not any(s.busy for s in self.streams):
            time.sleep(block_ms / 1000)
        return rows

    def run(self, stop: threading.Event, block_ms: int = 200) -> None:
        """Drain until stop is set; an error is logged and retried with backoff, never fatal."""
        backoff = 0.1
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.drain_once(block_ms)
                backoff = 0.1
            except Exception:  # the loop boundary: keep draining whatever went wrong
                self.failures += 1
                for stream in self.streams:
                    stream._group_ready = False  # in case Redis lost it (NOGROUP)
                log.exception("outbox sink %s failed; retrying in %.1fs", self.consumer, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if not any(s._full for s in self.streams):  # partial reads: wait, for larger inserts
                stop.wait(max(0.0, self.min_interval_s - (time.monotonic() - started)))

    def pending(self) -> int:
        """Entries not yet in ClickHouse (nor rejected), in every outbox."""
        return stream_lengths(self._redis, self.outboxes)

    def close(self) -> None:
        """Leave each stream's group where nothing is pending on this consumer; disconnect."""
        for stream in self.streams:
            stream.close()
        self._redis.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
