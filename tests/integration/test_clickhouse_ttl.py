"""ECRM_CLICKHOUSE_TTL_DAYS: a table named keeps its rows that many days, one not named keeps
them forever, and taking a table out of the setting takes its TTL off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.errors import ConfigError
from streams.clickhouse import apply_ttls, connect, migrate
from streams.settings import Settings

pytestmark = pytest.mark.integration


def _decision(action_id: str, at: datetime) -> dict[str, object]:
    return {
        "action_id": action_id,
        "rule_id": "win-back",
        "customer_id": "c1",
        "outcome": "fired",
        "reason": "",
        "kind": "coupon",
        "channel": "sms",
        "params": "{}",
        "trigger_event_id": "",
        "decided_at": at,
        "deliver_at": None,
        "priority": 0,
        "coupon_value": None,
        "released": 0,
    }


def test_rows_past_a_tables_ttl_go_and_other_tables_keep_theirs(tmp_path: Path) -> None:
    ch = connect(f"chdb://{tmp_path / 'ch'}")
    try:
        migrate(ch, ttl_days={"rule_decisions": 30})
        now = datetime.now(UTC)
        old, recent = now - timedelta(days=400), now - timedelta(days=3)
        ch.insert("rule_decisions", [_decision("old", old), _decision("new", recent)], token="d1")
        ch.execute("OPTIMIZE TABLE rule_decisions FINAL")  # a merge applies the TTL now
        kept = ch.query("SELECT action_id FROM rule_decisions ORDER BY action_id")
        assert kept == [{"action_id": "new"}]
        engine = ch.query("SELECT engine_full FROM system.tables WHERE name = 'events'")
        assert " TTL " not in engine[0]["engine_full"]  # not named: kept forever

        assert apply_ttls(ch, {"rule_decisions": 30}) == []  # unchanged: left alone
        assert apply_ttls(ch, {}) == ["rule_decisions"]  # out of the setting: TTL off
        ch.insert("rule_decisions", [_decision("older", old)], token="d2")
        ch.execute("OPTIMIZE TABLE rule_decisions FINAL")
        assert {r["action_id"] for r in ch.query("SELECT action_id FROM rule_decisions")} == {
            "new",
            "older",
        }
    finally:
        ch.close()


def test_a_table_that_cannot_expire_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="erasures"):
        Settings(clickhouse_ttl_days={"erasures": 30})
    with pytest.raises(ConfigError, match="at least 1"):
        Settings(clickhouse_ttl_days={"events": 0})
