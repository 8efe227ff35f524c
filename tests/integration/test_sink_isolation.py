"""One bad row costs one row: the sink isolates what ClickHouse refuses, keeps the rest, waits
out what is only "not now", merges entries into large inserts that survive a crash, and replays
rejects after a fix exactly once. Real chdb in a temp folder, real Valkey."""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from ecrm.commands import sink as sink_command
from schemas.errors import ClickHouseError
from streams import keyspace
from streams.clickhouse import ConnectClickHouse, connect
from streams.outbox import outbox_entry
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.sink_rejects import list_rejects, retry
from tests.integration.test_clickhouse_sink import JAN, count, drain, order

pytestmark = pytest.mark.integration

STREAM = keyspace.clickhouse_outbox(0)
REJECTS = f"{STREAM}:rejects"


class SpyClickHouse:
    """The real ClickHouse, noting each insert; `refuse` makes inserts fail with an error."""

    def __init__(self, ch: ConnectClickHouse) -> None:
        self.ch = ch
        self.inserts: list[tuple[str, int, str]] = []
        self.refuse: ClickHouseError | None = None

    def execute(self, sql: str) -> None:
        self.ch.execute(sql)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.ch.query(sql, params)

    def insert(self, table: str, rows: Any, *, token: str) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.ch.insert(table, rows, token=token)
        self.inserts.append((table, len(rows), token))

    def close(self) -> None:
        self.ch.close()


def event_ids(ch: ConnectClickHouse) -> list[str]:
    return sorted(row["event_id"] for row in ch.query("SELECT event_id FROM events"))


def test_one_row_past_its_column_in_an_entry_of_many_goes_to_rejects_alone_and_replays_once(
    r: redis.Redis, redis_url: str, ch: ConnectClickHouse
) -> None:
    rows = [order(f"e{i:02}", f"c{i}", "paid", "1.00", JAN) for i in range(40)]
    rows[17]["qty"] = 2**40  # past UInt32
    r.xadd(STREAM, outbox_entry("events", rows))
    r.xadd(STREAM, outbox_entry("events", [order("later", "z", "paid", "2.00", JAN)]))

    sink = ClickHouseSink(redis_url, ch, partitions=1)
    drain(sink)
    sink.close()

    assert event_ids(ch) == sorted([f"e{i:02}" for i in range(40) if i != 17] + ["later"])
    [reject] = list_rejects(r, [STREAM])
    assert reject.table == "events" and [row["event_id"] for row in reject.rows] == ["e17"]
    assert "qty" in reject.reason

    # before the fix the replay is refused again and the record stays, with the new reason
    refused = retry(r, ch, [STREAM])
    assert refused.replayed == [] and reject.reject_id in refused.still_refused
    assert len(list_rejects(r, [STREAM])) == 1

    ch.execute("ALTER TABLE events MODIFY COLUMN qty UInt64")  # the fix
    # a replay that died after its insert and before deleting the record ...
    ch.insert("events", reject.rows, token=f"{REJECTS}/{reject.reject_id}")
    done = retry(r, ch, [STREAM])  # ... is run again: the row lands once
    assert done.replayed == [reject.reject_id] and done.replayed_rows == 1
    assert retry(r, ch, [STREAM]).replayed == []  # nothing left to replay
    assert ch.query("SELECT qty FROM events WHERE event_id = 'e17'") == [{"qty": 2**40}]
    assert count(ch, "events") == 41


def test_entries_of_one_table_are_merged_into_one_insert_up_to_max_rows(
    r: redis.Redis, redis_url: str, ch: ConnectClickHouse
) -> None:
    for n in range(10):
        r.xadd(
            STREAM,
            outbox_entry("events", [order(f"e{n}-{i}", "a", "paid", "1", JAN) for i in range(3)]),
        )
    r.xadd(
        STREAM,
        outbox_entry("segment_changes", [{"customer_id": "a", "to_segment": "x", "at": JAN}]),
    )
    spy = SpyClickHouse(ch)
    sink = ClickHouseSink(redis_url, spy, partitions=1, max_rows=12)
    drain(sink)
    sink.close()
    assert sorted(table_rows[:2] for table_rows in spy.inserts) == [
        ("events", 6),
        ("events", 12),
        ("events", 12),
        ("segment_changes", 1),
    ]
    assert count(ch, "events") == 30
    assert r.hlen(f"{STREAM}:groups") == 0  # group records leave with their entries


def test_a_merged_insert_that_went_in_before_a_crash_is_re_formed_the_same_and_lands_once(
    r: redis.Redis, redis_url: str, ch: ConnectClickHouse
) -> None:
    for n in range(4):
        r.xadd(
            STREAM,
            outbox_entry("events", [order(f"e{n}-{i}", "a", "paid", "1", JAN) for i in range(3)]),
        )
    spy = SpyClickHouse(ch)
    dying = ClickHouseSink(redis_url, spy, partitions=1, consumer="dying")
    spy.refuse = ClickHouseError("Code: 252. Too many parts", code=252, transient=True)
    with pytest.raises(ClickHouseError):
        dying.drain_once()  # read, grouped, recorded, and refused for now
    [held] = dying.streams[0]._held
    token = held.token
    ch.insert("events", held.rows, token=token)  # ... but say it went in, then a crash
    spy.refuse = None

    survivor = ClickHouseSink(redis_url, spy, partitions=1, consumer="survivor", claim_idle_ms=50)
    drain(survivor)
    survivor.close()
    assert spy.inserts == [("events", 12, token)]  # the same group under the same token
    per_event = ch.query("SELECT event_id, count() AS n FROM events GROUP BY event_id")
    assert len(per_event) == 12 and {row["n"] for row in per_event} == {1}


def test_too_many_parts_is_waited_out_without_rejecting_anything(
    r: redis.Redis, redis_url: str, ch: ConnectClickHouse
) -> None:
    rows = [order(f"e{i}", "a", "paid", "1", JAN) for i in range(5)]
    r.xadd(STREAM, outbox_entry("events", rows))
    spy = SpyClickHouse(ch)
    sink = ClickHouseSink(redis_url, spy, partitions=1, max_deliveries=2)
    spy.refuse = ClickHouseError("Code: 252. Too many parts", code=252, transient=True)
    for _ in range(4):
        with pytest.raises(ClickHouseError):
            sink.drain_once()
    assert sink.rejected == 0 and sink.pending() == 1
    spy.refuse = None
    assert sink.drain_once() == 5
    sink.close()
    assert sink.rejected == 0 and count(ch, "events") == 5


def test_rejects_older_than_their_age_limit_are_trimmed(
    r: redis.Redis, redis_url: str, ch: ConnectClickHouse
) -> None:
    day_ms = 86_400_000
    now_ms = int(time.time() * 1000)
    old = r.xadd(
        REJECTS, {"table": "events", "rows": b"[]", "reason": "old"}, id=f"{now_ms - 3 * day_ms}-0"
    )
    recent = r.xadd(
        REJECTS, {"table": "events", "rows": b"[]", "reason": "recent"}, id=f"{now_ms - day_ms}-0"
    )
    sink = ClickHouseSink(redis_url, ch, partitions=1, rejects_max_age_s=2 * 86_400)
    sink.drain_once()
    sink.close()
    assert [rid for rid, _ in r.xrange(REJECTS)] == [recent]
    assert old != recent


def test_ecrm_sink_rejects_lists_each_refused_row_with_its_reason(
    r: redis.Redis, redis_url: str, ch: ConnectClickHouse, tmp_path: Path
) -> None:
    rows = [order("ok", "a", "paid", "1.00", JAN), order("huge", "a", "paid", "1e17", JAN)]
    r.xadd(STREAM, outbox_entry("events", rows))
    sink = ClickHouseSink(redis_url, ch, partitions=1)
    drain(sink)
    sink.close()
    # the command reads every partition's rejects: move this one to the last partition's
    [(rid, fields)] = r.xrange(REJECTS)
    r.xdel(REJECTS, rid)
    r.xadd(keyspace.rejects(keyspace.clickhouse_outbox(3)), fields)

    out = io.StringIO()
    settings = Settings(
        redis_url=redis_url, clickhouse_url=f"chdb://{tmp_path / 'clickhouse'}", partitions=4
    )
    args = argparse.Namespace(sink_command="rejects", limit=10, format="json")
    assert sink_command.run(args, settings, out=out) == 0
    [listed] = json.loads(out.getvalue())
    assert listed["table"] == "events" and listed["rows"] == 1
    assert listed["outbox"] == keyspace.clickhouse_outbox(3)
    assert "events.amount" in listed["reason"] and "out of range" in listed["reason"]
    assert '"huge"' in listed["first_row"]


def test_a_column_added_by_another_process_is_seen_without_a_restart(
    ch: ConnectClickHouse, tmp_path: Path
) -> None:
    ch.insert("events", [order("e1", "a", "paid", "1", JAN)], token="before")  # columns cached
    other = connect(f"chdb://{tmp_path / 'clickhouse'}")  # another client, as a migration would
    other.execute("ALTER TABLE events ADD COLUMN IF NOT EXISTS coupon String DEFAULT ''")
    ch.insert("events", [order("e2", "a", "paid", "1", JAN) | {"coupon": "NY24"}], token="after")
    assert ch.query("SELECT coupon FROM events WHERE event_id = 'e2'") == [{"coupon": "NY24"}]
    other.close()


def test_rows_the_server_itself_refuses_are_isolated_the_same_way(
    r: redis.Redis, redis_url: str, ch: ConnectClickHouse
) -> None:
    ch.execute("ALTER TABLE events ADD CONSTRAINT IF NOT EXISTS sane_qty CHECK qty < 1000")
    rows = [order(f"e{i:02}", "a", "paid", "1", JAN) | {"qty": 1} for i in range(9)]
    rows[3]["qty"] = rows[7]["qty"] = 5000  # fits UInt32, but the table's constraint says no
    r.xadd(STREAM, outbox_entry("events", rows))
    sink = ClickHouseSink(redis_url, ch, partitions=1)
    drain(sink)
    sink.close()
    assert event_ids(ch) == [f"e{i:02}" for i in range(9) if i not in (3, 7)]
    rejects = list_rejects(r, [STREAM])
    assert [row["event_id"] for reject in rejects for row in reject.rows] == ["e03", "e07"]
    assert all("sane_qty" in reject.reason for reject in rejects)
