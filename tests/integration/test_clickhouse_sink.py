"""The outbox reaches ClickHouse exactly once: real chdb in a temp folder, real Valkey."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from schemas.errors import ClickHouseError
from streams import keyspace
from streams.clickhouse import SQL_DIR, ConnectClickHouse, connect, load_query, migrate
from streams.outbox import (
    CLICKHOUSE_TABLES,
    ErasureRequest,
    entry_token,
    erasure_entry,
    outbox_entry,
)
from streams.sink import ClickHouseSink

pytestmark = pytest.mark.integration

STREAM = keyspace.clickhouse_outbox(0)
GROUP = "clickhouse-sink"


@pytest.fixture
def make_sink(redis_url: str, ch: ConnectClickHouse) -> Iterator[Callable[..., ClickHouseSink]]:
    sinks: list[ClickHouseSink] = []

    def make(**kwargs: Any) -> ClickHouseSink:
        kwargs.setdefault("partitions", 1)
        sink = ClickHouseSink(redis_url, ch, group=GROUP, **kwargs)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def drain(sink: ClickHouseSink, timeout: float = 10.0) -> None:
    """Run the sink until the outbox is empty (waiting for claimable entries as needed)."""
    deadline = time.monotonic() + timeout
    while sink.pending():
        if time.monotonic() > deadline:
            raise AssertionError(f"{sink.pending()} outbox entries left")
        sink.drain_once(block_ms=20)


def order(event_id: str, customer: str, status: str, amount: str, ts: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "kind": "order",
        "customer_id": customer,
        "shop_id": "default",
        "ts": ts,
        "order_id": f"o-{event_id}",
        "status": status,
        "amount": Decimal(amount),
        "currency": "CNY",
        "items": [{"sku": "tea", "qty": 1, "price": amount}],
        "extra": {"coupon": "NY24"},
        "source_topic": "ecrm.orders",
        "source_partition": 0,
        "source_offset": 7,
        "ingested_at": datetime.now(UTC),
    }


def change(customer: str, to: str, at: datetime) -> dict[str, Any]:
    return {
        "customer_id": customer,
        "from_segment": "prospect",
        "to_segment": to,
        "at": at,
        "cause": "event",
        "event_id": "",
    }


def count(ch: ConnectClickHouse, table: str) -> int:
    return int(ch.query(f"SELECT count() AS n FROM {table}")[0]["n"])


JAN = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
FEB = datetime(2024, 2, 15, 10, 0, tzinfo=UTC)


def test_migrations_apply_once_and_later_files_apply_alone(tmp_path: Path) -> None:
    ch = connect(f"chdb://{tmp_path / 'ch'}")
    try:
        shipped = [path.stem for path in sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))]
        assert migrate(ch) == shipped
        assert migrate(ch) == []
        tables = {
            r["name"]
            for r in ch.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
        }
        assert {"events", "segment_changes", "schema_migrations"} <= tables

        more = tmp_path / "sql"
        shutil.copytree(SQL_DIR, more)
        (more / "999_extra.sql").write_text(
            "CREATE TABLE IF NOT EXISTS x (a UInt8) ENGINE = Memory;\n"
            "-- a second statement in one file\n"
            "CREATE TABLE IF NOT EXISTS y (b UInt8) ENGINE = Memory;\n"
        )
        assert migrate(ch, more) == ["999_extra"]
        assert migrate(ch, more) == []
        versions = ch.query("SELECT version, name FROM schema_migrations ORDER BY version")
        assert [v["name"] for v in versions] == [*shipped, "999_extra"]
        assert versions[-1]["version"] == 999
    finally:
        ch.close()


def test_a_chdb_url_path_is_relative_unless_it_starts_with_a_slash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ch = connect("chdb://.ecrm/clickhouse")
    try:
        assert (tmp_path / ".ecrm" / "clickhouse").is_dir()
    finally:
        ch.close()
    with pytest.raises(ClickHouseError, match="use chdb://PATH"):
        connect("chdb://")


def test_inserting_with_the_same_token_twice_keeps_one_copy(ch: ConnectClickHouse) -> None:
    rows = [order("e1", "alice", "paid", "19.90", JAN), order("e2", "bob", "paid", "5.00", FEB)]
    ch.insert("events", rows, token="batch-1")
    ch.insert("events", rows, token="batch-1")  # a retry, spanning two monthly partitions
    assert count(ch, "events") == 2
    ch.insert("events", rows, token="batch-2")  # a different token is a different insert
    assert count(ch, "events") == 4


def test_values_come_back_with_their_types(ch: ConnectClickHouse) -> None:
    moment = datetime(2024, 1, 15, 10, 0, 1, 234567, tzinfo=UTC)
    ch.insert("events", [order("e1", "alice", "paid", "19.90", moment)], token="t")
    [row] = ch.query("SELECT ts, amount, items, extra, qty FROM events")
    assert row["ts"] == moment.replace(microsecond=234000)
    assert row["amount"] == Decimal("19.90")
    assert row["items"] == '[{"sku":"tea","qty":1,"price":"19.90"}]'
    assert row["extra"] == '{"coupon":"NY24"}'
    assert row["qty"] == 0  # not given: the column default


def test_query_parameters_reach_chdb_intact(ch: ConnectClickHouse) -> None:
    params = {
        "s": "tab\there, newline\n, backslash\\, quote'",
        "l": ["x'y", "z\\"],
        "t": datetime(2024, 1, 1, 8, 0, 0, 5000, tzinfo=timezone(timedelta(hours=8))),
        "n": None,
        "d": Decimal("12.34"),
    }
    [row] = ch.query(
        "SELECT {s:String} AS s, {l:Array(String)} AS l, {t:DateTime64(3, 'UTC')} AS t, "
        "{n:Nullable(String)} AS n, {d:Decimal(18, 2)} AS d",
        params,
    )
    assert row == {**params, "t": datetime(2024, 1, 1, 0, 0, 0, 5000, tzinfo=UTC)}


def test_a_failing_statement_raises_clickhouse_error_naming_it(ch: ConnectClickHouse) -> None:
    with pytest.raises(ClickHouseError, match="SELECT nope FROM events"):
        ch.query("-- why\nSELECT nope FROM events")
    with pytest.raises(ClickHouseError, match="INSERT INTO no_such_table"):
        ch.insert("no_such_table", [{"a": 1}], token="t")


def test_threads_can_share_one_embedded_clickhouse(ch: ConnectClickHouse) -> None:
    def work(n: int) -> None:
        for i in range(20):
            ch.insert(
                "events", [order(f"e{n}-{i}", f"c{n}", "paid", "1.00", JAN)], token=f"{n}-{i}"
            )
            ch.query("SELECT count() FROM events")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count(ch, "events") == 120


def test_the_sink_drains_outbox_entries_into_rows(
    r: redis.Redis, ch: ConnectClickHouse, make_sink: Callable[..., ClickHouseSink]
) -> None:
    with r.pipeline(transaction=True) as tx:  # as a worker does, beside its state
        tx.xadd(STREAM, outbox_entry("events", [order("e1", "alice", "paid", "10", JAN)]))
        tx.xadd(STREAM, outbox_entry("segment_changes", [change("alice", "general_develop", JAN)]))
        tx.execute()
    r.xadd(
        STREAM,
        outbox_entry("events", [order(f"e{i}", "bob", "paid", "1", FEB) for i in range(2, 6)]),
    )

    sink = make_sink()
    assert sink.drain_once() == 6
    assert sink.pending() == 0 and r.xlen(STREAM) == 0
    assert count(ch, "events") == 5 and count(ch, "segment_changes") == 1
    assert r.xpending(STREAM, GROUP)["pending"] == 0
    assert sink.drain_once() == 0


def test_a_crashed_drainers_entries_are_claimed_and_stored_exactly_once(
    r: redis.Redis, ch: ConnectClickHouse, make_sink: Callable[..., ClickHouseSink]
) -> None:
    entries = [
        [order(f"e{n}-{i}", f"c{n}", "paid", "3.50", JAN) for i in range(3)] for n in range(4)
    ]
    for rows in entries:
        r.xadd(STREAM, outbox_entry("events", rows))
    r.xgroup_create(STREAM, GROUP, id="0")
    # drainer A reads everything, inserts the first two entries, and dies before XACK
    [(_, read)] = r.xreadgroup(GROUP, "A", {STREAM: ">"}, count=10)
    for (entry_id, _), rows in zip(read[:2], entries[:2], strict=True):
        ch.insert("events", rows, token=entry_token(STREAM, entry_id.decode()))
    assert count(ch, "events") == 6

    survivor = make_sink(claim_idle_ms=50)
    drain(survivor)

    per_event = ch.query("SELECT event_id, count() AS n FROM events GROUP BY event_id")
    assert len(per_event) == 12 and {row["n"] for row in per_event} == {1}
    assert r.xpending(STREAM, GROUP)["pending"] == 0


def test_a_malformed_entry_is_set_aside_and_the_rest_flows(
    r: redis.Redis, ch: ConnectClickHouse, make_sink: Callable[..., ClickHouseSink]
) -> None:
    r.xadd(STREAM, outbox_entry("events", [order("e1", "alice", "paid", "1", JAN)]))
    r.xadd(STREAM, {"table": "events", "rows": b"{not json"})
    r.xadd(STREAM, {"rows": b"[]"})
    r.xadd(STREAM, outbox_entry("events", [order("e2", "alice", "paid", "2", JAN)]))

    sink = make_sink()
    assert sink.drain_once() == 2
    assert sink.pending() == 0 and sink.rejected == 2
    reasons = [fields[b"reason"].decode() for _, fields in r.xrange(f"{STREAM}:rejects")]
    assert "not JSON" in reasons[0] and "lack" in reasons[1]
    assert count(ch, "events") == 2


def test_a_row_clickhouse_refuses_is_set_aside_at_once_and_the_rest_flows(
    r: redis.Redis, ch: ConnectClickHouse, make_sink: Callable[..., ClickHouseSink]
) -> None:
    bad = order("bad", "alice", "paid", "1", JAN) | {"qty": "not a number"}
    r.xadd(STREAM, outbox_entry("events", [bad]))
    r.xadd(STREAM, outbox_entry("events", [order("good", "alice", "paid", "1", JAN)]))

    sink = make_sink()
    assert sink.drain_once() == 1  # the good row does not wait for the bad one
    assert sink.rejected == 1 and sink.pending() == 0
    [(_, fields)] = r.xrange(f"{STREAM}:rejects")
    assert b"events.qty = 'not a number'" in fields[b"reason"]
    assert fields[b"table"] == b"events" and b"not a number" in fields[b"rows"]
    assert [row["event_id"] for row in ch.query("SELECT event_id FROM events")] == ["good"]


def test_an_insert_the_table_refuses_whole_is_set_aside_after_max_deliveries(
    r: redis.Redis, ch: ConnectClickHouse, make_sink: Callable[..., ClickHouseSink]
) -> None:
    r.xadd(STREAM, outbox_entry("no_such_table", [{"a": 1}]))
    r.xadd(STREAM, outbox_entry("events", [order("good", "alice", "paid", "1", JAN)]))

    # a table the sink may write that ClickHouse lacks (e.g. a migration not yet applied)
    tables = CLICKHOUSE_TABLES | {"no_such_table"}
    sink = make_sink(claim_idle_ms=20, max_deliveries=3, tables=tables)
    assert sink.drain_once() == 1  # the good entry does not wait for the bad one
    assert sink.rejected == 0 and sink.pending() == 1  # the bad one is retried first
    drain(sink)
    assert sink.rejected == 1
    [(_, fields)] = r.xrange(f"{STREAM}:rejects")
    assert fields[b"reason"].startswith(b"refused 3 times") and b"no table" in fields[b"reason"]
    assert fields[b"table"] == b"no_such_table"


class FlakyClickHouse:
    """A real ClickHouse behind a switch that makes every call fail, as in an outage."""

    def __init__(self, ch: ConnectClickHouse) -> None:
        self.ch, self.down = ch, False

    def execute(self, sql: str) -> None:
        self._check()
        self.ch.execute(sql)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self._check()
        return self.ch.query(sql, params)

    def insert(self, table: str, rows: Any, *, token: str) -> None:
        self._check()
        self.ch.insert(table, rows, token=token)

    def close(self) -> None:
        self.ch.close()

    def _check(self) -> None:
        if self.down:
            raise ClickHouseError("Connection refused")


def test_an_outage_sets_nothing_aside_and_every_row_arrives_once_after_it(
    r: redis.Redis, redis_url: str, ch: ConnectClickHouse
) -> None:
    for n in range(3):
        r.xadd(STREAM, outbox_entry("events", [order(f"e{n}", "alice", "paid", "1", JAN)]))
    flaky = FlakyClickHouse(ch)
    sink = ClickHouseSink(redis_url, flaky, partitions=1, claim_idle_ms=10, max_deliveries=2)
    flaky.down = True

    for _ in range(5):  # more tries than max_deliveries
        with pytest.raises(ClickHouseError):
            sink.drain_once(block_ms=10)
    assert sink.rejected == 0 and sink.pending() == 3

    flaky.down = False
    drain(sink)
    assert sink.rejected == 0
    assert sorted(row["event_id"] for row in ch.query("SELECT event_id FROM events")) == [
        "e0",
        "e1",
        "e2",
    ]
    sink.close()


def test_every_partitions_outbox_is_drained(
    r: redis.Redis, ch: ConnectClickHouse, make_sink: Callable[..., ClickHouseSink]
) -> None:
    for p in range(3):
        rows = [order(f"p{p}-{i}", "alice", "paid", "1", JAN) for i in range(p + 1)]
        # the same entry id in each: an insert's token names its stream too, or ClickHouse
        # would drop the second and third as copies of the first
        r.xadd(keyspace.clickhouse_outbox(p), outbox_entry("events", rows), id="1-1")
    sink = make_sink(partitions=3)
    assert sink.pending() == 3
    drain(sink)
    assert count(ch, "events") == 6 and sink.inserted_rows == 6
    assert all(r.xlen(keyspace.clickhouse_outbox(p)) == 0 for p in range(3))


def test_an_erasure_waits_for_older_rows_in_every_partitions_outbox(
    r: redis.Redis, ch: ConnectClickHouse, make_sink: Callable[..., ClickHouseSink]
) -> None:
    """Rows of the customer queued in another partition's outbox before the erasure must land
    before its delete, never after it: the erasure waits, the other outbox drains meanwhile."""
    older = outbox_entry("events", [order("e1", "gone", "paid", "10", JAN)])
    r.xadd(keyspace.clickhouse_outbox(1), older)
    request = ErasureRequest("gone", "er-1", "test", datetime.now(UTC))
    r.xadd(keyspace.clickhouse_outbox(0), erasure_entry(request).fields)  # the home's outbox
    newer = outbox_entry("events", [order("e2", "kept", "paid", "1", JAN)])
    r.xadd(keyspace.clickhouse_outbox(1), newer)
    sink = make_sink(partitions=2)

    sink.drain_once()  # partition 0 first: its erasure waits for partition 1's older entry
    assert r.hget(keyspace.erasures_done(0), "er-1") is None
    drain(sink)

    report = orjson.loads(r.hget(keyspace.erasures_done(0), "er-1"))
    assert report["rows"]["events"] == 1  # the row went in first, and was deleted after
    assert sink.erasures == 1
    assert [row["customer_id"] for row in ch.query("SELECT customer_id FROM events")] == ["kept"]


def test_two_erasures_of_one_millisecond_in_two_outboxes_do_not_wait_for_each_other(
    r: redis.Redis, ch: ConnectClickHouse, make_sink: Callable[..., ClickHouseSink]
) -> None:
    for p, customer in enumerate(("ann", "bo")):
        r.xadd(
            keyspace.clickhouse_outbox(p),
            outbox_entry("events", [order(customer, customer, "paid", "1", JAN)]),
            id="4-0",
        )
        request = ErasureRequest(customer, f"er-{customer}", "test", datetime.now(UTC))
        r.xadd(keyspace.clickhouse_outbox(p), erasure_entry(request).fields, id="5-0")
    sink = make_sink(partitions=2)
    drain(sink)
    assert sink.erasures == 2
    assert count(ch, "events") == 0


def test_the_run_loop_drains_as_entries_arrive_until_stopped(
    r: redis.Redis, ch: ConnectClickHouse, make_sink: Callable[..., ClickHouseSink]
) -> None:
    sink = make_sink()
    stop = threading.Event()
    loop = threading.Thread(target=sink.run, args=(stop,), kwargs={"block_ms": 50})
    loop.start()
    try:
        for i in range(5):
            r.xadd(STREAM, outbox_entry("events", [order(f"e{i}", "alice", "paid", "1", JAN)]))
        wait_until(lambda: sink.inserted_rows == 5)
        assert sink.pending() == 0
    finally:
        stop.set()
        loop.join(timeout=5)
    assert not loop.is_alive()
    assert count(ch, "events") == 5


def test_gmv_by_segment_counts_net_spend_by_current_segment(ch: ConnectClickHouse) -> None:
    ch.insert(
        "events",
        [
            order("a1", "alice", "paid", "100.00", JAN),
            order("a2", "alice", "paid", "50.50", JAN + timedelta(days=1)),
            order("a3", "alice", "refunded", "20.00", JAN + timedelta(days=2)),
            order("b1", "bob", "paid", "10.00", JAN),
            order("c1", "carol", "paid", "30.00", FEB),
            order("old", "bob", "paid", "999.00", datetime(2023, 6, 1, tzinfo=UTC)),  # before since
        ],
        token="orders",
    )
    ch.insert("events", [order("b1", "bob", "paid", "10.00", JAN)], token="a replay")
    ch.insert(
        "segment_changes",
        [
            change("alice", "general_develop", JAN),
            change("alice", "important_value", JAN + timedelta(days=1)),  # latest: counts
            change("carol", "general_develop", FEB),
        ],
        token="changes",
    )

    since, until = datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
    rows = ch.query(load_query("gmv_by_segment"), {"since": since, "until": until})

    assert rows == [
        {"segment": "important_value", "currency": "CNY", "gmv": Decimal("130.50"), "orders": 2,
         "customers": 1, "aov": Decimal("65.25")},
        {"segment": "general_develop", "currency": "CNY", "gmv": Decimal("30.00"), "orders": 1,
         "customers": 1, "aov": Decimal("30.00")},
        {"segment": "prospect", "currency": "CNY", "gmv": Decimal("10.00"), "orders": 1,
         "customers": 1, "aov": Decimal("10.00")},
    ]  # fmt: skip
