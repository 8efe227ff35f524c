"""The analysts' ClickHouse on real chdb: attribution, funnels, uplift and every named query
agree with an independent Python computation over the same generated history, and
`ecrm sql` serves them from the command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.clickhouse import ClickHouse, connect, migrate
from streams.named_queries import named_queries, named_query
from tests.integration import analytics_reference as ref
from tests.integration.analytics_history import RAISED, START, History, generate

pytestmark = pytest.mark.integration

SEED = 20240501
SINCE = START + timedelta(days=20)
UNTIL = START + timedelta(days=120)
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def history() -> History:
    return generate(SEED)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, history: History) -> Path:
    """A chdb folder holding the history; closed again, so a subprocess may open it."""
    path = tmp_path_factory.mktemp("analytics") / "clickhouse"
    ch = connect(f"chdb://{path}")
    try:
        migrate(ch)
        history.insert_into(ch)
    finally:
        ch.close()
    return path


@pytest.fixture
def ch(folder: Path) -> Iterator[ClickHouse]:
    clickhouse = connect(f"chdb://{folder}")
    yield clickhouse
    clickhouse.close()


def run_query(ch: ClickHouse, name: str, **params: str) -> list[dict[str, Any]]:
    query = named_query(name)
    return ch.query(query.sql, query.bind(params, NOW))


def iso(moment: datetime) -> str:
    return moment.isoformat()


# --- the generated history is worth testing against -------------------------------------


def test_the_history_has_the_cases_the_numbers_must_get_right(history: History) -> None:
    event_ids = [e["event_id"] for e in history.events]
    assert len(event_ids) > len(set(event_ids)), "no replayed event"
    outcomes = {(d["outcome"], d["released"]) for d in history.rule_decisions}
    assert {("fired", 0), ("fired", 1), ("held_out", 0), ("deferred", 0), ("suppressed", 0)} <= (
        outcomes
    )
    window = timedelta(hours=72)
    credited = ref.attribution(history, window)
    orders = {o["event_id"]: o for o in ref.paid_orders(history)}
    lags = [orders[e]["ts"] - t["decided_at"] for e, t in credited.items()]
    assert window in lags, "no order on the last instant of a window"
    assert {t["outcome"] for t in credited.values()} == {"fired", "held_out"}
    after_window = [
        o
        for o in orders.values()
        for t in ref.touches(history)
        if t["customer_id"] == o["customer_id"]
        and window < o["ts"] - t["decided_at"] < 2 * window
        and o["event_id"] not in credited
    ]
    assert after_window, "no order just outside a window"
    groups = defaultdict(set)
    for t in ref.touches(history):
        if t["rule_id"] == "browse-abandonment" and SINCE <= t["decided_at"] < UNTIL:
            groups[t["customer_id"]].add(t["outcome"])
    assert any(len(g) == 2 for g in groups.values()), "nobody changed group"
    assert SINCE < RAISED < UNTIL


# --- attribution, funnel, uplift ---------------------------------------------------------


@pytest.mark.parametrize("hours", [72, 24, 1])
def test_each_paid_order_goes_to_the_last_touch_within_the_window(
    ch: ClickHouse, history: History, hours: int
) -> None:
    rows = ch.query(
        "SELECT event_id, action_id, rule_id, outcome FROM attributed_orders(window_hours = {h:UInt32})",
        {"h": hours},
    )
    expected = ref.attribution(history, timedelta(hours=hours))
    assert len(rows) == len({r["event_id"] for r in rows}), "an order attributed twice"
    assert {r["event_id"]: (r["action_id"], r["rule_id"], r["outcome"]) for r in rows} == {
        e: (t["action_id"], t["rule_id"], t["outcome"]) for e, t in expected.items()
    }


@pytest.mark.parametrize(
    ("since", "until", "hours"),
    [(SINCE, UNTIL, 72), (START, START + timedelta(days=400), 72), (SINCE, UNTIL, 24)],
)
def test_rule_performance_equals_an_independent_computation(
    ch: ClickHouse, history: History, since: datetime, until: datetime, hours: int
) -> None:
    rows = run_query(
        ch, "rule_performance", since=iso(since), until=iso(until), window_hours=str(hours)
    )
    expected = ref.rule_performance(history, since, until, timedelta(hours=hours))
    assert {r["rule_id"] for r in rows} == set(expected)
    for row in rows:
        want = expected[row["rule_id"]]
        for field in (
            "decided", "held_out", "suppressed", "sent", "converted",
            "delivery_sent", "delivered", "clicked", "delivery_failed",
            "treated_customers", "treated_converted", "held_out_customers", "held_out_converted",
            "treated_gmv", "held_out_gmv", "coupon_cost", "coupon_value_converted",
        ):  # fmt: skip
            assert row[field] == getattr(want, field), (row["rule_id"], field)
        for field in (
            "treated_rate", "held_out_rate", "uplift", "uplift_ci_low", "uplift_ci_high",
        ):  # fmt: skip
            assert row[field] == pytest.approx(getattr(want, field), abs=1e-6), field
        if want.incremental_gmv is None:
            assert row["incremental_gmv"] is None
        else:
            assert row["incremental_gmv"] == pytest.approx(want.incremental_gmv, abs=1e-6)
    by_rule = {r["rule_id"]: r for r in rows}
    assert by_rule["welcome"]["held_out_rate"] is None  # no holdout: no uplift
    assert by_rule["welcome"]["uplift_ci_low"] is None
    cart = by_rule["abandoned-cart"]
    assert cart["decided"] >= cart["sent"] >= cart["converted"] > 0
    assert cart["uplift_ci_low"] < cart["uplift"] < cart["uplift_ci_high"]
    assert 0 < cart["coupon_value_converted"] < cart["coupon_cost"]  # cost: every coupon sent


def test_rule_customers_puts_each_customer_in_one_group_per_rule(
    ch: ClickHouse, history: History
) -> None:
    rows = ch.query(
        "SELECT rule_id, customer_id, treated, converted FROM rule_customers("
        "since = {s:DateTime64(3, 'UTC')}, until = {u:DateTime64(3, 'UTC')}, window_hours = 72)",
        {"s": SINCE, "u": UNTIL},
    )
    keys = [(r["rule_id"], r["customer_id"]) for r in rows]
    assert len(keys) == len(set(keys))
    perf = ref.rule_performance(history, SINCE, UNTIL, timedelta(hours=72))
    for rule_id, want in perf.items():
        mine = [r for r in rows if r["rule_id"] == rule_id]
        assert sum(r["treated"] for r in mine) == want.treated_customers
        assert sum(1 - r["treated"] for r in mine) == want.held_out_customers


def test_attribution_follows_the_written_rules_on_a_small_story(tmp_path: Path) -> None:
    t0 = datetime(2024, 3, 1, 14, 0, tzinfo=UTC)
    hour = timedelta(hours=1)
    decisions = [
        # who, rule, outcome, decided_at, released
        ("treated", "win-back", "fired", t0, 0),
        ("control", "win-back", "held_out", t0, 0),
        ("two-rules", "win-back", "fired", t0, 0),
        ("two-rules", "abandoned-cart", "fired", t0 + hour, 0),
        ("too-late", "win-back", "fired", t0, 0),
        ("night", "win-back", "deferred", t0, 0),
        ("night", "win-back", "fired", t0 + 10 * hour, 1),
        ("suppressed", "win-back", "suppressed", t0, 0),
    ]
    orders = [
        ("treated", t0 + 71 * hour),  # inside the 72h window: win-back's treated conversion
        ("control", t0 + 10 * hour),  # a held-out customer's order counts for the control group
        ("two-rules", t0 + 2 * hour),  # last touch: abandoned-cart, not win-back
        ("too-late", t0 + 73 * hour),  # outside the window
        ("night", t0 + 5 * hour),  # before the deferred action was delivered
        ("night", t0 + 11 * hour),  # after it was
        ("suppressed", t0 + hour),  # a suppressed decision touched nobody
        ("treated", t0),  # not after the touch
    ]
    ch = connect(f"chdb://{tmp_path / 'clickhouse'}")
    try:
        migrate(ch)
        ch.insert("rule_decisions", [
            {"action_id": f"{who}-{rule}", "rule_id": rule, "customer_id": who,
             "outcome": outcome, "decided_at": at, "released": released, "priority": 1}
            for who, rule, outcome, at, released in decisions
        ], token="story-decisions")  # fmt: skip
        ch.insert("events", [
            {"event_id": f"{who}-{n}", "kind": "order", "customer_id": who, "ts": at,
             "order_id": f"o-{who}-{n}", "status": "paid", "amount": Decimal("100"),
             "currency": "CNY"}
            for n, (who, at) in enumerate(orders)
        ], token="story-orders")  # fmt: skip
        rows = ch.query(
            "SELECT event_id, rule_id, outcome FROM attributed_orders(window_hours = 72)"
        )
    finally:
        ch.close()
    assert sorted((r["event_id"], r["rule_id"], r["outcome"]) for r in rows) == [
        ("control-1", "win-back", "held_out"),
        ("night-5", "win-back", "fired"),
        ("treated-0", "win-back", "fired"),
        ("two-rules-2", "abandoned-cart", "fired"),
    ]


# --- the other named queries -------------------------------------------------------------


def test_segment_migration_counts_each_customer_once_in_their_cell(
    ch: ClickHouse, history: History
) -> None:
    a, b = START + timedelta(days=40), START + timedelta(days=110)
    rows = run_query(ch, "segment_migration", date_a=iso(a), date_b=iso(b))
    assert {(r["segment_a"], r["segment_b"]): r["customers"] for r in rows} == (
        ref.segment_migration(history, a, b)
    )
    shares: dict[str, float] = defaultdict(float)
    for r in rows:
        shares[r["segment_a"]] += r["share_of_a"]
    assert all(s == pytest.approx(1) for s in shares.values())


def test_repurchase_interval_per_segment(ch: ClickHouse, history: History) -> None:
    rows = run_query(ch, "repurchase_interval", since=iso(SINCE), until=iso(UNTIL))
    expected = ref.repurchase_intervals(history, SINCE, UNTIL)
    assert {r["segment"] for r in rows} == set(expected)
    assert rows[-1]["segment"] == "all"
    for row in rows:
        days = sorted(expected[row["segment"]])
        assert row["intervals"] == len(days)
        assert row["avg_days"] == pytest.approx(sum(days) / len(days), abs=1e-6)
        assert row["median_days"] == pytest.approx(days[len(days) // 2], abs=1e-6)
        assert row["p25_days"] <= row["median_days"] <= row["p75_days"] <= row["p90_days"]


def test_cohort_retention_per_month(ch: ClickHouse, history: History) -> None:
    rows = run_query(ch, "cohort_retention", since="2024-01-01", until="2024-04-01")
    expected = ref.cohort_retention(history, date(2024, 1, 1), date(2024, 4, 1))
    assert {(r["cohort"], r["months_after"]): (r["cohort_size"], r["customers"]) for r in rows} == (
        expected
    )
    for r in rows:
        assert r["retention"] == pytest.approx(r["customers"] / r["cohort_size"], abs=1e-9)


@pytest.mark.parametrize("hours", [24, 2])
def test_top_abandoned_products(ch: ClickHouse, history: History, hours: int) -> None:
    rows = run_query(
        ch, "top_abandoned_products", since=iso(SINCE), until=iso(UNTIL),
        window_hours=str(hours), limit="1000",
    )  # fmt: skip
    expected = ref.abandoned_products(history, SINCE, UNTIL, timedelta(hours=hours))
    assert {
        r["sku"]: (r["cart_adds"], r["abandoned"], r["customers"], r["abandoned_value"])
        for r in rows
    } == expected
    assert [r["abandoned"] for r in rows] == sorted((r["abandoned"] for r in rows), reverse=True)
    top = run_query(ch, "top_abandoned_products", since=iso(SINCE), until=iso(UNTIL), limit="3")
    assert len(top) == 3


def test_rfm_distribution_from_the_latest_snapshots(ch: ClickHouse, history: History) -> None:
    latest: dict[str, dict[str, Any]] = {}
    for snap in history.profile_snapshots:
        if (
            snap["customer_id"] not in latest
            or snap["as_of"] > latest[snap["customer_id"]]["as_of"]
        ):
            latest[snap["customer_id"]] = snap
    counts: dict[str, int] = defaultdict(int)
    for snap in latest.values():
        counts[snap["segment"]] += 1
    rows = run_query(ch, "rfm_distribution")
    assert {r["segment"]: r["customers"] for r in rows} == counts
    assert sum(r["share"] for r in rows) == pytest.approx(1)


EXPECTED_COLUMNS = {
    "rfm_distribution": ["segment", "customers", "share", "avg_days_since_last_order",
                         "avg_frequency", "avg_monetary", "total_monetary"],
    "segment_migration": ["segment_a", "segment_b", "customers", "share_of_a"],
    "gmv_by_segment": ["segment", "currency", "gmv", "orders", "customers", "aov"],
    "repurchase_interval": ["segment", "intervals", "customers", "avg_days", "p25_days",
                            "median_days", "p75_days", "p90_days"],
    "cohort_retention": ["cohort", "cohort_size", "months_after", "customers", "retention"],
    "rule_performance": ["rule_id", "decided", "held_out", "suppressed", "sent",
                         "delivery_sent", "delivered", "clicked", "delivery_failed", "converted",
                         "treated_customers", "treated_converted", "treated_rate",
                         "held_out_customers", "held_out_converted", "held_out_rate", "uplift",
                         "uplift_margin", "uplift_ci_low", "uplift_ci_high", "treated_gmv",
                         "held_out_gmv", "incremental_gmv", "coupon_cost", "coupon_value_converted"],
    "rule_decisions": ["rule_id", "outcome", "reason", "decisions", "last_decided_at"],
    "top_abandoned_products": ["sku", "cart_adds", "abandoned", "abandon_rate", "customers",
                               "abandoned_value"],
    "lapsed_customers": ["customer_id", "shop_id", "segment", "days_since_last_order",
                         "frequency", "monetary", "last_order_at"],
}  # fmt: skip

PARAMS = {
    "since": iso(SINCE),
    "until": iso(UNTIL),
    "date_a": iso(SINCE),
    "date_b": iso(UNTIL),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_COLUMNS))
def test_every_named_query_runs_and_returns_its_documented_columns(
    ch: ClickHouse, name: str
) -> None:
    query = named_query(name)
    # the history is of 2024: a window relative to now (a default) would hold none of it
    window = ("since", "until")
    given = {p.name: PARAMS[p.name] for p in query.params if p.default is None or p.name in window}
    if name == "cohort_retention":
        given = {"since": "2024-01-01", "until": "2024-06-01"}
    rows = ch.query(query.sql, query.bind(given, NOW))
    assert rows, name
    assert list(rows[0]) == EXPECTED_COLUMNS[name]
    header = query.sql.split("\nSELECT", 1)[0].split("\nWITH", 1)[0]
    for column in EXPECTED_COLUMNS[name]:
        assert column in header, f"{name}: column {column} is not described in the header"


def test_decisions_per_rule_count_what_rule_performance_counts(ch: ClickHouse) -> None:
    """`ecrm demo` prints rule_decisions beside rule_performance: one set of figures."""
    params = {"since": SINCE, "until": UNTIL}
    per_outcome: dict[tuple[str, str], int] = {}
    for row in ch.query(named_query("rule_decisions").sql, params):
        key = (row["rule_id"], row["outcome"])
        per_outcome[key] = per_outcome.get(key, 0) + row["decisions"]
    performance = ch.query(named_query("rule_performance").sql, {**params, "window_hours": 72})
    assert performance
    for row in performance:
        assert per_outcome.get((row["rule_id"], "fired"), 0) == row["sent"], row["rule_id"]
        assert per_outcome.get((row["rule_id"], "held_out"), 0) == row["held_out"]


def test_the_expected_columns_cover_every_shipped_query() -> None:
    from tests.integration.test_membership_queries import COLUMNS as MEMBERSHIP_COLUMNS

    # the membership queries run on a ledger of their own (test_membership_queries.py)
    assert {q.name for q in named_queries()} == set(EXPECTED_COLUMNS) | set(MEMBERSHIP_COLUMNS)


# --- ecrm sql ----------------------------------------------------------------------------


def ecrm_sql(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ECRM_CLICKHOUSE_URL": f"chdb://{folder}"}
    return subprocess.run(
        [sys.executable, "-m", "ecrm", "sql", *args],
        env=env,
        cwd=folder.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


PERIOD = ["--param", f"since={iso(SINCE)}", "--param", f"until={iso(UNTIL)}"]


def test_ecrm_sql_prints_rule_performance_as_json(folder: Path, history: History) -> None:
    done = ecrm_sql(folder, "rule_performance", *PERIOD, "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = orjson.loads(done.stdout)
    expected = ref.rule_performance(history, SINCE, UNTIL, timedelta(hours=72))
    for row in rows:
        want = expected[row["rule_id"]]
        assert row["sent"] == want.sent and row["converted"] == want.converted
        assert Decimal(row["coupon_cost"]) == want.coupon_cost
        assert row["uplift"] == pytest.approx(want.uplift, abs=1e-6)


def test_ecrm_sql_prints_csv(folder: Path) -> None:
    done = ecrm_sql(
        folder, "rule_performance", *PERIOD, "--param", "window_hours=24", "--format", "csv"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split(",") == EXPECTED_COLUMNS["rule_performance"]
    assert len(lines) == 1 + 4


def test_ecrm_sql_prints_a_table(folder: Path) -> None:
    done = ecrm_sql(folder, "rfm_distribution")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == EXPECTED_COLUMNS["rfm_distribution"]
    assert lines[-1].endswith("rows)")
    # as of when, on stderr (the rows stay clean for a pipe): the history ends in 2024
    assert re.search(r"as of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; data up to 2024-", done.stderr)


def test_ecrm_sql_list(folder: Path) -> None:
    done = ecrm_sql(folder, "--list")
    assert done.returncode == 0, done.stderr
    from tests.integration.test_membership_queries import COLUMNS as MEMBERSHIP_COLUMNS

    listed = {line.split()[0] for line in done.stdout.splitlines()}
    assert listed == set(EXPECTED_COLUMNS) | set(MEMBERSHIP_COLUMNS)


def test_ecrm_sql_names_a_missing_parameter(folder: Path) -> None:
    done = ecrm_sql(folder, "rule_performance", "--param", "since=2024-01-01")
    assert done.returncode == 2
    assert "needs --param until=..." in done.stderr
    assert "{window_hours:UInt32}, default 72" in done.stderr


def test_ecrm_sql_says_what_to_do_when_another_process_holds_the_embedded_clickhouse(
    ch: ClickHouse, folder: Path
) -> None:
    done = ecrm_sql(folder, "rfm_distribution")
    assert done.returncode == 2
    assert "in use by another process" in done.stderr
    assert "ecrm up" in done.stderr and "ECRM_CLICKHOUSE_URL=http" in done.stderr
