"""profile_snapshots keeps one row per customer (a ReplacingMergeTree, 030-034) and
profiles_latest reads the same answers from it as from the full history before."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.clickhouse import SQL_DIR, ConnectClickHouse, connect, migrate, migration_files

pytestmark = pytest.mark.integration


@pytest.fixture
def ch(tmp_path: Path) -> Iterator[ConnectClickHouse]:
    clickhouse = connect(f"chdb://{tmp_path / 'clickhouse'}")
    assert isinstance(clickhouse, ConnectClickHouse)
    yield clickhouse
    clickhouse.close()


def day(n: int) -> datetime:
    return datetime(2024, 1, n, tzinfo=UTC)


def snapshot(customer: str, segment: str, as_of: datetime, written_at: datetime) -> dict[str, Any]:
    return {
        "customer_id": customer,
        "shop_id": "default",
        "segment": segment,
        "recency_days": 1,
        "frequency": 1,
        "monetary": "10.00",
        "first_order_at": None,
        "last_order_at": as_of,
        "level": "",
        "points": 0,
        "tags": ["vip"],
        "cart_items": 0,
        "cart_value": "0.00",
        "as_of": as_of,
        "written_at": written_at,
    }


def latest(ch: ConnectClickHouse) -> dict[str, str]:
    return {r["customer_id"]: r["segment"] for r in ch.query("SELECT * FROM profiles_latest")}


def test_history_from_before_the_migration_gives_the_same_latest_profiles_after_it(
    ch: ConnectClickHouse, tmp_path: Path
) -> None:
    old = tmp_path / "old-migrations"
    old.mkdir()
    for version, path in migration_files(SQL_DIR):  # ecrm as it was: 001-015
        if version <= 15:
            shutil.copy(path, old)
    migrate(ch, old)
    ch.insert(
        "profile_snapshots",
        [
            snapshot("alice", "first", day(2), day(5)),
            snapshot("alice", "rewritten", day(2), day(6)),  # same as_of, written later
            snapshot("alice", "late_write", day(1), day(9)),  # written last, as of earlier
            snapshot("bob", "general_develop", day(1), day(1)),
        ],
        token="history",
    )
    before = ch.query("SELECT * FROM profiles_latest ORDER BY customer_id")

    assert [m for m in migrate(ch) if m.startswith("03")][:5] == [
        "030_profile_snapshots_keep_history",
        "031_profiles_latest_drop",
        "032_profile_snapshots_drop",
        "033_profile_snapshots_replacing",
        "034_profiles_latest",
    ]
    assert ch.query("SELECT * FROM profiles_latest ORDER BY customer_id") == before
    assert latest(ch) == {"alice": "rewritten", "bob": "general_develop"}
    assert ch.query("SELECT count() AS n FROM profile_snapshots_until_030") == [{"n": 4}]


def test_snapshots_collapse_to_one_row_per_customer_and_the_latest_wins(
    ch: ConnectClickHouse,
) -> None:
    migrate(ch)
    for batch in range(5):  # a snapshot per customer per batch, as workers write them
        ch.insert(
            "profile_snapshots",
            [snapshot(c, f"seg{batch}", day(batch + 1), day(batch + 1)) for c in ("a", "b", "c")],
            token=f"batch-{batch}",
        )
    ch.insert("profile_snapshots", [snapshot("a", "stale", day(2), day(20))], token="late")
    assert latest(ch) == {"a": "seg4", "b": "seg4", "c": "seg4"}
    ch.execute("OPTIMIZE TABLE profile_snapshots FINAL")
    assert ch.query("SELECT count() AS n FROM profile_snapshots") == [{"n": 3}]
    assert latest(ch) == {"a": "seg4", "b": "seg4", "c": "seg4"}
