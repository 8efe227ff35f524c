"""The embedded stack: a real broker and Valkey that start, answer, and leave nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from ecrm.commands.up import run_up
from schemas.errors import EmbeddedStackError
from streams.embedded import EmbeddedStack, embedded_stack, free_port, start_embedded
from streams.settings import Settings
from streams.topics import TOPIC_CONFIG, contract_topics, ensure_topics, partition_counts

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    with embedded_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


def process_alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_broker_creates_the_contract_topics_with_the_asked_partitions(
    stack: EmbeddedStack,
) -> None:
    names = list(contract_topics(stack.settings(Settings())).values())
    ensure_topics(stack.kafka_bootstrap, names, 4)
    ensure_topics(stack.kafka_bootstrap, names, 4)  # a second run changes nothing

    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    try:
        assert partition_counts(admin, names) == dict.fromkeys(names, 4)
    finally:
        admin.close()


def test_topics_ecrm_creates_describe_their_retention_and_cleanup_policy(
    stack: EmbeddedStack,
) -> None:
    # Tansu describes a topic created without settings as having none, and clients that
    # read retention.ms (quixstreams) refuse such a topic: ecrm states them when it creates
    names = ["test.described.orders", "test.described.actions"]
    ensure_topics(stack.kafka_bootstrap, names, 2)

    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    try:
        # "all": Tansu reports what a topic was created with as its defaults
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names],
            config_filter="all",
        )["topic"]
    finally:
        admin.close()
    assert set(described) == set(names)
    for name in names:
        assert described[name]["retention.ms"]["value"] == TOPIC_CONFIG["retention.ms"]
        assert TOPIC_CONFIG["retention.ms"] == "604800000"  # Kafka's default: 7 days
        assert described[name]["cleanup.policy"]["value"] == "delete"


def test_a_keyed_message_lands_on_one_partition_and_reads_back(stack: EmbeddedStack) -> None:
    ensure_topics(stack.kafka_bootstrap, ["test.keyed"], 3)
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    first = producer.send("test.keyed", key=b"c-42", value=b'{"n": 1}').get(timeout=10)
    second = producer.send("test.keyed", key=b"c-42", value=b'{"n": 2}').get(timeout=10)
    producer.close()
    assert first.partition == second.partition
    assert second.offset == first.offset + 1

    consumer = KafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    consumer.assign([TopicPartition("test.keyed", first.partition)])
    got = [(m.key, m.value) for _, m in zip(range(2), consumer, strict=False)]
    consumer.close()
    assert got == [(b"c-42", b'{"n": 1}'), (b"c-42", b'{"n": 2}')]


def test_a_consumer_group_joins_and_reads(stack: EmbeddedStack) -> None:
    # Tansu completes a first JoinGroup only after half the session timeout: keep it short.
    ensure_topics(stack.kafka_bootstrap, ["test.group"], 2)
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    producer.send("test.group", key=b"c-1", value=b"hello").get(timeout=10)
    producer.close()
    consumer = KafkaConsumer(
        "test.group",
        bootstrap_servers=stack.kafka_bootstrap,
        group_id="test-group",
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=2000,
        consumer_timeout_ms=20_000,
    )
    message = next(iter(consumer))
    consumer.close()
    assert (message.key, message.value) == (b"c-1", b"hello")


def test_valkey_answers_ping_set_get(stack: EmbeddedStack) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    assert client.ping()
    client.set("profile:c-1", "vip")
    assert client.get("profile:c-1") == b"vip"
    client.close()


def test_settings_point_at_the_stack(stack: EmbeddedStack) -> None:
    settings = stack.settings(Settings(topic_prefix="shop."))
    assert settings.kafka_bootstrap == stack.kafka_bootstrap
    assert settings.redis_url == stack.redis_url
    assert settings.clickhouse_url == f"chdb://{stack.data_dir}/clickhouse"
    assert settings.topic_prefix == "shop."


def test_valkey_keeps_its_data_across_restarts_and_the_broker_is_a_new_cluster(
    tmp_path: Path,
) -> None:
    with embedded_stack(tmp_path) as first:
        redis.Redis.from_url(first.redis_url).set("kept", "yes")
    with embedded_stack(tmp_path) as second:
        assert redis.Redis.from_url(second.redis_url).get("kept") == b"yes"
        admin = KafkaAdminClient(bootstrap_servers=second.kafka_bootstrap)
        try:
            assert admin.describe_cluster()["cluster_id"] == second.cluster_id
        finally:
            admin.close()
    assert first.cluster_id != second.cluster_id


def test_stop_leaves_no_process_and_can_be_called_twice(tmp_path: Path) -> None:
    running = start_embedded(tmp_path)
    pids = running.pids
    assert set(pids) == {"tansu", "valkey"}
    running.stop()
    running.stop()
    assert not any(process_alive(pid) for pid in pids.values())
    assert running.pids == {}


def test_a_second_stack_on_the_same_data_dir_is_refused(stack: EmbeddedStack) -> None:
    with pytest.raises(EmbeddedStackError, match="another embedded stack"):
        start_embedded(stack.data_dir)


def test_a_busy_port_is_an_error_naming_it(stack: EmbeddedStack, tmp_path: Path) -> None:
    busy = int(stack.kafka_bootstrap.rsplit(":", 1)[1])
    with pytest.raises(EmbeddedStackError, match=f":{busy} is already in use"):
        start_embedded(tmp_path, kafka_port=busy)


def test_a_killed_parent_leaves_no_orphan(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from pathlib import Path
        from streams.embedded import start_embedded
        stack = start_embedded(Path({str(tmp_path)!r}))
        print(json.dumps(stack.pids), flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert parent.stdout is not None
        pids: dict[str, int] = json.loads(parent.stdout.readline())
        assert all(process_alive(pid) for pid in pids.values())
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert wait_for(lambda: not any(process_alive(pid) for pid in pids.values())), pids


def our_children() -> set[int]:
    """Pids of this process's live children (every thread's), read from /proc."""
    pids = set()
    for task in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        pids.update(int(pid) for pid in task.read_text().split())
    return {pid for pid in pids if process_alive(pid)}


def test_ecrm_up_prints_settings_runs_the_hook_and_stops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = our_children()
    seen: list[Settings] = []

    def hook(settings: Settings, stop: threading.Event) -> None:
        seen.append(settings)
        assert len(our_children() - before) == 2  # tansu and valkey
        stop.set()

    assert run_up(Settings(data_dir=tmp_path), hook) == 0

    printed = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert printed == seen[0].as_env()
    assert printed["ECRM_CLICKHOUSE_URL"] == f"chdb://{tmp_path.resolve()}/clickhouse"
    assert our_children() <= before


def test_ecrm_up_stops_the_stack_when_the_hook_fails(tmp_path: Path) -> None:
    before = our_children()

    def hook(settings: Settings, stop: threading.Event) -> None:
        raise ValueError("drain failed")

    with pytest.raises(ValueError, match="drain failed"):
        run_up(Settings(data_dir=tmp_path), hook)
    assert our_children() <= before


def test_free_port_is_bindable() -> None:
    assert 0 < free_port() < 65536
