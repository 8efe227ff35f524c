"""The membership named queries on embedded ClickHouse agree with the ledger they summarise:
points liability by expiry month, members per level, level moves, tag counts."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from agents.customer_step import Customer, StepContext, advance, on_event
from agents.membership.rows import rows_by_table
from agents.membership.state import Movement
from agents.profile.fold import RfmPolicy
from agents.profile.rows import profile_row
from agents.rules.contact_policy import BudgetBook
from schemas.events import Event, OrderEvent, PointsEvent
from schemas.membership import load_programme
from streams.clickhouse import ClickHouse, connect, migrate
from streams.named_queries import named_query
from streams.settings import EXAMPLE_MEMBERSHIP
from tests.unit.agents.membership.programme import programme

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
ROLLING = programme(
    "pending: 15d\nexpiry: {mode: rolling, after: 200d}\nrefund: within_balance",
    tags="big: {monetary: {gte: 2000}}\nregular: {frequency: {gte: 3}}",
)
COLUMNS = {
    "points_liability": ["expiry_month", "members", "points", "pending_points"],
    "level_distribution": ["level", "members", "share", "avg_monetary", "points"],
    "level_migration": ["from_level", "to_level", "reason", "members"],
    "tag_counts": ["tag", "customers", "added", "removed"],
}


def _events(rng: random.Random, cid: str) -> list[Event]:
    out: list[Event] = []
    for n in range(rng.randint(1, 6)):
        at = NOW - timedelta(days=rng.uniform(0, 300))
        out.append(
            OrderEvent(
                event_id=f"{cid}-p{n}",
                customer_id=cid,
                ts=at,
                order_id=f"{cid}-o{n}",
                status="paid",
                amount=Decimal(rng.randint(100, 4000)),
            )
        )
        if rng.random() < 0.3:
            out.append(
                PointsEvent.model_validate(
                    {"event_id": f"{cid}-r{n}", "customer_id": cid, "kind": "redeem"}
                    | {"ts": at + timedelta(days=20), "points": rng.randint(1, 800)}
                )
            )
    return sorted(out, key=lambda e: e.ts)


@pytest.fixture(scope="module")
def shop() -> tuple[dict[str, Customer], list[Movement]]:
    rng = random.Random(11)
    ctx = StepContext(RfmPolicy(), None, BudgetBook(), programme=ROLLING)
    customers: dict[str, Customer] = {}
    moves: list[Movement] = []
    for i in range(60):
        customer = Customer.new(f"c{i}")
        for event in _events(rng, customer.customer_id):
            moves += on_event(customer, [event], ctx).movements
        moves += advance(customer, NOW, ctx, inclusive=True).movements
        customers[customer.customer_id] = customer
    return customers, moves


@pytest.fixture(scope="module")
def ch(tmp_path_factory: pytest.TempPathFactory, shop: Any) -> Iterator[ClickHouse]:
    customers, moves = shop
    clickhouse = connect(f"chdb://{tmp_path_factory.mktemp('membership') / 'ch'}")
    migrate(clickhouse)
    for n, (table, rows) in enumerate(rows_by_table(moves).items()):
        clickhouse.insert(table, rows, token=f"m{n}")
    snapshots = [profile_row(c.profile, NOW) for c in customers.values()]
    clickhouse.insert("profile_snapshots", snapshots, token="snapshots")
    yield clickhouse
    clickhouse.close()


def run(ch: ClickHouse, name: str, **given: str) -> list[dict[str, Any]]:
    query = named_query(name)
    rows = ch.query(query.sql, query.bind(given, NOW))
    assert rows and list(rows[0]) == COLUMNS[name], name
    return rows


def test_points_liability_is_what_the_members_lots_still_hold_by_the_month_they_lapse(
    ch: ClickHouse, shop: Any
) -> None:
    customers, _ = shop
    zone = ROLLING.zone
    want: Counter[Any] = Counter()
    pending = 0
    for c in customers.values():
        for lot in c.member.lots if c.member else []:
            if lot.state == "active":
                local = (lot.expires_at - timedelta(milliseconds=1)).astimezone(zone)
                want[(local.year, local.month)] += lot.remaining
            else:
                pending += lot.remaining
    rows = run(ch, "points_liability")
    got = {(r["expiry_month"].year, r["expiry_month"].month): r["points"] for r in rows}
    assert {k: v for k, v in got.items() if v} == {k: v for k, v in want.items() if v}
    assert sum(r["pending_points"] for r in rows) == pending > 0


def test_members_per_level_and_tag_counts_are_the_profiles(ch: ClickHouse, shop: Any) -> None:
    customers, moves = shop
    levels = Counter(c.profile.level for c in customers.values())
    rows = run(ch, "level_distribution")
    assert {r["level"]: r["members"] for r in rows} == levels
    tags = Counter(t for c in customers.values() for t in c.profile.tags)
    rows = run(ch, "tag_counts", days="400")
    assert {r["tag"]: r["customers"] for r in rows if r["customers"]} == tags
    moved = run(ch, "level_migration", since="2025-01-01", until="2027-01-01")
    ups = {(r["from_level"], r["to_level"]) for r in moved if r["reason"] == "upgrade"}
    assert ("member", "silver") in ups
    assert sum(1 for m in moves if m.kind == "level_changed") >= sum(r["members"] for r in moved)


def test_the_shipped_programme_is_valid() -> None:
    assert load_programme(EXAMPLE_MEMBERSHIP).levels.ids == ("member", "silver", "gold", "diamond")


def test_every_membership_query_is_documented_in_its_header() -> None:
    for name, columns in COLUMNS.items():
        header = named_query(name).sql.split("\nSELECT", 1)[0]
        assert all(c in header for c in columns), name
