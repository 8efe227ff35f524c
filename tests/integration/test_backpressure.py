"""A bad day for ClickHouse: the worker starts without it, stops fetching once the outbox
passes its limit (Redis does not fill up), and catches up when the outbox drains."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streams import counters, keyspace
from streams.clickhouse import connect, migrate
from streams.counters import clickhouse_outboxes, stream_lengths
from streams.sink import ClickHouseSink
from tests.integration.conftest import wait_for

EVENTS = 300


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once closed


def events(rds, settings) -> int:
    """Events applied, in every partition."""
    return counters.stats(rds, settings.partitions).get("events", 0)


def queued(rds, settings) -> int:
    """Entries in every partition's ClickHouse outbox."""
    return stream_lengths(rds, clickhouse_outboxes(settings.partitions))


def _held(rds, pid: int) -> bool:
    return rds.hget(keyspace.worker_stats(pid), "held_for_outbox") == b"1"


def test_clickhouse_down_the_worker_holds_its_input_then_catches_up(
    settings, start_worker, produce, rds, tmp_path: Path, monkeypatch
) -> None:
    # with a ClickHouse server a worker needs its privacy key (never passed on by as_env)
    monkeypatch.setenv("ECRM_PRIVACY_SECRET", "a-test-key-of-enough-length")
    down = settings.model_copy(
        update={
            "clickhouse_url": f"http://ecrm:x@127.0.0.1:{_closed_port()}/ecrm",
            "sink": "yes",  # the worker's own sink: it cannot reach ClickHouse
            "clickhouse_outbox_max_rows": 40,
            "backpressure_check_s": 0.2,
            "batch_max": 10,
        }
    )
    worker = start_worker(down)
    start = datetime.now(UTC) - timedelta(minutes=5)

    def browse(numbers: range) -> None:
        for i in numbers:
            produce(
                "browse",
                {
                    "event_id": f"b{i}",
                    "customer_id": f"c{i % 50}",
                    "ts": (start + timedelta(milliseconds=i)).isoformat(),
                    "sku": f"S{i % 7}",
                },
            )
        produce.flush()

    # the worker runs without ClickHouse and applies events until the outbox passes its limit
    browse(range(100))
    wait_for(lambda: _held(rds, worker.pid), timeout=90, what="the worker to hold its input")
    applied_when_held = events(rds, settings)
    assert applied_when_held == 100
    assert queued(rds, settings) > 0
    assert worker.proc.poll() is None, worker.log_tail()
    assert "ClickHouse unavailable" in worker.log_path.read_text(errors="replace")

    # held: what arrives now waits in Kafka, not in Redis
    browse(range(100, EVENTS))
    time.sleep(3)  # an observation window: held, the worker fetches nothing new
    assert events(rds, settings) == applied_when_held
    assert _held(rds, worker.pid)

    # ClickHouse is back: a sink drains the outbox, the worker fetches again and catches up
    ch = connect(f"chdb://{tmp_path / 'clickhouse-back'}")
    migrate(ch)
    stop = threading.Event()
    drainer = threading.Thread(target=ClickHouseSink.from_settings(settings, ch).run, args=(stop,))
    drainer.start()
    try:
        wait_for(
            lambda: events(rds, settings) == EVENTS and queued(rds, settings) == 0,
            timeout=120,
            what="every event applied and the outbox drained",
        )
        wait_for(lambda: not _held(rds, worker.pid), timeout=30, what="the hold released")
    finally:
        stop.set()
        drainer.join(timeout=30)
    rows = ch.query("SELECT count() AS n, uniqExact(event_id) AS ids FROM events")
    assert rows == [{"n": EVENTS, "ids": EVENTS}]
    ch.close()


def test_embedded_redis_has_a_ceiling_and_never_evicts_state(settings, rds) -> None:
    import asyncio

    import redis.asyncio as aioredis

    from streams.backpressure import MEMORY_WARN_SHARE, memory_use

    assert rds.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}

    async def share() -> float | None:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            return await memory_use(client)
        finally:
            await client.aclose()

    used = asyncio.run(share())
    assert used is not None and 0 < used < MEMORY_WARN_SHARE
