"""A bad day for Redis and the broker: Redis crashes and comes back, the broker stops
answering for a while — the worker waits, resumes, and every event is applied exactly once."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis

from agents.profile.incoming import decode
from agents.profile.keeper import ProfileKeeper
from agents.profile.positions import BrokerView
from agents.profile.reads import read_profile
from streams.app import create_app
from streams.embedded import EmbeddedStack, start_embedded
from streams.settings import Settings
from streams.topics import contract_topics, ensure_topics
from tests.integration.conftest import SteadyBrowsing, WorkerProcess, stats, wait_for

pytestmark = pytest.mark.integration

EVENTS = 3000
CUSTOMERS = 200


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[tuple[EmbeddedStack, Settings]]:
    """A stack of this test's own: its Redis and broker are the ones it breaks."""
    stack = start_embedded(tmp_path / "stack")
    settings = stack.settings(Settings()).model_copy(
        update={
            "app_id": f"ecrm-restarts-{os.getpid()}",
            "data_dir": tmp_path / "data",
            "clickhouse_url": f"chdb://{tmp_path / 'clickhouse'}",
            "sweep_interval_s": 0.5,
            "sink": "no",
            "batch_max": 100,
        }
    )
    ensure_topics(settings.kafka_bootstrap, list(contract_topics(settings).values()), 4)
    try:
        yield stack, settings
    finally:
        stack.freeze_broker(False)
        stack.stop()


def test_redis_crash_and_a_frozen_broker_lose_nothing_and_apply_nothing_twice(
    own_stack: tuple[EmbeddedStack, Settings], tmp_path: Path
) -> None:
    stack, settings = own_stack
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    rds = redis.Redis.from_url(settings.redis_url)
    traffic = SteadyBrowsing(settings, EVENTS, CUSTOMERS)  # steady traffic through both outages
    try:
        traffic.start()
        wait_for(lambda: stats(rds).get("events", 0) > 300, timeout=90, what="events applied")

        stack.crash_redis()  # mid-stream: batches cannot commit
        time.sleep(3)
        stack.start_redis()  # back with what its append-only file kept
        rds = redis.Redis.from_url(settings.redis_url)
        wait_for(lambda: stats(rds).get("events", 0) > 1200, timeout=90, what="progress again")

        stack.freeze_broker(True)  # nobody can fetch or produce for a while
        time.sleep(5)
        stack.freeze_broker(False)

        traffic.join(timeout=180)
        assert traffic.done.is_set(), "the storefront could not send everything"
        try:
            wait_for(lambda: stats(rds).get("events", 0) >= EVENTS, timeout=120)
        except AssertionError:  # say where it stood: counters, the worker, what it warned of
            raise AssertionError(
                f"not every event applied: {stats(rds)}; worker alive: "
                f"{worker.proc.poll() is None}\n{_warnings(worker)}"
            ) from None
        time.sleep(1)  # a late duplicate would show up here
        assert stats(rds)["events"] == EVENTS, worker.log_tail()
        assert stats(rds).get("duplicates", 0) == 0
        for customer, n in traffic.sent.items():
            profile = read_profile(settings, customer)
            assert profile is not None and profile.events_seen == n, customer
        assert worker.proc.poll() is None, worker.log_tail()
        log = worker.log_path.read_text(errors="replace")
        assert "waiting for Redis" in log
    finally:
        worker.stop()


def test_a_partition_first_read_while_redis_is_down_is_applied_once_redis_is_back(
    own_stack: tuple[EmbeddedStack, Settings], caplog: pytest.LogCaptureFixture
) -> None:
    # a worker learns where each source partition resumed (Redis's watermarks) the first time
    # it reads there: after a start or a rebalance, that read may fall in a Redis outage, and
    # it must be waited out like the batch's own unit, not crash the worker's profiles task
    stack, settings = own_stack
    topic = settings.topic("browse")
    event = {
        "event_id": "e1",
        "customer_id": "c1",
        "ts": datetime.now(UTC).isoformat(),
        "sku": "S1",
    }

    async def scenario() -> None:
        # with a broker to ask, the event-time clock is on
        broker = BrokerView(lambda t, p: 1 if t == topic else 0)
        keeper = ProfileKeeper(create_app(settings), broker=broker)
        stack.crash_redis()
        applying = asyncio.ensure_future(
            keeper.apply([decode(topic, "browse", 0, 0, None, orjson.dumps(event))])
        )
        while "waiting for Redis" not in caplog.text and not applying.done():
            await asyncio.sleep(0.05)
        stack.start_redis()
        applied = await asyncio.wait_for(applying, timeout=60)
        assert [i.event.event_id for i in applied if i.event] == ["e1"]
        await keeper.app.store.stop()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    rds = redis.Redis.from_url(settings.redis_url)
    assert stats(rds)["events"] == 1
    assert read_profile(settings, "c1") is not None


def _warnings(worker: WorkerProcess, n: int = 40) -> str:
    lines = worker.log_path.read_text(errors="replace").splitlines()
    return "\n".join([line for line in lines if "WARNING" in line or "ERROR" in line][-n:])
