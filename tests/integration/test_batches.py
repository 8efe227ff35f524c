"""Whole fetched batches (streams/batches.py): a batch is acknowledged to Kafka only once it
is applied, so one that fails is read again, never skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.profile.reads import read_profile
from tests.integration.conftest import consumed, wait_for

pytestmark = pytest.mark.integration

#: `ecrm worker` whose keeper has a bug that the batch holding event "poison" runs into
POISONED_WORKER = """
import sys

from agents.profile.keeper import ProfileKeeper
from ecrm.cli import main

apply = ProfileKeeper.apply


async def apply_with_a_bug(self, items, now=None):
    if any(item.event is not None and item.event.event_id == "poison" for item in items):
        raise RuntimeError("a bug this batch runs into")
    await apply(self, items, now)


ProfileKeeper.apply = apply_with_a_bug
sys.exit(main(["worker", "--loglevel", "info"]))
"""


def cart(event_id: str, customer: str, sku: str) -> dict[str, object]:
    ts = datetime.now(UTC).isoformat()
    return {
        "event_id": event_id,
        "customer_id": customer,
        "ts": ts,
        "sku": sku,
        "qty": 1,
        "price": 5,
    }


def test_a_batch_that_raises_stops_the_worker_and_a_restarted_worker_applies_it(
    settings, start_worker, produce, rds, tmp_path: Path
):
    events = [cart(f"e{i}", f"c{i % 40}", "tea") for i in range(400)]
    events.insert(200, cart("poison", "unlucky", "kettle"))
    for value in events:
        produce("cart", value)
    produce.flush()

    script = tmp_path / "poisoned_worker.py"
    script.write_text(POISONED_WORKER)
    log = tmp_path / "poisoned.log"
    with open(log, "wb") as out:
        poisoned = subprocess.Popen(
            [sys.executable, str(script)],
            env={**os.environ, **settings.as_env()},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(
                lambda: poisoned.poll() is not None,
                timeout=90,
                what="the worker to stop at the failing batch",
            )
        finally:
            if poisoned.poll() is None:
                poisoned.kill()
                poisoned.wait()
    assert "a bug this batch runs into" in log.read_text(errors="replace")
    assert read_profile(settings, "unlucky") is None
    assert consumed(rds) < len(events)

    start_worker()
    wait_for(lambda: consumed(rds) >= len(events), timeout=90, what="every event after a restart")
    unlucky = read_profile(settings, "unlucky")
    assert unlucky is not None and unlucky.cart["kettle"].qty == 1
    assert consumed(rds) == len(events)
