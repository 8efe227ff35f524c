"""Same topic contents, same decisions: one worker reading in batches of up to 2000 and
another reading in batches of 7, SIGKILLed and restarted along the way, decide the same
actions under the same action ids — with events out of order within their topics (a phone
that was offline, a retry), whose turn is defined by the records alone (docs/operations.md,
"Decision order")."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from streams import keyspace
from streams.settings import Settings
from tests.integration.conftest import consumed, wait_for
from tests.integration.test_backlog import RULES, Key, _text, history, live_decisions, some_late

pytestmark = pytest.mark.integration


def decided_through(
    start_worker: Any, s: Settings, rds: redis.Redis, total: int, kills: int, end: datetime
) -> set[Key]:
    """Everything decided up to `end` by a worker over the topics, killed `kills` times."""
    worker = start_worker(s)
    for n in range(kills):
        wait_for(lambda n=n: consumed(rds) >= total * (n + 1) // (kills + 1), timeout=120)
        worker.kill()  # no flush, no commit: held events and an open unit are lost
        worker = start_worker(s)
    wait_for(lambda: consumed(rds) >= total, timeout=180, what=f"{total} events")
    end_ms = int(end.timestamp() * 1000)
    due = [keyspace.wakes(p) for p in range(s.partitions)]
    wait_for(
        lambda: not any(rds.zrangebyscore(k, "-inf", end_ms, 0, 1) for k in due),
        timeout=60,
        what="every moment due by the end decided",
    )
    worker.stop()
    return {k for k in live_decisions(rds, s.partitions) if k[6] <= _text(end)}


def test_batch_size_and_sigkills_do_not_change_the_action_ids(
    settings, start_worker, produce, rds, tmp_path: Path
) -> None:
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(RULES)
    s = settings.model_copy(update={"r_high_days": 1, "rules_file": rules_path})
    last = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    by_topic = history(11, customers=60, sessions=180, end=last)
    moved = some_late(by_topic, random.Random(11), 1 / 12)
    for name, events in by_topic.items():
        for e in events:
            produce(name, e.payload(), key=e.key)
    produce.flush()
    total = sum(len(v) for v in by_topic.values())
    end = datetime.now(UTC) + timedelta(seconds=5)

    big = decided_through(
        start_worker, s.model_copy(update={"batch_max": 2000}), rds, total, 0, end
    )
    rds.flushdb()  # the second worker starts from nothing: Redis has no watermark, so offset 0
    small = s.model_copy(update={"batch_max": 7, "app_id": f"{s.app_id}-small"})
    killed = decided_through(start_worker, small, rds, total, 1, end)

    fired = Counter(k[1] for k in big if k[3] == "fired")
    assert moved > 15 and fired["abandoned-cart"] > 5 and fired["welcome"] > 5, (moved, fired)
    assert {k[0] for k in big} == {k[0] for k in killed}
    assert big == killed, sorted(big ^ killed)[:6]
