"""A shop that imports its order history with the example rules running: the real worker builds
every profile from it but sends nobody anything — no welcome for buyers who first ordered
months ago, no thank-you points for last year's big orders — and records each decision it held
back as suppressed, reason historical. The first live order afterwards is marketed as usual."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import yaml
from pydantic import SecretStr

from ecrm.commands.imports import import_orders
from schemas.rules import load_rules
from streams.settings import EXAMPLE_RULES, Settings
from tests.fixtures.taobao_export import write_export
from tests.integration.conftest import consumed, stats, wait_for
from tests.integration.test_order_import import drain
from tests.integration.test_pipeline import sink_all
from tests.integration.test_rules_live import ActionsTopic, rule_stats

pytestmark = pytest.mark.integration

SECRET = "integration-secret-0123456789"


def example_rules_at_any_hour(path: Path) -> Path:
    """rules/example.yaml as shipped, less its quiet hours: the live order at the end is then
    fired whatever the time of day the test runs (at night it would only be deferred)."""
    data = yaml.safe_load(EXAMPLE_RULES.read_text(encoding="utf-8"))
    del data["policy"]["quiet_hours"]
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    load_rules(path)  # still a valid file
    return path


def order(event_id: str, customer: str, ts: datetime, amount: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "customer_id": customer,
        "ts": ts.isoformat(),
        "order_id": event_id,
        "status": "paid",
        "amount": amount,
    }


def test_an_imported_history_builds_profiles_sends_nothing_and_live_orders_still_market(
    settings: Settings, start_worker: Any, produce: Any, rds: redis.Redis, tmp_path: Path
) -> None:
    rules = example_rules_at_any_hour(tmp_path / "rules.yaml")
    s = settings.model_copy(update={"pii_secret": SecretStr(SECRET), "rules_file": rules})
    actions = ActionsTopic(s)
    worker = start_worker(s)

    # three months and more of Taobao orders, and one order paid ten minutes ago: recent, but
    # imported, so history all the same
    export = tmp_path / "ExportOrderList202606.csv"
    truth = write_export(export, 300, seed=5, encoding="gbk")
    now = datetime.now(UTC)
    recent = tmp_path / "recent.jsonl"
    recent.write_bytes(orjson.dumps(order("web-1", "fresh", now - timedelta(minutes=10), "800")))
    first = import_orders(s, export)
    second = import_orders(s, recent)
    assert first.undelivered == second.undelivered == 0 and second.imported == 1
    events = first.events + second.events
    assert events == truth.paid_events + truth.refund_events + 1
    wait_for(lambda: consumed(rds) >= events, timeout=90, what=f"{events} imported events")

    # decided, all of it held back as history: nothing was queued for the actions topic
    decided = rule_stats(rds)
    assert decided, "the example rules decided nothing on the imported orders"
    assert set(decided) <= {f"{rule}|suppressed:historical" for rule in rule_ids(rules)}
    ch = sink_all(s)
    try:
        customers = ch.query("SELECT uniqExact(customer_id) AS n FROM events")[0]["n"]
        assert customers > 50
        rows = ch.query("SELECT rule_id, outcome, reason FROM rule_decisions")
        by_rule = Counter(r["rule_id"] for r in rows)
        assert {(r["outcome"], r["reason"]) for r in rows} == {("suppressed", "historical")}
        assert by_rule["welcome"] == customers  # every buyer's first order, none welcomed
        assert by_rule["big-order-thanks"] > 0
        origins = ch.query("SELECT origin, count() AS n FROM events GROUP BY origin")
        assert origins == [{"origin": "import", "n": stats(rds)["events"]}]

        # live: the buyer imported ten minutes ago orders again — not a first order, so no
        # welcome, but a big one, so the thank-you points go out (no cap or cooldown was spent)
        produce("orders", order("live-1", "fresh", datetime.now(UTC), "650"))
        produce.flush()
        [thanks] = actions.wait(lambda got: len(got) >= 1, timeout=30, what="the thank-you")
        assert (thanks["rule_id"], thanks["customer_id"], thanks["trigger_event_id"]) == (
            "big-order-thanks",
            "fresh",
            "live-1",
        )
        # the import queued nothing ahead of it, and nothing follows it
        assert len(actions.settle(2.0)) == 1
        assert rule_stats(rds)["big-order-thanks|fired"] == 1
        drain(s, ch)
        live = ch.query("SELECT origin FROM events WHERE event_id = 'live-1'")
        assert live == [{"origin": ""}]
    finally:
        ch.close()
        actions.close()
    assert worker.proc.poll() is None, worker.log_tail()


def rule_ids(path: Path) -> list[str]:
    return [rule.id for rule in load_rules(path).rules]
